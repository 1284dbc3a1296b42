//! The `ledger` binary driven as a real process: init, record, exec, status, log,
//! show, cat, verify, reindex, and how the workspace scan treats every kind of entry.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The `files` of a `show --json`/`log --json` value, keyed by their `path` as JSON text.
fn files_by_path(change: &Value) -> BTreeMap<String, Value> {
    change["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|f| {
            let key = match &f["path"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key, f.clone())
        })
        .collect()
}

fn paths(change: &Value) -> Vec<String> {
    files_by_path(change).into_keys().collect()
}

#[test]
fn init_creates_a_ledger_and_a_second_init_changes_nothing() {
    let env = TestEnvironment::new();
    let out = env.run(["init", "--json"]).success();
    let init = out.json();
    assert!(env.ledger_dir().join("FORMAT").is_file());
    let v = env.verify_ok();
    assert_eq!(v["events"], 1, "a new ledger holds only the genesis event");
    assert_eq!(v["head_seq"], 0);
    assert_eq!(v["head_hash"], init["genesis"]);
    assert!(env.log_json(&[]).is_empty(), "genesis is not a change");

    let before = tree_bytes(&env.ledger_dir());
    let out = env.run(["init"]).expect_code(EXIT_ERROR);
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert!(out.stderr.contains(".ledger"), "{out:?}");
    assert_eq!(
        tree_bytes(&env.ledger_dir()),
        before,
        "a refused init changed .ledger/"
    );
    env.verify_ok();
}

