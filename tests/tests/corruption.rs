//! Corruption of a ledger at rest: random bit flips in the journal and the content
//! store, every header bit of the first and last records, truncation at every byte of
//! the last records, swapped records and swapped blobs. Every one must be found, named
//! (by seq for the journal, by content hash for the store), never accepted and never
//! met with a panic.
//!
//! What "detected" means, per place a bit can flip:
//!
//! - anything inside a journal frame (marker, length, payload, stored hash): the
//!   journal recovery that opening runs refuses it (`Error::Damaged` naming the seq),
//!   flags it (appends refused) or leaves it to the full walk, and `Ledger::verify`
//!   reports a `journal` problem naming the seq of that record;
//! - the frame's `batch_first`/`batch_last` fields, which the event hash does not
//!   cover: the same, except that the seq named may be the next record's (a batch that
//!   claims to go on is only contradicted by the record after it); see FORMAT.md;
//! - a content object (marker, codec byte, raw bytes or LZ4 frame): the object's hash
//!   is named as damaged. The one exception, counted and reported separately: a bit
//!   the LZ4 decoder ignores (such as the match-length nibble of a block's last
//!   token, or the top bit of the end mark), where the object provably still yields
//!   exactly its content (compared with the bytes read before the flip, and
//!   re-hashed). Nothing the ledger states has changed then, so `verify` rightly
//!   passes. Such a flip anywhere else (raw content, marker, codec byte) fails the
//!   test.
//!
//! In every case the damaged files are left byte for byte as they were (nothing is cut
//! or rewritten), and each check runs under `catch_unwind`, so a panic fails the test
//! naming the seed and the flipped bit.
//!
//! How the checks run, to keep 10,000 flips within CI time: every journal flip runs
//! the journal recovery exactly as `Ledger::open_dir` does (same files, same tail hint
//! and acknowledged seq from the index) and `Ledger::verify` through one open ledger
//! (its reads go to the files); every content flip runs the store's verification (what
//! `verify` runs per hash). One flip in 100 also goes the whole way
//! (`Ledger::open_dir` with index catch-up or rebuild, then a full `verify`), and 50
//! through the real `ledger verify` binary for its exit code (3) and message. The
//! fixture lives in `/dev/shm` when there is one, so opening thousands of times does
//! not wait on fsync.
//!
//! Knobs: `LEDGER_FLIPS` (number of flips, default 10,000; 100,000 with
//! `LEDGER_LONG=1`), `LEDGER_FLIP_SEED`, `LEDGER_FLIP_CLI` (flips run through the
//! binary, default 50).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ledger::{
    Actor, Body, Change, Check, Content, ContentStore, Error, Failure, FsStorage, Hash, IndexState,
    Journal, Ledger, Mode, NewEvent, Op, OpenOptions, Pending, Precondition, Recovery,
    ResourceChange, ResourceKey, VerifyOptions,
};

/// Segments rotate at this size in the fixture, so flips also hit sealed segments.
const SEGMENT_BYTES: u64 = 6_000;
const FIXTURE_SEED: u64 = 0x5eed_f11b;

fn long() -> bool {
    std::env::var("LEDGER_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

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
        principal: Some("fault-tests@example.com".into()),
        role: None,
    }
}

fn open_opts() -> OpenOptions {
    OpenOptions {
        lock_timeout: Duration::from_secs(10),
    }
}

fn event(change_id: &str, body: Body) -> NewEvent {
    NewEvent {
        time_us: 1_800_000_000_000_000,
        actor: actor("fault-agent"),
        change_id: change_id.to_string(),
        correlation_id: None,
        body,
        meta: BTreeMap::new(),
    }
}

/// The events of change `i`: one to three new files of mixed kinds (small raw
/// objects, compressible text, incompressible bytes, one large multi-block object),
/// stored and committed first; some changes carry a check (and a failure) in the same
/// batch, so batches of one, two and three records occur.
fn change_events(store: &ContentStore, rng: &mut Rng, i: usize) -> Vec<NewEvent> {
    let mut pending = Pending::default();
    let mut resources = Vec::new();
    let files = rng.range(1, 3);
    for k in 0..files {
        let bytes: Vec<u8> = if i == 4 && k == 0 {
            // Several LZ4 blocks (64 KiB each), partly compressible.
            (0..150_000u32)
                .flat_map(|n| [(n % 97) as u8, (n / 300) as u8])
                .take(150_000)
                .collect()
        } else {
            match rng.below(4) {
                0 => {
                    let n = rng.range(1, 200) as usize;
                    format!("small file {i}.{k}\n")
                        .bytes()
                        .cycle()
                        .take(n)
                        .collect()
                }
                1 => {
                    let n = rng.range(300, 5_000) as usize;
                    format!("line {i}.{k}: the quick brown fox jumps over the lazy dog\n")
                        .bytes()
                        .cycle()
                        .take(n)
                        .collect()
                }
                2 => {
                    let n = rng.range(300, 3_000) as usize;
                    rng.bytes(n)
                }
                _ => {
                    let n = rng.range(1, 255) as usize;
                    rng.bytes(n)
                }
            }
        };
        let hash = store.put_bytes(&bytes, &mut pending).unwrap();
        resources.push(ResourceChange {
            key: ResourceKey::file(format!("src/c{i:03}/f{k}.dat").as_bytes()),
            op: Op::Create,
            old: None,
            new: Some(Content {
                hash,
                mode: Mode::Regular,
                size: bytes.len() as u64,
            }),
        });
    }
    store.commit(pending).unwrap();
    let id = format!("change-{i:03}");
    let mut events = vec![event(
        &id,
        Body::Change(Change {
            message: Some(format!("change number {i}")),
            reverts: None,
            resources,
        }),
    )];
    if i % 4 == 1 || i % 4 == 2 {
        events.push(event(
            &id,
            Body::Check(Check {
                name: "unit-tests".into(),
                level: "blocking".into(),
                passed: !i.is_multiple_of(3),
                detail: Some(format!("run {i}")),
            }),
        ));
    }
    if i % 4 == 2 {
        events.push(event(
            &id,
            Body::Failure(Failure {
                stage: "deploy".into(),
                error: format!("failure {i}"),
                exit_code: Some(i as i32),
            }),
        ));
    }
    events
}

