//! The shared test environment of the end-to-end tests (after jj's
//! `cli/tests/common/test_environment.rs`).
//!
//! A [`TestEnvironment`] owns one temporary directory holding a workspace and a HOME.
//! It runs the `ledger-e2e` binary (identical to `ledger`) as a real process with a
//! clean environment: nothing inherited but `PATH`, `HOME` pointing into the temporary
//! directory, and no `LEDGER_DIR`. Every run returns stdout, stderr and the exit code.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_VERIFY: i32 = 3;
pub const EXIT_CONFLICT: i32 = 4;
pub const EXIT_LOCKED: i32 = 5;

/// The binary under test.
pub fn ledger_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ledger-e2e")
}

/// What one run of the binary produced.
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmdline: String,
    pub stdout_bytes: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `128 + signal` when killed by a signal.
    pub code: i32,
}

impl fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }
}

impl CmdOutput {
    fn from_output(cmdline: String, out: std::process::Output) -> CmdOutput {
        let code = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        CmdOutput {
            cmdline,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code,
        }
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> CmdOutput {
        assert_eq!(self.code, code, "unexpected exit code: {self:?}");
        self
    }

    /// Asserts success.
    #[track_caller]
    pub fn success(self) -> CmdOutput {
        self.expect_code(EXIT_OK)
    }

    /// Asserts a non-zero exit.
    #[track_caller]
    pub fn failure(self) -> CmdOutput {
        assert_ne!(self.code, 0, "expected a failure: {self:?}");
        self
    }

    /// Each stdout line parsed as JSON.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line {l:?} is not JSON ({e}): {self:?}"))
            })
            .collect()
    }

    /// Stdout as exactly one JSON value.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        let mut v = self.json_lines();
        assert_eq!(v.len(), 1, "expected one JSON line: {self:?}");
        v.pop().unwrap()
    }
}

/// One temporary directory with a workspace and a HOME, and a way to run the binary.
pub struct TestEnvironment {
    _temp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    workspace: PathBuf,
    /// Run the binary as this (uid, gid) instead of as ourselves.
    run_as: Option<(u32, u32)>,
}

impl Default for TestEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnvironment {
    /// A fresh environment with an empty workspace (no ledger yet).
    pub fn new() -> TestEnvironment {
        Self::new_in(&std::env::temp_dir())
    }

    /// A fresh environment in a temporary directory under `base`.
    pub fn new_in(base: &Path) -> TestEnvironment {
        let temp = tempfile::Builder::new()
            .prefix("ledger-e2e-")
            .tempdir_in(base)
            .expect("create a temporary directory");
        let root = temp
            .path()
            .canonicalize()
            .expect("canonicalize the temporary directory");
        let home = root.join("home");
        let workspace = root.join("workspace");
        fs::create_dir(&home).unwrap();
        fs::create_dir(&workspace).unwrap();
        TestEnvironment {
            _temp: temp,
            root,
            home,
            workspace,
            run_as: None,
        }
    }

    /// A fresh environment whose workspace has been `ledger init`ed.
    pub fn init() -> TestEnvironment {
        let env = Self::new();
        env.run(["init"]).success();
        env
    }

