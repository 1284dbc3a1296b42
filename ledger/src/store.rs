//! The content store: blobs addressed by plain BLAKE3 of their bytes.
//!
//! Layout: `objects/ab/cdef…` (first two hex digits, then the other 62). Each object is
//! `"LOB1"`, one codec byte (0 raw, 1 LZ4 frame), then the encoded bytes. Writes go to
//! `objects/tmp/` first; [`ContentStore::commit`] makes the data durable, renames into
//! place and syncs the directories, so a name under `objects/` always holds whole data.
//! Reading re-hashes and refuses bytes that do not match their name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::storage::sync_dir;

const OBJECT_MAGIC: &[u8; 4] = b"LOB1";
const CODEC_RAW: u8 = 0;
const CODEC_LZ4: u8 = 1;
/// Objects smaller than this are stored raw: compression would not pay for its framing.
const COMPRESS_MIN: u64 = 256;
/// Above this many objects in one commit, one `syncfs` replaces per-file fsyncs.
const SYNCFS_THRESHOLD: usize = 32;

pub struct ContentStore {
    dir: PathBuf,
    tmp: PathBuf,
    compress: bool,
    counter: AtomicU64,
}

/// Blobs written to temporary files, not yet durable or visible.
#[derive(Default, Debug)]
pub struct Pending {
    items: Vec<(PathBuf, Hash)>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Takes over another set of pending blobs (from a parallel scan), dropping duplicates.
    pub fn merge(&mut self, other: Pending) {
        for (tmp, hash) in other.items {
            if self.items.iter().any(|(_, h)| *h == hash) {
                let _ = fs::remove_file(tmp);
            } else {
                self.items.push((tmp, hash));
            }
        }
    }
}

