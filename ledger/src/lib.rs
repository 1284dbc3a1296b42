//! The agent action ledger's storage core.
//!
//! - [`Event`] and [`Body`]: the event model; [`event::CANONICAL`] is its encoding.
//! - [`Hash`]: BLAKE3 digests (event hashes via `derive_key`, content hashes plain).
mod event;
mod hash;

pub use event::*;
pub use hash::{Hash, Name, EVENT_HASH_CONTEXT};
