//! Hostile input against the commands that write files: `ledger revert` (and its
//! `--dry-run`), `ledger replay --at/--before --out`, plus `ledger diff --patch`, which
//! must never write at all.
//!
//! Every case runs in its own temporary directory holding the workspace, a *sentinel*
//! directory next to it (files, a subdirectory, a symlink and two hard-link targets,
//! all with mtimes set to 2001) and the replay output directories. The hostile
//! situation is built through the real CLI where the CLI can produce it, and otherwise
//! by appending events through the `ledger` library (`Ledger::append`) or by writing
//! frames into the journal segment directly: someone who can write the journal is the
//! threat model. Then the command runs as a real process and the case checks:
//!
//! - refusals exit with the expected code, name the path, and leave the workspace
//!   files and the journal byte-for-byte as they were; replay refusals leave the
//!   output directory absent or empty; legitimate cases do exactly the confined thing;
//! - everything in the temporary directory outside the workspace and the output
//!   directories (the sentinel above all: bytes, modes, mtimes, listing, directory
//!   mtimes included) is unchanged;
//! - no run panicked, and the journal still verifies (except in the cases that damage
//!   it on purpose, which check the damage is reported).
//!
//! The cases are a table (`cases()`); each category is one test, run on a few threads.
//! `HOSTILE_CASE=substring` runs only the cases whose name contains it;
//! `HOSTILE_VERBOSE=1` prints every attack's output.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::*;
use ledger::{
    Actor, Body, Change, Content, Hash, Ledger, Mode, Name, NewEvent, OpenOptions, Pending,
    Precondition, ResourceChange, ResourceKey,
};

const VICTIM: &[u8] = b"sentinel victim\n";
const INNER: &[u8] = b"sentinel inner\n";
const HL: &[u8] = b"sentinel hard-linked\n";
const OLD: &[u8] = b"what the hostile change says was there before\n";

// ---- snapshots ----------------------------------------------------------------------

/// What one directory entry is, looked at without following symlinks.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    /// (seconds, nanoseconds); `None` where not compared (workspace directories).
    mtime: Option<(i64, i64)>,
    /// File bytes or symlink target.
    data: Vec<u8>,
}

/// Every entry under `dir` except the top-level names in `skip`. With `dir_mtimes`
/// false, directories' mtimes are not compared (a refused revert may have made and
/// removed a temporary file in its own workspace).
fn snapshot(dir: &Path, skip: &[&str], dir_mtimes: bool) -> BTreeMap<PathBuf, Node> {
    fn walk(
        base: &Path,
        p: &Path,
        skip: &[&str],
        dir_mtimes: bool,
        out: &mut BTreeMap<PathBuf, Node>,
    ) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(base).unwrap().to_path_buf();
            if p == base && skip.iter().any(|s| e.file_name() == **s) {
                continue;
            }
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_symlink() {
                (
                    "symlink",
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", fs::read(&path).unwrap())
            } else {
                ("other", Vec::new())
            };
            let mtime = (!ft.is_dir() || dir_mtimes).then(|| (m.mtime(), m.mtime_nsec()));
            out.insert(
                rel,
                Node {
                    kind,
                    mode: m.mode(),
                    mtime,
                    data,
                },
            );
            if ft.is_dir() {
                walk(base, &path, skip, dir_mtimes, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, dir_mtimes, &mut out);
    out
}

#[track_caller]
fn assert_same(what: &str, before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed {}", k.display())),
            Some(w) if w != v => diffs.push(format!("changed {}: {v:?} -> {w:?}", k.display())),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diffs.push(format!("created {}", k.display()));
    }
    assert!(
        diffs.is_empty(),
        "{what} changed:\n  {}",
        diffs.join("\n  ")
    );
}

fn set_old_mtime(p: &Path) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = fs::File::open(p).unwrap();
    f.set_modified(t).unwrap();
}

// ---- the harness --------------------------------------------------------------------

/// One case's world: a ledger workspace, the sentinel, and a place for replay output.
struct H {
    env: TestEnvironment,
    sentinel: PathBuf,
    outs: PathBuf,
    n_out: u32,
    /// Everything outside the workspace and `outs`, taken before the first attack.
    outside: Option<BTreeMap<PathBuf, Node>>,
    /// The case damaged the journal on purpose: `verify` is not expected to pass.
    damaged: bool,
}