#[test]
fn record_create_modify_delete() {
    let env = TestEnvironment::init();
    env.write("a.txt", "one\n");
    env.write("dir/b.txt", "bee\n");
    env.write("gone.txt", "bye\n");
    let c1 = env.record("agent-1", &["-m", "first step", "--principal", "alice"]);
    let s1 = env.show_json(&c1);
    assert_eq!(s1["agent"], "agent-1");
    assert_eq!(s1["principal"], "alice");
    assert_eq!(s1["message"], "first step");
    assert_eq!(paths(&s1), ["a.txt", "dir/b.txt", "gone.txt"]);
    for (p, content) in [
        ("a.txt", "one\n"),
        ("dir/b.txt", "bee\n"),
        ("gone.txt", "bye\n"),
    ] {
        let f = &files_by_path(&s1)[p];
        assert_eq!(f["op"], "create");
        assert_eq!(f["old_hash"], Value::Null);
        assert_eq!(f["new_hash"], b3(content.as_bytes()));
        assert_eq!(f["new_size"], content.len());
        assert_eq!(f["new_mode"], "regular");
        assert_eq!(f["resource"], format!("file:{p}"));
    }

    env.write("a.txt", "two\n");
    env.remove("gone.txt");
    env.write("c.txt", "sea\n");
    let c2 = env.record("agent-1", &[]);
    let s2 = env.show_json(&c2);
    let f = files_by_path(&s2);
    assert_eq!(paths(&s2), ["a.txt", "c.txt", "gone.txt"]);
    assert_eq!(f["a.txt"]["op"], "modify");
    assert_eq!(f["a.txt"]["old_hash"], b3(b"one\n"));
    assert_eq!(f["a.txt"]["new_hash"], b3(b"two\n"));
    assert_eq!(f["c.txt"]["op"], "create");
    assert_eq!(f["gone.txt"]["op"], "delete");
    assert_eq!(f["gone.txt"]["old_hash"], b3(b"bye\n"));
    assert_eq!(f["gone.txt"]["new_hash"], Value::Null);
    assert!(s2["seq"].as_u64() > s1["seq"].as_u64());

    assert_eq!(env.log_ids(&[]), [c2.clone(), c1.clone()]);
    assert_eq!(env.event_count(), 3);
    // Every hash named is in the store, byte for byte.
    let out = env.run(["cat", &b3(b"one\n")]).success();
    assert_eq!(out.stdout_bytes, b"one\n");
    // Human output names the change and the files.
    let out = env.run(["show", &c2]).success();
    assert!(out.stdout.contains(&c2), "{out:?}");
    assert!(out.stdout.contains("gone.txt"), "{out:?}");
    // An unambiguous prefix of a change ID resolves to it.
    let common = c1
        .bytes()
        .zip(c2.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let prefix = &c1[..common + 1];
    assert_eq!(env.show_json(prefix)["change_id"], c1.as_str());
    assert_eq!(
        env.run(["status", "--json"]).success().json()["clean"],
        true
    );
}

#[test]
fn executable_bit_is_recorded() {
    let env = TestEnvironment::init();
    env.write("tool.sh", "#!/bin/sh\necho hi\n");
    env.set_mode("tool.sh", 0o755);
    env.write("plain.txt", "plain\n");
    let c1 = env.record("a", &[]);
    let f = files_by_path(&env.show_json(&c1));
    assert_eq!(f["tool.sh"]["new_mode"], "executable");
    assert_eq!(f["plain.txt"]["new_mode"], "regular");

    // Only the mode changes: still a modification, with the same hash.
    env.set_mode("tool.sh", 0o644);
    env.set_mode("plain.txt", 0o744);
    let out = env.run(["status"]).success();
    assert!(
        out.stdout.contains("tool.sh (mode executable -> regular)"),
        "{out:?}"
    );
    let c2 = env.record("a", &[]);
    let f = files_by_path(&env.show_json(&c2));
    assert_eq!(f.len(), 2);
    assert_eq!(f["tool.sh"]["op"], "modify");
    assert_eq!(f["tool.sh"]["old_mode"], "executable");
    assert_eq!(f["tool.sh"]["new_mode"], "regular");
    assert_eq!(f["tool.sh"]["old_hash"], f["tool.sh"]["new_hash"]);
    assert_eq!(f["plain.txt"]["new_mode"], "executable");
}

#[test]
fn symlinks_are_stored_as_their_target_and_never_followed() {
    let env = TestEnvironment::init();
    let outside = env.root().join("outside");
    fs::create_dir_all(outside.join("deeper")).unwrap();
    fs::write(outside.join("secret.txt"), "outside secret\n").unwrap();
    fs::write(outside.join("deeper/more.txt"), "more\n").unwrap();
    let outside_file = outside.join("secret.txt");
    let outside_str = outside.to_str().unwrap().to_string();
    let outside_file_str = outside_file.to_str().unwrap().to_string();

    env.write("sub/inner.txt", "inner\n");
    env.symlink("sub", "dirlink"); // to a directory inside
    env.symlink("sub/inner.txt", "filelink"); // to a file inside
    env.symlink(&outside, "outdir"); // to a directory outside (absolute)
    env.symlink("../outside/secret.txt", "outfile"); // to a file outside (relative)
    env.symlink(&outside_file, "nested/abs-outfile"); // absolute, outside
    env.symlink("no/such/target", "dangling");
    let c1 = env.record("a", &[]);
    let s1 = env.show_json(&c1);
    assert_eq!(
        paths(&s1),
        [
            "dangling",
            "dirlink",
            "filelink",
            "nested/abs-outfile",
            "outdir",
            "outfile",
            "sub/inner.txt"
        ],
        "symlinks must be recorded as links, never followed into"
    );
    let f = files_by_path(&s1);
    for (p, target) in [
        ("dangling", "no/such/target"),
        ("dirlink", "sub"),
        ("filelink", "sub/inner.txt"),
        ("nested/abs-outfile", outside_file_str.as_str()),
        ("outdir", outside_str.as_str()),
        ("outfile", "../outside/secret.txt"),
    ] {
        assert_eq!(f[p]["new_mode"], "symlink", "{p}");
        assert_eq!(f[p]["new_hash"], b3(target.as_bytes()), "{p}");
        assert_eq!(f[p]["new_size"], target.len(), "{p}");
        let out = env
            .run(["cat", f[p]["new_hash"].as_str().unwrap()])
            .success();
        assert_eq!(out.stdout_bytes, target.as_bytes(), "{p}");
    }

    // Content behind a link is not the workspace's: changing it changes nothing here.
    fs::write(&outside_file, "changed outside\n").unwrap();
    fs::write(outside.join("new-outside.txt"), "x").unwrap();
    assert_eq!(
        env.run(["status", "--json"]).success().json()["clean"],
        true
    );

    // Retargeting a link is a modification of a symlink.
    fs::remove_file(env.path("dirlink")).unwrap();
    env.symlink("nested", "dirlink");
    let c2 = env.record("a", &[]);
    let f = files_by_path(&env.show_json(&c2));
    assert_eq!(f.len(), 1);
    assert_eq!(f["dirlink"]["op"], "modify");
    assert_eq!(f["dirlink"]["old_hash"], b3(b"sub"));
    assert_eq!(f["dirlink"]["new_hash"], b3(b"nested"));
    assert_eq!(f["dirlink"]["new_mode"], "symlink");
    // A link replaced by a regular file: same path, mode changes.
    fs::remove_file(env.path("filelink")).unwrap();
    env.write("filelink", "now a file\n");
    let c3 = env.record("a", &[]);
    let f = files_by_path(&env.show_json(&c3));
    assert_eq!(f["filelink"]["old_mode"], "symlink");
    assert_eq!(f["filelink"]["new_mode"], "regular");
    env.verify_ok();
}

#[test]
fn binary_files_are_byte_exact_and_hashed_as_plain_blake3() {
    let env = TestEnvironment::init();
    let mut rng = Rng::new(0x5eed_0001);
    // Incompressible, larger than the store's 256 KiB read buffer.
    let random = rng.bytes(700_001);
    // Compressible (stored LZ4-framed) with every byte value in it.
    let mut mixed: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    mixed.extend(std::iter::repeat_n(0u8, 100_000));
    mixed.extend_from_slice(&rng.bytes(1000));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("random.bin", random),
        ("mixed.bin", mixed),
        ("small.bin", b"\x00\xff\x00\x01binary\r\n\x7f".to_vec()),
        ("empty", Vec::new()),
        ("exactly-256", rng.bytes(256)),
    ];
    for (p, b) in &files {
        env.write(p, b);
    }
    let c = env.record("a", &[]);
    let f = files_by_path(&env.show_json(&c));
    for (p, b) in &files {
        let expected = b3(b);
        assert_eq!(f[*p]["new_hash"], expected, "{p}: not b3sum's hash");
        assert_eq!(f[*p]["new_size"], b.len(), "{p}");
        let out = env.run(["cat", &expected]).success();
        assert!(out.stdout_bytes == *b, "{p}: `ledger cat` bytes differ");
    }
    // The verify pass re-hashes every object.
    let v = env.verify_ok();
    assert_eq!(v["contents_checked"], files.len());
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(v["content_bytes_checked"], total);

    // cat refuses what is not a hash, and names a hash it does not have.
    env.run(["cat", "not-a-hash"]).expect_code(EXIT_USAGE);
    let missing = b3(b"never stored");
    let out = env.run(["cat", &missing]).failure();
    assert!(out.stderr.contains(&missing), "{out:?}");
    assert!(out.stdout_bytes.is_empty());
}

