//! Two derived files in `.ledger/index/` that make `record` and `status` cheap: the stat
//! cache (`stat-cache`) and the recorded files at a recent seq (`head-files`).
//!
//! Both are flat, sorted by path bytes, read with one `read` and used in place (no map
//! is built), and checksummed with BLAKE3: the stat cache as a whole, `head-files` per
//! block of about 16 KiB (so `revert` reads only the blocks of the paths it touches).
//! Anything unexpected (missing file, other magic or version, bad checksum, unsorted
//! paths, trailing bytes) makes the file count as absent; it is then rebuilt. They are
//! written to a temporary name and renamed, without fsync: losing them costs time, not
//! data.
//!
//! `stat-cache` (magic `LDGRSTAT`):
//! `magic[8] version:u32 0:u32 count:u64` then per entry `path_len:u32 path
//! size:u64 mtime_ns:i64 ctime_ns:i64 ino:u64 mode:u8 hash[32]`, then `blake3[32]`.
//! An entry says: a file with exactly this stat data held these bytes.
//! `stat-cache.delta` (magic `LDGRSTDL`): `magic[8] version:u32 0:u32 base[32]
//! count:u64`, entries as above (mode `0xff`: the path has no entry), `blake3[32]`;
//! `base` is the trailing checksum of the `stat-cache` it applies to.
//!
//! `head-files` (magic `LDGRHEAD`, version 2) is cut into blocks, each with its own
//! checksum, so a command that needs a few paths (`revert`) reads only the blocks that
//! can hold them: `magic[8] version:u32 0:u32 seq:u64 event_hash[32] count:u64
//! blocks:u32 index_len:u32`, then the block index (`index_len` bytes; per block
//! `offset:u64 len:u32 entries:u32 blake3[32] first_len:u32 first_path`, the offset
//! counted from the end of the index's checksum and each block right after the one
//! before), then `blake3[32]` of the header and index, then the blocks to the end of the
//! file. A block is `entries` (at least one) entries `path_len:u32 path hash[32] mode:u8
//! size:u64` of about 16 KiB, its first path the index's `first_path`, every path in it
//! below the next block's first; paths are strictly increasing across the file and there
//! are `count` entries in all. It holds the `file` namespace of the recorded tree right
//! after `seq`, whose event hash is `event_hash` (checked against the journal before the
//! file is used: the head's hash, or the `prev` of the event after `seq`; the events
//! after it are folded in from the journal). A block is used only when its checksum
//! matches and its paths are where the index puts them; the header and index only when
//! their checksum matches. (A read around some paths takes the index's word for which
//! block holds a path: the checksums guard against damage, not against a file made to
//! mislead, as for every derived file.) Version 1 was one run of entries under one
//! checksum, read whole.
//!
//! Integers are little-endian; mode is 0 regular, 1 executable, 2 symlink.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ledger::{Body, Content, EventRef, Hash, Ledger, Mode, Record, ResourceKey};
use replay::Projection;

use crate::output::CliResult;

const STAT_FILE: &str = "stat-cache";
const STAT_MAGIC: &[u8; 8] = b"LDGRSTAT";
const STAT_DELTA_FILE: &str = "stat-cache.delta";
const STAT_DELTA_MAGIC: &[u8; 8] = b"LDGRSTDL";
/// Version 1 was a single sled value (`stat` tree, key `v1`).
const STAT_VERSION: u32 = 2;
const STAT_FIXED: usize = 8 + 8 + 8 + 8 + 1 + 32;

const HEAD_FILE: &str = "head-files";
const HEAD_MAGIC: &[u8; 8] = b"LDGRHEAD";
const HEAD_VERSION: u32 = 2;
const HEAD_FIXED: usize = 32 + 1 + 8;
/// Bytes of the `head-files` header: magic, version, 0, seq, event hash, count, blocks
/// and the index's length.
const HEAD_HEADER: usize = 8 + 4 + 4 + 8 + 32 + 8 + 4 + 4;
/// A `head-files` block is closed once it holds this many bytes (so it ends within one
/// entry of it).
const HEAD_BLOCK: usize = 16 << 10;
/// Bytes read first from `head-files` for its header and index (more when the index is
/// longer: about 80 bytes per 16 KiB block).
const HEAD_INDEX_READ: usize = 16 << 10;

/// `head-files` is rewritten when this many events were folded in since it was written.
pub const HEAD_FILES_EVERY: u64 = 64;
/// ... or when this many paths changed since.
const HEAD_FILES_MAX_CHANGED: usize = 4096;

fn index_file(ledger: &Ledger, name: &str) -> PathBuf {
    ledger.dir().join("index").join(name)
}

fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Regular => 0,
        Mode::Executable => 1,
        Mode::Symlink => 2,
    }
}

fn byte_mode(b: u8) -> Option<Mode> {
    match b {
        0 => Some(Mode::Regular),
        1 => Some(Mode::Executable),
        2 => Some(Mode::Symlink),
        _ => None,
    }
}

/// Bounds-checked reading of a flat file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn hash_at(b: &[u8]) -> Hash {
    Hash(b[..32].try_into().expect("32 bytes"))
}

/// Checks the trailing checksum; returns the body (without it).
fn checked_body(buf: &[u8]) -> Option<&[u8]> {
    let split = buf.len().checked_sub(32)?;
    let (body, sum) = buf.split_at(split);
    (blake3::hash(body).as_bytes() == sum).then_some(body)
}

/// Reads `count` entries of `path_len:u32 path fixed[fixed]`, checking that paths are
/// non-empty and strictly increasing and that nothing follows. Returns the path spans.
fn read_entries(c: &mut Cursor<'_>, count: u64, fixed: usize) -> Option<Vec<(usize, usize)>> {
    // Each entry takes at least 5 + fixed bytes: a huge count cannot allocate much.
    let max = (c.buf.len() - c.pos) / (4 + 1 + fixed);
    let count = usize::try_from(count).ok().filter(|n| *n <= max)?;
    let mut spans = Vec::with_capacity(count);
    let mut prev: &[u8] = &[];
    for _ in 0..count {
        let len = c.u32()? as usize;
        let start = c.pos;
        let path = c.take(len)?;
        if path.is_empty() || (!spans.is_empty() && path <= prev) {
            return None;
        }
        c.take(fixed)?;
        spans.push((start, len));
        prev = path;
    }
    (c.pos == c.buf.len()).then_some(spans)
}

