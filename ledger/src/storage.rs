//! Byte-level storage of journal segments, behind a narrow trait.
//!
//! [`FsStorage`] is the real one (files under `.ledger/journal/`, fsync). [`MemStorage`]
//! keeps a *written* and a *durable* image of every segment so tests can simulate power
//! loss (drop, tear or reorder what was not synced) and inject I/O errors.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What changes when a segment file is touched by anything, used to notice edits made
/// behind the ledger's back without reading the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentStamp {
    pub len: u64,
    pub mtime_ns: i64,
    pub ino: u64,
}

/// Segments are named by the seq of their first record.
pub trait Storage: Send + Sync {
    /// Where this storage lives, for messages.
    fn describe(&self, segment: u64) -> String;
    /// Existing segments, ascending.
    fn segments(&self) -> io::Result<Vec<u64>>;
    fn len(&self, segment: u64) -> io::Result<u64>;
    fn stamp(&self, segment: u64) -> io::Result<SegmentStamp>;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Appends the segment's bytes from `offset` on to `buf`, at most `limit` of them
    /// and none past the length the segment has now; returns how many.
    fn read_into(
        &self,
        segment: u64,
        offset: u64,
        limit: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let n = self.len(segment)?.saturating_sub(offset).min(limit) as usize;
        let start = buf.len();
        buf.resize(start + n, 0);
        let n = self.read_at(segment, offset, &mut buf[start..])?;
        buf.truncate(start + n);
        Ok(n)
    }
    /// Creates an empty segment and makes its existence durable.
    fn create(&mut self, segment: u64) -> io::Result<()>;
    /// Appends bytes at the end of the segment; not durable until [`Storage::sync`].
    fn append(&mut self, segment: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (fdatasync).
    fn sync(&mut self, segment: u64) -> io::Result<()>;
    /// Cuts the segment to `len` bytes, durably.
    fn truncate(&mut self, segment: u64, len: u64) -> io::Result<()>;
    /// Removes an (empty) segment durably.
    fn remove(&mut self, segment: u64) -> io::Result<()>;
}

/// Segment files `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit first seq) in one directory.
pub struct FsStorage {
    dir: PathBuf,
    open: BTreeMap<u64, File>,
}

impl FsStorage {
    pub fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(FsStorage {
            dir: dir.to_path_buf(),
            open: BTreeMap::new(),
        })
    }

    pub fn path(&self, segment: u64) -> PathBuf {
        self.dir.join(format!("{segment:020}.seg"))
    }

    fn file(&mut self, segment: u64) -> io::Result<&mut File> {
        if !self.open.contains_key(&segment) {
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .custom_flags(O_NOFOLLOW)
                .open(self.path(segment))
                .map_err(not_a_link)?;
            self.open.insert(segment, f);
        }
        Ok(self.open.get_mut(&segment).expect("inserted above"))
    }

    /// The segment opened for reading, never through a symlink.
    fn open_read(&self, segment: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(self.path(segment))
            .map_err(not_a_link)
    }

    /// The segment's metadata; anything but a regular file (a symlink planted in the
    /// journal directory, a directory) is refused, never followed.
    fn meta(&self, segment: u64) -> io::Result<fs::Metadata> {
        let m = fs::symlink_metadata(self.path(segment))?;
        if !m.file_type().is_file() {
            return Err(not_regular());
        }
        Ok(m)
    }
}

fn not_regular() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "not a regular file (a symbolic link or a directory); the ledger never follows links in its journal",
    )
}