#[test]
fn gitignore_and_ledgerignore_are_honoured_and_git_and_ledger_dirs_skipped() {
    let env = TestEnvironment::init();
    env.write(".gitignore", "*.log\nbuild/\n/only-at-root.txt\n");
    env.write(".ledgerignore", "secret*\n");
    env.write("sub/.gitignore", "local.tmp\n");
    for p in [
        "app.log",
        "sub/deep/trace.log",
        "build/out.bin",
        "only-at-root.txt",
        "secret.env",
        "sub/secret-key",
        "sub/local.tmp",
        ".git/config",
        ".git/objects/ab/cdef",
        "sub/.git/HEAD",
    ] {
        env.write(p, "ignored\n");
    }
    for p in [
        "keep.txt",
        "sub/only-at-root.txt",
        "sub/keep.tmp",
        ".github/ci.yml",
        ".gitattributes",
    ] {
        env.write(p, "kept\n");
    }
    let out = env.run(["status", "--json"]).success();
    let listed: Vec<String> = out.json()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect();
    let expected = [
        ".gitattributes",
        ".github/ci.yml",
        ".gitignore",
        ".ledgerignore",
        "keep.txt",
        "sub/.gitignore",
        "sub/keep.tmp",
        "sub/only-at-root.txt",
    ];
    assert_eq!(listed, expected);
    let c = env.record("a", &[]);
    assert_eq!(paths(&env.show_json(&c)), expected);

    // Changing ignored files (or the ledger's own files) leaves the workspace clean.
    env.write("app.log", "more\n");
    env.write(".git/config", "changed\n");
    env.write("build/new.bin", "new\n");
    env.write("secret.env", "rotated\n");
    let out = env.run(["record", "--agent", "a"]).success();
    assert!(out.stdout.contains("Nothing to record"), "{out:?}");
    assert_eq!(env.log_json(&[]).len(), 1);
}

#[test]
fn fifos_and_sockets_are_skipped_with_a_note_not_recorded() {
    let env = TestEnvironment::init();
    env.write("real.txt", "real\n");
    let st = Command::new("mkfifo")
        .arg(env.path("pipe"))
        .status()
        .expect("run mkfifo");
    assert!(st.success());
    let out = env.run(["record", "--agent", "a"]).success();
    assert!(out.stderr.contains("skipped pipe"), "{out:?}");
    let c = out.stdout.trim();
    assert_eq!(paths(&env.show_json(c)), ["real.txt"]);
}

/// The temporary files a killed `ledger revert` leaves beside its targets
/// (`.ledger-tmp-PID-N`, file or symlink) are never recorded and `status` does not count
/// them as changes; both commands name them. A name that only starts the same way is
/// the user's and is recorded.
#[test]
fn temporary_files_of_an_interrupted_revert_are_named_not_recorded() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.record("a", &[]);
    env.write(".ledger-tmp-4242-0", "half a file");
    env.write("sub/.ledger-tmp-4242-17", "another");
    std::os::unix::fs::symlink("a.txt", env.path("sub/.ledger-tmp-4242-18")).unwrap();
    let out = env.run(["status"]).success();
    assert!(out.stdout.contains("matches the ledger"), "{out:?}");
    for p in [
        ".ledger-tmp-4242-0",
        "sub/.ledger-tmp-4242-17",
        "sub/.ledger-tmp-4242-18",
    ] {
        assert!(
            out.stderr.contains(&format!(
                "skipped {p}: a temporary file left by an interrupted `ledger revert`"
            )),
            "{p} not named: {out:?}"
        );
    }
    env.write(".ledger-tmp-notes.txt", "mine\n");
    let out = env.run(["record", "--agent", "a"]).success();
    assert!(
        out.stderr.contains("skipped sub/.ledger-tmp-4242-17"),
        "{out:?}"
    );
    let c = out.stdout.trim();
    assert_eq!(paths(&env.show_json(c)), [".ledger-tmp-notes.txt"]);
    env.verify_ok();
}

#[test]
fn non_utf8_file_names_are_recorded_faithfully() {
    let env = TestEnvironment::init();
    let name: &[u8] = b"caf\xe9-\xff.bin";
    let dir_file: &[u8] = b"dir\xfe/inner.txt";
    env.write(bytes_path(name), b"latin-1 name\n");
    env.write(bytes_path(dir_file), b"under a latin-1 dir\n");
    env.write("plain.txt", "plain\n");
    let c = env.record("a", &[]);
    let show = env.show_json(&c);
    let files = show["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    let find = |raw: &[u8]| -> Value {
        files
            .iter()
            .find(|f| f["path"] == json!({"hex": hex::encode(raw)}))
            .unwrap_or_else(|| {
                panic!(
                    "no file with path {{\"hex\": {}}}: {show}",
                    hex::encode(raw)
                )
            })
            .clone()
    };
    let f = find(name);
    assert_eq!(f["new_hash"], b3(b"latin-1 name\n"));
    let out = env.run(["cat", f["new_hash"].as_str().unwrap()]).success();
    assert_eq!(out.stdout_bytes, b"latin-1 name\n");
    let f = find(dir_file);
    assert_eq!(f["new_hash"], b3(b"under a latin-1 dir\n"));
    // The full event spells the key the same way.
    let names: Vec<Value> = show["events_full"][0]["body"]["Change"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"]["name"].clone())
        .collect();
    assert!(
        names.contains(&json!({"hex": hex::encode(name)})),
        "{names:?}"
    );
    assert_eq!(
        env.run(["status", "--json"]).success().json()["clean"],
        true
    );

    // And it is deleted by the same name.
    fs::remove_file(env.path(bytes_path(name))).unwrap();
    let c2 = env.record("a", &[]);
    let s2 = env.show_json(&c2);
    assert_eq!(s2["files"][0]["path"], json!({"hex": hex::encode(name)}));
    assert_eq!(s2["files"][0]["op"], "delete");
    env.verify_ok();
}

#[test]
fn nothing_changed_exits_zero_and_appends_nothing() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.record("a", &[]);
    let events = env.event_count();
    let journal = env.journal_bytes();

    let out = env.run(["record", "--agent", "a"]).success();
    assert!(
        out.stdout.contains("Nothing to record"),
        "no message: {out:?}"
    );
    let out = env.run(["record", "--agent", "a", "--json"]).success();
    assert_eq!(out.json(), json!({"change_id": null, "files": 0}));
    // A command that changes nothing records nothing either.
    let out = env.run(["exec", "--agent", "a", "--", "true"]).success();
    assert!(out.stderr.contains("changed nothing"), "{out:?}");

    assert_eq!(env.log_json(&[]).len(), 1);
    assert_eq!(env.event_count(), events);
    assert_eq!(env.journal_bytes(), journal);
}