/// One journal frame as found on disk.
#[derive(Clone, Debug)]
struct Frame {
    path: PathBuf,
    off: usize,
    len: usize,
    seq: u64,
    batch_first: u64,
}

/// One content object file.
#[derive(Clone, Debug)]
struct Object {
    hash: Hash,
    path: PathBuf,
    codec: u8,
    len: usize,
}

/// The frames of every segment, in order, read from the frame headers:
/// `"LJR1" | payload_len u32 | batch_first u64 | batch_last u64 | payload | hash(32)`;
/// the payload starts with the event's seq (u64 LE).
fn read_frames(journal_dir: &Path) -> Vec<Frame> {
    let mut out = Vec::new();
    for path in files_under(journal_dir) {
        let seg = fs::read(&path).unwrap();
        let mut off = 0;
        while off < seg.len() {
            assert_eq!(&seg[off..off + 4], b"LJR1", "no frame at offset {off}");
            let plen = u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) as usize;
            let batch_first = u64::from_le_bytes(seg[off + 8..off + 16].try_into().unwrap());
            let seq = u64::from_le_bytes(seg[off + 24..off + 32].try_into().unwrap());
            let len = 24 + plen + 32;
            out.push(Frame {
                path: path.clone(),
                off,
                len,
                seq,
                batch_first,
            });
            off += len;
        }
    }
    out
}

fn read_objects(objects_dir: &Path) -> Vec<Object> {
    files_under(objects_dir)
        .into_iter()
        .filter(|p| !p.starts_with(objects_dir.join("tmp")))
        .map(|path| {
            let rel = path.strip_prefix(objects_dir).unwrap();
            let hex: String = rel
                .iter()
                .map(|c| c.to_str().unwrap().to_string())
                .collect();
            let bytes = fs::read(&path).unwrap();
            Object {
                hash: Hash::from_hex(&hex).unwrap_or_else(|| panic!("odd object name {hex}")),
                path,
                codec: bytes[4],
                len: bytes.len(),
            }
        })
        .collect()
}

/// A ledger with `changes` changes written in small segments, plus three appended
/// through `Ledger` (so the index knows the tail; the last is a batch of one), verified clean.
struct Fixture {
    env: TestEnvironment,
    frames: Vec<Frame>,
    objects: Vec<Object>,
    events: u64,
}

impl Fixture {
    fn build(changes: usize) -> Fixture {
        let env = TestEnvironment::new_in(&memory_temp_dir());
        drop(Ledger::init(env.workspace(), actor("builder")).unwrap());
        let dir = env.ledger_dir();
        let mut rng = Rng::new(FIXTURE_SEED);
        {
            let store = ContentStore::open(&dir.join("objects")).unwrap();
            let storage = FsStorage::new(&dir.join("journal")).unwrap();
            let (mut journal, rec) = Journal::open(Box::new(storage), None, None).unwrap();
            assert_eq!(rec, Recovery::default());
            journal.set_segment_target(SEGMENT_BYTES);
            for i in 0..changes {
                journal.append(change_events(&store, &mut rng, i)).unwrap();
            }
        }
        let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
        for i in changes..changes + 4 {
            let evs = change_events(ledger.store(), &mut rng, i);
            ledger.append(evs, Precondition::None).unwrap();
        }
        let rep = ledger.verify(VerifyOptions::default()).unwrap();
        assert!(rep.ok(), "the fixture does not verify: {:?}", rep.problems);
        ledger.flush().unwrap();
        drop(ledger);
        let frames = read_frames(&env.journal_dir());
        let objects = read_objects(&dir.join("objects"));
        assert_eq!(frames.len() as u64, rep.events);
        assert_eq!(objects.len() as u64, rep.contents_checked);
        Fixture {
            env,
            frames,
            objects,
            events: rep.events,
        }
    }

    fn dir(&self) -> PathBuf {
        self.env.ledger_dir()
    }

    fn segments(&self) -> Vec<PathBuf> {
        files_under(&self.env.journal_dir())
    }
}

/// Where in a file a flipped bit landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    FrameMarker,
    FrameLength,
    BatchFirst,
    BatchLast,
    Payload,
    EventHash,
    ObjectMarker,
    ObjectCodec,
    RawContent,
    Lz4Frame,
}

impl Region {
    fn of_frame_offset(rel: usize, frame_len: usize) -> Region {
        match rel {
            0..=3 => Region::FrameMarker,
            4..=7 => Region::FrameLength,
            8..=15 => Region::BatchFirst,
            16..=23 => Region::BatchLast,
            r if r >= frame_len - 32 => Region::EventHash,
            _ => Region::Payload,
        }
    }

    fn of_object_offset(rel: usize, codec: u8) -> Region {
        match (rel, codec) {
            (0..=3, _) => Region::ObjectMarker,
            (4, _) => Region::ObjectCodec,
            (_, 0) => Region::RawContent,
            _ => Region::Lz4Frame,
        }
    }

    fn is_batch_field(self) -> bool {
        matches!(self, Region::BatchFirst | Region::BatchLast)
    }
}

/// What must be named for a flip to count as detected.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A journal problem at this seq (or, for batch fields, the next one).
    Seq(u64),
    /// A content problem naming this hash.
    Hash(Hash),
}

#[derive(Clone, Debug)]
struct Flip {
    path: PathBuf,
    offset: usize,
    bit: u8,
    region: Region,
    expect: Expect,
}

impl Flip {
    fn random(fx: &Fixture, rng: &mut Rng) -> Flip {
        let bit = rng.below(8) as u8;
        if rng.chance(1, 2) {
            // A byte uniformly over all journal bytes.
            let total: usize = fx.frames.iter().map(|f| f.len).sum();
            let mut at = rng.below(total as u64) as usize;
            let f = fx
                .frames
                .iter()
                .find(|f| {
                    if at < f.len {
                        true
                    } else {
                        at -= f.len;
                        false
                    }
                })
                .unwrap();
            Flip {
                path: f.path.clone(),
                offset: f.off + at,
                bit,
                region: Region::of_frame_offset(at, f.len),
                expect: Expect::Seq(f.seq),
            }
        } else {
            // An object uniformly, then a byte in it (so small objects get their share).
            let o = &fx.objects[rng.below(fx.objects.len() as u64) as usize];
            let at = rng.below(o.len as u64) as usize;
            Flip {
                path: o.path.clone(),
                offset: at,
                bit,
                region: Region::of_object_offset(at, o.codec),
                expect: Expect::Hash(o.hash),
            }
        }
    }

