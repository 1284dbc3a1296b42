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
    assert_eq!(l2.index().unwrap().agent_seqs("agent-3").unwrap().len(), 50);
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
    let before = l.index().unwrap().agent_seqs("odd").unwrap();
    drop(l);
    let index = d.path().join(LEDGER_DIR).join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::create_dir_all(index.join("sled")).unwrap();
    std::fs::write(index.join("sled").join("db"), b"not a sled database at all").unwrap();
    std::fs::write(index.join("sled").join("conf"), b"garbage").unwrap();
    std::fs::write(index.join("state"), b"not a state file").unwrap();
    std::fs::write(index.join("changes"), [7u8; 100]).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_some(), "{report:?}");
    assert_eq!(l2.change("c3").unwrap()[0].event.seq, 4);
    assert_eq!(l2.index().unwrap().agent_seqs("odd").unwrap(), before);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
}

fn changes_file(d: &tempfile::TempDir) -> std::path::PathBuf {
    d.path().join(LEDGER_DIR).join("index").join("changes")
}

#[test]
fn the_change_index_only_names_candidates_and_verify_notices_a_wrong_one() {
    let (d, l) = init();
    forty_changes(&l);
    drop(l);
    // Record 11 is c10's (record 0 is the genesis event's); make it claim c20's key.
    let bytes = std::fs::read(changes_file(&d)).unwrap();
    assert_eq!(bytes.len(), 16 * 41, "one record per event");
    let c20_key = bytes[16 * 21..16 * 21 + 8].to_vec();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(changes_file(&d))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &c20_key, 16 * 11).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_none(), "{report:?}");
    // The forged record points at c10's event: checked against it, it is passed over.
    assert_eq!(l2.change_seqs("c20").unwrap(), vec![21]);
    assert_eq!(l2.change("c20").unwrap()[0].event.change_id, "c20");
    let rep = l2.verify(VerifyOptions::default()).unwrap();
    assert!(!rep.ok(), "verify missed a wrong change index record");
    assert!(
        rep.problems[0].detail.contains("change index"),
        "{:?}",
        rep.problems
    );
    l2.reindex().unwrap();
    assert_eq!(l2.change_seqs("c10").unwrap(), vec![11]);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
}

#[test]
fn a_change_index_longer_or_shorter_than_its_state_is_cut_or_rebuilt() {
    let (d, l) = init();
    let before = forty_changes(&l);
    drop(l);
    // Longer: records beyond what the state covers are cut back on open.
    let mut bytes = std::fs::read(changes_file(&d)).unwrap();
    bytes.extend_from_slice(&[1u8; 16 * 3]);
    std::fs::write(changes_file(&d), &bytes).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_none(), "{report:?}");
    assert_eq!(std::fs::metadata(changes_file(&d)).unwrap().len(), 16 * 41);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
    drop(l2);
    // Shorter (a power cut lost its unsynced end): rebuilt from the journal.
    std::fs::write(changes_file(&d), &bytes[..16 * 30]).unwrap();
    let (l3, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_some(), "{report:?}");
    for (seq, id) in &before[1..] {
        assert_eq!(l3.change_seqs(id).unwrap(), vec![*seq], "{id}");
    }
    assert!(l3.verify(VerifyOptions::default()).unwrap().ok());
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
fn lock_file_names_the_holder_in_place_and_keeps_its_length() {
    use std::os::unix::fs::MetadataExt;
    let (d, l) = init();
    drop(l);
    let dir = d.path().join(LEDGER_DIR);
    let lock = dir.join("lock");
    // A longer leftover (say from an older build) is cut to the fixed-width record.
    std::fs::write(&lock, format!("{}\n", "9".repeat(40))).unwrap();
    let opts = OpenOptions::default();
    let l = Ledger::open_dir(&dir, &opts).unwrap().0;
    let text = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(text.trim(), std::process::id().to_string(), "{text:?}");
    assert_eq!(text.len(), 21, "{text:?}");
    let ino = std::fs::metadata(&lock).unwrap().ino();
    drop(l);
    // Opened again: the same file, written over where it stands.
    let l = Ledger::open_dir(&dir, &opts).unwrap().0;
    let meta = std::fs::metadata(&lock).unwrap();
    assert_eq!((meta.ino(), meta.len()), (ino, 21));
    let text = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(text.trim(), std::process::id().to_string(), "{text:?}");
    drop(l);
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

fn positions_file(d: &tempfile::TempDir) -> std::path::PathBuf {
    d.path().join(LEDGER_DIR).join("index").join("positions")
}

/// Appends 40 single-event changes; returns every event's (seq, change ID) as read back.
fn forty_changes(l: &Ledger) -> Vec<(u64, String)> {
    for i in 0..40 {
        l.append(vec![ev(&format!("c{i}"), "a")], Precondition::None)
            .unwrap();
    }
    (0..41)
        .map(|s| {
            let r = l.event(s).unwrap();
            (r.event.seq, r.event.change_id)
        })
        .collect()
}

#[test]
fn a_short_position_file_is_rebuilt_on_open() {
    let (d, l) = init();
    let before = forty_changes(&l);
    drop(l);
    // A power cut can lose the unsynced end of the position file.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(positions_file(&d))
        .unwrap();
    f.set_len(16 * 20 + 7).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    let why = report.reindexed.expect("rebuilt");
    assert!(why.contains("position file"), "{why}");
    assert_eq!(forty_changes(&l2)[..41], before[..]);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
}

#[test]
fn a_zeroed_position_entry_is_noticed_on_open_and_by_verify() {
    let (d, l) = init();
    forty_changes(&l);
    drop(l);
    // The last entry zeroed (what a lost page reads back as): open notices and rebuilds.
    let mut bytes = std::fs::read(positions_file(&d)).unwrap();
    let n = bytes.len();
    bytes[n - 16..].fill(0);
    std::fs::write(positions_file(&d), &bytes).unwrap();
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_some(), "{report:?}");
    assert_eq!(l2.event(40).unwrap().event.change_id, "c39");
    drop(l2);
    // An entry in the middle zeroed: `verify` names the seq, lookups refuse rather than
    // return the wrong event, and `reindex` repairs it.
    let mut bytes = std::fs::read(positions_file(&d)).unwrap();
    bytes[16 * 10..16 * 11].fill(0);
    std::fs::write(positions_file(&d), &bytes).unwrap();
    let (l3, _) = Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    let rep = l3.verify(VerifyOptions::default()).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.kind == "index" && p.seq == Some(10)),
        "{rep:?}"
    );
    let err = l3.event(10).unwrap_err().to_string();
    assert!(err.contains("reindex"), "{err}");
    l3.reindex().unwrap();
    assert_eq!(l3.event(10).unwrap().event.change_id, "c9");
    assert!(l3.verify(VerifyOptions::default()).unwrap().ok());
}

