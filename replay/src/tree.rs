//! The resource tree: what every resource held after a given seq.

use std::cmp::Ordering;
use std::collections::btree_map;
use std::collections::BTreeMap;

use ledger::{Body, BodyRef, Content, Event, EventRef, Mode, Name, ResourceKey};
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

/// Folds borrowed events ([`EventRef`], as `Ledger::scan_refs` hands them out, or
/// [`Prepared`] ones) into a [`Tree`]: the same result as [`Projection::apply`], made
/// for long folds (projection rebuilds, the state at a point).
///
/// For a long fold, entries live in a slab found through a hash map, so updating a
/// resource the tree already holds is one hash lookup and no allocation; the key order
/// is kept in a separate ordered map that only changes when a resource comes or goes.
/// Taking a tree apart that way costs about as much as folding as many events as it
/// has entries into it directly, so a fold that starts from a non-empty tree (the state
/// at a point: a snapshot plus the events after it) updates that tree in place until it
/// has folded that many events, and only then switches.
pub struct TreeFold {
    /// The starting tree, folded into directly until `direct_left` runs out.
    start: Option<Tree>,
    /// Events still to fold straight into `start` before switching to the slab.
    direct_left: usize,
    /// Reused key buffer for `start` and `order`.
    start_key: ResourceKey,
    slab: Vec<Entry>,
    free: Vec<usize>,
    /// Key -> slab index, for lookups ([`Slot`]: one allocation per key, so a lookup
    /// reads one key's bytes). Never iterated into anything stored or compared.
    by_key: hashbrown::HashTable<Slot>,
    /// Seeds the hashes of `by_key` (workers preparing events compute them too).
    keys: KeyHasher,
    /// Key -> slab index, in key order (snapshots and the final tree).
    order: BTreeMap<ResourceKey, usize>,
    seq: Option<u64>,
    /// Size of the last snapshot encoded, to size the next one's buffer.
    snapshot_len: std::cell::Cell<usize>,
}

/// Seeds the hashes of a [`TreeFold`]'s key map. Workers that prepare events for the
/// fold compute their keys' hashes with it ([`Prepared::hashing_keys`]), so the folding
/// thread does not. foldhash with a random per-fold seed and the process's random
/// shared seed (the constants it mixes with; with foldhash's fixed ones, names ending
/// in one of them hash alike under every seed): several times cheaper than SipHash on
/// short keys, still seeded so crafted paths cannot be made to collide in advance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHasher(u64);

impl KeyHasher {
    fn random() -> KeyHasher {
        use std::hash::BuildHasher;
        KeyHasher(std::hash::RandomState::new().hash_one(0x5eed_u64))
    }

    /// The hash of the resource key (`namespace`, `name`): the namespace's length, its
    /// bytes, then the name's bytes, so distinct pairs are distinct inputs.
    pub fn hash(self, namespace: &[u8], name: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let shared = foldhash::SharedSeed::global_random();
        let mut h = foldhash::fast::SeedableRandomState::with_seed(self.0, shared).build_hasher();
        h.write_usize(namespace.len());
        h.write(namespace);
        h.write(name);
        h.finish()
    }
}

/// An entry of [`TreeFold`]'s key map: the key's hash, the namespace and name bytes in
/// one allocation (and where the name starts), and the resource's slab index.
struct Slot {
    hash: u64,
    namespace_len: usize,
    key: Box<[u8]>,
    index: usize,
}

impl Slot {
    fn new(hash: u64, namespace: &[u8], name: &[u8], index: usize) -> Slot {
        let mut key = Vec::with_capacity(namespace.len() + name.len());
        key.extend_from_slice(namespace);
        key.extend_from_slice(name);
        Slot {
            hash,
            namespace_len: namespace.len(),
            key: key.into_boxed_slice(),
            index,
        }
    }

    /// Whether this is the key (`namespace`, `name`), whose hash is `hash`.
    fn is(&self, hash: u64, namespace: &[u8], name: &[u8]) -> bool {
        self.hash == hash
            && self.namespace_len == namespace.len()
            && self.key.len() == namespace.len() + name.len()
            && self.key[..namespace.len()] == *namespace
            && self.key[namespace.len()..] == *name
    }
}

impl TreeFold {
    /// Continues folding from `tree` (empty, or loaded from a snapshot).
    pub fn new(tree: Tree) -> TreeFold {
        TreeFold {
            seq: tree.seq,
            direct_left: tree.len(),
            start: Some(tree),
            start_key: ResourceKey {
                namespace: String::new(),
                name: Name(Vec::new()),
            },
            slab: Vec::new(),
            free: Vec::new(),
            by_key: hashbrown::HashTable::new(),
            keys: KeyHasher::random(),
            order: BTreeMap::new(),
            snapshot_len: std::cell::Cell::new(0),
        }
    }

