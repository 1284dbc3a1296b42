//! Folds, replay to a point, tree diffs and snapshots.

mod common;

use std::collections::BTreeMap;

use common::{content, key, Rng, Sim};
use ledger::{
    Actor, Approval, Body, Change, Check, Content, Deployment, Event, Failure, Hash, KillSwitch,
    Mode, NewEvent, Op, ResourceChange, ResourceKey,
};
use replay::{
    diff, state_at, Agents, Changes, DiffKind, Error, Projection, Projections, Tree,
    SNAPSHOT_VERSION,
};

const R: Mode = Mode::Regular;
const X: Mode = Mode::Executable;

/// A ledger with a few changes and lifecycle events by two agents.
fn history() -> (Sim, [String; 3]) {
    let mut sim = Sim::new();
    let a = sim.change(&[
        ("a.txt", Some((b"one\n", R))),
        ("bin/run", Some((b"#!/bin/sh\n", X))),
    ]);
    sim.push(
        &a,
        "ci",
        Body::Check(Check {
            name: "lint".into(),
            level: "blocking".into(),
            passed: true,
            detail: None,
        }),
    );
    sim.push(
        &a,
        "alice",
        Body::Approval(Approval {
            approver: "alice".into(),
            approved: true,
            comment: Some("ok".into()),
        }),
    );
    let b = sim.change(&[("a.txt", Some((b"two\n", R))), ("bin/run", None)]);
    sim.push(
        &b,
        "deployer",
        Body::Deployment(Deployment {
            environment: "prod".into(),
            percent: 10,
            version: "v2".into(),
        }),
    );
    sim.push(
        &b,
        "deployer",
        Body::Failure(Failure {
            stage: "deploy".into(),
            error: "timeout".into(),
            exit_code: Some(1),
        }),
    );
    sim.push(
        "ks-1",
        "ops",
        Body::KillSwitch(KillSwitch {
            engaged: true,
            scope: "*".into(),
            reason: "incident".into(),
        }),
    );
    let c = sim.change(&[("link", Some((b"a.txt", Mode::Symlink)))]);
    (sim, [a, b, c])
}

#[test]
fn tree_folds_creates_modifies_and_deletes() {
    let (sim, [a, b, c]) = history();
    let tree = &sim.proj.tree;
    assert_eq!(tree.seq(), Some(sim.head_seq()));
    assert_eq!(tree.len(), 2);
    let e = tree.get(&key("a.txt")).unwrap();
    assert_eq!(e.content, content(b"two\n", R));
    assert_eq!(e.change_id, b);
    assert_eq!(e.seq, sim.change_event(&b).seq);
    assert!(tree.get(&key("bin/run")).is_none(), "deleted by {b}");
    assert_eq!(tree.get(&key("link")).unwrap().content.mode, Mode::Symlink);
    assert_eq!(tree.get(&key("link")).unwrap().change_id, c);
    assert_eq!(
        tree.content(&key("link")),
        Some(content(b"a.txt", Mode::Symlink))
    );

    let at_a = state_at(&sim.events, sim.change_event(&a).seq).unwrap();
    assert_eq!(at_a.seq(), Some(sim.change_event(&a).seq));
    assert_eq!(at_a.content(&key("a.txt")), Some(content(b"one\n", R)));
    assert_eq!(
        at_a.content(&key("bin/run")),
        Some(content(b"#!/bin/sh\n", X))
    );
    let genesis_only = state_at(&sim.events, 0).unwrap();
    assert!(genesis_only.is_empty());
    assert_eq!(genesis_only.seq(), Some(0));
    // Past the end: everything.
    assert_eq!(state_at(&sim.events, u64::MAX).unwrap(), sim.proj.tree);
}

