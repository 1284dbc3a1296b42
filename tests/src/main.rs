//! `ledger` as the end-to-end tests run it (identical to the `ledger` binary).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(ledger_cli::run());
}