#[test]
fn a_change_id_is_refused_right_after_its_append() {
    let (_d, l) = init();
    // Many appends in a row keep the background index writer busy, so the duplicate
    // check often runs before sled has the ID (whether it does is up to the scheduler);
    // it must see the appends the writer has not applied yet.
    for i in 0..200 {
        let id = format!("dup-{i}");
        l.append(vec![ev(&id, "a")], Precondition::NewChange(id.clone()))
            .unwrap();
        let err = l
            .append(vec![ev(&id, "a")], Precondition::NewChange(id.clone()))
            .unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateChange { id: d, .. } if *d == id),
            "{err}"
        );
        l.append(vec![ev(&id, "a")], Precondition::ExistingChange(id.clone()))
            .unwrap();
    }
    assert_eq!(l.change("dup-7").unwrap().len(), 2);
}

#[test]
fn events_appended_by_one_handle_are_indexed_when_the_next_opens() {
    let (d, l) = init();
    let mut batch = Vec::new();
    for i in 0..5000 {
        batch.push(ev(&format!("b{}", i / 10), &format!("agent-{}", i % 7)));
    }
    l.append(batch, Precondition::None).unwrap();
    drop(l);
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_none(), "{report:?}");
    // Dropping the first handle waited for its index writer: nothing was left to catch up.
    let seqs = l2.index().unwrap().agent_seqs("agent-3").unwrap();
    assert_eq!(seqs.len(), (0..5000).filter(|i| i % 7 == 3).count());
    assert!(seqs.iter().all(|s| (s - 1) % 7 == 3));
    assert_eq!(l2.change("b42").unwrap().len(), 10);
    assert_eq!(
        l2.index().unwrap().time_seqs(None, None).unwrap().len(),
        5001
    );
}