#[test]
fn duplicate_change_id_is_refused_and_the_journal_is_unchanged() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    let id = env.record("a", &["--change", "deploy-42"]);
    assert_eq!(id, "deploy-42");
    env.write("b.txt", "b\n");
    let journal = env.journal_bytes();

    let out = env
        .run(["record", "--agent", "a", "--change", "deploy-42"])
        .failure();
    assert!(out.stderr.contains("deploy-42"), "{out:?}");
    assert!(out.stderr.contains("already exists"), "{out:?}");
    let out = env
        .run([
            "exec",
            "--agent",
            "a",
            "--change",
            "deploy-42",
            "--",
            "sh",
            "-c",
            "echo ran > ran.txt",
        ])
        .failure();
    assert!(out.stderr.contains("deploy-42"), "{out:?}");
    assert!(!env.path("ran.txt").exists(), "exec ran the command anyway");

    assert_eq!(
        env.journal_bytes(),
        journal,
        "a refused record changed the journal"
    );
    assert_eq!(env.log_ids(&[]), ["deploy-42"]);
    let out = env.run(["status"]).success();
    assert!(out.stdout.contains("b.txt"), "{out:?}");
    env.verify_ok();
    // Bad IDs are refused too.
    env.run(["record", "--agent", "a", "--change", "has space"])
        .failure();
    env.run(["record", "--agent", ""]).failure();
    assert_eq!(env.journal_bytes(), journal);
}

