//! The planner's merges compared with git's on the same histories: `git revert` end to
//! end, and `git merge-file -p` on the raw three-way merges. Skipped where git is absent.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::Sim;
use ledger::Mode;
use replay::{ConflictReason, Error};

fn have_git() -> bool {
    Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs git in `dir`, isolated from the user's and the system's configuration.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(["-c", "core.fileMode=true", "-c", "commit.gpgSign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .output()
        .expect("git runs")
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
fn write(dir: &Path, name: &str, text: &str, mode: Mode) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    let bits = if mode == Mode::Executable {
        0o755
    } else {
        0o644
    };
    fs::set_permissions(&p, fs::Permissions::from_mode(bits)).unwrap();
}

#[cfg(unix)]
fn read(dir: &Path, name: &str) -> (String, Mode) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    let mode = if fs::metadata(&p).unwrap().permissions().mode() & 0o100 != 0 {
        Mode::Executable
    } else {
        Mode::Regular
    };
    (fs::read_to_string(&p).unwrap(), mode)
}

type Version<'a> = (&'a str, Mode);

/// `git revert` of the middle commit of base -> change -> later, or `None` if git
/// reports a conflict.
#[cfg(unix)]
fn git_revert(base: Version, change: Version, later: Version) -> Option<(String, Mode)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    git_ok(dir, &["init", "-q", "-b", "main"]);
    let mut shas = Vec::new();
    for (i, (text, mode)) in [base, change, later].into_iter().enumerate() {
        write(dir, "f.txt", text, mode);
        git_ok(dir, &["add", "f.txt"]);
        git_ok(dir, &["commit", "-q", "-m", &format!("c{i}")]);
        shas.push(git_ok(dir, &["rev-parse", "HEAD"]).trim().to_string());
    }
    let out = git(dir, &["revert", "--no-edit", &shas[1]]);
    if !out.status.success() {
        return None;
    }
    Some(read(dir, "f.txt"))
}

/// The same history through the ledger and the planner.
fn ledger_revert(base: Version, change: Version, later: Version) -> Option<(String, Mode)> {
    let mut sim = Sim::new();
    sim.change(&[("f.txt", Some((base.0.as_bytes(), base.1)))]);
    let c = sim.change(&[("f.txt", Some((change.0.as_bytes(), change.1)))]);
    sim.change(&[("f.txt", Some((later.0.as_bytes(), later.1)))]);
    match sim.plan(&c) {
        Ok(plan) => {
            sim.apply(&plan);
            let (bytes, mode) = sim.disk[b"f.txt".as_slice()].clone();
            Some((String::from_utf8(bytes).unwrap(), mode))
        }
        Err(Error::Conflicts { conflicts, .. }) => {
            assert_eq!(conflicts.len(), 1);
            assert_eq!(conflicts[0].reason, ConflictReason::Overlap);
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

/// (name, base, change, later), all regular unless the name says otherwise.
fn cases() -> Vec<(
    &'static str,
    Version<'static>,
    Version<'static>,
    Version<'static>,
)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let base = leak(lines(12));
    let r = Mode::Regular;
    let x = Mode::Executable;
    vec![
        (
            "separate edits",
            (base, r),
            (leak(base.replace("line 2\n", "CHANGED 2\n")), r),
            (
                leak(
                    base.replace("line 2\n", "CHANGED 2\n")
                        .replace("line 10\n", "LATER 10\n"),
                ),
                r,
            ),
        ),
        (
            "later inserts between the change's hunks",
            (base, r),
            (
                leak(
                    base.replace("line 1\n", "C1\n")
                        .replace("line 12\n", "C12\n"),
                ),
                r,
            ),
            (
                leak(
                    base.replace("line 1\n", "C1\n")
                        .replace("line 12\n", "C12\n")
                        .replace("line 6\n", "line 6\nnew a\nnew b\n"),
                ),
                r,
            ),
        ),
        (
            "change appended, later edited the top",
            (base, r),
            (leak(format!("{base}tail 1\ntail 2\n")), r),
            (
                leak(format!(
                    "{}tail 1\ntail 2\n",
                    base.replace("line 1\n", "TOP\n")
                )),
                r,
            ),
        ),
        (
            "change deleted lines, later edited elsewhere",
            (base, r),
            (leak(base.replace("line 4\nline 5\n", "")), r),
            (
                leak(
                    base.replace("line 4\nline 5\n", "")
                        .replace("line 11\n", "L11\n"),
                ),
                r,
            ),
        ),
        (
            "change made it executable, later edited",
            (base, r),
            (leak(base.replace("line 3\n", "C3\n")), x),
            (
                leak(base.replace("line 3\n", "C3\n").replace("line 9\n", "L9\n")),
                x,
            ),
        ),
        (
            "later made it executable",
            (base, r),
            (leak(base.replace("line 3\n", "C3\n")), r),
            (
                leak(base.replace("line 3\n", "C3\n").replace("line 9\n", "L9\n")),
                x,
            ),
        ),
        (
            "overlap",
            (base, r),
            (leak(base.replace("line 6\n", "C6\n")), r),
            (leak(base.replace("line 6\n", "L6\n")), r),
        ),
        (
            "no trailing newline",
            (leak(base.trim_end().to_string()), r),
            (
                leak(base.replace("line 2\n", "C2\n").trim_end().to_string()),
                r,
            ),
            (
                leak(
                    base.replace("line 2\n", "C2\n")
                        .replace("line 12\n", "L12")
                        .trim_end()
                        .to_string(),
                ),
                r,
            ),
        ),
    ]
}

#[cfg(unix)]
#[test]
fn planner_agrees_with_git_revert() {
    if !have_git() {
        return;
    }
    let mut clean = 0;
    for (name, base, change, later) in cases() {
        let want = git_revert(base, change, later);
        let got = ledger_revert(base, change, later);
        assert_eq!(got, want, "{name}");
        clean += usize::from(got.is_some());
    }
    assert!(clean >= 6);
}

#[test]
fn diffy_merges_like_git_merge_file() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, _, change, later) in cases() {
        // What the planner merges when reverting: base = the change's new content,
        // ours = head, theirs = the change's old content.
        let base = lines(12);
        let (b, o, t) = (
            change.0,
            later.0,
            if name == "no trailing newline" {
                base.trim_end()
            } else {
                base.as_str()
            },
        );
        fs::write(dir.join("ours"), o).unwrap();
        fs::write(dir.join("base"), b).unwrap();
        fs::write(dir.join("theirs"), t).unwrap();
        let out = git(dir, &["merge-file", "-p", "ours", "base", "theirs"]);
        let git_clean = out.status.success();
        let ours = diffy::merge(b, o, t);
        assert_eq!(ours.is_ok(), git_clean, "{name}");
        if let Ok(merged) = ours {
            assert_eq!(merged, String::from_utf8(out.stdout).unwrap(), "{name}");
        }
    }
}
