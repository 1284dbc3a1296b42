//! Compliance export: events as a JSON Lines file an auditor checks offline, the checker
//! for such files, and a CSV view for spreadsheets. `docs/EXPORT.md` specifies every byte.
//!
//! A JSONL export is:
//!
//! 1. a header line: format name and version, the ledger's origin, the export time, the
//!    filter, whether it is signed, and the Merkle tree (size and root) it is relative to;
//! 2. one line per event, carrying every field of the event (so its hash can be
//!    re-derived from the line alone) and its event hash. In a filtered export each line
//!    also carries an inclusion proof against the header's tree and the hash of the
//!    previous event line (`export_prev`); an unfiltered export holds every event from
//!    seq 0 and is checked through the `prev` links and the recomputed root;
//! 3. a trailer line with two notes: the checkpoint (C2SP `tlog-checkpoint` of the
//!    header's tree, as `ledger checkpoint` makes) and the export statement (how many
//!    event lines, and the BLAKE3 of the header line and of the event lines). Signed with
//!    `--sign`, both are Ed25519 signed notes; otherwise they are the bare note texts.
//!
//! The module is pure: [`JsonlWriter`] and [`CsvWriter`] are fed events by the caller and
//! write to any [`Write`]; [`verify_export`] reads any [`BufRead`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use ledger::checkpoint::{self, CheckpointBody, CheckpointError, SigningKey, VerifierKey};
use ledger::merkle::{self, Frontier, Tree};
use ledger::{
    Actor, Approval, Body, Change, Check, Checkpoint, Content, Deployment, Event, Failure, Genesis,
    Hash, KillSwitch, Mode, Name, Op, Redaction, ResourceChange, ResourceKey,
};

mod fastline;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// The `format` field of the header.
pub const FORMAT_NAME: &str = "agent-ledger-export";
/// The only `version` this code writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// First line of the export statement note.
pub const STATEMENT_TITLE: &str = "agent-ledger export v1";
/// Longest line (without its newline) a reader accepts and a writer produces.
pub const MAX_LINE: usize = 64 << 20;
/// Event lines are hashed into the statement digest and written in pieces of this size.
const PENDING_BYTES: usize = 1 << 20;
/// Longest note text accepted in a trailer.
const MAX_NOTE: usize = 64 << 10;

// ---------------------------------------------------------------------------------------
// Filter

/// Which events an export holds. All set conditions must hold; an empty filter exports
/// every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Events recorded at or after this time (UTC microseconds).
    #[serde(deserialize_with = "required")]
    pub since_us: Option<i64>,
    /// Events recorded before this time.
    #[serde(deserialize_with = "required")]
    pub until_us: Option<i64>,
    /// Events whose `actor.agent` is this.
    #[serde(deserialize_with = "required")]
    pub agent: Option<String>,
    /// Events of this change ID.
    #[serde(deserialize_with = "required")]
    pub change_id: Option<String>,
}

impl Filter {
    /// No condition set: the export is unfiltered.
    pub fn is_empty(&self) -> bool {
        self.since_us.is_none()
            && self.until_us.is_none()
            && self.agent.is_none()
            && self.change_id.is_none()
    }

    pub fn matches(&self, ev: &Event) -> bool {
        self.since_us.is_none_or(|t| ev.time_us >= t)
            && self.until_us.is_none_or(|t| ev.time_us < t)
            && self.agent.as_deref().is_none_or(|a| ev.actor.agent == a)
            && self.change_id.as_deref().is_none_or(|c| ev.change_id == c)
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// Why an export could not be written. The caller discards the partial output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("writing the export: {0}")]
    Io(#[from] io::Error),
    #[error("signing the export: {0}")]
    Sign(#[from] CheckpointError),
    #[error("event seq {seq} would be a line of {bytes} bytes, over the {MAX_LINE}-byte line limit of the export format")]
    LineTooLong { seq: u64, bytes: usize },
    /// The events fed do not form the export the header announced (a caller bug or a
    /// journal that changed under the export).
    #[error("inconsistent export: {0}")]
    Inconsistent(String),
}

/// Why [`verify_export`] did not accept a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The file is not a valid export; `line` (from 1) is the first line found bad.
    #[error("line {line}: {reason}")]
    Rejected { line: u64, reason: String },
    /// The file could not be read.
    #[error("reading the export: {0}")]
    Io(#[from] io::Error),
}

fn reject<T>(line: u64, reason: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::Rejected {
        line,
        reason: reason.into(),
    })
}

// ---------------------------------------------------------------------------------------
// JSON shapes, written

/// The header line, as written and read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    #[serde(rename = "type")]
    pub line_type: String,
    pub format: String,
    pub version: u64,
    /// `agent-ledger/<32 hex ledger ID>`.
    pub origin: String,
    pub exported_at_us: i64,
    pub filter: Filter,
    /// Whether the trailer's notes are signed.
    pub signed: bool,
    /// The Merkle tree the export is relative to: the first `tree_size` events.
    pub tree_size: u64,
    #[serde(with = "hex_hash")]
    pub tree_root: Hash,
}

impl Header {
    pub fn new(
        origin: String,
        exported_at_us: i64,
        filter: Filter,
        signed: bool,
        tree_size: u64,
        tree_root: Hash,
    ) -> Header {
        Header {
            line_type: "header".into(),
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            origin,
            exported_at_us,
            filter,
            signed,
            tree_size,
            tree_root,
        }
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    #[serde(rename = "type")]
    line_type: &'static str,
    seq: u64,
    prev: Hash,
    time_us: i64,
    actor: ActorOut<'a>,
    change_id: &'a str,
    correlation_id: Option<&'a str>,
    body: BodyOut<'a>,
    meta: &'a BTreeMap<String, String>,
    hash: Hash,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<ProofOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export_prev: Option<Option<Hash>>,
}

#[derive(Serialize)]
struct ActorOut<'a> {
    agent: &'a str,
    principal: Option<&'a str>,
    role: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum BodyOut<'a> {
    Genesis {
        ledger_id: String,
        format_version: u32,
    },
    Change {
        message: Option<&'a str>,
        reverts: Option<&'a str>,
        resources: ResourcesOut<'a>,
    },
    Check {
        name: &'a str,
        level: &'a str,
        passed: bool,
        detail: Option<&'a str>,
    },
    Approval {
        approver: &'a str,
        approved: bool,
        comment: Option<&'a str>,
    },
    Deployment {
        environment: &'a str,
        percent: u8,
        version: &'a str,
    },
    Failure {
        stage: &'a str,
        error: &'a str,
        exit_code: Option<i32>,
    },
    KillSwitch {
        engaged: bool,
        scope: &'a str,
        reason: &'a str,
    },
    Redaction {
        hash: Hash,
        reason: &'a str,
    },
    Checkpoint {
        size: u64,
        root: Hash,
    },
}

impl<'a> BodyOut<'a> {
    fn of(b: &'a Body) -> BodyOut<'a> {
        match b {
            Body::Genesis(g) => BodyOut::Genesis {
                ledger_id: hex::encode(g.ledger_id),
                format_version: g.format_version,
            },
            Body::Change(c) => BodyOut::Change {
                message: c.message.as_deref(),
                reverts: c.reverts.as_deref(),
                resources: ResourcesOut(&c.resources),
            },
            Body::Check(c) => BodyOut::Check {
                name: &c.name,
                level: &c.level,
                passed: c.passed,
                detail: c.detail.as_deref(),
            },
            Body::Approval(a) => BodyOut::Approval {
                approver: &a.approver,
                approved: a.approved,
                comment: a.comment.as_deref(),
            },
            Body::Deployment(d) => BodyOut::Deployment {
                environment: &d.environment,
                percent: d.percent,
                version: &d.version,
            },
            Body::Failure(f) => BodyOut::Failure {
                stage: &f.stage,
                error: &f.error,
                exit_code: f.exit_code,
            },
            Body::KillSwitch(k) => BodyOut::KillSwitch {
                engaged: k.engaged,
                scope: &k.scope,
                reason: &k.reason,
            },
            Body::Redaction(r) => BodyOut::Redaction {
                hash: r.hash,
                reason: &r.reason,
            },
            Body::Checkpoint(c) => BodyOut::Checkpoint {
                size: c.size,
                root: c.root,
            },
        }
    }
}

/// Serialises resource changes in place (no intermediate vector per event).
struct ResourcesOut<'a>(&'a [ResourceChange]);

impl Serialize for ResourcesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for rc in self.0 {
            seq.serialize_element(&ResourceOut {
                key: KeyOut {
                    namespace: &rc.key.namespace,
                    name: NameOut(&rc.key.name),
                },
                op: rc.op.as_str(),
                old: rc.old.as_ref().map(ContentOut::of),
                new: rc.new.as_ref().map(ContentOut::of),
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ResourceOut<'a> {
    key: KeyOut<'a>,
    op: &'static str,
    old: Option<ContentOut>,
    new: Option<ContentOut>,
}

#[derive(Serialize)]
struct KeyOut<'a> {
    namespace: &'a str,
    name: NameOut<'a>,
}

/// A name: a JSON string when the bytes are UTF-8, else `{"hex": "<lowercase hex>"}`.
struct NameOut<'a>(&'a Name);

impl Serialize for NameOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0.as_bytes()) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(self.0.as_bytes()))?;
                m.end()
            }
        }
    }
}

#[derive(Serialize)]
struct ContentOut {
    hash: Hash,
    mode: &'static str,
    size: u64,
}

impl ContentOut {
    fn of(c: &Content) -> ContentOut {
        ContentOut {
            hash: c.hash,
            mode: c.mode.as_str(),
            size: c.size,
        }
    }
}

