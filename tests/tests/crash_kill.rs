//! Real crashes: processes appending to a ledger are killed with SIGKILL at random
//! instants, and the ledger must come back whole.
//!
//! The library test re-runs this test binary in "child mode" (as sled's
//! `test_crash_recovery` does): the child opens the ledger and appends from two
//! threads, printing `ACK <seq> <change-id>` only after `append` returned `Ok`. The
//! parent kills it after a random 0–20 ms, reopens the ledger and checks that it
//! opens, verifies, holds every acknowledged change exactly once at its seq with
//! gap-free seqs, and takes a new append.
//!
//! The CLI tests kill `ledger record` and `ledger revert` processes the same way; a
//! killed revert must leave every file it touches with either its old or its reverted
//! content, a journal that verifies, and, if the revert was recorded, every file
//! reverted.
//!
//! Knobs: `LEDGER_CRASH_ITERS` (kill points of the library test),
//! `LEDGER_CRASH_CLI_ITERS` (kills of `ledger record`), `LEDGER_CRASH_REVERT_ITERS`
//! (kills of `ledger revert`), `LEDGER_CRASH_SEED`, `LEDGER_CRASH_CLI_SEED`,
//! `LEDGER_CRASH_REVERT_SEED` (seeds; printed on failure).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ledger::{
    Actor, Body, Change, Content, Failure, Ledger, Mode, NewEvent, Op, OpenOptions, Pending,
    Precondition, ResourceChange, ResourceKey, VerifyOptions,
};

/// Kill points of the library test when `LEDGER_CRASH_ITERS` is not set: about a
/// minute in a debug build on two (shared) cores; 50-70 ms a kill point, most of it
/// opening sled (child and parent) and verifying.
const DEFAULT_ITERS: u64 = 1000;
/// Kill loops running side by side (each with its own ledgers) unless
/// `LEDGER_CRASH_WORKERS` says otherwise.
const DEFAULT_WORKERS: u64 = 3;
/// A fresh ledger every this many kills keeps the per-kill verification cheap.
const KILLS_PER_LEDGER: u64 = 100;
/// Kills of `ledger record` when `LEDGER_CRASH_CLI_ITERS` is not set.
const DEFAULT_CLI_ITERS: u64 = 30;
/// Kills of `ledger revert` when `LEDGER_CRASH_REVERT_ITERS` is not set.
const DEFAULT_REVERT_ITERS: u64 = 15;

const CHILD_DIR_VAR: &str = "LEDGER_CRASH_CHILD_DIR";
const CHILD_TAG_VAR: &str = "LEDGER_CRASH_CHILD_TAG";
const CHILD_SEED_VAR: &str = "LEDGER_CRASH_CHILD_SEED";
/// The name of the test function that is the child's entry point.
const CHILD_TEST: &str = "crash_child_entry_point";

fn env_u64(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?} is not a number")),
        Err(_) => default,
    }
}

fn actor(agent: &str) -> Actor {
    Actor {
        agent: agent.into(),
        principal: None,
        role: Some("crash-test".into()),
    }
}

fn failure_event(id: &str, detail: &str) -> NewEvent {
    NewEvent {
        time_us: 1_800_000_000_000_000,
        actor: actor("crasher"),
        change_id: id.to_string(),
        correlation_id: None,
        body: Body::Failure(Failure {
            stage: "crash-test".into(),
            error: detail.to_string(),
            exit_code: None,
        }),
        meta: BTreeMap::new(),
    }
}

// ---- child mode --------------------------------------------------------------------

/// Not a test of its own: the entry point of the child process. Without the child
/// environment variable it returns at once.
#[test]
fn crash_child_entry_point() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let tag = std::env::var(CHILD_TAG_VAR).expect("child tag");
    let seed: u64 = std::env::var(CHILD_SEED_VAR)
        .expect("child seed")
        .parse()
        .unwrap();
    child_main(Path::new(&dir), &tag, seed);
}