impl H {
    /// A case's world, its ledger a copy of `template`'s (one `ledger init` per
    /// category: cheaper than one per case, and the same bytes an init writes).
    fn new(template: &TestEnvironment) -> H {
        let env = TestEnvironment::new();
        copy_tree(&template.ledger_dir(), &env.ledger_dir());
        let root = env.root().to_path_buf();
        let s = root.join("sentinel");
        fs::create_dir_all(s.join("sub")).unwrap();
        fs::write(s.join("victim.txt"), VICTIM).unwrap();
        fs::write(s.join("run.sh"), b"#!/bin/sh\necho sentinel\n").unwrap();
        fs::set_permissions(s.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(s.join("sub/inner.txt"), INNER).unwrap();
        fs::write(s.join("hl.txt"), HL).unwrap();
        fs::write(s.join("hl-exec.sh"), HL).unwrap();
        fs::set_permissions(s.join("hl-exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("victim.txt", s.join("link")).unwrap();
        for f in [
            "victim.txt",
            "run.sh",
            "sub/inner.txt",
            "hl.txt",
            "hl-exec.sh",
            "sub",
            ".",
        ] {
            set_old_mtime(&s.join(f));
        }
        let outs = root.join("outs");
        fs::create_dir(&outs).unwrap();
        H {
            env,
            sentinel: s,
            outs,
            n_out: 0,
            outside: None,
            damaged: false,
        }
    }

    fn root(&self) -> &Path {
        self.env.root()
    }

    fn sentinel_path(&self, rel: &str) -> Vec<u8> {
        self.sentinel
            .join(rel)
            .into_os_string()
            .into_encoded_bytes()
    }

    fn snapshot_outside(&self) -> BTreeMap<PathBuf, Node> {
        snapshot(self.root(), &["workspace", "outs"], true)
    }

    fn snapshot_workspace(&self) -> BTreeMap<PathBuf, Node> {
        snapshot(self.env.workspace(), &[".ledger"], false)
    }

    /// Runs an attack: the first one takes the snapshot of everything outside.
    fn run(&mut self, args: &[&str]) -> CmdOutput {
        if self.outside.is_none() {
            self.outside = Some(self.snapshot_outside());
        }
        let out = self.env.run(args);
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            eprintln!("{out:?}");
        }
        assert!(
            out.code != 101 && !out.stderr.contains("panicked"),
            "panic: {out:?}"
        );
        assert!(out.code < 128, "killed by a signal: {out:?}");
        out
    }

    #[track_caller]
    fn ok(&mut self, args: &[&str]) -> CmdOutput {
        let out = self.run(args);
        assert_eq!(out.code, 0, "expected success: {out:?}");
        out
    }

    /// A refusal: exit `code`, every `mentions` in the output, workspace files and
    /// journal unchanged.
    #[track_caller]
    fn refuses(&mut self, args: &[&str], code: i32, mentions: &[&str]) -> CmdOutput {
        let ws = self.snapshot_workspace();
        let journal = self.env.journal_bytes();
        let out = self.run(args);
        assert_eq!(out.code, code, "{out:?}");
        let text = format!("{}{}", out.stdout, out.stderr);
        for m in mentions {
            assert!(text.contains(m), "output does not mention {m:?}: {out:?}");
        }
        assert_same("the workspace", &ws, &self.snapshot_workspace());
        assert!(
            self.env.journal_bytes() == journal,
            "the journal changed: {out:?}"
        );
        out
    }

    /// A fresh output path for replay (not created).
    fn out(&mut self) -> PathBuf {
        self.n_out += 1;
        self.outs.join(format!("out{}", self.n_out))
    }

    fn replay_args(point: &[&str], out: &Path) -> Vec<String> {
        let mut a = vec!["replay".to_string()];
        a.extend(point.iter().map(|s| s.to_string()));
        a.push("--out".into());
        a.push(out.to_str().unwrap().into());
        a
    }

    /// `replay POINT --out NEW`, refused: nothing left in the output directory.
    #[track_caller]
    fn replay_refused(&mut self, point: &[&str], code: i32, mentions: &[&str]) -> CmdOutput {
        let out = self.out();
        let a = Self::replay_args(point, &out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let res = self.refuses(&a, code, mentions);
        if out.exists() {
            let left: Vec<_> = fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "replay left {left:?} behind: {res:?}");
        }
        res
    }

    /// `replay POINT --out NEW`, succeeding; returns the output directory.
    #[track_caller]
    fn replay_ok(&mut self, point: &[&str]) -> PathBuf {
        let out = self.out();
        let a = Self::replay_args(point, &out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ok(&a);
        out
    }

    /// The checks every case ends with.
    fn finish(self) {
        let before = self.outside.as_ref().expect("the case never ran an attack");
        assert_same(
            "the directory outside the workspace (sentinel included)",
            before,
            &self.snapshot_outside(),
        );
        if !self.damaged {
            self.env.verify_ok();
        }
    }

    // ---- building state ---------------------------------------------------------

    fn record(&self, change: &str) {
        self.env.record("agent", &["--change", change]);
    }

    fn open_ledger(&self) -> Ledger {
        Ledger::open_dir(&self.env.ledger_dir(), &OpenOptions::default())
            .unwrap()
            .0
    }

    /// Appends crafted changes through the library, storing `contents` first.
    fn craft(&self, changes: Vec<(&str, Vec<ResourceChange>)>, contents: &[&[u8]]) {
        let l = self.open_ledger();
        let mut p = Pending::default();
        for c in contents {
            l.store().put_bytes(c, &mut p).unwrap();
        }
        l.commit_content(p).unwrap();
        for (id, resources) in changes {
            l.append(
                vec![new_event(id, resources)],
                Precondition::NewChange(id.into()),
            )
            .unwrap();
        }
    }

    /// Appends raw bytes to the last journal segment. `make` gets the next seq and the
    /// head hash.
    fn append_raw(&self, make: impl FnOnce(u64, Hash) -> Vec<u8>) {
        let head = self.open_ledger().head().unwrap();
        let bytes = make(head.seq + 1, head.hash);
        let seg = last_segment(&self.env);
        let mut f = fs::OpenOptions::new().append(true).open(seg).unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
    }
}

fn last_segment(env: &TestEnvironment) -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir(env.journal_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

fn new_event(id: &str, mut resources: Vec<ResourceChange>) -> NewEvent {
    resources.sort_by(|a, b| a.key.cmp(&b.key));
    NewEvent {
        time_us: 1_800_000_000_000_000,
        actor: Actor {
            agent: "mallory".into(),
            principal: None,
            role: None,
        },
        change_id: id.into(),
        correlation_id: None,
        body: Body::Change(Change {
            message: Some("crafted".into()),
            reverts: None,
            resources,
        }),
        meta: BTreeMap::new(),
    }
}

fn content(bytes: &[u8], mode: Mode) -> Content {
    Content {
        hash: Hash::of_content(bytes),
        mode,
        size: bytes.len() as u64,
    }
}

fn reg(bytes: &[u8]) -> Option<Content> {
    Some(content(bytes, Mode::Regular))
}

/// One file change; the op follows from `old` and `new`.
fn rc(name: &[u8], old: Option<Content>, new: Option<Content>) -> ResourceChange {
    ResourceChange {
        key: ResourceKey::file(name),
        op: match (&old, &new) {
            (None, _) => ledger::Op::Create,
            (_, None) => ledger::Op::Delete,
            _ => ledger::Op::Modify,
        },
        old,
        new,
    }
}

/// A sealed event as a journal frame (batch of one).
fn frame_of(ev: &ledger::Event) -> Vec<u8> {
    let payload = ev.encode();
    let mut out = Vec::new();
    ledger::encode_frame(
        &payload,
        &Hash::of_event_bytes(&payload),
        ev.seq,
        ev.seq,
        &mut out,
    );
    out
}

fn display(name: &[u8]) -> String {
    Name(name.to_vec()).display()
}

// ---- category 1: names that leave the root ------------------------------------------

/// A name a hostile event can carry; `root` is the temporary directory, so absolute
/// names point into the sentinel.
type NameFn = fn(&Path) -> Vec<u8>;

fn abs(root: &Path, rel: &str) -> Vec<u8> {
    root.join(rel).into_os_string().into_encoded_bytes()
}

const UNSAFE_NAMES: &[(&str, NameFn)] = &[
    ("dotdot", |_| b"..".to_vec()),
    ("dotdot-into-sentinel", |_| {
        b"../sentinel/victim.txt".to_vec()
    }),
    ("nested-dotdot", |_| {
        b"sub/../../sentinel/victim.txt".to_vec()
    }),
    ("trailing-dotdot", |_| b"sub/..".to_vec()),
    ("dot-then-dotdot", |_| b"./../sentinel/victim.txt".to_vec()),
    ("absolute-into-sentinel", |r| abs(r, "sentinel/victim.txt")),
    ("double-slash-absolute", |r| {
        [b"/".as_slice(), &abs(r, "sentinel/victim.txt")].concat()
    }),
    ("empty-name", |_| Vec::new()),
    ("nul-byte", |_| b"sub\0/../../sentinel/victim.txt".to_vec()),
    ("ledger-segment", |_| {
        b".ledger/journal/00000000000000000000.seg".to_vec()
    }),
    ("ledger-format-file", |_| b".ledger/FORMAT".to_vec()),
    ("non-utf8-dotdot", |_| {
        b"\xff\xfe/../../sentinel/victim.txt".to_vec()
    }),
    ("empty-component", |_| b"sub//victim.txt".to_vec()),
    ("trailing-slash", |_| b"sub/".to_vec()),
];

#[derive(Clone, Copy, Debug)]
enum Op {
    Revert,
    RevertDryRun,
    ReplayAt,
    ReplayBefore,
    DiffPatch,
}

const OPS: &[Op] = &[
    Op::Revert,
    Op::RevertDryRun,
    Op::ReplayAt,
    Op::ReplayBefore,
    Op::DiffPatch,
];

/// A recorded `a.txt`, then a hostile change `evil` that modifies `a.txt` (a normal
/// edit, so a partial revert or replay would show) and `name` (from `OLD` to the
/// sentinel victim's bytes), then a normal change `later`.
fn unsafe_name_case(h: &mut H, name: Vec<u8>, op: Op) {
    h.env.write("a.txt", "a1\n");
    h.record("c1");
    h.env.write("a.txt", "a2\n");
    h.env.write("later.txt", "later\n");
    h.craft(
        vec![
            (
                "evil",
                vec![
                    rc(b"a.txt", reg(b"a1\n"), reg(b"a2\n")),
                    rc(&name, reg(OLD), reg(VICTIM)),
                ],
            ),
            ("later", vec![rc(b"later.txt", None, reg(b"later\n"))]),
        ],
        &[b"a2\n", OLD, VICTIM, b"later\n"],
    );
    let why = replay::safe_relative_path(&name).unwrap_err().to_string();
    let shown = display(&name);
    let mut mentions = vec![why.as_str()];
    if !shown.is_empty() {
        mentions.push(&shown);
    }
    match op {
        Op::Revert => {
            h.refuses(&["revert", "evil"], EXIT_CONFLICT, &mentions);
        }
        Op::RevertDryRun => {
            h.refuses(&["revert", "evil", "--dry-run"], EXIT_CONFLICT, &mentions);
        }
        Op::ReplayAt => {
            h.replay_refused(&["--at", "evil"], EXIT_ERROR, &mentions);
        }
        Op::ReplayBefore => {
            h.replay_refused(&["--before", "later"], EXIT_ERROR, &mentions);
        }
        Op::DiffPatch => {
            // Diff only prints: the name is shown, nothing is written anywhere.
            let ws = h.snapshot_workspace();
            let out = h.ok(&["diff", "c1", "evil", "--patch"]);
            assert!(out.stdout.contains("a.txt"), "{out:?}");
            assert!(out.stdout.contains(&shown), "{out:?}");
            assert_same("the workspace", &ws, &h.snapshot_workspace());
        }
    }
}

/// A resource outside the `file` namespace with an escaping name: replay and diff
/// leave it alone (it is not a workspace file), revert refuses it as not revertable.
fn other_namespace_case(h: &mut H, op: Op) {
    h.env.write("a.txt", "a1\n");
    h.record("c1");
    let flag = ResourceChange {
        key: ResourceKey {
            namespace: "flag".into(),
            name: Name(b"../sentinel/victim.txt".to_vec()),
        },
        op: ledger::Op::Modify,
        old: reg(OLD),
        new: reg(VICTIM),
    };
    h.craft(
        vec![
            ("evil", vec![flag]),
            ("later", vec![rc(b"later.txt", None, reg(b"later\n"))]),
        ],
        &[OLD, VICTIM, b"later\n"],
    );
    h.env.write("later.txt", "later\n");
    match op {
        Op::Revert | Op::RevertDryRun => {
            let mut a = vec!["revert", "evil"];
            if matches!(op, Op::RevertDryRun) {
                a.push("--dry-run");
            }
            h.refuses(
                &a,
                EXIT_CONFLICT,
                &["../sentinel/victim.txt", "not a workspace file"],
            );
        }
        Op::ReplayAt | Op::ReplayBefore => {
            let point: &[&str] = if matches!(op, Op::ReplayAt) {
                &["--at", "evil"]
            } else {
                &["--before", "later"]
            };
            let out = h.replay_ok(point);
            assert_eq!(
                snapshot(&out, &[], false).keys().collect::<Vec<_>>(),
                vec![Path::new("a.txt")]
            );
        }
        Op::DiffPatch => {
            h.ok(&["diff", "c1", "evil", "--patch"]);
        }
    }
}

// ---- category 2: symlinks -----------------------------------------------------------

/// `dir/inner.txt` recorded as "first" (c1) then as the sentinel's bytes (c2), then
/// `dir` replaced by a symlink to the sentinel's `sub` (which holds `inner.txt` with
/// those bytes): a revert of c2 through the symlink would overwrite the sentinel.
fn symlinked_dir(h: &mut H, dry_run: bool) {
    h.env.write("dir/inner.txt", "first\n");
    h.record("c1");
    h.env.write("dir/inner.txt", INNER);
    h.record("c2");
    fs::remove_dir_all(h.env.path("dir")).unwrap();
    h.env.symlink(h.sentinel.join("sub"), "dir");
    let mut a = vec!["revert", "c2"];
    if dry_run {
        a.push("--dry-run");
    }
    h.refuses(&a, EXIT_CONFLICT, &["dir/inner.txt"]);
}

fn symlinked_dir_relative_chain(h: &mut H) {
    h.env.write("dir/inner.txt", "first\n");
    h.record("c1");
    h.env.write("dir/inner.txt", INNER);
    h.record("c2");
    fs::remove_dir_all(h.env.path("dir")).unwrap();
    // dir -> hop -> ../sentinel/sub
    h.env.symlink("../sentinel/sub", "hop");
    h.env.symlink("hop", "dir");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["dir/inner.txt"]);
}

fn symlinked_deep_ancestor(h: &mut H) {
    h.env.write("a/b/sub/inner.txt", "first\n");
    h.record("c1");
    h.env.write("a/b/sub/inner.txt", INNER);
    h.record("c2");
    fs::remove_dir_all(h.env.path("a/b")).unwrap();
    h.env.symlink(&h.sentinel, "a/b");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["a/b/sub/inner.txt"]);
}

/// The revert would recreate `dir/gone.txt`; `dir` now points into the sentinel.
fn symlinked_dir_recreate(h: &mut H) {
    h.env.write("dir/gone.txt", "gone\n");
    h.env.write("dir/keep.txt", "keep\n");
    h.record("c1");
    h.env.remove("dir/gone.txt");
    h.record("c2");
    fs::remove_dir_all(h.env.path("dir")).unwrap();
    h.env.symlink(h.sentinel.join("sub"), "dir");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["dir/gone.txt"]);
}

/// The revert would delete `dir/inner.txt` (c2 created it); `dir` now points into the
/// sentinel, where a file of that name and content exists.
fn symlinked_dir_delete(h: &mut H) {
    h.env.write("dir/keep.txt", "keep\n");
    h.record("c1");
    h.env.write("dir/inner.txt", INNER);
    h.record("c2");
    fs::remove_dir_all(h.env.path("dir")).unwrap();
    h.env.symlink(h.sentinel.join("sub"), "dir");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["dir/inner.txt"]);
}