    /// Flips the bit in place (the file keeps its inode; its mtime moves on).
    fn toggle(&self) -> std::io::Result<()> {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)?;
        let mut b = [0u8];
        f.read_exact_at(&mut b, self.offset as u64)?;
        b[0] ^= 1 << self.bit;
        f.write_all_at(&b, self.offset as u64)
    }

    fn describe(&self) -> String {
        format!(
            "bit {} of byte {} of {} ({:?}, expecting {:?})",
            self.bit,
            self.offset,
            self.path.display(),
            self.region,
            self.expect
        )
    }
}

/// How opening treated a damaged journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum AtOpen {
    /// `Error::Damaged`: the ledger does not open (the cut would reach acknowledged
    /// records).
    Refused,
    /// Opened with appends refused (damage before the tail, or found indexing).
    ReadOnly,
    /// Opened normally; only a full walk (`verify`) finds the damage.
    Unnoticed,
}

/// Whether `named` is an acceptable seq for a flip expecting `seq` in `region`.
fn seq_ok(named: u64, seq: u64, region: Region) -> bool {
    named == seq || (region.is_batch_field() && named == seq + 1)
}

/// The seq of the journal problem `verify` reports; an error if there is none, or if
/// its message does not name that seq.
fn journal_problem_seq(ledger: &Ledger, opts: VerifyOptions) -> Result<u64, String> {
    let rep = ledger
        .verify(opts)
        .map_err(|e| format!("verify failed to run: {e}"))?;
    let Some(p) = rep.problems.iter().find(|p| p.kind == "journal") else {
        return Err(format!(
            "verify found no journal problem (passed: {}): {:?}",
            rep.ok(),
            rep.problems
        ));
    };
    let named = p
        .seq
        .ok_or_else(|| format!("journal problem without a seq: {p:?}"))?;
    if !p.detail.contains(&format!("at seq {named} ")) {
        return Err(format!("the message does not name seq {named}: {p:?}"));
    }
    Ok(named)
}

/// The journal recovery `Ledger::open_dir` runs (same storage, same tail hint and
/// acknowledged seq from the index), without reopening the index database.
fn open_journal_as_ledger_does(
    journal_dir: &Path,
    state: &IndexState,
) -> Result<(AtOpen, Option<u64>), String> {
    let storage = FsStorage::new(journal_dir).unwrap();
    let acknowledged = state.tail.map(|t| t.head.seq);
    match Journal::open(Box::new(storage), state.tail, acknowledged) {
        Err(Error::Damaged { seq, .. }) => Ok((AtOpen::Refused, Some(seq))),
        Err(e) => Err(format!("opening failed without naming damage: {e}")),
        Ok((j, rec)) => {
            if rec != Recovery::default() {
                return Err(format!("opening cut the journal: {rec:?}"));
            }
            Ok(match j.damage() {
                Some(_) => (AtOpen::ReadOnly, None),
                None => (AtOpen::Unnoticed, None),
            })
        }
    }
}

/// Every journal segment's bytes, to prove checking changed nothing.
fn journal_snapshot(journal_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(journal_dir)
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Damaged journal bytes (already in place) against an open ledger: the recovery step
/// of opening must not accept or cut them, and `verify` must name a seq `seq_ok`
/// accepts (so must a refusal at open).
fn check_journal_damage(
    ledger: &Ledger,
    state: &IndexState,
    journal_dir: &Path,
    seq_ok: &dyn Fn(u64) -> bool,
) -> Result<(AtOpen, u64), String> {
    let before = journal_snapshot(journal_dir);
    let opened = open_journal_as_ledger_does(journal_dir, state);
    let named = journal_problem_seq(
        ledger,
        VerifyOptions {
            contents: false,
            indexes: true,
        },
    );
    if journal_snapshot(journal_dir) != before {
        return Err(format!(
            "the damaged journal was changed (open: {opened:?}; verify: {named:?})"
        ));
    }
    let (at_open, refused_seq) = opened?;
    let named = named?;
    for n in [Some(named), refused_seq].into_iter().flatten() {
        if !seq_ok(n) {
            return Err(format!("seq {n} named"));
        }
    }
    Ok((at_open, named))
}

/// Damaged journal bytes the whole way `ledger verify` takes them: open the ledger
/// (recovery, index catch-up, possibly a rebuild), then verify everything.
fn check_journal_damage_full(dir: &Path, seq_ok: &dyn Fn(u64) -> bool) -> Result<AtOpen, String> {
    let journal_dir = dir.join("journal");
    let before = journal_snapshot(&journal_dir);
    let result = match Ledger::open_dir(dir, &open_opts()) {
        Err(Error::Damaged { seq: named, .. }) => Ok((AtOpen::Refused, named)),
        Err(e) => Err(format!("opening failed without naming damage: {e}")),
        Ok((ledger, report)) => (|| {
            if report.recovery != Recovery::default() {
                return Err(format!("opening cut the journal: {:?}", report.recovery));
            }
            let at_open = if ledger.damaged().is_some() {
                AtOpen::ReadOnly
            } else {
                AtOpen::Unnoticed
            };
            Ok((
                at_open,
                journal_problem_seq(&ledger, VerifyOptions::default())?,
            ))
        })(),
    };
    if journal_snapshot(&journal_dir) != before {
        return Err(format!("the damaged journal was changed ({result:?})"));
    }
    let (at_open, named) = result?;
    if !seq_ok(named) {
        return Err(format!("seq {named} named"));
    }
    Ok(at_open)
}

fn check_journal_flip(
    ledger: &Ledger,
    state: &IndexState,
    journal_dir: &Path,
    flip: &Flip,
    seq: u64,
) -> Result<(AtOpen, u64), String> {
    check_journal_damage(ledger, state, journal_dir, &|n| seq_ok(n, seq, flip.region))
}

fn check_journal_flip_full(dir: &Path, flip: &Flip, seq: u64) -> Result<AtOpen, String> {
    check_journal_damage_full(dir, &|n| seq_ok(n, seq, flip.region))
}

/// How a content flip came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ContentOutcome {
    /// The object's hash was named as damaged.
    Named,
    /// The flip hit a bit the LZ4 decoder ignores and the object still decodes to
    /// exactly its content (compared with the bytes read before the flip, and
    /// re-hashed): nothing the ledger states changed. `EndMark`: bit 31 of the frame's
    /// end mark (read as an empty uncompressed block); `Other`: elsewhere in the frame
    /// (such as the match-length nibble of a block's last token, which LZ4 ignores).
    PreservedEndMark,
    PreservedOther,
}

