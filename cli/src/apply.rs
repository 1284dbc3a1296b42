//! Writing planned file states beneath a root without ever leaving it.
//!
//! Every path is opened one component at a time from a handle on the root with
//! `O_NOFOLLOW`, so neither a `..` nor a symlinked directory nor a symlink planted at
//! the target can redirect a write. Used by `revert` (all or nothing: every file is
//! re-checked, then written to a temporary name in its own directory, the files side
//! by side on several threads, and synced (one `syncfs` when little else is dirty, else
//! each file); then renamed over their targets, then their directories are synced
//! together: atomic per file, durable when it returns)
//! and by `replay` (into a new directory: each file created once under its own name,
//! directory handles reused from one file to the next in tree order).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ledger::{Content, Hash, Ledger, Mode, ResourceKey};
use replay::{safe_relative_path, ActionKind, Payload, RevertAction};
use rustix::fs::{self as rfs, AtFlags, OFlags};
use rustix::io::Errno;

use crate::output::{CliError, CliResult, EXIT_ERROR};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn err(key: &ResourceKey, what: impl std::fmt::Display) -> CliError {
    CliError::new(EXIT_ERROR, format!("{}: {what}", key.name.display()))
}

/// A directory handle from which paths are resolved without following symlinks.
pub struct Root {
    fd: OwnedFd,
}

/// What is at a path now, looked at without following symlinks.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Absent,
    File(Content),
    Directory,
    /// Something else that is not a file or symlink (a FIFO, a socket, a device).
    Other(&'static str),
}

impl Root {
    pub fn open(path: &std::path::Path) -> CliResult<Root> {
        let fd = rfs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            rfs::Mode::empty(),
        )
        .map_err(|e| CliError::new(EXIT_ERROR, format!("cannot open {}: {e}", path.display())))?;
        Ok(Root { fd })
    }

    /// Opens the parent directory of `key`, component by component, refusing symlinks.
    /// With `create`, missing directories are made (and reported in `made`).
    fn parent(
        &self,
        key: &ResourceKey,
        create: bool,
        made: &mut Vec<Vec<u8>>,
    ) -> CliResult<Option<OwnedFd>> {
        let sp = safe_relative_path(key.name.as_bytes())
            .map_err(|e| err(key, format!("refusing an unsafe path: {e}")))?;
        let mut cur = rfs::openat(
            &self.fd,
            ".",
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            rfs::Mode::empty(),
        )
        .map_err(|e| err(key, e))?;
        let mut walked: Vec<u8> = Vec::new();
        for comp in sp.parents() {
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(comp);
            match open_dir_in(&cur, key, comp, &walked, create, made)? {
                Some(fd) => cur = fd,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// What is at `key` now, hashed; the directories on the way are opened through
    /// `cache` (so files looked at in tree order open each directory once).
    pub fn look(&self, key: &ResourceKey, cache: &mut DirCache) -> CliResult<Found> {
        let Some(dir) = self.parent_cached(key, false, &mut Vec::new(), cache)? else {
            return Ok(Found::Absent);
        };
        look_in(&dir, key)
    }
}

/// Open directory handles along the path of the previous lookup, so that files taken in
/// tree order open each directory once. Every handle was opened from its parent's with
/// `O_NOFOLLOW`, exactly as [`Root::parent`] does.
#[derive(Default)]
pub struct DirCache {
    /// `(component, handle)` from the root down.
    stack: Vec<(Vec<u8>, Arc<OwnedFd>)>,
}

impl Root {
    /// [`Root::parent`] reusing (and updating) the handles in `cache`.
    fn parent_cached(
        &self,
        key: &ResourceKey,
        create: bool,
        made: &mut Vec<Vec<u8>>,
        cache: &mut DirCache,
    ) -> CliResult<Option<Arc<OwnedFd>>> {
        let sp = safe_relative_path(key.name.as_bytes())
            .map_err(|e| err(key, format!("refusing an unsafe path: {e}")))?;
        let comps = sp.parents();
        let keep = cache
            .stack
            .iter()
            .zip(comps.iter())
            .take_while(|((c, _), n)| c.as_slice() == **n)
            .count();
        cache.stack.truncate(keep);
        let mut walked: Vec<u8> = Vec::new();
        for c in &comps[..keep] {
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(c);
        }
        for comp in &comps[keep..] {
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(comp);
            let fd = {
                let cur: &OwnedFd = match cache.stack.last() {
                    Some((_, fd)) => fd,
                    None => &self.fd,
                };
                match open_dir_in(cur, key, comp, &walked, create, made)? {
                    Some(fd) => fd,
                    None => return Ok(None),
                }
            };
            cache.stack.push((comp.to_vec(), Arc::new(fd)));
        }
        Ok(Some(match cache.stack.last() {
            Some((_, fd)) => fd.clone(),
            None => Arc::new(
                rfs::openat(
                    &self.fd,
                    ".",
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    rfs::Mode::empty(),
                )
                .map_err(|e| err(key, e))?,
            ),
        }))
    }
}

/// Opens directory `comp` in `cur` without following a symlink; with `create`, makes it
/// when missing (noting `walked` in `made`). `None`: it does not exist.
fn open_dir_in(
    cur: &OwnedFd,
    key: &ResourceKey,
    comp: &[u8],
    walked: &[u8],
    create: bool,
    made: &mut Vec<Vec<u8>>,
) -> CliResult<Option<OwnedFd>> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(cur, comp, flags, rfs::Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) if create => {
            rfs::mkdirat(cur, comp, rfs::Mode::from_raw_mode(0o755)).map_err(|e| {
                err(
                    key,
                    format!(
                        "cannot create directory {}: {e}",
                        String::from_utf8_lossy(walked)
                    ),
                )
            })?;
            made.push(walked.to_vec());
            rfs::openat(cur, comp, flags, rfs::Mode::empty())
                .map(Some)
                .map_err(|e| err(key, e))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(err(
            key,
            format!(
                "{} is a symlink or not a directory; refusing to write through it",
                String::from_utf8_lossy(walked)
            ),
        )),
        Err(e) => Err(err(
            key,
            format!("cannot open {}: {e}", String::from_utf8_lossy(walked)),
        )),
    }
}

fn file_name(key: &ResourceKey) -> CliResult<Vec<u8>> {
    safe_relative_path(key.name.as_bytes())
        .map(|sp| sp.file_name().to_vec())
        .map_err(|e| err(key, format!("refusing an unsafe path: {e}")))
}

fn look_in(dir: &OwnedFd, key: &ResourceKey) -> CliResult<Found> {
    let name = file_name(key)?;
    let st = match rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Found::Absent),
        Err(e) => return Err(err(key, e)),
    };
    let ft = rfs::FileType::from_raw_mode(st.st_mode);
    match ft {
        rfs::FileType::Symlink => {
            let target = rfs::readlinkat(dir, name.as_slice(), Vec::new())
                .map_err(|e| err(key, e))?
                .into_bytes();
            Ok(Found::File(Content {
                hash: Hash::of_content(&target),
                mode: Mode::Symlink,
                size: target.len() as u64,
            }))
        }
        rfs::FileType::RegularFile => {
            let fd = rfs::openat(
                dir,
                name.as_slice(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rfs::Mode::empty(),
            )
            .map_err(|e| err(key, e))?;
            let mut f = File::from(fd);
            let mut h = blake3::Hasher::new();
            // Sized to the file (plus one byte to see its end in one read) up to 128 KiB:
            // a 128 KiB buffer for every small file cost an mmap and a munmap each.
            let len = usize::try_from(st.st_size).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; len.saturating_add(1).min(128 * 1024)];
            let mut size = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| err(key, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                size += n as u64;
            }
            let mode = if st.st_mode & 0o100 != 0 {
                Mode::Executable
            } else {
                Mode::Regular
            };
            Ok(Found::File(Content {
                hash: Hash::from(h.finalize()),
                mode,
                size,
            }))
        }
        rfs::FileType::Directory => Ok(Found::Directory),
        _ => Ok(Found::Other("not a regular file or symlink")),
    }
}