#[derive(Serialize)]
struct ProofOut<'a> {
    leaf_index: u64,
    tree_size: u64,
    hashes: &'a [Hash],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    #[serde(rename = "type")]
    line_type: String,
    checkpoint: String,
    statement: String,
}

// ---------------------------------------------------------------------------------------
// JSON shapes, read (strict: every field present, nothing unknown, one text per value)

/// An `Option` field that must be present (as `null` or a value). With
/// `deserialize_with`, serde reports a missing field instead of defaulting it to `None`.
fn required<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// A field that may be absent but, when present, holds a value (not `null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field that may be absent, or present as `null` or a value.
fn present_nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A hash as exactly 64 lowercase hex digits.
#[derive(Clone, Copy, Debug)]
struct HexHash(Hash);

impl<'de> Deserialize<'de> for HexHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HexHash;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a hash: 64 lowercase hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HexHash, E> {
                if v.len() == 64 && is_lower_hex(v) {
                    if let Some(h) = Hash::from_hex(v) {
                        return Ok(HexHash(h));
                    }
                }
                Err(E::custom(format!(
                    "{:?} is not a hash (64 lowercase hex digits)",
                    Shorten(v)
                )))
            }
        }
        d.deserialize_str(V)
    }
}

mod hex_hash {
    use super::*;
    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        HexHash::deserialize(d).map(|h| h.0)
    }
}

/// A ledger ID as exactly 32 lowercase hex digits.
struct HexId([u8; 16]);

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HexId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ledger ID: 32 lowercase hex digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HexId, E> {
                let mut id = [0u8; 16];
                if v.len() == 32 && is_lower_hex(v) && hex::decode_to_slice(v, &mut id).is_ok() {
                    return Ok(HexId(id));
                }
                Err(E::custom(format!(
                    "{:?} is not a ledger ID (32 lowercase hex digits)",
                    Shorten(v)
                )))
            }
        }
        d.deserialize_str(V)
    }
}

/// A name: a string (its UTF-8 bytes), or `{"hex": ...}` for bytes that are not UTF-8
/// (lowercase hex; UTF-8 bytes in hex form are refused, so one name has one text).
struct NameIn(Vec<u8>);

