//! The fast path of the export verifier: one pass over an event line laid out exactly as
//! [`super::JsonlWriter`] writes it (compact JSON, keys in the documented order), which
//! re-encodes the event canonically as it goes, without building an [`ledger::Event`].
//!
//! It only ever *accepts less*: anything it does not recognise (whitespace, another key
//! order, a `{"hex": ...}` name, `meta` keys out of order, an escape it does not handle,
//! a number it would have to think about) makes
//! it return `None`, and the caller then parses the line with the general (serde) parser,
//! which accepts or rejects it and names the reason. So a line this path accepts is one the
//! general parser accepts with the same values; `replay/tests/export.rs` checks that both
//! agree on every mutated line of its test exports.

use ledger::Hash;

/// The fields of an event line the verifier needs after the line was parsed; the
/// canonical bytes are in the caller's buffer.
pub(super) struct FastLine {
    pub seq: u64,
    pub prev: Hash,
    pub time_us: i64,
    /// `actor.agent` and `change_id` as byte ranges of the canonical buffer.
    pub agent: (usize, usize),
    pub change_id: (usize, usize),
    pub stated: Hash,
    pub genesis: Option<[u8; 16]>,
    /// `proof`: leaf index, tree size, the number of hashes (which are in the
    /// [`ProofCache`] passed to [`parse`]).
    pub proof: Option<(u64, u64, usize)>,
    pub export_prev: Option<Option<Hash>>,
}

/// Hex digit values (lowercase only: the format writes lowercase hashes, and upper case
/// must be rejected, which the general path does with the reason).
const LOWER_HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes lowercase hex into `out` (`hex.len() == 2 * out.len()`).
pub(crate) fn decode_lower_hex(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    let mut ok = true;
    let mut hex_blocks = hex.chunks_exact(64);
    let mut out_blocks = out.chunks_exact_mut(32);
    for (h, o) in (&mut hex_blocks).zip(&mut out_blocks) {
        let (mut hb, mut ob) = ([0u8; 64], [0u8; 32]);
        hb.copy_from_slice(h);
        ok &= decode64(&hb, &mut ob);
        o.copy_from_slice(&ob);
    }
    let mut bad = 0u8;
    for (o, p) in out_blocks
        .into_remainder()
        .iter_mut()
        .zip(hex_blocks.remainder().chunks_exact(2))
    {
        let hi = LOWER_HEX[p[0] as usize];
        let lo = LOWER_HEX[p[1] as usize];
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    ok && bad & 0xf0 == 0
}

/// 64 hex digits (a hash) into 32 bytes, and whether all are lowercase hex digits: the
/// verdict and value of [`LOWER_HEX`], written as fixed-length loops without lookups
/// or branches, which the compiler turns into vector code.
#[inline]
fn decode64(hex: &[u8; 64], out: &mut [u8; 32]) -> bool {
    let mut v = [0u8; 64];
    let mut bad = 0u8;
    for (v, &c) in v.iter_mut().zip(hex) {
        let d = c.wrapping_sub(b'0');
        let l = c.wrapping_sub(b'a');
        let (is_digit, is_letter) = (d < 10, l < 6);
        *v = if is_digit { d } else { l.wrapping_add(10) };
        bad |= u8::from(!(is_digit | is_letter));
    }
    for (o, p) in out.iter_mut().zip(v.chunks_exact(2)) {
        *o = (p[0] << 4) | (p[1] & 0x0f);
    }
    bad == 0
}

/// Whether every byte is ASCII (below 0x80) and not a control character (below 0x20).
fn printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    // A byte below 0x80 and at least 0x20 keeps its high bit clear after subtracting
    // 0x20 (and borrows from no other byte); any other byte sets a high bit, in itself
    // or (with a borrow from a lower byte below 0x20) the lowest such byte does.
    let mut acc = 0u64;
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        let x = u64::from_le_bytes(a);
        acc |= x.wrapping_sub(0x20 * ONES) | x;
    }
    acc & HIGH == 0 && words.remainder().iter().all(|&c| (0x20..0x80).contains(&c))
}