#[test]
fn show_of_an_unknown_change_names_it() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.record("a", &[]);
    for args in [
        vec!["show", "no-such-change-77"],
        vec!["show", "--json", "no-such-change-77"],
        vec!["show", "--diff", "no-such-change-77"],
    ] {
        let out = env.run(&args).failure();
        assert!(out.stderr.contains("no-such-change-77"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn record_path_records_only_under_it_and_refuses_paths_outside() {
    let env = TestEnvironment::init();
    env.write("a/x.txt", "x\n");
    env.write("a/deep/y.txt", "y\n");
    env.write("ab/z.txt", "z\n"); // shares a prefix with `a`, is not under it
    env.write("b/w.txt", "w\n");
    env.write("top.txt", "t\n");
    let c1 = env.record("a", &["a"]);
    assert_eq!(paths(&env.show_json(&c1)), ["a/deep/y.txt", "a/x.txt"]);

    // Paths are relative to the current directory; several may be given.
    let out = env
        .run_in(
            &env.path("b"),
            ["record", "--agent", "a", "w.txt", "../top.txt"],
        )
        .success();
    let c2 = out.stdout.trim();
    assert_eq!(paths(&env.show_json(c2)), ["b/w.txt", "top.txt"]);
    let st = env.run(["status", "--json"]).success().json();
    assert_eq!(st["changes"].as_array().unwrap().len(), 1);
    assert_eq!(st["changes"][0]["path"], "ab/z.txt");

    // Deletions are scoped too.
    env.remove("a/x.txt");
    env.remove("ab/z.txt");
    env.write("ab/z.txt", "z2\n");
    let c3 = env.record("a", &["a/x.txt"]);
    let s3 = env.show_json(&c3);
    assert_eq!(paths(&s3), ["a/x.txt"]);
    assert_eq!(s3["files"][0]["op"], "delete");

    // Outside the workspace: refused, nothing appended.
    let journal = env.journal_bytes();
    let elsewhere = env.root().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("f.txt"), "f\n").unwrap();
    for p in [
        elsewhere.to_str().unwrap(),
        "../elsewhere/f.txt",
        "..",
        "/",
        "a/../../elsewhere",
    ] {
        let out = env.run(["record", "--agent", "a", p]).failure();
        assert!(out.stderr.contains("outside the workspace"), "{p}: {out:?}");
    }
    let out = env.run(["record", "--agent", "a", ".ledger"]).failure();
    assert!(out.stderr.contains(".ledger"), "{out:?}");
    assert_eq!(env.journal_bytes(), journal);
    env.verify_ok();
}

#[test]
fn unreadable_file_stops_the_record_and_names_the_file() {
    let mut env = TestEnvironment::new();
    if permissions_do_not_bind_us() {
        // Root reads through mode 000 (CAP_DAC_OVERRIDE). Run the binary as `nobody`
        // instead, owning the workspace, so the permission bits apply to it.
        let probe = Command::new(ledger_bin())
            .arg("--version")
            .uid(65534)
            .gid(65534)
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "cannot run as another user here; skipping: permission bits do not bind this process"
            );
            return;
        }
        env.chown_all(65534, 65534);
        env.set_run_as(65534, 65534);
    }
    env.run(["init"]).success();
    env.write("ok.txt", "fine\n");
    env.write("secret.txt", "cannot read me\n");
    env.set_mode("secret.txt", 0o000);
    let journal = env.journal_bytes();

    let out = env.run(["record", "--agent", "a"]).expect_code(EXIT_ERROR);
    assert!(
        out.stderr.contains("secret.txt"),
        "the file is not named: {out:?}"
    );
    assert!(out.stderr.contains("nothing was recorded"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(env.journal_bytes(), journal);
    assert!(env.log_json(&[]).is_empty());
    // Nothing of the half-done scan is left in the content store.
    let objects = files_under(&env.ledger_dir().join("objects"));
    assert!(
        objects.is_empty(),
        "stored objects left behind: {objects:?}"
    );
    let out = env.run(["status"]).failure();
    assert!(out.stderr.contains("secret.txt"), "{out:?}");

    // An unreadable directory stops it in the same way.
    env.set_mode("secret.txt", 0o644);
    env.write("locked/inside.txt", "x\n");
    env.set_mode("locked", 0o000);
    let out = env.run(["record", "--agent", "a"]).expect_code(EXIT_ERROR);
    assert!(out.stderr.contains("locked"), "{out:?}");
    assert_eq!(env.journal_bytes(), journal);
    env.set_mode("locked", 0o755);

    // Readable again: everything is recorded.
    let c = env.record("a", &[]);
    assert_eq!(
        paths(&env.show_json(&c)),
        ["locked/inside.txt", "ok.txt", "secret.txt"]
    );
    env.verify_ok();
}

#[test]
fn exec_records_the_commands_changes_as_one_change() {
    let env = TestEnvironment::init();
    env.write("old.txt", "old\n");
    env.write("mod.txt", "before\n");
    env.record("setup", &[]);
    let script = "echo new > new.txt; rm old.txt; echo after >> mod.txt; mkdir -p d && echo deep > d/deep.txt";
    let out = env
        .run([
            "exec",
            "--agent",
            "bot-1",
            "-m",
            "one step",
            "--correlation",
            "req-9",
            "--",
            "sh",
            "-c",
            script,
        ])
        .success();
    let id = out.stdout.trim().to_string();
    let s = env.show_json(&id);
    assert_eq!(s["agent"], "bot-1");
    assert_eq!(s["correlation_id"], "req-9");
    assert_eq!(s["message"], "one step");
    assert_eq!(s["failures"], json!([]));
    let ev = s["events"].as_array().unwrap();
    assert_eq!(ev.len(), 1, "one change event: {s}");
    assert_eq!(ev[0]["kind"], "change");
    let f = files_by_path(&s);
    assert_eq!(paths(&s), ["d/deep.txt", "mod.txt", "new.txt", "old.txt"]);
    assert_eq!(f["new.txt"]["op"], "create");
    assert_eq!(f["old.txt"]["op"], "delete");
    assert_eq!(f["mod.txt"]["op"], "modify");
    assert_eq!(f["mod.txt"]["new_hash"], b3(b"before\nafter\n"));
    let argv: Vec<String> =
        serde_json::from_str(s["events_full"][0]["meta"]["exec.argv"].as_str().unwrap()).unwrap();
    assert_eq!(argv, ["sh", "-c", script]);
    assert_eq!(env.log_json(&[]).len(), 2);
    assert_eq!(
        env.run(["status", "--json"]).success().json()["clean"],
        true
    );
}

#[test]
fn exec_records_a_failure_and_returns_the_commands_exit_code() {
    let env = TestEnvironment::init();
    // Changes, then fails: one change with a change event and a failure event.
    let out = env
        .run([
            "exec",
            "--agent",
            "bot",
            "--",
            "sh",
            "-c",
            "echo half > half.txt; exit 7",
        ])
        .expect_code(7);
    let id = out.stdout.trim().to_string();
    let s = env.show_json(&id);
    let kinds: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["change", "failure"]);
    assert_eq!(s["failures"][0]["exit_code"], 7);
    assert_eq!(s["failures"][0]["stage"], "exec");
    assert_eq!(paths(&s), ["half.txt"]);

    // Fails without changing anything: the failure alone is recorded.
    let out = env
        .run([
            "exec", "--agent", "bot", "--json", "--", "sh", "-c", "exit 3",
        ])
        .expect_code(3);
    let j = out.json();
    assert_eq!(j["exit_code"], 3);
    let id2 = j["change_id"]
        .as_str()
        .expect("a failure is recorded")
        .to_string();
    let s2 = env.show_json(&id2);
    assert_eq!(s2["files"], json!([]));
    assert_eq!(s2["failures"][0]["exit_code"], 3);

    // A command that cannot start.
    let out = env
        .run(["exec", "--agent", "bot", "--", "/nonexistent/agent-step"])
        .expect_code(127);
    let id3 = out.stdout.trim().to_string();
    let s3 = env.show_json(&id3);
    assert!(
        s3["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/agent-step"),
        "{s3}"
    );
    assert_eq!(env.log_ids(&[]), [id3, id2, id]);
    let out = env.run(["log"]).success();
    assert!(
        out.stdout.contains("failed: command exited with code 7"),
        "{out:?}"
    );
    env.verify_ok();
}

/// `record` looks at the workspace only once it holds the ledger's lock: a `record`
/// started while `exec`'s command is half done waits, then finds exec's changes
/// recorded and nothing left (a walk made before the lock would have seen the half-done
/// state and recorded the file the command removed later as created again).
#[test]
fn record_during_exec_waits_and_walks_only_after_exec_recorded() {
    let env = TestEnvironment::init();
    env.write("base.txt", "base\n");
    env.record("a", &[]);
    let mut exec = env
        .command(
            env.workspace(),
            [
                "exec",
                "--agent",
                "tool",
                "--",
                "sh",
                "-c",
                "echo one > one.txt; sleep 1.5; rm base.txt; echo two > two.txt",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // one.txt exists, base.txt is not removed yet; exec holds the lock.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = env
        .run(["--lock-timeout", "60", "record", "--agent", "b"])
        .success();
    assert!(exec.wait().unwrap().success());
    assert!(out.stdout.contains("Nothing to record"), "{out:?}");
    let log = env.log_json(&[]);
    let agents: Vec<&str> = log.iter().map(|c| c["agent"].as_str().unwrap()).collect();
    assert_eq!(agents, ["tool", "a"]);
    assert_eq!(paths(&log[0]), ["base.txt", "one.txt", "two.txt"]);
    env.verify_ok();
}

#[test]
fn exec_refuses_when_the_workspace_has_unrecorded_changes() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.record("a", &[]);
    env.write("dirty.txt", "unrecorded\n");
    let journal = env.journal_bytes();
    let out = env
        .run([
            "exec",
            "--agent",
            "bot",
            "--",
            "sh",
            "-c",
            "echo ran > ran.txt",
        ])
        .expect_code(EXIT_ERROR);
    assert!(out.stderr.contains("unrecorded"), "{out:?}");
    assert!(!env.path("ran.txt").exists(), "the command ran anyway");
    assert_eq!(env.journal_bytes(), journal);
    // An unrecorded deletion counts as well.
    env.remove("dirty.txt");
    env.remove("a.txt");
    env.run(["exec", "--agent", "bot", "--", "true"])
        .expect_code(EXIT_ERROR);
    assert_eq!(env.journal_bytes(), journal);
}

#[test]
fn log_filters_by_agent_path_time_and_count_newest_first() {
    let env = TestEnvironment::init();
    env.write("dir/a.txt", "1\n");
    let c1 = env.record("alice", &[]);
    env.write("dir2/b.txt", "2\n"); // `dir2` must not match `--path dir`
    let c2 = env.record("bob", &[]);
    env.write("top.txt", "3\n");
    env.write("dir/a.txt", "3\n");
    let c3 = env.record("alice", &[]);
    env.write("dir/sub/deep.txt", "4\n");
    let c4 = env.record("carol", &[]);
    let (c1, c2, c3, c4) = (c1.as_str(), c2.as_str(), c3.as_str(), c4.as_str());

    let all = env.log_json(&[]);
    let ids: Vec<&str> = all
        .iter()
        .map(|v| v["change_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c4, c3, c2, c1]);
    let seqs: Vec<u64> = all.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {seqs:?}"
    );
    let time = |i: usize| all[i]["time"].as_str().unwrap().to_string();
    let (t4, t2) = (time(0), time(2));

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--agent", "alice"], vec![c3, c1]),
        (vec!["--agent", "nobody"], vec![]),
        (vec!["--path", "dir/a.txt"], vec![c3, c1]),
        (vec!["--path", "dir"], vec![c4, c3, c1]),
        (vec!["--path", "dir/"], vec![c4, c3, c1]),
        (vec!["--path", "dir2"], vec![c2]),
        (vec!["--path", "top.txt"], vec![c3]),
        (vec!["--path", "missing.txt"], vec![]),
        (vec!["--path", "."], vec![c4, c3, c2, c1]),
        (vec!["-n", "2"], vec![c4, c3]),
        (vec!["-n", "0"], vec![]),
        (vec!["--agent", "alice", "-n", "1"], vec![c3]),
        (vec!["--agent", "alice", "--path", "top.txt"], vec![c3]),
        (vec!["--since", &t2], vec![c4, c3, c2]),
        (vec!["--until", &t2], vec![c1]),
        (vec!["--since", &t2, "--until", &t4], vec![c3, c2]),
        (vec!["--since", "1h"], vec![c4, c3, c2, c1]),
        (vec!["--until", "1h"], vec![]),
        (vec!["--since", "2000-01-01"], vec![c4, c3, c2, c1]),
        (vec!["--until", "2000-01-01T00:00:00Z"], vec![]),
        (vec!["--since", &t2, "--agent", "alice"], vec![c3]),
    ];
    for (args, expected) in cases {
        assert_eq!(env.log_ids(&args), expected, "log {args:?}");
    }
    // Paths are relative to the current directory.
    let out = env
        .run_in(&env.path("dir"), ["log", "--json", "--path", "a.txt"])
        .success();
    let ids: Vec<String> = out
        .json_lines()
        .iter()
        .map(|v| v["change_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [c3, c1]);
    // Human output in the same order.
    let out = env.run(["log"]).success();
    let pos: Vec<usize> = [c4, c3, c2, c1]
        .iter()
        .map(|c| out.stdout.find(&format!("change {c}")).expect("listed"))
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{out:?}");
    // A time it cannot read is a usage error that names it.
    let out = env
        .run(["log", "--since", "yesterday-ish"])
        .expect_code(EXIT_USAGE);
    assert!(out.stderr.contains("yesterday-ish"), "{out:?}");
}

#[test]
fn show_diff_prints_a_unified_diff() {
    let env = TestEnvironment::init();
    env.write("notes.txt", "line one\nline two\nline three\n");
    env.write("blob.bin", b"\x00\x01\x02binary");
    let c1 = env.record("a", &[]);
    env.write("notes.txt", "line one\nline 2\nline three\nline four\n");
    let c2 = env.record("a", &[]);

    let out = env.run(["show", "--diff", &c2]).success();
    for needle in [
        "--- a/notes.txt",
        "+++ b/notes.txt",
        "@@ -1,3 +1,4 @@",
        " line one",
        "-line two",
        "+line 2",
        " line three",
        "+line four",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == needle),
            "missing {needle:?}: {out:?}"
        );
    }
    let out = env.run(["show", "--diff", &c1]).success();
    assert!(out.stdout.contains("+line two"), "{out:?}");
    assert!(out.stdout.contains("no text diff for blob.bin"), "{out:?}");
    let v = env.run(["show", "--diff", "--json", &c2]).success().json();
    let d = v["diffs"][0]["diff"].as_str().unwrap();
    assert!(d.contains("-line two\n+line 2\n"), "{d}");
}

#[test]
fn verify_json_reports_ok() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.write("b.bin", vec![7u8; 5000]);
    env.record("a", &[]);
    env.write("a.txt", "aa\n");
    let c2 = env.record("a", &[]);
    let v = env.verify_ok();
    assert_eq!(v["events"], 3);
    assert_eq!(v["head_seq"], 2);
    assert_eq!(v["contents_checked"], 3);
    assert_eq!(v["content_bytes_checked"], 2 + 5000 + 3);
    let s = env.show_json(&c2);
    assert_eq!(v["head_hash"], s["events"][0]["hash"]);
    let out = env.run(["verify"]).success();
    assert!(out.stdout.starts_with("ok: 3 events"), "{out:?}");
    let q = env.run(["verify", "--json", "--quick"]).success().json();
    assert_eq!(q["problems"], json!([]));
}

#[test]
fn status_lists_unrecorded_changes_without_recording() {
    let env = TestEnvironment::init();
    let out = env.run(["status"]).success();
    assert!(out.stdout.contains("Nothing to record"), "{out:?}");
    env.write("keep.txt", "k\n");
    env.write("mod.txt", "m\n");
    env.write("del.txt", "d\n");
    env.write("sub/x.txt", "x\n");
    env.record("a", &[]);
    env.write("mod.txt", "m2\n");
    env.remove("del.txt");
    env.write("new.txt", "n\n");
    env.write("sub/x.txt", "x2\n");
    let journal = env.journal_bytes();

    let out = env.run(["status"]).success();
    assert!(
        out.stdout
            .contains("Unrecorded changes (1 created, 2 modified, 1 deleted)"),
        "{out:?}"
    );
    for line in [
        "  create:  new.txt",
        "  modify:  mod.txt",
        "  delete:  del.txt",
        "  modify:  sub/x.txt",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?}: {out:?}"
        );
    }
    assert!(!out.stdout.contains("keep.txt"), "{out:?}");
    let v = env.run(["status", "--json"]).success().json();
    assert_eq!(v["clean"], false);
    let ops: BTreeMap<String, String> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["op"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        BTreeMap::from([
            ("del.txt".to_string(), "delete".to_string()),
            ("mod.txt".to_string(), "modify".to_string()),
            ("new.txt".to_string(), "create".to_string()),
            ("sub/x.txt".to_string(), "modify".to_string()),
        ])
    );
    // Scoped to a path.
    let v = env.run(["status", "--json", "sub"]).success().json();
    assert_eq!(v["changes"].as_array().unwrap().len(), 1);
    // Nothing was appended by looking.
    assert_eq!(env.journal_bytes(), journal);
    assert_eq!(env.log_json(&[]).len(), 1);
}