impl<'de> Deserialize<'de> for NameIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NameIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a name: a string, or {\"hex\": ...} for bytes that are not UTF-8")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameIn, E> {
                Ok(NameIn(v.as_bytes().to_vec()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NameIn, A::Error> {
                let mut out = None;
                while let Some(k) = map.next_key::<String>()? {
                    if k != "hex" {
                        return Err(de::Error::unknown_field(&k, &["hex"]));
                    }
                    if out.is_some() {
                        return Err(de::Error::duplicate_field("hex"));
                    }
                    let h: String = map.next_value()?;
                    if !is_lower_hex(&h) {
                        return Err(de::Error::custom("name hex must be lowercase hex digits"));
                    }
                    let bytes = hex::decode(&h).map_err(de::Error::custom)?;
                    if std::str::from_utf8(&bytes).is_ok() {
                        return Err(de::Error::custom(
                            "a name that is valid UTF-8 must be written as a string, not hex",
                        ));
                    }
                    out = Some(bytes);
                }
                out.map(NameIn)
                    .ok_or_else(|| de::Error::missing_field("hex"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `meta`: an object of strings; a key given twice is an error (JSON parsers differ on
/// which one wins).
struct MetaIn(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for MetaIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaIn, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("meta key {k:?} appears twice")));
                    }
                    out.insert(k, v);
                }
                Ok(MetaIn(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(rename = "type")]
    _line_type: IgnoredAny,
    seq: u64,
    prev: HexHash,
    time_us: i64,
    actor: ActorIn,
    change_id: String,
    #[serde(deserialize_with = "required")]
    correlation_id: Option<String>,
    body: BodyIn,
    meta: MetaIn,
    hash: HexHash,
    #[serde(default, deserialize_with = "present")]
    proof: Option<ProofIn>,
    #[serde(default, deserialize_with = "present_nullable")]
    export_prev: Option<Option<HexHash>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorIn {
    agent: String,
    #[serde(deserialize_with = "required")]
    principal: Option<String>,
    #[serde(deserialize_with = "required")]
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum BodyIn {
    Genesis {
        ledger_id: HexId,
        format_version: u32,
    },
    Change {
        #[serde(deserialize_with = "required")]
        message: Option<String>,
        #[serde(deserialize_with = "required")]
        reverts: Option<String>,
        resources: Vec<ResourceIn>,
    },
    Check {
        name: String,
        level: String,
        passed: bool,
        #[serde(deserialize_with = "required")]
        detail: Option<String>,
    },
    Approval {
        approver: String,
        approved: bool,
        #[serde(deserialize_with = "required")]
        comment: Option<String>,
    },
    Deployment {
        environment: String,
        percent: u8,
        version: String,
    },
    Failure {
        stage: String,
        error: String,
        #[serde(deserialize_with = "required")]
        exit_code: Option<i32>,
    },
    KillSwitch {
        engaged: bool,
        scope: String,
        reason: String,
    },
    Redaction {
        hash: HexHash,
        reason: String,
    },
    Checkpoint {
        size: u64,
        root: HexHash,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceIn {
    key: KeyIn,
    op: OpIn,
    #[serde(deserialize_with = "required")]
    old: Option<ContentIn>,
    #[serde(deserialize_with = "required")]
    new: Option<ContentIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIn {
    namespace: String,
    name: NameIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OpIn {
    Create,
    Modify,
    Delete,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentIn {
    hash: HexHash,
    mode: ModeIn,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeIn {
    Regular,
    Executable,
    Symlink,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofIn {
    leaf_index: u64,
    tree_size: u64,
    hashes: Vec<HexHash>,
}

impl ContentIn {
    fn content(self) -> Content {
        Content {
            hash: self.hash.0,
            mode: match self.mode {
                ModeIn::Regular => Mode::Regular,
                ModeIn::Executable => Mode::Executable,
                ModeIn::Symlink => Mode::Symlink,
            },
            size: self.size,
        }
    }
}

impl EventIn {
    /// The event the line describes (its hash is for the caller to derive).
    fn event(self) -> Event {
        let body = match self.body {
            BodyIn::Genesis {
                ledger_id,
                format_version,
            } => Body::Genesis(Genesis {
                ledger_id: ledger_id.0,
                format_version,
            }),
            BodyIn::Change {
                message,
                reverts,
                resources,
            } => Body::Change(Change {
                message,
                reverts,
                resources: resources
                    .into_iter()
                    .map(|r| ResourceChange {
                        key: ResourceKey {
                            namespace: r.key.namespace,
                            name: Name(r.key.name.0),
                        },
                        op: match r.op {
                            OpIn::Create => Op::Create,
                            OpIn::Modify => Op::Modify,
                            OpIn::Delete => Op::Delete,
                        },
                        old: r.old.map(ContentIn::content),
                        new: r.new.map(ContentIn::content),
                    })
                    .collect(),
            }),
            BodyIn::Check {
                name,
                level,
                passed,
                detail,
            } => Body::Check(Check {
                name,
                level,
                passed,
                detail,
            }),
            BodyIn::Approval {
                approver,
                approved,
                comment,
            } => Body::Approval(Approval {
                approver,
                approved,
                comment,
            }),
            BodyIn::Deployment {
                environment,
                percent,
                version,
            } => Body::Deployment(Deployment {
                environment,
                percent,
                version,
            }),
            BodyIn::Failure {
                stage,
                error,
                exit_code,
            } => Body::Failure(Failure {
                stage,
                error,
                exit_code,
            }),
            BodyIn::KillSwitch {
                engaged,
                scope,
                reason,
            } => Body::KillSwitch(KillSwitch {
                engaged,
                scope,
                reason,
            }),
            BodyIn::Redaction { hash, reason } => Body::Redaction(Redaction {
                hash: hash.0,
                reason,
            }),
            BodyIn::Checkpoint { size, root } => {
                Body::Checkpoint(Checkpoint { size, root: root.0 })
            }
        };
        Event {
            seq: self.seq,
            prev: self.prev.0,
            time_us: self.time_us,
            actor: Actor {
                agent: self.actor.agent,
                principal: self.actor.principal,
                role: self.actor.role,
            },
            change_id: self.change_id,
            correlation_id: self.correlation_id,
            body,
            meta: self.meta.0,
        }
    }
}

/// Only the `type` of a line (other fields skipped without being kept).
#[derive(Deserialize)]
struct LineType {
    #[serde(rename = "type")]
    line_type: Option<String>,
}

/// Only the fields that identify a header's format, so an unknown version is reported
/// as such rather than as whatever field it changed.
#[derive(Deserialize)]
struct HeaderVersion {
    #[serde(rename = "type")]
    line_type: Option<String>,
    format: Option<String>,
    version: Option<serde_json::Value>,
}

/// Debug-prints at most 80 characters of untrusted text.
struct Shorten<'a>(&'a str);

impl fmt::Debug for Shorten<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(80) {
            None => write!(f, "{:?}", self.0),
            Some((i, _)) => write!(f, "{:?}...", &self.0[..i]),
        }
    }
}

/// serde_json's message without its "at line 1 column N" (every export line is one
/// JSON line; the caller names the file line).
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&suffix) {
        Some(m) => format!("{m} (column {})", e.column()),
        None => msg,
    }
}

// ---------------------------------------------------------------------------------------
// The export statement

/// The export statement note: what the trailer (signed or not) says about the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub origin: String,
    /// The tree size of the export's checkpoint.
    pub size: u64,
    /// Number of event lines.
    pub events: u64,
    /// BLAKE3 of the header line, its newline included.
    pub header: Hash,
    /// BLAKE3 of all event lines, each with its newline.
    pub lines: Hash,
}

impl Statement {
    pub fn to_text(&self) -> String {
        format!(
            "{STATEMENT_TITLE}\norigin {}\nsize {}\nevents {}\nheader {}\nlines {}\n",
            self.origin, self.size, self.events, self.header, self.lines
        )
    }

    /// Parses exactly the text [`Statement::to_text`] writes.
    pub fn parse(text: &str) -> Result<Statement, String> {
        let Some(body) = text.strip_suffix('\n') else {
            return Err("the statement does not end with a newline".into());
        };
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() != 6 {
            return Err(format!(
                "the statement has {} lines; it must have 6",
                lines.len()
            ));
        }
        if lines[0] != STATEMENT_TITLE {
            return Err(format!(
                "statement line 1 is {:?}, expected {STATEMENT_TITLE:?}",
                Shorten(lines[0])
            ));
        }
        let field = |i: usize, name: &str| -> Result<&str, String> {
            lines[i]
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| {
                    format!(
                        "statement line {} is {:?}, expected \"{name} ...\"",
                        i + 1,
                        Shorten(lines[i])
                    )
                })
        };
        let number = |i: usize, name: &str| -> Result<u64, String> {
            let t = field(i, name)?;
            t.parse::<u64>()
                .ok()
                .filter(|n| n.to_string() == t)
                .ok_or_else(|| {
                    format!(
                        "statement {name} {:?} is not a decimal number without leading zeros",
                        Shorten(t)
                    )
                })
        };
        let hash = |i: usize, name: &str| -> Result<Hash, String> {
            let t = field(i, name)?;
            (t.len() == 64 && is_lower_hex(t))
                .then(|| Hash::from_hex(t))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "statement {name} {:?} is not 64 lowercase hex digits",
                        Shorten(t)
                    )
                })
        };
        Ok(Statement {
            origin: field(1, "origin")?.to_string(),
            size: number(2, "size")?,
            events: number(3, "events")?,
            header: hash(4, "header")?,
            lines: hash(5, "lines")?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Writing

/// What [`JsonlWriter::finish`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    pub events: u64,
    pub tree_size: u64,
    pub root: Hash,
    pub signed: bool,
    /// Bytes written, trailer included.
    pub bytes: u64,
}

/// Writes a JSONL export line by line: create it with the header, feed it events in
/// `seq` order with [`JsonlWriter::event`], end it with [`JsonlWriter::finish`].
///
/// Memory stays bounded for an unfiltered export (one line buffer and a Merkle
/// frontier). A filtered export needs the whole tree for its proofs, given to
/// [`JsonlWriter::new`] (about 64 bytes per event).
pub struct JsonlWriter<W: Write> {
    out: W,
    header: Header,
    header_digest: Hash,
    lines: blake3::Hasher,
    buf: Vec<u8>,
    /// Event lines not yet hashed and written (hashed in large pieces, which BLAKE3
    /// spreads over SIMD lanes, and written in large writes).
    pending: Vec<u8>,
    proofs: Option<Tree>,
    frontier: Frontier,
    events: u64,
    last: Option<(u64, Hash)>,
    bytes: u64,
}

impl<W: Write> JsonlWriter<W> {
    /// Writes the header line. A filtered header (non-empty filter) needs `proofs`, the
    /// tree of exactly the header's `tree_size` leaves with root `tree_root`.
    pub fn new(mut out: W, header: Header, proofs: Option<Tree>) -> Result<Self, ExportError> {
        let filtered = !header.filter.is_empty();
        match (&proofs, filtered) {
            (None, true) => {
                return Err(ExportError::Inconsistent(
                    "a filtered export needs the Merkle tree for its proofs".into(),
                ))
            }
            (Some(_), false) => {
                return Err(ExportError::Inconsistent(
                    "an unfiltered export carries no proofs".into(),
                ))
            }
            (Some(t), true) if t.size() != header.tree_size || t.root() != header.tree_root => {
                return Err(ExportError::Inconsistent(format!(
                    "the proof tree (size {}, root {}) is not the header's (size {}, root {})",
                    t.size(),
                    t.root(),
                    header.tree_size,
                    header.tree_root
                )))
            }
            _ => {}
        }
        let mut buf = serde_json::to_vec(&header).map_err(io::Error::from)?;
        buf.push(b'\n');
        out.write_all(&buf)?;
        Ok(JsonlWriter {
            out,
            header_digest: Hash::from(blake3::hash(&buf)),
            header,
            lines: blake3::Hasher::new(),
            bytes: buf.len() as u64,
            buf,
            pending: Vec::with_capacity(PENDING_BYTES + (64 << 10)),
            proofs,
            frontier: Frontier::new(),
            events: 0,
            last: None,
        })
    }

    /// Writes one event line. Events must come in increasing `seq` order, all below the
    /// tree size; an unfiltered export must get every event from seq 0, a filtered one
    /// only events its filter matches.
    pub fn event(&mut self, event: &Event, hash: &Hash) -> Result<(), ExportError> {
        let seq = event.seq;
        let filtered = self.proofs.is_some();
        if seq >= self.header.tree_size {
            return Err(ExportError::Inconsistent(format!(
                "event seq {seq} is outside the export's tree of {} events",
                self.header.tree_size
            )));
        }
        match self.last {
            Some((s, _)) if seq <= s => {
                return Err(ExportError::Inconsistent(format!(
                    "event seq {seq} after seq {s}"
                )))
            }
            _ => {}
        }
        if !filtered && seq != self.events {
            return Err(ExportError::Inconsistent(format!(
                "an unfiltered export needs seq {} next, got {seq}",
                self.events
            )));
        }
        if filtered && !self.header.filter.matches(event) {
            return Err(ExportError::Inconsistent(format!(
                "event seq {seq} does not match the export's filter"
            )));
        }
        let proof_hashes = match &self.proofs {
            Some(t) => Some(t.proof(seq, self.header.tree_size).ok_or_else(|| {
                ExportError::Inconsistent(format!("no inclusion proof for seq {seq}"))
            })?),
            None => None,
        };
        let export_prev = filtered.then(|| self.last.map(|(_, h)| h));
        let start = self.pending.len();
        format_event_line(
            &mut self.pending,
            event,
            hash,
            proof_hashes
                .as_deref()
                .map(|h| (seq, self.header.tree_size, h)),
            export_prev,
        );
        let len = self.pending.len() - start;
        if len > MAX_LINE {
            self.pending.truncate(start);
            return Err(ExportError::LineTooLong { seq, bytes: len });
        }
        self.pending.push(b'\n');
        self.bytes += len as u64 + 1;
        if self.pending.len() >= PENDING_BYTES {
            self.flush_pending()?;
        }
        if !filtered {
            self.frontier.push(merkle::leaf_hash(hash));
        }
        self.events += 1;
        self.last = Some((seq, *hash));
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), ExportError> {
        self.lines.update(&self.pending);
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the trailer and returns the output. `head` is the hash of event
    /// `tree_size - 1`; `time_us` is the checkpoint's time. With `key` both notes are
    /// signed (the header must say `signed`).
    pub fn finish(
        mut self,
        head: Hash,
        time_us: i64,
        key: Option<&SigningKey>,
    ) -> Result<(W, ExportSummary), ExportError> {
        if key.is_some() != self.header.signed {
            return Err(ExportError::Inconsistent(format!(
                "the header says signed: {} but {} key was given",
                self.header.signed,
                if key.is_some() { "a" } else { "no" }
            )));
        }
        if self.proofs.is_none() {
            if self.events != self.header.tree_size {
                return Err(ExportError::Inconsistent(format!(
                    "an unfiltered export of {} events got {}",
                    self.header.tree_size, self.events
                )));
            }
            if self.frontier.root() != self.header.tree_root {
                return Err(ExportError::Inconsistent(format!(
                    "the events give root {}, the header says {}",
                    self.frontier.root(),
                    self.header.tree_root
                )));
            }
        }
        if let Some((s, h)) = self.last {
            if s + 1 == self.header.tree_size && h != head {
                return Err(ExportError::Inconsistent(format!(
                    "event seq {s} has hash {h}, the head given is {head}"
                )));
            }
        }
        self.flush_pending()?;
        let body = CheckpointBody {
            origin: self.header.origin.clone(),
            size: self.header.tree_size,
            root: self.header.tree_root,
            head,
            time_us,
        };
        let statement = Statement {
            origin: self.header.origin.clone(),
            size: self.header.tree_size,
            events: self.events,
            header: self.header_digest,
            lines: Hash::from(self.lines.finalize()),
        };
        let (checkpoint, statement) = match key {
            Some(k) => (
                body.sign(k)?,
                checkpoint::sign_note(&statement.to_text(), k)?,
            ),
            None => (body.to_text(), statement.to_text()),
        };
        let trailer = Trailer {
            line_type: "trailer".into(),
            checkpoint,
            statement,
        };
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &trailer).map_err(io::Error::from)?;
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.bytes += self.buf.len() as u64;
        let summary = ExportSummary {
            events: self.events,
            tree_size: self.header.tree_size,
            root: self.header.tree_root,
            signed: self.header.signed,
            bytes: self.bytes,
        };
        Ok((self.out, summary))
    }
}

/// The event line of an unfiltered export for one event (without its newline): every
/// field of the event and its `hash`, as `docs/EXPORT.md` section 4 shows.
pub fn event_line(event: &Event, hash: &Hash) -> Vec<u8> {
    let mut out = Vec::new();
    format_event_line(&mut out, event, hash, None, None);
    out
}

/// An event line as serde_json writes the documented shapes (`proof`: seq, tree size,
/// hashes); the writer's own formatter must produce exactly these bytes, which the tests
/// check.
#[doc(hidden)]
pub fn event_line_reference(
    event: &Event,
    hash: &Hash,
    proof: Option<(u64, u64, &[Hash])>,
    export_prev: Option<Option<Hash>>,
) -> Vec<u8> {
    serde_json::to_vec(&EventOut {
        line_type: "event",
        seq: event.seq,
        prev: event.prev,
        time_us: event.time_us,
        actor: ActorOut {
            agent: &event.actor.agent,
            principal: event.actor.principal.as_deref(),
            role: event.actor.role.as_deref(),
        },
        change_id: &event.change_id,
        correlation_id: event.correlation_id.as_deref(),
        body: BodyOut::of(&event.body),
        meta: &event.meta,
        hash: *hash,
        proof: proof.map(|(leaf_index, tree_size, hashes)| ProofOut {
            leaf_index,
            tree_size,
            hashes,
        }),
        export_prev,
    })
    .expect("serialising to memory cannot fail")
}

/// [`event_line`] with a filtered export's `proof` (leaf index, tree size, hashes) and
/// `export_prev`, appended to `out`.
#[doc(hidden)]
pub fn format_event_line(
    out: &mut Vec<u8>,
    event: &Event,
    hash: &Hash,
    proof: Option<(u64, u64, &[Hash])>,
    export_prev: Option<Option<Hash>>,
) {
    let o = out;
    o.extend_from_slice(b"{\"type\":\"event\",\"seq\":");
    json_u64(o, event.seq);
    o.extend_from_slice(b",\"prev\":");
    json_hex(o, &event.prev.0);
    o.extend_from_slice(b",\"time_us\":");
    json_i64(o, event.time_us);
    o.extend_from_slice(b",\"actor\":{\"agent\":");
    json_str(o, &event.actor.agent);
    o.extend_from_slice(b",\"principal\":");
    json_opt_str(o, event.actor.principal.as_deref());
    o.extend_from_slice(b",\"role\":");
    json_opt_str(o, event.actor.role.as_deref());
    o.extend_from_slice(b"},\"change_id\":");
    json_str(o, &event.change_id);
    o.extend_from_slice(b",\"correlation_id\":");
    json_opt_str(o, event.correlation_id.as_deref());
    o.extend_from_slice(b",\"body\":{\"kind\":\"");
    o.extend_from_slice(event.body.kind().as_bytes());
    o.push(b'"');
    match &event.body {
        Body::Genesis(g) => {
            o.extend_from_slice(b",\"ledger_id\":");
            json_hex(o, &g.ledger_id);
            o.extend_from_slice(b",\"format_version\":");
            json_u64(o, u64::from(g.format_version));
        }
        Body::Change(c) => {
            o.extend_from_slice(b",\"message\":");
            json_opt_str(o, c.message.as_deref());
            o.extend_from_slice(b",\"reverts\":");
            json_opt_str(o, c.reverts.as_deref());
            o.extend_from_slice(b",\"resources\":[");
            for (i, rc) in c.resources.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                o.extend_from_slice(b"{\"key\":{\"namespace\":");
                json_str(o, &rc.key.namespace);
                o.extend_from_slice(b",\"name\":");
                match std::str::from_utf8(rc.key.name.as_bytes()) {
                    Ok(text) => json_str(o, text),
                    Err(_) => {
                        o.extend_from_slice(b"{\"hex\":");
                        json_hex(o, rc.key.name.as_bytes());
                        o.push(b'}');
                    }
                }
                o.extend_from_slice(b"},\"op\":\"");
                o.extend_from_slice(rc.op.as_str().as_bytes());
                o.extend_from_slice(b"\",\"old\":");
                json_content(o, rc.old.as_ref());
                o.extend_from_slice(b",\"new\":");
                json_content(o, rc.new.as_ref());
                o.push(b'}');
            }
            o.push(b']');
        }
        Body::Check(c) => {
            o.extend_from_slice(b",\"name\":");
            json_str(o, &c.name);
            o.extend_from_slice(b",\"level\":");
            json_str(o, &c.level);
            o.extend_from_slice(b",\"passed\":");
            json_bool(o, c.passed);
            o.extend_from_slice(b",\"detail\":");
            json_opt_str(o, c.detail.as_deref());
        }
        Body::Approval(a) => {
            o.extend_from_slice(b",\"approver\":");
            json_str(o, &a.approver);
            o.extend_from_slice(b",\"approved\":");
            json_bool(o, a.approved);
            o.extend_from_slice(b",\"comment\":");
            json_opt_str(o, a.comment.as_deref());
        }
        Body::Deployment(d) => {
            o.extend_from_slice(b",\"environment\":");
            json_str(o, &d.environment);
            o.extend_from_slice(b",\"percent\":");
            json_u64(o, u64::from(d.percent));
            o.extend_from_slice(b",\"version\":");
            json_str(o, &d.version);
        }
        Body::Failure(f) => {
            o.extend_from_slice(b",\"stage\":");
            json_str(o, &f.stage);
            o.extend_from_slice(b",\"error\":");
            json_str(o, &f.error);
            o.extend_from_slice(b",\"exit_code\":");
            match f.exit_code {
                Some(c) => json_i64(o, i64::from(c)),
                None => o.extend_from_slice(b"null"),
            }
        }
        Body::KillSwitch(k) => {
            o.extend_from_slice(b",\"engaged\":");
            json_bool(o, k.engaged);
            o.extend_from_slice(b",\"scope\":");
            json_str(o, &k.scope);
            o.extend_from_slice(b",\"reason\":");
            json_str(o, &k.reason);
        }
        Body::Redaction(r) => {
            o.extend_from_slice(b",\"hash\":");
            json_hex(o, &r.hash.0);
            o.extend_from_slice(b",\"reason\":");
            json_str(o, &r.reason);
        }
        Body::Checkpoint(c) => {
            o.extend_from_slice(b",\"size\":");
            json_u64(o, c.size);
            o.extend_from_slice(b",\"root\":");
            json_hex(o, &c.root.0);
        }
    }
    o.extend_from_slice(b"},\"meta\":{");
    for (i, (k, v)) in event.meta.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        json_str(o, k);
        o.push(b':');
        json_str(o, v);
    }
    o.extend_from_slice(b"},\"hash\":");
    json_hex(o, &hash.0);
    if let Some((leaf_index, tree_size, hashes)) = proof {
        o.extend_from_slice(b",\"proof\":{\"leaf_index\":");
        json_u64(o, leaf_index);
        o.extend_from_slice(b",\"tree_size\":");
        json_u64(o, tree_size);
        o.extend_from_slice(b",\"hashes\":[");
        for (i, h) in hashes.iter().enumerate() {
            if i > 0 {
                o.push(b',');
            }
            json_hex(o, &h.0);
        }
        o.extend_from_slice(b"]}");
    }
    if let Some(p) = export_prev {
        o.extend_from_slice(b",\"export_prev\":");
        match p {
            Some(h) => json_hex(o, &h.0),
            None => o.extend_from_slice(b"null"),
        }
    }
    o.push(b'}');
}

fn json_u64(o: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    o.extend_from_slice(&buf[i..]);
}

fn json_i64(o: &mut Vec<u8>, v: i64) {
    if v < 0 {
        o.push(b'-');
    }
    json_u64(o, v.unsigned_abs());
}

fn json_bool(o: &mut Vec<u8>, v: bool) {
    o.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Bytes as a quoted lowercase hex string.
fn json_hex(o: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    o.reserve(bytes.len() * 2 + 2);
    o.push(b'"');
    for &b in bytes {
        o.push(DIGITS[usize::from(b >> 4)]);
        o.push(DIGITS[usize::from(b & 0x0f)]);
    }
    o.push(b'"');
}

/// A JSON string exactly as serde_json writes it: `"` and `\` escaped, the control
/// characters below 0x20 as `\b \t \n \f \r` or `\u00xx`, everything else as is.
fn json_str(o: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    o.push(b'"');
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        if c >= 0x20 && c != b'"' && c != b'\\' {
            continue;
        }
        o.extend_from_slice(&b[from..i]);
        from = i + 1;
        match c {
            b'"' => o.extend_from_slice(b"\\\""),
            b'\\' => o.extend_from_slice(b"\\\\"),
            0x08 => o.extend_from_slice(b"\\b"),
            0x09 => o.extend_from_slice(b"\\t"),
            0x0a => o.extend_from_slice(b"\\n"),
            0x0c => o.extend_from_slice(b"\\f"),
            0x0d => o.extend_from_slice(b"\\r"),
            _ => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                o.extend_from_slice(b"\\u00");
                o.push(DIGITS[usize::from(c >> 4)]);
                o.push(DIGITS[usize::from(c & 0x0f)]);
            }
        }
    }
    o.extend_from_slice(&b[from..]);
    o.push(b'"');
}

fn json_opt_str(o: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(o, s),
        None => o.extend_from_slice(b"null"),
    }
}

fn json_content(o: &mut Vec<u8>, c: Option<&Content>) {
    let Some(c) = c else {
        o.extend_from_slice(b"null");
        return;
    };
    o.extend_from_slice(b"{\"hash\":");
    json_hex(o, &c.hash.0);
    o.extend_from_slice(b",\"mode\":\"");
    o.extend_from_slice(c.mode.as_str().as_bytes());
    o.extend_from_slice(b"\",\"size\":");
    json_u64(o, c.size);
    o.push(b'}');
}

/// Parses one event line (without its newline) strictly, as [`verify_export`] does:
/// the event its fields describe and the hash its `hash` field states. The caller
/// compares that with [`Event::hash`]: nothing here trusts the stated hash. Lines of
/// filtered exports (with `proof` and `export_prev`) are accepted; those fields are not
/// checked here.
pub fn parse_event_line(line: &[u8]) -> Result<(Event, Hash), String> {
    let lt: LineType = serde_json::from_slice(line).map_err(|e| json_reason(&e))?;
    if lt.line_type.as_deref() != Some("event") {
        return Err("not an event line (\"type\" is not \"event\")".into());
    }
    let mut ev: EventIn = serde_json::from_slice(line).map_err(|e| json_reason(&e))?;
    ev.proof = None;
    ev.export_prev = None;
    let stated = ev.hash.0;
    Ok((ev.event(), stated))
}

// ---------------------------------------------------------------------------------------
// CSV

/// The CSV header row.
pub const CSV_COLUMNS: [&str; 17] = [
    "seq",
    "time",
    "time_us",
    "change_id",
    "agent",
    "principal",
    "role",
    "correlation_id",
    "op",
    "namespace",
    "path",
    "old_hash",
    "new_hash",
    "old_mode",
    "new_mode",
    "old_size",
    "new_size",
];

/// Writes one CSV row (RFC 4180, `\r\n` line ends) per resource operation, for
/// spreadsheets. Not evidence: the JSONL export is. Text that a spreadsheet would run
/// as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is prefixed
/// with `'`.
pub struct CsvWriter<W: Write> {
    out: W,
    rows: u64,
    row: String,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
        out.write_all(b"\r\n")?;
        Ok(CsvWriter {
            out,
            rows: 0,
            row: String::new(),
        })
    }

    /// Writes the rows of one event (none unless it changed resources).
    pub fn event(&mut self, ev: &Event) -> io::Result<()> {
        for rc in ev.resources() {
            self.row.clear();
            let r = &mut self.row;
            push_plain(r, &ev.seq.to_string());
            push_plain(r, &format_time(ev.time_us));
            push_plain(r, &ev.time_us.to_string());
            push_text(r, &ev.change_id);
            push_text(r, &ev.actor.agent);
            push_text(r, ev.actor.principal.as_deref().unwrap_or(""));
            push_text(r, ev.actor.role.as_deref().unwrap_or(""));
            push_text(r, ev.correlation_id.as_deref().unwrap_or(""));
            push_plain(r, rc.op.as_str());
            push_text(r, &rc.key.namespace);
            push_text(r, &rc.key.name.display());
            let hash = |c: &Option<Content>| c.map(|c| c.hash.to_hex()).unwrap_or_default();
            let mode = |c: &Option<Content>| c.map(|c| c.mode.as_str()).unwrap_or_default();
            let size = |c: &Option<Content>| c.map(|c| c.size.to_string()).unwrap_or_default();
            push_plain(r, &hash(&rc.old));
            push_plain(r, &hash(&rc.new));
            push_plain(r, mode(&rc.old));
            push_plain(r, mode(&rc.new));
            push_plain(r, &size(&rc.old));
            push_plain(r, &size(&rc.new));
            r.pop(); // the last separator
            r.push_str("\r\n");
            self.out.write_all(r.as_bytes())?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Flushes and returns the output and the number of data rows.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.out.flush()?;
        Ok((self.out, self.rows))
    }
}

/// A value that never needs quoting (numbers, hashes, fixed words).
fn push_plain(row: &mut String, v: &str) {
    row.push_str(v);
    row.push(',');
}

/// Free text: formula-looking text gets a `'` prefix; quoted when it holds a comma,
/// quote, CR or LF (quotes doubled).
fn push_text(row: &mut String, v: &str) {
    let guard = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = v.contains([',', '"', '\r', '\n']) || guard && v.contains(' ');
    if quote {
        row.push('"');
    }
    if guard {
        row.push('\'');
    }
    for c in v.chars() {
        if c == '"' {
            row.push('"');
        }
        row.push(c);
    }
    if quote {
        row.push('"');
    }
    row.push(',');
}

/// UTC microseconds as RFC 3339 with microseconds.
pub fn format_time(us: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| format!("@{us}us"))
}

// ---------------------------------------------------------------------------------------
// Reading and verifying

/// What [`verify_export`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    /// Number of event lines.
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The trailer's checkpoint (opened with the key when one was given).
    pub checkpoint: CheckpointBody,
    /// Whether the signatures were checked (a key was given and the file is signed).
    pub signature_checked: bool,
    /// Total lines, header and trailer included.
    pub lines: u64,
}

