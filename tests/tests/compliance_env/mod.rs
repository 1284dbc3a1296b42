//! A workspace with a ledger, driven through the `ledger-e2e` binary, for the
//! compliance tests; and a runner for the independent Python export verifier.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_ledger-e2e");
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

pub struct Env {
    pub tmp: tempfile::TempDir,
    /// The workspace (holds `.ledger`).
    pub ws: PathBuf,
    /// A directory outside the workspace for keys, notes and exports.
    pub out: PathBuf,
}

/// What a command did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    /// A new workspace with `ledger init` done.
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let out = tmp.path().join("out");
        std::fs::create_dir(&ws).unwrap();
        std::fs::create_dir(&out).unwrap();
        let env = Env { tmp, ws, out };
        env.ok(&["init"]);
        env
    }

    /// Runs the ledger in the workspace.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.ws, args)
    }

    pub fn run_in(&self, dir: &Path, args: &[&str]) -> Run {
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("LEDGER_DIR")
            .env("USER", "auditor-test")
            .output()
            .expect("ledger-e2e runs")
            .into()
    }

    /// Runs and requires exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "ledger {args:?} failed\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Runs and requires `code`; returns stderr and stdout joined.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, code,
            "ledger {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        format!("{}{}", r.stderr, r.stdout)
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.ws.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, bytes).unwrap();
    }

    /// `ledger record --agent AGENT --change CHANGE [extra]`.
    pub fn record(&self, agent: &str, change: &str, extra: &[&str]) {
        let mut args = vec!["record", "--agent", agent, "--change", change];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// Makes a key pair `out/NAME` and `out/NAME.pub` named after the ledger.
    pub fn keygen(&self, name: &str) -> (String, String) {
        let key = self.p(name);
        self.ok(&["keygen", "--out", &key]);
        (key.clone(), format!("{key}.pub"))
    }

    /// Every file under `.ledger/journal` with its bytes: to show a command left the
    /// journal alone.
    pub fn journal(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let dir = self.ws.join(".ledger/journal");
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    }

    /// The journal's event count (the head seq + 1).
    pub fn events(&self) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(self.ok(&["verify", "--json", "--quick"]).trim()).unwrap();
        v["events"].as_u64().unwrap()
    }
}

/// Runs `tools/verify_export.py` on many files at once; per file, `Ok(())` or the line
/// it rejected (and why).
pub fn python_verify(files: &[PathBuf], pubkey: Option<&str>) -> Vec<Result<(), (u64, String)>> {
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{ROOT}/tools/verify_export.py"));
    if let Some(k) = pubkey {
        cmd.args(["--pubkey", k]);
    }
    cmd.args(files);
    let out = cmd
        .output()
        .expect("python3 runs (scripts/test.sh installs blake3 and PyNaCl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "verify_export.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len(), "one result per file: {stdout}");
    files
        .iter()
        .zip(lines)
        .map(|(f, l)| {
            let rest = l
                .strip_prefix(&format!("{}: ", f.display()))
                .unwrap_or_else(|| panic!("unexpected output line {l:?}"));
            if rest.starts_with("ok:") {
                return Ok(());
            }
            let (n, why) = rest
                .strip_prefix("line ")
                .and_then(|r| r.split_once(": "))
                .unwrap_or_else(|| panic!("unexpected output line {l:?}"));
            Err((n.parse().unwrap(), why.to_string()))
        })
        .collect()
}

/// The line number `ledger verify-export` named on stderr ("... line N: ...").
pub fn rejected_line(stderr: &str) -> u64 {
    let at = stderr
        .find(" line ")
        .unwrap_or_else(|| panic!("no line named in {stderr:?}"));
    stderr[at + 6..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no line number in {stderr:?}"))
}
