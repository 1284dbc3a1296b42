//! Derived indexes in sled. Everything here is rebuilt from the journal when missing,
//! stale or unreadable; nothing here is needed to prove anything.
//!
//! Trees (keys big-endian so they sort; `0x00` separates a string from a seq):
//! `pos` seq -> segment, offset; `change` id|0|seq; `resource` ns:name|0|seq;
//! `agent` id|0|seq; `corr` id|0|seq; `time` time|seq; `redacted` hash -> seq;
//! `reverts` reverted id|0|seq -> reverting change id;
//! `meta` bookkeeping (including the Merkle frontier, see [`crate::audit`]).
//!
//! Projection snapshots are files, not sled values: `snapshots/<name>.<seq, 20 digits>`
//! in the index directory, each the snapshot bytes followed by their BLAKE3 hash. Large
//! values in sled are written as blob files that sled reads back on every start while
//! they sit in its log's tail; a 100,000-file tree snapshot is ~13 MB. Snapshots (and
//! the trees `stat` and `snap` where earlier versions kept the scanner's cache and the
//! snapshots) are never read by sled now; those two trees are dropped on open.

use std::fs;
use std::path::{Path, PathBuf};

use crate::audit::MerkleState;
use crate::error::{Error, Result};
use crate::event::Body;
use crate::hash::Hash;
use crate::journal::{Position, Record, TailHint};
use crate::storage::SegmentStamp;

pub struct Index {
    db: sled::Db,
    meta: sled::Tree,
    pos: sled::Tree,
    change: sled::Tree,
    resource: sled::Tree,
    agent: sled::Tree,
    corr: sled::Tree,
    time: sled::Tree,
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

fn time_key(t: i64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    // Flip the sign bit so negative times sort first.
    k[..8].copy_from_slice(&((t as u64) ^ (1 << 63)).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
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
            meta: t("meta")?,
            pos: t("pos")?,
            change: t("change")?,
            resource: t("resource")?,
            agent: t("agent")?,
            corr: t("corr")?,
            time: t("time")?,
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
        match self.meta.get("state")? {
            None => Ok(IndexState::default()),
            Some(v) => bincode::serde::decode_from_slice(&v, crate::event::CANONICAL)
                .map(|(s, _)| s)
                .map_err(|e| Error::Index(format!("unreadable index state: {e}"))),
        }
    }

    pub fn set_state(&self, s: &IndexState) -> Result<()> {
        let v = bincode::serde::encode_to_vec(s, crate::event::CANONICAL)
            .map_err(|e| Error::Index(e.to_string()))?;
        self.meta.insert("state", v)?;
        Ok(())
    }

    /// Empties every journal-derived tree and removes the snapshots.
    pub fn clear(&self) -> Result<()> {
        for t in [
            &self.meta,
            &self.pos,
            &self.change,
            &self.resource,
            &self.agent,
            &self.corr,
            &self.time,
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

    /// Adds records (in seq order) to every index.
    pub fn add(&self, records: &[Record]) -> Result<()> {
        let mut pos = sled::Batch::default();
        let mut change = sled::Batch::default();
        let mut resource = sled::Batch::default();
        let mut agent = sled::Batch::default();
        let mut corr = sled::Batch::default();
        let mut time = sled::Batch::default();
        let mut redacted = sled::Batch::default();
        let mut reverts = sled::Batch::default();
        for r in records {
            let ev = &r.event;
            let mut p = [0u8; 16];
            p[..8].copy_from_slice(&r.pos.segment.to_be_bytes());
            p[8..].copy_from_slice(&r.pos.offset.to_be_bytes());
            pos.insert(&ev.seq.to_be_bytes(), &p);
            change.insert(key_seq(ev.change_id.as_bytes(), ev.seq), &[]);
            agent.insert(key_seq(ev.actor.agent.as_bytes(), ev.seq), &[]);
            if let Some(c) = &ev.correlation_id {
                corr.insert(key_seq(c.as_bytes(), ev.seq), &[]);
            }
            time.insert(&time_key(ev.time_us, ev.seq), &[]);
            for rc in ev.resources() {
                resource.insert(key_seq(&rc.key.index_bytes(), ev.seq), &[]);
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
        self.pos.apply_batch(pos)?;
        self.change.apply_batch(change)?;
        self.resource.apply_batch(resource)?;
        self.agent.apply_batch(agent)?;
        self.corr.apply_batch(corr)?;
        self.time.apply_batch(time)?;
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
        Ok(self.pos.get(seq.to_be_bytes())?.map(|v| Position {
            segment: u64::from_be_bytes(v[..8].try_into().unwrap()),
            offset: u64::from_be_bytes(v[8..16].try_into().unwrap()),
        }))
    }

    fn seqs(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<u64>> {
        let mut p = prefix.to_vec();
        p.push(0);
        tree.scan_prefix(&p)
            .keys()
            .map(|k| Ok(seq_suffix(&k?)))
            .collect()
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
        let mut v: Vec<u64> = self
            .resource
            .scan_prefix(prefix)
            .keys()
            .map(|k| Ok(seq_suffix(&k?)))
            .collect::<Result<_>>()?;
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    pub fn agent_seqs(&self, agent: &str) -> Result<Vec<u64>> {
        Self::seqs(&self.agent, agent.as_bytes())
    }

    pub fn correlation_seqs(&self, corr: &str) -> Result<Vec<u64>> {
        Self::seqs(&self.corr, corr.as_bytes())
    }

    /// Seqs of events whose recorded time lies in `[since, until)`, ascending by seq.
    pub fn time_seqs(&self, since: Option<i64>, until: Option<i64>) -> Result<Vec<u64>> {
        let lo = time_key(since.unwrap_or(i64::MIN), 0);
        let hi = time_key(until.unwrap_or(i64::MAX), 0);
        let mut v: Vec<u64> = self
            .time
            .range(lo..hi)
            .keys()
            .map(|k| Ok(seq_suffix(&k?)))
            .collect::<Result<_>>()?;
        v.sort_unstable();
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

    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Number of indexed event positions (for `verify`).
    pub fn position_count(&self) -> usize {
        self.pos.len()
    }
}

impl Index {
    /// Every (seq, position) in seq order.
    pub fn positions_iter(&self) -> impl Iterator<Item = Result<(u64, Position)>> {
        self.pos.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((
                u64::from_be_bytes(
                    k[..8]
                        .try_into()
                        .map_err(|_| Error::Index("bad position key".into()))?,
                ),
                Position {
                    segment: u64::from_be_bytes(
                        v[..8]
                            .try_into()
                            .map_err(|_| Error::Index("bad position value".into()))?,
                    ),
                    offset: u64::from_be_bytes(
                        v[8..16]
                            .try_into()
                            .map_err(|_| Error::Index("bad position value".into()))?,
                    ),
                },
            ))
        })
    }
}