/// How one line read ended.
enum LineRead {
    Line,
    Eof,
    /// Bytes at the end of the file with no newline after them.
    Unterminated,
    TooLong,
}

/// Reads one line (without its `\n`) into `buf`, at most `max` bytes.
fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Unterminated
            });
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if buf.len() + i > max {
                    return Ok(LineRead::TooLong);
                }
                buf.extend_from_slice(&avail[..i]);
                r.consume(i + 1);
                return Ok(LineRead::Line);
            }
            None => {
                let n = avail.len();
                if buf.len() + n > max {
                    return Ok(LineRead::TooLong);
                }
                buf.extend_from_slice(avail);
                r.consume(n);
            }
        }
    }
}

/// Splits a signed note into its text and signature block; `None` without a block.
fn note_text(note: &str) -> Option<&str> {
    let i = note.rfind("\n\n")?;
    let sigs = &note[i + 2..];
    (!sigs.is_empty() && sigs.ends_with('\n')).then_some(&note[..i + 1])
}

/// Checks a JSONL export: re-derives every event hash from the line's fields, the
/// `prev` links and gap-free seqs from 0 (unfiltered) or the increasing seqs, the
/// `export_prev` links and inclusion proofs against the header's tree (filtered), each
/// event against the filter, and the trailer: the checkpoint and statement notes
/// (signatures with `key`), that they state the header's tree, the number of event
/// lines and the digests of the header and event lines. Nothing after the trailer.
///
/// Lines longer than `max_line` bytes ([`MAX_LINE`] normally) are refused without
/// being read whole. Never panics on any input.
pub fn verify_export(
    input: &mut dyn BufRead,
    key: Option<&VerifierKey>,
    max_line: usize,
) -> Result<Verified, VerifyError> {
    verify_inner(input, key, max_line, None, Tuning::default())
}

