//! [`Ledger`]: the journal, content store and indexes of one `.ledger/` directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{Actor, Body, Genesis, NewEvent, FORMAT_VERSION};
use crate::index::{Index, IndexState};
use crate::journal::{
    Head, Journal, Position, Record, RecordRef, Recovery, SegmentConsume, SegmentPrepare, TailHint,
};
use crate::storage::{FsStorage, Storage};
use crate::store::{ContentStore, Pending};

/// Name of the ledger directory inside a workspace.
pub const LEDGER_DIR: &str = ".ledger";
const FORMAT_FILE: &str = "FORMAT";
const FORMAT_LINE: &str = "agent-ledger journal v1\n";

/// How to open a ledger.
#[derive(Clone, Debug)]
pub struct OpenOptions2 {
    /// How long to wait for another process to finish before refusing.
    pub lock_timeout: Duration,
}

impl Default for OpenOptions2 {
    fn default() -> Self {
        OpenOptions2 {
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// What opening had to do.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// A torn tail that was cut back.
    pub recovery: Recovery,
    /// Why the indexes were rebuilt, if they were.
    pub reindexed: Option<String>,
    /// Damage found before the tail: appends are refused while it stands.
    pub damaged: Option<String>,
}

/// A precondition checked atomically with an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The change ID must not exist yet.
    NewChange(String),
    /// The change ID must exist.
    ExistingChange(String),
    /// The first of the events must get this seq: nothing else may be appended first
    /// (a checkpoint states the head it was computed at).
    NextSeq(u64),
}

type Item = (u64, Vec<NewEvent>, Precondition);

/// Appends waiting for the next journal batch (group commit).
struct Queue {
    next: u64,
    items: Vec<Item>,
    done: BTreeMap<u64, Result<Vec<Record>>>,
    /// An appender is writing a batch; the others wait on `queue_cv`.
    leading: bool,
}

/// Records appended to the journal, on their way into the sled indexes.
struct IndexJob {
    records: Vec<Record>,
    tail: Option<TailHint>,
}

/// How far the background index writer has come.
#[derive(Default)]
struct IndexProgress {
    /// Next seq handed to the writer.
    sent: u64,
    /// Next seq the sled indexes hold.
    done: u64,
    /// Why the writer stopped, if it did (the index catches up on the next open).
    error: Option<String>,
    /// Change IDs handed to the writer but not yet in sled, with their first seq.
    changes: BTreeMap<String, u64>,
}

struct Indexer {
    tx: Option<SyncSender<IndexJob>>,
    thread: Option<JoinHandle<()>>,
}

/// Jobs waiting for the index writer before an append blocks (backpressure).
const INDEX_QUEUE: usize = 64;

struct Writer {
    journal: Journal,
    damaged: Option<String>,
}

/// One open ledger. Holds the directory's lock until dropped.
pub struct Ledger {
    dir: PathBuf,
    writer: Mutex<Writer>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    store: ContentStore,
    index: Index,
    progress: Arc<(Mutex<IndexProgress>, Condvar)>,
    indexer: Mutex<Indexer>,
    /// See [`Ledger::exiting`].
    exiting: std::sync::atomic::AtomicBool,
    _lock: File,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // Let the index writer finish what it was given, so the next open starts level.
        let ix = self.indexer.get_mut().unwrap_or_else(|e| e.into_inner());
        ix.tx.take();
        if let Some(t) = ix.thread.take() {
            let _ = t.join();
        }
        if self.exiting.load(std::sync::atomic::Ordering::Relaxed) {
            // Flush as sled's own drop would, then keep its handle for the process exit
            // to reclaim. A failed flush only means sled catches up from the journal
            // when it is next opened.
            self.index.keep_for_exit();
        }
    }
}

/// Folds the new tail into the index state after `records` were indexed.
fn advance_state(st: &mut IndexState, records: &[Record]) {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    if first.event.seq == 0 {
        st.genesis = Some(first.hash);
    }
    if st.indexed == first.event.seq {
        st.indexed = last.event.seq + 1;
    }
}

/// Notes the journal's tail (and its segment's stamp) in the index state.
fn record_tail(st: &mut IndexState, tail: Option<TailHint>) {
    if tail.is_none() {
        return;
    }
    st.tail = tail;
    if let Some((seg, stamp)) = tail.map(|t| (t.segment, t.stamp)) {
        match st.stamps.iter_mut().find(|(s, _)| *s == seg) {
            Some(e) => e.1 = stamp,
            None => st.stamps.push((seg, stamp)),
        }
    }
}

