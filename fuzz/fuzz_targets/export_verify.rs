//! An export file checked by `replay::export::verify_export_seekable`, the function
//! `ledger verify-export FILE [--pubkey KEY.pub]` runs, over the bytes of the input as
//! the file: without a key, with the key the seed corpus was signed with, and through
//! the streaming `verify_export` with a small line limit.
//!
//! Checked: no panic, an accepted file agrees with itself (the verdict does not depend
//! on reading the trailer first), and the fast path for event lines in the writer's
//! layout takes a line only when the general parser reads the same fields from it.
#![no_main]

use std::io::Cursor;

use ledger::checkpoint::VerifierKey;
use libfuzzer_sys::fuzz_target;
use replay::export::{event_line_paths, verify_export, verify_export_seekable, Filter, MAX_LINE};

fn key() -> &'static VerifierKey {
    static KEY: std::sync::OnceLock<VerifierKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        VerifierKey::parse(include_str!("../keys/fuzz.pub").trim()).expect("the fuzz key")
    })
}

fuzz_target!(|data: &[u8]| {
    let plain = verify_export_seekable(&mut Cursor::new(data), None, MAX_LINE);
    let streamed = verify_export(&mut &data[..], None, MAX_LINE);
    if let (Ok(a), Ok(b)) = (&plain, &streamed) {
        assert_eq!(a, b);
    }
    assert_eq!(
        plain.is_ok(),
        streamed.is_ok(),
        "seekable and streaming verification disagree"
    );
    let _ = verify_export_seekable(&mut Cursor::new(data), Some(key()), MAX_LINE);
    let _ = verify_export(&mut &data[..], Some(key()), 256);
    // The verifier's fast path for the writer's layout takes a line only when the
    // general parser reads the same fields from it.
    for line in data.split(|&b| b == b'\n') {
        let (fast, general) = event_line_paths(line, &Filter::default());
        if let Some(f) = fast {
            assert_eq!(Ok(f), general, "the fast path and the general parser disagree");
        }
    }
});