#[test]
fn tree_prefix_queries_and_namespaces() {
    let mut sim = Sim::new();
    sim.change(&[
        ("src/a.rs", Some((b"a", R))),
        ("src/b/c.rs", Some((b"c", R))),
        ("src.rs", Some((b"s", R))),
        ("srd", Some((b"d", R))),
    ]);
    let flag = ResourceKey {
        namespace: "flag".into(),
        name: "checkout-v2".into(),
    };
    sim.push(
        "flag-1",
        "agent-2",
        Body::Change(Change {
            message: None,
            reverts: None,
            resources: vec![ResourceChange {
                key: flag.clone(),
                op: Op::Create,
                old: None,
                new: Some(content(b"on", R)),
            }],
        }),
    );
    let tree = &sim.proj.tree;
    let names =
        |it: Vec<(&ResourceKey, _)>| it.into_iter().map(|(k, _)| k.display()).collect::<Vec<_>>();
    assert_eq!(
        names(tree.with_prefix("file", b"src/").collect()),
        ["file:src/a.rs", "file:src/b/c.rs"]
    );
    assert_eq!(
        names(tree.with_prefix("file", b"src").collect()),
        ["file:src.rs", "file:src/a.rs", "file:src/b/c.rs"]
    );
    assert_eq!(tree.files().count(), 4);
    assert_eq!(
        names(tree.with_prefix("flag", b"").collect()),
        ["flag:checkout-v2"]
    );
    assert_eq!(tree.len(), 5);
}

