//! Per-agent activity.

use std::collections::btree_map;
use std::collections::BTreeMap;

use ledger::{Body, Event};
use serde::{Deserialize, Serialize};

use crate::projection::{check_order, Projection};
use crate::Error;

/// What one agent did, as counted from its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Events of any kind with this agent as actor.
    pub events: u64,
    /// `Change` events among them.
    pub changes: u64,
    /// Time of the agent's first and last event in seq order. Clocks are recorded, not
    /// trusted (design invariant 6), so these are not a min and max of the times.
    pub first_time_us: i64,
    pub last_time_us: i64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Agent ID -> [`AgentInfo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agents {
    by_id: BTreeMap<String, AgentInfo>,
    seq: Option<u64>,
}

impl Agents {
    pub fn new() -> Agents {
        Agents::default()
    }

    pub fn get(&self, agent: &str) -> Option<&AgentInfo> {
        self.by_id.get(agent)
    }

    /// All agents ordered by ID.
    pub fn iter(&self) -> btree_map::Iter<'_, String, AgentInfo> {
        self.by_id.iter()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl Projection for Agents {
    const SNAPSHOT_KIND: &'static str = "agents";

    fn apply(&mut self, ev: &Event) -> Result<(), Error> {
        check_order(self.seq, ev)?;
        self.seq = Some(ev.seq);
        let info = self
            .by_id
            .entry(ev.actor.agent.clone())
            .or_insert(AgentInfo {
                events: 0,
                changes: 0,
                first_time_us: ev.time_us,
                last_time_us: ev.time_us,
                first_seq: ev.seq,
                last_seq: ev.seq,
            });
        info.events += 1;
        if matches!(ev.body, Body::Change(_)) {
            info.changes += 1;
        }
        info.last_time_us = ev.time_us;
        info.last_seq = ev.seq;
        Ok(())
    }

    fn seq(&self) -> Option<u64> {
        self.seq
    }
}
