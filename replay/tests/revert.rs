//! Revert planning: restores, merges, every kind of conflict and refusal.

mod common;

use std::collections::BTreeMap;

use common::{content, key, Sim};
use ledger::{Body, Change, Check, Content, Hash, Mode, Op, ResourceChange, ResourceKey};
use replay::{
    plan_revert, ActionKind, Conflict, ConflictReason, ContentError, Error, Payload, RevertPlan,
    UnsafePath,
};

const R: Mode = Mode::Regular;
const X: Mode = Mode::Executable;
const L: Mode = Mode::Symlink;

fn conflicts(r: Result<RevertPlan, Error>) -> Vec<Conflict> {
    match r {
        Err(Error::Conflicts { conflicts, .. }) => conflicts,
        other => panic!("expected conflicts, got {other:?}"),
    }
}

fn only_conflict(r: Result<RevertPlan, Error>) -> Conflict {
    let mut c = conflicts(r);
    assert_eq!(c.len(), 1, "{c:?}");
    c.remove(0)
}

/// Reverting a change must bring the tree back to the one before it, byte for byte.
fn assert_reverts_to_before(sim: &mut Sim, id: &str) -> RevertPlan {
    let before = common::tree_at(sim, sim.change_event(id).seq - 1);
    let plan = sim.plan(id).unwrap();
    sim.apply(&plan);
    assert_eq!(sim.tree_files(), before);
    assert_eq!(sim.disk_files(), before);
    plan
}

mod restore {
    use super::*;

    #[test]
    fn create_is_undone_by_delete() {
        let mut sim = Sim::new();
        let c = sim.change(&[("new.txt", Some((b"hello\n", R)))]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.actions[0].kind, ActionKind::Delete);
        assert_eq!(plan.actions[0].before, Some(content(b"hello\n", R)));
        assert_eq!(plan.actions[0].after, None);
        assert_eq!(
            plan.resources,
            vec![ResourceChange {
                key: key("new.txt"),
                op: Op::Delete,
                old: Some(content(b"hello\n", R)),
                new: None
            }]
        );
        assert_eq!(plan.reverts, c);
        assert_eq!(plan.change(None).reverts.as_deref(), Some(c.as_str()));
    }

