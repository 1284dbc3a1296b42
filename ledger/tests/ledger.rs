//! `Ledger` at the library boundary: group commit, preconditions, index rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;

use ledger::*;

fn ev(change: &str, agent: &str) -> NewEvent {
    NewEvent {
        time_us: 1_700_000_000_000_000,
        actor: Actor {
            agent: agent.into(),
            principal: None,
            role: None,
        },
        change_id: change.into(),
        correlation_id: Some("req-1".into()),
        body: Body::Check(Check {
            name: "lint".into(),
            level: "info".into(),
            passed: true,
            detail: None,
        }),
        meta: BTreeMap::new(),
    }
}

fn init() -> (tempfile::TempDir, Ledger) {
    let d = tempfile::tempdir().unwrap();
    let l = Ledger::init(
        d.path(),
        Actor {
            agent: "t".into(),
            ..Default::default()
        },
    )
    .unwrap();
    (d, l)
}

#[test]
fn concurrent_writers_each_get_their_own_events_once() {
    let (d, l) = init();
    let l = Arc::new(l);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50 {
                    let id = format!("t{t}-{i}");
                    let recs = l
                        .append(
                            vec![ev(&id, &format!("agent-{t}"))],
                            Precondition::NewChange(id.clone()),
                        )
                        .unwrap();
                    assert_eq!(recs.len(), 1);
                    assert_eq!(recs[0].event.change_id, id);
                    mine.push(recs[0].event.seq);
                }
                mine
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
    let rep = l.verify(VerifyOptions::default()).unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(rep.events, 401);
    drop(l);
    let (l2, _) = Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert_eq!(l2.index().agent_seqs("agent-3").unwrap().len(), 50);
}

#[test]
fn duplicate_change_id_is_refused_and_nothing_is_appended() {
    let (_d, l) = init();
    l.append(vec![ev("c1", "a")], Precondition::NewChange("c1".into()))
        .unwrap();
    let head = l.head();
    match l.append(vec![ev("c1", "a")], Precondition::NewChange("c1".into())) {
        Err(Error::DuplicateChange { id, seq }) => {
            assert_eq!(id, "c1");
            assert_eq!(seq, 1);
        }
        other => panic!("expected a duplicate refusal, got {other:?}"),
    }
    assert_eq!(l.head(), head);
    assert!(matches!(
        l.append(
            vec![ev("c9", "a")],
            Precondition::ExistingChange("c9".into())
        ),
        Err(Error::UnknownChange(_))
    ));
    assert!(matches!(l.change("nope"), Err(Error::UnknownChange(_))));
}

#[test]
fn invalid_ids_are_refused_with_the_reason() {
    let (_d, l) = init();
    let e = l
        .append(vec![ev("has space", "a")], Precondition::None)
        .unwrap_err();
    assert!(e.to_string().contains("change ID"), "{e}");
    let e = l
        .append(vec![ev("ok", "")], Precondition::None)
        .unwrap_err();
    assert!(e.to_string().contains("agent ID"), "{e}");
}

#[test]
fn garbage_index_is_rebuilt_with_the_same_answers() {
    let (d, l) = init();
    for i in 0..30 {
        l.append(
            vec![ev(
                &format!("c{i}"),
                if i % 2 == 0 { "even" } else { "odd" },
            )],
            Precondition::None,
        )
        .unwrap();
    }
    let before = l.index().agent_seqs("odd").unwrap();
    drop(l);
    let index = d.path().join(LEDGER_DIR).join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir(&index).unwrap();
    std::fs::write(index.join("db"), b"not a sled database at all").unwrap();
    std::fs::write(index.join("conf"), b"garbage").unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_some(), "{report:?}");
    assert_eq!(l2.index().agent_seqs("odd").unwrap(), before);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
}

#[test]
fn missing_index_catches_up_and_reindex_matches() {
    let (d, l) = init();
    for i in 0..10 {
        l.append(vec![ev(&format!("c{i}"), "a")], Precondition::None)
            .unwrap();
    }
    drop(l);
    std::fs::remove_dir_all(d.path().join(LEDGER_DIR).join("index")).unwrap();
    let (l2, _) = Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert_eq!(l2.change("c7").unwrap()[0].event.seq, 8);
    assert_eq!(l2.reindex().unwrap(), 11);
    assert_eq!(l2.change("c7").unwrap()[0].event.seq, 8);
    let err = l2.resolve_change("c").unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
    assert_eq!(l2.resolve_change("c7").unwrap(), "c7");
}