impl ContentStore {
    pub fn open(dir: &Path) -> Result<Self> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        Ok(ContentStore {
            dir: dir.to_path_buf(),
            tmp,
            compress: true,
            counter: AtomicU64::new(0),
        })
    }

    /// Whether new objects are LZ4-compressed (on by default).
    pub fn set_compression(&mut self, on: bool) {
        self.compress = on;
    }

    pub fn path_of(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.path_of(hash).exists()
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", std::process::id()))
    }

    /// Stores `bytes` (to a temp file; visible after [`commit`](Self::commit)).
    pub fn put_bytes(&self, bytes: &[u8], pending: &mut Pending) -> Result<Hash> {
        self.put_reader(bytes, pending).map(|(h, _)| h)
    }

    /// Streams a file into the store, hashing as it goes; memory stays bounded.
    pub fn put_file(&self, path: &Path, pending: &mut Pending) -> Result<(Hash, u64)> {
        let f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
        self.put_reader(f, pending).map_err(|e| match e {
            Error::Io {
                what: "reading input",
                source,
                ..
            } => Error::io("reading", path, source),
            other => other,
        })
    }

    /// Streams any reader into the store. Returns the content hash and size.
    pub fn put_reader(&self, mut input: impl Read, pending: &mut Pending) -> Result<(Hash, u64)> {
        let tmp = self.temp_path();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        let result = (|| -> Result<(Hash, u64)> {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            // Read the first block to decide on the codec.
            let first =
                read_full(&mut input, &mut buf).map_err(|e| Error::io("reading input", "", e))?;
            let mut out = io::BufWriter::with_capacity(256 * 1024, file);
            let small = first < buf.len() && (first as u64) < COMPRESS_MIN;
            let codec = if self.compress && !small {
                CODEC_LZ4
            } else {
                CODEC_RAW
            };
            out.write_all(OBJECT_MAGIC)
                .and_then(|_| out.write_all(&[codec]))
                .map_err(|e| Error::io("writing", &tmp, e))?;
            hasher.update(&buf[..first]);
            let werr = |e| Error::io("writing", &tmp, e);
            // Copies the rest of the input through the hasher into `sink`.
            let mut pump = |sink: &mut dyn Write| -> Result<u64> {
                sink.write_all(&buf[..first]).map_err(werr)?;
                let mut size = first as u64;
                loop {
                    let n = read_full(&mut input, &mut buf)
                        .map_err(|e| Error::io("reading input", "", e))?;
                    if n == 0 {
                        return Ok(size);
                    }
                    hasher.update(&buf[..n]);
                    sink.write_all(&buf[..n]).map_err(werr)?;
                    size += n as u64;
                }
            };
            let size = if codec == CODEC_LZ4 {
                let mut enc = lz4_flex::frame::FrameEncoder::new(out);
                let size = pump(&mut enc)?;
                let out = enc
                    .finish()
                    .map_err(|e| Error::io("writing", &tmp, io::Error::other(e)))?;
                out.into_inner()
                    .map_err(|e| Error::io("writing", &tmp, e.into_error()))?;
                size
            } else {
                let mut out = out;
                let size = pump(&mut out)?;
                out.into_inner()
                    .map_err(|e| Error::io("writing", &tmp, e.into_error()))?;
                size
            };
            Ok((Hash::from(hasher.finalize()), size))
        })();
        match result {
            Ok((hash, size)) => {
                if self.contains(&hash) || pending.items.iter().any(|(_, h)| *h == hash) {
                    let _ = fs::remove_file(&tmp);
                } else {
                    pending.items.push((tmp, hash));
                }
                Ok((hash, size))
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Makes pending blobs durable and visible: sync data, rename into place, sync dirs.
    pub fn commit(&self, pending: Pending) -> Result<()> {
        if pending.items.is_empty() {
            return Ok(());
        }
        let many = pending.items.len() > SYNCFS_THRESHOLD;
        if many {
            syncfs(&self.dir)?;
        } else {
            for (tmp, _) in &pending.items {
                File::open(tmp)
                    .and_then(|f| f.sync_data())
                    .map_err(|e| Error::io("syncing", tmp, e))?;
            }
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (tmp, hash) in &pending.items {
            let dest = self.path_of(hash);
            let parent = dest.parent().expect("objects have a parent").to_path_buf();
            if !parent.exists() {
                fs::create_dir_all(&parent).map_err(|e| Error::io("creating", &parent, e))?;
                dirs.insert(self.dir.clone());
            }
            fs::rename(tmp, &dest).map_err(|e| Error::io("renaming into", &dest, e))?;
            dirs.insert(parent);
        }
        if many {
            syncfs(&self.dir)?;
        } else {
            for d in &dirs {
                sync_dir(d).map_err(|e| Error::io("syncing", d, e))?;
            }
        }
        Ok(())
    }

    /// Discards pending blobs (the append they were for did not happen).
    pub fn abandon(&self, pending: Pending) {
        for (tmp, _) in pending.items {
            let _ = fs::remove_file(tmp);
        }
    }

    /// Asks the kernel to start reading an object into the page cache, for a caller
    /// about to read it ([`crate::prefetch`]). A hint only.
    pub fn prefetch(&self, hash: &Hash) {
        crate::storage::prefetch(&self.path_of(hash));
    }

    /// Opens an object for streaming; the reader checks the hash at the end.
    pub fn open_reader(&self, hash: &Hash) -> Result<VerifyingReader> {
        let path = self.path_of(hash);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingContent(*hash))
            }
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        // Buffered to the object's size, up to 256 KiB: most objects are small, and a
        // 256 KiB buffer for each is an allocation and page faults for nothing.
        let len = f.metadata().map_or(u64::MAX, |m| m.len());
        let mut r = BufReader::with_capacity(len.clamp(64, 256 * 1024) as usize, f);
        let mut head = [0u8; 5];
        r.read_exact(&mut head).map_err(|_| Error::CorruptContent {
            hash: *hash,
            actual: Hash::ZERO,
        })?;
        if &head[..4] != OBJECT_MAGIC {
            return Err(Error::CorruptContent {
                hash: *hash,
                actual: Hash::ZERO,
            });
        }
        let inner: Box<dyn Read + Send> = match head[4] {
            CODEC_RAW => Box::new(r),
            CODEC_LZ4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
            _ => {
                return Err(Error::CorruptContent {
                    hash: *hash,
                    actual: Hash::ZERO,
                })
            }
        };
        Ok(VerifyingReader {
            inner,
            hasher: blake3::Hasher::new(),
            expected: *hash,
            done: false,
        })
    }

    /// Reads a whole object into memory, verified.
    pub fn get(&self, hash: &Hash) -> Result<Vec<u8>> {
        let mut r = self.open_reader(hash)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| read_error(hash, e))?;
        Ok(out)
    }

    /// Streams an object into `out`, verified. On a mismatch the caller must discard `out`.
    pub fn copy_to(&self, hash: &Hash, out: &mut dyn Write) -> Result<u64> {
        let mut r = self.open_reader(hash)?;
        // 64 KiB: large enough that the syscalls do not matter, small enough to come from
        // the heap (a 256 KiB buffer was mapped and faulted in for every small object).
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(hash, e)),
            };
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("writing", "output", e))?;
            total += n as u64;
        }
    }

    /// Re-hashes an object without keeping it.
    pub fn verify(&self, hash: &Hash) -> Result<u64> {
        self.copy_to(hash, &mut io::sink())
    }

    /// Deletes an object (redaction). Missing is fine.
    pub fn remove(&self, hash: &Hash) -> Result<()> {
        let path = self.path_of(hash);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap()).map_err(|e| Error::io("syncing", &path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    /// Disk bytes used by stored objects (for reports and benchmarks).
    pub fn disk_usage(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = fs::read_dir(p) else { return 0 };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir)
    }
}

