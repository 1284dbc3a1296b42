//! A damaged ledger and a busy one, as the binary sees them: flipped bytes in the
//! journal and in stored content, a torn last write, and a second process holding
//! (or dying while holding) the lock.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// (offset, length) of every frame in a segment, read from the frame headers:
/// `magic(4) | payload_len u32 LE | batch_first u64 | batch_last u64 | payload | hash(32)`.
fn frames(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < seg.len() {
        assert_eq!(&seg[off..off + 4], b"LJR1", "no frame at offset {off}");
        let len = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
        let flen = 24 + len + 32;
        out.push((off, flen));
        off += flen;
    }
    out
}

/// A ledger with the genesis event and `n` recorded changes, one file each.
fn ledger_with_changes(n: usize) -> (TestEnvironment, Vec<String>) {
    let env = TestEnvironment::init();
    let ids = (0..n)
        .map(|i| {
            env.write(format!("f{i}.txt"), format!("content {i}\n"));
            env.record("agent-a", &[])
        })
        .collect();
    (env, ids)
}

#[test]
fn a_flipped_byte_in_an_early_record_fails_verify_and_refuses_appends() {
    let (env, _) = ledger_with_changes(5);
    let seg_path = env.segment0();
    let good = fs::read(&seg_path).unwrap();
    let fr = frames(&good);
    assert_eq!(fr.len(), 6);
    let (off, flen) = fr[1]; // seq 1: the first change, with four records after it
    let payload_len = flen - 24 - 32;
    let spots = [
        ("payload middle", off + 24 + payload_len / 2),
        ("payload start", off + 24),
        ("stored hash", off + flen - 5),
        ("batch field", off + 17),
        ("length field", off + 5),
        ("record marker", off + 1),
    ];
    env.write("new.txt", "after the damage\n");
    for (what, at) in spots {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        fs::write(&seg_path, &bad).unwrap();
        let ctx = format!("byte flipped in the {what} of seq 1 (offset {at})");
        // The batch fields of a frame header are outside the event hash: damage there
        // shows as a batch mismatch at the next record, so seq 2 may be named instead.
        let names_seq = |text: &str| {
            text.contains("seq 1") || (what == "batch field" && text.contains("seq 2"))
        };

        let out = env.run(["verify"]).expect_code(EXIT_VERIFY);
        assert!(names_seq(&out.stderr), "{ctx}: seq not named: {out:?}");
        let out = env.run(["verify", "--json"]).expect_code(EXIT_VERIFY);
        assert!(names_seq(&out.stderr), "{ctx}: {out:?}");

        let out = env.run(["record", "--agent", "a"]).failure();
        assert!(names_seq(&out.stderr), "{ctx}: {out:?}");
        assert!(out.stdout.is_empty(), "{ctx}: {out:?}");
        // Reads that need the damaged record fail naming it; reads that do not (log
        // goes through the indexes) still work, with a warning, for forensics.
        let out = env.run(["status"]).failure();
        assert!(names_seq(&out.stderr), "{ctx}: {out:?}");
        let out = env.run(["log"]).success();
        assert!(names_seq(&out.stderr), "{ctx}: {out:?}");
        env.run(["reindex"]).failure();
        assert!(
            fs::read(&seg_path).unwrap() == bad,
            "{ctx}: the damaged journal was changed"
        );
        // Without the index (no memory of what was acknowledged) it is still damage.
        fs::remove_dir_all(env.ledger_dir().join("index")).unwrap();
        let out = env.run(["verify"]).expect_code(EXIT_VERIFY);
        assert!(names_seq(&out.stderr), "{ctx}: {out:?}");
        env.run(["record", "--agent", "a"]).failure();
        assert!(
            fs::read(&seg_path).unwrap() == bad,
            "{ctx}: the damaged journal was changed (no index)"
        );

        fs::write(&seg_path, &good).unwrap();
        let v = env.verify_ok();
        assert_eq!(
            v["events"], 6,
            "{ctx}: the repaired journal does not verify"
        );
    }
    env.record("a", &[]);
    assert_eq!(env.event_count(), 7);
}

