//! Journal behaviour at the library boundary: chain, durability, torn tails, damage.

use std::collections::BTreeMap;

use ledger::*;

fn ev(i: u64) -> NewEvent {
    NewEvent {
        time_us: 1_700_000_000_000_000 + i as i64,
        actor: Actor {
            agent: "agent-a".into(),
            principal: None,
            role: None,
        },
        change_id: format!("c{i}"),
        correlation_id: None,
        body: Body::Failure(Failure {
            stage: "test".into(),
            error: format!("event {i}"),
            exit_code: None,
        }),
        meta: BTreeMap::new(),
    }
}

fn all(j: &Journal) -> Vec<Record> {
    let mut v = Vec::new();
    j.scan_all(&mut |r| {
        v.push(r.clone());
        Ok(())
    })
    .unwrap();
    v
}

#[test]
fn appends_chain_and_reopen() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0)]).unwrap();
    j.append(vec![ev(1), ev(2), ev(3)]).unwrap();
    let head = j.head().unwrap();
    assert_eq!(head.seq, 3);
    let (j2, rec) = open_journal(Box::new(MemStorage::from_image(mem.durable_image()))).unwrap();
    assert_eq!(rec, Recovery::default());
    assert_eq!(j2.head(), Some(head));
    let recs = all(&j2);
    assert_eq!(recs.len(), 4);
    for w in recs.windows(2) {
        assert_eq!(w[1].event.prev, w[0].hash);
        assert_eq!(w[1].event.seq, w[0].event.seq + 1);
    }
    assert_eq!(recs[0].event.prev, Hash::ZERO);
}

#[test]
fn segments_rotate_and_scan_across_them() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.set_segment_target(500);
    for i in 0..20 {
        j.append(vec![ev(i)]).unwrap();
    }
    assert!(mem.segments().unwrap().len() > 3);
    let (j2, _) = open_journal(Box::new(MemStorage::from_image(mem.durable_image()))).unwrap();
    assert_eq!(all(&j2).len(), 20);
    assert_eq!(j2.head().unwrap().seq, 19);
}

#[test]
fn unsynced_batch_is_cut_back_whole_at_every_cut_point() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0), ev(1)]).unwrap();
    let synced_head = j.head().unwrap();
    let durable = mem.durable_image();
    // The next batch is written but its sync never becomes durable.
    mem.freeze_durability_after(0);
    j.append(vec![ev(2), ev(3), ev(4)]).unwrap();
    let written_len = mem.written_image()[&0].len();
    let unsynced = written_len - durable[&0].len();
    for keep in 0..=unsynced {
        let image = mem.crash_image(keep, 0, 0);
        let (j2, rec) = open_journal(Box::new(MemStorage::from_image(image))).unwrap();
        if keep == unsynced {
            // The whole batch reached the disk: it is complete and kept.
            assert_eq!(j2.head().unwrap().seq, 4, "keep={keep}");
        } else {
            assert_eq!(j2.head(), Some(synced_head), "keep={keep}");
            assert_eq!(rec.cut_bytes as usize, keep, "keep={keep}");
        }
        assert!(all(&j2).len() >= 2);
    }
}

#[test]
fn reordered_unsynced_writes_are_cut_back_to_the_batch_start() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0)]).unwrap();
    let synced_head = j.head().unwrap();
    mem.freeze_durability_after(0);
    j.append(vec![ev(1), ev(2), ev(3)]).unwrap();
    let unsynced = mem.written_image()[&0].len() - mem.durable_image()[&0].len();
    // Every hole (zeroed range) inside an otherwise fully written batch.
    for at in (0..unsynced).step_by(7) {
        for hole in [1, 50, 200] {
            let image = mem.crash_image(unsynced, at, hole);
            let intact = image == mem.written_image();
            let (j2, _) = open_journal(Box::new(MemStorage::from_image(image))).unwrap();
            if intact {
                // The zeroed range held only zero bytes: nothing was lost.
                assert_eq!(j2.head().unwrap().seq, 3);
            } else {
                assert_eq!(j2.head(), Some(synced_head), "hole at {at} len {hole}");
            }
        }
    }
}

