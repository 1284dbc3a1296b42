//! Replay and revert held against git on a generated history: every commit is recorded
//! as one change; `ledger replay` of each must equal `git archive` of the commit, and
//! `ledger revert` of each must produce the tree `git revert --no-commit` produces where
//! git applies cleanly, and refuse (exit 4, nothing written) where git conflicts. The
//! ledger records files, not renames; the generator never makes two files git would pair as a rename.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ledger-e2e");

fn run(cmd: &mut Command) -> Output {
    cmd.env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("LEDGER_DIR")
        .output()
        .expect("command runs")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    c
}

fn ledger(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    c
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A tree as comparable data: path -> (kind, bytes or link target, executable).
type Snapshot = BTreeMap<String, (char, Vec<u8>, bool)>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == ".ledger" || rel == ".git" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        'l',
                        fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                        false,
                    ),
                );
            } else if m.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    (
                        'f',
                        fs::read(&p).unwrap(),
                        m.permissions().mode() & 0o100 != 0,
                    ),
                );
            }
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

fn lines(rng: &mut Rng, tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag} line {i} {:x}", rng.next()))
        .collect()
}

/// Applies one random commit's worth of edits to the git work tree.
fn mutate(rng: &mut Rng, repo: &Path, step: usize, live: &mut Vec<String>) {
    let ops = 1 + rng.below(3);
    for k in 0..ops {
        let choice = if live.len() < 3 { 0 } else { rng.below(10) };
        match choice {
            0 | 1 => {
                // Create a fresh file (never reusing a deleted name, so git sees no rename).
                let dir = ["", "src/", "src/deep/", "docs/"][rng.below(4) as usize];
                let name = format!("{dir}f{step}_{k}.txt");
                fs::create_dir_all(repo.join(&name).parent().unwrap()).unwrap();
                fs::write(repo.join(&name), lines(rng, &name, 12).join("\n") + "\n").unwrap();
                live.push(name);
            }
            2..=6 => {
                // Change one line of a text file.
                let name = live[rng.below(live.len() as u64) as usize].clone();
                let p = repo.join(&name);
                if fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
                    continue;
                }
                let text = fs::read_to_string(&p).unwrap();
                let mut ls: Vec<String> = text.lines().map(str::to_string).collect();
                let i = rng.below(ls.len() as u64) as usize;
                ls[i] = format!("edited at step {step} {:x}", rng.next());
                fs::write(&p, ls.join("\n") + "\n").unwrap();
            }
            7 => {
                let name = live.remove(rng.below(live.len() as u64) as usize);
                fs::remove_file(repo.join(&name)).unwrap();
            }
            8 => {
                let name = &live[rng.below(live.len() as u64) as usize];
                let p = repo.join(name);
                if !fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
                    let mode = fs::metadata(&p).unwrap().permissions().mode();
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode ^ 0o111)).unwrap();
                }
            }
            _ => {
                let target = live[rng.below(live.len() as u64) as usize].clone();
                let name = format!("link{step}_{k}");
                // A unique target: git would pair identical links across a delete and a
                // create as a rename, which the ledger (files, not renames) does not model.
                std::os::unix::fs::symlink(format!("{target}#{step}.{k}"), repo.join(&name))
                    .unwrap();
                live.push(name);
            }
        }
    }
}

