//! Regression tests, each named for what broke.

mod common;

use std::time::Duration;

use common::*;

/// `status` filled the stat cache from a scan that stores nothing; the next `record`
/// trusted the cache and named content that was never stored.
#[test]
fn record_after_status_stores_the_content_it_names() {
    let env = TestEnvironment::init();
    env.write("f.txt", "hello\n");
    std::thread::sleep(Duration::from_millis(1100)); // the cache keeps files older than 1 s
    env.run(["status"]).success();
    let id = env.record("a", &[]);
    let hash = env.show_json(&id)["files"][0]["new_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hash, b3(b"hello\n"));
    let out = env.run(["cat", &hash]);
    assert_eq!(out.code, 0, "recorded content is not in the store: {out:?}");
    env.verify_ok();
}

#[test]
fn record_after_status_stores_modified_content() {
    let env = TestEnvironment::init();
    env.write("f.txt", "one\n");
    env.record("a", &[]);
    env.write("f.txt", "two\n");
    std::thread::sleep(Duration::from_millis(1100));
    env.run(["status"]).success();
    env.record("a", &[]);
    env.verify_ok();
}

/// An acknowledged last record cut short must be reported as damage, not recovered
/// as a torn write: the index remembers it was acknowledged.
#[test]
fn a_damaged_acknowledged_tail_is_not_cut_by_a_read_only_command() {
    let env = TestEnvironment::init();
    for i in 0..4 {
        env.write(format!("f{i}"), format!("{i}\n"));
        env.record("a", &[]);
    }
    let seg = env.segment0();
    let full = std::fs::read(&seg).unwrap();
    let damaged = full[..full.len() - 10].to_vec();
    std::fs::write(&seg, &damaged).unwrap();
    let out = env.run(["log"]);
    assert!(
        std::fs::read(&seg).unwrap() == damaged,
        "`ledger log` cut the journal: {out:?}"
    );
    let out = env.run(["verify"]);
    assert_eq!(out.code, EXIT_VERIFY, "{out:?}");
    assert!(out.stderr.contains("seq 4"), "{out:?}");
    env.write("g", "g\n");
    env.run(["record", "--agent", "a"]).failure();
    assert!(std::fs::read(&seg).unwrap() == damaged);
}
