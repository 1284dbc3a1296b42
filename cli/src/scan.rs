//! Comparing the workspace on disk with the recorded tree.
//!
//! Walks the workspace ([`crate::walk`]: `.ledger/` and `.git/` skipped, so are a
//! killed revert's `.ledger-tmp-PID-N` files (reported), `.gitignore` and
//! `.ledgerignore` honoured), uses the stat cache ([`crate::cache::StatCache`]: size,
//! mtime, ctime, inode, mode) so unchanged files are not read, and produces the
//! created/modified/deleted files as `ResourceChange`s. Symlinks are recorded as their
//! target bytes and never followed. The walk, the recorded files and the cache are all
//! sorted by path, so they are compared in one merge.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use ledger::{Content, Hash, Ledger, Mode, Op, Pending, ResourceChange, ResourceKey};

use crate::cache::{CacheIter, DirCache, StatCache, StatEntry};
use crate::output::{CliError, CliResult, EXIT_ERROR};
pub use crate::walk::Skipped;
use crate::walk::{FileStat, Found};

/// Files whose mtime or ctime is this close to the scan are not cached (they are read
/// again next time): a write in the same timestamp tick would not change the stat data.
const RACY_NS: i64 = 1_000_000_000;

/// The workspace root and the ledger in it.
pub struct Workspace {
    pub root: PathBuf,
}

/// What a scan found.
pub struct ScanResult {
    /// Sorted by path.
    pub changes: Vec<ResourceChange>,
    /// Content written to the store for `changes` (when storing).
    pub pending: Pending,
    /// Entries that are neither files nor symlinks, with why they were skipped.
    pub skipped: Vec<Skipped>,
}

fn mode_of(st: &FileStat) -> Mode {
    if st.is_symlink() {
        Mode::Symlink
    } else if st.mode & 0o100 != 0 {
        Mode::Executable
    } else {
        Mode::Regular
    }
}

/// The cache entry a file with stat data `st` and content `hash` gets, if any: none
/// when its mtime or ctime is within [`RACY_NS`] of `scan_start` (or after it).
pub fn cache_entry(st: &FileStat, hash: Hash, scan_start: i64) -> Option<StatEntry> {
    (scan_start - st.mtime_ns > RACY_NS && scan_start - st.ctime_ns > RACY_NS).then_some(
        StatEntry {
            size: st.size,
            mtime_ns: st.mtime_ns,
            ctime_ns: st.ctime_ns,
            ino: st.ino,
            mode: mode_of(st),
            hash,
        },
    )
}

/// Whether a cache entry describes a file with stat data `st`.
pub fn cache_matches(e: &StatEntry, st: &FileStat) -> bool {
    e.size == st.size
        && e.mtime_ns == st.mtime_ns
        && e.ctime_ns == st.ctime_ns
        && e.ino == st.ino
        && e.mode == mode_of(st)
}

pub fn display_path(rel: &[u8]) -> String {
    ledger::Name(rel.to_vec()).display()
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::new(
        EXIT_ERROR,
        format!("cannot read {}: {e}; nothing was recorded", path.display()),
    )
}

/// A walk running on other threads ([`Workspace::start_walk`]).
pub struct WalkHandle {
    scan_start: i64,
    partial: bool,
    thread: std::thread::JoinHandle<(CliResult<crate::walk::Walk>, DirCache)>,
}

/// What a walk of the workspace found, sorted by path.
pub struct Walked {
    /// When it started (ns since the epoch).
    scan_start: i64,
    walk: crate::walk::Walk,
}

/// The change from `recorded` to `now` at `rel`, if any.
fn change(rel: &[u8], recorded: Option<Content>, now: Content) -> Option<ResourceChange> {
    match recorded {
        None => Some(ResourceChange {
            key: ResourceKey::file(rel),
            op: Op::Create,
            old: None,
            new: Some(now),
        }),
        Some(old) if old.hash != now.hash || old.mode != now.mode => Some(ResourceChange {
            key: ResourceKey::file(rel),
            op: Op::Modify,
            old: Some(old),
            new: Some(now),
        }),
        Some(_) => None,
    }
}

/// A file whose content must be read.
struct ToRead {
    found: Found,
    recorded: Option<Content>,
    /// Its (stale) cache entry.
    cached: Option<StatEntry>,
}

/// State of the merge in [`Workspace::compare`]: the recorded files and the cache, both
/// in path order, and what it found so far.
struct Merge<'a, H: Iterator> {
    ledger: &'a Ledger,
    head: std::iter::Peekable<H>,
    scope: &'a [Vec<u8>],
    store: bool,
    cache: std::iter::Peekable<CacheIter<'a>>,
    changes: Vec<ResourceChange>,
    to_read: Vec<ToRead>,
    /// Cache entries of files that are gone.
    gone: Vec<Vec<u8>>,
}

impl<'a, 'h, H: Iterator<Item = (&'h [u8], Content)>> Merge<'a, H> {
    /// Handles the recorded files before `rel` (all of them for `None`) that the walk
    /// did not reach: looked at directly, or deleted. Returns what is recorded at `rel`.
    fn pass_head_before(&mut self, rel: Option<&[u8]>, ws: &Workspace) -> Option<Content> {
        while let Some(&(path, old)) = self.head.peek() {
            if let Some(rel) = rel {
                match path.cmp(rel) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        self.head.next();
                        return Some(old);
                    }
                    std::cmp::Ordering::Greater => return None,
                }
            }
            self.head.next();
            if !in_scope(path, self.scope) {
                continue;
            }
            match fs::symlink_metadata(ws.abs(path)) {
                Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => {
                    self.file(path, &FileStat::from_metadata(&meta), Some(old));
                }
                _ => self.changes.push(ResourceChange {
                    key: ResourceKey::file(path),
                    op: Op::Delete,
                    old: Some(old),
                    new: None,
                }),
            }
        }
        None
    }

    /// Drops the cache entries before `rel` (all of them for `None`) within the scope:
    /// their files are gone. Returns the entry for `rel`.
    fn pass_cache_before(&mut self, rel: Option<&[u8]>) -> Option<StatEntry> {
        while let Some(&(path, fixed)) = self.cache.peek() {
            if let Some(rel) = rel {
                match path.cmp(rel) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        self.cache.next();
                        return Some(StatCache::decode(fixed));
                    }
                    std::cmp::Ordering::Greater => return None,
                }
            }
            self.cache.next();
            if in_scope(path, self.scope) {
                self.gone.push(path.to_vec());
            }
        }
        None
    }

    /// One file on disk, in path order, with what is recorded for it.
    fn file(&mut self, rel: &[u8], stat: &FileStat, recorded: Option<Content>) {
        let cached = self.pass_cache_before(Some(rel));
        match cached {
            Some(e)
                if cache_matches(&e, stat)
                    // A scan that does not store (`status`) fills the cache too: when
                    // recording, content that differs from the recorded tree must be
                    // in the store, so read it unless it already is.
                    && (!self.store
                        || recorded.is_some_and(|r| r.hash == e.hash)
                        || self.ledger.store().contains(&e.hash)) =>
            {
                let now = Content {
                    hash: e.hash,
                    mode: e.mode,
                    size: e.size,
                };
                self.changes.extend(change(rel, recorded, now));
            }
            _ => self.to_read.push(ToRead {
                found: Found {
                    rel: rel.to_vec(),
                    stat: *stat,
                },
                recorded,
                cached,
            }),
        }
    }
}

