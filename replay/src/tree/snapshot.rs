//! The layout of a [`Tree`] snapshot (kind `tree`), after the header every snapshot
//! starts with (`replay/src/projection.rs`: the magic `LDGRSNAP`, the
//! [`crate::SNAPSHOT_VERSION`] as a u32, the kind as a u64 length and its bytes).
//! Integers are little-endian; a *varint* is an unsigned LEB128 (seven bits a byte, the
//! low ones first, at most ten bytes).
//!
//! | field | bytes |
//! |:---|:---|
//! | entries | u64 |
//! | then each entry, in key order (namespace bytes, then name bytes; strictly ascending): | |
//! | namespace | varint `n`: 0 for the entry before's namespace (before the first entry: empty), else a namespace of `n` − 1 bytes (UTF-8) follows |
//! | name | varint `shared`, varint `rest`, then `rest` bytes: the first `shared` bytes of the entry before's name (before the first entry: empty), then these |
//! | content hash | 32 |
//! | mode | u8: 0 regular, 1 executable, 2 symlink |
//! | size | varint |
//! | seq | varint: the seq of the change that set it |
//! | change ID | varint `n`: 0 for the entry before's ID (before the first entry: empty), else an ID of `n` − 1 bytes (UTF-8) follows |
//! | after the entries: the tree's seq | u8 0 (none), or u8 1 and a u64 |
//!
//! In key order, a name shares most of its bytes with the one before (the files of one
//! directory), and neighbouring files were often set by one change: an entry of the
//! benchmark's workspace takes 66 bytes this way, where the `bincode` form of a
//! [`Tree`] (which `Projections` snapshots still hold) took 129.
//!
//! The writer shares as much as it can, except where that would take the entries'
//! namespaces, names and change IDs together past [`DECODED_PER_BYTE`] times the bytes
//! written so far (and [`DECODED_SLACK`]): such an entry is written whole (its namespace
//! and ID with their bytes, nothing of the name shared), so a reader can refuse any
//! snapshot past that as garbage without refusing one this writer made. The reader
//! takes what the table allows, shared or not, and varints of more bytes than they
//! need.

use ledger::{Content, Hash, Mode, Name, ResourceKey};

use super::{Entry, Tree};
use crate::projection::Projection;
use crate::Error;

/// The fewest bytes an entry takes: one each for the namespace, the two name lengths,
/// the mode, size, seq and change ID, and the hash.
const ENTRY_MIN: usize = 39;

/// A snapshot's names, namespaces and change IDs together, once decoded, take at most
/// this many times its bytes, and [`DECODED_SLACK`] more: what an entry shares with the
/// one before is not in the snapshot again, and a crafted one could otherwise ask for
/// the square of its size. [`EntryWriter`] keeps to it.
const DECODED_PER_BYTE: usize = 64;
const DECODED_SLACK: usize = 1 << 20;

/// Whether `counted` bytes of namespaces, names and IDs are within what `written` bytes
/// of a snapshot may hold ([`DECODED_PER_BYTE`]).
fn within_budget(counted: usize, written: usize) -> bool {
    counted
        <= written
            .saturating_mul(DECODED_PER_BYTE)
            .saturating_add(DECODED_SLACK)
}

/// The header and the entry count, in a buffer of at least `capacity` bytes.
pub(super) fn begin(capacity: usize, entries: usize) -> Vec<u8> {
    let mut out = crate::projection::snapshot_bytes(Tree::SNAPSHOT_KIND, &(), capacity);
    out.extend_from_slice(&(entries as u64).to_le_bytes());
    out
}

/// The tree's seq, after the entries.
pub(super) fn end(out: &mut Vec<u8>, seq: Option<u64>) {
    match seq {
        None => out.push(0),
        Some(seq) => {
            out.push(1);
            out.extend_from_slice(&seq.to_le_bytes());
        }
    }
}

/// Writes entries one after the other, each against the one before.
pub(super) struct EntryWriter<'a> {
    namespace: &'a [u8],
    name: &'a [u8],
    id: &'a [u8],
    /// Bytes of entries written, and of their namespaces, names and IDs.
    written: usize,
    counted: usize,
}

