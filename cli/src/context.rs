//! Finding the workspace and opening its ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger::{Ledger, OpenOptions, LEDGER_DIR};

use crate::args::Cli;
use crate::output::{CliError, CliResult};
use crate::scan::Workspace;

pub struct Ctx {
    pub ledger: Ledger,
    pub ws: Workspace,
}

/// The `.ledger` directory named by `--ledger`/`LEDGER_DIR`, or found upwards from the
/// current directory.
pub fn ledger_dir(cli: &Cli) -> CliResult<PathBuf> {
    match &cli.ledger {
        Some(d) if d.join("FORMAT").is_file() => Ok(d.clone()),
        Some(d) if d.join(LEDGER_DIR).join("FORMAT").is_file() => Ok(d.join(LEDGER_DIR)),
        Some(d) => Err(CliError::new(
            1,
            format!(
                "no ledger at {} (neither it nor {}/{LEDGER_DIR} is a ledger directory)",
                d.display(),
                d.display()
            ),
        )
        .with_hint("run `ledger init` in the workspace first")),
        None => {
            let cwd = std::env::current_dir()?;
            Ok(Ledger::find(&cwd).map_err(CliError::from)?)
        }
    }
}

pub fn open(cli: &Cli) -> CliResult<Ctx> {
    open_then(cli, |_, _| ()).map(|(ctx, ())| ctx)
}

/// [`open`], calling `locked` with the workspace and the ledger directory as soon as
/// the ledger's lock is held, before its indexes and journal are opened (see
/// [`Ledger::open_dir_then`]).
pub fn open_then<T>(cli: &Cli, locked: impl FnOnce(&Workspace, &Path) -> T) -> CliResult<(Ctx, T)> {
    let dir = ledger_dir(cli)?;
    let opts = OpenOptions {
        lock_timeout: Duration::from_secs_f64(cli.lock_timeout.max(0.0)),
    };
    let root = dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let root = root.canonicalize().unwrap_or(root);
    let ws = Workspace { root };
    let (ledger, report, then) = Ledger::open_dir_then(&dir, &opts, || locked(&ws, &dir))?;
    // The command ends when its context is dropped, and the process with it.
    ledger.exiting();
    if report.recovery.cut_bytes > 0 {
        eprintln!(
            "ledger: recovered from an interrupted write: cut {} bytes of an unacknowledged batch from {} (seqs dropped: {:?})",
            report.recovery.cut_bytes,
            report.recovery.segment.as_deref().unwrap_or("the journal"),
            report.recovery.dropped
        );
    }
    if let Some(why) = &report.reindexed {
        eprintln!("ledger: rebuilt the indexes from the journal ({why})");
        // Rebuilding the indexes dropped the kept projection snapshots; without them the
        // state at a past point would fold from seq 0. They are a speed-up only, so a
        // failure here is reported and the command goes on.
        if report.damaged.is_none() {
            if let Err(e) = crate::state::rebuild_snapshots(&ledger) {
                eprintln!("ledger: warning: projection snapshots not rebuilt: {e}");
            }
        }
    }
    if let Some(d) = &report.damaged {
        eprintln!("ledger: warning: {d}; appends are refused until this is resolved (see `ledger verify`)");
    }
    Ok((Ctx { ledger, ws }, then))
}
