//! The resource tree: what every resource held after a given seq.

use std::cmp::Ordering;
use std::collections::btree_map;
use std::collections::BTreeMap;

use ledger::{Body, BodyRef, Content, Event, EventRef, Name, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::projection::{check_order, Projection};
use crate::Error;

mod snapshot;

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

    /// A tree's own layout (not `bincode`'s), described in `replay/src/tree/snapshot.rs`:
    /// each entry against the one before, so a name's shared bytes and a change ID
    /// the entry before has are not written again.
    fn to_snapshot_bytes(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Decodes what [`Tree::to_snapshot_bytes`] wrote, under the same rules as other
    /// projections (never a panic; garbage, truncation, trailing bytes, a key out of
    /// order are [`Error::Snapshot`]). It allocates for namespaces, names and change
    /// IDs at most 64 times the bytes' length and 1 MiB (an entry takes again what it
    /// shares with the one before; the writer keeps to that), and for the entries
    /// themselves and the map made of them about ten times the bytes' length.
    fn from_snapshot_bytes(bytes: &[u8]) -> Result<Tree, Error> {
        snapshot::decode(bytes)
    }
}

/// Folds borrowed events ([`EventRef`], as `Ledger::scan_refs` hands them out, or
/// [`Prepared`] ones) into a [`Tree`]: the same result as [`Projection::apply`], made
/// for long folds (projection rebuilds, the state at a point).
///
/// For a long fold, resources live in a slab of [`Cell`]s found through a hash table of
/// small slots (a key's hash and its cell's index), so updating a resource the tree
/// already holds is one hash lookup, one cell read and written (its key, when short,
/// lies in the cell), and no allocation; change IDs are kept once per event in an
/// arena the cells point into. The key order is a list of cells sorted by key, brought
/// up to date only when it is needed (a snapshot, the final tree): the cells that came
/// since are sorted and put in their places, the ones that went are taken out, and
/// only then are their cells used again. Taking a tree apart that way costs
/// about as much as folding as many events as it has entries into it directly, so a
/// fold that starts from a non-empty tree (the state at a point: a snapshot plus the
/// events after it) updates that tree in place until it has folded that many events,
/// and only then switches.
pub struct TreeFold {
    /// The starting tree, folded into directly until `direct_left` runs out.
    start: Option<Tree>,
    /// Events still to fold straight into `start` before switching to the slab.
    direct_left: usize,
    /// Reused key buffer for `start`.
    start_key: ResourceKey,
    slab: Vec<Cell>,
    /// Cells free to be used again (not in `order` or `added`).
    free: Vec<usize>,
    /// Key -> slab index, for lookups ([`Slot`]). Never iterated into anything stored
    /// or compared.
    by_key: hashbrown::HashTable<Slot>,
    /// Seeds the hashes of `by_key` (workers preparing events compute them too).
    keys: KeyHasher,
    /// Cells in key order as of the last [`TreeFold::settle`] (snapshots and the final
    /// tree), some of them perhaps `removed` since.
    order: Vec<u32>,
    /// Cells added since the last settle, in no order.
    added: Vec<u32>,
    /// Cells removed since the last settle (still in `order` or `added`; used again
    /// only once taken out of them), and a flag per cell for them.
    removed: Vec<u32>,
    gone: Vec<bool>,
    /// Resources in the file namespace.
    file_count: usize,
    /// The change IDs the cells name, one copy per event that set something (see
    /// [`TreeFold::intern`]); compacted when it reaches `ids_compact_at` bytes.
    ids: String,
    ids_compact_at: usize,
    /// [`IDS_COMPACT_MIN`] (smaller in tests).
    ids_compact_min: usize,
    seq: Option<u64>,
    /// Bytes and entries of the last snapshot encoded, to size the next one's buffer.
    snapshot_size: (usize, usize),
}

/// Bytes per entry of a snapshot, a guess for the first one a fold encodes: the hash and
/// mode, about 10 bytes of lengths, size and seq, the name's bytes after those it shares
/// with the one before, and the change ID (`snapshot.rs`).
const SNAPSHOT_ENTRY_GUESS: usize = 96;

/// Key bytes (namespace and name together) a [`Cell`] holds without an allocation of
/// their own.
const KEY_INLINE: usize = 48;

/// [`TreeFold::ids`] is compacted once it holds at least this many bytes and four times
/// what it held after the last compaction.
const IDS_COMPACT_MIN: usize = 4 << 20;

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
    /// bytes, then the name's bytes, so distinct pairs are distinct inputs. 32 bits of
    /// it, in both halves of the `u64` (see [`spread`]).
    pub fn hash(self, namespace: &[u8], name: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let shared = foldhash::SharedSeed::global_random();
        let mut h = foldhash::fast::SeedableRandomState::with_seed(self.0, shared).build_hasher();
        h.write_usize(namespace.len());
        h.write(namespace);
        h.write(name);
        spread(h.finish() as u32)
    }
}

/// A 32-bit key hash as the key map hashes it: in both halves of a `u64`, since
/// `hashbrown` places an entry by the low bits and filters by the top seven. A [`Slot`]
/// keeps the 32 bits, so a lookup's slots stay small.
fn spread(hash: u32) -> u64 {
    u64::from(hash) * 0x1_0000_0001
}

