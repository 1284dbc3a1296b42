//! Random sequences of changes and reverts, checked against a plain model.
//!
//! Text files always have `LINES` lines and edits replace whole lines with fresh tokens,
//! so what a correct revert leaves in each line can be stated without a diff algorithm:
//! lines the reverted change did not touch keep their current text, lines it touched and
//! nobody touched since get their old text back.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{File, Rng, Sim};
use ledger::{Body, EventRef, Hash, Mode};
use replay::{ConflictReason, Error, Projection, Projections, Tree, TreeFold};

const LINES: usize = 12;
const TEXT_PATHS: [&str; 7] = [
    "a.txt",
    "b.txt",
    "c.sh",
    "src/d.txt",
    "src/e.txt",
    "src/f/g.txt",
    "doc/h.md",
];
const BLOB: &str = "blob.bin";
const LINK: &str = "link";

struct World {
    sim: Sim,
    rng: Rng,
    token: u64,
    seed: u64,
}

impl World {
    fn fresh_line(&mut self) -> String {
        self.token += 1;
        format!("line {}", self.token)
    }

    fn text(&mut self) -> Vec<u8> {
        (0..LINES)
            .map(|_| self.fresh_line() + "\n")
            .collect::<String>()
            .into_bytes()
    }

    /// A random edit of `path` given what is there now.
    fn edit(&mut self, path: &str) -> Option<File> {
        let now = self.sim.disk.get(path.as_bytes()).cloned();
        if path == LINK {
            return match now {
                Some(_) if self.rng.chance(30) => None,
                _ => Some((
                    format!("target-{}", self.rng.below(4)).into_bytes(),
                    Mode::Symlink,
                )),
            };
        }
        if path == BLOB {
            return match now {
                Some(_) if self.rng.chance(20) => None,
                _ => {
                    let mut b = vec![0u8, 1, 2];
                    b.push(self.rng.below(256) as u8);
                    Some((b, Mode::Regular))
                }
            };
        }
        let Some((bytes, mode)) = now else {
            let mode = if self.rng.chance(20) {
                Mode::Executable
            } else {
                Mode::Regular
            };
            return Some((self.text(), mode));
        };
        match self.rng.below(10) {
            0 => None,
            1 => {
                let flipped = if mode == Mode::Regular {
                    Mode::Executable
                } else {
                    Mode::Regular
                };
                Some((bytes, flipped))
            }
            _ => {
                let text = String::from_utf8(bytes).unwrap();
                let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
                for _ in 0..=self.rng.below(2) {
                    let i = self.rng.below(LINES as u64) as usize;
                    lines[i] = self.fresh_line();
                }
                let out: String = lines.iter().map(|l| format!("{l}\n")).collect();
                Some((out.into_bytes(), mode))
            }
        }
    }

    fn random_change(&mut self) -> String {
        // Mostly text files, which can merge; the blob and the link now and then.
        let n = 1 + self.rng.below(3) as usize;
        let mut paths = BTreeSet::new();
        while paths.len() < n {
            let p = match self.rng.below(20) {
                0 => BLOB,
                1 => LINK,
                _ => *self.rng.pick(&TEXT_PATHS),
            };
            paths.insert(p);
        }
        let edits: Vec<(Vec<u8>, Option<File>)> = paths
            .into_iter()
            .map(|p| (p.as_bytes().to_vec(), self.edit(p)))
            .collect();
        self.sim.change_owned(&edits, None)
    }

    /// The changes (not genesis, not lifecycle events) in seq order: (id, seq, reverts).
    fn changes(&self) -> Vec<(String, u64, Option<String>)> {
        self.sim
            .events
            .iter()
            .filter_map(|e| match &e.body {
                Body::Change(c) => Some((e.change_id.clone(), e.seq, c.reverts.clone())),
                _ => None,
            })
            .collect()
    }

    /// Independent model of which changes are in force: a change is undone exactly when
    /// a revert of it is itself in force. Reverts come after their targets, so walking
    /// backwards decides every revert before its target.
    fn in_force(&self) -> BTreeMap<String, bool> {
        let changes = self.changes();
        let mut force: BTreeMap<String, bool> = BTreeMap::new();
        for (id, _, _) in changes.iter().rev() {
            let undone = changes
                .iter()
                .any(|(r, _, target)| target.as_deref() == Some(id) && force.get(r) == Some(&true));
            force.insert(id.clone(), !undone);
        }
        force
    }

    fn ctx(&self) -> String {
        format!("seed {:#x} at seq {}", self.seed, self.sim.head_seq())
    }

