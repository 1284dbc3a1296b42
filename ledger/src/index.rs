//! Derived indexes in sled. Everything here is rebuilt from the journal when missing,
//! stale or unreadable; nothing here is needed to prove anything.
//!
//! Positions and times live in a flat file, `index/positions`: entry `seq` is 16 bytes
//! at offset `16 * seq` (segment u32 LE, offset u32 LE, time_us i64 LE). It is written
//! in the appending thread, never synced (it is checked against the index state and the
//! journal on open, and rebuilt when it disagrees).
//!
//! sled trees (keys big-endian so they sort; `0x00` separates a string from a seq):
//! `change` id|0|first -> seqs; `resource` ns:name|0|first -> seqs; `agent` id|0|first
//! -> seqs; `corr` id|0|first -> seqs, where one entry holds the seqs (u64 BE each) of
//! one appended batch that share the key and `first` is the least of them;
//! `redacted` hash -> seq; `reverts` reverted id|0|seq -> reverting change id;
//! `meta` bookkeeping (including the Merkle frontier, see [`crate::audit`]).
//!
//! Projection snapshots are files, not sled values: `snapshots/<name>.<seq, 20 digits>`
//! in the index directory, each the snapshot bytes followed by their BLAKE3 hash. Large
//! values in sled are written as blob files that sled reads back on every start while
//! they sit in its log's tail; a 100,000-file tree snapshot is ~13 MB. Snapshots (and
//! the trees `stat` and `snap` where earlier versions kept the scanner's cache and the
//! snapshots) are never read by sled now; those two trees are dropped on open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::audit::MerkleState;
use crate::error::{Error, Result};
use crate::event::Body;
use crate::hash::Hash;
use crate::journal::{Position, Record, TailHint};
use crate::storage::SegmentStamp;

/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    positions: Arc<Positions>,
    meta: sled::Tree,
    change: sled::Tree,
    resource: sled::Tree,
    agent: sled::Tree,
    corr: sled::Tree,
    redacted: sled::Tree,
    reverts: sled::Tree,
    /// Projection snapshot files.
    snap_dir: PathBuf,
}

/// Index bookkeeping, stored under `meta/state`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IndexState {
    /// Hash of seq 0: which journal this index belongs to.
    pub genesis: Option<Hash>,
    /// Every seq below this is indexed.
    pub indexed: u64,
    pub tail: Option<TailHint>,
    /// Stamps of segments as last seen, to notice edits behind the ledger's back.
    pub stamps: Vec<(u64, SegmentStamp)>,
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

/// `meta` key of the [`MerkleState`] over the indexed events. Absent means unknown (an
/// index written before it existed, or a gap): [`crate::Ledger::merkle_state`] rebuilds it.
const MERKLE_KEY: &str = "merkle";

/// `meta` key of the [`IndexState`]. (Indexes of an older layout keep theirs under
/// `state`; with this key absent they are rebuilt.)
const STATE_KEY: &str = "state-v2";
const POSITIONS_FILE: &str = "positions";
const POSITION_BYTES: u64 = 16;

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

