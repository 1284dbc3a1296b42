//! Journal benchmarks: durable appends (single, batched, concurrent), verify, the raw
//! journal walk and the index rebuild, each next to the plain-file or read-and-hash
//! alternative measured in the same run. Prints markdown tables; never asserts on time.
//!
//! Run: `cargo bench -p ledger --bench journal`
//! Env: `LEDGER_BENCH_QUICK=1` small sizes (about 30 s);
//!      `LEDGER_BENCH_DIR=/path` where the temporary ledgers go (default: the system
//!      temp dir; it must be on a real disk, not tmpfs, for the fsync figures to mean anything);
//!      `LEDGER_BENCH_ROUNDS=N` rounds of the append benchmarks (default 5);
//!      `LEDGER_BENCH_ONLY=appends|verify` one part only (for profiling);
//!      `LEDGER_BENCH_VERIFY_SIZES=10000,100000` ledger sizes for verify and reindex;
//!      `LEDGER_BENCH_REINDEX_MAX=N` largest size to reindex (default 100000: a
//!      reindex of 10^6 events took over 5 minutes here).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{cpus_model_kernel, fs_type, median, peak_rss_kib, table};

use ledger::{
    Actor, Body, Change, Content, FsStorage, Hash, Ledger, Mode, NewEvent, Op, Pending,
    Precondition, ResourceChange, ResourceKey, VerifyOptions, FRAME_HEADER, FRAME_TRAILER,
};

/// Distinct content blobs the synthetic events point at (all stored, so verify finds them).
const CONTENT_POOL: usize = 4096;