/// Classifies a flip `verify` (or the store) did not report: only an LZ4 object that
/// still yields exactly its content may pass.
fn preserved(
    store: &ContentStore,
    flip: &Flip,
    hash: Hash,
    original: &[u8],
) -> Result<ContentOutcome, String> {
    if flip.region != Region::Lz4Frame {
        return Err("accepted: the damage was not reported".into());
    }
    let got = store
        .get(&hash)
        .map_err(|e| format!("not reported, but reading fails: {e}"))?;
    if got != original {
        return Err("accepted: not reported, but the content changed".into());
    }
    let len = fs::metadata(&flip.path).unwrap().len() as usize;
    Ok(if flip.offset >= len - 4 {
        ContentOutcome::PreservedEndMark
    } else {
        ContentOutcome::PreservedOther
    })
}

/// A content flip through the store's verification (what `verify` runs per hash).
fn check_content_flip(
    store: &ContentStore,
    flip: &Flip,
    hash: Hash,
    original: &[u8],
) -> Result<ContentOutcome, String> {
    match store.verify(&hash) {
        Err(e @ Error::CorruptContent { hash: h, .. }) if h == hash => {
            if e.to_string().contains(&hash.to_hex()) {
                Ok(ContentOutcome::Named)
            } else {
                Err(format!("the message does not name the hash: {e}"))
            }
        }
        Err(e) => Err(format!("unexpected error: {e}")),
        Ok(_) => preserved(store, flip, hash, original),
    }
}

