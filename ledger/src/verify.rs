//! Full verification: every frame, hash, link, seq and batch; every content hash the
//! events name; agreement of the indexes with the journal.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::Body;
use crate::hash::Hash;
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

impl Ledger {
    /// Checks everything; never stops at the first content problem, but a broken chain
    /// ends the journal walk (nothing after it can be trusted).
    pub fn verify(&self, opts: VerifyOptions) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        let mut hashes: BTreeMap<Hash, u64> = BTreeMap::new();
        let mut redacted: BTreeMap<Hash, u64> = BTreeMap::new();
        // The position file, read in chunks alongside the journal walk.
        let mut positions = Vec::new();
        if opts.indexes {
            self.index()?.for_each_position(&mut |s, p| {
                positions.push((s, p));
                true
            })?;
        }
        let mut positions = opts.indexes.then(|| positions.into_iter());
        let mut index_problem: Option<Problem> = None;
        let walk = self.with_journal(|j| {
            j.scan_all(&mut |r| {
                rep.events += 1;
                rep.head_seq = Some(r.event.seq);
                rep.head_hash = Some(r.hash);
                for rc in r.event.resources() {
                    for c in [&rc.old, &rc.new].into_iter().flatten() {
                        hashes.entry(c.hash).or_insert(r.event.seq);
                    }
                }
                if let Body::Redaction(rd) = &r.event.body {
                    redacted.insert(rd.hash, r.event.seq);
                }
                if let (Some(it), None) = (positions.as_mut(), &index_problem) {
                    match it.next() {
                        Some((seq, pos)) if seq == r.event.seq && pos == r.pos => {}
                        other => {
                            index_problem = Some(Problem {
                                kind: "index",
                                seq: Some(r.event.seq),
                                hash: None,
                                detail: format!("position index disagrees with the journal at seq {} (index has {:?}); run `ledger reindex`", r.event.seq, other.map(|(s, p)| (s, p.segment, p.offset))),
                            })
                        }
                    }
                }
                Ok(())
            })
        });
        if let Err(e) = walk {
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
        if let Some(p) = index_problem {
            rep.problems.push(p);
        } else if let Some(mut it) = positions {
            if let Some((seq, _)) = it.next() {
                rep.problems.push(Problem { kind: "index", seq: Some(seq), hash: None, detail: format!("index names seq {seq}, which the journal does not have; run `ledger reindex`") });
            }
        }
        if opts.indexes && rep.problems.is_empty() {
            let st = self.index()?.state()?;
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
        let mut seen = BTreeSet::new();
        for (hash, seq) in &hashes {
            if !seen.insert(*hash) {
                continue;
            }
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