impl<'a> EntryWriter<'a> {
    pub(super) fn new() -> EntryWriter<'a> {
        EntryWriter {
            namespace: &[],
            name: &[],
            id: &[],
            written: 0,
            counted: 0,
        }
    }

    /// Appends the entry (`namespace`, `name`) to `out`; entries must come in key order.
    #[inline]
    pub(super) fn entry(
        &mut self,
        out: &mut Vec<u8>,
        namespace: &'a [u8],
        name: &'a [u8],
        content: &Content,
        seq: u64,
        id: &'a [u8],
    ) {
        let start = out.len();
        let counts = namespace.len() + name.len() + id.len();
        self.write(out, namespace, name, content, seq, id, true);
        if !within_budget(self.counted + counts, self.written + (out.len() - start)) {
            // Rare (names that share long prefixes): whole, the entry takes at least as
            // many bytes as it counts, which keeps the total within the budget.
            out.truncate(start);
            self.write(out, namespace, name, content, seq, id, false);
        }
        self.written += out.len() - start;
        self.counted += counts;
    }

    /// [`EntryWriter::entry`]'s bytes, sharing what the entry before has (`share`) or
    /// not.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn write(
        &mut self,
        out: &mut Vec<u8>,
        namespace: &'a [u8],
        name: &'a [u8],
        content: &Content,
        seq: u64,
        id: &'a [u8],
        share: bool,
    ) {
        if share {
            same_or_bytes(out, &mut self.namespace, namespace);
        } else {
            tagged_bytes(out, &mut self.namespace, namespace);
        }
        let shared = if share {
            shared_prefix(self.name, name)
        } else {
            0
        };
        varint(out, shared as u64);
        varint(out, (name.len() - shared) as u64);
        out.extend_from_slice(&name[shared..]);
        self.name = name;
        out.extend_from_slice(content.hash.as_bytes());
        out.push(match content.mode {
            Mode::Regular => 0,
            Mode::Executable => 1,
            Mode::Symlink => 2,
        });
        varint(out, content.size);
        varint(out, seq);
        if share {
            same_or_bytes(out, &mut self.id, id);
        } else {
            tagged_bytes(out, &mut self.id, id);
        }
    }
}

/// 0 when `now` is `before`; else [`tagged_bytes`].
#[inline]
fn same_or_bytes<'a>(out: &mut Vec<u8>, before: &mut &'a [u8], now: &'a [u8]) {
    if *before == now {
        out.push(0);
    } else {
        tagged_bytes(out, before, now);
    }
}

/// `now`'s length plus one and its bytes (and it becomes `before`).
#[inline]
fn tagged_bytes<'a>(out: &mut Vec<u8>, before: &mut &'a [u8], now: &'a [u8]) {
    varint(out, now.len() as u64 + 1);
    out.extend_from_slice(now);
    *before = now;
}

