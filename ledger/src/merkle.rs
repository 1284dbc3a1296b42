//! A Merkle tree over event hashes, shaped exactly as RFC 9162 (Certificate
//! Transparency v2, section 2.1) but hashed with BLAKE3 instead of SHA-256.
//!
//! - leaf hash: `BLAKE3(0x00 || event_hash)` ([`leaf_hash`]);
//! - interior node: `BLAKE3(0x01 || left || right)` ([`node_hash`]);
//! - the empty tree: `BLAKE3("")` ([`empty_root`]);
//! - a tree of `n > 1` leaves splits at `k`, the largest power of two strictly below `n`.
//!
//! The distinct leaf and node prefixes are what stop a leaf from being passed off as an
//! interior node (second-preimage attacks on the tree). Keeping the RFC's shape means the
//! proof formats and verification algorithms are the RFC's, so an auditor can check them
//! with any RFC 9162 implementation after swapping the hash function.
//!
//! Every function that takes `leaves` takes **leaf hashes** (outputs of [`leaf_hash`]),
//! not event hashes. `docs/CHECKPOINT.md` specifies the bytes.
//!
//! Three ways to use it:
//! - the slice functions ([`root`], [`inclusion_proof`], [`consistency_proof`]) for
//!   one-off answers: O(n) time, O(log n) extra memory;
//! - [`Frontier`] to keep the root of a growing ledger: O(log n) memory and time per push;
//! - [`Tree`] to answer many proofs about one large ledger: keeps every complete subtree
//!   (about 2n hashes) and answers any root or proof for any size up to its own in
//!   O(log² n) at worst.
//!
//! [`InclusionVerifier`] checks many inclusion proofs against one tree, skipping the
//! hashes that a proof shares with the last one it accepted.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// Prefix byte of a leaf hash input (RFC 9162 section 2.1.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefix byte of an interior node hash input (RFC 9162 section 2.1.1).
pub const NODE_PREFIX: u8 = 0x01;

/// `BLAKE3(0x00 || event_hash)`: the tree leaf for one event.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut buf = [0u8; 33];
    buf[0] = LEAF_PREFIX;
    buf[1..].copy_from_slice(&event_hash.0);
    Hash::from(blake3::hash(&buf))
}

/// `BLAKE3(0x01 || left || right)`: an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // One 65-byte stack buffer and the one-shot hash: this is the hot loop of
    // `Tree::from_leaves`, and the incremental hasher costs noticeably more per call.
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash::from(blake3::hash(&buf))
}

/// Root of the empty tree: BLAKE3 of the empty string.
pub fn empty_root() -> Hash {
    Hash::from(blake3::hash(b""))
}

/// The largest power of two strictly less than `n` (`n >= 2`): the RFC 9162 split point.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// `usize` from a `u64` index known to be below a slice length.
fn ix(i: u64) -> usize {
    usize::try_from(i).expect("index below a slice length fits in usize")
}

/// The Merkle tree hash (RFC 9162 `MTH`) of `leaves` (leaf hashes).
///
/// O(n) hashing, O(log n) memory (it streams through a [`Frontier`]).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

/// The inclusion proof (RFC 9162 section 2.1.3.1 `PATH`) of leaf `index` in the tree of
/// all `leaves`: sibling hashes from the leaf up to the root.
///
/// # Panics
/// If `index >= leaves.len()`: no proof exists; callers check the index first.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
    assert!(
        index < leaves.len() as u64,
        "inclusion proof for leaf {index} of a tree of size {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    path(leaves, index, &mut proof);
    proof
}

/// `PATH(m, D[n])`, appending bottom-up: recurse first, then push this level's sibling.
fn path(leaves: &[Hash], m: u64, out: &mut Vec<Hash>) {
    let n = leaves.len() as u64;
    if n <= 1 {
        return;
    }
    let k = split(n);
    let (left, right) = leaves.split_at(ix(k));
    if m < k {
        path(left, m, out);
        out.push(root(right));
    } else {
        path(right, m - k, out);
        out.push(root(left));
    }
}

/// Checks an inclusion proof with the algorithm of RFC 9162 section 2.1.3.2.
///
/// `leaf` is the leaf hash ([`leaf_hash`] of the event hash) at `index` in a tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    root_from_inclusion(leaf, index, size, proof).is_some_and(|r| r == *root)
}

/// The root an inclusion proof leads to, or `None` when the proof's length does not fit
/// `index` and `size` (RFC 9162 section 2.1.3.2, steps 1 to 5 without the final compare).
fn root_from_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            // Proof longer than the path: extra hashes would otherwise go unchecked.
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                // Right edge of an unbalanced tree: skip levels where this node was
                // promoted without a sibling.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // A proof that is too short leaves `s_n` above zero.
    (s_n == 0).then_some(r)
}

