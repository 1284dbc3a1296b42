//! Revert planning: `git revert` semantics that never lose work (design invariant 7).
//!
//! The planner is pure. The caller hands it the change to undo, the head [`Tree`], what
//! a scan of the workspace found at each file the change touched, the later changes per
//! key, and a [`ContentSource`]. It returns either a [`RevertPlan`] that the caller
//! applies and records as a new `Change` with `reverts: Some(id)`, or an error listing
//! every reason it refuses. A plan is all or nothing: one conflict anywhere means no
//! actions at all.

use std::collections::BTreeMap;
use std::fmt;

use ledger::{Body, Change, Content, Event, Hash, Mode, Name, Op, ResourceChange, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::path::{safe_relative_path, UnsafePath};
use crate::projection::Projection;
use crate::text::is_text;
use crate::{Changes, Error, Tree};

/// Why stored content cannot be had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    #[error("content {hash} is not in the content store")]
    Missing { hash: Hash },
    /// Removed by a `Redaction` event; its hash stays valid but the bytes are gone.
    #[error(
        "content {hash} was redacted by the event at seq {seq}: {reason} (redacted at {})",
        crate::export::format_time(*.time_us)
    )]
    Redacted {
        hash: Hash,
        reason: String,
        time_us: i64,
        seq: u64,
    },
    /// The store failed to read it or the bytes did not match the hash.
    #[error("content {hash} could not be read: {detail}")]
    Unreadable { hash: Hash, detail: String },
}

/// Where the planner gets stored bytes (the ledger's content store, in the CLI).
pub trait ContentSource {
    /// The bytes whose plain BLAKE3 hash is `hash`.
    fn read(&self, hash: &Hash) -> Result<Vec<u8>, ContentError>;

    /// Succeeds if [`ContentSource::read`] would. The planner calls this for content it
    /// only names in the plan, so that a plan never promises content the caller then
    /// fails to read. Stores may override it with a cheaper check.
    fn check(&self, hash: &Hash) -> Result<(), ContentError> {
        self.read(hash).map(|_| ())
    }
}

/// An in-memory store (tests, small tools).
impl ContentSource for BTreeMap<Hash, Vec<u8>> {
    fn read(&self, hash: &Hash) -> Result<Vec<u8>, ContentError> {
        self.get(hash)
            .cloned()
            .ok_or(ContentError::Missing { hash: *hash })
    }

    fn check(&self, hash: &Hash) -> Result<(), ContentError> {
        if self.contains_key(hash) {
            Ok(())
        } else {
            Err(ContentError::Missing { hash: *hash })
        }
    }
}

/// The bytes an action writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Stored content, read by hash from the content store (the planner has checked it
    /// is readable). For a symlink these are the target bytes.
    Stored { hash: Hash },
    /// Bytes produced by a three-way merge; not yet in the content store: the caller
    /// stores them (their hash is the action's `after.hash`) before recording the revert.
    Bytes(Vec<u8>),
}

/// What to do to one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    /// Replace (or create) the file with these bytes, materialised as `mode` (for
    /// [`Mode::Symlink`], a symlink whose target is the bytes). Replace what is at the
    /// path, never write through it: the current file may be a symlink.
    Write { payload: Payload, mode: Mode },
    /// The bytes on disk are already right; only switch between regular and executable.
    SetMode { mode: Mode },
    /// Remove the file.
    Delete,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertAction {
    pub key: ResourceKey,
    pub kind: ActionKind,
    /// What is there now (head, equal to the disk); the caller re-checks it just before
    /// writing, so a file edited since the scan is not overwritten.
    pub before: Option<Content>,
    /// What will be there after.
    pub after: Option<Content>,
    /// Later changes whose edits to this file were merged with the revert (empty for
    /// a plain restore).
    pub merged_with: Vec<String>,
}

/// A revert that can be applied without losing work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertPlan {
    /// The change being reverted.
    pub reverts: String,
    /// Seq of its `Change` event.
    pub change_seq: u64,
    /// Seq of the head tree the plan was made against.
    pub head_seq: Option<u64>,
    /// Deletes first, then writes and mode changes, each group in key order; apply in
    /// this order (a revert may turn a file back into a directory or the reverse).
    /// Files the revert leaves as they are have no action.
    pub actions: Vec<RevertAction>,
    /// The resources of the revert change to record, sorted by key: `old` is the
    /// current content and `new` the content after the revert.
    pub resources: Vec<ResourceChange>,
}

