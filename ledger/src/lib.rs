//! The agent action ledger's storage core. It never prints and never parses arguments.
//!
//! - [`Event`], [`Body`], [`NewEvent`]: the event model; [`CANONICAL`] is its encoding.
//! - [`Hash`]: BLAKE3 digests (event hashes via `derive_key`, content hashes plain).
//! - [`Journal`] over a [`Storage`] ([`FsStorage`], [`MemStorage`] for fault tests):
//!   hash-chained, fsynced, torn-tail recovery.
//! - [`ContentStore`]: content-addressed, verified blobs.
//! - [`Index`]: the derived indexes (flat files, and sled opened on demand), all
//!   rebuildable from the journal.
//! - [`Ledger`]: one `.ledger/` directory: lock, group-committed appends, reads, verify.
//! - [`merkle`]: RFC 9162-shaped BLAKE3 Merkle tree, inclusion and consistency proofs.
//! - [`checkpoint`]: C2SP signed checkpoints (Ed25519 signed notes).
//! - [`Ledger::merkle_state`], [`Ledger::checkpoint`], [`Ledger::check_checkpoints`]:
//!   the Merkle tree of the journal (kept incrementally), checkpoints recorded as events,
//!   and checking signed checkpoints against the journal.
#![forbid(unsafe_code)]

mod audit;
mod changelog;
pub mod checkpoint;
mod error;
mod event;
mod hash;
mod index;
mod journal;
mod ledger;
pub mod merkle;
mod storage;
mod store;
mod verify;

pub use audit::{Checkpointed, MerkleState, Mismatch};
pub use error::{Error, Result};
pub use event::*;
pub use hash::{cmp_bytes, Hash, Name, EVENT_HASH_CONTEXT};
pub use index::{Index, IndexState, SnapshotWriter};
pub use journal::{
    decode_frame, decode_frame_ref, encode_frame, FrameError, Head, Journal, Position, Record,
    RecordRef, Recovery, SegmentConsume, SegmentPrepare, TailHint, FRAME_HEADER, FRAME_MAGIC,
    FRAME_TRAILER, SEGMENT_TARGET,
};
pub use ledger::{
    open_journal, validate_id, Ledger, OpenOptions2 as OpenOptions, OpenReport, Precondition,
    LEDGER_DIR,
};
pub use storage::{prefetch, Fault, FsStorage, MemStorage, SegmentStamp, Storage};
pub use store::{ContentStore, Pending, VerifyingReader};
pub use verify::{Problem, VerifyOptions, VerifyReport};