/// A content flip through `Ledger::verify`: the object must be the one problem.
fn check_content_flip_full(
    ledger: &Ledger,
    flip: &Flip,
    hash: Hash,
    original: &[u8],
) -> Result<ContentOutcome, String> {
    let rep = ledger
        .verify(VerifyOptions::default())
        .map_err(|e| format!("verify failed to run: {e}"))?;
    match rep.problems.as_slice() {
        [p] if p.kind == "content" && p.hash == Some(hash) && p.seq.is_some() => {
            if p.detail.contains(&hash.to_hex()) {
                Ok(ContentOutcome::Named)
            } else {
                Err(format!("the message does not name the hash: {p:?}"))
            }
        }
        [] => preserved(ledger.store(), flip, hash, original),
        other => Err(format!("wrong problems reported: {other:?}")),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-text panic".into())
}

/// Runs `check` with the flip applied, undoes the flip, and turns an error or a panic
/// into a test failure naming the flip and the seed.
fn with_flip<T>(i: usize, flip: &Flip, seed: u64, check: impl FnOnce() -> Result<T, String>) -> T {
    flip.toggle().unwrap();
    let r = catch_unwind(AssertUnwindSafe(check));
    let restored = flip.toggle();
    let why = match (r, restored) {
        (Ok(Ok(x)), Ok(())) => return x,
        (Ok(Ok(_)), Err(e)) => format!("passed, but the file cannot be restored: {e}"),
        (Ok(Err(why)), _) => why,
        (Err(p), _) => format!("panicked: {}", panic_text(p)),
    };
    panic!(
        "flip #{i} (rerun with LEDGER_FLIP_SEED={seed}): {}: {why}",
        flip.describe()
    )
}

/// One flip in this many also goes the whole way (`Ledger::open_dir` + full verify).
const FULL_PATH_EVERY: usize = 100;

#[test]
fn random_bit_flips_are_all_detected_and_named() {
    let fx = Fixture::build(40);
    let dir = fx.dir();
    let journal_dir = fx.env.journal_dir();
    let n = env_u64("LEDGER_FLIPS", if long() { 100_000 } else { 10_000 });
    let (mut rng, seed) = Rng::from_env("LEDGER_FLIP_SEED");
    let flips: Vec<Flip> = (0..n).map(|_| Flip::random(&fx, &mut rng)).collect();
    eprintln!(
        "fixture in {}: {} events in {} segments, {} content objects ({} raw, {} LZ4); {n} flips",
        fx.env.root().display(),
        fx.events,
        fx.segments().len(),
        fx.objects.len(),
        fx.objects.iter().filter(|o| o.codec == 0).count(),
        fx.objects.iter().filter(|o| o.codec == 1).count(),
    );
    // region -> (flips, named)
    let mut by_region: BTreeMap<Region, (u64, u64)> = BTreeMap::new();
    let mut by_open: BTreeMap<AtOpen, u64> = BTreeMap::new();
    let mut by_content: BTreeMap<ContentOutcome, u64> = BTreeMap::new();
    let mut named_next = 0u64;
    let mut full_journal = 0u64;
    let mut full_content = 0u64;
    let mut content_outcomes: BTreeMap<usize, ContentOutcome> = BTreeMap::new();

    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    let state = ledger.index().unwrap().state().unwrap();
    let originals: BTreeMap<Hash, Vec<u8>> = fx
        .objects
        .iter()
        .map(|o| (o.hash, ledger.store().get(&o.hash).unwrap()))
        .collect();
    let t = Instant::now();
    for (i, flip) in flips.iter().enumerate() {
        let e = by_region.entry(flip.region).or_default();
        e.0 += 1;
        match flip.expect {
            Expect::Hash(hash) => {
                let orig = &originals[&hash];
                let outcome = if i.is_multiple_of(FULL_PATH_EVERY) {
                    full_content += 1;
                    with_flip(i, flip, seed, || {
                        check_content_flip_full(&ledger, flip, hash, orig)
                    })
                } else {
                    with_flip(i, flip, seed, || {
                        check_content_flip(ledger.store(), flip, hash, orig)
                    })
                };
                if outcome == ContentOutcome::Named {
                    e.1 += 1;
                }
                *by_content.entry(outcome).or_default() += 1;
                content_outcomes.insert(i, outcome);
            }
            Expect::Seq(seq) => {
                let (at_open, named) = with_flip(i, flip, seed, || {
                    check_journal_flip(&ledger, &state, &journal_dir, flip, seq)
                });
                e.1 += 1;
                *by_open.entry(at_open).or_default() += 1;
                if named != seq {
                    named_next += 1;
                }
            }
        }
    }
    let rep = ledger.verify(VerifyOptions::default()).unwrap();
    assert!(
        rep.ok(),
        "the restored ledger does not verify: {:?}",
        rep.problems
    );
    drop(ledger);
    let in_process = t.elapsed();

    // A sample of the journal flips again, each through a fresh `Ledger::open_dir`.
    let t = Instant::now();
    let mut full_open: BTreeMap<AtOpen, u64> = BTreeMap::new();
    for (i, flip) in flips.iter().enumerate().step_by(FULL_PATH_EVERY) {
        let Expect::Seq(seq) = flip.expect else {
            continue;
        };
        full_journal += 1;
        let at_open = with_flip(i, flip, seed, || check_journal_flip_full(&dir, flip, seq));
        *full_open.entry(at_open).or_default() += 1;
    }
    let full_time = t.elapsed();

    // Some through the real binary: exit 3 and the seq or hash in its message.
    let t = Instant::now();
    let cli_n = env_u64("LEDGER_FLIP_CLI", 50) as usize;
    let step = (flips.len() / cli_n.max(1)).max(1);
    let mut cli_runs = 0;
    for (i, flip) in flips
        .iter()
        .enumerate()
        .skip(step / 2)
        .step_by(step)
        .take(cli_n)
    {
        let out = with_flip(i, flip, seed, || {
            let before = journal_snapshot(&journal_dir);
            let out = fx.env.run(["verify"]);
            if journal_snapshot(&journal_dir) != before {
                return Err(format!("`ledger verify` changed the journal: {out:?}"));
            }
            Ok(out)
        });
        let ctx = format!("flip #{i} through `ledger verify`: {}", flip.describe());
        assert_ne!(out.code, 101, "{ctx}: panicked: {out:?}");
        match flip.expect {
            Expect::Seq(seq) => {
                assert_eq!(out.code, EXIT_VERIFY, "{ctx}: {out:?}");
                let names = |s: u64| out.stderr.contains(&format!("damaged at seq {s} "));
                assert!(
                    names(seq) || (flip.region.is_batch_field() && names(seq + 1)),
                    "{ctx}: seq {seq} not named: {out:?}"
                );
            }
            Expect::Hash(hash) => {
                if content_outcomes[&i] == ContentOutcome::Named {
                    assert_eq!(out.code, EXIT_VERIFY, "{ctx}: {out:?}");
                    assert!(out.stderr.contains(&hash.to_hex()), "{ctx}: {out:?}");
                } else {
                    out.success();
                }
            }
        }
        cli_runs += 1;
    }
    let cli_time = t.elapsed();

    // Everything restored: the ledger verifies and takes appends again.
    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    let rep = ledger.verify(VerifyOptions::default()).unwrap();
    assert!(
        rep.ok(),
        "the restored ledger does not verify: {:?}",
        rep.problems
    );
    assert_eq!(rep.events, fx.events);
    let evs = change_events(ledger.store(), &mut Rng::new(1), 999);
    ledger.append(evs, Precondition::None).unwrap();
    assert!(ledger.verify(VerifyOptions::default()).unwrap().ok());

    let total: u64 = by_region.values().map(|v| v.0).sum();
    let named: u64 = by_region.values().map(|v| v.1).sum();
    let kept: u64 = by_content
        .iter()
        .filter(|(o, _)| **o != ContentOutcome::Named)
        .map(|(_, k)| k)
        .sum();
    assert_eq!(total, n);
    assert_eq!(named + kept, n);
    eprintln!("flips run {total}: detected and named {named}; content provably unchanged {kept}");
    for (r, (run, det)) in &by_region {
        eprintln!("  {r:?}: {run} run, {det} named");
    }
    for (o, k) in &by_content {
        eprintln!("  content flips {o:?}: {k}");
    }
    for (o, k) in &by_open {
        eprintln!("  journal flips at open: {o:?}: {k}");
    }
    eprintln!("  batch-field flips named at the next seq: {named_next}");
    eprintln!(
        "  also through Ledger::open_dir + full verify: {full_journal} journal flips ({full_open:?}), {full_content} content flips"
    );
    eprintln!(
        "  through the `ledger` binary: {cli_runs} flips, each exit 3 naming the seq or hash"
    );
    eprintln!(
        "in-process flips took {in_process:?}; full-path journal sample {full_time:?}; binary {cli_time:?}"
    );
}

/// Every bit of the frame headers (marker, length, batch fields: the bytes the event
/// hash does not cover) of the first records and the last records, where a damaged
/// batch field could pass for a batch still being written.
#[test]
fn every_header_bit_of_the_first_and_last_records_is_detected() {
    let fx = Fixture::build(40);
    let dir = fx.dir();
    let journal_dir = fx.env.journal_dir();
    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    let state = ledger.index().unwrap().state().unwrap();
    let k = fx.frames.len();
    let mut picked: Vec<&Frame> = fx.frames[..4].iter().collect();
    picked.extend(&fx.frames[k - 8..]);
    // The first record of every segment, too.
    picked.extend(fx.frames.iter().filter(|f| f.off == 0 && f.seq > 3));
    let mut count = 0usize;
    let mut by_open: BTreeMap<AtOpen, u64> = BTreeMap::new();
    for f in picked {
        for rel in 0..24 {
            for bit in 0..8 {
                let flip = Flip {
                    path: f.path.clone(),
                    offset: f.off + rel,
                    bit,
                    region: Region::of_frame_offset(rel, f.len),
                    expect: Expect::Seq(f.seq),
                };
                let (at_open, _) = with_flip(count, &flip, 0, || {
                    check_journal_flip(&ledger, &state, &journal_dir, &flip, f.seq)
                });
                *by_open.entry(at_open).or_default() += 1;
                count += 1;
            }
        }
    }
    eprintln!("{count} header bits flipped, each detected and named; at open: {by_open:?}");
}

// ---- truncation ------------------------------------------------------------------------

fn small_event(i: u64) -> NewEvent {
    event(
        &format!("t{i}"),
        Body::Failure(Failure {
            stage: "s".into(),
            error: format!("e{i}"),
            exit_code: None,
        }),
    )
}

/// Puts `.ledger/` back to a copy taken earlier.
fn restore_ledger(dir: &Path, backup: &Path) {
    fs::remove_dir_all(dir).unwrap();
    copy_tree(backup, dir);
}

/// What the index knows when the journal turns out cut short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexKnows {
    /// Everything up to the last record: every cut reaches acknowledged records.
    Everything,
    /// Everything before the last batch (its append never returned: a torn write).
    BeforeLastBatch,
    /// No index at all: nothing says what was acknowledged.
    Nothing,
}

