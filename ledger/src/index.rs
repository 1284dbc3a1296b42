//! Derived indexes. Everything here is rebuilt from the journal when missing, stale or
//! unreadable; nothing here is needed to prove anything.
//!
//! Flat files in `index/`, opened in constant time (what most commands need):
//! - `state`: the index state ([`IndexState`]: how far the flat indexes go, the journal
//!   tail last seen, segment stamps), the Merkle frontier over the indexed events (see
//!   [`crate::audit`]), the lengths of the change files, and the `epoch` (a random
//!   number drawn each time the flat indexes are rebuilt from nothing). Canonical
//!   bincode followed by its BLAKE3 hash, rewritten in place (not synced) after each
//!   batch the index writer applies; a state that fails its hash means a rebuild.
//! - `positions`: entry `seq` is 16 bytes at offset `16 * seq` (segment u32 LE, offset
//!   u32 LE, time_us i64 LE). Written in the appending thread, never synced (checked
//!   against the index state and the journal on open, rebuilt when it disagrees).
//! - `changes`, `changes.sorted`: change ID -> seqs and change ID -> the seqs of the
//!   changes that revert it ([`crate::changelog`]).
//!
//! sled, in `index/sled/`, holds the rest and is opened only when a command needs it
//! ([`crate::Ledger::index`]): its start-up reads a page table that grows with the
//! ledger. Trees (keys big-endian so they sort; `0x00` separates a string from a seq):
//! `change` id|0|first -> seqs (for ID prefixes); `resource` ns:name|0|first -> seqs;
//! `agent` id|0|first -> seqs; `corr` id|0|first -> seqs, where one entry holds the
//! seqs (u64 BE each) of one appended batch that share the key and `first` is the
//! least of them; `meta` holds `sled-v1`, the epoch of the flat
//! indexes sled was built with and the seq below which it holds every event. A
//! different epoch means sled is cleared and rebuilt; a lower seq means it catches up
//! from the journal when it is next opened (appends made while it was closed).
//!
//! Projection snapshots are files, not sled values: `snapshots/<name>.<seq, 20 digits>`
//! in the index directory, each the snapshot bytes followed by their BLAKE3 hash. Large
//! values in sled are written as blob files that sled reads back on every start while
//! they sit in its log's tail; a 100,000-file tree snapshot is ~13 MB.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::audit::MerkleState;
use crate::changelog::{self, ChangeLog, REVERTS};
use crate::error::{Error, Result};
use crate::event::Body;
use crate::hash::Hash;
use crate::journal::{Position, Record, TailHint};
use crate::storage::SegmentStamp;

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Index {
    dir: PathBuf,
    positions: Arc<Positions>,
    changes: Arc<ChangeLog>,
    flat: Arc<Mutex<Flat>>,
    state_file: Arc<File>,
    sled: Arc<OnceLock<Sled>>,
    /// Projection snapshot files.
    snap_dir: PathBuf,
}

/// Index bookkeeping, kept in the `state` file.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IndexState {
    /// Hash of seq 0: which journal this index belongs to.
    pub genesis: Option<Hash>,
    /// Every seq below this is indexed (positions, changes, Merkle frontier).
    pub indexed: u64,
    pub tail: Option<TailHint>,
    /// Stamps of segments as last seen, to notice edits behind the ledger's back.
    pub stamps: Vec<(u64, SegmentStamp)>,
}

/// What the `state` file holds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Flat {
    state: IndexState,
    /// `None` when unknown (a gap): [`crate::Ledger::merkle_state`] rebuilds it.
    merkle: Option<MerkleState>,
    epoch: u64,
    /// Records in `changes` and in `changes.sorted`.
    changes: u64,
    sorted: u64,
    /// Redacted content hash -> seq of the redaction event (few: kept here whole).
    redacted: BTreeMap<Hash, u64>,
    /// Bytes of the `state` file as last written (not stored).
    #[serde(skip)]
    written: u64,
}