/// Bytes for one write, from the store (streamed, verified) or given.
fn write_payload(ledger: &Ledger, payload: &Payload, out: &mut File) -> Result<(), String> {
    match payload {
        Payload::Stored { hash } => ledger
            .store()
            .copy_to(hash, out)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Payload::Bytes(b) => out.write_all(b).map_err(|e| e.to_string()),
    }
}

fn symlink_target(ledger: &Ledger, payload: &Payload) -> Result<Vec<u8>, String> {
    match payload {
        Payload::Stored { hash } => ledger.store().get(hash).map_err(|e| e.to_string()),
        Payload::Bytes(b) => Ok(b.clone()),
    }
}

/// Whether `name` is one of the ledger's own temporary files (`.ledger-tmp-PID-N`):
/// one a revert killed mid-way left behind. Scans pass over them (they are not the
/// user's work and are never recorded); `ledger status` lists them.
pub fn is_ledger_tmp(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX.as_bytes()) else {
        return false;
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match rest.iter().position(|&b| b == b'-') {
        Some(i) => digits(&rest[..i]) && digits(&rest[i + 1..]),
        None => false,
    }
}

/// A file written under a temporary name next to its target.
struct Staged {
    dir: Arc<OwnedFd>,
    tmp: Vec<u8>,
}

/// Prefix of the temporary files a revert stages beside their targets.
const TMP_PREFIX: &str = ".ledger-tmp-";

fn tmp_name() -> Vec<u8> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TMP_PREFIX}{}-{n}", std::process::id()).into_bytes()
}

/// Writes `payload` as `mode` to a temporary name in `dir`.
fn stage(
    ledger: &Ledger,
    dir: Arc<OwnedFd>,
    key: &ResourceKey,
    payload: &Payload,
    mode: Mode,
    sync: bool,
) -> CliResult<Staged> {
    if mode == Mode::Symlink {
        let tmp = tmp_name();
        let target = symlink_target(ledger, payload).map_err(|e| err(key, e))?;
        rfs::symlinkat(target.as_slice(), &dir, tmp.as_slice())
            .map_err(|e| err(key, format!("cannot create a symlink: {e}")))?;
        return Ok(Staged { dir, tmp });
    }
    stage_with(dir, key, mode, sync, &mut |f| {
        write_payload(ledger, payload, f)
    })
}