/// A symlink to the sentinel victim planted where a recorded regular file was.
fn planted_symlink_modify(h: &mut H, dry_run: bool) {
    h.env.write("f.txt", "first\n");
    h.record("c1");
    h.env.write("f.txt", VICTIM);
    h.record("c2");
    h.env.remove("f.txt");
    h.env.symlink(h.sentinel.join("victim.txt"), "f.txt");
    let mut a = vec!["revert", "c2"];
    if dry_run {
        a.push("--dry-run");
    }
    h.refuses(&a, EXIT_CONFLICT, &["f.txt"]);
}

/// A dangling symlink planted where the revert must recreate a deleted file.
fn planted_symlink_recreate(h: &mut H) {
    h.env.write("g.txt", "g\n");
    h.record("c1");
    h.env.remove("g.txt");
    h.record("c2");
    h.env.symlink(h.sentinel.join("new.txt"), "g.txt");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["g.txt"]);
    assert!(!h.sentinel.join("new.txt").exists());
}

/// A symlink planted where the revert must delete a file the change created.
fn planted_symlink_delete(h: &mut H) {
    h.env.write("keep.txt", "keep\n");
    h.record("c1");
    h.env.write("n.txt", VICTIM);
    h.record("c2");
    h.env.remove("n.txt");
    h.env.symlink(h.sentinel.join("victim.txt"), "n.txt");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["n.txt"]);
}

