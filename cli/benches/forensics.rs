//! Forensics and compliance benchmarks: `ledger revert`, rebuilding the projections,
//! the state at a past point, `ledger replay` against `git archive`, export and
//! verify-export, inclusion proofs, and recording one large file. Each figure is measured
//! next to the alternative (git, or a read-and-hash floor) in the same run. Prints
//! markdown tables (stdout) and progress (stderr); never asserts on a timing.
//!
//! Ledgers of 10^4, 10^5 and 10^6 events are built through the library
//! (`Ledger::append` in batches of 4,096 realistic `Change` events, content committed to
//! the store, projection snapshots saved as the CLI saves them), one ledger grown from
//! size to size, with a workspace on disk equal to the head and a git repository with the
//! same history (one commit per `Change` event, fed to `git fast-import`). The real
//! `ledger` binary of this build (`CARGO_BIN_EXE_ledger`) runs the end-to-end figures.
//!
//! Run: `cargo bench -p ledger-cli --bench forensics`
//! Env: `LEDGER_BENCH_QUICK=1` small sizes (a smoke run of about a minute);
//!      `LEDGER_BENCH_DIR=/path` where the ledgers, workspaces and repositories go
//!      (default: the system temp dir; a real disk, not tmpfs);
//!      `LEDGER_BENCH_SIZES=10000,100000,1000000` ledger sizes (events);
//!      `LEDGER_BENCH_FILES=10000` files in the workspace of those ledgers;
//!      `LEDGER_BENCH_REPS=9` repetitions of the revert timings (others use fewer);
//!      `LEDGER_BENCH_REPLAY_FILES=10000,100000` tree sizes for replay vs git archive;
//!      `LEDGER_BENCH_BIG_MIB=1024` size of the one large file recorded;
//!      `LEDGER_BENCH_REINDEX_MAX=100000` largest ledger `ledger reindex` runs on (it
//!      rebuilds the sled indexes too, which took 322 s at 10^6 events, see BENCHMARKS.md);
//!      `LEDGER_BENCH_ONLY=proofs,history,replay,big` parts to run (default all);
//!      `LEDGER_BENCH_GIT=0` skip the git side of the history part;
//!      `LEDGER_BENCH_KEEP=1` keep the directory (to profile on it afterwards);
//!      `LEDGER_BENCH_CHILD=rebuild|fold|walk|walk_refs|verify|tree_at:SEQ` with
//!      `LEDGER_BENCH_CHILD_DIR=WORKSPACE`: run one library operation on a kept
//!      workspace's ledger and exit (for `perf record`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../ledger/benches/common/mod.rs"]
mod common;
use common::{cpus_model_kernel, fs_type, median, peak_rss_kib, read_file, table};

use ledger::merkle;
use ledger::{
    Actor, Body, Change, Check, Content, Hash, Ledger, Mode, NewEvent, Op, Pending, Precondition,
    ResourceChange, ResourceKey,
};
use ledger_cli::state;
use replay::{ContentError, ContentSource, Projection, Projections};

const LEDGER: &str = env!("CARGO_BIN_EXE_ledger");
/// Events per `Ledger::append` call while building (and per snapshot save).
const BATCH: usize = 4096;
/// Distinct content blobs that modifications pick from.
const POOL: usize = 4096;
/// `ledger verify-export` runs per export file (their median is reported).
const VERIFY_REPS: usize = 3;
/// Files the revert target changes.
const TARGET_FILES: usize = 20;
/// First event time: 2026-11-01T00:00:00Z.
const T0_US: i64 = 1_793_491_200_000_000;

// ---------------------------------------------------------------------------------------
// Configuration, formatting, processes

struct Config {
    quick: bool,
    base: PathBuf,
    sizes: Vec<u64>,
    files: usize,
    reps: usize,
    replay_files: Vec<usize>,
    big_mib: u64,
    reindex_max: u64,
    only: BTreeSet<String>,
    git: bool,
    keep: bool,
}

fn env_list<T: std::str::FromStr>(name: &str) -> Option<Vec<T>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))
            })
            .collect()
    })
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("LEDGER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let base = std::env::var_os("LEDGER_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Config {
            quick,
            base,
            sizes: env_list("LEDGER_BENCH_SIZES").unwrap_or(if quick {
                vec![2_000, 10_000]
            } else {
                vec![10_000, 100_000, 1_000_000]
            }),
            files: env_num("LEDGER_BENCH_FILES").unwrap_or(if quick { 1_000 } else { 10_000 }),
            reps: env_num("LEDGER_BENCH_REPS").unwrap_or(if quick { 5 } else { 9 }),
            replay_files: env_list("LEDGER_BENCH_REPLAY_FILES").unwrap_or(if quick {
                vec![1_000]
            } else {
                vec![10_000, 100_000]
            }),
            big_mib: env_num("LEDGER_BENCH_BIG_MIB").unwrap_or(if quick { 64 } else { 1024 }),
            reindex_max: env_num("LEDGER_BENCH_REINDEX_MAX").unwrap_or(100_000),
            only: std::env::var("LEDGER_BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            git: std::env::var("LEDGER_BENCH_GIT").map_or(true, |v| v != "0"),
            keep: std::env::var("LEDGER_BENCH_KEEP").is_ok_and(|v| !v.is_empty() && v != "0"),
        }
    }

    fn part(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.contains(name)
    }
}

fn thousands(r: f64) -> String {
    let s = (r.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(s: f64) -> String {
    if s < 0.01 {
        format!("{:.2}", s * 1e3)
    } else {
        format!("{:.1}", s * 1e3)
    }
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn log(msg: impl AsRef<str>) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!(
        "[{:02}:{:02}:{:02}] {}",
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60,
        msg.as_ref()
    );
}

fn machine(cfg: &Config) -> String {
    let (cpus, model, kernel) = cpus_model_kernel();
    let mem_gib = read_file("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb >> 20);
    let git = Command::new("git")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "no git".into());
    let load = read_file("/proc/loadavg");
    format!(
        "- machine: {cpus} CPUs, {model}, Linux {kernel}, {mem_gib} GiB RAM; load average at start {}\n- bench directory: {} on {}\n- {git}; ledger: this build's `ledger` binary (`cargo bench` profile: release with line tables)\n- mode: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        cfg.base.display(),
        fs_type(&cfg.base),
        if cfg.quick { "QUICK (small sizes; not for figures)" } else { "full" }
    )
}

/// git with its built-in defaults only, a fixed identity, no automatic gc.
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "gc.auto")
        .env("GIT_CONFIG_VALUE_0", "0")
        .env("GIT_CONFIG_KEY_1", "maintenance.auto")
        .env("GIT_CONFIG_VALUE_1", "false")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com");
    c
}

fn ledger_cmd(dir: &Path) -> Command {
    let mut c = Command::new(LEDGER);
    c.current_dir(dir)
        .env_remove("LEDGER_DIR")
        .env_remove("LEDGER_REVERT_SYNC");
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c` to completion (stdin closed, output captured), returns the wall seconds and
/// stdout; panics with its stderr if it fails.
fn run(c: &mut Command) -> (f64, String) {
    c.stdin(Stdio::null());
    let t = Instant::now();
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", describe(c)));
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{} failed ({}): {}{}",
        describe(c),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`] under `/usr/bin/time`: also the child's peak RSS (MiB), when available.
fn run_rss(c: &Command, scratch: &Path) -> (f64, Option<f64>, String) {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        let mut c2 = clone_cmd(c, None);
        let (s, out) = run(&mut c2);
        return (s, None, out);
    }
    let f = scratch.join("time.out");
    let mut c2 = clone_cmd(c, Some(&f));
    let (s, out) = run(&mut c2);
    let kb: Option<f64> = fs::read_to_string(&f)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
    let _ = fs::remove_file(&f);
    (s, kb.map(|k| k / 1024.0), out)
}

fn clone_cmd(c: &Command, time_out: Option<&Path>) -> Command {
    let mut n = match time_out {
        Some(f) => {
            let mut n = Command::new("/usr/bin/time");
            n.arg("-f").arg("%M").arg("-o").arg(f).arg(c.get_program());
            n
        }
        None => Command::new(c.get_program()),
    };
    n.args(c.get_args());
    if let Some(d) = c.get_current_dir() {
        n.current_dir(d);
    }
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => n.env(k, v),
            None => n.env_remove(k),
        };
    }
    n
}

fn sh(dir: &Path, script: &str) -> Command {
    let mut s = Command::new("sh");
    s.arg("-c").arg(script).current_dir(dir);
    for (k, v) in git(dir).get_envs() {
        if let Some(v) = v {
            s.env(k, v);
        }
    }
    s
}

/// (apparent bytes, bytes on disk) of everything under `p`.
fn du(p: &Path) -> (u64, u64) {
    let mut a = 0;
    let mut d = 0;
    if let Ok(m) = fs::symlink_metadata(p) {
        a += m.len();
        d += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    let (x, y) = du(&e.path());
                    a += x;
                    d += y;
                }
            }
        }
    }
    (a, d)
}

/// Moves a directory aside into `trash`, which is deleted only when the whole run is
/// over: on ext4, creating files within a minute or so of deleting many makes the inode
/// allocator skip the recently freed inodes one by one (`find_inode_bit` →
/// `recently_deleted`), which would slow whichever tool runs next.
fn discard(p: &Path, trash: &Path) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    fs::create_dir_all(trash).unwrap();
    fs::rename(p, trash.join(format!("d{n}"))).unwrap();
}

// ---------------------------------------------------------------------------------------
// Synthetic content and history

/// xorshift64*: deterministic, fast, good enough for picking files.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Source-like text, ~200 B to ~4 KB (mean ~1.1 KB), as `bench/record_vs_git.sh` makes.
fn blob_text(id: u64) -> Vec<u8> {
    let mut r = Rng::new(id + 17);
    let lines = 2 + (r.unit() * r.unit() * 50.0) as u64;
    let mut s = format!("// blob {id}\nfn f_{id}() {{\n");
    for k in 0..lines {
        s.push_str(&format!(
            "    let value = compute(input, options); // keep the result for the caller {}\n",
            k * (id + 1)
        ));
    }
    s.push_str("}\n");
    s.into_bytes()
}

