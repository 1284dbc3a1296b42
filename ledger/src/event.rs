//! The event model and its canonical encoding.
//!
//! Every event is encoded with [`CANONICAL`] (bincode 2, little-endian, fixed-width
//! integers) and hashed with BLAKE3 `derive_key`; `docs/FORMAT.md` specifies the bytes.
//! Variant order of every enum is part of the format: append new variants at the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, Name};

/// Largest canonical event accepted when decoding (untrusted input is bounded by it).
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// The one bincode configuration used for every hashed or stored event.
pub const CANONICAL: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<MAX_EVENT_BYTES>,
> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_EVENT_BYTES>();

/// Version of the event format written into the genesis event.
pub const FORMAT_VERSION: u32 = 1;

/// One immutable entry in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the journal, gap-free from 0 (the genesis event).
    pub seq: u64,
    /// Hash of the event at `seq - 1`; [`Hash::ZERO`] for seq 0.
    pub prev: Hash,
    /// Wall-clock time in UTC microseconds since the Unix epoch. Shown, never used for order.
    pub time_us: i64,
    pub actor: Actor,
    /// The change (agent action) this event belongs to.
    pub change_id: String,
    /// The request the action was made under, if the agent gave one.
    pub correlation_id: Option<String>,
    pub body: Body,
    /// Free-form, already-redacted metadata (inputs, outputs, tool names...).
    #[serde(deserialize_with = "canonical_meta")]
    pub meta: BTreeMap<String, String>,
}

/// Reads `meta` refusing, in the canonical (binary) encoding, keys that are not in
/// strictly ascending order: a map decoded from such bytes would lose a duplicate or
/// reorder pairs, so the decoded event would not be what the hashed bytes say, and it
/// would hash differently when encoded again. Human-readable formats keep map semantics.
fn canonical_meta<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct V {
        strict: bool,
    }
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                if self.strict {
                    if let Some((last, _)) = out.last_key_value() {
                        if k <= *last {
                            return Err(serde::de::Error::custom(format!(
                                "meta key {k:?} follows {last:?}: keys must be in ascending order, each once"
                            )));
                        }
                    }
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    let strict = !d.is_human_readable();
    d.deserialize_map(V { strict })
}

/// Who acted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub agent: String,
    pub principal: Option<String>,
    pub role: Option<String>,
}

/// The kind of an event and its payload. Variant indices are fixed by the format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// 0: first event of every ledger; names it.
    Genesis(Genesis),
    /// 1: an agent action changed resources (files, or other resource kinds).
    Change(Change),
    /// 2: an automated check ran against a change.
    Check(Check),
    /// 3: a human or policy approved or rejected a change.
    Approval(Approval),
    /// 4: a change was deployed somewhere.
    Deployment(Deployment),
    /// 5: a step of an action failed (for example the command `ledger exec` ran).
    Failure(Failure),
    /// 6: agents were stopped (or allowed again).
    KillSwitch(KillSwitch),
    /// 7: stored content was removed; its hash stays valid.
    Redaction(Redaction),
    /// 8: a signed statement of the journal head was made.
    Checkpoint(Checkpoint),
}

impl Body {
    /// Short lowercase name of the kind, as shown by the CLI.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Genesis(_) => "genesis",
            Body::Change(_) => "change",
            Body::Check(_) => "check",
            Body::Approval(_) => "approval",
            Body::Deployment(_) => "deployment",
            Body::Failure(_) => "failure",
            Body::KillSwitch(_) => "kill-switch",
            Body::Redaction(_) => "redaction",
            Body::Checkpoint(_) => "checkpoint",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Random identity of this ledger, fixed at `ledger init`.
    pub ledger_id: [u8; 16],
    pub format_version: u32,
}

/// One agent action: the resources it touched, before and after.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub message: Option<String>,
    /// Set when this change undoes another one: that change's ID.
    pub reverts: Option<String>,
    /// Sorted by key; each key at most once.
    pub resources: Vec<ResourceChange>,
}

/// What a change did to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub key: ResourceKey,
    pub op: Op,
    /// Content before; `None` for [`Op::Create`].
    pub old: Option<Content>,
    /// Content after; `None` for [`Op::Delete`].
    pub new: Option<Content>,
}

