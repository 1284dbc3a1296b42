//! Writing planned file states beneath a root without ever leaving it.
//!
//! Every path is opened one component at a time from a handle on the root with
//! `O_NOFOLLOW`, so neither a `..` nor a symlinked directory nor a symlink planted at
//! the target can redirect a write. Each file is written to a temporary name in its own
//! directory, synced, and renamed over the target (atomic per file). Used by `revert`
//! (all or nothing: everything is staged and re-checked before the first rename) and by
//! `replay` (into a new directory).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

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
            let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rfs::openat(&cur, *comp, flags, rfs::Mode::empty()) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) if create => {
                    rfs::mkdirat(&cur, *comp, rfs::Mode::from_raw_mode(0o755)).map_err(|e| {
                        err(
                            key,
                            format!(
                                "cannot create directory {}: {e}",
                                String::from_utf8_lossy(&walked)
                            ),
                        )
                    })?;
                    made.push(walked.clone());
                    cur = rfs::openat(&cur, *comp, flags, rfs::Mode::empty())
                        .map_err(|e| err(key, e))?;
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                    return Err(err(
                        key,
                        format!(
                            "{} is a symlink or not a directory; refusing to write through it",
                            String::from_utf8_lossy(&walked)
                        ),
                    ))
                }
                Err(e) => {
                    return Err(err(
                        key,
                        format!("cannot open {}: {e}", String::from_utf8_lossy(&walked)),
                    ))
                }
            }
        }
        Ok(Some(cur))
    }

    /// What is at `key` now, hashed.
    pub fn look(&self, key: &ResourceKey) -> CliResult<Found> {
        let Some(dir) = self.parent(key, false, &mut Vec::new())? else {
            return Ok(Found::Absent);
        };
        look_in(&dir, key)
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
            let mut buf = vec![0u8; 128 * 1024];
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

/// A file written under a temporary name next to its target.
struct Staged {
    dir: OwnedFd,
    tmp: Vec<u8>,
}

fn tmp_name() -> Vec<u8> {
    format!(
        ".ledger-tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// Writes `payload` as `mode` to a temporary name in `dir`.
fn stage(
    ledger: &Ledger,
    dir: OwnedFd,
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
    dir: OwnedFd,
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
fn stage_copy(dir: OwnedFd, key: &ResourceKey, mode: Mode) -> CliResult<Staged> {
    let name = file_name(key)?;
    let src = rfs::openat(
        &dir,
        name.as_slice(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rfs::Mode::empty(),
    )
    .map_err(|e| err(key, e))?;
    let mut src = File::from(src);
    stage_with(dir, key, mode, true, &mut |f| {
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
pub fn apply_actions(ledger: &Ledger, root: &Root, actions: &[RevertAction]) -> CliResult {
    // 1. Re-check: the workspace must still be what the plan was made from.
    for a in actions {
        let now = root.look(&a.key)?;
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
    // 2. Stage every write and check permissions; nothing visible changes yet.
    let mut made_dirs = Vec::new();
    let mut staged: Vec<Option<Staged>> = Vec::new();
    let cleanup = |staged: &mut Vec<Option<Staged>>, made: &[Vec<u8>]| {
        for s in staged.iter().flatten() {
            let _ = rfs::unlinkat(&s.dir, s.tmp.as_slice(), AtFlags::empty());
        }
        for d in made.iter().rev() {
            let _ = rfs::unlinkat(&root.fd, d.as_slice(), AtFlags::REMOVEDIR);
        }
    };
    for a in actions {
        let res = (|| -> CliResult<Option<Staged>> {
            match &a.kind {
                ActionKind::Write { payload, mode } => {
                    let dir = root.parent(&a.key, true, &mut made_dirs)?.expect("created");
                    check_writable(&dir, &a.key)?;
                    Ok(Some(stage(ledger, dir, &a.key, payload, *mode, true)?))
                }
                ActionKind::SetMode { mode } => {
                    let dir = root
                        .parent(&a.key, false, &mut made_dirs)?
                        .ok_or_else(|| err(&a.key, "its directory disappeared"))?;
                    check_writable(&dir, &a.key)?;
                    if hard_linked(&dir, &a.key)? {
                        Ok(Some(stage_copy(dir, &a.key, *mode)?))
                    } else {
                        Ok(None)
                    }
                }
                ActionKind::Delete => {
                    let dir = root
                        .parent(&a.key, false, &mut made_dirs)?
                        .ok_or_else(|| err(&a.key, "its directory disappeared"))?;
                    check_writable(&dir, &a.key)?;
                    Ok(None)
                }
            }
        })();
        match res {
            Ok(s) => staged.push(s),
            Err(e) => {
                cleanup(&mut staged, &made_dirs);
                return Err(e);
            }
        }
    }
    // 3. Make it visible, one atomic step per file.
    let mut done: Vec<&RevertAction> = Vec::new();
    for (a, s) in actions.iter().zip(staged.iter_mut()) {
        let res = (|| -> CliResult {
            let dir = root
                .parent(&a.key, false, &mut Vec::new())?
                .ok_or_else(|| err(&a.key, "its directory disappeared"))?;
            let name = file_name(&a.key)?;
            match &a.kind {
                ActionKind::Write { .. } => {
                    let st = s.take().expect("staged above");
                    rfs::renameat(&st.dir, st.tmp.as_slice(), &st.dir, name.as_slice())
                        .map_err(|e| err(&a.key, format!("cannot replace: {e}")))?;
                    rfs::fsync(&st.dir).map_err(|e| err(&a.key, e))?;
                }
                ActionKind::SetMode { .. } if s.is_some() => {
                    // A hard-linked file: its copy with the new mode replaces this name.
                    let st = s.take().expect("checked above");
                    rfs::renameat(&st.dir, st.tmp.as_slice(), &st.dir, name.as_slice())
                        .map_err(|e| err(&a.key, format!("cannot replace: {e}")))?;
                    rfs::fsync(&st.dir).map_err(|e| err(&a.key, e))?;
                }
                ActionKind::SetMode { mode } => {
                    let fd = rfs::openat(
                        &dir,
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
                    rfs::fsync(&fd).map_err(|e| err(&a.key, e))?;
                }
                ActionKind::Delete => {
                    rfs::unlinkat(&dir, name.as_slice(), AtFlags::empty())
                        .map_err(|e| err(&a.key, format!("cannot delete: {e}")))?;
                    rfs::fsync(&dir).map_err(|e| err(&a.key, e))?;
                    remove_empty_parents(root, &a.key);
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
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
        done.push(a);
    }
    Ok(())
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
                    dir,
                    &a.key,
                    &Payload::Stored { hash: c.hash },
                    c.mode,
                    true,
                )
                .map_err(|e| e.message)?;
                let name = file_name(&a.key).map_err(|e| e.message)?;
                rfs::renameat(&st.dir, st.tmp.as_slice(), &st.dir, name.as_slice())
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

/// Writes one recorded file into a fresh tree (replay). The directory must be new.
pub fn write_new(ledger: &Ledger, root: &Root, key: &ResourceKey, content: &Content) -> CliResult {
    let dir = root.parent(key, true, &mut Vec::new())?.expect("created");
    let st = stage(
        ledger,
        dir,
        key,
        &Payload::Stored { hash: content.hash },
        content.mode,
        false,
    )?;
    let name = file_name(key)?;
    rfs::renameat(&st.dir, st.tmp.as_slice(), &st.dir, name.as_slice()).map_err(|e| err(key, e))?;
    Ok(())
}