#[test]
fn damage_before_the_last_batch_is_refused_not_cut() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    for i in 0..5 {
        j.append(vec![ev(i)]).unwrap();
    }
    let mut image = mem.durable_image();
    let seg = image.get_mut(&0).unwrap();
    let recs = all(&j);
    let off = recs[2].pos.offset as usize + FRAME_HEADER + 3;
    seg[off] ^= 0x40;
    let mem2 = MemStorage::from_image(image.clone());
    let (mut j2, rec) = open_journal(Box::new(mem2.clone())).unwrap();
    assert_eq!(rec, Recovery::default(), "nothing is cut");
    let damage = j2.damage().expect("damage is reported").to_string();
    assert!(
        damage.contains("seq 2") && damage.contains("hash"),
        "{damage}"
    );
    assert!(matches!(j2.append(vec![ev(5)]), Err(Error::Refused(_))));
    assert_eq!(mem2.written_image(), image, "journal bytes unchanged");
    let err = j2.scan_all(&mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, Error::Damaged { seq: 2, .. }), "{err}");
}

#[test]
fn acknowledged_tail_is_never_cut() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    for i in 0..3 {
        j.append(vec![ev(i)]).unwrap();
    }
    let mut image = mem.durable_image();
    let seg = image.get_mut(&0).unwrap();
    let n = seg.len();
    seg[n - 5] ^= 1;
    let r = Journal::open(Box::new(MemStorage::from_image(image)), None, Some(2));
    assert!(
        matches!(r, Err(Error::Damaged { seq: 2, .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn failed_write_leaves_journal_valid_and_unacknowledged() {
    for fault in [
        Fault::AppendOnce(1),
        Fault::ShortAppend(1),
        Fault::AppendFrom(1),
    ] {
        let mem = MemStorage::new();
        let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
        j.append(vec![ev(0)]).unwrap();
        mem.inject(fault);
        assert!(j.append(vec![ev(1), ev(2)]).is_err());
        assert_eq!(j.head().unwrap().seq, 0, "{fault:?}");
        if !matches!(fault, Fault::AppendFrom(_)) {
            // A later append succeeds and continues the chain.
            j.append(vec![ev(1)]).unwrap();
            assert_eq!(all(&j).len(), 2);
        }
        let (j2, _) = open_journal(Box::new(MemStorage::from_image(mem.written_image()))).unwrap();
        assert!(all(&j2).len() <= 2);
    }
}

#[test]
fn failed_fsync_is_never_retried_into_success() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0)]).unwrap();
    mem.inject(Fault::SyncOnce(1));
    assert!(j.append(vec![ev(1)]).is_err());
    // The sync would succeed now, but the journal refuses until reopened.
    let again = j.append(vec![ev(1)]);
    assert!(matches!(again, Err(Error::Refused(_))), "{:?}", again.err());
    let (mut j2, _) = open_journal(Box::new(MemStorage::from_image(mem.durable_image()))).unwrap();
    assert_eq!(j2.head().unwrap().seq, 0);
    j2.append(vec![ev(1)]).unwrap();
}

#[test]
fn every_truncation_of_the_last_record_recovers() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0)]).unwrap();
    j.append(vec![ev(1)]).unwrap();
    let full = mem.durable_image();
    let len = full[&0].len();
    let last_start = all(&j)[1].pos.offset as usize;
    for cut in last_start..len {
        let mut image = full.clone();
        image.get_mut(&0).unwrap().truncate(cut);
        let (j2, rec) = open_journal(Box::new(MemStorage::from_image(image))).unwrap();
        assert_eq!(j2.head().unwrap().seq, 0, "cut at {cut}");
        assert_eq!(rec.cut_bytes as usize, cut - last_start);
    }
}