#[test]
fn ledger_dir_env_and_flag_work_from_another_directory() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    let elsewhere = env.home().to_path_buf();
    let out = env.run_in(&elsewhere, ["status"]).failure();
    assert!(out.stderr.contains("no ledger"), "{out:?}");

    let ws = env.workspace().as_os_str();
    let out = env
        .run_with(
            &elsewhere,
            ["record", "--agent", "remote"],
            &[("LEDGER_DIR", ws)],
        )
        .success();
    let c1 = out.stdout.trim().to_string();
    assert_eq!(paths(&env.show_json(&c1)), ["a.txt"]);

    // --ledger takes the workspace or its .ledger directory.
    let dot = env.ledger_dir();
    for target in [env.workspace(), dot.as_path()] {
        let out = env
            .run_in(
                &elsewhere,
                [
                    "--ledger".as_ref(),
                    target.as_os_str(),
                    "log".as_ref(),
                    "--json".as_ref(),
                ],
            )
            .success();
        assert_eq!(out.json()["change_id"], c1.as_str());
    }
    // LEDGER_DIR as the .ledger directory, and the flag winning over the variable.
    let out = env
        .run_with(
            &elsewhere,
            ["log", "--json"],
            &[("LEDGER_DIR", dot.as_os_str())],
        )
        .success();
    assert_eq!(out.json()["change_id"], c1.as_str());
    let bogus = env.root().join("bogus");
    let out = env
        .run_with(
            &elsewhere,
            ["--ledger".as_ref(), ws, "verify".as_ref()],
            &[("LEDGER_DIR", bogus.as_os_str())],
        )
        .success();
    assert!(out.stdout.starts_with("ok:"), "{out:?}");
    let out = env
        .run_with(&elsewhere, ["log"], &[("LEDGER_DIR", bogus.as_os_str())])
        .failure();
    assert!(out.stderr.contains("bogus"), "{out:?}");
    // From a subdirectory the ledger is found upwards.
    env.write("deep/er/f.txt", "f\n");
    let out = env
        .run_in(&env.path("deep/er"), ["status", "--json"])
        .success();
    assert_eq!(out.json()["changes"][0]["path"], "deep/er/f.txt");
}