/// Writes `buf` (checksum appended) to `index/<name>` through a temporary file.
fn write_flat(ledger: &Ledger, name: &str, mut buf: Vec<u8>) -> std::io::Result<()> {
    let sum = blake3::hash(&buf);
    buf.extend_from_slice(sum.as_bytes());
    write_index_file(ledger, name, &buf)
}

/// Writes `buf` as it is to `index/<name>` through a temporary file.
fn write_index_file(ledger: &Ledger, name: &str, buf: &[u8]) -> std::io::Result<()> {
    let path = index_file(ledger, name);
    let tmp = index_file(ledger, &format!("{name}.tmp-{}", std::process::id()));
    let res = std::fs::write(&tmp, buf).and_then(|_| std::fs::rename(&tmp, &path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn put_path(buf: &mut Vec<u8>, path: &[u8]) {
    buf.extend_from_slice(&(path.len() as u32).to_le_bytes());
    buf.extend_from_slice(path);
}

/// One stat cache entry: the stat data of a file and the hash of what it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: Mode,
    pub hash: Hash,
}

impl StatEntry {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.size.to_le_bytes());
        buf.extend_from_slice(&self.mtime_ns.to_le_bytes());
        buf.extend_from_slice(&self.ctime_ns.to_le_bytes());
        buf.extend_from_slice(&self.ino.to_le_bytes());
        buf.push(mode_byte(self.mode));
        buf.extend_from_slice(self.hash.as_bytes());
    }

    fn decode(b: &[u8]) -> Option<StatEntry> {
        Some(StatEntry {
            size: le_u64(&b[0..]),
            mtime_ns: le_u64(&b[8..]) as i64,
            ctime_ns: le_u64(&b[16..]) as i64,
            ino: le_u64(&b[24..]),
            mode: byte_mode(b[32])?,
            hash: hash_at(&b[33..]),
        })
    }
}

/// The stat cache: path -> [`StatEntry`], sorted by path, plus the updates of this run.
///
/// On disk it is a base file and a small delta file of the entries changed since the
/// base was written (with tombstones for dropped ones); a run that changes a few
/// entries rewrites only the delta. The delta names the checksum of the base it
/// belongs to and is ignored with any other base. Combining any base with any delta
/// would still be safe: an entry only ever says what a file with exactly that stat
/// data held, and is used only when the stat data matches.
#[derive(Default)]
pub struct StatCache {
    base: Vec<u8>,
    base_spans: Vec<(usize, usize)>,
    /// Checksum of the base file's body (what a delta must name).
    base_sum: [u8; 32],
    delta: Vec<u8>,
    /// Delta entries (tombstones included), sorted by path.
    delta_spans: Vec<(usize, usize)>,
    /// Path -> new entry (`None`: drop it). Applied by [`StatCache::save`].
    updates: BTreeMap<Vec<u8>, Option<StatEntry>>,
    /// No valid base file was found.
    missing: bool,
}

/// Mode byte of a delta entry that drops the path.
const TOMBSTONE: u8 = 0xff;

/// The entries of a stat cache as loaded (base overridden by delta), in path order:
/// path and the encoded fixed-size part.
pub struct CacheIter<'a> {
    cache: &'a StatCache,
    b: usize,
    d: usize,
}

impl<'a> Iterator for CacheIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let c = self.cache;
        loop {
            let base = c
                .base_spans
                .get(self.b)
                .map(|&(s, l)| (&c.base[s..s + l], &c.base[s + l..s + l + STAT_FIXED]));
            let delta = c
                .delta_spans
                .get(self.d)
                .map(|&(s, l)| (&c.delta[s..s + l], &c.delta[s + l..s + l + STAT_FIXED]));
            let from_delta = match (base, delta) {
                (None, None) => return None,
                (Some(b), None) => {
                    self.b += 1;
                    return Some(b);
                }
                (None, Some(d)) => {
                    self.d += 1;
                    d
                }
                (Some(b), Some(d)) => match d.0.cmp(b.0) {
                    std::cmp::Ordering::Greater => {
                        self.b += 1;
                        return Some(b);
                    }
                    std::cmp::Ordering::Equal => {
                        self.b += 1;
                        self.d += 1;
                        d
                    }
                    std::cmp::Ordering::Less => {
                        self.d += 1;
                        d
                    }
                },
            };
            if from_delta.1[32] != TOMBSTONE {
                return Some(from_delta);
            }
        }
    }
}

impl StatCache {
    /// Loads the cache; a missing or damaged base gives an empty cache, a missing,
    /// damaged or foreign delta is ignored.
    pub fn load(ledger: &Ledger) -> StatCache {
        let base = std::fs::read(index_file(ledger, STAT_FILE)).unwrap_or_default();
        let Some(mut cache) = Self::parse_base(base) else {
            return StatCache {
                missing: true,
                ..StatCache::default()
            };
        };
        let delta = std::fs::read(index_file(ledger, STAT_DELTA_FILE)).unwrap_or_default();
        if let Some(spans) = parse_delta(&delta, &cache.base_sum) {
            cache.delta = delta;
            cache.delta_spans = spans;
        }
        cache
    }

    fn parse_base(buf: Vec<u8>) -> Option<StatCache> {
        let body = checked_body(&buf)?;
        // The checksum just verified is the body's hash.
        let base_sum: [u8; 32] = buf[body.len()..].try_into().ok()?;
        let mut c = Cursor { buf: body, pos: 0 };
        if c.take(8)? != STAT_MAGIC || c.u32()? != STAT_VERSION || c.u32()? != 0 {
            return None;
        }
        let count = c.u64()?;
        let spans = read_entries(&mut c, count, STAT_FIXED)?;
        for &(start, len) in &spans {
            // Mode bytes are checked once here so decoding cannot fail later.
            byte_mode(body[start + len + 32])?;
        }
        Some(StatCache {
            base: buf,
            base_spans: spans,
            base_sum,
            ..StatCache::default()
        })
    }