fn file_path(f: usize) -> String {
    let d = f / 20;
    format!("src/m{:03}/s{:03}/file_{f:05}.rs", d / 50, d % 50)
}

fn write_file(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    if let Err(e) = fs::write(&p, bytes) {
        if e.kind() == std::io::ErrorKind::NotFound {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap();
        } else {
            panic!("{}: {e}", p.display());
        }
    }
}

/// The workspace as the generator sees it: every file's content by blob id.
struct Model {
    files: usize,
    paths: Vec<String>,
    cur: Vec<Option<usize>>,
    on_disk: Vec<Option<usize>>,
    live: Vec<usize>,
    live_pos: Vec<Option<usize>>,
    blobs: Vec<Content>,
    by_hash: BTreeMap<Hash, usize>,
    rng: Rng,
}

impl Model {
    fn new(files: usize) -> Model {
        // Blobs 0..files are the files' first versions; files..files+POOL the versions
        // later edits pick from.
        let n = files + POOL;
        let mut blobs = Vec::with_capacity(n);
        let mut by_hash = BTreeMap::new();
        for id in 0..n {
            let b = blob_text(id as u64);
            let h = Hash::of_content(&b);
            blobs.push(Content {
                hash: h,
                mode: Mode::Regular,
                size: b.len() as u64,
            });
            by_hash.insert(h, id);
        }
        Model {
            files,
            paths: Vec::new(),
            cur: Vec::new(),
            on_disk: Vec::new(),
            live: Vec::new(),
            live_pos: Vec::new(),
            blobs,
            by_hash,
            rng: Rng::new(7),
        }
    }

    fn add_blob(&mut self, bytes: &[u8]) -> usize {
        let h = Hash::of_content(bytes);
        if let Some(id) = self.by_hash.get(&h) {
            return *id;
        }
        self.blobs.push(Content {
            hash: h,
            mode: Mode::Regular,
            size: bytes.len() as u64,
        });
        self.by_hash.insert(h, self.blobs.len() - 1);
        self.blobs.len() - 1
    }

    fn bytes(&self, id: usize, extra: &BTreeMap<usize, Vec<u8>>) -> Vec<u8> {
        extra
            .get(&id)
            .cloned()
            .unwrap_or_else(|| blob_text(id as u64))
    }

    fn new_file(&mut self) -> usize {
        let f = self.paths.len();
        self.paths.push(file_path(f));
        self.cur.push(None);
        self.on_disk.push(None);
        self.live_pos.push(None);
        f
    }

    fn set(&mut self, f: usize, blob: Option<usize>) {
        match (self.cur[f].is_some(), blob.is_some()) {
            (false, true) => {
                self.live_pos[f] = Some(self.live.len());
                self.live.push(f);
            }
            (true, false) => {
                let p = self.live_pos[f].take().unwrap();
                self.live.swap_remove(p);
                if p < self.live.len() {
                    let moved = self.live[p];
                    self.live_pos[moved] = Some(p);
                }
            }
            _ => {}
        }
        self.cur[f] = blob;
    }

    fn pool_blob(&mut self, not: Option<usize>) -> usize {
        loop {
            let b = self.files + self.rng.below(POOL as u64) as usize;
            if Some(b) != not {
                return b;
            }
        }
    }

    fn change_id(seq: u64, time_us: i64) -> String {
        let dt = chrono::DateTime::from_timestamp(time_us / 1_000_000, 0).unwrap();
        format!("{}-{:06x}", dt.format("%Y%m%d-%H%M%S"), seq & 0xff_ffff)
    }

    /// The event that will get `seq`: the first events create the workspace, 20 files
    /// each; then 5% are checks of the previous change and the rest changes of 1 to 20
    /// files (60% one file), nearby files together, mostly edits, a few creates and deletes.
    fn event(&mut self, seq: u64, last_change: &mut String, git: Option<&mut GitFeed>) -> NewEvent {
        let time_us = T0_US + seq as i64 * 1_000_000;
        let change_id = Model::change_id(seq, time_us);
        let agent = format!("agent-{}", seq % 8);
        let mut meta = BTreeMap::new();
        meta.insert("tool".to_string(), "edit".to_string());
        let actor = Actor {
            agent: agent.clone(),
            principal: Some("alice@example.com".into()),
            role: None,
        };
        let created = self.paths.len();
        if created < self.files {
            let mut res = Vec::new();
            for _ in 0..20.min(self.files - created) {
                let f = self.new_file();
                let b = f; // first version of file f is blob f
                self.set(f, Some(b));
                res.push(ResourceChange {
                    key: ResourceKey::file(self.paths[f].as_bytes()),
                    op: Op::Create,
                    old: None,
                    new: Some(self.blobs[b]),
                });
            }
            res.sort_by(|a, b| a.key.cmp(&b.key));
            *last_change = change_id.clone();
            if let Some(g) = git {
                g.commit(seq, time_us, &agent, &res, self);
            }
            return NewEvent {
                time_us,
                actor,
                change_id,
                correlation_id: None,
                body: Body::Change(Change {
                    message: Some("initial import".into()),
                    reverts: None,
                    resources: res,
                }),
                meta,
            };
        }
        if self.rng.below(100) < 5 && !last_change.is_empty() {
            return NewEvent {
                time_us,
                actor: Actor {
                    agent: "ci".into(),
                    principal: None,
                    role: Some("check".into()),
                },
                change_id: last_change.clone(),
                correlation_id: None,
                body: Body::Check(Check {
                    name: "tests".into(),
                    level: "blocking".into(),
                    passed: self.rng.below(10) != 0,
                    detail: None,
                }),
                meta: BTreeMap::new(),
            };
        }
        let r = self.rng.below(100);
        let k = if r < 60 {
            1
        } else if r < 85 {
            2 + self.rng.below(4)
        } else if r < 97 {
            6 + self.rng.below(7)
        } else {
            13 + self.rng.below(8)
        } as usize;
        let anchor = self.live[self.rng.below(self.live.len() as u64) as usize];
        let mut chosen = BTreeSet::new();
        let mut tries = 0;
        while chosen.len() < k && tries < 200 {
            tries += 1;
            let f = if tries < 100 {
                let off = self.rng.below(81) as i64 - 40;
                (anchor as i64 + off).clamp(0, self.paths.len() as i64 - 1) as usize
            } else {
                self.live[self.rng.below(self.live.len() as u64) as usize]
            };
            if self.cur[f].is_some() {
                chosen.insert(f);
            }
        }
        let mut res = Vec::new();
        for f in chosen {
            let old = self.cur[f].unwrap();
            if self.rng.below(100) < 2 && self.live.len() > self.files * 95 / 100 {
                self.set(f, None);
                res.push(ResourceChange {
                    key: ResourceKey::file(self.paths[f].as_bytes()),
                    op: Op::Delete,
                    old: Some(self.blobs[old]),
                    new: None,
                });
            } else {
                let b = self.pool_blob(Some(old));
                self.set(f, Some(b));
                res.push(ResourceChange {
                    key: ResourceKey::file(self.paths[f].as_bytes()),
                    op: Op::Modify,
                    old: Some(self.blobs[old]),
                    new: Some(self.blobs[b]),
                });
            }
        }
        if self.rng.below(100) < 3 {
            let f = self.new_file();
            let b = self.pool_blob(None);
            self.set(f, Some(b));
            res.push(ResourceChange {
                key: ResourceKey::file(self.paths[f].as_bytes()),
                op: Op::Create,
                old: None,
                new: Some(self.blobs[b]),
            });
        }
        res.sort_by(|a, b| a.key.cmp(&b.key));
        *last_change = change_id.clone();
        if let Some(g) = git {
            g.commit(seq, time_us, &agent, &res, self);
        }
        NewEvent {
            time_us,
            actor,
            change_id,
            correlation_id: seq.is_multiple_of(3).then(|| format!("req-{}", seq / 3)),
            body: Body::Change(Change {
                message: seq
                    .is_multiple_of(2)
                    .then(|| format!("edit {} file(s)", res.len())),
                reverts: None,
                resources: res,
            }),
            meta,
        }
    }

    /// Writes what changed since the last sync into `root`.
    fn sync_disk(&mut self, root: &Path, extra: &BTreeMap<usize, Vec<u8>>) -> usize {
        let mut n = 0;
        for f in 0..self.paths.len() {
            if self.cur[f] == self.on_disk[f] {
                continue;
            }
            n += 1;
            match self.cur[f] {
                Some(b) => write_file(root, &self.paths[f], &self.bytes(b, extra)),
                None => {
                    // Like an editor or `git`: a directory left empty goes too.
                    let p = root.join(&self.paths[f]);
                    fs::remove_file(&p).unwrap();
                    let mut d = p.parent();
                    while let Some(dir) = d.filter(|d| *d != root) {
                        if fs::remove_dir(dir).is_err() {
                            break;
                        }
                        d = dir.parent();
                    }
                }
            }
            self.on_disk[f] = self.cur[f];
        }
        n
    }

    /// Takes the head tree as the truth (after reverts made through the CLI).
    fn adopt(&mut self, tree: &replay::Tree) {
        let by_path: BTreeMap<&str, usize> = self
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut next = vec![None; self.paths.len()];
        for (k, e) in tree.files() {
            let p = std::str::from_utf8(k.name.as_bytes()).unwrap();
            let f = by_path[p];
            next[f] = Some(self.by_hash[&e.content.hash]);
        }
        for (f, b) in next.into_iter().enumerate() {
            self.set(f, b);
            self.on_disk[f] = b;
        }
    }
}

/// The same history for git: a `git fast-import` process fed one commit per change.
struct GitFeed {
    child: std::process::Child,
    out: BufWriter<std::process::ChildStdin>,
    first: bool,
    continuing: bool,
}

