//! End to end: keygen, checkpoint, verify --checkpoints, export, verify-export and
//! redact through the binary, with exports also checked by the independent Python
//! verifier (tools/verify_export.py) written from docs/EXPORT.md.

mod compliance_env;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use compliance_env::{python_verify, rejected_line, Env};

/// A ledger with events of many shapes: metadata, a non-UTF-8 file name, a symlink, an
/// executable, deletions, a failed command, a revert and a checkpoint.
fn populated() -> (Env, String, String) {
    let env = Env::new();
    env.write("src/main.rs", b"fn main() {}\n");
    env.write("README", b"hello, \"world\"\n");
    env.record(
        "coder-1",
        "c1",
        &[
            "-m",
            "first \"files\"\nsecond line",
            "--principal",
            "alice@example.com",
            "--role",
            "coder",
            "--correlation",
            "req-1",
            "--meta",
            "tool=edit",
        ],
    );
    std::fs::write(
        env.ws.join(std::ffi::OsStr::from_bytes(b"raw-\xff.bin")),
        b"\x00\x01\x02",
    )
    .unwrap();
    std::os::unix::fs::symlink("src/main.rs", env.ws.join("link")).unwrap();
    env.write("run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        env.ws.join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    env.record("coder-2", "c2", &["--correlation", "req-2"]);
    env.write("src/main.rs", b"fn main() { println!(\"hi\"); }\n");
    std::fs::remove_file(env.ws.join("README")).unwrap();
    env.record("coder-1", "c3", &["-m", "=SUM(A1)"]);
    let r = env.run(&[
        "exec",
        "--agent",
        "runner",
        "--change",
        "c4",
        "--",
        "sh",
        "-c",
        "echo made > made.txt; exit 3",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    env.ok(&["revert", "c3", "--change-id", "r1", "--agent", "coder-2"]);
    let (key, pubkey) = env.keygen("signing.key");
    env.ok(&[
        "checkpoint",
        "--key",
        &key,
        "--out",
        &env.p("cp-early.note"),
    ]);
    env.write("late.txt", b"late\n");
    env.record("coder-3", "c5", &[]);
    (env, key, pubkey)
}

#[test]
fn keygen_writes_a_private_key_and_a_verifier_key() {
    let env = Env::new();
    let key = env.path("k");
    let verifier = env.ok(&["keygen", "--out", key.to_str().unwrap()]);
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let pub_text = std::fs::read_to_string(env.path("k.pub")).unwrap();
    assert_eq!(pub_text.trim(), verifier.trim());
    // The default name is the ledger's origin.
    assert!(verifier.starts_with("agent-ledger/"), "{verifier}");
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(private.starts_with("PRIVATE+KEY+agent-ledger/"));

    // Existing files are never replaced.
    let msg = env.fails(1, &["keygen", "--out", key.to_str().unwrap()]);
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
    std::fs::write(env.path("only.pub"), "x").unwrap();
    let msg = env.fails(1, &["keygen", "--out", &env.p("only")]);
    assert!(msg.contains("only.pub already exists"), "{msg}");
    assert!(!env.path("only").exists(), "no half-made key pair");

    // Never inside a ledger directory.
    let msg = env.fails(1, &["keygen", "--out", ".ledger/k"]);
    assert!(msg.contains("inside a .ledger directory"), "{msg}");
    assert!(!env.ws.join(".ledger/k").exists());

    // Outside a ledger a name is required.
    let r = env.run_in(&env.out, &["keygen", "--out", "k2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--name"), "{}", r.stderr);
    let r = env.run_in(&env.out, &["keygen", "--out", "k2", "--name", "auditors"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("auditors+"));
    let r = env.run_in(&env.out, &["keygen", "--out", "k3", "--name", "bad name"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn checkpoint_refuses_keys_others_can_read_and_changes_nothing() {
    let env = Env::new();
    let (key, _) = env.keygen("k");
    let before = env.journal();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let msg = env.fails(1, &["checkpoint", "--key", &key]);
    assert!(
        msg.contains("accessible to group or others (mode 0640)"),
        "{msg}"
    );
    assert!(msg.contains("chmod 600"), "{msg}");
    // A key file that is not a key.
    std::fs::write(env.path("junk"), "not a key").unwrap();
    std::fs::set_permissions(env.path("junk"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let msg = env.fails(1, &["checkpoint", "--key", &env.p("junk")]);
    assert!(msg.contains("junk"), "{msg}");
    // An existing --out.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(env.path("taken"), "x").unwrap();
    env.fails(1, &["checkpoint", "--key", &key, "--out", &env.p("taken")]);
    // An --out in a missing directory: nothing recorded either.
    env.fails(
        1,
        &["checkpoint", "--key", &key, "--out", &env.p("missing/cp")],
    );
    assert_eq!(env.journal(), before, "the journal is untouched");
}

#[test]
fn checkpoints_are_recorded_and_verify_against_the_journal() {
    let (env, key, pubkey) = populated();
    let cps = env.path("cps");
    std::fs::create_dir(&cps).unwrap();
    std::fs::rename(env.path("cp-early.note"), cps.join("1.note")).unwrap();
    let n = env.events();
    // To stdout; covers the events before the checkpoint event, recorded as seq n.
    let note = env.ok(&["checkpoint", "--key", &key]);
    std::fs::write(cps.join("2.note"), &note).unwrap();
    let lines: Vec<&str> = note.lines().collect();
    assert_eq!(
        lines[1],
        n.to_string(),
        "size = events before the checkpoint"
    );
    let show: serde_json::Value = serde_json::from_str(
        env.ok(&["show", &format!("checkpoint-{n}"), "--json"])
            .trim(),
    )
    .unwrap();
    assert_eq!(show["seq"], n);
    assert_eq!(show["events_full"][0]["body"]["Checkpoint"]["size"], n);
    assert_eq!(env.events(), n + 1);
    // --json shape.
    let j: serde_json::Value =
        serde_json::from_str(env.ok(&["checkpoint", "--key", &key, "--json"]).trim()).unwrap();
    assert_eq!(j["size"], n + 1);
    assert_eq!(j["seq"], n + 1);

    let out = env.ok(&[
        "verify",
        "--checkpoints",
        cps.to_str().unwrap(),
        "--pubkey",
        &pubkey,
    ]);
    assert!(out.contains("2 checkpoint(s)"), "{out}");
    let j = env.ok(&[
        "verify",
        "--json",
        "--checkpoints",
        cps.to_str().unwrap(),
        "--pubkey",
        &pubkey,
    ]);
    let last: serde_json::Value = serde_json::from_str(j.lines().last().unwrap()).unwrap();
    assert_eq!(last["ok"], true);

    // The flags go together.
    env.fails(2, &["verify", "--checkpoints", cps.to_str().unwrap()]);
    env.fails(2, &["verify", "--pubkey", &pubkey]);

    // Another key: exit 3 naming the file.
    let (_, other_pub) = env.keygen("other.key");
    let msg = env.fails(
        3,
        &[
            "verify",
            "--checkpoints",
            cps.to_str().unwrap(),
            "--pubkey",
            &other_pub,
        ],
    );
    assert!(
        msg.contains("1.note") && msg.contains("no signature by"),
        "{msg}"
    );

    // An edited note.
    let bad = env.path("bad.note");
    std::fs::write(
        &bad,
        note.replacen(&format!("\n{n}\n"), &format!("\n{}\n", n - 1), 1),
    )
    .unwrap();
    let msg = env.fails(
        3,
        &[
            "verify",
            "--checkpoints",
            bad.to_str().unwrap(),
            "--pubkey",
            &pubkey,
        ],
    );
    assert!(
        msg.contains("bad.note") && msg.contains("does not verify"),
        "{msg}"
    );

    // A checkpoint of another ledger, signed by a key for it.
    let other = Env::new();
    let (okey, opub) = other.keygen("k");
    let foreign = other.ok(&["checkpoint", "--key", &okey]);
    std::fs::write(env.path("foreign.note"), foreign).unwrap();
    let msg = env.fails(
        3,
        &[
            "verify",
            "--checkpoints",
            &env.p("foreign.note"),
            "--pubkey",
            &opub,
        ],
    );
    assert!(
        msg.contains("foreign.note") && msg.contains("origin"),
        "{msg}"
    );

    // An empty directory is an error, not a pass.
    let empty = env.path("empty");
    std::fs::create_dir(&empty).unwrap();
    env.fails(
        1,
        &[
            "verify",
            "--checkpoints",
            empty.to_str().unwrap(),
            "--pubkey",
            &pubkey,
        ],
    );
}

/// Rewrites every journal frame with `edit` applied, recomputing every hash and `prev`
/// link, as someone with write access to `.ledger/` could.
fn rewrite_journal(env: &Env, edit: &dyn Fn(&mut ledger::Event)) {
    for (path, bytes) in env.journal() {
        let mut off = 0;
        let mut out = Vec::new();
        let mut prev: Option<ledger::Hash> = None;
        while off < bytes.len() {
            let r = ledger::decode_frame(&bytes[off..]).unwrap();
            off += r.frame_len as usize;
            let mut ev = r.event.clone();
            if let Some(p) = prev {
                ev.prev = p;
            }
            edit(&mut ev);
            let payload = ev.encode();
            let h = ledger::Hash::of_event_bytes(&payload);
            ledger::encode_frame(&payload, &h, r.batch_first, r.batch_last, &mut out);
            prev = Some(h);
        }
        std::fs::write(path, out).unwrap();
    }
}

#[test]
fn a_rewritten_journal_fails_checkpoint_verification() {
    let (env, _key, pubkey) = populated();
    let cp = env.p("cp-early.note");
    env.ok(&["verify", "--checkpoints", &cp, "--pubkey", &pubkey]);
    rewrite_journal(&env, &|ev| {
        if ev.seq == 1 {
            ev.actor.agent = "mallory".into();
        }
    });
    // The chain itself is consistent again...
    let r = env.run(&["verify", "--quick"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // ...but it no longer gives the signed root.
    let msg = env.fails(3, &["verify", "--checkpoints", &cp, "--pubkey", &pubkey]);
    assert!(msg.contains("cp-early.note"), "{msg}");
    assert!(
        msg.contains("root hash") && msg.contains("disagrees with the journal"),
        "{msg}"
    );
}

#[test]
fn a_replaced_or_truncated_journal_fails_checkpoint_verification() {
    let env = Env::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        env.write(name, name.as_bytes());
        env.record("x", &format!("c{i}"), &[]);
    }
    let (key, pubkey) = env.keygen("k");
    let cp = env.ok(&["checkpoint", "--key", &key]);
    std::fs::write(env.path("cp"), cp).unwrap();
    let size = env.events() - 1;

    // The last two events cut off (and the index, which would remember them, removed).
    let saved = env.journal();
    for (path, bytes) in &saved {
        let mut ends = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            off += ledger::decode_frame(&bytes[off..]).unwrap().frame_len as usize;
            ends.push(off);
        }
        std::fs::write(path, &bytes[..ends[ends.len() - 3]]).unwrap();
    }
    std::fs::remove_dir_all(env.ws.join(".ledger/index")).unwrap();
    let msg = env.fails(
        3,
        &["verify", "--checkpoints", &env.p("cp"), "--pubkey", &pubkey],
    );
    assert!(
        msg.contains(&format!(
            "covers {size} events but the journal has only {}",
            size - 1
        )),
        "{msg}"
    );

    // A new ledger in the same place.
    std::fs::remove_dir_all(env.ws.join(".ledger")).unwrap();
    env.ok(&["init"]);
    let msg = env.fails(
        3,
        &["verify", "--checkpoints", &env.p("cp"), "--pubkey", &pubkey],
    );
    assert!(msg.contains("origin"), "{msg}");
}

#[test]
fn python_verifier_rederives_the_documented_example() {
    let out = std::process::Command::new("python3")
        .arg(format!("{}/tools/verify_export.py", compliance_env::ROOT))
        .arg("--self-test")
        .output()
        .expect("python3 runs (scripts/test.sh installs its packages)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok 317 9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9"
    );
}

#[test]
fn checkpoints_survive_losing_the_index() {
    let (env, key, pubkey) = populated();
    std::fs::remove_dir_all(env.ws.join(".ledger/index")).unwrap();
    let note = env.ok(&["checkpoint", "--key", &key]);
    std::fs::write(env.path("after.note"), note).unwrap();
    env.ok(&[
        "verify",
        "--checkpoints",
        &env.p("after.note"),
        "--pubkey",
        &pubkey,
    ]);
    env.ok(&[
        "verify",
        "--checkpoints",
        &env.p("cp-early.note"),
        "--pubkey",
        &pubkey,
    ]);
}

/// Exports the populated ledger several ways; returns (name, path, signed).
fn exports(env: &Env, key: &str) -> Vec<(&'static str, PathBuf, bool)> {
    let mut out = Vec::new();
    let mut run = |name: &'static str, extra: &[&str], signed: bool| {
        let path = env.path(&format!("{name}.jsonl"));
        let p = path.to_str().unwrap().to_string();
        let mut args = vec!["export", "--out", p.as_str()];
        args.extend_from_slice(extra);
        if signed {
            args.extend_from_slice(&["--sign", key]);
        }
        env.ok(&args);
        out.push((name, path, signed));
    };
    run("all-signed", &[], true);
    run("all-unsigned", &[], false);
    run("agent", &["--agent", "coder-1"], true);
    run("change", &["--change", "c4"], true);
    run(
        "time",
        &[
            "--since",
            "2000-01-01",
            "--until",
            "2999-01-01",
            "--agent",
            "runner",
        ],
        true,
    );
    run("none", &["--agent", "nobody"], false);
    out
}

#[test]
fn exports_verify_in_rust_and_in_python() {
    let (env, key, pubkey) = populated();
    let all = exports(&env, &key);
    for (name, path, signed) in &all {
        let p = path.to_str().unwrap();
        let out = if *signed {
            env.ok(&["verify-export", p, "--pubkey", &pubkey])
        } else {
            env.ok(&["verify-export", p])
        };
        assert!(out.starts_with("ok: "), "{name}: {out}");
        if *signed {
            assert!(out.contains("verified"), "{name}: {out}");
        }
    }
    let files: Vec<PathBuf> = all.iter().map(|(_, p, _)| p.clone()).collect();
    for (r, (name, ..)) in python_verify(&files, None).into_iter().zip(&all) {
        assert_eq!(r, Ok(()), "python, no key: {name}");
    }
    let signed: Vec<PathBuf> = all.iter().filter(|e| e.2).map(|e| e.1.clone()).collect();
    for r in python_verify(&signed, Some(&pubkey)) {
        assert_eq!(r, Ok(()), "python with the key");
    }

    // What the exports hold.
    let v: serde_json::Value = serde_json::from_str(
        env.ok(&[
            "verify-export",
            &env.p("all-signed.jsonl"),
            "--json",
            "--pubkey",
            &pubkey,
        ])
        .trim(),
    )
    .unwrap();
    assert_eq!(v["events"], env.events());
    assert_eq!(v["first_seq"], 0);
    let text = std::fs::read_to_string(env.path("agent.jsonl")).unwrap();
    let agents: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("\"type\":\"event\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["actor"]["agent"].clone())
        .collect();
    assert_eq!(agents, vec!["coder-1", "coder-1"]);
    let everything = std::fs::read_to_string(env.path("all-signed.jsonl")).unwrap();
    assert!(
        everything.contains(r#""name":{"hex":"7261772dff2e62696e"}"#),
        "non-UTF-8 name"
    );
    let change = std::fs::read_to_string(env.path("change.jsonl")).unwrap();
    assert!(change.contains(r#""kind":"failure""#) && change.contains(r#""exit_code":3"#));
    let none: serde_json::Value = serde_json::from_str(
        env.ok(&["verify-export", &env.p("none.jsonl"), "--json"])
            .trim(),
    )
    .unwrap();
    assert_eq!(none["events"], 0);
    // The trailer's checkpoint is an ordinary checkpoint: verify checks it against the
    // live journal.
    let last = text.lines().last().unwrap();
    let trailer: serde_json::Value = serde_json::from_str(last).unwrap();
    std::fs::write(
        env.path("from-export.note"),
        trailer["checkpoint"].as_str().unwrap(),
    )
    .unwrap();
    env.ok(&[
        "verify",
        "--checkpoints",
        &env.p("from-export.note"),
        "--pubkey",
        &pubkey,
    ]);
}

/// One mutation of an export: what was done, the bytes, and the line that must be named.
struct Mutation {
    what: String,
    bytes: Vec<u8>,
    line: u64,
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    assert!(v.pop().unwrap().is_empty());
    v
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect()
}

/// A field edit for each kind of line: the header's export time, an event's time, the
/// trailer checkpoint's root.
fn edit_line(line: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
    match v["type"].as_str().unwrap() {
        "header" => v["exported_at_us"] = (v["exported_at_us"].as_i64().unwrap() + 1).into(),
        "event" => v["time_us"] = (v["time_us"].as_i64().unwrap() + 1).into(),
        _ => {
            let cp = v["checkpoint"].as_str().unwrap().to_string();
            let mut lines: Vec<String> = cp.split('\n').map(str::to_string).collect();
            let root = &mut lines[2];
            let first = if root.starts_with('A') { "B" } else { "A" };
            root.replace_range(0..1, first);
            v["checkpoint"] = lines.join("\n").into();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn mutations(bytes: &[u8]) -> Vec<Mutation> {
    let ls = split_lines(bytes);
    let mut out = Vec::new();
    for i in 0..ls.len() {
        let line = i as u64 + 1;
        let mut m = ls.clone();
        m.remove(i);
        out.push(Mutation {
            what: format!("delete line {line}"),
            bytes: join(&m),
            line,
        });
        let mut m = ls.clone();
        m.insert(i, ls[i].clone());
        out.push(Mutation {
            what: format!("duplicate line {line}"),
            bytes: join(&m),
            line: line + 1,
        });
        if i + 1 < ls.len() {
            let mut m = ls.clone();
            m.swap(i, i + 1);
            out.push(Mutation {
                what: format!("swap lines {line} and {}", line + 1),
                bytes: join(&m),
                line,
            });
        }
        let mut m = ls.clone();
        m[i] = edit_line(&ls[i]);
        out.push(Mutation {
            what: format!("edit a field of line {line}"),
            bytes: join(&m),
            line,
        });
    }
    let header_end = ls[0].len() + 1;
    let trailer_start = bytes.len() - ls.last().unwrap().len() - 1;
    for cut in [
        1,
        header_end - 1,
        header_end,
        header_end + 7,
        bytes.len() / 2,
        trailer_start,
        trailer_start + 40,
        bytes.len() - 1,
    ] {
        let t = &bytes[..cut];
        let line = t.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        out.push(Mutation {
            what: format!("cut at byte {cut}"),
            bytes: t.to_vec(),
            line,
        });
    }
    out
}

#[test]
fn tampered_exports_are_rejected_by_both_verifiers_at_the_same_line() {
    let (env, key, pubkey) = populated();
    let all = exports(&env, &key);
    let mut files = Vec::new();
    let mut expected = Vec::new();
    for (name, path, signed) in all
        .iter()
        .filter(|(n, ..)| ["all-signed", "agent", "all-unsigned"].contains(n))
    {
        let bytes = std::fs::read(path).unwrap();
        for (k, m) in mutations(&bytes).into_iter().enumerate() {
            let f = env.path(&format!("m-{name}-{k}.jsonl"));
            std::fs::write(&f, &m.bytes).unwrap();
            let fs = f.to_str().unwrap();
            let r = if *signed {
                env.run(&["verify-export", fs, "--pubkey", &pubkey])
            } else {
                env.run(&["verify-export", fs])
            };
            assert_eq!(r.code, 3, "{name}: {}: {}{}", m.what, r.stdout, r.stderr);
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
            assert_eq!(
                rejected_line(&r.stderr),
                m.line,
                "{name}: {}: {}",
                m.what,
                r.stderr
            );
            files.push((f, *signed));
            expected.push((format!("{name}: {}", m.what), m.line));
        }
    }
    // The Python verifier, with the key for signed files.
    let (signed, unsigned): (Vec<_>, Vec<_>) = files.iter().enumerate().partition(|(_, (_, s))| *s);
    for (group, key) in [(signed, Some(pubkey.as_str())), (unsigned, None)] {
        let paths: Vec<PathBuf> = group.iter().map(|(_, (f, _))| f.clone()).collect();
        for ((i, _), r) in group.iter().zip(python_verify(&paths, key)) {
            let (what, line) = &expected[*i];
            match r {
                Err((at, _)) => assert_eq!(at, *line, "python: {what}"),
                Ok(()) => panic!("python accepted {what}"),
            }
        }
    }
}

#[test]
fn wrong_keys_and_signature_games_are_rejected() {
    let (env, key, pubkey) = populated();
    let all = exports(&env, &key);
    let signed = &all[0].1;
    let unsigned = &all[1].1;
    let t = split_lines(&std::fs::read(signed).unwrap()).len() as u64;
    let (_, other_pub) = env.keygen("other.key");
    let msg = env.fails(
        3,
        &[
            "verify-export",
            signed.to_str().unwrap(),
            "--pubkey",
            &other_pub,
        ],
    );
    assert_eq!(rejected_line(&msg), t, "{msg}");
    assert!(msg.contains("no signature by"), "{msg}");
    let msg = env.fails(
        3,
        &[
            "verify-export",
            unsigned.to_str().unwrap(),
            "--pubkey",
            &pubkey,
        ],
    );
    assert_eq!(rejected_line(&msg), 1, "{msg}");
    // Without a key a signed export is checked but says the signature was not.
    let out = env.ok(&["verify-export", signed.to_str().unwrap()]);
    assert!(out.contains("NOT checked"), "{out}");
    // Python agrees.
    let r = python_verify(std::slice::from_ref(signed), Some(&other_pub));
    assert_eq!(r[0].as_ref().unwrap_err().0, t);
    let r = python_verify(std::slice::from_ref(unsigned), Some(&pubkey));
    assert_eq!(r[0].as_ref().unwrap_err().0, 1);
    // A key file that is not a key: an error (1), not a verdict.
    std::fs::write(env.path("junk.pub"), "junk").unwrap();
    env.fails(
        1,
        &[
            "verify-export",
            signed.to_str().unwrap(),
            "--pubkey",
            &env.p("junk.pub"),
        ],
    );
    env.fails(1, &["verify-export", &env.p("missing.jsonl")]);
}

#[test]
fn malformed_and_huge_files_are_rejected_without_panicking() {
    let (env, key, _) = populated();
    let all = exports(&env, &key);
    let good = std::fs::read(&all[1].1).unwrap();
    let header = split_lines(&good)[0].clone();
    let header_text = String::from_utf8(header.clone()).unwrap();
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("empty", vec![], 1),
        ("garbage", b"\xff\xfe\x00garbage".to_vec(), 1),
        ("not json", b"hello\n".to_vec(), 1),
        ("array", b"[]\n".to_vec(), 1),
        (
            "unknown version",
            header_text
                .replace("\"version\":1", "\"version\":7")
                .into_bytes()
                .into_iter()
                .chain(*b"\n")
                .collect(),
            1,
        ),
        ("header only", [header.clone(), b"\n".to_vec()].concat(), 2),
        (
            "deep nesting",
            [
                header.clone(),
                b"\n".to_vec(),
                vec![b'['; 200_000],
                b"\n".to_vec(),
            ]
            .concat(),
            2,
        ),
    ];
    let mut files = Vec::new();
    for (k, (what, bytes, line)) in cases.iter().enumerate() {
        let f = env.path(&format!("bad-{k}.jsonl"));
        std::fs::write(&f, bytes).unwrap();
        let msg = env.fails(3, &["verify-export", f.to_str().unwrap()]);
        assert!(!msg.contains("panicked"), "{what}: {msg}");
        assert_eq!(rejected_line(&msg), *line, "{what}: {msg}");
        if *what == "unknown version" {
            assert!(msg.contains("unknown export format version 7"), "{msg}");
        }
        files.push(f);
    }
    // A line longer than the 64 MiB limit, written in pieces.
    let huge = env.path("huge.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&huge).unwrap());
        f.write_all(&header).unwrap();
        f.write_all(b"\n{\"type\":\"event\",\"x\":\"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..65 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"}\n").unwrap();
    }
    let msg = env.fails(3, &["verify-export", huge.to_str().unwrap()]);
    assert_eq!(rejected_line(&msg), 2, "{msg}");
    assert!(msg.contains("longer than"), "{msg}");
    files.push(huge);
    let expected: Vec<u64> = cases.iter().map(|c| c.2).chain([2]).collect();
    for (r, line) in python_verify(&files, None).into_iter().zip(expected) {
        assert_eq!(r.unwrap_err().0, line);
    }
}

#[test]
fn export_refuses_bad_requests_and_leaves_nothing() {
    let (env, key, _) = populated();
    let before = env.journal();
    std::fs::write(env.path("taken.jsonl"), "keep").unwrap();
    env.fails(1, &["export", "--out", &env.p("taken.jsonl")]);
    assert_eq!(
        std::fs::read_to_string(env.path("taken.jsonl")).unwrap(),
        "keep"
    );
    env.fails(
        2,
        &[
            "export",
            "--out",
            &env.p("x.csv"),
            "--format",
            "csv",
            "--sign",
            &key,
        ],
    );
    env.fails(
        2,
        &[
            "export",
            "--out",
            &env.p("x.jsonl"),
            "--since",
            "last tuesday",
        ],
    );
    env.fails(
        2,
        &["export", "--out", &env.p("x.jsonl"), "--format", "xml"],
    );
    let msg = env.fails(
        1,
        &[
            "export",
            "--out",
            &env.p("x.jsonl"),
            "--change",
            "no-such-change",
        ],
    );
    assert!(msg.contains("no-such-change"), "{msg}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.fails(1, &["export", "--out", &env.p("x.jsonl"), "--sign", &key]);
    env.fails(1, &["export", "--out", &env.p("no-dir/x.jsonl")]);
    let left: Vec<_> = std::fs::read_dir(&env.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("x.") || n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(env.journal(), before, "export never writes to the journal");
}

#[test]
fn csv_export_has_one_row_per_file_operation() {
    let (env, _, _) = populated();
    env.ok(&["export", "--out", &env.p("all.csv"), "--format", "csv"]);
    let text = std::fs::read_to_string(env.path("all.csv")).unwrap();
    let rows: Vec<&str> = text.split("\r\n").filter(|r| !r.is_empty()).collect();
    assert!(rows[0].starts_with(
        "seq,time,time_us,change_id,agent,principal,role,correlation_id,op,namespace,path,"
    ));
    // c1: 2 files; c2: 3; c3: 2; c4: 1; r1: 2; c5: 1.
    assert_eq!(rows.len(), 1 + 11, "{text}");
    assert!(text.contains(",raw-\\xff.bin,"), "{text}");
    assert!(
        rows.iter()
            .any(|r| r.contains(",c1,coder-1,alice@example.com,coder,req-1,create,file,README,")),
        "{text}"
    );
    let only: Vec<&str> = {
        env.ok(&[
            "export",
            "--out",
            &env.p("c4.csv"),
            "--format",
            "csv",
            "--change",
            "c4",
        ]);
        let t = std::fs::read_to_string(env.path("c4.csv")).unwrap();
        Box::leak(t.into_boxed_str())
            .split("\r\n")
            .filter(|r| !r.is_empty())
            .collect()
    };
    assert_eq!(only.len(), 2);
    assert!(
        only[1].contains(",c4,runner,") && only[1].contains(",made.txt,"),
        "{only:?}"
    );
}

#[test]
fn redaction_removes_the_bytes_and_keeps_every_proof() {
    let env = Env::new();
    env.write("app.cfg", b"port = 80\n");
    env.record("coder", "c1", &[]);
    env.write("secret.env", b"TOKEN=hunter2\n");
    env.record("coder", "c2", &[]);
    env.write("secret.env", b"TOKEN=rotated\n");
    env.record("coder", "c3", &[]);
    let (key, pubkey) = env.keygen("k");
    let cp = env.ok(&["checkpoint", "--key", &key]);
    std::fs::write(env.path("cp"), cp).unwrap();
    env.ok(&["export", "--out", &env.p("before.jsonl"), "--sign", &key]);
    let h = blake3::hash(b"TOKEN=hunter2\n").to_hex().to_string();

    // Bad requests change nothing.
    let before = env.journal();
    env.fails(2, &["redact", "not-a-hash", "--reason", "x"]);
    env.fails(2, &["redact", &h, "--reason", "  "]);
    let unknown = blake3::hash(b"never stored").to_hex().to_string();
    let msg = env.fails(1, &["redact", &unknown, "--reason", "x"]);
    assert!(msg.contains("not in the content store"), "{msg}");
    assert_eq!(env.journal(), before);

    let n = env.events();
    let id = env.ok(&[
        "redact",
        &h,
        "--reason",
        "leaked credential",
        "--agent",
        "sec-bot",
    ]);
    assert!(!id.trim().is_empty());
    assert_eq!(env.events(), n + 1);
    let object = env.ws.join(".ledger/objects").join(&h[..2]).join(&h[2..]);
    assert!(!object.exists(), "the bytes are gone");

    // Everything still verifies.
    let out = env.ok(&["verify"]);
    assert!(out.contains("1 redacted"), "{out}");
    env.ok(&["verify", "--checkpoints", &env.p("cp"), "--pubkey", &pubkey]);
    env.ok(&["verify-export", &env.p("before.jsonl"), "--pubkey", &pubkey]);
    env.ok(&["export", "--out", &env.p("after.jsonl"), "--sign", &key]);
    env.ok(&["verify-export", &env.p("after.jsonl"), "--pubkey", &pubkey]);
    let after = std::fs::read_to_string(env.path("after.jsonl")).unwrap();
    assert!(after.contains(&format!(
        r#""kind":"redaction","hash":"{h}","reason":"leaked credential""#
    )));
    assert_eq!(
        python_verify(&[env.path("after.jsonl")], Some(&pubkey)),
        vec![Ok(())]
    );

    // What needs the bytes says when and why they went.
    let msg = env.fails(1, &["cat", &h]);
    assert!(
        msg.contains(&format!("redacted at seq {n}")) && msg.contains("leaked credential"),
        "{msg}"
    );
    assert!(msg.contains("Z)"), "the time is shown: {msg}");
    let msg = env.fails(1, &["replay", "--at", "c2", "--out", &env.p("replayed")]);
    assert!(
        msg.contains("redacted by the event at seq")
            && msg.contains("leaked credential")
            && msg.contains("redacted at 2"),
        "{msg}"
    );
    assert!(!env.path("replayed").exists(), "nothing written");
    let msg = env.fails(4, &["revert", "c3"]);
    assert!(
        msg.contains("redacted") && msg.contains("leaked credential"),
        "{msg}"
    );
    // Other content is unaffected.
    let cfg = blake3::hash(b"port = 80\n").to_hex().to_string();
    assert_eq!(env.ok(&["cat", &cfg]), "port = 80\n");

    // Redacting twice is refused and changes nothing.
    let before = env.journal();
    let msg = env.fails(1, &["redact", &h, "--reason", "again"]);
    assert!(msg.contains("already redacted"), "{msg}");
    assert_eq!(env.journal(), before);
}