    fn check_consistency(&self) {
        let ctx = self.ctx();
        assert_eq!(
            self.sim.tree_files(),
            self.sim.disk_files(),
            "workspace != tree, {ctx}"
        );
        for (id, force) in self.in_force() {
            let info = self.sim.proj.changes.get(&id).unwrap();

            assert_eq!(info.reverted_by.is_none(), force, "{id} in force? {ctx}");
        }
    }
}

/// What a correct revert leaves in one file, per the line model. `None` in the result
/// means the file is absent; `Err` means a conflict is the only correct answer.
fn expected(
    old: Option<&File>,
    new: Option<&File>,
    cur: Option<&File>,
) -> Result<Option<File>, ()> {
    if cur == new {
        return Ok(old.cloned());
    }
    if cur == old {
        // Later changes already restored what the change replaced: nothing to undo.
        return Ok(cur.cloned());
    }
    let (Some(old), Some(new), Some(cur)) = (old, new, cur) else {
        return Err(());
    };
    if [old.1, new.1, cur.1].contains(&Mode::Symlink) {
        return Err(());
    }
    let mode = if old.1 == new.1 { cur.1 } else { old.1 };
    let bytes = if old.0 == new.0 || cur.0 == old.0 {
        cur.0.clone()
    } else if cur.0 == new.0 {
        old.0.clone()
    } else {
        let lines = |b: &[u8]| -> Option<Vec<String>> {
            if b.contains(&0) {
                return None;
            }
            Some(
                std::str::from_utf8(b)
                    .ok()?
                    .lines()
                    .map(str::to_string)
                    .collect(),
            )
        };
        let (Some(o), Some(n), Some(c)) = (lines(&old.0), lines(&new.0), lines(&cur.0)) else {
            return Err(());
        };
        let mut out = String::new();
        for i in 0..LINES {
            let line = if o[i] == n[i] {
                &c[i]
            } else if c[i] == n[i] {
                &o[i]
            } else if c[i] == o[i] {
                &c[i]
            } else {
                return Err(()); // both sides changed this line
            };
            out.push_str(line);
            out.push('\n');
        }
        out.into_bytes()
    };
    Ok(Some((bytes, mode)))
}