fn read_error(hash: &Hash, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        if let Some(actual) = e.get_ref().and_then(|i| i.downcast_ref::<Mismatch>()) {
            return Error::CorruptContent {
                hash: *hash,
                actual: actual.0,
            };
        }
        return Error::CorruptContent {
            hash: *hash,
            actual: Hash::ZERO,
        };
    }
    Error::CorruptContent {
        hash: *hash,
        actual: Hash::ZERO,
    }
}

#[derive(Debug)]
struct Mismatch(Hash);
impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "content hashes to {}", self.0)
    }
}
impl std::error::Error for Mismatch {}

/// Yields an object's bytes; at end of data returns an `InvalidData` error if the
/// bytes do not hash to the object's name.
pub struct VerifyingReader {
    inner: Box<dyn Read + Send>,
    hasher: blake3::Hasher,
    expected: Hash,
    done: bool,
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self
            .inner
            .read(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if n == 0 {
            self.done = true;
            let actual = Hash::from(self.hasher.finalize());
            if actual != self.expected {
                return Err(io::Error::new(io::ErrorKind::InvalidData, Mismatch(actual)));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn syncfs(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("opening", dir, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("syncing the filesystem of", dir, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_dedups_and_verifies() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&d.path().join("objects")).unwrap();
        let mut p = Pending::default();
        let big = vec![7u8; 100_000];
        let h1 = s.put_bytes(b"hello", &mut p).unwrap();
        let h2 = s.put_bytes(&big, &mut p).unwrap();
        let h3 = s.put_bytes(b"hello", &mut p).unwrap();
        assert_eq!(h1, h3);
        assert_eq!(p.len(), 2);
        assert!(!s.contains(&h1), "not visible before commit");
        s.commit(p).unwrap();
        assert_eq!(s.get(&h1).unwrap(), b"hello");
        assert_eq!(s.get(&h2).unwrap(), big);
        assert_eq!(h1, Hash::of_content(b"hello"));
        // Compressed object is smaller than the raw bytes.
        assert!(fs::metadata(s.path_of(&h2)).unwrap().len() < 10_000);
    }

    /// Objects of every size around the read buffers' (64 KiB copies, reads buffered to
    /// the object's length), compressed or not, stream back byte for byte; prefetching
    /// an object, or one that is missing, changes nothing.
    #[test]
    fn objects_of_any_size_stream_back_whole_and_prefetch_is_only_a_hint() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&d.path().join("objects")).unwrap();
        let mut noise = vec![0u8; 300 * 1024];
        blake3::Hasher::new()
            .update(b"noise")
            .finalize_xof()
            .fill(&mut noise);
        let mut p = Pending::default();
        let mut stored = Vec::new();
        for len in [
            0,
            1,
            63,
            64,
            65,
            4095,
            65535,
            65536,
            65537,
            262_144,
            262_145,
            300 * 1024,
        ] {
            let raw = noise[..len].to_vec();
            let packed = vec![b'a'; len];
            for bytes in [raw, packed] {
                stored.push((s.put_bytes(&bytes, &mut p).unwrap(), bytes));
            }
        }
        s.commit(p).unwrap();
        s.prefetch(&Hash::of_content(b"never stored"));
        for (h, bytes) in &stored {
            s.prefetch(h);
            let mut out = Vec::new();
            assert_eq!(s.copy_to(h, &mut out).unwrap(), bytes.len() as u64);
            assert!(out == *bytes, "{} bytes", bytes.len());
            assert!(s.get(h).unwrap() == *bytes, "{} bytes", bytes.len());
        }
    }

    #[test]
    fn damaged_object_is_refused_with_both_hashes() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(&d.path().join("objects")).unwrap();
        let mut p = Pending::default();
        let h = s
            .put_bytes(b"some content that is long enough", &mut p)
            .unwrap();
        s.commit(p).unwrap();
        let path = s.path_of(&h);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        match s.get(&h) {
            Err(Error::CorruptContent { hash, actual }) => {
                assert_eq!(hash, h);
                assert_eq!(
                    actual,
                    Hash::of_content(b"some content that is long enougi")
                );
            }
            other => panic!("expected corruption error, got {other:?}"),
        }
        assert!(matches!(
            s.get(&Hash([9; 32])),
            Err(Error::MissingContent(_))
        ));
    }
}
