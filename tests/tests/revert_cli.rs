//! `ledger revert` and `ledger replay` refusals: each says what and where, exits non-zero,
//! writes nothing and leaves the journal as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ledger-e2e");

struct Ws {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Ws {
    fn new() -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ws");
        fs::create_dir(&dir).unwrap();
        let ws = Ws { _tmp: tmp, dir };
        ws.ok(&["init"]);
        ws
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("LEDGER_DIR")
            .env_remove("LEDGER_REVERT_SYNC")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn write(&self, p: &str, text: &str) {
        let path = self.dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.dir.join(p)).unwrap()
    }
    fn journal(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<_> = fs::read_dir(self.dir.join(".ledger/journal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.iter().map(|p| fs::read(p).unwrap()).collect()
    }
    /// Runs a command that must fail with `code`, checking the journal did not change.
    fn refuses(&self, args: &[&str], code: i32, mentions: &[&str]) -> String {
        let before = self.journal();
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        for m in mentions {
            assert!(err.contains(m), "{args:?}: {err:?} does not mention {m:?}");
        }
        assert_eq!(self.journal(), before, "{args:?} changed the journal");
        err
    }
}

fn three_changes() -> Ws {
    let ws = Ws::new();
    ws.write("a.txt", "1\n2\n3\n4\n5\n6\n");
    ws.write("dir/b.txt", "b\n");
    ws.ok(&["record", "--agent", "x", "--change", "c1"]);
    ws.write("a.txt", "ONE\n2\n3\n4\n5\n6\n");
    ws.write("dir/b.txt", "b2\n");
    ws.ok(&["record", "--agent", "x", "--change", "c2"]);
    ws.write("a.txt", "ONE\n2\n3\n4\n5\nSIX\n");
    ws.ok(&["record", "--agent", "y", "--change", "c3"]);
    ws
}

#[test]
fn revert_keeps_later_work_and_is_itself_revertable() {
    let ws = three_changes();
    let out = ws.ok(&["revert", "c2", "--agent", "fixer"]);
    let rid = out.trim().to_string();
    assert_eq!(
        ws.read("a.txt"),
        "1\n2\n3\n4\n5\nSIX\n",
        "c3's edit is kept, c2's undone"
    );
    assert_eq!(ws.read("dir/b.txt"), "b\n");
    let show = ws.ok(&["show", &rid, "--json"]);
    assert!(show.contains("\"reverts\":\"c2\""), "{show}");
    let c2 = ws.ok(&["show", "c2", "--json"]);
    assert!(c2.contains(&format!("\"reverted_by\":\"{rid}\"")), "{c2}");
    // Reverting it again is refused, naming the revert.
    ws.refuses(&["revert", "c2"], 1, &[&rid]);
    // The revert itself can be reverted: c2's content comes back.
    ws.ok(&["revert", &rid]);
    assert_eq!(ws.read("a.txt"), "ONE\n2\n3\n4\n5\nSIX\n");
    assert_eq!(ws.read("dir/b.txt"), "b2\n");
    ws.ok(&["verify"]);
}

/// Both ways of making the staged files durable (one `fsync` each, one `syncfs`) give
/// the same result; a setting that is neither is refused before anything is written.
#[test]
fn revert_syncs_files_either_way_and_refuses_an_unknown_setting() {
    let ws = three_changes();
    fn sync(how: &str) -> [(&str, &str); 1] {
        [("LEDGER_REVERT_SYNC", how)]
    }
    let before = ws.journal();
    let o = ws.run_env(&["revert", "c2", "--agent", "fixer"], &sync("sometimes"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("LEDGER_REVERT_SYNC=sometimes"), "{err}");
    assert_eq!(ws.journal(), before);
    assert_eq!(ws.read("dir/b.txt"), "b2\n");
    let mut ids = Vec::new();
    for how in ["files", "filesystem", "files", "auto"] {
        let target = ids.last().cloned().unwrap_or_else(|| "c2".to_string());
        let o = ws.run_env(&["revert", &target, "--agent", "fixer"], &sync(how));
        assert!(
            o.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        ids.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
        // Each revert undoes the one before: c2's content goes and comes back.
        let (a, b) = match ids.len() % 2 {
            1 => ("1\n2\n3\n4\n5\nSIX\n", "b\n"),
            _ => ("ONE\n2\n3\n4\n5\nSIX\n", "b2\n"),
        };
        assert_eq!(
            (ws.read("a.txt").as_str(), ws.read("dir/b.txt").as_str()),
            (a, b),
            "{how}"
        );
    }
    assert!(ws.ok(&["status", "--json"]).contains("\"clean\":true"));
    ws.ok(&["verify"]);
}

/// A revert given a change ID that is taken is refused before a file is written.
#[test]
fn revert_with_a_taken_change_id_is_refused_and_writes_nothing() {
    let ws = three_changes();
    ws.refuses(
        &["revert", "c2", "--change-id", "c1", "--agent", "x"],
        1,
        &["\"c1\" already exists", "nothing was written"],
    );
    assert_eq!(ws.read("a.txt"), "ONE\n2\n3\n4\n5\nSIX\n");
    assert_eq!(ws.read("dir/b.txt"), "b2\n");
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let ws = three_changes();
    let before = (ws.read("a.txt"), ws.journal());
    let out = ws.ok(&["revert", "c2", "--dry-run"]);
    assert!(out.contains("a.txt") && out.contains("dir/b.txt"), "{out}");
    assert!(out.contains("merged with later c3"), "{out}");
    assert_eq!((ws.read("a.txt"), ws.journal()), before);
}

#[test]
fn unknown_change_is_refused() {
    let ws = three_changes();
    ws.refuses(&["revert", "nope"], 1, &["unknown change ID", "nope"]);
    ws.refuses(
        &[
            "replay",
            "--at",
            "nope",
            "--out",
            "/tmp/never-written-ledger-test",
        ],
        2,
        &["nope"],
    );
    assert!(!Path::new("/tmp/never-written-ledger-test").exists());
}

#[test]
fn overlapping_later_edit_is_a_conflict_naming_the_later_change() {
    let ws = three_changes();
    ws.write("a.txt", "uno\n2\n3\n4\n5\nSIX\n");
    ws.ok(&["record", "--agent", "z", "--change", "c4"]);
    let before = (ws.read("a.txt"), ws.read("dir/b.txt"));
    let err = ws.refuses(&["revert", "c2"], 4, &["a.txt", "c4", "same lines"]);
    assert!(
        !err.contains("b.txt:"),
        "only the conflicting file is listed: {err}"
    );
    assert_eq!(
        (ws.read("a.txt"), ws.read("dir/b.txt")),
        before,
        "all or nothing: b.txt untouched too"
    );
}

#[test]
fn unrecorded_edit_in_a_touched_file_is_a_conflict() {
    let ws = three_changes();
    ws.write("dir/b.txt", "edited by hand\n");
    ws.refuses(&["revert", "c2"], 4, &["dir/b.txt", "outside the ledger"]);
    assert_eq!(ws.read("dir/b.txt"), "edited by hand\n");
    assert_eq!(ws.read("a.txt"), "ONE\n2\n3\n4\n5\nSIX\n");
}

#[test]
fn symlinked_directory_is_never_written_through() {
    let ws = three_changes();
    let outside = ws.dir.parent().unwrap().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("b.txt"), "b2\n").unwrap();
    fs::remove_dir_all(ws.dir.join("dir")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.dir.join("dir")).unwrap();
    ws.refuses(&["revert", "c2"], 4, &["dir/b.txt"]);
    assert_eq!(
        fs::read_to_string(outside.join("b.txt")).unwrap(),
        "b2\n",
        "nothing written outside"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn symlink_planted_at_the_target_is_refused() {
    let ws = three_changes();
    let outside = ws.dir.parent().unwrap().join("victim");
    fs::write(&outside, "b2\n").unwrap();
    fs::remove_file(ws.dir.join("dir/b.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.dir.join("dir/b.txt")).unwrap();
    ws.refuses(&["revert", "c2"], 4, &["dir/b.txt"]);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "b2\n");
    assert!(fs::symlink_metadata(ws.dir.join("dir/b.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn read_only_file_is_refused_and_left_alone() {
    let ws = three_changes();
    let p = ws.dir.join("dir/b.txt");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
    ws.refuses(&["revert", "c2"], 1, &["dir/b.txt", "read-only"]);
    assert_eq!(ws.read("dir/b.txt"), "b2\n");
    assert_eq!(
        ws.read("a.txt"),
        "ONE\n2\n3\n4\n5\nSIX\n",
        "a.txt was staged but never renamed"
    );
    let leftovers: Vec<_> = fs::read_dir(&ws.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("ledger-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn replay_refusals_write_nothing() {
    let ws = three_changes();
    let out = ws.dir.parent().unwrap().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep"), "mine").unwrap();
    ws.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        2,
        &["not empty"],
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    ws.refuses(
        &["replay", "--at", "1990-01-01", "--out", "/tmp/x-never"],
        2,
        &["before the first event"],
    );
    ws.refuses(
        &["replay", "--at", "999", "--out", "/tmp/x-never"],
        2,
        &["past the head"],
    );
    assert!(!Path::new("/tmp/x-never").exists());
}

#[test]
fn replay_by_seq_change_before_and_time_agree() {
    let ws = three_changes();
    let base = ws.dir.parent().unwrap().to_path_buf();
    let seq_of = |id: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(ws.ok(&["show", id, "--json"]).trim()).unwrap();
        v["seq"].to_string()
    };
    let time_of = |id: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(ws.ok(&["show", id, "--json"]).trim()).unwrap();
        v["time"].as_str().unwrap().to_string()
    };
    let read_all = |d: &Path| -> Vec<(String, String)> {
        let mut v = vec![];
        for p in ["a.txt", "dir/b.txt"] {
            v.push((
                p.to_string(),
                fs::read_to_string(d.join(p)).unwrap_or_default(),
            ));
        }
        v
    };
    let mut outs = vec![];
    for (i, args) in [
        vec!["--at".to_string(), "c2".to_string()],
        vec!["--at".to_string(), seq_of("c2")],
        vec!["--before".to_string(), "c3".to_string()],
        vec!["--at".to_string(), time_of("c2")],
    ]
    .into_iter()
    .enumerate()
    {
        let out = base.join(format!("r{i}"));
        let mut a: Vec<&str> = vec!["replay"];
        a.extend(args.iter().map(String::as_str));
        a.extend(["--out", out.to_str().unwrap()]);
        ws.ok(&a);
        outs.push(read_all(&out));
    }
    assert_eq!(
        outs[0],
        vec![
            ("a.txt".into(), "ONE\n2\n3\n4\n5\n6\n".into()),
            ("dir/b.txt".into(), "b2\n".into())
        ]
    );
    assert!(outs.iter().all(|o| *o == outs[0]), "{outs:?}");
}

#[test]
fn timeline_blame_and_diff_answer_forensic_questions() {
    let ws = three_changes();
    let blame = ws.ok(&["blame", "a.txt", "--json"]);
    let ids: Vec<String> = blame
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["change_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);
    let tl = ws.ok(&["timeline", "--agent", "y", "--json"]);
    assert_eq!(tl.lines().count(), 1);
    assert!(tl.contains("\"change_id\":\"c3\""));
    let all = ws.ok(&["timeline", "--json"]);
    assert_eq!(all.lines().count(), 4, "genesis + 3 changes");
    let d = ws.ok(&["diff", "c1", "c3", "--patch"]);
    assert!(
        d.contains("modified  a.txt")
            && d.contains("-1")
            && d.contains("+ONE")
            && d.contains("+SIX"),
        "{d}"
    );
    ws.refuses(&["blame", "never.txt"], 1, &["never.txt"]);
}