#[inline]
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// How many bytes `a` and `b` start with alike.
#[inline]
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_le_bytes(x.try_into().expect("eight bytes"));
        let y = u64::from_le_bytes(y.try_into().expect("eight bytes"));
        if x != y {
            return i + (x ^ y).trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// [`Projection::to_snapshot_bytes`] of `tree`.
pub(super) fn encode(tree: &Tree) -> Vec<u8> {
    let mut out = begin(0, tree.entries.len());
    let mut w = EntryWriter::new();
    for (k, e) in &tree.entries {
        w.entry(
            &mut out,
            k.namespace.as_bytes(),
            &k.name.0,
            &e.content,
            e.seq,
            e.change_id.as_bytes(),
        );
    }
    end(&mut out, tree.seq);
    out
}

/// [`Projection::from_snapshot_bytes`] for a [`Tree`].
pub(super) fn decode(bytes: &[u8]) -> Result<Tree, Error> {
    let body = crate::projection::snapshot_body(Tree::SNAPSHOT_KIND, bytes)?;
    decode_body(body).map_err(|detail| Error::Snapshot {
        kind: Tree::SNAPSHOT_KIND,
        detail: format!("body: {detail}"),
    })
}

fn decode_body(body: &[u8]) -> Result<Tree, String> {
    let mut r = Input(body);
    let count = r.u64("the entry count")?;
    if count > (body.len() / ENTRY_MIN) as u64 {
        return Err(format!("{count} entries in {} bytes", body.len()));
    }
    let mut budget = body
        .len()
        .saturating_mul(DECODED_PER_BYTE)
        .saturating_add(DECODED_SLACK);
    let mut entries: Vec<(ResourceKey, Entry)> = Vec::with_capacity(count as usize);
    for n in 0..count {
        let entry = decode_entry(&mut r, entries.last(), &mut budget)
            .map_err(|e| format!("entry {n}: {e}"))?;
        entries.push(entry);
    }
    let seq = match r.byte("the tree's seq")? {
        0 => None,
        1 => Some(r.u64("the tree's seq")?),
        t => return Err(format!("the tree's seq: tag {t}")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} trailing bytes", r.0.len()));
    }
    // (In key order, checked: the map's stable sort finds nothing to move.)
    Ok(Tree {
        entries: entries.into_iter().collect(),
        seq,
    })
}

fn decode_entry(
    r: &mut Input,
    before: Option<&(ResourceKey, Entry)>,
    budget: &mut usize,
) -> Result<(ResourceKey, Entry), String> {
    let mut spend = |n: usize| -> Result<(), String> {
        *budget = budget
            .checked_sub(n)
            .ok_or("more names and IDs than a snapshot of its size holds")?;
        Ok(())
    };
    let namespace = text(
        r,
        before.map_or("", |(k, _)| &k.namespace),
        "the namespace",
        &mut spend,
    )?;
    let before_name: &[u8] = before.map_or(&[], |(k, _)| &k.name.0);
    let shared = r.varint("the name")?;
    let shared = usize::try_from(shared)
        .ok()
        .filter(|&s| s <= before_name.len())
        .ok_or_else(|| {
            format!(
                "the name shares {shared} bytes with one of {}",
                before_name.len()
            )
        })?;
    let rest = r.len("the name")?;
    let rest = r.take(rest, "the name")?;
    spend(shared + rest.len())?;
    let mut name = Vec::with_capacity(shared + rest.len());
    name.extend_from_slice(&before_name[..shared]);
    name.extend_from_slice(rest);
    let key = ResourceKey {
        namespace,
        name: Name(name),
    };
    if before.is_some_and(|(k, _)| *k >= key) {
        return Err("keys out of order".into());
    }
    let hash = Hash(r.take(32, "the hash")?.try_into().expect("32 bytes"));
    let mode = match r.byte("the mode")? {
        0 => Mode::Regular,
        1 => Mode::Executable,
        2 => Mode::Symlink,
        m => return Err(format!("mode {m}")),
    };
    let size = r.varint("the size")?;
    let seq = r.varint("the seq")?;
    let change_id = text(
        r,
        before.map_or("", |(_, e)| &e.change_id),
        "the change ID",
        &mut spend,
    )?;
    let entry = Entry {
        content: Content { hash, mode, size },
        seq,
        change_id,
    };
    Ok((key, entry))
}

/// A namespace or change ID: the entry before's (`before`) for a 0, else its own bytes,
/// which must be UTF-8; charged to the budget (`spend`) before it is copied.
fn text(
    r: &mut Input,
    before: &str,
    what: &str,
    spend: &mut impl FnMut(usize) -> Result<(), String>,
) -> Result<String, String> {
    match r.tagged(what)? {
        None => {
            spend(before.len())?;
            Ok(before.to_string())
        }
        Some(b) => {
            spend(b.len())?;
            std::str::from_utf8(b)
                .map(str::to_string)
                .map_err(|_| format!("{what} is not UTF-8"))
        }
    }
}

/// What is left of the bytes being decoded.
struct Input<'b>(&'b [u8]);