/// An entry of [`TreeFold`]'s key map: the key's hash ([`spread`] gives it back) and
/// where its [`Cell`] is (eight bytes: a tree of 10,000 resources has a key map of
/// 128 KiB).
struct Slot {
    hash: u32,
    index: u32,
}

impl Slot {
    fn new(hash: u64, index: usize) -> Result<Slot, Error> {
        Ok(Slot {
            hash: hash as u32,
            index: u32::try_from(index).map_err(|_| Error::TooLarge("a tree of 2^32 resources"))?,
        })
    }

    /// Whether this is the slot of the key (`namespace`, `name`), whose hash is `hash`.
    fn is(&self, hash: u64, slab: &[Cell], namespace: &[u8], name: &[u8]) -> bool {
        self.hash == hash as u32 && slab[self.index as usize].is(namespace, name)
    }
}

/// One resource of a [`TreeFold`] (an element of its slab): its key, its content, and
/// the seq and ID (a range of [`TreeFold::ids`]) of the change that set it. Two cache
/// lines, the key in the first (what a lookup reads), the rest in the second (what an
/// update writes).
#[repr(C, align(64))]
struct Cell {
    namespace_len: u32,
    /// The namespace's bytes, then the name's (inline up to [`KEY_INLINE`] bytes).
    key: smallvec::SmallVec<[u8; KEY_INLINE]>,
    content: Content,
    seq: u64,
    id_start: u32,
    id_len: u32,
}

impl Cell {
    /// A cell for the key (`namespace`, `name`), or `None` when the namespace is
    /// longer than a `u32` counts.
    fn new(namespace: &[u8], name: &[u8], content: Content, seq: u64, id: IdSpan) -> Option<Cell> {
        let mut key = smallvec::SmallVec::with_capacity(namespace.len() + name.len());
        key.extend_from_slice(namespace);
        key.extend_from_slice(name);
        Some(Cell {
            namespace_len: u32::try_from(namespace.len()).ok()?,
            key,
            content,
            seq,
            id_start: id.start,
            id_len: id.len,
        })
    }

    /// The order of two cells' keys: [`ResourceKey`]'s (namespace bytes, then name
    /// bytes).
    fn cmp_key(&self, other: &Cell) -> Ordering {
        let (a_ns, a_name) = self.key.split_at(self.namespace_len as usize);
        let (b_ns, b_name) = other.key.split_at(other.namespace_len as usize);
        ledger::cmp_bytes(a_ns, b_ns).then_with(|| ledger::cmp_bytes(a_name, b_name))
    }

    /// Whether this is the key (`namespace`, `name`).
    fn is(&self, namespace: &[u8], name: &[u8]) -> bool {
        self.namespace_len as usize == namespace.len()
            && self.key.len() == namespace.len() + name.len()
            && self.key[..namespace.len()] == *namespace
            && self.key[namespace.len()..] == *name
    }

    fn id(&self) -> IdSpan {
        IdSpan {
            start: self.id_start,
            len: self.id_len,
        }
    }

    fn set_id(&mut self, id: IdSpan) {
        self.id_start = id.start;
        self.id_len = id.len;
    }
}