/// The hashes of the last proofs parsed and the text each was decoded from, by
/// position in the proof: consecutive lines' proofs share most of their upper path, and
/// a hash whose text equals the cached text at its position is taken from the cache
/// instead of being decoded again (the same text decodes to the same hash).
#[derive(Default)]
pub(super) struct ProofCache {
    text: Vec<[u8; 64]>,
    hashes: Vec<Hash>,
}

impl ProofCache {
    /// The hashes of the proof parsed last (of the `count` its line had).
    pub fn hashes(&self, count: usize) -> &[Hash] {
        &self.hashes[..count]
    }
}

struct P<'a, 'e> {
    b: &'a [u8],
    i: usize,
    enc: &'e mut Vec<u8>,
    proofs: &'e mut ProofCache,
}

impl P<'_, '_> {
    #[inline]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len()) == Some(s) {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    #[inline]
    fn null(&mut self) -> bool {
        self.lit(b"null").is_some()
    }

    /// A JSON integer without sign: `0` or a digit 1-9 then digits; no overflow.
    fn digits(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        Some(v)
    }

    fn i64(&mut self) -> Option<i64> {
        if self.lit(b"-").is_some() {
            let m = self.digits()?;
            // `-0` is a float to serde_json: leave it to the general path.
            if m == 0 || m > 1u64 << 63 {
                return None;
            }
            Some((m as i64).wrapping_neg())
        } else {
            i64::try_from(self.digits()?).ok()
        }
    }

    fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true").is_some() {
            Some(true)
        } else if self.lit(b"false").is_some() {
            Some(false)
        } else {
            None
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.enc.extend_from_slice(bytes);
    }

    /// A JSON string, appended to the canonical bytes as u64 length + UTF-8 bytes;
    /// returns the range of its bytes there.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.lit(b"\"")?;
        let len_at = self.enc.len();
        self.enc.extend_from_slice(&[0; 8]);
        let start = self.enc.len();
        loop {
            let rest = &self.b[self.i..];
            // `parse` checked that the line has no control characters.
            let k = memchr::memchr2(b'"', b'\\', rest)?;
            let raw = &rest[..k];
            // Raw string bytes must be UTF-8 without control characters (see `parse`).
            if !printable_ascii(raw)
                && (std::str::from_utf8(raw).is_err() || raw.iter().any(|&c| c < 0x20))
            {
                return None;
            }
            self.enc.extend_from_slice(raw);
            self.i += k;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => self.escape()?,
                _ => return None,
            }
        }
        let n = (self.enc.len() - start) as u64;
        self.enc[len_at..start].copy_from_slice(&n.to_le_bytes());
        Some((start, self.enc.len()))
    }

    fn escape(&mut self) -> Option<()> {
        let c = *self.b.get(self.i + 1)?;
        self.i += 2;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let h = self.b.get(self.i..self.i + 4)?;
                let mut v = 0u32;
                for &d in h {
                    v = v * 16 + (d as char).to_digit(16)?;
                }
                self.i += 4;
                // Surrogates (pairs or lone) are left to the general path.
                let ch = char::from_u32(v)?;
                let mut tmp = [0u8; 4];
                self.put(ch.encode_utf8(&mut tmp).as_bytes());
                return Some(());
            }
            _ => return None,
        };
        self.enc.push(byte);
        Some(())
    }

    fn opt_string(&mut self) -> Option<()> {
        if self.null() {
            self.enc.push(0);
        } else {
            self.enc.push(1);
            self.string()?;
        }
        Some(())
    }

    fn hex<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.lit(b"\"")?;
        let h = self.b.get(self.i..self.i + 2 * N)?;
        let mut out = [0u8; N];
        if !decode_lower_hex(h, &mut out) {
            return None;
        }
        self.i += 2 * N;
        self.lit(b"\"")?;
        Some(out)
    }

    fn hash(&mut self) -> Option<Hash> {
        self.hex::<32>().map(Hash)
    }

    fn u64_put(&mut self) -> Option<u64> {
        let v = self.digits()?;
        self.put(&v.to_le_bytes());
        Some(v)
    }

    fn word(&mut self, words: &[&[u8]]) -> Option<u32> {
        self.lit(b"\"")?;
        for (i, w) in words.iter().enumerate() {
            if self.lit(w).is_some() {
                self.lit(b"\"")?;
                return Some(i as u32);
            }
        }
        None
    }

    fn content(&mut self) -> Option<()> {
        if self.null() {
            self.enc.push(0);
            return Some(());
        }
        self.enc.push(1);
        self.lit(b"{\"hash\":")?;
        let h = self.hash()?;
        self.put(&h.0);
        self.lit(b",\"mode\":")?;
        let m = self.word(&[b"regular", b"executable", b"symlink"])?;
        self.put(&m.to_le_bytes());
        self.lit(b",\"size\":")?;
        self.u64_put()?;
        self.lit(b"}")
    }

    fn resources(&mut self) -> Option<()> {
        self.lit(b"[")?;
        let count_at = self.enc.len();
        self.put(&[0; 8]);
        let mut n = 0u64;
        if self.lit(b"]").is_none() {
            loop {
                self.lit(b"{\"key\":{\"namespace\":")?;
                self.string()?;
                self.lit(b",\"name\":")?;
                // `{"hex": ...}` names go to the general path.
                self.string()?;
                self.lit(b"},\"op\":")?;
                let op = self.word(&[b"create", b"modify", b"delete"])?;
                self.put(&op.to_le_bytes());
                self.lit(b",\"old\":")?;
                self.content()?;
                self.lit(b",\"new\":")?;
                self.content()?;
                self.lit(b"}")?;
                n += 1;
                if self.lit(b",").is_none() {
                    self.lit(b"]")?;
                    break;
                }
            }
        }
        self.enc[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
        Some(())
    }

    /// The body after `"body":{"kind":`, up to and including its closing brace.
    fn body(&mut self) -> Option<Option<[u8; 16]>> {
        let kind = self.word(&[
            b"genesis",
            b"change",
            b"checkpoint",
            b"check",
            b"approval",
            b"deployment",
            b"failure",
            b"kill-switch",
            b"redaction",
        ])?;
        // `word` matches prefixes in order and then needs the closing quote, so
        // "checkpoint" is tried before "check".
        let index: u32 = match kind {
            0 => 0,
            1 => 1,
            2 => 8,
            3 => 2,
            4 => 3,
            5 => 4,
            6 => 5,
            7 => 6,
            _ => 7,
        };
        self.put(&index.to_le_bytes());
        let mut genesis = None;
        match index {
            0 => {
                self.lit(b",\"ledger_id\":")?;
                let id = self.hex::<16>()?;
                self.put(&id);
                genesis = Some(id);
                self.lit(b",\"format_version\":")?;
                let v = u32::try_from(self.digits()?).ok()?;
                self.put(&v.to_le_bytes());
            }
            1 => {
                self.lit(b",\"message\":")?;
                self.opt_string()?;
                self.lit(b",\"reverts\":")?;
                self.opt_string()?;
                self.lit(b",\"resources\":")?;
                self.resources()?;
            }
            2 => {
                self.lit(b",\"name\":")?;
                self.string()?;
                self.lit(b",\"level\":")?;
                self.string()?;
                self.lit(b",\"passed\":")?;
                let b = self.bool()?;
                self.enc.push(u8::from(b));
                self.lit(b",\"detail\":")?;
                self.opt_string()?;
            }
            3 => {
                self.lit(b",\"approver\":")?;
                self.string()?;
                self.lit(b",\"approved\":")?;
                let b = self.bool()?;
                self.enc.push(u8::from(b));
                self.lit(b",\"comment\":")?;
                self.opt_string()?;
            }
            4 => {
                self.lit(b",\"environment\":")?;
                self.string()?;
                self.lit(b",\"percent\":")?;
                let p = u8::try_from(self.digits()?).ok()?;
                self.enc.push(p);
                self.lit(b",\"version\":")?;
                self.string()?;
            }
            5 => {
                self.lit(b",\"stage\":")?;
                self.string()?;
                self.lit(b",\"error\":")?;
                self.string()?;
                self.lit(b",\"exit_code\":")?;
                if self.null() {
                    self.enc.push(0);
                } else {
                    let c = i32::try_from(self.i64()?).ok()?;
                    self.enc.push(1);
                    self.put(&c.to_le_bytes());
                }
            }
            6 => {
                self.lit(b",\"engaged\":")?;
                let b = self.bool()?;
                self.enc.push(u8::from(b));
                self.lit(b",\"scope\":")?;
                self.string()?;
                self.lit(b",\"reason\":")?;
                self.string()?;
            }
            7 => {
                self.lit(b",\"hash\":")?;
                let h = self.hash()?;
                self.put(&h.0);
                self.lit(b",\"reason\":")?;
                self.string()?;
            }
            _ => {
                self.lit(b",\"size\":")?;
                self.u64_put()?;
                self.lit(b",\"root\":")?;
                let h = self.hash()?;
                self.put(&h.0);
            }
        }
        self.lit(b"}")?;
        Some(genesis)
    }

    /// `meta`: keys in strictly ascending byte order (as the writer's `BTreeMap` puts
    /// them, and as the canonical encoding needs them); anything else goes to the
    /// general path, which also names a key given twice.
    fn meta(&mut self) -> Option<()> {
        self.lit(b"{")?;
        let count_at = self.enc.len();
        self.put(&[0; 8]);
        let mut n = 0u64;
        if self.lit(b"}").is_none() {
            let mut last: Option<(usize, usize)> = None;
            loop {
                let k = self.string()?;
                if let Some(l) = last {
                    if self.enc[k.0..k.1] <= self.enc[l.0..l.1] {
                        return None;
                    }
                }
                last = Some(k);
                self.lit(b":")?;
                self.string()?;
                n += 1;
                if self.lit(b",").is_none() {
                    self.lit(b"}")?;
                    break;
                }
            }
        }
        self.enc[count_at..count_at + 8].copy_from_slice(&n.to_le_bytes());
        Some(())
    }

    fn proof(&mut self) -> Option<(u64, u64, usize)> {
        self.lit(b"{\"leaf_index\":")?;
        let leaf = self.digits()?;
        self.lit(b",\"tree_size\":")?;
        let size = self.digits()?;
        self.lit(b",\"hashes\":[")?;
        let mut n = 0;
        if self.lit(b"]").is_none() {
            loop {
                self.proof_hash(n)?;
                n += 1;
                if self.lit(b",").is_none() {
                    self.lit(b"]")?;
                    break;
                }
            }
        }
        self.lit(b"}")?;
        Some((leaf, size, n))
    }

    /// Proof hash `k` (a quoted hash) into the proof cache at `k`: taken from there when
    /// the text is the cached one, else decoded (and cached with its text).
    fn proof_hash(&mut self, k: usize) -> Option<()> {
        self.lit(b"\"")?;
        let text: &[u8; 64] = self.b.get(self.i..self.i + 64)?.try_into().ok()?;
        let c = &mut *self.proofs;
        if c.text.get(k) != Some(text) {
            let mut h = [0u8; 32];
            if !decode64(text, &mut h) {
                return None;
            }
            if k < c.text.len() {
                c.text[k] = *text;
                c.hashes[k] = Hash(h);
            } else {
                // Positions fill in order: `k` is the next one.
                c.text.push(*text);
                c.hashes.push(Hash(h));
            }
        }
        self.i += 64;
        self.lit(b"\"")
    }

    fn line(&mut self) -> Option<FastLine> {
        self.lit(b"{\"type\":\"event\",\"seq\":")?;
        let seq = self.u64_put()?;
        self.lit(b",\"prev\":")?;
        let prev = self.hash()?;
        self.put(&prev.0);
        self.lit(b",\"time_us\":")?;
        let time_us = self.i64()?;
        self.put(&time_us.to_le_bytes());
        self.lit(b",\"actor\":{\"agent\":")?;
        let agent = self.string()?;
        self.lit(b",\"principal\":")?;
        self.opt_string()?;
        self.lit(b",\"role\":")?;
        self.opt_string()?;
        self.lit(b"},\"change_id\":")?;
        let change_id = self.string()?;
        self.lit(b",\"correlation_id\":")?;
        self.opt_string()?;
        self.lit(b",\"body\":{\"kind\":")?;
        let genesis = self.body()?;
        self.lit(b",\"meta\":")?;
        self.meta()?;
        self.lit(b",\"hash\":")?;
        let stated = self.hash()?;
        let (proof, export_prev) = if self.lit(b"}").is_some() {
            (None, None)
        } else {
            self.lit(b",\"proof\":")?;
            let p = self.proof()?;
            self.lit(b",\"export_prev\":")?;
            let ep = if self.null() {
                None
            } else {
                Some(self.hash()?)
            };
            self.lit(b"}")?;
            (Some(p), Some(ep))
        };
        if self.i != self.b.len() {
            return None;
        }
        Some(FastLine {
            seq,
            prev,
            time_us,
            agent,
            change_id,
            stated,
            genesis,
            proof,
            export_prev,
        })
    }
}

