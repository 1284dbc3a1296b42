//! The workspace walk: every directory is read with `getdents` on its own descriptor and
//! every file is `fstatat`ed relative to it (no path lookup from the root per file), on
//! all cores, and the result comes back sorted by path bytes.
//!
//! Which entries count is decided exactly as `ignore::WalkBuilder` decides it with the
//! options this program always used (`hidden(false)`, `parents(false)`, `ignore(false)`,
//! `git_ignore(true)`, `git_exclude(true)`, `git_global(false)`, `require_git(false)`,
//! `follow_links(false)`, custom ignore file `.ledgerignore`): each directory's
//! `.ledgerignore`, `.gitignore` and (where it has a `.git`) `.git/info/exclude` are
//! compiled with the crate's own `GitignoreBuilder`; for a path, the nearest directory
//! whose `.ledgerignore` has an opinion decides, else the nearest `.gitignore`, else the
//! nearest exclude file, as in `ignore`'s `Ignore::matched_ignore`. An ignored directory
//! is not entered. `.git` and `.ledger` directories below the root are never entered.
//! The `walk_matches_the_ignore_crate` test compares both walks on generated trees.
//!
//! A directory whose device, inode, mtime and ctime match its listing in the dir cache
//! ([`crate::cache::DirCache`]) is not read again (its files are still `fstatat`ed);
//! only on local file systems that keep directory times exact (see
//! [`DIR_CACHE_FILE_SYSTEMS`]).

use std::ffi::{CStr, CString, OsStr};
use std::io::BufRead;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use rustix::fs::{AtFlags, FileType, Mode as OpenMode, OFlags, RawDir};

use crate::cache::{DirCache, DirStat, Listed};
use crate::output::{CliError, CliResult, EXIT_ERROR};

/// Directories changed less than this long before a walk are not cached (a change in
/// the same clock tick would not change their stat data).
const RACY_NS: i64 = 1_000_000_000;

/// What `lstat` said about a file, as far as the stat cache needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
}

impl FileStat {
    // The `stat` field types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(st: &rustix::fs::Stat) -> FileStat {
        FileStat {
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            ctime_ns: (st.st_ctime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
        }
    }

    pub fn from_metadata(m: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: m.len(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ctime_ns: m
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec()),
            ino: m.ino(),
            mode: m.mode(),
        }
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode as _)
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
}

/// A directory entry type as one byte (for [`crate::cache::DirCache`]).
pub fn type_byte(t: FileType) -> u8 {
    match t {
        FileType::RegularFile => 1,
        FileType::Directory => 2,
        FileType::Symlink => 3,
        FileType::Fifo => 4,
        FileType::Socket => 5,
        FileType::CharacterDevice => 6,
        FileType::BlockDevice => 7,
        _ => 0,
    }
}

/// The type a [`type_byte`] stands for (`None`: not one it writes).
pub fn byte_type(b: u8) -> Option<FileType> {
    Some(match b {
        0 => FileType::Unknown,
        1 => FileType::RegularFile,
        2 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::Fifo,
        5 => FileType::Socket,
        6 => FileType::CharacterDevice,
        7 => FileType::BlockDevice,
        _ => return None,
    })
}

/// A regular file or symlink the walk found.
#[derive(Clone, Debug)]
pub struct Found {
    /// Path relative to the root, `/`-separated bytes.
    pub rel: Vec<u8>,
    pub stat: FileStat,
}

/// A path the walk passed over, and why.
pub type Skipped = (Vec<u8>, String);

/// Why a `.ledger-tmp-PID-N` file is passed over (see [`crate::apply::is_ledger_tmp`]).
pub const LEFTOVER_TMP: &str =
    "a temporary file left by an interrupted `ledger revert`, never recorded; safe to delete";

/// The ignore rules in force in one directory, and the ones above it.
struct Rules {
    ledgerignore: Gitignore,
    gitignore: Gitignore,
    exclude: Gitignore,
    /// Length of the workspace-relative path of the directory the files are in, with
    /// its `/` (0 at the root): the matchers see paths relative to that directory, as
    /// `ignore` gives them after stripping the directory.
    base: usize,
    parent: Option<Arc<Rules>>,
}