impl Workspace {
    /// Turns user-given paths (relative to the current directory) into workspace-relative
    /// prefixes. A path outside the workspace is refused.
    pub fn scope(&self, paths: &[PathBuf]) -> CliResult<Vec<Vec<u8>>> {
        let cwd = std::env::current_dir()?;
        let root = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        let mut out = Vec::new();
        for p in paths {
            let abs = normalize(&cwd.join(p));
            // Resolve symlinks in the existing part of the path so a link cannot smuggle
            // the scope out of the workspace.
            let resolved = match abs.parent().and_then(|d| d.canonicalize().ok()) {
                Some(dir) => dir.join(abs.file_name().unwrap_or_default()),
                None => abs.clone(),
            };
            let rel = resolved
                .strip_prefix(&root)
                .or_else(|_| abs.strip_prefix(&root))
                .map_err(|_| {
                    CliError::usage(format!(
                        "path {} is outside the workspace {}",
                        p.display(),
                        self.root.display()
                    ))
                })?;
            if rel.components().any(|c| c.as_os_str() == ".ledger") {
                return Err(CliError::usage(format!(
                    "path {} is inside .ledger/, which is never recorded",
                    p.display()
                )));
            }
            out.push(rel.as_os_str().as_bytes().to_vec());
        }
        Ok(out)
    }

    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// Compares disk with `head` (sorted by path) within `scope` (empty = everything).
    /// With `store`, new content is written (not yet committed) to the content store.
    #[cfg(test)]
    pub fn scan(
        &self,
        ledger: &Ledger,
        head: &[(&[u8], Content)],
        scope: &[Vec<u8>],
        store: bool,
        cache: &mut StatCache,
    ) -> CliResult<ScanResult> {
        let walk = self.start_walk(&ledger.dir().join("index"), scope);
        let walked = self.finish_walk(ledger, walk)?;
        self.compare(ledger, walked, head.iter().copied(), scope, store, cache)
    }

    /// Starts walking the workspace within `scope` on other threads. The ledger must
    /// be locked (the walk may start before the rest of it is opened: it needs only
    /// the lock and the dir cache in `index_dir`).
    pub fn start_walk(&self, index_dir: &Path, scope: &[Vec<u8>]) -> WalkHandle {
        // Before anything is looked at: the racy window is measured from here.
        let scan_start = crate::timeparse::now_us() * 1000;
        let (root, index_dir, scope) = (self.root.clone(), index_dir.to_path_buf(), scope.to_vec());
        let partial = !scope.is_empty();
        let thread = std::thread::spawn(move || {
            let dirs = DirCache::load(&index_dir);
            let walk = crate::walk::walk(&root, &scope, Some(&dirs), scan_start);
            (walk, dirs)
        });
        WalkHandle {
            scan_start,
            partial,
            thread,
        }
    }

    /// Waits for a walk [`Workspace::start_walk`] started and saves the dir cache.
    pub fn finish_walk(&self, ledger: &Ledger, walk: WalkHandle) -> CliResult<Walked> {
        let (result, dirs) = walk.thread.join().expect("walk thread panicked");
        let mut w = result?;
        dirs.save(ledger, &w.hits, std::mem::take(&mut w.listed), walk.partial);
        Ok(Walked {
            scan_start: walk.scan_start,
            walk: w,
        })
    }

    /// Compares what the walk found with `head` (the recorded files in path order).
    /// With `store`, new content is written (not yet committed) to the content store.
    pub fn compare<'h>(
        &self,
        ledger: &Ledger,
        walked: Walked,
        head: impl Iterator<Item = (&'h [u8], Content)>,
        scope: &[Vec<u8>],
        store: bool,
        cache: &mut StatCache,
    ) -> CliResult<ScanResult> {
        let Walked {
            scan_start,
            mut walk,
        } = walked;

        // One merge of the walk, the recorded files and the cache (all sorted by path).
        // Recorded files that the walk did not reach (now ignored, for example) stay
        // tracked, as in git: they are looked at directly, in their place in the order.
        // Files whose stat data matches the cache are compared at once; the others are
        // read afterwards. Cache entries of files that are gone (within the scope) are
        // dropped.
        let mut m = Merge {
            ledger,
            head: head.peekable(),
            scope,
            store,
            cache: cache.iter().peekable(),
            changes: Vec::new(),
            to_read: Vec::new(),
            gone: Vec::new(),
        };
        for (rel, stat) in walk.files() {
            let recorded = m.pass_head_before(Some(rel), self);
            m.file(rel, stat, recorded);
        }
        m.pass_head_before(None, self);
        m.pass_cache_before(None);
        let Merge {
            mut changes,
            to_read,
            gone,
            ..
        } = m;

        let mut pending = Pending::default();
        let read = match read_all(self, ledger, &to_read, store, &mut pending) {
            Ok(r) => r,
            Err(e) => {
                ledger.store().abandon(pending);
                return Err(e);
            }
        };
        for (r, now) in to_read.iter().zip(read) {
            let f = &r.found;
            cache.update(&f.rel, r.cached, cache_entry(&f.stat, now.hash, scan_start));
            changes.extend(change(&f.rel, r.recorded, now));
        }
        for path in gone {
            cache.drop_entry(&path);
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ScanResult {
            changes,
            pending,
            skipped: std::mem::take(&mut walk.skipped),
        })
    }
}

