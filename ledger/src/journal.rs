//! The journal: hash-chained event records in append-only segments.
//!
//! Frame layout (all integers little-endian; `docs/FORMAT.md` is the reference):
//!
//! ```text
//! magic "LJR1" | payload_len u32 | batch_first u64 | batch_last u64 | payload | event hash (32)
//! ```
//!
//! `payload` is the canonical event encoding; the hash is `derive_key` over it, so a
//! frame checks itself. `batch_first..=batch_last` are the seqs written by one fsync:
//! a batch is durable as a whole, which is what lets recovery tell a torn tail (the
//! unfinished last batch, cut back and reported) from damage to acknowledged records
//! (refused, never skipped).
//!
//! **Invariant:** an append returns only after `Storage::sync` succeeded; after a failed
//! sync the journal refuses every further append until reopened (no retry can turn an
//! fsync failure into a false success).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Event, EventRef, NewEvent, MAX_EVENT_BYTES};
use crate::hash::Hash;
use crate::storage::{read_segment, SegmentStamp, Storage};

pub const FRAME_MAGIC: [u8; 4] = *b"LJR1";
pub const FRAME_HEADER: usize = 24;
pub const FRAME_TRAILER: usize = 32;
/// A new segment is started (at a batch boundary) once the active one reaches this size.
pub const SEGMENT_TARGET: u64 = 16 << 20;

/// Where a record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// The last event in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

/// One decoded, self-checked record.
#[derive(Clone, Debug)]
pub struct Record {
    pub event: Event,
    pub hash: Hash,
    pub pos: Position,
    pub frame_len: u64,
    pub batch_first: u64,
    pub batch_last: u64,
}

/// A record decoded without copying: the event borrows the bytes it was read from.
/// Walks that only read (verify, projection rebuilds, exports) use it.
#[derive(Clone, Debug)]
pub struct RecordRef<'a> {
    pub event: EventRef<'a>,
    pub hash: Hash,
    pub pos: Position,
    pub frame_len: u64,
    pub batch_first: u64,
    pub batch_last: u64,
}

impl RecordRef<'_> {
    /// The owned record.
    pub fn to_record(&self) -> Record {
        Record {
            event: self.event.to_event(),
            hash: self.hash,
            pos: self.pos,
            frame_len: self.frame_len,
            batch_first: self.batch_first,
            batch_last: self.batch_last,
        }
    }
}

/// Why one frame is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame needs.
    Short,
    BadMagic,
    TooLarge(u32),
    HashMismatch,
    Decode(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short => write!(f, "record cut short"),
            FrameError::BadMagic => write!(f, "no record marker"),
            FrameError::TooLarge(n) => write!(
                f,
                "record length {n} exceeds the {MAX_EVENT_BYTES}-byte limit"
            ),
            FrameError::HashMismatch => {
                write!(f, "stored event hash does not match the record's bytes")
            }
            FrameError::Decode(e) => write!(f, "record bytes are not a valid event: {e}"),
        }
    }
}

/// Encodes one frame.
pub fn encode_frame(
    payload: &[u8],
    hash: &Hash,
    batch_first: u64,
    batch_last: u64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&batch_first.to_le_bytes());
    out.extend_from_slice(&batch_last.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(hash.as_bytes());
}

/// The checked parts of the frame at the start of `buf`: payload, hash (checked
/// against the payload), batch fields and frame length.
struct Frame<'a> {
    payload: &'a [u8],
    hash: Hash,
    batch_first: u64,
    batch_last: u64,
    len: usize,
}

/// Parses and checks the frame at the start of `buf`. Returns the record (with `pos`
/// left for the caller to fill) and the frame length.
pub fn decode_frame(buf: &[u8]) -> std::result::Result<Record, FrameError> {
    decode_frame_ref(buf).map(|r| r.to_record())
}

/// [`decode_frame`] without copying the event's strings.
pub fn decode_frame_ref(buf: &[u8]) -> std::result::Result<RecordRef<'_>, FrameError> {
    record_ref(check_frame(buf, true)?)
}

/// Decodes the event of a checked frame (`pos` left for the caller to fill).
fn record_ref(f: Frame<'_>) -> std::result::Result<RecordRef<'_>, FrameError> {
    let event = EventRef::decode(f.payload).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(RecordRef {
        event,
        hash: f.hash,
        pos: Position {
            segment: 0,
            offset: 0,
        },
        frame_len: f.len as u64,
        batch_first: f.batch_first,
        batch_last: f.batch_last,
    })
}

/// Parses the frame at the start of `buf`; with `hashed`, also checks the stored hash
/// against the payload (without, the stored hash is taken as is: only for frames
/// already checked).
fn check_frame(buf: &[u8], hashed: bool) -> std::result::Result<Frame<'_>, FrameError> {
    if buf.len() < FRAME_HEADER {
        return Err(FrameError::Short);
    }
    if buf[0..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len as usize > MAX_EVENT_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let batch_first = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let batch_last = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    let end = FRAME_HEADER + len as usize + FRAME_TRAILER;
    if buf.len() < end {
        return Err(FrameError::Short);
    }
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len as usize];
    let stored = Hash(buf[end - FRAME_TRAILER..end].try_into().unwrap());
    if hashed && Hash::of_event_bytes(payload) != stored {
        return Err(FrameError::HashMismatch);
    }
    Ok(Frame {
        payload,
        hash: stored,
        batch_first,
        batch_last,
        len: end,
    })
}

/// What the chain requires of the next record.
#[derive(Clone, Copy, Debug)]
struct Expect {
    seq: u64,
    prev: Hash,
    /// `Some(first, last)` while inside an unfinished batch.
    batch: Option<(u64, u64)>,
}

impl Expect {
    fn after(r: &RecordRef) -> Expect {
        Expect::after_parts(r.event.seq, r.hash, r.batch_first, r.batch_last)
    }

    fn after_parts(seq: u64, hash: Hash, batch_first: u64, batch_last: u64) -> Expect {
        let batch = (seq < batch_last).then_some((batch_first, batch_last));
        Expect {
            // Wrapping: a forged seq of u64::MAX expects seq 0 next, which no record
            // after it can be (seq 0 has the zero prev hash), so the walk still stops.
            seq: seq.wrapping_add(1),
            prev: hash,
            batch,
        }
    }