    /// The temporary directory holding everything (outside the workspace).
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn home(&self) -> &Path {
        &self.home
    }
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }
    pub fn ledger_dir(&self) -> PathBuf {
        self.workspace.join(".ledger")
    }
    pub fn journal_dir(&self) -> PathBuf {
        self.ledger_dir().join("journal")
    }
    /// The first journal segment.
    pub fn segment0(&self) -> PathBuf {
        self.journal_dir().join("00000000000000000000.seg")
    }

    /// Runs every later command as this user (tests running as root use it to make
    /// permission bits bite). The caller hands the files over (see [`Self::chown_all`]).
    pub fn set_run_as(&mut self, uid: u32, gid: u32) {
        self.run_as = Some((uid, gid));
    }

    /// Gives everything in the temporary directory to `uid:gid`.
    pub fn chown_all(&self, uid: u32, gid: u32) {
        fn walk(p: &Path, uid: u32, gid: u32) {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
            let meta = fs::symlink_metadata(p).unwrap();
            if meta.is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    walk(&e.unwrap().path(), uid, gid);
                }
            }
        }
        walk(&self.root, uid, gid);
    }

    /// The binary as a command with a clean environment, run in `dir`.
    pub fn command<I, S>(&self, dir: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(ledger_bin());
        cmd.current_dir(dir)
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("USER", "e2e-user")
            .env("TZ", "UTC")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Runs the binary in `dir` and waits for it.
    pub fn run_in<I, S>(&self, dir: &Path, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_with(dir, args, &[])
    }

    /// Runs the binary in `dir` with extra environment variables.
    pub fn run_with<I, S>(&self, dir: &Path, args: I, vars: &[(&str, &OsStr)]) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = self.command(dir, &args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let cmdline = std::iter::once("ledger".to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", ledger_bin()));
        CmdOutput::from_output(cmdline, out)
    }

    /// Runs the binary in the workspace root.
    pub fn run<I, S>(&self, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_in(&self.workspace, args)
    }

    // ---- workspace files -------------------------------------------------------------

    /// The absolute path of a workspace-relative path.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.workspace.join(rel)
    }

    /// Writes a workspace file, creating parent directories.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap()
    }

    pub fn remove(&self, rel: impl AsRef<Path>) {
        fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn set_mode(&self, rel: impl AsRef<Path>, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn symlink(&self, target: impl AsRef<Path>, rel: impl AsRef<Path>) {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    // ---- ledger state ----------------------------------------------------------------

    /// Every journal segment file name with its bytes.
    pub fn journal_bytes(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(self.journal_dir()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".seg") {
                out.insert(name, fs::read(e.path()).unwrap());
            }
        }
        assert!(!out.is_empty(), "no journal segments");
        out
    }

    /// Records the workspace as agent `agent` and returns the new change ID.
    #[track_caller]
    pub fn record(&self, agent: &str, extra: &[&str]) -> String {
        let mut args = vec!["record", "--agent", agent];
        args.extend_from_slice(extra);
        let out = self.run(&args).success();
        let id = out.stdout.trim().to_string();
        assert!(!id.is_empty(), "record printed no change ID: {out:?}");
        assert!(!id.contains(char::is_whitespace), "{out:?}");
        id
    }

    /// `ledger log --json`, one value per change, newest first.
    #[track_caller]
    pub fn log_json(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["log", "--json"];
        args.extend_from_slice(extra);
        self.run(&args).success().json_lines()
    }

    /// Change IDs from `ledger log --json` with `extra` filters, newest first.
    #[track_caller]
    pub fn log_ids(&self, extra: &[&str]) -> Vec<String> {
        self.log_json(extra)
            .iter()
            .map(|v| v["change_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[track_caller]
    pub fn show_json(&self, change: &str) -> serde_json::Value {
        self.run(["show", change, "--json"]).success().json()
    }

    /// `ledger verify --json`, asserting it passed.
    #[track_caller]
    pub fn verify_ok(&self) -> serde_json::Value {
        let out = self.run(["verify", "--json"]).success();
        let v = out.json();
        assert_eq!(v["problems"], serde_json::json!([]), "{out:?}");
        v
    }

    /// The number of journal events, from `ledger verify --json`.
    #[track_caller]
    pub fn event_count(&self) -> u64 {
        self.verify_ok()["events"].as_u64().unwrap()
    }
}

/// A path made of raw bytes (for names that are not UTF-8).
pub fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// Plain BLAKE3 of `bytes` as 64 hex digits, as `b3sum` prints it.
pub fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Copies a directory tree (files, directories, symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &dst).unwrap();
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir` (relative path -> bytes), for before/after comparisons.
pub fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let rel = e.path().strip_prefix(base).unwrap().to_path_buf();
            if ft.is_dir() {
                out.insert(rel.join("."), Vec::new());
                walk(base, &e.path(), out);
            } else if ft.is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(e.path()).unwrap().into_os_string().into_vec(),
                );
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// A small seeded PRNG (SplitMix64): reproducible from the seed it prints.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from `var` when set, else from the clock; says which on stderr (shown
    /// by the test harness when the test fails).
    pub fn from_env(var: &str) -> (Rng, u64) {
        let seed = match std::env::var(var) {
            Ok(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("{var}={s:?} is not a u64")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("random seed {seed} (rerun with {var}={seed})");
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A memory-backed directory for temporary files when the machine has one
/// (`/dev/shm`), else the usual temporary directory. Tests that open a ledger thousands
/// of times use it so their run time is not the disk's fsync latency.
pub fn memory_temp_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let usable = tempfile::Builder::new()
        .prefix("ledger-probe-")
        .tempdir_in(shm)
        .is_ok();
    if usable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Whether this process can read a file whose permission bits forbid it (root, or
/// CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH): found out by trying.
pub fn permissions_do_not_bind_us() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("probe");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    fs::File::open(&p).is_ok()
}