    #[test]
    fn modify_is_undone_by_writing_the_old_content() {
        let mut sim = Sim::new();
        sim.change(&[("f", Some((b"v1\n", R)))]);
        let c = sim.change(&[("f", Some((b"v2\n", R)))]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        let a = &plan.actions[0];
        assert_eq!(
            a.kind,
            ActionKind::Write {
                payload: Payload::Stored {
                    hash: Hash::of_content(b"v1\n")
                },
                mode: R
            }
        );
        assert_eq!(plan.resources[0].op, Op::Modify);
        assert_eq!(plan.resources[0].old, Some(content(b"v2\n", R)));
        assert_eq!(plan.resources[0].new, Some(content(b"v1\n", R)));
        assert!(a.merged_with.is_empty());
    }

    #[test]
    fn delete_is_undone_by_recreating_with_mode() {
        let mut sim = Sim::new();
        sim.change(&[("bin/tool", Some((b"#!/bin/sh\necho hi\n", X)))]);
        let c = sim.change(&[("bin/tool", None)]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        assert_eq!(plan.resources[0].op, Op::Create);
        assert_eq!(sim.disk[&b"bin/tool".to_vec()].1, X);
    }

    #[test]
    fn mode_change_is_undone_by_set_mode() {
        let mut sim = Sim::new();
        sim.change(&[("run.sh", Some((b"echo\n", R)))]);
        let c = sim.change(&[("run.sh", Some((b"echo\n", X)))]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        assert_eq!(plan.actions[0].kind, ActionKind::SetMode { mode: R });
    }

    #[test]
    fn mode_change_restore_works_even_when_the_content_is_redacted() {
        // Only the mode moves, so the bytes already on disk suffice.
        let mut sim = Sim::new();
        sim.change(&[("run.sh", Some((b"secret\n", R)))]);
        let c = sim.change(&[("run.sh", Some((b"secret\n", X)))]);
        sim.store
            .redacted
            .insert(Hash::of_content(b"secret\n"), ("leak".into(), 5, 9));
        assert_eq!(
            sim.plan(&c).unwrap().actions[0].kind,
            ActionKind::SetMode { mode: R }
        );
    }

    #[test]
    fn symlinks_are_restored_created_and_removed() {
        let mut sim = Sim::new();
        let c1 = sim.change(&[("link", Some((b"target-a", L)))]);
        let c2 = sim.change(&[("link", Some((b"target-b", L)))]);
        let plan = assert_reverts_to_before(&mut sim, &c2);
        assert_eq!(
            plan.actions[0].kind,
            ActionKind::Write {
                payload: Payload::Stored {
                    hash: Hash::of_content(b"target-a")
                },
                mode: L
            }
        );
        // A symlink replaced by a regular file with the same bytes comes back as a link.
        let c3 = sim.change(&[("link", Some((b"target-a", R)))]);
        let plan = assert_reverts_to_before(&mut sim, &c3);
        assert!(matches!(
            plan.actions[0].kind,
            ActionKind::Write { mode: L, .. }
        ));
        let _ = c1;
        let c4 = sim.change(&[("link2", Some((b"../x", L)))]);
        let plan = assert_reverts_to_before(&mut sim, &c4);
        assert_eq!(plan.actions[0].kind, ActionKind::Delete);
    }

    #[test]
    fn multi_file_change_with_deletes_first() {
        let mut sim = Sim::new();
        sim.change(&[("a", Some((b"a1", R))), ("d", Some((b"d", R)))]);
        let c = sim.change(&[
            ("a", Some((b"a2", R))),
            ("b", Some((b"b", X))),
            ("c", Some((b"c", L))),
            ("d", None),
        ]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        let kinds: Vec<(String, bool)> = plan
            .actions
            .iter()
            .map(|a| (a.key.display(), a.kind == ActionKind::Delete))
            .collect();
        assert_eq!(
            kinds,
            [
                ("file:b".to_string(), true),
                ("file:c".to_string(), true),
                ("file:a".to_string(), false),
                ("file:d".to_string(), false)
            ]
        );
        let keys: Vec<String> = plan.resources.iter().map(|r| r.key.display()).collect();
        assert_eq!(keys, ["file:a", "file:b", "file:c", "file:d"]);
    }

    #[test]
    fn a_later_change_that_restored_the_same_content_is_not_a_conflict() {
        // Head holds what the change produced, even if later changes passed through.
        let mut sim = Sim::new();
        sim.change(&[("f", Some((b"1\n", R)))]);
        let c = sim.change(&[("f", Some((b"2\n", R)))]);
        sim.change(&[("f", Some((b"3\n", R)))]);
        sim.change(&[("f", Some((b"2\n", R)))]);
        let plan = sim.plan(&c).unwrap();
        assert_eq!(plan.actions[0].after, Some(content(b"1\n", R)));
    }

    #[test]
    fn a_change_that_recorded_no_difference_plans_nothing() {
        let mut sim = Sim::new();
        sim.change(&[("f", Some((b"same", R)))]);
        let c = sim.change(&[("f", Some((b"same", R)))]);
        let plan = sim.plan(&c).unwrap();
        assert!(plan.is_empty());
        assert!(plan.resources.is_empty());
        let empty = sim.change(&[]);
        assert!(sim.plan(&empty).unwrap().is_empty());
    }
}

mod merge {
    use super::*;

    const BASE: &str = "l1\nl2\nl3\nl4\nl5\nl6\nl7\nl8\nl9\n";

    #[test]
    fn later_non_overlapping_edits_survive() {
        let mut sim = Sim::new();
        sim.change(&[("f.txt", Some((BASE.as_bytes(), R)))]);
        let c = sim.change(&[("f.txt", Some((BASE.replace("l2", "C2").as_bytes(), R)))]);
        let later = sim.change(&[(
            "f.txt",
            Some((BASE.replace("l2", "C2").replace("l8", "L8").as_bytes(), R)),
        )]);
        let plan = sim.plan(&c).unwrap();
        let a = &plan.actions[0];
        assert_eq!(a.merged_with, vec![later.clone()]);
        let merged = BASE.replace("l8", "L8");
        assert_eq!(
            a.kind,
            ActionKind::Write {
                payload: Payload::Bytes(merged.clone().into_bytes()),
                mode: R
            }
        );
        assert_eq!(a.after, Some(content(merged.as_bytes(), R)));
        assert_eq!(
            plan.resources[0].new.unwrap().hash,
            Hash::of_content(merged.as_bytes())
        );
        sim.apply(&plan);
        assert_eq!(sim.read_disk("f.txt").unwrap(), merged);
    }

    #[test]
    fn merge_keeps_head_mode_and_undoes_the_changes_mode_change() {
        let mut sim = Sim::new();
        sim.change(&[
            ("a", Some((BASE.as_bytes(), R))),
            ("b", Some((BASE.as_bytes(), R))),
        ]);
        // `c` edits both; on `b` it also makes it executable.
        let c = sim.change(&[
            ("a", Some((BASE.replace("l1", "C1").as_bytes(), R))),
            ("b", Some((BASE.replace("l1", "C1").as_bytes(), X))),
        ]);
        // A later change makes `a` executable and edits both far away.
        sim.change(&[
            (
                "a",
                Some((BASE.replace("l1", "C1").replace("l9", "L9").as_bytes(), X)),
            ),
            (
                "b",
                Some((BASE.replace("l1", "C1").replace("l9", "L9").as_bytes(), X)),
            ),
        ]);
        let plan = sim.plan(&c).unwrap();
        let modes: Vec<Mode> = plan.actions.iter().map(|a| a.after.unwrap().mode).collect();
        assert_eq!(
            modes,
            [X, R],
            "a keeps the later mode, b loses c's mode change"
        );
    }

    #[test]
    fn a_mode_only_change_reverts_under_later_content_edits() {
        let mut sim = Sim::new();
        sim.change(&[("s", Some((b"\0binary", R)))]);
        let c = sim.change(&[("s", Some((b"\0binary", X)))]);
        sim.change(&[("s", Some((b"\0binary v2", X)))]);
        let plan = sim.plan(&c).unwrap();
        assert_eq!(plan.actions[0].kind, ActionKind::SetMode { mode: R });
        assert_eq!(plan.actions[0].after, Some(content(b"\0binary v2", R)));
    }

    #[test]
    fn content_reverts_when_only_the_mode_changed_later() {
        let mut sim = Sim::new();
        sim.change(&[("s", Some((b"\0old", R)))]);
        let c = sim.change(&[("s", Some((b"\0new", R)))]);
        sim.change(&[("s", Some((b"\0new", X)))]);
        let plan = sim.plan(&c).unwrap();
        assert_eq!(
            plan.actions[0].kind,
            ActionKind::Write {
                payload: Payload::Stored {
                    hash: Hash::of_content(b"\0old")
                },
                mode: X
            }
        );
    }

    #[test]
    fn edits_already_undone_by_hand_plan_nothing() {
        let mut sim = Sim::new();
        sim.change(&[("f", Some((BASE.as_bytes(), R)))]);
        let c = sim.change(&[("f", Some((BASE.replace("l5", "C5").as_bytes(), R)))]);
        sim.change(&[("f", Some((BASE.as_bytes(), R)))]);
        assert!(sim.plan(&c).unwrap().is_empty());
    }

    #[test]
    fn overlapping_edits_conflict_naming_the_later_changes() {
        let mut sim = Sim::new();
        sim.change(&[
            ("f.txt", Some((BASE.as_bytes(), R))),
            ("g", Some((b"g1", R))),
        ]);
        let c = sim.change(&[
            ("f.txt", Some((BASE.replace("l4", "C4").as_bytes(), R))),
            ("g", Some((b"g2", R))),
        ]);
        let l1 = sim.change(&[("f.txt", Some((BASE.replace("l4", "L4").as_bytes(), R)))]);
        let _other = sim.change(&[("unrelated", Some((b"x", R)))]);
        let l2 = sim.change(&[(
            "f.txt",
            Some((BASE.replace("l4", "L4").replace("l1", "M1").as_bytes(), R)),
        )]);
        let before = sim.disk_files();
        let conflict = only_conflict(sim.plan(&c));
        assert_eq!(conflict.key, key("f.txt"));
        assert_eq!(conflict.reason, ConflictReason::Overlap);
        assert_eq!(conflict.later_changes, vec![l1.clone(), l2.clone()]);
        let err = sim.plan(&c).unwrap_err().to_string();
        assert!(err.contains(&format!("cannot revert change {c}")), "{err}");
        assert!(err.contains("file:f.txt"), "{err}");
        assert!(err.contains(&l1) && err.contains(&l2), "{err}");
        // All or nothing: `g` could be restored, yet nothing is planned.
        assert_eq!(sim.disk_files(), before);
    }

    #[test]
    fn binary_files_changed_later_conflict() {
        let mut sim = Sim::new();
        sim.change(&[("img", Some((b"\x89PNG\0\x01\n\x02\n", R)))]);
        let c = sim.change(&[("img", Some((b"\x89PNG\0\x09\n\x02\n", R)))]);
        let l = sim.change(&[("img", Some((b"\x89PNG\0\x09\n\x03\n", R)))]);
        let conflict = only_conflict(sim.plan(&c));
        assert_eq!(conflict.reason, ConflictReason::Binary);
        assert_eq!(conflict.later_changes, vec![l]);
        // Invalid UTF-8 counts as binary too.
        let mut sim = Sim::new();
        sim.change(&[("t", Some((b"a\n\xff\n", R)))]);
        let c = sim.change(&[("t", Some((b"b\n\xff\n", R)))]);
        sim.change(&[("t", Some((b"b\n\xfe\n", R)))]);
        assert_eq!(only_conflict(sim.plan(&c)).reason, ConflictReason::Binary);
    }

    #[test]
    fn symlinks_changed_later_conflict() {
        let mut sim = Sim::new();
        sim.change(&[("l", Some((b"a", L)))]);
        let c = sim.change(&[("l", Some((b"b", L)))]);
        sim.change(&[("l", Some((b"c", L)))]);
        assert_eq!(only_conflict(sim.plan(&c)).reason, ConflictReason::Symlink);
        // A file the change turned into a symlink, later retargeted.
        let mut sim = Sim::new();
        sim.change(&[("l", Some((b"text\n", R)))]);
        let c = sim.change(&[("l", Some((b"b", L)))]);
        sim.change(&[("l", Some((b"c", L)))]);
        assert_eq!(only_conflict(sim.plan(&c)).reason, ConflictReason::Symlink);
    }

    #[test]
    fn deleted_recreated_and_modified_after_create_conflict() {
        let mut sim = Sim::new();
        sim.change(&[("del", Some((b"1\n", R))), ("rec", Some((b"1\n", R)))]);
        let c = sim.change(&[
            ("del", Some((b"2\n", R))),
            ("rec", None),
            ("created", Some((b"new\n", R))),
        ]);
        let l1 = sim.change(&[("del", None), ("rec", Some((b"again\n", R)))]);
        let l2 = sim.change(&[("created", Some((b"new\nmore\n", R)))]);
        let cs = conflicts(sim.plan(&c));
        let got: Vec<(String, ConflictReason, Vec<String>)> = cs
            .into_iter()
            .map(|c| (c.key.display(), c.reason, c.later_changes))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "file:created".into(),
                    ConflictReason::ModifiedAfterCreate,
                    vec![l2]
                ),
                (
                    "file:del".into(),
                    ConflictReason::DeletedLater,
                    vec![l1.clone()]
                ),
                ("file:rec".into(), ConflictReason::RecreatedLater, vec![l1]),
            ]
        );
    }
}

mod refusals {
    use super::*;