/// Checks many inclusion proofs against one tree (`size`, `root`), cheaply when they
/// are for nearby leaves: accepts exactly what [`verify_inclusion`] accepts with the
/// same `size` and `root`.
///
/// Each step of the RFC 9162 algorithm combines the node computed so far with the next
/// proof hash, its sibling. With the size fixed, where that happens is named by a level
/// (the number of halvings of `index` and `size - 1` so far, promotions on the right
/// edge included) and the node's index at that level. The verifier keeps, for every
/// step of the last proof it accepted, that position, the node and the sibling. A new
/// proof is hashed upwards from its leaf as usual, and before each step it is compared
/// with the kept step at the same level:
/// - the same position, node and sibling, or
/// - the kept sibling's position, with the node equal to the kept sibling and the proof
///   hash equal to the kept node (the two leaves' paths meet one level up),
///
/// then this step hashes exactly the two hashes, in the same order, that the kept step
/// hashed, and every later step starts from the same state as in the accepted proof; so
/// when the rest of the proof is byte for byte the rest of the accepted one, the outcome
/// is the same (accept) and the remaining hashes are skipped. Otherwise the computation
/// simply goes on to its own verdict. Only accepted proofs are ever kept.
///
/// Consecutive leaves of a large tree then cost about one node hash per proof, leaves
/// `k` apart about `log2(k)`, instead of about `log2(size)` each.
#[derive(Clone, Debug)]
pub struct InclusionVerifier {
    size: u64,
    root: Hash,
    /// The steps of the last accepted proof, bottom up (`kept[i].sibling` is its hash
    /// `i`); empty before the first.
    kept: Vec<Step>,
    /// The steps of the proof being checked (reused buffer).
    scratch: Vec<Step>,
    /// Node hashes computed so far (tests check the cache saves work).
    node_hashes: u64,
}

/// One step of the inclusion algorithm: where the node meets its sibling (level, and
/// the node's index at that level), the node and the sibling (the proof hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    level: u32,
    index: u64,
    node: Hash,
    sibling: Hash,
}

impl InclusionVerifier {
    /// A verifier for proofs against the tree of `size` leaves whose root is `root`.
    pub fn new(size: u64, root: Hash) -> InclusionVerifier {
        InclusionVerifier {
            size,
            root,
            kept: Vec::new(),
            scratch: Vec::new(),
            node_hashes: 0,
        }
    }

    /// The tree size proofs are checked against.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root proofs are checked against.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Whether `proof` shows that `leaf` (a leaf hash) is leaf `index` of the tree:
    /// `verify_inclusion(leaf, index, self.size(), proof, self.root())`.
    pub fn verify(&mut self, leaf: &Hash, index: u64, proof: &[Hash]) -> bool {
        if index >= self.size {
            return false;
        }
        self.scratch.clear();
        let mut f_n = index;
        let mut s_n = self.size - 1;
        let mut level = 0u32;
        let mut r = *leaf;
        // Position in `kept` of the first kept step at or above `level`.
        let mut at = 0usize;
        // False once this proof's path has met the kept one and then differed from it:
        // above that, its nodes differ from the kept ones (barring a BLAKE3 collision),
        // so only the full computation is left.
        let mut hunting = !self.kept.is_empty();
        for (i, p) in proof.iter().enumerate() {
            if s_n == 0 {
                // Proof longer than the path.
                return false;
            }
            // Where this step combines: a last node at an even index is promoted until
            // it is a right child (RFC 9162 section 2.1.3.2, step 5.b.2).
            let right = f_n & 1 == 1 || f_n == s_n;
            if right && f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                    level += 1;
                }
            }
            let step = Step {
                level,
                index: f_n,
                node: r,
                sibling: *p,
            };
            if hunting {
                while at < self.kept.len() && self.kept[at].level < level {
                    at += 1;
                }
                match self.kept.get(at) {
                    Some(k) if k.level == level && (k.index == f_n || k.index == f_n ^ 1) => {
                        // The same hashes in the same order as kept step `at`: either
                        // the same node and sibling at the same position, or this node
                        // is the kept sibling and its sibling the kept node.
                        let same = if k.index == f_n {
                            k.node == r && k.sibling == *p
                        } else {
                            k.sibling == r && k.node == *p
                        };
                        if same && proof[i + 1..].iter().eq(self.kept_proof(at + 1)) {
                            self.scratch.push(step);
                            self.kept.splice(..=at, self.scratch.drain(..));
                            return true;
                        }
                        hunting = false;
                    }
                    Some(_) => {}
                    None => hunting = false,
                }
            }
            self.scratch.push(step);
            self.node_hashes += 1;
            r = if right {
                node_hash(p, &r)
            } else {
                node_hash(&r, p)
            };
            f_n >>= 1;
            s_n >>= 1;
            level += 1;
        }
        // A proof that is too short leaves `s_n` above zero.
        if s_n == 0 && r == self.root {
            std::mem::swap(&mut self.kept, &mut self.scratch);
            true
        } else {
            false
        }
    }

    /// The kept proof's hashes from step `from` on.
    fn kept_proof(&self, from: usize) -> impl Iterator<Item = &Hash> + '_ {
        self.kept[from..].iter().map(|k| &k.sibling)
    }
}

/// The consistency proof (RFC 9162 section 2.1.4.1 `PROOF(m, D[n])`) that the tree of the
/// first `old_size` leaves is a prefix of the tree of all `leaves`.
///
/// Empty when `old_size` is 0 or equals `leaves.len()`: nothing needs proving then (see
/// [`verify_consistency`]).
///
/// # Panics
/// If `old_size > leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Vec<Hash> {
    let n = leaves.len() as u64;
    assert!(
        old_size <= n,
        "consistency proof from size {old_size} to smaller size {n}"
    );
    let mut proof = Vec::new();
    if old_size > 0 && old_size < n {
        subproof(leaves, old_size, true, &mut proof);
    }
    proof
}