/// Where a change ID lies in [`TreeFold::ids`] (an empty ID anywhere, at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdSpan {
    start: u32,
    len: u32,
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
            order: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
            gone: Vec::new(),
            file_count: 0,
            ids: String::new(),
            ids_compact_at: IDS_COMPACT_MIN,
            ids_compact_min: IDS_COMPACT_MIN,
            snapshot_size: (0, 0),
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

    /// Makes room for `cells` resources (those in the tree at once, with those removed
    /// since the last snapshot) before the fold needs it, so that its cells are not
    /// moved as the tree grows: growing step by step copies every cell to new memory
    /// each time. A hint, for a fold of an input whose size is known ahead (a rebuild
    /// from the journal). With the system allocator, room never used takes address
    /// space and no memory; room the allocator does not give is not taken (the fold
    /// then grows as it goes).
    pub fn reserve(&mut self, cells: usize) {
        let more = cells.saturating_sub(self.slab.len());
        if self.slab.try_reserve_exact(more).is_ok() {
            // (A flag per cell.)
            let _ = self.gone.try_reserve_exact(more);
        }
    }

    /// Resources in the tree.
    pub fn len(&self) -> usize {
        match &self.start {
            Some(t) => t.len(),
            None => self.by_key.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files (resources in the file namespace) in the tree so far.
    pub fn files(&self) -> usize {
        match &self.start {
            Some(t) => t.files().count(),
            None => self.file_count,
        }
    }

    /// The change ID at `id`.
    fn id(&self, id: IdSpan) -> &str {
        &self.ids[id.start as usize..(id.start + id.len) as usize]
    }

    /// The tree so far.
    pub fn into_tree(mut self) -> Tree {
        if let Some(t) = self.start {
            // `start.seq` follows `self.seq` (see `done`).
            return t;
        }
        self.settle();
        let entries = self
            .order
            .iter()
            .map(|&i| {
                let c = &self.slab[i as usize];
                let (namespace, name) = c.key.split_at(c.namespace_len as usize);
                let key = ResourceKey {
                    // Only ever set from a `&str`.
                    namespace: String::from_utf8_lossy(namespace).into_owned(),
                    name: Name(name.to_vec()),
                };
                let entry = Entry {
                    content: c.content,
                    seq: c.seq,
                    change_id: self.id(c.id()).to_string(),
                };
                (key, entry)
            })
            .collect();
        Tree {
            entries,
            seq: self.seq,
        }
    }

    /// Brings [`TreeFold::order`] up to date: the cells removed since are taken out
    /// (and are free to be used again), the ones added since sorted by key and put in
    /// their places (found by binary search: a few comparisons each, not one per cell).
    fn settle(&mut self) {
        self.take_out_removed();
        if self.added.is_empty() {
            return;
        }
        let slab = &self.slab;
        let by_key = |a: &u32, b: &u32| slab[*a as usize].cmp_key(&slab[*b as usize]);
        let mut added = std::mem::take(&mut self.added);
        added.sort_unstable_by(by_key);
        if self.order.is_empty() {
            self.order = added;
        } else {
            let mut merged = Vec::with_capacity(self.order.len() + added.len());
            let mut from = 0;
            for a in added.drain(..) {
                let at =
                    from + self.order[from..].partition_point(|o| by_key(o, &a) == Ordering::Less);
                merged.extend_from_slice(&self.order[from..at]);
                merged.push(a);
                from = at;
            }
            merged.extend_from_slice(&self.order[from..]);
            self.order = merged;
            self.added = added;
        }
        debug_assert_eq!(self.order.len(), self.by_key.len());
        debug_assert!(self
            .order
            .windows(2)
            .all(|w| by_key(&w[0], &w[1]) == Ordering::Less));
    }

    /// Takes the cells removed since the last settle out of `order` and `added`, and
    /// makes them free to be used again (without their keys' memory). Also done by
    /// [`TreeFold::set`] once more cells wait than the tree holds (at least 4096), so a
    /// long fold with no snapshot does not grow its slab with every resource created.
    fn take_out_removed(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        let gone = &self.gone;
        self.order.retain(|&i| !gone[i as usize]);
        self.added.retain(|&i| !gone[i as usize]);
        for &i in &self.removed {
            self.gone[i as usize] = false;
            self.slab[i as usize].key = smallvec::SmallVec::new();
            self.free.push(i as usize);
        }
        self.removed.clear();
    }

    /// [`Projection::to_snapshot_bytes`] of the tree so far (the same bytes).
    pub fn to_snapshot_bytes(&mut self) -> Vec<u8> {
        let mut whole = Vec::new();
        self.snapshot_parts(usize::MAX, &mut |part| {
            whole = part;
            true
        });
        whole
    }

    /// [`TreeFold::to_snapshot_bytes`] handed to `emit` in parts, in order, each ended
    /// after the first entry that takes it to `part` bytes or more (the last one
    /// shorter): whoever stores the snapshot can write the first parts while the next
    /// are made. With `part` of `usize::MAX`, or while the fold still folds straight
    /// into its starting tree, one part. `emit` returning `false` stops the encoding
    /// (and this returns `false`).
    pub fn snapshot_parts(&mut self, part: usize, emit: &mut dyn FnMut(Vec<u8>) -> bool) -> bool {
        if let Some(t) = &self.start {
            // `start.seq` follows `self.seq` (see `done`).
            return emit(t.to_snapshot_bytes());
        }
        self.settle();
        let capacity = self.snapshot_capacity();
        // A part's buffer: all of the snapshot's, or a part and a little more.
        let part_capacity = capacity.min(part.saturating_add(part / 8));
        let mut total = 0;
        // The bytes `Tree::to_snapshot_bytes` writes (`TreeFold`'s tests compare them
        // on every fold).
        let mut out = snapshot::begin(part_capacity, self.order.len());
        let mut w = snapshot::EntryWriter::new();
        // Cells (and their change IDs) come in key order, not slab order: each is asked
        // for a few entries ahead (a hint), so the waits overlap.
        for (n, &i) in self.order.iter().enumerate() {
            let ahead = self.order.get(n + ENCODE_AHEAD);
            if let Some(a) = ahead.and_then(|&j| self.slab.get(j as usize)) {
                prefetch(Some(a));
                prefetch(Some(&a.content));
                prefetch(self.ids.as_bytes().get(a.id_start as usize));
            }
            let c = &self.slab[i as usize];
            let (namespace, name) = c.key.split_at(c.namespace_len as usize);
            let id = self.id(c.id()).as_bytes();
            w.entry(&mut out, namespace, name, &c.content, c.seq, id);
            if out.len() >= part {
                total += out.len();
                if !emit(std::mem::replace(
                    &mut out,
                    Vec::with_capacity(part_capacity),
                )) {
                    return false;
                }
            }
        }
        snapshot::end(&mut out, self.seq);
        self.snapshot_size = (total + out.len(), self.order.len());
        emit(out)
    }

    /// A buffer size for the next snapshot: the last one's size per entry times the
    /// entries now, and an eighth more (bytes never written to are never given memory,
    /// while a buffer that has to grow is copied: a rebuild's first kept snapshot, after
    /// the empty tree's, grew from 46 bytes). At most twice the last snapshot or
    /// [`SNAPSHOT_ENTRY_GUESS`] per entry, whichever is more: a small last snapshot of a
    /// few long keys says little about a tree that has grown since.
    fn snapshot_capacity(&self) -> usize {
        let (len, entries) = self.snapshot_size;
        let per_entry = len
            .checked_div(entries)
            .map_or(SNAPSHOT_ENTRY_GUESS, |b| b + 1);
        let want = self.order.len().saturating_mul(per_entry);
        let most = len
            .saturating_mul(2)
            .max(self.order.len().saturating_mul(SNAPSHOT_ENTRY_GUESS));
        want.saturating_add(want / 8).min(most).max(len)
    }

    /// Takes the starting tree apart into the slab and maps.
    fn unpack(&mut self) -> Result<(), Error> {
        let Some(t) = self.start.take() else {
            return Ok(());
        };
        self.slab.reserve(t.entries.len());
        self.by_key.reserve(t.entries.len(), |s| spread(s.hash));
        let mut last: Option<(u64, IdSpan)> = None;
        let mut order = Vec::with_capacity(t.entries.len());
        let mut files = 0;
        for (k, e) in t.entries {
            // Entries set by one change (one seq) share its ID.
            let id = match last {
                Some((seq, id)) if seq == e.seq && self.id(id) == e.change_id => id,
                _ => self.intern(&e.change_id)?,
            };
            last = Some((e.seq, id));
            let (namespace, name) = (k.namespace.as_bytes(), k.name.as_bytes());
            let hash = self.keys.hash(namespace, name);
            let i = self.slab.len();
            let slot = Slot::new(hash, i)?;
            let cell = Cell::new(namespace, name, e.content, e.seq, id).ok_or(TOO_LONG)?;
            self.slab.push(cell);
            self.gone.push(false);
            self.by_key.insert_unique(hash, slot, |s| spread(s.hash));
            // (`Slot::new` checked that the index fits.)
            order.push(i as u32);
            files += usize::from(k.is_file());
        }
        // In key order already.
        self.order = order;
        self.file_count = files;
        Ok(())
    }

    /// Checks the order of the next event and picks where it is folded.
    fn check(&mut self, seq: u64) -> Result<(), Error> {
        if let Some(last) = self.seq {
            if seq <= last {
                return Err(Error::OutOfOrder { last, got: seq });
            }
        }
        if self.direct_left == 0 {
            self.unpack()?;
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

    /// Adds `change_id` to [`TreeFold::ids`] (compacting it first when it is due).
    fn intern(&mut self, change_id: &str) -> Result<IdSpan, Error> {
        if change_id.is_empty() {
            // Nothing to keep (and nothing another ID could be taken for).
            return Ok(IdSpan { start: 0, len: 0 });
        }
        if self.ids.len() + change_id.len() > self.ids_compact_at {
            self.compact_ids();
        }
        let start = self.ids.len();
        let span = u32::try_from(start)
            .ok()
            .zip(u32::try_from(change_id.len()).ok())
            .filter(|(s, l)| s.checked_add(*l).is_some())
            .ok_or(Error::TooLarge("the change IDs a tree names (4 GiB)"))?;
        self.ids.push_str(change_id);
        Ok(IdSpan {
            start: span.0,
            len: span.1,
        })
    }

    /// Rewrites [`TreeFold::ids`] with only the IDs that cells in the tree name, once
    /// each.
    fn compact_ids(&mut self) {
        let mut ids = String::new();
        let mut moved: hashbrown::HashMap<u32, u32, foldhash::fast::RandomState> =
            hashbrown::HashMap::default();
        let mut free = vec![false; self.slab.len()];
        for i in self
            .free
            .iter()
            .copied()
            .chain(self.removed.iter().map(|&i| i as usize))
        {
            free[i] = true;
        }
        for (cell, _) in self.slab.iter_mut().zip(&free).filter(|(_, &f)| !f) {
            let id = cell.id();
            if id.len == 0 {
                continue;
            }
            // IDs are kept whole and apart, so a start names one ID. The new arena is
            // no longer than the old one: the offsets fit.
            let start = *moved.entry(id.start).or_insert_with(|| {
                let start = ids.len() as u32;
                ids.push_str(&self.ids[id.start as usize..(id.start + id.len) as usize]);
                start
            });
            cell.set_id(IdSpan { start, len: id.len });
        }
        self.ids = ids;
        self.ids_compact_at = self.ids_compact_min.max(4 * self.ids.len());
    }

    /// Sets (or with `None` removes) one resource, for the event at `seq` whose change
    /// ID is `change_id` (`id`: where this fold keeps it, once a resource of the event
    /// put it there). `hash`: the key's hash by [`TreeFold::key_hasher`] when it was
    /// computed ahead. Fails only on sizes past what the fold counts
    /// ([`Error::TooLarge`]).
    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        namespace: &str,
        name: &[u8],
        hash: Option<u64>,
        new: Option<Content>,
        seq: u64,
        change_id: &str,
        id: &mut Option<IdSpan>,
    ) -> Result<(), Error> {
        // The key as a `ResourceKey` (the starting tree's type),
        // filled only where one is needed: not for an update in the slab.
        let key = &mut self.start_key;
        if let Some(t) = &mut self.start {
            key.namespace.clear();
            key.namespace.push_str(namespace);
            key.name.0.clear();
            key.name.0.extend_from_slice(name);
            match new {
                Some(content) => match t.entries.get_mut(key) {
                    Some(e) => {
                        e.content = content;
                        e.seq = seq;
                        e.change_id.clear();
                        e.change_id.push_str(change_id);
                    }
                    None => {
                        let entry = Entry {
                            content,
                            seq,
                            change_id: change_id.to_string(),
                        };
                        t.entries.insert(key.clone(), entry);
                    }
                },
                None => {
                    t.entries.remove(key);
                }
            }
            return Ok(());
        }
        // (A hash in the form the key map places and moves entries by.)
        let is_file = namespace == ResourceKey::FILE;
        let namespace = namespace.as_bytes();
        let hash = spread(hash.unwrap_or_else(|| self.keys.hash(namespace, name)) as u32);
        let Some(content) = new else {
            let slab = &self.slab;
            let is = |s: &Slot| s.is(hash, slab, namespace, name);
            if let Ok(found) = self.by_key.find_entry(hash, is) {
                let (slot, _) = found.remove();
                // Taken out of the order (and free again) at the next settle.
                let i = slot.index as usize;
                self.gone[i] = true;
                self.removed.push(slot.index);
                self.file_count -= usize::from(is_file);
                if self.removed.len() > self.by_key.len().max(4096) {
                    self.take_out_removed();
                }
            }
            return Ok(());
        };
        let at = match *id {
            Some(at) => at,
            None => *id.insert(self.intern(change_id)?),
        };
        let slab = &self.slab;
        let is = |s: &Slot| s.is(hash, slab, namespace, name);
        if let Some(s) = self.by_key.find(hash, is) {
            let c = &mut self.slab[s.index as usize];
            c.content = content;
            c.seq = seq;
            c.set_id(at);
            return Ok(());
        }
        let cell = Cell::new(namespace, name, content, seq, at).ok_or(TOO_LONG)?;
        let slot = Slot::new(hash, self.free.last().copied().unwrap_or(self.slab.len()))?;
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = cell;
                i
            }
            None => {
                self.slab.push(cell);
                self.gone.push(false);
                self.slab.len() - 1
            }
        };
        self.by_key.insert_unique(hash, slot, |s| spread(s.hash));
        // (`Slot::new` checked that the index fits.)
        self.added.push(i as u32);
        self.file_count += usize::from(is_file);
        Ok(())
    }

    /// Folds one event in; events must come in increasing seq order
    /// ([`Error::OutOfOrder`] otherwise, and nothing changes). After any other error
    /// ([`Error::TooLarge`]) the fold may hold part of the event and must not be used.
    pub fn apply(&mut self, ev: &EventRef) -> Result<(), Error> {
        self.check(ev.seq)?;
        if let BodyRef::Change(change) = &ev.body {
            let mut id = None;
            for rc in &change.resources {
                self.set(
                    rc.key.namespace,
                    rc.key.name,
                    None,
                    rc.new,
                    ev.seq,
                    ev.change_id,
                    &mut id,
                )?;
            }
        }
        self.done(ev.seq);
        Ok(())
    }

    /// Folds event `i` of `prepared`, made from `bytes` by [`Prepared::push`]; returns
    /// its seq. The same rules as [`TreeFold::apply`]; text that is not UTF-8 (bytes
    /// other than the ones `prepared` was made from) is [`Error::Prepared`], after which
    /// the fold must not be used either.
    pub fn apply_prepared(
        &mut self,
        bytes: &[u8],
        prepared: &Prepared,
        i: usize,
    ) -> Result<u64, Error> {
        let ev = &prepared.events[i];
        self.check(ev.seq)?;
        // The hashes computed ahead are used only if they were computed for this fold.
        let hashed = prepared.keys == Some(self.keys);
        if i + PREFETCH_AHEAD < prepared.events.len() {
            self.prefetch(bytes, prepared, i + PREFETCH_AHEAD, hashed);
        }
        let change_id = std::str::from_utf8(ev.change_id.of(bytes)).map_err(|_| NOT_UTF8)?;
        let mut id = None;
        for r in prepared.resources(i) {
            let namespace = std::str::from_utf8(r.namespace.of(bytes)).map_err(|_| NOT_UTF8)?;
            self.set(
                namespace,
                r.name.of(bytes),
                hashed.then_some(r.hash),
                r.new,
                ev.seq,
                change_id,
                &mut id,
            )?;
        }
        self.done(ev.seq);
        Ok(ev.seq)
    }
}