/// A resource: `file:` plus a workspace-relative path for files, or another namespace
/// (`flag`, `deploy`, ...) for things outside the workspace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub namespace: String,
    /// For files: the path relative to the workspace root, `/`-separated, raw bytes.
    pub name: Name,
}

/// Namespace, then name, each in byte order (as a derived `Ord` would order them), with
/// the word-wise [`crate::hash::cmp_bytes`].
impl Ord for ResourceKey {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        crate::hash::cmp_bytes(self.namespace.as_bytes(), other.namespace.as_bytes())
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for ResourceKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ResourceKey {
    pub const FILE: &'static str = "file";

    pub fn file(path: &[u8]) -> Self {
        ResourceKey {
            namespace: Self::FILE.to_string(),
            name: Name(path.to_vec()),
        }
    }

    pub fn is_file(&self) -> bool {
        self.namespace == Self::FILE
    }

    /// `namespace:name`, with non-UTF-8 bytes escaped.
    pub fn display(&self) -> String {
        format!("{}:{}", self.namespace, self.name.display())
    }

    /// Index key: namespace, `:`, raw name bytes.
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + 1 + self.name.0.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.push(b':');
        k.extend_from_slice(&self.name.0);
        k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create,
    Modify,
    Delete,
}

impl Op {
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Modify => "modify",
            Op::Delete => "delete",
        }
    }
}

/// A resource's content at one point: plain BLAKE3 of its bytes (for a symlink, of its
/// target), how it is materialised, and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub hash: Hash,
    pub mode: Mode,
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    Regular,
    Executable,
    Symlink,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Regular => "regular",
            Mode::Executable => "executable",
            Mode::Symlink => "symlink",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// For example `info`, `warning`, `blocking`.
    pub level: String,
    pub passed: bool,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: String,
    pub approved: bool,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub environment: String,
    /// Share of traffic, 0 to 100.
    pub percent: u8,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub stage: String,
    pub error: String,
    pub exit_code: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub engaged: bool,
    /// Which agents: an agent ID or `*`.
    pub scope: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    pub hash: Hash,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Number of events covered (seq 0 to `size - 1`).
    pub size: u64,
    pub root: Hash,
}

/// What a writer supplies; the journal adds `seq` and `prev` when it appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub time_us: i64,
    pub actor: Actor,
    pub change_id: String,
    pub correlation_id: Option<String>,
    pub body: Body,
    pub meta: BTreeMap<String, String>,
}

impl NewEvent {
    pub fn seal(self, seq: u64, prev: Hash) -> Event {
        Event {
            seq,
            prev,
            time_us: self.time_us,
            actor: self.actor,
            change_id: self.change_id,
            correlation_id: self.correlation_id,
            body: self.body,
            meta: self.meta,
        }
    }
}

/// Why bytes are not a canonical event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("not a valid event encoding: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the event")]
    Trailing(usize),
}

impl Event {
    /// The canonical bytes that are hashed and stored.
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, CANONICAL)
            .expect("an event in memory always encodes; sizes are checked on append")
    }

    /// Decodes canonical bytes; rejects trailing bytes and anything over [`MAX_EVENT_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let (ev, used): (Event, usize) = bincode::serde::decode_from_slice(bytes, CANONICAL)?;
        if used != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - used));
        }
        Ok(ev)
    }

    /// `derive_key(EVENT_HASH_CONTEXT, encode(self))`.
    pub fn hash(&self) -> Hash {
        Hash::of_event_bytes(&self.encode())
    }

    /// The file changes of a `Change` event (empty for other kinds).
    pub fn resources(&self) -> &[ResourceChange] {
        match &self.body {
            Body::Change(c) => &c.resources,
            _ => &[],
        }
    }
}

/// A borrowed view of a canonical event, for walks that only read (verify, projection
/// rebuilds, exports): decoding it allocates only the list of resources, where
/// [`Event::decode`] allocates every string. It accepts exactly the bytes
/// [`Event::decode`] accepts (same layout, same UTF-8, tag and meta-order checks; a
/// test holds the two together on mutated and truncated encodings), and
/// [`EventRef::to_event`] gives the same [`Event`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EventRef<'a> {
    pub seq: u64,
    pub prev: Hash,
    pub time_us: i64,
    #[serde(borrow)]
    pub actor: ActorRef<'a>,
    pub change_id: &'a str,
    #[serde(borrow)]
    pub correlation_id: Option<&'a str>,
    #[serde(borrow)]
    pub body: BodyRef<'a>,
    #[serde(borrow)]
    pub meta: MetaRef<'a>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ActorRef<'a> {
    pub agent: &'a str,
    #[serde(borrow)]
    pub principal: Option<&'a str>,
    #[serde(borrow)]
    pub role: Option<&'a str>,
}