    /// The entries as loaded, in path order (the encoded fixed part: see
    /// [`StatCache::decode`]).
    pub fn iter(&self) -> CacheIter<'_> {
        CacheIter {
            cache: self,
            b: 0,
            d: 0,
        }
    }

    /// Decodes the fixed part [`StatCache::iter`] gives.
    pub fn decode(fixed: &[u8]) -> StatEntry {
        StatEntry::decode(fixed).expect("mode bytes are checked on load")
    }

    /// Number of entries as loaded (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Path of entry `i` in path order (tests).
    #[cfg(test)]
    pub fn path(&self, i: usize) -> &[u8] {
        self.iter().nth(i).expect("an entry").0
    }

    /// Entry `i` in path order (tests).
    #[cfg(test)]
    pub fn entry(&self, i: usize) -> StatEntry {
        Self::decode(self.iter().nth(i).expect("an entry").1)
    }

    /// Index of `path` in path order (tests).
    #[cfg(test)]
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.iter().position(|(p, _)| p == path)
    }

    /// Drops the entry of `path` (its file is gone).
    pub fn drop_entry(&mut self, path: &[u8]) {
        self.updates.insert(path.to_vec(), None);
    }

    /// Sets (`Some`) or drops (`None`) the entry of `path`; `old` is its loaded entry.
    pub fn update(&mut self, path: &[u8], old: Option<StatEntry>, new: Option<StatEntry>) {
        if old != new {
            self.updates.insert(path.to_vec(), new);
        }
    }

    /// Writes what changed: a new delta, or (when the delta would grow past a fraction
    /// of the base, or there is no base) a new base. Only a speed-up: failures are
    /// ignored.
    pub fn save(&self, ledger: &Ledger) {
        if self.updates.is_empty() && !self.missing {
            return;
        }
        if !self.missing {
            let delta = self.new_delta();
            let limit = (self.base_spans.len() / 8).max(1024);
            if delta.len() <= limit {
                let mut out = Vec::with_capacity(64 + delta.len() * 128);
                out.extend_from_slice(STAT_DELTA_MAGIC);
                out.extend_from_slice(&STAT_VERSION.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&self.base_sum);
                out.extend_from_slice(&(delta.len() as u64).to_le_bytes());
                for (path, fixed) in delta {
                    put_path(&mut out, path);
                    match fixed {
                        Fixed::Bytes(b) => out.extend_from_slice(b),
                        Fixed::Entry(e) => e.encode(&mut out),
                        Fixed::Tombstone => {
                            out.extend_from_slice(&[0u8; 32]);
                            out.push(TOMBSTONE);
                            out.extend_from_slice(&[0u8; 32]);
                        }
                    }
                }
                let _ = write_flat(ledger, STAT_DELTA_FILE, out);
                return;
            }
        }
        let mut out = Vec::with_capacity(self.base.len() + self.updates.len() * 128);
        out.extend_from_slice(STAT_MAGIC);
        out.extend_from_slice(&STAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut count = 0u64;
        let mut emit = |out: &mut Vec<u8>, path: &[u8], fixed: Fixed<'_>| {
            let e = match fixed {
                Fixed::Bytes(b) => Ok(b),
                Fixed::Entry(e) => Err(e),
                Fixed::Tombstone => return,
            };
            put_path(out, path);
            match e {
                Ok(b) => out.extend_from_slice(b),
                Err(e) => e.encode(out),
            }
            count += 1;
        };
        let mut ups = self.updates.iter().peekable();
        for (path, fixed) in self.iter() {
            while let Some((p, e)) = ups.next_if(|(p, _)| p.as_slice() < path) {
                if let Some(e) = e {
                    emit(&mut out, p, Fixed::Entry(*e));
                }
            }
            match ups.next_if(|(p, _)| p.as_slice() == path) {
                Some((_, Some(e))) => emit(&mut out, path, Fixed::Entry(*e)),
                Some((_, None)) => {}
                None => emit(&mut out, path, Fixed::Bytes(fixed)),
            }
        }
        for (p, e) in ups {
            if let Some(e) = e {
                emit(&mut out, p, Fixed::Entry(*e));
            }
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        if write_flat(ledger, STAT_FILE, out).is_ok() {
            let _ = std::fs::remove_file(index_file(ledger, STAT_DELTA_FILE));
        }
    }

    /// The delta after this run: the loaded delta with the updates applied.
    fn new_delta(&self) -> Vec<(&[u8], Fixed<'_>)> {
        let in_base = |p: &[u8]| {
            self.base_spans
                .binary_search_by(|&(s, l)| self.base[s..s + l].cmp(p))
                .is_ok()
        };
        let update = |p: &'_ [u8], e: &Option<StatEntry>| match e {
            Some(e) => Some(Fixed::Entry(*e)),
            None => in_base(p).then_some(Fixed::Tombstone),
        };
        let mut out = Vec::new();
        let mut ups = self.updates.iter().peekable();
        for &(s, l) in &self.delta_spans {
            let path = &self.delta[s..s + l];
            while let Some((p, e)) = ups.next_if(|(p, _)| p.as_slice() < path) {
                out.extend(update(p, e).map(|f| (p.as_slice(), f)));
            }
            match ups.next_if(|(p, _)| p.as_slice() == path) {
                Some((p, e)) => out.extend(update(p, e).map(|f| (path, f))),
                None => out.push((path, Fixed::Bytes(&self.delta[s + l..s + l + STAT_FIXED]))),
            }
        }
        for (p, e) in ups {
            out.extend(update(p, e).map(|f| (p.as_slice(), f)));
        }
        out
    }
}

/// The fixed-size part of an entry to write.
enum Fixed<'a> {
    Bytes(&'a [u8]),
    Entry(StatEntry),
    Tombstone,
}