    /// Seq of the last event folded in (or of the starting tree).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// What seeds the hashes of this fold's key map: [`Prepared::hashing_keys`] with it
    /// computes them ahead, on the threads that prepare events.
    pub fn key_hasher(&self) -> KeyHasher {
        self.keys
    }

    /// Resources in the tree.
    pub fn len(&self) -> usize {
        match &self.start {
            Some(t) => t.len(),
            None => self.order.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files (resources in the file namespace) in the tree so far.
    pub fn files(&self) -> usize {
        match &self.start {
            Some(t) => t.files().count(),
            None => self.order.keys().filter(|k| k.is_file()).count(),
        }
    }

    /// The tree so far.
    pub fn into_tree(self) -> Tree {
        if let Some(t) = self.start {
            // `start.seq` follows `self.seq` (see `done`).
            return t;
        }
        let slab = self.slab;
        let mut slab: Vec<Option<Entry>> = slab.into_iter().map(Some).collect();
        let entries = self
            .order
            .into_iter()
            .map(|(k, i)| (k, slab[i].take().expect("each slot is in the order once")))
            .collect();
        Tree {
            entries,
            seq: self.seq,
        }
    }

    /// [`Projection::to_snapshot_bytes`] of the tree so far (the same bytes).
    pub fn to_snapshot_bytes(&self) -> Vec<u8> {
        if let Some(t) = &self.start {
            // `start.seq` follows `self.seq` (see `done`).
            return t.to_snapshot_bytes();
        }
        // The bytes `bincode` writes for a `Tree` with `CANONICAL` (fixed-width little-
        // endian integers, u64 lengths, u32 enum tags), written directly: through serde
        // a hash is 32 one-byte elements, which made encoding the snapshots a seventh
        // of a rebuild. `TreeFold`'s tests compare these bytes with
        // `Tree::to_snapshot_bytes` on every fold. The header first (`()` encodes to
        // no bytes).
        let mut out = crate::projection::snapshot_bytes(
            Tree::SNAPSHOT_KIND,
            &(),
            self.snapshot_len.get() + self.snapshot_len.get() / 8,
        );
        let len = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u64).to_le_bytes());
        len(&mut out, self.order.len());
        for (k, &i) in &self.order {
            let e = &self.slab[i];
            len(&mut out, k.namespace.len());
            out.extend_from_slice(k.namespace.as_bytes());
            len(&mut out, k.name.0.len());
            out.extend_from_slice(&k.name.0);
            out.extend_from_slice(e.content.hash.as_bytes());
            let mode: u32 = match e.content.mode {
                Mode::Regular => 0,
                Mode::Executable => 1,
                Mode::Symlink => 2,
            };
            out.extend_from_slice(&mode.to_le_bytes());
            out.extend_from_slice(&e.content.size.to_le_bytes());
            out.extend_from_slice(&e.seq.to_le_bytes());
            len(&mut out, e.change_id.len());
            out.extend_from_slice(e.change_id.as_bytes());
        }
        match self.seq {
            None => out.push(0),
            Some(seq) => {
                out.push(1);
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
        self.snapshot_len.set(out.len());
        out
    }

    /// Takes the starting tree apart into the slab and maps.
    fn unpack(&mut self) {
        let Some(t) = self.start.take() else { return };
        self.slab.reserve(t.entries.len());
        self.by_key.reserve(t.entries.len(), |s| s.hash);
        let slab = &mut self.slab;
        let by_key = &mut self.by_key;
        let keys = self.keys;
        // Collected in key order: the ordered map is built in one pass.
        self.order = t
            .entries
            .into_iter()
            .map(|(k, e)| {
                let i = slab.len();
                slab.push(e);
                let (namespace, name) = (k.namespace.as_bytes(), k.name.as_bytes());
                let hash = keys.hash(namespace, name);
                by_key.insert_unique(hash, Slot::new(hash, namespace, name, i), |s| s.hash);
                (k, i)
            })
            .collect();
    }

    /// Checks the order of the next event and picks where it is folded.
    fn check(&mut self, seq: u64) -> Result<(), Error> {
        if let Some(last) = self.seq {
            if seq <= last {
                return Err(Error::OutOfOrder { last, got: seq });
            }
        }
        if self.direct_left == 0 {
            self.unpack();
        } else {
            self.direct_left -= 1;
        }
        Ok(())
    }

    /// Records that the event at `seq` was folded in.
    fn done(&mut self, seq: u64) {
        self.seq = Some(seq);
        if let Some(t) = &mut self.start {
            t.seq = self.seq;
        }
    }

    /// Sets (or with `None` removes) one resource. `hash`: the key's hash by
    /// [`TreeFold::key_hasher`] when it was computed ahead.
    fn set(
        &mut self,
        namespace: &str,
        name: &[u8],
        hash: Option<u64>,
        new: Option<Content>,
        seq: u64,
        change_id: &str,
    ) {
        // The key as a `ResourceKey` (the starting tree's and the order map's type),
        // filled only where one is needed: not for an update in the slab.
        let key = &mut self.start_key;
        let fill = |key: &mut ResourceKey| {
            key.namespace.clear();
            key.namespace.push_str(namespace);
            key.name.0.clear();
            key.name.0.extend_from_slice(name);
        };
        let put = |e: &mut Entry, content: Content| {
            e.content = content;
            e.seq = seq;
            e.change_id.clear();
            e.change_id.push_str(change_id);
        };
        let fresh = |content: Content| Entry {
            content,
            seq,
            change_id: change_id.to_string(),
        };
        if let Some(t) = &mut self.start {
            fill(key);
            match new {
                Some(content) => match t.entries.get_mut(key) {
                    Some(e) => put(e, content),
                    None => {
                        t.entries.insert(key.clone(), fresh(content));
                    }
                },
                None => {
                    t.entries.remove(key);
                }
            }
            return;
        }
        let ns = namespace.as_bytes();
        let hash = hash.unwrap_or_else(|| self.keys.hash(ns, name));
        let is = |s: &Slot| s.is(hash, ns, name);
        match new {
            Some(content) => match self.by_key.find(hash, is) {
                Some(s) => put(&mut self.slab[s.index], content),
                None => {
                    let entry = fresh(content);
                    let i = match self.free.pop() {
                        Some(i) => {
                            self.slab[i] = entry;
                            i
                        }
                        None => {
                            self.slab.push(entry);
                            self.slab.len() - 1
                        }
                    };
                    let slot = Slot::new(hash, ns, name, i);
                    self.by_key.insert_unique(hash, slot, |s| s.hash);
                    fill(key);
                    let was = self.order.insert(key.clone(), i);
                    // A key the table missed (a hash that is not this fold's) would be
                    // here already.
                    debug_assert!(was.is_none(), "{key:?} was in the key table twice");
                    debug_assert_eq!(self.by_key.len(), self.order.len());
                }
            },
            None => {
                if let Ok(found) = self.by_key.find_entry(hash, is) {
                    let (slot, _) = found.remove();
                    fill(key);
                    self.order.remove(key);
                    self.free.push(slot.index);
                }
            }
        }
    }

    /// Folds one event in; events must come in increasing seq order
    /// ([`Error::OutOfOrder`] otherwise, and nothing changes).
    pub fn apply(&mut self, ev: &EventRef) -> Result<(), Error> {
        self.check(ev.seq)?;
        if let BodyRef::Change(change) = &ev.body {
            for rc in &change.resources {
                self.set(
                    rc.key.namespace,
                    rc.key.name,
                    None,
                    rc.new,
                    ev.seq,
                    ev.change_id,
                );
            }
        }
        self.done(ev.seq);
        Ok(())
    }

    /// Folds event `i` of `prepared`, made from `bytes` by [`Prepared::push`]; returns
    /// its seq. The same rules as [`TreeFold::apply`].
    pub fn apply_prepared(
        &mut self,
        bytes: &[u8],
        prepared: &Prepared,
        i: usize,
    ) -> Result<u64, Error> {
        let ev = &prepared.events[i];
        self.check(ev.seq)?;
        let text = |sp: Span| {
            std::str::from_utf8(sp.of(bytes)).map_err(|_| Error::Prepared("text is not UTF-8"))
        };
        let change_id = text(ev.change_id)?;
        let from = if i == 0 {
            0
        } else {
            prepared.events[i - 1].res_end as usize
        };
        // The hashes computed ahead are used only if they were computed for this fold.
        let hashed = prepared.keys == Some(self.keys);
        for r in &prepared.res[from..ev.res_end as usize] {
            self.set(
                text(r.namespace)?,
                r.name.of(bytes),
                hashed.then_some(r.hash),
                r.new,
                ev.seq,
                change_id,
            );
        }
        self.done(ev.seq);
        Ok(ev.seq)
    }
}

/// A range of a byte buffer.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Where `part` (borrowed from `whole`) lies in `whole`; `None` if it lies elsewhere.
    fn within(whole: &[u8], part: &[u8]) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
        (start + part.len() <= whole.len()).then_some(())?;
        Some(Span {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(part.len()).ok()?,
        })
    }

