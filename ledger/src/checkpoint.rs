//! Signed checkpoints in the C2SP formats (`tlog-checkpoint` inside a `signed-note`),
//! so witness and monitoring tools built for transparency logs can read them.
//!
//! A checkpoint states "the first `size` events of ledger `origin` have Merkle root
//! `root` (see [`crate::merkle`]); the last of them has hash `head`; signed at `time`":
//!
//! ```text
//! agent-ledger/000102030405060708090a0b0c0d0e0f
//! 5
//! 5gchISAbD0XezhQaR4Oza2RrVFvd5FNopZ9Q9S1OzVU=
//! head 0404040404040404040404040404040404040404040404040404040404040404
//! time 1700000000000000
//!
//! — agent-ledger/000102030405060708090a0b0c0d0e0f <base64(key ID || Ed25519 signature)>
//! ```
//!
//! Key texts follow Go's `golang.org/x/mod/sumdb/note`: a verifier key
//! `<name>+<8 hex key ID>+<base64(0x01 || public key)>` and a signer key
//! `PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>`. The signer key is a secret:
//! it belongs outside the ledger directory so that write access to the journal is not
//! enough to forge a checkpoint. `docs/CHECKPOINT.md` specifies every byte.
//!
//! Parsing is strict where the formats allow a choice (canonical decimal, canonical
//! base64, lowercase hex), so a body has exactly one text and `parse(to_text(b)) == b`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};

use crate::hash::Hash;

/// Origin prefix of every ledger's checkpoints: `agent-ledger/<32 hex ledger ID>`.
pub const ORIGIN_PREFIX: &str = "agent-ledger/";

/// Signature type byte of Ed25519 in C2SP `signed-note` (and in key texts).
pub const ED25519_TYPE: u8 = 0x01;

/// Signed-note lines start with an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// More signatures than this make a note malformed: bounds the work an untrusted note
/// can cause (the spec requires accepting at least 16; Go's reference stops at 100).
pub const MAX_SIGNATURES: usize = 100;