/// Checks a delta file against the base it must belong to; returns its entries.
fn parse_delta(buf: &[u8], base_sum: &[u8; 32]) -> Option<Vec<(usize, usize)>> {
    let body = checked_body(buf)?;
    let mut c = Cursor { buf: body, pos: 0 };
    if c.take(8)? != STAT_DELTA_MAGIC || c.u32()? != STAT_VERSION || c.u32()? != 0 {
        return None;
    }
    if c.take(32)? != base_sum {
        return None;
    }
    let count = c.u64()?;
    let spans = read_entries(&mut c, count, STAT_FIXED)?;
    for &(start, len) in &spans {
        let m = body[start + len + 32];
        if m != TOMBSTONE {
            byte_mode(m)?;
        }
    }
    Some(spans)
}

/// Removes these files (`ledger reindex`); they are rebuilt when next needed.
pub fn remove_all(ledger: &Ledger) {
    let _ = std::fs::remove_file(index_file(ledger, DIR_FILE));
    let _ = std::fs::remove_file(index_file(ledger, STAT_FILE));
    let _ = std::fs::remove_file(index_file(ledger, STAT_DELTA_FILE));
    let _ = std::fs::remove_file(index_file(ledger, HEAD_FILE));
}

/// The paths of `path`'s ancestors, shortest first, then `path`.
pub fn with_ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ends = path.iter().enumerate().filter(|&(_, &b)| b == b'/');
    ends.map(|(i, _)| i)
        .chain([path.len()])
        .map(move |i| &path[..i])
}

/// One block of `head-files` as the index describes it.
struct HeadBlock {
    /// Where it starts, counted from the end of the index's checksum.
    offset: usize,
    len: usize,
    entries: u64,
    sum: [u8; 32],
    /// Its first path: a range of [`HeadIndex::bytes`].
    first: (usize, usize),
}

/// The header and block index of a `head-files` file (checked: its checksum, the
/// blocks' places one after another, their first paths strictly increasing).
struct HeadIndex {
    /// Header, index and checksum.
    bytes: Vec<u8>,
    seq: u64,
    hash: Hash,
    count: u64,
    blocks: Vec<HeadBlock>,
    /// The file's length: its blocks end there.
    end: usize,
}

impl HeadIndex {
    /// Bytes of header, index and checksum that a file starting with `start` has, when
    /// `start` holds at least a header of this version.
    fn len_from_header(start: &[u8]) -> Option<usize> {
        let mut c = Cursor { buf: start, pos: 0 };
        if c.take(8)? != HEAD_MAGIC || c.u32()? != HEAD_VERSION || c.u32()? != 0 {
            return None;
        }
        let index_len =
            u32::from_le_bytes(start.get(HEAD_HEADER - 4..HEAD_HEADER)?.try_into().ok()?);
        HEAD_HEADER.checked_add(index_len as usize)?.checked_add(32)
    }

    /// Parses exactly a header, index and checksum.
    fn parse(bytes: Vec<u8>) -> Option<HeadIndex> {
        if Self::len_from_header(&bytes)? != bytes.len() {
            return None;
        }
        let body = checked_body(&bytes)?;
        let mut c = Cursor { buf: body, pos: 16 };
        let seq = c.u64()?;
        let hash = hash_at(c.take(32)?);
        let count = c.u64()?;
        let n = c.u32()? as usize;
        c.u32()?;
        // Each block takes at least 53 bytes of index: a huge count cannot allocate much.
        let mut blocks = Vec::with_capacity(n.min(body.len() / 53));
        let (mut at, mut entries) = (0usize, 0u64);
        for _ in 0..n {
            let offset = usize::try_from(c.u64()?).ok()?;
            let len = c.u32()? as usize;
            let block_entries = u64::from(c.u32()?);
            let sum: [u8; 32] = c.take(32)?.try_into().ok()?;
            let first_len = c.u32()? as usize;
            let first = (c.pos, first_len);
            let path = c.take(first_len)?;
            let after_last = blocks
                .last()
                .is_none_or(|b: &HeadBlock| &body[b.first.0..b.first.0 + b.first.1] < path);
            if offset != at || len == 0 || block_entries == 0 || path.is_empty() || !after_last {
                return None;
            }
            at = at.checked_add(len)?;
            entries = entries.checked_add(block_entries)?;
            blocks.push(HeadBlock {
                offset,
                len,
                entries: block_entries,
                sum,
                first,
            });
        }
        if c.pos != body.len() || entries != count {
            return None;
        }
        let end = bytes.len().checked_add(at)?;
        Some(HeadIndex {
            bytes,
            seq,
            hash,
            count,
            blocks,
            end,
        })
    }

    fn first(&self, b: usize) -> &[u8] {
        self.first_of(&self.blocks[b])
    }

    fn first_of(&self, block: &HeadBlock) -> &[u8] {
        let (s, l) = block.first;
        &self.bytes[s..s + l]
    }

    /// Where block `b` lies in the file.
    fn range(&self, b: usize) -> std::ops::Range<usize> {
        let start = self.bytes.len() + self.blocks[b].offset;
        start..start + self.blocks[b].len
    }

    /// The block that would hold `path`: the last whose first path is not above it.
    fn block_of(&self, path: &[u8]) -> Option<usize> {
        self.blocks
            .partition_point(|b| self.first_of(b) <= path)
            .checked_sub(1)
    }

