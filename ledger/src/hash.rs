//! 32-byte BLAKE3 digests and the two ways the ledger derives them.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// BLAKE3 `derive_key` context for event hashes. Changing it changes every hash
/// (pinned by `event::tests::pinned_event_hash`).
pub const EVENT_HASH_CONTEXT: &str = "agent-ledger 2026-11-21 event v1";

/// A 32-byte BLAKE3 digest: an event hash or a content hash.
///
/// In canonical (binary) encodings it is 32 raw bytes with no length prefix; in
/// human-readable encodings (JSON) it is 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub [u8; 32]);

/// Byte order (as `[u8; 32]` orders), compared as two big-endian 128-bit words instead
/// of a call to `memcmp`: hashes are map keys in every walk over the journal.
impl Ord for Hash {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let word = |h: &Hash, i: usize| u128::from_be_bytes(h.0[i..i + 16].try_into().unwrap());
        word(self, 0)
            .cmp(&word(other, 0))
            .then_with(|| word(self, 16).cmp(&word(other, 16)))
    }
}

impl PartialOrd for Hash {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders byte strings as `[u8]` does (lexicographically, a prefix first), eight bytes
/// at a time without a call to `memcmp`; paths and resource keys are compared on every
/// lookup of a projection fold.
#[inline]
pub fn cmp_bytes(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_be_bytes(a[i..i + 8].try_into().unwrap());
        let y = u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    // Fewer than eight bytes remain in the shorter one: compare the next (up to) eight
    // bytes of each, zero-padded; when those agree, the shorter is a prefix of the other.
    let load = |s: &[u8]| -> u64 {
        let mut w = 0u64;
        for (j, &byte) in s.iter().take(8).enumerate() {
            w |= u64::from(byte) << (56 - 8 * j);
        }
        w
    };
    load(&a[i..])
        .cmp(&load(&b[i..]))
        .then(a.len().cmp(&b.len()))
}

impl Hash {
    /// The all-zero hash: `prev` of the first event.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Plain BLAKE3 of `bytes`: the content hash, as `b3sum` prints it.
    pub fn of_content(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// BLAKE3 `derive_key(EVENT_HASH_CONTEXT, canonical)`: the event hash.
    pub fn of_event_bytes(canonical: &[u8]) -> Hash {
        use blake3::hazmat::HasherExt;
        // The context is hashed once per process, not once per event.
        let mut h = blake3::Hasher::new_from_context_key(event_context_key());
        h.update(canonical);
        Hash(*h.finalize().as_bytes())
    }

    /// [`Hash::of_event_bytes`] of every payload, in order, into `out` (cleared first).
    ///
    /// The same hashes, computed several payloads at a time: chunks of different
    /// payloads that need the same compressions go through them together in the SIMD
    /// lanes of `blake3`'s `hash_many` (16 at a time with AVX-512, 8 with AVX2), where
    /// hashing one short payload alone could use one lane only.
    /// Checked against [`Hash::of_event_bytes`] on every length up to two chunks, on
    /// lengths of up to 20 chunks, and on every SIMD implementation this machine has
    /// (`hash::tests`).
    pub fn of_event_bytes_many(payloads: &[&[u8]], out: &mut Vec<Hash>) {
        event_hashes_with(blake3::platform::Platform::detect(), payloads, out);
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return None;
        }
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The context key of [`EVENT_HASH_CONTEXT`], computed once per process.
fn event_context_key() -> &'static blake3::hazmat::ContextKey {
    static CONTEXT_KEY: std::sync::OnceLock<blake3::hazmat::ContextKey> =
        std::sync::OnceLock::new();
    CONTEXT_KEY.get_or_init(|| blake3::hazmat::hash_derive_key_context(EVENT_HASH_CONTEXT))
}

/// BLAKE3's block and chunk sizes and the domain flags of one chunk's compressions
/// (the BLAKE3 specification, section 2.1 and table 3).
const BLOCK: usize = 64;
const CHUNK: usize = 1024;
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const ROOT: u8 = 8;
const DERIVE_KEY_MATERIAL: u8 = 64;

/// [`Hash::of_event_bytes_many`] on one `blake3` SIMD implementation.
///
/// Every payload is cut into BLAKE3 chunks. Whole chunks that are not a payload's last
/// are compressed together by chunk index (the chunk counter is one per `hash_many`
/// call). Last chunks (the whole payload when it is one chunk) are grouped by chunk
/// index and number of whole blocks before their last block, those blocks compressed
/// together, and each last block compressed on its own with the chunk-end flag (and
/// the root flag for a one-chunk payload). The chunk values of a longer payload are then
/// merged into its root with `blake3::hazmat`'s subtree functions.
fn event_hashes_with(
    platform: blake3::platform::Platform,
    payloads: &[&[u8]],
    out: &mut Vec<Hash>,
) {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, Mode};
    use blake3::platform::{le_bytes_from_words_32, words_from_le_bytes_32};
    use std::collections::BTreeMap;
    out.clear();
    out.resize(payloads.len(), Hash::ZERO);
    let key = words_from_le_bytes_32(event_context_key());
    /// Where a chunk's chaining value goes: the payload's hash (a one-chunk payload),
    /// or chunk `.1` of payload `.0` in `long`.
    #[derive(Clone, Copy)]
    enum Dest {
        Root(usize),
        Chunk(usize, usize),
    }
    /// Chunks to compress, each with where its chaining value goes.
    type Jobs<'a> = Vec<(&'a [u8], Dest)>;
    // Payloads of more than one chunk: index and the chaining value of each chunk.
    let mut long: Vec<(usize, Vec<[u8; 32]>)> = Vec::new();
    // Whole chunks that are not a payload's last, by chunk index.
    let mut whole: BTreeMap<usize, Jobs> = BTreeMap::new();
    // Last chunks, by (whole blocks before the last block, chunk index).
    let mut last: BTreeMap<(usize, usize), Jobs> = BTreeMap::new();
    for (i, p) in payloads.iter().enumerate() {
        if p.len() <= CHUNK {
            last.entry((p.len().saturating_sub(1) / BLOCK, 0))
                .or_default()
                .push((p, Dest::Root(i)));
            continue;
        }
        let chunks = p.len().div_ceil(CHUNK);
        let li = long.len();
        long.push((i, vec![[0; 32]; chunks]));
        for (j, c) in p.chunks(CHUNK).enumerate() {
            if j + 1 < chunks {
                whole.entry(j).or_default().push((c, Dest::Chunk(li, j)));
            } else {
                last.entry(((c.len() - 1) / BLOCK, j))
                    .or_default()
                    .push((c, Dest::Chunk(li, j)));
            }
        }
    }
    let mut put = |dest: Dest, cv: [u8; 32]| match dest {
        Dest::Root(i) => out[i] = Hash(cv),
        Dest::Chunk(li, j) => long[li].1[j] = cv,
    };
    let mut cvs = Vec::new();
    for (j, jobs) in &whole {
        let inputs: Vec<&[u8; CHUNK]> = jobs
            .iter()
            .map(|(c, _)| (*c).try_into().expect("a whole chunk"))
            .collect();
        cvs.clear();
        cvs.resize(jobs.len() * 32, 0);
        platform.hash_many(
            &inputs,
            &key,
            *j as u64,
            blake3::IncrementCounter::No,
            DERIVE_KEY_MATERIAL,
            CHUNK_START,
            CHUNK_END,
            &mut cvs,
        );
        for ((_, dest), cv) in jobs.iter().zip(cvs.chunks_exact(32)) {
            put(*dest, cv.try_into().expect("32 bytes"));
        }
    }
    for (&(blocks, j), jobs) in &last {
        // The chaining value of each chunk after its whole blocks but the last.
        cvs.clear();
        cvs.resize(jobs.len() * 32, 0);
        macro_rules! leading {
            ($($n:literal)*) => {
                match blocks {
                    0 => {
                        for c in cvs.chunks_exact_mut(32) {
                            c.copy_from_slice(&le_bytes_from_words_32(&key));
                        }
                    }
                    $($n => {
                        let inputs: Vec<&[u8; $n * BLOCK]> = jobs
                            .iter()
                            .map(|(c, _)| c[..$n * BLOCK].try_into().expect("long enough"))
                            .collect();
                        platform.hash_many(
                            &inputs,
                            &key,
                            j as u64,
                            blake3::IncrementCounter::No,
                            DERIVE_KEY_MATERIAL,
                            CHUNK_START,
                            0,
                            &mut cvs,
                        );
                    })*
                    _ => unreachable!("a chunk has 16 blocks"),
                }
            };
        }
        leading!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        let start = if blocks == 0 { CHUNK_START } else { 0 };
        for ((c, dest), cv) in jobs.iter().zip(cvs.chunks_exact(32)) {
            let tail = &c[blocks * BLOCK..];
            let mut block = [0u8; BLOCK];
            block[..tail.len()].copy_from_slice(tail);
            let root = if matches!(dest, Dest::Root(_)) {
                ROOT
            } else {
                0
            };
            let flags = DERIVE_KEY_MATERIAL | CHUNK_END | start | root;
            let mut words = words_from_le_bytes_32(cv.try_into().expect("32 bytes"));
            platform.compress_in_place(&mut words, &block, tail.len() as u8, j as u64, flags);
            put(*dest, le_bytes_from_words_32(&words));
        }
    }
    // Longer payloads: the chunk values merged as BLAKE3's tree merges them (a left
    // subtree of the largest power of two chunks that leaves the right one non-empty).
    let mode = Mode::DeriveKeyMaterial(event_context_key());
    fn subtree(cvs: &[[u8; 32]], len: u64, mode: Mode) -> [u8; 32] {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let left = left_subtree_len(len);
        let split = (left / CHUNK as u64) as usize;
        merge_subtrees_non_root(
            &subtree(&cvs[..split], left, mode),
            &subtree(&cvs[split..], len - left, mode),
            mode,
        )
    }
    for (i, cvs) in &long {
        let len = payloads[*i].len() as u64;
        let left = left_subtree_len(len);
        let split = (left / CHUNK as u64) as usize;
        let root = merge_subtrees_root(
            &subtree(&cvs[..split], left, mode),
            &subtree(&cvs[split..], len - left, mode),
            mode,
        );
        out[*i] = Hash(*root.as_bytes());
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(32)?;
            for b in &self.0 {
                t.serialize_element(b)?;
            }
            t.end()
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HexOrBytes;
        impl<'de> Visitor<'de> for HexOrBytes {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 32-byte hash (64 hex digits)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hash, E> {
                Hash::from_hex(v)
                    .ok_or_else(|| E::custom(format!("not a 64-hex-digit hash: {v:?}")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Hash, A::Error> {
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Hash(out))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(HexOrBytes)
        } else {
            d.deserialize_tuple(32, HexOrBytes)
        }
    }
}

/// Bytes that are usually UTF-8 text (file names): a length-prefixed byte string in
/// canonical encodings; in JSON a string when valid UTF-8, else `{"hex": "..."}`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Name(pub Vec<u8>);

/// Byte order of the raw name ([`cmp_bytes`]).
impl Ord for Name {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_bytes(&self.0, &other.0)
    }
}

impl PartialOrd for Name {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Name {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Shows the name; bytes that are not UTF-8, and the bytes of control characters
    /// (C0, DEL, C1: newlines, escape sequences...), appear as `\xNN`, so a recorded
    /// name can neither drive a terminal nor forge a line of output.
    pub fn display(&self) -> String {
        let mut out = String::new();
        let hex = |out: &mut String, bytes: &[u8]| {
            for b in bytes {
                out.push_str(&format!("\\x{b:02x}"));
            }
        };
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    hex(&mut out, c.encode_utf8(&mut [0u8; 4]).as_bytes());
                } else {
                    out.push(c);
                }
            }
            hex(&mut out, chunk.invalid());
        }
        out
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match std::str::from_utf8(&self.0) {
                Ok(text) => s.serialize_str(text),
                Err(_) => {
                    use serde::ser::SerializeMap;
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry("hex", &hex::encode(&self.0))?;
                    m.end()
                }
            }
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name: a string, bytes, or {\"hex\": ...}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                Ok(Name(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Name, E> {
                Ok(Name(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Name, E> {
                Ok(Name(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Name, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(Name(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Name, A::Error> {
                let mut out = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k != "hex" {
                        return Err(de::Error::unknown_field(&k, &["hex"]));
                    }
                    let h: String = map.next_value()?;
                    out = Some(hex::decode(&h).map_err(de::Error::custom)?);
                }
                out.map(Name).ok_or_else(|| de::Error::missing_field("hex"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched event hashes equal the one-at-a-time ones for every payload length
    /// up to two chunks (every block count, every last-block length, the empty payload,
    /// and payloads past one chunk) and lengths of up to 20 chunks, mixed in one batch, on every SIMD implementation
    /// of `blake3` this machine runs, and with the detected one.
    #[test]
    fn batched_event_hashes_equal_single_ones() {
        use blake3::platform::Platform;
        let mut data = vec![0u8; 21 * CHUNK];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut data {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // Every length up to two chunks, then lengths around every chunk count up to 20
        // (the tree's shape changes at powers of two), each at a different offset so
        // equal lengths differ in content, in an order that interleaves block counts.
        let long =
            (3..=20).flat_map(|c| [c * CHUNK - 1, c * CHUNK, c * CHUNK + 1, c * CHUNK + 555]);
        let mut payloads: Vec<&[u8]> = (0..=2 * CHUNK)
            .chain(long)
            .map(|len| &data[len % 7..][..len])
            .collect();
        payloads.reverse();
        payloads.rotate_left(333);
        let want: Vec<Hash> = payloads.iter().map(|p| Hash::of_event_bytes(p)).collect();
        // The x86 implementations by name (AVX-512 only through `detect`: whether
        // `blake3` built it is not visible from here), then whatever `detect` picks.
        #[cfg(target_arch = "x86_64")]
        let named = [Platform::sse2(), Platform::sse41(), Platform::avx2()];
        #[cfg(not(target_arch = "x86_64"))]
        let named: [Option<Platform>; 0] = [];
        let platforms = std::iter::once(Some(Platform::portable()))
            .chain(named)
            .chain([Some(Platform::detect())]);
        let mut out = vec![Hash::ZERO; 3];
        let mut tried = 0;
        for platform in platforms.flatten() {
            event_hashes_with(platform, &payloads, &mut out);
            assert_eq!(out.len(), want.len());
            for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                assert_eq!(
                    got,
                    want,
                    "{platform:?}, payload of {} bytes",
                    payloads[i].len()
                );
            }
            tried += 1;
        }
        assert!(
            tried >= 2,
            "the portable and the detected implementation at least"
        );
        Hash::of_event_bytes_many(&[], &mut out);
        assert!(out.is_empty());
        Hash::of_event_bytes_many(&[b"one"], &mut out);
        assert_eq!(out, vec![Hash::of_event_bytes(b"one")]);
    }

    /// The word-wise comparisons order exactly as the byte slices do.
    #[test]
    fn fast_orders_agree_with_byte_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            // Short alphabets and shared prefixes make equal runs and prefixes common.
            let mut gen = |max: u64| -> Vec<u8> {
                let len = (next() % max) as usize;
                (0..len)
                    .map(|_| b"ab\x00\xff"[(next() % 4) as usize])
                    .collect()
            };
            let (mut a, mut b, p) = (gen(24), gen(24), gen(20));
            if p.len() % 2 == 0 {
                a.splice(0..0, p.iter().copied());
                b.splice(0..0, p.iter().copied());
            }
            assert_eq!(cmp_bytes(&a, &b), a.cmp(&b), "{a:?} {b:?}");
            assert_eq!(Name(a.clone()).cmp(&Name(b.clone())), a.cmp(&b));
            let (mut ha, mut hb) = ([0u8; 32], [0u8; 32]);
            for (i, x) in ha.iter_mut().enumerate() {
                *x = a.get(i).copied().unwrap_or(0);
            }
            for (i, x) in hb.iter_mut().enumerate() {
                *x = b.get(i).copied().unwrap_or(0);
            }
            assert_eq!(Hash(ha).cmp(&Hash(hb)), ha.cmp(&hb), "{ha:?} {hb:?}");
        }
    }

    #[test]
    fn name_display_escapes_invalid_utf8_and_control_characters() {
        assert_eq!(Name(b"src/main.rs".to_vec()).display(), "src/main.rs");
        assert_eq!(Name("café/ü".into()).display(), "café/ü");
        assert_eq!(Name(b"a\xffb".to_vec()).display(), "a\\xffb");
        // A name must not drive a terminal or forge an output line.
        assert_eq!(
            Name(b"x\x1b[2J\ny\0\x7f\t".to_vec()).display(),
            "x\\x1b[2J\\x0ay\\x00\\x7f\\x09"
        );
        // C1 controls (U+009B is a one-character CSI on some terminals).
        assert_eq!(Name("a\u{9b}b".into()).display(), "a\\xc2\\x9bb");
    }
}
