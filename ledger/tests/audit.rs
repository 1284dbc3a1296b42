//! The Merkle state kept in the index, checkpoints recorded as events, and checking
//! checkpoints against the journal (`ledger::audit`).

use std::collections::BTreeMap;
use std::path::Path;

use ledger::checkpoint::{CheckpointBody, SigningKey};
use ledger::merkle;
use ledger::*;

fn ev(change: &str) -> NewEvent {
    NewEvent {
        time_us: 1_700_000_000_000_000,
        actor: Actor {
            agent: "agent-1".into(),
            principal: None,
            role: None,
        },
        change_id: change.into(),
        correlation_id: None,
        body: Body::Check(Check {
            name: "lint".into(),
            level: "info".into(),
            passed: true,
            detail: None,
        }),
        meta: BTreeMap::new(),
    }
}

fn actor() -> Actor {
    Actor {
        agent: "ledger".into(),
        ..Default::default()
    }
}

fn init() -> (tempfile::TempDir, Ledger) {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::init(d.path(), actor()).unwrap();
    (d, l)
}

fn open(ws: &Path) -> Ledger {
    Ledger::open_dir(&ws.join(LEDGER_DIR), &OpenOptions::default())
        .unwrap()
        .0
}

/// Leaf hashes of every event, read from the journal.
fn leaves(l: &Ledger) -> Vec<Hash> {
    let mut v = Vec::new();
    l.scan(0, &mut |r| {
        v.push(merkle::leaf_hash(&r.hash));
        Ok(())
    })
    .unwrap();
    v
}

fn append_n(l: &Ledger, from: usize, n: usize) {
    for i in from..from + n {
        l.append(vec![ev(&format!("c{i}"))], Precondition::None)
            .unwrap();
    }
}

fn key(l: &Ledger) -> SigningKey {
    SigningKey::from_seed(&l.origin().unwrap(), [9; 32]).unwrap()
}

#[test]
fn appends_keep_the_stored_frontier_current() {
    let (_d, l) = init();
    for round in 0..5 {
        append_n(&l, round * 7, 7);
        let stored = l
            .index()
            .unwrap()
            .merkle_state()
            .expect("appends keep the state");
        let all = leaves(&l);
        assert_eq!(stored.frontier.size(), all.len() as u64);
        assert_eq!(stored.frontier.root(), merkle::root(&all));
        assert_eq!(stored.last, l.head().unwrap().hash);
        assert_eq!(l.merkle_state().unwrap(), stored);
    }
    // A batch of several events in one append.
    let batch: Vec<NewEvent> = (0..10).map(|i| ev(&format!("b{i}"))).collect();
    l.append(batch, Precondition::None).unwrap();
    assert_eq!(
        l.index().unwrap().merkle_state().unwrap().frontier.root(),
        merkle::root(&leaves(&l))
    );
}

#[test]
fn missing_or_stale_state_is_rebuilt_from_the_journal() {
    let (d, l) = init();
    append_n(&l, 0, 20);
    let good = l.merkle_state().unwrap();
    // A state that claims another last hash (as after the journal changed under it).
    let mut stale = good.clone();
    stale.last = Hash([7; 32]);
    l.index().unwrap().set_merkle_state(&stale).unwrap();
    assert_eq!(l.merkle_state().unwrap(), good);
    assert_eq!(l.index().unwrap().merkle_state(), Some(good.clone()));
    // A state behind the head is caught up by reading only the events after it.
    let mut behind = MerkleState::default();
    for h in &leaves(&l)[..5] {
        behind.frontier.push(*h);
    }
    behind.last = l.event(4).unwrap().hash;
    l.index().unwrap().set_merkle_state(&behind).unwrap();
    assert_eq!(l.merkle_state().unwrap(), good);
    // A state past the head (a shorter journal) is thrown away.
    let mut ahead = good.clone();
    ahead.frontier.push(Hash([1; 32]));
    l.index().unwrap().set_merkle_state(&ahead).unwrap();
    assert_eq!(l.merkle_state().unwrap(), good);
    // Deleting the whole index rebuilds it, state included.
    drop(l);
    std::fs::remove_dir_all(d.path().join(LEDGER_DIR).join("index")).unwrap();
    let l = open(d.path());
    assert_eq!(l.index().unwrap().merkle_state(), Some(good.clone()));
    assert_eq!(l.merkle_state().unwrap(), good);
    // So does reindex.
    l.reindex().unwrap();
    assert_eq!(l.merkle_state().unwrap(), good);
}