    /// The blocks that hold any path starting with `prefix`: the one that would hold
    /// `prefix` itself (the first, when `prefix` is below every block) and each next
    /// one whose first path starts with it.
    fn blocks_with_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let start = self.block_of(prefix).unwrap_or(0);
        let more =
            (start + 1..self.blocks.len()).take_while(move |&b| self.first(b).starts_with(prefix));
        (start..start + 1)
            .filter(|&b| b < self.blocks.len())
            .chain(more)
    }

    /// Checks block `b`, read into `buf[at..]`, and appends the spans of its paths in
    /// `buf`. `None` when anything is off: its checksum, an entry, its first path, or
    /// a path not below the next block's first.
    fn check_block(
        &self,
        b: usize,
        buf: &[u8],
        at: usize,
        spans: &mut Vec<(usize, usize)>,
    ) -> Option<()> {
        let bytes = &buf[at..];
        let block = &self.blocks[b];
        if bytes.len() != block.len || blake3::hash(bytes).as_bytes() != &block.sum {
            return None;
        }
        let mut c = Cursor { buf: bytes, pos: 0 };
        let own = read_entries(&mut c, block.entries, HEAD_FIXED)?;
        let path = |&(s, l): &(usize, usize)| &bytes[s..s + l];
        if own.first().map(path)? != self.first(b) {
            return None;
        }
        if b + 1 < self.blocks.len() && own.last().map(path)? >= self.first(b + 1) {
            return None;
        }
        for &(s, l) in &own {
            byte_mode(bytes[s + l + 32])?;
            spans.push((at + s, l));
        }
        Some(())
    }
}

/// The recorded workspace files at the journal head: the `head-files` base plus the
/// file changes of the events after it.
pub struct HeadFiles {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Seq the base describes (`None`: empty base, before any event).
    base_seq: Option<u64>,
    /// Changes since the base: path -> content (`None`: deleted).
    overlay: BTreeMap<Vec<u8>, Option<Content>>,
    /// Seq of the last event folded in.
    seq: Option<u64>,
    /// The base on disk is missing or unusable.
    stale: bool,
    /// The base holds only some blocks of `head-files` ([`HeadFiles::load_around`]).
    partial: bool,
}

impl HeadFiles {
    /// Asks the kernel to start reading `head-files` of the ledger directory `dir`
    /// ([`ledger::prefetch`]), for a command that loads it after opening the ledger:
    /// the read then overlaps the opening. A hint only.
    pub fn prefetch(dir: &std::path::Path) {
        ledger::prefetch(&dir.join("index").join(HEAD_FILE));
    }

    /// The files at the head: from `head-files` when it matches this journal, else
    /// from the tree snapshots (and then saved by [`HeadFiles::save_if_due`]).
    pub fn load(ledger: &Ledger) -> CliResult<HeadFiles> {
        crate::state::refuse_if_damaged(ledger)?;
        let Some(head) = ledger.head() else {
            return Ok(HeadFiles::empty(true));
        };
        let buf = std::fs::read(index_file(ledger, HEAD_FILE)).unwrap_or_default();
        if let Some((mut hf, hash)) = Self::parse(buf) {
            if hf.catch_up(ledger, hash, head.seq, head.hash)? {
                return Ok(hf);
            }
        }
        let (tree, _) = crate::state::tree_at(ledger, head.seq)?;
        let mut hf = HeadFiles::empty(true);
        for (k, e) in tree.files() {
            hf.overlay
                .insert(k.name.as_bytes().to_vec(), Some(e.content));
        }
        hf.seq = tree.seq();
        Ok(hf)
    }

    /// Folds in the events after the base, checking that the base belongs to this
    /// journal: its event hash is the head's, or the `prev` of the event after it.
    /// `false`: unusable (the caller then starts from the tree snapshots).
    fn catch_up(
        &mut self,
        ledger: &Ledger,
        hash: Hash,
        head_seq: u64,
        head_hash: Hash,
    ) -> CliResult<bool> {
        let Some(base) = self.base_seq else {
            return Ok(false);
        };
        if base >= head_seq {
            return Ok(base == head_seq && hash == head_hash);
        }
        // One journal walk from the batch after the base (the base is always the last
        // event of a batch: the head when it was written): one read of the journal's
        // tail, not one per event. The walk checks the chain; the first event must name
        // the base's hash. A walk that fails leaves the base unusable (the caller then
        // starts from the tree snapshots).
        let mut linked = None;
        let walked = ledger.scan_range_refs(base + 1, head_seq, &mut |r| {
            if *linked.get_or_insert(r.event.prev == hash) {
                self.apply_ref(&r.event);
                Ok(())
            } else {
                Err(ledger::Error::Stopped)
            }
        });
        Ok(walked.is_ok() && linked == Some(true) && self.seq == Some(head_seq))
    }

    fn empty(stale: bool) -> HeadFiles {
        HeadFiles {
            buf: Vec::new(),
            spans: Vec::new(),
            base_seq: None,
            overlay: BTreeMap::new(),
            seq: None,
            stale,
            partial: false,
        }
    }

    /// A whole `head-files` file, every block checked.
    fn parse(buf: Vec<u8>) -> Option<(HeadFiles, Hash)> {
        let n = HeadIndex::len_from_header(&buf)?;
        let index = HeadIndex::parse(buf.get(..n)?.to_vec())?;
        if buf.len() != index.end {
            return None;
        }
        let mut spans = Vec::with_capacity(usize::try_from(index.count).ok()?.min(buf.len() / 45));
        for b in 0..index.blocks.len() {
            let range = index.range(b);
            index.check_block(b, &buf[..range.end], range.start, &mut spans)?;
        }
        Some((Self::with_base(buf, spans, &index, false), index.hash))
    }

    fn with_base(
        buf: Vec<u8>,
        spans: Vec<(usize, usize)>,
        index: &HeadIndex,
        partial: bool,
    ) -> HeadFiles {
        HeadFiles {
            buf,
            spans,
            base_seq: Some(index.seq),
            overlay: BTreeMap::new(),
            seq: Some(index.seq),
            stale: false,
            partial,
        }
    }

    /// The files at the head, for a command that looks only at `paths`, the paths of
    /// their ancestors and the paths beneath them ([`HeadFiles::get`] and
    /// [`HeadFiles::with_prefix`] with `path/`): of `head-files`, only the index and
    /// the blocks that can hold those are read and checked. Anything else is not to be
    /// asked of it, nor [`HeadFiles::iter`]. Falls back to [`HeadFiles::load`] when the
    /// file is missing or unusable.
    pub fn load_around(ledger: &Ledger, paths: &[&[u8]]) -> CliResult<HeadFiles> {
        crate::state::refuse_if_damaged(ledger)?;
        let Some(head) = ledger.head() else {
            return Ok(HeadFiles::empty(true));
        };
        if let Some((mut hf, hash)) = Self::read_around(&index_file(ledger, HEAD_FILE), paths) {
            if hf.catch_up(ledger, hash, head.seq, head.hash)? {
                return Ok(hf);
            }
        }
        Self::load(ledger)
    }

