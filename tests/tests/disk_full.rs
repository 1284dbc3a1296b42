//! A full disk: every failing write is a clean error, nothing acknowledged is lost, no
//! half-written object is ever trusted, and appends resume once there is room again.
//!
//! Where the machine allows it (root, or CAP_SYS_ADMIN), the ledger lives on a small
//! tmpfs mounted for the test, filled to a range of levels with a filler file, and the
//! real `ledger` binary and the library run against it. Elsewhere those tests say so
//! and run the injected scenario instead: `ENOSPC` from a `Storage` wrapper around the
//! real `FsStorage`, after a partial write as the kernel does it. The injected journal
//! scenario also runs on its own everywhere.
//!
//! Behaviour this pins down (see also `ledger/src/journal.rs`):
//! - a write that fails before the fsync (`ENOSPC` on tmpfs, ext4 and most local file
//!   systems) leaves the journal exactly as it was and usable at once: the segment is
//!   cut back to its last good length and the next append (after space returns)
//!   succeeds without reopening;
//! - a failed fsync (`ENOSPC` reported there, as on NFS or thin provisioning) poisons
//!   the journal by design: nothing is retried, every append is refused until the
//!   ledger is reopened, and reopening finds the journal as it was before that batch;
//! - content is written to `objects/tmp/` and renamed into place only when whole, so a
//!   failed write leaves no object under its name and nothing in `objects/tmp/`;
//! - `ledger record` runs out of space while storing content (new content, but also a
//!   file changed within the last second: it is re-read and copied to `objects/tmp/`
//!   before it is found to be stored already), or at the journal append; it exits 1
//!   naming the file and "No space left on device";
//! - when the index database cannot be opened for lack of space, opening throws it
//!   away and rebuilds it from the journal ("rebuilt the indexes ... index
//!   unreadable"), which also frees its space.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ledger::{
    Actor, Body, ContentStore, Error, Failure, FsStorage, Journal, Ledger, NewEvent, OpenOptions,
    Pending, Precondition, Recovery, SegmentStamp, Storage, VerifyOptions,
};

const ENOSPC: i32 = 28;

fn actor() -> Actor {
    Actor {
        agent: "disk-full".into(),
        principal: None,
        role: None,
    }
}

fn event(i: u64, message_len: usize) -> NewEvent {
    NewEvent {
        time_us: 1_800_000_000_000_000 + i as i64,
        actor: actor(),
        change_id: format!("full-{i}"),
        correlation_id: None,
        body: Body::Failure(Failure {
            stage: "disk-full".into(),
            error: "x".repeat(message_len),
            exit_code: None,
        }),
        meta: BTreeMap::new(),
    }
}

fn open_opts() -> OpenOptions {
    OpenOptions {
        lock_timeout: Duration::from_secs(10),
    }
}

fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

fn says_no_space(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("os error 28")
}

