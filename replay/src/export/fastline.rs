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
    /// `proof`: leaf index, tree size, hashes.
    pub proof: Option<(u64, u64, Vec<Hash>)>,
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
    let mut bad = 0u8;
    for (o, p) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = LOWER_HEX[p[0] as usize];
        let lo = LOWER_HEX[p[1] as usize];
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    bad & 0xf0 == 0
}

struct P<'a, 'e> {
    b: &'a [u8],
    i: usize,
    enc: &'e mut Vec<u8>,
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
            self.enc.extend_from_slice(&rest[..k]);
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

    fn proof(&mut self) -> Option<(u64, u64, Vec<Hash>)> {
        self.lit(b"{\"leaf_index\":")?;
        let leaf = self.digits()?;
        self.lit(b",\"tree_size\":")?;
        let size = self.digits()?;
        self.lit(b",\"hashes\":[")?;
        let mut hashes = Vec::new();
        if self.lit(b"]").is_none() {
            loop {
                hashes.push(self.hash()?);
                if self.lit(b",").is_none() {
                    self.lit(b"]")?;
                    break;
                }
            }
        }
        self.lit(b"}")?;
        Some((leaf, size, hashes))
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
/// event's canonical bytes in `enc`. `None`: not recognised; use the general parser.
pub(super) fn parse(line: &[u8], enc: &mut Vec<u8>) -> Option<FastLine> {
    enc.clear();
    // Every byte copied into a string lies between ASCII delimiters of a line that is
    // valid UTF-8, so every decoded string is valid UTF-8 too.
    std::str::from_utf8(line).ok()?;
    // Control characters are never valid raw in JSON strings, and this layout has no
    // whitespace: a line with any goes to the general path.
    if line.iter().fold(false, |acc, &c| acc | (c < 0x20)) {
        return None;
    }
    P { b: line, i: 0, enc }.line()
}
