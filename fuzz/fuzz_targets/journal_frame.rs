//! One journal frame, decoded by `ledger::decode_frame`: the function every journal
//! read goes through (recovery, scans, `read_at`, verify).
//!
//! A frame carries the BLAKE3 `derive_key` hash of its payload, which a mutated input
//! almost never matches, so most inputs would stop at the hash check. Each input is
//! therefore decoded twice: as it is (magic, length, hash checks), and with its stored
//! hash replaced by the right one for its payload, so that the canonical event decoder
//! behind the check sees arbitrary payloads, as it would from someone who can write
//! the journal and compute hashes.
#![no_main]

use ledger::{decode_frame, encode_frame, Event, Hash, FRAME_HEADER, FRAME_TRAILER};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let Ok(rec) = decode_frame(data) else { return };
    let len = rec.frame_len as usize;
    assert!(len <= data.len());
    let payload = &data[FRAME_HEADER..len - FRAME_TRAILER];
    assert_eq!(rec.hash, Hash::of_event_bytes(payload));
    // The payload is the one canonical encoding of the event it decodes to: encoding
    // the event again gives the same bytes, so its hash is the event's hash.
    assert_eq!(
        rec.event.encode(),
        payload,
        "a frame decoded from bytes that are not the canonical encoding of its event"
    );
    assert_eq!(rec.event.hash(), rec.hash);
    let mut again = Vec::new();
    encode_frame(
        payload,
        &rec.hash,
        rec.batch_first,
        rec.batch_last,
        &mut again,
    );
    assert_eq!(&again[..], &data[..len]);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes with the hash the payload needs.
    if data.len() >= FRAME_HEADER {
        let claimed = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
        let end = FRAME_HEADER
            .saturating_add(claimed)
            .saturating_add(FRAME_TRAILER);
        if end <= data.len() {
            let mut fixed = data.to_vec();
            let h = Hash::of_event_bytes(&data[FRAME_HEADER..FRAME_HEADER + claimed]);
            fixed[end - FRAME_TRAILER..end].copy_from_slice(h.as_bytes());
            check(&fixed);
        }
    }
    // The canonical event decoder on its own.
    if let Ok(ev) = Event::decode(data) {
        assert_eq!(ev.encode(), data, "non-canonical bytes decoded as an event");
    }
});