/// Cuts the segment at every length from the start of the third-to-last record to one
/// byte short of the end, under each [`IndexKnows`]. The tail is `.. [n-2] [n-1, n]`:
/// a batch of one, then a batch of two.
///
/// - `Everything`: opening refuses (`Error::Damaged` naming the first damaged or
///   missing record, or the first of its batch) and changes nothing;
/// - `BeforeLastBatch`: a cut inside the last batch is a torn write: it is cut back to
///   the end of seq n-2 and reported (bytes cut, whole records dropped), the ledger
///   verifies and the next append gets seq n-1; a cut reaching n-2 is refused as above;
/// - `Nothing`: every cut is taken for a torn write and cut back to the last whole
///   batch (reported); the rest verifies and appends resume. Without the index only a
///   signed checkpoint can tell a cut from a crash (`ledger verify --checkpoints`).
#[test]
fn truncation_at_every_byte_of_the_last_records() {
    let env = TestEnvironment::new_in(&memory_temp_dir());
    let dir = env.ledger_dir();
    let backup_all = env.root().join("backup-all");
    let backup_before = env.root().join("backup-before-last-batch");
    {
        let ledger = Ledger::init(env.workspace(), actor("builder")).unwrap();
        for i in 1..=4 {
            ledger
                .append(vec![small_event(i)], Precondition::None)
                .unwrap();
        }
        ledger.flush().unwrap();
    }
    copy_tree(&dir, &backup_before);
    {
        let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
        ledger
            .append(vec![small_event(5), small_event(6)], Precondition::None)
            .unwrap();
        ledger.flush().unwrap();
    }
    copy_tree(&dir, &backup_all);
    let frames = read_frames(&env.journal_dir());
    let seg = env.segment0();
    let full = fs::read(&seg).unwrap();
    let n = frames.len();
    assert_eq!(n, 7);
    let (r2, r1, r0) = (&frames[n - 3], &frames[n - 2], &frames[n - 1]);
    assert_eq!((r1.batch_first, r0.batch_first), (r1.seq, r1.seq));
    assert_eq!(r2.batch_first, r2.seq);
    let kept_end = r1.off; // end of seq n-2, start of the last batch
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let t = Instant::now();
    for knows in [
        IndexKnows::Everything,
        IndexKnows::BeforeLastBatch,
        IndexKnows::Nothing,
    ] {
        for cut in r2.off..full.len() {
            let ctx = format!("{knows:?}, journal cut to {cut} of {} bytes", full.len());
            match knows {
                IndexKnows::BeforeLastBatch => restore_ledger(&dir, &backup_before),
                _ => restore_ledger(&dir, &backup_all),
            }
            if knows == IndexKnows::Nothing {
                fs::remove_dir_all(dir.join("index")).unwrap();
            }
            fs::write(&seg, &full[..cut]).unwrap();
            // The record the cut falls in (or the first one missing, at a boundary).
            let hit = frames
                .iter()
                .find(|f| cut >= f.off && cut < f.off + f.len)
                .unwrap();
            let refuse = match knows {
                IndexKnows::Everything => true,
                IndexKnows::BeforeLastBatch => cut < kept_end,
                IndexKnows::Nothing => false,
            };
            let r = catch_unwind(AssertUnwindSafe(|| Ledger::open_dir(&dir, &open_opts())));
            let r = r.unwrap_or_else(|p| panic!("{ctx}: open panicked: {}", panic_text(p)));
            if refuse {
                match r {
                    Err(Error::Damaged { seq, .. }) => assert!(
                        seq == hit.seq || seq == hit.batch_first,
                        "{ctx}: named seq {seq}, expected {} (batch from {})",
                        hit.seq,
                        hit.batch_first
                    ),
                    Err(e) => panic!("{ctx}: refused without naming damage: {e}"),
                    Ok((l, rep)) => panic!(
                        "{ctx}: accepted (damaged: {:?}, recovery {:?}, reindexed {:?}, head {:?})",
                        l.damaged(),
                        rep.recovery,
                        rep.reindexed,
                        l.head()
                    ),
                }
                assert_eq!(
                    fs::read(&seg).unwrap(),
                    &full[..cut],
                    "{ctx}: the journal was changed"
                );
                *counts.entry(format!("{knows:?}: refused")).or_default() += 1;
                continue;
            }
            let (ledger, report) = r.unwrap_or_else(|e| panic!("{ctx}: refused: {e}"));
            // Back to the end of the last whole batch before the cut.
            let batch_start = frames
                .iter()
                .find(|f| f.seq == hit.batch_first)
                .unwrap()
                .off;
            let cut_back = if cut == batch_start {
                0
            } else {
                cut - batch_start
            };
            let dropped: Vec<u64> = frames
                .iter()
                .filter(|f| f.off >= batch_start && f.off + f.len <= cut)
                .map(|f| f.seq)
                .collect();
            assert_eq!(
                report.recovery.cut_bytes, cut_back as u64,
                "{ctx}: {report:?}"
            );
            assert_eq!(report.recovery.dropped, dropped, "{ctx}");
            assert!(report.damaged.is_none(), "{ctx}: {report:?}");
            assert_eq!(
                fs::metadata(&seg).unwrap().len(),
                batch_start as u64,
                "{ctx}"
            );
            let head = hit.batch_first - 1;
            assert_eq!(ledger.head().unwrap().seq, head, "{ctx}");
            let rep = ledger.verify(VerifyOptions::default()).unwrap();
            assert!(rep.ok(), "{ctx}: {:?}", rep.problems);
            assert_eq!(rep.events, head + 1, "{ctx}");
            let recs = ledger
                .append(vec![small_event(100)], Precondition::None)
                .unwrap_or_else(|e| panic!("{ctx}: append after recovery: {e}"));
            assert_eq!(recs[0].event.seq, head + 1, "{ctx}");
            assert!(
                ledger.verify(VerifyOptions::default()).unwrap().ok(),
                "{ctx}"
            );
            *counts.entry(format!("{knows:?}: recovered")).or_default() += 1;
        }
    }
    eprintln!(
        "{} cuts per mode over seqs {}..={} ({} bytes): {counts:?} in {:?}",
        full.len() - r2.off,
        r2.seq,
        r0.seq,
        full.len() - r2.off,
        t.elapsed()
    );

    // The real binary says the same: exit 3 naming the seq when acknowledged records
    // are cut, and nothing changes.
    for cut in [
        r2.off,
        r2.off + 1,
        r1.off,
        r1.off + 30,
        r0.off,
        r0.off + r0.len / 2,
        full.len() - 1,
    ] {
        restore_ledger(&dir, &backup_all);
        fs::write(&seg, &full[..cut]).unwrap();
        let hit = frames
            .iter()
            .find(|f| cut >= f.off && cut < f.off + f.len)
            .unwrap();
        let out = env.run(["verify"]).expect_code(EXIT_VERIFY);
        assert!(
            out.stderr.contains(&format!("damaged at seq {} ", hit.seq))
                || out
                    .stderr
                    .contains(&format!("damaged at seq {} ", hit.batch_first)),
            "cut at {cut}: {out:?}"
        );
        assert_eq!(fs::read(&seg).unwrap(), &full[..cut], "cut at {cut}");
    }
}