/// `O_NOFOLLOW`: files the ledger writes inside `.ledger/` are never opened through a
/// symlink, so a link planted there cannot redirect a write (or a cut) elsewhere.
pub(crate) const O_NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Names the refusal when an `O_NOFOLLOW` open met a symlink.
pub(crate) fn not_a_link(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        io::Error::new(
            e.kind(),
            "it is a symbolic link; the ledger never follows links inside .ledger/",
        )
    } else {
        e
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Asks the kernel to start reading the file at `path` into the page cache
/// (`posix_fadvise` `WILLNEED`: the read runs in the background), for a caller about to
/// read it. A hint only: a missing file or a failure is ignored.
pub fn prefetch(path: &Path) {
    if let Ok(f) = File::open(path) {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
    }
}

impl Storage for FsStorage {
    fn describe(&self, segment: u64) -> String {
        self.path(segment).display().to_string()
    }

    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(num) = name.strip_suffix(".seg") {
                if num.len() == 20 {
                    if let Ok(n) = num.parse() {
                        out.push(n);
                    }
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn len(&self, segment: u64) -> io::Result<u64> {
        Ok(self.meta(segment)?.len())
    }

    fn stamp(&self, segment: u64) -> io::Result<SegmentStamp> {
        let m = self.meta(segment)?;
        Ok(SegmentStamp {
            len: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ino: m.ino(),
        })
    }

    fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = |f: &File| -> io::Result<usize> {
            let mut done = 0;
            while done < buf.len() {
                let n = f.read_at(&mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            Ok(done)
        };
        match self.open.get(&segment) {
            Some(f) => read(f),
            None => read(&self.open_read(segment)?),
        }
    }

    /// Without clearing the memory first: `read_to_end` reads straight into `buf`'s
    /// spare capacity, which matters for segments of 16 MiB read one after another.
    fn read_into(
        &self,
        segment: u64,
        offset: u64,
        limit: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let f = self.open_read(segment)?;
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(not_regular());
        }
        let n = m.len().saturating_sub(offset).min(limit);
        buf.reserve_exact(n as usize);
        std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(offset))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(&f, n), buf)
    }

    fn create(&mut self, segment: u64) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.path(segment))?;
        f.sync_all()?;
        sync_dir(&self.dir)?;
        self.open.insert(segment, f);
        Ok(())
    }

    fn append(&mut self, segment: u64, bytes: &[u8]) -> io::Result<()> {
        self.file(segment)?.write_all(bytes)
    }

    fn sync(&mut self, segment: u64) -> io::Result<()> {
        self.file(segment)?.sync_data()
    }

    fn truncate(&mut self, segment: u64, len: u64) -> io::Result<()> {
        let f = self.file(segment)?;
        // Another name for the same bytes (a hard link planted in the journal, or a
        // backup made with `cp -al`) would be cut too: refuse instead.
        let links = f.metadata()?.nlink();
        if links > 1 {
            return Err(io::Error::other(format!(
                "the segment has {links} hard links; cutting it would change the file under its other names too"
            )));
        }
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&mut self, segment: u64) -> io::Result<()> {
        self.open.remove(&segment);
        fs::remove_file(self.path(segment))?;
        sync_dir(&self.dir)
    }
}

/// Reads a whole segment (used by verification and recovery).
pub(crate) fn read_segment(storage: &dyn Storage, segment: u64, from: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    storage.read_into(segment, from, u64::MAX, &mut buf)?;
    Ok(buf)
}

/// A fault to inject into [`MemStorage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The Nth append (counting from 0) fails; later ones succeed.
    AppendOnce(u64),
    /// Every append from the Nth on fails.
    AppendFrom(u64),
    /// The Nth sync fails; later ones succeed.
    SyncOnce(u64),
    /// Every sync from the Nth on fails.
    SyncFrom(u64),
    /// The Nth append writes only half its bytes, then fails (a short write).
    ShortAppend(u64),
}

#[derive(Default, Debug)]
struct MemState {
    written: BTreeMap<u64, Vec<u8>>,
    durable: BTreeMap<u64, Vec<u8>>,
    appends: u64,
    syncs: u64,
    faults: Vec<Fault>,
    /// Stop making syncs durable after this many (simulated power cut at that point).
    freeze_after_syncs: Option<u64>,
}