/// Why a checkpoint, note or key text was refused. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A line of a checkpoint body is missing or malformed.
    #[error("checkpoint line {line} ({field}): {reason}")]
    Body {
        line: usize,
        field: &'static str,
        reason: String,
    },
    /// The signed note's framing is wrong (line `None` when it is about the whole note).
    #[error("signed note{}: {reason}", at_line(.line))]
    Note { line: Option<usize>, reason: String },
    /// A signature line by the expected key did not verify: the note was altered or
    /// signed by a different key with the same name and ID.
    #[error("signed note line {line}: signature by {name}+{key_id:08x} does not verify")]
    BadSignature {
        line: usize,
        name: String,
        key_id: u32,
    },
    /// No signature line is by the expected key.
    #[error("signed note has no signature by {name}+{key_id:08x} (signed by: {})", list(.found))]
    NotSigned {
        name: String,
        key_id: u32,
        found: Vec<String>,
    },
    /// A key name is empty or contains whitespace, `+` or a control character.
    #[error("key name {name:?} {reason}")]
    KeyName { name: String, reason: &'static str },
    /// A verifier or signer key text is malformed or inconsistent.
    #[error("{kind} key: {reason}")]
    Key { kind: &'static str, reason: String },
    /// The operating system's random source failed while generating a key.
    #[error("cannot generate a signing key: the OS random source failed: {0}")]
    Random(String),
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

fn list(found: &[String]) -> String {
    if found.is_empty() {
        "nobody".to_string()
    } else {
        found.join(", ")
    }
}

/// The checkpoint origin of the ledger with this ID.
pub fn origin(ledger_id: &[u8; 16]) -> String {
    format!("{ORIGIN_PREFIX}{}", hex::encode(ledger_id))
}

/// The note text of a checkpoint: the C2SP `tlog-checkpoint` body plus two extension
/// lines (`head`, `time`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    /// Line 1: who issued it; for a ledger, [`origin`] of its ID.
    pub origin: String,
    /// Line 2: number of events covered (seq 0 to `size - 1`).
    pub size: u64,
    /// Line 3: Merkle root ([`crate::merkle::root`]) of those events' leaf hashes.
    pub root: Hash,
    /// Line 4: hash of event `size - 1` (the chain head), [`Hash::ZERO`] when `size == 0`.
    /// It ties the tree to the hash chain: either one checks the other.
    pub head: Hash,
    /// Line 5: when it was signed, UTC microseconds since the Unix epoch. Informative only.
    pub time_us: i64,
}

/// Field names of the body lines, for error messages.
const FIELDS: [&str; 5] = ["origin", "tree size", "root hash", "head", "time"];

impl CheckpointBody {
    /// The body text, five lines each ending in `\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\nhead {}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0),
            self.head.to_hex(),
            self.time_us
        )
    }

    /// Parses exactly the text [`CheckpointBody::to_text`] writes; anything else (extra
    /// or missing lines, non-canonical numbers or encodings) is an error naming the line.
    pub fn parse(text: &str) -> Result<CheckpointBody, CheckpointError> {
        let body_err = |line: usize, reason: String| CheckpointError::Body {
            line,
            field: FIELDS.get(line - 1).copied().unwrap_or("extension"),
            reason,
        };
        let Some(without_last) = text.strip_suffix('\n') else {
            let line = text.split('\n').count();
            return Err(body_err(line, "does not end with a newline".into()));
        };
        let lines: Vec<&str> = without_last.split('\n').collect();
        if lines.len() > FIELDS.len() {
            return Err(body_err(
                FIELDS.len() + 1,
                format!(
                    "unexpected extra line {:?}; a ledger checkpoint has 5 lines",
                    lines[5]
                ),
            ));
        }
        let get = |i: usize| -> Result<&str, CheckpointError> {
            match lines.get(i) {
                None => Err(body_err(i + 1, "missing".into())),
                Some(&"") => Err(body_err(i + 1, "empty".into())),
                Some(l) => Ok(l),
            }
        };
        let origin = get(0)?.to_string();
        let size_text = get(1)?;
        let size = canonical_decimal::<u64>(size_text).ok_or_else(|| {
            body_err(
                2,
                format!("{size_text:?} is not a decimal number without leading zeros"),
            )
        })?;
        let root_text = get(2)?;
        let root = B64
            .decode(root_text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                body_err(
                    3,
                    format!("{root_text:?} is not the padded base64 of 32 bytes"),
                )
            })?;
        let head_line = get(3)?;
        let head = head_line
            .strip_prefix("head ")
            .ok_or_else(|| {
                body_err(
                    4,
                    format!("expected \"head <64 hex digits>\", got {head_line:?}"),
                )
            })
            .and_then(|h| {
                lower_hex_hash(h)
                    .ok_or_else(|| body_err(4, format!("{h:?} is not 64 lowercase hex digits")))
            })?;
        let time_line = get(4)?;
        let time_text = time_line.strip_prefix("time ").ok_or_else(|| {
            body_err(
                5,
                format!("expected \"time <microseconds>\", got {time_line:?}"),
            )
        })?;
        let time_us = canonical_decimal::<i64>(time_text).ok_or_else(|| {
            body_err(
                5,
                format!("{time_text:?} is not a decimal integer without leading zeros"),
            )
        })?;
        Ok(CheckpointBody {
            origin,
            size,
            root: Hash(root),
            head,
            time_us,
        })
    }

    /// The ledger ID in an `agent-ledger/<32 hex>` origin; `None` for other origins.
    pub fn ledger_id(&self) -> Option<[u8; 16]> {
        let h = self.origin.strip_prefix(ORIGIN_PREFIX)?;
        if h.len() != 32 || !is_lower_hex(h) {
            return None;
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(h, &mut id).ok()?;
        Some(id)
    }

    /// Signs the body as a note. Refuses a body whose text would not parse back to the
    /// same body (for example an origin containing a newline), so nothing unreadable is
    /// ever signed.
    pub fn sign(&self, key: &SigningKey) -> Result<String, CheckpointError> {
        if self.origin.is_empty() || self.origin.contains(|c: char| c.is_control()) {
            return Err(CheckpointError::Body {
                line: 1,
                field: "origin",
                reason: format!("{:?} is empty or contains a control character", self.origin),
            });
        }
        let text = self.to_text();
        if CheckpointBody::parse(&text)? != *self {
            // Unreachable with today's fields; kept so a new field cannot be signed
            // without round-tripping.
            return Err(CheckpointError::Body {
                line: 1,
                field: "origin",
                reason: "the body does not round-trip through its text".into(),
            });
        }
        sign_note(&text, key)
    }

    /// Verifies a signed checkpoint with `key` and parses its body.
    pub fn open(note: &str, key: &VerifierKey) -> Result<CheckpointBody, CheckpointError> {
        CheckpointBody::parse(&open_note(note, key)?)
    }
}

/// Parses `s` only when it is the exact text `Display` gives the value: no sign on
/// unsigned numbers, no `+`, no leading zeros, no `-0`. One value, one text.
fn canonical_decimal<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let v: T = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// 64 lowercase hex digits: `Hash::from_hex` alone also takes upper case, which would
/// give one hash two texts.
fn lower_hex_hash(s: &str) -> Option<Hash> {
    if !is_lower_hex(s) {
        return None;
    }
    Hash::from_hex(s)
}

/// C2SP key ID: the first 4 bytes, big-endian, of SHA-256(name || 0x0A || 0x01 || key).
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Key names go into signature lines and key texts: non-empty, no Unicode whitespace,
/// no `+` (the key-text separator). Control characters are refused too, because a note
/// containing them is malformed and could never be opened.
pub fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else if name.contains('+') {
        "contains '+'"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(CheckpointError::KeyName {
        name: name.to_string(),
        reason,
    })
}