/// Reads (hashes, and with `store` stores) files, on all cores.
fn read_all(
    ws: &Workspace,
    ledger: &Ledger,
    files: &[ToRead],
    store: bool,
    pending: &mut Pending,
) -> CliResult<Vec<Content>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if files.len() < 64 || threads == 1 {
        return files
            .iter()
            .map(|f| read_one(ws, ledger, &f.found, store, pending))
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    let results: Vec<CliResult<(Vec<Content>, Pending)>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut p = Pending::default();
                    let r: CliResult<Vec<Content>> = part
                        .iter()
                        .map(|f| read_one(ws, ledger, &f.found, store, &mut p))
                        .collect();
                    match r {
                        Ok(v) => Ok((v, p)),
                        Err(e) => {
                            ledger.store().abandon(p);
                            Err(e)
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(files.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok((v, p)) => {
                out.extend(v);
                pending.merge(p);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn read_one(
    ws: &Workspace,
    ledger: &Ledger,
    f: &Found,
    store: bool,
    pending: &mut Pending,
) -> CliResult<Content> {
    let mode = mode_of(&f.stat);
    let abs = ws.abs(&f.rel);
    if mode == Mode::Symlink {
        let target = fs::read_link(&abs)
            .map_err(|e| read_error(&abs, e))?
            .into_os_string()
            .into_vec();
        let hash = if store {
            ledger.store().put_bytes(&target, pending)?
        } else {
            Hash::of_content(&target)
        };
        return Ok(Content {
            hash,
            mode,
            size: target.len() as u64,
        });
    }
    if store {
        let (hash, size) = ledger
            .store()
            .put_file(&abs, pending)
            .map_err(|e| CliError::new(EXIT_ERROR, format!("{e}; nothing was recorded")))?;
        Ok(Content { hash, mode, size })
    } else {
        let mut file = fs::File::open(&abs).map_err(|e| read_error(&abs, e))?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 128 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| read_error(&abs, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Content {
            hash: Hash::from(h.finalize()),
            mode,
            size,
        })
    }
}

/// `prefix` equals `path` or is a directory above it.
fn is_prefix_path(prefix: &[u8], path: &[u8]) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

pub fn in_scope(rel: &[u8], scope: &[Vec<u8>]) -> bool {
    scope.is_empty() || scope.iter().any(|s| is_prefix_path(s, rel))
}

/// Removes `.` and resolves `..` lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::HeadFiles;
    use ledger::{Actor, Body, Change, NewEvent, Precondition};
    use rustix::fs::{AtFlags, Timespec, Timestamps};

    fn actor() -> Actor {
        Actor {
            agent: "test".into(),
            principal: None,
            role: None,
        }
    }

    struct Ws {
        _tmp: tempfile::TempDir,
        ws: Workspace,
        ledger: Ledger,
    }

    fn workspace() -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let ledger = Ledger::init(&root, actor()).unwrap();
        Ws {
            _tmp: tmp,
            ws: Workspace { root },
            ledger,
        }
    }

    impl Ws {
        fn write(&self, rel: &str, bytes: &[u8]) {
            let p = self.ws.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
        fn stat(&self, rel: &str) -> FileStat {
            FileStat::from_metadata(&fs::symlink_metadata(self.ws.root.join(rel)).unwrap())
        }
        /// Sets a file's mtime (ctime moves to now, as it always does).
        fn set_mtime(&self, rel: &str, mtime_ns: i64) {
            let t = Timespec {
                tv_sec: mtime_ns.div_euclid(1_000_000_000),
                tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                self.ws.root.join(rel),
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
                AtFlags::empty(),
            )
            .unwrap();
        }
        /// A cache holding exactly `entries` (written and loaded back like a real one).
        fn cache_with(&self, entries: &[(&str, StatEntry)]) -> StatCache {
            crate::cache::remove_all(&self.ledger);
            let mut c = StatCache::load(&self.ledger);
            for (p, e) in entries {
                c.update(p.as_bytes(), None, Some(*e));
            }
            c.save(&self.ledger);
            let c = StatCache::load(&self.ledger);
            assert_eq!(c.len(), entries.len());
            c
        }
        /// What a scan sees for `rel`: the new content of its change (created files).
        fn scanned(&self, rel: &str, store: bool, cache: &mut StatCache) -> (Hash, Pending) {
            let r = self.ws.scan(&self.ledger, &[], &[], store, cache).unwrap();
            let c = r
                .changes
                .iter()
                .find(|c| c.key.name.as_bytes() == rel.as_bytes())
                .expect("the file is listed");
            (c.new.unwrap().hash, r.pending)
        }
    }

    fn entry(st: &FileStat, hash: Hash) -> StatEntry {
        StatEntry {
            size: st.size,
            mtime_ns: st.mtime_ns,
            ctime_ns: st.ctime_ns,
            ino: st.ino,
            mode: mode_of(st),
            hash,
        }
    }

    #[test]
    fn a_matching_cache_entry_is_used_instead_of_reading() {
        // The other tests show that each mismatch forces a read; this one shows that a
        // full match really skips it (so they can fail).
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let stale = Hash::of_content(b"what the cache says");
        let mut cache = w.cache_with(&[("f.txt", entry(&w.stat("f.txt"), stale))]);
        assert_eq!(w.scanned("f.txt", false, &mut cache).0, stale);
    }

    #[test]
    fn same_size_rewrite_within_the_same_mtime_is_detected() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let before = w.stat("f.txt");
        let mut cache = w.cache_with(&[("f.txt", entry(&before, Hash::of_content(b"aaaa")))]);
        w.write("f.txt", b"bbbb");
        w.set_mtime("f.txt", before.mtime_ns);
        let after = w.stat("f.txt");
        assert_eq!(
            (after.size, after.mtime_ns, after.ino),
            (before.size, before.mtime_ns, before.ino)
        );
        assert_eq!(
            w.scanned("f.txt", false, &mut cache).0,
            Hash::of_content(b"bbbb")
        );
    }

    #[test]
    fn a_replaced_inode_is_detected_even_with_equal_times_and_size() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        w.write("new.tmp", b"bbbb");
        fs::rename(w.ws.root.join("new.tmp"), w.ws.root.join("f.txt")).unwrap();
        let now = w.stat("f.txt");
        // Everything matches the file on disk except the inode.
        let mut forged = entry(&now, Hash::of_content(b"aaaa"));
        forged.ino = now.ino + 1;
        let mut cache = w.cache_with(&[("f.txt", forged)]);
        assert_eq!(
            w.scanned("f.txt", false, &mut cache).0,
            Hash::of_content(b"bbbb")
        );
    }

    #[test]
    fn each_stat_field_is_compared() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let st = w.stat("f.txt");
        let good = entry(&st, Hash::ZERO);
        assert!(cache_matches(&good, &st));
        let variants: [fn(&mut StatEntry); 5] = [
            |e| e.size += 1,
            |e| e.mtime_ns += 1,
            |e| e.ctime_ns += 1,
            |e| e.ino += 1,
            |e| e.mode = Mode::Executable,
        ];
        for change in variants {
            let mut e = good;
            change(&mut e);
            assert!(!cache_matches(&e, &st), "{e:?}");
        }
    }

    #[test]
    fn content_that_is_not_stored_is_read_when_recording() {
        let w = workspace();
        w.write("f.txt", b"real");
        let elsewhere = Hash::of_content(b"never stored");
        let e = entry(&w.stat("f.txt"), elsewhere);
        let mut cache = w.cache_with(&[("f.txt", e)]);
        // `status` may trust it (nothing is stored from it) ...
        assert_eq!(w.scanned("f.txt", false, &mut cache).0, elsewhere);
        // ... `record` may not: the change would name content the store lacks.
        let (h, pending) = w.scanned("f.txt", true, &mut cache);
        assert_eq!(h, Hash::of_content(b"real"));
        w.ledger.commit_content(pending).unwrap();
        assert!(w.ledger.store().contains(&h));
        // Once the content is stored, a matching entry naming it is trusted again.
        let mut p = Pending::default();
        let stored = w.ledger.store().put_bytes(b"never stored", &mut p).unwrap();
        w.ledger.commit_content(p).unwrap();
        assert_eq!(stored, elsewhere);
        let mut cache = w.cache_with(&[("f.txt", e)]);
        assert_eq!(w.scanned("f.txt", true, &mut cache).0, elsewhere);
    }

    #[test]
    fn racy_files_are_not_cached() {
        let st = |mtime_ns: i64, ctime_ns: i64| FileStat {
            size: 4,
            mtime_ns,
            ctime_ns,
            ino: 7,
            mode: 0o100644,
        };
        let now: i64 = 1_800_000_000_000_000_000;
        let sec = 1_000_000_000;
        let h = Hash::of_content(b"x");
        assert!(cache_entry(&st(now - 2 * sec, now - 2 * sec), h, now).is_some());
        // Within the window by mtime, by ctime, exactly at its edge, or in the future.
        assert!(cache_entry(&st(now - sec / 2, now - 2 * sec), h, now).is_none());
        assert!(cache_entry(&st(now - 2 * sec, now - sec / 2), h, now).is_none());
        assert!(cache_entry(&st(now - sec, now - 2 * sec), h, now).is_none());
        assert!(cache_entry(&st(now + 5 * sec, now - 2 * sec), h, now).is_none());
    }

    #[test]
    fn a_scan_caches_files_only_once_they_are_outside_the_racy_window() {
        let w = workspace();
        w.write("old.txt", b"old");
        w.write("new.txt", b"new");
        // `old.txt` was last changed long ago as far as mtime goes, but its ctime is
        // now: neither is cached right after being written.
        w.set_mtime("old.txt", 1_000_000_000);
        let mut cache = StatCache::load(&w.ledger);
        w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        cache.save(&w.ledger);
        assert_eq!(StatCache::load(&w.ledger).len(), 0);
        // Once both are older than the window, a scan caches them.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut cache = StatCache::load(&w.ledger);
        w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        cache.save(&w.ledger);
        let cache = StatCache::load(&w.ledger);
        assert_eq!(cache.len(), 2);
        let e = cache.entry(cache.find(b"old.txt").unwrap());
        assert_eq!(e.hash, Hash::of_content(b"old"));
        assert!(cache_matches(&e, &w.stat("old.txt")));
    }

    #[test]
    fn cache_files_that_are_damaged_count_as_empty() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let e = entry(&w.stat("f.txt"), Hash::of_content(b"aaaa"));
        w.cache_with(&[("f.txt", e), ("g.txt", e)]);
        let path = w.ledger.dir().join("index/stat-cache");
        let good = fs::read(&path).unwrap();
        assert_eq!(StatCache::load(&w.ledger).len(), 2);
        for damage in [
            |b: &mut Vec<u8>| b[30] ^= 1,
            |b: &mut Vec<u8>| b.truncate(b.len() - 1),
            |b: &mut Vec<u8>| b.push(0),
            |b: &mut Vec<u8>| b.clear(),
            |b: &mut Vec<u8>| b[8] = 1, // version 1 (the sled-era format)
        ] {
            let mut b = good.clone();
            damage(&mut b);
            fs::write(&path, &b).unwrap();
            assert_eq!(StatCache::load(&w.ledger).len(), 0);
        }
    }

    #[test]
    fn cache_updates_merge_in_order() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let e = entry(&w.stat("f.txt"), Hash::of_content(b"aaaa"));
        let mut c = w.cache_with(&[("b", e), ("d", e), ("f", e)]);
        let mut e2 = e;
        e2.size = 99;
        c.update(b"a", None, Some(e));
        c.update(b"d", Some(e), Some(e2));
        c.update(b"f", Some(e), None);
        c.update(b"g", None, Some(e));
        c.save(&w.ledger);
        let c = StatCache::load(&w.ledger);
        let paths: Vec<&[u8]> = (0..c.len()).map(|i| c.path(i)).collect();
        assert_eq!(paths, [&b"a"[..], b"b", b"d", b"g"]);
        assert_eq!(c.entry(2), e2);
    }

    #[test]
    fn small_updates_write_a_delta_that_only_applies_to_its_own_base() {
        let w = workspace();
        w.write("f.txt", b"aaaa");
        let e = entry(&w.stat("f.txt"), Hash::of_content(b"aaaa"));
        let mut e2 = e;
        e2.size = 99;
        let base_path = w.ledger.dir().join("index/stat-cache");
        let delta_path = w.ledger.dir().join("index/stat-cache.delta");
        let mut c = w.cache_with(&[("b", e), ("d", e), ("f", e)]);
        let base = fs::read(&base_path).unwrap();
        assert!(!delta_path.exists());
        c.update(b"a", None, Some(e2));
        c.update(b"d", Some(e), None);
        c.save(&w.ledger);
        // Only the delta was written; the view is base + delta.
        assert_eq!(fs::read(&base_path).unwrap(), base);
        let delta = fs::read(&delta_path).unwrap();
        let view = |c: &StatCache| -> Vec<(Vec<u8>, u64)> {
            (0..c.len())
                .map(|i| (c.path(i).to_vec(), c.entry(i).size))
                .collect()
        };
        let mut c = StatCache::load(&w.ledger);
        assert_eq!(
            view(&c),
            [(b"a".to_vec(), 99), (b"b".to_vec(), 4), (b"f".to_vec(), 4)]
        );
        // A second small update builds on the delta (the tombstone of `d` stays).
        c.update(b"b", Some(e), Some(e2));
        c.save(&w.ledger);
        assert_eq!(fs::read(&base_path).unwrap(), base);
        assert_eq!(
            view(&StatCache::load(&w.ledger)),
            [(b"a".to_vec(), 99), (b"b".to_vec(), 99), (b"f".to_vec(), 4)]
        );
        // A damaged delta is ignored: the base alone.
        let mut bad = fs::read(&delta_path).unwrap();
        bad[40] ^= 1;
        fs::write(&delta_path, &bad).unwrap();
        assert_eq!(
            view(&StatCache::load(&w.ledger)),
            [(b"b".to_vec(), 4), (b"d".to_vec(), 4), (b"f".to_vec(), 4)]
        );
        // So is a delta written for another base.
        w.cache_with(&[("x", e)]);
        fs::write(&delta_path, &delta).unwrap();
        assert_eq!(view(&StatCache::load(&w.ledger)), [(b"x".to_vec(), 4)]);
        // Many updates rewrite the base and remove the delta.
        let mut c = StatCache::load(&w.ledger);
        let names: Vec<String> = (0..2000).map(|i| format!("p{i:05}")).collect();
        for n in &names {
            c.update(n.as_bytes(), None, Some(e));
        }
        c.save(&w.ledger);
        assert!(!delta_path.exists());
        assert_ne!(fs::read(&base_path).unwrap(), base);
        let c = StatCache::load(&w.ledger);
        assert_eq!(c.len(), 2001);
        assert_eq!(c.path(2000), b"x");
    }

    #[test]
    fn the_dir_cache_is_saved_used_and_ignored_when_damaged() {
        let w = workspace();
        if crate::walk::dir_cache_device(&w.ws.root).is_none() {
            eprintln!("this file system keeps no dir cache; nothing to check");
            return;
        }
        w.write("d/f.txt", b"f");
        let path = w.ledger.dir().join("index/dir-cache");
        let mut cache = StatCache::load(&w.ledger);
        w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        // Just created: within the racy window, nothing cached yet.
        assert!(!path.exists());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = fs::metadata(&path).unwrap().ino();
        // Nothing changed: every listing was used, so the file is not rewritten (a
        // rewrite renames a new file into place).
        let r = w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
        assert_eq!(r.changes.len(), 1);
        // A new file in a cached directory changes the directory: found.
        w.write("d/g.txt", b"g");
        let r = w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        assert_eq!(r.changes.len(), 2);
        // A damaged cache is ignored.
        let mut bad = fs::read(&path).unwrap();
        let n = bad.len();
        bad[n / 2] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let r = w.ws.scan(&w.ledger, &[], &[], false, &mut cache).unwrap();
        assert_eq!(r.changes.len(), 2);
    }

    #[test]
    fn recorded_files_the_walk_skips_stay_tracked_and_changes_come_out_sorted() {
        let w = workspace();
        let content = |b: &[u8]| Content {
            hash: Hash::of_content(b),
            mode: Mode::Regular,
            size: b.len() as u64,
        };
        for (p, b) in [
            ("a.txt", &b"a"[..]),
            ("b.log", b"b0"),
            ("m.txt", b"m"),
            ("sub/c.txt", b"c"),
            ("sub/d.txt", b"d"),
            ("z.txt", b"z"),
        ] {
            w.write(p, b);
        }
        let head: Vec<(&[u8], Content)> = vec![
            (b"a.txt", content(b"a")),
            (b"b.log", content(b"b0")),
            (b"gone.txt", content(b"g")),
            (b"m.txt", content(b"m")),
            (b"sub/c.txt", content(b"c")),
            (b"sub/d.txt", content(b"d")),
            (b"sub/e.txt", content(b"e")),
            (b"z.txt", content(b"z")),
        ];
        // Now ignored: the log files and the whole `sub/` directory.
        w.write(".gitignore", b"*.log\nsub/\n");
        w.write("b.log", b"b1");
        w.write("new.log", b"ignored and new");
        w.write("n.txt", b"new");
        w.write("sub/d.txt", b"d1");
        fs::remove_file(w.ws.root.join("sub/c.txt")).unwrap();
        let mut cache = StatCache::load(&w.ledger);
        let r = w.ws.scan(&w.ledger, &head, &[], false, &mut cache).unwrap();
        let got: Vec<(String, Op)> = r
            .changes
            .iter()
            .map(|c| (display_path(c.key.name.as_bytes()), c.op))
            .collect();
        let want = [
            (".gitignore", Op::Create),
            ("b.log", Op::Modify),
            ("gone.txt", Op::Delete),
            ("n.txt", Op::Create),
            ("sub/c.txt", Op::Delete),
            ("sub/d.txt", Op::Modify),
            ("sub/e.txt", Op::Delete),
        ];
        let want: Vec<(String, Op)> = want.iter().map(|(p, o)| (p.to_string(), *o)).collect();
        assert_eq!(got, want);
        // Within a scope, only what is under it.
        let r =
            w.ws.scan(&w.ledger, &head, &[b"sub".to_vec()], false, &mut cache)
                .unwrap();
        let got: Vec<String> = r
            .changes
            .iter()
            .map(|c| display_path(c.key.name.as_bytes()))
            .collect();
        assert_eq!(got, ["sub/c.txt", "sub/d.txt", "sub/e.txt"]);
    }

    fn record(w: &Ws, files: &[(&str, &[u8])]) -> Vec<ledger::Record> {
        let mut p = Pending::default();
        let mut resources = Vec::new();
        let head = HeadFiles::load(&w.ledger).unwrap();
        let recorded = head.files();
        for (rel, bytes) in files {
            let hash = w.ledger.store().put_bytes(bytes, &mut p).unwrap();
            let old = recorded
                .iter()
                .find(|(k, _)| *k == rel.as_bytes())
                .map(|e| e.1);
            resources.push(ResourceChange {
                key: ResourceKey::file(rel.as_bytes()),
                op: if old.is_some() {
                    Op::Modify
                } else {
                    Op::Create
                },
                old,
                new: Some(Content {
                    hash,
                    mode: Mode::Regular,
                    size: bytes.len() as u64,
                }),
            });
        }
        w.ledger.commit_content(p).unwrap();
        w.ledger
            .append(
                vec![NewEvent {
                    time_us: 1,
                    actor: actor(),
                    change_id: format!("c{}", w.ledger.head().unwrap().seq),
                    correlation_id: None,
                    body: Body::Change(Change {
                        message: None,
                        reverts: None,
                        resources,
                    }),
                    meta: Default::default(),
                }],
                Precondition::None,
            )
            .unwrap()
    }

    fn tree_files(w: &Ws) -> Vec<(Vec<u8>, Content)> {
        let (tree, _) = crate::state::head_tree(&w.ledger).unwrap();
        tree.files()
            .map(|(k, e)| (k.name.as_bytes().to_vec(), e.content))
            .collect()
    }

    fn head_files(w: &Ws) -> Vec<(Vec<u8>, Content)> {
        let hf = HeadFiles::load(&w.ledger).unwrap();
        assert_eq!(hf.seq(), w.ledger.head().map(|h| h.seq));
        hf.files().iter().map(|(p, c)| (p.to_vec(), *c)).collect()
    }

    #[test]
    fn head_files_follow_the_journal_and_are_rewritten_when_due() {
        let w = workspace();
        let path = w.ledger.dir().join("index/head-files");
        record(&w, &[("b", b"1"), ("a", b"2")]);
        // First load: no file, built from the tree and saved.
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let first = fs::read(&path).unwrap();
        // A few events later the file is still the old base; the events are folded in.
        for i in 0..5u8 {
            record(&w, &[("c", &[i]), ("a", &[i, i])]);
            let hf = HeadFiles::load(&w.ledger).unwrap();
            hf.save_if_due(&w.ledger);
            assert_eq!(fs::read(&path).unwrap(), first, "rewritten too early");
            assert_eq!(head_files(&w), tree_files(&w));
        }
        for i in 0..crate::cache::HEAD_FILES_EVERY as u8 {
            record(&w, &[(if i % 2 == 0 { "d" } else { "e/f" }, &[i])]);
        }
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        assert_ne!(fs::read(&path).unwrap(), first, "never rewritten");
        assert_eq!(head_files(&w), tree_files(&w));
    }

    /// Appends one batch of `n` events, each changing file `name<i>`.
    fn record_batch(w: &Ws, prefix: &str, n: usize) {
        let mut p = Pending::default();
        let hash = w.ledger.store().put_bytes(b"batch", &mut p).unwrap();
        w.ledger.commit_content(p).unwrap();
        let events = (0..n)
            .map(|i| NewEvent {
                time_us: 1,
                actor: actor(),
                change_id: format!("{prefix}-{}", i / 2),
                correlation_id: None,
                body: Body::Change(Change {
                    message: None,
                    reverts: None,
                    resources: vec![ResourceChange {
                        key: ResourceKey::file(format!("{prefix}{i}").as_bytes()),
                        op: Op::Create,
                        old: None,
                        new: Some(Content {
                            hash,
                            mode: Mode::Regular,
                            size: 5,
                        }),
                    }],
                }),
                meta: Default::default(),
            })
            .collect();
        w.ledger.append(events, Precondition::None).unwrap();
    }

    #[test]
    fn head_files_catch_up_from_the_end_of_a_batch_over_short_and_long_gaps() {
        let w = workspace();
        // The base ends a two-event batch (as `exec` writes a change and a failure).
        record_batch(&w, "a", 2);
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let path = w.ledger.dir().join("index/head-files");
        let base = fs::read(&path).unwrap();
        record_batch(&w, "b", 2);
        assert_eq!(head_files(&w), tree_files(&w));
        // Far behind: folded with one journal walk.
        record_batch(&w, "c", 300);
        assert_eq!(fs::read(&path).unwrap(), base);
        assert_eq!(head_files(&w), tree_files(&w));
        assert_eq!(head_files(&w).len(), 304);
    }

    #[test]
    fn tree_snapshots_are_saved_only_when_due() {
        let w = workspace();
        let ix = w.ledger.index_unsynced();
        let mut saved = Vec::new();
        for i in 0..(2 * crate::state::HEAD_EVERY + 3) {
            record_batch(&w, &format!("s{i}-"), 1);
            crate::state::keep_snapshots_current(&w.ledger).unwrap();
            let latest = ix.latest_snapshot_seq("tree-head").unwrap().unwrap();
            if saved.last() != Some(&latest) {
                saved.push(latest);
            }
        }
        // The first record saves one; then one every HEAD_EVERY events.
        let every = crate::state::HEAD_EVERY;
        assert_eq!(saved, [1, 1 + every, 1 + 2 * every]);
        // And what they hold is the tree at their seq.
        let (tree, used) = crate::state::tree_at(&w.ledger, 1 + 2 * every).unwrap();
        assert_eq!(used, Some(1 + 2 * every));
        assert_eq!(tree.files().count() as u64, 1 + 2 * every);
    }

    #[test]
    fn head_files_of_another_journal_are_not_used() {
        let a = workspace();
        record(&a, &[("x", b"from a")]);
        HeadFiles::load(&a.ledger).unwrap().save_if_due(&a.ledger);
        let b = workspace();
        record(&b, &[("y", b"from b")]);
        // Same seq, different journal: the file's event hash does not match.
        fs::copy(
            a.ledger.dir().join("index/head-files"),
            b.ledger.dir().join("index/head-files"),
        )
        .unwrap();
        assert_eq!(head_files(&b), tree_files(&b));
        assert_eq!(head_files(&b)[0].0, b"y");
        // One event later it is checked through that event's `prev` instead.
        fs::copy(
            a.ledger.dir().join("index/head-files"),
            b.ledger.dir().join("index/head-files"),
        )
        .unwrap();
        record(&b, &[("z", b"from b")]);
        assert_eq!(head_files(&b), tree_files(&b));
        assert_eq!(head_files(&b).len(), 2);
        // A damaged file is not used either.
        let p = b.ledger.dir().join("index/head-files");
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0x55;
        fs::write(&p, &bytes).unwrap();
        assert_eq!(head_files(&b), tree_files(&b));
    }

    /// Appends one batch: an event per name, setting it to content `tag` (or deleting
    /// it when `tag` is `None`).
    fn record_named(w: &Ws, names: &[&str], tag: Option<u8>) {
        let mut p = Pending::default();
        let hash = tag.map(|t| w.ledger.store().put_bytes(&[t], &mut p).unwrap());
        w.ledger.commit_content(p).unwrap();
        let seq = w.ledger.head().unwrap().seq;
        let events = names
            .iter()
            .enumerate()
            .map(|(i, name)| NewEvent {
                time_us: 1,
                actor: actor(),
                change_id: format!("n{seq}-{i}"),
                correlation_id: None,
                body: Body::Change(Change {
                    message: None,
                    reverts: None,
                    resources: vec![ResourceChange {
                        key: ResourceKey::file(name.as_bytes()),
                        op: if hash.is_some() {
                            Op::Modify
                        } else {
                            Op::Delete
                        },
                        old: None,
                        new: hash.map(|hash| Content {
                            hash,
                            mode: Mode::Regular,
                            size: 1,
                        }),
                    }],
                }),
                meta: Default::default(),
            })
            .collect();
        w.ledger.append(events, Precondition::None).unwrap();
    }

    /// A workspace whose `head-files` has many blocks (a directory of 1,500 files across
    /// several of them, files where other paths have directories), with changes recorded
    /// after it was written.
    fn many_blocks() -> Ws {
        let w = workspace();
        let mut names: Vec<String> = (0..1500).map(|i| format!("big/f{i:05}")).collect();
        names.extend((0..900).map(|i| format!("d{}/s{}/file-{i}.txt", i % 7, i % 3)));
        names.extend(["a", "d3", "d4/s1", "zz/last"].map(String::from));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        record_named(&w, &names, Some(1));
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let bytes = fs::read(w.ledger.dir().join("index/head-files")).unwrap();
        let blocks = u32::from_le_bytes(bytes[64..68].try_into().unwrap());
        assert!(blocks >= 6, "{blocks} blocks");
        // Since the base: edits, a file created, deletes (one where a directory's
        // path is).
        record_named(&w, &["big/f00010", "d1/s1/new.txt", "big/f01499"], Some(2));
        record_named(&w, &["big/f00700", "d3"], None);
        w
    }

    /// A `head-files` read around some paths (its index and the blocks that can hold
    /// them) answers for each path, its ancestors and everything beneath it as the
    /// whole file does, events since the base included, and reads a fraction of it.
    #[test]
    fn head_files_read_around_paths_answer_as_the_whole_file() {
        let w = many_blocks();
        let whole = HeadFiles::load(&w.ledger).unwrap();
        assert_eq!(head_files(&w), tree_files(&w));
        let len = fs::metadata(w.ledger.dir().join("index/head-files"))
            .unwrap()
            .len() as usize;
        let paths: [&[u8]; 13] = [
            b"big/f00010",
            b"big",
            b"big/f00700",
            b"d3/s0/file-3.txt",
            b"d3",
            b"d4/s1/file-4.txt",
            b"a",
            b"0 below every path",
            b"zz/last",
            b"zz",
            b"~ above every path",
            b"d1/s1/new.txt",
            b"d5/s2",
        ];
        for p in paths {
            let what = String::from_utf8_lossy(p);
            let part = HeadFiles::load_around(&w.ledger, &[p]).unwrap();
            assert_eq!(part.seq(), whole.seq());
            for q in crate::cache::with_ancestors(p) {
                assert_eq!(
                    part.get(q),
                    whole.get(q),
                    "{what}: {}",
                    String::from_utf8_lossy(q)
                );
            }
            let mut dir = p.to_vec();
            dir.push(b'/');
            assert_eq!(part.with_prefix(&dir), whole.with_prefix(&dir), "{what}/");
            // (Everything beneath `big/` is most of the file.)
            assert!(
                p == b"big" || part.base_bytes() < len / 3,
                "{what}: read {} of {len} bytes",
                part.base_bytes()
            );
        }
        // Beneath `big/` lie 1,499 files over several blocks.
        let part = HeadFiles::load_around(&w.ledger, &[b"big"]).unwrap();
        assert_eq!(part.with_prefix(b"big/").len(), 1499);
        // Several paths at once.
        let part = HeadFiles::load_around(&w.ledger, &paths).unwrap();
        assert!(part.base_used());
        for p in paths {
            for q in crate::cache::with_ancestors(p) {
                assert_eq!(part.get(q), whole.get(q));
            }
            let mut dir = p.to_vec();
            dir.push(b'/');
            assert_eq!(part.with_prefix(&dir), whole.with_prefix(&dir));
        }
    }

    /// A damaged block, a damaged index, or a file of the earlier version: what is read
    /// around a path is still the recorded state (the file is not used, or not the
    /// block), never the damaged bytes.
    #[test]
    fn head_files_read_around_paths_pass_over_damage() {
        let w = many_blocks();
        let path = w.ledger.dir().join("index/head-files");
        let clean = fs::read(&path).unwrap();
        let whole = HeadFiles::load(&w.ledger).unwrap();
        let n = clean.len();
        // The hash of the last entry (`zz/last`), the index, the version.
        for (at, what) in [(n - 20, "last block"), (100, "index"), (8, "version")] {
            let mut bytes = clean.clone();
            bytes[at] ^= if at == 8 { 3 } else { 0x55 };
            fs::write(&path, &bytes).unwrap();
            for p in [&b"zz/last"[..], b"a", b"big/f00010"] {
                let part = HeadFiles::load_around(&w.ledger, &[p]).unwrap();
                assert_eq!(
                    part.get(p),
                    whole.get(p),
                    "{what}: {}",
                    String::from_utf8_lossy(p)
                );
                // A damaged last block leaves the blocks before it usable.
                if what == "last block" && p == b"a" {
                    assert!(part.base_used() && part.base_bytes() < n / 3);
                }
            }
            assert_eq!(head_files(&w), tree_files(&w), "{what}");
            fs::write(&path, &clean).unwrap();
        }
    }

    /// A `head-files` read around some paths, once due, writes a whole new file.
    #[test]
    fn head_files_read_around_paths_are_rewritten_whole_when_due() {
        let w = many_blocks();
        let path = w.ledger.dir().join("index/head-files");
        let before = fs::read(&path).unwrap();
        for i in 0..crate::cache::HEAD_FILES_EVERY as u8 {
            record_named(&w, &["big/f00001"], Some(i));
        }
        let part = HeadFiles::load_around(&w.ledger, &[b"big/f00001"]).unwrap();
        part.save_if_due(&w.ledger);
        let after = fs::read(&path).unwrap();
        assert_ne!(after, before, "not rewritten");
        let head = w.ledger.head().unwrap().seq;
        assert_eq!(after[16..24], head.to_le_bytes(), "written at the head");
        let whole = HeadFiles::load(&w.ledger).unwrap();
        assert_eq!(
            whole.base_bytes(),
            after.len(),
            "the new file is whole and used"
        );
        assert_eq!(head_files(&w), tree_files(&w));
    }

    /// `head-files` written from `blocks` (entries: path and the 41 bytes after it) at
    /// the seq and event hash of `like`'s header, with the index as `edit` leaves it
    /// (offset, length, entries, checksum, first path per block); checksums are
    /// computed after the blocks are made and before `edit`, the index's after it.
    fn crafted(
        like: &[u8],
        blocks: &[Vec<(Vec<u8>, [u8; 41])>],
        edit: impl FnOnce(&mut Vec<(u64, u32, u32, [u8; 32], Vec<u8>)>),
    ) -> Vec<u8> {
        let mut body = Vec::new();
        let mut index = Vec::new();
        for b in blocks {
            let start = body.len();
            for (p, rest) in b {
                body.extend_from_slice(&(p.len() as u32).to_le_bytes());
                body.extend_from_slice(p);
                body.extend_from_slice(rest);
            }
            let bytes = &body[start..];
            let first = b.first().map(|e| e.0.clone()).unwrap_or_default();
            let sum = *blake3::hash(bytes).as_bytes();
            index.push((start as u64, bytes.len() as u32, b.len() as u32, sum, first));
        }
        edit(&mut index);
        let mut ix = Vec::new();
        for (offset, len, entries, sum, first) in &index {
            ix.extend_from_slice(&offset.to_le_bytes());
            ix.extend_from_slice(&len.to_le_bytes());
            ix.extend_from_slice(&entries.to_le_bytes());
            ix.extend_from_slice(sum);
            ix.extend_from_slice(&(first.len() as u32).to_le_bytes());
            ix.extend_from_slice(first);
        }
        let count: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let mut out = like[..56].to_vec();
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(index.len() as u32).to_le_bytes());
        out.extend_from_slice(&(ix.len() as u32).to_le_bytes());
        out.extend_from_slice(&ix);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A `head-files` whose checksums hold but whose blocks do not fit together is not
    /// used: blocks that overlap, first paths out of order or not the block's own, a
    /// gap between blocks, an empty block. (The same file without the fault is.)
    #[test]
    fn head_files_whose_blocks_do_not_fit_together_are_not_used() {
        let w = workspace();
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        record_named(&w, &names, Some(1));
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let path = w.ledger.dir().join("index/head-files");
        let like = fs::read(&path).unwrap();
        let entries: Vec<(Vec<u8>, [u8; 41])> = HeadFiles::load(&w.ledger)
            .unwrap()
            .files()
            .iter()
            .map(|(p, c)| {
                let mut rest = [0u8; 41];
                rest[..32].copy_from_slice(c.hash.as_bytes());
                rest[32] = 0;
                rest[33..].copy_from_slice(&c.size.to_le_bytes());
                (p.to_vec(), rest)
            })
            .collect();
        let three = |e: &[(Vec<u8>, [u8; 41])]| {
            vec![e[..15].to_vec(), e[15..30].to_vec(), e[30..].to_vec()]
        };
        let good = crafted(&like, &three(&entries), |_| {});
        fs::write(&path, &good).unwrap();
        let hf = HeadFiles::load(&w.ledger).unwrap();
        assert!(
            hf.base_used() && hf.base_bytes() == good.len(),
            "the crafted file is used"
        );
        let mut overlapping = three(&entries);
        overlapping[0].push(entries[15].clone());
        let faults: Vec<(&str, Vec<u8>)> = vec![
            ("blocks overlap", crafted(&like, &overlapping, |_| {})),
            (
                "first paths out of order",
                crafted(&like, &three(&entries), |ix| ix[2].4 = ix[1].4.clone()),
            ),
            (
                "a first path not the block's",
                crafted(&like, &three(&entries), |ix| ix[1].4.push(0)),
            ),
            (
                "a gap between blocks",
                crafted(&like, &three(&entries), |ix| ix[2].0 += 1),
            ),
            ("an empty block", {
                let mut b = three(&entries);
                b.insert(1, Vec::new());
                crafted(&like, &b, |_| {})
            }),
        ];
        for (what, bytes) in faults {
            fs::write(&path, &bytes).unwrap();
            let hf = HeadFiles::load(&w.ledger).unwrap();
            assert!(!hf.base_used(), "{what}: used");
            assert_eq!(head_files(&w), tree_files(&w), "{what}");
            let part = HeadFiles::load_around(&w.ledger, &[b"f20"]).unwrap();
            assert_eq!(part.get(b"f20"), hf.get(b"f20"), "{what}");
        }
    }

    /// An index longer than the first read (long first paths over many blocks), and a
    /// tree of no files (no blocks at all): read around a path as the whole file.
    #[test]
    fn head_files_with_a_long_index_or_no_blocks_read_around_paths() {
        let w = workspace();
        let names: Vec<String> = (0..4400).map(|i| format!("long/{i:0>200}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        record_named(&w, &names, Some(1));
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let bytes = fs::read(w.ledger.dir().join("index/head-files")).unwrap();
        let index_len = u32::from_le_bytes(bytes[68..72].try_into().unwrap());
        assert!(index_len > 16 << 10, "an index of {index_len} bytes");
        let whole = HeadFiles::load(&w.ledger).unwrap();
        for p in [names[0], names[2999], names[4399], "long"] {
            let part = HeadFiles::load_around(&w.ledger, &[p.as_bytes()]).unwrap();
            assert!(part.base_used(), "{p}");
            assert_eq!(part.get(p.as_bytes()), whole.get(p.as_bytes()), "{p}");
            let dir = format!("{p}/");
            assert_eq!(
                part.with_prefix(dir.as_bytes()),
                whole.with_prefix(dir.as_bytes())
            );
        }
        // Every file deleted: a file of no blocks, used as it is.
        record_named(&w, &names, None);
        for i in 0..crate::cache::HEAD_FILES_EVERY as usize {
            record_named(&w, &[&format!("tmp{i}")], None);
        }
        HeadFiles::load(&w.ledger).unwrap().save_if_due(&w.ledger);
        let bytes = fs::read(w.ledger.dir().join("index/head-files")).unwrap();
        assert_eq!(bytes[56..72], [0u8; 16], "no entries, no blocks, no index");
        let whole = HeadFiles::load(&w.ledger).unwrap();
        assert!(whole.base_used() && whole.files().is_empty());
        let part = HeadFiles::load_around(&w.ledger, &[names[5].as_bytes()]).unwrap();
        assert!(part.base_used());
        assert_eq!(part.get(names[5].as_bytes()), None);
    }
}