    #[test]
    fn unrecorded_edits_on_disk_conflict() {
        let mut sim = Sim::new();
        sim.change(&[("a", Some((b"1", R))), ("b", Some((b"1", R)))]);
        let c = sim.change(&[
            ("a", Some((b"2", R))),
            ("b", Some((b"2", R))),
            ("c", Some((b"2", R))),
        ]);
        sim.disk
            .insert(b"a".to_vec(), (b"edited by hand".to_vec(), R));
        sim.disk.get_mut(b"b".as_slice()).unwrap().1 = X;
        sim.disk.remove(b"c".as_slice());
        let cs = conflicts(sim.plan(&c));
        assert_eq!(cs.len(), 3);
        assert_eq!(
            cs[0].reason,
            ConflictReason::Unrecorded {
                recorded: Some(content(b"2", R)),
                on_disk: Some(content(b"edited by hand", R))
            }
        );
        assert!(matches!(
            cs[1].reason,
            ConflictReason::Unrecorded {
                on_disk: Some(Content { mode: X, .. }),
                ..
            }
        ));
        assert_eq!(
            cs[2].reason,
            ConflictReason::Unrecorded {
                recorded: Some(content(b"2", R)),
                on_disk: None
            }
        );
        let msg = sim.plan(&c).unwrap_err().to_string();
        assert!(
            msg.contains("3 conflicts") && msg.contains("file:a: changed outside the ledger"),
            "{msg}"
        );
        assert!(msg.contains("on disk: absent"), "{msg}");
    }