/// Version tag at the start of the `state` file.
const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "state";
const SLED_DIR: &str = "sled";
/// sled `meta` key of `(epoch, indexed)`.
const SLED_STATE_KEY: &str = "sled-v1";
const POSITIONS_FILE: &str = "positions";
const POSITION_BYTES: u64 = 16;
/// How long to wait for sled to let go of an index database this process closed.
const SLED_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The sled trees.
#[derive(Clone)]
pub(crate) struct Sled {
    db: sled::Db,
    meta: sled::Tree,
    change: sled::Tree,
    resource: sled::Tree,
    agent: sled::Tree,
    corr: sled::Tree,
}

/// sled databases of ledgers dropped after [`crate::Ledger::exiting`], by directory:
/// left for the process exit to reclaim (freeing sled's page table entry by entry takes
/// tens of ms at 10^6 events), or taken again by the next open in this process.
static KEPT: Mutex<BTreeMap<PathBuf, Sled>> = Mutex::new(BTreeMap::new());

fn kept_key(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

pub(crate) fn key_seq(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 9);
    k.extend_from_slice(prefix);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seq_suffix(k: &[u8]) -> u64 {
    u64::from_be_bytes(
        k[k.len() - 8..]
            .try_into()
            .expect("index keys end with a seq"),
    )
}

/// File name of the snapshot of `name` at `seq`.
fn snapshot_file(name: &str, seq: u64) -> Result<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::Invalid(format!("snapshot name {name:?}")));
    }
    Ok(format!("{name}.{seq:020}"))
}

/// A projection snapshot being written ([`Index::snapshot_writer`]). Derived data:
/// written whole to a temporary file and renamed into place, not synced; the bytes and
/// then their BLAKE3, so a torn file fails its hash and is not used. Dropped before
/// [`SnapshotWriter::finish`], it removes the temporary file; after a write failed,
/// `finish` refuses.
pub struct SnapshotWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    hasher: blake3::Hasher,
    done: bool,
    failed: bool,
}

impl SnapshotWriter {
    /// The next bytes of the snapshot.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        let res = self.file.write_all(bytes);
        self.failed |= res.is_err();
        res.map_err(|e| Error::io("writing", &self.path, e))
    }

    /// Writes the hash and puts the snapshot in place.
    pub fn finish(mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Invalid(format!(
                "{}: a write failed; not put in place",
                self.path.display()
            )));
        }
        let sum = self.hasher.finalize();
        self.file
            .write_all(sum.as_bytes())
            .and_then(|_| fs::rename(&self.tmp, &self.path))
            .map_err(|e| Error::io("writing", &self.path, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn new_epoch() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = blake3::hash(format!("{t}:{}", std::process::id()).as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap();
    }
    u64::from_le_bytes(b) | 1
}

fn encode_flat(f: &Flat) -> Result<Vec<u8>> {
    let payload = crate::event::encode_canonical(&(STATE_VERSION, f))
        .map_err(|e| Error::Index(e.to_string()))?;
    let mut v = Vec::with_capacity(payload.len() + 36);
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(&payload);
    v.extend_from_slice(blake3::hash(&payload).as_bytes());
    Ok(v)
}

/// The state in `b` (anything after its hash is ignored: the file is rewritten in
/// place and cut only when it shrinks).
fn decode_flat(b: &[u8]) -> Option<Flat> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let payload = b.get(4..4 + len)?;
    if blake3::hash(payload).as_bytes() != b.get(4 + len..4 + len + 32)? {
        return None;
    }
    let (v, mut f): (u32, Flat) = crate::event::decode_canonical(payload).ok()?;
    f.written = b.len() as u64;
    (v == STATE_VERSION).then_some(f)
}

/// The flat `seq -> (segment, offset, time)` file.
struct Positions {
    file: File,
    /// Entries written (the file may hold a torn partial entry beyond them).
    len: AtomicU64,
}

