//! The flat change index: which seqs carry a change ID, and which changes revert it,
//! without opening sled (whose start-up grows with everything it holds: 150 ms and
//! 120 MiB at 10^6 events, more than a whole revert may take).
//!
//! Records are 16 bytes: `key` (u64 LE, the first 8 bytes of `BLAKE3(change ID)`) and
//! `val` (u64 LE: the seq, with bit 63 set when the record says "this seq's change
//! reverts the change with this key"). Every event adds one record for its own change
//! ID, and a `Change` event that reverts another one more for the reverted ID.
//!
//! - `changes`: every record in seq order (append-only; the index state says how many
//!   are valid, a longer file is cut back on open).
//! - `changes.sorted`: the first `sorted` of them sorted by `(key, val)`, rewritten
//!   (temp file and rename) each time [`MERGE_AT`] more have come; the rest are kept in
//!   memory, read from the end of `changes` on open.
//!
//! A key names candidates only: readers check each seq's event before believing it
//! (two IDs may share a key). Derived data, never synced, checked on open against the
//! index state and the journal and rebuilt when it disagrees.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::event::Body;
use crate::journal::Record;

pub(crate) const LOG_FILE: &str = "changes";
pub(crate) const SORTED_FILE: &str = "changes.sorted";
const RECORD: usize = 16;
/// Records kept out of the sorted file (in memory) before it is rewritten.
pub(crate) const MERGE_AT: usize = 16_384;
/// Set in `val` for "this seq reverts the keyed change".
pub(crate) const REVERTS: u64 = 1 << 63;

