//! The recorded tree at any seq: the nearest projection snapshot in the index database
//! plus the events after it.
//!
//! Two kinds of snapshot are kept: `tree-head`, the newest (replaced as the head moves,
//! so loading the head folds at most [`HEAD_EVERY`] events), and `tree`, kept for good
//! every [`keep_interval`] events: [`KEEP_EVERY`], or the number of resources in the
//! tree when that is larger, so the state at any past point costs at most that many
//! events, and kept snapshots (each the size of the tree) add at most about one tree
//! entry per event to the index, however large the workspace. Both are derived: one
//! that does not decode is removed when a load reaches it ([`tree_at`]), and the head's
//! is saved again when due; `ledger reindex` rebuilds them all. `record` and `status`
//! do not load them (see [`crate::cache::HeadFiles`]); `record` saves them when due.

use ledger::{Ledger, RecordRef};
use replay::{Projection, Tree, TreeFold};

use crate::output::CliResult;

const HEAD_SNAPSHOT: &str = "tree-head";
const KEPT_SNAPSHOT: &str = "tree";
pub const HEAD_EVERY: u64 = 64;
pub const KEEP_EVERY: u64 = 4096;

/// Events between two kept snapshots of a tree of `resources` entries.
pub fn keep_interval(resources: usize) -> u64 {
    KEEP_EVERY.max(resources as u64)
}

/// The tree as it was right after `seq`, and the seq of the snapshot it started from.
///
/// It starts from the newest snapshot at or before `seq`, of either kind, that decodes.
/// One whose bytes pass their checksum but do not decode (written in another snapshot
/// version by another build, say) is removed, so that the next save puts one in its
/// place instead of every later load passing over it.
pub fn tree_at(ledger: &Ledger, seq: u64) -> CliResult<(Tree, Option<u64>)> {
    let index = ledger.index_unsynced();
    let start = loop {
        let mut best: Option<(u64, &str, Vec<u8>)> = None;
        for name in [HEAD_SNAPSHOT, KEPT_SNAPSHOT] {
            if let Some((s, bytes)) = index.snapshot_at_or_before(name, seq)? {
                if best.as_ref().is_none_or(|(b, _, _)| s > *b) {
                    best = Some((s, name, bytes));
                }
            }
        }
        let Some((s, name, bytes)) = best else {
            break None;
        };
        match Tree::from_snapshot_bytes(&bytes) {
            Ok(t) if t.seq() == Some(s) => break Some((t, s)),
            _ => index.remove_snapshot(name, s)?,
        }
    };
    let (tree, from, used) = match start {
        Some((t, s)) => (t, s + 1, Some(s)),
        None => (Tree::new(), 0, None),
    };
    let mut fold = TreeFold::new(tree);
    let mut err = None;
    ledger.scan_range_refs(from, seq, &mut |r| {
        if let Err(e) = fold.apply(&r.event) {
            err = Some(e);
            return Err(ledger::Error::Stopped);
        }
        Ok(())
    })?;
    if let Some(e) = err {
        return Err(crate::output::CliError::new(
            crate::output::EXIT_ERROR,
            e.to_string(),
        ));
    }
    Ok((fold.into_tree(), used))
}

/// The tree at the journal head. Refused while the journal is damaged: the readable
/// head is then the last record before the damage, not the real head, and comparing the
/// workspace with it would mislead.
pub fn head_tree(ledger: &Ledger) -> CliResult<(Tree, Option<u64>)> {
    refuse_if_damaged(ledger)?;
    match ledger.head() {
        Some(h) => tree_at(ledger, h.seq),
        None => Ok((Tree::new(), None)),
    }
}

/// Refuses when the journal is damaged: the recorded state past the damage is unknown,
/// so nothing may be compared with it or written from it.
pub fn refuse_if_damaged(ledger: &Ledger) -> CliResult {
    match ledger.damaged() {
        Some(d) => Err(crate::output::CliError::new(
            crate::output::EXIT_VERIFY,
            format!("{d}; the recorded state past the damage is unknown"),
        )
        .with_hint("run `ledger verify` for a full report")),
        None => Ok(()),
    }
}

/// Saves snapshots of `tree` (which must be at the head) when enough events passed.
/// Snapshots are a speed-up: failures are reported by the caller and otherwise ignored.
pub fn save_snapshots(ledger: &Ledger, tree: &Tree, used: Option<u64>) -> CliResult {
    save_snapshot_bytes(ledger, tree.seq(), tree.len(), used, || {
        tree.to_snapshot_bytes()
    })
}