impl RevertPlan {
    /// The `Change` body to record once the actions are applied.
    pub fn change(&self, message: Option<String>) -> Change {
        Change {
            message,
            reverts: Some(self.reverts.clone()),
            resources: self.resources.clone(),
        }
    }

    /// Nothing to write: every file is already as the revert would leave it, or the
    /// change touched no resources.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Why one resource blocks a revert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConflictReason {
    /// The file on disk differs from what the ledger last recorded: someone changed it
    /// outside the ledger, and overwriting it would lose that work.
    Unrecorded {
        recorded: Option<Content>,
        on_disk: Option<Content>,
    },
    /// Later changes edited lines that overlap the change's edits.
    Overlap,
    /// Changed later and not text (old, new or current content), so not mergeable.
    Binary,
    /// A symlink (before, after or now) was changed later; symlinks are not merged.
    Symlink,
    /// The change created or modified the file; a later change deleted it.
    DeletedLater,
    /// The change deleted the file; a later change created it again.
    RecreatedLater,
    /// The change created the file and later changes modified it: undoing the creation
    /// would delete their work.
    ModifiedAfterCreate,
    /// Content the revert needs cannot be read (missing, redacted, unreadable).
    ContentUnavailable { error: ContentError },
    /// Not a workspace file. Other resource kinds will be reverted through a hook the
    /// user configures; until then the planner refuses rather than half-revert.
    NotRevertable,
    /// The recorded name would write outside the workspace.
    UnsafePath { error: UnsafePath },
    /// The revert would create a file where a directory is (or under a path that is a
    /// file); `by` is the file in the way.
    PathObstructed { by: ResourceKey },
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConflictReason::Unrecorded { recorded, on_disk } => write!(
                f,
                "changed outside the ledger (recorded: {}, on disk: {})",
                describe(recorded),
                describe(on_disk)
            ),
            ConflictReason::Overlap => f.write_str("later changes edited the same lines"),
            ConflictReason::Binary => {
                f.write_str("changed later and not text, so it cannot be merged")
            }
            ConflictReason::Symlink => {
                f.write_str("a symlink involved in later changes; symlinks are not merged")
            }
            ConflictReason::DeletedLater => f.write_str("deleted by a later change"),
            ConflictReason::RecreatedLater => {
                f.write_str("the change deleted it and a later change created it again")
            }
            ConflictReason::ModifiedAfterCreate => f.write_str(
                "the change created it and later changes modified it; \
                 reverting would delete their work",
            ),
            ConflictReason::ContentUnavailable { error } => write!(f, "{error}"),
            ConflictReason::NotRevertable => f.write_str(
                "not a workspace file; other resource kinds can only be reverted by a hook",
            ),
            ConflictReason::UnsafePath { error } => write!(f, "unsafe path: {error}"),
            ConflictReason::PathObstructed { by } => {
                write!(f, "the path is blocked by {}", by.display())
            }
        }
    }
}

fn describe(c: &Option<Content>) -> String {
    match c {
        None => "absent".to_string(),
        Some(c) => format!("{} {}", c.mode.as_str(), &c.hash.to_hex()[..12]),
    }
}

/// One resource that blocks a revert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: ResourceKey,
    pub reason: ConflictReason,
    /// Changes after the reverted one that touched this key, in seq order.
    pub later_changes: Vec<String>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key.display(), self.reason)?;
        if !self.later_changes.is_empty() {
            write!(f, " (later changes: {})", self.later_changes.join(", "))?;
        }
        Ok(())
    }
}

pub(crate) fn describe_conflicts(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let list: Vec<String> = conflicts.iter().map(|c| c.to_string()).collect();
    format!(
        "{n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        list.join("; ")
    )
}

/// Change IDs that touched each key after a given seq: the `later_changes` input of
/// [`plan_revert`] when the caller has the events at hand rather than a path index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaterChanges {
    by_key: BTreeMap<ResourceKey, Vec<String>>,
}

impl LaterChanges {
    /// Change IDs that touched `key`, in seq order, each once.
    pub fn get(&self, key: &ResourceKey) -> Vec<String> {
        self.by_key.get(key).cloned().unwrap_or_default()
    }
}