impl Rules {
    /// Whether `rel` (workspace-relative) is ignored, by the precedence `ignore` uses.
    fn ignored(&self, rel: &[u8], is_dir: bool) -> bool {
        let (mut custom, mut git, mut exclude) = (Match::None, Match::None, Match::None);
        let mut level = Some(self);
        while let Some(r) = level {
            let path = Path::new(OsStr::from_bytes(rel.get(r.base..).unwrap_or_default()));
            if custom.is_none() {
                custom = r.ledgerignore.matched(path, is_dir);
            }
            if git.is_none() {
                git = r.gitignore.matched(path, is_dir);
            }
            if exclude.is_none() {
                exclude = r.exclude.matched(path, is_dir);
            }
            level = r.parent.as_deref();
        }
        custom.or(git).or(exclude).is_ignore()
    }

    fn is_empty(&self) -> bool {
        self.ledgerignore.is_empty() && self.gitignore.is_empty() && self.exclude.is_empty()
    }
}

/// Compiles the named ignore file like `ignore`'s `create_gitignore`; an unreadable or
/// malformed file contributes what it can (errors ignored, as the walk always ignored
/// them). The matcher's root is `.`: it is given paths already relative to the
/// directory the rules apply to ([`Rules::ignored`]), which is what `ignore`'s matcher
/// does itself with an absolute root (the root is only used to strip that prefix).
fn compile(file: &Path) -> Gitignore {
    let mut b = GitignoreBuilder::new(".");
    if file.exists() {
        let _ = b.add(file);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

/// Where `dir/.git`'s `info/exclude` lives (`ignore`'s `resolve_git_commondir`): the
/// `.git` directory, or for a `.git` file (worktree, submodule) the common dir it names.
fn git_common_dir(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    let is_file = std::fs::metadata(&dot_git).is_ok_and(|m| m.is_file());
    if !is_file {
        return Some(dot_git);
    }
    let first = |p: &Path| -> Option<String> {
        std::io::BufReader::new(std::fs::File::open(p).ok()?)
            .lines()
            .next()?
            .ok()
    };
    let line = first(&dot_git)?;
    let real = PathBuf::from(line.strip_prefix("gitdir: ")?);
    let common = first(&real.join("commondir"))?;
    Some(if common.starts_with('.') {
        real.join(common)
    } else {
        PathBuf::from(common)
    })
}

/// One directory to read.
struct Job {
    id: usize,
    /// The parent's descriptor and this directory's name in it (`None`: the root).
    at: Option<(Arc<OwnedFd>, CString)>,
    rel: Vec<u8>,
    abs: PathBuf,
    rules: Option<Arc<Rules>>,
}

enum Item {
    /// A file whose path is `paths[start..start + len]` of its listing.
    File(usize, usize, FileStat),
    Dir(usize),
}

/// A directory's entries, sorted so that concatenating them depth-first gives paths in
/// byte order: a directory sorts by its name followed by `/`.
struct Listing {
    items: Vec<Item>,
    /// The paths of its files, one after the other (one allocation per directory).
    paths: Vec<u8>,
}

struct Queue {
    jobs: Vec<Job>,
    busy: usize,
    stop: bool,
    error: Option<CliError>,
}

struct Shared<'a> {
    queue: Mutex<Queue>,
    wake: Condvar,
    next_id: AtomicUsize,
    scope: &'a [Vec<u8>],
    /// The dir cache, and the device whose directories it may list (see
    /// [`DIR_CACHE_FILE_SYSTEMS`]).
    dirs: Option<(&'a DirCache, u64)>,
    /// Listings of directories changed less than this long before `scan_start` are
    /// not cached.
    scan_start: i64,
}

/// What one walk thread produced.
#[derive(Default)]
struct Output {
    listings: Vec<(usize, Listing)>,
    skipped: Vec<Skipped>,
    /// Directories read afresh (and old enough to cache).
    listed: Vec<Listed>,
    /// Dir cache listings used.
    hits: Vec<usize>,
}

/// The result of [`walk`].
pub struct Walk {
    /// Each directory's listing, by id (the root is 0).
    listings: Vec<Option<Listing>>,
    /// Entries that are neither files nor symlinks, sorted by path.
    pub skipped: Vec<Skipped>,
    /// Directories read afresh, for the dir cache.
    pub listed: Vec<Listed>,
    /// Dir cache listings used instead of reading the directory.
    pub hits: Vec<usize>,
}

fn scan_error(what: impl std::fmt::Display) -> CliError {
    CliError::new(
        EXIT_ERROR,
        format!("cannot scan the workspace: {what}; nothing was recorded"),
    )
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::new(
        EXIT_ERROR,
        format!("cannot read {}: {e}; nothing was recorded", path.display()),
    )
}

fn is_prefix_path(prefix: &[u8], path: &[u8]) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// File systems known to change a directory's mtime and ctime whenever an entry is
/// added, removed or renamed in it, so that a listing matched by stat data is current
/// (`statfs` magic numbers): ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS, overlayfs,
/// bcachefs. Elsewhere (network and FUSE file systems, whose directory times may be
/// cached or coarse) every directory is read on every walk, as git's untracked cache
/// is off unless a file system passes its test.
const DIR_CACHE_FILE_SYSTEMS: [u32; 8] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0x794C_7630,
    0xCA45_1A4E,
];

/// Whether a `statfs` result is one of [`DIR_CACHE_FILE_SYSTEMS`].
fn local(fs: &rustix::fs::StatFs) -> bool {
    // `f_type`'s width differs between architectures; the magic numbers are 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = (fs.f_type as u64 & 0xffff_ffff) as u32;
    DIR_CACHE_FILE_SYSTEMS.contains(&magic)
}

/// Whether `fd` is on one of the local file systems of [`DIR_CACHE_FILE_SYSTEMS`]
/// (`false` when `fstatfs` fails). A revert also uses this to decide whether `syncfs`
/// is enough to make its files durable.
pub(crate) fn local_file_system(fd: &OwnedFd) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|fs| local(&fs))
}