fn run(seed: u64, steps: usize) -> Stats {
    let mut w = World {
        sim: Sim::new(),
        rng: Rng(seed),
        token: 0,
        seed,
    };
    let mut stats = Stats::default();
    for step in 0..steps {
        let roll = w.rng.below(100);
        let changes = w.changes();
        if changes.is_empty() || roll < 50 {
            w.random_change();
        } else if roll < 65 {
            revert_last(&mut w);
        } else if roll < 92 {
            let (id, _, _) = w.rng.pick(&changes).clone();
            stats += revert_older(&mut w, &id);
        } else {
            unrecorded_edit(&mut w);
        }
        w.check_consistency();
        if step % 16 == 0 {
            let replayed = Projections::replay(&w.sim.events, u64::MAX).unwrap();
            assert_eq!(replayed, w.sim.proj, "{}", w.ctx());
            // The borrowed fold (the state at a point) and the prepared fold (projection
            // rebuilds) give the same tree and the same snapshot bytes, from the
            // canonical bytes, however the events are split between a starting tree
            // and the fold; an event at or before its seq is refused.
            let encoded: Vec<Vec<u8>> = w.sim.events.iter().map(|e| e.encode()).collect();
            // Starting points: the genesis (a fold that takes its small tree apart at
            // once), a third and two thirds in (folds that update the starting tree in
            // place, then switch once they folded as many events as it has entries),
            // and the last event (nothing to fold).
            let n = encoded.len();
            let want = w.sim.proj.tree.to_snapshot_bytes();
            for split in [0, n / 3, 2 * n / 3, n - 1] {
                let start = replay::state_at(&w.sim.events, w.sim.events[split].seq).unwrap();
                let mut fold = TreeFold::new(start.clone());
                let mut prepared = TreeFold::new(start.clone());
                // Prepared from the canonical bytes (`Change` events skimmed, others
                // decoded), as projection rebuilds prepare them, with the keys' hashes
                // computed ahead for this fold.
                let mut skimmed = TreeFold::new(start.clone());
                // The same with hashes computed for another fold: they must be ignored.
                let mut foreign = TreeFold::new(start);
                let other_keys = TreeFold::new(replay::Tree::new()).key_hasher();
                let all: Vec<u8> = encoded[split + 1..].concat();
                let mut p = replay::Prepared::default();
                let mut ps = replay::Prepared::default().hashing_keys(skimmed.key_hasher());
                let mut po = replay::Prepared::default().hashing_keys(other_keys);
                let mut at = 0;
                for bytes in &encoded[split + 1..] {
                    fold.apply(&EventRef::decode(bytes).unwrap()).unwrap();
                    let ev = EventRef::decode(&all[at..at + bytes.len()]).unwrap();
                    assert!(p.push(&all, &ev));
                    assert!(ps.push_encoded(&all, &all[at..at + bytes.len()]));
                    assert!(po.push(&all, &ev));
                    at += bytes.len();
                }
                assert_eq!(ps.len(), p.len());
                for i in 0..p.len() {
                    prepared.apply_prepared(&all, &p, i).unwrap();
                    skimmed.apply_prepared(&all, &ps, i).unwrap();
                    foreign.apply_prepared(&all, &po, i).unwrap();
                }
                let ctx = format!("{} (fold from event {split})", w.ctx());
                assert_eq!(fold.to_snapshot_bytes(), want, "{ctx}");
                assert_eq!(prepared.to_snapshot_bytes(), want, "{ctx}");
                assert_eq!(skimmed.to_snapshot_bytes(), want, "{ctx}");
                assert_eq!(foreign.to_snapshot_bytes(), want, "{ctx}");
                assert_eq!(skimmed.into_tree(), w.sim.proj.tree, "{ctx}");
                let last = encoded.last().unwrap();
                assert!(matches!(
                    fold.apply(&EventRef::decode(last).unwrap()),
                    Err(Error::OutOfOrder { .. })
                ));
                assert_eq!(fold.len(), w.sim.proj.tree.len(), "{ctx}");
                let files = w.sim.proj.tree.files().count();
                assert_eq!(fold.files(), files, "{ctx}");
                assert_eq!(prepared.files(), files, "{ctx}");
                assert_eq!(fold.seq(), w.sim.proj.tree.seq(), "{ctx}");
                assert_eq!(fold.into_tree(), w.sim.proj.tree, "{ctx}");
                assert_eq!(prepared.into_tree(), w.sim.proj.tree, "{ctx}");
            }
            let back = Projections::from_snapshot_bytes(&w.sim.proj.to_snapshot_bytes()).unwrap();
            assert_eq!(back, w.sim.proj, "{}", w.ctx());
        }
    }
    stats
}

/// Reverting the last change restores the tree before it exactly.
fn revert_last(w: &mut World) {
    let (id, seq, _) = w.changes().last().unwrap().clone();
    let before = common::tree_at(&w.sim, seq - 1);
    let plan = w
        .sim
        .plan(&id)
        .unwrap_or_else(|e| panic!("last change {id}: {e}; {}", w.ctx()));
    w.sim.apply(&plan);
    assert_eq!(w.sim.tree_files(), before, "{}", w.ctx());
    assert_eq!(w.sim.disk_files(), before, "{}", w.ctx());
}

/// What a random walk exercised, so the test can insist that it did.
#[derive(Default, Debug)]
struct Stats {
    /// Clean reverts of a change that was not the last event.
    clean_older: usize,
    /// Files reverted through a three-way merge with later changes.
    merges: usize,
    /// Refused reverts.
    conflicts: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.clean_older += o.clean_older;
        self.merges += o.merges;
        self.conflicts += o.conflicts;
    }
}