// ---- a small tmpfs ---------------------------------------------------------------------

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one of `size` (as `mount -o size=` takes it), or says why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("ledger-full-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the file system a new size (space returning the other way).
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount to {size} failed");
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Grows the filler until the file system is full, then gives back `leave` bytes
    /// (whole pages). Returns the filler's size.
    fn fill(&self, leave: u64) -> u64 {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if is_enospc(&e) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        // A short final write may have left part of a chunk; `len` is what is there.
        let len = f.metadata().unwrap().len();
        let keep = len.saturating_sub(leave) / 4096 * 4096;
        f.set_len(keep).unwrap();
        keep
    }

    fn unfill(&self) {
        let _ = fs::remove_file(self.filler());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

/// Every object under `objects/` holds whole data hashing to its name, and nothing is
/// left in `objects/tmp/`.
fn assert_store_whole(ledger_dir: &Path, ctx: &str) -> usize {
    let objects = ledger_dir.join("objects");
    let tmp: Vec<_> = files_under(&objects.join("tmp"));
    assert!(tmp.is_empty(), "{ctx}: leftovers in objects/tmp: {tmp:?}");
    let store = ContentStore::open(&objects).unwrap();
    let mut n = 0;
    for p in files_under(&objects) {
        let rel = p.strip_prefix(&objects).unwrap();
        let hex: String = rel.iter().map(|c| c.to_str().unwrap()).collect();
        let hash = ledger::Hash::from_hex(&hex)
            .unwrap_or_else(|| panic!("{ctx}: stray file in objects: {}", p.display()));
        store
            .verify(&hash)
            .unwrap_or_else(|e| panic!("{ctx}: object {hex} is not whole: {e}"));
        n += 1;
    }
    n
}

// ---- injected ENOSPC -------------------------------------------------------------------

/// How much room the injected file system has left, shared with the test.
#[derive(Clone, Default)]
struct Room(Arc<Mutex<RoomState>>);

#[derive(Default)]
struct RoomState {
    /// Bytes appends may still write; `None`: unlimited.
    bytes: Option<u64>,
    /// The next fsync fails with ENOSPC.
    fail_sync: bool,
}

/// The real segment files, with appends that run out of room the way `write(2)` does:
/// as much as fits is written, then `ENOSPC`.
struct FullDisk {
    inner: FsStorage,
    room: Room,
}

impl Storage for FullDisk {
    fn describe(&self, segment: u64) -> String {
        self.inner.describe(segment)
    }
    fn segments(&self) -> io::Result<Vec<u64>> {
        self.inner.segments()
    }
    fn len(&self, segment: u64) -> io::Result<u64> {
        self.inner.len(segment)
    }
    fn stamp(&self, segment: u64) -> io::Result<SegmentStamp> {
        self.inner.stamp(segment)
    }
    fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(segment, offset, buf)
    }
    fn create(&mut self, segment: u64) -> io::Result<()> {
        self.inner.create(segment)
    }
    fn append(&mut self, segment: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.room.0.lock().unwrap();
        match st.bytes {
            Some(left) if (bytes.len() as u64) > left => {
                self.inner.append(segment, &bytes[..left as usize])?;
                st.bytes = Some(0);
                Err(io::Error::from_raw_os_error(ENOSPC))
            }
            Some(left) => {
                st.bytes = Some(left - bytes.len() as u64);
                self.inner.append(segment, bytes)
            }
            None => self.inner.append(segment, bytes),
        }
    }
    fn sync(&mut self, segment: u64) -> io::Result<()> {
        let mut st = self.room.0.lock().unwrap();
        if std::mem::take(&mut st.fail_sync) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        self.inner.sync(segment)
    }
    fn truncate(&mut self, segment: u64, len: u64) -> io::Result<()> {
        self.inner.truncate(segment, len)
    }
    fn remove(&mut self, segment: u64) -> io::Result<()> {
        self.inner.remove(segment)
    }
}

fn all_seqs(j: &Journal) -> Vec<u64> {
    let mut v = Vec::new();
    j.scan_all(&mut |r| {
        v.push(r.event.seq);
        Ok(())
    })
    .unwrap();
    v
}

/// The journal over real files with `ENOSPC` injected: at several points inside a
/// batch's write, and at its fsync.
fn injected_journal_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let room = Room::default();
    let storage = FullDisk {
        inner: FsStorage::new(&jdir).unwrap(),
        room: room.clone(),
    };
    let (mut j, _) = Journal::open(Box::new(storage), None, None).unwrap();
    j.set_segment_target(4_000);
    let mut next = 0u64;
    let mut append = |j: &mut Journal, n: u64, len: usize| {
        let evs = (next..next + n).map(|i| event(i, len)).collect();
        let r = j.append(evs);
        if r.is_ok() {
            next += n;
        }
        r
    };
    for _ in 0..5 {
        append(&mut j, 2, 300).unwrap();
    }
    // The non-empty segments (a failed append may leave the new, empty segment it
    // rotated to; opening removes it).
    let journal_bytes = || -> BTreeMap<PathBuf, Vec<u8>> {
        files_under(&jdir)
            .into_iter()
            .map(|p| (p.clone(), fs::read(&p).unwrap()))
            .filter(|(_, b)| !b.is_empty())
            .collect()
    };
    // Out of room at every stage of a three-record batch's write (nothing, a header,
    // mid-payload, all but the last byte).
    for room_left in [0u64, 10, 24, 200, 500, 1_100] {
        let before = journal_bytes();
        let head = j.head();
        room.0.lock().unwrap().bytes = Some(room_left);
        let err = append(&mut j, 3, 350).unwrap_err();
        let ctx = format!("{room_left} bytes of room");
        match &err {
            Error::Io { source, .. } => assert!(is_enospc(source), "{ctx}: {err}"),
            other => panic!("{ctx}: not an I/O error: {other}"),
        }
        assert!(says_no_space(&err.to_string()), "{ctx}: {err}");
        assert_eq!(j.head(), head, "{ctx}");
        assert!(
            journal_bytes() == before,
            "{ctx}: the journal was not put back"
        );
        // Space returns: the same journal appends at once, continuing the chain.
        room.0.lock().unwrap().bytes = None;
        let recs = append(&mut j, 1, 100).unwrap();
        assert_eq!(recs[0].event.seq, head.unwrap().seq + 1, "{ctx}");
    }
    // ENOSPC at fsync: refused until reopened, never retried into a success.
    let head = j.head();
    room.0.lock().unwrap().fail_sync = true;
    let err = append(&mut j, 2, 100).unwrap_err();
    assert!(says_no_space(&err.to_string()), "{err}");
    let again = append(&mut j, 1, 100);
    assert!(
        matches!(again, Err(Error::Refused(_))),
        "a journal whose fsync failed took an append: {:?}",
        again.map(|r| r[0].event.seq)
    );
    drop(j);
    let (mut j, rec) = Journal::open(Box::new(FsStorage::new(&jdir).unwrap()), None, None).unwrap();
    assert_eq!(rec, Recovery::default(), "the failed batch was put back");
    assert_eq!(j.head(), head);
    let seqs = all_seqs(&j);
    assert_eq!(seqs, (0..next).collect::<Vec<_>>());
    j.append(vec![event(next, 10)]).unwrap();
    assert_eq!(all_seqs(&j).len() as u64, next + 1);
    eprintln!(
        "injected ENOSPC: 6 short writes and 1 failed fsync, journal of {} records intact",
        next + 1
    );
}