/// Whether listings of directories on `root`'s file system may be cached, and that
/// file system's device number (listings on other devices below it are not used).
pub(crate) fn dir_cache_device(root: &Path) -> Option<u64> {
    if !local(&rustix::fs::statfs(root).ok()?) {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::stat(root).ok().map(|st| st.st_dev as u64)
}

/// Walks `root` (an absolute, canonical directory). Within `scope` (empty = all):
/// directories on the way to a scope entry are read, files outside it are left out.
/// A directory whose stat data matches its listing in `dirs` is not read again.
/// `scan_start` (ns since the epoch, taken before the walk) decides which listings are
/// old enough to cache.
pub fn walk(
    root: &Path,
    scope: &[Vec<u8>],
    dirs: Option<&DirCache>,
    scan_start: i64,
) -> CliResult<Walk> {
    // Four threads per core (git's index preloading also runs more threads than
    // cores): while one waits for the disk (a directory or inode block that is not
    // cached) or for a core another process holds, the others work. On an idle
    // machine with everything cached the extra threads cost a few context switches.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(4)
        .clamp(4, 16);
    let shared = Shared {
        queue: Mutex::new(Queue {
            jobs: vec![Job {
                id: 0,
                at: None,
                rel: Vec::new(),
                abs: root.to_path_buf(),
                rules: None,
            }],
            busy: 0,
            stop: false,
            error: None,
        }),
        wake: Condvar::new(),
        next_id: AtomicUsize::new(1),
        scope,
        dirs: dirs.and_then(|d| dir_cache_device(root).map(|dev| (d, dev))),
        scan_start,
    };
    let mut outputs: Vec<Output> = if threads <= 1 {
        vec![worker(&shared)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| worker(&shared))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("walk thread panicked"))
                .collect()
        })
    };
    let q = shared.queue.into_inner().expect("walk queue poisoned");
    if let Some(e) = q.error {
        return Err(e);
    }
    let n = shared.next_id.load(Ordering::Relaxed);
    let mut listings: Vec<Option<Listing>> = (0..n).map(|_| None).collect();
    let (mut listed, mut hits, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for out in outputs.iter_mut() {
        for (id, l) in out.listings.drain(..) {
            listings[id] = Some(l);
        }
        listed.append(&mut out.listed);
        hits.append(&mut out.hits);
        skipped.append(&mut out.skipped);
    }
    skipped.sort_unstable_by(|a: &Skipped, b: &Skipped| a.0.cmp(&b.0));
    Ok(Walk {
        listings,
        skipped,
        listed,
        hits,
    })
}

impl Walk {
    /// The regular files and symlinks found, in path byte order: path and stat data.
    pub fn files(&self) -> WalkFiles<'_> {
        WalkFiles {
            walk: self,
            stack: vec![(0, 0)],
        }
    }
}

/// See [`Walk::files`]: a depth-first walk over the listings.
pub struct WalkFiles<'a> {
    walk: &'a Walk,
    /// (listing id, position in it)
    stack: Vec<(usize, usize)>,
}

impl<'a> Iterator for WalkFiles<'a> {
    type Item = (&'a [u8], &'a FileStat);