    /// Reads the index of the `head-files` file at `path` and the blocks
    /// [`HeadFiles::load_around`] needs for `paths`.
    fn read_around(path: &std::path::Path, paths: &[&[u8]]) -> Option<(HeadFiles, Hash)> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).ok()?;
        let len = usize::try_from(f.metadata().ok()?.len()).ok()?;
        let mut start = vec![0; len.min(HEAD_INDEX_READ)];
        f.read_exact_at(&mut start, 0).ok()?;
        let n = HeadIndex::len_from_header(&start)?;
        if n > len {
            return None;
        }
        let read = start.len();
        start.resize(n, 0);
        if n > read {
            f.read_exact_at(&mut start[read..], read as u64).ok()?;
        }
        let index = HeadIndex::parse(start)?;
        if len != index.end {
            return None;
        }
        let mut wanted = std::collections::BTreeSet::new();
        for &p in paths {
            for q in with_ancestors(p) {
                wanted.extend(index.block_of(q));
            }
            let mut dir = p.to_vec();
            dir.push(b'/');
            wanted.extend(index.blocks_with_prefix(&dir));
        }
        // (Every block read: a whole base, as `parse` gives.)
        let partial = wanted.len() < index.blocks.len();
        let mut buf = Vec::with_capacity(wanted.iter().map(|&b| index.blocks[b].len).sum());
        let mut spans = Vec::new();
        for b in wanted {
            let (range, at) = (index.range(b), buf.len());
            buf.resize(at + range.len(), 0);
            f.read_exact_at(&mut buf[at..], range.start as u64).ok()?;
            index.check_block(b, &buf, at, &mut spans)?;
        }
        Some((Self::with_base(buf, spans, &index, partial), index.hash))
    }

    fn base_content(&self, i: usize) -> (&[u8], Content) {
        let (s, l) = self.spans[i];
        let f = &self.buf[s + l..];
        (
            &self.buf[s..s + l],
            Content {
                hash: hash_at(f),
                mode: byte_mode(f[32]).expect("mode bytes are checked on load"),
                size: le_u64(&f[33..]),
            },
        )
    }

    /// Folds events (in seq order, after the ones already folded) in.
    pub fn apply(&mut self, records: &[Record]) {
        for r in records {
            self.apply_one(r);
        }
    }

    fn apply_one(&mut self, r: &Record) {
        let files = match &r.event.body {
            Body::Change(c) => &c.resources[..],
            _ => &[],
        };
        let files = files.iter().filter(|rc| rc.key.is_file());
        self.fold_in(
            r.event.seq,
            files.map(|rc| (rc.key.name.as_bytes(), rc.new)),
        );
    }

    /// [`HeadFiles::apply_one`] of a borrowed event (no owned copy made).
    fn apply_ref(&mut self, ev: &EventRef) {
        let files = ev.resources().iter();
        let files = files.filter(|rc| rc.key.namespace == ResourceKey::FILE);
        self.fold_in(ev.seq, files.map(|rc| (rc.key.name, rc.new)));
    }

    /// Folds in the file changes of the event at `seq`, unless it was folded already.
    fn fold_in<'a>(&mut self, seq: u64, files: impl Iterator<Item = (&'a [u8], Option<Content>)>) {
        if self.seq.is_some_and(|s| seq <= s) {
            return;
        }
        for (name, new) in files {
            self.overlay.insert(name.to_vec(), new);
        }
        self.seq = Some(seq);
    }

    /// Seq of the last event folded in.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Index of the first base entry whose path is not below `path`.
    fn lower_bound(&self, path: &[u8]) -> usize {
        self.spans
            .partition_point(|&(s, l)| &self.buf[s..s + l] < path)
    }

    /// The recorded content at `path`, if a file is recorded there.
    pub fn get(&self, path: &[u8]) -> Option<Content> {
        if let Some(c) = self.overlay.get(path) {
            return *c;
        }
        let i = self.lower_bound(path);
        let (p, c) = (i < self.spans.len()).then(|| self.base_content(i))?;
        (p == path).then_some(c)
    }

    /// The recorded files whose path starts with `prefix`, in path order.
    pub fn with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Content)> {
        let mut out: BTreeMap<Vec<u8>, Content> = BTreeMap::new();
        for i in self.lower_bound(prefix)..self.spans.len() {
            let (p, c) = self.base_content(i);
            if !p.starts_with(prefix) {
                break;
            }
            out.insert(p.to_vec(), c);
        }
        for (p, c) in self.overlay.range(prefix.to_vec()..) {
            if !p.starts_with(prefix) {
                break;
            }
            match c {
                Some(c) => out.insert(p.clone(), *c),
                None => out.remove(p),
            };
        }
        out.into_iter().collect()
    }

    /// Every recorded file, sorted by path (not of one loaded around some paths).
    pub fn iter(&self) -> HeadIter<'_> {
        assert!(!self.partial, "every file of a partly read head-files");
        HeadIter {
            hf: self,
            i: 0,
            overlay: self.overlay.iter().peekable(),
        }
    }

    /// Whether the base came from `head-files` (not rebuilt from the tree snapshots).
    #[cfg(test)]
    pub fn base_used(&self) -> bool {
        !self.stale
    }

    /// Bytes of `head-files` read into the base (all of its blocks, or some).
    #[cfg(test)]
    pub fn base_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Every recorded file, sorted by path, in a vector.
    #[cfg(test)]
    pub fn files(&self) -> Vec<(&[u8], Content)> {
        self.iter().collect()
    }

    /// Rewrites `head-files` at the folded seq when it is missing or far behind. A
    /// speed-up only: failures are ignored.
    pub fn save_if_due(&self, ledger: &Ledger) {
        let Some(seq) = self.seq else { return };
        let due = self.stale
            || self.base_seq.is_none_or(|b| seq >= b + HEAD_FILES_EVERY)
            || self.overlay.len() >= HEAD_FILES_MAX_CHANGED;
        if !due {
            return;
        }
        if self.partial {
            // Only some blocks were read: the whole file is (once per
            // `HEAD_FILES_EVERY` events).
            if let Ok(whole) = HeadFiles::load(ledger) {
                whole.save_if_due(ledger);
            }
            return;
        }
        // Written at the head only, whose hash is known without reading its event.
        let Some(head) = ledger.head().filter(|h| h.seq == seq) else {
            return;
        };
        // The blocks, each closed once it holds `HEAD_BLOCK` bytes, and their index.
        let mut blocks = Vec::with_capacity(self.buf.len() + self.overlay.len() * 96);
        let mut index = Vec::new();
        let (mut start, mut entries, mut count, mut n) = (0usize, 0u32, 0u64, 0u32);
        let close = |blocks: &[u8], index: &mut Vec<u8>, start: usize, entries: u32| {
            let block = &blocks[start..];
            let first_len = u32::from_le_bytes(block[..4].try_into().expect("4 bytes")) as usize;
            index.extend_from_slice(&(start as u64).to_le_bytes());
            // (Below `HEAD_BLOCK` plus one entry, whose path length is a `u32`.)
            index.extend_from_slice(&(block.len() as u32).to_le_bytes());
            index.extend_from_slice(&entries.to_le_bytes());
            index.extend_from_slice(blake3::hash(block).as_bytes());
            index.extend_from_slice(&block[..4 + first_len]);
        };
        for (p, c) in self.iter() {
            put_path(&mut blocks, p);
            blocks.extend_from_slice(c.hash.as_bytes());
            blocks.push(mode_byte(c.mode));
            blocks.extend_from_slice(&c.size.to_le_bytes());
            count += 1;
            entries += 1;
            if blocks.len() - start >= HEAD_BLOCK {
                close(&blocks, &mut index, start, entries);
                (start, entries, n) = (blocks.len(), 0, n + 1);
            }
        }
        if entries > 0 {
            close(&blocks, &mut index, start, entries);
            n += 1;
        }
        let Ok(index_len) = u32::try_from(index.len()) else {
            return; // an index of 4 GiB: not written
        };
        let mut out = Vec::with_capacity(HEAD_HEADER + index.len() + 32 + blocks.len());
        out.extend_from_slice(HEAD_MAGIC);
        out.extend_from_slice(&HEAD_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(head.hash.as_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&index_len.to_le_bytes());
        out.extend_from_slice(&index);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out.extend_from_slice(&blocks);
        let _ = write_index_file(ledger, HEAD_FILE, &out);
    }
}