/// [`verify_export`] for a seekable input (a file): reads the trailer first, so that an
/// edited header is named as line 1 even when the edit also makes later lines look
/// wrong (a changed filter or tree). The trailer is trusted for this only if its
/// statement opens (with `key` when given); everything is still checked in order.
pub fn verify_export_seekable<R: BufRead + Seek>(
    input: &mut R,
    key: Option<&VerifierKey>,
    max_line: usize,
) -> Result<Verified, VerifyError> {
    let hint = last_line(input, max_line)?;
    input.seek(SeekFrom::Start(0))?;
    verify_inner(input, key, max_line, hint, Tuning::default())
}

/// The last line of a file that ends with a newline (without it), if it is at most
/// `max` bytes long.
fn last_line<R: Read + Seek>(r: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    let len = r.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    r.seek(SeekFrom::Start(len - 1))?;
    r.read_exact(&mut last)?;
    if last[0] != b'\n' {
        return Ok(None);
    }
    // Read backwards from before the final newline, chunk by chunk, until a newline.
    let end = len - 1;
    let mut pos = end;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        if pos == 0 {
            break;
        }
        let n = pos.min(64 << 10) as usize;
        pos -= n as u64;
        let mut chunk = vec![0u8; n];
        r.seek(SeekFrom::Start(pos))?;
        r.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            total += n - i - 1;
            chunks.push(chunk.split_off(i + 1));
            break;
        }
        total += n;
        chunks.push(chunk);
        if total > max {
            return Ok(None);
        }
    }
    if total > max {
        return Ok(None);
    }
    let mut line = Vec::with_capacity(total);
    for c in chunks.iter().rev() {
        line.extend_from_slice(c);
    }
    Ok(Some(line))
}

/// How [`verify_export`] spreads its work: lines are read in batches of about
/// `batch_bytes`, parsed and hashed by `threads` worker threads (none: on the calling
/// thread). The verdict never depends on these; tests vary them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub batch_bytes: usize,
    pub threads: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            batch_bytes: 1 << 20,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        }
    }
}

/// [`verify_export_seekable`] (with `seekable`) or [`verify_export`] with the work spread
/// as `tuning` says; for tests that check the verdict does not depend on it.
#[doc(hidden)]
pub fn verify_export_tuned<R: BufRead + Seek>(
    input: &mut R,
    key: Option<&VerifierKey>,
    max_line: usize,
    seekable: bool,
    tuning: Tuning,
) -> Result<Verified, VerifyError> {
    let hint = if seekable {
        let h = last_line(input, max_line)?;
        input.seek(SeekFrom::Start(0))?;
        h
    } else {
        None
    };
    verify_inner(input, key, max_line, hint, tuning)
}

/// What the per-line checks need to know about the export.
struct LineCtx {
    /// A hasher set up for event hashes (cloned per line: the context key is derived
    /// once).
    event_hasher: blake3::Hasher,
    filter: Filter,
    filtered: bool,
    size: u64,
    root: Hash,
}

/// A line after the header, as far as it can be judged on its own.
enum LineKind {
    Event(LineEvent),
    Trailer,
    Reject(String),
}

/// An event line that parsed: its fields that later checks need, and what could be
/// checked without the lines before it.
struct LineEvent {
    seq: u64,
    prev: Hash,
    /// The hash re-derived from the fields.
    hash: Hash,
    /// The line's `hash` field.
    stated: Hash,
    /// Merkle leaf of `hash` (unfiltered exports).
    leaf: Hash,
    genesis: Option<[u8; 16]>,
    /// Whether the event matches the header's filter.
    matches: bool,
    proof: Option<ProofCheck>,
    export_prev: Option<Option<Hash>>,
}

struct ProofCheck {
    leaf_index: u64,
    tree_size: u64,
    /// `leaf_index` and `tree_size` are the event's seq and the header's tree size, and
    /// the proof leads from the event's leaf to the header's root.
    verifies: bool,
}

