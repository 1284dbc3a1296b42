//! The format documentation is complete enough to re-derive hashes independently.

use std::process::Command;

/// `tools/event_hash.py` encodes the pinned example event using only docs/FORMAT.md
/// and must reproduce the hash the Rust code pins.
#[test]
fn python_rederives_the_pinned_event_hash_from_the_spec() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("python3")
        .arg(format!("{root}/tools/event_hash.py"))
        .output()
        .expect("python3 runs (scripts/test.sh installs its packages)");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        "317 9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9"
    );
}