#[test]
fn checkpoint_covers_the_events_before_it_and_checks_against_the_journal() {
    let (_d, l) = init();
    append_n(&l, 0, 6);
    let k = key(&l);
    let cp = l.checkpoint(&k, actor(), 1_700_000_000_000_001).unwrap();
    assert_eq!(cp.body.size, 7, "genesis and six events");
    assert_eq!(cp.record.event.seq, 7, "recorded as the next event");
    assert_eq!(cp.record.event.change_id, "checkpoint-7");
    assert_eq!(
        cp.record.event.body,
        Body::Checkpoint(Checkpoint {
            size: 7,
            root: cp.body.root
        })
    );
    assert_eq!(cp.body.root, merkle::root(&leaves(&l)[..7]));
    assert_eq!(cp.body.head, l.event(6).unwrap().hash);
    let opened = CheckpointBody::open(&cp.note, &k.verifier()).unwrap();
    assert_eq!(opened, cp.body);
    // The frontier moved on past the checkpoint event.
    assert_eq!(l.merkle_state().unwrap().frontier.size(), 8);

    append_n(&l, 10, 3);
    let cp2 = l.checkpoint(&k, actor(), 1_700_000_000_000_002).unwrap();
    assert_eq!(cp2.body.size, 11);
    let results = l
        .check_checkpoints(&[cp2.body.clone(), cp.body.clone()])
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);

    let mut bad_root = cp.body.clone();
    bad_root.root = Hash([3; 32]);
    let mut bad_head = cp.body.clone();
    bad_head.head = Hash([4; 32]);
    let mut too_big = cp.body.clone();
    too_big.size = 1000;
    let mut other = cp.body.clone();
    other.origin = "agent-ledger/00000000000000000000000000000000".into();
    let mut empty = cp.body.clone();
    empty.size = 0;
    empty.root = merkle::empty_root();
    empty.head = Hash::ZERO;
    let r = l
        .check_checkpoints(&[bad_root, bad_head, too_big, other, empty])
        .unwrap();
    assert!(matches!(r[0], Err(Mismatch::Root { size: 7, .. })), "{r:?}");
    assert!(matches!(r[1], Err(Mismatch::Head { size: 7, .. })), "{r:?}");
    assert!(
        matches!(
            r[2],
            Err(Mismatch::Missing {
                size: 1000,
                events: 12
            })
        ),
        "{r:?}"
    );
    assert!(matches!(r[3], Err(Mismatch::Origin { .. })), "{r:?}");
    assert_eq!(r[4], Ok(()));
    assert!(r[0].as_ref().unwrap_err().to_string().contains("root hash"));
}

#[test]
fn checkpoint_change_id_avoids_taken_ids() {
    let (_d, l) = init();
    // Someone already used the ID the checkpoint would take.
    l.append(vec![ev("checkpoint-2")], Precondition::None)
        .unwrap();
    let cp = l.checkpoint(&key(&l), actor(), 5).unwrap();
    assert_eq!(cp.body.size, 2);
    assert_eq!(cp.record.event.change_id, "checkpoint-2-2");
}

#[test]
fn next_seq_precondition_refuses_when_the_head_moved() {
    let (_d, l) = init();
    let head = l.head().unwrap().seq;
    let err = l
        .append(vec![ev("x")], Precondition::NextSeq(head + 5))
        .unwrap_err();
    assert!(
        err.to_string().contains("another append came first"),
        "{err}"
    );
    assert_eq!(l.head().unwrap().seq, head, "nothing appended");
    l.append(vec![ev("y")], Precondition::NextSeq(head + 1))
        .unwrap();
}