fn encode_position(r: &Record) -> Result<[u8; 16]> {
    let seg = u32::try_from(r.pos.segment)
        .map_err(|_| Error::Index(format!("segment {} out of range", r.pos.segment)))?;
    let off = u32::try_from(r.pos.offset)
        .map_err(|_| Error::Index(format!("offset {} out of range", r.pos.offset)))?;
    let mut e = [0u8; 16];
    e[..4].copy_from_slice(&seg.to_le_bytes());
    e[4..8].copy_from_slice(&off.to_le_bytes());
    e[8..].copy_from_slice(&r.event.time_us.to_le_bytes());
    Ok(e)
}

fn decode_position(e: &[u8]) -> (Position, i64) {
    let seg = u32::from_le_bytes(e[..4].try_into().unwrap());
    let off = u32::from_le_bytes(e[4..8].try_into().unwrap());
    let t = i64::from_le_bytes(e[8..16].try_into().unwrap());
    (
        Position {
            segment: seg as u64,
            offset: off as u64,
        },
        t,
    )
}

impl Positions {
    fn open(dir: &Path) -> Result<Positions> {
        let path = dir.join(POSITIONS_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io("reading", &path, e))?
            .len();
        Ok(Positions {
            file,
            len: AtomicU64::new(bytes / POSITION_BYTES),
        })
    }

    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn truncate(&self, n: u64) -> Result<()> {
        self.file
            .set_len(n * POSITION_BYTES)
            .map_err(|e| Error::Index(format!("truncating the position file: {e}")))?;
        self.len.store(n, Ordering::Release);
        Ok(())
    }

    fn push(&self, records: &[Record]) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let start = first.event.seq;
        let len = self.len();
        if start > len {
            return Err(Error::Index(format!(
                "positions end at seq {len} but seq {start} is being added"
            )));
        }
        let mut buf = Vec::with_capacity(records.len() * POSITION_BYTES as usize);
        for r in records {
            buf.extend_from_slice(&encode_position(r)?);
        }
        self.file
            .write_all_at(&buf, start * POSITION_BYTES)
            .map_err(|e| Error::Index(format!("writing the position file: {e}")))?;
        let end = start + records.len() as u64;
        if end < len {
            self.truncate(end)?;
        }
        self.len.store(end, Ordering::Release);
        Ok(())
    }

    /// Reads the entries from seq `from` on into `buf` (whole entries).
    fn read_into(&self, from: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, from * POSITION_BYTES)
            .map_err(|e| Error::Index(format!("reading the position file: {e}")))
    }

    fn read(&self, from: u64, n: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize((n * POSITION_BYTES) as usize, 0);
        self.read_into(from, buf)
    }

    fn get(&self, seq: u64) -> Result<Option<(Position, i64)>> {
        if seq >= self.len() {
            return Ok(None);
        }
        let mut e = [0u8; POSITION_BYTES as usize];
        self.read_into(seq, &mut e)?;
        Ok(Some(decode_position(&e)))
    }

    /// Calls `f(seq, position, time)` for every entry from `from`, in order.
    fn for_each(&self, from: u64, f: &mut dyn FnMut(u64, Position, i64) -> bool) -> Result<()> {
        const CHUNK: u64 = 64 * 1024;
        let end = self.len();
        let mut buf = Vec::new();
        let mut at = from;
        while at < end {
            let n = CHUNK.min(end - at);
            self.read(at, n, &mut buf)?;
            for (i, e) in buf.chunks_exact(POSITION_BYTES as usize).enumerate() {
                let (p, t) = decode_position(e);
                if !f(at + i as u64, p, t) {
                    return Ok(());
                }
            }
            at += n;
        }
        Ok(())
    }
}

/// Groups `(key, seq)` pairs of one batch into sled entries `key|0|first -> seqs`.
#[derive(Default)]
struct Grouped(BTreeMap<Vec<u8>, Vec<u64>>);

impl Grouped {
    fn add(&mut self, key: &[u8], seq: u64) {
        let v = self.0.entry(key.to_vec()).or_default();
        if v.last() != Some(&seq) {
            v.push(seq);
        }
    }