/// [`Body`] with the `Change` payload borrowed; the other kinds are rare and owned.
/// Variant order is [`Body`]'s (the format's).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum BodyRef<'a> {
    Genesis(Genesis),
    #[serde(borrow)]
    Change(ChangeRef<'a>),
    Check(Check),
    Approval(Approval),
    Deployment(Deployment),
    Failure(Failure),
    KillSwitch(KillSwitch),
    Redaction(Redaction),
    Checkpoint(Checkpoint),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChangeRef<'a> {
    #[serde(borrow)]
    pub message: Option<&'a str>,
    #[serde(borrow)]
    pub reverts: Option<&'a str>,
    #[serde(borrow)]
    pub resources: Vec<ResourceChangeRef<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ResourceChangeRef<'a> {
    #[serde(borrow)]
    pub key: ResourceKeyRef<'a>,
    pub op: Op,
    pub old: Option<Content>,
    pub new: Option<Content>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ResourceKeyRef<'a> {
    pub namespace: &'a str,
    /// The raw name bytes (the canonical encoding of [`Name`]: a length-prefixed byte string).
    pub name: &'a [u8],
}

impl ResourceKeyRef<'_> {
    pub fn to_key(&self) -> ResourceKey {
        ResourceKey {
            namespace: self.namespace.to_string(),
            name: Name(self.name.to_vec()),
        }
    }
}

/// The `meta` pairs in their canonical order; decoding refuses keys that are not strictly
/// ascending, as [`Event::decode`] does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaRef<'a>(pub Vec<(&'a str, &'a str)>);

impl<'de: 'a, 'a> Deserialize<'de> for MetaRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = MetaRef<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(&'a str, &'a str)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<&'de str, &'de str>()? {
                    if let Some((last, _)) = out.last() {
                        if k <= *last {
                            return Err(serde::de::Error::custom(format!(
                                "meta key {k:?} follows {last:?}: keys must be in ascending order, each once"
                            )));
                        }
                    }
                    out.push((k, v));
                }
                Ok(MetaRef(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Reads a `Change` event's canonical bytes for what a file-tree fold needs, without
/// building an [`EventRef`]: returns the seq and change ID, and hands each resource's
/// namespace, name and new content to `resource`, in order.
///
/// `Some` only for bytes [`EventRef::decode`] accepts as a `Change` event, with the same
/// values: the whole layout is read and checked the same way (UTF-8 of every string,
/// enum and option tags, meta keys strictly ascending, no trailing bytes;
/// `event::tests` holds the two together on mutated and truncated encodings). `None`
/// for any other kind, for payloads of [`MAX_EVENT_BYTES`] or more (left to the
/// decoder), and for anything it does not accept; `resource` may then have
/// been called for some resources, and the caller decodes the event with
/// [`EventRef::decode`], which names what is wrong. About four times cheaper than that
/// decode, which goes through serde one field at a time.
pub fn skim_change<'a>(
    bytes: &'a [u8],
    resource: &mut dyn FnMut(&'a str, &'a [u8], Option<Content>),
) -> Option<(u64, &'a str)> {
    struct Rd<'a> {
        b: &'a [u8],
        p: usize,
    }
    impl<'a> Rd<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let s = self.b.get(self.p..self.p.checked_add(n)?)?;
            self.p += n;
            Some(s)
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn tag(&mut self, below: u32) -> Option<u32> {
            let t = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
            (t < below).then_some(t)
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = usize::try_from(self.u64()?).ok()?;
            self.take(n)
        }
        fn str(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.bytes()?).ok()
        }
        fn present(&mut self) -> Option<bool> {
            match self.take(1)?[0] {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            }
        }
        fn opt_str(&mut self) -> Option<Option<&'a str>> {
            Some(if self.present()? {
                Some(self.str()?)
            } else {
                None
            })
        }
        fn content(&mut self) -> Option<Option<Content>> {
            if !self.present()? {
                return Some(None);
            }
            let hash = Hash(self.take(32)?.try_into().ok()?);
            let mode = match self.tag(3)? {
                0 => Mode::Regular,
                1 => Mode::Executable,
                _ => Mode::Symlink,
            };
            let size = self.u64()?;
            Some(Some(Content { hash, mode, size }))
        }
    }
    // Within the decoder's 16 MiB limit with room to spare; larger goes to the decoder.
    if bytes.len() >= MAX_EVENT_BYTES {
        return None;
    }
    let mut r = Rd { b: bytes, p: 0 };
    let seq = r.u64()?;
    r.take(32 + 8)?; // prev, time_us
    r.str()?; // actor: agent, principal, role
    r.opt_str()?;
    r.opt_str()?;
    let change_id = r.str()?;
    r.opt_str()?; // correlation_id
                  // Body: the `Change` variant (index 1 of `Body`) only.
    if r.tag(u32::MAX)? != 1 {
        return None;
    }
    r.opt_str()?; // message
    r.opt_str()?; // reverts
    let n = r.u64()?;
    for _ in 0..n {
        let namespace = r.str()?;
        let name = r.bytes()?;
        r.tag(3)?; // op
        r.content()?; // old
        let new = r.content()?;
        resource(namespace, name, new);
    }
    let mut last: Option<&str> = None;
    for _ in 0..r.u64()? {
        let key = r.str()?;
        r.str()?;
        if last.is_some_and(|l| key <= l) {
            return None;
        }
        last = Some(key);
    }
    (r.p == bytes.len()).then_some((seq, change_id))
}