impl GitFeed {
    fn start(repo: &Path, marks: &Path, blobs: &[Content], model_files: usize) -> GitFeed {
        let continuing = marks.exists();
        let mut c = git(repo);
        c.arg("fast-import")
            .arg("--quiet")
            .arg(format!("--export-marks={}", marks.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        if continuing {
            c.arg(format!("--import-marks={}", marks.display()));
        }
        let mut child = c.spawn().unwrap();
        let mut out = BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
        if !continuing {
            for id in 0..blobs.len().min(model_files + POOL) {
                let b = blob_text(id as u64);
                write!(out, "blob\nmark :{}\ndata {}\n", id + 1, b.len()).unwrap();
                out.write_all(&b).unwrap();
                out.write_all(b"\n").unwrap();
            }
        }
        GitFeed {
            child,
            out,
            first: true,
            continuing,
        }
    }

    fn commit(&mut self, seq: u64, time_us: i64, agent: &str, res: &[ResourceChange], m: &Model) {
        let msg = format!("seq {seq}");
        write!(
            self.out,
            "commit refs/heads/main\nmark :{}\ncommitter {agent} <{agent}@example.com> {} +0000\ndata {}\n{msg}\n",
            1_000_000_000 + seq,
            time_us / 1_000_000,
            msg.len()
        )
        .unwrap();
        if self.first && self.continuing {
            writeln!(self.out, "from refs/heads/main^0").unwrap();
        }
        self.first = false;
        for rc in res {
            let p = std::str::from_utf8(rc.key.name.as_bytes()).unwrap();
            match rc.new {
                Some(c) => writeln!(self.out, "M 100644 :{} {p}", m.by_hash[&c.hash] + 1).unwrap(),
                None => writeln!(self.out, "D {p}").unwrap(),
            }
        }
        self.out.write_all(b"\n").unwrap();
    }

    fn finish(self) {
        let GitFeed { mut child, out, .. } = self;
        drop(out.into_inner().unwrap());
        let st = child.wait().unwrap();
        assert!(st.success(), "git fast-import failed");
    }
}

/// seq -> commit id, from a fast-import marks file.
fn commit_marks(marks: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for line in BufReader::new(File::open(marks).unwrap()).lines() {
        let line = line.unwrap();
        let (m, sha) = line.split_once(' ').unwrap();
        let m: u64 = m.trim_start_matches(':').parse().unwrap();
        if m >= 1_000_000_000 {
            out.insert(m - 1_000_000_000, sha.to_string());
        }
    }
    out
}

/// The ledger's content store for the revert planner, as `ledger revert` reads it
/// (without the redaction lookup, which finds nothing here).
struct StoreSource<'a>(&'a Ledger);

impl ContentSource for StoreSource<'_> {
    fn read(&self, hash: &Hash) -> Result<Vec<u8>, ContentError> {
        self.0
            .store()
            .get(hash)
            .map_err(|_| ContentError::Missing { hash: *hash })
    }
    fn check(&self, hash: &Hash) -> Result<(), ContentError> {
        if self.0.store().contains(hash) {
            Ok(())
        } else {
            Err(ContentError::Missing { hash: *hash })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: inclusion proofs (library only)

fn proofs(cfg: &Config) {
    log("proofs: building Merkle trees");
    let sizes: Vec<u64> = if cfg.quick {
        vec![1_000, 10_000, 100_000]
    } else {
        vec![1_000, 10_000, 100_000, 1_000_000]
    };
    let mut rows = Vec::new();
    for &n in &sizes {
        let leaves: Vec<Hash> = (0..n)
            .map(|i| merkle::leaf_hash(&Hash::of_content(&i.to_le_bytes())))
            .collect();
        let t = Instant::now();
        let tree = merkle::Tree::from_leaves(leaves.clone());
        let build = t.elapsed().as_secs_f64();
        let root = tree.root();
        let mut rng = Rng::new(n);
        let mut idx: Vec<u64> = (0..2000).map(|_| rng.below(n)).collect();
        idx.push(0);
        idx.push(n - 1);
        let bound_hashes = 64 - (n - 1).leading_zeros() as u64; // ceil(log2 n)
        let mut max_len = 0;
        let mut sum_len = 0;
        let mut proofs = Vec::new();
        let mut gen = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            proofs = idx.iter().map(|&i| tree.proof(i, n).unwrap()).collect();
            gen.push(t.elapsed().as_secs_f64() / idx.len() as f64);
        }
        for p in &proofs {
            max_len = max_len.max(p.len() as u64);
            sum_len += p.len() as u64;
        }
        let mut check = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let mut ok = 0;
            for (i, p) in idx.iter().zip(&proofs) {
                if merkle::verify_inclusion(&leaves[*i as usize], *i, n, p, &root) {
                    ok += 1;
                }
            }
            check.push(t.elapsed().as_secs_f64() / idx.len() as f64);
            assert_eq!(ok, idx.len(), "every proof verifies");
        }
        // The O(n) stand-alone function, on a few leaves only (it rehashes the tree).
        let t = Instant::now();
        let reps = if n >= 100_000 { 2 } else { 20 };
        for &i in idx.iter().take(reps) {
            std::hint::black_box(merkle::inclusion_proof(&leaves, i));
        }
        let slow = t.elapsed().as_secs_f64() / reps as f64;
        // Binary size: 8-byte leaf index + 8-byte tree size + 32 bytes per hash.
        let bin_max = 16 + 32 * max_len;
        let bound = 16 + 32 * bound_hashes;
        let us = median(&check) * 1e6;
        rows.push(vec![
            thousands(n as f64),
            format!("{:.1}", sum_len as f64 / proofs.len() as f64),
            max_len.to_string(),
            bound_hashes.to_string(),
            bin_max.to_string(),
            bound.to_string(),
            format!("{:.2}", median(&gen) * 1e6),
            format!("{us:.2}"),
            format!("{:.0}", slow * 1e6),
            format!("{:.0}", build * 1e3),
            format!("size {}; check {}", met(bin_max <= bound), met(us < 50.0)),
        ]);
    }
    println!("### Inclusion proofs (library: `ledger::merkle`)\n");
    println!("Random leaves; 2,002 leaf indices per size (random, first, last); each timing the median of 5 passes over them. Binary size = 8-byte leaf index + 8-byte tree size + 32 bytes per hash (the fixed header is those 16 bytes); the bound is 16 + 32 × ceil(log2 n). `Tree::proof` is what `ledger export` calls per event of a filtered export; `verify_inclusion` is the check `verify-export` runs per line; `inclusion_proof(leaves, i)` is the stand-alone O(n) function.\n");
    table(
        &[
            "leaves n",
            "mean hashes",
            "max hashes",
            "ceil(log2 n)",
            "max proof bytes",
            "bound bytes",
            "Tree::proof µs",
            "verify_inclusion µs",
            "inclusion_proof(leaves) µs",
            "Tree::from_leaves ms",
            "<goal: bytes ≤ bound; check < 50 µs",
        ],
        &rows,
    );
}

// ---------------------------------------------------------------------------------------
// Part 2: history (revert, projections, state at a point, export) on growing ledgers

struct History<'a> {
    cfg: &'a Config,
    dir: PathBuf,
    ws: PathBuf,
    gws: PathBuf,
    marks: PathBuf,
    trash: PathBuf,
    model: Model,
    /// Bytes of blobs that are not `blob_text(id)` (the revert target's new versions).
    extra: BTreeMap<usize, Vec<u8>>,
    ledger: Option<Ledger>,
    tree: replay::Tree,
    head_snap: Option<u64>,
    last_change: String,
    key: PathBuf,
    rows: HistRows,
    smallest_revert: Option<f64>,
    smallest_size: u64,
    /// Copies of the workspace (files and ledger) as each size left it, for
    /// [`History::revert_side_by_side`].
    copies: Vec<(u64, PathBuf)>,
}

#[derive(Default)]
struct HistRows {
    build: Vec<Vec<String>>,
    revert: Vec<Vec<String>>,
    revert_lib: Vec<Vec<String>>,
    fold: Vec<Vec<String>>,
    points: Vec<Vec<String>>,
    export: Vec<Vec<String>>,
    verify: Vec<Vec<String>>,
    json_proofs: Vec<Vec<String>>,
    disk: Vec<Vec<String>>,
    revert_side: Vec<Vec<String>>,
}