/// The files of a [`HeadFiles`]: its base merged with the changes since, in path order.
pub struct HeadIter<'a> {
    hf: &'a HeadFiles,
    i: usize,
    overlay: std::iter::Peekable<std::collections::btree_map::Iter<'a, Vec<u8>, Option<Content>>>,
}

impl<'a> Iterator for HeadIter<'a> {
    type Item = (&'a [u8], Content);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base = (self.i < self.hf.spans.len()).then(|| self.hf.base_content(self.i));
            let from_overlay = match (base, self.overlay.peek()) {
                (None, None) => return None,
                (Some(b), None) => {
                    self.i += 1;
                    return Some(b);
                }
                (None, Some(_)) => true,
                (Some(b), Some((p, _))) => match p.as_slice().cmp(b.0) {
                    std::cmp::Ordering::Greater => {
                        self.i += 1;
                        return Some(b);
                    }
                    std::cmp::Ordering::Equal => {
                        self.i += 1;
                        true
                    }
                    std::cmp::Ordering::Less => true,
                },
            };
            if from_overlay {
                if let Some((p, Some(c))) = self.overlay.next() {
                    return Some((p.as_slice(), *c));
                }
            }
        }
    }
}

const DIR_FILE: &str = "dir-cache";
const DIR_MAGIC: &[u8; 8] = b"LDGRDIRS";
const DIR_VERSION: u32 = 1;

/// What a directory's own stat data said when its entries were read. Any entry
/// added, removed or renamed in it changes its mtime and ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStat {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl DirStat {
    const LEN: usize = 32;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.ctime_ns.to_le_bytes());
    }

    fn decode(b: &[u8]) -> DirStat {
        DirStat {
            dev: le_u64(&b[0..]),
            ino: le_u64(&b[8..]),
            mtime_ns: le_u64(&b[16..]) as i64,
            ctime_ns: le_u64(&b[24..]) as i64,
        }
    }
}

/// A directory's entries as read by the walk: name and type byte (see
/// [`crate::walk`]'s `type_byte`), in the order read.
pub struct Listed {
    pub rel: Vec<u8>,
    pub stat: DirStat,
    pub entries: Vec<(Vec<u8>, u8)>,
}

/// One directory in a loaded dir cache.
struct DirSpan {
    path: (usize, usize),
    stat: DirStat,
    /// Offset of the first entry, and how many.
    entries: (usize, usize),
}

/// Directory listings from earlier walks, so a directory whose stat data has not
/// changed is not read again (git's untracked cache does the same). Only the raw
/// entries are kept; ignore rules are applied to them afresh on every walk (the ignore
/// files themselves are read every time).
///
/// `dir-cache` (magic `LDGRDIRS`): `magic[8] version:u32 0:u32 count:u64`, then per
/// directory (sorted by path; the root is the empty path) `path_len:u32 path dev:u64
/// ino:u64 mtime_ns:i64 ctime_ns:i64 entries:u32` and per entry `name_len:u8 name
/// type:u8`, then `blake3[32]`. A listing is stored only when the directory's mtime and
/// ctime are more than a second older than the walk (a change in the same clock tick
/// would not show), and used only when all four stat fields match.
#[derive(Default)]
pub struct DirCache {
    buf: Vec<u8>,
    dirs: Vec<DirSpan>,
}