/// A recorded symlink pointing outside is restored as a symlink (never followed).
fn recorded_outside_symlink_revert(h: &mut H) {
    h.env.symlink("../sentinel/victim.txt", "link");
    h.env.write("keep.txt", "keep\n");
    h.record("c1");
    h.env.remove("link");
    h.record("c2");
    h.ok(&["revert", "c2"]);
    let p = h.env.path("link");
    assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    assert_eq!(
        fs::read_link(&p).unwrap(),
        Path::new("../sentinel/victim.txt")
    );
}

/// Same symlink, replayed: written as a symlink in the output directory.
fn recorded_outside_symlink_replay(h: &mut H) {
    h.env.symlink(h.sentinel.join("victim.txt"), "link");
    h.env.symlink(&h.sentinel, "dirlink");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        h.sentinel.join("victim.txt")
    );
    assert_eq!(fs::read_link(out.join("dirlink")).unwrap(), h.sentinel);
}

/// A recorded symlink `d` to the sentinel, then a hostile event names `d/victim.txt`:
/// replay would write through the symlink it just made.
fn symlink_then_file_beneath_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let target = h.sentinel_path("");
    h.craft(
        vec![(
            "evil",
            vec![
                rc(b"d", None, Some(content(&target, Mode::Symlink))),
                rc(b"d/victim.txt", None, reg(b"overwritten\n")),
            ],
        )],
        &[&target, b"overwritten\n"],
    );
    h.replay_refused(
        &["--at", "evil"],
        EXIT_ERROR,
        &["d/victim.txt", "symlink", "cannot be both"],
    );
}

/// The workspace matches the hostile events (`d` is a symlink to the sentinel); a
/// revert of the change that "created" `d/victim.txt` would delete the sentinel's.
fn symlink_then_file_beneath_revert(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let target = h.sentinel_path("");
    h.craft(
        vec![
            (
                "evil1",
                vec![rc(b"d", None, Some(content(&target, Mode::Symlink)))],
            ),
            ("evil2", vec![rc(b"d/victim.txt", None, reg(VICTIM))]),
        ],
        &[&target, VICTIM],
    );
    h.env.symlink(&h.sentinel, "d");
    h.refuses(&["revert", "evil2"], EXIT_CONFLICT, &["d/victim.txt"]);
}

// ---- category 3: hard links, file types, directories -----------------------------

/// A workspace file that is a hard link to a sentinel file: the revert replaces the
/// directory entry (rename), so the sentinel's inode keeps its bytes.
fn hardlink_write(h: &mut H) {
    h.env.write("f.txt", "first\n");
    h.record("c1");
    h.env.write("f.txt", HL);
    h.record("c2");
    h.env.remove("f.txt");
    fs::hard_link(h.sentinel.join("hl.txt"), h.env.path("f.txt")).unwrap();
    h.ok(&["revert", "c2"]);
    assert_eq!(h.env.read("f.txt"), b"first\n");
}

/// The same for a revert that only changes the mode back: the sentinel's inode keeps
/// its mode.
fn hardlink_mode(h: &mut H) {
    h.env.write("m.sh", HL);
    h.record("c1");
    h.env.set_mode("m.sh", 0o755);
    h.record("c2");
    h.env.remove("m.sh");
    fs::hard_link(h.sentinel.join("hl-exec.sh"), h.env.path("m.sh")).unwrap();
    h.ok(&["revert", "c2"]);
    let m = fs::metadata(h.env.path("m.sh")).unwrap();
    assert_eq!(m.mode() & 0o111, 0, "the revert made m.sh regular again");
    assert_eq!(m.nlink(), 1, "m.sh is now its own file");
    assert_eq!(h.env.read("m.sh"), HL);
}

fn file_replaced_by_directory(h: &mut H) {
    h.env.write("f.txt", "one\n");
    h.record("c1");
    h.env.write("f.txt", "two\n");
    h.record("c2");
    h.env.remove("f.txt");
    h.env.write("f.txt/keep", "mine\n");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["f.txt", "directory"]);
}

fn directory_replaced_by_file(h: &mut H) {
    h.env.write("d/x.txt", "one\n");
    h.record("c1");
    h.env.write("d/x.txt", "two\n");
    h.record("c2");
    fs::remove_dir_all(h.env.path("d")).unwrap();
    h.env.write("d", "a file now\n");
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["d/x.txt"]);
}

/// A FIFO where a file was: never opened (that would block), refused.
fn file_replaced_by_fifo(h: &mut H) {
    h.env.write("f.txt", "one\n");
    h.record("c1");
    h.env.write("f.txt", "two\n");
    h.record("c2");
    h.env.remove("f.txt");
    let st = std::process::Command::new("mkfifo")
        .arg(h.env.path("f.txt"))
        .status()
        .unwrap();
    assert!(st.success());
    h.refuses(&["revert", "c2"], EXIT_CONFLICT, &["f.txt"]);
}

/// Legitimately turning a directory back into a file: c2 deleted `p` and made `p/q`.
fn directory_back_to_file(h: &mut H) {
    h.env.write("p", "file p\n");
    h.record("c1");
    h.env.remove("p");
    h.env.write("p/q", "q\n");
    h.record("c2");
    h.ok(&["revert", "c2"]);
    assert_eq!(h.env.read("p"), b"file p\n");
}

/// Hostile events that make `p` a file and `p/q` a file at once.
fn file_and_child_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    h.craft(
        vec![(
            "evil",
            vec![rc(b"p", None, reg(b"p\n")), rc(b"p/q", None, reg(b"q\n"))],
        )],
        &[b"p\n", b"q\n"],
    );
    h.replay_refused(&["--at", "evil"], EXIT_ERROR, &["p/q", "cannot be both"]);
}

// ---- category 4: names: non-UTF-8, long, case, look-alikes -------------------------

fn non_utf8_revert(h: &mut H) {
    let name = bytes_path(b"caf\xe9-\xff.txt");
    h.env.write(&name, "one\n");
    h.record("c1");
    h.env.write(&name, "two\n");
    h.record("c2");
    h.ok(&["revert", "c2"]);
    assert_eq!(h.env.read(&name), b"one\n");
}

fn non_utf8_replay(h: &mut H) {
    let name = bytes_path(b"dir-\xfe/\xff\xff.bin");
    h.env.write(&name, b"\x00\x01\x02");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(fs::read(out.join(&name)).unwrap(), b"\x00\x01\x02");
}

fn long_component_revert(h: &mut H) {
    let name = "n".repeat(255);
    h.env.write(&name, "one\n");
    h.record("c1");
    h.env.write(&name, "two\n");
    h.record("c2");
    h.ok(&["revert", "c2"]);
    assert_eq!(h.env.read(&name), b"one\n");
}

fn long_component_replay(h: &mut H) {
    let name = format!("{}/{}", "d".repeat(255), "f".repeat(255));
    h.env.write(&name, "deep\n");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(fs::read(out.join(&name)).unwrap(), b"deep\n");
}

/// A component over NAME_MAX in a hostile event.
fn too_long_component_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = "x".repeat(256);
    h.craft(
        vec![("evil", vec![rc(name.as_bytes(), None, reg(b"x\n"))])],
        &[b"x\n"],
    );
    h.replay_refused(&["--at", "evil"], EXIT_ERROR, &[&name[..200]]);
}

fn too_long_component_revert(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = "x".repeat(256);
    h.craft(
        vec![("evil", vec![rc(name.as_bytes(), reg(OLD), reg(b"x\n"))])],
        &[OLD, b"x\n"],
    );
    h.refuses(&["revert", "evil"], EXIT_CONFLICT, &[&name[..200]]);
}