/// Reverts any change and checks the outcome against the line model.
fn revert_older(w: &mut World, id: &str) -> Stats {
    let ctx = w.ctx();
    let ev = w.sim.change_event(id).clone();
    let in_force = w.in_force()[id];
    let disk_before = w.sim.disk.clone();
    let tree_before: Tree = w.sim.proj.tree.clone();
    let result = w.sim.plan(id);
    if !in_force {
        assert!(
            matches!(result, Err(Error::AlreadyReverted { .. })),
            "{id}: {result:?}; {ctx}"
        );
        return Stats::default();
    }
    let blob = |c: &Option<ledger::Content>| -> Option<File> {
        c.map(|c| (w.sim.store.blobs[&c.hash].clone(), c.mode))
    };
    // Per file: the model's answer.
    let mut want: BTreeMap<Vec<u8>, Result<Option<File>, ()>> = BTreeMap::new();
    for rc in ev.resources() {
        let path = rc.key.name.as_bytes().to_vec();
        let cur = disk_before.get(&path).cloned();
        want.insert(
            path,
            expected(blob(&rc.old).as_ref(), blob(&rc.new).as_ref(), cur.as_ref()),
        );
    }
    match result {
        Ok(plan) => {
            for (path, exp) in &want {
                assert!(
                    exp.is_ok(),
                    "{}: planned though the model says conflict; {ctx}",
                    String::from_utf8_lossy(path)
                );
            }
            w.sim.apply(&plan);
            for (path, file) in &disk_before {
                if !want.contains_key(path) {
                    assert_eq!(
                        w.sim.disk.get(path),
                        Some(file),
                        "untouched file changed; {ctx}"
                    );
                }
            }
            for (path, expect) in want {
                let got = w.sim.disk.get(&path).cloned();
                assert_eq!(
                    got,
                    expect.unwrap(),
                    "{}; {ctx}",
                    String::from_utf8_lossy(&path)
                );
            }
            Stats {
                clean_older: usize::from(ev.seq < tree_before.seq().unwrap()),
                merges: plan
                    .actions
                    .iter()
                    .filter(|a| !a.merged_with.is_empty())
                    .count(),
                ..Stats::default()
            }
        }
        Err(Error::Conflicts { conflicts, .. }) => {
            assert_eq!(w.sim.disk, disk_before, "a refused plan wrote; {ctx}");
            for c in &conflicts {
                let path = c.key.name.as_bytes().to_vec();
                match &c.reason {
                    ConflictReason::Overlap => {
                        // diff3 also refuses edits in adjacent lines, which the line model
                        // would merge, so an overlap only has to be plausible: later
                        // changes touched the file and its content differs from both sides.
                        assert!(!c.later_changes.is_empty(), "{c}; {ctx}");
                    }
                    ConflictReason::Unrecorded { .. } => {
                        panic!("disk equals head here: {c}; {ctx}")
                    }
                    _ => {
                        assert_eq!(want[&path], Err(()), "{c}: model would revert it; {ctx}");
                        assert!(!c.later_changes.is_empty(), "{c}; {ctx}");
                    }
                }
            }
            // Files the model says must conflict are all reported.
            for (path, exp) in &want {
                if exp.is_err() {
                    assert!(
                        conflicts
                            .iter()
                            .any(|c| c.key.name.as_bytes() == path.as_slice()),
                        "{ctx}"
                    );
                }
            }
            Stats {
                conflicts: 1,
                ..Stats::default()
            }
        }
        Err(e) => panic!("{id}: unexpected {e}; {ctx}"),
    }
}

/// An edit outside the ledger blocks reverting a change that touched the file, and
/// leaves everything as it was.
fn unrecorded_edit(w: &mut World) {
    let force = w.in_force();
    let target = w
        .changes()
        .into_iter()
        .rev()
        .find(|(id, _, _)| force[id] && !w.sim.change_event(id).resources().is_empty());
    let Some((id, _, _)) = target else { return };
    let ev = w.sim.change_event(&id).clone();
    let path = ev.resources()[0].key.name.as_bytes().to_vec();
    let saved = w.sim.disk.get(&path).cloned();
    w.sim
        .disk
        .insert(path.clone(), (b"edited by hand\n".to_vec(), Mode::Regular));
    let ctx = w.ctx();
    match w.sim.plan(&id) {
        Err(Error::Conflicts { conflicts, .. }) => {
            let c = conflicts
                .iter()
                .find(|c| c.key.name.as_bytes() == path.as_slice())
                .expect(&ctx);
            assert!(
                matches!(&c.reason, ConflictReason::Unrecorded { on_disk: Some(d), .. }
                    if d.hash == Hash::of_content(b"edited by hand\n")),
                "{c}; {ctx}"
            );
        }
        other => panic!("expected an unrecorded conflict, got {other:?}; {ctx}"),
    }
    match saved {
        Some(f) => w.sim.disk.insert(path, f),
        None => w.sim.disk.remove(&path),
    };
}

#[test]
fn random_changes_and_reverts_match_the_model() {
    let mut stats = Stats::default();
    for seed in 0..48u64 {
        stats += run(0xA11CE ^ (seed * 0x9E37_79B9), 80);
    }
    // Keep the test honest: the walks must reach every interesting outcome.
    assert!(
        stats.clean_older > 20 && stats.merges > 5 && stats.conflicts > 5,
        "{stats:?}"
    );
}

#[test]
fn long_random_walk() {
    let stats = run(0xD1CE, 600);
    assert!(
        stats.clean_older > 0 && stats.merges > 0 && stats.conflicts > 0,
        "{stats:?}"
    );
}