fn child_fail(what: String) -> ! {
    eprintln!("crash child: {what}");
    std::process::exit(101)
}

/// Writes whole lines with one locked write (a kill can only cut the last line).
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(102);
    }
}

fn child_main(dir: &Path, tag: &str, seed: u64) -> ! {
    let opts = OpenOptions {
        lock_timeout: Duration::from_secs(20),
    };
    let (ledger, report) = match Ledger::open_dir(dir, &opts) {
        Ok(x) => x,
        Err(e) => child_fail(format!("open failed: {e}")),
    };
    if let Some(d) = report.damaged {
        child_fail(format!("opened a damaged ledger: {d}"));
    }
    // libtest may have started a line ("test ... "): begin a fresh one.
    say("\nREADY\n");
    // The parent kills us well before this; it only bounds an orphan's life.
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let ledger = &ledger;
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for n in 0.. {
                    if Instant::now() > deadline {
                        child_fail("never killed".into());
                    }
                    child_step(ledger, &mut rng, &format!("{tag}-t{t}-{n}"));
                }
            });
        }
    });
    unreachable!()
}

/// One append of a random shape: a single event, a batch, or a change with content.
fn child_step(ledger: &Ledger, rng: &mut Rng, id: &str) {
    let (events, pre) = match rng.below(10) {
        0..=5 => (
            vec![failure_event(id, "single")],
            Precondition::NewChange(id.to_string()),
        ),
        6..=7 => {
            let n = rng.range(2, 6);
            let evs = (0..n)
                .map(|k| failure_event(&format!("{id}-b{k}"), "batch"))
                .collect();
            (evs, Precondition::None)
        }
        _ => {
            let mut pending = Pending::default();
            let mut resources = Vec::new();
            for k in 0..rng.range(1, 3) {
                let len = rng.below(6000) as usize;
                let bytes = if rng.chance(1, 2) {
                    rng.bytes(len)
                } else {
                    vec![b'a' + (k as u8); len]
                };
                let hash = ledger
                    .store()
                    .put_bytes(&bytes, &mut pending)
                    .unwrap_or_else(|e| child_fail(format!("put_bytes: {e}")));
                resources.push(ResourceChange {
                    key: ResourceKey::file(format!("files/{id}-{k}").as_bytes()),
                    op: Op::Create,
                    old: None,
                    new: Some(Content {
                        hash,
                        mode: Mode::Regular,
                        size: len as u64,
                    }),
                });
            }
            if let Err(e) = ledger.commit_content(pending) {
                child_fail(format!("commit_content: {e}"));
            }
            let ev = NewEvent {
                time_us: 1_800_000_000_000_000,
                actor: actor("crasher"),
                change_id: id.to_string(),
                correlation_id: Some("crash".into()),
                body: Body::Change(Change {
                    message: Some("content".into()),
                    reverts: None,
                    resources,
                }),
                meta: BTreeMap::new(),
            };
            (vec![ev], Precondition::NewChange(id.to_string()))
        }
    };
    match ledger.append(events, pre) {
        Ok(records) => {
            let mut text = String::new();
            for r in &records {
                text.push_str(&format!("ACK {} {}\n", r.event.seq, r.event.change_id));
            }
            say(&text);
        }
        Err(e) => child_fail(format!("append {id}: {e}")),
    }
}

// ---- parent: library appends ---------------------------------------------------------

struct Killed {
    /// (seq, change ID) of every acknowledged event the child printed.
    acks: Vec<(u64, String)>,
    saw_ready: bool,
    /// From spawning to the child's READY (when waited for).
    startup: Duration,
}