/// A 1 MiB name in one component: refused, not a crash.
fn huge_name_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = vec![b'h'; 1 << 20];
    h.craft(
        vec![("evil", vec![rc(&name, None, reg(b"h\n"))])],
        &[b"h\n"],
    );
    h.replay_refused(&["--at", "evil"], EXIT_ERROR, &["hhhhhhhh"]);
}

fn huge_name_revert(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = vec![b'h'; 1 << 20];
    h.craft(
        vec![("evil", vec![rc(&name, None, reg(b"h\n"))])],
        &[b"h\n"],
    );
    h.refuses(&["revert", "evil"], EXIT_CONFLICT, &["hhhhhhhh"]);
}

/// 3,000 bytes of path in 12 components: legitimately written, beneath the output.
fn long_path_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = vec!["p".repeat(249); 12].join("/");
    h.craft(
        vec![("deep", vec![rc(name.as_bytes(), None, reg(b"deep\n"))])],
        &[b"deep\n"],
    );
    let out = h.replay_ok(&["--at", "deep"]);
    assert_eq!(fs::read(out.join(&name)).unwrap(), b"deep\n");
}

/// 1,500 nested directories.
fn deep_path_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = format!("{}f", "a/".repeat(1500));
    h.craft(
        vec![("deep", vec![rc(name.as_bytes(), None, reg(b"deep\n"))])],
        &[b"deep\n"],
    );
    let out = h.replay_ok(&["--at", "deep"]);
    assert_eq!(fs::read(out.join(&name)).unwrap(), b"deep\n");
}

/// `Makefile` and `makefile`: two files on a case-sensitive file system; reverting the
/// second leaves the first.
fn case_collision_revert(h: &mut H) {
    h.env.write("Makefile", "upper\n");
    h.record("c1");
    h.env.write("makefile", "lower\n");
    h.record("c2");
    h.ok(&["revert", "c2"]);
    assert_eq!(h.env.read("Makefile"), b"upper\n");
    assert!(!h.env.path("makefile").exists());
}

fn case_collision_replay(h: &mut H) {
    h.env.write("README", "upper\n");
    h.env.write("readme", "lower\n");
    h.env.write("ReadMe/x", "dir\n");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(fs::read(out.join("README")).unwrap(), b"upper\n");
    assert_eq!(fs::read(out.join("readme")).unwrap(), b"lower\n");
    assert_eq!(fs::read(out.join("ReadMe/x")).unwrap(), b"dir\n");
}

/// NFC and NFD spellings of the same visible name are different byte strings.
fn unicode_normalization_replay(h: &mut H) {
    h.env.write("caf\u{e9}.txt", "nfc\n");
    h.env.write("cafe\u{301}.txt", "nfd\n");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(fs::read(out.join("caf\u{e9}.txt")).unwrap(), b"nfc\n");
    assert_eq!(fs::read(out.join("cafe\u{301}.txt")).unwrap(), b"nfd\n");
}

/// `..\sentinel\victim.txt` is one ordinary file name on Unix.
fn backslash_name_revert(h: &mut H) {
    h.env.write("keep.txt", "keep\n");
    h.record("c1");
    h.env.write("..\\sentinel\\victim.txt", VICTIM);
    h.record("c2");
    h.ok(&["revert", "c2"]);
    assert!(!h.env.path("..\\sentinel\\victim.txt").exists());
}

fn backslash_name_replay(h: &mut H) {
    h.env.write("..\\sentinel\\victim.txt", "mine\n");
    h.record("c1");
    let out = h.replay_ok(&["--at", "c1"]);
    assert_eq!(
        fs::read(out.join("..\\sentinel\\victim.txt")).unwrap(),
        b"mine\n"
    );
}

/// `.ledger` below the top level is an ordinary directory name.
fn nested_ledger_name_replay(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    h.craft(
        vec![(
            "nested",
            vec![rc(
                b"sub/.ledger/journal/00000000000000000000.seg",
                None,
                reg(b"x\n"),
            )],
        )],
        &[b"x\n"],
    );
    let out = h.replay_ok(&["--at", "nested"]);
    assert_eq!(
        fs::read(out.join("sub/.ledger/journal/00000000000000000000.seg")).unwrap(),
        b"x\n"
    );
}

/// Terminal control characters in a recorded name are shown escaped.
fn control_characters_in_name(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let name = b"\x1b[2J\x1b]0;pwned\x07\nREJECTED: fake.txt".to_vec();
    h.craft(
        vec![("evil", vec![rc(&name, reg(OLD), reg(b"x\n"))])],
        &[OLD, b"x\n"],
    );
    let out = h.refuses(&["revert", "evil"], EXIT_CONFLICT, &["pwned"]);
    assert!(
        !out.stderr.contains('\x1b') && !out.stderr.contains('\x07'),
        "raw control characters reached the terminal: {out:?}"
    );
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("REJECTED")),
        "a name forged an output line: {out:?}"
    );
}

// ---- category 5: the output directory of replay --------------------------------------

fn out_is_symlink_to_sentinel(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let out = h.outs.join("link");
    std::os::unix::fs::symlink(&h.sentinel, &out).unwrap();
    h.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        EXIT_USAGE,
        &["not empty"],
    );
}

fn out_is_dangling_symlink(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let out = h.outs.join("dangling");
    std::os::unix::fs::symlink(h.sentinel.join("new-dir"), &out).unwrap();
    h.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        EXIT_ERROR,
        &["cannot create", "File exists"],
    );
    assert!(!h.sentinel.join("new-dir").exists());
}

fn out_is_a_file(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let out = h.outs.join("file");
    fs::write(&out, "mine\n").unwrap();
    h.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        EXIT_ERROR,
        &["cannot use", "Not a directory"],
    );
    assert_eq!(fs::read(&out).unwrap(), b"mine\n");
}

/// Replaying into the ledger's own directory is refused; the journal is untouched.
fn out_inside_ledger_dir(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let out = h.env.journal_dir().join("replayed");
    h.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        EXIT_USAGE,
        &[".ledger"],
    );
    assert!(!out.exists());
}

/// The same through a symlink to the ledger's directory and a `..`.
fn out_into_ledger_dir_through_symlink(h: &mut H) {
    h.env.write("a.txt", "a\n");
    h.record("c1");
    let link = h.outs.join("ledger-link");
    std::os::unix::fs::symlink(h.env.ledger_dir(), &link).unwrap();
    let out = link.join("objects/../replayed");
    h.refuses(
        &["replay", "--at", "c1", "--out", out.to_str().unwrap()],
        EXIT_USAGE,
        &["inside the ledger's own directory"],
    );
    assert!(!h.env.ledger_dir().join("replayed").exists());
}

// ---- category 6: hostile journal records ----------------------------------------------

/// A normal history (c1, c2 on `a.txt`) for the journal cases.
fn two_changes(h: &H) {
    h.env.write("a.txt", "one\n");
    h.record("c1");
    h.env.write("a.txt", "two\n");
    h.record("c2");
}

/// Bytes appended after the last acknowledged record are an unfinished write: cut
/// back (and reported) before replay reads, which then works; the journal verifies.
fn torn_tail_case(h: &mut H, tail: Tail, op: Op) {
    two_changes(h);
    h.append_raw(tail);
    match op {
        Op::ReplayAt => {
            let out = h.out();
            let res = h.ok(&["replay", "--at", "c1", "--out", out.to_str().unwrap()]);
            assert!(res.stderr.contains("recovered"), "{res:?}");
            assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"one\n");
        }
        _ => {
            let res = h.ok(&["revert", "c2"]);
            assert!(res.stderr.contains("recovered"), "{res:?}");
            assert_eq!(h.env.read("a.txt"), b"one\n");
        }
    }
}