/// How many entries ahead [`TreeFold::to_snapshot_bytes`] asks for a cell.
const ENCODE_AHEAD: usize = 8;

/// How many events ahead [`TreeFold::apply_prepared`] asks for what an event will read.
const PREFETCH_AHEAD: usize = 2;

impl TreeFold {
    /// Asks the CPU to start loading what folding event `i` of `prepared` will read
    /// (hints only: nothing is read here that the fold then relies on): its change ID
    /// and names in `bytes` and, with hashes computed for this fold (`hashed`), both
    /// cache lines of the cell the key map holds for each hash (found by the hash
    /// alone; a key longer than [`KEY_INLINE`] bytes lies elsewhere and is not asked
    /// for).
    fn prefetch(&self, bytes: &[u8], prepared: &Prepared, i: usize, hashed: bool) {
        let ev = &prepared.events[i];
        prefetch(bytes.get(ev.change_id.start as usize));
        for r in prepared.resources(i) {
            prefetch(bytes.get(r.name.start as usize));
            if hashed && self.start.is_none() {
                let hash = spread(r.hash as u32);
                if let Some(c) = self
                    .by_key
                    .find(hash, |s| s.hash == hash as u32)
                    .and_then(|s| self.slab.get(s.index as usize))
                {
                    prefetch(Some(c));
                    prefetch(Some(&c.content));
                }
            }
        }
    }
}