    fn of(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start as usize..(self.start + self.len) as usize]
    }
}

#[derive(Debug)]
struct PreparedEvent {
    seq: u64,
    change_id: Span,
    /// End of this event's resources in [`Prepared::res`].
    res_end: u32,
}

#[derive(Debug)]
struct PreparedResource {
    namespace: Span,
    name: Span,
    /// The key's hash by [`Prepared::keys`] (0 without).
    hash: u64,
    new: Option<Content>,
}

/// What [`TreeFold`] needs of a run of events decoded from one buffer (a journal
/// segment), as ranges of that buffer: made where the buffer is decoded (a worker of
/// a pipelined journal walk), folded later with [`TreeFold::apply_prepared`].
#[derive(Debug, Default)]
pub struct Prepared {
    events: Vec<PreparedEvent>,
    res: Vec<PreparedResource>,
    /// The fold's key hasher, when the keys' hashes are computed here.
    keys: Option<KeyHasher>,
}

impl Prepared {
    /// Room for the events of `bytes` bytes of journal (a guess: a few hundred bytes
    /// per event, a few resources each).
    pub fn for_bytes(bytes: usize) -> Prepared {
        Prepared {
            events: Vec::with_capacity(bytes / 256),
            res: Vec::with_capacity(bytes / 128),
            keys: None,
        }
    }

