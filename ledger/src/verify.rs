//! Full verification: every frame, hash, link, seq and batch; every content hash the
//! events name; agreement of the indexes with the journal.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::BodyRef;
use crate::hash::Hash;
use crate::journal::{Position, RecordRef};
use crate::ledger::Ledger;

/// One thing `verify` found wrong. `seq` or `hash` names where.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub seq: Option<u64>,
    pub hash: Option<Hash>,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub head_seq: Option<u64>,
    pub head_hash: Option<Hash>,
    pub contents_checked: u64,
    pub content_bytes_checked: u64,
    pub redacted_contents: u64,
    pub problems: Vec<Problem>,
    /// What could not be checked, and why (not problems with the ledger itself).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What to check.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Re-hash every stored content object (reads all stored bytes).
    pub contents: bool,
    /// Compare the indexes with the journal.
    pub indexes: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            contents: true,
            indexes: true,
        }
    }
}

/// What the journal walk of `verify` collects (per segment when walked in parallel).
#[derive(Default)]
struct Walk {
    events: u64,
    head: Option<(u64, Hash)>,
    /// Each content hash the events name, with the first seq naming it.
    hashes: BTreeMap<Hash, u64>,
    redacted: BTreeMap<Hash, u64>,
    /// The first record whose position the index has wrong.
    index_problem: Option<Problem>,
    /// The sum of what each event adds to the change index's digest (when checked).
    change_digest: u64,
    /// Hashes already in `hashes`, one per slot picked by the hash's first 12 bits:
    /// most events name contents named before, and one comparison here saves a map
    /// search. Only ever skips a hash that is in the map, so the map is the same.
    /// (128 KiB per segment walked; the zero hash, which empty slots hold, is never
    /// skipped.)
    seen: Vec<Hash>,
}

const SEEN_SLOTS: usize = 1 << 12;

impl Walk {
    fn add(&mut self, r: &RecordRef, positions: Option<&[Position]>) {
        let seq = r.event.seq;
        self.events += 1;
        self.head = Some((seq, r.hash));
        if self.seen.is_empty() {
            self.seen = vec![Hash::ZERO; SEEN_SLOTS];
        }
        for rc in r.event.resources() {
            for c in [&rc.old, &rc.new].into_iter().flatten() {
                let slot = usize::from(u16::from_be_bytes([c.hash.0[0], c.hash.0[1]])) % SEEN_SLOTS;
                if self.seen[slot] == c.hash && c.hash != Hash::ZERO {
                    continue;
                }
                self.hashes.entry(c.hash).or_insert(seq);
                self.seen[slot] = c.hash;
            }
        }
        if let BodyRef::Redaction(rd) = &r.event.body {
            self.redacted.insert(rd.hash, seq);
        }
        if positions.is_some() {
            let reverts = match &r.event.body {
                BodyRef::Change(c) => c.reverts,
                _ => None,
            };
            let d = crate::changelog::digest_of(seq, r.event.change_id, reverts);
            self.change_digest = self.change_digest.wrapping_add(d);
        }
        if let (Some(p), None) = (positions, &self.index_problem) {
            let have = p.get(seq as usize);
            if have != Some(&r.pos) {
                self.index_problem = Some(Problem {
                    kind: "index",
                    seq: Some(seq),
                    hash: None,
                    detail: format!(
                        "position index disagrees with the journal at seq {seq} (index has {:?}); run `ledger reindex`",
                        have.map(|p| (p.segment, p.offset))
                    ),
                });
            }
        }
    }

    /// Joins the walk of the next segments onto this one.
    fn merge(mut self, next: Walk) -> Walk {
        self.events += next.events;
        self.head = next.head.or(self.head);
        for (h, s) in next.hashes {
            self.hashes.entry(h).or_insert(s);
        }
        self.redacted.extend(next.redacted);
        self.index_problem = self.index_problem.or(next.index_problem);
        self.change_digest = self.change_digest.wrapping_add(next.change_digest);
        self
    }
}