    fn apply(self, tree: &sled::Tree) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, seqs) in self.0 {
            let mut val = Vec::with_capacity(seqs.len() * 8);
            for s in &seqs {
                val.extend_from_slice(&s.to_be_bytes());
            }
            batch.insert(key_seq(&k, seqs[0]), val);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

/// The seqs of one grouped entry (its key's seq when the value is empty).
fn entry_seqs(k: &[u8], v: &[u8], out: &mut Vec<u64>) {
    if v.len() < 8 {
        out.push(seq_suffix(k));
    }
    out.extend(
        v.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap())),
    );
}

impl Sled {
    fn open(dir: &Path) -> Result<Sled> {
        if let Some(s) = KEPT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&kept_key(dir))
        {
            return Ok(s);
        }
        // sled releases its file lock some time after the last handle is dropped (sled
        // issues #1234 and #1289), so a ledger reopened in the same process can find the
        // database locked by its own previous instance. The ledger's lock is held, so
        // nothing else uses it: wait.
        let start = Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(64 << 20)
                .open()
            {
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && start.elapsed() < SLED_LOCK_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => break r?,
            }
        };
        let t = |n: &str| db.open_tree(n);
        Ok(Sled {
            meta: t("meta")?,
            change: t("change")?,
            resource: t("resource")?,
            agent: t("agent")?,
            corr: t("corr")?,
            db,
        })
    }

    /// `(epoch, indexed)`; `(0, 0)` when absent or unreadable.
    fn state(&self) -> (u64, u64) {
        self.meta
            .get(SLED_STATE_KEY)
            .ok()
            .flatten()
            .and_then(|v| crate::event::decode_canonical(&v).ok())
            .unwrap_or((0, 0))
    }

    fn set_state(&self, epoch: u64, indexed: u64) -> Result<()> {
        let v = crate::event::encode_canonical(&(epoch, indexed))
            .map_err(|e| Error::Index(e.to_string()))?;
        self.meta.insert(SLED_STATE_KEY, v)?;
        Ok(())
    }

    fn clear(&self, epoch: u64) -> Result<()> {
        for t in [
            &self.meta,
            &self.change,
            &self.resource,
            &self.agent,
            &self.corr,
        ] {
            t.clear()?;
        }
        self.set_state(epoch, 0)
    }

    /// Adds records (in seq order, starting at or below `indexed`).
    fn add(&self, records: &[Record], epoch: u64) -> Result<()> {
        let (_, indexed) = self.state();
        let records = match records.iter().position(|r| r.event.seq >= indexed) {
            Some(i) => &records[i..],
            None => return Ok(()),
        };
        if records[0].event.seq > indexed {
            // A gap (an earlier add failed): rebuilt when next opened.
            self.set_state(0, 0)?;
            return Err(Error::Index(format!(
                "the sled index ends at seq {indexed} but seq {} is being added",
                records[0].event.seq
            )));
        }
        let mut change = Grouped::default();
        let mut resource = Grouped::default();
        let mut agent = Grouped::default();
        let mut corr = Grouped::default();
        for r in records {
            let ev = &r.event;
            change.add(ev.change_id.as_bytes(), ev.seq);
            agent.add(ev.actor.agent.as_bytes(), ev.seq);
            if let Some(c) = &ev.correlation_id {
                corr.add(c.as_bytes(), ev.seq);
            }
            for rc in ev.resources() {
                resource.add(&rc.key.index_bytes(), ev.seq);
            }
        }
        change.apply(&self.change)?;
        resource.apply(&self.resource)?;
        agent.apply(&self.agent)?;
        corr.apply(&self.corr)?;
        self.set_state(epoch, records[records.len() - 1].event.seq + 1)
    }

    /// Writes out everything sled holds in memory (as dropping its last handle does:
    /// until a flush finds nothing left to write).
    fn flush(&self) -> Result<()> {
        for _ in 0..16 {
            if self.db.flush()? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Seqs of every entry under keys starting with `prefix`, ascending, no repeats.
    fn prefix_seqs(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            entry_seqs(&k, &v, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn seqs(tree: &sled::Tree, key: &[u8]) -> Result<Vec<u64>> {
        let mut p = key.to_vec();
        p.push(0);
        Self::prefix_seqs(tree, &p)
    }
}

/// Where a ledger of an older layout kept its sled database: directly in `index/`.
const OLD_SLED_FILES: [&str; 3] = ["db", "conf", "blobs"];

impl Index {
    /// Opens the flat indexes and reads their state (sled stays closed: see
    /// [`Index::open_sled`]). A state that is missing, unreadable or disagrees with the
    /// change files comes back empty (nothing indexed), which makes the caller rebuild.
    pub fn open(dir: &Path) -> Result<(Index, IndexState)> {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let path = dir.join(STATE_FILE);
        let state_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &state_file, &mut bytes)
            .map_err(|e| Error::io("reading", &path, e))?;
        let mut flat = decode_flat(&bytes);
        if flat.is_none() {
            // An older layout kept its sled database in this directory: derived data.
            for old in OLD_SLED_FILES {
                let p = dir.join(old);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("snap.") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        let (changes, sorted) = flat.as_ref().map_or((0, 0), |f| (f.changes, f.sorted));
        let (log, ok) = ChangeLog::open(dir, changes, sorted)?;
        if !ok {
            log.clear()?;
            flat = None;
        }
        // Nothing indexed yet: the empty tree; a new epoch for a sled built before.
        let flat = flat.unwrap_or_else(|| Flat {
            merkle: Some(MerkleState::default()),
            epoch: new_epoch(),
            ..Flat::default()
        });
        let state = flat.state.clone();
        let index = Index {
            dir: dir.to_path_buf(),
            positions: Arc::new(Positions::open(dir)?),
            changes: Arc::new(log),
            flat: Arc::new(Mutex::new(flat)),
            state_file: Arc::new(state_file),
            sled: Arc::new(OnceLock::new()),
            snap_dir: dir.join("snapshots"),
        };
        Ok((index, state))
    }

    pub fn state(&self) -> Result<IndexState> {
        Ok(self.flat.lock().unwrap().state.clone())
    }

    pub fn set_state(&self, s: &IndexState) -> Result<()> {
        let mut f = self.flat.lock().unwrap();
        f.state = s.clone();
        self.write_flat(&mut f)
    }

    /// Writes the state file from `f` (with the change files' current lengths).
    fn write_flat(&self, f: &mut Flat) -> Result<()> {
        (f.changes, f.sorted) = self.changes.lens();
        let bytes = encode_flat(f)?;
        let path = self.dir.join(STATE_FILE);
        self.state_file
            .write_all_at(&bytes, 0)
            .and_then(|()| {
                // Cut only when shorter (the length in front says where the state ends).
                if (bytes.len() as u64) < f.written {
                    self.state_file.set_len(bytes.len() as u64)?;
                }
                f.written = bytes.len() as u64;
                Ok(())
            })
            .map_err(|e| Error::io("writing", &path, e))
    }

    /// Empties every journal-derived index (sled too, when open) and removes the
    /// snapshots; the flat indexes get a new epoch, so a sled database built before is
    /// rebuilt when next opened.
    pub fn clear(&self) -> Result<()> {
        self.positions.truncate(0)?;
        self.changes.clear()?;
        match fs::remove_dir_all(&self.snap_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &self.snap_dir, e)),
        }
        let mut f = self.flat.lock().unwrap();
        *f = Flat {
            // A new index covers no events yet: its tree is the empty tree.
            merkle: Some(MerkleState::default()),
            epoch: new_epoch(),
            ..Flat::default()
        };
        if let Some(s) = self.sled.get() {
            s.clear(f.epoch)?;
        }
        // Every caller re-adds the journal from seq 0 next.
        self.write_flat(&mut f)
    }

    /// Records the positions and times of records (in seq order, continuing the
    /// position file or overwriting its end). Cheap: one write, no sync.
    pub fn add_positions(&self, records: &[Record]) -> Result<()> {
        self.positions.push(records)
    }

    /// Number of seqs in the position file.
    pub fn positions_len(&self) -> u64 {
        self.positions.len()
    }

    /// Drops position entries from seq `n` on.
    pub fn truncate_positions(&self, n: u64) -> Result<()> {
        self.positions.truncate(n)
    }

    /// Adds records (in seq order) to the change files, the Merkle frontier and, when
    /// it is open, sled (not the position file: see [`Index::add_positions`]). The state
    /// file is written by the caller's [`Index::set_state`].
    pub fn add(&self, records: &[Record]) -> Result<()> {
        self.changes.add(records)?;
        let epoch = {
            let mut f = self.flat.lock().unwrap();
            advance_merkle(&mut f.merkle, records);
            for r in records {
                if let Body::Redaction(rd) = &r.event.body {
                    f.redacted.insert(rd.hash, r.event.seq);
                }
            }
            f.epoch
        };
        if let Some(s) = self.sled.get() {
            s.add(records, epoch)?;
        }
        Ok(())
    }

    /// Whether sled is open (commands that never need it never open it).
    pub fn sled_is_open(&self) -> bool {
        self.sled.get().is_some()
    }

    /// Opens sled, not yet for queries: the database and the seq it must be caught up
    /// from (0 after clearing it, when it was built for other flat indexes or for a
    /// longer journal than `journal_next`). A database sled cannot read is thrown away
    /// and made anew (derived data). Follow with [`Index::sled_catch_up`] for the
    /// events from that seq, then [`Index::install_sled`].
    pub(crate) fn open_sled(&self, journal_next: u64) -> Result<(Sled, u64)> {
        let dir = self.dir.join(SLED_DIR);
        let sled = match Sled::open(&dir) {
            Ok(s) => s,
            Err(e) if e.to_string().contains("could not acquire lock") => return Err(e),
            Err(_) => {
                let _ = fs::remove_dir_all(&dir);
                Sled::open(&dir)?
            }
        };
        let epoch = self.flat.lock().unwrap().epoch;
        let (sled_epoch, indexed) = sled.state();
        if sled_epoch != epoch || indexed > journal_next {
            sled.clear(epoch)?;
            return Ok((sled, 0));
        }
        Ok((sled, indexed))
    }

    /// Adds records to a sled database being opened.
    pub(crate) fn sled_catch_up(&self, sled: &Sled, records: &[Record]) -> Result<()> {
        let epoch = self.flat.lock().unwrap().epoch;
        sled.add(records, epoch)
    }

    /// Makes a caught-up sled database the one queries use and appends feed.
    pub(crate) fn install_sled(&self, sled: Sled) {
        let _ = self.sled.set(sled);
    }

    fn sled(&self) -> Result<&Sled> {
        self.sled
            .get()
            .ok_or_else(|| Error::Index("the sled index is not open".into()))
    }

    /// The stored Merkle state, `None` when absent or unknown (it is derived data).
    pub fn merkle_state(&self) -> Option<MerkleState> {
        self.flat.lock().unwrap().merkle.clone()
    }

    pub fn set_merkle_state(&self, st: &MerkleState) -> Result<()> {
        let mut f = self.flat.lock().unwrap();
        f.merkle = Some(st.clone());
        self.write_flat(&mut f)
    }

    pub fn position(&self, seq: u64) -> Result<Option<Position>> {
        Ok(self.positions.get(seq)?.map(|(p, _)| p))
    }

    /// Seqs that may carry `change_id`, ascending (from the flat change index: check
    /// each event's ID before believing it).
    pub fn change_candidates(&self, change_id: &str) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = self
            .changes
            .lookup(changelog::change_key(change_id))?
            .into_iter()
            .filter(|v| v & REVERTS == 0)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Seqs of events that may revert `change_id`, ascending (check each event).
    pub fn revert_candidates(&self, change_id: &str) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = self
            .changes
            .lookup(changelog::change_key(change_id))?
            .into_iter()
            .filter(|v| v & REVERTS != 0)
            .map(|v| v & !REVERTS)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// The last record of the change log (checked against its event on open).
    pub(crate) fn last_change_record(&self) -> Option<(u64, u64)> {
        self.changes.last()
    }

    /// For `verify`: the order-free digest of the change index's records (what each
    /// event adds is [`changelog::digest_of`]) and whether its two files agree with each
    /// other.
    pub(crate) fn change_digests(&self) -> Result<(u64, bool)> {
        self.changes.digests()
    }

    /// The redactions the flat state holds: content hash -> seq of the redaction.
    pub(crate) fn redactions(&self) -> BTreeMap<Hash, u64> {
        self.flat.lock().unwrap().redacted.clone()
    }

    /// Change IDs starting with `prefix` (at most `limit`), for short IDs on the CLI.
    pub fn changes_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for k in self.sled()?.change.scan_prefix(prefix.as_bytes()).keys() {
            let k = k?;
            let id = String::from_utf8_lossy(&k[..k.len() - 9]).into_owned();
            if out.last() != Some(&id) {
                out.push(id);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn resource_seqs(&self, key: &[u8]) -> Result<Vec<u64>> {
        Sled::seqs(&self.sled()?.resource, key)
    }

    /// Seqs of events on resources whose index key starts with `prefix` (a directory).
    pub fn resource_prefix_seqs(&self, prefix: &[u8]) -> Result<Vec<u64>> {
        Sled::prefix_seqs(&self.sled()?.resource, prefix)
    }

    pub fn agent_seqs(&self, agent: &str) -> Result<Vec<u64>> {
        Sled::seqs(&self.sled()?.agent, agent.as_bytes())
    }

    pub fn correlation_seqs(&self, corr: &str) -> Result<Vec<u64>> {
        Sled::seqs(&self.sled()?.corr, corr.as_bytes())
    }

    /// Seqs of events whose recorded time lies in `[since, until)`, ascending by seq.
    /// (Times need not rise with seq, so this reads the whole position file: 16 bytes
    /// per event.)
    pub fn time_seqs(&self, since: Option<i64>, until: Option<i64>) -> Result<Vec<u64>> {
        let lo = since.unwrap_or(i64::MIN);
        let hi = until.unwrap_or(i64::MAX);
        let mut v = Vec::new();
        self.positions.for_each(0, &mut |seq, _, t| {
            if t >= lo && t < hi {
                v.push(seq);
            }
            true
        })?;
        Ok(v)
    }

    /// Seq of the redaction event for `hash`, if it was redacted.
    pub fn redaction(&self, hash: &Hash) -> Result<Option<u64>> {
        Ok(self.flat.lock().unwrap().redacted.get(hash).copied())
    }

    /// Saves a projection snapshot: `name` (letters, digits, `-`, `_`) at `seq`.
    pub fn put_snapshot(&self, name: &str, seq: u64, bytes: &[u8]) -> Result<()> {
        let mut w = self.snapshot_writer(name, seq)?;
        w.write(bytes)?;
        w.finish()
    }

    /// Saves a projection snapshot given in parts ([`SnapshotWriter::write`], in order):
    /// its bytes can be written while the rest of them is still being made. Nothing is
    /// in place until [`SnapshotWriter::finish`].
    pub fn snapshot_writer(&self, name: &str, seq: u64) -> Result<SnapshotWriter> {
        let path = self.snap_dir.join(snapshot_file(name, seq)?);
        fs::create_dir_all(&self.snap_dir).map_err(|e| Error::io("creating", &self.snap_dir, e))?;
        // A name of its own (process and writer), made new: two writers never share a
        // temporary file. One left by an earlier process of the same pid is stale.
        static WRITERS: AtomicU64 = AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .snap_dir
            .join(format!("tmp-{}-{n}-{name}", std::process::id()));
        let create = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                create()
            }
            other => other,
        }
        .map_err(|e| Error::io("writing", &path, e))?;
        Ok(SnapshotWriter {
            file,
            tmp,
            path,
            hasher: blake3::Hasher::new(),
            done: false,
            failed: false,
        })
    }

    /// Seqs of the snapshots of `name`, ascending (their files are not read).
    fn snapshot_seqs(&self, name: &str) -> Result<Vec<u64>> {
        snapshot_file(name, 0)?;
        let entries = match fs::read_dir(&self.snap_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("reading", &self.snap_dir, e)),
        };
        let mut seqs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("reading", &self.snap_dir, e))?;
            let file = entry.file_name();
            let Some(rest) = file
                .to_str()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|f| f.strip_prefix('.'))
            else {
                continue;
            };
            if rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(seq) = rest.parse() {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Seq of the newest snapshot of `name`, without reading it.
    pub fn latest_snapshot_seq(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.snapshot_seqs(name)?.last().copied())
    }

    /// The newest intact snapshot of `name` at or before `seq` (one whose bytes fail
    /// their hash is passed over).
    pub fn snapshot_at_or_before(&self, name: &str, seq: u64) -> Result<Option<(u64, Vec<u8>)>> {
        for s in self.snapshot_seqs(name)?.into_iter().rev() {
            if s > seq {
                continue;
            }
            let path = self.snap_dir.join(snapshot_file(name, s)?);
            let Ok(mut data) = fs::read(&path) else {
                continue;
            };
            let Some(split) = data.len().checked_sub(32) else {
                continue;
            };
            if blake3::hash(&data[..split]).as_bytes() == &data[split..] {
                data.truncate(split);
                return Ok(Some((s, data)));
            }
        }
        Ok(None)
    }

    /// Drops snapshots of `name` older than `keep_from`.
    pub fn prune_snapshots(&self, name: &str, keep_from: u64) -> Result<()> {
        for s in self.snapshot_seqs(name)? {
            if s < keep_from {
                self.remove_snapshot(name, s)?;
            }
        }
        Ok(())
    }

    /// Drops the snapshot of `name` at `seq` (there being none is no error).
    pub fn remove_snapshot(&self, name: &str, seq: u64) -> Result<()> {
        let path = self.snap_dir.join(snapshot_file(name, seq)?);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", path, e)),
        }
    }

    /// Writes out what sled holds in memory, if it is open.
    pub fn flush(&self) -> Result<()> {
        match self.sled.get() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }

    /// For a process about to exit: flushes sled, if open, and keeps its handle in this
    /// process instead of freeing its page table entry by entry (see `KEPT`).
    pub(crate) fn keep_for_exit(&self) {
        if let Some(s) = self.sled.get() {
            let _ = s.flush();
            KEPT.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(kept_key(&self.dir.join(SLED_DIR)), s.clone());
        }
    }

    /// Calls `f(seq, position)` for every position entry in seq order until it
    /// returns false.
    pub fn for_each_position(&self, f: &mut dyn FnMut(u64, Position) -> bool) -> Result<()> {
        self.positions.for_each(0, &mut |s, p, _| f(s, p))
    }
}

/// Pushes the records' leaves onto the Merkle frontier. Records it already holds
/// (re-added after an interrupted catch-up) are skipped; a gap makes the state unknown,
/// to be rebuilt from the journal when next needed.
fn advance_merkle(merkle: &mut Option<MerkleState>, records: &[Record]) {
    let Some(st) = merkle else {
        return;
    };
    for r in records {
        let size = st.frontier.size();
        if r.event.seq < size {
            continue;
        }
        if r.event.seq > size {
            *merkle = None;
            return;
        }
        st.frontier.push(crate::merkle::leaf_hash(&r.hash));
        st.last = r.hash;
    }
}
