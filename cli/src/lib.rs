//! The `ledger` command-line interface as a library: [`run`] parses the process
//! arguments, runs one command and returns the exit code. The `ledger` binary is a
//! one-line wrapper; the end-to-end tests build an identical wrapper of their own.
#![forbid(unsafe_code)]

mod apply;
mod args;
mod cache;
mod commands;
mod compliance;
mod context;
mod forensics;
mod output;
mod scan;
/// The recorded tree at any seq (snapshots plus the events after them). Public only so
/// that `cli/benches/forensics.rs` can time `tree_at` and `rebuild_snapshots` directly;
/// not a stable API.
#[doc(hidden)]
pub mod state;
mod timeparse;
mod walk;

pub use commands::run;