    #[test]
    fn a_file_created_by_hand_where_a_deleted_one_would_return_conflicts() {
        let mut sim = Sim::new();
        sim.change(&[("f", Some((b"1", R)))]);
        let c = sim.change(&[("f", None)]);
        sim.disk.insert(b"f".to_vec(), (b"mine".to_vec(), R));
        let conflict = only_conflict(sim.plan(&c));
        assert_eq!(
            conflict.reason,
            ConflictReason::Unrecorded {
                recorded: None,
                on_disk: Some(content(b"mine", R))
            }
        );
    }

    #[test]
    fn already_reverted_is_refused_naming_the_revert() {
        let mut sim = Sim::new();
        let c = sim.change(&[("f", Some((b"1", R)))]);
        let r = sim.revert(&c).unwrap();
        match sim.plan(&c) {
            Err(Error::AlreadyReverted {
                change_id,
                reverted_by,
            }) => {
                assert_eq!(change_id, c);
                assert_eq!(reverted_by, r);
            }
            other => panic!("{other:?}"),
        }
        let msg = sim.plan(&c).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("change {c} was already reverted by change {r}")
        );
        // The revert itself can be reverted, and then the original again.
        sim.revert(&r).unwrap();
        assert_eq!(sim.read_disk("f").as_deref(), Some("1"));
        sim.revert(&c).unwrap();
        assert_eq!(sim.read_disk("f"), None);
    }