/// The frame header of a record that claims `len` payload bytes.
fn header(len: u32, first: u64, last: u64) -> Vec<u8> {
    let mut v = ledger::FRAME_MAGIC.to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&first.to_le_bytes());
    v.extend_from_slice(&last.to_le_bytes());
    v
}

/// A frame whose stored hash is right for a payload that is not an event.
fn hashed_frame(payload: &[u8], first: u64, last: u64) -> Vec<u8> {
    let mut out = Vec::new();
    ledger::encode_frame(
        payload,
        &Hash::of_event_bytes(payload),
        first,
        last,
        &mut out,
    );
    out
}

/// The start of a canonical event (seq, prev, time, actor, change ID, no correlation)
/// followed by `rest`.
fn event_prefix(seq: u64, prev: Hash, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(&0i64.to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(b'm');
    v.extend_from_slice(&[0, 0]); // principal, role: none
    v.extend_from_slice(&1u64.to_le_bytes());
    v.push(b'x');
    v.push(0); // correlation: none
    v.extend_from_slice(rest);
    v
}

/// Makes the bytes to append from the next seq and the head hash.
type Tail = fn(u64, Hash) -> Vec<u8>;

fn torn_tails() -> Vec<(&'static str, Tail)> {
    vec![
        ("garbage-tail", |_, _| {
            let mut r = Rng::new(7);
            r.bytes(1000)
        }),
        ("length-u32-max", |s, _| {
            [header(u32::MAX, s, s), vec![0; 64]].concat()
        }),
        ("length-at-limit-cut-short", |s, _| {
            [header(16 << 20, s, s), vec![0; 4096]].concat()
        }),
        ("valid-hash-garbage-payload", |s, _| {
            hashed_frame(b"\xde\xad\xbe\xef not an event", s, s)
        }),
        ("valid-hash-vec-count-2^61", |s, p| {
            // Body::Change, message None, reverts None, then 2^61 resources.
            let mut rest = 1u32.to_le_bytes().to_vec();
            rest.extend_from_slice(&[0, 0]);
            rest.extend_from_slice(&(1u64 << 61).to_le_bytes());
            hashed_frame(&event_prefix(s, p, &rest), s, s)
        }),
        ("valid-hash-string-len-u64-max", |s, p| {
            // Body::Check whose name claims u64::MAX bytes.
            let mut rest = 2u32.to_le_bytes().to_vec();
            rest.extend_from_slice(&u64::MAX.to_le_bytes());
            rest.extend_from_slice(b"abc");
            hashed_frame(&event_prefix(s, p, &rest), s, s)
        }),
        ("valid-hash-unknown-body-variant", |s, p| {
            hashed_frame(&event_prefix(s, p, &99u32.to_le_bytes()), s, s)
        }),
        ("valid-event-wrong-seq", |s, p| {
            let ev = new_event("skip", vec![]).seal(s + 5, p);
            frame_of(&ev)
        }),
        ("valid-event-wrong-prev", |s, _| {
            let ev = new_event("fork", vec![]).seal(s, Hash([7; 32]));
            frame_of(&ev)
        }),
        ("batch-never-finished", |s, p| {
            let ev = new_event("half", vec![]).seal(s, p);
            let payload = ev.encode();
            let mut out = Vec::new();
            ledger::encode_frame(&payload, &ev.hash(), s, u64::MAX, &mut out);
            out
        }),
    ]
}

/// A byte of an acknowledged record flipped (c2's, at seq 2): the ledger reads up to
/// the damage and refuses appends. A revert of c1 (before the damage) could be applied
/// but never recorded, so it must not touch the workspace.
fn damaged_acknowledged_record(h: &mut H, op: Op) {
    h.env.write("a.txt", "one\n");
    h.record("c1");
    h.env.write("b.txt", "b\n");
    h.record("c2");
    h.env.write("b.txt", "b2\n");
    h.record("c3");
    let seg = last_segment(&h.env);
    let mut bytes = fs::read(&seg).unwrap();
    let mut off = 0;
    for _ in 0..2 {
        off += ledger::decode_frame(&bytes[off..]).unwrap().frame_len as usize;
    }
    bytes[off + ledger::FRAME_HEADER + 10] ^= 0x55;
    fs::write(&seg, &bytes).unwrap();
    h.damaged = true;
    match op {
        Op::Revert => {
            h.refuses(
                &["revert", "c1"],
                EXIT_VERIFY,
                &["seq 2", "nothing was written"],
            );
            assert_eq!(h.env.read("a.txt"), b"one\n");
        }
        Op::RevertDryRun => {
            h.refuses(&["revert", "c1", "--dry-run"], EXIT_VERIFY, &["seq 2"]);
        }
        _ => {
            // Reads stop at the damage: the state after c1 is still there.
            let out = h.out();
            let res = h.ok(&["replay", "--at", "c1", "--out", out.to_str().unwrap()]);
            assert!(res.stderr.contains("seq 2"), "{res:?}");
            assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"one\n");
        }
    }
    let v = h.env.run(["verify"]);
    assert_eq!(v.code, EXIT_VERIFY, "{v:?}");
    assert!(
        fs::read(&seg).unwrap() == bytes,
        "the damaged journal was changed"
    );
}

/// Chain-valid events that break the model's other rules, written straight into the
/// segment (the library would refuse some of them).
fn invariant_breaking_events(h: &mut H, which: &str) {
    two_changes(h);
    h.craft(vec![], &[b"zzz\n"]);
    let seal = |ne: NewEvent, s: u64, p: Hash| ne.seal(s, p);
    let evil = |resources: Vec<ResourceChange>| NewEvent {
        body: Body::Change(Change {
            message: None,
            reverts: None,
            resources,
        }),
        ..new_event("evil", vec![])
    };
    let which = which.to_string();
    let v2 = reg(b"two\n");
    h.append_raw(move |s, p| {
        let ev = match which.as_str() {
            "create-with-old" => seal(
                evil(vec![ResourceChange {
                    key: ResourceKey::file(b"a.txt"),
                    op: ledger::Op::Create,
                    old: reg(b"zzz\n"),
                    new: v2,
                }]),
                s,
                p,
            ),
            "duplicate-keys" => seal(
                evil(vec![
                    rc(b"a.txt", v2, reg(b"one\n")),
                    rc(b"a.txt", v2, None),
                ]),
                s,
                p,
            ),
            "unsorted-keys" => seal(
                evil(vec![
                    rc(b"z.txt", None, reg(b"one\n")),
                    rc(b"a.txt", v2, reg(b"one\n")),
                ]),
                s,
                p,
            ),
            "lying-size" => seal(
                evil(vec![rc(
                    b"a.txt",
                    v2,
                    Some(Content {
                        size: u64::MAX,
                        ..content(b"one\n", Mode::Regular)
                    }),
                )]),
                s,
                p,
            ),
            "empty-change-id" => seal(
                NewEvent {
                    change_id: String::new(),
                    ..evil(vec![rc(b"a.txt", v2, reg(b"one\n"))])
                },
                s,
                p,
            ),
            "reverts-itself" => seal(
                NewEvent {
                    body: Body::Change(Change {
                        message: None,
                        reverts: Some("evil".into()),
                        resources: vec![rc(b"a.txt", v2, reg(b"one\n"))],
                    }),
                    ..new_event("evil", vec![])
                },
                s,
                p,
            ),
            "second-genesis" => seal(
                NewEvent {
                    body: Body::Genesis(ledger::Genesis {
                        ledger_id: [9; 16],
                        format_version: 99,
                    }),
                    ..new_event("evil", vec![])
                },
                s,
                p,
            ),
            other => unreachable!("{other}"),
        };
        frame_of(&ev)
    });
    // Replay at the head and revert the hostile change and the one before it: no
    // panic, nothing outside; whatever they do stays in the workspace or the output
    // directory, and the journal (whose frames and links are all sound) verifies.
    let out = h.out();
    let r = h.run(&["replay", "--at", "evil", "--out", out.to_str().unwrap()]);
    let _ = r;
    let r = h.run(&["revert", "evil"]);
    let _ = r;
    let r = h.run(&["revert", "c2"]);
    let _ = r;
}