/// The lookup key of a change ID.
pub(crate) fn change_key(id: &str) -> u64 {
    let h = blake3::hash(id.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
}

/// The records one event adds: `(key of its change ID, seq)`, and for a change that
/// reverts another `(key of that ID, seq | REVERTS)`. The one definition the log, its
/// check on open and `verify`'s digest all use.
pub(crate) fn event_records(
    seq: u64,
    change_id: &str,
    reverts: Option<&str>,
) -> [Option<(u64, u64)>; 2] {
    [
        Some((change_key(change_id), seq)),
        reverts.map(|t| (change_key(t), seq | REVERTS)),
    ]
}

fn reverts_of(r: &Record) -> Option<&str> {
    match &r.event.body {
        Body::Change(c) => c.reverts.as_deref(),
        _ => None,
    }
}

/// Whether `rec` is one of the records of event `r`.
pub(crate) fn names(r: &Record, rec: (u64, u64)) -> bool {
    event_records(r.event.seq, &r.event.change_id, reverts_of(r)).contains(&Some(rec))
}

/// One record's share of [`ChangeLog::digests`]: a sum of mixed records does not
/// depend on their order, so a walk of the journal in parallel pieces can compute it.
pub(crate) fn mix(key: u64, val: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(key ^ splitmix(val))
}

/// What one event adds to the digest of the log ([`ChangeLog::digests`]).
pub(crate) fn digest_of(seq: u64, change_id: &str, reverts: Option<&str>) -> u64 {
    digest(event_records(seq, change_id, reverts).into_iter().flatten())
}

/// The sum of [`mix`] over records.
fn digest(recs: impl Iterator<Item = (u64, u64)>) -> u64 {
    recs.fold(0u64, |acc, (k, v)| acc.wrapping_add(mix(k, v)))
}

fn encode(recs: &[(u64, u64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(recs.len() * RECORD);
    for (k, v) in recs {
        b.extend_from_slice(&k.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Records read at once while searching: one 4 KiB page.
const PAGE_RECORDS: u64 = 256;

/// The index of the first of `n` sorted records whose key is `>= key` (`n` if none),
/// reading records with `read(index, buf)`.
///
/// Keys are hashes, so they are spread evenly: the search reads one page of records
/// around where the key would be if they were exactly even, and keeps interpolating
/// inside the remaining range; it halves the range instead after four rounds, so
/// uneven keys cost at most a binary search. A lookup usually reads one or two pages,
/// where a binary search reads about 20 records on as many as 12 pages, each a disk
/// read when the file is not in the page cache.
fn first_at_least(n: u64, key: u64, read: impl Fn(u64, &mut [u8]) -> Result<()>) -> Result<u64> {
    // The answer lies in [lo, hi]; the keys of records lo..hi lie in [klo, khi].
    let (mut lo, mut hi) = (0u64, n);
    let (mut klo, mut khi) = (0u64, u64::MAX);
    let mut page = vec![0u8; PAGE_RECORDS as usize * RECORD];
    let mut round = 0;
    while lo < hi {
        let span = hi - lo;
        let guess = if round < 4 {
            let frac = u128::from(key.saturating_sub(klo).min(khi - klo));
            lo + (frac * u128::from(span) / (u128::from(khi - klo) + 1)) as u64
        } else {
            lo + span / 2
        };
        round += 1;
        let start = guess
            .saturating_sub(PAGE_RECORDS / 2)
            .min(hi.saturating_sub(PAGE_RECORDS))
            .max(lo);
        let end = (start + PAGE_RECORDS).min(hi);
        let b = &mut page[..((end - start) as usize) * RECORD];
        read(start, b)?;
        let recs = decode(b);
        let (first, last) = (recs[0].0, recs[recs.len() - 1].0);
        if key <= first {
            // At or before `start`.
            if start == lo {
                return Ok(lo);
            }
            hi = start;
            khi = first;
        } else if key > last {
            lo = end;
            klo = last;
        } else {
            return Ok(start + recs.partition_point(|r| r.0 < key) as u64);
        }
    }
    Ok(lo)
}

fn decode(b: &[u8]) -> Vec<(u64, u64)> {
    b.chunks_exact(RECORD)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().unwrap()),
                u64::from_le_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect()
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Index(format!("{what} {}: {e}", path.display()))
}

struct Inner {
    /// Records in `changes` (the file may be longer: cut back on open).
    len: u64,
    /// Records in `changes.sorted`.
    sorted: u64,
    sorted_file: Option<File>,
    /// Records `sorted..len`, in log order.
    tail: Vec<(u64, u64)>,
    /// One past the highest seq recorded.
    next_seq: u64,
}

impl Inner {
    fn empty() -> Inner {
        Inner {
            len: 0,
            sorted: 0,
            sorted_file: None,
            tail: Vec::new(),
            next_seq: 0,
        }
    }
}

pub(crate) struct ChangeLog {
    dir: PathBuf,
    log: File,
    inner: Mutex<Inner>,
}

impl ChangeLog {
    /// Opens the files as the index state describes them (`len` records in the log,
    /// `sorted` of them in the sorted file). `None` when they disagree with it: the
    /// caller rebuilds.
    pub(crate) fn open(dir: &Path, len: u64, sorted: u64) -> Result<(ChangeLog, bool)> {
        let path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        let empty = |log| ChangeLog {
            dir: dir.to_path_buf(),
            log,
            inner: Mutex::new(Inner::empty()),
        };
        let have = log.metadata().map_err(|e| io("reading", &path, e))?.len();
        let sorted_path = dir.join(SORTED_FILE);
        let sorted_file = File::open(&sorted_path).ok();
        let sorted_have = sorted_file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        if have < len * RECORD as u64
            || sorted > len
            || sorted_have != sorted * RECORD as u64
            || (len - sorted) as usize > 4 * MERGE_AT
        {
            return Ok((empty(log), false));
        }
        if have > len * RECORD as u64 {
            log.set_len(len * RECORD as u64)
                .map_err(|e| io("truncating", &path, e))?;
        }
        let mut buf = vec![0u8; ((len - sorted) as usize) * RECORD];
        log.read_exact_at(&mut buf, sorted * RECORD as u64)
            .map_err(|e| io("reading", &path, e))?;
        let tail = decode(&buf);
        let mut last = [0u8; RECORD];
        let next_seq = if len == 0 {
            0
        } else {
            log.read_exact_at(&mut last, (len - 1) * RECORD as u64)
                .map_err(|e| io("reading", &path, e))?;
            (decode(&last)[0].1 & !REVERTS) + 1
        };
        Ok((
            ChangeLog {
                dir: dir.to_path_buf(),
                log,
                inner: Mutex::new(Inner {
                    len,
                    sorted,
                    sorted_file,
                    tail,
                    next_seq,
                }),
            },
            true,
        ))
    }

    /// (records in the log, records in the sorted file).
    pub(crate) fn lens(&self) -> (u64, u64) {
        let i = self.inner.lock().unwrap();
        (i.len, i.sorted)
    }

    /// The last record, for checking it against the journal.
    pub(crate) fn last(&self) -> Option<(u64, u64)> {
        let i = self.inner.lock().unwrap();
        if let Some(r) = i.tail.last() {
            return Some(*r);
        }
        if i.len == 0 {
            return None;
        }
        let mut b = [0u8; RECORD];
        self.log
            .read_exact_at(&mut b, (i.len - 1) * RECORD as u64)
            .ok()?;
        Some(decode(&b)[0])
    }

    /// Empties both files.
    pub(crate) fn clear(&self) -> Result<()> {
        let mut i = self.inner.lock().unwrap();
        let path = self.dir.join(LOG_FILE);
        self.log
            .set_len(0)
            .map_err(|e| io("truncating", &path, e))?;
        let sorted = self.dir.join(SORTED_FILE);
        match fs::remove_file(&sorted) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &sorted, e)),
        }
        *i = Inner::empty();
        Ok(())
    }

    /// Adds the records of events (in seq order); events already recorded are skipped,
    /// so re-adding after an interrupted catch-up does not repeat them.
    pub(crate) fn add(&self, records: &[Record]) -> Result<()> {
        let mut i = self.inner.lock().unwrap();
        let recs: Vec<(u64, u64)> = records
            .iter()
            .filter(|r| r.event.seq >= i.next_seq)
            .flat_map(|r| event_records(r.event.seq, &r.event.change_id, reverts_of(r)))
            .flatten()
            .collect();
        self.push(&mut i, &recs)
    }

    /// Appends records (in seq order) to the log and the memory, merging when due.
    fn push(&self, i: &mut Inner, recs: &[(u64, u64)]) -> Result<()> {
        let Some(last) = recs.last() else {
            return Ok(());
        };
        let path = self.dir.join(LOG_FILE);
        self.log
            .write_all_at(&encode(recs), i.len * RECORD as u64)
            .map_err(|e| io("writing", &path, e))?;
        i.len += recs.len() as u64;
        i.next_seq = (last.1 & !REVERTS) + 1;
        i.tail.extend_from_slice(recs);
        if i.tail.len() >= MERGE_AT {
            self.merge(i)?;
        }
        Ok(())
    }

    /// Rewrites the sorted file with the records kept in memory merged in.
    fn merge(&self, i: &mut Inner) -> Result<()> {
        let path = self.dir.join(SORTED_FILE);
        let mut old = vec![0u8; (i.sorted as usize) * RECORD];
        if let Some(f) = &i.sorted_file {
            f.read_exact_at(&mut old, 0)
                .map_err(|e| io("reading", &path, e))?;
        }
        let mut all = decode(&old);
        drop(old);
        let start = all.len();
        all.extend_from_slice(&i.tail);
        all[start..].sort_unstable();
        // Both runs are sorted: a stable sort of their concatenation merges them.
        all.sort();
        let tmp = self.dir.join(format!("{SORTED_FILE}.tmp"));
        fs::write(&tmp, encode(&all))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io("writing", &path, e)
            })?;
        i.sorted_file = Some(File::open(&path).map_err(|e| io("opening", &path, e))?);
        i.sorted = i.len;
        i.tail.clear();
        Ok(())
    }

    /// For `verify`: the sum of [`mix`] over every record of the log, and whether the
    /// sorted file and the records kept in memory hold exactly the log's records.
    pub(crate) fn digests(&self) -> Result<(u64, bool)> {
        let i = self.inner.lock().unwrap();
        let sum = |recs: &[(u64, u64)]| digest(recs.iter().copied());
        let path = self.dir.join(LOG_FILE);
        let mut log = vec![0u8; (i.len as usize) * RECORD];
        self.log
            .read_exact_at(&mut log, 0)
            .map_err(|e| io("reading", &path, e))?;
        let log = decode(&log);
        let split = i.sorted as usize;
        let mut sorted = vec![0u8; split * RECORD];
        if let Some(f) = &i.sorted_file {
            f.read_exact_at(&mut sorted, 0)
                .map_err(|e| io("reading", &self.dir.join(SORTED_FILE), e))?;
        }
        let sorted = decode(&sorted);
        let same = sum(&sorted) == sum(&log[..split])
            && sorted.windows(2).all(|w| w[0] <= w[1])
            && log[split..] == i.tail[..];
        Ok((sum(&log), same))
    }

    /// Values of every record with `key`: sorted file (binary search) then memory.
    pub(crate) fn lookup(&self, key: u64) -> Result<Vec<u64>> {
        let i = self.inner.lock().unwrap();
        let mut out = Vec::new();
        if let Some(f) = &i.sorted_file {
            let path = self.dir.join(SORTED_FILE);
            let read = |at: u64, b: &mut [u8]| {
                f.read_exact_at(b, at * RECORD as u64)
                    .map_err(|e| io("reading", &path, e))
            };
            let mut lo = first_at_least(i.sorted, key, read)?;
            let mut chunk = vec![0u8; 64 * RECORD];
            'scan: while lo < i.sorted {
                let n = (i.sorted - lo).min(64);
                let b = &mut chunk[..(n as usize) * RECORD];
                read(lo, b)?;
                for (k, v) in decode(b) {
                    if k != key {
                        break 'scan;
                    }
                    out.push(v);
                }
                lo += n;
            }
        }
        out.extend(i.tail.iter().filter(|r| r.0 == key).map(|r| r.1));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page-wise interpolating search finds the first record at or above any key,
    /// as a binary search would, on evenly spread keys (hashes), on very uneven ones
    /// (clusters and long runs of one key), on empty and tiny files, and for keys
    /// below, between, equal to and above the records'.
    #[test]
    fn the_search_finds_the_first_record_at_or_above_every_key() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut sets: Vec<Vec<u64>> = vec![
            vec![],
            vec![5],
            (0..100).collect(),
            (0..20_000).map(|_| next()).collect(),
            (0..5_000).map(|i| i / 700).collect(),
            (0..3_000)
                .map(|i| if i < 2_900 { 7 } else { u64::MAX - i })
                .collect(),
            (0..4_000)
                .map(|_| next() % 50 + (next() % 2) * (u64::MAX / 2))
                .collect(),
        ];
        for keys in &mut sets {
            keys.sort_unstable();
            let bytes: Vec<u8> = keys
                .iter()
                .flat_map(|k| [k.to_le_bytes(), 0u64.to_le_bytes()].concat())
                .collect();
            let reads = std::cell::Cell::new(0u32);
            let read = |at: u64, b: &mut [u8]| -> Result<()> {
                let from = at as usize * RECORD;
                b.copy_from_slice(&bytes[from..from + b.len()]);
                reads.set(reads.get() + 1);
                Ok(())
            };
            let n = keys.len() as u64;
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 6, 7, 8];
            probes.extend(
                keys.iter()
                    .step_by(37)
                    .flat_map(|&k| [k, k.wrapping_add(1), k.wrapping_sub(1)]),
            );
            probes.extend((0..200).map(|_| next()));
            let (mut most, count) = (0, probes.len() as u32);
            for key in probes {
                let before = reads.get();
                let want = keys.partition_point(|&k| k < key) as u64;
                assert_eq!(
                    first_at_least(n, key, read).unwrap(),
                    want,
                    "key {key} in {n} keys"
                );
                most = most.max(reads.get() - before);
            }
            // Halving after four rounds bounds every search; evenly spread keys (the
            // 20,000 hashes) take about two page reads.
            let pages = n.div_ceil(PAGE_RECORDS).max(1);
            assert!(
                u64::from(most) <= 5 + u64::from(64 - pages.leading_zeros()),
                "{most} reads for {n} keys"
            );
            if n == 20_000 {
                let mean = f64::from(reads.get()) / f64::from(count);
                assert!(mean <= 2.5, "{mean} reads per search on hashed keys");
            }
        }
    }

    #[test]
    fn lookups_find_every_record_across_merges_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (log, ok) = ChangeLog::open(dir.path(), 0, 0).unwrap();
        assert!(ok);
        // Several merges' worth, pushed in pieces as `add` pushes batches.
        let n = (MERGE_AT * 2 + 100) as u64;
        {
            let mut i = log.inner.lock().unwrap();
            let recs: Vec<(u64, u64)> = (0..n).map(|seq| (seq % 1000, seq)).collect();
            for piece in recs.chunks(512) {
                log.push(&mut i, piece).unwrap();
            }
        }
        let check = |log: &ChangeLog| {
            for key in [0u64, 1, 499, 999] {
                let mut got = log.lookup(key).unwrap();
                got.sort_unstable();
                let want: Vec<u64> = (0..n).filter(|s| s % 1000 == key).collect();
                assert_eq!(got, want, "key {key}");
            }
            assert!(log.lookup(1000).unwrap().is_empty());
        };
        check(&log);
        let (len, sorted) = log.lens();
        assert_eq!(len, n);
        assert_eq!(sorted, (MERGE_AT * 2) as u64);
        drop(log);
        let (log, ok) = ChangeLog::open(dir.path(), len, sorted).unwrap();
        assert!(ok);
        check(&log);
        assert_eq!(log.last(), Some(((n - 1) % 1000, n - 1)));
        // A state claiming more than the files hold is refused (rebuild).
        assert!(!ChangeLog::open(dir.path(), len + 1, sorted).unwrap().1);
        assert!(!ChangeLog::open(dir.path(), len, sorted - 1).unwrap().1);
        // A longer log than the state says is cut back to it.
        let (log, ok) = ChangeLog::open(dir.path(), len - 5, sorted).unwrap();
        assert!(ok);
        assert_eq!(log.last(), Some(((n - 6) % 1000, n - 6)));
        assert_eq!(
            fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            (len - 5) * RECORD as u64
        );
    }
}