    #[test]
    fn non_change_events_are_refused() {
        let mut sim = Sim::new();
        let c = sim.change(&[("f", Some((b"1", R)))]);
        let check = sim.push(
            &c,
            "ci",
            Body::Check(Check {
                name: "t".into(),
                level: "info".into(),
                passed: true,
                detail: None,
            }),
        );
        let later = replay::later_changes_from_events(&sim.events, 0);
        for (seq, kind) in [(0, "genesis"), (check, "check")] {
            let ev = &sim.events[seq as usize];
            let err = plan_revert(
                ev,
                &sim.proj.changes,
                &sim.proj.tree,
                &BTreeMap::new(),
                |k| later.get(k),
                &sim.store,
            )
            .unwrap_err();
            assert!(
                matches!(err, Error::NotAChange { seq: s, kind: k } if s == seq && k == kind),
                "{err}"
            );
        }
    }

    #[test]
    fn redacted_and_missing_content_is_reported() {
        let mut sim = Sim::new();
        sim.change(&[
            ("secret.env", Some((b"TOKEN=abc\n", R))),
            ("gone", Some((b"g1", R))),
        ]);
        let c = sim.change(&[
            ("secret.env", Some((b"TOKEN=***\n", R))),
            ("gone", Some((b"g2", R))),
        ]);
        let h = Hash::of_content(b"TOKEN=abc\n");
        sim.store
            .redacted
            .insert(h, ("leaked credential".into(), 1_700_000_000_000_000, 42));
        sim.store.blobs.remove(&Hash::of_content(b"g1"));
        let cs = conflicts(sim.plan(&c));
        assert_eq!(
            cs[0].reason,
            ConflictReason::ContentUnavailable {
                error: ContentError::Missing {
                    hash: Hash::of_content(b"g1")
                }
            }
        );
        assert_eq!(
            cs[1].reason,
            ConflictReason::ContentUnavailable {
                error: ContentError::Redacted {
                    hash: h,
                    reason: "leaked credential".into(),
                    time_us: 1_700_000_000_000_000,
                    seq: 42
                }
            }
        );
        let msg = sim.plan(&c).unwrap_err().to_string();
        assert!(msg.contains(&format!("file:secret.env: content {h} was redacted by the event at seq 42: leaked credential")), "{msg}");
    }