/// Writes a regular file of `mode` to a temporary name in `dir`, its bytes from `fill`.
fn stage_with(
    dir: Arc<OwnedFd>,
    key: &ResourceKey,
    mode: Mode,
    sync: bool,
    fill: &mut dyn FnMut(&mut File) -> Result<(), String>,
) -> CliResult<Staged> {
    let tmp = tmp_name();
    let perm = if mode == Mode::Executable {
        0o755
    } else {
        0o644
    };
    let fd = rfs::openat(
        &dir,
        tmp.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rfs::Mode::from_raw_mode(perm),
    )
    .map_err(|e| err(key, format!("cannot write in its directory: {e}")))?;
    let mut f = File::from(fd);
    let res = fill(&mut f)
        .and_then(|_| {
            rfs::fchmod(f.as_fd(), rfs::Mode::from_raw_mode(perm)).map_err(|e| e.to_string())
        })
        .and_then(|_| {
            if sync {
                f.sync_all().map_err(|e| e.to_string())
            } else {
                Ok(())
            }
        });
    if let Err(e) = res {
        let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
        return Err(err(key, format!("cannot write: {e}")));
    }
    Ok(Staged { dir, tmp })
}

/// Whether the file at `key` has other hard links: changing its mode in place would
/// change it under every name of the inode, perhaps outside the workspace.
fn hard_linked(dir: &OwnedFd, key: &ResourceKey) -> CliResult<bool> {
    let name = file_name(key)?;
    let st =
        rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| err(key, e))?;
    Ok(rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile && st.st_nlink > 1)
}