impl<'a> History<'a> {
    fn new(cfg: &'a Config, dir: &Path) -> History<'a> {
        let ws = dir.join("ws");
        let gws = dir.join("git");
        fs::create_dir_all(&ws).unwrap();
        fs::create_dir_all(&gws).unwrap();
        let ledger = Ledger::init(
            &ws,
            Actor {
                agent: "ledger-init".into(),
                principal: Some("bench".into()),
                role: None,
            },
        )
        .unwrap();
        log(format!(
            "history: storing {} content blobs",
            cfg.files + POOL
        ));
        let model = Model::new(cfg.files);
        let mut pending = Pending::default();
        for id in 0..model.blobs.len() {
            ledger
                .store()
                .put_bytes(&blob_text(id as u64), &mut pending)
                .unwrap();
        }
        ledger.commit_content(pending).unwrap();
        if cfg.git {
            run(git(&gws).args(["init", "-q", "-b", "main"]));
        }
        let key = dir.join("keys").join("bench.key");
        fs::create_dir_all(key.parent().unwrap()).unwrap();
        fs::set_permissions(key.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
        run(ledger_cmd(dir)
            .args(["keygen", "--name", "bench", "--out"])
            .arg(&key));
        let tree = {
            let mut t = replay::Tree::new();
            ledger
                .scan(0, &mut |r| {
                    t.apply(&r.event).unwrap();
                    Ok(())
                })
                .unwrap();
            t
        };
        History {
            cfg,
            dir: dir.to_path_buf(),
            ws,
            gws,
            marks: dir.join("git-marks"),
            trash: dir.parent().unwrap().join("trash"),
            model,
            extra: BTreeMap::new(),
            ledger: Some(ledger),
            tree,
            head_snap: None,
            last_change: String::new(),
            key,
            rows: HistRows::default(),
            smallest_revert: None,
            smallest_size: 0,
            copies: Vec::new(),
        }
    }

    fn ledger(&mut self) -> &Ledger {
        self.open();
        self.ledger.as_ref().unwrap()
    }

    fn open(&mut self) {
        if self.ledger.is_none() {
            let (l, rep) =
                Ledger::open_dir(&self.ws.join(".ledger"), &ledger::OpenOptions::default())
                    .unwrap();
            assert!(rep.reindexed.is_none(), "unexpected reindex: {rep:?}");
            self.ledger = Some(l);
        }
    }

    fn close(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.flush().unwrap();
        }
    }

    fn head(&mut self) -> u64 {
        self.ledger().head().unwrap().seq
    }

    /// Appends events until the journal holds `target` events.
    fn grow(&mut self, target: u64) {
        let start = self.head() + 1;
        if start >= target {
            return;
        }
        log(format!("history: appending events {start}..{target}"));
        let mut feed = self
            .cfg
            .git
            .then(|| GitFeed::start(&self.gws, &self.marks, &self.model.blobs, self.cfg.files));
        let t = Instant::now();
        let mut append_s = 0.0;
        let mut snap_s = 0.0;
        let mut next = start;
        while next < target {
            let n = (target - next).min(BATCH as u64);
            let events: Vec<NewEvent> = (next..next + n)
                .map(|seq| self.model.event(seq, &mut self.last_change, feed.as_mut()))
                .collect();
            let ta = Instant::now();
            let l = self.ledger.as_ref().unwrap();
            let recs = l.append(events, Precondition::None).unwrap();
            append_s += ta.elapsed().as_secs_f64();
            assert_eq!(recs[0].event.seq, next);
            for r in &recs {
                self.tree.apply(&r.event).unwrap();
            }
            // What `ledger record` does after each append (append_change).
            let ts = Instant::now();
            state::save_snapshots(l, &self.tree, self.head_snap).unwrap();
            snap_s += ts.elapsed().as_secs_f64();
            self.head_snap = self.tree.seq();
            next += n;
            if (next - start) % (BATCH as u64 * 25) < BATCH as u64 {
                log(format!(
                    "  {next} events, {:.0} events/s",
                    (next - start) as f64 / t.elapsed().as_secs_f64()
                ));
            }
        }
        let total = t.elapsed().as_secs_f64();
        let gt = Instant::now();
        if let Some(f) = feed {
            f.finish();
        }
        let git_wait = gt.elapsed().as_secs_f64();
        self.rows.build.push(vec![
            thousands(target as f64),
            thousands((target - start) as f64),
            format!("{:.1}", total),
            thousands((target - start) as f64 / append_s),
            format!("{:.1}", snap_s),
            format!("{:.1}", git_wait),
            ((peak_rss_kib() as f64 / 1024.0) as u64).to_string(),
        ]);
    }

    /// Workspace and git checkout equal to the head; stat cache warm.
    fn settle(&mut self) {
        self.close();
        let n = self.model.sync_disk(&self.ws, &self.extra);
        log(format!(
            "history: wrote {n} changed files into the workspace"
        ));
        if self.cfg.git {
            run(git(&self.gws).args(["reset", "-q", "--hard", "main"]));
        }
        // Let every file age past the racy-timestamp windows, then warm both tools.
        std::thread::sleep(Duration::from_millis(2100));
        let (_, out) = run(ledger_cmd(&self.ws).args(["record", "--agent", "bench"]));
        assert!(
            out.contains("Nothing to record"),
            "the workspace does not match the ledger's head: {out}"
        );
        // The library appends above fed the flat indexes only; the first command that
        // needs sled (a filter by agent) builds it from the journal. Do it here, so the
        // export timings below do not include it.
        let (secs, _) = run(ledger_cmd(&self.ws).args(["log", "--agent", "bench", "-n", "1"]));
        log(format!("history: sled index brought level in {secs:.1} s"));
        if self.cfg.git {
            run(git(&self.gws).args(["update-index", "-q", "--refresh"]));
            let (_, st) = run(git(&self.gws).args(["status", "--porcelain"]));
            assert!(st.is_empty(), "git checkout not clean: {st}");
            let (_, d) = run(Command::new("diff")
                .args(["-rq", "--exclude=.git", "--exclude=.ledger"])
                .arg(&self.ws)
                .arg(&self.gws));
            assert!(d.is_empty(), "ledger and git workspaces differ: {d}");
        }
    }

    /// Goal 1: `ledger revert` of a 20-file change, end to end and in parts, vs git.
    fn revert(&mut self, size: u64) {
        log("history: revert");
        let reps = self.cfg.reps;
        // The target: 20 neighbouring live files get new content, recorded by the CLI.
        let mut live = self.model.live.clone();
        live.sort();
        let start = self.model.rng.below((live.len() - TARGET_FILES) as u64) as usize;
        let files: Vec<usize> = live[start..start + TARGET_FILES].to_vec();
        for &f in &files {
            let mut bytes = blob_text(f as u64 + 7_000_000 + size);
            bytes.extend_from_slice(format!("// target edit at {size}\n").as_bytes());
            let b = self.model.add_blob(&bytes);
            write_file(&self.ws, &self.model.paths[f], &bytes);
            if self.cfg.git {
                write_file(&self.gws, &self.model.paths[f], &bytes);
            }
            self.extra.insert(b, bytes);
        }
        let (_, out) =
            run(ledger_cmd(&self.ws).args(["record", "--agent", "bench", "-m", "target"]));
        let mut id = out.lines().next().unwrap().trim().to_string();
        if self.cfg.git {
            run(git(&self.gws).args(["commit", "-qam", "target"]));
        }
        std::thread::sleep(Duration::from_millis(2100));
        let mut t_ver = Vec::new();
        // Each side starts after `sync` (not timed): neither pays for the other's
        // writeback, and the dirty page cache a revert sees (which decides how it
        // syncs, see the README) is its own.
        let sync = || {
            run(&mut Command::new("sync"));
        };
        let ledger_side = |ws: &Path, id: &str, t: &mut [Vec<f64>; 4]| -> String {
            sync();
            let (s, _) = run(ledger_cmd(ws).args(["show", id]));
            t[2].push(s);
            let (s, out) = run(ledger_cmd(ws).args(["revert", id, "--dry-run"]));
            assert!(
                out.contains(&format!("would change {TARGET_FILES} file(s)")),
                "{out}"
            );
            t[1].push(s);
            let (s, out) = run(ledger_cmd(ws).args(["revert", id, "--agent", "bench"]));
            t[0].push(s);
            let id = out.lines().next().unwrap().trim().to_string();
            // The same with one fsync per file, as when more is dirty.
            sync();
            let (s, out) = run(ledger_cmd(ws)
                .args(["revert", &id, "--agent", "bench"])
                .env("LEDGER_REVERT_SYNC", "files"));
            t[3].push(s);
            out.lines().next().unwrap().trim().to_string()
        };
        let git_side = |gws: &Path, t: &mut [Vec<f64>; 2]| {
            sync();
            let (s, _) = run(git(gws).args(["revert", "--no-commit", "HEAD"]));
            t[0].push(s);
            let (s, _) = run(git(gws).args(["commit", "-qm", "revert"]));
            t[1].push(s);
        };
        let mut tl: [Vec<f64>; 4] = Default::default();
        let mut tg: [Vec<f64>; 2] = Default::default();
        for r in 0..reps + 1 {
            let (s, _) = run(Command::new(LEDGER).arg("--version"));
            t_ver.push(s);
            if r % 2 == 0 || !self.cfg.git {
                id = ledger_side(&self.ws, &id, &mut tl);
                if self.cfg.git {
                    git_side(&self.gws, &mut tg);
                }
            } else {
                git_side(&self.gws, &mut tg);
                id = ledger_side(&self.ws, &id, &mut tl);
            }
            if r == 0 {
                // The first round warms caches; it is not counted.
                tl.iter_mut().chain(tg.iter_mut()).for_each(Vec::clear);
                t_ver.clear();
            }
        }
        let [t_rev, t_dry, t_show, t_rev_files] = tl;
        let [t_grev, t_gcommit] = tg;
        let rev = median(&t_rev);
        let base = *self.smallest_revert.get_or_insert(rev);
        if self.smallest_size == 0 {
            self.smallest_size = size;
        }
        let (grev, gcom) = (median(&t_grev), median(&t_gcommit));
        let git_cols = if self.cfg.git {
            vec![
                ms(grev),
                ms(gcom),
                ratio(rev, grev),
                ratio(rev, grev + gcom),
            ]
        } else {
            vec!["-".into(); 4]
        };
        let mut row = vec![
            thousands(size as f64),
            thousands(self.model.live.len() as f64),
            ms(rev),
            ms(median(&t_rev_files)),
            ms(median(&t_dry)),
            ms(median(&t_show)),
            ms(median(&t_ver)),
        ];
        row.extend(git_cols);
        row.push(format!(
            "{} ({})",
            ratio(rev, base),
            if self.smallest_size == size {
                "-".to_string()
            } else {
                format!("{} ≤ 1.2", met(rev / base <= 1.2))
            }
        ));
        row.push(format!("{} (≤ 10 ms)", met(rev <= 0.010)));
        self.rows.revert.push(row);

        // The library parts, in this process: open, head tree, plan (decision only).
        let t = Instant::now();
        self.open();
        let open_s = t.elapsed().as_secs_f64();
        let mut t_head = Vec::new();
        let mut t_plan = Vec::new();
        let mut t_change = Vec::new();
        let mut snap = None;
        for _ in 0..5 {
            let l = self.ledger.as_ref().unwrap();
            let t = Instant::now();
            let recs = l.change(&id).unwrap();
            let mut changes = replay::Changes::new();
            for r in &recs {
                changes.apply(&r.event).unwrap();
            }
            t_change.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let (tree, used) = state::head_tree(l).unwrap();
            t_head.push(t.elapsed().as_secs_f64());
            snap = used;
            let t = Instant::now();
            let target = &recs[0].event;
            let mut on_disk = BTreeMap::new();
            for rc in target.resources() {
                let p = self
                    .ws
                    .join(std::str::from_utf8(rc.key.name.as_bytes()).unwrap());
                let c = fs::read(&p).ok().map(|b| Content {
                    hash: Hash::of_content(&b),
                    mode: Mode::Regular,
                    size: b.len() as u64,
                });
                on_disk.insert(rc.key.clone(), c);
            }
            let plan = replay::plan_revert(
                target,
                &changes,
                &tree,
                &on_disk,
                |_| Vec::new(),
                &StoreSource(l),
            )
            .unwrap();
            t_plan.push(t.elapsed().as_secs_f64());
            assert_eq!(plan.actions.len(), TARGET_FILES);
        }
        let head = l_head(self.ledger.as_ref().unwrap());
        self.rows.revert_lib.push(vec![
            thousands(size as f64),
            ms(open_s),
            ms(median(&t_change)),
            ms(median(&t_head)),
            format!(
                "{}",
                snap.map_or("none".to_string(), |s| format!("{} events back", head - s))
            ),
            ms(median(&t_plan)),
            ms(median(&t_change) + median(&t_head) + median(&t_plan)),
        ]);
    }

    /// Keeps a copy of the workspace as it is now (after [`History::revert`] at `size`),
    /// for [`History::revert_side_by_side`].
    fn keep_copy(&mut self, size: u64) {
        self.close();
        let to = self.dir.join(format!("ws-at-{size}"));
        let _ = fs::remove_dir_all(&to);
        run(Command::new("cp").arg("-a").arg(&self.ws).arg(&to));
        self.copies.push((size, to));
    }

    /// Goal 1 with the sizes side by side: the same revert on the workspace of every
    /// size (the copies [`History::keep_copy`] made, and the workspace itself for the
    /// last size), one size after the other in each round, each after `sync`, so that
    /// every size is measured in the same minutes. Each revert reverts the last change
    /// (the revert before it).
    fn revert_side_by_side(&mut self, last: u64) {
        log("history: revert, sizes side by side");
        self.close();
        let mut wss: Vec<(u64, PathBuf)> = self.copies.clone();
        wss.push((last, self.ws.clone()));
        let rounds = 2 * self.cfg.reps + 1;
        let mut t: Vec<Vec<f64>> = vec![Vec::new(); wss.len()];
        for r in 0..rounds + 1 {
            // Each round starts at another size.
            for k in 0..wss.len() {
                let i = (r + k) % wss.len();
                let ws = &wss[i].1;
                let (_, out) = run(ledger_cmd(ws).args(["log", "-n", "1", "--json"]));
                let v: serde_json::Value =
                    serde_json::from_str(out.lines().next().unwrap()).unwrap();
                let id = v["change_id"].as_str().unwrap().to_string();
                run(&mut Command::new("sync"));
                let (s, _) = run(ledger_cmd(ws).args(["revert", &id, "--agent", "bench"]));
                if r > 0 {
                    t[i].push(s);
                }
            }
        }
        let base = median(&t[0]);
        for (i, (size, _)) in wss.iter().enumerate() {
            let m = median(&t[i]);
            self.rows.revert_side.push(vec![
                thousands(*size as f64),
                ms(m),
                ms(t[i].iter().cloned().fold(f64::INFINITY, f64::min)),
                format!(
                    "{} ({})",
                    ratio(m, base),
                    if i == 0 {
                        "-".to_string()
                    } else {
                        format!("{} ≤ 1.2", met(m / base <= 1.2))
                    }
                ),
                format!("{} (≤ 10 ms)", met(m <= 0.010)),
            ]);
        }
        for (_, to) in &self.copies {
            let _ = fs::remove_dir_all(to);
        }
    }

    /// Goal 2: rebuilding projections from the journal.
    fn fold(&mut self, size: u64) {
        log("history: projections");
        let reps = if size >= 1_000_000 { 3 } else { 5 };
        let mut walk = Vec::new();
        let mut walk_refs = Vec::new();
        let mut scan_tree = Vec::new();
        let mut scan_all = Vec::new();
        let mut mem_tree = Vec::new();
        let mut mem_all = Vec::new();
        let mut rebuild = Vec::new();
        let mut events = 0u64;
        let mut snaps = 0;
        for rep in 0..reps {
            let l = self.ledger();
            let t = Instant::now();
            let mut n = 0u64;
            l.scan(0, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            walk.push(t.elapsed().as_secs_f64());
            events = n;
            let t = Instant::now();
            l.scan_refs(0, &mut |_| Ok(())).unwrap();
            walk_refs.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut tree = replay::TreeFold::new(replay::Tree::new());
            l.scan_refs(0, &mut |r| {
                tree.apply(&r.event).unwrap();
                Ok(())
            })
            .unwrap();
            scan_tree.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut all = Projections::new();
            l.scan(0, &mut |r| {
                all.apply(&r.event).unwrap();
                Ok(())
            })
            .unwrap();
            scan_all.push(t.elapsed().as_secs_f64());
            drop(all);
            // The fold alone: events decoded into memory in chunks, only the fold timed.
            let mut chunk: Vec<ledger::Event> = Vec::with_capacity(65536);
            let mut tt = 0.0;
            let mut ta = 0.0;
            let mut tree = replay::Tree::new();
            let mut all = Projections::new();
            let mut fold_chunk = |chunk: &mut Vec<ledger::Event>| {
                let t = Instant::now();
                for e in chunk.iter() {
                    tree.apply(e).unwrap();
                }
                tt += t.elapsed().as_secs_f64();
                let t = Instant::now();
                for e in chunk.iter() {
                    all.apply(e).unwrap();
                }
                ta += t.elapsed().as_secs_f64();
                chunk.clear();
            };
            l.scan(0, &mut |r| {
                chunk.push(r.event.clone());
                if chunk.len() == 65536 {
                    fold_chunk(&mut chunk);
                }
                Ok(())
            })
            .unwrap();
            fold_chunk(&mut chunk);
            mem_tree.push(tt);
            mem_all.push(ta);
            if rep < 3 {
                // As `ledger reindex` runs it: after the indexes are cleared, snapshots too.
                drop_snapshots(l);
                let t = Instant::now();
                let rebuilt = state::rebuild_snapshots(l).unwrap();
                rebuild.push(t.elapsed().as_secs_f64());
                assert_eq!(rebuilt.seq, l.head().map(|h| h.seq));
                // Count the kept snapshots it stored, newest to oldest.
                snaps = 0;
                let mut at = l.head().map(|h| h.seq);
                while let Some(s) = at.and_then(|s| {
                    l.index_unsynced()
                        .snapshot_at_or_before("tree", s)
                        .unwrap()
                        .map(|x| x.0)
                }) {
                    snaps += 1;
                    at = s.checked_sub(1);
                }
            }
        }
        let (journal_bytes, _) = du(&self.ws.join(".ledger/journal"));
        let rate = |v: &[f64]| events as f64 / median(v);
        // `ledger reindex` end to end (sled indexes too), only where it takes seconds.
        let mut reindex = "-".to_string();
        if size <= self.cfg.reindex_max {
            self.close();
            let (s, _) = run(ledger_cmd(&self.ws).args(["reindex"]));
            reindex = format!("{} ({:.1} s)", thousands(events as f64 / s), s);
        }
        let best = rate(&rebuild);
        self.rows.fold.push(vec![
            thousands(events as f64),
            mb(journal_bytes),
            thousands(rate(&walk)),
            thousands(rate(&walk_refs)),
            thousands(rate(&scan_tree)),
            thousands(rate(&scan_all)),
            thousands(rate(&mem_tree)),
            thousands(rate(&mem_all)),
            format!(
                "{} ({:.2} s, {snaps} snapshots)",
                thousands(best),
                median(&rebuild)
            ),
            reindex,
            format!("{} (≥ 1,000,000/s)", met(best >= 1e6)),
        ]);
    }

    /// Goal 3 (state at past points) and the deep-history half of goal 4.
    fn points(&mut self, size: u64) {
        log("history: state at past points");
        self.open();
        let l = self.ledger.as_ref().unwrap();
        let head = l.head().unwrap().seq;
        let kept = |s: u64| {
            l.index_unsynced()
                .snapshot_at_or_before("tree", s)
                .unwrap()
                .map(|x| x.0)
        };
        // Kept snapshots sit at most `state::keep_interval` events apart (rebuild_snapshots
        // stores one at seq 0, then one per interval); take one in the middle and the next.
        let mid = kept(head / 2).unwrap_or(0);
        let mut next = mid + 1;
        while kept(next) == Some(mid) && next < head {
            next += 1;
        }
        let mut pts: Vec<(&str, u64)> = vec![
            ("early: seq 2,000", 2_000.min(head / 4)),
            ("middle: just after a kept snapshot", mid + 1),
        ];
        if next < head {
            pts.push(("middle: just before the next kept snapshot", next - 1));
        }
        pts.push(("late: head - 100", head - 100));
        pts.push(("head", head));
        pts.dedup_by_key(|p| p.1);
        let mut lib = Vec::new();
        for (_, seq) in &pts {
            let mut v = Vec::new();
            let mut used = None;
            let mut files = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let (tree, u) = state::tree_at(l, *seq).unwrap();
                v.push(t.elapsed().as_secs_f64());
                used = u;
                files = tree.files().count();
            }
            lib.push((median(&v), used, files));
        }
        self.close();
        let marks = if self.cfg.git {
            commit_marks(&self.marks)
        } else {
            BTreeMap::new()
        };
        let reps = 3;
        for (i, (name, seq)) in pts.iter().enumerate() {
            let mut t_l = Vec::new();
            let mut t_g = Vec::new();
            let commit = if *seq == head {
                "HEAD".to_string()
            } else {
                marks
                    .range(..=*seq)
                    .next_back()
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default()
            };
            // End to end only at the worst point (most events after a snapshot) and the
            // head: each run writes the whole tree, and file creation is the slow part.
            let e2e = name.starts_with("middle: just before") || *name == "head";
            for r in 0..if e2e { reps } else { 0 } {
                let out_l = self.dir.join("replay-l");
                let out_g = self.dir.join("replay-g");
                let ledger_side = |t_l: &mut Vec<f64>| {
                    let (s, _) = run(ledger_cmd(&self.ws)
                        .args(["replay", "--at", &seq.to_string(), "--out"])
                        .arg(&out_l));
                    t_l.push(s);
                };
                let git_side = |t_g: &mut Vec<f64>| {
                    fs::create_dir_all(&out_g).unwrap();
                    let (s, _) = run(&mut sh(
                        &self.gws,
                        &format!("git archive {commit} | tar -x -C {}", out_g.display()),
                    ));
                    t_g.push(s);
                };
                if r % 2 == 0 || !self.cfg.git {
                    ledger_side(&mut t_l);
                    if self.cfg.git && !commit.is_empty() {
                        git_side(&mut t_g);
                    }
                } else {
                    if !commit.is_empty() {
                        git_side(&mut t_g);
                    }
                    ledger_side(&mut t_l);
                }
                if r == 0 && self.cfg.git && !commit.is_empty() {
                    let (_, d) = run(Command::new("diff").arg("-rq").arg(&out_l).arg(&out_g));
                    assert!(
                        d.is_empty(),
                        "replay at {seq} differs from git archive: {d}"
                    );
                }
                discard(&out_l, &self.trash);
                if out_g.exists() {
                    discard(&out_g, &self.trash);
                }
            }
            let (lib_s, used, files) = lib[i];
            let folded = match used {
                Some(u) => seq - u,
                None => seq + 1,
            };
            let (rl, rg) = (median(&t_l), median(&t_g));
            self.rows.points.push(vec![
                thousands(size as f64),
                name.to_string(),
                thousands(*seq as f64),
                used.map_or("none".into(), |u| thousands(u as f64)),
                thousands(folded as f64),
                thousands(files as f64),
                ms(lib_s),
                if t_l.is_empty() { "-".into() } else { ms(rl) },
                if t_g.is_empty() { "-".into() } else { ms(rg) },
                if t_g.is_empty() {
                    "-".into()
                } else {
                    ratio(rl, rg)
                },
                format!(
                    "{} (≤ 1 s)",
                    met(lib_s <= 1.0 && (t_l.is_empty() || rl <= 1.0))
                ),
            ]);
        }
    }

    /// Goal 5: export and verify-export.
    fn export(&mut self, size: u64) {
        log("history: export");
        self.close();
        let reps_for = |kind: usize| match (size >= 1_000_000, kind) {
            (false, _) => 3,
            (true, 0) => 2,
            (true, _) => 1,
        };
        let file = self.dir.join("export.jsonl");
        let key = self.key.display().to_string();
        let pubkey = format!("{key}.pub");
        let scratch = self.dir.clone();
        let mut kinds: Vec<(&str, Vec<String>)> = vec![
            ("unfiltered", vec![]),
            ("unfiltered, --sign", vec!["--sign".into(), key.clone()]),
            (
                "--agent agent-3 (1/8 of events, proofs)",
                vec!["--agent".into(), "agent-3".into()],
            ),
        ];
        // What opening the ledger alone costs in memory: `ledger log -n 1`.
        let mut c = ledger_cmd(&self.ws);
        c.args(["log", "-n", "1"]);
        let (open_s, open_rss, _) = run_rss(&c, &scratch);
        let open_rss = open_rss.map_or("n/a".into(), |r| format!("{r:.0}"));
        let mut floor = Vec::new();
        for (k, (kind, args)) in kinds.iter_mut().enumerate() {
            let reps = reps_for(k);
            let mut t_e = Vec::new();
            let mut rss_e = Vec::new();
            let mut t_v = Vec::new();
            let mut rss_v = Vec::new();
            let mut bytes = 0;
            let mut lines = 0u64;
            for _ in 0..reps {
                let _ = fs::remove_file(&file);
                let mut c = ledger_cmd(&self.ws);
                c.args(["export", "--out"]).arg(&file).args(args.iter());
                let (s, rss, _) = run_rss(&c, &scratch);
                t_e.push(s);
                rss_e.extend(rss);
                bytes = fs::metadata(&file).unwrap().len();
                // The export's pages are written out first, so the timing is of the
                // check and not of the kernel's writeback of the file just written.
                run(&mut Command::new("sync"));
                for _ in 0..VERIFY_REPS {
                    let mut c = ledger_cmd(&self.ws);
                    c.arg("verify-export").arg(&file);
                    if args.first().is_some_and(|a| a == "--sign") {
                        c.args(["--pubkey", &pubkey]);
                    }
                    let (s, rss, out) = run_rss(&c, &scratch);
                    assert!(out.starts_with("ok:"), "{out}");
                    t_v.push(s);
                    rss_v.extend(rss);
                }
                if kind.starts_with("unfiltered") && args.is_empty() {
                    let (s, _) = run(Command::new("sha256sum").arg(&file));
                    floor.push(s);
                }
            }
            let f = File::open(&file).unwrap();
            let mut proof_bytes = Vec::new();
            let mut tree_size = 0;
            for line in BufReader::new(f).lines() {
                let line = line.unwrap();
                lines += 1;
                if line.contains("\"proof\"") {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    if let Some(p) = v.get("proof") {
                        tree_size = p["tree_size"].as_u64().unwrap();
                        proof_bytes.push((
                            serde_json::to_string(p).unwrap().len(),
                            p["hashes"].as_array().unwrap().len(),
                        ));
                    }
                }
            }
            let event_lines = lines - 2;
            let e = median(&t_e);
            let v = median(&t_v);
            let max_rss = |r: &[f64]| {
                r.iter()
                    .cloned()
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            };
            let rss = max_rss(&rss_e);
            let vrss = max_rss(&rss_v);
            self.rows.export.push(vec![
                thousands(size as f64),
                kind.to_string(),
                thousands(event_lines as f64),
                mb(bytes),
                format!("{e:.2}"),
                rss.map_or("n/a".into(), |r| format!("{r:.0}")),
                format!("{open_rss} ({open_s:.2} s)"),
                format!(
                    "{} (≤ 10 s), {} (< 100 MiB)",
                    met(e <= 10.0),
                    rss.map_or("n/a", |r| met(r < 100.0))
                ),
            ]);
            self.rows.verify.push(vec![
                thousands(size as f64),
                kind.to_string(),
                format!("{v:.2}"),
                thousands(event_lines as f64 / v),
                vrss.map_or("n/a".into(), |r| format!("{r:.0}")),
                if floor.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2} ({:.1}×)", median(&floor), v / median(&floor))
                },
                format!("{} (≥ 500,000/s)", met(event_lines as f64 / v >= 500_000.0)),
            ]);
            if !proof_bytes.is_empty() {
                let n = proof_bytes.len() as f64;
                let mean = proof_bytes.iter().map(|p| p.0).sum::<usize>() as f64 / n;
                let max = proof_bytes.iter().map(|p| p.0).max().unwrap();
                let maxh = proof_bytes.iter().map(|p| p.1).max().unwrap();
                let bound_h = 64 - (tree_size - 1).leading_zeros() as u64;
                self.rows.json_proofs.push(vec![
                    thousands(tree_size as f64),
                    thousands(n),
                    maxh.to_string(),
                    bound_h.to_string(),
                    format!("{mean:.0}"),
                    max.to_string(),
                    (16 + 32 * bound_h).to_string(),
                    format!("{:.2}", max as f64 / (16 + 32 * bound_h) as f64),
                ]);
            }
            floor.clear();
        }
        let _ = fs::remove_file(&file);
        // The alternative: git's own full-history dump with file changes.
        if self.cfg.git {
            let (s, _) = run(&mut sh(
                &self.gws,
                "git log --raw --no-abbrev --format='%H %an %at %s' > /dev/null",
            ));
            self.rows.export.push(vec![
                thousands(size as f64),
                "(alternative) `git log --raw --no-abbrev` of the same history".into(),
                "-".into(),
                "-".into(),
                format!("{s:.2}"),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        let (la, ld) = du(&self.ws.join(".ledger"));
        let (ja, _) = du(&self.ws.join(".ledger/journal"));
        let (ia, idisk) = du(&self.ws.join(".ledger/index"));
        let (_, od) = du(&self.ws.join(".ledger/objects"));
        let (_, gd) = if self.cfg.git {
            du(&self.gws.join(".git"))
        } else {
            (0, 0)
        };
        self.rows.disk.push(vec![
            thousands(size as f64),
            mb(ja),
            mb(ia),
            mb(idisk),
            mb(od),
            mb(la),
            mb(ld),
            format!("{:.0}", ld as f64 / size as f64),
            if self.cfg.git { mb(gd) } else { "-".into() },
        ]);
    }
}

fn l_head(l: &Ledger) -> u64 {
    l.head().unwrap().seq
}

fn history(cfg: &Config, base: &Path) {
    let dir = base.join("history");
    fs::create_dir_all(&dir).unwrap();
    let mut h = History::new(cfg, &dir);
    for &size in &cfg.sizes {
        log(format!("history: size {size}"));
        h.grow(size);
        h.settle();
        h.revert(size);
        if Some(&size) != cfg.sizes.last() {
            h.keep_copy(size);
        }
        // Continue the model from what the CLI left (the reverts).
        let (tree, used) = state::head_tree(h.ledger()).unwrap();
        h.model.adopt(&tree);
        h.tree = tree;
        h.head_snap = used;
        h.fold(size);
        h.points(size);
        h.export(size);
        // A safety net: the rows so far, in case a later size fails.
        for (name, rows) in [
            ("revert", &h.rows.revert),
            ("revert_lib", &h.rows.revert_lib),
            ("fold", &h.rows.fold),
            ("points", &h.rows.points),
            ("export", &h.rows.export),
            ("verify", &h.rows.verify),
        ] {
            for r in rows {
                eprintln!("  rows {name}: | {} |", r.join(" | "));
            }
        }
        // Reindex cleared the stat cache; settle() on the next size re-warms it.
        let (tree, used) = state::head_tree(h.ledger()).unwrap();
        h.tree = tree;
        h.head_snap = used;
    }
    if let Some(&last) = cfg.sizes.last() {
        h.revert_side_by_side(last);
    }
    h.close();
    let r = &h.rows;
    println!("### Building the ledgers (library, for the tables below)\n");
    println!("`Ledger::append` of {BATCH} events per call (each call one fdatasync), then `state::save_snapshots` as `ledger record` runs it after an append; the git history is fed to `git fast-import` at the same time (its own process, on the other core). Events: the first {} create the workspace (20 files each); after that 5% are `Check` events and 95% `Change` events of 1 to 20 files (60% one file; 3.1 files on average, measured on an export of the 10^6 ledger), neighbouring files together, 96% edits, 2% deletes, 3% of changes also create a file; agent, principal, message and correlation ID set as `ledger record` sets them. Content: {} blobs of source-like text (~1.1 KB), all committed to the store.\n", cfg.files / 20, cfg.files + POOL);
    table(
        &[
            "events",
            "appended now",
            "seconds",
            "append events/s",
            "save_snapshots s",
            "git fast-import wait s",
            "bench process peak RSS MiB",
        ],
        &r.build,
    );
    println!("### Goal 1: `ledger revert` of a {TARGET_FILES}-file change\n");
    println!("Workload: the workspace holds the head ({} files); a change of {TARGET_FILES} neighbouring files is recorded with `ledger record`, then reverted; each repetition reverts the revert made by the one before (like `git revert HEAD` repeatedly), so every repetition writes {TARGET_FILES} files. The git repository has the same history (one commit per `Change` event) and the same files; `git revert --no-commit HEAD` then `git commit`. Median of {} repetitions after one warm-up round; ledger and git alternate which goes first, and each side starts after `sync` (not timed). `ledger revert` is durable when it returns (each file written to a temp file; the temp files made durable by one `syncfs`, the default when little else is dirty, or, in the second column, by `LEDGER_REVERT_SYNC=files`, one fsync each; renamed; directories fsynced; the journal fdatasynced); each repetition runs both, the second reverting the first. git with its defaults does not fsync.\n", cfg.files, cfg.reps);
    table(
        &[
            "events",
            "files",
            "ledger revert ms",
            "ledger revert, one fsync per file ms",
            "ledger revert --dry-run ms",
            "ledger show ms",
            "ledger --version ms",
            "git revert --no-commit ms",
            "git commit ms",
            "ledger revert / git revert --no-commit",
            "ledger revert / (git revert + commit)",
            "ledger revert / same at smallest size (goal ≤ 1.2)",
            "<goal",
        ],
        &r.revert,
    );
    println!("The same `ledger revert`, sizes side by side: the workspace (files and ledger) was copied as each size left it, and the copies and the last size's workspace are reverted one after the other in each round (each round starting at another size), each revert after `sync` and reverting the last change. Median and fastest of {} rounds after a warm-up round. The table above measures each size right after building it, minutes apart, while this machine's speed drifts; here every size is measured in the same minutes, so this is the figure for the goal's \"the same within 1.2x\".\n", 2 * cfg.reps + 1);
    table(
        &[
            "events",
            "ledger revert ms",
            "fastest ms",
            "/ smallest size (goal ≤ 1.2)",
            "<goal",
        ],
        &r.revert_side,
    );
    println!("The decision in the library, in this process (median of 5): `Ledger::open_dir` once; the change's events (`Ledger::change`) folded into `replay::Changes`; `state::head_tree` (the newest snapshot plus the events after it); `replay::plan_revert` including reading and hashing the {TARGET_FILES} files on disk. `ledger revert` also applies the plan (`apply::apply_actions`, private to the CLI) and appends the revert; those are the difference between the end-to-end figure and these.\n");
    table(
        &[
            "events",
            "Ledger::open_dir ms",
            "change + lifecycle ms",
            "state::head_tree ms",
            "head snapshot used",
            "plan_revert ms",
            "decision total ms",
        ],
        &r.revert_lib,
    );
    println!("### Goal 2: rebuilding the projections from the journal\n");
    println!("All events of the ledger, warm page cache; median of 5 (3 at 10^6) runs in this process. walk = `Ledger::scan(0, ..)` doing nothing (events decoded into owned `Event`s); borrowed walk = `Ledger::scan_refs(0, ..)` (`EventRef`s borrowing the segment bytes); scan + Tree = the borrowed walk folding `replay::TreeFold`; scan + all = the owned walk folding `replay::Projections` (tree, changes, agents); fold in memory = the owned folds over events already decoded (chunks of 65,536 cloned out of the walk, only the fold timed); `rebuild_snapshots` = `state::rebuild_snapshots`, what `ledger reindex` runs for the projections (the pipelined walk: worker threads check frames and hashes of segments read ahead and decode their events into what the fold needs while this thread folds the tree, storing a kept snapshot every max({}, tree entries) events; median of up to 3); `ledger reindex` = the command end to end (it also clears and rebuilds every sled index), one run, only up to {} events.\n", state::KEEP_EVERY, thousands(cfg.reindex_max as f64));
    table(
        &[
            "events",
            "journal MB",
            "walk events/s",
            "borrowed walk events/s",
            "scan + Tree events/s",
            "scan + all events/s",
            "Tree fold in memory events/s",
            "all three in memory events/s",
            "rebuild_snapshots events/s",
            "ledger reindex events/s",
            "<goal (rebuild_snapshots)",
        ],
        &r.fold,
    );
    println!("### Goal 3: the state at a past point; `ledger replay` vs `git archive`\n");
    println!("`state::tree_at(seq)` in this process (median of 5) at every point, and at the worst point (just before a kept snapshot) and the head `ledger replay --at SEQ --out DIR` end to end, which writes every file of that tree into a new directory (median of 3), against `git archive <commit> | tar -x -C DIR` of the commit of the same event (the first repetition's two directories are compared with `diff -r` and must be equal). Output directories are moved aside, not deleted, between repetitions. The goal applies to the library figure and to the command.\n");
    table(
        &[
            "events",
            "<point",
            "seq",
            "snapshot used",
            "events folded",
            "files",
            "tree_at ms",
            "ledger replay ms",
            "git archive \\| tar -x ms",
            "ledger replay / git",
            "<goal",
        ],
        &r.points,
    );
    println!("### Goal 5: `ledger export` and `ledger verify-export`\n");
    println!("Each run is a fresh process under `/usr/bin/time` (peak RSS = its max resident set size); median time of 3 runs (at 10^6: 2 runs unfiltered, 1 run of the others), largest RSS of them. `--sign` signs with an Ed25519 key made by `ledger keygen`. The filtered export carries an inclusion proof per line. `ledger log -n 1` (open the ledger, print one change) shows what opening alone costs.\n");
    table(
        &[
            "events",
            "<export",
            "event lines",
            "file MB",
            "export s",
            "export peak RSS MiB",
            "`ledger log -n 1` peak RSS MiB (s)",
            "<goal",
        ],
        &r.export,
    );
    println!("`ledger verify-export FILE` (with `--pubkey` for the signed file) on the same files, {VERIFY_REPS} times after each export (after `sync`, so the export's writeback is not timed; median of all, largest RSS); the floor is `sha256sum FILE` (read and hash every byte once).\n");
    table(
        &[
            "events",
            "<export verified",
            "verify-export s",
            "events/s",
            "peak RSS MiB",
            "sha256sum s (verify / sha256sum)",
            "<goal",
        ],
        &r.verify,
    );
    if !r.json_proofs.is_empty() {
        println!("Inclusion proofs as written in the filtered exports (`\"proof\":{{\"leaf_index\":..,\"tree_size\":..,\"hashes\":[..]}}`, hashes in hex):\n");
        table(
            &[
                "tree size",
                "proofs",
                "max hashes",
                "ceil(log2 n)",
                "mean JSON bytes",
                "max JSON bytes",
                "binary bound 16 + 32·ceil(log2 n)",
                "max JSON / bound",
            ],
            &r.json_proofs,
        );
    }
    println!("Disk used by the ledger at each size (after the measurements above; objects hold the {} blobs plus the revert targets):\n", cfg.files + POOL);
    table(
        &[
            "events",
            "journal MB",
            "index MB (apparent)",
            "index MB (on disk)",
            "objects MB (on disk)",
            ".ledger MB (apparent)",
            ".ledger MB (on disk)",
            "bytes on disk per event",
            ".git MB (on disk)",
        ],
        &r.disk,
    );
}

// ---------------------------------------------------------------------------------------
// Part 3: replay of a recorded tree vs git archive, and disk used, on fresh trees

fn replay_trees(cfg: &Config, base: &Path) {
    let mut rows = Vec::new();
    let mut disk = Vec::new();
    for &n in &cfg.replay_files {
        log(format!("replay: tree of {n} files"));
        let dir = base.join(format!("tree-{n}"));
        let ws = dir.join("ws");
        let trash = base.join("trash");
        fs::create_dir_all(&ws).unwrap();
        let mut raw = 0u64;
        for f in 0..n {
            let b = blob_text(f as u64 + 10_000_000);
            raw += b.len() as u64;
            write_file(&ws, &file_path(f), &b);
        }
        fs::write(ws.join(".gitignore"), "target/\n*.o\n").unwrap();
        raw += 11;
        run(ledger_cmd(&ws).arg("init"));
        let (rec_s, _) = run(ledger_cmd(&ws).args(["record", "--agent", "bench"]));
        run(git(&ws).args(["init", "-q", "-b", "main"]));
        fs::write(ws.join(".git/info/exclude"), ".ledger/\n").unwrap();
        let (add_s, _) = run(&mut sh(&ws, "git add -A && git commit -q -m initial"));
        let reps = if n >= 100_000 { 3 } else { 5 };
        let mut t_l = Vec::new();
        let mut t_g = Vec::new();
        for r in 0..reps {
            let out_l = dir.join("out-l");
            let out_g = dir.join("out-g");
            let ledger_side = |t: &mut Vec<f64>| {
                let (s, _) = run(ledger_cmd(&ws)
                    .args(["replay", "--at", "1", "--out"])
                    .arg(&out_l));
                t.push(s);
            };
            let git_side = |t: &mut Vec<f64>| {
                fs::create_dir_all(&out_g).unwrap();
                let (s, _) = run(&mut sh(
                    &ws,
                    &format!("git archive HEAD | tar -x -C {}", out_g.display()),
                ));
                t.push(s);
            };
            if r % 2 == 0 {
                ledger_side(&mut t_l);
                git_side(&mut t_g);
            } else {
                git_side(&mut t_g);
                ledger_side(&mut t_l);
            }
            if r == 0 {
                let (_, d) = run(Command::new("diff").arg("-rq").arg(&out_l).arg(&out_g));
                assert!(d.is_empty(), "replay differs from git archive: {d}");
            }
            discard(&out_l, &trash);
            discard(&out_g, &trash);
        }
        let (l, g) = (median(&t_l), median(&t_g));
        rows.push(vec![
            thousands(n as f64),
            mb(raw),
            ms(l),
            ms(g),
            ratio(l, g),
        ]);
        let (oa, od) = du(&ws.join(".ledger/objects"));
        let (_, jd) = du(&ws.join(".ledger/journal"));
        let (_, id) = du(&ws.join(".ledger/index"));
        let (la, ld) = du(&ws.join(".ledger"));
        let (_, gd) = du(&ws.join(".git"));
        let (_, god) = du(&ws.join(".git/objects"));
        disk.push(vec![
            thousands(n as f64),
            mb(raw),
            mb(oa),
            mb(od),
            mb(jd),
            mb(id),
            mb(la),
            mb(ld),
            ratio(ld as f64, raw as f64),
            ratio(od as f64, raw as f64),
            mb(god),
            mb(gd),
            format!("{rec_s:.1} / {add_s:.1}"),
        ]);
        discard(&dir, &trash);
    }
    println!("### Goal 4: `ledger replay` of a recorded tree vs `git archive | tar -x`\n");
    println!("A source-like tree (`src/mNNN/sNNN/file_NNNNN.rs`, 20 files per directory, ~1.1 KB each) recorded once by `ledger record` and committed once by git in the same directory. `ledger replay --at 1 --out DIR` (seq 1 is that record) vs `git archive HEAD | tar -x -C DIR`; median of 5 (3 at 100,000 files), order alternating, output directories moved aside between repetitions; the first pair is compared with `diff -r`. Neither side fsyncs the files it writes.\n");
    table(
        &[
            "files",
            "MB",
            "ledger replay ms",
            "git archive \\| tar -x ms",
            "ledger / git",
        ],
        &rows,
    );
    println!(
        "Disk used after that first record (apparent = file sizes, on disk = allocated blocks):\n"
    );
    table(
        &[
            "files",
            "raw MB",
            "objects MB apparent",
            "objects MB on disk",
            "journal MB on disk",
            "index MB on disk",
            ".ledger MB apparent",
            ".ledger MB on disk",
            ".ledger on disk / raw",
            "objects on disk / raw",
            ".git/objects MB on disk",
            ".git MB on disk",
            "ledger init+record s / git add+commit s",
        ],
        &disk,
    );
}

// ---------------------------------------------------------------------------------------
// Part 4: recording one large file

fn big_file(cfg: &Config, base: &Path) {
    let dir = base.join("big");
    let ws = dir.join("ws");
    fs::create_dir_all(&ws).unwrap();
    let size = cfg.big_mib << 20;
    log(format!("big: writing a {} MiB file", cfg.big_mib));
    {
        // Log-like text: timestamps, levels, hex IDs and words; LZ4 shrinks it ~2-3x.
        let words = [
            "request", "served", "cache", "miss", "user", "session", "retry", "timeout", "commit",
            "index", "block", "queue", "worker", "latency", "error", "ok",
        ];
        let mut w = BufWriter::with_capacity(1 << 20, File::create(ws.join("big.log")).unwrap());
        let mut r = Rng::new(99);
        let mut written = 0u64;
        let mut line = String::new();
        while written < size {
            line.clear();
            let n = 3 + r.below(10);
            line.push_str(&format!(
                "2026-11-21T{:02}:{:02}:{:02}.{:06}Z {} {:016x}",
                r.below(24),
                r.below(60),
                r.below(60),
                r.below(1_000_000),
                ["INFO", "WARN", "DEBUG"][r.below(3) as usize],
                r.next()
            ));
            for _ in 0..n {
                line.push(' ');
                line.push_str(words[r.below(words.len() as u64) as usize]);
            }
            line.push('\n');
            let take = (size - written).min(line.len() as u64) as usize;
            w.write_all(&line.as_bytes()[..take]).unwrap();
            written += take as u64;
        }
        w.into_inner().unwrap().sync_all().unwrap();
    }
    // The floor: read and BLAKE3-hash the file once, in this process.
    let t = Instant::now();
    let mut f = File::open(ws.join("big.log")).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let floor = t.elapsed().as_secs_f64();
    run(ledger_cmd(&ws).arg("init"));
    log("big: ledger record");
    let mut c = ledger_cmd(&ws);
    c.args(["record", "--agent", "bench"]);
    let (rec_s, rec_rss, _) = run_rss(&c, &dir);
    run(git(&ws).args(["init", "-q", "-b", "main"]));
    fs::write(ws.join(".git/info/exclude"), ".ledger/\n").unwrap();
    log("big: git add");
    let mut c = git(&ws);
    c.args(["add", "-A"]);
    let (add_s, add_rss, _) = run_rss(&c, &dir);
    let mut c = git(&ws);
    c.args(["commit", "-q", "-m", "big"]);
    let (com_s, _, _) = run_rss(&c, &dir);
    log("big: ledger replay");
    let mut c = ledger_cmd(&ws);
    c.args(["replay", "--at", "1", "--out"])
        .arg(dir.join("out"));
    let (rep_s, rep_rss, _) = run_rss(&c, &dir);
    let (oa, od) = du(&ws.join(".ledger/objects"));
    let (_, ld) = du(&ws.join(".ledger"));
    let (_, gd) = du(&ws.join(".git/objects"));
    let rss = |r: Option<f64>| r.map_or("n/a".into(), |r| format!("{r:.0}"));
    println!("### Goal 6: recording one large file\n");
    println!("One {} MiB file of log-like text (timestamps, levels, random 64-bit hex IDs, words; not repetitive) in an otherwise empty workspace, written and fsynced beforehand, warm page cache. `ledger init` then `ledger record` under `/usr/bin/time` (peak RSS of the process); git in the same directory (`.ledger/` excluded) with its defaults: `git add -A` then `git commit`. The floor reads and BLAKE3-hashes the file once in the benchmark process.\n", cfg.big_mib);
    table(
        &[
            "file MiB",
            "ledger record s",
            "ledger record peak RSS MiB",
            "git add s",
            "git add peak RSS MiB",
            "git commit s",
            "read + BLAKE3 floor s",
            "ledger record / git add",
            "ledger replay s (RSS MiB)",
            "objects MiB apparent / on disk",
            ".ledger MiB on disk",
            ".git/objects MiB on disk",
            "<goal: record peak RSS",
        ],
        &[vec![
            cfg.big_mib.to_string(),
            format!("{rec_s:.2}"),
            rss(rec_rss),
            format!("{add_s:.2}"),
            rss(add_rss),
            format!("{com_s:.2}"),
            format!("{floor:.2}"),
            ratio(rec_s, add_s),
            format!("{rep_s:.2} ({})", rss(rep_rss)),
            format!(
                "{:.0} / {:.0}",
                oa as f64 / 1048576.0,
                od as f64 / 1048576.0
            ),
            format!("{:.0}", ld as f64 / 1048576.0),
            format!("{:.0}", gd as f64 / 1048576.0),
            format!("{} (< 100 MiB)", rec_rss.map_or("n/a", |r| met(r < 100.0))),
        ]],
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// Removes every projection snapshot, as `ledger reindex` does (clearing the indexes)
/// before it runs `state::rebuild_snapshots`: a rebuild then writes new files, not
/// replacements of the last run's.
fn drop_snapshots(l: &Ledger) {
    for name in ["tree", "tree-head"] {
        l.index_unsynced().prune_snapshots(name, u64::MAX).unwrap();
    }
}

/// One operation on an existing workspace's ledger, for profiling it alone (for example
/// `perf record -g target/release/deps/forensics-* --bench` with
/// `LEDGER_BENCH_CHILD=rebuild LEDGER_BENCH_CHILD_DIR=/path/to/ws`). Ops: `rebuild`
/// (`state::rebuild_snapshots`, after removing the snapshots as `ledger reindex` does),
/// `fold` (scan + `Projections`), `walk` (scan only),
/// `walk_refs` (`scan_refs` only), `verify` (`Ledger::verify` without contents),
/// `tree_at:SEQ`. Prints the seconds it took; with `LEDGER_BENCH_CHILD_REPS=N`, the
/// median of N runs in this one process (as the benchmark runs them: the first one
/// pays for this process's first use of its memory).
fn child_main(op: &str, ws: &Path) {
    let (l, _) = Ledger::open_dir(&ws.join(".ledger"), &ledger::OpenOptions::default()).unwrap();
    let reps: usize = std::env::var("LEDGER_BENCH_CHILD_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let times: Vec<f64> = (0..reps.max(1)).map(|_| child_op(op, &l)).collect();
    println!("{op}: {:.5} s", median(&times));
}

/// One run of [`child_main`]'s `op`; the seconds it took.
fn child_op(op: &str, l: &Ledger) -> f64 {
    if op == "rebuild" {
        drop_snapshots(l);
    }
    let t = Instant::now();
    match op {
        "rebuild" => {
            state::rebuild_snapshots(l).unwrap();
        }
        "fold" => {
            let mut all = Projections::new();
            l.scan(0, &mut |r| {
                all.apply(&r.event).unwrap();
                Ok(())
            })
            .unwrap();
        }
        "walk" => {
            l.scan(0, &mut |_| Ok(())).unwrap();
        }
        "walk_refs" => {
            l.scan_refs(0, &mut |_| Ok(())).unwrap();
        }
        "verify" => {
            let r = l
                .verify(ledger::VerifyOptions {
                    contents: false,
                    indexes: true,
                })
                .unwrap();
            assert!(r.ok(), "{:?}", r.problems);
        }
        other => {
            let seq: u64 = other
                .strip_prefix("tree_at:")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unknown op {other}"));
            for _ in 0..20 {
                state::tree_at(l, seq).unwrap();
            }
        }
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    if let (Ok(op), Some(dir)) = (
        std::env::var("LEDGER_BENCH_CHILD"),
        std::env::var_os("LEDGER_BENCH_CHILD_DIR"),
    ) {
        child_main(&op, Path::new(&dir));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without
    // it, and a test run should not spend minutes on timings.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "forensics benchmark: skipped (run it with `cargo bench -p ledger-cli --bench forensics`)"
        );
        return;
    }
    let cfg = Config::from_env();
    fs::create_dir_all(&cfg.base).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("ledger-forensics-")
        .tempdir_in(&cfg.base)
        .unwrap();
    // With LEDGER_BENCH_KEEP the directory outlives the run, also a failed one.
    let (base, tmp) = if cfg.keep {
        let p = tmp.keep();
        eprintln!("keeping {}", p.display());
        (p, None)
    } else {
        (tmp.path().to_path_buf(), Some(tmp))
    };
    let started = Instant::now();
    println!(
        "## Forensics and compliance benchmarks\n\n{}\n",
        machine(&cfg)
    );
    if cfg.part("proofs") {
        proofs(&cfg);
    }
    if cfg.part("history") {
        history(&cfg, &base);
    }
    if cfg.part("replay") {
        replay_trees(&cfg, &base);
    }
    if cfg.part("big") {
        big_file(&cfg, &base);
    }
    println!(
        "Total benchmark time: {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    drop(tmp);
}
