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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash: `prev` of the first event.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Plain BLAKE3 of `bytes`: the content hash, as `b3sum` prints it.
    pub fn of_content(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// BLAKE3 `derive_key(EVENT_HASH_CONTEXT, canonical)`: the event hash.
    pub fn of_event_bytes(canonical: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new_derive_key(EVENT_HASH_CONTEXT);
        h.update(canonical);
        Hash(*h.finalize().as_bytes())
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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(pub Vec<u8>);

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
