//! The fold interface every projection shares, and its snapshot encoding.

use ledger::{Event, CANONICAL};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{AgentInfo, Agents, ChangeInfo, Changes, Error, Tree};

/// Version of the snapshot layout (header plus the projection's serde shape, or for a
/// [`Tree`] its own layout, described in `replay/src/tree/snapshot.rs`). Bump it whenever a
/// projection's fields or a layout change: old snapshots then fail to decode and the
/// caller rebuilds from the journal, which is always possible (snapshots are derived).
pub const SNAPSHOT_VERSION: u32 = 3;

/// First bytes of every snapshot, so a stray blob is rejected before decoding.
const SNAPSHOT_MAGIC: [u8; 8] = *b"LDGRSNAP";

/// What precedes every snapshot body.
#[derive(Serialize, Deserialize)]
struct Header {
    magic: [u8; 8],
    version: u32,
    /// [`Projection::SNAPSHOT_KIND`], so a `Changes` snapshot never decodes as a `Tree`.
    kind: String,
}

/// A fold over events in seq order that can be stored and reloaded.
///
/// Import this trait to call `apply`, `seq` and the snapshot methods.
pub trait Projection: Clone + Serialize + DeserializeOwned {
    /// Names the projection inside its snapshots.
    const SNAPSHOT_KIND: &'static str;

    /// Folds one event in. Events must come in increasing seq order; an event at or
    /// before [`Projection::seq`] is an [`Error::OutOfOrder`] and changes nothing
    /// (applying one twice would double-count it).
    fn apply(&mut self, ev: &Event) -> Result<(), Error>;

    /// Seq of the last event applied; `None` before the first one.
    fn seq(&self) -> Option<u64>;

    /// Folds `events` up to and including `until_seq`. Events at or before the seq the
    /// projection had when called are skipped, so a snapshot can be caught up from any
    /// earlier position in the journal; after that, events out of order are an
    /// [`Error::OutOfOrder`]. Iteration stops at the first event past `until_seq`.
    fn apply_until<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a Event>,
        until_seq: u64,
    ) -> Result<(), Error> {
        let seen = self.seq();
        for ev in events {
            if ev.seq > until_seq {
                break;
            }
            if seen.is_some_and(|s| ev.seq <= s) {
                continue;
            }
            self.apply(ev)?;
        }
        Ok(())
    }

    /// Encodes the projection: a header (magic, [`SNAPSHOT_VERSION`], kind) and the
    /// projection, both with `bincode::serde` and [`ledger::CANONICAL`].
    fn to_snapshot_bytes(&self) -> Vec<u8> {
        snapshot_bytes(Self::SNAPSHOT_KIND, self, 0)
    }

    /// Decodes what [`Projection::to_snapshot_bytes`] wrote. Garbage, truncation,
    /// trailing bytes, another projection's snapshot or another version give
    /// [`Error::Snapshot`]; decoding never panics and allocates at most a small
    /// multiple of `bytes.len()` (a [`Tree`]'s: see its own).
    fn from_snapshot_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let body = snapshot_body(Self::SNAPSHOT_KIND, bytes)?;
        let bad = |detail: String| Error::Snapshot {
            kind: Self::SNAPSHOT_KIND,
            detail,
        };
        let (value, used): (Self, usize) =
            decode_bounded(body).map_err(|e| bad(format!("body: {e}")))?;
        if used != body.len() {
            return Err(bad(format!("{} trailing bytes", body.len() - used)));
        }
        Ok(value)
    }
}

/// The body of a snapshot of `kind` (what follows its header), once the header is
/// checked: the magic, [`SNAPSHOT_VERSION`] and the kind.
pub(crate) fn snapshot_body<'b>(kind: &'static str, bytes: &'b [u8]) -> Result<&'b [u8], Error> {
    let bad = |detail: String| Error::Snapshot { kind, detail };
    let (header, used): (Header, usize) = bincode::serde::decode_from_slice(bytes, HEADER_CONFIG)
        .map_err(|e| bad(format!("header: {e}")))?;
    if header.magic != SNAPSHOT_MAGIC {
        return Err(bad("no snapshot magic".into()));
    }
    if header.version != SNAPSHOT_VERSION {
        return Err(bad(format!(
            "format version {} (this build reads {SNAPSHOT_VERSION})",
            header.version
        )));
    }
    if header.kind != kind {
        return Err(bad(format!("it is a {:?} snapshot", header.kind)));
    }
    Ok(&bytes[used..])
}