/// Asks the CPU to start loading the cache line `at` lies on (a hint; nothing on
/// targets without SSE).
#[inline(always)]
fn prefetch<T>(at: Option<&T>) {
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    if let Some(at) = at {
        safe_arch::prefetch_t0(at);
    }
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    let _ = at;
}

const NOT_UTF8: Error = Error::Prepared("text is not UTF-8");
const TOO_LONG: Error = Error::TooLarge("a resource namespace (4 GiB)");

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

    /// The resources of event `i`.
    fn resources(&self, i: usize) -> &[PreparedResource] {
        let from = match i {
            0 => 0,
            _ => self.events[i - 1].res_end as usize,
        };
        &self.res[from..self.events[i].res_end as usize]
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
    use ledger::Mode;

    /// A fold whose change-ID arena is compacted again and again (a small threshold)
    /// gives the tree and snapshot bytes of a plain fold at every step, with resources
    /// set, updated, removed and set again (free cells reused), several per event, and
    /// its key order brought up to date only every 250 events (snapshots).
    #[test]
    fn compacted_change_ids_fold_the_same_tree() {
        // From an empty tree, and from a starting tree of many entries and IDs (taken
        // apart into the slab, compacting as it goes, once as many events were folded
        // into it directly).
        for start_entries in [0, 400] {
            let mut start = Tree::new();
            for i in 0..start_entries {
                let key = ResourceKey::file(format!("dir/{i}.txt").as_bytes());
                let entry = Entry {
                    content: Content {
                        hash: ledger::Hash::ZERO,
                        mode: Mode::Regular,
                        size: i,
                    },
                    seq: i / 3,
                    // Runs of entries of one change, and some empty IDs.
                    change_id: if i % 8 == 0 {
                        String::new()
                    } else {
                        format!("start-{}", i / 3)
                    },
                };
                start.entries.insert(key, entry);
            }
            start.seq = Some(start_entries);
            compacting_fold(start);
        }
    }

    /// Folds random events into `start` through [`TreeFold`] with a small ID-arena
    /// threshold and through [`Tree`], comparing them as it goes.
    fn compacting_fold(start: Tree) {
        let mut f = TreeFold::new(start.clone());
        f.ids_compact_min = 256;
        f.ids_compact_at = 256;
        let mut plain = start;
        let first = plain.seq.map_or(1, |s| s + 1);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut interned = 0;
        for seq in first..first + 3000 {
            // IDs of different lengths, one event in eight with an empty one, some
            // events touching several resources (the same one twice, at times).
            let id = if next(8) == 0 {
                String::new()
            } else {
                format!("change-{seq}-{}", "x".repeat(next(20) as usize))
            };
            let mut resources = Vec::new();
            for _ in 0..1 + next(3) {
                // Namespaces and names that are prefixes of one another, so the key
                // order is that of `ResourceKey`'s bytes.
                let namespace = ["file", "file", "file", "fil", "files", ""][next(6) as usize];
                let name = match next(4) {
                    0 => "d".to_string(),
                    1 => "d/".to_string(),
                    2 => format!("d/{}", next(8)),
                    _ => format!("dir/{}.txt", next(60)),
                };
                let key = ResourceKey {
                    namespace: namespace.to_string(),
                    name: Name(name.into_bytes()),
                };
                let new = (next(4) != 0).then(|| Content {
                    hash: ledger::Hash::of_content(&seq.to_le_bytes()),
                    mode: Mode::Regular,
                    size: seq,
                });
                resources.push((key, new));
            }
            f.check(seq).unwrap();
            let mut at = None;
            for (key, new) in &resources {
                let (namespace, name) = (key.namespace.as_str(), key.name.as_bytes());
                f.set(namespace, name, None, *new, seq, &id, &mut at)
                    .unwrap();
                match new {
                    Some(content) => {
                        let entry = Entry {
                            content: *content,
                            seq,
                            change_id: id.clone(),
                        };
                        plain.entries.insert(key.clone(), entry);
                    }
                    None => {
                        plain.entries.remove(key);
                    }
                }
            }
            interned += at.map_or(0, |_| id.len());
            f.done(seq);
            plain.seq = Some(seq);
            // The key order is brought up to date only for a snapshot: resources come
            // and go (and come back) between them.
            if seq % 250 == 0 {
                assert_eq!(
                    f.to_snapshot_bytes(),
                    plain.to_snapshot_bytes(),
                    "seq {seq}"
                );
            }
            assert_eq!(f.len(), plain.len(), "seq {seq}");
            assert_eq!(f.files(), plain.files().count(), "seq {seq}");
        }
        assert!(f.start.is_none(), "folded in the slab");
        assert!(
            f.ids.len() < interned / 2,
            "the arena was compacted: {} of {interned} bytes",
            f.ids.len()
        );
        assert_eq!(f.into_tree(), plain);
    }

    /// Keys whose hashes are all the same (as two keys' 32 bits may be) are told apart
    /// by their bytes: each is added once, updated in place and removed alone.
    #[test]
    fn keys_with_one_hash_are_told_apart_by_their_bytes() {
        let content = |size| Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size,
        };
        let names: Vec<Vec<u8>> = (0..40).map(|i| format!("f{i}").into_bytes()).collect();
        let same = Some(spread(7));
        let mut f = TreeFold::new(Tree::new());
        f.check(1).unwrap();
        assert!(f.start.is_none(), "folding into the slab");
        for size in [1, 2] {
            for name in &names {
                put(&mut f, "file", name, same, Some(content(size)), "c");
            }
        }
        assert_eq!(f.len(), names.len());
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            put(&mut f, "file", name, same, None, "d");
            assert_eq!(f.len(), names.len() - i / 2 - 1);
        }
        for name in names.iter().skip(1).step_by(2) {
            put(&mut f, "file", name, same, Some(content(3)), "e");
        }
        let tree = f.into_tree();
        let want: Vec<(Vec<u8>, u64)> = names
            .iter()
            .skip(1)
            .step_by(2)
            .map(|n| (n.clone(), 3))
            .collect();
        let mut got: Vec<(Vec<u8>, u64)> = tree
            .iter()
            .map(|(k, e)| (k.name.0.clone(), e.content.size))
            .collect();
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want);
    }

    /// Resources created and removed again and again, with no snapshot to bring the
    /// key order up to date, leave the slab about as large as the tree (at least 4096
    /// cells): removed cells are taken out and used again as the fold goes.
    #[test]
    fn churn_without_snapshots_keeps_the_slab_small() {
        let c = Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size: 0,
        };
        let mut f = TreeFold::new(Tree::new());
        f.check(1).unwrap();
        for n in 0..50_000u32 {
            put(
                &mut f,
                "file",
                format!("tmp/{n}").as_bytes(),
                None,
                Some(c),
                "c",
            );
            if n > 0 {
                put(
                    &mut f,
                    "file",
                    format!("tmp/{}", n - 1).as_bytes(),
                    None,
                    None,
                    "c",
                );
            }
        }
        assert_eq!((f.len(), f.files()), (1, 1));
        assert!(
            f.slab.len() <= 2 * 4096 + 2,
            "slab of {} cells",
            f.slab.len()
        );
        let tree = f.into_tree();
        assert_eq!(tree.len(), 1);
        assert!(tree.get(&ResourceKey::file(b"tmp/49999")).is_some());
    }

    /// A fold with room made for its cells keeps them in place until it outgrows the
    /// room, and folds the tree a fold without the room does; room the allocator cannot
    /// give is passed over.
    #[test]
    fn reserved_room_keeps_the_cells_in_place_until_outgrown() {
        let c = Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size: 0,
        };
        let mut plain = TreeFold::new(Tree::new());
        let mut roomy = TreeFold::new(Tree::new());
        roomy.reserve(1000);
        // Past what a `Vec` can count, and more than any machine has.
        let mut huge = TreeFold::new(Tree::new());
        huge.reserve(usize::MAX / 2);
        let mut large = TreeFold::new(Tree::new());
        large.reserve(isize::MAX as usize / 256);
        let mut at = None;
        for f in [&mut plain, &mut roomy, &mut huge, &mut large] {
            f.check(1).unwrap();
        }
        for n in 0..1001u32 {
            for f in [&mut plain, &mut roomy, &mut huge, &mut large] {
                let name = format!("src/{n}");
                put(f, "file", name.as_bytes(), None, Some(c), "c");
            }
            if n == 0 {
                at = Some(roomy.slab.as_ptr());
                assert!(roomy.slab.capacity() >= 1000);
            }
            if n < 1000 {
                assert_eq!(Some(roomy.slab.as_ptr()), at, "cell {n} moved the slab");
            }
        }
        let tree = plain.into_tree();
        assert_eq!(tree.len(), 1001);
        assert_eq!(roomy.into_tree(), tree);
        assert_eq!(huge.into_tree(), tree);
        assert_eq!(large.into_tree(), tree);
    }

    /// A cell is two cache lines, the key in the first.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn a_cell_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Cell>(), 128);
        assert_eq!(std::mem::align_of::<Cell>(), 64);
        assert_eq!(std::mem::offset_of!(Cell, content), 64);
    }

    /// [`TreeFold::set`] of one resource, as the only one of an event of change `id`
    /// at the fold's next seq.
    fn put(
        f: &mut TreeFold,
        namespace: &str,
        name: &[u8],
        hash: Option<u64>,
        new: Option<Content>,
        id: &str,
    ) {
        let seq = f.seq.map_or(1, |s| s + 1);
        f.set(namespace, name, hash, new, seq, id, &mut None)
            .unwrap();
        f.done(seq);
    }

    /// A snapshot handed out in parts joins to the bytes of one made whole, for parts
    /// of one byte to larger than the snapshot; every part but the last reaches the part
    /// size, one entry ending each (with one-byte parts, a part per entry and one for
    /// the end).
    #[test]
    fn snapshot_parts_join_to_the_snapshot_bytes() {
        let mut f = TreeFold::new(Tree::new());
        // (Takes the empty starting tree apart: the fold is in the slab.)
        f.check(1).unwrap();
        for i in 0..300u32 {
            let c = Content {
                hash: ledger::Hash::of_content(&i.to_le_bytes()),
                mode: Mode::Regular,
                size: u64::from(i),
            };
            let name = format!("dir/f{i:04}");
            put(
                &mut f,
                "file",
                name.as_bytes(),
                None,
                Some(c),
                &format!("c{}", i / 3),
            );
        }
        let whole = f.to_snapshot_bytes();
        assert_eq!(Tree::from_snapshot_bytes(&whole).unwrap().len(), 300);
        for part in [1, 39, 4096, whole.len(), usize::MAX] {
            let mut parts = Vec::new();
            f.snapshot_size = (0, 0);
            assert!(f.snapshot_parts(part, &mut |p| {
                parts.push(p);
                true
            }));
            assert_eq!(parts.concat(), whole, "parts of {part}");
            let (_, rest) = parts.split_last().unwrap();
            assert!(rest.iter().all(|p| p.len() >= part), "parts of {part}");
            assert_eq!(f.snapshot_size, (whole.len(), 300));
            // Every entry takes at least 39 bytes.
            match part {
                1 | 39 => assert_eq!(parts.len(), 301),
                p if p >= whole.len() => assert_eq!(parts.len(), 1),
                _ => assert!(parts.len() > 2),
            }
        }
        // An `emit` that refuses stops the encoding.
        let mut calls = 0;
        assert!(!f.snapshot_parts(39, &mut |_| {
            calls += 1;
            calls < 3
        }));
        assert_eq!(calls, 3);
    }

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
            put(&mut f, "file", b"a", None, Some(c), "c");
            put(&mut f, "file", b"b", None, Some(c), "c");
            put(&mut f, "flag", b"a", None, Some(c), "c");
            put(&mut f, "deploy", b"x", None, Some(c), "c");
            put(&mut f, "file", b"b", None, None, "c");
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
        let c = |size| Content {
            hash: ledger::Hash::ZERO,
            mode: Mode::Regular,
            size,
        };
        for (i, &(ns, name)) in pairs.iter().enumerate() {
            let hash = keys.hash(ns.as_bytes(), name);
            let no_id = IdSpan { start: 0, len: 0 };
            let cell = Cell::new(ns.as_bytes(), name, c(0), 1, no_id).unwrap();
            for (j, &(ns2, name2)) in pairs.iter().enumerate() {
                // A cell tells keys apart by their bytes and the namespace's length.
                assert_eq!(
                    cell.is(ns2.as_bytes(), name2),
                    i == j,
                    "{ns:?} {name:?} / {ns2:?} {name2:?}"
                );
            }
            hashes.insert(hash, i);
        }
        // The pairs hash apart too (with a 32-bit hash, a collision among nine, about
        // one run in 10^8 by chance, would
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
        for ahead in [false, true] {
            let mut f = TreeFold::new(Tree::new());
            f.check(1).unwrap();
            assert!(f.start.is_none(), "taken apart at once");
            let keys = f.key_hasher();
            let hash = |ns: &str, name: &[u8]| ahead.then(|| keys.hash(ns.as_bytes(), name));
            for size in [1, 2] {
                for &(ns, name) in &pairs {
                    put(&mut f, ns, name, hash(ns, name), Some(c(size)), "c");
                }
                assert_eq!(f.len(), pairs.len(), "ahead {ahead}, size {size}");
            }
            let tree = f.into_tree();
            assert!(tree.entries.values().all(|e| e.content.size == 2));
            let mut f = TreeFold::new(tree);
            // One event per starting entry is folded into the tree directly; the next
            // takes it apart.
            let from = f.seq().unwrap() + 1;
            for seq in from..from + pairs.len() as u64 + 1 {
                f.check(seq).unwrap();
            }
            assert!(f.start.is_none(), "taken apart");
            let keys = f.key_hasher();
            let hash = |ns: &str, name: &[u8]| ahead.then(|| keys.hash(ns.as_bytes(), name));
            for &(ns, name) in &pairs {
                put(&mut f, ns, name, hash(ns, name), Some(c(3)), "d");
            }
            assert_eq!(f.len(), pairs.len(), "ahead {ahead}: updated, not added");
            for (i, &(ns, name)) in pairs.iter().enumerate() {
                put(&mut f, ns, name, hash(ns, name), None, "d");
                assert_eq!(
                    f.len(),
                    pairs.len() - i - 1,
                    "ahead {ahead}: {ns:?} {name:?}"
                );
            }
        }
    }
}