impl Filter {
    fn matches_parts(&self, time_us: i64, agent: &[u8], change_id: &[u8]) -> bool {
        self.since_us.is_none_or(|t| time_us >= t)
            && self.until_us.is_none_or(|t| time_us < t)
            && self.agent.as_deref().is_none_or(|a| agent == a.as_bytes())
            && self
                .change_id
                .as_deref()
                .is_none_or(|c| change_id == c.as_bytes())
    }
}

/// The fields of one event line that the checks use, however it was parsed.
#[derive(Debug, PartialEq, Eq)]
struct Fields<'a> {
    seq: u64,
    prev: Hash,
    /// Re-derived from the line's fields.
    hash: Hash,
    stated: Hash,
    genesis: Option<[u8; 16]>,
    matches: bool,
    /// Leaf index, tree size, hashes.
    proof: Option<(u64, u64, Cow<'a, [Hash]>)>,
    export_prev: Option<Option<Hash>>,
}

/// A worker's buffers for the fast path, reused from line to line.
#[derive(Default)]
struct Scratch {
    /// The canonical bytes of the line's event.
    enc: Vec<u8>,
    proofs: fastline::ProofCache,
    /// The event hasher, reset for each line (cloning it per line costs more).
    hasher: Option<blake3::Hasher>,
}

/// The fast path: `None` unless the line is in the writer's exact layout.
fn fast_fields<'s>(line: &[u8], cx: &LineCtx, scratch: &'s mut Scratch) -> Option<Fields<'s>> {
    let Scratch {
        enc,
        proofs,
        hasher,
    } = scratch;
    let f = fastline::parse(line, enc, proofs)?;
    let h = match hasher {
        Some(h) => h.reset(),
        None => hasher.insert(cx.event_hasher.clone()),
    };
    h.update(enc);
    let hash = Hash::from(h.finalize());
    let matches = !cx.filtered
        || cx.filter.matches_parts(
            f.time_us,
            &enc[f.agent.0..f.agent.1],
            &enc[f.change_id.0..f.change_id.1],
        );
    Some(Fields {
        seq: f.seq,
        prev: f.prev,
        hash,
        stated: f.stated,
        genesis: f.genesis,
        matches,
        proof: f
            .proof
            .map(|(leaf, size, n)| (leaf, size, Cow::Borrowed(proofs.hashes(n)))),
        export_prev: f.export_prev,
    })
}

/// A line that is not a valid event line.
enum NotEvent {
    Trailer,
    Reject(String),
}

/// The general path (serde), which names what is wrong with a line; `Err` is the line's
/// verdict when it is not a valid event line.
fn general_fields(line: &[u8], cx: &LineCtx) -> Result<Fields<'static>, NotEvent> {
    let lt: LineType = serde_json::from_slice(line)
        .map_err(|e| NotEvent::Reject(format!("not a JSON object: {}", json_reason(&e))))?;
    match lt.line_type.as_deref() {
        Some("event") => {}
        Some("trailer") => return Err(NotEvent::Trailer),
        Some("header") => return Err(NotEvent::Reject("a second header".into())),
        Some(t) => {
            return Err(NotEvent::Reject(format!(
                "unknown line type {:?}",
                Shorten(t)
            )))
        }
        None => return Err(NotEvent::Reject("the line has no \"type\"".into())),
    }
    let mut ev: EventIn = serde_json::from_slice(line)
        .map_err(|e| NotEvent::Reject(format!("malformed event line: {}", json_reason(&e))))?;
    let stated = ev.hash.0;
    let proof = ev.proof.take().map(|p| {
        (
            p.leaf_index,
            p.tree_size,
            Cow::Owned(p.hashes.iter().map(|h| h.0).collect()),
        )
    });
    let export_prev = ev.export_prev.take().map(|p| p.map(|h| h.0));
    let event = ev.event();
    let bytes = ledger::encode_canonical(&event)
        .map_err(|e| NotEvent::Reject(format!("event seq {} cannot be encoded: {e}", event.seq)))?;
    let genesis = match &event.body {
        Body::Genesis(g) => Some(g.ledger_id),
        _ => None,
    };
    Ok(Fields {
        seq: event.seq,
        prev: event.prev,
        hash: Hash::of_event_bytes(&bytes),
        stated,
        genesis,
        matches: !cx.filtered || cx.filter.matches(&event),
        proof,
        export_prev,
    })
}

/// Parses one event line (without its newline) by the fast path, if it takes it, and
/// by the general path, for tests that check both agree: each side is the `Debug` text
/// of the fields the verifier uses (the general side's `Err` is its verdict), with
/// `filter` deciding the `matches` field.
#[doc(hidden)]
pub fn event_line_paths(line: &[u8], filter: &Filter) -> (Option<String>, Result<String, String>) {
    let cx = LineCtx {
        event_hasher: blake3::Hasher::new_derive_key(ledger::EVENT_HASH_CONTEXT),
        filter: filter.clone(),
        filtered: !filter.is_empty(),
        size: 0,
        root: Hash::ZERO,
    };
    let fast = fast_fields(line, &cx, &mut Scratch::default()).map(|f| format!("{f:?}"));
    let general = match general_fields(line, &cx) {
        Ok(f) => Ok(format!("{f:?}")),
        Err(NotEvent::Reject(r)) => Err(r),
        Err(NotEvent::Trailer) => Err("a trailer".into()),
    };
    (fast, general)
}

/// Judges one line after the header on its own: the fast path for the writer's exact
/// layout, else the general parser (which names what is wrong). `proofs` checks the
/// inclusion proofs of a filtered export against the header's tree; it keeps the last
/// path it accepted, so consecutive lines hash only where their paths differ.
fn examine(
    line: &[u8],
    cx: &LineCtx,
    scratch: &mut Scratch,
    proofs: &mut merkle::InclusionVerifier,
) -> LineKind {
    let f = match fast_fields(line, cx, scratch) {
        Some(f) => f,
        None => match general_fields(line, cx) {
            Ok(f) => f,
            Err(NotEvent::Trailer) => return LineKind::Trailer,
            Err(NotEvent::Reject(r)) => return LineKind::Reject(r),
        },
    };
    let Fields {
        seq,
        prev,
        hash,
        stated,
        genesis,
        matches,
        proof,
        export_prev,
    } = f;
    let proof = proof.map(|(leaf_index, tree_size, hashes)| ProofCheck {
        leaf_index,
        tree_size,
        verifies: cx.filtered
            && leaf_index == seq
            && tree_size == cx.size
            && proofs.verify(&merkle::leaf_hash(&hash), seq, &hashes),
    });
    LineKind::Event(LineEvent {
        seq,
        prev,
        hash,
        stated,
        leaf: if cx.filtered {
            Hash::ZERO
        } else {
            merkle::leaf_hash(&hash)
        },
        genesis,
        matches,
        proof,
        export_prev,
    })
}

/// How the input went on after a batch's last line.
enum End {
    Eof,
    /// Bytes with no newline after them, then the end of the file.
    Unterminated,
    /// A line longer than the limit (not read whole).
    TooLong,
    Io(io::Error),
}

/// Consecutive whole lines of the file.
struct Batch {
    data: Vec<u8>,
    /// Each line's bytes in `data` (without the newline, which follows each).
    lines: Vec<(usize, usize)>,
    /// Set on the last batch: how the input ended after its lines.
    end: Option<End>,
}

/// Cuts the input into batches of whole lines.
struct Batcher<'r> {
    input: &'r mut dyn BufRead,
    carry: Vec<u8>,
    max_line: usize,
    target: usize,
    done: bool,
}

impl Batcher<'_> {
    fn next_batch(&mut self) -> Batch {
        let mut data = std::mem::take(&mut self.carry);
        data.reserve(
            self.target
                .min(self.max_line.saturating_add(1))
                .saturating_sub(data.len()),
        );
        let mut lines = Vec::new();
        let mut line_start = 0;
        let mut scan_from = 0;
        let end = loop {
            while let Some(k) = memchr::memchr(b'\n', &data[scan_from..]) {
                let line_end = scan_from + k;
                if line_end - line_start > self.max_line {
                    break;
                }
                lines.push((line_start, line_end));
                line_start = line_end + 1;
                scan_from = line_start;
            }
            // A line (complete or not) over the limit ends the input here.
            let partial = data.len() - line_start;
            if partial > self.max_line {
                break Some(End::TooLong);
            }
            scan_from = data.len();
            if !lines.is_empty() && data.len() >= self.target {
                self.carry = data[line_start..].to_vec();
                data.truncate(line_start);
                break None;
            }
            match self.input.fill_buf() {
                Ok([]) => {
                    break Some(if line_start == data.len() {
                        End::Eof
                    } else {
                        End::Unterminated
                    })
                }
                Ok(avail) => {
                    // Never take more than a line over the limit in one go.
                    let take = avail
                        .len()
                        .min(self.max_line.saturating_add(1).max(1 << 16));
                    data.extend_from_slice(&avail[..take]);
                    self.input.consume(take);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(End::Io(e)),
            }
        };
        if end.is_some() {
            self.done = true;
        }
        Batch { data, lines, end }
    }
}

/// Batches in file order with each line examined, by worker threads or in place.
struct Pipeline<'s, 'r, 'c> {
    batcher: Batcher<'r>,
    cx: &'c LineCtx,
    scratch: Scratch,
    jobs: Option<std::sync::mpsc::SyncSender<(u64, Batch)>>,
    results: Option<std::sync::mpsc::Receiver<(u64, Batch, Vec<LineKind>)>>,
    ready: BTreeMap<u64, (Batch, Vec<LineKind>)>,
    sent: u64,
    next: u64,
    in_flight: u64,
    _scope: std::marker::PhantomData<&'s ()>,
}