/// Parses an event line (without its newline) in the writer's exact layout, leaving the
/// event's canonical bytes in `enc` and its proof's hashes in `proofs`. `None`: not
/// recognised; use the general parser.
pub(super) fn parse(line: &[u8], enc: &mut Vec<u8>, proofs: &mut ProofCache) -> Option<FastLine> {
    enc.clear();
    // Every byte of a line this path accepts is matched against ASCII (delimiters,
    // keys, digits, hex, escapes), except the raw bytes of strings, which `string`
    // checks are UTF-8 without control characters (never valid raw in JSON strings;
    // and this layout has no whitespace). They lie between ASCII delimiters, so the
    // line accepted is valid UTF-8 without control characters, and every decoded
    // string is valid UTF-8; a line with any control character or invalid UTF-8 goes
    // to the general path, which names the fault.
    P {
        b: line,
        i: 0,
        enc,
        proofs,
    }
    .line()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table decoder, a digit pair at a time: what `decode_lower_hex` must match.
    fn by_table(hex: &[u8], out: &mut [u8]) -> bool {
        let mut bad = 0u8;
        for (o, p) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let hi = LOWER_HEX[p[0] as usize];
            let lo = LOWER_HEX[p[1] as usize];
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0x0f);
        }
        hex.len() == 2 * out.len() && bad & 0xf0 == 0
    }

    #[test]
    fn every_byte_at_every_position_decodes_as_the_table_says() {
        let base = b"0123456789abcdef0f1e2d3c4b5a69788796a5b4c3d2e1f0fedcba9876543210";
        for len in [2usize, 8, 10, 16, 32, 64] {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut hex = base[..len].to_vec();
                    hex[pos] = c;
                    let (mut a, mut b) = (vec![0u8; len / 2], vec![0u8; len / 2]);
                    let ok = decode_lower_hex(&hex, &mut a);
                    assert_eq!(ok, by_table(&hex, &mut b), "len {len} pos {pos} byte {c}");
                    if ok {
                        assert_eq!(a, b, "len {len} pos {pos} byte {c}");
                    }
                }
            }
        }
        // Every pair of digits, in every position of a word.
        for hi in 0..=255u8 {
            for lo in 0..=255u8 {
                for pos in [0usize, 2, 4, 6] {
                    let mut hex = *b"00000000";
                    hex[pos] = hi;
                    hex[pos + 1] = lo;
                    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
                    let ok = decode_lower_hex(&hex, &mut a);
                    assert_eq!(ok, by_table(&hex, &mut b), "{hi} {lo} at {pos}");
                    if ok {
                        assert_eq!(a, b);
                    }
                }
            }
        }
        assert!(!decode_lower_hex(b"abc", &mut [0u8; 1]));
        assert!(!decode_lower_hex(b"ab", &mut [0u8; 2]));
    }

    #[test]
    fn printable_ascii_is_ascii_without_control_characters() {
        for len in [0usize, 1, 7, 8, 9, 16, 23, 40] {
            for pos in 0..len {
                for c in 0..=255u8 {
                    for fill in [b' ', b'~', 0x7f, b'a'] {
                        let mut b = vec![fill; len];
                        b[pos] = c;
                        let want = b.iter().all(|&c| (0x20..0x80).contains(&c));
                        assert_eq!(printable_ascii(&b), want, "{len} {pos} {c} {fill}");
                    }
                }
            }
        }
    }

    fn proof_line(hashes: &[String]) -> Vec<u8> {
        let list: Vec<String> = hashes.iter().map(|h| format!("\"{h}\"")).collect();
        format!(
            "{{\"leaf_index\":3,\"tree_size\":9,\"hashes\":[{}]}}",
            list.join(",")
        )
        .into_bytes()
    }

    fn parse_proof(line: &[u8], cache: &mut ProofCache) -> Option<Vec<Hash>> {
        let mut enc = Vec::new();
        let mut p = P {
            b: line,
            i: 0,
            enc: &mut enc,
            proofs: cache,
        };
        let (_, _, n) = p.proof()?;
        (p.i == line.len()).then(|| cache.hashes(n).to_vec())
    }

    /// The proof cache gives each line exactly the hashes its text says: a hash whose
    /// text differs from the cached one at its position (one digit, or the previous
    /// line's hash at another position) is decoded, and a bad digit still sends the line
    /// to the general path.
    #[test]
    fn cached_proof_hashes_are_the_hashes_the_text_says() {
        let h = |i: u8, last: char| format!("{}{last}", &format!("{i:02x}").repeat(32)[..63]);
        let decode = |text: &[String]| -> Vec<Hash> {
            text.iter()
                .map(|t| {
                    let mut o = [0u8; 32];
                    assert!(decode_lower_hex(t.as_bytes(), &mut o));
                    Hash(o)
                })
                .collect()
        };
        let mut cache = ProofCache::default();
        let first: Vec<String> = (0..6).map(|i| h(i, '0')).collect();
        assert_eq!(
            parse_proof(&proof_line(&first), &mut cache),
            Some(decode(&first))
        );
        let cases: Vec<Vec<String>> = vec![
            // One digit of one hash changed.
            (0..6)
                .map(|i| h(i, if i == 4 { '1' } else { '0' }))
                .collect(),
            // Back to the first.
            first.clone(),
            // The same hashes shifted by one position.
            (1..7).map(|i| h(i, '0')).collect(),
            // Shorter, then longer again.
            (0..3).map(|i| h(i, '0')).collect(),
            (0..8).map(|i| h(i, '0')).collect(),
            first.clone(),
            // Two hashes swapped.
            [1, 0, 2, 3, 4, 5].iter().map(|&i| h(i, '0')).collect(),
            Vec::new(),
            first.clone(),
        ];
        for c in &cases {
            assert_eq!(parse_proof(&proof_line(c), &mut cache), Some(decode(c)));
        }
        // Upper case and other bytes are not lowercase hex, cached text or not.
        for bad in ['A', 'g', ' ', '"'] {
            let mut c = first.clone();
            c[2] = h(2, bad);
            assert_eq!(parse_proof(&proof_line(&c), &mut cache), None, "{bad:?}");
            assert_eq!(
                parse_proof(&proof_line(&first), &mut cache),
                Some(decode(&first))
            );
        }
    }
}