/// Collects, per key, the changes among `events` with seq greater than `after_seq`.
pub fn later_changes_from_events<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    after_seq: u64,
) -> LaterChanges {
    let mut by_key: BTreeMap<ResourceKey, Vec<String>> = BTreeMap::new();
    for ev in events {
        if ev.seq <= after_seq {
            continue;
        }
        for rc in ev.resources() {
            let ids = by_key.entry(rc.key.clone()).or_default();
            if !ids.contains(&ev.change_id) {
                ids.push(ev.change_id.clone());
            }
        }
    }
    LaterChanges { by_key }
}

/// Same bytes and same mode (sizes follow from the bytes).
fn same(a: &Option<Content>, b: &Option<Content>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.hash == b.hash && a.mode == b.mode,
        _ => false,
    }
}

/// What the planner decided for one file before the all-or-nothing check.
enum Outcome {
    /// Already as the revert would leave it.
    Nothing,
    Act(RevertAction),
    Conflict(ConflictReason),
}

/// Plans the revert of `change` (a `Change` event) against the current state.
///
/// - `changes`: the change projection at head, to refuse a change already reverted.
/// - `head`: the tree at head (it must include `change`).
/// - `on_disk`: for every `file:` key the change touched, what a scan of the workspace
///   reports now (`None` = absent). A missing key is an [`Error::MissingDiskState`].
/// - `later_changes`: the change IDs that touched a key after `change`, in seq order
///   (for example `|k| later.get(k)` with [`later_changes_from_events`]); only used to
///   name them in conflicts and merges.
/// - `store`: reads old, new and current content for restores and merges.
///
/// Per file: if the disk differs from `head`, that is an unrecorded edit: conflict. If
/// `head` holds what the change produced, the change's `old` is restored (or the file
/// deleted if the change created it). Otherwise later changes touched it: if old, new and
/// current content are all regular or executable text, the change is undone with a
/// three-way merge (base: the change's new content, ours: head, theirs: the change's
/// old content, as `git revert` does); a clean merge is written, an overlap is a
/// conflict; modes merge the same way (the change's mode change is undone unless a later
/// change altered the mode too). Everything else is a conflict with its reason.
///
/// Resources outside the `file` namespace are always a [`ConflictReason::NotRevertable`]
/// conflict, so a change that touched a flag or a deployment is refused as a whole
/// rather than half-reverted until revert hooks exist.
///
/// Returns [`Error::NotAChange`], [`Error::UnknownChange`], [`Error::AlreadyReverted`],
/// [`Error::HeadBehind`] or [`Error::MissingDiskState`] for inputs that cannot be
/// planned, and [`Error::Conflicts`] listing every conflict, sorted by key.
pub fn plan_revert<S, L>(
    change: &Event,
    changes: &Changes,
    head: &Tree,
    on_disk: &BTreeMap<ResourceKey, Option<Content>>,
    later_changes: L,
    store: &S,
) -> Result<RevertPlan, Error>
where
    S: ContentSource + ?Sized,
    L: Fn(&ResourceKey) -> Vec<String>,
{
    let Body::Change(body) = &change.body else {
        return Err(Error::NotAChange {
            seq: change.seq,
            kind: change.body.kind(),
        });
    };
    let info = changes
        .get(&change.change_id)
        .ok_or_else(|| Error::UnknownChange {
            change_id: change.change_id.clone(),
        })?;
    if let Some(by) = &info.reverted_by {
        return Err(Error::AlreadyReverted {
            change_id: change.change_id.clone(),
            reverted_by: by.clone(),
        });
    }
    if head.seq().is_none_or(|s| s < change.seq) {
        return Err(Error::HeadBehind {
            head: head.seq(),
            change_seq: change.seq,
        });
    }

    let mut actions: BTreeMap<ResourceKey, RevertAction> = BTreeMap::new();
    let mut conflicts: Vec<Conflict> = Vec::new();
    for rc in &body.resources {
        let outcome = plan_one(rc, head, on_disk, &later_changes, store)?;
        match outcome {
            Outcome::Nothing => {}
            Outcome::Act(action) => {
                actions.insert(rc.key.clone(), action);
            }
            Outcome::Conflict(reason) => conflicts.push(Conflict {
                key: rc.key.clone(),
                reason,
                later_changes: later_changes(&rc.key),
            }),
        }
    }

    for (key, by) in obstructions(head, &actions) {
        let later = later_changes(&key);
        conflicts.push(Conflict {
            key,
            reason: ConflictReason::PathObstructed { by },
            later_changes: later,
        });
    }

    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| a.key.cmp(&b.key));
        return Err(Error::Conflicts {
            change_id: change.change_id.clone(),
            conflicts,
        });
    }

    let mut resources: Vec<ResourceChange> = actions
        .values()
        .map(|a| ResourceChange {
            key: a.key.clone(),
            op: match (a.before, a.after) {
                (None, _) => Op::Create,
                (_, None) => Op::Delete,
                _ => Op::Modify,
            },
            old: a.before,
            new: a.after,
        })
        .collect();
    resources.sort_by(|a, b| a.key.cmp(&b.key));
    let (mut deletes, mut writes): (Vec<_>, Vec<_>) = actions
        .into_values()
        .partition(|a| a.kind == ActionKind::Delete);
    deletes.append(&mut writes);

    Ok(RevertPlan {
        reverts: change.change_id.clone(),
        change_seq: change.seq,
        head_seq: head.seq(),
        actions: deletes,
        resources,
    })
}