/// The background index writer: applies jobs in order, merging the ones that queue up.
fn run_indexer(
    index: Index,
    rx: Receiver<IndexJob>,
    progress: Arc<(Mutex<IndexProgress>, Condvar)>,
) {
    while let Ok(job) = rx.recv() {
        let mut records = job.records;
        // Every job's tail, in order: a segment sealed by an earlier job keeps the stamp
        // it had when it was last written.
        let mut tails = vec![job.tail];
        while records.len() < 65_536 {
            match rx.try_recv() {
                Ok(more) => {
                    records.extend(more.records);
                    tails.push(more.tail);
                }
                Err(_) => break,
            }
        }
        let failed = progress.0.lock().unwrap().error.is_some();
        let res = if failed {
            Ok(())
        } else {
            index.add(&records).and_then(|()| {
                let mut st = index.state()?;
                advance_state(&mut st, &records);
                for tail in tails {
                    record_tail(&mut st, tail);
                }
                index.set_state(&st)
            })
        };
        let (lock, cv) = &*progress;
        let mut p = lock.lock().unwrap();
        match res {
            Ok(()) if !failed => {
                if let Some(last) = records.last() {
                    p.done = p.done.max(last.event.seq + 1);
                }
                for r in &records {
                    if p.changes.get(&r.event.change_id) == Some(&r.event.seq) {
                        p.changes.remove(&r.event.change_id);
                    }
                }
            }
            Ok(()) => {}
            Err(e) => p.error = Some(e.to_string()),
        }
        cv.notify_all();
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Rejects IDs that would be ambiguous in indexes or on a command line.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 200 {
        return Err(Error::Invalid(format!(
            "{what} must be 1 to 200 bytes long, got {} bytes",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Invalid(format!(
            "{what} {id:?} contains {c:?}; use letters, digits and punctuation"
        )));
    }
    Ok(())
}

fn lock(dir: &Path, timeout: Duration) -> Result<File> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(crate::storage::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, crate::storage::not_a_link(e)))?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= timeout {
                    let holder = fs::read_to_string(&path).unwrap_or_default();
                    let holder = holder.trim();
                    let holder = if holder.is_empty() {
                        "unknown process".to_string()
                    } else {
                        format!("pid {holder}")
                    };
                    return Err(Error::Locked { holder });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
    }
    // The pid is only for messages; the kernel releases the lock when the process dies.
    // It is written over the last one, padded to a fixed width, so the file keeps its
    // length and its block: truncating it freed the block every time, and freeing a
    // block can wait for the device (ext4 without a journal, mounted with `discard`,
    // trims it synchronously; that was 0.4 to 2.5 ms of every command).
    let _ = write_holder(&f);
    Ok(f)
}

/// Width of the pid record in the lock file: the pid, spaces, a newline.
const HOLDER_WIDTH: usize = 21;

fn write_holder(f: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let record = format!("{:<w$}\n", std::process::id(), w = HOLDER_WIDTH - 1);
    f.write_all_at(record.as_bytes(), 0)?;
    if f.metadata()?.len() > HOLDER_WIDTH as u64 {
        f.set_len(HOLDER_WIDTH as u64)?;
    }
    Ok(())
}

impl Ledger {
    /// Creates `workspace/.ledger` and writes the genesis event. Refuses if one exists.
    pub fn init(workspace: &Path, actor: Actor) -> Result<Ledger> {
        let dir = workspace.join(LEDGER_DIR);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(dir))
            }
            Err(e) => return Err(Error::io("creating", &dir, e)),
        }
        let result = (|| {
            fs::write(dir.join(FORMAT_FILE), FORMAT_LINE)
                .map_err(|e| Error::io("writing", dir.join(FORMAT_FILE), e))?;
            let (ledger, _) = Self::open_dir(&dir, &OpenOptions2::default())?;
            let mut id = [0u8; 16];
            let seed =
                blake3::hash(format!("{}:{}:{:?}", std::process::id(), now_us(), dir).as_bytes());
            id.copy_from_slice(&seed.as_bytes()[..16]);
            ledger.append(
                vec![NewEvent {
                    time_us: now_us(),
                    actor,
                    change_id: "genesis".into(),
                    correlation_id: None,
                    body: Body::Genesis(Genesis {
                        ledger_id: id,
                        format_version: FORMAT_VERSION,
                    }),
                    meta: BTreeMap::new(),
                }],
                Precondition::None,
            )?;
            crate::storage::sync_dir(workspace).map_err(|e| Error::io("syncing", workspace, e))?;
            Ok(ledger)
        })();
        if result.is_err() {
            // We created the directory in this call, so removing it undoes exactly that.
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    /// Finds the ledger directory for a workspace path: `path/.ledger`, searching upwards.
    pub fn find(start: &Path) -> Result<PathBuf> {
        let mut p = Some(start);
        while let Some(d) = p {
            let cand = d.join(LEDGER_DIR);
            if cand.join(FORMAT_FILE).is_file() {
                return Ok(cand);
            }
            p = d.parent();
        }
        Err(Error::NotFound(start.to_path_buf()))
    }

    /// Opens a `.ledger` directory: takes the lock, recovers a torn journal tail,
    /// brings the indexes up to date (rebuilding them if needed).
    pub fn open_dir(dir: &Path, opts: &OpenOptions2) -> Result<(Ledger, OpenReport)> {
        Self::open_dir_then(dir, opts, || ()).map(|(l, r, ())| (l, r))
    }

    /// [`Ledger::open_dir`], calling `locked` as soon as the lock is held and before
    /// the indexes and the journal are opened, so that work which needs only the lock
    /// (such as starting to look at the workspace on other threads) can overlap the
    /// rest of the opening. Its result is returned with the ledger.
    pub fn open_dir_then<T>(
        dir: &Path,
        opts: &OpenOptions2,
        locked: impl FnOnce() -> T,
    ) -> Result<(Ledger, OpenReport, T)> {
        match fs::read_to_string(dir.join(FORMAT_FILE)) {
            Ok(s) if s == FORMAT_LINE => {}
            Ok(s) => {
                return Err(Error::Invalid(format!(
                    "{} says {:?}; this build reads {:?}",
                    dir.join(FORMAT_FILE).display(),
                    s.trim(),
                    FORMAT_LINE.trim()
                )))
            }
            Err(_) => return Err(Error::NotFound(dir.to_path_buf())),
        }
        let lock = lock(dir, opts.lock_timeout)?;
        let then = locked();
        let mut report = OpenReport::default();
        let index_dir = dir.join("index");
        let (index, state) = match Index::open(&index_dir) {
            Ok(x) => x,
            Err(e) => {
                // Derived data only: throw it away and rebuild.
                report.reindexed = Some(format!("index unreadable ({e})"));
                let _ = fs::remove_dir_all(&index_dir);
                Index::open(&index_dir)?
            }
        };
        let storage = FsStorage::new(&dir.join("journal"))
            .map_err(|e| Error::io("opening", dir.join("journal"), e))?;
        let store = ContentStore::open(&dir.join("objects"))?;
        let acknowledged = state.tail.map(|t| t.head.seq);
        let (journal, recovery) = Journal::open(Box::new(storage), state.tail, acknowledged)?;
        report.damaged = journal.damage().map(str::to_string);
        report.recovery = recovery;
        let ledger = Ledger {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                journal,
                damaged: report.damaged.clone(),
            }),
            queue: Mutex::new(Queue {
                next: 0,
                items: Vec::new(),
                done: BTreeMap::new(),
                leading: false,
            }),
            queue_cv: Condvar::new(),
            store,
            index,
            progress: Arc::new((Mutex::new(IndexProgress::default()), Condvar::new())),
            indexer: Mutex::new(Indexer {
                tx: None,
                thread: None,
            }),
            exiting: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        };
        ledger.catch_up(state, &mut report)?;
        let next = ledger.writer.lock().unwrap().journal.next_seq();
        {
            let mut p = ledger.progress.0.lock().unwrap();
            p.sent = next;
            p.done = next;
        }
        let (tx, rx) = sync_channel(INDEX_QUEUE);
        let (index, progress) = (ledger.index.clone(), ledger.progress.clone());
        let thread = std::thread::Builder::new()
            .name("ledger-index".into())
            .spawn(move || run_indexer(index, rx, progress))
            .map_err(|e| Error::Index(format!("cannot start the index writer: {e}")))?;
        *ledger.indexer.lock().unwrap() = Indexer {
            tx: Some(tx),
            thread: Some(thread),
        };
        Ok((ledger, report, then))
    }

    /// Waits until the sled indexes hold every appended event.
    pub fn sync_index(&self) -> Result<()> {
        let (lock, cv) = &*self.progress;
        let mut p = lock.lock().unwrap();
        loop {
            if let Some(e) = p.error.clone() {
                drop(p);
                // The index writer stopped (a full disk, say): catch the index up from
                // the journal now, as opening would.
                if self.recover_index().is_ok() {
                    return Ok(());
                }
                return Err(Error::Index(format!(
                    "updating the index failed ({e}); it is rebuilt from the journal when the ledger is next opened, or run `ledger reindex`"
                )));
            }
            if p.done >= p.sent {
                return Ok(());
            }
            p = cv.wait(p).unwrap();
        }
    }

    /// [`Ledger::sync_index`] for a caller holding the writer (so nothing new is queued).
    fn sync_index_locked(&self, w: &mut MutexGuard<'_, Writer>) -> Result<()> {
        let (lock, cv) = &*self.progress;
        let mut p = lock.lock().unwrap();
        loop {
            if p.error.is_some() {
                drop(p);
                return self.recover_index_locked(w);
            }
            if p.done >= p.sent {
                return Ok(());
            }
            p = cv.wait(p).unwrap();
        }
    }

    /// Marks the index writer as failed, as a sled error would (tests of the recovery).
    #[doc(hidden)]
    pub fn fail_index_writer(&self, why: &str) {
        let (lock, cv) = &*self.progress;
        lock.lock().unwrap().error = Some(why.to_string());
        cv.notify_all();
    }

    /// After the index writer failed: brings the indexes level with the journal from
    /// what sled holds. Only when the writer lock is free (a caller holding it gets the
    /// error instead).
    fn recover_index(&self) -> Result<()> {
        let Ok(mut w) = self.writer.try_lock() else {
            return Err(Error::Index("the writer is busy".into()));
        };
        self.recover_index_locked(&mut w)
    }

    fn recover_index_locked(&self, w: &mut MutexGuard<'_, Writer>) -> Result<()> {
        let state = self.index.state()?;
        self.catch_up_locked(w, state, &mut OpenReport::default())?;
        let next = w.journal.next_seq();
        let mut p = self.progress.0.lock().unwrap();
        *p = IndexProgress {
            sent: next,
            done: next,
            ..IndexProgress::default()
        };
        Ok(())
    }

    /// Whether a change ID exists (its first seq), counting appends still on their way
    /// to the index writer.
    fn change_first_seq(&self, j: &Journal, id: &str) -> Result<Option<u64>> {
        // Pending first, then the change index: the writer adds to it before forgetting
        // the pending entry, so an ID is always in one or the other.
        if let Some(s) = self.progress.0.lock().unwrap().changes.get(id) {
            return Ok(Some(*s));
        }
        let candidates = self.candidates(id, false)?;
        self.first_seq_of(j, id, candidates)
    }

    /// The first of `candidates` (seqs the change index names for `id`) that is an
    /// event of change `id`.
    fn first_seq_of(&self, j: &Journal, id: &str, candidates: Vec<u64>) -> Result<Option<u64>> {
        let records = self.checked_records(j, id, false, candidates)?;
        Ok(records.first().map(|r| r.event.seq))
    }

    /// The seqs the flat change index names for change `id` (`reverting`: for the
    /// changes reverting `id`): candidates only, two IDs may share a key. Read without
    /// the writer lock: the lookup may wait for the disk.
    fn candidates(&self, id: &str, reverting: bool) -> Result<Vec<u64>> {
        if reverting {
            self.index.revert_candidates(id)
        } else {
            self.index.change_candidates(id)
        }
    }

    /// The events among `candidates` ([`Ledger::candidates`]) that are events of change
    /// `id` (`reverting`: that revert `id`), in seq order.
    fn checked_records(
        &self,
        j: &Journal,
        id: &str,
        reverting: bool,
        candidates: Vec<u64>,
    ) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(candidates.len());
        for seq in candidates {
            let pos = self
                .index
                .position(seq)?
                .ok_or_else(|| Error::Index(format!("no position for seq {seq}")))?;
            let r = j.read_at(pos)?;
            let hit = if reverting {
                matches!(&r.event.body, Body::Change(c) if c.reverts.as_deref() == Some(id))
            } else {
                r.event.change_id == id
            };
            if hit && r.event.seq == seq {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// [`Ledger::checked_records`] once the index writer is level.
    fn change_records(&self, id: &str, reverting: bool) -> Result<Vec<Record>> {
        self.sync_index()?;
        let candidates = self.candidates(id, reverting)?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.writer.lock().unwrap();
        self.checked_records(&w.journal, id, reverting, candidates)
    }

    /// The first seq of change `id`, if it exists (flat index: sled stays closed).
    pub fn change_exists(&self, id: &str) -> Result<Option<u64>> {
        self.sync_index()?;
        // The change index is read without the writer (its lookup may wait for the
        // disk, and other threads of the same command need the writer meanwhile: a
        // revert looks for a fresh ID beside its planning); the writer is taken only to
        // read candidate events. Pending first, as in `change_first_seq`.
        if let Some(s) = self.progress.0.lock().unwrap().changes.get(id) {
            return Ok(Some(*s));
        }
        let candidates = self.candidates(id, false)?;
        if candidates.is_empty() {
            return Ok(None);
        }
        let w = self.writer.lock().unwrap();
        self.first_seq_of(&w.journal, id, candidates)
    }

    /// The seqs of change `id`'s events, ascending (empty for an unknown ID).
    pub fn change_seqs(&self, id: &str) -> Result<Vec<u64>> {
        let records = self.change_records(id, false)?;
        Ok(records.iter().map(|r| r.event.seq).collect())
    }

    /// Every change that reverted `change_id`, in seq order (whether or not those
    /// reverts are still in force: `replay::Changes` decides that).
    pub fn reverters(&self, change_id: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for r in self.change_records(change_id, true)? {
            if !out.contains(&r.event.change_id) {
                out.push(r.event.change_id);
            }
        }
        Ok(out)
    }

    /// Brings indexes level with the journal and checks sealed segments were not edited.
    fn catch_up(&self, state: IndexState, report: &mut OpenReport) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        self.catch_up_locked(&mut w, state, report)
    }

    fn catch_up_locked(
        &self,
        w: &mut MutexGuard<'_, Writer>,
        state: IndexState,
        report: &mut OpenReport,
    ) -> Result<()> {
        let head = w.journal.head();
        let next = head.map_or(0, |h| h.seq + 1);
        let stamps = w.journal.stamps()?;
        // The position file is written before sled and never synced: a longer one is cut
        // to what sled holds; a shorter one (lost in a power cut) means rebuilding.
        let positions = self.index.positions_len();
        if positions > state.indexed {
            self.index.truncate_positions(state.indexed)?;
        }
        let positions_ok = positions >= state.indexed
            && match state.indexed.checked_sub(1) {
                None => true,
                Some(s) => match self.index.position(s) {
                    Ok(Some(pos)) => w
                        .journal
                        .read_at(pos)
                        .map(|r| r.event.seq == s)
                        .unwrap_or(false),
                    _ => false,
                },
            };
        // The change index's last record must be one of the event it points at.
        let changes_ok = match self.index.last_change_record() {
            None => state.indexed == 0,
            Some(rec) => {
                let seq = rec.1 & !crate::changelog::REVERTS;
                seq < state.indexed
                    && match self.index.position(seq) {
                        Ok(Some(pos)) => w
                            .journal
                            .read_at(pos)
                            .is_ok_and(|r| r.event.seq == seq && crate::changelog::names(&r, rec)),
                        _ => false,
                    }
            }
        };
        let genesis_ok = match (state.genesis, head) {
            (Some(g), Some(_)) => {
                self.index.position(0)?.is_some()
                    && w.journal
                        .read_at(Position {
                            segment: 0,
                            offset: 0,
                        })
                        .map(|r| r.hash == g)
                        .unwrap_or(false)
            }
            (None, _) => state.indexed == 0,
            (Some(_), None) => false,
        };
        let sealed_changed = {
            let old: BTreeMap<u64, _> = state.stamps.iter().copied().collect();
            let last = stamps.last().map(|s| s.0);
            stamps
                .iter()
                .any(|(seg, st)| Some(*seg) != last && old.get(seg) != Some(st))
                || old.keys().any(|k| !stamps.iter().any(|(s, _)| s == k))
        };
        let rebuild = if !positions_ok {
            Some(format!(
                "the position file ({positions} events) disagrees with the index ({} events)",
                state.indexed
            ))
        } else if !changes_ok {
            Some("the change index disagrees with the journal".to_string())
        } else if !genesis_ok {
            Some("index belongs to another journal or is empty".to_string())
        } else if state.indexed == 0 && next > 0 {
            Some("index was empty".to_string())
        } else if state.indexed > next {
            Some(format!(
                "index covers seq {} but the journal ends at {}",
                state.indexed, next
            ))
        } else if sealed_changed && state.indexed > 0 {
            Some("journal segments changed since they were indexed".to_string())
        } else {
            None
        };
        if let Some(why) = rebuild {
            if report.reindexed.is_none() {
                report.reindexed = Some(why);
            }
            self.index.clear()?;
            self.index_from(w, 0, state.tail)?;
        } else if state.indexed < next {
            self.index_from(w, state.indexed, state.tail)?;
        }
        Ok(())
    }

    /// Indexes the journal from seq `from` (after `prev`). `known_tail` is the tail the
    /// index recorded before: the last acknowledged seq, which recovery must never cut
    /// below. It is kept when the journal now ends earlier, which it only does when it
    /// is damaged (opening refuses a clean journal that ends before it), so that
    /// indexing a damaged journal does not forget what was acknowledged.
    fn index_from(
        &self,
        w: &mut MutexGuard<'_, Writer>,
        from: u64,
        known_tail: Option<TailHint>,
    ) -> Result<()> {
        let mut genesis = None;
        let mut indexed = from;
        let res = self.scan_batches(w, from, &mut |batch| {
            if batch[0].event.seq == 0 {
                genesis = Some(batch[0].hash);
            }
            self.index.add_positions(batch)?;
            self.index.add(batch)?;
            indexed = batch[batch.len() - 1].event.seq + 1;
            Ok(())
        })?;
        if let Err(e) = res {
            // Damage found while indexing: keep what was indexed, refuse appends.
            w.damaged = Some(e.to_string());
        }
        let mut st = self.index.state()?;
        if let Some(g) = genesis {
            st.genesis = Some(g);
        }
        st.indexed = indexed;
        st.tail = match (w.journal.tail_hint(), known_tail) {
            (Some(now), Some(before)) if before.head.seq > now.head.seq => Some(before),
            (None, before) => before,
            (now, _) => now,
        };
        st.stamps = w.journal.stamps()?;
        self.index.set_state(&st)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// For a process that exits soon after this ledger is dropped (the `ledger`
    /// command): dropping then flushes the index and keeps it open in the process (a
    /// later open of the same ledger in this process takes it back) instead of freeing
    /// its in-memory structures one by one (tens of ms for an index of 10^6 events).
    /// Not for long-lived processes: the index of every ledger so dropped stays open.
    pub fn exiting(&self) {
        self.exiting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// The index without waiting for the index writer: for the trees it never touches
    /// (the scanner's stat cache, projection snapshots).
    pub fn index_unsynced(&self) -> &Index {
        &self.index
    }

    /// The indexes, once they hold every appended event.
    pub fn index(&self) -> Result<&Index> {
        self.sync_index()?;
        if !self.index.sled_is_open() {
            let mut w = self.writer.lock().unwrap();
            self.open_sled_locked(&mut w)?;
        }
        Ok(&self.index)
    }

    /// The flat indexes (positions, the change index, the state and the Merkle
    /// frontier), once they hold every appended event, without opening sled.
    pub fn flat_index(&self) -> Result<&Index> {
        self.sync_index()?;
        Ok(&self.index)
    }

    /// Opens sled and catches it up with the journal (from where it stopped, or from
    /// seq 0 when it was built for other flat indexes). With the writer held nothing
    /// new is queued; the index writer feeds sled from then on.
    fn open_sled_locked(&self, w: &mut MutexGuard<'_, Writer>) -> Result<()> {
        if self.index.sled_is_open() {
            return Ok(());
        }
        self.sync_index_locked(w)?;
        let next = self.index.state()?.indexed;
        let (sled, from) = self.index.open_sled(next)?;
        if from < next {
            let mut reached = from;
            let res = self.scan_batches(w, from, &mut |batch| {
                let end = batch.partition_point(|r| r.event.seq < next);
                self.index.sled_catch_up(&sled, &batch[..end])?;
                reached = reached.max(batch[..end].last().map_or(0, |r| r.event.seq + 1));
                Ok(())
            })?;
            // Damage after what the flat indexes hold is reported by those who read it.
            if let Err(e) = res {
                if reached < next {
                    return Err(e);
                }
            }
        }
        self.index.install_sled(sled);
        Ok(())
    }

    /// Walks the journal from `from` (checked, continuing the record before it) and
    /// hands the records to `each` in batches of up to 4096. The outer error is `each`'s
    /// for the last batch or a missing position; the inner one ends the walk early
    /// (damage, or `each` failing on an earlier batch).
    fn scan_batches(
        &self,
        w: &Writer,
        from: u64,
        each: &mut dyn FnMut(&[Record]) -> Result<()>,
    ) -> Result<Result<()>> {
        let mut batch = Vec::with_capacity(4096);
        let res = {
            let mut f = |r: &Record| -> Result<()> {
                batch.push(r.clone());
                if batch.len() >= 4096 {
                    each(&batch)?;
                    batch.clear();
                }
                Ok(())
            };
            match self.prev_record(w, from)? {
                None => w.journal.scan_all(&mut f),
                // Continues after `pos` in the same segment, then through later ones.
                Some((r, pos)) => w.journal.scan_from(pos, Some(&r), &mut f),
            }
        };
        if !batch.is_empty() {
            each(&batch)?;
        }
        Ok(res)
    }

    /// The record before `seq` and the position after it (where `seq` starts), for
    /// continuing a checked walk; `None` for seq 0.
    fn prev_record(&self, w: &Writer, seq: u64) -> Result<Option<(Record, Position)>> {
        let Some(s) = seq.checked_sub(1) else {
            return Ok(None);
        };
        let pos = self
            .index
            .position(s)?
            .ok_or_else(|| Error::Index(format!("no position for seq {s}")))?;
        let r = w.journal.read_at(pos)?;
        let next = Position {
            segment: pos.segment,
            offset: pos.offset + r.frame_len,
        };
        Ok(Some((r, next)))
    }

    pub fn head(&self) -> Option<Head> {
        self.writer.lock().unwrap().journal.head()
    }

    /// Bytes in the journal's segment files (a size to plan a walk of all of it by).
    pub fn journal_bytes(&self) -> Result<u64> {
        self.writer.lock().unwrap().journal.bytes()
    }

    /// Makes the journal start a new segment once the current one holds `bytes` (tests
    /// use small segments to exercise sealing).
    #[doc(hidden)]
    pub fn set_segment_target(&self, bytes: u64) {
        self.writer
            .lock()
            .unwrap()
            .journal
            .set_segment_target(bytes);
    }

    /// Why appends are refused, if they are.
    pub fn damaged(&self) -> Option<String> {
        self.writer.lock().unwrap().damaged.clone()
    }

    /// Appends a group of events durably (group commit: concurrent callers share one
    /// fsync). Every content hash the events name must already be committed to the store.
    pub fn append(&self, events: Vec<NewEvent>, pre: Precondition) -> Result<Vec<Record>> {
        for ev in &events {
            validate_id("change ID", &ev.change_id)?;
            validate_id("agent ID", &ev.actor.agent)?;
            if let Some(c) = &ev.correlation_id {
                validate_id("correlation ID", c)?;
            }
        }
        let mut q = self.queue.lock().unwrap();
        let ticket = q.next;
        q.next += 1;
        q.items.push((ticket, events, pre));
        // Group commit: one appender at a time (the leader) writes everything queued
        // so far as one journal batch with one fsync; the others wait for their result.
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r;
            }
            if !q.leading {
                q.leading = true;
                let items = std::mem::take(&mut q.items);
                drop(q);
                let results = self.write_batch(items);
                q = self.queue.lock().unwrap();
                q.leading = false;
                q.done.extend(results);
                self.queue_cv.notify_all();
                continue;
            }
            q = self.queue_cv.wait(q).unwrap();
        }
    }

    /// Checks each item's precondition, writes the ones that pass as one journal batch,
    /// and hands the records to the index writer. Returns every item's result.
    fn write_batch(&self, items: Vec<Item>) -> BTreeMap<u64, Result<Vec<Record>>> {
        let mut w = self.writer.lock().unwrap();
        let mut results: BTreeMap<u64, Result<Vec<Record>>> = BTreeMap::new();
        let mut batch = Vec::new();
        let mut owners = Vec::new();
        let mut new_ids: Vec<String> = Vec::new();
        for (t, evs, pre) in items {
            let check = match &pre {
                Precondition::None => Ok(()),
                Precondition::NewChange(id) => match self.change_first_seq(&w.journal, id) {
                    Ok(Some(seq)) => Err(Error::DuplicateChange {
                        id: id.clone(),
                        seq,
                    }),
                    Ok(None) if new_ids.contains(id) => Err(Error::DuplicateChange {
                        id: id.clone(),
                        seq: w.journal.next_seq(),
                    }),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                Precondition::ExistingChange(id) => match self.change_first_seq(&w.journal, id) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(Error::UnknownChange(id.clone())),
                    Err(e) => Err(e),
                },
                Precondition::NextSeq(seq) => {
                    let next = w.journal.next_seq() + batch.len() as u64;
                    if next == *seq {
                        Ok(())
                    } else {
                        Err(Error::Refused(format!(
                            "the events were to be appended at seq {seq}, but the next seq is {next}: another append came first"
                        )))
                    }
                }
            };
            if let Err(e) = check {
                results.insert(t, Err(e));
                continue;
            }
            if let Precondition::NewChange(id) = pre {
                new_ids.push(id);
            }
            owners.push((t, evs.len()));
            batch.extend(evs);
        }
        if owners.is_empty() {
            return results;
        }
        let outcome = match &w.damaged {
            Some(d) => Err(Error::Refused(format!("{d}; run `ledger verify`"))),
            None => w.journal.append(batch),
        };
        match outcome {
            Ok(records) => {
                // The append is durable from here on; index trouble only makes the index
                // catch up on the next open.
                self.index_appended(&w, &records);
                let mut it = records.into_iter();
                for (t, n) in owners {
                    results.insert(t, Ok(it.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut first = Some(e);
                for (t, _) in owners {
                    let err = first.take().unwrap_or_else(|| Error::Refused(msg.clone()));
                    results.insert(t, Err(err));
                }
            }
        }
        results
    }

    /// Writes the records' positions, then queues them for the sled index writer.
    fn index_appended(&self, w: &Writer, records: &[Record]) {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return;
        };
        let (lock, cv) = &*self.progress;
        {
            let mut p = lock.lock().unwrap();
            if p.error.is_none() {
                if let Err(e) = self.index.add_positions(records) {
                    p.error = Some(e.to_string());
                }
            }
            if p.error.is_some() {
                cv.notify_all();
                return;
            }
            for r in records {
                p.changes
                    .entry(r.event.change_id.clone())
                    .or_insert(r.event.seq);
            }
            p.sent = last.event.seq + 1;
        }
        let job = IndexJob {
            records: records.to_vec(),
            tail: w.journal.tail_hint(),
        };
        let sent = match &self.indexer.lock().unwrap().tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            let mut p = lock.lock().unwrap();
            p.error = Some(format!(
                "the index writer stopped before seq {}",
                first.event.seq
            ));
            cv.notify_all();
        }
    }

    /// Stores content and makes it durable. Use before appending events that name it.
    pub fn commit_content(&self, pending: Pending) -> Result<()> {
        self.store.commit(pending)
    }

    /// Reads one event by seq.
    pub fn event(&self, seq: u64) -> Result<Record> {
        let pos = self
            .index
            .position(seq)?
            .ok_or_else(|| Error::Invalid(format!("no event with seq {seq}")))?;
        // `read_at` knows the position, not the seq: name the seq asked for.
        let r = self
            .writer
            .lock()
            .unwrap()
            .journal
            .read_at(pos)
            .map_err(|e| match e {
                Error::Damaged {
                    location, reason, ..
                } => Error::Damaged {
                    seq,
                    location,
                    reason,
                },
                other => other,
            })?;
        if r.event.seq != seq {
            return Err(Error::Index(format!(
                "the position of seq {seq} (segment {} offset {}) holds seq {}; run `ledger reindex`",
                pos.segment, pos.offset, r.event.seq
            )));
        }
        Ok(r)
    }

    pub fn events(&self, seqs: &[u64]) -> Result<Vec<Record>> {
        seqs.iter().map(|s| self.event(*s)).collect()
    }

    /// All events of a change, in seq order. Unknown IDs are an error.
    pub fn change(&self, change_id: &str) -> Result<Vec<Record>> {
        let records = self.change_records(change_id, false)?;
        if records.is_empty() {
            return Err(Error::UnknownChange(change_id.to_string()));
        }
        Ok(records)
    }

    /// Resolves a full change ID or an unambiguous prefix of one.
    pub fn resolve_change(&self, id: &str) -> Result<String> {
        if self.change_exists(id)?.is_some() {
            return Ok(id.to_string());
        }
        // A prefix: the sorted change tree in sled.
        let found = self.index()?.changes_with_prefix(id, 2)?;
        match found.len() {
            1 => Ok(found.into_iter().next().unwrap()),
            0 => Err(Error::UnknownChange(id.to_string())),
            _ => Err(Error::Invalid(format!(
                "change ID prefix {id:?} is ambiguous ({} and more)",
                found.join(", ")
            ))),
        }
    }

    /// Walks events from `from_seq` to the head, in order, each checked as it is read.
    pub fn scan(&self, from_seq: u64, f: &mut dyn FnMut(&Record) -> Result<()>) -> Result<()> {
        self.scan_refs(from_seq, &mut |r| f(&r.to_record()))
    }

    /// [`Ledger::scan`] handing out borrowed records: no copy of the events' strings, for
    /// walks that only read.
    pub fn scan_refs(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(&RecordRef) -> Result<()>,
    ) -> Result<()> {
        let w = self.writer.lock().unwrap();
        if from_seq == 0 {
            return w.journal.scan_all_refs(f);
        }
        let Some(pos) = self.index.position(from_seq)? else {
            return Ok(());
        };
        let before = w.journal.read_at(
            self.index
                .position(from_seq - 1)?
                .ok_or_else(|| Error::Index(format!("no position for seq {}", from_seq - 1)))?,
        )?;
        w.journal.scan_refs_from(pos, Some(&before), f)
    }

    /// The whole journal in seq order, as [`Ledger::scan_refs`] from 0, with the frame
    /// and hash checks on other threads while `f` runs (`Journal::scan_all_pipelined`).
    /// `Ok(false)` when something is wrong with the journal: `f` may have seen records
    /// before the problem; start over with [`Ledger::scan_refs`], which names it.
    pub fn scan_all_pipelined(&self, f: &mut dyn FnMut(&RecordRef) -> Result<()>) -> Result<bool> {
        self.writer
            .lock()
            .unwrap()
            .journal
            .scan_all_pipelined(pipeline_workers(), f)
    }

    /// [`Ledger::scan_all_pipelined`] with a per-piece `prepare` step on the workers
    /// (`Journal::scan_all_pipelined_with`).
    pub fn scan_all_pipelined_with<P: Send>(
        &self,
        prepare: &SegmentPrepare<P>,
        consume: &mut SegmentConsume<P>,
    ) -> Result<bool> {
        self.writer.lock().unwrap().journal.scan_all_pipelined_with(
            pipeline_workers(),
            prepare,
            consume,
        )
    }

    /// Walks events `from_seq..=until_seq` in order (fewer if the journal ends first).
    pub fn scan_range(
        &self,
        from_seq: u64,
        until_seq: u64,
        f: &mut dyn FnMut(&Record) -> Result<()>,
    ) -> Result<()> {
        self.scan_range_refs(from_seq, until_seq, &mut |r| f(&r.to_record()))
    }

    /// [`Ledger::scan_range`] handing out borrowed records.
    pub fn scan_range_refs(
        &self,
        from_seq: u64,
        until_seq: u64,
        f: &mut dyn FnMut(&RecordRef) -> Result<()>,
    ) -> Result<()> {
        if from_seq > until_seq {
            return Ok(());
        }
        // Stops right after `until_seq`: the record after it is never decoded, so a
        // damaged record past the range does not fail reads before it.
        let r = self.scan_refs(from_seq, &mut |r| {
            if r.event.seq > until_seq {
                return Err(Error::Stopped);
            }
            f(r)?;
            if r.event.seq == until_seq {
                return Err(Error::Stopped);
            }
            Ok(())
        });
        match r {
            Err(Error::Stopped) => Ok(()),
            other => other,
        }
    }

    /// Rebuilds every index from the journal.
    pub fn reindex(&self) -> Result<u64> {
        let mut w = self.writer.lock().unwrap();
        // With the writer held nothing new is queued; let the index writer go idle.
        let _ = self.sync_index();
        let known_tail = self.index.state().ok().and_then(|s| s.tail);
        self.index.clear()?;
        self.index_from(&mut w, 0, known_tail)?;
        {
            let mut p = self.progress.0.lock().unwrap();
            let next = w.journal.next_seq();
            *p = IndexProgress {
                sent: next,
                done: next,
                ..IndexProgress::default()
            };
        }
        if let Some(d) = &w.damaged {
            return Err(Error::Refused(d.clone()));
        }
        // sled was cleared with the rest (if open) or is rebuilt now (the new epoch).
        self.open_sled_locked(&mut w)?;
        self.index.flush()?;
        Ok(w.journal.next_seq())
    }

    /// Persists the indexes (they are rebuildable, so this is for speed, not safety).
    pub fn flush(&self) -> Result<()> {
        self.index.flush()
    }

    /// Storage-level access for verification.
    pub(crate) fn with_journal<T>(&self, f: impl FnOnce(&Journal) -> T) -> T {
        f(&self.writer.lock().unwrap().journal)
    }
}

/// Opens a journal on any storage (tests and tools); no index, no lock.
pub fn open_journal(storage: Box<dyn Storage>) -> Result<(Journal, Recovery)> {
    Journal::open(storage, None, None)
}

/// Worker threads of the pipelined journal walks.
fn pipeline_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