/// In-memory storage with separate written and durable images (after redb's crash
/// tests). Clones share the same state, so a test keeps a handle while the journal
/// owns another.
#[derive(Clone, Default, Debug)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from the given durable image (as after a reboot).
    pub fn from_image(image: BTreeMap<u64, Vec<u8>>) -> Self {
        let st = MemState {
            written: image.clone(),
            durable: image,
            ..Default::default()
        };
        MemStorage {
            state: Arc::new(Mutex::new(st)),
        }
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// After `n` more successful syncs, nothing more becomes durable.
    pub fn freeze_durability_after(&self, n: u64) {
        let mut st = self.state.lock().unwrap();
        st.freeze_after_syncs = Some(st.syncs + n);
    }

    pub fn durable_image(&self) -> BTreeMap<u64, Vec<u8>> {
        self.state.lock().unwrap().durable.clone()
    }

    pub fn written_image(&self) -> BTreeMap<u64, Vec<u8>> {
        self.state.lock().unwrap().written.clone()
    }

    /// The image a power cut could leave: the durable bytes, plus for each segment
    /// `keep` bytes of what was written after them, with `garbage` filling a hole of
    /// `hole` bytes at `hole_at` within that unsynced part (torn or reordered writes).
    pub fn crash_image(&self, keep: usize, hole_at: usize, hole: usize) -> BTreeMap<u64, Vec<u8>> {
        let st = self.state.lock().unwrap();
        let mut out = st.durable.clone();
        for (seg, written) in &st.written {
            let durable_len = st.durable.get(seg).map_or(0, Vec::len);
            let extra = &written[durable_len.min(written.len())..];
            let keep = keep.min(extra.len());
            let mut tail = extra[..keep].to_vec();
            let start = hole_at.min(tail.len());
            let end = (hole_at + hole).min(tail.len());
            for b in &mut tail[start..end] {
                *b = 0;
            }
            out.entry(*seg).or_default().extend_from_slice(&tail);
        }
        out
    }

    fn fault(st: &MemState, append: bool) -> Option<Fault> {
        let n = if append { st.appends } else { st.syncs };
        st.faults.iter().copied().find(|f| match (*f, append) {
            (Fault::AppendOnce(k), true) | (Fault::ShortAppend(k), true) => k == n,
            (Fault::AppendFrom(k), true) => n >= k,
            (Fault::SyncOnce(k), false) => k == n,
            (Fault::SyncFrom(k), false) => n >= k,
            _ => false,
        })
    }
}

impl Storage for MemStorage {
    fn describe(&self, segment: u64) -> String {
        format!("memory segment {segment}")
    }
    fn segments(&self) -> io::Result<Vec<u64>> {
        Ok(self.state.lock().unwrap().written.keys().copied().collect())
    }
    fn len(&self, segment: u64) -> io::Result<u64> {
        let st = self.state.lock().unwrap();
        st.written
            .get(&segment)
            .map(|v| v.len() as u64)
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn stamp(&self, segment: u64) -> io::Result<SegmentStamp> {
        Ok(SegmentStamp {
            len: self.len(segment)?,
            mtime_ns: 0,
            ino: segment,
        })
    }
    fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let st = self.state.lock().unwrap();
        let data = st.written.get(&segment).ok_or(io::ErrorKind::NotFound)?;
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
    fn create(&mut self, segment: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.written.contains_key(&segment) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        st.written.insert(segment, Vec::new());
        st.durable.insert(segment, Vec::new());
        Ok(())
    }
    fn append(&mut self, segment: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let fault = Self::fault(&st, true);
        st.appends += 1;
        match fault {
            Some(Fault::ShortAppend(_)) => {
                let half = &bytes[..bytes.len() / 2];
                st.written
                    .entry(segment)
                    .or_default()
                    .extend_from_slice(half);
                Err(injected("short write"))
            }
            Some(_) => Err(injected("write")),
            None => {
                st.written
                    .entry(segment)
                    .or_default()
                    .extend_from_slice(bytes);
                Ok(())
            }
        }
    }
    fn sync(&mut self, segment: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let fault = Self::fault(&st, false);
        st.syncs += 1;
        if fault.is_some() {
            return Err(injected("fsync"));
        }
        if st.freeze_after_syncs.is_some_and(|f| st.syncs > f) {
            return Ok(());
        }
        let data = st.written.get(&segment).cloned().unwrap_or_default();
        st.durable.insert(segment, data);
        Ok(())
    }
    fn truncate(&mut self, segment: u64, len: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        for image in [&mut st.written, &mut st.durable] {
            if let Some(v) = image.get_mut(&segment) {
                v.truncate(len as usize);
            }
        }
        Ok(())
    }
    fn remove(&mut self, segment: u64) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        st.written.remove(&segment);
        st.durable.remove(&segment);
        Ok(())
    }
}
