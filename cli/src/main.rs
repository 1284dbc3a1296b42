//! The `ledger` binary: everything lives in the `ledger_cli` library.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(ledger_cli::run());
}
