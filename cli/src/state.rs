//! The recorded file tree at the journal head, kept as a snapshot in the index database
//! plus the events after it.

use std::collections::BTreeMap;

use ledger::{Body, Content, Event, Ledger};

use crate::output::{CliError, CliResult};

/// Workspace-relative path bytes -> recorded content.
pub type Files = BTreeMap<Vec<u8>, Content>;

const SNAPSHOT: &str = "cli-files";
/// Save a new snapshot once this many events have passed since the last one.
const SNAPSHOT_EVERY: u64 = 256;

pub fn apply(files: &mut Files, ev: &Event) {
    if let Body::Change(c) = &ev.body {
        for rc in &c.resources {
            if !rc.key.is_file() {
                continue;
            }
            match &rc.new {
                Some(n) => {
                    files.insert(rc.key.name.0.clone(), *n);
                }
                None => {
                    files.remove(&rc.key.name.0);
                }
            }
        }
    }
}

/// The file tree at the head, and the seq of the newest snapshot used.
pub fn head_files(ledger: &Ledger) -> CliResult<(Files, Option<u64>)> {
    let Some(head) = ledger.head() else {
        return Ok((Files::new(), None));
    };
    let (mut files, from, snap_seq) =
        match ledger.index().snapshot_at_or_before(SNAPSHOT, head.seq)? {
            Some((seq, bytes)) => match ledger::decode_canonical::<Files>(&bytes) {
                Ok(f) => (f, seq + 1, Some(seq)),
                Err(_) => (Files::new(), 0, None),
            },
            None => (Files::new(), 0, None),
        };
    if from <= head.seq {
        ledger.scan(from, &mut |r| {
            apply(&mut files, &r.event);
            Ok(())
        })?;
    }
    Ok((files, snap_seq))
}

/// Stores a snapshot of `files` at the head when enough events passed since the last.
pub fn maybe_snapshot(ledger: &Ledger, files: &Files, last_snapshot: Option<u64>) -> CliResult {
    let Some(head) = ledger.head() else {
        return Ok(());
    };
    if last_snapshot.is_some_and(|s| head.seq < s + SNAPSHOT_EVERY) {
        return Ok(());
    }
    let bytes = ledger::encode_canonical(files).map_err(|e| CliError::new(1, e.to_string()))?;
    ledger.index().put_snapshot(SNAPSHOT, head.seq, &bytes)?;
    ledger.index().prune_snapshots(SNAPSHOT, head.seq)?;
    Ok(())
}