/// Examines a batch's lines up to the first that is not an event (the verifier stops
/// there). The batch's lines are consecutive events, so one proof verifier for the batch
/// shares the upper paths of their proofs.
fn examine_batch(batch: &Batch, cx: &LineCtx, scratch: &mut Scratch) -> Vec<LineKind> {
    let mut out = Vec::with_capacity(batch.lines.len());
    let mut proofs = merkle::InclusionVerifier::new(cx.size, cx.root);
    for &(a, b) in &batch.lines {
        let k = examine(&batch.data[a..b], cx, scratch, &mut proofs);
        let stop = !matches!(k, LineKind::Event(_));
        out.push(k);
        if stop {
            break;
        }
    }
    out
}

impl<'s, 'r, 'c> Pipeline<'s, 'r, 'c> {
    fn start<'e>(
        scope: &'s std::thread::Scope<'s, 'e>,
        input: &'r mut dyn BufRead,
        max_line: usize,
        tuning: Tuning,
        cx: &'c LineCtx,
    ) -> Pipeline<'s, 'r, 'c>
    where
        'c: 's,
    {
        let mut p = Pipeline {
            batcher: Batcher {
                input,
                carry: Vec::new(),
                max_line,
                target: tuning.batch_bytes.max(1),
                done: false,
            },
            cx,
            scratch: Scratch::default(),
            jobs: None,
            results: None,
            ready: BTreeMap::new(),
            sent: 0,
            next: 0,
            in_flight: 0,
            _scope: std::marker::PhantomData,
        };
        if tuning.threads > 0 {
            let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<(u64, Batch)>(tuning.threads);
            let (res_tx, res_rx) = std::sync::mpsc::channel();
            let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
            let mut started = 0u64;
            for _ in 0..tuning.threads {
                let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
                let spawned = std::thread::Builder::new()
                    .name("verify-export".into())
                    .spawn_scoped(scope, move || {
                        let mut scratch = Scratch::default();
                        loop {
                            let job = match job_rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok((i, batch)) = job else { return };
                            let kinds = examine_batch(&batch, cx, &mut scratch);
                            if res_tx.send((i, batch, kinds)).is_err() {
                                return;
                            }
                        }
                    });
                // Without threads to spare, the work is done with fewer (or none).
                if spawned.is_err() {
                    break;
                }
                started += 1;
            }
            if started > 0 {
                p.jobs = Some(job_tx);
                p.results = Some(res_rx);
                p.in_flight = 2 * started + 2;
            }
        }
        p
    }

    /// Reads batches ahead for the workers.
    fn fill(&mut self) {
        if let Some(jobs) = &self.jobs {
            while !self.batcher.done && self.sent - self.next < self.in_flight {
                let b = self.batcher.next_batch();
                if jobs.send((self.sent, b)).is_err() {
                    return;
                }
                self.sent += 1;
            }
        }
    }

    /// The next batch and its lines' verdicts; `None` after the last batch.
    fn next(&mut self) -> Option<(Batch, Vec<LineKind>)> {
        if self.jobs.is_none() {
            if self.batcher.done {
                return None;
            }
            let b = self.batcher.next_batch();
            let k = examine_batch(&b, self.cx, &mut self.scratch);
            return Some((b, k));
        }
        self.fill();
        if self.next == self.sent {
            return None;
        }
        loop {
            if let Some(x) = self.ready.remove(&self.next) {
                self.next += 1;
                self.fill();
                return Some(x);
            }
            let (i, b, k) = self.results.as_ref()?.recv().ok()?;
            self.ready.insert(i, (b, k));
        }
    }

    /// The next batch, examined or not (only its shape is needed).
    fn next_raw(&mut self) -> Option<Batch> {
        if self.jobs.is_none() {
            if self.batcher.done {
                return None;
            }
            return Some(self.batcher.next_batch());
        }
        self.next().map(|(b, _)| b)
    }
}

impl Drop for Pipeline<'_, '_, '_> {
    fn drop(&mut self) {
        // Workers stop when the job queue closes; results still queued are dropped.
        self.jobs = None;
    }
}

/// The header digest a trailer line's statement states, when the statement can be
/// read (and, with a key, opens).
fn stated_header_digest(trailer: &[u8], key: Option<&VerifierKey>) -> Option<Hash> {
    let tr: Trailer = serde_json::from_slice(trailer).ok()?;
    if tr.line_type != "trailer" || tr.statement.len() > MAX_NOTE {
        return None;
    }
    let text = match key {
        Some(k) => checkpoint::open_note(&tr.statement, k).ok()?,
        None if Statement::parse(&tr.statement).is_ok() => tr.statement,
        None => note_text(&tr.statement)?.to_string(),
    };
    Statement::parse(&text).ok().map(|s| s.header)
}

fn verify_inner(
    input: &mut dyn BufRead,
    key: Option<&VerifierKey>,
    max_line: usize,
    trailer_hint: Option<Vec<u8>>,
    tuning: Tuning,
) -> Result<Verified, VerifyError> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut n: u64 = 1;
    let next = |input: &mut dyn BufRead, buf: &mut Vec<u8>, n: u64| -> Result<bool, VerifyError> {
        match read_line(input, buf, max_line)? {
            LineRead::Line => Ok(true),
            LineRead::Eof => Ok(false),
            LineRead::Unterminated => reject(
                n,
                "the line does not end with a newline: the file was cut off",
            ),
            LineRead::TooLong => reject(
                n,
                format!(
                    "the line is longer than {max_line} bytes (the limit); refusing to read it"
                ),
            ),
        }
    };

    // Line 1: the header.
    if !next(input, &mut buf, n)? {
        return reject(1, "the file is empty: no export header");
    }
    let header_digest = {
        let mut h = blake3::Hasher::new();
        h.update(&buf);
        h.update(b"\n");
        Hash::from(h.finalize())
    };
    let hv: HeaderVersion = serde_json::from_slice(&buf).map_err(|e| VerifyError::Rejected {
        line: 1,
        reason: format!("not a JSON export header: {}", json_reason(&e)),
    })?;
    if hv.line_type.as_deref() != Some("header") || hv.format.as_deref() != Some(FORMAT_NAME) {
        return reject(
            1,
            format!("not an export header (expected \"type\": \"header\" and \"format\": \"{FORMAT_NAME}\")"),
        );
    }
    match &hv.version {
        Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {}
        Some(v) => {
            return reject(
                1,
                format!(
                "unknown export format version {v}; this verifier reads version {FORMAT_VERSION}"
            ),
            )
        }
        None => return reject(1, "the header has no format version"),
    }
    let header: Header = serde_json::from_slice(&buf).map_err(|e| VerifyError::Rejected {
        line: 1,
        reason: format!("malformed header: {}", json_reason(&e)),
    })?;
    let origin_id = CheckpointBody {
        origin: header.origin.clone(),
        size: 0,
        root: Hash::ZERO,
        head: Hash::ZERO,
        time_us: 0,
    }
    .ledger_id();
    if origin_id.is_none() {
        return reject(
            1,
            format!(
                "origin {:?} is not agent-ledger/<32 lowercase hex digits>",
                Shorten(&header.origin)
            ),
        );
    }
    if key.is_some() && !header.signed {
        return reject(
            1,
            "the export is not signed (\"signed\": false) but a key was given to check its signature",
        );
    }
    if let Some(stated) = trailer_hint.and_then(|t| stated_header_digest(&t, key)) {
        if stated != header_digest {
            return reject(
                1,
                format!("the header line's BLAKE3 is {header_digest}, the trailer's statement says {stated}: the header was edited"),
            );
        }
    }
    let filtered = !header.filter.is_empty();
    let size = header.tree_size;

    // Event lines, then the trailer. Lines are read in batches; worker threads parse
    // and hash them (each line on its own), and this thread takes their results in
    // order for everything that depends on the lines before.
    let cx = LineCtx {
        event_hasher: blake3::Hasher::new_derive_key(ledger::EVENT_HASH_CONTEXT),
        filter: header.filter.clone(),
        filtered,
        size,
        root: header.tree_root,
    };
    std::thread::scope(|scope| {
        let mut pipe = Pipeline::start(scope, input, max_line, tuning, &cx);
        let mut lines_digest = blake3::Hasher::new();
        let mut frontier = Frontier::new();
        let mut events: u64 = 0;
        let mut first_seq = None;
        let mut last: Option<(u64, Hash)> = None;
        let (trailer, t, after) = 'lines: loop {
            let Some((mut batch, kinds)) = pipe.next() else {
                // Unreachable: the last batch carries how the input ended.
                return reject(n + 1, "the file ends without a trailer: it was cut off");
            };
            let mut digest_from = None;
            for (k, kind) in kinds.into_iter().enumerate() {
                n += 1;
                let (a, b) = batch.lines[k];
                let e =
                    match kind {
                        LineKind::Event(e) => e,
                        LineKind::Reject(reason) => return reject(n, reason),
                        LineKind::Trailer => {
                            if let Some(from) = digest_from {
                                lines_digest.update(&batch.data[from..a]);
                            }
                            let trailer: Trailer = serde_json::from_slice(&batch.data[a..b])
                                .map_err(|e| VerifyError::Rejected {
                                    line: n,
                                    reason: format!("malformed trailer: {}", json_reason(&e)),
                                })?;
                            let after = if k + 1 < batch.lines.len() {
                                After::Data
                            } else {
                                After::End(batch.end.take())
                            };
                            break 'lines (trailer, n, after);
                        }
                    };
                check_event_line(n, &e, &cx, origin_id, &header.origin, last, events)?;
                if !filtered {
                    frontier.push(e.leaf);
                }
                digest_from.get_or_insert(a);
                first_seq.get_or_insert(e.seq);
                last = Some((e.seq, e.hash));
                events += 1;
            }
            if let Some(from) = digest_from {
                let to = batch.lines.last().map_or(from, |l| l.1 + 1);
                lines_digest.update(&batch.data[from..to]);
            }
            // Every line of the batch was an event: how did the input go on?
            match batch.end.take() {
                None => {}
                Some(End::Eof) => {
                    return reject(
                        n + 1,
                        format!("the file ends after line {n} without a trailer: it was cut off"),
                    )
                }
                Some(End::Unterminated) => {
                    return reject(
                        n + 1,
                        "the line does not end with a newline: the file was cut off",
                    )
                }
                Some(End::TooLong) => {
                    return reject(
                        n + 1,
                        format!(
                        "the line is longer than {max_line} bytes (the limit); refusing to read it"
                    ),
                    )
                }
                Some(End::Io(e)) => return Err(VerifyError::Io(e)),
            }
        };
        let rest = Rest {
            after,
            pipe: &mut pipe,
        };
        finish_trailer(
            trailer,
            t,
            key,
            header,
            header_digest,
            Tally {
                frontier,
                events,
                first_seq,
                last,
                lines: Hash::from(lines_digest.finalize()),
            },
            rest,
        )
    })
}

