//! [`Ledger`]: the journal, content store and indexes of one `.ledger/` directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{Actor, Body, Genesis, NewEvent, FORMAT_VERSION};
use crate::hash::Hash;
use crate::index::{Index, IndexState};
use crate::journal::{Head, Journal, Position, Record, Recovery};
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

struct Queue {
    next: u64,
    items: Vec<(u64, Vec<NewEvent>, Precondition)>,
    done: BTreeMap<u64, Result<Vec<Record>>>,
}

struct Writer {
    journal: Journal,
    damaged: Option<String>,
}

/// One open ledger. Holds the directory's lock until dropped.
pub struct Ledger {
    dir: PathBuf,
    writer: Mutex<Writer>,
    queue: Mutex<Queue>,
    store: ContentStore,
    index: Index,
    _lock: File,
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
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, e))?;
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
    let _ = f
        .set_len(0)
        .and_then(|_| f.write_all(std::process::id().to_string().as_bytes()));
    Ok(f)
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
        let index = match Index::open(&index_dir).and_then(|i| i.state().map(|s| (i, s))) {
            Ok(x) => x,
            Err(e) => {
                // Derived data only: throw it away and rebuild.
                report.reindexed = Some(format!("index unreadable ({e})"));
                let _ = fs::remove_dir_all(&index_dir);
                let i = Index::open(&index_dir)?;
                (i, IndexState::default())
            }
        };
        let (index, state) = index;
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
            }),
            store,
            index,
            _lock: lock,
        };
        ledger.catch_up(state, &mut report)?;
        Ok((ledger, report, then))
    }

    /// Brings indexes level with the journal and checks sealed segments were not edited.
    fn catch_up(&self, state: IndexState, report: &mut OpenReport) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        let head = w.journal.head();
        let next = head.map_or(0, |h| h.seq + 1);
        let stamps = w.journal.stamps()?;
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
        let rebuild = if !genesis_ok {
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
            self.index_from(&mut w, 0, None)?;
        } else if state.indexed < next {
            let prev = match state.indexed.checked_sub(1) {
                Some(s) => {
                    let pos = self
                        .index
                        .position(s)?
                        .ok_or_else(|| Error::Index(format!("no position for seq {s}")))?;
                    let r = w.journal.read_at(pos)?;
                    Some((
                        s,
                        r.hash,
                        Position {
                            segment: pos.segment,
                            offset: pos.offset + r.frame_len,
                        },
                    ))
                }
                None => None,
            };
            self.index_from(&mut w, state.indexed, prev)?;
        }
        Ok(())
    }

    fn index_from(
        &self,
        w: &mut MutexGuard<'_, Writer>,
        from: u64,
        prev: Option<(u64, Hash, Position)>,
    ) -> Result<()> {
        let mut batch = Vec::with_capacity(4096);
        let mut genesis = None;
        let mut indexed = from;
        let res = {
            let mut f = |r: &Record| -> Result<()> {
                if r.event.seq == 0 {
                    genesis = Some(r.hash);
                }
                batch.push(r.clone());
                if batch.len() >= 4096 {
                    self.index.add(&batch)?;
                    indexed = r.event.seq + 1;
                    batch.clear();
                }
                Ok(())
            };
            match prev {
                None => w.journal.scan_all(&mut f),
                // Continues after `pos` in the same segment, then through later ones.
                Some((s, h, pos)) => w.journal.scan_from(pos, Some((s, h)), &mut f),
            }
        };
        self.index.add(&batch)?;
        if let Some(r) = batch.last() {
            indexed = r.event.seq + 1;
        }
        if let Err(e) = res {
            // Damage found while indexing: keep what was indexed, refuse appends.
            w.damaged = Some(e.to_string());
        }
        let mut st = self.index.state()?;
        if let Some(g) = genesis {
            st.genesis = Some(g);
        }
        st.indexed = indexed;
        st.tail = w.journal.tail_hint();
        st.stamps = w.journal.stamps()?;
        self.index.set_state(&st)?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn head(&self) -> Option<Head> {
        self.writer.lock().unwrap().journal.head()
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
        let ticket = {
            let mut q = self.queue.lock().unwrap();
            let t = q.next;
            q.next += 1;
            q.items.push((t, events, pre));
            t
        };
        let mut w = self.writer.lock().unwrap();
        if let Some(r) = self.queue.lock().unwrap().done.remove(&ticket) {
            return r;
        }
        let items = std::mem::take(&mut self.queue.lock().unwrap().items);
        let mut results: BTreeMap<u64, Result<Vec<Record>>> = BTreeMap::new();
        let mut batch = Vec::new();
        let mut owners = Vec::new();
        let mut new_ids: Vec<String> = Vec::new();
        for (t, evs, pre) in items {
            let check = match &pre {
                Precondition::None => Ok(()),
                Precondition::NewChange(id) => match self.index.change_exists(id)? {
                    Some(seq) => Err(Error::DuplicateChange {
                        id: id.clone(),
                        seq,
                    }),
                    None if new_ids.contains(id) => Err(Error::DuplicateChange {
                        id: id.clone(),
                        seq: w.journal.next_seq(),
                    }),
                    None => Ok(()),
                },
                Precondition::ExistingChange(id) => match self.index.change_exists(id)? {
                    Some(_) => Ok(()),
                    None => Err(Error::UnknownChange(id.clone())),
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
        let outcome = match &w.damaged {
            Some(d) if !batch.is_empty() => {
                Err(Error::Refused(format!("{d}; run `ledger verify`")))
            }
            _ => w.journal.append(batch),
        };
        match outcome {
            Ok(records) => {
                if let Err(e) = self.index_appended(&w, &records) {
                    // The append is durable; the index catches up on the next open.
                    let _ = e;
                }
                let mut it = records.into_iter();
                for (t, n) in owners {
                    results.insert(t, Ok(it.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut first = Some(e);
                for (t, _) in owners {
                    let err = if t == ticket {
                        first.take().unwrap_or_else(|| Error::Refused(msg.clone()))
                    } else {
                        Error::Refused(msg.clone())
                    };
                    results.insert(t, Err(err));
                }
            }
        }
        let mine = results
            .remove(&ticket)
            .unwrap_or_else(|| Err(Error::Refused("append lost its ticket".into())));
        self.queue.lock().unwrap().done.extend(results);
        drop(w);
        mine
    }

    fn index_appended(&self, w: &Writer, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.index.add(records)?;
        let mut st = self.index.state()?;
        if records[0].event.seq == 0 {
            st.genesis = Some(records[0].hash);
        }
        if st.indexed == records[0].event.seq {
            st.indexed = records.last().unwrap().event.seq + 1;
        }
        st.tail = w.journal.tail_hint();
        if let Some((seg, stamp)) = st.tail.map(|t| (t.segment, t.stamp)) {
            match st.stamps.iter_mut().find(|(s, _)| *s == seg) {
                Some(e) => e.1 = stamp,
                None => st.stamps.push((seg, stamp)),
            }
        }
        self.index.set_state(&st)
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
        let r = self.writer.lock().unwrap().journal.read_at(pos)?;
        if r.event.seq != seq {
            return Err(Error::Damaged {
                seq,
                location: format!("segment {} offset {}", pos.segment, pos.offset),
                reason: format!("index points at seq {}", r.event.seq),
            });
        }
        Ok(r)
    }

    pub fn events(&self, seqs: &[u64]) -> Result<Vec<Record>> {
        seqs.iter().map(|s| self.event(*s)).collect()
    }

    /// All events of a change, in seq order. Unknown IDs are an error.
    pub fn change(&self, change_id: &str) -> Result<Vec<Record>> {
        let seqs = self.index.change_seqs(change_id)?;
        if seqs.is_empty() {
            return Err(Error::UnknownChange(change_id.to_string()));
        }
        self.events(&seqs)
    }

    /// Resolves a full change ID or an unambiguous prefix of one.
    pub fn resolve_change(&self, id: &str) -> Result<String> {
        if self.index.change_exists(id)?.is_some() {
            return Ok(id.to_string());
        }
        let found = self.index.changes_with_prefix(id, 2)?;
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
        let w = self.writer.lock().unwrap();
        if from_seq == 0 {
            return w.journal.scan_all(f);
        }
        let Some(pos) = self.index.position(from_seq)? else {
            return Ok(());
        };
        let before = w.journal.read_at(
            self.index
                .position(from_seq - 1)?
                .ok_or_else(|| Error::Index(format!("no position for seq {}", from_seq - 1)))?,
        )?;
        w.journal
            .scan_from(pos, Some((from_seq - 1, before.hash)), f)
    }

    /// Walks events `from_seq..=until_seq` in order (fewer if the journal ends first).
    pub fn scan_range(
        &self,
        from_seq: u64,
        until_seq: u64,
        f: &mut dyn FnMut(&Record) -> Result<()>,
    ) -> Result<()> {
        if from_seq > until_seq {
            return Ok(());
        }
        let r = self.scan(from_seq, &mut |r| {
            if r.event.seq > until_seq {
                return Err(Error::Stopped);
            }
            f(r)
        });
        match r {
            Err(Error::Stopped) => Ok(()),
            other => other,
        }
    }

    /// Rebuilds every index from the journal.
    pub fn reindex(&self) -> Result<u64> {
        let mut w = self.writer.lock().unwrap();
        self.index.clear()?;
        self.index_from(&mut w, 0, None)?;
        if let Some(d) = &w.damaged {
            return Err(Error::Refused(d.clone()));
        }
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