#[test]
fn reindex_and_automatic_rebuild_give_identical_log_output() {
    let env = TestEnvironment::init();
    env.write("a.txt", "a\n");
    env.symlink("a.txt", "link");
    env.record("alice", &["-m", "first", "--correlation", "r1"]);
    env.run([
        "exec",
        "--agent",
        "bot",
        "--",
        "sh",
        "-c",
        "mkdir b; echo c > b/c.txt; exit 4",
    ])
    .expect_code(4);
    env.remove("a.txt");
    env.record("bob", &["--meta", "k=v"]);
    let log_before = env.run(["log", "--json"]).success().stdout;
    let show_before: Vec<String> = env
        .log_ids(&[])
        .iter()
        .map(|id| env.run(["show", "--json", id]).success().stdout)
        .collect();
    assert_eq!(log_before.lines().count(), 3);

    fs::remove_dir_all(env.ledger_dir().join("index")).unwrap();
    let out = env.run(["reindex"]).success();
    assert!(out.stdout.contains("from 5 journal events"), "{out:?}");
    assert_eq!(env.run(["log", "--json"]).success().stdout, log_before);
    env.verify_ok();

    // Without `reindex`: the next command rebuilds by itself, projection snapshots too
    // (the kept one at seq 0 and the head one), so the state at a point does not fold
    // from seq 0 until the next `reindex`.
    fs::remove_dir_all(env.ledger_dir().join("index")).unwrap();
    assert_eq!(env.run(["log", "--json"]).success().stdout, log_before);
    let snapshots: Vec<String> = fs::read_dir(env.ledger_dir().join("index/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        snapshots.iter().any(|n| n.starts_with("tree."))
            && snapshots.iter().any(|n| n.starts_with("tree-head.")),
        "{snapshots:?}"
    );
    let show_after: Vec<String> = env
        .log_ids(&[])
        .iter()
        .map(|id| env.run(["show", "--json", id]).success().stdout)
        .collect();
    assert_eq!(show_after, show_before);
    fs::remove_dir_all(env.ledger_dir().join("index")).unwrap();
    assert_eq!(
        env.run(["status", "--json"]).success().json()["clean"],
        true
    );
    fs::remove_dir_all(env.ledger_dir().join("index")).unwrap();
    env.write("d.txt", "d\n");
    env.record("carol", &[]);
    assert_eq!(env.log_json(&[]).len(), 4);
    env.verify_ok();
}

#[test]
fn sled_is_opened_only_by_commands_that_need_it_and_catches_up_then() {
    let env = TestEnvironment::init();
    let sled = env.ledger_dir().join("index").join("sled");
    env.write("a.txt", "one\n");
    env.write("b.txt", "two\n");
    let first = env.record("agent-1", &["--message", "first"]);
    env.write("a.txt", "one, edited\n");
    let second = env.record("agent-2", &["--correlation", "req-7"]);
    // Record, show, status, log, revert, export and verify use the flat indexes only.
    assert_eq!(env.show_json(&first)["change_id"], first.as_str());
    env.run(["status"]).success();
    assert_eq!(env.log_ids(&[]), vec![second.clone(), first.clone()]);
    let out = env.run(["revert", &second, "--agent", "fixer"]).success();
    let revert = out.stdout.trim().to_string();
    assert_eq!(env.read("a.txt"), b"one\n");
    assert_eq!(env.show_json(&second)["reverted_by"], revert.as_str());
    assert_eq!(env.show_json(&revert)["reverts"], second.as_str());
    let again = env.run(["revert", &second, "--agent", "fixer"]).failure();
    assert!(
        again
            .stderr
            .contains(&format!("already reverted by change {revert}")),
        "{again:?}"
    );
    let export = env.root().join("all.jsonl");
    env.run(["export", "--out", export.to_str().unwrap()])
        .success();
    env.verify_ok();
    assert!(
        !sled.exists(),
        "a command that needs no sled index opened it"
    );

    // A filter by agent needs sled: it is built from the journal, then kept current.
    let ids = env.log_ids(&["--agent", "agent-2"]);
    assert_eq!(ids, vec![second.clone()]);
    assert!(sled.is_dir(), "`log --agent` did not open the sled index");
    // Appends made while sled is closed are caught up when it is next opened.
    env.write("b.txt", "two, edited\n");
    let third = env.record("agent-2", &[]);
    assert_eq!(
        env.log_ids(&["--agent", "agent-2"]),
        vec![third.clone(), second.clone()]
    );
    let blame = env.run(["blame", "b.txt", "--json"]).success().json_lines();
    let changes: Vec<&str> = blame
        .iter()
        .map(|l| l["change_id"].as_str().unwrap())
        .collect();
    assert_eq!(changes, vec![first.as_str(), third.as_str()], "{blame:?}");
    let blame_a = env.run(["blame", "a.txt", "--json"]).success().json_lines();
    assert_eq!(blame_a.len(), 3, "created, edited, reverted: {blame_a:?}");
    assert_eq!(blame_a[2]["change_id"], revert.as_str());
    let tl = env
        .run(["timeline", "--correlation", "req-7", "--json"])
        .success()
        .json_lines();
    assert!(tl.iter().all(|l| l["change_id"] == second.as_str()) && !tl.is_empty());
    env.verify_ok();
}
