//! The agent action ledger's storage core.
//!
//! - [`Event`] and [`Body`]: the event model; [`event::CANONICAL`] is its encoding.
//! - [`Hash`]: BLAKE3 digests (event hashes via `derive_key`, content hashes plain).
//! - [`merkle`]: the RFC 9162-shaped BLAKE3 Merkle tree over event hashes, its proofs.
//! - [`checkpoint`]: signed checkpoints (C2SP `tlog-checkpoint` in a `signed-note`).
mod event;
mod hash;
pub mod checkpoint;
pub mod merkle;

pub use event::*;
pub use hash::{Hash, Name, EVENT_HASH_CONTEXT};
