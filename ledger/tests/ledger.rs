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
fn scans_can_start_in_the_middle_of_a_batch() {
    // A projection snapshot or an export range can start at any seq, also one that an
    // earlier multi-event append wrote in the middle of its batch (regression: the scan
    // refused such a start as "batch fields ... are inconsistent").
    let (_d, l) = init();
    let batch: Vec<NewEvent> = (0..5).map(|i| ev(&format!("b{i}"), "a")).collect();
    let recs = l.append(batch, Precondition::None).unwrap();
    assert_eq!((recs[0].batch_first, recs[4].batch_last), (1, 5));
    l.append(vec![ev("after", "a")], Precondition::None)
        .unwrap();
    for from in 1..=6 {
        let mut seen = Vec::new();
        l.scan(from, &mut |r| {
            seen.push(r.event.seq);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (from..=6).collect::<Vec<_>>(), "scan from {from}");
    }
    let mut seen = Vec::new();
    l.scan_range(3, 4, &mut |r| {
        seen.push(r.event.seq);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![3, 4]);
    assert!(l.verify(VerifyOptions::default()).unwrap().ok());
}