#[test]
fn injected_enospc_in_the_journal_is_clean_and_appends_resume() {
    injected_journal_scenario();
}

// ---- a real full file system -----------------------------------------------------------

/// The library on a full tmpfs: a journal append that cannot extend the segment, and
/// content that cannot be stored, fail with ENOSPC; nothing changes; the same open
/// ledger appends once the filler is gone.
#[test]
fn library_appends_on_a_full_filesystem_fail_cleanly_and_resume() {
    let fs_ = match Tmpfs::mount("4m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("no tmpfs ({why}); running the injected-ENOSPC scenario instead");
            return injected_journal_scenario();
        }
    };
    eprintln!("running on a 4 MiB tmpfs at {}", fs_.path().display());
    let ws = fs_.path().join("ws");
    fs::create_dir(&ws).unwrap();
    let ledger = Ledger::init(&ws, actor()).unwrap();
    for i in 1..=5 {
        ledger
            .append(vec![event(i, 200)], Precondition::None)
            .unwrap();
    }
    let dir = ws.join(".ledger");
    let seg = dir.join("journal").join(format!("{:020}.seg", 0));
    let head = ledger.head().unwrap();
    let journal = fs::read(&seg).unwrap();

    fs_.fill(0);
    // An event bigger than a page cannot fit in the segment's last page.
    let err = ledger
        .append(vec![event(6, 9_000)], Precondition::None)
        .unwrap_err();
    assert!(says_no_space(&err.to_string()), "{err}");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(ledger.head(), Some(head));
    assert!(fs::read(&seg).unwrap() == journal, "the segment changed");
    assert!(ledger.damaged().is_none());
    // Content that does not fit: an error, and no trace in the store.
    let mut pending = Pending::default();
    let big: Vec<u8> = Rng::new(3).bytes(300_000);
    let err = ledger.store().put_bytes(&big, &mut pending).unwrap_err();
    assert!(says_no_space(&err.to_string()), "{err}");
    assert!(pending.is_empty());
    assert!(!ledger.store().contains(&ledger::Hash::of_content(&big)));
    assert_store_whole(&dir, "after the failed put");
    // Reading and verifying need no space.
    let rep = ledger.verify(VerifyOptions::default()).unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(rep.events, 6);

    fs_.unfill();
    let recs = ledger
        .append(vec![event(6, 9_000)], Precondition::None)
        .unwrap();
    assert_eq!(recs[0].event.seq, head.seq + 1);
    let mut pending = Pending::default();
    let h = ledger.store().put_bytes(&big, &mut pending).unwrap();
    ledger.commit_content(pending).unwrap();
    assert!(ledger.store().get(&h).unwrap() == big);
    drop(ledger);
    let (ledger, report) = Ledger::open_dir(&dir, &open_opts()).unwrap();
    assert_eq!(report.recovery, Recovery::default());
    let rep = ledger.verify(VerifyOptions::default()).unwrap();
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(rep.events, 7);
}