impl Ledger {
    /// Checks everything; never stops at the first content problem, but a broken chain
    /// ends the journal walk (nothing after it can be trusted).
    pub fn verify(&self, opts: VerifyOptions) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        // A stopped index writer (a full disk, say) leaves a derived index behind the
        // journal: say so, and check the journal and contents without it.
        let indexes = opts.indexes
            && match self.sync_index() {
                Ok(()) => true,
                Err(e) => {
                    rep.warnings
                        .push(format!("{e}; the indexes were not compared"));
                    false
                }
            };
        // The position file, compared entry by entry with where each record really is.
        let mut positions = Vec::new();
        if indexes {
            self.flat_index()?.for_each_position(&mut |_, p| {
                positions.push(p);
                true
            })?;
        }
        let positions = indexes.then_some(positions.as_slice());
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let fold = |acc: &mut Walk, r: &RecordRef| -> Result<()> {
            acc.add(r, positions);
            Ok(())
        };
        let parallel = if workers > 1 {
            self.with_journal(|j| j.scan_all_parallel(workers, &Walk::default, &fold))?
        } else {
            None
        };
        let walk = match parallel {
            Some(parts) => parts.into_iter().fold(Walk::default(), Walk::merge),
            None => {
                // One thread, or something is wrong: the sequential walk names the first
                // problem.
                let mut acc = Walk::default();
                let res = self.with_journal(|j| j.scan_all_refs(&mut |r| fold(&mut acc, r)));
                if let Err(e) = res {
                    let (seq, detail) = match &e {
                        Error::Damaged { seq, .. } => (Some(*seq), e.to_string()),
                        _ => (None, e.to_string()),
                    };
                    rep.problems.push(Problem {
                        kind: "journal",
                        seq,
                        hash: None,
                        detail,
                    });
                }
                acc
            }
        };
        rep.events = walk.events;
        if let Some((seq, hash)) = walk.head {
            rep.head_seq = Some(seq);
            rep.head_hash = Some(hash);
        }
        let (hashes, redacted) = (walk.hashes, walk.redacted);
        if let Some(p) = walk.index_problem {
            rep.problems.push(p);
        } else if positions.is_some_and(|p| p.len() as u64 > rep.events) {
            let seq = rep.events;
            rep.problems.push(Problem {
                kind: "index",
                seq: Some(seq),
                hash: None,
                detail: format!(
                    "index names seq {seq}, which the journal does not have; run `ledger reindex`"
                ),
            });
        }
        if indexes && rep.problems.is_empty() {
            let (digest, consistent) = self.flat_index()?.change_digests()?;
            if digest != walk.change_digest || !consistent {
                rep.problems.push(Problem {
                    kind: "index",
                    seq: None,
                    hash: None,
                    detail: "the change index (index/changes) disagrees with the journal; run `ledger reindex`".to_string(),
                });
            } else if self.flat_index()?.redactions() != redacted {
                rep.problems.push(Problem {
                    kind: "index",
                    seq: None,
                    hash: None,
                    detail: "the redactions in the index state disagree with the journal; run `ledger reindex`".to_string(),
                });
            }
        }
        if indexes && rep.problems.is_empty() {
            let st = self.flat_index()?.state()?;
            if st.indexed != rep.events {
                rep.problems.push(Problem {
                    kind: "index",
                    seq: Some(st.indexed),
                    hash: None,
                    detail: format!(
                        "index covers {} events, the journal has {}; run `ledger reindex`",
                        st.indexed, rep.events
                    ),
                });
            }
        }
        for (hash, seq) in &hashes {
            if redacted.contains_key(hash) {
                rep.redacted_contents += 1;
                continue;
            }
            if !opts.contents {
                if !self.store().contains(hash) {
                    rep.problems.push(Problem {
                        kind: "content",
                        seq: Some(*seq),
                        hash: Some(*hash),
                        detail: format!(
                            "content {hash} named by seq {seq} is missing from the store"
                        ),
                    });
                }
                continue;
            }
            match self.store().verify(hash) {
                Ok(n) => {
                    rep.contents_checked += 1;
                    rep.content_bytes_checked += n;
                }
                Err(e) => rep.problems.push(Problem {
                    kind: "content",
                    seq: Some(*seq),
                    hash: Some(*hash),
                    detail: format!("{e} (first named by seq {seq})"),
                }),
            }
        }
        rep.problems
            .sort_by_key(|p| (p.seq.unwrap_or(u64::MAX), p.kind));
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Change, Content, Mode, Op, ResourceChange, ResourceKey};
    use crate::journal::{decode_frame_ref, encode_frame};

    /// The slot cache in front of the content-hash map changes nothing: every distinct
    /// hash is collected once, with the first seq naming it, also when hashes collide
    /// in a slot, repeat, or are the zero hash that empty slots hold.
    #[test]
    fn content_hashes_are_collected_with_their_first_seq() {
        let mut expect: BTreeMap<Hash, u64> = BTreeMap::new();
        let mut walk = Walk::default();
        let mut x = 7u64;
        for seq in 0..5000u64 {
            let mut resources = Vec::new();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // 300 distinct hashes, many sharing their first 12 bits, plus zero.
                let n = (x % 301) as u8;
                let mut h = [0u8; 32];
                if n != 0 {
                    h[0] = n % 3;
                    h[31] = n;
                }
                let hash = Hash(h);
                expect.entry(hash).or_insert(seq);
                resources.push(ResourceChange {
                    key: ResourceKey::file(format!("f{}", resources.len()).as_bytes()),
                    op: Op::Modify,
                    old: None,
                    new: Some(Content {
                        hash,
                        mode: Mode::Regular,
                        size: 1,
                    }),
                });
            }
            let mut ev = crate::event::tests::fixed_event();
            ev.seq = seq;
            ev.body = Body::Change(Change {
                message: None,
                reverts: None,
                resources,
            });
            let payload = ev.encode();
            let mut frame = Vec::new();
            encode_frame(
                &payload,
                &Hash::of_event_bytes(&payload),
                seq,
                seq,
                &mut frame,
            );
            walk.add(&decode_frame_ref(&frame).unwrap(), None);
        }
        assert_eq!(walk.hashes, expect);
    }
}