#[test]
fn segments_sealed_while_the_index_writer_lags_do_not_force_a_rebuild() {
    let (d, l) = init();
    l.set_segment_target(16 * 1024);
    // Quick small appends: the index writer merges queued batches, several of which
    // seal a segment; each sealed segment's final stamp must still be recorded.
    for b in 0..150 {
        let batch = (0..20)
            .map(|i| ev(&format!("s{b}-{i}"), "a"))
            .collect::<Vec<_>>();
        l.append(batch, Precondition::None).unwrap();
    }
    let files: Vec<u64> = std::fs::read_dir(d.path().join(LEDGER_DIR).join("journal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    let segments = files.len();
    assert!(segments > 10, "{segments} segments");
    // The journal's size is its segment files' sizes together.
    assert_eq!(l.journal_bytes().unwrap(), files.iter().sum::<u64>());
    drop(l);
    let (l2, report) =
        Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    assert!(report.reindexed.is_none(), "{report:?}");
    assert_eq!(l2.change("s149-19").unwrap()[0].event.seq, 3000);
    assert!(l2.verify(VerifyOptions::default()).unwrap().ok());
}

/// The journal in `dir` alone (no index, no lock).
fn journal_in(dir: &std::path::Path) -> Journal {
    open_journal(Box::new(FsStorage::new(dir).unwrap()))
        .unwrap()
        .0
}

/// A ledger of 3,001 events over many small segments.
fn many_segments() -> (tempfile::TempDir, Ledger) {
    let (d, l) = init();
    l.set_segment_target(16 * 1024);
    for b in 0..100 {
        let batch = (0..30)
            .map(|i| ev(&format!("m{b}-{i}"), &format!("agent-{}", i % 3)))
            .collect::<Vec<_>>();
        l.append(batch, Precondition::None).unwrap();
    }
    (d, l)
}

#[test]
fn the_parallel_segment_walk_sees_every_record_once_in_order() {
    let (d, l) = many_segments();
    drop(l);
    let j = journal_in(&d.path().join(LEDGER_DIR).join("journal"));
    let mut sequential = Vec::new();
    j.scan_all(&mut |r| {
        sequential.push((r.event.seq, r.hash));
        Ok(())
    })
    .unwrap();
    let parts = j
        .scan_all_parallel(2, &Vec::new, &|acc: &mut Vec<(u64, Hash)>, r| {
            acc.push((r.event.seq, r.hash));
            Ok(())
        })
        .unwrap()
        .expect("an intact journal walks in parallel");
    assert!(parts.len() > 10, "{} segments", parts.len());
    let parallel: Vec<_> = parts.into_iter().flatten().collect();
    assert_eq!(parallel, sequential);
    assert_eq!(parallel.len(), 3001);
}

/// What a walk saw of each record: everything but the borrowed event, plus the event.
fn seen(r: &RecordRef) -> (u64, Hash, Position, u64, u64, u64, Event) {
    (
        r.event.seq,
        r.hash,
        r.pos,
        r.frame_len,
        r.batch_first,
        r.batch_last,
        r.event.to_event(),
    )
}

#[test]
fn the_pipelined_walk_hands_out_every_record_once_in_order() {
    let (d, l) = many_segments();
    drop(l);
    let mut j = journal_in(&d.path().join(LEDGER_DIR).join("journal"));
    let mut sequential = Vec::new();
    j.scan_all_refs(&mut |r| {
        sequential.push(seen(r));
        Ok(())
    })
    .unwrap();
    assert_eq!(sequential.len(), 3001);
    // Pieces of 1 MiB (each segment here is one); then one piece per record.
    for piece in [1 << 20, 1] {
        j.set_piece_bytes(piece);
        for workers in [1, 2, 5] {
            let mut piped = Vec::new();
            let ok = j
                .scan_all_pipelined(workers, &mut |r| {
                    piped.push(seen(r));
                    Ok(())
                })
                .unwrap();
            assert!(
                ok,
                "an intact journal walks pipelined ({workers} workers, {piece})"
            );
            assert!(
                piped == sequential,
                "{workers} workers, {piece}: records differ"
            );
        }
    }
    // An error from the callback stops the walk and comes back as is.
    let mut n = 0;
    let r = j.scan_all_pipelined(2, &mut |_| {
        n += 1;
        if n == 1500 {
            return Err(Error::Stopped);
        }
        Ok(())
    });
    assert!(matches!(r, Err(Error::Stopped)), "{r:?}");
    assert_eq!(n, 1500);
}

/// The walk with a `prepare` step on the workers hands each segment, with what its
/// worker made of it, to the calling thread once and in order; a segment `prepare`
/// gives up on stops the walk with `Ok(false)` before it is handed out.
#[test]
fn the_pipelined_walk_with_prepare_hands_out_prepared_segments_in_order() {
    let (d, l) = many_segments();
    drop(l);
    let mut j = journal_in(&d.path().join(LEDGER_DIR).join("journal"));
    // Pieces (the walk's first ones too, a share of this) larger than any segment.
    j.set_piece_bytes(64 << 20);
    let mut sequential = Vec::new();
    j.scan_all_refs(&mut |r| {
        sequential.push(r.event.seq);
        Ok(())
    })
    .unwrap();
    let prepare = |segment: u64, bytes: &[u8]| {
        let mut seqs = Vec::new();
        let ok = Journal::checked_segment_payloads(bytes, &mut |payload| {
            EventRef::decode(payload).map(|e| seqs.push(e.seq)).is_ok()
        });
        ok.then_some((segment, seqs))
    };
    let mut segments = Vec::new();
    for workers in [1, 2, 5] {
        let mut got = Vec::new();
        segments.clear();
        let ok = j
            .scan_all_pipelined_with(workers, &prepare, &mut |at, _, (made_for, seqs)| {
                let segment = at.segment;
                assert_eq!(segment, made_for, "prepared for another segment");
                assert_eq!(at.offset, 0, "a small segment is one piece");
                assert_eq!(seqs.first(), Some(&segment), "a segment starts at its seq");
                segments.push(segment);
                got.extend(seqs);
                Ok(true)
            })
            .unwrap();
        assert!(ok, "{workers} workers");
        assert_eq!(got, sequential, "{workers} workers");
        assert!(segments.len() > 2, "the journal has several segments");
    }
    // `prepare` giving up on the third segment: the first two are handed out, then
    // the walk reports the problem.
    let mut handed = 0;
    let ok = j
        .scan_all_pipelined_with(
            2,
            &|segment, bytes| (segment != segments[2]).then_some(bytes.len()),
            &mut |_, _, _| {
                handed += 1;
                Ok(true)
            },
        )
        .unwrap();
    assert!(!ok);
    assert_eq!(handed, 2);
}

/// Every walk of `j` stops before seq `bad`: the sequential one with an error, the
/// pipelined one (pieces of 1 and 3,000 bytes) with `Ok(false)` or an error, handing out
/// nothing at or after `bad`, and with 1-byte pieces the records before it.
fn walks_stop_before(j: &mut Journal, bad: u64, what: &str) {
    let r = j.scan_all_refs(&mut |_| Ok(()));
    assert!(r.is_err(), "{what}: the sequential walk stops");
    for piece in [1, 3000] {
        j.set_piece_bytes(piece);
        let mut seen = 0;
        let r = j.scan_all_pipelined(2, &mut |r| {
            assert!(
                r.event.seq < bad,
                "{what}: a record at or after the damage was handed out"
            );
            seen += 1;
            Ok(())
        });
        assert!(!r.unwrap_or(false), "{what}, pieces of {piece} bytes");
        assert!(
            seen > 0 || piece > 1 || bad == 0,
            "{what}: the pieces before the damage were handed out"
        );
    }
}

/// A record's seq, position, and batch first and last seq.
type Placed = (u64, Position, u64, u64);

/// One segment of 41 batches of 1 to 7 records (the journal opened before any damage
/// is done to it, so opening does not repair it), its records (seq, position, batch
/// first and last) and the segment file's path.
fn one_segment_of_batches() -> (tempfile::TempDir, Journal, Vec<Placed>, std::path::PathBuf) {
    let (d, l) = init();
    for b in 0..40 {
        let batch = (0..1 + b % 7)
            .map(|i| ev(&format!("p{b}-{i}"), "a"))
            .collect::<Vec<_>>();
        l.append(batch, Precondition::None).unwrap();
    }
    drop(l);
    let dir = d.path().join(LEDGER_DIR).join("journal");
    let j = journal_in(&dir);
    let mut records = Vec::new();
    j.scan_all_refs(&mut |r| {
        records.push((r.event.seq, r.pos, r.batch_first, r.batch_last));
        Ok(())
    })
    .unwrap();
    assert!(records.iter().all(|w| w.1.segment == 0), "one segment");
    let path = dir.join(format!("{:020}.seg", 0));
    (d, j, records, path)
}

/// With pieces smaller than a segment, the pipelined walks cut a segment between
/// records, inside batches too (the pieces tile the segment), and still hand out every
/// record once, in order, at its own position; a damaged record in a later piece stops
/// them, and so do batch fields that contradict the record before across a cut.
#[test]
fn the_pipelined_walk_cuts_segments_between_records() {
    let (_d, mut j, want, path) = one_segment_of_batches();
    let batch_starts = want.iter().filter(|w| w.0 == w.2).count();
    assert_eq!(batch_starts, 41, "the genesis batch and 40 more");
    let every_seq: Vec<u64> = want.iter().map(|w| w.0).collect();
    let segment_len = std::fs::metadata(&path).unwrap().len();
    // The first seq of each piece (prepared on the workers) and its bytes.
    let first_seq = |_: u64, bytes: &[u8]| {
        let mut first = None;
        let ok = Journal::checked_segment_payloads(bytes, &mut |p| {
            first.get_or_insert(EventRef::decode(p).map(|e| e.seq).ok());
            true
        });
        ok.then_some(first.flatten())
    };
    for piece in [1, 500, 3000, 1 << 20] {
        j.set_piece_bytes(piece);
        for workers in [1, 3] {
            let what = format!("pieces of {piece} bytes, {workers} workers");
            let mut got = Vec::new();
            let ok = j
                .scan_all_pipelined(workers, &mut |r| {
                    got.push((r.event.seq, r.pos, r.batch_first, r.batch_last));
                    Ok(())
                })
                .unwrap();
            assert!(ok, "{what}");
            assert_eq!(got, want, "{what}");
            let mut starts = Vec::new();
            let mut lens = Vec::new();
            let mut next = 0u64;
            let ok = j
                .scan_all_pipelined_with(workers, &first_seq, &mut |at, bytes, first| {
                    assert_eq!(
                        at,
                        Position {
                            segment: 0,
                            offset: next
                        },
                        "{what}"
                    );
                    next += bytes.len() as u64;
                    lens.push(bytes.len());
                    starts.push(first.expect("no piece is empty"));
                    Ok(true)
                })
                .unwrap();
            assert!(ok, "{what}");
            assert_eq!(next, segment_len, "{what}: the pieces cover the segment");
            if piece == 1 {
                assert_eq!(starts, every_seq, "one piece per record");
            }
            if piece == 3000 {
                assert!(
                    starts.iter().any(|&s| want[s as usize].2 != s),
                    "{what}: some piece starts inside a batch: {starts:?}"
                );
                // The walk starts with a small piece (a sixteenth), the next ones each
                // about twice the last, up to the full size: pieces are cut between
                // records, so each is within a record's length of that.
                let frame = want
                    .windows(2)
                    .map(|w| (w[1].1.offset - w[0].1.offset) as usize)
                    .max()
                    .unwrap();
                assert!(lens[0] <= 3000 / 16 + frame, "{what}: first piece {lens:?}");
                assert!(lens[1] <= 3000 / 8 + frame, "{what}: second piece {lens:?}");
                assert!(
                    lens.iter().any(|&l| l + frame >= 3000),
                    "{what}: pieces grow to the full size: {lens:?}"
                );
                assert!(
                    lens.iter().all(|&l| l <= 3000 + frame),
                    "{what}: and no further: {lens:?}"
                );
            }
            if piece == 1 << 20 {
                assert_eq!(starts, [0], "the whole segment is one piece");
            }
        }
    }
    let clean = std::fs::read(&path).unwrap();
    // A damaged byte in the payload of seq 100 (a later piece).
    let at = want.iter().find(|w| w.0 == 100).unwrap().1;
    let mut bytes = clean.clone();
    bytes[at.offset as usize + FRAME_HEADER + 20] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    walks_stop_before(&mut j, 100, "damaged payload");
    // A record inside a batch whose batch_last (frame header, not hashed) differs from
    // the record before: with 1-byte pieces, only the check across the cut sees it.
    let inside = want
        .iter()
        .find(|w| w.0 > 100 && w.0 > w.2 && w.0 < w.3)
        .expect("a record in the middle of a batch");
    let mut bytes = clean.clone();
    let field = inside.1.offset as usize + 16;
    let last = u64::from_le_bytes(bytes[field..field + 8].try_into().unwrap());
    bytes[field..field + 8].copy_from_slice(&(last + 1).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    walks_stop_before(&mut j, inside.0, "batch fields across a cut");
}

/// A segment that cannot be read (here a directory where a segment file was) makes the
/// pipelined walk fail with an error naming it, after handing out only what came before.
#[test]
fn the_pipelined_walk_reports_a_segment_it_cannot_read() {
    let (d, l) = many_segments();
    drop(l);
    let dir = d.path().join(LEDGER_DIR).join("journal");
    let j = journal_in(&dir);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    assert!(names.len() > 10, "many segments: {names:?}");
    let bad = &names[names.len() / 2];
    let first_bad: u64 = bad.trim_end_matches(".seg").parse().unwrap();
    std::fs::remove_file(dir.join(bad)).unwrap();
    std::fs::create_dir(dir.join(bad)).unwrap();
    let mut last = None;
    let err = j
        .scan_all_pipelined(2, &mut |r| {
            last = Some(r.event.seq);
            Ok(())
        })
        .expect_err("a segment that cannot be read");
    assert!(err.to_string().contains(bad.as_str()), "{err}");
    assert!(last.is_none_or(|s| s < first_bad), "{last:?} {first_bad}");
}

/// Damage at the end or in the middle of a journal read in small pieces stops every
/// walk: a torn last frame, a last batch without its last record, a frame length past
/// the bound (no piece boundary can be found after it), and an empty last segment that
/// is not named for the next seq (an empty one that is, a roll, is whole).
#[test]
fn the_pipelined_walk_stops_at_damage_read_in_small_pieces() {
    let (d, mut j, records, path) = one_segment_of_batches();
    let clean = std::fs::read(&path).unwrap();
    let last = *records.last().unwrap();
    // A torn last frame.
    std::fs::write(&path, &clean[..clean.len() - 10]).unwrap();
    walks_stop_before(&mut j, last.0, "torn last frame");
    // The last batch without its last record: its records are whole, the batch is not.
    assert!(last.2 < last.0, "the last batch has several records");
    std::fs::write(&path, &clean[..last.1.offset as usize]).unwrap();
    assert!(
        j.scan_all_refs(&mut |_| Ok(())).is_err(),
        "unfinished batch"
    );
    for piece in [1, 3000] {
        j.set_piece_bytes(piece);
        let r = j.scan_all_pipelined(2, &mut |_| Ok(()));
        assert!(
            !r.unwrap_or(false),
            "unfinished batch, pieces of {piece} bytes"
        );
    }
    // A frame length past the bound at seq 100.
    let at = records.iter().find(|w| w.0 == 100).unwrap().1.offset as usize;
    let mut bytes = clean.clone();
    bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    walks_stop_before(&mut j, 100, "frame length past the bound");
    // An empty last segment: named for the next seq it is a roll, otherwise damage.
    std::fs::write(&path, &clean).unwrap();
    let dir = d.path().join(LEDGER_DIR).join("journal");
    let rolled = dir.join(format!("{:020}.seg", last.0 + 1));
    std::fs::write(&rolled, b"").unwrap();
    for piece in [1, 1 << 20] {
        j.set_piece_bytes(piece);
        let mut n = 0;
        let ok = j.scan_all_pipelined(2, &mut |_| {
            n += 1;
            Ok(())
        });
        assert!(ok.unwrap(), "an empty segment after a roll");
        assert_eq!(n, records.len());
    }
    std::fs::remove_file(&rolled).unwrap();
    std::fs::write(dir.join(format!("{:020}.seg", last.0 + 5)), b"").unwrap();
    for piece in [1, 1 << 20] {
        j.set_piece_bytes(piece);
        let ok = j.scan_all_pipelined(2, &mut |_| Ok(()));
        assert!(!ok.unwrap(), "an empty last segment named for another seq");
    }
}

/// A segment that starts inside a batch (the writer rolls only between batches): the
/// sequential walk names it, the pipelined walk stops before it.
#[test]
fn a_segment_that_starts_inside_a_batch_stops_every_walk() {
    let (d, mut j, records, path) = one_segment_of_batches();
    let inside = *records
        .iter()
        .find(|w| w.0 > 100 && w.0 > w.2 && w.0 < w.3)
        .expect("a record in the middle of a batch");
    let clean = std::fs::read(&path).unwrap();
    let cut = inside.1.offset as usize;
    std::fs::write(&path, &clean[..cut]).unwrap();
    let dir = d.path().join(LEDGER_DIR).join("journal");
    std::fs::write(dir.join(format!("{:020}.seg", inside.0)), &clean[cut..]).unwrap();
    let err = j.scan_all_refs(&mut |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("inside the batch"), "{err}");
    for piece in [1, 3000, 1 << 20] {
        j.set_piece_bytes(piece);
        let r = j.scan_all_pipelined(2, &mut |r| {
            assert!(r.event.seq < inside.0, "a record of the second segment");
            Ok(())
        });
        assert!(!r.unwrap_or(false), "pieces of {piece} bytes");
    }
}

/// Storage whose `read_into` fails from the `fail_at`th call on (counting `calls` from
/// 0), remembering where the first failing read was: a disk that stops reading partway
/// through a walk.
struct FailingReads {
    inner: FsStorage,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    fail_at: Arc<std::sync::atomic::AtomicUsize>,
    failed_at: Arc<std::sync::Mutex<Option<(u64, u64)>>>,
}

impl Storage for FailingReads {
    fn describe(&self, segment: u64) -> String {
        self.inner.describe(segment)
    }
    fn segments(&self) -> std::io::Result<Vec<u64>> {
        self.inner.segments()
    }
    fn len(&self, segment: u64) -> std::io::Result<u64> {
        self.inner.len(segment)
    }
    fn stamp(&self, segment: u64) -> std::io::Result<SegmentStamp> {
        self.inner.stamp(segment)
    }
    fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read_at(segment, offset, buf)
    }
    fn read_into(
        &self,
        segment: u64,
        offset: u64,
        limit: u64,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.calls.fetch_add(1, SeqCst) >= self.fail_at.load(SeqCst) {
            let mut at = self.failed_at.lock().unwrap();
            at.get_or_insert((segment, offset));
            return Err(std::io::Error::other("the disk stopped reading"));
        }
        self.inner.read_into(segment, offset, limit, buf)
    }
    fn create(&mut self, segment: u64) -> std::io::Result<()> {
        self.inner.create(segment)
    }
    fn append(&mut self, segment: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.append(segment, bytes)
    }
    fn sync(&mut self, segment: u64) -> std::io::Result<()> {
        self.inner.sync(segment)
    }
    fn truncate(&mut self, segment: u64, len: u64) -> std::io::Result<()> {
        self.inner.truncate(segment, len)
    }
    fn remove(&mut self, segment: u64) -> std::io::Result<()> {
        self.inner.remove(segment)
    }
}

/// A read that fails partway through a walk in small pieces: the pipelined walk returns
/// the error, naming the segment, after handing out every record before the piece that
/// read was for and none from it on.
#[test]
fn a_read_that_fails_partway_ends_the_pipelined_walk_with_its_error() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (d, l) = many_segments();
    drop(l);
    let dir = d.path().join(LEDGER_DIR).join("journal");
    let calls = Arc::new(AtomicUsize::new(0));
    let fail_at = Arc::new(AtomicUsize::new(usize::MAX));
    let failed_at = Arc::new(std::sync::Mutex::new(None));
    let storage = FailingReads {
        inner: FsStorage::new(&dir).unwrap(),
        calls: calls.clone(),
        fail_at: fail_at.clone(),
        failed_at: failed_at.clone(),
    };
    let mut j = open_journal(Box::new(storage)).unwrap().0;
    let mut all = Vec::new();
    j.scan_all_refs(&mut |r| {
        all.push((r.event.seq, r.pos));
        Ok(())
    })
    .unwrap();
    j.set_piece_bytes(2000);
    for nth in [0usize, 7, 40] {
        calls.store(0, SeqCst);
        fail_at.store(nth, SeqCst);
        let mut handed = Vec::new();
        let err = j
            .scan_all_pipelined(2, &mut |r| {
                handed.push((r.event.seq, r.pos));
                Ok(())
            })
            .expect_err("a read failed");
        fail_at.store(usize::MAX, SeqCst);
        let (segment, offset) = failed_at.lock().unwrap().take().expect("a read failed");
        let what = format!("read {nth} failed at segment {segment} offset {offset}");
        assert!(
            err.to_string().contains(&format!("{segment:020}.seg")),
            "{what}: {err}"
        );
        assert!(nth == 0 || !handed.is_empty(), "{what}");
        assert_eq!(handed[..], all[..handed.len()], "{what}: in order");
        // The first record not handed out starts the piece that read was for: at the
        // failed read, or before it by the part of a frame read for that piece already.
        let next = all[handed.len()].1;
        assert!(
            next.segment == segment && next.offset <= offset && offset - next.offset < 4096,
            "{what}: the records before the failed piece were handed out (next {next:?})"
        );
        let after = all
            .iter()
            .filter(|(_, p)| (p.segment, p.offset) >= (segment, offset))
            .count();
        assert!(after > 0 && handed.len() + after <= all.len(), "{what}");
    }
}

/// A `prepare` that panics makes the pipelined walk panic (when the scope joins its
/// worker), never wait forever for the piece that worker did not finish.
#[test]
fn a_panic_in_prepare_ends_the_pipelined_walk() {
    let (d, l) = many_segments();
    drop(l);
    let dir = d.path().join(LEDGER_DIR).join("journal");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let walker = std::thread::spawn(move || {
        let j = journal_in(&dir);
        let prepare = |segment: u64, _: &[u8]| -> Option<()> {
            assert!(segment < 1000, "prepare fails on a later segment");
            Some(())
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            j.scan_all_pipelined_with(2, &prepare, &mut |_, _, ()| Ok(true))
        }));
        let _ = done_tx.send(r.is_err());
    });
    let panicked = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the walk never ended");
    assert!(panicked, "the walk should pass the panic on");
    walker.join().unwrap();
}