    #[test]
    fn redacted_content_needed_for_a_merge_is_reported() {
        let mut sim = Sim::new();
        sim.change(&[("f", Some((b"a\nb\nc\nd\ne\n", R)))]);
        let c = sim.change(&[("f", Some((b"A\nb\nc\nd\ne\n", R)))]);
        sim.change(&[("f", Some((b"A\nb\nc\nd\nE\n", R)))]);
        sim.store
            .redacted
            .insert(Hash::of_content(b"A\nb\nc\nd\ne\n"), ("pii".into(), 0, 7));
        let conflict = only_conflict(sim.plan(&c));
        assert!(matches!(
            conflict.reason,
            ConflictReason::ContentUnavailable {
                error: ContentError::Redacted { seq: 7, .. }
            }
        ));
    }

    #[test]
    fn other_namespaces_are_not_revertable() {
        let mut sim = Sim::new();
        let flag = ResourceKey {
            namespace: "flag".into(),
            name: "checkout-v2".into(),
        };
        sim.change(&[("f", Some((b"1", R)))]);
        let old_f = content(b"1", R);
        sim.store
            .blobs
            .insert(Hash::of_content(b"2"), b"2".to_vec());
        sim.push(
            "mixed",
            "agent-1",
            Body::Change(Change {
                message: None,
                reverts: None,
                resources: vec![
                    ResourceChange {
                        key: key("f"),
                        op: Op::Modify,
                        old: Some(old_f),
                        new: Some(content(b"2", R)),
                    },
                    ResourceChange {
                        key: flag.clone(),
                        op: Op::Create,
                        old: None,
                        new: Some(content(b"on", R)),
                    },
                ],
            }),
        );
        sim.disk.insert(b"f".to_vec(), (b"2".to_vec(), R));
        let conflict = only_conflict(sim.plan("mixed"));
        assert_eq!(conflict.key, flag);
        assert_eq!(conflict.reason, ConflictReason::NotRevertable);
    }

    #[test]
    fn unsafe_names_are_refused() {
        let mut sim = Sim::new();
        for (i, name) in ["../escape", "/etc/passwd", "a/./b", ".ledger/journal"]
            .iter()
            .enumerate()
        {
            let id = format!("evil-{i}");
            sim.push(
                &id,
                "agent-x",
                Body::Change(Change {
                    message: None,
                    reverts: None,
                    resources: vec![ResourceChange {
                        key: key(name),
                        op: Op::Create,
                        old: None,
                        new: Some(content(b"x", R)),
                    }],
                }),
            );
            let conflict = only_conflict(sim.plan(&id));
            assert!(
                matches!(conflict.reason, ConflictReason::UnsafePath { .. }),
                "{name}: {conflict}"
            );
        }
        let conflict = only_conflict(sim.plan("evil-0"));
        assert_eq!(
            conflict.reason,
            ConflictReason::UnsafePath {
                error: UnsafePath::ParentDir
            }
        );
    }

