//! A journal segment opened by `Journal::open` (torn-tail recovery, the chain walk) and
//! scanned by `scan_all` (what `ledger verify` and reindexing use), over the in-memory
//! `MemStorage` the crash tests use.
//!
//! Before opening, the harness walks the input's frames by their length fields and
//! repairs what a mutation almost never gets right: each frame's hash and each payload's
//! `prev` link (when the payload is long enough to hold one). The fuzzer then explores
//! seqs, batch fields, lengths and payloads behind valid hashes and links.
//!
//! Checked: no panic; recovery only ever cuts the segment (its bytes stay a prefix of
//! the input); a journal that opens undamaged and scans cleanly holds `head + 1`
//! records, takes one more append, and reopens with that append as its head.
#![no_main]

use std::collections::BTreeMap;

use ledger::{
    Actor, Body, Hash, Journal, MemStorage, NewEvent, Storage, FRAME_HEADER, FRAME_TRAILER,
};
use libfuzzer_sys::fuzz_target;

/// Repairs frame hashes and `prev` links in place, frame by frame, while the length
/// fields lead from one frame to the next.
fn repair(seg: &mut [u8]) {
    let mut off = 0usize;
    let mut prev: Option<Hash> = None;
    while off + FRAME_HEADER <= seg.len() {
        let len = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
        let end = off + FRAME_HEADER + len + FRAME_TRAILER;
        if len > ledger::MAX_EVENT_BYTES || end > seg.len() {
            return;
        }
        let p = off + FRAME_HEADER;
        if let Some(h) = prev {
            if len >= 40 {
                seg[p + 8..p + 40].copy_from_slice(h.as_bytes());
            }
        }
        let h = Hash::of_event_bytes(&seg[p..p + len]);
        seg[end - FRAME_TRAILER..end].copy_from_slice(h.as_bytes());
        prev = Some(h);
        off = end;
    }
}

fn count(j: &Journal) -> Result<u64, ledger::Error> {
    let mut n = 0u64;
    j.scan_all(&mut |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // The first byte chooses whether links are repaired; the rest is segment 0.
    let mut seg = data[1..].to_vec();
    if data[0] & 1 == 0 {
        repair(&mut seg);
    }
    let storage = MemStorage::from_image(BTreeMap::from([(0u64, seg.clone())]));
    let Ok((mut journal, _)) = Journal::open(Box::new(storage.clone()), None, None) else {
        return;
    };
    let after = storage.durable_image();
    let kept = after.get(&0).cloned().unwrap_or_default();
    assert!(seg.starts_with(&kept), "recovery changed bytes it kept");
    if journal.damage().is_some() {
        assert_eq!(kept, seg, "a damaged journal was cut");
        return;
    }
    let Ok(n) = count(&journal) else { return };
    let head = journal.head();
    assert_eq!(n, head.map_or(0, |h| h.seq + 1), "records scanned vs head");
    // It takes an append, and reopens with that append as its head.
    let ev = NewEvent {
        time_us: 0,
        actor: Actor {
            agent: "fuzz".into(),
            principal: None,
            role: None,
        },
        change_id: "fuzz".into(),
        correlation_id: None,
        body: Body::Checkpoint(ledger::Checkpoint {
            size: 0,
            root: Hash::ZERO,
        }),
        meta: BTreeMap::new(),
    };
    let rec = journal.append(vec![ev]).expect("append after a clean open");
    drop(journal);
    let image = storage.durable_image();
    let (j2, rec2) = Journal::open(Box::new(MemStorage::from_image(image)), None, None)
        .expect("reopen after an append");
    assert_eq!(rec2.cut_bytes, 0, "reopening cut bytes");
    assert!(j2.damage().is_none());
    assert_eq!(j2.head().map(|h| h.seq), Some(rec[0].event.seq));
    assert_eq!(count(&j2).expect("scan after reopen"), n + 1);
    let _ = storage.segments();
});