/// A record whose hash and links are right but whose bytes are not a canonical event
/// (here: one trailing byte, hashed with the rest) is refused by the pipelined walk,
/// which hands out nothing from it on; the sequential walk names its seq.
#[test]
fn the_pipelined_walk_refuses_a_well_hashed_record_that_does_not_decode() {
    let d = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    let mut prev = Hash::ZERO;
    for seq in 0..3u64 {
        let mut payload = ev(&format!("c{seq}"), "a").seal(seq, prev).encode();
        if seq == 1 {
            payload.push(0);
        }
        let hash = Hash::of_event_bytes(&payload);
        encode_frame(&payload, &hash, seq, seq, &mut bytes);
        prev = hash;
    }
    std::fs::write(d.path().join("00000000000000000000.seg"), &bytes).unwrap();
    let j = journal_in(d.path());
    let mut seqs = Vec::new();
    let ok = j
        .scan_all_pipelined(2, &mut |r| {
            seqs.push(r.event.seq);
            Ok(())
        })
        .unwrap();
    assert!(!ok);
    assert_eq!(seqs, vec![0]);
    match j.scan_all_refs(&mut |_| Ok(())) {
        Err(Error::Damaged { seq, .. }) => assert_eq!(seq, 1),
        other => panic!("sequential walk: {other:?}"),
    }
}