struct Config {
    quick: bool,
    rounds: usize,
    single_n: usize,
    batch_size: usize,
    batches: usize,
    threads: usize,
    per_thread: usize,
    verify_sizes: Vec<u64>,
    reindex_max: u64,
    base: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("LEDGER_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let rounds = std::env::var("LEDGER_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 3 } else { 5 });
        let base = std::env::var_os("LEDGER_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Config {
            quick,
            rounds,
            single_n: if quick { 200 } else { 1000 },
            batch_size: 1000,
            batches: if quick { 20 } else { 100 },
            threads: 8,
            per_thread: if quick { 25 } else { 125 },
            verify_sizes: match std::env::var("LEDGER_BENCH_VERIFY_SIZES") {
                Ok(v) => v.split(',').map(|n| n.trim().parse().unwrap()).collect(),
                Err(_) if quick => vec![1_000, 10_000],
                Err(_) => vec![10_000, 100_000, 1_000_000],
            },
            reindex_max: std::env::var("LEDGER_BENCH_REINDEX_MAX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000),
            base,
        }
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn machine(cfg: &Config) -> String {
    let (cpus, model, kernel) = cpus_model_kernel();
    format!(
        "- machine: {cpus} CPUs, {model}, Linux {kernel}\n- bench directory: {} on {}\n- durability: every `Ledger::append` returns after `fdatasync` of the journal segment (group commit: concurrent callers share one); the raw baseline is `write` + `fdatasync` on a plain file in the same directory\n- build: `cargo bench` (release, line-table debug info); mode: {}",
        cfg.base.display(),
        fs_type(&cfg.base),
        if cfg.quick { "QUICK (small sizes)" } else { "full" }
    )
}

/// A synthetic file-change event shaped like one `ledger record` writes: one resource,
/// an agent with a principal, a generated change ID and one meta entry (~300 bytes).
fn event(i: u64, pool: &[Hash]) -> NewEvent {
    let old = pool[(i as usize) % pool.len()];
    let new = pool[(i as usize + 1) % pool.len()];
    let mut meta = BTreeMap::new();
    meta.insert("tool".to_string(), "edit".to_string());
    NewEvent {
        time_us: 1_795_000_000_000_000 + i as i64 * 1000,
        actor: Actor {
            agent: format!("agent-{}", i % 8),
            principal: Some("alice@example.com".into()),
            role: None,
        },
        change_id: format!("20261121-1941{:02}-{:06x}", i % 60, i & 0xff_ffff),
        correlation_id: None,
        body: Body::Change(Change {
            message: None,
            reverts: None,
            resources: vec![ResourceChange {
                key: ResourceKey::file(format!("src/mod_{}/file_{}.rs", i % 50, i % 7).as_bytes()),
                op: Op::Modify,
                old: Some(Content {
                    hash: old,
                    mode: Mode::Regular,
                    size: 1200 + i % 3000,
                }),
                new: Some(Content {
                    hash: new,
                    mode: Mode::Regular,
                    size: 1250 + i % 3000,
                }),
            }],
        }),
        meta,
    }
}

fn content_pool(l: &Ledger, n: usize) -> Vec<Hash> {
    let mut pending = Pending::default();
    let pool: Vec<Hash> = (0..n)
        .map(|i| {
            let body = format!("// file version {i}\nfn handler_{i}() {{}}\n");
            l.store().put_bytes(body.as_bytes(), &mut pending).unwrap()
        })
        .collect();
    l.commit_content(pending).unwrap();
    pool
}

fn bench_actor() -> Actor {
    Actor {
        agent: "bench".into(),
        principal: None,
        role: None,
    }
}

struct Fresh {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    pool: Vec<Hash>,
    work: PathBuf,
}

fn fresh(cfg: &Config, pool_size: usize) -> Fresh {
    let dir = tempfile::Builder::new()
        .prefix("ledger-bench-")
        .tempdir_in(&cfg.base)
        .unwrap();
    let ledger = Ledger::init(dir.path(), bench_actor()).unwrap();
    let pool = content_pool(&ledger, pool_size);
    let work = dir.path().to_path_buf();
    Fresh {
        _dir: dir,
        ledger,
        pool,
        work,
    }
}

/// Average canonical size and frame size of `event(i)` over a sample.
fn event_sizes(pool: &[Hash]) -> (f64, f64) {
    let n = 1000u64;
    let mut total = 0usize;
    let mut prev = Hash::ZERO;
    for i in 0..n {
        let ev = event(i, pool).seal(1_000_000 + i, prev);
        let b = ev.encode();
        total += b.len();
        prev = Hash::of_event_bytes(&b);
    }
    let avg = total as f64 / n as f64;
    (avg, avg + (FRAME_HEADER + FRAME_TRAILER) as f64)
}

/// Runs `blocks` blocks of each of the `sides` back to back, rotating which goes first,
/// and returns the total time each side took. Interleaving in small blocks makes every
/// side see the same (shared, noisy) disk.
fn interleave(blocks: usize, sides: &mut [&mut dyn FnMut(usize)]) -> Vec<Duration> {
    let n = sides.len();
    let mut total = vec![Duration::ZERO; n];
    for b in 0..blocks {
        for k in 0..n {
            let s = (b + k) % n;
            let t = Instant::now();
            (sides[s])(b);
            total[s] += t.elapsed();
        }
    }
    total
}

/// A plain file in `dir` that gets `write` + `fdatasync` per call.
struct Plain {
    file: File,
    path: PathBuf,
}

impl Plain {
    fn new(dir: &Path, name: &str) -> Plain {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        file.sync_all().unwrap();
        Plain { file, path }
    }
    fn write_sync(&mut self, buf: &[u8]) {
        self.file.write_all(buf).unwrap();
        self.file.sync_data().unwrap();
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A bare journal (no indexes, no lock) on `FsStorage` in `dir`.
fn bare_journal(dir: &Path, name: &str, pool: &[Hash]) -> ledger::Journal {
    let (mut j, _) =
        ledger::open_journal(Box::new(FsStorage::new(&dir.join(name)).unwrap())).unwrap();
    j.append(vec![event(0, pool)]).unwrap();
    j
}

fn met(v: f64, goal: f64) -> String {
    if v >= goal { "met" } else { "not met" }.into()
}

fn appends(cfg: &Config, frame: f64) {
    let rec = frame.round() as usize;
    let [mut raw_single, mut j_single, mut single, mut single_ratio, mut j_single_ratio] =
        [(); 5].map(|_| Vec::new());
    let [mut raw_batch, mut j_batch, mut batched, mut batch_ratio, mut j_batch_ratio] =
        [(); 5].map(|_| Vec::new());
    let [mut conc, mut conc_ratio, mut per_fsync] = [(); 3].map(|_| Vec::new());
    let mut n_ev = 0u64;
    for round in 0..cfg.rounds {
        let f = fresh(cfg, 64);
        // Warm up: segment file created, sled trees touched.
        let mut seq_i = 0u64;
        for _ in 0..20 {
            f.ledger
                .append(vec![event(seq_i, &f.pool)], Precondition::None)
                .unwrap();
            seq_i += 1;
        }
        // 1. One event per fsync: plain file, bare journal, ledger, interleaved in blocks.
        let block = 25;
        let blocks = cfg.single_n / block;
        let n1 = (blocks * block) as u64;
        let mut plain = Plain::new(&f.work, "plain-1");
        let mut jr = bare_journal(&f.work, "journal-1", &f.pool);
        let one = vec![0x5au8; rec];
        // Events are built before timing; the closures only append them.
        let mut j_evs = (1..=n1)
            .map(|k| event(k, &f.pool))
            .collect::<Vec<_>>()
            .into_iter();
        let mut l_evs = (seq_i..seq_i + n1)
            .map(|k| event(k, &f.pool))
            .collect::<Vec<_>>()
            .into_iter();
        let d = interleave(
            blocks,
            &mut [
                &mut |_| (0..block).for_each(|_| plain.write_sync(&one)),
                &mut |_| {
                    for e in j_evs.by_ref().take(block) {
                        jr.append(vec![e]).unwrap();
                    }
                },
                &mut |_| {
                    for e in l_evs.by_ref().take(block) {
                        f.ledger.append(vec![e], Precondition::None).unwrap();
                    }
                    // The time includes the background index writer catching up.
                    f.ledger.sync_index().unwrap();
                },
            ],
        );
        seq_i += n1;
        let (raw, jo, led) = (rate(n1, d[0]), rate(n1, d[1]), rate(n1, d[2]));
        raw_single.push(raw);
        j_single.push(jo);
        single.push(led);
        single_ratio.push(led / raw);
        j_single_ratio.push(jo / raw);

        // 2. Batches: the same bytes written + fdatasynced raw, bare journal, ledger;
        //    interleaved one call at a time.
        let mut plain = Plain::new(&f.work, "plain-b");
        let mut jr = bare_journal(&f.work, "journal-b", &f.pool);
        let big = vec![0x5au8; rec * cfg.batch_size];
        let bs = cfg.batch_size as u64;
        let batches_of = |first: u64| -> std::vec::IntoIter<Vec<NewEvent>> {
            (0..cfg.batches as u64)
                .map(|b| {
                    (first + b * bs..first + (b + 1) * bs)
                        .map(|k| event(k, &f.pool))
                        .collect()
                })
                .collect::<Vec<_>>()
                .into_iter()
        };
        let mut j_batches = batches_of(1);
        let mut l_batches = batches_of(seq_i);
        let d = interleave(
            cfg.batches,
            &mut [
                &mut |_| plain.write_sync(&big),
                &mut |_| {
                    jr.append(j_batches.next().unwrap()).unwrap();
                },
                &mut |_| {
                    f.ledger
                        .append(l_batches.next().unwrap(), Precondition::None)
                        .unwrap();
                    f.ledger.sync_index().unwrap();
                },
            ],
        );
        let nb = (cfg.batches * cfg.batch_size) as u64;
        seq_i += nb;
        let (raw_b, jo_b, led_b) = (rate(nb, d[0]), rate(nb, d[1]), rate(nb, d[2]));
        raw_batch.push(raw_b);
        j_batch.push(jo_b);
        batched.push(led_b);
        batch_ratio.push(led_b / raw_b);
        j_batch_ratio.push(jo_b / raw_b);
        drop(jr);
        drop(plain);

        // 3. Concurrent single-event appends on one shared Ledger.
        let start = seq_i;
        let f = &f;
        let t = Instant::now();
        let firsts: Vec<BTreeSet<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..cfg.threads)
                .map(|th| {
                    s.spawn(move || {
                        let mut firsts = BTreeSet::new();
                        for k in 0..cfg.per_thread {
                            let i = start + (th * cfg.per_thread + k) as u64;
                            let recs = f
                                .ledger
                                .append(vec![event(i, &f.pool)], Precondition::None)
                                .unwrap();
                            firsts.insert(recs[0].batch_first);
                        }
                        firsts
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let d = t.elapsed();
        let total = (cfg.threads * cfg.per_thread) as u64;
        let fsyncs: BTreeSet<u64> = firsts.into_iter().flatten().collect();
        let c = rate(total, d);
        conc.push(c);
        conc_ratio.push(c / led);
        per_fsync.push(total as f64 / fsyncs.len() as f64);
        n_ev = total;
        eprintln!(
            "round {}: single: raw {raw:.0}/s journal {jo:.0}/s ledger {led:.0}/s; batched: raw {raw_b:.0}/s journal {jo_b:.0}/s ledger {led_b:.0}/s; {} threads {c:.0}/s ({:.1} events/fsync)",
            round + 1,
            cfg.threads,
            per_fsync.last().unwrap()
        );
    }
    println!(
        "### Durable appends\n\nWorkload: `Body::Change` events, one resource each, {rec} bytes per journal frame; a fresh ledger per round; {} rounds; each figure is the median over rounds; ratios are the median of per-round ratios. Within a round the three sides run interleaved in blocks (25 single-event calls, or one 1,000-event call, each; the order rotates), so all three see the same shared disk.\n\n- ledger = `Ledger::append(events, Precondition::None)`: journal write + `fdatasync` + position file write, then return (the change index and the index state are updated by a background thread; sled only once a command has opened it, which this benchmark does not); each timed block ends with `Ledger::sync_index()`, so the figure includes the index catching up.\n- bare journal = `Journal::append` on `FsStorage` (same frames, same `fdatasync`, no indexes, no lock).\n- plain file = `write` of the same number of bytes + `fdatasync`, same directory.\n",
        cfg.rounds
    );
    let single_m = median(&single);
    let batched_m = median(&batched);
    table(
        &[
            "<workload",
            "ledger events/s",
            "bare journal events/s",
            "plain file events/s",
            "ledger / plain",
            "journal / plain",
            "<goal",
        ],
        &[
            vec![
                format!("1 event per call, {} calls", cfg.single_n),
                fmt_rate(single_m),
                fmt_rate(median(&j_single)),
                fmt_rate(median(&raw_single)),
                format!("{:.2}", median(&single_ratio)),
                format!("{:.2}", median(&j_single_ratio)),
                format!("≥ 3,000/s: {}", met(single_m, 3000.0)),
            ],
            vec![
                format!("{} events per call, {} calls", cfg.batch_size, cfg.batches),
                fmt_rate(batched_m),
                fmt_rate(median(&j_batch)),
                fmt_rate(median(&raw_batch)),
                format!("{:.2}", median(&batch_ratio)),
                format!("{:.2}", median(&j_batch_ratio)),
                format!("≥ 50,000/s: {}", met(batched_m, 50_000.0)),
            ],
        ],
    );
    println!(
        "Concurrent writers: {} threads, each {} single-event `append`s on one shared `Ledger` (group commit).\n",
        cfg.threads, cfg.per_thread
    );
    table(
        &[
            "<workload",
            "events/s",
            "1 thread, 1 event per call (same round)",
            "ratio",
            "events per fsync",
        ],
        &[vec![
            format!("{} threads × {} appends", cfg.threads, cfg.per_thread),
            fmt_rate(median(&conc)),
            fmt_rate(single_m),
            format!("{:.2}", median(&conc_ratio)),
            format!("{:.1}", median(&per_fsync)),
        ]],
    );
    println!(
        "Events per fsync is exact: {n_ev} events divided by the number of distinct `batch_first` values in the returned records (one journal batch = one `fdatasync`).\n"
    );
}

/// Reads every segment file and hashes every frame payload, a segment's payloads
/// together as the walks do (`Hash::of_event_bytes_many`), on one thread: the floor of
/// a walk that checks hashes (no decode, no chain check, no index).
fn read_and_hash(journal: &Path) -> u64 {
    let mut segs: Vec<PathBuf> = fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let mut n = 0u64;
    let mut buf = Vec::new();
    for s in segs {
        buf.clear();
        File::open(&s).unwrap().read_to_end(&mut buf).unwrap();
        let mut off = 0;
        let mut payloads = Vec::new();
        let mut stored = Vec::new();
        while off + FRAME_HEADER <= buf.len() {
            let len = u32::from_le_bytes(buf[off + 4..off + 8].try_into().unwrap()) as usize;
            payloads.push(&buf[off + FRAME_HEADER..off + FRAME_HEADER + len]);
            stored.push(&buf[off + FRAME_HEADER + len..off + FRAME_HEADER + len + FRAME_TRAILER]);
            off += FRAME_HEADER + len + FRAME_TRAILER;
        }
        let mut hashes = Vec::new();
        Hash::of_event_bytes_many(&payloads, &mut hashes);
        for (h, s) in hashes.iter().zip(&stored) {
            assert_eq!(h.as_bytes(), *s);
        }
        n += hashes.len() as u64;
    }
    n
}

fn time_it<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut secs = Vec::new();
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        last = Some(f());
        secs.push(t.elapsed().as_secs_f64());
    }
    (median(&secs), last.unwrap())
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// What a child process (this binary, re-executed) measured on an existing ledger:
/// open time, operation time and the child's peak RSS. A fresh process is what the CLI
/// runs, and its peak RSS belongs to the operation alone.
struct ChildRun {
    open_s: f64,
    op_s: f64,
    peak_mb: u64,
}

fn child(op: &str, ledger_dir: &Path) -> ChildRun {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("LEDGER_BENCH_CHILD", op)
        .env("LEDGER_BENCH_CHILD_DIR", ledger_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {op} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    ChildRun {
        open_s: v[0],
        op_s: v[1],
        peak_mb: v[2] as u64,
    }
}

/// The child side of [`child`]: prints `open_seconds op_seconds peak_rss_mb`.
fn child_main(op: &str, dir: &Path) {
    let t = Instant::now();
    let (led, report) = Ledger::open_dir(dir, &ledger::OpenOptions::default()).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    // A benchmark of opening must not silently include a rebuild.
    assert!(
        report.reindexed.is_none(),
        "child {op}: opening rebuilt the index: {:?}",
        report.reindexed
    );
    let t = Instant::now();
    match op {
        "verify" => {
            let rep = led
                .verify(VerifyOptions {
                    contents: false,
                    indexes: true,
                })
                .unwrap();
            assert!(rep.ok());
        }
        "reindex" => {
            led.reindex().unwrap();
        }
        other => panic!("unknown child op {other}"),
    }
    let op_s = t.elapsed().as_secs_f64();
    drop(led);
    println!("{open_s} {op_s} {}", (peak_rss_kib() / 1000));
}

fn verify_and_reindex(cfg: &Config, canonical: f64) {
    let tmp = tempfile::Builder::new()
        .prefix("ledger-bench-")
        .tempdir_in(&cfg.base)
        .unwrap();
    let mut led = Some(Ledger::init(tmp.path(), bench_actor()).unwrap());
    let pool = content_pool(led.as_ref().unwrap(), CONTENT_POOL);
    let ldir = led.as_ref().unwrap().dir().to_path_buf();
    let journal = ldir.join("journal");
    let mut rows = Vec::new();
    let mut reindex_rows = Vec::new();
    let mut built = 1u64; // genesis
    let chunk = 10_000u64;
    for &target in &cfg.verify_sizes {
        let l = led.as_ref().unwrap();
        let t = Instant::now();
        let from = built;
        while built < target {
            let n = chunk.min(target - built);
            let evs = (built..built + n).map(|i| event(i, &pool)).collect();
            l.append(evs, Precondition::None).unwrap();
            built += n;
        }
        l.flush().unwrap();
        let build_rate = rate(built - from, t.elapsed());
        let build_rss = peak_rss_kib() / 1000;
        eprintln!(
            "built {built} events in {:.1}s (journal {} MB, index {} MB)",
            t.elapsed().as_secs_f64(),
            dir_size(&journal) / 1_000_000,
            dir_size(&ldir.join("index")) / 1_000_000
        );
        let reps = if target >= 1_000_000 { 3 } else { 5 };
        let opts = VerifyOptions {
            contents: false,
            indexes: true,
        };
        let no_idx = VerifyOptions {
            contents: false,
            indexes: false,
        };
        // The four measurements interleaved, rotating the order every repetition.
        let mut secs: [Vec<f64>; 4] = Default::default();
        for rep in 0..reps {
            for k in 0..4 {
                let which = (rep + k) % 4;
                let t = Instant::now();
                let n = match which {
                    0 => read_and_hash(&journal),
                    1 => {
                        let mut n = 0u64;
                        l.scan(0, &mut |_| {
                            n += 1;
                            Ok(())
                        })
                        .unwrap();
                        n
                    }
                    _ => {
                        let r = l.verify(if which == 2 { opts } else { no_idx }).unwrap();
                        assert!(r.ok(), "verify found problems: {:?}", &r.problems[..1]);
                        r.events
                    }
                };
                secs[which].push(t.elapsed().as_secs_f64());
                assert_eq!(n, built);
            }
        }
        let [floor, walk, ver, ver_noidx] = secs.map(|v| median(&v));
        // What a fresh process (as `ledger verify` / `ledger reindex`) costs, with its
        // own peak RSS; this process lets go of the ledger (and its lock) meanwhile.
        drop(led.take());
        let cv = child("verify", &ldir);
        let r = |s: f64| rate(built, Duration::from_secs_f64(s));
        eprintln!(
            "{built}: floor {:.0}/s walk {:.0}/s verify {:.0}/s verify(no idx) {:.0}/s; child verify {:.2}s + {:.2}s open, {} MB",
            r(floor),
            r(walk),
            r(ver),
            r(ver_noidx),
            cv.op_s,
            cv.open_s,
            cv.peak_mb
        );
        rows.push(vec![
            fmt_rate(built as f64),
            format!("{}", dir_size(&journal) / 1_000_000),
            fmt_rate(r(ver)),
            fmt_rate(r(ver_noidx)),
            fmt_rate(r(walk)),
            fmt_rate(r(floor)),
            format!("{:.1}", ver / floor),
            format!("{:.2} + {:.2}", cv.open_s, cv.op_s),
            format!("{}", cv.peak_mb),
            fmt_rate(build_rate),
            format!("{build_rss}"),
            met(r(ver), 1_000_000.0),
        ]);
        if target <= cfg.reindex_max {
            let reps_ri = if target >= 1_000_000 { 1 } else { 3 };
            let runs: Vec<ChildRun> = (0..reps_ri).map(|_| child("reindex", &ldir)).collect();
            let ri = median(&runs.iter().map(|c| c.op_s).collect::<Vec<_>>());
            let peak = runs.iter().map(|c| c.peak_mb).max().unwrap();
            eprintln!("{built}: reindex {ri:.2}s, {peak} MB");
            reindex_rows.push(vec![
                fmt_rate(built as f64),
                format!("{ri:.2}"),
                fmt_rate(r(ri)),
                fmt_rate(r(walk)),
                format!("{:.0}", ri / walk),
                format!("{peak}"),
                format!("{}", dir_size(&ldir.join("index")) / 1_000_000),
            ]);
        }
        led = Some(
            Ledger::open_dir(&ldir, &ledger::OpenOptions::default())
                .unwrap()
                .0,
        );
    }
    let l = led.as_ref().unwrap();
    // What one content existence check costs (verify does one per distinct content hash).
    let (check, found) = time_it(5, || pool.iter().filter(|h| l.store().contains(h)).count());
    assert_eq!(found, pool.len());
    let check_us = check * 1e6 / pool.len() as f64;
    println!(
        "### Verify and the raw journal walk\n\nWorkload: `Body::Change` events of {canonical:.0} canonical bytes on average (one resource, agent with principal, generated change ID, one meta entry), written in batches of {chunk}; {CONTENT_POOL} distinct content blobs, all stored. Warm page cache (the journal was just written). Median of 5 repetitions (3 at 10^6); in each repetition the four measurements run back to back in rotating order.\n\n- verify = `Ledger::verify(VerifyOptions {{ contents: false, indexes: true }})` on the open ledger: every frame hash, chain link, seq and batch field, the position index compared entry by entry, and one existence check per distinct content hash.\n- walk = `Ledger::scan(0, ..)`: the journal walk alone (frame hash, decode, chain checks).\n- floor = read every segment file and BLAKE3 `derive_key` every payload (a segment's payloads together, `Hash::of_event_bytes_many`, one thread), nothing else (the least any checking walk must do).\n- fresh process = this benchmark re-executed as a child that opens the ledger (`Ledger::open_dir`) and verifies once, as `ledger verify` would; its peak RSS (VmHWM) is the child's own.\n"
    );
    table(
        &[
            "events",
            "journal MB",
            "verify events/s",
            "verify w/o indexes",
            "walk events/s",
            "floor (read+hash) events/s",
            "verify time / floor time",
            "fresh process: open + verify s",
            "fresh process peak RSS MB",
            "build: append events/s (10,000 per call)",
            "build: bench process peak RSS MB",
            "goal verify ≥ 1,000,000/s",
        ],
        &rows,
    );
    let last_verify = rows
        .last()
        .map(|r| r[2].replace(',', "").parse::<f64>().unwrap())
        .unwrap_or(f64::NAN);
    println!(
        "One content existence check (`ContentStore::contains`, a `stat`) took {check_us:.1} µs (median of 5 passes over the {CONTENT_POOL} stored blobs). This workload names only {CONTENT_POOL} distinct blobs; if every event named one new blob (as `ledger record` does), verify at the largest size would be bounded by 1 / (1/{} + {check_us:.1} µs) ≈ {} events/s (derived, not measured).\n",
        fmt_rate(last_verify),
        fmt_rate(1.0 / (1.0 / last_verify + check_us * 1e-6))
    );
    println!(
        "### Index rebuild\n\n`Ledger::reindex()` (clear every sled tree, walk the journal, add in batches of 4096, flush) in a fresh child process per run (median of 3; 1 at 10^6), compared with the in-process walk; sizes above {} are skipped unless `LEDGER_BENCH_REINDEX_MAX` allows them.\n",
        cfg.reindex_max
    );
    table(
        &[
            "events",
            "seconds",
            "events/s",
            "walk events/s",
            "reindex time / walk time",
            "peak RSS MB (child)",
            "index MB after",
        ],
        &reindex_rows,
    );
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
            "journal benchmark: skipped (run it with `cargo bench -p ledger --bench journal`)"
        );
        return;
    }
    let cfg = Config::from_env();
    let f = fresh(&cfg, 64);
    let (canonical, frame) = event_sizes(&f.pool);
    drop(f);
    println!("## Journal benchmarks\n\n{}\n", machine(&cfg));
    let only = std::env::var("LEDGER_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "appends" {
        appends(&cfg, frame);
    }
    if only.is_empty() || only == "verify" {
        verify_and_reindex(&cfg, canonical);
    }
}