/// `SUBPROOF(m, D[n], b)`, appending bottom-up like [`path`].
fn subproof(leaves: &[Hash], m: u64, whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len() as u64;
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    let (left, right) = leaves.split_at(ix(k));
    if m <= k {
        subproof(left, m, whole, out);
        out.push(root(right));
    } else {
        subproof(right, m - k, false, out);
        out.push(root(left));
    }
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree
/// of `new_size` leaves with root `new_root`, with the algorithm of RFC 9162 section
/// 2.1.4.2.
///
/// The RFC defines proofs only for `0 < old_size < new_size`. For the edges this accepts
/// exactly an empty proof: when `old_size == new_size` the roots must be equal, and when
/// `old_size == 0` `old_root` must be [`empty_root`] (every tree extends the empty tree).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    if proof.is_empty() {
        return false;
    }
    // Step 2: when the old tree is a complete subtree its root is the first node of the
    // path and the proof leaves it out.
    let first = if old_size.is_power_of_two() {
        Some(old_root)
    } else {
        None
    };
    let mut path = first.into_iter().chain(proof);
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let Some(start) = path.next() else {
        return false;
    };
    let mut f_r = *start;
    let mut s_r = *start;
    for c in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *old_root && s_r == *new_root && s_n == 0
}

/// The right edge of a growing tree (a "compact range" from leaf 0): the roots of the
/// complete subtrees that make up the tree, largest (leftmost) first, one per set bit of
/// `size`. Enough to compute the root and to keep appending, in O(log n) memory.
///
/// Serialises as `{size, nodes}`; deserialising checks that `nodes` has one hash per set
/// bit of `size`, so a stored frontier cannot silently yield a wrong root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FrontierParts", into = "FrontierParts")]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// The serialised shape of a [`Frontier`], validated on the way in.
#[derive(Serialize, Deserialize)]
struct FrontierParts {
    size: u64,
    nodes: Vec<Hash>,
}

impl TryFrom<FrontierParts> for Frontier {
    type Error = String;
    fn try_from(p: FrontierParts) -> Result<Self, String> {
        Frontier::from_parts(p.size, p.nodes).ok_or_else(|| {
            format!(
                "frontier of size {} needs {} nodes",
                p.size,
                p.size.count_ones()
            )
        })
    }
}

impl From<Frontier> for FrontierParts {
    fn from(f: Frontier) -> Self {
        FrontierParts {
            size: f.size,
            nodes: f.nodes,
        }
    }
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds a frontier from [`Frontier::size`] and [`Frontier::nodes`]; `None` unless
    /// there is exactly one node per set bit of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    /// Appends one leaf hash. O(log n): merges equal-sized subtrees like a binary carry.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit of size");
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// Number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete-subtree roots, largest (leftmost) first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// The tree root: the subtree roots folded right to left, which is exactly the RFC
    /// shape (each split point is the largest remaining power of two).
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Every complete subtree of a tree, kept to answer many roots and proofs quickly.
///
/// `levels[h][j]` is the root of the complete subtree of `2^h` leaves starting at leaf
/// `j * 2^h`; `levels[0]` are the leaves. Only complete subtrees are stored, never the
/// right-edge nodes of an unbalanced tree, which is why one `Tree` answers for every size
/// up to its own: a prefix's complete subtrees are the same nodes. Memory is about two
/// hashes per leaf (64 MiB for a million leaves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Builds the tree over `leaves` (leaf hashes): about `n` node hashes.
    pub fn from_leaves(leaves: Vec<Hash>) -> Tree {
        let mut levels = vec![leaves];
        loop {
            let below = levels.last().expect("level 0 exists");
            if below.len() < 2 {
                break;
            }
            let up: Vec<Hash> = below
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(up);
        }
        Tree { levels }
    }

