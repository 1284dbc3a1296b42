//! What the ledger offers auditors beyond the hash chain: the Merkle tree over its events
//! (kept incrementally in the index), signed checkpoints recorded as events, and checking
//! checkpoints against the journal.
//!
//! The tree's leaf `i` is event `seq = i` (`docs/CHECKPOINT.md`). A checkpoint made by
//! [`Ledger::checkpoint`] covers the events **before** the checkpoint event itself: it is
//! computed over seq `0..n` and then appended as event `n`, so its `size` equals the seq
//! of the `Body::Checkpoint` event that records it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointBody, SigningKey};
use crate::error::{Error, Result};
use crate::event::{Actor, Body, Checkpoint, NewEvent};
use crate::hash::Hash;
use crate::journal::{Journal, Record};
use crate::ledger::{Ledger, Precondition};
use crate::merkle::{self, Frontier};

/// The Merkle frontier over the first `frontier.size()` events and the hash of the last
/// of them ([`Hash::ZERO`] for none). Stored in the index (derived data): `last` lets a
/// reader check the stored state still matches the journal before trusting it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleState {
    pub frontier: Frontier,
    pub last: Hash,
}

impl MerkleState {
    /// The checkpoint body this state gives for `origin` at `time_us`.
    pub fn body(&self, origin: String, time_us: i64) -> CheckpointBody {
        CheckpointBody {
            origin,
            size: self.frontier.size(),
            root: self.frontier.root(),
            head: self.last,
            time_us,
        }
    }
}

/// A checkpoint just made: its body, the signed note, and the event recording it.
#[derive(Debug)]
pub struct Checkpointed {
    pub body: CheckpointBody,
    pub note: String,
    pub record: Record,
}

/// Why a checkpoint does not match the journal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    #[error("origin {found:?} is not this ledger's ({expected:?})")]
    Origin { found: String, expected: String },
    #[error("it covers {size} events but the journal has only {events}: events were removed")]
    Missing { size: u64, events: u64 },
    #[error("root hash {found} disagrees with the journal: its first {size} events give {actual}")]
    Root {
        size: u64,
        found: Hash,
        actual: Hash,
    },
    #[error(
        "head hash {found} disagrees with the journal: event {} has hash {actual}",
        .size.saturating_sub(1)
    )]
    Head {
        size: u64,
        found: Hash,
        actual: Hash,
    },
}

impl Ledger {
    /// The ID in the genesis event (seq 0).
    pub fn ledger_id(&self) -> Result<[u8; 16]> {
        let g = self.event(0)?;
        match &g.event.body {
            Body::Genesis(g) => Ok(g.ledger_id),
            other => Err(Error::Damaged {
                seq: 0,
                location: "seq 0".into(),
                reason: format!("the first event is a {} event, not genesis", other.kind()),
            }),
        }
    }

    /// The checkpoint origin of this ledger: `agent-ledger/<32 hex ledger ID>`.
    pub fn origin(&self) -> Result<String> {
        Ok(checkpoint::origin(&self.ledger_id()?))
    }

    /// The Merkle state at the journal head. Reads nothing from the journal when the
    /// index's state is current (appends keep it so); otherwise checks the stored state
    /// against the journal, reads only the events after it, or rebuilds it from seq 0
    /// when it is missing or does not match. Stores the result.
    pub fn merkle_state(&self) -> Result<MerkleState> {
        self.with_journal(|j| {
            let n = j.next_seq();
            let stored = self
                .flat_index()?
                .merkle_state()
                .filter(|st| match st.frontier.size() {
                    0 => st.last == Hash::ZERO,
                    s if s > n => false,
                    s => self.hash_at(j, s - 1).ok().flatten() == Some(st.last),
                });
            let mut st = stored.clone().unwrap_or_default();
            if st.frontier.size() > 0 && st.frontier.size() < n {
                // Continuing needs the position of the next event; without it, rebuild.
                if self.flat_index()?.position(st.frontier.size())?.is_none() {
                    st = MerkleState::default();
                }
            }
            let from = st.frontier.size();
            if from < n {
                let mut push = |r: &Record| -> Result<()> {
                    st.frontier.push(merkle::leaf_hash(&r.hash));
                    st.last = r.hash;
                    Ok(())
                };
                if from == 0 {
                    j.scan_all(&mut push)?;
                } else {
                    let pos = self
                        .flat_index()?
                        .position(from)?
                        .ok_or_else(|| Error::Index(format!("no position for seq {from}")))?;
                    let before = self
                        .flat_index()?
                        .position(from - 1)?
                        .ok_or_else(|| Error::Index(format!("no position for seq {}", from - 1)))?;
                    // Its batch fields say what the next record's must be.
                    let before = j.read_at(before)?;
                    j.scan_from(pos, Some(&before), &mut push)?;
                }
            }
            if st.frontier.size() != n {
                return Err(Error::Index(format!(
                    "the Merkle tree covers {} events but the journal has {n}",
                    st.frontier.size()
                )));
            }
            if stored.as_ref() != Some(&st) {
                self.flat_index()?.set_merkle_state(&st)?;
            }
            Ok(st)
        })
    }