#[test]
fn a_flipped_byte_in_a_content_object_fails_verify_naming_the_hash() {
    let env = TestEnvironment::init();
    let small = b"small content, stored raw\n".to_vec();
    let big: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    env.write("small.txt", &small);
    env.write("big.bin", &big);
    env.record("a", &[]);
    let v = env.verify_ok();
    assert_eq!(v["contents_checked"], 2);

    for (what, bytes) in [("raw object", &small), ("compressed object", &big)] {
        let hash = b3(bytes);
        let obj = env
            .ledger_dir()
            .join("objects")
            .join(&hash[..2])
            .join(&hash[2..]);
        let good = fs::read(&obj).unwrap_or_else(|e| panic!("{what}: no object file: {e}"));
        let mut bad = good.clone();
        let at = bad.len() - 3;
        bad[at] ^= 0x01;
        fs::write(&obj, &bad).unwrap();

        let out = env.run(["verify"]).expect_code(EXIT_VERIFY);
        assert!(
            out.stderr.contains(&hash),
            "{what}: hash not named: {out:?}"
        );
        let out = env.run(["verify", "--json"]).expect_code(EXIT_VERIFY);
        let rep = out.json();
        let problems = rep["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{what}: {out:?}");
        assert_eq!(problems[0]["kind"], "content");
        assert_eq!(problems[0]["hash"], hash.as_str());
        assert_eq!(problems[0]["seq"], 1);
        // The store refuses to hand out damaged bytes.
        let out = env.run(["cat", &hash]).failure();
        assert!(out.stderr.contains(&hash), "{what}: {out:?}");
        assert!(
            out.stdout_bytes.is_empty(),
            "{what}: damaged bytes were written"
        );

        fs::write(&obj, &good).unwrap();
        env.verify_ok();
    }

    // A missing object is named too, also by the quick check.
    let hash = b3(&small);
    let obj = env
        .ledger_dir()
        .join("objects")
        .join(&hash[..2])
        .join(&hash[2..]);
    fs::remove_file(&obj).unwrap();
    for args in [vec!["verify"], vec!["verify", "--quick"]] {
        let out = env.run(&args).expect_code(EXIT_VERIFY);
        assert!(out.stderr.contains(&hash), "{args:?}: {out:?}");
    }
}

/// Puts `.ledger/` back to a copy taken earlier.
fn restore_ledger(env: &TestEnvironment, backup: &Path) {
    fs::remove_dir_all(env.ledger_dir()).unwrap();
    copy_tree(backup, &env.ledger_dir());
}