impl<'a> EventRef<'a> {
    /// Decodes canonical bytes without copying strings; rejects what [`Event::decode`] rejects.
    pub fn decode(bytes: &'a [u8]) -> Result<EventRef<'a>, DecodeError> {
        let (ev, used): (EventRef<'a>, usize) =
            bincode::serde::borrow_decode_from_slice(bytes, CANONICAL)?;
        if used != bytes.len() {
            return Err(DecodeError::Trailing(bytes.len() - used));
        }
        Ok(ev)
    }

    /// The file changes of a `Change` event (empty for other kinds).
    pub fn resources(&self) -> &[ResourceChangeRef<'a>] {
        match &self.body {
            BodyRef::Change(c) => &c.resources,
            _ => &[],
        }
    }

    /// The owned event.
    pub fn to_event(&self) -> Event {
        let opt = |s: Option<&str>| s.map(str::to_string);
        let body = match &self.body {
            BodyRef::Genesis(b) => Body::Genesis(b.clone()),
            BodyRef::Change(c) => Body::Change(Change {
                message: opt(c.message),
                reverts: opt(c.reverts),
                resources: c
                    .resources
                    .iter()
                    .map(|r| ResourceChange {
                        key: r.key.to_key(),
                        op: r.op,
                        old: r.old,
                        new: r.new,
                    })
                    .collect(),
            }),
            BodyRef::Check(b) => Body::Check(b.clone()),
            BodyRef::Approval(b) => Body::Approval(b.clone()),
            BodyRef::Deployment(b) => Body::Deployment(b.clone()),
            BodyRef::Failure(b) => Body::Failure(b.clone()),
            BodyRef::KillSwitch(b) => Body::KillSwitch(b.clone()),
            BodyRef::Redaction(b) => Body::Redaction(b.clone()),
            BodyRef::Checkpoint(b) => Body::Checkpoint(b.clone()),
        };
        Event {
            seq: self.seq,
            prev: self.prev,
            time_us: self.time_us,
            actor: Actor {
                agent: self.actor.agent.to_string(),
                principal: opt(self.actor.principal),
                role: opt(self.actor.role),
            },
            change_id: self.change_id.to_string(),
            correlation_id: opt(self.correlation_id),
            body,
            meta: self
                .meta
                .0
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// Encodes any value with [`CANONICAL`] (snapshots, caches, index values).
pub fn encode_canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, CANONICAL)
}

/// Decodes a value written by [`encode_canonical`], bounded by [`MAX_EVENT_BYTES`]
/// per allocation; whole-input use is checked.
pub fn decode_canonical<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (v, used): (T, usize) = bincode::serde::decode_from_slice(bytes, CANONICAL)?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixed_event() -> Event {
        let mut meta = BTreeMap::new();
        meta.insert("tool".to_string(), "edit".to_string());
        Event {
            seq: 1,
            prev: Hash([0x11; 32]),
            time_us: 1_700_000_000_000_000,
            actor: Actor {
                agent: "agent-7".into(),
                principal: Some("alice@example.com".into()),
                role: Some("coder".into()),
            },
            change_id: "ch-1".into(),
            correlation_id: Some("req-42".into()),
            body: Body::Change(Change {
                message: Some("fix typo".into()),
                reverts: None,
                resources: vec![ResourceChange {
                    key: ResourceKey::file(b"src/main.rs"),
                    op: Op::Modify,
                    old: Some(Content {
                        hash: Hash::of_content(b"old\n"),
                        mode: Mode::Regular,
                        size: 4,
                    }),
                    new: Some(Content {
                        hash: Hash::of_content(b"new\n"),
                        mode: Mode::Executable,
                        size: 4,
                    }),
                }],
            }),
            meta,
        }
    }

    /// Any change to the canonical encoding or the hash context changes this digest;
    /// `docs/FORMAT.md` walks through these exact bytes.
    #[test]
    fn pinned_event_hash() {
        let ev = fixed_event();
        let bytes = ev.encode();
        assert_eq!(bytes.len(), 317);
        assert_eq!(&bytes[0..8], &1u64.to_le_bytes());
        assert_eq!(&bytes[8..40], &[0x11; 32]);
        assert_eq!(
            ev.hash().to_hex(),
            "9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9"
        );
    }

    #[test]
    fn decode_roundtrips_and_rejects_trailing_bytes() {
        let ev = fixed_event();
        let mut bytes = ev.encode();
        assert_eq!(Event::decode(&bytes).unwrap(), ev);
        bytes.push(0);
        assert!(matches!(
            Event::decode(&bytes),
            Err(DecodeError::Trailing(1))
        ));
    }

    #[test]
    fn decode_rejects_every_truncation() {
        let bytes = fixed_event().encode();
        for cut in 0..bytes.len() {
            assert!(
                Event::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    /// The meta map's pairs must be in ascending key order, each key once: otherwise
    /// the bytes (and their hash) say something the decoded event does not show.
    #[test]
    fn decode_rejects_unsorted_or_duplicate_meta_keys() {
        let mut ev = fixed_event();
        ev.meta.insert("a".into(), "1".into());
        ev.meta.insert("b".into(), "2".into());
        let bytes = ev.encode();
        assert_eq!(Event::decode(&bytes).unwrap(), ev);
        // meta is the tail: u64 count, then (u64 len, key, u64 len, value) per pair.
        let pair = |k: &str, v: &str| {
            let mut p = Vec::new();
            for s in [k, v] {
                p.extend_from_slice(&(s.len() as u64).to_le_bytes());
                p.extend_from_slice(s.as_bytes());
            }
            p
        };
        let tail_len = 8 + pair("a", "1").len() + pair("b", "2").len() + pair("tool", "edit").len();
        let head = &bytes[..bytes.len() - tail_len];
        for pairs in [
            vec![pair("b", "2"), pair("a", "1"), pair("tool", "edit")],
            vec![pair("a", "1"), pair("a", "2"), pair("tool", "edit")],
        ] {
            let mut forged = head.to_vec();
            forged.extend_from_slice(&3u64.to_le_bytes());
            for p in pairs {
                forged.extend_from_slice(&p);
            }
            assert_eq!(forged.len(), bytes.len());
            assert!(
                Event::decode(&forged).is_err(),
                "non-canonical meta decoded: {:?}",
                Event::decode(&forged).map(|e| e.meta)
            );
        }
    }

    /// The borrowed decoder accepts exactly what the owned one accepts, and gives the
    /// same event: on every event kind, every truncation, and byte mutations at every
    /// offset (tags, lengths, UTF-8, option flags, meta order).
    #[test]
    fn borrowed_decode_agrees_with_owned_decode() {
        let mut evs = vec![fixed_event()];
        let mut e = fixed_event();
        e.meta.insert("a".into(), "1".into());
        e.meta.insert("z".into(), "2".into());
        e.correlation_id = None;
        e.actor.principal = None;
        evs.push(e);
        // Keys one byte apart: a mutation can make them equal (refused).
        let mut e = fixed_event();
        e.meta = [("k0", "x"), ("k1", "y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        evs.push(e);
        for body in [
            Body::Genesis(Genesis {
                ledger_id: [7; 16],
                format_version: FORMAT_VERSION,
            }),
            Body::Check(Check {
                name: "ci".into(),
                level: "blocking".into(),
                passed: false,
                detail: Some("x".into()),
            }),
            Body::Approval(Approval {
                approver: "bob".into(),
                approved: true,
                comment: None,
            }),
            Body::Deployment(Deployment {
                environment: "prod".into(),
                percent: 5,
                version: "1.2".into(),
            }),
            Body::Failure(Failure {
                stage: "exec".into(),
                error: "exit 2".into(),
                exit_code: Some(2),
            }),
            Body::KillSwitch(KillSwitch {
                engaged: true,
                scope: "*".into(),
                reason: "r".into(),
            }),
            Body::Redaction(Redaction {
                hash: Hash([3; 32]),
                reason: "secret".into(),
            }),
            Body::Checkpoint(Checkpoint {
                size: 9,
                root: Hash([4; 32]),
            }),
            Body::Change(Change {
                message: None,
                reverts: Some("ch-0".into()),
                resources: vec![
                    ResourceChange {
                        key: ResourceKey::file(b"a\xff"),
                        op: Op::Create,
                        old: None,
                        new: Some(Content {
                            hash: Hash([5; 32]),
                            mode: Mode::Symlink,
                            size: 3,
                        }),
                    },
                    ResourceChange {
                        key: ResourceKey {
                            namespace: "flag".into(),
                            name: Name(b"beta".to_vec()),
                        },
                        op: Op::Delete,
                        old: Some(Content {
                            hash: Hash([6; 32]),
                            mode: Mode::Regular,
                            size: 0,
                        }),
                        new: None,
                    },
                ],
            }),
        ] {
            let mut e = fixed_event();
            e.body = body;
            evs.push(e);
        }
        let agree = |bytes: &[u8]| {
            let owned = Event::decode(bytes);
            let borrowed = EventRef::decode(bytes);
            // The skim reads a `Change` event exactly when the decoder does, the same values.
            let mut res = Vec::new();
            let skim = skim_change(bytes, &mut |ns, name, new| res.push((ns, name, new)));
            match (&borrowed, skim) {
                (Ok(b), Some((seq, change_id))) => {
                    assert!(matches!(b.body, BodyRef::Change(_)), "{bytes:02x?}");
                    assert_eq!((seq, change_id), (b.seq, b.change_id));
                    let want: Vec<_> = b
                        .resources()
                        .iter()
                        .map(|rc| (rc.key.namespace, rc.key.name, rc.new))
                        .collect();
                    assert_eq!(res, want);
                }
                (Ok(b), None) => assert!(!matches!(b.body, BodyRef::Change(_)), "{bytes:02x?}"),
                (Err(_), None) => {}
                (Err(e), Some(_)) => {
                    panic!("the skim accepts what the decoder refuses ({e}): {bytes:02x?}")
                }
            }
            match (&owned, &borrowed) {
                (Ok(o), Ok(b)) => assert_eq!(&b.to_event(), o),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "decoders disagree on {bytes:02x?}: owned {:?}, borrowed {:?}",
                    owned.as_ref().map(|_| ()),
                    borrowed.as_ref().map(|_| ())
                ),
            }
            owned.is_ok()
        };
        let mut accepted_mutations = 0;
        for ev in &evs {
            let bytes = ev.encode();
            assert!(agree(&bytes));
            for cut in 0..bytes.len() {
                assert!(!agree(&bytes[..cut]));
            }
            let mut extra = bytes.clone();
            extra.push(0);
            assert!(!agree(&extra));
            for i in 0..bytes.len() {
                for v in [0x00, 0x01, 0x02, 0x09, 0x80, 0xc3, 0xff, bytes[i] ^ 0x01] {
                    let mut m = bytes.clone();
                    m[i] = v;
                    accepted_mutations += usize::from(agree(&m));
                }
            }
        }
        // Many mutations (inside strings and hashes) stay valid events; both must see that.
        assert!(accepted_mutations > 1000, "{accepted_mutations}");
    }

    #[test]
    fn content_hash_is_plain_blake3() {
        // b3sum of the empty input.
        assert_eq!(
            Hash::of_content(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