    /// Computes each resource key's hash with `keys` (from [`TreeFold::key_hasher`]) as
    /// events are added, so that the fold with that hasher need not. Before any event is
    /// added (a panic otherwise: the hashes of events already added are not computed).
    pub fn hashing_keys(mut self, keys: KeyHasher) -> Prepared {
        assert!(
            self.events.is_empty() && self.res.is_empty(),
            "hashing_keys on a Prepared that already holds events"
        );
        self.keys = Some(keys);
        self
    }

    /// Adds `ev`, decoded from `bytes` (its strings borrowed from it). `false` if a field
    /// does not lie in `bytes` or the buffer is too large to describe.
    pub fn push(&mut self, bytes: &[u8], ev: &EventRef) -> bool {
        let Some(change_id) = Span::within(bytes, ev.change_id.as_bytes()) else {
            return false;
        };
        if let BodyRef::Change(change) = &ev.body {
            for rc in &change.resources {
                let (Some(namespace), Some(name)) = (
                    Span::within(bytes, rc.key.namespace.as_bytes()),
                    Span::within(bytes, rc.key.name),
                ) else {
                    return false;
                };
                self.res.push(PreparedResource {
                    namespace,
                    name,
                    hash: self
                        .keys
                        .map_or(0, |k| k.hash(rc.key.namespace.as_bytes(), rc.key.name)),
                    new: rc.new,
                });
            }
        }
        let Ok(res_end) = u32::try_from(self.res.len()) else {
            return false;
        };
        self.events.push(PreparedEvent {
            seq: ev.seq,
            change_id,
            res_end,
        });
        true
    }

    /// Adds the event whose canonical bytes are `payload` (part of `bytes`): read with
    /// [`ledger::skim_change`] when it is a `Change` event, else decoded. `false` if it
    /// does not decode or a field does not lie in `bytes`.
    pub fn push_encoded(&mut self, bytes: &[u8], payload: &[u8]) -> bool {
        let start = self.res.len();
        let (res, keys) = (&mut self.res, self.keys);
        let mut within = true;
        let skimmed = ledger::skim_change(payload, &mut |namespace, name, new| match (
            Span::within(bytes, namespace.as_bytes()),
            Span::within(bytes, name),
        ) {
            (Some(span), Some(name_span)) => res.push(PreparedResource {
                namespace: span,
                name: name_span,
                hash: keys.map_or(0, |k| k.hash(namespace.as_bytes(), name)),
                new,
            }),
            _ => within = false,
        });
        if let (Some((seq, change_id)), true) = (skimmed, within) {
            if let (Some(change_id), Ok(res_end)) = (
                Span::within(bytes, change_id.as_bytes()),
                u32::try_from(self.res.len()),
            ) {
                self.events.push(PreparedEvent {
                    seq,
                    change_id,
                    res_end,
                });
                return true;
            }
        }
        self.res.truncate(start);
        match EventRef::decode(payload) {
            Ok(ev) => self.push(bytes, &ev),
            Err(_) => false,
        }
    }