    fn next(&mut self) -> Option<Self::Item> {
        let listings = &self.walk.listings;
        loop {
            let (id, pos) = self.stack.last_mut()?;
            let Some(l) = listings.get(*id).and_then(Option::as_ref) else {
                self.stack.pop();
                continue;
            };
            match l.items.get(*pos) {
                None => {
                    self.stack.pop();
                }
                Some(Item::File(start, len, stat)) => {
                    *pos += 1;
                    return Some((&l.paths[*start..*start + *len], stat));
                }
                Some(Item::Dir(child)) => {
                    *pos += 1;
                    let child = *child;
                    self.stack.push((child, 0));
                }
            }
        }
    }
}

fn worker(shared: &Shared<'_>) -> Output {
    let mut out = Output::default();
    let mut scratch = Scratch {
        getdents: vec![MaybeUninit::<u8>::uninit(); 64 * 1024],
        names: Vec::new(),
        entries: Vec::new(),
        items: Vec::new(),
        paths: Vec::new(),
    };
    loop {
        let job = {
            let mut q = shared.queue.lock().expect("walk queue poisoned");
            loop {
                if q.stop {
                    return out;
                }
                if let Some(j) = q.jobs.pop() {
                    q.busy += 1;
                    break j;
                }
                if q.busy == 0 {
                    q.stop = true;
                    shared.wake.notify_all();
                    return out;
                }
                q = shared.wake.wait(q).expect("walk queue poisoned");
            }
        };
        let id = job.id;
        let mut children = Vec::new();
        let res = read_dir(shared, job, &mut children, &mut scratch, &mut out);
        let mut q = shared.queue.lock().expect("walk queue poisoned");
        q.busy -= 1;
        match res {
            Ok(listing) => {
                out.listings.push((id, listing));
                let n = children.len();
                q.jobs.append(&mut children);
                if n > 1 || q.busy == 0 {
                    shared.wake.notify_all();
                } else if n == 1 {
                    shared.wake.notify_one();
                }
            }
            Err(e) => {
                if q.error.is_none() {
                    q.error = Some(e);
                }
                q.stop = true;
                shared.wake.notify_all();
            }
        }
    }
}

/// Orders directory entries so that a directory sorts as its name followed by `/`:
/// then listing directories depth-first in this order gives paths in byte order.
fn entry_order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        let next = |name: &[u8], dir: bool| match name.get(n) {
            Some(c) => Some(*c),
            None => dir.then_some(b'/'),
        };
        next(a, a_dir).cmp(&next(b, b_dir))
    })
}