impl DirCache {
    /// Loads the cache; missing or damaged gives an empty one.
    pub fn load(index_dir: &std::path::Path) -> DirCache {
        let buf = std::fs::read(index_dir.join(DIR_FILE)).unwrap_or_default();
        Self::parse(buf).unwrap_or_default()
    }

    fn parse(buf: Vec<u8>) -> Option<DirCache> {
        let body = checked_body(&buf)?;
        let mut c = Cursor { buf: body, pos: 0 };
        if c.take(8)? != DIR_MAGIC || c.u32()? != DIR_VERSION || c.u32()? != 0 {
            return None;
        }
        let count = usize::try_from(c.u64()?).ok()?;
        // Each directory takes at least 4 + 32 + 4 bytes.
        if count > body.len() / 40 {
            return None;
        }
        let mut dirs: Vec<DirSpan> = Vec::with_capacity(count);
        for _ in 0..count {
            let len = c.u32()? as usize;
            let start = c.pos;
            let path = c.take(len)?;
            if let Some(prev) = dirs.last() {
                if path <= &body[prev.path.0..prev.path.0 + prev.path.1] {
                    return None;
                }
            }
            let stat = DirStat::decode(c.take(DirStat::LEN)?);
            let n = c.u32()? as usize;
            let first = c.pos;
            for _ in 0..n {
                let name_len = c.take(1)?[0] as usize;
                let name = c.take(name_len)?;
                if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                    return None;
                }
                crate::walk::byte_type(c.take(1)?[0])?;
            }
            dirs.push(DirSpan {
                path: (start, len),
                stat,
                entries: (first, n),
            });
        }
        (c.pos == body.len()).then_some(DirCache { buf, dirs })
    }

    fn path(&self, i: usize) -> &[u8] {
        let (s, l) = self.dirs[i].path;
        &self.buf[s..s + l]
    }

    /// Index of the listing of directory `rel` if its stat data is still `stat`.
    pub fn lookup(&self, rel: &[u8], stat: &DirStat) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.dirs.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.path(mid).cmp(rel) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    return (self.dirs[mid].stat == *stat).then_some(mid);
                }
            }
        }
        None
    }

    /// The entries of listing `i`: name and type byte.
    pub fn entries(&self, i: usize) -> impl Iterator<Item = (&[u8], u8)> + '_ {
        let (mut pos, n) = self.dirs[i].entries;
        (0..n).map(move |_| {
            let len = self.buf[pos] as usize;
            let name = &self.buf[pos + 1..pos + 1 + len];
            let t = self.buf[pos + 1 + len];
            pos += len + 2;
            (name, t)
        })
    }

    /// Saves the listings after a walk that used listings `hits` of this cache and read
    /// `listed` afresh. With `partial` (a walk limited to a scope) the listings it did
    /// not visit are kept; otherwise they are dropped. Written only when something
    /// changed; failures are ignored (it is only a speed-up).
    pub fn save(&self, ledger: &Ledger, hits: &[usize], listed: Vec<Listed>, partial: bool) {
        if let Some(out) = self.encode(hits, listed, partial) {
            let _ = write_flat(ledger, DIR_FILE, out);
        }
    }

    /// A cache as [`DirCache::save`] would write it (for tests).
    #[cfg(test)]
    pub fn rebuilt(&self, hits: &[usize], listed: Vec<Listed>, partial: bool) -> DirCache {
        match self.encode(hits, listed, partial) {
            Some(mut out) => {
                let sum = blake3::hash(&out);
                out.extend_from_slice(sum.as_bytes());
                DirCache::parse(out).expect("a cache just encoded parses")
            }
            None => DirCache {
                buf: self.buf.clone(),
                dirs: self
                    .dirs
                    .iter()
                    .map(|d| DirSpan {
                        path: d.path,
                        stat: d.stat,
                        entries: d.entries,
                    })
                    .collect(),
            },
        }
    }

    /// Number of listings.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// The file [`DirCache::save`] writes (without its checksum), `None` if unchanged.
    fn encode(&self, hits: &[usize], listed: Vec<Listed>, partial: bool) -> Option<Vec<u8>> {
        let mut hit = vec![false; self.dirs.len()];
        for &i in hits {
            if let Some(h) = hit.get_mut(i) {
                *h = true;
            }
        }
        if listed.is_empty() && (partial || hit.iter().all(|h| *h)) {
            return None;
        }
        let mut new: Vec<Listed> = listed;
        new.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        new.dedup_by(|a, b| a.rel == b.rel);
        let mut out = Vec::with_capacity(self.buf.len() + new.len() * 512);
        out.extend_from_slice(DIR_MAGIC);
        out.extend_from_slice(&DIR_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        let mut count = 0u64;
        let mut fresh = new.iter().peekable();
        let put_new = |out: &mut Vec<u8>, l: &Listed| {
            put_path(out, &l.rel);
            l.stat.encode(out);
            out.extend_from_slice(&(l.entries.len() as u32).to_le_bytes());
            for (name, t) in &l.entries {
                out.push(name.len() as u8);
                out.extend_from_slice(name);
                out.push(*t);
            }
        };
        for (i, d) in self.dirs.iter().enumerate() {
            let path = self.path(i);
            while let Some(l) = fresh.next_if(|l| l.rel.as_slice() < path) {
                put_new(&mut out, l);
                count += 1;
            }
            if let Some(l) = fresh.next_if(|l| l.rel.as_slice() == path) {
                put_new(&mut out, l);
                count += 1;
            } else if hit[i] || partial {
                // Kept as it was: path, stat, count and entries are contiguous.
                let end = self
                    .entries(i)
                    .fold(d.entries.0, |pos, (name, _)| pos + name.len() + 2);
                put_path(&mut out, path);
                out.extend_from_slice(&self.buf[d.path.0 + d.path.1..end]);
                count += 1;
            }
        }
        for l in fresh {
            put_new(&mut out, l);
            count += 1;
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        Some(out)
    }
}