/// [`save_snapshots`] of a tree at `seq` with `len` entries whose snapshot `encode`
/// makes (called at most once, only when a snapshot is due).
fn save_snapshot_bytes(
    ledger: &Ledger,
    seq: Option<u64>,
    len: usize,
    used: Option<u64>,
    encode: impl FnOnce() -> Vec<u8>,
) -> CliResult {
    let Some(seq) = seq else { return Ok(()) };
    let index = ledger.index_unsynced();
    let head_due = used.is_none_or(|u| seq >= u + HEAD_EVERY);
    let kept_due = index
        .latest_snapshot_seq(KEPT_SNAPSHOT)?
        .is_none_or(|k| seq >= k + keep_interval(len));
    if !head_due && !kept_due {
        return Ok(());
    }
    let bytes = encode();
    if head_due {
        index.put_snapshot(HEAD_SNAPSHOT, seq, &bytes)?;
        index.prune_snapshots(HEAD_SNAPSHOT, seq)?;
    }
    if kept_due {
        index.put_snapshot(KEPT_SNAPSHOT, seq, &bytes)?;
    }
    Ok(())
}

/// Saves snapshots at the head when they are due, loading the tree only then (once per
/// [`HEAD_EVERY`] events): `record` itself works from [`crate::cache::HeadFiles`] and
/// never needs the whole tree.
pub fn keep_snapshots_current(ledger: &Ledger) -> CliResult {
    let Some(head) = ledger.head() else {
        return Ok(());
    };
    let index = ledger.index_unsynced();
    let newest = index
        .latest_snapshot_seq(HEAD_SNAPSHOT)?
        .max(index.latest_snapshot_seq(KEPT_SNAPSHOT)?);
    if newest.is_some_and(|s| head.seq < s + HEAD_EVERY) {
        return Ok(());
    }
    let (tree, used) = tree_at(ledger, head.seq)?;
    save_snapshots(ledger, &tree, used)
}

/// What [`rebuild_snapshots`] folded: the seq of the head it reached and the files there.
/// (Not the head tree itself: turning the fold into a `Tree` took longer than encoding
/// the head snapshot, and the snapshot saved is the tree for whoever needs it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub seq: Option<u64>,
    pub files: usize,
}

/// Rebuilds every snapshot from the journal (after `ledger reindex`).
///
/// The journal is walked with its checks on other threads
/// ([`Ledger::scan_all_pipelined`]); if that finds anything wrong, the walk starts over
/// on one thread, which stops at the problem and names it.
pub fn rebuild_snapshots(ledger: &Ledger) -> CliResult<Rebuilt> {
    match rebuild_pass(ledger, true)? {
        Some(tree) => Ok(tree),
        None => Ok(rebuild_pass(ledger, false)?.expect("the sequential walk always finishes")),
    }
}

/// Journal bytes per cell that [`rebuild_pass`] makes room for in its fold ahead
/// ([`TreeFold::reserve`]), and at most [`FOLD_ROOM_MOST`] cells (32 MiB). A file
/// created in an event that creates many takes about 100 bytes of it or more (70 of
/// content hash, size, mode and lengths, then its path), and a resource changed again
/// and again takes them each time, so this is about what a journal of bulk creations
/// needs and more than one of edits does; room never used takes no memory. (The
/// benchmark's rebuild of 10,139 events that leave 9,706 files took 0.88 times as long
/// with a cell per 256 bytes: without, the folding thread copied its cells to new
/// memory at each doubling.)
const JOURNAL_BYTES_PER_CELL: u64 = 128;
const FOLD_ROOM_MOST: usize = 1 << 18;

/// The cells [`rebuild_pass`] makes room for, for a journal of `bytes`.
fn fold_room(bytes: u64) -> usize {
    usize::try_from(bytes / JOURNAL_BYTES_PER_CELL)
        .unwrap_or(usize::MAX)
        .min(FOLD_ROOM_MOST)
}

/// Bytes per part in which [`rebuild_pass`] hands a snapshot to the thread that stores
/// it (so a part is hashed and written while the next is encoded).
const SNAPSHOT_PART: usize = 256 << 10;

/// What [`rebuild_pass`] sends the thread that stores its snapshots: a snapshot begins
/// (its seq, and whether it is the head's rather than a kept one), a part of it, its end.
enum Snap {
    Begin(u64, bool),
    Part(Vec<u8>),
    End,
}