/// A 6 MiB event (within the 16 MiB limit): read, replayed and reverted normally.
fn oversized_event(h: &mut H) {
    h.env.write("a.txt", "one\n");
    h.record("c1");
    let big = vec![b'B'; 6 << 20];
    {
        let l = h.open_ledger();
        let mut p = Pending::default();
        l.store().put_bytes(b"two\n", &mut p).unwrap();
        l.commit_content(p).unwrap();
        let mut ne = new_event("big", vec![rc(b"a.txt", reg(b"one\n"), reg(b"two\n"))]);
        ne.meta
            .insert("blob".into(), String::from_utf8(big).unwrap());
        l.append(vec![ne], Precondition::NewChange("big".into()))
            .unwrap();
    }
    h.env.write("a.txt", "two\n");
    let out = h.replay_ok(&["--at", "big"]);
    assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"two\n");
    h.ok(&["revert", "big"]);
    assert_eq!(h.env.read("a.txt"), b"one\n");
}

/// `.ledger/lock` replaced by a symlink to a sentinel file: opening the ledger must not
/// truncate or write the file it points to.
fn lock_symlink(h: &mut H) {
    two_changes(h);
    let lock = h.env.ledger_dir().join("lock");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(h.sentinel.join("victim.txt"), &lock).unwrap();
    let out = h.out();
    let r = h.run(&["replay", "--at", "c1", "--out", out.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("lock"), "{r:?}");
    // Put a real lock file back for the final verify.
    fs::remove_file(&lock).unwrap();
}

/// A journal segment replaced by a symlink to a sentinel file: recovery must not cut
/// (truncate) the file it points to, with or without an index remembering what was
/// acknowledged.
fn segment_symlink(h: &mut H, drop_index: bool) {
    two_changes(h);
    if drop_index {
        fs::remove_dir_all(h.env.ledger_dir().join("index")).unwrap();
    }
    let seg = last_segment(&h.env);
    let keep = h.root().join("outs/segment-copy");
    fs::rename(&seg, &keep).unwrap();
    std::os::unix::fs::symlink(h.sentinel.join("victim.txt"), &seg).unwrap();
    let out = h.out();
    let r = h.run(&["replay", "--at", "c1", "--out", out.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{r:?}");
    let r = h.run(&["revert", "c2"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(h.env.read("a.txt"), b"two\n");
    fs::remove_file(&seg).unwrap();
    fs::rename(&keep, &seg).unwrap();
}

// ---- category 7: export files ----------------------------------------------------------

/// An export of `two_changes` (with `filter` arguments), as raw lines.
fn export_lines(h: &mut H, filter: &[&str]) -> Vec<String> {
    two_changes(h);
    let f = h.out();
    let mut a = vec!["export", "--out", f.to_str().unwrap()];
    a.extend_from_slice(filter);
    h.env.run(&a).success();
    let text = fs::read_to_string(&f).unwrap();
    fs::remove_file(&f).unwrap();
    text.lines().map(str::to_string).collect()
}

/// Line `i` edited through JSON (the other lines stay byte-exact).
fn edit(ls: &mut [String], i: usize, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&ls[i]).unwrap();
    f(&mut v);
    ls[i] = serde_json::to_string(&v).unwrap();
}

fn verify_export_rejects(h: &mut H, lines: &[String], line: u64, needle: &str) {
    let f = h.out();
    fs::write(
        &f,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let r = h.run(&["verify-export", f.to_str().unwrap()]);
    assert_eq!(r.code, EXIT_VERIFY, "{r:?}");
    assert!(r.stderr.contains(&format!("line {line}:")), "{r:?}");
    assert!(r.stderr.contains(needle), "{r:?}");
}

fn export_tree_size_u64_max(h: &mut H) {
    let mut ls = export_lines(h, &[]);
    edit(&mut ls, 0, |v| v["tree_size"] = u64::MAX.into());
    verify_export_rejects(h, &ls, 1, "edited");
}

fn export_huge_proof(h: &mut H) {
    let mut ls = export_lines(h, &["--agent", "agent"]);
    let hashes: Vec<String> = (0..20_000).map(|_| "ab".repeat(32)).collect();
    edit(&mut ls, 1, |v| v["proof"]["hashes"] = hashes.into());
    verify_export_rejects(h, &ls, 2, "proof");
}

fn export_proof_leaf_u64_max(h: &mut H) {
    let mut ls = export_lines(h, &["--agent", "agent"]);
    edit(&mut ls, 1, |v| {
        v["proof"]["leaf_index"] = u64::MAX.into();
        v["proof"]["tree_size"] = u64::MAX.into();
    });
    verify_export_rejects(h, &ls, 2, "proof");
}

fn export_big_meta_value(h: &mut H) {
    let mut ls = export_lines(h, &[]);
    edit(&mut ls, 2, |v| v["meta"]["x"] = "m".repeat(2 << 20).into());
    verify_export_rejects(h, &ls, 3, "edited");
}

fn export_seq_past_tree(h: &mut H) {
    let mut ls = export_lines(h, &[]);
    edit(&mut ls, 2, |v| v["seq"] = u64::MAX.into());
    verify_export_rejects(h, &ls, 3, "");
}

fn export_is_a_directory(h: &mut H) {
    two_changes(h);
    let d = h.outs.join("a-dir");
    fs::create_dir(&d).unwrap();
    let r = h.run(&["verify-export", d.to_str().unwrap()]);
    assert_eq!(r.code, EXIT_ERROR, "{r:?}");
    assert!(r.stderr.contains("a-dir"), "{r:?}");
}

fn export_is_dev_null(h: &mut H) {
    two_changes(h);
    let r = h.run(&["verify-export", "/dev/null"]);
    assert_eq!(r.code, EXIT_VERIFY, "{r:?}");
    assert!(r.stderr.contains("empty"), "{r:?}");
}

// ---- the table ----------------------------------------------------------------------

type CaseFn = Box<dyn Fn(&mut H) + Send + Sync>;
type Named = (&'static str, fn(&mut H));

struct Case {
    category: &'static str,
    name: String,
    run: CaseFn,
}

fn case(
    category: &'static str,
    name: impl Into<String>,
    f: impl Fn(&mut H) + Send + Sync + 'static,
) -> Case {
    Case {
        category,
        name: name.into(),
        run: Box::new(f),
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (name, f) in UNSAFE_NAMES {
        for op in OPS {
            let f = *f;
            let op = *op;
            v.push(case("names", format!("{name}/{op:?}"), move |h| {
                let n = f(h.root());
                unsafe_name_case(h, n, op)
            }));
        }
    }
    for op in OPS {
        let op = *op;
        v.push(case("names", format!("other-namespace/{op:?}"), move |h| {
            other_namespace_case(h, op)
        }));
    }
    let symlinks: Vec<Named> = vec![
        ("symlinked-dir/Revert", |h| symlinked_dir(h, false)),
        ("symlinked-dir/RevertDryRun", |h| symlinked_dir(h, true)),
        ("symlinked-dir-relative-chain", symlinked_dir_relative_chain),
        ("symlinked-deep-ancestor", symlinked_deep_ancestor),
        ("symlinked-dir-recreate", symlinked_dir_recreate),
        ("symlinked-dir-delete", symlinked_dir_delete),
        ("planted-symlink-modify/Revert", |h| {
            planted_symlink_modify(h, false)
        }),
        ("planted-symlink-modify/RevertDryRun", |h| {
            planted_symlink_modify(h, true)
        }),
        ("planted-symlink-recreate", planted_symlink_recreate),
        ("planted-symlink-delete", planted_symlink_delete),
        (
            "recorded-outside-symlink/Revert",
            recorded_outside_symlink_revert,
        ),
        (
            "recorded-outside-symlink/ReplayAt",
            recorded_outside_symlink_replay,
        ),
        (
            "symlink-then-file-beneath/ReplayAt",
            symlink_then_file_beneath_replay,
        ),
        (
            "symlink-then-file-beneath/Revert",
            symlink_then_file_beneath_revert,
        ),
    ];
    for (n, f) in symlinks {
        v.push(case("symlinks", n, f));
    }
    let fs_cases: Vec<Named> = vec![
        ("hardlink-write", hardlink_write),
        ("hardlink-mode", hardlink_mode),
        ("file-replaced-by-directory", file_replaced_by_directory),
        ("directory-replaced-by-file", directory_replaced_by_file),
        ("file-replaced-by-fifo", file_replaced_by_fifo),
        ("directory-back-to-file", directory_back_to_file),
        ("file-and-child/ReplayAt", file_and_child_replay),
        ("out-is-symlink-to-sentinel", out_is_symlink_to_sentinel),
        ("out-is-dangling-symlink", out_is_dangling_symlink),
        ("out-is-a-file", out_is_a_file),
        ("out-inside-ledger-dir", out_inside_ledger_dir),
        (
            "out-into-ledger-dir-through-symlink",
            out_into_ledger_dir_through_symlink,
        ),
    ];
    for (n, f) in fs_cases {
        v.push(case("filesystem", n, f));
    }
    let name_cases: Vec<Named> = vec![
        ("non-utf8/Revert", non_utf8_revert),
        ("non-utf8/ReplayAt", non_utf8_replay),
        ("long-component/Revert", long_component_revert),
        ("long-component/ReplayAt", long_component_replay),
        ("too-long-component/ReplayAt", too_long_component_replay),
        ("too-long-component/Revert", too_long_component_revert),
        ("huge-name/ReplayAt", huge_name_replay),
        ("huge-name/Revert", huge_name_revert),
        ("long-path/ReplayAt", long_path_replay),
        ("deep-path/ReplayAt", deep_path_replay),
        ("case-collision/Revert", case_collision_revert),
        ("case-collision/ReplayAt", case_collision_replay),
        (
            "unicode-normalization/ReplayAt",
            unicode_normalization_replay,
        ),
        ("backslash-name/Revert", backslash_name_revert),
        ("backslash-name/ReplayAt", backslash_name_replay),
        ("nested-ledger-name/ReplayAt", nested_ledger_name_replay),
        ("control-characters/Revert", control_characters_in_name),
    ];
    for (n, f) in name_cases {
        v.push(case("odd-names", n, f));
    }
    for (n, tail) in torn_tails() {
        for op in [Op::ReplayAt, Op::Revert] {
            v.push(case("journal", format!("{n}/{op:?}"), move |h| {
                torn_tail_case(h, tail, op)
            }));
        }
    }
    for op in [Op::Revert, Op::RevertDryRun, Op::ReplayAt] {
        v.push(case(
            "journal",
            format!("damaged-acknowledged-record/{op:?}"),
            move |h| damaged_acknowledged_record(h, op),
        ));
    }
    for which in [
        "create-with-old",
        "duplicate-keys",
        "unsorted-keys",
        "lying-size",
        "empty-change-id",
        "reverts-itself",
        "second-genesis",
    ] {
        v.push(case("journal", format!("invariant/{which}"), move |h| {
            invariant_breaking_events(h, which)
        }));
    }
    v.push(case("journal", "oversized-event", oversized_event));
    v.push(case("journal", "lock-symlink", lock_symlink));
    v.push(case("journal", "segment-symlink", |h| {
        segment_symlink(h, false)
    }));
    v.push(case("journal", "segment-symlink-no-index", |h| {
        segment_symlink(h, true)
    }));
    let export_cases: Vec<Named> = vec![
        ("tree-size-u64-max", export_tree_size_u64_max),
        ("huge-proof", export_huge_proof),
        ("proof-leaf-u64-max", export_proof_leaf_u64_max),
        ("big-meta-value", export_big_meta_value),
        ("seq-past-tree", export_seq_past_tree),
        ("is-a-directory", export_is_a_directory),
        ("is-dev-null", export_is_dev_null),
    ];
    for (n, f) in export_cases {
        v.push(case("export", n, f));
    }
    v
}

/// Cases mostly wait for fsync and child processes, so more run at once than there
/// are cores; `HOSTILE_THREADS` overrides.
fn workers() -> usize {
    std::env::var("HOSTILE_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// Runs the cases of one category on a few threads; reports every failure by name.
fn run_category(category: &str) {
    let only = std::env::var("HOSTILE_CASE").ok();
    let todo: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.category == category)
        .filter(|c| only.as_ref().is_none_or(|o| c.name.contains(o.as_str())))
        .collect();
    let template = TestEnvironment::init();
    let queue = Mutex::new(todo.iter());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers() {
            s.spawn(|| loop {
                let Some(c) = queue.lock().unwrap().next() else {
                    break;
                };
                let res = catch_unwind(AssertUnwindSafe(|| {
                    let mut h = H::new(&template);
                    (c.run)(&mut h);
                    h.finish();
                }));
                if let Err(e) = res {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{category}/{}: {msg}", c.name));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        todo.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_table_has_at_least_50_distinct_revert_and_replay_cases() {
    let all = cases();
    let mut names: Vec<String> = all
        .iter()
        .map(|c| format!("{}/{}", c.category, c.name))
        .collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "case names are not distinct");
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &all {
        *per.entry(c.category).or_default() += 1;
    }
    eprintln!("{n} cases: {per:?}");
    let writing = all.iter().filter(|c| c.category != "export").count();
    assert!(writing >= 50, "only {writing} revert/replay cases");
}

#[test]
fn hostile_names() {
    run_category("names");
}

#[test]
fn hostile_symlinks() {
    run_category("symlinks");
}

#[test]
fn hostile_filesystem() {
    run_category("filesystem");
}

#[test]
fn hostile_odd_names() {
    run_category("odd-names");
}

#[test]
fn hostile_journal() {
    run_category("journal");
}

#[test]
fn hostile_export() {
    run_category("export");
}