    fn hash_at(&self, j: &Journal, seq: u64) -> Result<Option<Hash>> {
        match self.flat_index()?.position(seq)? {
            Some(pos) => {
                let r = j.read_at(pos)?;
                Ok((r.event.seq == seq).then_some(r.hash))
            }
            None => Ok(None),
        }
    }

    /// Makes a signed checkpoint of every event so far and records it.
    ///
    /// The body covers seq `0..n` (`n` events, the head before this call); it is signed
    /// first, so a key that cannot sign appends nothing; then a `Body::Checkpoint { size:
    /// n, root }` event is appended as seq `n` under change ID `checkpoint-<n>` (or
    /// `checkpoint-<n>-<k>` if that ID is taken). If anything else is appended in between
    /// the append is refused and nothing is recorded.
    pub fn checkpoint(&self, key: &SigningKey, actor: Actor, time_us: i64) -> Result<Checkpointed> {
        let origin = self.origin()?;
        let st = self.merkle_state()?;
        let body = st.body(origin, time_us);
        let note = body
            .sign(key)
            .map_err(|e| Error::Invalid(format!("cannot sign the checkpoint: {e}")))?;
        let size = body.size;
        let mut change_id = format!("checkpoint-{size}");
        let mut k = 1;
        while self.change_exists(&change_id)?.is_some() {
            k += 1;
            change_id = format!("checkpoint-{size}-{k}");
        }
        let mut meta = BTreeMap::new();
        meta.insert(
            "signer".to_string(),
            format!("{}+{:08x}", key.name(), key.key_id()),
        );
        let ev = NewEvent {
            time_us,
            actor,
            change_id,
            correlation_id: None,
            body: Body::Checkpoint(Checkpoint {
                size,
                root: body.root,
            }),
            meta,
        };
        let mut records = self.append(vec![ev], Precondition::NextSeq(size))?;
        let record = records
            .pop()
            .ok_or_else(|| Error::Refused("the checkpoint event was not appended".into()))?;
        Ok(Checkpointed { body, note, record })
    }

    /// Checks checkpoint bodies (already opened with their key) against the journal: the
    /// origin is this ledger's, the journal has at least `size` events, the Merkle root
    /// of the first `size` event hashes is `root` and event `size - 1` has hash `head`.
    ///
    /// One pass over the journal up to the largest size, re-deriving every event hash
    /// and link on the way (a damaged journal is an `Err`). Returns one result per body,
    /// in the order given.
    pub fn check_checkpoints(
        &self,
        bodies: &[CheckpointBody],
    ) -> Result<Vec<std::result::Result<(), Mismatch>>> {
        let origin = self.origin()?;
        let events = self.head().map_or(0, |h| h.seq + 1);
        let mut out: Vec<std::result::Result<(), Mismatch>> = vec![Ok(()); bodies.len()];
        let mut pending: Vec<usize> = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            if b.origin != origin {
                out[i] = Err(Mismatch::Origin {
                    found: b.origin.clone(),
                    expected: origin.clone(),
                });
            } else if b.size > events {
                out[i] = Err(Mismatch::Missing {
                    size: b.size,
                    events,
                });
            } else {
                pending.push(i);
            }
        }
        pending.sort_by_key(|&i| bodies[i].size);
        let mut next = 0;
        let mut st = MerkleState::default();
        let mut compare = |st: &MerkleState, next: &mut usize| {
            while let Some(&i) = pending.get(*next) {
                let b = &bodies[i];
                if b.size != st.frontier.size() {
                    break;
                }
                let root = st.frontier.root();
                out[i] = if b.root != root {
                    Err(Mismatch::Root {
                        size: b.size,
                        found: b.root,
                        actual: root,
                    })
                } else if b.head != st.last {
                    Err(Mismatch::Head {
                        size: b.size,
                        found: b.head,
                        actual: st.last,
                    })
                } else {
                    Ok(())
                };
                *next += 1;
            }
        };
        compare(&st, &mut next);
        if let Some(max) = pending.last().map(|&i| bodies[i].size) {
            if max > 0 {
                self.scan_range(0, max - 1, &mut |r| {
                    st.frontier.push(merkle::leaf_hash(&r.hash));
                    st.last = r.hash;
                    compare(&st, &mut next);
                    Ok(())
                })?;
            }
        }
        Ok(out)
    }
}