    /// Events added.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `files` counts the file namespace only, in the starting tree and in the slab.
    #[test]
    fn files_counts_only_the_file_namespace() {
        let c = Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size: 0,
        };
        for unpacked in [false, true] {
            let mut f = TreeFold::new(Tree::new());
            if unpacked {
                // Nothing to fold into the (empty) starting tree: this takes it apart.
                f.check(1).unwrap();
                assert!(f.start.is_none());
            }
            f.set("file", b"a", None, Some(c), 1, "c");
            f.set("file", b"b", None, Some(c), 1, "c");
            f.set("flag", b"a", None, Some(c), 1, "c");
            f.set("deploy", b"x", None, Some(c), 1, "c");
            f.set("file", b"b", None, None, 1, "c");
            assert_eq!((f.len(), f.files()), (3, 1), "unpacked: {unpacked}");
        }
    }

    /// Distinct (namespace, name) pairs are distinct keys of the fold's key map even
    /// where their bytes run together the same (the namespace's length is part of the
    /// key and of its hash), and each is found again by its own hash.
    #[test]
    fn distinct_resources_are_distinct_keys() {
        let long = "n".repeat(300);
        let longer = "n".repeat(301);
        let pairs: Vec<(&str, &[u8])> = vec![
            ("ab", b"c"),
            ("a", b"bc"),
            ("abc", b""),
            ("", b"abc"),
            ("file", b"x"),
            ("file", b"x/"),
            (&long, b"n"),
            (&longer, b""),
            (&long, b""),
        ];
        let keys = KeyHasher::random();
        let mut hashes = BTreeMap::new();
        for (i, &(ns, name)) in pairs.iter().enumerate() {
            let hash = keys.hash(ns.as_bytes(), name);
            let slot = Slot::new(hash, ns.as_bytes(), name, i);
            for (j, &(ns2, name2)) in pairs.iter().enumerate() {
                // Its own hash with another pair's bytes: only the bytes can tell.
                assert_eq!(
                    slot.is(hash, ns2.as_bytes(), name2),
                    i == j,
                    "{ns:?} {name:?} / {ns2:?} {name2:?}"
                );
                assert!(
                    i == j || !slot.is(keys.hash(ns2.as_bytes(), name2), ns2.as_bytes(), name2)
                );
            }
            hashes.insert(hash, i);
        }
        // The pairs hash apart too (with a 64-bit hash, a collision among nine would
        // point at the hashing, not at chance).
        assert_eq!(hashes.len(), pairs.len());
        // Another fold's hasher gives other hashes: prepared hashes are tied to a fold.
        let other = KeyHasher::random();
        assert_ne!(other, keys);
        assert_ne!(other.hash(b"file", b"x"), keys.hash(b"file", b"x"));
        // Through a fold's key map, with hashes computed ahead and without: each pair is
        // one resource, found again (updated, not added) and removed by its own key, both
        // when it was added to the key map by `set` and when it came in with a starting
        // tree (put in the key map when that tree is taken apart).
        let c = |size| Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size,
        };
        for ahead in [false, true] {
            let mut f = TreeFold::new(Tree::new());
            f.check(1).unwrap();
            assert!(f.start.is_none(), "taken apart at once");
            let keys = f.key_hasher();
            let hash = |ns: &str, name: &[u8]| ahead.then(|| keys.hash(ns.as_bytes(), name));
            for size in [1, 2] {
                for &(ns, name) in &pairs {
                    f.set(ns, name, hash(ns, name), Some(c(size)), 1, "c");
                }
                assert_eq!(f.len(), pairs.len(), "ahead {ahead}, size {size}");
            }
            let tree = f.into_tree();
            assert!(tree.entries.values().all(|e| e.content.size == 2));
            let mut f = TreeFold::new(tree);
            // One event per starting entry is folded into the tree directly; the next
            // takes it apart.
            for seq in 2..2 + pairs.len() as u64 + 1 {
                f.check(seq).unwrap();
            }
            assert!(f.start.is_none(), "taken apart");
            let keys = f.key_hasher();
            let hash = |ns: &str, name: &[u8]| ahead.then(|| keys.hash(ns.as_bytes(), name));
            for &(ns, name) in &pairs {
                f.set(ns, name, hash(ns, name), Some(c(3)), 20, "d");
            }
            assert_eq!(f.len(), pairs.len(), "ahead {ahead}: updated, not added");
            for (i, &(ns, name)) in pairs.iter().enumerate() {
                f.set(ns, name, hash(ns, name), None, 20, "d");
                assert_eq!(
                    f.len(),
                    pairs.len() - i - 1,
                    "ahead {ahead}: {ns:?} {name:?}"
                );
            }
        }
    }
}