fn clear_except_ledger(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() == ".ledger" {
            continue;
        }
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

fn archive_into(repo: &Path, rev: &str, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let tar = run(git(repo).args(["archive", "--format=tar", rev]));
    assert!(tar.status.success());
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(child.wait().unwrap().success());
}

fn copy_tree(from: &Path, to: &Path) {
    ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn replay_matches_git_archive_and_revert_matches_git_revert() {
    let seed = std::env::var("LEDGER_GIT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let ws = tmp.path().join("ws");
    fs::create_dir_all(&repo).unwrap();
    fs::create_dir_all(&ws).unwrap();
    ok(git(&repo).args(["init", "-q"]));
    ok(ledger(&ws).arg("init"));
    let mut live = Vec::new();
    // (commit, the change that recorded it, whether that commit changed anything)
    let mut commits: Vec<(String, String, bool)> = Vec::new();
    let mut last_change = String::new();
    let steps = 30;
    for step in 0..steps {
        mutate(&mut rng, &repo, step, &mut live);
        ok(git(&repo).args(["add", "-A"]));
        ok(git(&repo).args([
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            &format!("step {step}"),
        ]));
        let sha = ok(git(&repo).args(["rev-parse", "HEAD"]))
            .trim()
            .to_string();
        clear_except_ledger(&ws);
        archive_into(&repo, &sha, &ws);
        let out =
            run(ledger(&ws).args(["record", "--agent", "gen", "--change", &format!("c{step}")]));
        assert!(
            out.status.success(),
            "record step {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A commit whose edits cancelled out records nothing, as git records no diff.
        let recorded = String::from_utf8_lossy(&out.stdout).trim() == format!("c{step}");
        if recorded {
            last_change = format!("c{step}");
        }
        commits.push((sha, last_change.clone(), recorded));
    }

    // Replay of every commit is byte-identical to git archive of it, modes and links included.
    for (i, (sha, change, _)) in commits.iter().enumerate() {
        let want = tmp.path().join(format!("git-{i}"));
        archive_into(&repo, sha, &want);
        let got = tmp.path().join(format!("replay-{i}"));
        ok(ledger(&ws)
            .args(["replay", "--at", change, "--out"])
            .arg(&got));
        assert_eq!(
            snapshot(&got),
            snapshot(&want),
            "replay of c{i} (seed {seed:#x})"
        );
    }

    // Revert of every change against git revert --no-commit at the head.
    let (mut clean, mut conflicts) = (0, 0);
    for (i, (sha, _, recorded)) in commits.iter().enumerate().skip(1) {
        if !recorded {
            continue;
        }
        let g = tmp.path().join(format!("gitrev-{i}"));
        ok(Command::new("git").args(["clone", "-q"]).arg(&repo).arg(&g));
        let git_out = run(git(&g).args(["revert", "--no-commit", sha]));
        let w = tmp.path().join(format!("ws-{i}"));
        copy_tree(&ws, &w);
        let before = snapshot(&w);
        let journal_before = fs::read_dir(w.join(".ledger/journal"))
            .unwrap()
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect::<Vec<_>>();
        let out = run(ledger(&w).args(["revert", &format!("c{i}"), "--agent", "t"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if git_out.status.success() {
            assert!(
                out.status.success(),
                "git reverts c{i} cleanly but ledger refused (seed {seed:#x}): {stderr}"
            );
            assert_eq!(
                snapshot(&w),
                snapshot(&g),
                "tree after reverting c{i} (seed {seed:#x})"
            );
            let status = ok(ledger(&w).args(["status", "--json"]));
            assert!(
                status.contains("\"clean\":true"),
                "revert of c{i} left unrecorded differences: {status}"
            );
            clean += 1;
        } else {
            assert_eq!(
                out.status.code(),
                Some(4),
                "git conflicts on c{i} but ledger did not refuse (seed {seed:#x}): {stderr}\ngit: {}{}\n{}",
                String::from_utf8_lossy(&git_out.stdout),
                String::from_utf8_lossy(&git_out.stderr),
                ok(ledger(&ws).args(["show", &format!("c{i}")]))
            );
            assert_eq!(snapshot(&w), before, "a refused revert wrote files");
            let journal_after = fs::read_dir(w.join(".ledger/journal"))
                .unwrap()
                .map(|e| fs::read(e.unwrap().path()).unwrap())
                .collect::<Vec<_>>();
            assert_eq!(journal_after, journal_before, "a refused revert appended");
            conflicts += 1;
        }
    }
    // The generated history must exercise both outcomes to mean anything.
    assert!(
        clean >= 5 && conflicts >= 1,
        "history too tame: {clean} clean, {conflicts} conflicts (seed {seed:#x})"
    );
}
