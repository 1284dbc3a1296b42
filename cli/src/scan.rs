//! Comparing the workspace on disk with the recorded tree.
//!
//! Walks the workspace (skipping `.ledger/` and `.git/`, honouring `.gitignore` and
//! `.ledgerignore`), uses a stat cache (size, mtime, ctime, inode, mode) so unchanged
//! files are not read, and produces the created/modified/deleted files as
//! `ResourceChange`s. Symlinks are recorded as their target bytes and never followed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use ledger::{Content, Hash, Ledger, Mode, Op, Pending, ResourceChange, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::output::{CliError, CliResult, EXIT_ERROR};

/// Recorded workspace files (from [`crate::state::files`]): path bytes -> content.
pub type Files<'a> = BTreeMap<&'a [u8], Content>;

/// Files whose mtime is this close to the scan are re-read next time: a write in the
/// same timestamp tick would not change the stat data.
const RACY_NS: i64 = 1_000_000_000;
const STAT_KEY: &str = "v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: Mode,
    pub hash: Hash,
}

#[derive(Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: BTreeMap<Vec<u8>, StatEntry>,
    #[serde(skip)]
    dirty: bool,
}

impl StatCache {
    pub fn load(ledger: &Ledger) -> StatCache {
        match ledger.index_unsynced().stat_tree().get(STAT_KEY) {
            Ok(Some(v)) => ledger::decode_canonical(&v).unwrap_or_default(),
            _ => StatCache::default(),
        }
    }

    /// Drops entries so these paths are read again on the next scan.
    pub fn forget<'a>(&mut self, paths: impl Iterator<Item = &'a [u8]>) {
        for p in paths {
            self.dirty |= self.entries.remove(p).is_some();
        }
    }

    /// Saves the cache if it changed. It is only a speed-up: failures are ignored.
    pub fn save(&self, ledger: &Ledger) {
        if self.dirty {
            if let Ok(v) = ledger::encode_canonical(self) {
                let _ = ledger.index_unsynced().stat_tree().insert(STAT_KEY, v);
            }
        }
    }
}

/// The workspace root and the ledger in it.
pub struct Workspace {
    pub root: PathBuf,
}

/// One file as found on disk.
#[derive(Debug, Clone)]
struct Found {
    rel: Vec<u8>,
    abs: PathBuf,
    meta: fs::Metadata,
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

/// A path the scan passed over, and why.
pub type Skipped = (Vec<u8>, String);

fn mode_of(meta: &fs::Metadata) -> Mode {
    if meta.file_type().is_symlink() {
        Mode::Symlink
    } else if meta.mode() & 0o100 != 0 {
        Mode::Executable
    } else {
        Mode::Regular
    }
}

fn stamp(meta: &fs::Metadata) -> (u64, i64, i64, u64) {
    (
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        meta.ino(),
    )
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

    /// Compares disk with `head` within `scope` (empty = everything). With `store`, new
    /// content is written (not yet committed) to the content store.
    pub fn scan(
        &self,
        ledger: &Ledger,
        head: &Files<'_>,
        scope: &[Vec<u8>],
        store: bool,
        cache: &mut StatCache,
    ) -> CliResult<ScanResult> {
        let scan_start = crate::timeparse::now_us() * 1000;
        let (found, skipped) = self.walk(scope)?;
        let mut seen: BTreeSet<Vec<u8>> = found.iter().map(|f| f.rel.clone()).collect();
        // Recorded files that the walk did not reach (now ignored, for example) stay
        // tracked, as in git: look at them directly.
        let mut extra = Vec::new();
        for rel in head
            .keys()
            .filter(|k| in_scope(k, scope) && !seen.contains(**k))
        {
            let abs = self.root.join(OsStr::from_bytes(rel));
            if let Ok(meta) = fs::symlink_metadata(&abs) {
                if meta.is_file() || meta.file_type().is_symlink() {
                    extra.push(Found {
                        rel: rel.to_vec(),
                        abs,
                        meta,
                    });
                }
            }
        }
        for f in &extra {
            seen.insert(f.rel.clone());
        }
        let all: Vec<Found> = found.into_iter().chain(extra).collect();

        // Files whose stat data does not match the cache must be read.
        let mut known: BTreeMap<Vec<u8>, Content> = BTreeMap::new();
        let mut to_read = Vec::new();
        for f in &all {
            let (size, mtime, ctime, ino) = stamp(&f.meta);
            let mode = mode_of(&f.meta);
            match cache.entries.get(&f.rel) {
                Some(e)
                    if e.size == size
                        && e.mtime_ns == mtime
                        && e.ctime_ns == ctime
                        && e.ino == ino
                        && e.mode == mode
                        // A scan that does not store (`status`) fills the cache too: when
                        // recording, content that differs from the recorded tree must be
                        // in the store, so read it unless it already is.
                        && (!store
                            || head.get(f.rel.as_slice()).is_some_and(|c| c.hash == e.hash)
                            || ledger.store().contains(&e.hash)) =>
                {
                    known.insert(
                        f.rel.clone(),
                        Content {
                            hash: e.hash,
                            mode,
                            size,
                        },
                    );
                }
                _ => to_read.push(f),
            }
        }
        let mut pending = Pending::default();
        let read = read_all(ledger, &to_read, store, &mut pending);
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                ledger.store().abandon(pending);
                return Err(e);
            }
        };
        for (f, content) in to_read.iter().zip(read) {
            let (size, mtime, ctime, ino) = stamp(&f.meta);
            if scan_start - mtime > RACY_NS && scan_start - ctime > RACY_NS {
                cache.entries.insert(
                    f.rel.clone(),
                    StatEntry {
                        size,
                        mtime_ns: mtime,
                        ctime_ns: ctime,
                        ino,
                        mode: content.mode,
                        hash: content.hash,
                    },
                );
            } else {
                cache.entries.remove(&f.rel);
            }
            cache.dirty = true;
            known.insert(f.rel.clone(), content);
        }
        // Forget cache entries of files that are gone.
        let before = cache.entries.len();
        cache
            .entries
            .retain(|k, _| !in_scope(k, scope) || seen.contains(k));
        cache.dirty |= cache.entries.len() != before;