    /// Appends one leaf hash, amortised O(1) node hashes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut h = 0;
        // A level whose length just became even completed a subtree one level up.
        while self.levels[h].len().is_multiple_of(2) {
            let l = &self.levels[h];
            let parent = node_hash(&l[l.len() - 2], &l[l.len() - 1]);
            if self.levels.len() == h + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[h + 1].push(parent);
            h += 1;
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`, if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size())
    }

    /// The root of the tree of the first `size` leaves; `None` if `size > self.size()`.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        (size <= self.size()).then(|| self.subtree(0, size))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves (the
    /// same hashes as [`inclusion_proof`]); `None` unless `index < size <= self.size()`.
    pub fn proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        self.path(0, size, index, &mut out);
        Some(out)
    }

    /// The consistency proof from the first `old_size` leaves to the first `new_size`
    /// (the same hashes as [`consistency_proof`]); `None` unless
    /// `old_size <= new_size <= self.size()`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size > new_size || new_size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.subproof(0, new_size, old_size, true, &mut out);
        }
        Some(out)
    }

    /// `MTH(D[lo:hi])` for a node of the RFC shape: `lo` is a multiple of the smallest
    /// power of two `>= hi - lo`, which holds for every node reached from a root at 0.
    /// A complete subtree is one lookup; a right-edge node folds O(log n) of them.
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() {
            let h = n.trailing_zeros() as usize;
            return self.levels[h][ix(lo >> h)];
        }
        let k = split(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    /// `PATH(m, D[lo:hi])` with `m` relative to `lo`.
    fn path(&self, lo: u64, hi: u64, m: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(lo, lo + k, m, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.path(lo + k, hi, m - k, out);
            out.push(self.subtree(lo, lo + k));
        }
    }

    /// `SUBPROOF(m, D[lo:hi], whole)` with `m` relative to `lo`.
    fn subproof(&self, lo: u64, hi: u64, m: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push(self.subtree(lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(lo, lo + k, m, whole, out);
            out.push(self.subtree(lo + k, hi));
        } else {
            self.subproof(lo + k, hi, m - k, false, out);
            out.push(self.subtree(lo, lo + k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight transcriptions of RFC 9162 section 2.1, written independently of the
    /// code above (recursion on slices, SHA-256 swapped for BLAKE3 via `blake3::Hasher`).
    mod reference {
        use crate::hash::Hash;

        fn h(parts: &[&[u8]]) -> Hash {
            let mut hasher = blake3::Hasher::new();
            for p in parts {
                hasher.update(p);
            }
            Hash(*hasher.finalize().as_bytes())
        }

        fn k_of(n: usize) -> usize {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            k
        }

        /// `MTH` over leaf hashes.
        pub fn mth(d: &[Hash]) -> Hash {
            match d.len() {
                0 => h(&[]),
                1 => d[0],
                n => {
                    let k = k_of(n);
                    h(&[&[1], &mth(&d[..k]).0, &mth(&d[k..]).0])
                }
            }
        }

        pub fn leaf(event: &Hash) -> Hash {
            h(&[&[0], &event.0])
        }

        pub fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
            let n = d.len();
            if n == 1 {
                return vec![];
            }
            let k = k_of(n);
            if m < k {
                let mut p = path(m, &d[..k]);
                p.push(mth(&d[k..]));
                p
            } else {
                let mut p = path(m - k, &d[k..]);
                p.push(mth(&d[..k]));
                p
            }
        }

        pub fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
            subproof(m, d, true)
        }

        fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
            let n = d.len();
            if m == n {
                return if b { vec![] } else { vec![mth(d)] };
            }
            let k = k_of(n);
            if m <= k {
                let mut p = subproof(m, &d[..k], b);
                p.push(mth(&d[k..]));
                p
            } else {
                let mut p = subproof(m - k, &d[k..], false);
                p.push(mth(&d[..k]));
                p
            }
        }
    }

    /// Leaf hashes of `n` distinct fake event hashes.
    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(&Hash::of_content(&i.to_le_bytes())))
            .collect()
    }

    fn ceil_log2(n: u64) -> usize {
        if n <= 1 {
            0
        } else {
            (64 - (n - 1).leading_zeros()) as usize
        }
    }

    fn flip(h: &Hash) -> Hash {
        let mut x = *h;
        x.0[7] ^= 0x01;
        x
    }

    #[test]
    fn hashing_matches_the_byte_spec() {
        let ev = Hash([0xab; 32]);
        assert_eq!(leaf_hash(&ev), reference::leaf(&ev));
        let mut input = vec![0x00];
        input.extend_from_slice(&[0xab; 32]);
        assert_eq!(leaf_hash(&ev), Hash::of_content(&input));
        let (a, b) = (Hash([1; 32]), Hash([2; 32]));
        let mut input = vec![0x01];
        input.extend_from_slice(&[1; 32]);
        input.extend_from_slice(&[2; 32]);
        assert_eq!(node_hash(&a, &b), Hash::of_content(&input));
        assert_eq!(
            empty_root().to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn split_is_largest_power_of_two_below() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
        assert_eq!(split(u64::MAX), 1 << 63);
    }

    /// Pins the roots and proofs that `docs/CHECKPOINT.md` shows as its worked example:
    /// five leaves made from event hashes `[i; 32]`.
    #[test]
    fn worked_example() {
        let events: Vec<Hash> = (0..5u8).map(|i| Hash([i; 32])).collect();
        let l: Vec<Hash> = events.iter().map(leaf_hash).collect();
        let hex = |h: &Hash| h.to_hex();
        let hexes = |v: &[Hash]| v.iter().map(hex).collect::<Vec<_>>();
        assert_eq!(
            hexes(&l),
            [
                "232b17a92a13d46fdeeba07519406dcdad6d67b7399159364b5e26af0ab95bcf",
                "a2ddb4931d05ba6281549052c62d2780a2d3ac29514c0a77598283d61e861206",
                "ada21777220442b46d8e0b3fe5a5099502eca1cb91e919758c33a320bc9f2d88",
                "7e14f3d3c9ad356fc347f27541758e9af6fa7b71480d1933065abd0b649f3f8d",
                "ecb2bfa29ca32cd4afafa7021bf444ce0956ad6f04d024d0a4ce5afe6f229d10",
            ]
        );
        let n01 = node_hash(&l[0], &l[1]);
        let n23 = node_hash(&l[2], &l[3]);
        let n0123 = node_hash(&n01, &n23);
        assert_eq!(
            hex(&n01),
            "601ae0d333efaf511cc72652be96836dc134955fc1c681ff185f99b5a12b2ae5"
        );
        assert_eq!(
            hex(&n23),
            "c747007bb034f2e8f17688207accd745d7e5e4c12edddf7ddd331ef68f711b0d"
        );
        assert_eq!(
            hex(&n0123),
            "0429a1b33a4380638861ac320355688368261d8ed7ff2acb4b9701a8480b9e4b"
        );
        let root3 = root(&l[..3]);
        assert_eq!(root3, node_hash(&n01, &l[2]));
        assert_eq!(
            hex(&root3),
            "3f97043de3a7a8fe71e55454f9f9dead4e44301744481419a20754c5a4f5ee38"
        );
        let root5 = root(&l);
        assert_eq!(root5, node_hash(&n0123, &l[4]));
        assert_eq!(
            hex(&root5),
            "e6072121201b0f45dece141a4783b36b646b545bdde45368a59f50f52d4ecd55"
        );
        let incl = inclusion_proof(&l, 2);
        assert_eq!(incl, [l[3], n01, l[4]]);
        assert!(verify_inclusion(&l[2], 2, 5, &incl, &root5));
        let cons = consistency_proof(&l, 3);
        assert_eq!(cons, [l[2], l[3], n01, l[4]]);
        assert!(verify_consistency(3, 5, &root3, &root5, &cons));
    }

    #[test]
    fn root_matches_reference_for_every_size() {
        let all = leaves(300);
        let mut f = Frontier::new();
        let mut t = Tree::new();
        for n in 0..=300 {
            let expect = reference::mth(&all[..n]);
            assert_eq!(root(&all[..n]), expect, "root, size {n}");
            assert_eq!(f.root(), expect, "frontier, size {n}");
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.nodes().len(), (n as u64).count_ones() as usize);
            assert_eq!(t.root(), expect, "pushed tree, size {n}");
            if n < 300 {
                f.push(all[n]);
                t.push(all[n]);
            }
        }
        let built = Tree::from_leaves(all.clone());
        assert_eq!(built, t, "push and from_leaves build the same levels");
        for n in 0..=300u64 {
            assert_eq!(built.root_at(n), Some(reference::mth(&all[..n as usize])));
        }
        assert_eq!(built.root_at(301), None);
    }

    #[test]
    fn inclusion_matches_reference_and_verifies() {
        let all = leaves(70);
        let tree = Tree::from_leaves(all.clone());
        for n in 0..=70usize {
            let d = &all[..n];
            let r = reference::mth(d);
            for m in 0..n {
                let p = inclusion_proof(d, m as u64);
                assert_eq!(p, reference::path(m, d), "path({m}, {n})");
                assert_eq!(tree.proof(m as u64, n as u64).as_ref(), Some(&p));
                assert!(p.len() <= ceil_log2(n as u64), "proof length for size {n}");
                assert!(
                    verify_inclusion(&d[m], m as u64, n as u64, &p, &r),
                    "verify({m}, {n})"
                );
            }
            assert_eq!(tree.proof(n as u64, n as u64), None);
        }
        assert_eq!(tree.proof(0, 71), None);
    }

    #[test]
    fn consistency_matches_reference_and_verifies() {
        let all = leaves(40);
        let tree = Tree::from_leaves(all.clone());
        for n in 1..=40usize {
            let d = &all[..n];
            let new_root = reference::mth(d);
            for m in 1..=n {
                let old_root = reference::mth(&d[..m]);
                let p = consistency_proof(d, m as u64);
                let expect = if m == n {
                    vec![]
                } else {
                    reference::proof(m, d)
                };
                assert_eq!(p, expect, "proof({m}, {n})");
                assert_eq!(
                    tree.consistency_proof(m as u64, n as u64).as_ref(),
                    Some(&p)
                );
                assert!(
                    p.len() <= ceil_log2(n as u64) + 1,
                    "proof length ({m}, {n})"
                );
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &p),
                    "verify({m}, {n})"
                );
            }
        }
    }

    #[test]
    fn consistency_edges() {
        let all = leaves(5);
        let r5 = root(&all);
        assert!(consistency_proof(&all, 0).is_empty());
        assert!(verify_consistency(0, 5, &empty_root(), &r5, &[]));
        assert!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]));
        assert!(
            !verify_consistency(0, 5, &r5, &r5, &[]),
            "old root of size 0 must be empty"
        );
        assert!(!verify_consistency(0, 5, &empty_root(), &r5, &[r5]));
        assert!(verify_consistency(5, 5, &r5, &r5, &[]));
        assert!(!verify_consistency(5, 5, &r5, &flip(&r5), &[]));
        assert!(!verify_consistency(5, 5, &r5, &r5, &[r5]));
        assert!(!verify_consistency(6, 5, &r5, &r5, &[]));
        assert!(
            !verify_consistency(3, 5, &root(&all[..3]), &r5, &[]),
            "empty proof for 3 -> 5"
        );
        let t = Tree::from_leaves(all);
        assert_eq!(t.consistency_proof(0, 5), Some(vec![]));
        assert_eq!(t.consistency_proof(4, 3), None);
        assert_eq!(t.consistency_proof(3, 6), None);
    }

    #[test]
    #[should_panic(expected = "inclusion proof for leaf 3 of a tree of size 3")]
    fn inclusion_proof_out_of_range_panics() {
        inclusion_proof(&leaves(3), 3);
    }

    #[test]
    fn tampered_inclusion_proofs_are_rejected() {
        let all = leaves(70);
        for n in 1..=70u64 {
            let d = &all[..n as usize];
            let r = root(d);
            for m in 0..n {
                let leaf = d[m as usize];
                let p = inclusion_proof(d, m);
                assert!(
                    !verify_inclusion(&flip(&leaf), m, n, &p, &r),
                    "leaf ({m}, {n})"
                );
                assert!(
                    !verify_inclusion(&leaf, m, n, &p, &flip(&r)),
                    "root ({m}, {n})"
                );
                for i in 0..p.len() {
                    let mut q = p.clone();
                    q[i] = flip(&q[i]);
                    assert!(
                        !verify_inclusion(&leaf, m, n, &q, &r),
                        "byte {i} ({m}, {n})"
                    );
                }
                for other in 0..n + 2 {
                    if other != m {
                        assert!(
                            !verify_inclusion(&leaf, other, n, &p, &r),
                            "index {other} ({m}, {n})"
                        );
                    }
                }
                // Claiming another size: the proof must not verify against that size's
                // real root (see `proofs_do_not_bind_the_size_alone` for the same root).
                for size in (0..=70).filter(|&s| s != n) {
                    let rs = root(&all[..size as usize]);
                    assert!(
                        !verify_inclusion(&leaf, m, size, &p, &rs),
                        "size {size} ({m}, {n})"
                    );
                }
                if !p.is_empty() {
                    assert!(
                        !verify_inclusion(&leaf, m, n, &p[..p.len() - 1], &r),
                        "truncated ({m}, {n})"
                    );
                    assert!(
                        !verify_inclusion(&leaf, m, n, &p[1..], &r),
                        "front cut ({m}, {n})"
                    );
                }
                let mut longer = p.clone();
                longer.push(r);
                assert!(
                    !verify_inclusion(&leaf, m, n, &longer, &r),
                    "extended ({m}, {n})"
                );
                let mut longer = p.clone();
                longer.insert(0, leaf);
                assert!(
                    !verify_inclusion(&leaf, m, n, &longer, &r),
                    "prefixed ({m}, {n})"
                );
            }
        }
    }

    /// What the ways of claiming leaf `m` of `d` that `inclusion_verifier_*` tests try:
    /// the right proof, then each hash flipped, the leaf flipped, every other index,
    /// proofs cut or extended at either end, and the neighbours' proofs.
    fn claims(t: &Tree, n: u64, m: u64) -> Vec<(Hash, u64, Vec<Hash>)> {
        let proof = |i: u64| t.proof(i, n).expect("leaf of the tree");
        let leaf = t.leaf(m).expect("leaf of the tree");
        let p = proof(m);
        let mut out = vec![(leaf, m, p.clone()), (flip(&leaf), m, p.clone())];
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i] = flip(&q[i]);
            out.push((leaf, m, q));
        }
        for other in (0..n + 2).filter(|&o| o != m) {
            out.push((leaf, other, p.clone()));
        }
        if !p.is_empty() {
            out.push((leaf, m, p[..p.len() - 1].to_vec()));
            out.push((leaf, m, p[1..].to_vec()));
        }
        let mut longer = p.clone();
        longer.push(t.root_at(n).expect("size within the tree"));
        out.push((leaf, m, longer));
        let mut longer = p.clone();
        longer.insert(0, leaf);
        out.push((leaf, m, longer));
        for nb in [m.wrapping_sub(1), m + 1] {
            if nb < n {
                out.push((leaf, m, proof(nb)));
                out.push((t.leaf(nb).expect("leaf of the tree"), nb, p.clone()));
            }
        }
        // The right proof again, after all the wrong ones.
        out.push((leaf, m, p));
        out
    }

    /// Checks one claim with `v` twice (a rejected proof that had been kept would pass
    /// the second time) against `verify_inclusion`; returns the verdict.
    fn agree(v: &mut InclusionVerifier, leaf: &Hash, index: u64, proof: &[Hash]) -> bool {
        let want = verify_inclusion(leaf, index, v.size(), proof, &v.root().clone());
        for round in 0..2 {
            assert_eq!(
                v.verify(leaf, index, proof),
                want,
                "leaf {index} of {} with {} hashes, round {round}",
                v.size(),
                proof.len()
            );
        }
        want
    }

    #[test]
    fn inclusion_verifier_agrees_with_verify_inclusion_for_every_leaf_and_tampering() {
        let t = Tree::from_leaves(leaves(70));
        for n in 1..=70usize {
            let r = t.root_at(n as u64).unwrap();
            // Leaves in order, in reverse, and every third, each with one verifier that
            // sees every claim about every leaf in that order.
            let orders: [Vec<u64>; 3] = [
                (0..n as u64).collect(),
                (0..n as u64).rev().collect(),
                (0..n as u64).step_by(3).collect(),
            ];
            for order in orders {
                let mut v = InclusionVerifier::new(n as u64, r);
                for &m in &order {
                    let mut accepted = 0;
                    for (leaf, index, proof) in claims(&t, n as u64, m) {
                        accepted += usize::from(agree(&mut v, &leaf, index, &proof));
                    }
                    assert_eq!(accepted, 2, "only the right proof, twice ({m}, {n})");
                }
            }
            // Against another root of the same size nothing passes.
            let mut v = InclusionVerifier::new(n as u64, Hash([0x5a; 32]));
            for m in 0..n as u64 {
                for (leaf, index, proof) in claims(&t, n as u64, m) {
                    assert!(!agree(&mut v, &leaf, index, &proof));
                }
            }
        }
    }

    #[test]
    fn inclusion_verifier_agrees_with_verify_inclusion_for_wrong_sizes() {
        let all = leaves(72);
        let t = Tree::from_leaves(all.clone());
        let roots: Vec<Hash> = (0..=72).map(|s| t.root_at(s).unwrap()).collect();
        let proofs: Vec<Vec<Vec<Hash>>> = (0..=72)
            .map(|s| (0..s).map(|m| t.proof(m, s).unwrap()).collect())
            .collect();
        for n in 1..=70usize {
            for s in (0..=71usize).filter(|&s| s != n) {
                // The claimed size's real root, and the proofs' own root (which some
                // sizes accept: `proofs_do_not_bind_the_size_alone`).
                for (own_root, r) in [(true, roots[s]), (false, roots[n])] {
                    let mut v = InclusionVerifier::new(s as u64, r);
                    for m in 0..n {
                        // Keep the cache warm with the claimed size's own proofs.
                        if m < s && own_root {
                            assert!(agree(&mut v, &all[m], m as u64, &proofs[s][m]));
                        }
                        agree(&mut v, &all[m], m as u64, &proofs[n][m]);
                    }
                }
            }
        }
    }

    /// Rejections leave the kept steps exactly as they were; acceptances keep the
    /// accepted proof's own steps.
    #[test]
    fn inclusion_verifier_never_keeps_a_rejected_proof() {
        let all = leaves(37);
        let t = Tree::from_leaves(all.clone());
        let r = t.root();
        let mut v = InclusionVerifier::new(37, r);
        let fresh_steps = |leaf: &Hash, m: u64, p: &[Hash]| {
            let mut f = InclusionVerifier::new(37, r);
            assert!(f.verify(leaf, m, p));
            f.kept
        };
        for m in 0..37u64 {
            let p = t.proof(m, 37).unwrap();
            assert!(v.verify(&all[m as usize], m, &p));
            let kept = v.kept.clone();
            assert_eq!(kept, fresh_steps(&all[m as usize], m, &p), "leaf {m}");
            let hashes: Vec<Hash> = kept.iter().map(|k| k.sibling).collect();
            assert_eq!(hashes, p);
            for (leaf, index, proof) in claims(&t, 37, m) {
                if v.verify(&leaf, index, &proof) {
                    assert_eq!(v.kept, fresh_steps(&leaf, index, &proof), "({m}, {index})");
                } else {
                    assert_eq!(v.kept, kept, "({m}, {index})");
                }
            }
        }
    }

    /// Large trees, every leaf in order: the right proof passes, and a flipped hash, a
    /// wrong index or a neighbour's proof in between agree with `verify_inclusion`. For
    /// consecutive leaves the verifier hashes about two nodes per proof.
    #[test]
    fn inclusion_verifier_on_large_trees() {
        for n in [1023u64, 1024, 1025, 5000, 16_387] {
            let all = leaves(n as usize);
            let t = Tree::from_leaves(all.clone());
            let r = t.root();
            let mut v = InclusionVerifier::new(n, r);
            let mut quiet = InclusionVerifier::new(n, r);
            let mut full_hashes = 0u64;
            for m in 0..n {
                let leaf = all[m as usize];
                let p = t.proof(m, n).unwrap();
                full_hashes += p.len() as u64;
                assert!(quiet.verify(&leaf, m, &p), "({m}, {n})");
                assert!(agree(&mut v, &leaf, m, &p), "({m}, {n})");
                if !p.is_empty() {
                    let mut q = p.clone();
                    let i = (m as usize) % q.len();
                    q[i] = flip(&q[i]);
                    assert!(!agree(&mut v, &leaf, m, &q), "flip {i} ({m}, {n})");
                }
                assert!(!agree(&mut v, &leaf, (m + 1) % n, &p), "index ({m}, {n})");
                if m + 1 < n {
                    let next = t.proof(m + 1, n).unwrap();
                    assert!(!agree(&mut v, &leaf, m, &next), "neighbour ({m}, {n})");
                }
            }
            // `quiet` saw only the right proofs, in order: the first in full, then up
            // to just below where each meets the one before (trailing zeros of m).
            let log = u64::from(64 - n.leading_zeros());
            assert!(
                quiet.node_hashes <= n + log,
                "{} node hashes for {n} consecutive proofs ({full_hashes} in full)",
                quiet.node_hashes
            );
            assert!(full_hashes > 9 * n, "{full_hashes} hashes in full for {n}");
            // Every eighth leaf: a few more levels each.
            let mut sparse = InclusionVerifier::new(n, r);
            for m in (0..n).step_by(8) {
                assert!(sparse.verify(&all[m as usize], m, &t.proof(m, n).unwrap()));
            }
            assert!(
                sparse.node_hashes <= 4 * n.div_ceil(8) + log,
                "{} node hashes for {} proofs 8 apart",
                sparse.node_hashes,
                n.div_ceil(8)
            );
        }
    }

    /// Long random mixes of right and wrong claims about nearby leaves (a fixed
    /// xorshift sequence), against `verify_inclusion`.
    #[test]
    fn inclusion_verifier_agrees_on_random_mixes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for n in [2u64, 3, 7, 64, 65, 300] {
            let all = leaves(n as usize);
            let t = Tree::from_leaves(all.clone());
            let mut v = InclusionVerifier::new(n, t.root());
            let mut m = 0u64;
            let mut accepted = 0;
            for _ in 0..4000 {
                m = (m + next(5)).saturating_sub(next(3)).min(n - 1);
                let leaf = all[m as usize];
                let mut p = t.proof(m, n).unwrap();
                let (mut leaf_c, mut index_c) = (leaf, m);
                match next(8) {
                    0..=3 => {}
                    4 if !p.is_empty() => {
                        let i = next(p.len() as u64) as usize;
                        p[i] = flip(&p[i]);
                    }
                    5 => index_c = next(n + 1),
                    6 => {
                        let o = next(n);
                        leaf_c = all[o as usize];
                    }
                    _ => p = t.proof(next(n), n).unwrap(),
                }
                accepted += u64::from(agree(&mut v, &leaf_c, index_c, &p));
            }
            assert!(accepted >= 1000, "{accepted} right claims of 4000 for {n}");
        }
    }

    /// RFC 9162 proofs authenticate a leaf (or prefix) against a root; they do not encode
    /// the tree size. A proof checked against the *right root* with a *wrong size* can pass
    /// when both sizes give the same path shape. That is why a checkpoint signs size and
    /// root together, and why verifiers take both from one signed checkpoint.
    #[test]
    fn proofs_do_not_bind_the_size_alone() {
        let all = leaves(4);
        let r3 = root(&all[..3]);
        let p = inclusion_proof(&all[..3], 0);
        assert!(verify_inclusion(&all[0], 0, 3, &p, &r3));
        assert!(verify_inclusion(&all[0], 0, 4, &p, &r3));
        assert!(!verify_inclusion(&all[0], 0, 4, &p, &root(&all)));
        let c = consistency_proof(&all[..3], 1);
        assert!(verify_consistency(1, 4, &all[0], &r3, &c));
        assert!(!verify_consistency(1, 4, &all[0], &root(&all), &c));
    }

    #[test]
    fn tampered_consistency_proofs_are_rejected() {
        let all = leaves(40);
        for n in 2..=40u64 {
            let d = &all[..n as usize];
            let nr = root(d);
            for m in 1..n {
                let or = root(&d[..m as usize]);
                let p = consistency_proof(d, m);
                assert!(
                    !verify_consistency(m, n, &flip(&or), &nr, &p),
                    "old root ({m}, {n})"
                );
                assert!(
                    !verify_consistency(m, n, &or, &flip(&nr), &p),
                    "new root ({m}, {n})"
                );
                assert!(
                    !verify_consistency(m, n, &nr, &or, &p),
                    "swapped roots ({m}, {n})"
                );
                for i in 0..p.len() {
                    let mut q = p.clone();
                    q[i] = flip(&q[i]);
                    assert!(
                        !verify_consistency(m, n, &or, &nr, &q),
                        "byte {i} ({m}, {n})"
                    );
                }
                // Claiming other sizes, with those sizes' real roots.
                for (om, on) in [(m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1)] {
                    if om >= 1 && om <= on && on <= 40 {
                        let (ro, rn) = (root(&all[..om as usize]), root(&all[..on as usize]));
                        assert!(
                            !verify_consistency(om, on, &ro, &rn, &p),
                            "sizes ({om}, {on}) for ({m}, {n})"
                        );
                    }
                }
                assert!(
                    !verify_consistency(m, n, &or, &nr, &p[..p.len() - 1]),
                    "truncated ({m}, {n})"
                );
                let mut longer = p.clone();
                longer.push(nr);
                assert!(
                    !verify_consistency(m, n, &or, &nr, &longer),
                    "extended ({m}, {n})"
                );
            }
        }
    }

    #[test]
    fn frontier_serde_roundtrips_and_validates() {
        let cfg = crate::CANONICAL;
        let mut f = Frontier::new();
        for l in leaves(11) {
            f.push(l);
        }
        let bytes = bincode::serde::encode_to_vec(&f, cfg).unwrap();
        let back: Frontier = bincode::serde::decode_from_slice(&bytes, cfg).unwrap().0;
        assert_eq!(back, f);
        assert_eq!(back.root(), root(&leaves(11)));
        // 11 = 0b1011 needs three nodes; two is refused.
        let bad = FrontierParts {
            size: 11,
            nodes: f.nodes()[..2].to_vec(),
        };
        let bytes = bincode::serde::encode_to_vec(&bad, cfg).unwrap();
        assert!(bincode::serde::decode_from_slice::<Frontier, _>(&bytes, cfg).is_err());
        assert_eq!(Frontier::from_parts(11, f.nodes().to_vec()), Some(f));
        assert_eq!(Frontier::from_parts(4, vec![]), None);
    }

    /// A large tree (2^16 + 1 leaves, past a power of two) built incrementally and in one
    /// go agrees everywhere we sample; `cargo bench` measures the million-leaf case.
    #[test]
    fn large_tree_agrees_with_frontier_and_prefix_roots() {
        const N: u64 = 65_537;
        let all = leaves(N as usize);
        let t = Tree::from_leaves(all.clone());
        for i in (0..N).step_by(97) {
            let p = t.proof(i, N).unwrap();
            assert!(verify_inclusion(&all[i as usize], i, N, &p, &t.root()));
        }
        let mut f = Frontier::new();
        for l in &all {
            f.push(*l);
        }
        assert_eq!(f.root(), t.root());
        assert_eq!(t.root_at(40_000), Some(root(&all[..40_000])));
    }

    #[test]
    fn tree_answers_prefix_sizes_like_the_slice_functions() {
        let all = leaves(1000);
        let t = Tree::from_leaves(all.clone());
        for &n in &[1u64, 2, 3, 255, 256, 257, 511, 640, 999, 1000] {
            let d = &all[..n as usize];
            assert_eq!(t.root_at(n), Some(root(d)));
            for &m in &[0, n / 3, n / 2, n - 1] {
                assert_eq!(
                    t.proof(m, n),
                    Some(inclusion_proof(d, m)),
                    "proof({m}, {n})"
                );
                assert_eq!(t.consistency_proof(m, n), Some(consistency_proof(d, m)));
            }
        }
        assert_eq!(t.leaf(999), Some(all[999]));
        assert_eq!(t.leaf(1000), None);
    }
}