/// Reads one directory: its rules, its entries; queues its subdirectories. `buf` is the
/// thread's `getdents` buffer.
fn read_dir(
    shared: &Shared<'_>,
    job: Job,
    children: &mut Vec<Job>,
    scratch: &mut Scratch,
    out: &mut Output,
) -> CliResult<Listing> {
    let Scratch {
        getdents: buf,
        names,
        entries,
        items,
        paths,
    } = scratch;
    names.clear();
    entries.clear();
    items.clear();
    paths.clear();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let cannot = |e: rustix::io::Errno| {
        scan_error(format!(
            "cannot read directory {}: {}",
            job.abs.display(),
            std::io::Error::from(e)
        ))
    };
    let fd = match &job.at {
        None => rustix::fs::open(&job.abs, flags, OpenMode::empty()),
        Some((parent, name)) => rustix::fs::openat(
            parent.as_fd(),
            name.as_c_str(),
            flags | OFlags::NOFOLLOW,
            OpenMode::empty(),
        ),
    }
    .map_err(cannot)?;
    drop(job.at);
    // The directory's own stat data first: an entry added after this changes it, so a
    // listing stored with it can only miss entries if it will not match next time.
    let st = rustix::fs::fstat(&fd).map_err(cannot)?;
    let dir_stat = DirStat {
        dev: st.st_dev as u64,
        ino: FileStat::from_stat(&st).ino,
        mtime_ns: FileStat::from_stat(&st).mtime_ns,
        ctime_ns: FileStat::from_stat(&st).ctime_ns,
    };
    // Names, each followed by its NUL, in one buffer; entries point into it.
    let mut push = |name: &[u8], t: FileType| {
        entries.push((names.len(), name.len(), t));
        names.extend_from_slice(name);
        names.push(0);
    };
    let dirs = shared
        .dirs
        .filter(|&(_, dev)| dir_stat.dev == dev)
        .map(|(d, _)| d);
    match dirs.and_then(|d| d.lookup(&job.rel, &dir_stat).map(|i| (d, i))) {
        Some((d, i)) => {
            out.hits.push(i);
            for (name, t) in d.entries(i) {
                push(name, byte_type(t).unwrap_or(FileType::Unknown));
            }
        }
        None => {
            let mut dir = RawDir::new(&fd, buf);
            while let Some(e) = dir.next() {
                let e = e.map_err(cannot)?;
                match e.file_name().to_bytes() {
                    b"." | b".." => {}
                    name => push(name, e.file_type()),
                }
            }
            let old_enough = |t: i64| shared.scan_start - t > RACY_NS;
            if dirs.is_some()
                && old_enough(dir_stat.mtime_ns)
                && old_enough(dir_stat.ctime_ns)
                && entries.iter().all(|e| e.1 <= 255)
            {
                out.listed.push(Listed {
                    rel: job.rel.clone(),
                    stat: dir_stat,
                    entries: entries
                        .iter()
                        .map(|&(s, l, t)| (names[s..s + l].to_vec(), type_byte(t)))
                        .collect(),
                });
            }
        }
    }
    let (mut has_ledgerignore, mut has_gitignore, mut has_git) = (false, false, false);
    for &(s, l, _) in entries.iter() {
        match &names[s..s + l] {
            b".ledgerignore" => has_ledgerignore = true,
            b".gitignore" => has_gitignore = true,
            b".git" => has_git = true,
            _ => {}
        }
    }
    let fd = Arc::new(fd);

    // This directory's rules (`ignore`'s `add_child`), reused from the parent when it
    // adds none.
    let rules = {
        let own = Rules {
            ledgerignore: if has_ledgerignore {
                compile(&job.abs.join(".ledgerignore"))
            } else {
                Gitignore::empty()
            },
            gitignore: if has_gitignore {
                compile(&job.abs.join(".gitignore"))
            } else {
                Gitignore::empty()
            },
            exclude: match has_git.then(|| git_common_dir(&job.abs)).flatten() {
                Some(common) => compile(&common.join("info/exclude")),
                None => Gitignore::empty(),
            },
            base: if job.rel.is_empty() {
                0
            } else {
                job.rel.len() + 1
            },
            parent: job.rules.clone(),
        };
        if own.is_empty() {
            job.rules.clone()
        } else {
            Some(Arc::new(own))
        }
    };

    // (name start, name length, is a directory, what it is)
    // The entry's path, built in place.
    let mut rel: Vec<u8> = job.rel.clone();
    if !rel.is_empty() {
        rel.push(b'/');
    }
    let rel_len = rel.len();
    for &(start, len, dtype) in entries.iter() {
        let name_bytes = &names[start..start + len];
        let name = CStr::from_bytes_with_nul(&names[start..=start + len])
            .map_err(|e| scan_error(e.to_string()))?;
        rel.truncate(rel_len);
        rel.extend_from_slice(name_bytes);
        // Entries whose type the directory does not say are looked at; files are
        // looked at anyway below.
        let mut stat = None;
        let ftype = if dtype == FileType::Unknown {
            let st = stat_at(&fd, name, &job.abs)?;
            let t = st.file_type();
            stat = Some(st);
            t
        } else {
            dtype
        };
        let is_dir = ftype == FileType::Directory;
        if is_dir && (name_bytes == b".ledger" || name_bytes == b".git") {
            continue;
        }
        if !shared.scope.is_empty()
            && !shared
                .scope
                .iter()
                .any(|s| is_prefix_path(s, &rel) || is_prefix_path(&rel, s))
        {
            continue;
        }
        if rules.as_ref().is_some_and(|r| r.ignored(&rel, is_dir)) {
            continue;
        }
        if is_dir {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            children.push(Job {
                id,
                abs: job.abs.join(OsStr::from_bytes(name_bytes)),
                at: Some((fd.clone(), name.to_owned())),
                rel: rel.clone(),
                rules: rules.clone(),
            });
            items.push((start, len, true, Item::Dir(id)));
            continue;
        }
        if !shared.scope.is_empty() && !shared.scope.iter().any(|s| is_prefix_path(s, &rel)) {
            continue;
        }
        if crate::apply::is_ledger_tmp(name_bytes) {
            out.skipped.push((rel.clone(), LEFTOVER_TMP.into()));
            continue;
        }
        let not_file = |rel: &[u8]| (rel.to_vec(), "not a regular file or symlink".into());
        if !(ftype == FileType::RegularFile || ftype == FileType::Symlink) {
            out.skipped.push(not_file(&rel));
            continue;
        }
        let st = match stat {
            Some(s) => s,
            None => stat_at(&fd, name, &job.abs)?,
        };
        if !(st.is_file() || st.is_symlink()) {
            // Replaced by something else since the directory was read.
            out.skipped.push(not_file(&rel));
            continue;
        }
        items.push((start, len, false, Item::File(paths.len(), rel.len(), st)));
        paths.extend_from_slice(&rel);
    }
    items.sort_unstable_by(|a, b| {
        entry_order(&names[a.0..a.0 + a.1], a.2, &names[b.0..b.0 + b.1], b.2)
    });
    Ok(Listing {
        items: items.drain(..).map(|i| i.3).collect(),
        paths: paths.as_slice().to_vec(),
    })
}

