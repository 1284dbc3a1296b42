//! Pure logic over ledger events: projections, replay to a point, revert planning.
//!
//! Nothing in this crate reads or writes files, opens the journal or prints; callers
//! (the CLI, the server, tests) feed it [`ledger::Event`]s in `seq` order and act on
//! what it returns.
//!
//! - Projections (folds over events, all implementing [`Projection`], all storable as
//!   snapshots with [`Projection::to_snapshot_bytes`] / [`Projection::from_snapshot_bytes`]):
//!   - [`Tree`]: resource key -> [`Entry`] (content, the seq and change that set it).
//!   - [`Changes`]: change ID -> [`ChangeInfo`] (the change and its lifecycle events).
//!   - [`Agents`]: agent ID -> [`AgentInfo`].
//!   - [`Projections`]: all three, folded together.
//! - Replay: [`state_at`] (the tree as of a seq) and [`diff`] ([`TreeDiff`] between trees).
//! - Reverting: [`plan_revert`] turns a change, the head [`Tree`] and the on-disk state
//!   into a [`RevertPlan`] (actions plus the [`ledger::ResourceChange`]s to record) or an
//!   [`Error::Conflicts`] listing every [`Conflict`]. Content comes from a
//!   [`ContentSource`]; [`ContentError`] says why content is unavailable (missing, redacted).
//! - [`export`]: the compliance export (JSON Lines with proofs and signed trailer, CSV)
//!   written from events the caller feeds, and [`export::verify_export`], its offline
//!   checker.
//! - Helpers for callers: [`safe_relative_path`] (rejects names that could escape the
//!   workspace, [`UnsafePath`]), [`text_diff`] (unified diff) and [`is_text`].
//!
//! Errors are one enum, [`Error`]; [`ContentError`] and [`UnsafePath`] are the values a
//! content source and the path check return, carried inside conflicts and errors.

mod agents;
mod changes;
pub mod export;
mod path;
mod projection;
mod revert;
mod text;
mod tree;

pub use agents::{AgentInfo, Agents};
pub use changes::{ChangeInfo, Changes, Recorded};
pub use path::{safe_relative_path, SafePath, UnsafePath};
pub use projection::{Projection, Projections, SNAPSHOT_VERSION};
pub use revert::{
    later_changes_from_events, plan_revert, ActionKind, Conflict, ConflictReason, ContentError,
    ContentSource, LaterChanges, Payload, RevertAction, RevertPlan,
};
pub use text::{is_text, text_diff};
pub use tree::{diff, state_at, DiffKind, Entry, KeyHasher, Prepared, Tree, TreeDiff, TreeFold};

use ledger::ResourceKey;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event was applied to a projection that has already seen it or a later one
    /// (for example a snapshot caught up from the wrong position).
    #[error("event seq {got} applied out of order: the projection is already at seq {last}")]
    OutOfOrder { last: u64, got: u64 },

    /// Snapshot bytes that are not a snapshot of this projection in this format.
    #[error("not a valid {kind} snapshot: {detail}")]
    Snapshot { kind: &'static str, detail: String },

    /// [`Prepared`] events folded with bytes other than the ones they were made from.
    #[error("prepared events do not match their bytes: {0}")]
    Prepared(&'static str),

    /// Past what a [`TreeFold`] counts: a namespace of 4 GiB, change IDs of 4 GiB in
    /// one tree, or 2^32 resources (journal records are at most 16 MiB).
    #[error("{0} is too large to fold")]
    TooLarge(&'static str),

    /// Only `Change` events can be reverted (not the genesis event, checks, ...).
    #[error("event seq {seq} is a {kind} event, not a change; only changes can be reverted")]
    NotAChange { seq: u64, kind: &'static str },

    /// The change's effect is already undone by a revert that is still in force.
    #[error("change {change_id} was already reverted by change {reverted_by}")]
    AlreadyReverted {
        change_id: String,
        reverted_by: String,
    },

    /// The [`Changes`] projection handed to the planner does not know the change:
    /// it was folded over a different or shorter journal.
    #[error("change {change_id} is not in the change projection")]
    UnknownChange { change_id: String },

    /// The head tree handed to the planner was folded only up to before the change.
    #[error("the head tree is at seq {head:?}, before the change at seq {change_seq}")]
    HeadBehind { head: Option<u64>, change_seq: u64 },

    /// The caller did not report the on-disk state of a file the change touched.
    #[error("no on-disk state was given for {}", .key.display())]
    MissingDiskState { key: ResourceKey },

    /// The revert would lose work or cannot be done; nothing may be written.
    /// Lists every conflict, not just the first.
    #[error("cannot revert change {change_id}: {}", revert::describe_conflicts(.conflicts))]
    Conflicts {
        change_id: String,
        conflicts: Vec<Conflict>,
    },
}