    /// Checks chain, seq and batch fields of a self-consistent record.
    fn check(&self, r: &RecordRef) -> std::result::Result<(), String> {
        self.check_parts(r.event.seq, &r.event.prev, r.batch_first, r.batch_last)
    }

    fn check_parts(
        &self,
        seq: u64,
        prev: &Hash,
        batch_first: u64,
        batch_last: u64,
    ) -> std::result::Result<(), String> {
        if seq != self.seq {
            return Err(format!("expected seq {}, found seq {}", self.seq, seq));
        }
        if *prev != self.prev {
            return Err(format!(
                "prev hash {} does not match the hash of seq {} ({})",
                prev,
                self.seq.wrapping_sub(1),
                self.prev
            ));
        }
        let ok = match self.batch {
            Some((f, l)) => batch_first == f && batch_last == l,
            None => batch_first == seq && batch_last >= seq,
        };
        if !ok {
            return Err(format!(
                "batch fields {}..={} are inconsistent at seq {}",
                batch_first, batch_last, seq
            ));
        }
        Ok(())
    }
}

/// A problem found while walking records.
#[derive(Debug, Clone)]
pub struct Break {
    pub seq: u64,
    pub pos: Position,
    pub reason: String,
}

/// Walks the records of `bytes` (segment `segment`, starting at `base`), checking each
/// frame and its chain link. Calls `f` for every good record. Stops at the first bad
/// one and returns it, or `None` at a clean end.
fn walk(
    segment: u64,
    base: u64,
    bytes: &[u8],
    expect: &mut Option<Expect>,
    f: &mut dyn FnMut(&RecordRef) -> Result<()>,
) -> Result<Option<(Break, u64)>> {
    walk_frames(segment, base, bytes, true, expect, f)
}

/// [`walk`]; `hash: false` when the frames' hashes were already checked
/// ([`check_segment`] found the segment whole), so they are not computed again.
fn walk_frames(
    segment: u64,
    base: u64,
    bytes: &[u8],
    hash: bool,
    expect: &mut Option<Expect>,
    f: &mut dyn FnMut(&RecordRef) -> Result<()>,
) -> Result<Option<(Break, u64)>> {
    let mut off = 0usize;
    while off < bytes.len() {
        let pos = Position {
            segment,
            offset: base + off as u64,
        };
        let seq = expect.map_or(segment, |e| e.seq);
        let mut rec = match check_frame(&bytes[off..], hash).and_then(record_ref) {
            Ok(r) => r,
            Err(e) => {
                return Ok(Some((
                    Break {
                        seq,
                        pos,
                        reason: e.to_string(),
                    },
                    off as u64,
                )))
            }
        };
        rec.pos = pos;
        let exp = expect.unwrap_or(Expect {
            seq: rec.event.seq,
            prev: rec.event.prev,
            batch: None,
        });
        if rec.event.seq == 0 && rec.event.prev != Hash::ZERO {
            return Ok(Some((
                Break {
                    seq,
                    pos,
                    reason: "seq 0 must have the zero prev hash".into(),
                },
                off as u64,
            )));
        }
        if let Err(reason) = exp.check(&rec) {
            return Ok(Some((Break { seq, pos, reason }, off as u64)));
        }
        f(&rec)?;
        *expect = Some(Expect::after(&rec));
        off += rec.frame_len as usize;
    }
    Ok(None)
}

/// The per-piece step of [`Journal::scan_all_pipelined_with`] on the workers: segment
/// number and the piece's bytes (whole frames, cut between records and possibly inside
/// a batch) in, what the caller needs of them out (`None`: a record does not decode).
pub type SegmentPrepare<'a, P> = dyn Fn(u64, &[u8]) -> Option<P> + Sync + 'a;

/// The calling thread's step of [`Journal::scan_all_pipelined_with`]: where the piece
/// starts (segment and offset), its bytes and what `prepare` made of them (`Ok(false)`:
/// a record does not decode).
pub type SegmentConsume<'a, P> = dyn FnMut(Position, &[u8], P) -> Result<bool> + 'a;

/// The first record of a checked piece: what must join it to the record before.
#[derive(Clone, Copy, Debug)]
struct First {
    seq: u64,
    prev: Hash,
    batch_first: u64,
    batch_last: u64,
}