    #[test]
    fn file_and_directory_collisions_conflict() {
        // The change deleted file `a`; a later change created `a/x`: `a` cannot return.
        let mut sim = Sim::new();
        sim.change(&[("a", Some((b"file", R)))]);
        let c = sim.change(&[("a", None)]);
        let l = sim.change(&[("a/x", Some((b"inside", R)))]);
        let conflict = only_conflict(sim.plan(&c));
        assert_eq!(conflict.key, key("a"));
        assert_eq!(
            conflict.reason,
            ConflictReason::PathObstructed { by: key("a/x") }
        );
        assert!(
            conflict.later_changes.is_empty(),
            "{:?} touched a/x, not a",
            l
        );

        // The change deleted `d/f`; a later change created a file `d`.
        let mut sim = Sim::new();
        sim.change(&[("d/f", Some((b"1", R)))]);
        let c = sim.change(&[("d/f", None)]);
        sim.change(&[("d", Some((b"now a file", R)))]);
        assert_eq!(
            only_conflict(sim.plan(&c)).reason,
            ConflictReason::PathObstructed { by: key("d") }
        );
    }

    #[test]
    fn a_change_that_swapped_a_directory_for_a_file_reverts_cleanly() {
        // Deleting `a` and recreating `a/x` in one plan is fine: deletes come first.
        let mut sim = Sim::new();
        sim.change(&[("a/x", Some((b"x", R))), ("a/y", Some((b"y", R)))]);
        let c = sim.change(&[("a/x", None), ("a/y", None), ("a", Some((b"file", R)))]);
        let plan = assert_reverts_to_before(&mut sim, &c);
        assert_eq!(plan.actions[0].kind, ActionKind::Delete);
        assert_eq!(plan.actions[0].key, key("a"));
    }

    #[test]
    fn inconsistent_inputs_are_errors() {
        let mut sim = Sim::new();
        let c = sim.change(&[("f", Some((b"1", R)))]);
        let ev = sim.change_event(&c).clone();
        let later = |_: &ResourceKey| Vec::new();
        // No disk state for a touched file.
        let err = plan_revert(
            &ev,
            &sim.proj.changes,
            &sim.proj.tree,
            &BTreeMap::new(),
            later,
            &sim.store,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingDiskState { key: k } if *k == key("f")),
            "{err}"
        );
        // A head tree from before the change.
        let old_tree = common::tree(&sim, 0);
        let err = plan_revert(
            &ev,
            &sim.proj.changes,
            &old_tree,
            &sim.scan(&ev),
            later,
            &sim.store,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::HeadBehind {
                    head: Some(0),
                    change_seq: 1
                }
            ),
            "{err}"
        );
        // A change projection that never saw the change.
        let err = plan_revert(
            &ev,
            &replay::Changes::new(),
            &sim.proj.tree,
            &sim.scan(&ev),
            later,
            &sim.store,
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnknownChange { .. }), "{err}");
    }

    #[test]
    fn every_conflict_is_listed_at_once() {
        let mut sim = Sim::new();
        sim.change(&[
            ("a", Some((b"1", R))),
            ("b", Some((b"\0", R))),
            ("c", Some((b"1", R))),
        ]);
        let c = sim.change(&[
            ("a", Some((b"2", R))),
            ("b", Some((b"\0\0", R))),
            ("c", Some((b"2", R))),
            ("ok", Some((b"1", R))),
        ]);
        sim.change(&[("b", Some((b"\0\0\0", R))), ("c", None)]);
        sim.disk.insert(b"a".to_vec(), (b"hand".to_vec(), R));
        let cs = conflicts(sim.plan(&c));
        let reasons: Vec<(String, &ConflictReason)> =
            cs.iter().map(|c| (c.key.display(), &c.reason)).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(matches!(reasons[0].1, ConflictReason::Unrecorded { .. }));
        assert_eq!(reasons[1].1, &ConflictReason::Binary);
        assert_eq!(reasons[2].1, &ConflictReason::DeletedLater);
    }
}