/// Parts of a snapshot that may wait for the storing thread (8 MiB), so the fold goes on
/// while a kept snapshot is hashed and written.
const SNAPSHOT_PARTS_AHEAD: usize = 32;

/// Encodes `fold`'s snapshot in parts to `tx`: `false` when the storing thread is gone
/// (the encoding then stops).
fn send_snapshot(
    tx: &std::sync::mpsc::SyncSender<Snap>,
    fold: &mut TreeFold,
    seq: u64,
    head: bool,
) -> bool {
    tx.send(Snap::Begin(seq, head)).is_ok()
        && fold.snapshot_parts(SNAPSHOT_PART, &mut |part| tx.send(Snap::Part(part)).is_ok())
        && tx.send(Snap::End).is_ok()
}

/// One rebuild walk; `None` when the pipelined walk found a problem. Snapshots are
/// encoded here and stored (hashed, written, renamed) on a second thread as their parts
/// come: the kept ones while the walk goes on, the head's while it is encoded and the
/// fold dropped.
fn rebuild_pass(ledger: &Ledger, pipelined: bool) -> CliResult<Option<Rebuilt>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Snap>(SNAPSHOT_PARTS_AHEAD);
    std::thread::scope(|s| {
        let store = s.spawn(move || -> ledger::Result<()> {
            let index = ledger.index_unsynced();
            let mut writing = None;
            for m in rx {
                match (m, writing.take()) {
                    (Snap::Begin(seq, head), unfinished) => {
                        // (Never one unfinished: a snapshot is sent whole before the
                        // next begins. It would be dropped, its file removed.)
                        drop(unfinished);
                        let name = if head { HEAD_SNAPSHOT } else { KEPT_SNAPSHOT };
                        writing = Some((index.snapshot_writer(name, seq)?, seq, head));
                    }
                    (Snap::Part(bytes), Some(mut w)) => {
                        w.0.write(&bytes)?;
                        writing = Some(w);
                    }
                    (Snap::End, Some((w, seq, head))) => {
                        w.finish()?;
                        if head {
                            index.prune_snapshots(HEAD_SNAPSHOT, seq)?;
                        }
                    }
                    (_, None) => {
                        return Err(ledger::Error::Invalid(
                            "a snapshot part with no beginning".into(),
                        ))
                    }
                }
            }
            if writing.is_some() {
                // The folding thread stopped inside a snapshot (it panicked; the scope
                // passes that on). The writer, dropped, removes its file.
                return Err(ledger::Error::Stopped);
            }
            Ok(())
        });
        let mut fold = TreeFold::new(Tree::new());
        // (A hint: a journal that cannot be listed fails the walk below.)
        fold.reserve(ledger.journal_bytes().map_or(0, fold_room));
        let mut last_kept: Option<u64> = None;
        let mut err = None;
        // After each event: a kept snapshot when one is due. A closed channel means the
        // storing thread failed: its error comes back when it is joined below.
        let mut keep = |fold: &mut TreeFold, seq: u64| -> ledger::Result<()> {
            if last_kept.is_none_or(|k| seq >= k + keep_interval(fold.len())) {
                if !send_snapshot(&tx, fold, seq, false) {
                    return Err(ledger::Error::Stopped);
                }
                last_kept = Some(seq);
            }
            Ok(())
        };
        let scanned = if pipelined {
            // Workers check each piece and read its events into what the fold needs
            // (`Change` events skimmed, others decoded, each key's hash computed for the
            // fold's key map); this thread only folds.
            let keys = fold.key_hasher();
            let prepare = |_segment: u64, bytes: &[u8]| {
                let mut p = replay::Prepared::for_bytes(bytes.len()).hashing_keys(keys);
                ledger::Journal::checked_segment_payloads(bytes, &mut |payload| {
                    p.push_encoded(bytes, payload)
                })
                .then_some(p)
            };
            ledger.scan_all_pipelined_with(&prepare, &mut |_, bytes, p: replay::Prepared| {
                for i in 0..p.len() {
                    match fold.apply_prepared(bytes, &p, i) {
                        Ok(seq) => keep(&mut fold, seq)?,
                        Err(e) => {
                            err = Some(e);
                            return Err(ledger::Error::Stopped);
                        }
                    }
                }
                Ok(true)
            })
        } else {
            ledger
                .scan_refs(0, &mut |r: &RecordRef| {
                    if let Err(e) = fold.apply(&r.event) {
                        err = Some(e);
                        return Err(ledger::Error::Stopped);
                    }
                    keep(&mut fold, r.event.seq)
                })
                .map(|()| true)
        };
        // A whole walk: the head snapshot goes to the storing thread, which writes each
        // part while the next is encoded and puts it in place while the fold is dropped
        // here (a kept snapshot due at the head was sent by `keep` after the last
        // event). A closed channel means that thread failed: its error comes back when
        // it is joined.
        if let (Ok(true), Some(seq)) = (&scanned, fold.seq()) {
            send_snapshot(&tx, &mut fold, seq, true);
        }
        let t = Rebuilt {
            seq: fold.seq(),
            files: fold.files(),
        };
        drop(fold);
        drop(tx);
        let stored = store.join().expect("the snapshot thread does not panic");
        stored?;
        match scanned {
            Ok(true) | Err(ledger::Error::Stopped) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if let Some(e) = err {
            return Err(crate::output::CliError::new(
                crate::output::EXIT_ERROR,
                e.to_string(),
            ));
        }
        Ok(Some(t))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger::{
        Actor, Body, Change, Content, Hash, Mode, NewEvent, Op, Precondition, ResourceChange,
        ResourceKey,
    };

    use super::*;

    /// The fold's room: a cell per [`JOURNAL_BYTES_PER_CELL`] journal bytes, up to
    /// [`FOLD_ROOM_MOST`] however large the journal.
    #[test]
    fn a_rebuild_makes_room_for_a_cell_per_128_journal_bytes_up_to_a_bound() {
        assert_eq!(fold_room(0), 0);
        assert_eq!(fold_room(127), 0);
        assert_eq!(fold_room(7_720_788), 60_318);
        assert_eq!(fold_room(128 << 18), 1 << 18);
        assert_eq!(fold_room(u64::MAX), 1 << 18);
    }

    /// A new ledger in a temporary directory.
    fn new_ledger() -> (tempfile::TempDir, Ledger) {
        let d = tempfile::tempdir().unwrap();
        let actor = Actor {
            agent: "t".into(),
            ..Default::default()
        };
        let l = Ledger::init(d.path(), actor).unwrap();
        (d, l)
    }

    /// Change `c<n>` setting the file `name` to content `n` (deleting it when `delete`).
    fn file_event(n: u64, name: String, delete: bool) -> NewEvent {
        NewEvent {
            time_us: 1,
            actor: Actor {
                agent: "t".into(),
                ..Default::default()
            },
            change_id: format!("c{n}"),
            correlation_id: None,
            body: Body::Change(Change {
                message: None,
                reverts: None,
                resources: vec![ResourceChange {
                    key: ResourceKey::file(name.as_bytes()),
                    op: if delete { Op::Delete } else { Op::Modify },
                    old: None,
                    new: (!delete).then_some(Content {
                        hash: Hash::of_content(&n.to_le_bytes()),
                        mode: Mode::Regular,
                        size: n,
                    }),
                }],
            }),
            meta: BTreeMap::new(),
        }
    }

    /// Every event of `l` up to its head.
    fn all_events(l: &Ledger) -> Vec<ledger::Event> {
        let head = l.head().unwrap().seq;
        let records = l.events(&(0..=head).collect::<Vec<_>>()).unwrap();
        records.into_iter().map(|r| r.event).collect()
    }

    /// `rebuild_snapshots` (pipelined walk, snapshots stored on another thread) gives the
    /// head tree of a plain fold, stores kept snapshots one interval apart, and the state
    /// at any point read from them equals the plain fold up to that point.
    #[test]
    fn rebuilt_snapshots_give_the_state_at_every_point() {
        let (_d, l) = new_ledger();
        l.set_segment_target(64 * 1024);
        for b in 0..30u64 {
            let batch: Vec<NewEvent> = (b * 300..(b + 1) * 300)
                .map(|n| file_event(n, format!("f{}", n % 50), n % 7 == 3))
                .collect();
            l.append(batch, Precondition::None).unwrap();
        }
        let head = l.head().unwrap().seq;
        assert_eq!(head, 9000);
        let rebuilt = rebuild_snapshots(&l).unwrap();
        let events = all_events(&l);
        let expected = replay::state_at(&events, head).unwrap();
        let files = expected.files().count();
        assert_eq!(
            rebuilt,
            Rebuilt {
                seq: Some(head),
                files
            }
        );
        // The head snapshot it saved is the head tree.
        let (tree, from) = tree_at(&l, head).unwrap();
        assert_eq!((tree, from), (expected, Some(head)));
        let index = l.index_unsynced();
        let kept: Vec<u64> = [0, 4095, 4096, 8191, 8192, 9000]
            .iter()
            .map(|&s| {
                index
                    .snapshot_at_or_before(KEPT_SNAPSHOT, s)
                    .unwrap()
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(kept, vec![0, 0, 4096, 4096, 8192, 8192]);
        for seq in [0, 1, 4095, 4096, 4097, 6000, 8999, 9000] {
            let (t, _) = tree_at(&l, seq).unwrap();
            assert_eq!(t, replay::state_at(&events, seq).unwrap(), "seq {seq}");
        }
    }

    /// A snapshot that does not decode (here: another snapshot version's) is removed
    /// when the tree is loaded past it, the tree comes from the next older one, and the
    /// next save puts a new one in its place.
    #[test]
    fn snapshots_that_do_not_decode_are_removed_and_saved_again() {
        let (_d, l) = new_ledger();
        let batch: Vec<NewEvent> = (0..100u64)
            .map(|n| file_event(n, format!("f{}", n % 30), false))
            .collect();
        l.append(batch, Precondition::None).unwrap();
        let head = l.head().unwrap().seq;
        rebuild_snapshots(&l).unwrap();
        let index = l.index_unsynced();
        let (at, good) = index
            .snapshot_at_or_before(HEAD_SNAPSHOT, head)
            .unwrap()
            .unwrap();
        assert_eq!(at, head);
        // The header is the magic (8 bytes), then the version.
        let mut other = good.clone();
        other[8..12].copy_from_slice(&(replay::SNAPSHOT_VERSION - 1).to_le_bytes());
        index.put_snapshot(HEAD_SNAPSHOT, head, &other).unwrap();
        let events = all_events(&l);
        let (t, used) = tree_at(&l, head).unwrap();
        assert_eq!(t, replay::state_at(&events, head).unwrap());
        assert_eq!(used, Some(0), "from the kept snapshot at seq 0");
        assert_eq!(index.latest_snapshot_seq(HEAD_SNAPSHOT).unwrap(), None);
        keep_snapshots_current(&l).unwrap();
        let (at, bytes) = index
            .snapshot_at_or_before(HEAD_SNAPSHOT, head)
            .unwrap()
            .unwrap();
        assert_eq!(at, head);
        assert_eq!(Tree::from_snapshot_bytes(&bytes).unwrap(), t);
    }

    /// Snapshots larger than a part ([`SNAPSHOT_PART`]), stored as their parts come,
    /// load as the trees they were made of.
    #[test]
    fn rebuilt_snapshots_of_several_parts_load_as_their_trees() {
        let (_d, l) = new_ledger();
        // Names that share little with the one before in key order, so that an entry
        // takes about 85 bytes of a snapshot.
        let batch: Vec<NewEvent> = (0..10_000u64)
            .map(|n| {
                let mixed = u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                file_event(n, format!("src/module-{}/{mixed:032x}.rs", n % 17), false)
            })
            .collect();
        l.append(batch, Precondition::None).unwrap();
        let head = l.head().unwrap().seq;
        rebuild_snapshots(&l).unwrap();
        let index = l.index_unsynced();
        let (at, bytes) = index
            .snapshot_at_or_before(HEAD_SNAPSHOT, head)
            .unwrap()
            .unwrap();
        assert_eq!(at, head);
        assert!(bytes.len() > 2 * SNAPSHOT_PART, "{} bytes", bytes.len());
        let events = all_events(&l);
        let (kept, bytes) = index
            .snapshot_at_or_before(KEPT_SNAPSHOT, head)
            .unwrap()
            .unwrap();
        assert!(
            kept > 0 && bytes.len() > SNAPSHOT_PART,
            "a kept snapshot of several parts"
        );
        for seq in [kept, head] {
            let (t, from) = tree_at(&l, seq).unwrap();
            assert_eq!(from, Some(seq), "seq {seq} from its snapshot");
            assert_eq!(t, replay::state_at(&events, seq).unwrap(), "seq {seq}");
        }
        // The head snapshot cannot be put in place (a directory where it goes): the
        // rebuild fails and leaves no temporary file.
        for name in [HEAD_SNAPSHOT, KEPT_SNAPSHOT] {
            index.prune_snapshots(name, u64::MAX).unwrap();
        }
        let dir = l.dir().join("index").join("snapshots");
        let blocked = dir.join(format!("{HEAD_SNAPSHOT}.{head:020}"));
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(rebuild_snapshots(&l).is_err());
        let tmp: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("tmp-"))
            .collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
}