/// A torn write, faithfully: the process appending the last batch died before its
/// fsync returned, so neither the append was acknowledged nor the index updated. We
/// take the whole `.ledger/` as it was before that append and give it the journal
/// with the last batch cut somewhere inside.
#[test]
fn a_torn_last_write_is_recovered_and_reported() {
    let (env, ids) = ledger_with_changes(2);
    let backup = env.root().join("ledger-before-last-append");
    copy_tree(&env.ledger_dir(), &backup);
    env.write("torn.txt", "the torn change\n");
    let torn_id = env.record("a", &[]);
    let full = fs::read(env.segment0()).unwrap();
    let (off, flen) = *frames(&full).last().unwrap();
    assert_eq!(off + flen, full.len());

    for cut in [
        off + 1,
        off + 20,
        off + 24 + (flen - 56) / 2,
        off + flen - 1,
    ] {
        restore_ledger(&env, &backup);
        fs::write(env.segment0(), &full[..cut]).unwrap();
        let ctx = format!(
            "journal cut at {cut} (last record at {off}..{})",
            off + flen
        );

        let out = env.run(["log", "--json"]).success();
        assert!(
            out.stderr.contains("recovered from an interrupted write"),
            "{ctx}: recovery not reported: {out:?}"
        );
        assert!(
            out.stderr.contains(&format!("cut {} bytes", cut - off)),
            "{ctx}: {out:?}"
        );
        assert!(!out.stderr.contains("damaged"), "{ctx}: {out:?}");
        let logged: Vec<String> = out
            .json_lines()
            .iter()
            .map(|v| v["change_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(logged, [ids[1].as_str(), ids[0].as_str()], "{ctx}");
        assert_eq!(
            fs::metadata(env.segment0()).unwrap().len(),
            off as u64,
            "{ctx}"
        );

        let v = env.verify_ok();
        assert_eq!(v["events"], 3, "{ctx}");
        env.run(["show", &torn_id]).failure();
        // Recording works again and takes the seq the torn record had.
        let again = env.record("a", &[]);
        let s = env.show_json(&again);
        assert_eq!(s["seq"], 3, "{ctx}");
        assert_eq!(s["files"][0]["path"], "torn.txt");
        assert_eq!(env.event_count(), 4, "{ctx}");
        let out = env.run(["status", "--json"]).success();
        assert!(
            !out.stderr.contains("recovered"),
            "{ctx}: recovered twice: {out:?}"
        );
        assert_eq!(out.json()["clean"], true, "{ctx}");
    }
}

/// A batch (here the change and failure events of a failed `exec`) is durable as a
/// whole: a tear in its second record takes its intact first record with it.
#[test]
fn a_torn_batch_is_dropped_as_a_whole() {
    let (env, ids) = ledger_with_changes(1);
    let backup = env.root().join("ledger-before-batch");
    copy_tree(&env.ledger_dir(), &backup);
    let out = env
        .run([
            "exec",
            "--agent",
            "bot",
            "--",
            "sh",
            "-c",
            "echo half > half.txt; exit 9",
        ])
        .expect_code(9);
    let batch_id = out.stdout.trim().to_string();
    let s = env.show_json(&batch_id);
    assert_eq!(s["events"].as_array().unwrap().len(), 2);
    let full = fs::read(env.segment0()).unwrap();
    let fr = frames(&full);
    let (first_off, _) = fr[fr.len() - 2];
    let (last_off, last_len) = fr[fr.len() - 1];

    restore_ledger(&env, &backup);
    fs::write(env.segment0(), &full[..last_off + last_len / 2]).unwrap();
    let out = env.run(["log", "--json"]).success();
    assert!(
        out.stderr.contains("recovered from an interrupted write"),
        "{out:?}"
    );
    assert!(out.stderr.contains("seqs dropped: [2]"), "{out:?}");
    assert_eq!(out.json_lines().len(), 1);
    assert_eq!(out.json()["change_id"], ids[0].as_str());
    assert_eq!(
        fs::metadata(env.segment0()).unwrap().len(),
        first_off as u64
    );
    env.run(["show", &batch_id]).failure();
    let v = env.verify_ok();
    assert_eq!(v["events"], 2);
    // What the torn batch held is unrecorded again.
    let again = env.record("a", &[]);
    assert_eq!(env.show_json(&again)["files"][0]["path"], "half.txt");
    env.verify_ok();
}

/// Waits until the ledger's lock file names `pid` (written right after locking).
fn wait_for_lock_holder(env: &TestEnvironment, child: &mut Child) {
    let pid = child.id().to_string();
    let lock = env.ledger_dir().join("lock");
    let start = Instant::now();
    loop {
        if fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the lock holder exited early ({st}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the background ledger never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until a shell has written its pid (and a newline) to `path`; returns it.
fn wait_for_pidfile(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `ledger exec --agent a -- sh -c 'echo $$ > PIDFILE; exec sleep SECS'` and
/// returns once it holds the lock and its command runs (so its first scan is over).
/// Also returns the pid of the `sleep`.
fn start_lock_holder(env: &TestEnvironment, secs: u32) -> (Child, String) {
    let pidfile = env.root().join("sleeper.pid");
    let _ = fs::remove_file(&pidfile);
    let script = format!("echo $$ > '{}'; exec sleep {secs}", pidfile.display());
    let mut holder = env
        .command(
            env.workspace(),
            ["exec", "--agent", "a", "--", "sh", "-c", &script],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock_holder(env, &mut holder);
    let sleeper = wait_for_pidfile(&pidfile);
    (holder, sleeper)
}

#[test]
fn a_second_process_gets_exit_5_while_the_lock_is_held() {
    let (env, _) = ledger_with_changes(1);
    let journal = env.journal_bytes();
    let (mut holder, _) = start_lock_holder(&env, 5);

    let t = Instant::now();
    let out = env
        .run(["--lock-timeout", "0.5", "record", "--agent", "b"])
        .expect_code(EXIT_LOCKED);
    let waited = t.elapsed();
    assert!(out.stderr.contains("in use by another process"), "{out:?}");
    assert!(
        out.stderr.contains(&format!("pid {}", holder.id())),
        "the holder is not named: {out:?}"
    );
    assert!(out.stderr.contains("--lock-timeout"), "no hint: {out:?}");
    assert!(
        waited >= Duration::from_millis(450),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
    // Every command takes the lock, read-only ones too.
    env.run(["--lock-timeout", "0", "log"])
        .expect_code(EXIT_LOCKED);
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder finished too early for this test to mean anything"
    );

    let st = holder.wait().unwrap();
    assert!(st.success(), "the exec in the background failed: {st}");
    assert_eq!(env.journal_bytes(), journal);
    env.verify_ok();
    env.write("b.txt", "b\n");
    env.record("b", &[]);
    env.verify_ok();
}

#[test]
fn a_lock_holder_killed_with_sigkill_does_not_leave_the_ledger_locked() {
    let (env, _) = ledger_with_changes(1);
    let (mut holder, sleeper) = start_lock_holder(&env, 60);
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    // The command it ran (still sleeping) must not have inherited the lock.
    let out = env.run(["--lock-timeout", "2", "verify"]);
    // Stop the orphaned `sleep` we started before asserting anything.
    let _ = std::process::Command::new("kill")
        .args(["-9", &sleeper])
        .status();
    out.success();
    env.write("c.txt", "c\n");
    env.record("after-kill", &[]);
    env.verify_ok();
}