// ---- swapped records and blobs ---------------------------------------------------------

/// `bytes` with frames `a` and `b` (whole, `a` first, same segment) exchanged.
fn swap_frames(bytes: &[u8], a: &Frame, b: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..a.off]);
    out.extend_from_slice(&bytes[b.off..b.off + b.len]);
    out.extend_from_slice(&bytes[a.off + a.len..b.off]);
    out.extend_from_slice(&bytes[a.off..a.off + a.len]);
    out.extend_from_slice(&bytes[b.off + b.len..]);
    out
}

/// Every pair of whole frames within a segment exchanged, and a sample of pairs across
/// two segments: `verify` names the seq expected where the first of the two was, and
/// opening neither accepts nor cuts anything.
#[test]
fn swapped_records_are_detected_naming_the_seq() {
    let fx = Fixture::build(40);
    let dir = fx.dir();
    let journal_dir = fx.env.journal_dir();
    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    let state = ledger.index().unwrap().state().unwrap();
    let mut by_segment: BTreeMap<PathBuf, Vec<&Frame>> = BTreeMap::new();
    for f in &fx.frames {
        by_segment.entry(f.path.clone()).or_default().push(f);
    }
    // (what, damaged segment bytes, seqs that may be named)
    type Case = (String, Vec<(PathBuf, Vec<u8>)>, Vec<u64>);
    let mut cases: Vec<Case> = Vec::new();
    for (path, frames) in &by_segment {
        let good = fs::read(path).unwrap();
        for (x, a) in frames.iter().enumerate() {
            for b in &frames[x + 1..] {
                cases.push((
                    format!("seqs {} and {} swapped in {}", a.seq, b.seq, path.display()),
                    vec![(path.clone(), swap_frames(&good, a, b))],
                    vec![a.seq],
                ));
            }
        }
    }
    let within = cases.len();
    // Across segments: frame `a` of one segment and `b` of a later one.
    let segs: Vec<&PathBuf> = by_segment.keys().collect();
    let mut rng = Rng::new(7);
    for _ in 0..60 {
        let s1 = rng.below(segs.len() as u64 - 1) as usize;
        let s2 = rng.range(s1 as u64 + 1, segs.len() as u64 - 1) as usize;
        let f1 = by_segment[segs[s1]][rng.below(by_segment[segs[s1]].len() as u64) as usize];
        let f2 = by_segment[segs[s2]][rng.below(by_segment[segs[s2]].len() as u64) as usize];
        let (g1, g2) = (fs::read(segs[s1]).unwrap(), fs::read(segs[s2]).unwrap());
        let mut n1 = g1[..f1.off].to_vec();
        n1.extend_from_slice(&g2[f2.off..f2.off + f2.len]);
        n1.extend_from_slice(&g1[f1.off + f1.len..]);
        let mut n2 = g2[..f2.off].to_vec();
        n2.extend_from_slice(&g1[f1.off..f1.off + f1.len]);
        n2.extend_from_slice(&g2[f2.off + f2.len..]);
        cases.push((
            format!("seq {} and seq {} swapped across segments", f1.seq, f2.seq),
            vec![(segs[s1].clone(), n1), (segs[s2].clone(), n2)],
            // Both places are damaged: verify meets the first, opening looks at the
            // last segment only.
            vec![f1.seq, f2.seq],
        ));
    }
    let originals = journal_snapshot(&journal_dir);
    let restore = || {
        for (p, b) in &originals {
            fs::write(p, b).unwrap();
        }
    };
    let run = |what: &str, files: &[(PathBuf, Vec<u8>)], check: &dyn Fn() -> Result<(), String>| {
        for (p, b) in files {
            fs::write(p, b).unwrap();
        }
        let r = catch_unwind(AssertUnwindSafe(check));
        restore();
        match r {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("{what}: {why}"),
            Err(p) => panic!("{what}: panicked: {}", panic_text(p)),
        }
    };
    let t = Instant::now();
    for (what, files, seqs) in &cases {
        run(what, files, &|| {
            check_journal_damage(&ledger, &state, &journal_dir, &|n| seqs.contains(&n)).map(|_| ())
        });
    }
    drop(ledger);
    // A sample the whole way, and a few through the binary.
    for (what, files, seqs) in cases.iter().step_by(25) {
        run(what, files, &|| {
            check_journal_damage_full(&dir, &|n| seqs.contains(&n)).map(|_| ())
        });
    }
    for (what, files, seqs) in cases.iter().step_by(cases.len() / 6) {
        run(what, files, &|| {
            let out = fx.env.run(["verify"]);
            let named = seqs
                .iter()
                .any(|s| out.stderr.contains(&format!("damaged at seq {s} ")));
            if out.code == EXIT_VERIFY && named {
                Ok(())
            } else {
                Err(format!("through the binary: {out:?}"))
            }
        });
    }
    eprintln!(
        "{} swaps ({within} within a segment, {} across), each named; {:?}",
        cases.len(),
        cases.len() - within,
        t.elapsed()
    );
    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    assert!(ledger.verify(VerifyOptions::default()).unwrap().ok());
}

