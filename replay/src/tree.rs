//! The resource tree: what every resource held after a given seq.

use std::cmp::Ordering;
use std::collections::btree_map;
use std::collections::BTreeMap;

use ledger::{Body, BodyRef, Content, Event, EventRef, Name, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::projection::{check_order, Projection};
use crate::Error;

/// What one resource holds, and which change put it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub content: Content,
    /// Seq of the last change that set this content.
    pub seq: u64,
    /// ID of that change.
    pub change_id: String,
}

/// Resource key -> [`Entry`], folded from `Change` events. Deletes remove the key.
///
/// A `BTreeMap` keeps keys ordered (namespace, then raw name bytes), so listing,
/// prefix queries and [`diff`] are deterministic and one ordered walk each; an update is
/// `O(log n)`, which keeps a tree of 100,000 files cheap to fold and to snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    entries: BTreeMap<ResourceKey, Entry>,
    seq: Option<u64>,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree holding only `entries`, as of `seq`: part of a tree, for code that looks
    /// at known keys only (a revert plan looks at the change's keys, their ancestors
    /// and what lies beneath them).
    pub fn from_entries(entries: BTreeMap<ResourceKey, Entry>, seq: Option<u64>) -> Tree {
        Tree { entries, seq }
    }

    pub fn get(&self, key: &ResourceKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The content at `key`, `None` if absent.
    pub fn content(&self, key: &ResourceKey) -> Option<Content> {
        self.entries.get(key).map(|e| e.content)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> btree_map::Iter<'_, ResourceKey, Entry> {
        self.entries.iter()
    }

    pub fn entries(&self) -> &BTreeMap<ResourceKey, Entry> {
        &self.entries
    }

    /// Entries of one namespace whose name starts with `prefix` (bytes, so `src/` lists
    /// a directory and `src` also matches `src.rs`), in key order.
    pub fn with_prefix<'a>(
        &'a self,
        namespace: &'a str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a ResourceKey, &'a Entry)> + 'a {
        let start = ResourceKey {
            namespace: namespace.to_string(),
            name: Name(prefix.to_vec()),
        };
        self.entries
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace && k.name.0.starts_with(prefix))
    }

    /// Entries of the `file` namespace (workspace files), in path order.
    pub fn files(&self) -> impl Iterator<Item = (&ResourceKey, &Entry)> + '_ {
        self.with_prefix(ResourceKey::FILE, b"")
    }
}

impl Projection for Tree {
    const SNAPSHOT_KIND: &'static str = "tree";

    fn apply(&mut self, ev: &Event) -> Result<(), Error> {
        check_order(self.seq, ev)?;
        if let Body::Change(change) = &ev.body {
            for rc in &change.resources {
                match rc.new {
                    Some(content) => {
                        let entry = Entry {
                            content,
                            seq: ev.seq,
                            change_id: ev.change_id.clone(),
                        };
                        self.entries.insert(rc.key.clone(), entry);
                    }
                    None => {
                        self.entries.remove(&rc.key);
                    }
                }
            }
        }
        self.seq = Some(ev.seq);
        Ok(())
    }

    fn seq(&self) -> Option<u64> {
        self.seq
    }
}

/// Folds borrowed events ([`EventRef`], as `Ledger::scan_refs` hands them out) into a
/// [`Tree`]: the same result as [`Projection::apply`], without allocating for a resource
/// the tree already holds (the key is looked up through a reused buffer and the entry
/// updated in place). Projection rebuilds and the state at a point use it.
pub struct TreeFold {
    tree: Tree,
    key: ResourceKey,
}

impl TreeFold {
    /// Continues folding from `tree` (empty, or loaded from a snapshot).
    pub fn new(tree: Tree) -> TreeFold {
        TreeFold {
            tree,
            key: ResourceKey {
                namespace: String::new(),
                name: Name(Vec::new()),
            },
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    pub fn into_tree(self) -> Tree {
        self.tree
    }

    /// Folds one event in; events must come in increasing seq order
    /// ([`Error::OutOfOrder`] otherwise, and nothing changes).
    pub fn apply(&mut self, ev: &EventRef) -> Result<(), Error> {
        if let Some(last) = self.tree.seq {
            if ev.seq <= last {
                return Err(Error::OutOfOrder { last, got: ev.seq });
            }
        }
        if let BodyRef::Change(change) = &ev.body {
            for rc in &change.resources {
                self.key.namespace.clear();
                self.key.namespace.push_str(rc.key.namespace);
                self.key.name.0.clear();
                self.key.name.0.extend_from_slice(rc.key.name);
                match rc.new {
                    Some(content) => match self.tree.entries.get_mut(&self.key) {
                        Some(e) => {
                            e.content = content;
                            e.seq = ev.seq;
                            e.change_id.clear();
                            e.change_id.push_str(ev.change_id);
                        }
                        None => {
                            let entry = Entry {
                                content,
                                seq: ev.seq,
                                change_id: ev.change_id.to_string(),
                            };
                            self.tree.entries.insert(self.key.clone(), entry);
                        }
                    },
                    None => {
                        self.tree.entries.remove(&self.key);
                    }
                }
            }
        }
        self.tree.seq = Some(ev.seq);
        Ok(())
    }
}

/// The tree as it was right after `until_seq`: folds `events` (in seq order) up to and
/// including that seq and stops at the first event past it.
pub fn state_at<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    until_seq: u64,
) -> Result<Tree, Error> {
    let mut tree = Tree::new();
    tree.apply_until(events, until_seq)?;
    Ok(tree)
}

/// How a resource differs between two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DiffKind {
    /// Absent in `a`, present in `b`.
    Added,
    /// Present in `a`, absent in `b`.
    Removed,
    /// Different bytes (the mode may have changed too).
    Modified,
    /// Same bytes, different mode.
    ModeChanged,
}

/// One difference between two trees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDiff {
    pub key: ResourceKey,
    pub kind: DiffKind,
    /// The entry in `a`, if any.
    pub old: Option<Entry>,
    /// The entry in `b`, if any.
    pub new: Option<Entry>,
}

/// What changed from `a` to `b`, sorted by key. Entries that hold the same bytes and
/// mode are equal even when a later change rewrote them (their seq differs): this
/// compares states, not histories.
pub fn diff(a: &Tree, b: &Tree) -> Vec<TreeDiff> {
    // One merge walk over both ordered maps: O(len a + len b).
    let mut out = Vec::new();
    let mut ia = a.entries.iter().peekable();
    let mut ib = b.entries.iter().peekable();
    loop {
        let order = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            Ordering::Less => {
                let (k, e) = ia.next().expect("peeked");
                out.push(TreeDiff {
                    key: k.clone(),
                    kind: DiffKind::Removed,
                    old: Some(e.clone()),
                    new: None,
                });
            }
            Ordering::Greater => {
                let (k, e) = ib.next().expect("peeked");
                out.push(TreeDiff {
                    key: k.clone(),
                    kind: DiffKind::Added,
                    old: None,
                    new: Some(e.clone()),
                });
            }
            Ordering::Equal => {
                let (k, ea) = ia.next().expect("peeked");
                let (_, eb) = ib.next().expect("peeked");
                let kind = if ea.content.hash != eb.content.hash {
                    DiffKind::Modified
                } else if ea.content.mode != eb.content.mode {
                    DiffKind::ModeChanged
                } else {
                    continue;
                };
                out.push(TreeDiff {
                    key: k.clone(),
                    kind,
                    old: Some(ea.clone()),
                    new: Some(eb.clone()),
                });
            }
        }
    }
    out
}