/// `ledger record` on a small tmpfs filled to many levels, from no room at all to a
/// few dozen pages: each run either records (and that change is kept) or exits 1 with
/// "No space left on device" and changes nothing; `ledger verify` passes after each;
/// once the filler is gone the pending change records; after the file system grows a
/// large file records too.
#[test]
fn cli_record_on_a_full_filesystem_fails_cleanly_and_resumes() {
    let fs_ = match Tmpfs::mount("3m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("no tmpfs ({why}); running the injected-ENOSPC scenario instead");
            return injected_journal_scenario();
        }
    };
    eprintln!("running on a 3 MiB tmpfs at {}", fs_.path().display());
    let env = TestEnvironment::new_in(fs_.path());
    env.run(["init"]).success();
    let mut rng = Rng::new(11);
    env.write("seed/random.bin", rng.bytes(150_000));
    env.write("seed/text.txt", "some text\n".repeat(2_000));
    env.write("seed/small.txt", "small\n");
    let mut acked = vec![env.record("a", &[])];
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for (round, pages) in [0u64, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]
        .into_iter()
        .enumerate()
    {
        // The change to record: new content (compressible and not), a deletion.
        env.write(format!("r{round}/data.bin"), rng.bytes(20_000));
        env.write(format!("r{round}/note.txt"), format!("round {round}\n"));
        if round > 0 {
            env.remove(format!("r{}/note.txt", round - 1));
        }
        fs_.fill(pages * 4096);
        let journal = env.journal_bytes();
        let out = env.run(["record", "--agent", "a"]);
        let ctx = format!("round {round}, {pages} pages free");
        assert!(
            out.code == EXIT_OK || out.code == EXIT_ERROR,
            "{ctx}: neither success nor a clean error: {out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{ctx}: {out:?}");
        if out.code == EXIT_OK {
            acked.push(out.stdout.trim().to_string());
            eprintln!("{ctx}: recorded: {}", out.stderr.trim());
            *outcomes.entry("recorded").or_default() += 1;
        } else {
            assert!(says_no_space(&out.stderr), "{ctx}: unclear error: {out:?}");
            assert!(out.stdout.is_empty(), "{ctx}: {out:?}");
            assert!(env.journal_bytes() == journal, "{ctx}: the journal changed");
            *outcomes.entry("refused: no space").or_default() += 1;
            eprintln!("{ctx}: {}", out.stderr.trim());
        }
        assert_store_whole(&env.ledger_dir(), &ctx);
        fs_.unfill();
        // Nothing acknowledged is lost, and what failed records now.
        let v = env.verify_ok();
        let logged = env.log_ids(&[]);
        for id in &acked {
            assert!(logged.contains(id), "{ctx}: {id} lost: {logged:?}");
        }
        let out = env.run(["status", "--json"]).success();
        if out.json()["clean"] != true {
            acked.push(env.record("a", &[]));
            *outcomes.entry("recorded after space returned").or_default() += 1;
        }
        assert!(v["events"].as_u64().unwrap() >= acked.len() as u64);
    }
    // Changes that need no new content (deletions) with a long message: here the
    // journal append itself is what runs out of room, when opening got that far.
    // Files changed within the last second are re-read (and so copied to objects/tmp
    // before deduplication) by every scan; let them age and be cached first.
    std::thread::sleep(Duration::from_millis(1_100));
    env.run(["record", "--agent", "a"]).success();
    let long_message = "m".repeat(12_000);
    for (round, pages) in [0u64, 1, 2, 3, 4, 6].into_iter().enumerate() {
        env.remove(format!("r{round}/data.bin"));
        fs_.fill(pages * 4096);
        let journal = env.journal_bytes();
        let out = env.run(["record", "--agent", "a", "-m", &long_message]);
        let ctx = format!("deletion round {round}, {pages} pages free");
        assert!(
            out.code == EXIT_OK || out.code == EXIT_ERROR,
            "{ctx}: neither success nor a clean error: {out:?}"
        );
        if out.code == EXIT_OK {
            acked.push(out.stdout.trim().to_string());
            *outcomes.entry("deletion recorded").or_default() += 1;
        } else {
            assert!(says_no_space(&out.stderr), "{ctx}: unclear error: {out:?}");
            assert!(env.journal_bytes() == journal, "{ctx}: the journal changed");
            let what = if out.stderr.contains("journal") {
                "deletion refused: journal write"
            } else {
                "deletion refused: other write"
            };
            *outcomes.entry(what).or_default() += 1;
            eprintln!("{ctx}: {}", out.stderr.trim());
        }
        assert_store_whole(&env.ledger_dir(), &ctx);
        fs_.unfill();
        env.verify_ok();
        let logged = env.log_ids(&[]);
        for id in &acked {
            assert!(logged.contains(id), "{ctx}: {id} lost: {logged:?}");
        }
        let out = env.run(["status", "--json"]).success();
        if out.json()["clean"] != true {
            acked.push(env.record("a", &[]));
            *outcomes.entry("recorded after space returned").or_default() += 1;
        }
    }
    assert!(
        outcomes.get("refused: no space").copied().unwrap_or(0) > 0,
        "no round ran out of space: {outcomes:?}"
    );
    // With 4 KiB pages the fill levels above are exact, and the deletion rounds with a
    // page or two free fail at the journal append itself.
    let page = Command::new("getconf").arg("PAGESIZE").output();
    if page.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "4096") {
        assert!(
            outcomes.contains_key("deletion refused: journal write"),
            "no journal append ran out of space: {outcomes:?}"
        );
    }
    // More room: a file larger than the old file system records.
    fs_.resize("16m");
    env.write("big/large.bin", Rng::new(5).bytes(5 << 20));
    acked.push(env.record("a", &[]));
    let v = env.verify_ok();
    assert_eq!(env.log_ids(&[]).len(), acked.len());
    eprintln!(
        "{} rounds: {outcomes:?}; {} changes, {} events, all verified",
        15 + 6,
        acked.len(),
        v["events"]
    );
}