/// Two objects' files exchanged: each now holds the other's content under the wrong
/// name; `verify` names both hashes and nothing else.
#[test]
fn swapped_blobs_are_detected_naming_both_hashes() {
    let fx = Fixture::build(40);
    let dir = fx.dir();
    let (ledger, _) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    let mut pairs = Vec::new();
    for (x, a) in fx.objects.iter().enumerate() {
        for b in &fx.objects[x + 1..] {
            pairs.push((a, b));
        }
    }
    let t = Instant::now();
    let mut full = 0;
    for (k, (a, b)) in pairs.iter().enumerate() {
        let (ba, bb) = (fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());
        fs::write(&a.path, &bb).unwrap();
        fs::write(&b.path, &ba).unwrap();
        let check = || -> Result<(), String> {
            for o in [a, b] {
                match ledger.store().verify(&o.hash) {
                    Err(Error::CorruptContent { hash, actual }) if hash == o.hash => {
                        if actual == o.hash {
                            return Err("reported with its own hash as actual".into());
                        }
                    }
                    other => return Err(format!("{}: {other:?}", o.hash)),
                }
            }
            if k % 40 == 0 {
                let rep = ledger
                    .verify(VerifyOptions::default())
                    .map_err(|e| e.to_string())?;
                let mut named: Vec<Hash> = rep
                    .problems
                    .iter()
                    .filter(|p| p.kind == "content")
                    .filter_map(|p| p.hash)
                    .collect();
                named.sort();
                let mut want = vec![a.hash, b.hash];
                want.sort();
                if named != want || rep.problems.len() != 2 {
                    return Err(format!("verify reported {:?}", rep.problems));
                }
            }
            Ok(())
        };
        let r = catch_unwind(AssertUnwindSafe(check));
        fs::write(&a.path, &ba).unwrap();
        fs::write(&b.path, &bb).unwrap();
        let what = format!("objects {} and {} swapped", a.hash, b.hash);
        match r {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("{what}: {why}"),
            Err(p) => panic!("{what}: panicked: {}", panic_text(p)),
        }
        if k % 40 == 0 {
            full += 1;
        }
    }
    drop(ledger);
    // Through the binary: exit 3, both hashes named.
    let (a, b) = pairs[pairs.len() / 2];
    let (ba, bb) = (fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());
    fs::write(&a.path, &bb).unwrap();
    fs::write(&b.path, &ba).unwrap();
    let out = fx.env.run(["verify"]).expect_code(EXIT_VERIFY);
    fs::write(&a.path, &ba).unwrap();
    fs::write(&b.path, &bb).unwrap();
    assert!(out.stderr.contains("2 problem(s)"), "{out:?}");
    for h in [a.hash, b.hash] {
        assert!(out.stderr.contains(&h.to_hex()), "{h} not named: {out:?}");
    }
    eprintln!(
        "{} blob pairs swapped, each pair named ({full} also through Ledger::verify); {:?}",
        pairs.len(),
        t.elapsed()
    );
    fx.env.verify_ok();
}

// ---- damage, reopen, repair, again --------------------------------------------------

/// Damage comes and goes (a bad read, a copy restored from backup) while the ledger is
/// opened again and again in one process: each open must refuse or flag the damage
/// without cutting anything, and once repaired the ledger must verify whole, indexes
/// included. This is what opening does to the index in between: rebuilds that stop at
/// the damage (possibly in the middle of a batch), catch-up from there after the
/// repair, and reopening right after the previous instance closed.
#[test]
fn damage_reopen_repair_cycles_leave_the_ledger_whole() {
    let fx = Fixture::build(40);
    let dir = fx.dir();
    let mut rng = Rng::new(0xd1ce);
    let rounds = if long() { 1_000 } else { 100 };
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..rounds {
        let f = &fx.frames[rng.below(fx.frames.len() as u64) as usize];
        let rel = rng.below(f.len as u64) as usize;
        let flip = Flip {
            path: f.path.clone(),
            offset: f.off + rel,
            bit: rng.below(8) as u8,
            region: Region::of_frame_offset(rel, f.len),
            expect: Expect::Seq(f.seq),
        };
        let at_open = with_flip(k, &flip, 0xd1ce, || {
            check_journal_damage_full(&dir, &|n| seq_ok(n, f.seq, flip.region))
        });
        *outcomes.entry(format!("{at_open:?}")).or_default() += 1;
        // Repaired: the next open is clean and the index whole again.
        let ctx = format!("round {k}, after repairing {}", flip.describe());
        let (ledger, report) = Ledger::open_dir(&dir, &open_opts())
            .unwrap_or_else(|e| panic!("{ctx}: the repaired ledger does not open: {e}"));
        assert_eq!(report.recovery, Recovery::default(), "{ctx}");
        assert!(
            ledger.damaged().is_none(),
            "{ctx}: {:?} {report:?}",
            ledger.damaged()
        );
        let st = ledger.index().unwrap().state().unwrap();
        assert_eq!(st.indexed, fx.events, "{ctx}");
        assert_eq!(ledger.index().unwrap().positions_len(), fx.events, "{ctx}");
        assert_eq!(st.tail.map(|t| t.head.seq), Some(fx.events - 1), "{ctx}");
        if k % 10 == 9 {
            let rep = ledger.verify(VerifyOptions::default()).unwrap();
            assert!(rep.ok(), "{ctx}: {report:?}: {:?}", rep.problems);
            assert_eq!(rep.events, fx.events, "{ctx}");
            *outcomes.entry("verified whole".into()).or_default() += 1;
        }
    }
    eprintln!("{rounds} damage/reopen/repair rounds: {outcomes:?}");
}