/// A copy of the file at `key` with `mode`, staged under a temporary name (for a mode
/// change of a hard-linked file: the rename replaces only the workspace's name).
fn stage_copy(dir: Arc<OwnedFd>, key: &ResourceKey, mode: Mode, sync: bool) -> CliResult<Staged> {
    let name = file_name(key)?;
    let src = rfs::openat(
        &dir,
        name.as_slice(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rfs::Mode::empty(),
    )
    .map_err(|e| err(key, e))?;
    let mut src = File::from(src);
    stage_with(dir, key, mode, sync, &mut |f| {
        std::io::copy(&mut src, f)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

fn check_writable(dir: &OwnedFd, key: &ResourceKey) -> CliResult {
    // Root ignores permission bits, so check them: a read-only file or directory is
    // the user's way of saying "do not touch".
    let name = file_name(key)?;
    if let Ok(st) = rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
        if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile
            && st.st_mode & 0o200 == 0
        {
            return Err(err(
                key,
                "the file is read-only; make it writable (chmod u+w) to let the revert replace it",
            ));
        }
    }
    let st = rfs::fstat(dir).map_err(|e| err(key, e))?;
    if st.st_mode & 0o200 == 0 {
        return Err(err(
            key,
            "its directory is read-only; make it writable to let the revert change it",
        ));
    }
    Ok(())
}

/// Applies revert actions all or nothing: re-checks every file against its `before`,
/// stages every write, then renames/deletes in order. On a failure after the first
/// rename, what was already changed is put back from the content store.
pub fn apply_actions(
    ledger: &Ledger,
    root: &Root,
    actions: &[RevertAction],
    sync: SyncSetting,
) -> CliResult<Releasing> {
    // 1. Re-check: the workspace must still be what the plan was made from. The
    // directory handles opened here are the ones the files are then staged in.
    let mut dirs = DirCache::default();
    for a in actions {
        let now = root.look(&a.key, &mut dirs)?;
        let expected = match a.before {
            None => Found::Absent,
            Some(c) => Found::File(c),
        };
        // A file coming back where the recorded tree has a directory: the planner made
        // sure the plan's deletes empty it of recorded files (they run first).
        let emptied_dir = a.before.is_none() && now == Found::Directory;
        if now != expected && !emptied_dir {
            return Err(err(
                &a.key,
                format!(
                    "changed since the revert was planned (now {}); nothing was written",
                    describe(&now)
                ),
            )
            .with_hint("run `ledger status`, record or undo that change, then retry"));
        }
    }
    // 2. Check permissions and find (or make) every directory, in order; then stage
    // every write (a temporary file written) on several threads at once, and make the
    // staged files durable: one `syncfs`, or each file synced on its staging thread so
    // the device flushes overlap. Nothing visible changes yet.
    enum Job<'a> {
        Write(&'a Payload, Mode),
        Copy(Mode),
    }
    let mut made_dirs = Vec::new();
    let mut jobs: Vec<(usize, Arc<OwnedFd>, Job)> = Vec::new();
    let remove_made = |made: &[Vec<u8>]| {
        for d in made.iter().rev() {
            let _ = rfs::unlinkat(&root.fd, d.as_slice(), AtFlags::REMOVEDIR);
        }
    };
    for (i, a) in actions.iter().enumerate() {
        let res = (|| -> CliResult<Option<(Arc<OwnedFd>, Job)>> {
            match &a.kind {
                ActionKind::Write { payload, mode } => {
                    let dir = root
                        .parent_cached(&a.key, true, &mut made_dirs, &mut dirs)?
                        .expect("created");
                    check_writable(&dir, &a.key)?;
                    Ok(Some((dir, Job::Write(payload, *mode))))
                }
                ActionKind::SetMode { mode } => {
                    let dir = root
                        .parent_cached(&a.key, false, &mut made_dirs, &mut dirs)?
                        .ok_or_else(|| err(&a.key, "its directory disappeared"))?;
                    check_writable(&dir, &a.key)?;
                    Ok(hard_linked(&dir, &a.key)?.then_some((dir, Job::Copy(*mode))))
                }
                ActionKind::Delete => {
                    let dir = root
                        .parent_cached(&a.key, false, &mut made_dirs, &mut dirs)?
                        .ok_or_else(|| err(&a.key, "its directory disappeared"))?;
                    check_writable(&dir, &a.key)?;
                    Ok(None)
                }
            }
        })();
        match res {
            Ok(Some((dir, job))) => jobs.push((i, dir, job)),
            Ok(None) => {}
            Err(e) => {
                remove_made(&made_dirs);
                return Err(e);
            }
        }
    }
    drop(dirs);
    // Staged files are made durable together, one `syncfs` per file system they are
    // on, when that is safe and little else is waiting to be written (see
    // [`sync_together`]), else by one `fsync` each on the staging threads.
    let devices = jobs
        .iter()
        .map(|(i, dir, _)| identity(dir, &actions[*i].key).map(|(dev, _)| (dev, dir.clone())))
        .collect::<CliResult<BTreeMap<u64, Arc<OwnedFd>>>>();
    let devices = match devices {
        Ok(d) => d,
        Err(e) => {
            remove_made(&made_dirs);
            return Err(e);
        }
    };
    let together = sync_together(
        sync,
        jobs.len(),
        || devices.values().all(|d| syncfs_is_enough(d)),
        dirty_bytes,
    );
    let mut staged: Vec<Option<Staged>> = actions.iter().map(|_| None).collect();
    let results = run_parallel(jobs, |(i, dir, job)| {
        let key = &actions[i].key;
        let st = match job {
            Job::Write(payload, mode) => stage(ledger, dir, key, payload, mode, !together),
            Job::Copy(mode) => stage_copy(dir, key, mode, !together),
        };
        st.map(|st| (i, st))
    });
    let mut failed = None;
    for r in results {
        match r {
            Ok((i, st)) => staged[i] = Some(st),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let cleanup = |staged: &mut Vec<Option<Staged>>, made: &[Vec<u8>]| {
        for s in staged.iter().flatten() {
            let _ = rfs::unlinkat(&*s.dir, s.tmp.as_slice(), AtFlags::empty());
        }
        remove_made(made);
    };
    if together && failed.is_none() {
        for fd in devices.values() {
            if let Err(e) = rfs::syncfs(&**fd) {
                failed = Some(CliError::new(
                    EXIT_ERROR,
                    format!("cannot sync the workspace's file system: {e}; nothing was written"),
                ));
                break;
            }
        }
    }
    // The directories the files were staged in must still be where their paths lead
    // (a directory moved away and replaced since the re-check would take the renames
    // with it): each is looked up afresh once and compared.
    if failed.is_none() {
        failed = moved_directory(root, actions, &staged).err();
    }
    if let Some(e) = failed {
        cleanup(&mut staged, &made_dirs);
        return Err(e);
    }
    // 3. Make it visible, one atomic step per file. What each step changed (directory
    // entries, a mode) is synced after the last step, all together.
    let mut done: Vec<&RevertAction> = Vec::new();
    let mut touched: BTreeMap<(u64, u64), (ResourceKey, Arc<OwnedFd>)> = BTreeMap::new();
    let mut note_dir = |key: &ResourceKey, fd: &Arc<OwnedFd>| -> CliResult {
        touched
            .entry(identity(fd, key)?)
            .or_insert_with(|| (key.clone(), fd.clone()));
        Ok(())
    };
    // The inodes a rename or delete lets go of are held open and let go of together
    // after the last step ([`Releasing`]), not one by one between the steps.
    let mut released: Vec<OwnedFd> = Vec::new();
    let mut hold = |dir: &OwnedFd, name: &[u8]| {
        if let Ok(fd) = rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            rfs::Mode::empty(),
        ) {
            released.push(fd);
        }
    };
    let mut failed = None;
    for (a, s) in actions.iter().zip(staged.iter_mut()) {
        let res = (|| -> CliResult {
            // Opened afresh for the steps that act on the directory itself (a write
            // is renamed in the directory it was staged in).
            let dir = || {
                root.parent(&a.key, false, &mut Vec::new())?
                    .ok_or_else(|| err(&a.key, "its directory disappeared"))
            };
            let name = file_name(&a.key)?;
            match &a.kind {
                // A hard-linked file's mode change: its copy replaces this name.
                ActionKind::Write { .. } | ActionKind::SetMode { .. } if s.is_some() => {
                    let st = s.take().expect("checked above");
                    hold(&st.dir, &name);
                    if let Err(e) =
                        rfs::renameat(&*st.dir, st.tmp.as_slice(), &*st.dir, name.as_slice())
                    {
                        let _ = rfs::unlinkat(&*st.dir, st.tmp.as_slice(), AtFlags::empty());
                        return Err(err(&a.key, format!("cannot replace: {e}")));
                    }
                    note_dir(&a.key, &st.dir)?;
                }
                ActionKind::Write { .. } => return Err(err(&a.key, "its write was not staged")),
                ActionKind::SetMode { mode } => {
                    let fd = rfs::openat(
                        dir()?,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        rfs::Mode::empty(),
                    )
                    .map_err(|e| err(&a.key, e))?;
                    let perm = if *mode == Mode::Executable {
                        0o755
                    } else {
                        0o644
                    };
                    rfs::fchmod(&fd, rfs::Mode::from_raw_mode(perm)).map_err(|e| err(&a.key, e))?;
                    // The inode's mode is synced with the directories below.
                    note_dir(&a.key, &Arc::new(fd))?;
                }
                ActionKind::Delete => {
                    let dir = dir()?;
                    hold(&dir, &name);
                    rfs::unlinkat(&dir, name.as_slice(), AtFlags::empty())
                        .map_err(|e| err(&a.key, format!("cannot delete: {e}")))?;
                    note_dir(&a.key, &Arc::new(dir))?;
                    remove_empty_parents(root, &a.key);
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            failed = Some(e);
            break;
        }
        done.push(a);
    }
    // The replaced and deleted inodes are let go of from here on, beside the syncs.
    let releasing = Releasing::start(released);
    // 4. One concurrent round: sync every directory (and mode change) touched, each on
    // its own thread.
    let mut tasks: Vec<(ResourceKey, Arc<OwnedFd>)> = Vec::new();
    if failed.is_none() {
        tasks.extend(touched.into_values());
    }
    let synced = first_error(run_parallel(tasks, |(key, fd)| {
        rfs::fsync(&*fd).map_err(|e| err(&key, format!("cannot sync: {e}")))
    }));
    if let (None, Err(e)) = (&failed, synced) {
        failed = Some(e);
    }
    if let Some(e) = failed {
        cleanup(&mut staged, &[]);
        let restored = undo(ledger, root, &done);
        return Err(CliError::new(
            e.code,
            format!("{}; {}", e.message, match restored {
                Ok(()) => "the files already changed were put back; nothing was recorded".to_string(),
                Err(u) => format!("putting back the files already changed also failed ({u}); check them with `ledger status`"),
            }),
        ));
    }
    Ok(releasing)
}

/// The inodes an applied revert replaced or deleted, being let go of on threads of
/// their own (freeing one truncates it and can wait for the device: ext4 without a
/// journal, mounted with `discard`, trims its blocks synchronously, one inode after
/// another on one thread). Dropping this waits for those threads: the process exit
/// would wait for the inodes anyway, and this way the wait overlaps the syncs and the
/// recording of the revert.
pub struct Releasing(Vec<std::thread::JoinHandle<()>>);

impl Releasing {
    /// Lets go of `held` on up to [`sync_threads`] threads, a share each, so that the
    /// device's trims overlap. A thread that cannot start lets go of its share in place.
    fn start<T: Send + 'static>(mut held: Vec<T>) -> Releasing {
        let threads = sync_threads().min(held.len());
        let mut handles = Vec::with_capacity(threads);
        for t in (0..threads).rev() {
            let share = held.split_off(held.len() * t / (t + 1));
            if let Ok(h) = std::thread::Builder::new().spawn(move || drop(share)) {
                handles.push(h);
            }
        }
        Releasing(handles)
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        for t in self.0.drain(..) {
            let _ = t.join();
        }
    }
}

/// Dirty page cache (bytes) per staged file up to which the staged files are made
/// durable by one `syncfs` of the workspace's filesystem instead of one `fsync` each.
/// `syncfs` writes back everything dirty on that filesystem, so its cost grows with
/// what else is waiting (about 1 ms per MiB on the disk measured, 0.1 ms with nothing
/// else dirty); each `fsync` it saves cost 0.2 to 1.3 ms there (ext4 without a journal
/// writes the file's inode block and its directory's blocks and flushes, for every
/// file). 64 KiB a file stays on the side of the `fsync`s.
const SYNCFS_DIRTY_PER_FILE: u64 = 64 << 10;

/// The variable that says how a revert makes its staged files durable.
const SYNC_VAR: &str = "LEDGER_REVERT_SYNC";

/// How a revert makes its staged files durable (`LEDGER_REVERT_SYNC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSetting {
    /// One `syncfs` per file system when that is safe and cheap ([`sync_together`]),
    /// else one `fsync` per file (the default: unset or empty).
    Auto,
    /// One `fsync` per file (`files`).
    Files,
    /// One `syncfs` per file system (`filesystem`), whatever else is dirty.
    Filesystem,
}

impl SyncSetting {
    /// The setting `LEDGER_REVERT_SYNC` gives; another value is refused (exit 2).
    pub fn from_env() -> CliResult<SyncSetting> {
        Self::parse(std::env::var_os(SYNC_VAR).as_deref())
    }

    fn parse(value: Option<&std::ffi::OsStr>) -> CliResult<SyncSetting> {
        match value.map(|s| s.to_str()) {
            None | Some(Some("auto")) | Some(Some("")) => Ok(SyncSetting::Auto),
            Some(Some("files")) => Ok(SyncSetting::Files),
            Some(Some("filesystem")) => Ok(SyncSetting::Filesystem),
            Some(other) => Err(CliError::new(
                crate::output::EXIT_USAGE,
                format!(
                    "{SYNC_VAR}={} is not one of auto, files, filesystem; nothing was written",
                    other.unwrap_or("(not UTF-8)")
                ),
            )),
        }
    }
}

/// Whether `files` staged files are synced together: as `setting` says, and with
/// [`SyncSetting::Auto`] only for two or more files, when `syncfs` is enough on every
/// file system they are on (`fs_ok`, see [`syncfs_is_enough`]) and the dirty figure is
/// known and within [`SYNCFS_DIRTY_PER_FILE`] times `files`.
fn sync_together(
    setting: SyncSetting,
    files: usize,
    fs_ok: impl FnOnce() -> bool,
    dirty: impl FnOnce() -> Option<u64>,
) -> bool {
    match setting {
        SyncSetting::Files => false,
        SyncSetting::Filesystem => true,
        SyncSetting::Auto => {
            let bound = SYNCFS_DIRTY_PER_FILE.saturating_mul(files as u64);
            files > 1 && fs_ok() && dirty().is_some_and(|d| d <= bound)
        }
    }
}

/// Whether one `syncfs` makes the files written on `dir`'s file system as durable as an
/// `fsync` of each, and fails when one of their writes failed: on a local file system
/// ([`crate::walk::local_file_system`]; over FUSE or SMB `syncfs` need not reach stable
/// storage) under Linux 5.8 or later (before it, `syncfs` did not report writeback
/// errors).
fn syncfs_is_enough(dir: &OwnedFd) -> bool {
    crate::walk::local_file_system(dir) && linux_at_least(5, 8)
}

/// Whether the running kernel's release (`/proc/sys/kernel/osrelease`) is at least
/// `major.minor`; `false` when it cannot be read.
fn linux_at_least(major: u32, minor: u32) -> bool {
    static RELEASE: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    RELEASE
        .get_or_init(|| parse_release(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?))
        .is_some_and(|r| r >= (major, minor))
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v657`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// An error naming the first staged file whose directory is no longer the one its path
/// leads to (each distinct directory is looked up once).
fn moved_directory(root: &Root, actions: &[RevertAction], staged: &[Option<Staged>]) -> CliResult {
    let mut checked = std::collections::BTreeSet::new();
    for (a, s) in actions.iter().zip(staged) {
        let Some(s) = s else { continue };
        let id = identity(&s.dir, &a.key)?;
        if !checked.insert(id) {
            continue;
        }
        let now = root.parent(&a.key, false, &mut Vec::new())?;
        if now.map(|fd| identity(&fd, &a.key)).transpose()? != Some(id) {
            return Err(err(
                &a.key,
                "its directory was moved or replaced during the revert; nothing was written",
            ));
        }
    }
    Ok(())
}

/// Device and inode of what `fd` is open on (errors name `key`).
fn identity(fd: &OwnedFd, key: &ResourceKey) -> CliResult<(u64, u64)> {
    let st = rfs::fstat(fd).map_err(|e| err(key, e))?;
    Ok((st.st_dev, st.st_ino))
}

/// Bytes of page cache waiting to be written back, system-wide: `Dirty` plus
/// `Writeback` of `/proc/meminfo` (`None` where it cannot be read).
fn dirty_bytes() -> Option<u64> {
    parse_dirty(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_dirty(meminfo: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut seen = 0;
    for line in meminfo.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name == "Dirty" || name == "Writeback" {
            let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
            total = total.checked_add(kib.checked_mul(1024)?)?;
            seen += 1;
        }
    }
    (seen == 2).then_some(total)
}

/// Threads syncing at once: two per core, at least 4 and at most 16. Enough for the
/// device's flushes to overlap; more only compete for the cores (each thread also
/// writes and hashes its files): on 2 cores, a 20-file revert took 10.3 ms at the
/// median with 4 threads, 10.6 ms with 8 and 11.0 ms with 16 (41 runs each,
/// interleaved).
fn sync_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (2 * cores).clamp(4, 16)
    })
}

/// Runs `f` on every item, on up to [`sync_threads`] threads; returns every result, in
/// item order, after every item was tried.
fn run_parallel<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> CliResult<R> + Sync,
) -> Vec<CliResult<R>> {
    if items.len() <= 1 {
        return items.into_iter().map(&f).collect();
    }
    let threads = sync_threads().min(items.len());
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results: std::sync::Mutex<BTreeMap<usize, CliResult<R>>> = Default::default();
    let work = || loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
        let Some((i, item)) = next else { break };
        let r = f(item);
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(i, r);
    };
    std::thread::scope(|s| {
        // One thread starts the others, so this one gets to work at once instead of
        // after starting them all (a thread start is tens of microseconds). A thread
        // that cannot start leaves its share to the others.
        let _ = std::thread::Builder::new().spawn_scoped(s, || {
            for _ in 2..threads {
                let _ = std::thread::Builder::new().spawn_scoped(s, work);
            }
            work();
        });
        work();
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.into_values().collect()
}

/// The first error of `results` (in item order), if any.
fn first_error(results: Vec<CliResult>) -> CliResult {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

fn undo(ledger: &Ledger, root: &Root, done: &[&RevertAction]) -> Result<(), String> {
    for a in done.iter().rev() {
        match a.before {
            None => {
                if let Ok(Some(dir)) = root.parent(&a.key, false, &mut Vec::new()) {
                    let name = file_name(&a.key).map_err(|e| e.message)?;
                    rfs::unlinkat(&dir, name.as_slice(), AtFlags::empty())
                        .map_err(|e| e.to_string())?;
                }
            }
            Some(c) => {
                let dir = root
                    .parent(&a.key, true, &mut Vec::new())
                    .map_err(|e| e.message)?
                    .ok_or("no directory")?;
                let st = stage(
                    ledger,
                    Arc::new(dir),
                    &a.key,
                    &Payload::Stored { hash: c.hash },
                    c.mode,
                    true,
                )
                .map_err(|e| e.message)?;
                let name = file_name(&a.key).map_err(|e| e.message)?;
                rfs::renameat(&*st.dir, st.tmp.as_slice(), &*st.dir, name.as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Removes directories left empty by a delete, as git does.
fn remove_empty_parents(root: &Root, key: &ResourceKey) {
    let name = key.name.as_bytes();
    let mut end = name.len();
    while let Some(slash) = name[..end].iter().rposition(|b| *b == b'/') {
        if rfs::unlinkat(&root.fd, &name[..slash], AtFlags::REMOVEDIR).is_err() {
            break;
        }
        end = slash;
    }
}

fn describe(f: &Found) -> String {
    match f {
        Found::Absent => "absent".into(),
        Found::File(c) => format!("{} {}", c.mode.as_str(), &c.hash.to_hex()[..12]),
        Found::Directory => "a directory".into(),
        Found::Other(what) => (*what).to_string(),
    }
}

/// Writes one recorded file into a fresh tree (replay): created under its own name with
/// `O_CREAT | O_EXCL | O_NOFOLLOW` (the tree is new, so there is nothing to replace, and
/// anything found at the name is refused), its directories opened once per run of files
/// in `dirs` (call in tree order).
pub fn write_new(
    ledger: &Ledger,
    root: &Root,
    dirs: &mut DirCache,
    key: &ResourceKey,
    content: &Content,
) -> CliResult {
    let dir = root
        .parent_cached(key, true, &mut Vec::new(), dirs)?
        .expect("created");
    let name = file_name(key)?;
    let payload = Payload::Stored { hash: content.hash };
    if content.mode == Mode::Symlink {
        let target = symlink_target(ledger, &payload).map_err(|e| err(key, e))?;
        return rfs::symlinkat(target.as_slice(), &*dir, name.as_slice())
            .map_err(|e| err(key, format!("cannot create a symlink: {e}")));
    }
    let perm = if content.mode == Mode::Executable {
        0o755
    } else {
        0o644
    };
    let fd = rfs::openat(
        &*dir,
        name.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rfs::Mode::from_raw_mode(perm),
    )
    .map_err(|e| err(key, format!("cannot create: {e}")))?;
    let mut f = File::from(fd);
    write_payload(ledger, &payload, &mut f)
        .and_then(|_| {
            // The umask may have narrowed the mode given to `openat`.
            rfs::fchmod(f.as_fd(), rfs::Mode::from_raw_mode(perm)).map_err(|e| e.to_string())
        })
        .map_err(|e| err(key, format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every held item is let go of, once, by the time `Releasing` is dropped, however
    /// the items split into shares.
    #[test]
    fn releasing_lets_go_of_everything_before_it_is_dropped() {
        use std::sync::atomic::AtomicUsize;
        struct Held(Arc<AtomicUsize>);
        impl Drop for Held {
            fn drop(&mut self) {
                // Slow enough that a share still held at the join would be noticed.
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        for n in [0, 1, 2, 3, 5, 20, 41] {
            let dropped = Arc::new(AtomicUsize::new(0));
            let held: Vec<Held> = (0..n).map(|_| Held(dropped.clone())).collect();
            let releasing = Releasing::start(held);
            assert!(releasing.0.len() <= sync_threads());
            drop(releasing);
            assert_eq!(dropped.load(Ordering::SeqCst), n, "{n} items");
        }
    }

    /// The dirty figure is `Dirty` plus `Writeback`, and only a known figure within the
    /// bound lets the staged files be synced together.
    #[test]
    fn staged_files_sync_together_only_when_little_is_dirty() {
        let meminfo = "MemTotal:       24684092 kB\nDirty:              1200 kB\nWriteback:            24 kB\nWritebackTmp:          0 kB\n";
        assert_eq!(parse_dirty(meminfo), Some(1224 * 1024));
        assert_eq!(
            parse_dirty("MemTotal: 1 kB\nDirty: 5 kB\n"),
            None,
            "no Writeback line"
        );
        assert_eq!(
            parse_dirty("Dirty: x kB\nWriteback: 0 kB\n"),
            None,
            "not a number"
        );
        use SyncSetting::*;
        let auto = |files: usize, fs_ok: bool, dirty: Option<u64>| {
            sync_together(Auto, files, || fs_ok, || dirty)
        };
        let bound = 20 * SYNCFS_DIRTY_PER_FILE;
        assert!(auto(20, true, Some(0)));
        assert!(auto(20, true, Some(bound)));
        assert!(!auto(20, true, Some(bound + 1)));
        assert!(!auto(19, true, Some(bound)));
        assert!(!auto(20, true, None));
        assert!(
            !auto(20, false, Some(0)),
            "a file system syncfs is not enough on"
        );
        assert!(!auto(1, true, Some(0)), "one file: its own fsync");
        assert!(!sync_together(Files, 20, || true, || Some(0)));
        assert!(sync_together(Filesystem, 20, || false, || None));
        let parse = |v: Option<&str>| SyncSetting::parse(v.map(std::ffi::OsStr::new));
        assert_eq!(parse(None).unwrap(), Auto);
        assert_eq!(parse(Some("")).unwrap(), Auto);
        assert_eq!(parse(Some("auto")).unwrap(), Auto);
        assert_eq!(parse(Some("files")).unwrap(), Files);
        assert_eq!(parse(Some("filesystem")).unwrap(), Filesystem);
        let e = parse(Some("always")).unwrap_err();
        assert_eq!(e.code, crate::output::EXIT_USAGE);
        assert!(
            e.message.contains("LEDGER_REVERT_SYNC=always"),
            "{}",
            e.message
        );
        assert_eq!(parse_release("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_release("5.8.0"), Some((5, 8)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 8) <= (6, 0) && (4, 19) < (5, 8), "compared as numbers");
        assert!(
            dirty_bytes().is_some(),
            "/proc/meminfo should be readable here"
        );
    }

    /// A staged file's directory moved away and replaced by another one at its path
    /// is noticed before anything is renamed; one still in place is not.
    #[test]
    fn a_staging_directory_moved_away_is_noticed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        let root = Root::open(d.path()).unwrap();
        let action = |path: &str| RevertAction {
            key: ResourceKey::file(path.as_bytes()),
            kind: ActionKind::Delete,
            before: None,
            after: None,
            merged_with: Vec::new(),
        };
        let actions = [action("a/b/x"), action("a/b/y"), action("top")];
        let staged_in = |path: &str| {
            let key = ResourceKey::file(path.as_bytes());
            let dir = root.parent(&key, false, &mut Vec::new()).unwrap().unwrap();
            Some(Staged {
                dir: Arc::new(dir),
                tmp: b"t".to_vec(),
            })
        };
        let staged = [staged_in("a/b/x"), staged_in("a/b/y"), staged_in("top")];
        moved_directory(&root, &actions, &staged).unwrap();
        std::fs::rename(d.path().join("a/b"), d.path().join("elsewhere")).unwrap();
        std::fs::create_dir(d.path().join("a/b")).unwrap();
        let e = moved_directory(&root, &actions, &staged).unwrap_err();
        assert!(
            e.message.starts_with("a/b/x: its directory was moved"),
            "{}",
            e.message
        );
        std::fs::remove_dir(d.path().join("a/b")).unwrap();
        let e = moved_directory(&root, &actions, &staged).unwrap_err();
        assert!(
            e.message.contains("moved or replaced"),
            "gone: {}",
            e.message
        );
    }

    /// The names a revert stages under are exactly the ones scans pass over.
    #[test]
    fn staged_names_and_only_they_are_ledger_temporary_files() {
        for _ in 0..3 {
            let name = tmp_name();
            assert!(is_ledger_tmp(&name), "{}", String::from_utf8_lossy(&name));
        }
        for name in [&b".ledger-tmp-1-2"[..], b".ledger-tmp-4242-0"] {
            assert!(is_ledger_tmp(name));
        }
        for name in [
            &b".ledger-tmp-"[..],
            b".ledger-tmp-1",
            b".ledger-tmp-1-",
            b".ledger-tmp--2",
            b".ledger-tmp-a-2",
            b".ledger-tmp-1-2-3",
            b".ledger-tmp-1-2.txt",
            b"ledger-tmp-1-2",
            b"x.ledger-tmp-1-2",
        ] {
            assert!(!is_ledger_tmp(name), "{}", String::from_utf8_lossy(name));
        }
    }
}