/// Runs one child against `dir` and SIGKILLs it at a random instant.
fn run_and_kill(dir: &Path, tag: &str, rng: &mut Rng, seed: u64) -> Killed {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR_VAR, dir)
        .env(CHILD_TAG_VAR, tag)
        .env(CHILD_SEED_VAR, rng.next_u64().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the crash child");
    let spawned = Instant::now();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let out_reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it was never fully said.
                Ok(_) if buf.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if line.ends_with("READY") {
                        let _ = tx.send(());
                    }
                    lines.push(line);
                }
            }
        }
        lines
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    // Mostly kill while appending; sometimes while the child is still opening (and
    // maybe recovering from the previous kill).
    let mut startup = Duration::ZERO;
    let saw_ready = if rng.chance(1, 8) {
        std::thread::sleep(Duration::from_millis(rng.below(40)));
        false
    } else {
        let ready = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        startup = spawned.elapsed();
        std::thread::sleep(Duration::from_millis(rng.below(21)));
        ready
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let lines = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "seed {seed}, {tag}: the child ended by itself ({status}) before the kill\nstderr:\n{err}\nstdout:\n{}",
        lines.join("\n")
    );
    let acks = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ACK "))
        .map(|l| {
            let (seq, id) = l.split_once(' ').expect("ACK seq id");
            (seq.parse().unwrap(), id.to_string())
        })
        .collect();
    Killed {
        acks,
        saw_ready: saw_ready || lines.iter().any(|l| l.ends_with("READY")),
        startup,
    }
}

#[derive(Default, Debug)]
#[allow(dead_code)] // printed with {:?}
struct Stats {
    kills: u64,
    kills_while_opening: u64,
    acknowledged_events: u64,
    recoveries: u64,
    bytes_cut: u64,
    batch_records_dropped: u64,
    reindexed: u64,
    ledgers: u64,
    child_startup: Duration,
    checking: Duration,
}