/// How the verification so far went, for the trailer's checks.
struct Tally {
    frontier: Frontier,
    events: u64,
    first_seq: Option<u64>,
    last: Option<(u64, Hash)>,
    /// BLAKE3 of the event lines.
    lines: Hash,
}

/// What follows the trailer line.
enum After {
    /// Another line in the same batch.
    Data,
    /// The trailer was the batch's last line; how the input ended there (`None`: more
    /// batches follow).
    End(Option<End>),
}

struct Rest<'p, 's, 'r, 'c> {
    after: After,
    pipe: &'p mut Pipeline<'s, 'r, 'c>,
}

impl Rest<'_, '_, '_, '_> {
    /// Whether anything at all follows the trailer's newline.
    fn data_after(self) -> Result<bool, VerifyError> {
        let mut end = match self.after {
            After::Data => return Ok(true),
            After::End(e) => e,
        };
        loop {
            match end {
                Some(End::Eof) => return Ok(false),
                Some(End::Unterminated | End::TooLong) => return Ok(true),
                Some(End::Io(e)) => return Err(VerifyError::Io(e)),
                None => {}
            }
            let Some(mut batch) = self.pipe.next_raw() else {
                return Ok(false);
            };
            if !batch.lines.is_empty() {
                return Ok(true);
            }
            end = batch.end.take();
        }
    }
}

/// The checks of one event line that depend on the lines before it (in file order).
fn check_event_line(
    n: u64,
    e: &LineEvent,
    cx: &LineCtx,
    origin_id: Option<[u8; 16]>,
    origin: &str,
    last: Option<(u64, Hash)>,
    events: u64,
) -> Result<(), VerifyError> {
    let seq = e.seq;
    let size = cx.size;
    if e.hash != e.stated {
        return reject(
            n,
            format!(
                "the fields of event seq {seq} hash to {}, but its \"hash\" says {}: a field was edited",
                e.hash, e.stated
            ),
        );
    }
    if seq >= size {
        return reject(
            n,
            format!("event seq {seq} is outside the export's tree of {size} events (header)"),
        );
    }
    if let Some(id) = e.genesis {
        if Some(id) != origin_id {
            return reject(
                n,
                format!(
                    "the genesis event names ledger {}, the header's origin is {origin}",
                    hex::encode(id),
                ),
            );
        }
    }
    if cx.filtered {
        if let Some((s, _)) = last {
            if seq <= s {
                return reject(
                    n,
                    format!("seq {seq} does not follow seq {s}: seqs must increase (a line was duplicated or moved)"),
                );
            }
        }
        let Some(want_prev) = e.export_prev else {
            return reject(n, "a filtered export's event line needs \"export_prev\"");
        };
        let have_prev = last.map(|(_, h)| h);
        if want_prev != have_prev {
            return reject(
                n,
                format!(
                    "\"export_prev\" is {} but the previous event line is {}: a line was deleted, inserted or moved",
                    want_prev.map_or("null".to_string(), |h| h.to_hex()),
                    have_prev.map_or("none".to_string(), |h| format!("event hash {h}"))
                ),
            );
        }
        let Some(p) = &e.proof else {
            return reject(
                n,
                "a filtered export's event line needs an inclusion \"proof\"",
            );
        };
        if p.leaf_index != seq || p.tree_size != size {
            return reject(
                n,
                format!(
                    "the proof is for leaf {} of a tree of {}, expected leaf {seq} of the header's tree of {size}",
                    p.leaf_index, p.tree_size
                ),
            );
        }
        if !p.verifies {
            return reject(
                n,
                format!(
                    "the inclusion proof of event seq {seq} does not lead to the header's tree root {}",
                    cx.root
                ),
            );
        }
        if !e.matches {
            return reject(
                n,
                format!("event seq {seq} does not match the export's filter (header)"),
            );
        }
    } else {
        if e.proof.is_some() || e.export_prev.is_some() {
            return reject(
                n,
                "an unfiltered export's event line carries \"proof\" or \"export_prev\"",
            );
        }
        if seq != events {
            return reject(
                n,
                format!("expected seq {events} (an unfiltered export holds every event from seq 0, in order), found seq {seq}"),
            );
        }
        let want = last.map_or(Hash::ZERO, |(_, h)| h);
        if e.prev != want {
            return reject(
                n,
                format!(
                    "\"prev\" of seq {seq} is {}, but the event before it hashes to {want}",
                    e.prev
                ),
            );
        }
    }
    Ok(())
}

/// Steps 5 to 7 of the verification: the trailer line `t` against the header and what
/// the event lines gave.
fn finish_trailer(
    trailer: Trailer,
    t: u64,
    key: Option<&VerifierKey>,
    header: Header,
    header_digest: Hash,
    tally: Tally,
    rest: Rest,
) -> Result<Verified, VerifyError> {
    let Tally {
        frontier,
        events,
        first_seq,
        last,
        lines,
    } = tally;
    let filtered = !header.filter.is_empty();
    let size = header.tree_size;

    // The trailer.
    if trailer.checkpoint.len() > MAX_NOTE || trailer.statement.len() > MAX_NOTE {
        return reject(t, "a trailer note is longer than 64 KiB");
    }
    let (cp_text, st_text, checked) = match (header.signed, key) {
        (true, Some(k)) => {
            let c = checkpoint::open_note(&trailer.checkpoint, k).map_err(|e| {
                VerifyError::Rejected {
                    line: t,
                    reason: format!("checkpoint: {e}"),
                }
            })?;
            let s = checkpoint::open_note(&trailer.statement, k).map_err(|e| {
                VerifyError::Rejected {
                    line: t,
                    reason: format!("export statement: {e}"),
                }
            })?;
            (c, s, true)
        }
        (true, None) => {
            let c = note_text(&trailer.checkpoint).ok_or_else(|| VerifyError::Rejected {
                line: t,
                reason: "the header says signed but the checkpoint has no signature".into(),
            })?;
            let s = note_text(&trailer.statement).ok_or_else(|| VerifyError::Rejected {
                line: t,
                reason: "the header says signed but the export statement has no signature".into(),
            })?;
            (c.to_string(), s.to_string(), false)
        }
        (false, _) => (trailer.checkpoint, trailer.statement, false),
    };
    let cp = CheckpointBody::parse(&cp_text).map_err(|e| VerifyError::Rejected {
        line: t,
        reason: format!("checkpoint: {e}"),
    })?;
    let st = Statement::parse(&st_text).map_err(|e| VerifyError::Rejected {
        line: t,
        reason: format!("export statement: {e}"),
    })?;
    if st.header != header_digest {
        return reject(
            1,
            format!("the header line's BLAKE3 is {header_digest}, the trailer's statement (line {t}) says {}: the header was edited", st.header),
        );
    }
    if cp.origin != header.origin || st.origin != header.origin {
        return reject(
            t,
            format!(
                "the trailer's origin ({:?} / {:?}) is not the header's ({})",
                Shorten(&cp.origin),
                Shorten(&st.origin),
                header.origin
            ),
        );
    }
    if cp.size != size || cp.root != header.tree_root || st.size != size {
        return reject(
            t,
            format!(
                "the checkpoint states size {} root {} (statement: size {}), the header's tree is size {size} root {}",
                cp.size, cp.root, st.size, header.tree_root
            ),
        );
    }
    if st.events != events {
        return reject(
            t,
            format!("the trailer says {} event lines, the file has {events}: lines were deleted or added", st.events),
        );
    }
    let digest = lines;
    if st.lines != digest {
        return reject(
            t,
            format!("the event lines' BLAKE3 is {digest}, the trailer says {}: an event line was changed", st.lines),
        );
    }
    if !filtered {
        if events != size {
            return reject(
                t,
                format!("an unfiltered export of a tree of {size} events has {events} event lines"),
            );
        }
        if frontier.root() != header.tree_root {
            return reject(
                t,
                format!(
                    "the events give Merkle root {}, the header and checkpoint say {}",
                    frontier.root(),
                    header.tree_root
                ),
            );
        }
    }
    let head_known = match last {
        Some((s, h)) if s + 1 == size => Some(h),
        _ if size == 0 => Some(Hash::ZERO),
        _ => None,
    };
    if let Some(h) = head_known {
        if cp.head != h {
            return reject(
                t,
                format!(
                    "the checkpoint's head is {}, but event seq {} hashes to {h}",
                    cp.head,
                    size.saturating_sub(1)
                ),
            );
        }
    }
    if rest.data_after()? {
        return reject(t + 1, "data after the trailer");
    }
    Ok(Verified {
        header,
        events,
        first_seq,
        last_seq: last.map(|(s, _)| s),
        checkpoint: cp,
        signature_checked: checked,
        lines: t,
    })
}