/// `batch_last` is outside the event hash. A last record whose batch claims to go on
/// (a flipped bit there, or records cut off behind an open journal) is damage to
/// `scan_all` (and so to `verify`), naming the batch's first seq.
#[test]
fn an_unfinished_batch_at_the_end_fails_the_full_walk() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    j.append(vec![ev(0)]).unwrap();
    j.append(vec![ev(1)]).unwrap();
    assert_eq!(all(&j).len(), 2);
    let last = all(&j).pop().unwrap();
    let mut seg = mem.written_image()[&0].clone();
    let at = last.pos.offset as usize + 16;
    seg[at..at + 8].copy_from_slice(&2u64.to_le_bytes()); // batch 1..=2
    let mut edit = mem.clone();
    edit.truncate(0, 0).unwrap();
    edit.append(0, &seg).unwrap();
    let err = j.scan_all(&mut |_| Ok(())).unwrap_err();
    assert!(
        matches!(err, Error::Damaged { seq: 1, .. }) && err.to_string().contains("unfinished"),
        "{err}"
    );
}

/// Whole records cut off at a record boundary leave a journal that reads cleanly, but
/// when the index recorded a later acknowledged seq that is lost data, not a torn write.
#[test]
fn acknowledged_records_cut_at_a_boundary_are_refused() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    for i in 0..3 {
        j.append(vec![ev(i)]).unwrap();
    }
    let recs = all(&j);
    let mut image = mem.durable_image();
    image
        .get_mut(&0)
        .unwrap()
        .truncate(recs[2].pos.offset as usize);
    let r = Journal::open(
        Box::new(MemStorage::from_image(image.clone())),
        None,
        Some(2),
    );
    match r {
        Err(e @ Error::Damaged { seq: 2, .. }) => {
            assert!(e.to_string().contains("acknowledged"), "{e}")
        }
        other => panic!(
            "expected damage at seq 2, got {:?}",
            other.map(|(j, _)| j.head())
        ),
    }
    // Without that knowledge the same bytes are a clean journal of two records.
    let (j2, rec) = open_journal(Box::new(MemStorage::from_image(image))).unwrap();
    assert_eq!(rec, Recovery::default());
    assert_eq!(j2.head().unwrap().seq, 1);
}

/// Two whole records exchanged at the start of a segment: each frame checks itself,
/// but the segment no longer starts with the seq it is named by, and the full walk
/// names seq 0 (where seq 1 now stands), not the seq it found.
#[test]
fn swapped_first_records_are_damage_naming_the_missing_seq() {
    let mem = MemStorage::new();
    let (mut j, _) = open_journal(Box::new(mem.clone())).unwrap();
    for i in 0..3 {
        j.append(vec![ev(i)]).unwrap();
    }
    let recs = all(&j);
    let seg = mem.durable_image()[&0].clone();
    let (a, b) = (recs[0].frame_len as usize, recs[1].frame_len as usize);
    let mut swapped = seg[a..a + b].to_vec();
    swapped.extend_from_slice(&seg[..a]);
    swapped.extend_from_slice(&seg[a + b..]);
    let image = BTreeMap::from([(0u64, swapped.clone())]);
    match open_journal(Box::new(MemStorage::from_image(image))) {
        Err(e @ Error::Damaged { seq: 0, .. }) => {
            assert!(e.to_string().contains("segment name"), "{e}")
        }
        other => panic!(
            "expected damage at seq 0, got {:?}",
            other.map(|(j, _)| j.head())
        ),
    }
    let mut edit = mem.clone();
    edit.truncate(0, 0).unwrap();
    edit.append(0, &swapped).unwrap();
    let err = j.scan_all(&mut |_| Ok(())).unwrap_err();
    assert!(matches!(err, Error::Damaged { seq: 0, .. }), "{err}");
}

/// Found by the `journal_open` fuzz target (input: one empty segment 0): a crash right
/// after the first segment was created, before its first record was written, left a
/// journal that opened but refused every append ("creating journal segment: already
/// exists").
#[test]
fn an_empty_first_segment_takes_appends() {
    let mem = MemStorage::from_image(BTreeMap::from([(0u64, Vec::new())]));
    let (mut j, rec) = open_journal(Box::new(mem.clone())).unwrap();
    assert_eq!(rec, Recovery::default());
    assert!(j.head().is_none());
    j.append(vec![ev(0)]).unwrap();
    j.append(vec![ev(1)]).unwrap();
    let (j2, rec) = open_journal(Box::new(MemStorage::from_image(mem.durable_image()))).unwrap();
    assert_eq!(rec.cut_bytes, 0);
    assert_eq!(all(&j2).len(), 2);
}