        let mut changes = Vec::new();
        for (rel, now) in &known {
            match head.get(rel.as_slice()) {
                None => changes.push(ResourceChange {
                    key: ResourceKey::file(rel),
                    op: Op::Create,
                    old: None,
                    new: Some(*now),
                }),
                Some(old) if old.hash != now.hash || old.mode != now.mode => {
                    changes.push(ResourceChange {
                        key: ResourceKey::file(rel),
                        op: Op::Modify,
                        old: Some(*old),
                        new: Some(*now),
                    })
                }
                Some(_) => {}
            }
        }
        for (rel, old) in head
            .iter()
            .filter(|(k, _)| in_scope(k, scope) && !known.contains_key(**k))
        {
            changes.push(ResourceChange {
                key: ResourceKey::file(rel),
                op: Op::Delete,
                old: Some(*old),
                new: None,
            });
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ScanResult {
            changes,
            pending,
            skipped,
        })
    }

    fn walk(&self, scope: &[Vec<u8>]) -> CliResult<(Vec<Found>, Vec<Skipped>)> {
        let root = self.root.clone();
        let scope_owned: Vec<Vec<u8>> = scope.to_vec();
        let mut wb = ignore::WalkBuilder::new(&self.root);
        wb.hidden(false)
            .parents(false)
            .ignore(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .require_git(false)
            .follow_links(false)
            .add_custom_ignore_filename(".ledgerignore")
            .filter_entry(move |e| {
                let name = e.file_name();
                if e.depth() > 0
                    && (name == ".ledger" || name == ".git")
                    && e.file_type().is_some_and(|t| t.is_dir())
                {
                    return false;
                }
                if scope_owned.is_empty() || e.depth() == 0 {
                    return true;
                }
                let rel = e
                    .path()
                    .strip_prefix(&root)
                    .map(|p| p.as_os_str().as_bytes())
                    .unwrap_or_default();
                scope_owned
                    .iter()
                    .any(|s| is_prefix_path(s, rel) || is_prefix_path(rel, s))
            });
        let mut found = Vec::new();
        let mut skipped = Vec::new();
        for entry in wb.build() {
            let entry = entry.map_err(|e| {
                CliError::new(
                    EXIT_ERROR,
                    format!("cannot scan the workspace: {e}; nothing was recorded"),
                )
            })?;
            if entry.depth() == 0 {
                continue;
            }
            let ft = match entry.file_type() {
                Some(t) => t,
                None => continue,
            };
            if ft.is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .expect("walk stays under the root")
                .as_os_str()
                .as_bytes()
                .to_vec();
            if !in_scope(&rel, scope) {
                continue;
            }
            if !(ft.is_file() || ft.is_symlink()) {
                skipped.push((rel, "not a regular file or symlink".to_string()));
                continue;
            }
            let meta =
                fs::symlink_metadata(entry.path()).map_err(|e| read_error(entry.path(), e))?;
            found.push(Found {
                rel,
                abs: entry.path().to_path_buf(),
                meta,
            });
        }
        Ok((found, skipped))
    }
}

/// Reads (hashes, and with `store` stores) files, on all cores.
fn read_all(
    ledger: &Ledger,
    files: &[&Found],
    store: bool,
    pending: &mut Pending,
) -> CliResult<Vec<Content>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if files.len() < 64 || threads == 1 {
        return files
            .iter()
            .map(|f| read_one(ledger, f, store, pending))
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
                        .map(|f| read_one(ledger, f, store, &mut p))
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

fn read_one(ledger: &Ledger, f: &Found, store: bool, pending: &mut Pending) -> CliResult<Content> {
    let mode = mode_of(&f.meta);
    if mode == Mode::Symlink {
        let target = fs::read_link(&f.abs)
            .map_err(|e| read_error(&f.abs, e))?
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
            .put_file(&f.abs, pending)
            .map_err(|e| CliError::new(EXIT_ERROR, format!("{e}; nothing was recorded")))?;
        Ok(Content { hash, mode, size })
    } else {
        let mut file = fs::File::open(&f.abs).map_err(|e| read_error(&f.abs, e))?;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 128 * 1024];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| read_error(&f.abs, e))?;
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