impl<'b> Input<'b> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'b [u8], String> {
        if n > self.0.len() {
            return Err(format!("{what}: {n} bytes, {} left", self.0.len()));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte(what)?;
            // (The tenth byte holds the 64th bit alone.)
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{what}: a varint past 64 bits"))
    }

    /// A varint length of bytes that follow (no more than are left).
    fn len(&mut self, what: &str) -> Result<usize, String> {
        let n = self.varint(what)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or_else(|| format!("{what}: {n} bytes, {} left", self.0.len()))
    }

    /// `None` for a 0 (the entry before's), else the bytes of a length plus one.
    fn tagged(&mut self, what: &str) -> Result<Option<&'b [u8]>, String> {
        match self.varint(what)? {
            0 => Ok(None),
            n => {
                let n = usize::try_from(n - 1)
                    .map_err(|_| format!("{what}: {n} bytes, {} left", self.0.len()))?;
                self.take(n, what).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(n: u8, mode: Mode, size: u64) -> Content {
        Content {
            hash: Hash([n; 32]),
            mode,
            size,
        }
    }

    fn tree(entries: &[(&str, &[u8], Content, u64, &str)], seq: Option<u64>) -> Tree {
        let entries = entries
            .iter()
            .map(|&(namespace, name, content, seq, id)| {
                let key = ResourceKey {
                    namespace: namespace.into(),
                    name: Name(name.to_vec()),
                };
                let entry = Entry {
                    content,
                    seq,
                    change_id: id.into(),
                };
                (key, entry)
            })
            .collect();
        Tree { entries, seq }
    }

    /// A snapshot of the tree header followed by `count` and `rest`.
    fn crafted(count: u64, rest: &[u8]) -> Vec<u8> {
        let mut out = begin(0, 0);
        out.truncate(out.len() - 8);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(rest);
        out
    }

    /// The layout byte by byte, as the module doc gives it.
    #[test]
    fn a_tree_snapshot_is_laid_out_as_documented() {
        let t = tree(
            &[
                ("file", b"src/a.rs", content(1, Mode::Regular, 5), 7, "c1"),
                (
                    "file",
                    b"src/b.rs",
                    content(2, Mode::Executable, 300),
                    9,
                    "c1",
                ),
                ("flag", b"beta", content(3, Mode::Symlink, 0), 200, "c2"),
            ],
            Some(201),
        );
        let mut want = crate::projection::snapshot_bytes("tree", &(), 0);
        want.extend_from_slice(&3u64.to_le_bytes());
        // file:src/a.rs: a namespace of 4 bytes, 0 shared, 8 more, hash, mode, size,
        // seq, an ID of 2 bytes.
        want.extend_from_slice(&[5, b'f', b'i', b'l', b'e', 0, 8]);
        want.extend_from_slice(b"src/a.rs");
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[0, 5, 7, 3, b'c', b'1']);
        // file:src/b.rs: the namespace before, 4 bytes shared and 4 more, the ID before;
        // 300 is 0xac 0x02 as a varint.
        want.extend_from_slice(&[0, 4, 4]);
        want.extend_from_slice(b"b.rs");
        want.extend_from_slice(&[2; 32]);
        want.extend_from_slice(&[1, 0xac, 0x02, 9, 0]);
        // flag:beta: a new namespace, nothing shared, a new ID.
        want.extend_from_slice(&[5, b'f', b'l', b'a', b'g', 0, 4]);
        want.extend_from_slice(b"beta");
        want.extend_from_slice(&[3; 32]);
        want.extend_from_slice(&[2, 0, 0xc8, 0x01, 3, b'c', b'2']);
        // The tree's seq.
        want.push(1);
        want.extend_from_slice(&201u64.to_le_bytes());
        let bytes = t.to_snapshot_bytes();
        assert_eq!(bytes, want);
        assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), t);
        // The empty tree: no entries, no seq.
        let mut empty = crate::projection::snapshot_bytes("tree", &(), 0);
        empty.extend_from_slice(&0u64.to_le_bytes());
        empty.push(0);
        assert_eq!(Tree::new().to_snapshot_bytes(), empty);
        assert_eq!(Tree::from_snapshot_bytes(&empty).unwrap(), Tree::new());
    }

    /// Entries that share a name's first bytes, or a change ID, with the entry before
    /// take those bytes once; an empty namespace, name or ID, and the largest sizes
    /// and seqs, come back as they were.
    #[test]
    fn a_tree_snapshot_takes_what_entries_share_once_and_loses_nothing() {
        let names: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("src/module-{}/file-{i:05}.rs", i / 100).into_bytes())
            .collect();
        let entries: Vec<(&str, &[u8], Content, u64, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let id = if i % 4 == 0 {
                    "change-0001"
                } else {
                    "change-0002"
                };
                (
                    "file",
                    n.as_slice(),
                    content(i as u8, Mode::Regular, i as u64),
                    i as u64,
                    id,
                )
            })
            .collect();
        let t = tree(&entries, Some(499));
        let bytes = t.to_snapshot_bytes();
        assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), t);
        // 32 of hash, 1 of mode; 6 or so of name; about 6 of lengths, size, seq; the
        // ID (11 bytes) every time it changes, three entries in four.
        let per_entry = bytes.len() / 500;
        assert!((45..=58).contains(&per_entry), "{per_entry} bytes an entry");

        let odd = tree(
            &[
                ("", b"", content(0, Mode::Regular, u64::MAX), u64::MAX, ""),
                ("", b"x", content(1, Mode::Symlink, 0), 0, "id"),
                ("file", b"", content(2, Mode::Regular, 1 << 63), 1, ""),
                (
                    "file",
                    b"\xff\x00bytes",
                    content(3, Mode::Executable, 127),
                    128,
                    "",
                ),
            ],
            None,
        );
        let bytes = odd.to_snapshot_bytes();
        assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), odd);
    }

    /// What the layout does not allow is refused, each with what is wrong and where.
    #[test]
    fn tree_snapshots_that_break_the_layout_are_refused() {
        let hash = [7u8; 32];
        // One entry (file:a, mode 0, size 1, seq 2, ID "c") after `before`.
        let entry = |before: &[u8], mode: u8| -> Vec<u8> {
            let mut e = before.to_vec();
            e.extend_from_slice(&hash);
            e.extend_from_slice(&[mode, 1, 2, 2, b'c']);
            e
        };
        let good = |name: &[u8]| -> Vec<u8> {
            let mut e = vec![5, b'f', b'i', b'l', b'e', 0, name.len() as u8];
            e.extend_from_slice(name);
            entry(&e, 0)
        };
        let refused = |bytes: &[u8], says: &str| {
            let err = Tree::from_snapshot_bytes(bytes).unwrap_err().to_string();
            assert!(err.contains(says), "{err:?} does not say {says:?}");
        };
        let mut ok = good(b"a");
        ok.push(0);
        assert_eq!(
            Tree::from_snapshot_bytes(&crafted(1, &ok)).unwrap().len(),
            1
        );

        // Keys out of order, and the same key twice.
        for second in [b"a".as_slice(), b"0"] {
            let mut two = good(b"a");
            two.extend_from_slice(&entry(&[0, 0, 1, second[0]], 0));
            two.push(0);
            refused(&crafted(2, &two), "entry 1: keys out of order");
        }
        // More bytes shared than the name before has.
        let mut two = good(b"a");
        two.extend_from_slice(&entry(&[0, 2, 1, b'b'], 0));
        two.push(0);
        refused(
            &crafted(2, &two),
            "entry 1: the name shares 2 bytes with one of 1",
        );
        // A mode past the three.
        let mut bad = entry(&[5, b'f', b'i', b'l', b'e', 0, 1, b'a'], 3);
        bad.push(0);
        refused(&crafted(1, &bad), "entry 0: mode 3");
        // Text that is not UTF-8.
        let mut bad = good(b"a");
        bad[1] = 0xff;
        bad.push(0);
        refused(&crafted(1, &bad), "entry 0: the namespace is not UTF-8");
        let mut bad = good(b"a");
        let last = bad.len() - 1;
        bad[last] = 0xff;
        bad.push(0);
        refused(&crafted(1, &bad), "entry 0: the change ID is not UTF-8");
        // A varint of more than 64 bits.
        let mut bad = vec![5, b'f', b'i', b'l', b'e', 0, 1, b'a'];
        bad.extend_from_slice(&hash);
        bad.push(0);
        bad.extend_from_slice(&[0xff; 9]);
        bad.push(0x02);
        bad.extend_from_slice(&[2, 2, b'c', 0]);
        refused(
            &crafted(1, &bad),
            "entry 0: the size: a varint past 64 bits",
        );
        // Lengths past the end.
        let mut bad = vec![5, b'f', b'i', b'l', b'e', 0, 100, b'a'];
        bad.extend_from_slice(&[0; 60]);
        refused(&crafted(1, &bad), "entry 0: the name: 100 bytes");
        // More entries than the bytes can hold, and the seq's tag.
        refused(&crafted(1000, &ok), "1000 entries in");
        let mut bad = good(b"a");
        bad.push(2);
        refused(&crafted(1, &bad), "the tree's seq: tag 2");
        // Trailing bytes, and every truncation.
        let mut long = crafted(1, &ok);
        long.push(0);
        refused(&long, "1 trailing bytes");
        let whole = crafted(1, &ok);
        for cut in 0..whole.len() {
            assert!(
                Tree::from_snapshot_bytes(&whole[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    /// A crafted snapshot whose entries each take a long change ID, namespace or name of
    /// the entry before again is refused before it asks for more than 64 times its
    /// size (here 50 MB of IDs from 0.25 MB, 50 MB of namespaces from 0.26 MB, 180 MB of
    /// names from 0.19 MB); the same entries under that decode.
    #[test]
    fn tree_snapshots_sharing_more_than_they_can_hold_are_refused() {
        #[derive(Clone, Copy)]
        enum Long {
            Id,
            Namespace,
            Name,
        }
        // Entry `i` of `count`: the first one's long ID, namespace or name, taken again
        // by the others (a long name with one byte more than the name before each
        // time; short names are `i` as 8 digits).
        let craft = |count: u64, long: Long, long_len: usize| -> Vec<u8> {
            let bytes = vec![b'n'; long_len];
            let mut body = Vec::new();
            for i in 0..count {
                match (long, i) {
                    (Long::Namespace, 0) => {
                        varint(&mut body, long_len as u64 + 1);
                        body.extend_from_slice(&bytes);
                    }
                    (_, 0) => body.extend_from_slice(&[5, b'f', b'i', b'l', b'e']),
                    _ => body.push(0),
                }
                let (shared, name) = match (long, i) {
                    (Long::Name, 0) => (0, bytes.clone()),
                    (Long::Name, _) => (long_len as u64 + i - 1, vec![b'n']),
                    _ => (0, format!("{i:08}").into_bytes()),
                };
                varint(&mut body, shared);
                varint(&mut body, name.len() as u64);
                body.extend_from_slice(&name);
                body.extend_from_slice(&[0; 32]);
                body.extend_from_slice(&[0, 0, 0]);
                match (long, i) {
                    (Long::Id, 0) => {
                        varint(&mut body, long_len as u64 + 1);
                        body.extend_from_slice(&bytes);
                    }
                    (_, 0) => body.extend_from_slice(&[2, b'c']),
                    _ => body.push(0),
                }
            }
            body.push(0);
            crafted(count, &body)
        };
        for (long, count, long_len) in [
            (Long::Id, 5_000, 10_000),
            (Long::Namespace, 5_000, 10_000),
            (Long::Name, 3_000, 60_000),
        ] {
            // (Not `unwrap_err`: a tree decoded in spite of the budget would be printed.)
            let err = match Tree::from_snapshot_bytes(&craft(count, long, long_len)) {
                Ok(t) => panic!("{} entries decoded", t.len()),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("more names and IDs than a snapshot of its size holds"),
                "{err}"
            );
            let few = Tree::from_snapshot_bytes(&craft(20, long, long_len)).unwrap();
            assert_eq!(few.len(), 20);
        }
    }

    /// Names that share long prefixes, more than a reader would take from the bytes
    /// shared, are written whole where they would be (here 100 names of 64 KiB that
    /// differ in their last byte: 6.5 MB of names, of which sharing would leave 70 KB),
    /// and the snapshot decodes to the tree; so do a fold's bytes of it.
    #[test]
    fn names_sharing_long_prefixes_are_written_so_that_they_decode() {
        let names: Vec<Vec<u8>> = (0..100u8)
            .map(|i| {
                let mut n = vec![b'p'; 65_535];
                n.push(i);
                n
            })
            .collect();
        let entries: Vec<(&str, &[u8], Content, u64, &str)> = names
            .iter()
            .map(|n| ("file", n.as_slice(), content(1, Mode::Regular, 9), 3, "c"))
            .collect();
        let t = tree(&entries, Some(3));
        let bytes = t.to_snapshot_bytes();
        assert!(bytes.len() > 100 * 1024, "{} bytes", bytes.len());
        assert!(bytes.len() < 2 * 1024 * 1024, "{} bytes", bytes.len());
        assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), t);
        // The same tree folded into the slab (the empty starting tree taken apart first).
        let mut fold = crate::TreeFold::new(Tree::new());
        fold.check(3).unwrap();
        let mut id = None;
        for n in &names {
            let c = Some(content(1, Mode::Regular, 9));
            fold.set("file", n, None, c, 3, "c", &mut id).unwrap();
        }
        fold.done(3);
        assert_eq!(fold.to_snapshot_bytes(), bytes);
    }

    /// Random bytes behind a tree header, and every flipped byte of a snapshot, give an
    /// error or a tree, never a panic.
    #[test]
    fn tree_snapshot_garbage_never_panics() {
        let names: Vec<Vec<u8>> = (0..40).map(|i| format!("d/f{i}").into_bytes()).collect();
        let entries: Vec<(&str, &[u8], Content, u64, &str)> = names
            .iter()
            .map(|n| ("file", n.as_slice(), content(1, Mode::Regular, 9), 3, "c"))
            .collect();
        let good = tree(&entries, Some(3)).to_snapshot_bytes();
        for i in 0..good.len() {
            for flip in [0xff, 0x01, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = Tree::from_snapshot_bytes(&bad);
            }
        }
        let mut state = 0x5eed_u64;
        for _ in 0..3000 {
            let mut junk = crafted(0, &[]);
            junk.truncate(junk.len() - 8);
            let n = (state % 200) as usize;
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                junk.push((state >> 33) as u8);
            }
            let _ = Tree::from_snapshot_bytes(&junk);
        }
    }
}