/// What a worker of [`Journal::scan_all_pipelined`] found in one piece of a segment: frames,
/// hashes, seqs, links and batch fields checked, nothing decoded beyond `seq` and `prev`.
struct Checked {
    first: Option<First>,
    last: Option<Expect>,
    broken: bool,
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bytes per piece the pipelined walk cuts a segment into, about: small enough that
/// the workers check the first pieces of a segment while the caller consumes the ones
/// before (a ledger of one or a few segments is otherwise checked, then consumed, one
/// segment at a time) and that, with few pieces read ahead, the fold and the checks
/// take turns finely; large enough that a piece's overhead does not matter.
const PIECE_BYTES: usize = 256 << 10;

/// The pipelined walk's first piece is this share of [`PIECE_BYTES`] (each next piece
/// twice the one before, up to [`PIECE_BYTES`]).
const FIRST_PIECE_SHARE: usize = 16;

/// Where the frame at the start of `bytes` ends, as far as its header tells (at least
/// the header's length; a length past the bound tells nothing more).
fn frame_end(bytes: &[u8]) -> usize {
    match bytes.get(4..8) {
        Some(len) => {
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            FRAME_HEADER + len.min(MAX_EVENT_BYTES) + FRAME_TRAILER
        }
        None => FRAME_HEADER,
    }
}

/// How many bytes at the start of `bytes` are whole frames (only the frame headers are
/// read): where [`Journal::scan_all_pipelined_with`] ends a piece of a segment it reads
/// one piece at a time, inside a batch or not (a batch can be several MiB: the first
/// commit of a large tree, say; the walk checks the batch fields across each cut).
fn whole_frames(bytes: &[u8]) -> usize {
    let mut off = 0usize;
    while let Ok(f) = check_frame(&bytes[off..], false) {
        off += f.len;
    }
    off
}

/// The frame checks of [`walk`] without decoding events: magic, length, hash, and the
/// seq, prev and batch fields (seq and prev are the payload's first 40 bytes in the
/// canonical encoding). Whether each payload decodes is left to the reader.
///
/// The frames are checked first and their hashes computed together afterwards
/// ([`Hash::of_event_bytes_many`]); any failure, whichever is found first, makes the
/// segment broken.
fn check_segment(bytes: &[u8]) -> Checked {
    let mut payloads = Vec::with_capacity(bytes.len() / 256);
    let mut stored = Vec::with_capacity(bytes.len() / 256);
    let mut out = check_segment_frames(bytes, &mut |f| {
        payloads.push(f.payload);
        stored.push(f.hash);
    });
    if !out.broken {
        let mut computed = Vec::new();
        Hash::of_event_bytes_many(&payloads, &mut computed);
        out.broken = computed != stored;
    }
    out
}

/// [`check_segment`] without the hashes: hands each frame that passes to `frame`.
fn check_segment_frames<'b>(bytes: &'b [u8], frame: &mut dyn FnMut(&Frame<'b>)) -> Checked {
    let mut out = Checked {
        first: None,
        last: None,
        broken: false,
    };
    let mut off = 0usize;
    while off < bytes.len() {
        let Ok(f) = check_frame(&bytes[off..], false) else {
            out.broken = true;
            return out;
        };
        let (Some(seq), Some(prev)) = (
            f.payload
                .get(0..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap())),
            f.payload.get(8..40).map(|b| Hash(b.try_into().unwrap())),
        ) else {
            out.broken = true;
            return out;
        };
        if seq == 0 && prev != Hash::ZERO {
            out.broken = true;
            return out;
        }
        // A piece may start inside a batch: its first record's batch fields are taken
        // as they are here, and the caller checks them against the record before.
        let exp = out.last.unwrap_or(Expect {
            seq,
            prev,
            batch: (f.batch_first < seq).then_some((f.batch_first, f.batch_last)),
        });
        if exp
            .check_parts(seq, &prev, f.batch_first, f.batch_last)
            .is_err()
        {
            out.broken = true;
            return out;
        }
        frame(&f);
        out.first.get_or_insert(First {
            seq,
            prev,
            batch_first: f.batch_first,
            batch_last: f.batch_last,
        });
        out.last = Some(Expect::after_parts(
            seq,
            f.hash,
            f.batch_first,
            f.batch_last,
        ));
        off += f.len;
    }
    out
}

/// Decodes the records of a piece of a segment [`check_segment`] accepted (hashes are
/// not computed again), the piece starting `at`, and hands each to `f`. `Ok(false)`: a
/// payload does not decode.
fn read_checked(
    at: Position,
    bytes: &[u8],
    f: &mut dyn FnMut(&RecordRef) -> Result<()>,
) -> Result<bool> {
    let mut off = 0usize;
    while off < bytes.len() {
        let Ok(mut rec) = check_frame(&bytes[off..], false).and_then(record_ref) else {
            return Ok(false);
        };
        rec.pos = Position {
            segment: at.segment,
            offset: at.offset + off as u64,
        };
        f(&rec)?;
        off += rec.frame_len as usize;
    }
    Ok(true)
}

/// What opening found at the tail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of the last segment (0 when the tail was whole).
    pub cut_bytes: u64,
    /// Seqs of whole records dropped because their batch was never completed.
    pub dropped: Vec<u64>,
    pub segment: Option<String>,
}

/// A trusted starting point for opening without reading the whole last segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailHint {
    pub head: Head,
    pub segment: u64,
    /// End of the last record of `head`.
    pub end: u64,
    pub stamp: SegmentStamp,
}

pub struct Journal {
    storage: Box<dyn Storage>,
    head: Option<Head>,
    /// (segment, length) of the segment appends go to.
    active: Option<(u64, u64)>,
    poisoned: Option<String>,
    /// Damage to acknowledged records found on open: reads work, appends are refused.
    damage: Option<String>,
    segment_target: u64,
    /// Bytes per piece of the pipelined walk ([`PIECE_BYTES`]; tests use smaller ones).
    piece_bytes: usize,
}

impl Journal {
    /// Opens the journal, checking the tail and cutting back a torn last batch.
    ///
    /// `hint` (from the index database) lets opening skip records known good;
    /// `acknowledged` is a seq known to have been acknowledged: recovery never cuts
    /// below it and reports damage instead.
    pub fn open(
        storage: Box<dyn Storage>,
        hint: Option<TailHint>,
        acknowledged: Option<u64>,
    ) -> Result<(Journal, Recovery)> {
        let mut j = Journal {
            storage,
            head: None,
            active: None,
            poisoned: None,
            damage: None,
            segment_target: SEGMENT_TARGET,
            piece_bytes: PIECE_BYTES,
        };
        let rec = j.recover(hint, acknowledged)?;
        // A journal that ends cleanly (at a batch boundary) before an acknowledged seq
        // lost acknowledged records: refuse, as for a torn record below that seq.
        if let Some(ack) = acknowledged {
            let next = j.next_seq();
            if j.damage.is_none() && next <= ack {
                let location = match j.storage.segments() {
                    Ok(s) => s
                        .last()
                        .map_or_else(|| "journal".to_string(), |l| j.storage.describe(*l)),
                    Err(_) => "journal".to_string(),
                };
                return Err(Error::Damaged {
                    seq: next,
                    location,
                    reason: format!(
                        "the journal ends before seq {next}, but seq {ack} was acknowledged: acknowledged records are missing"
                    ),
                });
            }
        }
        Ok((j, rec))
    }

    /// Sets the segment size (tests use small segments to exercise rotation).
    pub fn set_segment_target(&mut self, bytes: u64) {
        self.segment_target = bytes;
    }

    /// Sets the piece size of the pipelined walk (tests use small pieces to cut one
    /// segment into many).
    pub fn set_piece_bytes(&mut self, bytes: usize) {
        self.piece_bytes = bytes.max(1);
    }