impl Index {
    pub fn open(dir: &Path) -> Result<Index> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .open()?;
        // Where earlier versions kept the stat cache and the snapshots (large values).
        for old in ["stat", "snap"] {
            db.drop_tree(old)?;
        }
        let t = |n: &str| db.open_tree(n);
        let index = Index {
            positions: Arc::new(Positions::open(dir)?),
            meta: t("meta")?,
            change: t("change")?,
            resource: t("resource")?,
            agent: t("agent")?,
            corr: t("corr")?,
            redacted: t("redacted")?,
            reverts: t("reverts")?,
            snap_dir: dir.join("snapshots"),
            db,
        };
        if index.meta.is_empty() {
            // A new index covers no events yet: its tree is the empty tree.
            index.set_merkle_state(&MerkleState::default())?;
        }
        Ok(index)
    }

    pub fn state(&self) -> Result<IndexState> {
        match self.meta.get(STATE_KEY)? {
            None => Ok(IndexState::default()),
            Some(v) => bincode::serde::decode_from_slice(&v, crate::event::CANONICAL)
                .map(|(s, _)| s)
                .map_err(|e| Error::Index(format!("unreadable index state: {e}"))),
        }
    }

    pub fn set_state(&self, s: &IndexState) -> Result<()> {
        let v = bincode::serde::encode_to_vec(s, crate::event::CANONICAL)
            .map_err(|e| Error::Index(e.to_string()))?;
        self.meta.insert(STATE_KEY, v)?;
        Ok(())
    }

    /// Empties every journal-derived tree and the position file, and removes the
    /// snapshots.
    pub fn clear(&self) -> Result<()> {
        // Trees of the older layout, if present.
        for old in ["pos", "time"] {
            self.db.drop_tree(old)?;
        }
        self.positions.truncate(0)?;
        for t in [
            &self.meta,
            &self.change,
            &self.resource,
            &self.agent,
            &self.corr,
            &self.redacted,
            &self.reverts,
        ] {
            t.clear()?;
        }
        match fs::remove_dir_all(&self.snap_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &self.snap_dir, e)),
        }
        // Every caller re-adds the journal from seq 0 next.
        self.set_merkle_state(&MerkleState::default())
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

    /// Adds records (in seq order) to the sled indexes (not the position file: see
    /// [`Index::add_positions`]).
    pub fn add(&self, records: &[Record]) -> Result<()> {
        let mut change = Grouped::default();
        let mut resource = Grouped::default();
        let mut agent = Grouped::default();
        let mut corr = Grouped::default();
        let mut redacted = sled::Batch::default();
        let mut reverts = sled::Batch::default();
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
            if let Body::Change(c) = &ev.body {
                if let Some(target) = &c.reverts {
                    reverts.insert(key_seq(target.as_bytes(), ev.seq), ev.change_id.as_bytes());
                }
            }
            if let Body::Redaction(rd) = &ev.body {
                redacted.insert(rd.hash.as_bytes(), &ev.seq.to_be_bytes());
            }
        }
        change.apply(&self.change)?;
        resource.apply(&self.resource)?;
        agent.apply(&self.agent)?;
        corr.apply(&self.corr)?;
        self.redacted.apply_batch(redacted)?;
        self.reverts.apply_batch(reverts)?;
        self.advance_merkle(records)
    }

    /// Pushes the records' leaves onto the stored Merkle frontier. Records it already
    /// holds (re-added after an interrupted catch-up) are skipped; a gap makes the state
    /// unknown, to be rebuilt from the journal when next needed.
    fn advance_merkle(&self, records: &[Record]) -> Result<()> {
        let Some(mut st) = self.merkle_state() else {
            return Ok(());
        };
        let before = st.frontier.size();
        for r in records {
            let size = st.frontier.size();
            if r.event.seq < size {
                continue;
            }
            if r.event.seq > size {
                self.meta.remove(MERKLE_KEY)?;
                return Ok(());
            }
            st.frontier.push(crate::merkle::leaf_hash(&r.hash));
            st.last = r.hash;
        }
        if st.frontier.size() != before {
            self.set_merkle_state(&st)?;
        }
        Ok(())
    }

    /// The stored Merkle state, `None` when absent or unreadable (it is derived data).
    pub fn merkle_state(&self) -> Option<MerkleState> {
        let v = self.meta.get(MERKLE_KEY).ok()??;
        crate::event::decode_canonical(&v).ok()
    }

    pub fn set_merkle_state(&self, st: &MerkleState) -> Result<()> {
        let v = crate::event::encode_canonical(st).map_err(|e| Error::Index(e.to_string()))?;
        self.meta.insert(MERKLE_KEY, v)?;
        Ok(())
    }

    pub fn position(&self, seq: u64) -> Result<Option<Position>> {
        Ok(self.positions.get(seq)?.map(|(p, _)| p))
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

    pub fn change_seqs(&self, change_id: &str) -> Result<Vec<u64>> {
        Self::seqs(&self.change, change_id.as_bytes())
    }

    pub fn change_exists(&self, change_id: &str) -> Result<Option<u64>> {
        let mut p = change_id.as_bytes().to_vec();
        p.push(0);
        Ok(self
            .change
            .scan_prefix(&p)
            .keys()
            .next()
            .transpose()?
            .map(|k| seq_suffix(&k)))
    }

    /// Change IDs starting with `prefix` (at most `limit`), for short IDs on the CLI.
    pub fn changes_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for k in self.change.scan_prefix(prefix.as_bytes()).keys() {
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
        Self::seqs(&self.resource, key)
    }

    /// Seqs of events on resources whose index key starts with `prefix` (a directory).
    pub fn resource_prefix_seqs(&self, prefix: &[u8]) -> Result<Vec<u64>> {
        Self::prefix_seqs(&self.resource, prefix)
    }

    pub fn agent_seqs(&self, agent: &str) -> Result<Vec<u64>> {
        Self::seqs(&self.agent, agent.as_bytes())
    }

    pub fn correlation_seqs(&self, corr: &str) -> Result<Vec<u64>> {
        Self::seqs(&self.corr, corr.as_bytes())
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
        Ok(self
            .redacted
            .get(hash.as_bytes())?
            .map(|v| u64::from_be_bytes(v[..8].try_into().unwrap())))
    }

    /// Every change that reverted `change_id`, in seq order (whether or not those
    /// reverts are still in force: `replay::Changes` decides that).
    pub fn reverters(&self, change_id: &str) -> Result<Vec<String>> {
        let mut p = change_id.as_bytes().to_vec();
        p.push(0);
        self.reverts
            .scan_prefix(&p)
            .values()
            .map(|v| Ok(String::from_utf8_lossy(&v?).into_owned()))
            .collect()
    }

    /// Saves a projection snapshot: `name` (letters, digits, `-`, `_`) at `seq`.
    pub fn put_snapshot(&self, name: &str, seq: u64, bytes: &[u8]) -> Result<()> {
        let path = self.snap_dir.join(snapshot_file(name, seq)?);
        fs::create_dir_all(&self.snap_dir).map_err(|e| Error::io("creating", &self.snap_dir, e))?;
        let tmp = self
            .snap_dir
            .join(format!("tmp-{}-{name}", std::process::id()));
        let mut data = Vec::with_capacity(bytes.len() + 32);
        data.extend_from_slice(bytes);
        data.extend_from_slice(blake3::hash(bytes).as_bytes());
        // Derived data: written whole and renamed into place, not synced. A torn file
        // fails its hash and is not used.
        let res = fs::write(&tmp, &data).and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("writing", path, e));
        }
        Ok(())
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
                let path = self.snap_dir.join(snapshot_file(name, s)?);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("removing", path, e)),
                }
            }
        }
        Ok(())
    }

    /// Writes out everything sled holds in memory (as dropping its last handle does:
    /// until a flush finds nothing left to write).
    pub fn flush(&self) -> Result<()> {
        for _ in 0..16 {
            if self.db.flush()? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f(seq, position)` for every position entry in seq order until it
    /// returns false.
    pub fn for_each_position(&self, f: &mut dyn FnMut(u64, Position) -> bool) -> Result<()> {
        self.positions.for_each(0, &mut |s, p, _| f(s, p))
    }
}