fn plan_one<S, L>(
    rc: &ResourceChange,
    head: &Tree,
    on_disk: &BTreeMap<ResourceKey, Option<Content>>,
    later_changes: &L,
    store: &S,
) -> Result<Outcome, Error>
where
    S: ContentSource + ?Sized,
    L: Fn(&ResourceKey) -> Vec<String>,
{
    let key = &rc.key;
    if !key.is_file() {
        return Ok(Outcome::Conflict(ConflictReason::NotRevertable));
    }
    if let Err(error) = safe_relative_path(key.name.as_bytes()) {
        return Ok(Outcome::Conflict(ConflictReason::UnsafePath { error }));
    }
    let disk = *on_disk
        .get(key)
        .ok_or_else(|| Error::MissingDiskState { key: key.clone() })?;
    let now = head.content(key);
    if !same(&disk, &now) {
        return Ok(Outcome::Conflict(ConflictReason::Unrecorded {
            recorded: now,
            on_disk: disk,
        }));
    }

    if same(&now, &rc.new) {
        // Head holds exactly what the change produced: put back what it replaced.
        return Ok(restore(key, now, rc.old, store));
    }

    if same(&now, &rc.old) {
        // Later changes already put back what the change replaced (for example deleted
        // a file the change created): the revert has nothing left to do here, as in git.
        return Ok(Outcome::Nothing);
    }

    // Later changes touched the file.
    let (old, new, cur) = match (rc.old, rc.new, now) {
        (_, Some(_), None) => return Ok(Outcome::Conflict(ConflictReason::DeletedLater)),
        (_, None, Some(_)) => return Ok(Outcome::Conflict(ConflictReason::RecreatedLater)),
        (None, Some(_), Some(_)) => {
            return Ok(Outcome::Conflict(ConflictReason::ModifiedAfterCreate))
        }
        (Some(old), Some(new), Some(cur)) => (old, new, cur),
        (_, None, None) => unreachable!("absent before and after is `same`"),
    };
    if [old.mode, new.mode, cur.mode].contains(&Mode::Symlink) {
        return Ok(Outcome::Conflict(ConflictReason::Symlink));
    }

    // Three-way merge of the mode: base = the change's new, ours = head, theirs = the
    // change's old. With only regular and executable left, one side always kept the
    // base, so this never conflicts.
    let mode = if old.mode == new.mode {
        cur.mode
    } else {
        old.mode
    };

    // Three-way merge of the bytes, trivial cases first (as git does per file) so that
    // binary files and unavailable content only matter when lines must be merged.
    let merged_with = later_changes(key);
    let (after, payload) = if old.hash == new.hash || cur.hash == old.hash {
        // The change did not touch the bytes, or head already has the old bytes.
        (Content { mode, ..cur }, None)
    } else if cur.hash == new.hash {
        // Only the mode changed later: the old bytes come back.
        if let Err(error) = store.check(&old.hash) {
            return Ok(Outcome::Conflict(ConflictReason::ContentUnavailable {
                error,
            }));
        }
        (
            Content { mode, ..old },
            Some(Payload::Stored { hash: old.hash }),
        )
    } else {
        let mut texts = Vec::with_capacity(3);
        for hash in [new.hash, cur.hash, old.hash] {
            match store.read(&hash) {
                Ok(bytes) => texts.push(bytes),
                Err(error) => {
                    return Ok(Outcome::Conflict(ConflictReason::ContentUnavailable {
                        error,
                    }))
                }
            }
        }
        let strs: Vec<&str> = texts
            .iter()
            .filter(|b| is_text(b))
            .filter_map(|b| std::str::from_utf8(b).ok())
            .collect();
        let [base, ours, theirs] = strs[..] else {
            return Ok(Outcome::Conflict(ConflictReason::Binary));
        };
        match diffy::merge(base, ours, theirs) {
            Ok(merged) => {
                let merged = merged.into_bytes();
                let after = Content {
                    hash: Hash::of_content(&merged),
                    mode,
                    size: merged.len() as u64,
                };
                (after, Some(Payload::Bytes(merged)))
            }
            Err(_) => return Ok(Outcome::Conflict(ConflictReason::Overlap)),
        }
    };

    if same(&Some(after), &Some(cur)) {
        return Ok(Outcome::Nothing);
    }
    let kind = match payload {
        // Same bytes as on disk: only the mode moves, between regular and executable.
        _ if after.hash == cur.hash => ActionKind::SetMode { mode },
        Some(payload) => ActionKind::Write { payload, mode },
        None => unreachable!("bytes that differ from head always come with a payload"),
    };
    Ok(Outcome::Act(RevertAction {
        key: key.clone(),
        kind,
        before: Some(cur),
        after: Some(after),
        merged_with,
    }))
}