/// Reopens after a kill and checks everything; appends one probe event.
fn check_after_kill(dir: &Path, acked: &mut HashMap<String, u64>, stats: &mut Stats, ctx: &str) {
    let opts = OpenOptions {
        lock_timeout: Duration::from_secs(20),
    };
    let (ledger, report) = Ledger::open_dir(dir, &opts)
        .unwrap_or_else(|e| panic!("{ctx}: the ledger does not open after a kill: {e}"));
    assert!(
        report.damaged.is_none(),
        "{ctx}: damaged after a kill: {report:?}"
    );
    if report.recovery.cut_bytes > 0 {
        stats.recoveries += 1;
        stats.bytes_cut += report.recovery.cut_bytes;
        stats.batch_records_dropped += report.recovery.dropped.len() as u64;
    }
    if report.reindexed.is_some() {
        stats.reindexed += 1;
    }
    let rep = ledger
        .verify(VerifyOptions::default())
        .unwrap_or_else(|e| panic!("{ctx}: verify failed to run: {e}"));
    assert!(rep.ok(), "{ctx}: verify found problems: {:?}", rep.problems);

    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut next = 0u64;
    ledger
        .scan(0, &mut |r| {
            assert_eq!(r.event.seq, next, "{ctx}: seq gap");
            next += 1;
            seen.entry(r.event.change_id.clone())
                .or_default()
                .push(r.event.seq);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{ctx}: scan: {e}"));
    assert_eq!(rep.events, next, "{ctx}");
    assert_eq!(ledger.head().map(|h| h.seq + 1), Some(next), "{ctx}");
    for (id, seqs) in &seen {
        assert_eq!(seqs.len(), 1, "{ctx}: change {id} appears at seqs {seqs:?}");
    }
    for (id, seq) in acked.iter() {
        assert_eq!(
            seen.get(id),
            Some(&vec![*seq]),
            "{ctx}: acknowledged change {id} (seq {seq}) is not where it was acknowledged"
        );
        assert_eq!(
            ledger.change_exists(id).unwrap(),
            Some(*seq),
            "{ctx}: the index lost acknowledged change {id}"
        );
    }

    let probe = format!("probe-{ctx}").replace([' ', ','], "_");
    let recs = ledger
        .append(
            vec![failure_event(&probe, "after the kill")],
            Precondition::NewChange(probe.clone()),
        )
        .unwrap_or_else(|e| panic!("{ctx}: append after the kill failed: {e}"));
    assert_eq!(recs[0].event.seq, next, "{ctx}");
    acked.insert(probe, next);
}

/// One worker: its own ledgers, its share of the kill points.
fn kill_loop(worker: u64, iters: u64, seed: u64) -> Stats {
    let mut rng = Rng::new(seed ^ (worker + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let mut stats = Stats::default();
    let mut current: Option<(tempfile::TempDir, PathBuf)> = None;
    let mut acked: HashMap<String, u64> = HashMap::new();
    for i in 0..iters {
        if i % KILLS_PER_LEDGER == 0 {
            let tmp = tempfile::tempdir().unwrap();
            Ledger::init(tmp.path(), actor("crash-test-init")).expect("init");
            let dir = tmp.path().join(".ledger");
            current = Some((tmp, dir));
            acked.clear();
            stats.ledgers += 1;
        }
        let dir = current.as_ref().unwrap().1.clone();
        let tag = format!("w{worker}i{i}");
        let ctx = format!("seed {seed}, worker {worker}, kill {i}");
        let killed = run_and_kill(&dir, &tag, &mut rng, seed);
        stats.kills += 1;
        if !killed.saw_ready {
            stats.kills_while_opening += 1;
        }
        for (seq, id) in killed.acks {
            stats.acknowledged_events += 1;
            assert!(
                acked.insert(id.clone(), seq).is_none(),
                "{ctx}: change {id} acknowledged twice"
            );
        }
        stats.child_startup += killed.startup;
        let t = Instant::now();
        check_after_kill(&dir, &mut acked, &mut stats, &ctx);
        stats.checking += t.elapsed();
    }
    stats
}

#[test]
fn sigkill_during_appends_loses_nothing_acknowledged() {
    let (_, seed) = Rng::from_env("LEDGER_CRASH_SEED");
    let iters = env_u64("LEDGER_CRASH_ITERS", DEFAULT_ITERS);
    let workers = env_u64("LEDGER_CRASH_WORKERS", DEFAULT_WORKERS).max(1);
    let started = Instant::now();
    let all: Vec<Stats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let share = iters / workers + u64::from(w < iters % workers);
                s.spawn(move || kill_loop(w, share, seed))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut stats = Stats::default();
    for st in all {
        stats.kills += st.kills;
        stats.kills_while_opening += st.kills_while_opening;
        stats.acknowledged_events += st.acknowledged_events;
        stats.recoveries += st.recoveries;
        stats.bytes_cut += st.bytes_cut;
        stats.batch_records_dropped += st.batch_records_dropped;
        stats.reindexed += st.reindexed;
        stats.ledgers += st.ledgers;
        stats.child_startup += st.child_startup;
        stats.checking += st.checking;
    }
    eprintln!(
        "{} kill points in {:.1?} with {workers} workers (seed {seed}): {stats:?}",
        stats.kills,
        started.elapsed()
    );
    assert_eq!(stats.kills, iters);
    assert!(
        stats.acknowledged_events > 0 || iters < 20,
        "no child ever acknowledged an append: {stats:?}"
    );
}

// ---- parent: the CLI ------------------------------------------------------------------

/// Changes a random part of the workspace: modifies, creates and deletes files.
fn mutate(env: &TestEnvironment, files: &mut Vec<String>, rng: &mut Rng, round: u64) {
    let n = files.len() as u64;
    for _ in 0..rng.range(n / 20, n / 5) {
        let f = &files[rng.below(n) as usize];
        let len = rng.below(4000) as usize;
        env.write(f, rng.bytes(len));
    }
    for k in 0..rng.range(5, 40) {
        let f = format!("new/r{round}/f{k}.txt");
        env.write(
            &f,
            format!("round {round} file {k}\n").repeat(rng.range(1, 50) as usize),
        );
        files.push(f);
    }
    for _ in 0..rng.range(0, 20) {
        let i = rng.below(files.len() as u64) as usize;
        let f = files.swap_remove(i);
        env.remove(&f);
    }
}

#[test]
fn sigkill_during_cli_record_leaves_a_usable_ledger() {
    let (mut rng, seed) = Rng::from_env("LEDGER_CRASH_CLI_SEED");
    let iters = env_u64("LEDGER_CRASH_CLI_ITERS", DEFAULT_CLI_ITERS);
    let env = TestEnvironment::init();
    let mut files = Vec::new();
    for d in 0..30 {
        for f in 0..40 {
            let p = format!("d{d}/f{f}.bin");
            let len = rng.below(3000) as usize;
            env.write(&p, rng.bytes(len));
            files.push(p);
        }
    }
    env.record("setup", &[]);
    // Kill instants are spread over the duration of a whole `record` of the same
    // kind, estimated from the uninterrupted runs (machines and load differ).
    mutate(&env, &mut files, &mut rng, 0);
    let t = Instant::now();
    env.record("calibration", &[]);
    let mut estimate_ms = t.elapsed().as_secs_f64() * 1000.0;

    let mut finished_before_kill = 0;
    let mut acknowledged_by_killed = 0;
    let mut recovered = 0;
    for i in 1..=iters {
        let kill_after = rng.below((estimate_ms * 1.1) as u64 + 1);
        let ctx = format!("seed {seed}, kill {i} after {kill_after} ms");
        mutate(&env, &mut files, &mut rng, i);
        let id = format!("killed-{i}");
        let started = Instant::now();
        let mut child = env
            .command(
                env.workspace(),
                ["record", "--agent", "killed", "--change", &id],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let printed_id = String::from_utf8_lossy(&out.stdout).trim() == id;
        if out.status.success() {
            finished_before_kill += 1;
            // It ran whole: a measurement (capped by when we would have killed it).
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            estimate_ms = 0.7 * estimate_ms + 0.3 * ms.min(kill_after as f64);
        } else {
            assert_eq!(out.status.signal(), Some(9), "{ctx}: {out:?}");
        }

        // It opens and verifies, holds what it acknowledged, and records again.
        let v = env.run(["verify"]);
        assert_eq!(v.code, 0, "{ctx}: verify after the kill: {v:?}");
        if v.stderr.contains("recovered") || v.stderr.contains("rebuilt") {
            recovered += 1;
        }
        let acked = env.run(["show", "--json", &id]).code == 0;
        if printed_id {
            acknowledged_by_killed += 1;
            assert!(acked, "{ctx}: {id} was printed but is not in the ledger");
        }
        if !acked {
            let t = Instant::now();
            env.record("finisher", &[]);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            estimate_ms = 0.7 * estimate_ms + 0.3 * ms;
        }
        let st = env.run(["status", "--json"]).success().json();
        assert_eq!(st["clean"], true, "{ctx}: {st}");
    }
    env.verify_ok();
    // Every change is there once.
    let log = env.log_json(&[]);
    let mut ids: Vec<&str> = log
        .iter()
        .map(|v| v["change_id"].as_str().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    eprintln!(
        "{iters} kills of `ledger record` (seed {seed}, about {estimate_ms:.0} ms a record): {finished_before_kill} finished first, {acknowledged_by_killed} acknowledged, {recovered} reported a recovery or rebuild"
    );
}

/// Leftover temporary files of a killed revert (`.ledger-tmp-*`), removed; how many.
fn remove_revert_temps(env: &TestEnvironment) -> usize {
    let mut n = 0;
    for p in files_under(env.workspace()) {
        let rel = p.strip_prefix(env.workspace()).unwrap_or(&p);
        if rel.starts_with(".ledger") {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".ledger-tmp-") {
            std::fs::remove_file(&p).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn sigkill_during_cli_revert_leaves_old_or_reverted_files() {
    let (mut rng, seed) = Rng::from_env("LEDGER_CRASH_REVERT_SEED");
    let iters = env_u64("LEDGER_CRASH_REVERT_ITERS", DEFAULT_REVERT_ITERS);
    let env = TestEnvironment::init();
    // Files in three directories, so the revert renames in several of them.
    let files: Vec<String> = (0..36).map(|i| format!("d{}/f{i}.txt", i % 3)).collect();
    let mut current: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for f in &files {
        let bytes = format!("{f} version 0\n")
            .repeat(rng.range(1, 200) as usize)
            .into_bytes();
        env.write(f, &bytes);
        current.insert(f.clone(), bytes);
    }
    env.record("setup", &[]);

    let mut estimate_ms: Option<f64> = None;
    let (mut finished, mut recorded, mut mixed, mut temps) = (0, 0, 0, 0);
    for i in 0..=iters {
        // A change of every file; the revert puts `current` back.
        let mut changed = BTreeMap::new();
        for f in &files {
            let bytes = format!("{f} round {i}\n")
                .repeat(rng.range(1, 200) as usize)
                .into_bytes();
            env.write(f, &bytes);
            changed.insert(f.clone(), bytes);
        }
        let target = env.record("editor", &[]);
        let id = format!("revert-{i}");
        let args = [
            "revert",
            target.as_str(),
            "--agent",
            "killed",
            "--change-id",
            &id,
        ];
        // Round 0 runs whole: it measures how long a revert takes here.
        let kill_after = estimate_ms.map(|e| rng.below((e * 1.2) as u64 + 1));
        let ctx = format!("seed {seed}, round {i}, kill after {kill_after:?} ms");
        let started = Instant::now();
        let mut child = env
            .command(env.workspace(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(ms) = kill_after {
            std::thread::sleep(Duration::from_millis(ms));
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            finished += 1;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            estimate_ms = Some(match estimate_ms {
                None => ms,
                Some(e) => 0.7 * e + 0.3 * ms.min(kill_after.unwrap_or(0) as f64),
            });
        } else {
            assert_eq!(out.status.signal(), Some(9), "{ctx}: {out:?}");
        }

        // Every file is whole: its content before the revert or after it.
        let mut reverted = 0;
        for f in &files {
            let now = std::fs::read(env.path(f))
                .unwrap_or_else(|e| panic!("{ctx}: {f} is gone after the kill: {e}"));
            if now == current[f] {
                reverted += 1;
            } else {
                assert_eq!(
                    now, changed[f],
                    "{ctx}: {f} holds neither its old nor its reverted content"
                );
            }
        }
        temps += remove_revert_temps(&env);
        let v = env.run(["verify"]);
        assert_eq!(v.code, 0, "{ctx}: verify after the kill: {v:?}");
        let in_journal = env.run(["show", "--json", &id]).code == 0;
        if in_journal {
            recorded += 1;
            // The revert is appended only after every file is in place.
            assert_eq!(
                reverted,
                files.len(),
                "{ctx}: recorded but not all reverted"
            );
        } else {
            if reverted != 0 && reverted != files.len() {
                mixed += 1;
            }
            // What the killed revert left on disk is recorded as an ordinary change.
            if reverted != 0 {
                env.record("finisher", &[]);
            }
        }
        if out.status.success() {
            assert!(
                in_journal,
                "{ctx}: the revert succeeded but is not recorded"
            );
        }
        let st = env.run(["status", "--json"]).success().json();
        assert_eq!(st["clean"], true, "{ctx}: {st}");
        for f in &files {
            current.insert(f.clone(), std::fs::read(env.path(f)).unwrap());
        }
    }
    env.verify_ok();
    eprintln!(
        "{iters} kills of `ledger revert` (seed {seed}, about {:.0} ms a revert): {finished} finished first, {recorded} recorded, {mixed} left some files reverted and some not, {temps} temporary files left",
        estimate_ms.unwrap_or(0.0)
    );
}