/// Parses `<8 hex digits>` (either case, as Go's reference does) into a key ID.
fn parse_key_id(kind: &'static str, s: &str) -> Result<u32, CheckpointError> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckpointError::Key {
            kind,
            reason: format!("key ID {s:?} is not 8 hex digits"),
        });
    }
    Ok(u32::from_str_radix(s, 16).expect("8 hex digits fit in u32"))
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn parse_typed_key(kind: &'static str, what: &str, s: &str) -> Result<[u8; 32], CheckpointError> {
    let err = |reason: String| CheckpointError::Key { kind, reason };
    let raw = B64
        .decode(s)
        .map_err(|e| err(format!("{what} is not valid padded base64: {e}")))?;
    match raw.split_first() {
        Some((&ED25519_TYPE, rest)) if rest.len() == 32 => {
            Ok(<[u8; 32]>::try_from(rest).expect("length checked"))
        }
        Some((&ED25519_TYPE, rest)) => Err(err(format!(
            "{what} has {} bytes after the type byte; Ed25519 needs 32",
            rest.len()
        ))),
        Some((t, _)) => Err(err(format!(
            "{what} has type byte 0x{t:02x}; only Ed25519 (0x01) is supported"
        ))),
        None => Err(err(format!("{what} is empty"))),
    }
}

fn check_id(
    kind: &'static str,
    name: &str,
    given: u32,
    public: &[u8; 32],
) -> Result<(), CheckpointError> {
    let expected = key_id(name, public);
    if given != expected {
        return Err(CheckpointError::Key {
            kind,
            reason: format!("key ID {given:08x} does not match name {name:?} and its public key (expected {expected:08x})"),
        });
    }
    Ok(())
}