/// A walk thread's buffers, reused from one directory to the next.
struct Scratch {
    getdents: Vec<MaybeUninit<u8>>,
    /// Entry names, each followed by its NUL.
    names: Vec<u8>,
    /// (name start, name length, type)
    entries: Vec<(usize, usize, FileType)>,
    /// (name start, name length, is a directory, what it is)
    items: Vec<(usize, usize, bool, Item)>,
    /// Paths of the directory's files.
    paths: Vec<u8>,
}

fn stat_at(dir: &OwnedFd, name: &CStr, dir_path: &Path) -> CliResult<FileStat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileStat::from_stat(&st))
        .map_err(|e| {
            read_error(
                &dir_path.join(OsStr::from_bytes(name.to_bytes())),
                std::io::Error::from(e),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::DirCache;
    use std::collections::BTreeSet;
    use std::fs;

    /// The walk as `ignore::WalkBuilder` did it before this module existed (the oracle).
    fn ignore_crate_walk(root: &Path, scope: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let root_owned = root.to_path_buf();
        let scope_owned = scope.to_vec();
        let mut wb = ignore::WalkBuilder::new(root);
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
                    .strip_prefix(&root_owned)
                    .map(|p| p.as_os_str().as_bytes())
                    .unwrap_or_default();
                scope_owned
                    .iter()
                    .any(|s| is_prefix_path(s, rel) || is_prefix_path(rel, s))
            });
        let (mut files, mut skipped) = (Vec::new(), Vec::new());
        for entry in wb.build() {
            let entry = entry.expect("oracle walk failed");
            if entry.depth() == 0 {
                continue;
            }
            let ft = entry.file_type().expect("a file type");
            if ft.is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            if !scope.is_empty() && !scope.iter().any(|s| is_prefix_path(s, &rel)) {
                continue;
            }
            if crate::apply::is_ledger_tmp(entry.file_name().as_bytes()) {
                skipped.push(rel);
            } else if ft.is_file() || ft.is_symlink() {
                files.push(rel);
            } else {
                skipped.push(rel);
            }
        }
        files.sort();
        skipped.sort();
        (files, skipped)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const NAMES: &[&str] = &[
        "a",
        "b.log",
        "keep.log",
        "build",
        "top.txt",
        "deep",
        "x",
        "important",
        "c.c",
        "ab.c",
        "xyz",
        ".hidden",
        "sub",
        "nested",
        "inner",
        "z.tmp",
        "file.rs",
        "a.b",
        "a-b",
        "a0",
        "target",
        "secret.env",
        "Doc",
        "#hash",
        ".ledger-tmp-12-0",
        ".ledger-tmp-x-0",
        " sp",
        "é",
    ];
    const PATTERNS: &[&str] = &[
        "*.log",
        "!keep.log",
        "build/",
        "/top.txt",
        "a*",
        "**/deep",
        "sub/*.tmp",
        "*.tmp",
        "!important/",
        "important/",
        "deep/",
        "#comment",
        "\\#hash",
        "x?z",
        "[ab]*.c",
        "!*.c",
        "/nested/inner",
        "**/x/**",
        "*",
        "!*/",
        "!a",
        "target",
        "/sub",
        "inner/",
        "*.env",
        "!secret.env",
        "Doc/**",
        "a/**/b.log",
        "",
        "  ",
        "é",
        "!/x",
        "**",
        "[",
        "\\!a",
        "*.b",
        "a.b/",
        "nested/**/z.tmp",
    ];

    fn rules(rng: &mut Rng) -> String {
        let mut s = String::new();
        for _ in 0..1 + rng.below(4) {
            s.push_str(rng.pick(PATTERNS));
            s.push('\n');
        }
        s
    }

    /// A random tree under `dir`, `depth` levels deep at most.
    fn generate(rng: &mut Rng, dir: &Path, depth: usize) {
        fs::create_dir_all(dir).unwrap();
        if rng.below(4) == 0 {
            fs::write(dir.join(".gitignore"), rules(rng)).unwrap();
        }
        if rng.below(6) == 0 {
            fs::write(dir.join(".ledgerignore"), rules(rng)).unwrap();
        }
        match rng.below(12) {
            0 => {
                // A repository (nested, below the root): its exclude file applies here.
                fs::create_dir_all(dir.join(".git/info")).unwrap();
                fs::write(dir.join(".git/info/exclude"), rules(rng)).unwrap();
                fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
            }
            1 => {
                // A worktree-style `.git` file: recorded as a file, no exclude rules.
                fs::write(dir.join(".git"), "gitdir: /nonexistent/wt\n").unwrap();
            }
            2 => {
                fs::create_dir_all(dir.join(".ledger")).unwrap();
                fs::write(dir.join(".ledger/x"), "x").unwrap();
            }
            _ => {}
        }
        for _ in 0..rng.below(7) {
            let name = rng.pick(NAMES);
            let p = dir.join(name);
            if p.symlink_metadata().is_ok() {
                continue;
            }
            match rng.below(10) {
                0..=4 => fs::write(&p, name).unwrap(),
                5..=7 if depth > 0 => generate(rng, &p, depth - 1),
                8 => std::os::unix::fs::symlink(rng.pick(NAMES), &p).unwrap(),
                _ => {
                    let _ = std::process::Command::new("mkfifo").arg(&p).status();
                }
            }
        }
    }

    fn all_paths(root: &Path) -> Vec<Vec<u8>> {
        let (files, _) = ignore_crate_walk(root, &[]);
        let mut out: BTreeSet<Vec<u8>> = BTreeSet::new();
        for f in files {
            let mut p = f.as_slice();
            out.insert(p.to_vec());
            while let Some(i) = p.iter().rposition(|b| *b == b'/') {
                p = &p[..i];
                out.insert(p.to_vec());
            }
        }
        out.into_iter().collect()
    }

    #[test]
    fn walk_matches_the_ignore_crate() {
        let trees: u64 = match std::env::var("LEDGER_LONG") {
            Ok(_) => 2000,
            Err(_) => 150,
        };
        let mut checked = 0usize;
        let mut cache_hits = 0usize;
        for seed in 1..=trees {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().canonicalize().unwrap().join("ws");
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            generate(&mut rng, &root, 3);
            // The workspace's own repository, with rules of its own.
            if rng.below(2) == 0 && !root.join(".git").is_file() {
                fs::create_dir_all(root.join(".git/info")).unwrap();
                fs::write(root.join(".git/info/exclude"), rules(&mut rng)).unwrap();
            }
            let mut scopes: Vec<Vec<Vec<u8>>> = vec![vec![]];
            let paths = all_paths(&root);
            if !paths.is_empty() {
                scopes.push(vec![paths[rng.below(paths.len())].clone()]);
                scopes.push(vec![
                    paths[rng.below(paths.len())].clone(),
                    paths[rng.below(paths.len())].clone(),
                ]);
            }
            scopes.push(vec![b"sub/nonexistent".to_vec()]);
            for scope in scopes {
                let (want_files, want_skipped) = ignore_crate_walk(&root, &scope);
                let w = walk(&root, &scope, None, 0).unwrap();
                let found: Vec<Found> = w
                    .files()
                    .map(|(rel, stat)| Found {
                        rel: rel.to_vec(),
                        stat: *stat,
                    })
                    .collect();
                let skipped = w.skipped;
                let got: Vec<Vec<u8>> = found.iter().map(|f| f.rel.clone()).collect();
                let mut sorted = got.clone();
                sorted.sort();
                assert_eq!(got, sorted, "seed {seed}: walk output is not sorted");
                let show = |v: &[Vec<u8>]| -> Vec<String> {
                    v.iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect()
                };
                assert_eq!(
                    show(&got),
                    show(&want_files),
                    "seed {seed}, scope {:?}",
                    show(&scope)
                );
                let mut got_skipped: Vec<Vec<u8>> = skipped.into_iter().map(|s| s.0).collect();
                got_skipped.sort();
                assert_eq!(show(&got_skipped), show(&want_skipped), "seed {seed}");
                for f in &found {
                    let m = fs::symlink_metadata(root.join(OsStr::from_bytes(&f.rel))).unwrap();
                    assert_eq!(f.stat, FileStat::from_metadata(&m), "seed {seed}");
                }
                checked += got.len();
            }

            // Again with directory listings from a dir cache (every directory counts
            // as old enough), before and after some directories change.
            let future = crate::timeparse::now_us() * 1000 + 3_600_000_000_000;
            let first = walk(&root, &[], Some(&DirCache::default()), future).unwrap();
            let cache = DirCache::default().rebuilt(&[], first.listed, false);
            let compare = |cache: &DirCache, what: &str| -> usize {
                let (want, want_skipped) = ignore_crate_walk(&root, &[]);
                let w = walk(&root, &[], Some(cache), future).unwrap();
                let got: Vec<Vec<u8>> = w.files().map(|(rel, _)| rel.to_vec()).collect();
                let mut got_skipped: Vec<Vec<u8>> = w.skipped.into_iter().map(|s| s.0).collect();
                got_skipped.sort();
                assert_eq!(got, want, "seed {seed}, {what}");
                assert_eq!(got_skipped, want_skipped, "seed {seed}, {what}");
                w.hits.len()
            };
            let dirs_before = cache.len();
            let cacheable = dir_cache_device(&root).is_some();
            assert_eq!(
                compare(&cache, "unchanged"),
                if cacheable { dirs_before } else { 0 }
            );
            cache_hits += dirs_before;
            // Coarse file system clocks tick every few ms; let this be a later tick.
            std::thread::sleep(std::time::Duration::from_millis(15));
            let paths = all_paths(&root);
            for _ in 0..3 {
                if paths.is_empty() {
                    break;
                }
                let p = root.join(OsStr::from_bytes(&paths[rng.below(paths.len())]));
                let dir = if p.is_dir() {
                    p
                } else {
                    p.parent().unwrap().to_path_buf()
                };
                match rng.below(3) {
                    0 => fs::write(dir.join("added.txt"), "new").unwrap(),
                    1 => fs::write(dir.join(".gitignore"), rules(&mut rng)).unwrap(),
                    _ => {
                        let victim = fs::read_dir(&dir)
                            .unwrap()
                            .map(|e| e.unwrap().path())
                            .find(|p| p.symlink_metadata().is_ok_and(|m| !m.is_dir()));
                        if let Some(v) = victim {
                            fs::remove_file(v).unwrap();
                        }
                    }
                }
            }
            compare(&cache, "changed");
        }
        if dir_cache_device(Path::new(&std::env::temp_dir())).is_some() {
            assert!(cache_hits > 0, "the dir cache was never used");
        } else {
            eprintln!("the temp directory's file system keeps no dir cache; not checked");
        }
        // The generator must produce something to compare.
        assert!(checked > trees as usize, "only {checked} files compared");
    }

    #[test]
    fn directories_changed_within_the_racy_window_are_not_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), "x").unwrap();
        if dir_cache_device(&root).is_none() {
            eprintln!("this file system keeps no dir cache; nothing to check");
            return;
        }
        let now = crate::timeparse::now_us() * 1000;
        let w = walk(&root, &[], Some(&DirCache::default()), now).unwrap();
        assert_eq!(w.files().count(), 1);
        assert!(w.listed.is_empty(), "fresh directories were cached");
        // Two seconds later (as far as the walk knows) they are.
        let w = walk(&root, &[], Some(&DirCache::default()), now + 2_000_000_000).unwrap();
        let mut cached: Vec<Vec<u8>> = w.listed.iter().map(|l| l.rel.clone()).collect();
        cached.sort();
        assert_eq!(cached, [&b""[..], b"a", b"a/b"]);
        // Without a dir cache nothing is collected.
        assert!(walk(&root, &[], None, now + 2_000_000_000)
            .unwrap()
            .listed
            .is_empty());
    }

    #[test]
    fn unreadable_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("locked")).unwrap();
        fs::write(root.join("locked/f"), "x").unwrap();
        // A directory replaced by a file between listing and reading cannot be faked
        // here; a missing root is the same error path.
        let err = walk(&root.join("missing"), &[], None, 0).err().unwrap();
        assert!(err.message.contains("missing"), "{}", err.message);
        assert!(
            err.message.contains("nothing was recorded"),
            "{}",
            err.message
        );
    }
}