    fn io(&self, segment: u64, what: &'static str, e: std::io::Error) -> Error {
        Error::io(what, self.storage.describe(segment), e)
    }

    fn recover(&mut self, hint: Option<TailHint>, acknowledged: Option<u64>) -> Result<Recovery> {
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        let Some(&last) = segs.last() else {
            return Ok(Recovery::default());
        };
        let len = self
            .storage
            .len(last)
            .map_err(|e| self.io(last, "reading", e))?;
        // Fast path: the index recorded exactly this tail and the file is untouched.
        if let Some(h) = hint {
            if h.segment == last {
                let stamp = self
                    .storage
                    .stamp(last)
                    .map_err(|e| self.io(last, "reading", e))?;
                if stamp == h.stamp && h.end == len {
                    self.head = Some(h.head);
                    self.active = Some((last, len));
                    return Ok(Recovery::default());
                }
            }
        }
        if len == 0 {
            // A segment created just before a crash. Its name must follow the previous one.
            if segs.len() == 1 && last != 0 {
                return Err(Error::Damaged {
                    seq: 0,
                    location: self.storage.describe(last),
                    reason: "the only segment does not start at seq 0".into(),
                });
            }
            if segs.len() > 1 {
                self.storage
                    .remove(last)
                    .map_err(|e| self.io(last, "removing empty segment", e))?;
                return self.recover(None, acknowledged);
            }
            // The empty segment 0 exists: appends go into it (creating it again fails).
            self.active = Some((last, 0));
            return Ok(Recovery::default());
        }
        let bytes = read_segment(self.storage.as_ref(), last, 0)
            .map_err(|e| self.io(last, "reading", e))?;
        let mut expect = None;
        let mut last_rec: Option<(Head, u64, u64, u64)> = None; // head, end offset, batch_first, batch_first offset
        let mut batch_start_off = 0u64;
        let mut first_seq = None;
        let mut cb = |r: &RecordRef| -> Result<()> {
            first_seq.get_or_insert(r.event.seq);
            if r.batch_first == r.event.seq {
                batch_start_off = r.pos.offset;
            }
            last_rec = Some((
                Head {
                    seq: r.event.seq,
                    hash: r.hash,
                },
                r.pos.offset + r.frame_len,
                r.batch_first,
                batch_start_off,
            ));
            Ok(())
        };
        let brk = walk(last, 0, &bytes, &mut expect, &mut cb)?;
        // Segments are named by the seq of their first record (rule 6).
        if let Some(first) = first_seq.filter(|f| *f != last) {
            return Err(Error::Damaged {
                seq: last,
                location: self.storage.describe(last),
                reason: format!(
                    "segment name does not match its first record (seq {first} is first)"
                ),
            });
        }
        let incomplete = expect.and_then(|e| e.batch);
        let (cut_at, torn_first) = match (&brk, incomplete) {
            (None, None) => {
                let (head, end, _, _) =
                    last_rec.expect("non-empty segment without a break has records");
                self.head = Some(head);
                self.active = Some((last, end));
                return Ok(Recovery::default());
            }
            (_, Some((first, _))) => (last_rec.map(|r| r.3).unwrap_or(0), first),
            (Some((b, _)), None) => (b.pos.offset, b.seq),
        };
        if let Some((b, off)) = &brk {
            // Any intact record of a later batch beyond the break means acknowledged
            // records were damaged: refuse instead of cutting.
            if let Some(seq) = intact_later_batch(&bytes[*off as usize + 1..], torn_first) {
                let e = Error::Damaged {
                    seq: b.seq,
                    location: format!("{} offset {}", self.storage.describe(last), b.pos.offset),
                    reason: format!("{} (an intact record with seq {seq} follows it)", b.reason),
                };
                return Ok(self.mark_damaged(e, last_rec.map(|r| r.0)));
            }
        }
        if let Some(ack) = acknowledged {
            if torn_first <= ack {
                let (seq, reason) = brk.as_ref().map_or(
                    (torn_first, "batch never completed".to_string()),
                    |(b, _)| (b.seq, b.reason.clone()),
                );
                return Err(Error::Damaged {
                    seq,
                    location: self.storage.describe(last),
                    reason: format!(
                        "{reason}; seq {ack} was acknowledged, so this is damage, not a torn write"
                    ),
                });
            }
        }
        // Records of the unfinished batch that survived whole are dropped with it.
        let mut dropped = Vec::new();
        let mut e2 = None;
        walk(last, cut_at, &bytes[cut_at as usize..], &mut e2, &mut |r| {
            dropped.push(r.event.seq);
            Ok(())
        })?;
        self.storage
            .truncate(last, cut_at)
            .map_err(|e| self.io(last, "cutting back the torn tail of", e))?;
        let recovery = Recovery {
            cut_bytes: len - cut_at,
            dropped,
            segment: Some(self.storage.describe(last)),
        };
        if cut_at == 0 {
            if segs.len() > 1 {
                self.storage
                    .remove(last)
                    .map_err(|e| self.io(last, "removing empty segment", e))?;
                let r = self.recover(None, acknowledged)?;
                return Ok(Recovery {
                    cut_bytes: recovery.cut_bytes + r.cut_bytes,
                    dropped: recovery.dropped,
                    segment: recovery.segment,
                });
            }
            self.head = None;
            self.active = Some((last, 0));
        } else {
            // Re-walk the kept part to find the head.
            let mut e3 = None;
            let mut head = None;
            walk(last, 0, &bytes[..cut_at as usize], &mut e3, &mut |r| {
                head = Some(Head {
                    seq: r.event.seq,
                    hash: r.hash,
                });
                Ok(())
            })?;
            self.head = head;
            self.active = Some((last, cut_at));
        }
        Ok(recovery)
    }

    /// Leaves the journal readable but refusing appends; nothing is cut.
    fn mark_damaged(&mut self, e: Error, last_good: Option<Head>) -> Recovery {
        let msg = e.to_string();
        self.head = last_good;
        self.active = None;
        self.poisoned = Some(format!("{msg}; nothing was changed, run `ledger verify`"));
        self.damage = Some(msg);
        Recovery::default()
    }