#[test]
fn second_opener_waits_then_refuses_clearly() {
    let (d, l) = init();
    let opts = OpenOptions {
        lock_timeout: std::time::Duration::from_millis(100),
    };
    match Ledger::open_dir(&d.path().join(LEDGER_DIR), &opts) {
        Err(Error::Locked { holder }) => {
            assert!(holder.contains(&std::process::id().to_string()), "{holder}")
        }
        other => panic!("expected a lock refusal, got {:?}", other.err()),
    }
    drop(l);
    Ledger::open_dir(&d.path().join(LEDGER_DIR), &opts).unwrap();
}

#[test]
fn edited_sealed_segment_is_noticed_on_open_and_appends_refused() {
    let (d, l) = init();
    for i in 0..5 {
        l.append(vec![ev(&format!("c{i}"), "a")], Precondition::None)
            .unwrap();
    }
    drop(l);
    let seg = d
        .path()
        .join(LEDGER_DIR)
        .join("journal")
        .join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Damage seq 1 (the second record), leaving later records intact.
    let first_len = 24 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 32;
    bytes[first_len + 30] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(
        report.damaged.as_deref().unwrap_or("").contains("seq 1"),
        "{report:?}"
    );
    let rep = l2.verify(VerifyOptions::default()).unwrap();
    assert_eq!(rep.problems[0].seq, Some(1), "{:?}", rep.problems);
    assert!(matches!(
        l2.append(vec![ev("x", "a")], Precondition::None),
        Err(Error::Refused(_))
    ));
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "journal bytes unchanged"
    );
}

#[test]
fn snapshots_are_checksummed_files_pruned_by_name_and_cleared_by_reindex() {
    let (d, l) = init();
    let dir = d.path().join(LEDGER_DIR).join("index").join("snapshots");
    let ix = l.index();
    assert_eq!(ix.latest_snapshot_seq("tree").unwrap(), None);
    assert_eq!(ix.snapshot_at_or_before("tree", 100).unwrap(), None);
    ix.put_snapshot("tree", 5, b"five").unwrap();
    ix.put_snapshot("tree", 9, b"nine").unwrap();
    ix.put_snapshot("tree-head", 7, b"head seven").unwrap();
    assert_eq!(ix.latest_snapshot_seq("tree").unwrap(), Some(9));
    assert_eq!(ix.latest_snapshot_seq("tree-head").unwrap(), Some(7));
    assert_eq!(
        ix.snapshot_at_or_before("tree", 8).unwrap(),
        Some((5, b"five".to_vec()))
    );
    assert_eq!(
        ix.snapshot_at_or_before("tree", 9).unwrap(),
        Some((9, b"nine".to_vec()))
    );
    assert_eq!(ix.snapshot_at_or_before("tree", 4).unwrap(), None);
    // A damaged snapshot is passed over for the next older one.
    let nine = dir.join(format!("tree.{:020}", 9));
    let mut bytes = std::fs::read(&nine).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&nine, &bytes).unwrap();
    assert_eq!(
        ix.snapshot_at_or_before("tree", 20).unwrap(),
        Some((5, b"five".to_vec()))
    );
    // Pruning one name leaves the other alone.
    ix.prune_snapshots("tree", 9).unwrap();
    assert_eq!(ix.snapshot_at_or_before("tree", 8).unwrap(), None);
    assert_eq!(ix.latest_snapshot_seq("tree-head").unwrap(), Some(7));
    // Names that are not plain words are refused (they name files).
    assert!(ix.put_snapshot("../x", 1, b"x").is_err());
    assert!(ix.put_snapshot("", 1, b"x").is_err());
    // Snapshots are derived: a reindex removes them.
    l.reindex().unwrap();
    assert_eq!(l.index().latest_snapshot_seq("tree-head").unwrap(), None);
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
}
