//! A simulated ledger for tests: an event list, an in-memory content store and an
//! in-memory workspace, driven only through replay's public API.
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::BTreeMap;

use ledger::{
    Actor, Body, Change, Content, Event, Genesis, Hash, Mode, NewEvent, Op, ResourceChange,
    ResourceKey,
};
use replay::{
    later_changes_from_events, plan_revert, ActionKind, ContentError, ContentSource, Error,
    Payload, Projection, Projections, RevertPlan,
};

/// A file as the simulated workspace holds it.
pub type File = (Vec<u8>, Mode);

/// One edit for [`Sim::change`]: a path and its new bytes and mode, or `None` to delete.
pub type Edit<'a> = (&'a str, Option<(&'a [u8], Mode)>);

pub fn content(bytes: &[u8], mode: Mode) -> Content {
    Content {
        hash: Hash::of_content(bytes),
        mode,
        size: bytes.len() as u64,
    }
}

pub fn key(path: &str) -> ResourceKey {
    ResourceKey::file(path.as_bytes())
}

/// A content store that can also redact.
#[derive(Default, Clone)]
pub struct Store {
    pub blobs: BTreeMap<Hash, Vec<u8>>,
    pub redacted: BTreeMap<Hash, (String, i64, u64)>,
}

impl ContentSource for Store {
    fn read(&self, hash: &Hash) -> Result<Vec<u8>, ContentError> {
        if let Some((reason, time_us, seq)) = self.redacted.get(hash) {
            return Err(ContentError::Redacted {
                hash: *hash,
                reason: reason.clone(),
                time_us: *time_us,
                seq: *seq,
            });
        }
        self.blobs
            .get(hash)
            .cloned()
            .ok_or(ContentError::Missing { hash: *hash })
    }
}

pub struct Sim {
    pub events: Vec<Event>,
    pub store: Store,
    /// The workspace: path -> (bytes, mode). For a symlink the bytes are its target.
    pub disk: BTreeMap<Vec<u8>, File>,
    pub proj: Projections,
    next_id: u64,
}

impl Sim {
    /// A ledger with its genesis event.
    pub fn new() -> Sim {
        let mut sim = Sim {
            events: Vec::new(),
            store: Store::default(),
            disk: BTreeMap::new(),
            proj: Projections::new(),
            next_id: 0,
        };
        sim.push(
            "genesis",
            "ledger",
            Body::Genesis(Genesis {
                ledger_id: [7; 16],
                format_version: 1,
            }),
        );
        sim
    }

    /// Appends an event (sealed with a real chain) and folds it.
    pub fn push(&mut self, change_id: &str, agent: &str, body: Body) -> u64 {
        let seq = self.events.len() as u64;
        let prev = self.events.last().map(|e| e.hash()).unwrap_or(Hash::ZERO);
        let ev = NewEvent {
            time_us: 1_700_000_000_000_000 + seq as i64 * 1_000_000,
            actor: Actor {
                agent: agent.to_string(),
                principal: None,
                role: None,
            },
            change_id: change_id.to_string(),
            correlation_id: None,
            body,
            meta: BTreeMap::new(),
        }
        .seal(seq, prev);
        self.proj.apply(&ev).expect("events are pushed in order");
        self.events.push(ev);
        seq
    }

    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("ch-{}", self.next_id)
    }

    /// Records a change made by an agent: each edit sets (`Some`) or deletes (`None`) a
    /// file on disk; old contents come from the disk. Returns the change ID.
    pub fn change(&mut self, edits: &[Edit]) -> String {
        let owned: Vec<(Vec<u8>, Option<File>)> = edits
            .iter()
            .map(|(p, f)| (p.as_bytes().to_vec(), f.map(|(b, m)| (b.to_vec(), m))))
            .collect();
        self.change_owned(&owned, None)
    }

    pub fn change_owned(
        &mut self,
        edits: &[(Vec<u8>, Option<File>)],
        reverts: Option<String>,
    ) -> String {
        let id = self.fresh_id();
        let mut resources = Vec::new();
        for (path, new) in edits {
            let old = self.disk.get(path).map(|(b, m)| content(b, *m));
            let new_c = new.as_ref().map(|(b, m)| content(b, *m));
            let op = match (&old, &new_c) {
                (None, _) => Op::Create,
                (_, None) => Op::Delete,
                _ => Op::Modify,
            };
            match new {
                Some((b, m)) => {
                    self.store.blobs.insert(Hash::of_content(b), b.clone());
                    self.disk.insert(path.clone(), (b.clone(), *m));
                }
                None => {
                    self.disk.remove(path);
                }
            }
            resources.push(ResourceChange {
                key: ResourceKey::file(path),
                op,
                old,
                new: new_c,
            });
        }
        resources.sort_by(|a, b| a.key.cmp(&b.key));
        self.push(
            &id.clone(),
            "agent-1",
            Body::Change(Change {
                message: Some(format!("change {id}")),
                reverts,
                resources,
            }),
        );
        id
    }

    /// The `Change` event of a change ID.
    pub fn change_event(&self, id: &str) -> &Event {
        self.events
            .iter()
            .find(|e| e.change_id == id && matches!(e.body, Body::Change(_)))
            .expect("known change")
    }

    /// What a workspace scan reports for the keys the change touched.
    pub fn scan(&self, ev: &Event) -> BTreeMap<ResourceKey, Option<Content>> {
        ev.resources()
            .iter()
            .filter(|rc| rc.key.is_file())
            .map(|rc| {
                (
                    rc.key.clone(),
                    self.disk
                        .get(rc.key.name.as_bytes())
                        .map(|(b, m)| content(b, *m)),
                )
            })
            .collect()
    }

    pub fn plan(&self, id: &str) -> Result<RevertPlan, Error> {
        let ev = self.change_event(id);
        let later = later_changes_from_events(&self.events, ev.seq);
        plan_revert(
            ev,
            &self.proj.changes,
            &self.proj.tree,
            &self.scan(ev),
            |k| later.get(k),
            &self.store,
        )
    }

    /// Applies a plan to the workspace the way the CLI would (checking `before` first)
    /// and records the revert. Returns the revert's change ID.
    pub fn apply(&mut self, plan: &RevertPlan) -> String {
        for a in &plan.actions {
            let path = a.key.name.as_bytes().to_vec();
            let now = self.disk.get(&path).map(|(b, m)| content(b, *m));
            assert_eq!(
                now,
                a.before,
                "disk changed under the plan at {}",
                a.key.display()
            );
            match &a.kind {
                ActionKind::Delete => {
                    self.disk.remove(&path);
                }
                ActionKind::SetMode { mode } => {
                    self.disk.get_mut(&path).expect("file to chmod").1 = *mode;
                }
                ActionKind::Write { payload, mode } => {
                    let bytes = match payload {
                        Payload::Stored { hash } => self.store.read(hash).expect("checked content"),
                        Payload::Bytes(b) => b.clone(),
                    };
                    let after = a.after.expect("a write has an after");
                    assert_eq!(Hash::of_content(&bytes), after.hash);
                    assert_eq!(bytes.len() as u64, after.size);
                    assert_eq!(*mode, after.mode);
                    self.store.blobs.insert(after.hash, bytes.clone());
                    self.disk.insert(path, (bytes, *mode));
                }
            }
            let now = self
                .disk
                .get(a.key.name.as_bytes())
                .map(|(b, m)| content(b, *m));
            assert_eq!(now, a.after);
        }
        let id = self.fresh_id();
        let body = plan.change(Some(format!("revert {}", plan.reverts)));
        self.push(&id.clone(), "agent-1", Body::Change(body));
        id
    }

    pub fn revert(&mut self, id: &str) -> Result<String, Error> {
        let plan = self.plan(id)?;
        Ok(self.apply(&plan))
    }

    pub fn head_seq(&self) -> u64 {
        self.events.len() as u64 - 1
    }

    /// The tree's file contents, for comparing states.
    pub fn tree_files(&self) -> BTreeMap<Vec<u8>, (Hash, Mode)> {
        self.proj
            .tree
            .files()
            .map(|(k, e)| (k.name.as_bytes().to_vec(), (e.content.hash, e.content.mode)))
            .collect()
    }

    pub fn disk_files(&self) -> BTreeMap<Vec<u8>, (Hash, Mode)> {
        self.disk
            .iter()
            .map(|(p, (b, m))| (p.clone(), (Hash::of_content(b), *m)))
            .collect()
    }

    pub fn read_disk(&self, path: &str) -> Option<String> {
        self.disk
            .get(path.as_bytes())
            .map(|(b, _)| String::from_utf8(b.clone()).unwrap())
    }
}

/// A small deterministic PRNG (splitmix64), so property tests need no extra crate and
/// every failure names a reproducible seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The tree as of `seq`, replayed from the simulated journal.
pub fn tree(sim: &Sim, seq: u64) -> replay::Tree {
    replay::state_at(&sim.events, seq).expect("events in order")
}

/// The file contents of the tree as of `seq`.
pub fn tree_at(sim: &Sim, seq: u64) -> BTreeMap<Vec<u8>, (Hash, Mode)> {
    tree(sim, seq)
        .files()
        .map(|(k, e)| (k.name.as_bytes().to_vec(), (e.content.hash, e.content.mode)))
        .collect()
}