#[test]
fn damage_in_a_middle_segment_is_named_by_verify_like_the_sequential_walk() {
    let (d, l) = many_segments();
    assert_eq!(l.verify(VerifyOptions::default()).unwrap().events, 3001);
    drop(l);
    let jdir = d.path().join(LEDGER_DIR).join("journal");
    let mut segs: Vec<_> = std::fs::read_dir(&jdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let victim = &segs[segs.len() / 2];
    // Flip a byte in the payload of the second record of a middle segment.
    let mut bytes = std::fs::read(victim).unwrap();
    let first_len = 4 + 4 + 16 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 32;
    bytes[first_len + 40] ^= 0x20;
    std::fs::write(victim, &bytes).unwrap();
    let j = journal_in(&jdir);
    assert!(j
        .scan_all_parallel(2, &|| (), &|_, _| Ok(()))
        .unwrap()
        .is_none());
    let seq = match j.scan_all(&mut |_| Ok(())) {
        Err(Error::Damaged { seq, .. }) => seq,
        other => panic!("sequential walk: {other:?}"),
    };
    // The pipelined walk refuses too, and never hands out the damaged record or any after it.
    let mut last = None;
    let ok = j
        .scan_all_pipelined(2, &mut |r| {
            last = Some(r.event.seq);
            Ok(())
        })
        .unwrap();
    assert!(!ok);
    assert!(last.is_some_and(|l| l < seq), "{last:?} vs damage at {seq}");
    drop(j);
    let (l2, _) = Ledger::open_dir(&d.path().join(LEDGER_DIR), &OpenOptions::default()).unwrap();
    let rep = l2.verify(VerifyOptions::default()).unwrap();
    assert!(!rep.ok());
    assert_eq!(rep.problems[0].kind, "journal");
    assert_eq!(rep.problems[0].seq, Some(seq), "{:?}", rep.problems);
}

/// Opening a ledger whose journal is damaged before its tail re-indexes what it can;
/// that must not make it forget the last acknowledged seq. Here the damage is later
/// repaired (a bad read that went away, a restored copy) and the tail record is then
/// damaged: it must be refused as damage, not cut as a torn write.
#[test]
fn opening_a_damaged_journal_keeps_the_acknowledged_tail() {
    let (d, l) = init();
    for i in 0..5 {
        l.append(vec![ev(&format!("c{i}"), "a")], Precondition::None)
            .unwrap();
    }
    let last = l.event(5).unwrap();
    drop(l);
    let dir = d.path().join(LEDGER_DIR);
    let seg = dir.join("journal").join("00000000000000000000.seg");
    let good = std::fs::read(&seg).unwrap();
    let first_len = 24 + u32::from_le_bytes(good[4..8].try_into().unwrap()) as usize + 32;
    let mut bad = good.clone();
    bad[first_len + 30] ^= 0xff; // inside seq 1
    std::fs::write(&seg, &bad).unwrap();
    {
        let (_l, report) = Ledger::open_dir(&dir, &OpenOptions::default()).unwrap();
        assert!(report.damaged.is_some(), "{report:?}");
    }
    let mut torn = good.clone();
    let at = last.pos.offset as usize + 40;
    torn[at] ^= 0x01; // inside seq 5, the acknowledged tail
    std::fs::write(&seg, &torn).unwrap();
    match Ledger::open_dir(&dir, &OpenOptions::default()) {
        Err(Error::Damaged { seq: 5, .. }) => {}
        Err(e) => panic!("refused, but not naming seq 5: {e}"),
        Ok((l, report)) => panic!(
            "acknowledged seq 5 was treated as a torn write: {:?}, head {:?}",
            report.recovery,
            l.head()
        ),
    }
    assert!(std::fs::read(&seg).unwrap() == torn, "the journal was cut");
}

/// A record damaged behind an open ledger's back: reading it by seq names that seq
/// (not the first seq of its segment).
#[test]
fn reading_a_damaged_record_names_its_seq() {
    let (d, l) = init();
    for i in 0..4 {
        l.append(vec![ev(&format!("c{i}"), "a")], Precondition::None)
            .unwrap();
    }
    let pos = l.event(3).unwrap().pos;
    let seg = d
        .path()
        .join(LEDGER_DIR)
        .join("journal")
        .join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[pos.offset as usize + 60] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    match l.event(3) {
        Err(e @ Error::Damaged { seq: 3, .. }) => assert!(e.to_string().contains("seq 3")),
        other => panic!("expected damage at seq 3, got {other:?}"),
    }
    assert!(l.event(2).is_ok());
}

/// Reading from a seq in the middle of a batch (exports, replays from a snapshot,
/// index catch-up after damage was found mid-batch) is not damage.
#[test]
fn scanning_from_the_middle_of_a_batch_works() {
    let (_d, l) = init();
    l.append(
        vec![ev("b0", "a"), ev("b1", "a"), ev("b2", "a")],
        Precondition::None,
    )
    .unwrap();
    l.append(vec![ev("c", "a")], Precondition::None).unwrap();
    for from in 1..=4 {
        let mut seen = Vec::new();
        l.scan_range(from, 4, &mut |r| {
            seen.push(r.event.seq);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("scan from seq {from}: {e}"));
        assert_eq!(seen, (from..=4).collect::<Vec<_>>());
    }
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

#[test]
fn snapshots_are_checksummed_files_pruned_by_name_and_cleared_by_reindex() {
    let (d, l) = init();
    let dir = d.path().join(LEDGER_DIR).join("index").join("snapshots");
    let ix = l.index_unsynced();
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
    assert_eq!(
        l.index_unsynced().latest_snapshot_seq("tree-head").unwrap(),
        None
    );
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
}

/// A snapshot written in parts is the parts joined, in place only once finished; one
/// dropped before it is finished leaves nothing behind (no snapshot, no temporary file).
#[test]
fn a_snapshot_written_in_parts_is_in_place_only_when_finished() {
    let (d, l) = init();
    let dir = d.path().join(LEDGER_DIR).join("index").join("snapshots");
    let ix = l.index_unsynced();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let mut w = ix.snapshot_writer("tree", 3).unwrap();
    for part in [&b"one "[..], b"", b"two ", b"three"] {
        w.write(part).unwrap();
    }
    assert_eq!(ix.latest_snapshot_seq("tree").unwrap(), None, "not yet");
    let names = listing();
    assert!(
        names.len() == 1 && names[0].starts_with("tmp-"),
        "only a temporary file: {names:?}"
    );
    w.finish().unwrap();
    assert_eq!(
        ix.snapshot_at_or_before("tree", 3).unwrap(),
        Some((3, b"one two three".to_vec()))
    );
    // The same bytes as put whole.
    ix.put_snapshot("tree", 4, b"one two three").unwrap();
    let file = |seq: u64| std::fs::read(dir.join(format!("tree.{seq:020}"))).unwrap();
    assert_eq!(file(3), file(4));
    let mut w = ix.snapshot_writer("tree", 5).unwrap();
    w.write(b"half").unwrap();
    drop(w);
    let kept = [format!("tree.{:020}", 3), format!("tree.{:020}", 4)];
    assert_eq!(listing(), kept);
    assert_eq!(ix.latest_snapshot_seq("tree").unwrap(), Some(4));
    // A snapshot that cannot be put in place (a directory where it goes): an error,
    // and its temporary file gone.
    let blocked = dir.join(format!("tree.{:020}", 6));
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    let mut w = ix.snapshot_writer("tree", 6).unwrap();
    w.write(b"six").unwrap();
    assert!(w.finish().is_err());
    std::fs::remove_dir_all(&blocked).unwrap();
    assert_eq!(listing(), kept);
}

#[test]
fn a_failed_index_writer_is_caught_up_from_the_journal_on_the_next_read() {
    let (_d, l) = init();
    l.append(vec![ev("before", "a")], Precondition::None)
        .unwrap();
    l.sync_index().unwrap();
    // As after a sled write failed on a full disk: later appends are durable but the
    // writer no longer indexes them.
    l.fail_index_writer("No space left on device");
    for i in 0..5 {
        l.append(vec![ev(&format!("during-{i}"), "b")], Precondition::None)
            .unwrap();
    }
    // The next read catches the index up from the journal instead of failing.
    assert_eq!(l.change("during-3").unwrap()[0].event.seq, 5);
    assert_eq!(
        l.index().unwrap().agent_seqs("b").unwrap(),
        vec![2, 3, 4, 5, 6]
    );
    l.append(
        vec![ev("after", "a")],
        Precondition::NewChange("after".into()),
    )
    .unwrap();
    assert_eq!(l.change("after").unwrap()[0].event.seq, 7);
    assert!(l.verify(VerifyOptions::default()).unwrap().ok());
}