    /// Damage to acknowledged records found when opening, if any.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// Seq the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.head.map_or(0, |h| h.seq + 1)
    }

    /// A hint describing the current tail, for the next [`Journal::open`].
    pub fn tail_hint(&self) -> Option<TailHint> {
        let head = self.head?;
        let (segment, end) = self.active?;
        let stamp = self.storage.stamp(segment).ok()?;
        Some(TailHint {
            head,
            segment,
            end,
            stamp,
        })
    }

    /// Segments with their stamps, for noticing later edits to sealed segments.
    pub fn stamps(&self) -> Result<Vec<(u64, SegmentStamp)>> {
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        segs.into_iter()
            .map(|s| {
                Ok((
                    s,
                    self.storage
                        .stamp(s)
                        .map_err(|e| self.io(s, "reading", e))?,
                ))
            })
            .collect()
    }

    /// Bytes in the journal's segments, as their files hold them now.
    pub fn bytes(&self) -> Result<u64> {
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        segs.into_iter().try_fold(0u64, |total, s| {
            let len = self.storage.len(s).map_err(|e| self.io(s, "reading", e))?;
            Ok(total.saturating_add(len))
        })
    }

    /// Appends events as one batch with one sync. Returns the sealed records.
    pub fn append(&mut self, events: Vec<NewEvent>) -> Result<Vec<Record>> {
        if let Some(why) = &self.poisoned {
            return Err(Error::Refused(why.clone()));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.next_seq();
        let last = first + events.len() as u64 - 1;
        let (mut segment, mut len) = match self.active {
            Some(a) => a,
            None => (first, 0),
        };
        if self.active.is_none() || (len >= self.segment_target && len > 0) {
            segment = first;
            len = 0;
            self.storage
                .create(segment)
                .map_err(|e| self.io(segment, "creating journal segment", e))?;
            self.active = Some((segment, 0));
        }
        let mut buf = Vec::with_capacity(events.len() * 400);
        let mut out = Vec::with_capacity(events.len());
        let mut prev = self.head.map_or(Hash::ZERO, |h| h.hash);
        for (i, ne) in events.into_iter().enumerate() {
            let ev = ne.seal(first + i as u64, prev);
            let payload = bincode::serde::encode_to_vec(&ev, crate::event::CANONICAL)
                .map_err(|e| Error::Invalid(format!("event {} cannot be encoded: {e}", ev.seq)))?;
            let hash = Hash::of_event_bytes(&payload);
            let offset = len + buf.len() as u64;
            encode_frame(&payload, &hash, first, last, &mut buf);
            let frame_len = (FRAME_HEADER + payload.len() + FRAME_TRAILER) as u64;
            out.push(Record {
                event: ev,
                hash,
                pos: Position { segment, offset },
                frame_len,
                batch_first: first,
                batch_last: last,
            });
            prev = hash;
        }
        if let Err(e) = self.storage.append(segment, &buf) {
            // Put the segment back to its last good length so it stays a valid journal.
            if let Err(t) = self.storage.truncate(segment, len) {
                self.poisoned = Some(format!(
                    "a failed write could not be undone ({t}); reopen the ledger to recover"
                ));
            }
            return Err(self.io(segment, "writing to", e));
        }
        if let Err(e) = self.storage.sync(segment) {
            // fsync failure: the kernel may have dropped the dirty pages; never retry.
            let _ = self.storage.truncate(segment, len);
            self.poisoned = Some(format!("fsync of {} failed ({e}); nothing after seq {} is acknowledged; reopen the ledger to recover", self.storage.describe(segment), first.wrapping_sub(1)));
            return Err(self.io(segment, "syncing", e));
        }
        self.head = Some(Head {
            seq: last,
            hash: prev,
        });
        self.active = Some((segment, len + buf.len() as u64));
        Ok(out)
    }

    /// Reads the record at `pos`.
    pub fn read_at(&self, pos: Position) -> Result<Record> {
        let mut header = [0u8; FRAME_HEADER];
        let n = self
            .storage
            .read_at(pos.segment, pos.offset, &mut header)
            .map_err(|e| self.io(pos.segment, "reading", e))?;
        let damaged = |reason: String| Error::Damaged {
            seq: pos.segment,
            location: format!(
                "{} offset {}",
                self.storage.describe(pos.segment),
                pos.offset
            ),
            reason,
        };
        if n < FRAME_HEADER {
            return Err(damaged("record cut short".into()));
        }
        let len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
        let total = FRAME_HEADER + len.min(MAX_EVENT_BYTES) + FRAME_TRAILER;
        let mut buf = vec![0u8; total];
        let n = self
            .storage
            .read_at(pos.segment, pos.offset, &mut buf)
            .map_err(|e| self.io(pos.segment, "reading", e))?;
        buf.truncate(n);
        let mut rec = decode_frame(&buf).map_err(|e| damaged(e.to_string()))?;
        rec.pos = pos;
        Ok(rec)
    }

    /// Calls `f` for every record from `from` (a record start) to the head, checking
    /// frames and chain links; `prev` is the record before `from` when known (its seq,
    /// hash and batch fields say what the first record must be, also in mid-batch).
    pub fn scan_from(
        &self,
        from: Position,
        prev: Option<&Record>,
        f: &mut dyn FnMut(&Record) -> Result<()>,
    ) -> Result<()> {
        self.scan_refs_from(from, prev, &mut |r| f(&r.to_record()))
    }

    /// [`Journal::scan_from`] handing out borrowed records (no copy of the events' strings).
    pub fn scan_refs_from(
        &self,
        from: Position,
        prev: Option<&Record>,
        f: &mut dyn FnMut(&RecordRef) -> Result<()>,
    ) -> Result<()> {
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        let mut expect =
            prev.map(|r| Expect::after_parts(r.event.seq, r.hash, r.batch_first, r.batch_last));
        let mut first = true;
        for seg in segs.into_iter().filter(|s| *s >= from.segment) {
            let start = if first { from.offset } else { 0 };
            first = false;
            if expect.is_none() && seg == 0 && start == 0 {
                // The journal's first record: seq 0 with the zero prev hash.
                expect = Some(Expect {
                    seq: 0,
                    prev: Hash::ZERO,
                    batch: None,
                });
            }
            if expect.is_none() && seg != from.segment {
                expect = Some(Expect {
                    seq: seg,
                    prev: Hash::ZERO,
                    batch: None,
                });
            }
            if let Some(e) = &expect {
                if start == 0 && e.seq != seg {
                    return Err(Error::Damaged {
                        seq: e.seq,
                        location: self.storage.describe(seg),
                        reason: format!("segment starts at seq {seg}, expected {}", e.seq),
                    });
                }
                // A segment starts a batch: the writer rolls only between batches.
                if let (0, Some((first, last))) = (start, e.batch) {
                    return Err(Error::Damaged {
                        seq: e.seq,
                        location: self.storage.describe(seg),
                        reason: format!("segment starts inside the batch of seqs {first}..={last}"),
                    });
                }
            }
            let bytes = read_segment(self.storage.as_ref(), seg, start)
                .map_err(|e| self.io(seg, "reading", e))?;
            if let Some((b, _)) = walk(seg, start, &bytes, &mut expect, f)? {
                return Err(Error::Damaged {
                    seq: b.seq,
                    location: format!("{} offset {}", self.storage.describe(seg), b.pos.offset),
                    reason: b.reason,
                });
            }
        }
        // Appends write whole batches and recovery cuts unfinished ones, so a batch still
        // open at the end means its last record's batch fields (not hash-covered) are
        // damaged, or records were cut off behind the journal's back.
        if let Some(Expect {
            seq,
            batch: Some((first, last)),
            ..
        }) = expect
        {
            return Err(Error::Damaged {
                seq: first,
                location: "journal end".into(),
                reason: format!(
                    "batch {first}..={last} is unfinished: the journal ends at seq {}",
                    seq.wrapping_sub(1)
                ),
            });
        }
        if let (Some(e), Some(h)) = (expect, self.head) {
            if e.seq != h.seq + 1 {
                return Err(Error::Damaged {
                    seq: e.seq,
                    location: "journal end".into(),
                    reason: format!(
                        "journal ends at seq {} but its head is seq {}",
                        e.seq.wrapping_sub(1),
                        h.seq
                    ),
                });
            }
        }
        Ok(())
    }

    /// The checks of [`Journal::scan_all`], with segments walked on `workers` threads.
    /// `f` folds the records of one segment into an accumulator made by `init`; the
    /// accumulators come back in seq order. Returns `Ok(None)` when anything is wrong
    /// (a bad frame, link, seq, batch or segment boundary): run `scan_all` then, which
    /// names the first problem exactly as it always does.
    pub fn scan_all_parallel<T: Send>(
        &self,
        workers: usize,
        init: &(dyn Fn() -> T + Sync),
        f: &(dyn Fn(&mut T, &RecordRef) -> Result<()> + Sync),
    ) -> Result<Option<Vec<T>>> {
        struct Walked<T> {
            first: Option<(u64, Hash)>,
            last: Option<Expect>,
            broken: bool,
            acc: T,
        }
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        if segs.first().is_some_and(|&s| s != 0) {
            return Ok(None);
        }
        let n = segs.len();
        let results: Mutex<Vec<Option<Result<Walked<T>>>>> =
            Mutex::new((0..n).map(|_| None).collect());
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, u64, Vec<u8>)>(workers);
        let rx = Mutex::new(rx);
        let read = std::thread::scope(|s| -> Result<()> {
            for _ in 0..workers.max(1) {
                s.spawn(|| loop {
                    let Ok((i, seg, bytes)) = rx.lock().unwrap().recv() else {
                        return;
                    };
                    let mut acc = init();
                    let mut first = None;
                    let mut expect = None;
                    // Hashes computed several frames at a time first; a segment that
                    // fails any check is walked with every check frame by frame, which
                    // stops at the first problem and names it.
                    let hash = check_segment(&bytes).broken;
                    let res = walk_frames(seg, 0, &bytes, hash, &mut expect, &mut |r| {
                        if first.is_none() {
                            first = Some((r.event.seq, r.event.prev));
                        }
                        f(&mut acc, r)
                    });
                    let out = res.map(|brk| Walked {
                        first,
                        last: expect,
                        broken: brk.is_some(),
                        acc,
                    });
                    results.lock().unwrap()[i] = Some(out);
                });
            }
            // The calling thread reads; the workers check. Reading stops early on error.
            let mut read = Ok(());
            for (i, &seg) in segs.iter().enumerate() {
                match read_segment(self.storage.as_ref(), seg, 0) {
                    Ok(bytes) => {
                        if tx.send((i, seg, bytes)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        read = Err(self.io(seg, "reading", e));
                        break;
                    }
                }
            }
            drop(tx);
            read
        });
        read?;
        let mut out = Vec::with_capacity(n);
        let mut prev: Option<Expect> = None;
        for (i, w) in results.into_inner().unwrap().into_iter().enumerate() {
            let Some(w) = w else { return Ok(None) };
            let w = w?;
            let Some((first_seq, first_prev)) = w.first else {
                // Only the last segment may be empty (a roll just happened).
                if w.broken || i + 1 != n {
                    return Ok(None);
                }
                out.push(w.acc);
                continue;
            };
            let joins = match &prev {
                None => first_seq == 0,
                Some(e) => e.batch.is_none() && e.seq == first_seq && e.prev == first_prev,
            };
            if w.broken || !joins || first_seq != segs[i] {
                return Ok(None);
            }
            prev = w.last;
            out.push(w.acc);
        }
        // An unfinished batch at the end is damage (see `scan_from`).
        if prev.is_some_and(|e| e.batch.is_some()) {
            return Ok(None);
        }
        let end = prev.map_or(0, |e| e.seq);
        if end != self.head.map_or(0, |h| h.seq + 1) {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// The walk of [`Journal::scan_all_refs`] with the checking spread over threads: a
    /// reader thread reads the segments ahead in pieces of about 1 MiB, cut between
    /// records (inside a batch or not), `workers` threads check the frames, hashes,
    /// links and batch fields of each piece, and the calling thread hands each record to
    /// `f` in seq order, checking that each piece joins the one before (at most
    /// `2 × (workers + 2) + 2` pieces are read and not yet consumed; a piece is one whole
    /// frame when a frame is larger, and the rest of the segment from a frame header
    /// that does not parse).
    ///
    /// `Ok(false)` when anything is wrong (a bad frame, hash, link, seq, batch, segment
    /// boundary or encoding): `f` may have seen the records before the problem, so the
    /// caller starts over and runs [`Journal::scan_all_refs`], which names the problem
    /// exactly as it always does. `f` never sees a record that failed a check.
    pub fn scan_all_pipelined(
        &self,
        workers: usize,
        f: &mut dyn FnMut(&RecordRef) -> Result<()>,
    ) -> Result<bool> {
        self.scan_all_pipelined_with(workers, &|_, _| Some(()), &mut |at, bytes, ()| {
            read_checked(at, bytes, f)
        })
    }

    /// [`Journal::scan_all_pipelined`] with part of the reading on the workers too: after
    /// checking a piece, a worker runs `prepare` on it (segment number and the piece's
    /// bytes; [`Journal::checked_segment_payloads`] hands out its events' bytes); the
    /// calling thread then gets each piece's position, bytes and what `prepare` made of
    /// them, in order, in `consume`. `prepare` returning `None`, or `consume` returning `Ok(false)`, means
    /// a record did not decode: the walk stops with `Ok(false)` like any other problem.
    pub fn scan_all_pipelined_with<P: Send>(
        &self,
        workers: usize,
        prepare: &SegmentPrepare<P>,
        consume: &mut SegmentConsume<P>,
    ) -> Result<bool> {
        use std::collections::BTreeMap;
        use std::sync::{mpsc, Arc, Condvar};
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        if segs.first().is_some_and(|&s| s != 0) {
            return Ok(false);
        }
        let n = segs.len();
        let workers = workers.max(1);
        // Pieces handed out and not yet consumed, at most.
        // Few: the caller's thread folds while the workers check, and on a machine with
        // no core to spare for it a read-ahead of many pieces lets the workers take the
        // cores until every piece is checked and leaves the caller to fold the last
        // ones alone (on two cores, a fold of 10,000 events then took a fifth longer).
        let window = workers + 2;
        type Done<P> = Mutex<BTreeMap<usize, (Checked, Option<P>)>>;
        let done: Done<P> = Mutex::new(BTreeMap::new());
        let ready = Condvar::new();
        type Job = (usize, usize, Arc<Vec<u8>>);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let piece_bytes = self.piece_bytes;
        // Not bounded itself (sending must not wait for the workers while pieces are
        // ready to consume): the read-ahead below bounds what is in flight.
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Mutex::new(rx);
        std::thread::scope(|s| -> Result<bool> {
            // Pieces sent, in order, for this thread: segment index, the piece's offset
            // in it, its bytes, and whether it is the segment's first. Bounded: the
            // reader waits while `window` pieces are not yet consumed.
            type Sent = (usize, u64, Arc<Vec<u8>>, bool);
            let (sent_tx, sent_rx) = mpsc::sync_channel::<Sent>(window);
            // Buffers of pieces already consumed, for the reader to read into again.
            let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Ok((unit, i, bytes)) = rx.lock().unwrap().recv() else {
                        return;
                    };
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        continue; // the caller is done: what is left is dropped unchecked
                    }
                    let piece = &bytes[..];
                    // A panic (in `prepare`, say) reaches the caller as a broken piece,
                    // which ends its wait, and then as the panic itself when the scope
                    // joins this thread: never as a wait that does not end.
                    let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let checked = check_segment(piece);
                        let prepared = if checked.broken {
                            None
                        } else {
                            prepare(segs[i], piece)
                        };
                        (checked, prepared)
                    }));
                    drop(bytes);
                    let (result, panicked) = match work {
                        Ok(r) => (r, None),
                        Err(p) => {
                            let broken = Checked {
                                first: None,
                                last: None,
                                broken: true,
                            };
                            ((broken, None), Some(p))
                        }
                    };
                    done.lock().unwrap().insert(unit, result);
                    ready.notify_all();
                    if let Some(p) = panicked {
                        std::panic::resume_unwind(p);
                    }
                });
            }
            // The reader: reads each segment in pieces of about `piece_bytes`, cut
            // between records, each into its own buffer, and hands each piece to the
            // workers and then to this thread, which only waits and consumes. It stops
            // when this thread returns (its channels are then closed), and its dropping
            // `tx` stops the workers.
            let segs = &segs;
            let reader = s.spawn(move || -> Result<()> {
                let mut unit = 0usize;
                // The walk's first pieces are small and each one twice the last, up to
                // `piece_bytes`: the caller starts on the first piece once it is
                // checked, not after a whole `piece_bytes` is read and checked.
                let mut piece = (piece_bytes / FIRST_PIECE_SHARE).max(1);
                // An empty buffer, one already consumed when there is one.
                let spare = || {
                    let mut b = spare_rx.try_recv().unwrap_or_default();
                    b.clear();
                    b
                };
                let mut send = |sent: Sent| -> bool {
                    let job = (unit, sent.0, sent.2.clone());
                    unit += 1;
                    tx.send(job).is_ok() && sent_tx.send(sent).is_ok()
                };
                for (i, &seg) in segs.iter().enumerate() {
                    let read = |at: u64, limit: u64, buf: &mut Vec<u8>| {
                        self.storage
                            .read_into(seg, at, limit, buf)
                            .map_err(|e| self.io(seg, "reading", e))
                    };
                    let mut bytes = spare();
                    // `at`: the segment's bytes read so far; `bytes` starts at `start`
                    // with whatever of a frame the last piece did not take.
                    let len = self
                        .storage
                        .len(seg)
                        .map_err(|e| self.io(seg, "reading", e))?;
                    let (mut at, mut start, mut first) = (0u64, 0u64, true);
                    let mut want = piece;
                    loop {
                        let got = read(at, (want as u64).min(len - at), &mut bytes)?;
                        at += got as u64;
                        // The last piece takes all that is left, whole frames or not
                        // (its checks find a torn one).
                        let last = got == 0 || at >= len;
                        let end = if last {
                            bytes.len()
                        } else {
                            whole_frames(&bytes)
                        };
                        if end == 0 && !last {
                            // Not one whole frame yet: read on into this piece, at least
                            // to the end of the frame begun.
                            want = piece.max(frame_end(&bytes).saturating_sub(bytes.len()));
                            continue;
                        }
                        piece = (piece * 2).min(piece_bytes);
                        want = piece;
                        let mut next = Vec::new();
                        if !last {
                            next = spare();
                            next.extend_from_slice(&bytes[end..]);
                            bytes.truncate(end);
                        }
                        let taken = bytes.len() as u64;
                        if !send((i, start, Arc::new(bytes), first)) {
                            return Ok(());
                        }
                        if last {
                            break;
                        }
                        (start, first, bytes) = (start + taken, false, next);
                    }
                }
                Ok(())
            });
            // Set on every return: pieces still queued are then not checked.
            let _stop = StopOnDrop(&stop);
            let mut prev: Option<Expect> = None;
            for unit in 0.. {
                let Ok((i, offset, bytes, first_piece)) = sent_rx.recv() else {
                    break;
                };
                let (checked, prepared) = {
                    let mut d = done.lock().unwrap();
                    loop {
                        if let Some(x) = d.remove(&unit) {
                            break x;
                        }
                        d = ready.wait(d).unwrap();
                    }
                };
                if checked.broken {
                    return Ok(false);
                }
                match checked.first {
                    None => {
                        // Only the last segment may be empty (a roll just happened), and
                        // then it is named for the seq that comes next; a segment with
                        // frames is never cut into an empty piece.
                        let next = prev.map_or(0, |e| e.seq);
                        let rolled = prev.is_none_or(|e| e.batch.is_none());
                        if i + 1 != n || !first_piece || segs[i] != next || !rolled {
                            return Ok(false);
                        }
                    }
                    Some(first) => {
                        // The piece's first record follows the last one consumed: seq,
                        // prev and batch fields, across a cut inside a batch too. A
                        // segment starts a batch and its first seq is its number.
                        let exp = prev.unwrap_or(Expect {
                            seq: 0,
                            prev: Hash::ZERO,
                            batch: None,
                        });
                        let joins = exp
                            .check_parts(
                                first.seq,
                                &first.prev,
                                first.batch_first,
                                first.batch_last,
                            )
                            .is_ok();
                        if !joins || (first_piece && (exp.batch.is_some() || first.seq != segs[i]))
                        {
                            return Ok(false);
                        }
                        let Some(prepared) = prepared else {
                            return Ok(false);
                        };
                        let at = Position {
                            segment: segs[i],
                            offset,
                        };
                        if !consume(at, &bytes, prepared)? {
                            return Ok(false);
                        }
                        prev = checked.last;
                    }
                }
                // The piece's buffer, for the reader to read into again, once nothing
                // else holds it (the worker has let go of it before it reported).
                if let Ok(b) = Arc::try_unwrap(bytes) {
                    let _ = spare_tx.send(b);
                }
            }
            // The reader has finished, or failed to read a segment.
            match reader.join() {
                Ok(read) => read?,
                Err(p) => std::panic::resume_unwind(p),
            }
            // An unfinished batch at the end is damage (see `scan_from`).
            if prev.is_some_and(|e| e.batch.is_some()) {
                return Ok(false);
            }
            Ok(prev.map_or(0, |e| e.seq) == self.head.map_or(0, |h| h.seq + 1))
        })
    }

    /// The payloads (canonical event bytes) of a piece that
    /// [`Journal::scan_all_pipelined_with`] checked, in order, for a `prepare` that reads
    /// them itself (nothing is decoded or hashed here). `false`: a frame does not parse
    /// or `f` returned `false`.
    pub fn checked_segment_payloads(bytes: &[u8], f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let mut off = 0usize;
        while off < bytes.len() {
            let Ok(frame) = check_frame(&bytes[off..], false) else {
                return false;
            };
            if !f(frame.payload) {
                return false;
            }
            off += frame.len;
        }
        true
    }

    /// Walks the whole journal from seq 0, checking every frame, link, seq and batch.
    pub fn scan_all(&self, f: &mut dyn FnMut(&Record) -> Result<()>) -> Result<()> {
        self.scan_all_refs(&mut |r| f(&r.to_record()))
    }

    /// [`Journal::scan_all`] handing out borrowed records.
    pub fn scan_all_refs(&self, f: &mut dyn FnMut(&RecordRef) -> Result<()>) -> Result<()> {
        let segs = self
            .storage
            .segments()
            .map_err(|e| self.io(0, "listing journal segments", e))?;
        let Some(&first) = segs.first() else {
            return Ok(());
        };
        if first != 0 {
            return Err(Error::Damaged {
                seq: 0,
                location: self.storage.describe(first),
                reason: format!(
                    "the first segment starts at seq {first}; seqs 0..{first} are missing"
                ),
            });
        }
        let mut saw_genesis = false;
        self.scan_refs_from(
            Position {
                segment: 0,
                offset: 0,
            },
            None,
            &mut |r| {
                if !saw_genesis {
                    if r.event.seq != 0 || r.event.prev != Hash::ZERO {
                        return Err(Error::Damaged {
                            seq: 0,
                            location: "journal start".into(),
                            reason: format!(
                                "the journal does not start with seq 0 (seq {} is first)",
                                r.event.seq
                            ),
                        });
                    }
                    saw_genesis = true;
                }
                f(r)
            },
        )
    }
}

/// Looks for an intact record after a break whose batch started after `torn_first`:
/// such a record was written after the torn batch was synced, so the break is damage.
fn intact_later_batch(bytes: &[u8], torn_first: u64) -> Option<u64> {
    let mut i = 0;
    while i + FRAME_HEADER <= bytes.len() {
        match memchr_magic(&bytes[i..]) {
            None => return None,
            Some(k) => {
                i += k;
                if let Ok(r) = decode_frame(&bytes[i..]) {
                    if r.batch_first > torn_first && r.event.seq > torn_first {
                        return Some(r.event.seq);
                    }
                }
                i += 1;
            }
        }
    }
    None
}

fn memchr_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == FRAME_MAGIC)
}
