//! The `ledger` binary. Everything lives in the modules; this only sets the exit code.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod context;
mod output;
mod scan;
mod state;
mod timeparse;

fn main() {
    std::process::exit(commands::run());
}