/// A named Ed25519 signing key. Its `Debug` output leaves the secret out, and the key it
/// holds is wiped when dropped (ed25519-dalek's `zeroize`). Copies made on the way in or
/// out (a seed passed to [`SigningKey::from_seed`], the text of [`SigningKey::to_text`])
/// are not wiped: protecting them is the caller's business.
pub struct SigningKey {
    name: String,
    id: u32,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<SigningKey, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| CheckpointError::Random(e.to_string()))?;
        SigningKey::from_seed(name, seed)
    }

    /// The key whose RFC 8032 private key (seed) is `seed`: deterministic, for tests and
    /// for keys kept elsewhere.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SigningKey, CheckpointError> {
        check_key_name(name)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(SigningKey {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The public half, to hand to whoever verifies.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>`. This is the secret: whoever
    /// holds the text can sign checkpoints.
    pub fn to_text(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ED25519_TYPE;
        raw[1..].copy_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(raw)
        )
    }

    /// Parses a signer key text; surrounding whitespace (a key file's final newline) is
    /// ignored. The key ID must match the name and the public key derived from the seed.
    pub fn parse(text: &str) -> Result<SigningKey, CheckpointError> {
        const KIND: &str = "signer";
        let shape = || CheckpointError::Key {
            kind: KIND,
            reason: "expected PRIVATE+KEY+<name>+<8 hex key ID>+<base64 key>".into(),
        };
        // Five parts at most: the base64 alphabet itself contains '+'.
        let parts: Vec<&str> = text.trim().splitn(5, '+').collect();
        let [p, k, name, id, b64] = parts[..] else {
            return Err(shape());
        };
        if p != "PRIVATE" || k != "KEY" {
            return Err(shape());
        }
        check_key_name(name)?;
        let id = parse_key_id(KIND, id)?;
        let seed = parse_typed_key(KIND, "the private key", b64)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        check_id(KIND, name, id, key.verifying_key().as_bytes())?;
        Ok(SigningKey {
            name: name.to_string(),
            id,
            key,
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}+{:08x}, secret elided)",
            self.name, self.id
        )
    }
}

/// A named Ed25519 public key: what a verifier is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `<name>+<key ID>+<base64(0x01 || public key)>`.
    pub fn to_text(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ED25519_TYPE;
        raw[1..].copy_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// Parses a verifier key text; surrounding whitespace is ignored. Refuses key IDs
    /// that do not match, points that are not valid Ed25519 public keys, and weak
    /// (small-order) keys, for which signatures prove nothing.
    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        const KIND: &str = "verifier";
        let parts: Vec<&str> = text.trim().splitn(3, '+').collect();
        let [name, id, b64] = parts[..] else {
            return Err(CheckpointError::Key {
                kind: KIND,
                reason: "expected <name>+<8 hex key ID>+<base64 key>".into(),
            });
        };
        check_key_name(name)?;
        let id = parse_key_id(KIND, id)?;
        let public = parse_typed_key(KIND, "the public key", b64)?;
        let err = |reason: &str| CheckpointError::Key {
            kind: KIND,
            reason: reason.into(),
        };
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| err("the public key is not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(err("the public key is a weak (small-order) Ed25519 key"));
        }
        check_id(KIND, name, id, &public)?;
        Ok(VerifierKey {
            name: name.to_string(),
            id,
            key,
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Refuses note text the signed-note format cannot carry: it must be non-empty, end in
/// a newline and contain no ASCII control character other than newline.
fn check_note_chars(note: &str) -> Result<(), CheckpointError> {
    for (line, text) in note.split('\n').enumerate() {
        if let Some(c) = text.chars().find(|&c| c < ' ') {
            return Err(CheckpointError::Note {
                line: Some(line + 1),
                reason: format!("control character U+{:04X} is not allowed", c as u32),
            });
        }
    }
    Ok(())
}

/// Signs `body` (the note text, ending in `\n`) and returns the signed note:
/// `body`, a blank line, and `— <name> <base64(key ID || signature)>\n`.
pub fn sign_note(body: &str, key: &SigningKey) -> Result<String, CheckpointError> {
    if !body.ends_with('\n') {
        return Err(CheckpointError::Note {
            line: Some(body.split('\n').count()),
            reason: "the note text must end with a newline".into(),
        });
    }
    check_note_chars(body)?;
    let sig = key.key.sign(body.as_bytes());
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key.id.to_be_bytes());
    blob.extend_from_slice(&sig.to_bytes());
    Ok(format!(
        "{body}\n{SIG_PREFIX}{} {}\n",
        key.name,
        B64.encode(blob)
    ))
}

/// Verifies a signed note against `key` and returns its text (the body, with its final
/// newline).
///
/// As C2SP `signed-note` requires: signatures by other keys (witness cosignatures, a
/// rotated key) are skipped, a signature line whose name and key ID match `key` must
/// verify, and at least one must. Malformed framing anywhere is an error, even in lines
/// by other keys, because a note that other tools would reject should not pass here.
pub fn open_note(note: &str, key: &VerifierKey) -> Result<String, CheckpointError> {
    check_note_chars(note)?;
    // The text ends at the last blank line: signature lines are never empty, so the
    // last "\n\n" is the separator even when the text itself has blank lines.
    let Some(split) = note.rfind("\n\n") else {
        return Err(CheckpointError::Note {
            line: None,
            reason: "no blank line separates the text from signatures".into(),
        });
    };
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let first_sig_line = text.matches('\n').count() + 2;
    let Some(sigs) = sigs.strip_suffix('\n') else {
        let line = first_sig_line + sigs.matches('\n').count();
        let reason = if sigs.is_empty() {
            "no signature lines after the blank line"
        } else {
            "the last signature line does not end with a newline"
        };
        return Err(CheckpointError::Note {
            line: Some(line),
            reason: reason.into(),
        });
    };
    let mut verified = false;
    let mut found = Vec::new();
    for (i, line) in sigs.split('\n').enumerate() {
        let at = first_sig_line + i;
        let note_err = |reason: String| CheckpointError::Note {
            line: Some(at),
            reason,
        };
        if i >= MAX_SIGNATURES {
            return Err(note_err(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            note_err("a signature line must start with an em dash (U+2014) and a space".into())
        })?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| {
            note_err("expected \"\u{2014} <key name> <base64 signature>\"".into())
        })?;
        check_key_name(name).map_err(|e| note_err(e.to_string()))?;
        let blob = B64.decode(b64).map_err(|e| {
            note_err(format!(
                "signature by {name} is not valid padded base64: {e}"
            ))
        })?;
        if blob.len() < 5 {
            return Err(note_err(format!(
                "signature by {name} has only {} bytes",
                blob.len()
            )));
        }
        let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
        if name != key.name || id != key.id {
            found.push(format!("{name}+{id:08x}"));
            continue;
        }
        let bad = || CheckpointError::BadSignature {
            line: at,
            name: name.to_string(),
            key_id: id,
        };
        let sig = ed25519_dalek::Signature::from_slice(&blob[4..]).map_err(|_| bad())?;
        // Strict verification: rejects non-canonical and malleable signatures, so one
        // body has one valid signature per key.
        key.key
            .verify_strict(text.as_bytes(), &sig)
            .map_err(|_| bad())?;
        verified = true;
    }
    if !verified {
        return Err(CheckpointError::NotSigned {
            name: key.name.clone(),
            key_id: key.id,
            found,
        });
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEDGER_ID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    const SEED: [u8; 32] = [7; 32];

    fn key() -> SigningKey {
        SigningKey::from_seed(&origin(&LEDGER_ID), SEED).unwrap()
    }

    fn body() -> CheckpointBody {
        CheckpointBody {
            origin: origin(&LEDGER_ID),
            size: 5,
            // The five-leaf root of `merkle::tests::worked_example`.
            root: Hash::from_hex(
                "e6072121201b0f45dece141a4783b36b646b545bdde45368a59f50f52d4ecd55",
            )
            .unwrap(),
            head: Hash([4; 32]),
            time_us: 1_700_000_000_000_000,
        }
    }

    fn body_err(text: &str) -> (usize, &'static str) {
        match CheckpointBody::parse(text) {
            Err(CheckpointError::Body { line, field, .. }) => (line, field),
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn body_text_roundtrips() {
        let b = body();
        let text = b.to_text();
        assert_eq!(CheckpointBody::parse(&text).unwrap(), b);
        assert_eq!(b.ledger_id(), Some(LEDGER_ID));
        let mut other = b.clone();
        other.time_us = -1;
        other.size = 0;
        other.origin = "example.com/log".into();
        assert_eq!(CheckpointBody::parse(&other.to_text()).unwrap(), other);
        assert_eq!(other.ledger_id(), None);
    }

    #[test]
    fn body_parse_errors_name_the_line() {
        let good = body().to_text();
        let lines: Vec<&str> = good.lines().collect();
        let with = |i: usize, s: &str| {
            let mut l = lines.clone();
            l[i] = s;
            l.join("\n") + "\n"
        };
        assert_eq!(body_err(""), (1, "origin"));
        assert_eq!(
            body_err(&good[..good.len() - 1]),
            (5, "time"),
            "no final newline"
        );
        assert_eq!(body_err(&(good.clone() + "extra\n")), (6, "extension"));
        assert_eq!(body_err(&(good.clone() + "\n")), (6, "extension"));
        assert_eq!(
            body_err(&lines[..4].join("\n")),
            (4, "head"),
            "no final newline"
        );
        assert_eq!(
            body_err(&(lines[..4].join("\n") + "\n")),
            (5, "time"),
            "missing"
        );
        assert_eq!(body_err(&with(0, "")), (1, "origin"));
        for size in [
            "",
            "05",
            "+5",
            "-5",
            "5 ",
            "0x5",
            "18446744073709551616",
            "five",
        ] {
            assert_eq!(body_err(&with(1, size)), (2, "tree size"), "{size:?}");
        }
        let root = B64.encode(body().root.0);
        let unpadded = root.trim_end_matches('=').to_string();
        let short = B64.encode([0xe6; 31]);
        let mut bad_bits = root.clone();
        bad_bits.replace_range(42..43, "9"); // last symbol with non-zero unused bits
        for r in [unpadded.as_str(), &short, &bad_bits, "", "!!!!"] {
            assert_eq!(body_err(&with(2, r)), (3, "root hash"), "{r:?}");
        }
        let upper = format!("head {}", "AB".repeat(32));
        let short_head = format!("head {}", "ab".repeat(31));
        let no_space = format!("head{}", "ab".repeat(32));
        for h in [upper.as_str(), &short_head, &no_space, "time 5"] {
            assert_eq!(body_err(&with(3, h)), (4, "head"), "{h:?}");
        }
        for t in [
            "time",
            "time ",
            "time 01",
            "time -0",
            "time +1",
            "time 1.5",
            "Time 1",
            "time 9223372036854775808",
        ] {
            assert_eq!(body_err(&with(4, t)), (5, "time"), "{t:?}");
        }
        assert!(CheckpointBody::parse(&with(4, "time -9223372036854775808")).is_ok());
        let msg = CheckpointBody::parse(&with(1, "05"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "checkpoint line 2 (tree size): \"05\" is not a decimal number without leading zeros"
        );
    }

    #[test]
    fn sign_and_open_roundtrip() {
        let k = key();
        let v = k.verifier();
        let note = body().sign(&k).unwrap();
        assert_eq!(CheckpointBody::open(&note, &v).unwrap(), body());
        assert_eq!(open_note(&note, &v).unwrap(), body().to_text());
        // Any text, not only checkpoints, including blank lines inside it.
        let text = "hello\n\nworld\n";
        let n = sign_note(text, &k).unwrap();
        assert_eq!(open_note(&n, &v).unwrap(), text);
    }

    #[test]
    fn sign_refuses_unusable_text() {
        let k = key();
        assert!(matches!(
            sign_note("", &k),
            Err(CheckpointError::Note { line: Some(1), .. })
        ));
        assert!(matches!(
            sign_note("a\nb", &k),
            Err(CheckpointError::Note { line: Some(2), .. })
        ));
        assert!(matches!(
            sign_note("a\tb\n", &k),
            Err(CheckpointError::Note { line: Some(1), .. })
        ));
        let mut b = body();
        b.origin = "two\nlines".into();
        assert!(b.sign(&k).is_err());
        b.origin = String::new();
        assert!(b.sign(&k).is_err());
    }

    #[test]
    fn wrong_key_is_rejected() {
        let note = body().sign(&key()).unwrap();
        // Same name, different key: different key ID, so simply not signed by it.
        let other = SigningKey::from_seed(key().name(), [8; 32])
            .unwrap()
            .verifier();
        match CheckpointBody::open(&note, &other) {
            Err(CheckpointError::NotSigned { found, .. }) => {
                assert_eq!(found, [format!("{}+{:08x}", key().name(), key().key_id())]);
            }
            e => panic!("{e:?}"),
        }
        // Different name, same key material.
        let renamed = SigningKey::from_seed("example.com/other", SEED)
            .unwrap()
            .verifier();
        assert!(matches!(
            open_note(&note, &renamed),
            Err(CheckpointError::NotSigned { .. })
        ));
    }

    /// A key forged to share the name and key ID (key IDs are only 32 bits) must fail
    /// signature verification rather than be skipped.
    #[test]
    fn matching_name_and_id_with_other_key_is_a_bad_signature() {
        let note = body().sign(&key()).unwrap();
        let real = key().verifier();
        let impostor_key = SigningKey::from_seed("x", [9; 32]).unwrap().verifier().key;
        let impostor = VerifierKey {
            name: real.name.clone(),
            id: real.id,
            key: impostor_key,
        };
        let line = 5 + 2;
        assert_eq!(
            open_note(&note, &impostor),
            Err(CheckpointError::BadSignature {
                line,
                name: real.name.clone(),
                key_id: real.id
            })
        );
    }

    /// Two mutations per byte (flip bit 0, flip bit 1) rather than all 256 values: an
    /// unoptimised Ed25519 verification takes milliseconds in the debug test profile.
    /// Flipping bit 0 or 1 keeps ASCII printable in most places (digits stay digits,
    /// base64 letters stay base64), so most mutations get past framing and reach the
    /// signature check.
    const FLIPS: [u8; 2] = [0x01, 0x02];

    #[test]
    fn every_single_byte_mutation_is_rejected() {
        let k = key();
        let v = k.verifier();
        let note = body().sign(&k).unwrap();
        let bytes = note.as_bytes();
        let mut framed = 0;
        for i in 0..bytes.len() {
            for flip in FLIPS {
                let mut m = bytes.to_vec();
                m[i] ^= flip;
                // Bytes that are no longer UTF-8 cannot even be passed in as a note.
                let Ok(s) = std::str::from_utf8(&m) else {
                    continue;
                };
                match open_note(s, &v) {
                    Ok(b) => panic!("byte {i} ^ {flip:#04x} accepted, body {b:?}"),
                    Err(CheckpointError::BadSignature { .. }) => framed += 1,
                    Err(_) => {}
                }
            }
        }
        // Most mutations must have reached the signature check, or this test would
        // only be exercising the framing.
        assert!(
            framed > bytes.len(),
            "only {framed} mutations reached verification"
        );
    }

    /// With a second, foreign signature appended (a witness cosignature), a mutation in
    /// the foreign line may be accepted, because that line is skipped, but only ever
    /// with the original body.
    #[test]
    fn mutations_never_yield_another_body() {
        let k = key();
        let v = k.verifier();
        let text = body().to_text();
        let mine = sign_note(&text, &k).unwrap();
        let witness = SigningKey::from_seed("witness.example/w1", [3; 32]).unwrap();
        let theirs = sign_note(&text, &witness).unwrap();
        let foreign_line = &theirs[text.len() + 1..];
        let note = mine.clone() + foreign_line;
        assert_eq!(open_note(&note, &v).unwrap(), text);
        assert_eq!(open_note(&note, &witness.verifier()).unwrap(), text);
        let bytes = note.as_bytes();
        let mut accepted = 0;
        // The text and our own line are covered by the test above.
        for i in mine.len()..bytes.len() {
            for flip in FLIPS {
                let mut m = bytes.to_vec();
                m[i] ^= flip;
                let Ok(s) = std::str::from_utf8(&m) else {
                    continue;
                };
                if let Ok(b) = open_note(s, &v) {
                    assert_eq!(b, text, "byte {i} ^ {flip:#04x}");
                    accepted += 1;
                }
            }
        }
        assert!(
            accepted > 0,
            "no mutation of the foreign line was skipped over"
        );
    }

    #[test]
    fn malformed_notes_are_rejected_with_the_line() {
        let k = key();
        let v = k.verifier();
        let note = body().sign(&k).unwrap();
        let sig_line = note.lines().last().unwrap().to_string();
        let text = body().to_text();
        let note_err = |n: &str| match open_note(n, &v) {
            Err(CheckpointError::Note { line, .. }) => line,
            other => panic!("{n:?} gave {other:?}"),
        };
        assert_eq!(note_err(&text), None, "no signature block");
        assert_eq!(
            note_err(&format!("{text}\n")),
            Some(7),
            "blank line, no signatures"
        );
        assert_eq!(
            note_err(&note[..note.len() - 1]),
            Some(7),
            "no final newline"
        );
        assert_eq!(
            note_err(&note.replace('\u{2014}', "-")),
            Some(7),
            "hyphen, not em dash"
        );
        assert_eq!(
            note_err(&note.replace("\u{2014} ", "\u{2014}")),
            Some(7),
            "no space after dash"
        );
        let no_sig = format!("{text}\n\u{2014} {}\n", k.name());
        assert_eq!(note_err(&no_sig), Some(7), "name but no signature");
        let short = format!(
            "{text}\n\u{2014} {} {}\n",
            k.name(),
            B64.encode([1, 2, 3, 4])
        );
        assert_eq!(note_err(&short), Some(7), "4-byte signature");
        let not_b64 = format!("{text}\n\u{2014} {} not*base64\n", k.name());
        assert_eq!(note_err(&not_b64), Some(7));
        let two_spaces = note.replace(&format!("{} ", k.name()), &format!("{}  ", k.name()));
        assert_eq!(note_err(&two_spaces), Some(7));
        let plus_name = format!(
            "{text}\n\u{2014} a+b {}\n",
            sig_line.rsplit(' ').next().unwrap()
        );
        assert_eq!(note_err(&plus_name), Some(7));
        assert_eq!(
            note_err(&format!("{note}\n")),
            Some(9),
            "trailing blank line"
        );
        assert_eq!(
            note_err(&format!("{note}x\n")),
            Some(8),
            "junk after signatures"
        );
        assert_eq!(
            note_err(&note.replace("head", "he\rad")),
            Some(4),
            "control character"
        );
        assert_eq!(note_err(&note.replace('\n', "\r\n")), Some(1), "CRLF");
        // Foreign signatures count towards the limit too (they are parsed, not verified).
        let foreign = format!("\u{2014} witness.example/w {}\n", B64.encode([7u8; 68]));
        let many = format!("{note}{}", foreign.repeat(MAX_SIGNATURES));
        assert_eq!(note_err(&many), Some(7 + MAX_SIGNATURES));
        let fine = format!("{note}{}", foreign.repeat(MAX_SIGNATURES - 1));
        assert_eq!(open_note(&fine, &v).unwrap(), text);
        // A modified body with the original signature.
        let altered = note.replace("\n5\n", "\n6\n");
        assert!(matches!(
            open_note(&altered, &v),
            Err(CheckpointError::BadSignature { line: 7, .. })
        ));
    }

    #[test]
    fn key_texts_roundtrip_and_reject_damage() {
        let k = key();
        let v = k.verifier();
        let (st, vt) = (k.to_text(), v.to_text());
        assert_eq!(VerifierKey::parse(&vt).unwrap(), v);
        assert_eq!(VerifierKey::parse(&format!("{vt}\n")).unwrap(), v);
        assert_eq!(v.to_string(), vt);
        let back = SigningKey::parse(&format!("  {st}\n")).unwrap();
        assert_eq!(
            (back.name(), back.key_id(), back.verifier()),
            (k.name(), k.key_id(), v.clone())
        );
        assert!(
            !format!("{k:?}").contains(&st[st.len() - 44..]),
            "Debug leaks the seed"
        );

        let generated = SigningKey::generate("example.com/gen").unwrap();
        let regen = SigningKey::parse(&generated.to_text()).unwrap();
        assert_eq!(regen.verifier(), generated.verifier());
        assert_ne!(
            generated.verifier().public_key(),
            SigningKey::generate("example.com/gen")
                .unwrap()
                .verifier()
                .public_key()
        );

        let key_err = |r: Result<VerifierKey, CheckpointError>| match r {
            Err(CheckpointError::Key {
                kind: "verifier",
                reason,
            }) => reason,
            other => panic!("{other:?}"),
        };
        let (name, rest) = vt.split_once('+').unwrap();
        let (id, b64) = rest.split_once('+').unwrap();
        assert!(key_err(VerifierKey::parse(&format!("{name}+{id}"))).contains("expected"));
        assert!(
            key_err(VerifierKey::parse(&format!("{name}+{}+{b64}", &id[1..]))).contains("8 hex")
        );
        let wrong_id = format!("{:08x}", k.key_id() ^ 1);
        assert!(
            key_err(VerifierKey::parse(&format!("{name}+{wrong_id}+{b64}")))
                .contains("does not match")
        );
        let upper = VerifierKey::parse(&format!("{name}+{}+{b64}", id.to_uppercase())).unwrap();
        assert_eq!(upper, v, "Go accepts upper-case key IDs too");
        let mut raw = B64.decode(b64).unwrap();
        raw[0] = 0x04;
        assert!(key_err(VerifierKey::parse(&format!(
            "{name}+{id}+{}",
            B64.encode(&raw)
        )))
        .contains("0x04"));
        assert!(key_err(VerifierKey::parse(&format!(
            "{name}+{id}+{}",
            B64.encode(&raw[..32])
        )))
        .contains("type byte"));
        raw[0] = 0x01;
        assert!(key_err(VerifierKey::parse(&format!(
            "{name}+{id}+{}",
            B64.encode(&raw[..32])
        )))
        .contains("31 bytes"));
        let mut identity = [0u8; 33];
        identity[0] = 1;
        identity[1] = 1; // the identity point: small order
        let weak_id = format!("{:08x}", key_id(name, identity[1..].try_into().unwrap()));
        assert!(key_err(VerifierKey::parse(&format!(
            "{name}+{weak_id}+{}",
            B64.encode(identity)
        )))
        .contains("weak"));
        assert!(matches!(
            VerifierKey::parse(&format!("a b+{id}+{b64}")),
            Err(CheckpointError::KeyName { .. })
        ));

        let skey_err = |s: &str| match SigningKey::parse(s) {
            Err(CheckpointError::Key {
                kind: "signer",
                reason,
            }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(skey_err(&st.replacen("PRIVATE", "PUBLIC", 1)).contains("expected"));
        assert!(skey_err(&vt).contains("expected"));
        let parts: Vec<&str> = st.splitn(5, '+').collect();
        let bad = format!("PRIVATE+KEY+{}+{wrong_id}+{}", parts[2], parts[4]);
        assert!(skey_err(&bad).contains("does not match"));
        let renamed = format!("PRIVATE+KEY+other+{}+{}", parts[3], parts[4]);
        assert!(skey_err(&renamed).contains("does not match"));
    }

    #[test]
    fn key_names_are_checked() {
        for bad in [
            "",
            "a b",
            "a\tb",
            "a+b",
            "a\u{a0}b",
            "a\u{2003}b",
            "a\u{1}b",
            "a\u{7f}b",
        ] {
            assert!(
                matches!(check_key_name(bad), Err(CheckpointError::KeyName { .. })),
                "{bad:?}"
            );
            assert!(SigningKey::from_seed(bad, SEED).is_err(), "{bad:?}");
        }
        for good in ["a", "example.com/log", "agent-ledger/00ff", "名前"] {
            check_key_name(good).unwrap();
        }
    }

    /// The reference vectors of Go's `golang.org/x/mod/sumdb/note` documentation and of
    /// the C2SP signed-note spec: our key IDs, key texts and signatures are theirs.
    #[test]
    fn interoperates_with_reference_vectors() {
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let signed = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let s = SigningKey::parse(skey).unwrap();
        assert_eq!(s.to_text(), skey);
        assert_eq!(s.verifier().to_text(), vkey);
        assert_eq!(s.key_id(), 0xc74f20a3);
        let v = VerifierKey::parse(vkey).unwrap();
        let note = sign_note(text, &s).unwrap();
        assert_eq!(note, format!("{text}\n{signed}"));
        assert_eq!(open_note(&note, &v).unwrap(), text);

        let spec_key = VerifierKey::parse(
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        )
        .unwrap();
        let spec_note = "This is an example message.\n\n\
                         — example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        assert_eq!(
            open_note(spec_note, &spec_key).unwrap(),
            "This is an example message.\n"
        );
    }

    /// Pins a whole signed checkpoint: key texts, body and signature. Ed25519 is
    /// deterministic, so any change to the format shows up here. `docs/CHECKPOINT.md`
    /// walks through these exact bytes.
    #[test]
    fn known_answer_checkpoint() {
        let k = key();
        let b = body();
        assert_eq!(
            k.to_text(),
            "PRIVATE+KEY+agent-ledger/000102030405060708090a0b0c0d0e0f+ba7fcf3b+\
             AQcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"
        );
        assert_eq!(
            k.verifier().to_text(),
            "agent-ledger/000102030405060708090a0b0c0d0e0f+ba7fcf3b+\
             AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs"
        );
        assert_eq!(
            b.to_text(),
            "agent-ledger/000102030405060708090a0b0c0d0e0f\n\
             5\n\
             5gchISAbD0XezhQaR4Oza2RrVFvd5FNopZ9Q9S1OzVU=\n\
             head 0404040404040404040404040404040404040404040404040404040404040404\n\
             time 1700000000000000\n"
        );
        assert_eq!(
            b.sign(&k).unwrap(),
            format!(
                "{}\n\u{2014} agent-ledger/000102030405060708090a0b0c0d0e0f \
                 un/PO3yPVYTbVWcDmSv8e3KyOkV198kZ1LO2Nu6K3Y7Z0BcxO8BqCoV9y2HEx6rNhrWUuUxEx/WdFuZ8MgJy83JZgAY=\n",
                b.to_text()
            )
        );
    }
}