/// Head holds what the change produced: the plan puts back `old`.
fn restore<S: ContentSource + ?Sized>(
    key: &ResourceKey,
    now: Option<Content>,
    old: Option<Content>,
    store: &S,
) -> Outcome {
    if same(&now, &old) {
        // The change recorded no difference (for example a rewrite with equal bytes).
        return Outcome::Nothing;
    }
    let kind = match (now, old) {
        (_, None) => ActionKind::Delete,
        (Some(cur), Some(old))
            if cur.hash == old.hash && cur.mode != Mode::Symlink && old.mode != Mode::Symlink =>
        {
            ActionKind::SetMode { mode: old.mode }
        }
        (_, Some(old)) => {
            if let Err(error) = store.check(&old.hash) {
                return Outcome::Conflict(ConflictReason::ContentUnavailable { error });
            }
            ActionKind::Write {
                payload: Payload::Stored { hash: old.hash },
                mode: old.mode,
            }
        }
    };
    Outcome::Act(RevertAction {
        key: key.clone(),
        kind,
        before: now,
        after: old,
        merged_with: Vec::new(),
    })
}

/// Files the plan would create where the resulting tree needs a directory, or under a
/// path that would still be a file: (the key created, the key in the way).
fn obstructions(
    head: &Tree,
    actions: &BTreeMap<ResourceKey, RevertAction>,
) -> Vec<(ResourceKey, ResourceKey)> {
    // A file exists at `key` after the plan if the plan leaves one there, or if the plan
    // does not touch `key` and head has one.
    let exists_after = |key: &ResourceKey| match actions.get(key) {
        Some(a) => a.after.is_some(),
        None => head.get(key).is_some(),
    };
    let mut out = Vec::new();
    for (key, action) in actions {
        if action.before.is_some() || action.after.is_none() {
            // Only files that appear can collide; an existing file's path is sound.
            continue;
        }
        let name = key.name.as_bytes();
        // An ancestor that is a file (or symlink) after the plan.
        let ancestor = name
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| ResourceKey {
                namespace: key.namespace.clone(),
                name: Name(name[..i].to_vec()),
            })
            .find(|k| exists_after(k));
        if let Some(by) = ancestor {
            out.push((key.clone(), by));
            continue;
        }
        // A descendant that is still a file after the plan.
        let mut dir = name.to_vec();
        dir.push(b'/');
        let in_head = head.with_prefix(&key.namespace, &dir).map(|(k, _)| k);
        let start = ResourceKey {
            namespace: key.namespace.clone(),
            name: Name(dir.clone()),
        };
        let in_plan = actions
            .range(start..)
            .take_while(|(k, _)| k.namespace == key.namespace && k.name.0.starts_with(&dir))
            .map(|(k, _)| k);
        let by = in_head.chain(in_plan).find(|k| exists_after(k)).cloned();
        if let Some(by) = by {
            out.push((key.clone(), by));
        }
    }
    out
}