/// A snapshot of `kind`: the header, then `value` (a projection, or a view of one that
/// serialises the same way), in a buffer of at least `capacity` bytes.
pub(crate) fn snapshot_bytes<T: Serialize + ?Sized>(
    kind: &str,
    value: &T,
    capacity: usize,
) -> Vec<u8> {
    let header = Header {
        magic: SNAPSHOT_MAGIC,
        version: SNAPSHOT_VERSION,
        kind: kind.to_string(),
    };
    // Encoding with CANONICAL never checks its size limit (only decoding does), and
    // plain structs, maps and strings always encode.
    let mut out = Vec::with_capacity(capacity);
    bincode::serde::encode_into_std_write(&header, &mut out, CANONICAL)
        .expect("a snapshot header always encodes");
    bincode::serde::encode_into_std_write(value, &mut out, CANONICAL)
        .expect("a projection in memory always encodes into a Vec");
    out
}

/// The header is tiny; a small limit keeps a garbage length prefix from allocating.
const HEADER_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<4096>,
> = CANONICAL.with_limit::<4096>();

/// Decodes with a byte limit picked from the input's length.
///
/// bincode allocates a string or byte buffer as soon as it reads its length prefix, and
/// only the configured limit bounds that; CANONICAL's 16 MiB limit is too small for the
/// tree of a large workspace and no limit lets four garbage bytes ask for terabytes.
/// Claimed lengths never exceed the encoded size of a valid snapshot, so the smallest
/// bucket at least as large as the input accepts every valid snapshot while garbage can
/// claim at most 16 times its own length (or 1 MiB).
fn decode_bounded<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), String> {
    fn with<T: DeserializeOwned, const N: usize>(body: &[u8]) -> Result<(T, usize), String> {
        bincode::serde::decode_from_slice(body, CANONICAL.with_limit::<N>())
            .map_err(|e| e.to_string())
    }
    let n = body.len() as u64;
    if n <= 1 << 20 {
        with::<T, { 1 << 20 }>(body)
    } else if n <= 1 << 24 {
        with::<T, { 1 << 24 }>(body)
    } else if n <= 1 << 28 {
        with::<T, { 1 << 28 }>(body)
    } else if n <= 1 << 32 && usize::BITS >= 64 {
        with::<T, { usize_or_max(1 << 32) }>(body)
    } else if usize::BITS >= 64 {
        with::<T, { usize_or_max(1 << 36) }>(body)
    } else {
        Err("snapshot larger than this platform can decode".into())
    }
}

/// `n` as a usize, saturating on 32-bit targets (where those buckets are never used).
const fn usize_or_max(n: u64) -> usize {
    if n > usize::MAX as u64 {
        usize::MAX
    } else {
        n as usize
    }
}

/// Fails if `ev` does not come after `last`.
pub(crate) fn check_order(last: Option<u64>, ev: &Event) -> Result<(), Error> {
    match last {
        Some(last) if ev.seq <= last => Err(Error::OutOfOrder { last, got: ev.seq }),
        _ => Ok(()),
    }
}

/// The three projections, folded together in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projections {
    pub tree: Tree,
    pub changes: Changes,
    pub agents: Agents,
}

impl Projections {
    pub fn new() -> Projections {
        Projections::default()
    }

    /// Folds `events` from scratch up to and including `until_seq`.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a Event>,
        until_seq: u64,
    ) -> Result<Projections, Error> {
        let mut p = Projections::new();
        p.apply_until(events, until_seq)?;
        Ok(p)
    }

    pub fn change(&self, change_id: &str) -> Option<&ChangeInfo> {
        self.changes.get(change_id)
    }

    pub fn agent(&self, agent: &str) -> Option<&AgentInfo> {
        self.agents.get(agent)
    }
}

impl Projection for Projections {
    const SNAPSHOT_KIND: &'static str = "projections";

    fn apply(&mut self, ev: &Event) -> Result<(), Error> {
        // Check all three up front so that an out-of-order event leaves every part
        // untouched (the fields are public, so their seqs could in principle differ).
        check_order(self.tree.seq(), ev)?;
        check_order(self.changes.seq(), ev)?;
        check_order(self.agents.seq(), ev)?;
        self.tree.apply(ev)?;
        self.changes.apply(ev)?;
        self.agents.apply(ev)?;
        Ok(())
    }

    fn seq(&self) -> Option<u64> {
        self.tree
            .seq()
            .max(self.changes.seq())
            .max(self.agents.seq())
    }
}