#[test]
fn changes_fold_the_lifecycle() {
    let (sim, [a, b, c]) = history();
    let changes = &sim.proj.changes;
    assert_eq!(
        changes.len(),
        3,
        "the kill switch is not a change: {:?}",
        changes.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let ia = changes.get(&a).unwrap();
    assert_eq!(ia.change_seq, Some(1));
    assert_eq!((ia.first_seq, ia.last_seq), (1, 3));
    assert_eq!(ia.actor.agent, "agent-1");
    assert_eq!(ia.time_us, sim.events[1].time_us);
    assert_eq!(ia.message.as_deref(), Some(format!("change {a}").as_str()));
    assert_eq!(ia.resources, vec![key("a.txt"), key("bin/run")]);
    assert_eq!(ia.checks.len(), 1);
    assert!(ia.checks[0].value.passed);
    assert_eq!(ia.checks[0].actor.agent, "ci");
    assert_eq!(ia.checks[0].seq, 2);
    assert_eq!(ia.approvals[0].value.approver, "alice");
    assert!(ia.deployments.is_empty());
    assert!(!ia.failed());
    assert!(!ia.is_reverted());

    let ib = changes.get(&b).unwrap();
    assert_eq!((ib.first_seq, ib.last_seq), (4, 6));
    assert_eq!(ib.deployments[0].value.environment, "prod");
    assert_eq!(ib.deployments[0].value.percent, 10);
    assert!(ib.failed());
    assert_eq!(ib.failures[0].value.stage, "deploy");
    assert_eq!(ib.reverts, None);
    assert_eq!(changes.get(&c).unwrap().resources, vec![key("link")]);
    assert!(changes.get("ks-1").is_none());
}

#[test]
fn lifecycle_events_before_the_change_event() {
    // A command that failed before it changed anything: only a failure carries the ID.
    let mut sim = Sim::new();
    sim.push(
        "ch-x",
        "runner",
        Body::Failure(Failure {
            stage: "exec".into(),
            error: "exit 2".into(),
            exit_code: Some(2),
        }),
    );
    let info = sim.proj.changes.get("ch-x").unwrap();
    assert_eq!(info.change_seq, None);
    assert_eq!(info.actor.agent, "runner");
    assert!(info.failed());
    sim.push("ch-x", "agent-9", Body::Change(Change::default()));
    let info = sim.proj.changes.get("ch-x").unwrap();
    assert_eq!(info.change_seq, Some(2));
    assert_eq!(info.actor.agent, "agent-9", "the change event's actor wins");
    assert_eq!((info.first_seq, info.last_seq), (1, 2));
}

#[test]
fn reverted_by_follows_chains_of_reverts() {
    let mut sim = Sim::new();
    let c = sim.change(&[("f", Some((b"1\n", R)))]);
    let r1 = sim.revert(&c).unwrap();
    let get = |sim: &Sim, id: &str| sim.proj.changes.get(id).unwrap().clone();
    assert_eq!(get(&sim, &c).reverted_by.as_deref(), Some(r1.as_str()));
    assert_eq!(get(&sim, &r1).reverts.as_deref(), Some(c.as_str()));
    // Reverting the revert puts `c` back in force.
    let r2 = sim.revert(&r1).unwrap();
    assert_eq!(get(&sim, &c).reverted_by, None);
    assert_eq!(get(&sim, &r1).reverted_by.as_deref(), Some(r2.as_str()));
    // And reverting that undoes `c` again, through r1.
    let r3 = sim.revert(&r2).unwrap();
    assert_eq!(get(&sim, &r2).reverted_by.as_deref(), Some(r3.as_str()));
    assert_eq!(get(&sim, &r1).reverted_by, None);
    assert_eq!(get(&sim, &c).reverted_by.as_deref(), Some(r1.as_str()));
    assert!(sim.disk.is_empty());
}

/// Regression: reverting the second of two reverts of one change brought the change
/// back in force although the first revert (put back in force meanwhile) still undid it.
#[test]
fn change_stays_undone_while_any_revert_of_it_is_in_force() {
    let mut sim = Sim::new();
    let revert_of = |target: &str| {
        Body::Change(ledger::Change {
            message: None,
            reverts: Some(target.to_string()),
            resources: vec![],
        })
    };
    let plain = Body::Change(ledger::Change::default());
    sim.push("c", "a", plain);
    sim.push("r1", "a", revert_of("c")); // c undone by r1
    sim.push("r2", "a", revert_of("r1")); // r1 undone: c back in force
    sim.push("r3", "a", revert_of("c")); // c undone by r3
    sim.push("r4", "a", revert_of("r2")); // r2 undone: r1 in force again, c undone by r1 and r3
    sim.push("r5", "a", revert_of("r3")); // r3 undone: c still undone by r1
    let get = |id: &str| sim.proj.changes.get(id).unwrap().clone();
    assert_eq!(get("c").reverted_by.as_deref(), Some("r1"));
    assert_eq!(get("c").reverters, vec!["r1".to_string(), "r3".to_string()]);
    assert_eq!(get("r1").reverted_by, None);
    assert_eq!(get("r2").reverted_by.as_deref(), Some("r4"));
    assert_eq!(get("r3").reverted_by.as_deref(), Some("r5"));
}

#[test]
fn agents_count_events_and_changes() {
    let (sim, _) = history();
    let agents = &sim.proj.agents;
    let a1 = agents.get("agent-1").unwrap();
    assert_eq!((a1.events, a1.changes), (3, 3));
    assert_eq!((a1.first_seq, a1.last_seq), (1, sim.head_seq()));
    assert_eq!(a1.first_time_us, sim.events[1].time_us);
    assert_eq!(a1.last_time_us, sim.events.last().unwrap().time_us);
    let d = agents.get("deployer").unwrap();
    assert_eq!((d.events, d.changes), (2, 0));
    assert_eq!(agents.get("ops").unwrap().events, 1);
    assert_eq!(
        agents.get("ledger").unwrap().events,
        1,
        "genesis counts too"
    );
    assert_eq!(agents.len(), 6);
    assert_eq!(sim.proj.agent("ci").unwrap().events, 1);
}

#[test]
fn out_of_order_events_are_rejected_and_change_nothing() {
    let (sim, _) = history();
    let mut p = Projections::replay(&sim.events, 3).unwrap();
    let before = p.clone();
    for seq in [0, 2, 3] {
        let err = p.apply(&sim.events[seq]).unwrap_err();
        assert!(
            matches!(err, Error::OutOfOrder { last: 3, got } if got == seq as u64),
            "{err}"
        );
        assert_eq!(p, before);
    }
    let mut t = Tree::new();
    t.apply(&sim.events[2]).unwrap();
    assert!(t.apply(&sim.events[2]).is_err());
    // Catching up skips what was seen and stops at the bound.
    p.apply_until(&sim.events, 5).unwrap();
    assert_eq!(p, Projections::replay(&sim.events, 5).unwrap());
    p.apply_until(&sim.events, u64::MAX).unwrap();
    assert_eq!(p, sim.proj);
    // Unsorted input is an error, not silently skipped.
    let shuffled = [
        &sim.events[0],
        &sim.events[1],
        &sim.events[3],
        &sim.events[2],
    ];
    let err = state_at(shuffled, u64::MAX).unwrap_err();
    assert!(
        matches!(err, Error::OutOfOrder { last: 3, got: 2 }),
        "{err}"
    );
}

#[test]
fn tree_diff_lists_every_kind_sorted() {
    let mut sim = Sim::new();
    sim.change(&[
        ("keep", Some((b"k", R))),
        ("mod", Some((b"m1", R))),
        ("gone", Some((b"g", R))),
        ("chmod", Some((b"c", R))),
        ("both", Some((b"b1", R))),
        ("same", Some((b"s", R))),
    ]);
    let a = sim.proj.tree.clone();
    sim.change(&[
        ("mod", Some((b"m2", R))),
        ("gone", None),
        ("chmod", Some((b"c", X))),
        ("both", Some((b"b2", X))),
        ("new", Some((b"n", R))),
        ("same", Some((b"s", R))), // rewritten with equal bytes: not a difference
    ]);
    let b = sim.proj.tree.clone();
    let d = diff(&a, &b);
    let got: Vec<(String, DiffKind)> = d.iter().map(|d| (d.key.display(), d.kind)).collect();
    assert_eq!(
        got,
        [
            ("file:both".to_string(), DiffKind::Modified),
            ("file:chmod".to_string(), DiffKind::ModeChanged),
            ("file:gone".to_string(), DiffKind::Removed),
            ("file:mod".to_string(), DiffKind::Modified),
            ("file:new".to_string(), DiffKind::Added),
        ]
    );
    assert_eq!(d[2].old.as_ref().unwrap().content, content(b"g", R));
    assert!(d[2].new.is_none());
    assert!(d[4].old.is_none());
    assert_eq!(d[3].new.as_ref().unwrap().content, content(b"m2", R));
    assert!(diff(&b, &b).is_empty());
    let back: Vec<DiffKind> = diff(&b, &a).iter().map(|d| d.kind).collect();
    assert_eq!(
        back,
        [
            DiffKind::Modified,
            DiffKind::ModeChanged,
            DiffKind::Added,
            DiffKind::Modified,
            DiffKind::Removed
        ]
    );
}

#[test]
fn snapshots_roundtrip_to_the_fold() {
    let (sim, _) = history();
    for cut in 0..=sim.head_seq() {
        let p = Projections::replay(&sim.events, cut).unwrap();
        let bytes = p.to_snapshot_bytes();
        let mut back = Projections::from_snapshot_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        // A snapshot caught up with the rest of the journal equals the full fold.
        back.apply_until(&sim.events, u64::MAX).unwrap();
        assert_eq!(back, sim.proj);

        let t = Tree::from_snapshot_bytes(&p.tree.to_snapshot_bytes()).unwrap();
        assert_eq!(t, p.tree);
        let c = Changes::from_snapshot_bytes(&p.changes.to_snapshot_bytes()).unwrap();
        assert_eq!(c, p.changes);
        let a = Agents::from_snapshot_bytes(&p.agents.to_snapshot_bytes()).unwrap();
        assert_eq!(a, p.agents);
    }
    let empty = Projections::new();
    assert_eq!(
        Projections::from_snapshot_bytes(&empty.to_snapshot_bytes()).unwrap(),
        empty
    );
}

#[test]
fn snapshot_decoding_rejects_garbage_without_panicking() {
    let (sim, _) = history();
    let good = sim.proj.to_snapshot_bytes();
    // Every truncation.
    for cut in 0..good.len() {
        assert!(
            Projections::from_snapshot_bytes(&good[..cut]).is_err(),
            "prefix {cut}"
        );
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.push(0);
    let err = Projections::from_snapshot_bytes(&long).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
    // Another projection's snapshot.
    let err = Tree::from_snapshot_bytes(&sim.proj.changes.to_snapshot_bytes()).unwrap_err();
    assert!(err.to_string().contains("\"changes\""), "{err}");
    // Another format version: the header is magic (8), version (4), kind.
    let mut old = good.clone();
    old[8..12].copy_from_slice(&(SNAPSHOT_VERSION + 1).to_le_bytes());
    assert!(Projections::from_snapshot_bytes(&old)
        .unwrap_err()
        .to_string()
        .contains("version"));
    // Random bytes, and random bytes behind a valid header.
    let header_len = 8 + 4 + 8 + "projections".len();
    let mut rng = Rng(0x5eed);
    for round in 0..2000 {
        let len = rng.below(300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 2 == 0 {
            junk.splice(0..0, good[..header_len].iter().copied());
        }
        let _ = Projections::from_snapshot_bytes(&junk);
        let _ = Tree::from_snapshot_bytes(&junk);
    }
    // Flipped bytes in a valid snapshot either fail or decode to something; never panic.
    for i in 0..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0xff;
        let _ = Projections::from_snapshot_bytes(&flipped);
    }
    // A tree's header followed by an enormous entry count, or an entry whose name claims
    // an enormous length (a varint: seven bits a byte).
    for len in [u64::MAX, 1 << 40, 1 << 31] {
        let mut huge = Tree::new().to_snapshot_bytes();
        let body_at = huge.len() - 9; // no entries (8) + no seq (1)
        huge.truncate(body_at);
        let mut count = huge.clone();
        count.extend_from_slice(&len.to_le_bytes());
        count.extend_from_slice(&[0; 64]);
        assert!(Tree::from_snapshot_bytes(&count).is_err());
        huge.extend_from_slice(&1u64.to_le_bytes()); // one entry
        huge.extend_from_slice(&[5, b'f', b'i', b'l', b'e', 0]); // file:, nothing shared
        let mut n = len;
        while n >= 0x80 {
            huge.push(n as u8 | 0x80);
            n >>= 7;
        }
        huge.push(n as u8); // the name's length
        huge.extend_from_slice(&[0; 64]);
        let err = Tree::from_snapshot_bytes(&huge).unwrap_err().to_string();
        assert!(err.contains("the name"), "{err}");
    }
}

#[test]
fn large_tree_folds_diffs_and_snapshots() {
    // 100,000 files in 100 changes of 1,000 files, then one change touching 1,000.
    let mut events = Vec::new();
    let mk = |seq: u64, id: String, resources: Vec<ResourceChange>| -> Event {
        NewEvent {
            time_us: seq as i64,
            actor: Actor {
                agent: "bulk".into(),
                principal: None,
                role: None,
            },
            change_id: id,
            correlation_id: None,
            body: Body::Change(Change {
                message: None,
                reverts: None,
                resources,
            }),
            meta: BTreeMap::new(),
        }
        .seal(seq, Hash::ZERO)
    };
    let c = |i: u64| Content {
        hash: Hash::of_content(&i.to_le_bytes()),
        mode: R,
        size: 8,
    };
    for batch in 0..100u64 {
        let resources = (0..1000u64)
            .map(|i| {
                let n = batch * 1000 + i;
                ResourceChange {
                    key: key(&format!("dir{:02}/sub/file-{n:06}.txt", n % 97)),
                    op: Op::Create,
                    old: None,
                    new: Some(c(n)),
                }
            })
            .collect::<Vec<_>>();
        events.push(mk(batch, format!("bulk-{batch}"), resources));
    }
    let mut tree = Tree::new();
    tree.apply_until(&events, u64::MAX).unwrap();
    assert_eq!(tree.len(), 100_000);
    let before = tree.clone();
    let touched: Vec<ResourceChange> = (0..1000u64)
        .map(|i| {
            let n = i * 100;
            ResourceChange {
                key: key(&format!("dir{:02}/sub/file-{n:06}.txt", n % 97)),
                op: Op::Modify,
                old: Some(c(n)),
                new: Some(c(n + 1)),
            }
        })
        .collect();
    tree.apply(&mk(100, "edit".into(), touched)).unwrap();
    let d = diff(&before, &tree);
    assert_eq!(d.len(), 1000);
    assert!(d.iter().all(|d| d.kind == DiffKind::Modified));
    assert!(d.windows(2).all(|w| w[0].key < w[1].key));
    let bytes = tree.to_snapshot_bytes();
    assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
    assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), tree);
    // In a `Projections` snapshot (`bincode`), big enough to need a larger decode limit
    // than the smallest.
    let p = Projections {
        tree,
        ..Projections::new()
    };
    let bytes = p.to_snapshot_bytes();
    assert!(
        bytes.len() > 1 << 20,
        "big enough to need a larger decode limit: {}",
        bytes.len()
    );
    assert_eq!(Projections::from_snapshot_bytes(&bytes).unwrap(), p);
}
