//! The change lifecycle: each change and the events that followed it.

use std::collections::btree_map;
use std::collections::BTreeMap;

use ledger::{Actor, Approval, Body, Check, Deployment, Event, Failure, ResourceKey};
use serde::{Deserialize, Serialize};

use crate::projection::{check_order, Projection};
use crate::Error;

/// A lifecycle event as it was recorded: where, when, by whom, and its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded<T> {
    pub seq: u64,
    pub time_us: i64,
    pub actor: Actor,
    pub value: T,
}

/// Everything known about one change ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInfo {
    pub change_id: String,
    /// Seq of the `Change` event; `None` while only lifecycle events carry this ID (for
    /// example a command that failed before it changed anything).
    pub change_seq: Option<u64>,
    /// Seq of the first and last event carrying this change ID.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Time and actor of the `Change` event, or of the first event until there is one.
    pub time_us: i64,
    pub actor: Actor,
    pub correlation_id: Option<String>,
    pub message: Option<String>,
    /// Keys the change touched, sorted.
    pub resources: Vec<ResourceKey>,
    /// The change this one undoes.
    pub reverts: Option<String>,
    /// The revert currently undoing this change: the latest of [`ChangeInfo::reverters`]
    /// still in force. `None` when every revert of it was itself reverted (the change is
    /// in force again and may be reverted again).
    pub reverted_by: Option<String>,
    /// Every change that reverted this one, in seq order.
    pub reverters: Vec<String>,
    pub checks: Vec<Recorded<Check>>,
    pub approvals: Vec<Recorded<Approval>>,
    pub deployments: Vec<Recorded<Deployment>>,
    pub failures: Vec<Recorded<Failure>>,
}

impl ChangeInfo {
    fn new(ev: &Event) -> ChangeInfo {
        ChangeInfo {
            change_id: ev.change_id.clone(),
            change_seq: None,
            first_seq: ev.seq,
            last_seq: ev.seq,
            time_us: ev.time_us,
            actor: ev.actor.clone(),
            correlation_id: ev.correlation_id.clone(),
            message: None,
            resources: Vec::new(),
            reverts: None,
            reverted_by: None,
            reverters: Vec::new(),
            checks: Vec::new(),
            approvals: Vec::new(),
            deployments: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// A `Failure` event carries this change ID.
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The change's effect is currently undone.
    pub fn is_reverted(&self) -> bool {
        self.reverted_by.is_some()
    }
}

/// Change ID -> [`ChangeInfo`]: a `Change` event plus every `Check`, `Approval`,
/// `Deployment` and `Failure` event sharing its change ID.
///
/// Genesis, kill-switch, redaction and checkpoint events concern the whole ledger, not
/// one change, so they do not create or extend entries here (the [`crate::Agents`]
/// projection still counts them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    by_id: BTreeMap<String, ChangeInfo>,
    seq: Option<u64>,
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    pub fn get(&self, change_id: &str) -> Option<&ChangeInfo> {
        self.by_id.get(change_id)
    }

    /// All changes ordered by change ID.
    pub fn iter(&self) -> btree_map::Iter<'_, String, ChangeInfo> {
        self.by_id.iter()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records that `by` reverts `target`, then brings the in-force state of `target`
    /// and of everything down its chain of reverts up to date.
    ///
    /// A change is undone exactly when one of its reverts is itself in force. Reverts
    /// always come after their targets, so when a revert arrives only changes before it
    /// can change state: recompute `target` from its reverters (all of which are up to
    /// date), and if its state changed and it is itself a revert, recompute what it
    /// reverts, and so on down the chain.
    fn mark_reverted(&mut self, target: &str, by: &str) {
        match self.by_id.get_mut(target) {
            Some(info) => info.reverters.push(by.to_string()),
            None => return,
        }
        let mut cur = target.to_string();
        // A well-formed journal has no cycles, but a corrupt one must not hang the fold.
        for _ in 0..=self.by_id.len() {
            let Some(info) = self.by_id.get(&cur) else {
                return;
            };
            let now = info
                .reverters
                .iter()
                .rev()
                .find(|r| {
                    self.by_id
                        .get(*r)
                        .is_some_and(|ri| ri.reverted_by.is_none())
                })
                .cloned();
            let info = self.by_id.get_mut(&cur).expect("looked up above");
            if info.reverted_by == now {
                return;
            }
            info.reverted_by = now;
            match info.reverts.clone() {
                Some(next) => cur = next,
                None => return,
            }
        }
    }
}

fn recorded<T>(ev: &Event, value: T) -> Recorded<T> {
    Recorded {
        seq: ev.seq,
        time_us: ev.time_us,
        actor: ev.actor.clone(),
        value,
    }
}

impl Projection for Changes {
    const SNAPSHOT_KIND: &'static str = "changes";

    fn apply(&mut self, ev: &Event) -> Result<(), Error> {
        check_order(self.seq, ev)?;
        self.seq = Some(ev.seq);
        let belongs = matches!(
            ev.body,
            Body::Change(_)
                | Body::Check(_)
                | Body::Approval(_)
                | Body::Deployment(_)
                | Body::Failure(_)
        );
        if !belongs {
            return Ok(());
        }
        let info = self
            .by_id
            .entry(ev.change_id.clone())
            .or_insert_with(|| ChangeInfo::new(ev));
        info.last_seq = ev.seq;
        if info.correlation_id.is_none() {
            info.correlation_id = ev.correlation_id.clone();
        }
        let mut reverts = None;
        match &ev.body {
            Body::Change(change) => {
                // A second `Change` event under one ID (the journal does not forbid it)
                // adds its resources; the first one fixes seq, time and actor.
                if info.change_seq.is_none() {
                    info.change_seq = Some(ev.seq);
                    info.time_us = ev.time_us;
                    info.actor = ev.actor.clone();
                }
                if change.message.is_some() {
                    info.message = change.message.clone();
                }
                info.resources
                    .extend(change.resources.iter().map(|rc| rc.key.clone()));
                info.resources.sort();
                info.resources.dedup();
                if change.reverts.is_some() {
                    info.reverts = change.reverts.clone();
                    reverts = change.reverts.clone();
                }
            }
            Body::Check(c) => info.checks.push(recorded(ev, c.clone())),
            Body::Approval(a) => info.approvals.push(recorded(ev, a.clone())),
            Body::Deployment(d) => info.deployments.push(recorded(ev, d.clone())),
            Body::Failure(f) => info.failures.push(recorded(ev, f.clone())),
            _ => {}
        }
        if let Some(target) = reverts {
            if target != ev.change_id {
                self.mark_reverted(&target, &ev.change_id);
            }
        }
        Ok(())
    }

    fn seq(&self) -> Option<u64> {
        self.seq
    }
}
