//! One function per command. Output goes to stdout (data) and stderr (diagnostics).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;

use clap::Parser;
use ledger::{
    Actor, Body, Change, Failure, Hash, Ledger, NewEvent, Precondition, Record, ResourceChange,
    VerifyOptions,
};
use serde_json::json;

use replay::Projection;

use crate::args::{Cli, Command, Who};
use crate::cache::{HeadFiles, StatCache};
use crate::compliance;
use crate::context::{self, Ctx};
use crate::forensics;
use crate::output::{json_line, CliError, CliResult, EXIT_ERROR, EXIT_VERIFY};
use crate::scan::{display_path, WalkHandle};
use crate::state;
use crate::timeparse::{format_time, now_us, parse_range};

/// Parses arguments, runs the command, prints any error; returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                crate::output::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = &e.hint {
                eprintln!("hint: {h}");
            }
            e.code
        }
    }
}

fn dispatch(cli: &Cli) -> CliResult<i32> {
    match &cli.command {
        Command::Init { json } => init(*json).map(|_| 0),
        Command::Record { who, paths, json } => record(cli, who, paths, *json).map(|_| 0),
        Command::Exec { who, json, cmd } => exec(cli, who, cmd, *json),
        Command::Status { paths, json } => status(cli, paths, *json).map(|_| 0),
        Command::Log {
            agent,
            path,
            since,
            until,
            limit,
            json,
        } => log(
            cli,
            agent.as_deref(),
            path.as_deref(),
            since.as_deref(),
            until.as_deref(),
            *limit,
            *json,
        )
        .map(|_| 0),
        Command::Show { change, diff, json } => show(cli, change, *diff, *json).map(|_| 0),
        Command::Cat { hash } => cat(cli, hash).map(|_| 0),
        Command::Verify {
            json,
            quick,
            checkpoints,
            pubkey,
        } => verify(cli, *json, *quick).and_then(|code| {
            compliance::verify_checkpoints(
                cli,
                code,
                checkpoints.as_deref(),
                pubkey.as_deref(),
                *json,
            )
        }),
        Command::Keygen { .. }
        | Command::Checkpoint { .. }
        | Command::Export { .. }
        | Command::VerifyExport { .. }
        | Command::Redact { .. } => compliance::dispatch(cli),
        Command::Reindex { json } => reindex(cli, *json).map(|_| 0),
        Command::Revert {
            change,
            agent,
            message,
            change_id,
            principal,
            correlation,
            dry_run,
            json,
        } => forensics::revert(
            cli,
            change,
            agent,
            message.as_deref(),
            change_id.as_deref(),
            principal.as_deref(),
            correlation.as_deref(),
            *dry_run,
            *json,
        ),
        Command::Replay {
            at,
            before,
            out,
            json,
        } => forensics::replay_cmd(cli, at.as_deref(), before.as_deref(), out, *json).map(|_| 0),
        Command::Timeline {
            since,
            until,
            agent,
            correlation,
            path,
            json,
        } => forensics::timeline(
            cli,
            since.as_deref(),
            until.as_deref(),
            agent.as_deref(),
            correlation.as_deref(),
            path.as_deref(),
            *json,
        )
        .map(|_| 0),
        Command::Blame { path, json } => forensics::blame(cli, path, *json).map(|_| 0),
        Command::Diff {
            from,
            to,
            patch,
            json,
        } => forensics::diff(cli, from, to, *patch, *json).map(|_| 0),
    }
}

fn init(json: bool) -> CliResult {
    let cwd = std::env::current_dir()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let ledger = Ledger::init(
        &cwd,
        Actor {
            agent: "ledger-init".into(),
            principal: Some(user),
            role: None,
        },
    )?;
    let head = ledger.head().expect("init writes genesis");
    if json {
        json_line(&json!({"ledger": ledger.dir(), "genesis": head.hash}))?;
    } else {
        println!("Initialized an empty ledger in {}", ledger.dir().display());
        println!("Next: `ledger record --agent ID` after an agent acts, or `ledger exec --agent ID -- CMD`.");
    }
    Ok(())
}

fn parse_meta(who: &Who) -> CliResult<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for kv in &who.meta {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--meta {kv:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(CliError::usage(format!("--meta {kv:?} has an empty key")));
        }
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

fn actor(who: &Who) -> Actor {
    Actor {
        agent: who.agent.clone(),
        principal: who.principal.clone(),
        role: who.role.clone(),
    }
}

/// A time-ordered change ID: `YYYYMMDD-HHMMSS-xxxxxx`.
fn new_change_id() -> String {
    let now = chrono::Utc::now();
    let seed = blake3::hash(
        format!(
            "{}:{}:{:?}",
            std::process::id(),
            now.timestamp_nanos_opt().unwrap_or(0),
            std::thread::current().id()
        )
        .as_bytes(),
    );
    format!("{}-{}", now.format("%Y%m%d-%H%M%S"), &seed.to_hex()[..6])
}

/// A generated change ID not yet in the ledger.
pub(crate) fn fresh_change_id(ledger: &Ledger) -> CliResult<String> {
    let mut id = new_change_id();
    while ledger.change_exists(&id)?.is_some() {
        id = new_change_id();
    }
    Ok(id)
}

fn check_change_id(ledger: &Ledger, who: &Who) -> CliResult<String> {
    match &who.change {
        Some(id) => {
            ledger::validate_id("change ID", id)?;
            if let Some(seq) = ledger.change_exists(id)? {
                return Err(CliError::new(
                    EXIT_ERROR,
                    format!("change ID {id:?} already exists (seq {seq}); nothing was recorded"),
                )
                .with_hint("omit --change to get a generated ID"));
            }
            Ok(id.clone())
        }
        None => {
            let mut id = new_change_id();
            while ledger.change_exists(&id)?.is_some() {
                id = new_change_id();
            }
            Ok(id)
        }
    }
}

fn validate_who(who: &Who) -> CliResult {
    ledger::validate_id("agent ID", &who.agent)?;
    if let Some(c) = &who.correlation {
        ledger::validate_id("correlation ID", c)?;
    }
    Ok(())
}

/// The scope of a command (workspace-relative prefixes) and its walk.
type ScopedWalk = (Vec<Vec<u8>>, WalkHandle);

/// Opens the ledger and, as soon as it is locked, starts walking the workspace within
/// `paths` (so the walk overlaps opening the indexes and the journal).
fn open_and_walk(cli: &Cli, paths: &[std::path::PathBuf]) -> CliResult<(Ctx, ScopedWalk)> {
    let (ctx, started) = context::open_then(cli, |ws, dir| -> CliResult<_> {
        let scope = ws.scope(paths)?;
        let walk = ws.start_walk(&dir.join("index"), &scope);
        Ok((scope, walk))
    })?;
    Ok((ctx, started?))
}

/// Scans, stores content, and appends one change (plus `extra` events). Returns the
/// change ID and its records, or `None` when there was nothing to append.
fn record_changes(
    ctx: &Ctx,
    who: &Who,
    change_id: &str,
    scope: &[Vec<u8>],
    failure: Option<Failure>,
    meta: BTreeMap<String, String>,
    walk: Option<WalkHandle>,
) -> CliResult<Option<(Vec<ResourceChange>, Vec<Record>)>> {
    let ledger = &ctx.ledger;
    let walk = match walk {
        Some(w) => w,
        None => ctx.ws.start_walk(&ledger.dir().join("index"), scope),
    };
    // The recorded files and the stat cache load while the workspace is walked.
    let (head, mut cache) = (HeadFiles::load(ledger), StatCache::load(ledger));
    let walked = ctx.ws.finish_walk(ledger, walk);
    let mut head = head?;
    let scan = ctx
        .ws
        .compare(ledger, walked?, head.iter(), scope, true, &mut cache)?;
    for (p, why) in &scan.skipped {
        eprintln!("ledger: skipped {}: {why}", display_path(p));
    }
    if scan.changes.is_empty() && failure.is_none() {
        ledger.store().abandon(scan.pending);
        cache.save(ledger);
        head.save_if_due(ledger);
        return Ok(None);
    }
    if let Err(e) = ledger.commit_content(scan.pending) {
        return Err(e.into());
    }
    let time_us = now_us();
    let mut events = Vec::new();
    if !scan.changes.is_empty() {
        events.push(NewEvent {
            time_us,
            actor: actor(who),
            change_id: change_id.to_string(),
            correlation_id: who.correlation.clone(),
            body: Body::Change(Change {
                message: who.message.clone(),
                reverts: None,
                resources: scan.changes.clone(),
            }),
            meta: meta.clone(),
        });
    }
    if let Some(f) = failure {
        events.push(NewEvent {
            time_us,
            actor: actor(who),
            change_id: change_id.to_string(),
            correlation_id: who.correlation.clone(),
            body: Body::Failure(f),
            meta,
        });
    }
    let records = ledger.append(events, Precondition::NewChange(change_id.to_string()))?;
    // The change is durable; the rest is derived data, only a speed-up from here on.
    cache.save(ledger);
    head.apply(&records);
    if head.seq() == ledger.head().map(|h| h.seq) {
        head.save_if_due(ledger);
    }
    if let Err(e) = state::keep_snapshots_current(ledger) {
        eprintln!(
            "ledger: warning: could not save a snapshot ({}); it will be rebuilt",
            e.message
        );
    }
    Ok(Some((scan.changes, records)))
}

/// Appends the events of a new change, then moves the head tree snapshot along: from
/// `tree` (the whole head tree), or, without it, loading the tree only when a snapshot
/// is due.
pub(crate) fn append_change(
    ledger: &Ledger,
    events: Vec<NewEvent>,
    change_id: &str,
    tree: Option<(replay::Tree, Option<u64>)>,
) -> CliResult<Vec<Record>> {
    let records = ledger.append(events, Precondition::NewChange(change_id.to_string()))?;
    // The change is durable; snapshots are only a speed-up from here on.
    let saved = match tree {
        Some((mut tree, snap)) => {
            let advanced = records.iter().all(|r| tree.apply(&r.event).is_ok());
            if advanced && tree.seq() == ledger.head().map(|h| h.seq) {
                state::save_snapshots(ledger, &tree, snap)
            } else {
                Ok(())
            }
        }
        None => state::keep_snapshots_current(ledger),
    };
    if let Err(e) = saved {
        eprintln!(
            "ledger: warning: could not save a snapshot ({}); it will be rebuilt",
            e.message
        );
    }
    Ok(records)
}

fn summary(changes: &[ResourceChange]) -> String {
    let count = |op| changes.iter().filter(|c| c.op == op).count();
    format!(
        "{} created, {} modified, {} deleted",
        count(ledger::Op::Create),
        count(ledger::Op::Modify),
        count(ledger::Op::Delete)
    )
}

fn record(cli: &Cli, who: &Who, paths: &[std::path::PathBuf], json: bool) -> CliResult {
    validate_who(who)?;
    let meta = parse_meta(who)?;
    let (ctx, (scope, walk)) = open_and_walk(cli, paths)?;
    let id = check_change_id(&ctx.ledger, who)?;
    match record_changes(&ctx, who, &id, &scope, None, meta, Some(walk))? {
        None => {
            if json {
                json_line(&json!({"change_id": null, "files": 0}))?;
            } else {
                println!("Nothing to record: the workspace matches the ledger.");
            }
        }
        Some((changes, records)) => {
            if json {
                json_line(
                    &json!({"change_id": id, "seq": records[0].event.seq, "hash": records[0].hash, "files": changes.len()}),
                )?;
            } else {
                println!("{id}");
                eprintln!(
                    "Recorded change {id} at seq {}: {}",
                    records[0].event.seq,
                    summary(&changes)
                );
            }
        }
    }
    // Indexes are flushed when the ledger is dropped; they are derived and rebuilt if lost.
    Ok(())
}

fn exec(cli: &Cli, who: &Who, cmd: &[std::ffi::OsString], json: bool) -> CliResult<i32> {
    validate_who(who)?;
    let meta = parse_meta(who)?;
    let (ctx, (_, walk)) = open_and_walk(cli, &[])?;
    let id = check_change_id(&ctx.ledger, who)?;
    let (head, mut cache) = (HeadFiles::load(&ctx.ledger), StatCache::load(&ctx.ledger));
    let walked = ctx.ws.finish_walk(&ctx.ledger, walk);
    let head = head?;
    let before = ctx
        .ws
        .compare(&ctx.ledger, walked?, head.iter(), &[], false, &mut cache)?;
    cache.save(&ctx.ledger);
    head.save_if_due(&ctx.ledger);
    drop(head);
    if !before.changes.is_empty() {
        return Err(CliError::new(
            EXIT_ERROR,
            format!(
                "the workspace has {} unrecorded change(s) ({}); nothing was run",
                before.changes.len(),
                summary(&before.changes)
            ),
        )
        .with_hint(
            "record them first with `ledger record --agent ID`, or see them with `ledger status`",
        ));
    }
    // The lock stays held while the command runs, so no other recording can take its changes.
    let status = std::process::Command::new(&cmd[0]).args(&cmd[1..]).status();
    let (code, failure) = match status {
        Ok(s) => match s.code() {
            Some(0) => (0, None),
            Some(c) => (
                c,
                Some(Failure {
                    stage: "exec".into(),
                    error: format!("command exited with code {c}"),
                    exit_code: Some(c),
                }),
            ),
            None => {
                let sig = s.signal().unwrap_or(0);
                (
                    128 + sig,
                    Some(Failure {
                        stage: "exec".into(),
                        error: format!("command killed by signal {sig}"),
                        exit_code: None,
                    }),
                )
            }
        },
        Err(e) => (
            127,
            Some(Failure {
                stage: "exec".into(),
                error: format!("could not start {:?}: {e}", cmd[0]),
                exit_code: None,
            }),
        ),
    };
    let mut meta = meta;
    let argv: Vec<String> = cmd
        .iter()
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
        .collect();
    meta.insert("exec.argv".into(), serde_json::to_string(&argv)?);
    let failed = failure.is_some();
    let res = record_changes(&ctx, who, &id, &[], failure, meta, None)?;
    let n = res.as_ref().map_or(0, |(c, _)| c.len());
    if json {
        json_line(&json!({"change_id": res.as_ref().map(|_| &id), "files": n, "exit_code": code}))?;
    } else {
        match &res {
            Some((changes, _)) => {
                println!("{id}");
                eprintln!(
                    "Recorded change {id}: {}{}",
                    summary(changes),
                    if failed {
                        format!("; the command failed (exit {code})")
                    } else {
                        String::new()
                    }
                );
            }
            None => eprintln!("The command changed nothing; nothing was recorded."),
        }
    }

    Ok(code)
}

fn status(cli: &Cli, paths: &[std::path::PathBuf], json: bool) -> CliResult {
    let (ctx, (scope, walk)) = open_and_walk(cli, paths)?;
    let (head, mut cache) = (HeadFiles::load(&ctx.ledger), StatCache::load(&ctx.ledger));
    let walked = ctx.ws.finish_walk(&ctx.ledger, walk);
    let head = head?;
    let scan = ctx
        .ws
        .compare(&ctx.ledger, walked?, head.iter(), &scope, false, &mut cache)?;
    cache.save(&ctx.ledger);
    head.save_if_due(&ctx.ledger);
    if json {
        let v: Vec<_> = scan.changes.iter().map(file_json).collect();
        json_line(&json!({"clean": scan.changes.is_empty(), "changes": v}))?;
    } else if scan.changes.is_empty() {
        println!("Nothing to record: the workspace matches the ledger.");
    } else {
        println!("Unrecorded changes ({}):", summary(&scan.changes));
        for c in &scan.changes {
            let mode_note = match (&c.old, &c.new) {
                (Some(o), Some(n)) if o.mode != n.mode => {
                    format!(" (mode {} -> {})", o.mode.as_str(), n.mode.as_str())
                }
                _ => String::new(),
            };
            println!(
                "  {:<9}{}{}",
                format!("{}:", c.op.as_str()),
                c.key.name.display(),
                mode_note
            );
        }
        println!("Record them with `ledger record --agent ID`.");
    }
    for (p, why) in &scan.skipped {
        eprintln!("ledger: skipped {}: {why}", display_path(p));
    }

    Ok(())
}

fn file_json(c: &ResourceChange) -> serde_json::Value {
    json!({
        "resource": c.key.display(),
        "path": if c.key.is_file() { serde_json::to_value(&c.key.name).unwrap_or_default() } else { serde_json::Value::Null },
        "op": c.op.as_str(),
        "old_hash": c.old.map(|o| o.hash),
        "new_hash": c.new.map(|n| n.hash),
        "old_mode": c.old.map(|o| o.mode.as_str()),
        "new_mode": c.new.map(|n| n.mode.as_str()),
        "old_size": c.old.map(|o| o.size),
        "new_size": c.new.map(|n| n.size),
    })
}

fn event_json(r: &Record) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.event).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("hash".into(), json!(r.hash));
        o.insert("time".into(), json!(format_time(r.event.time_us)));
        o.insert("kind".into(), json!(r.event.body.kind()));
    }
    v
}

/// Summary of one change for `log` and `show`.
fn change_json(ledger: &Ledger, id: &str, records: &[Record]) -> CliResult<serde_json::Value> {
    let first = &records[0];
    let change = records.iter().find_map(|r| match &r.event.body {
        Body::Change(c) => Some(c),
        _ => None,
    });
    let failures: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event.body {
            Body::Failure(f) => {
                Some(json!({"stage": f.stage, "error": f.error, "exit_code": f.exit_code}))
            }
            _ => None,
        })
        .collect();
    Ok(json!({
        "change_id": id,
        "seq": first.event.seq,
        "time": format_time(first.event.time_us),
        "time_us": first.event.time_us,
        "agent": first.event.actor.agent,
        "principal": first.event.actor.principal,
        "role": first.event.actor.role,
        "correlation_id": first.event.correlation_id,
        "message": change.and_then(|c| c.message.clone()),
        "reverts": change.and_then(|c| c.reverts.clone()),
        "reverted_by": forensics::lifecycle(ledger, id)?.get(id).and_then(|c| c.reverted_by.clone()),
        "failures": failures,
        "files": change.map(|c| c.resources.iter().map(file_json).collect::<Vec<_>>()).unwrap_or_default(),
        "events": records.iter().map(|r| json!({"seq": r.event.seq, "kind": r.event.body.kind(), "hash": r.hash})).collect::<Vec<_>>(),
    }))
}

fn log(
    cli: &Cli,
    agent: Option<&str>,
    path: Option<&std::path::Path>,
    since: Option<&str>,
    until: Option<&str>,
    limit: Option<usize>,
    json: bool,
) -> CliResult {
    let now = now_us();
    let (since, until) = parse_range(since, until, now).map_err(CliError::usage)?;
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let Some(head) = ledger.head() else {
        return Ok(());
    };
    // Each filter narrows the candidate seqs through its index.
    let mut sets: Vec<BTreeSet<u64>> = Vec::new();
    if let Some(a) = agent {
        sets.push(ledger.index()?.agent_seqs(a)?.into_iter().collect());
    }
    if let Some(p) = path {
        sets.push(forensics::path_seqs(&ctx, p)?);
    }
    if since.is_some() || until.is_some() {
        sets.push(
            ledger
                .flat_index()?
                .time_seqs(since, until)?
                .into_iter()
                .collect(),
        );
    }
    let candidates: Box<dyn Iterator<Item = u64>> = if sets.is_empty() {
        Box::new((1..=head.seq).rev())
    } else {
        let mut it = sets.into_iter();
        let mut acc = it.next().unwrap();
        for s in it {
            acc = acc.intersection(&s).copied().collect();
        }
        Box::new(acc.into_iter().rev())
    };
    let mut seen = BTreeSet::new();
    let mut shown = 0usize;
    let mut out = std::io::stdout().lock();
    for seq in candidates {
        if limit.is_some_and(|l| shown >= l) {
            break;
        }
        let r = ledger.event(seq)?;
        if matches!(r.event.body, Body::Genesis(_)) || !seen.insert(r.event.change_id.clone()) {
            continue;
        }
        let records = ledger.change(&r.event.change_id)?;
        let v = change_json(ledger, &r.event.change_id, &records)?;
        shown += 1;
        let res = if json {
            serde_json::to_writer(&mut out, &v)
                .map_err(CliError::from)
                .and_then(|_| writeln!(out).map_err(Into::into))
        } else {
            print_change_header(&mut out, &v)
        };
        if let Err(e) = res {
            // A closed pipe (`ledger log | head`) is a normal way to stop reading.
            if e.message.contains("Broken pipe") {
                return Ok(());
            }
            return Err(e);
        }
    }
    Ok(())
}

fn print_change_header(out: &mut dyn Write, v: &serde_json::Value) -> CliResult {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    writeln!(
        out,
        "change {}  (seq {})",
        s("change_id").unwrap_or_default(),
        v["seq"]
    )?;
    let mut who = format!("agent {}", s("agent").unwrap_or_default());
    for (k, label) in [
        ("principal", "for"),
        ("role", "as"),
        ("correlation_id", "request"),
    ] {
        if let Some(x) = s(k) {
            who.push_str(&format!("  {label} {x}"));
        }
    }
    writeln!(out, "  {who}")?;
    writeln!(out, "  time  {}", s("time").unwrap_or_default())?;
    let files = v["files"].as_array().map_or(0, Vec::len);
    let mut status = Vec::new();
    if let Some(r) = s("reverts") {
        status.push(format!("reverts {r}"));
    }
    if let Some(r) = s("reverted_by") {
        status.push(format!("reverted by {r}"));
    }
    for f in v["failures"].as_array().into_iter().flatten() {
        status.push(format!("failed: {}", f["error"].as_str().unwrap_or("")));
    }
    writeln!(
        out,
        "  files {files}{}",
        if status.is_empty() {
            String::new()
        } else {
            format!("  [{}]", status.join("; "))
        }
    )?;
    if let Some(m) = s("message") {
        for line in m.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    writeln!(out)?;
    Ok(())
}

fn show(cli: &Cli, change: &str, diff: bool, json: bool) -> CliResult {
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let id = ledger.resolve_change(change)?;
    let records = ledger.change(&id)?;
    if json {
        let mut v = change_json(ledger, &id, &records)?;
        v["events_full"] = json!(records.iter().map(event_json).collect::<Vec<_>>());
        if diff {
            let diffs: Vec<_> = records
                .iter()
                .flat_map(|r| r.event.resources().to_vec())
                .map(|c| json!({"resource": c.key.display(), "diff": text_diff(ledger, &c)}))
                .collect();
            v["diffs"] = json!(diffs);
        }
        return json_line(&v);
    }
    let mut out = std::io::stdout().lock();
    let v = change_json(ledger, &id, &records)?;
    print_change_header(&mut out, &v)?;
    for r in &records {
        writeln!(
            out,
            "  seq {}  {}  {}  hash {}",
            r.event.seq,
            r.event.body.kind(),
            format_time(r.event.time_us),
            r.hash
        )?;
        match &r.event.body {
            Body::Change(c) => {
                for rc in &c.resources {
                    writeln!(out, "    {:<7} {}", rc.op.as_str(), rc.key.name.display())?;
                    if let Some(o) = &rc.old {
                        writeln!(
                            out,
                            "            old {}  {}  {} bytes",
                            o.hash,
                            o.mode.as_str(),
                            o.size
                        )?;
                    }
                    if let Some(n) = &rc.new {
                        writeln!(
                            out,
                            "            new {}  {}  {} bytes",
                            n.hash,
                            n.mode.as_str(),
                            n.size
                        )?;
                    }
                }
            }
            Body::Failure(f) => writeln!(out, "    stage {}: {}", f.stage, f.error)?,
            other => writeln!(out, "    {}", serde_json::to_string(other)?)?,
        }
        for (k, val) in &r.event.meta {
            writeln!(out, "    meta {k} = {val}")?;
        }
    }
    if diff {
        for r in &records {
            for rc in r.event.resources() {
                match text_diff(ledger, rc) {
                    Some(d) => write!(out, "\n{d}")?,
                    None => writeln!(
                        out,
                        "\n(no text diff for {}: binary, symlink or content unavailable)",
                        rc.key.name.display()
                    )?,
                }
            }
        }
    }
    Ok(())
}

/// A unified diff of a file change, when both sides are available text.
fn text_diff(ledger: &Ledger, rc: &ResourceChange) -> Option<String> {
    let load = |c: &Option<ledger::Content>| -> Option<String> {
        match c {
            None => Some(String::new()),
            Some(c) if c.mode == ledger::Mode::Symlink => None,
            Some(c) => ledger
                .store()
                .get(&c.hash)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.contains('\0')),
        }
    };
    let old = load(&rc.old)?;
    let new = load(&rc.new)?;
    let name = rc.key.name.display();
    let patch = diffy::DiffOptions::new()
        .set_original_filename(format!("a/{name}"))
        .set_modified_filename(format!("b/{name}"))
        .create_patch(&old, &new);
    Some(patch.to_string())
}

fn cat(cli: &Cli, hash: &str) -> CliResult {
    let h = Hash::from_hex(hash).ok_or_else(|| {
        CliError::usage(format!("{hash:?} is not a content hash (64 hex digits)"))
    })?;
    let ctx = context::open(cli)?;
    if let Some(seq) = ctx.ledger.flat_index()?.redaction(&h)? {
        let r = ctx.ledger.event(seq)?;
        let reason = match &r.event.body {
            Body::Redaction(rd) => rd.reason.clone(),
            _ => String::new(),
        };
        return Err(CliError::new(
            EXIT_ERROR,
            format!(
                "content {h} was redacted at seq {seq} ({}): {reason}",
                format_time(r.event.time_us)
            ),
        ));
    }
    // Content up to CAT_BUFFER is checked before any byte is written, so damaged bytes
    // are never shown. Larger content streams (bounded memory); the hash is checked at
    // the end and a mismatch fails the command (exit 3) after the bytes were written.
    const CAT_BUFFER: u64 = 64 << 20;
    let mut reader = ctx.ledger.store().open_reader(&h)?;
    let mut head = Vec::new();
    let damaged = |_| {
        CliError::from(ledger::Error::CorruptContent {
            hash: h,
            actual: Hash::ZERO,
        })
    };
    std::io::Read::by_ref(&mut reader)
        .take(CAT_BUFFER)
        .read_to_end(&mut head)
        .map_err(damaged)?;
    let mut out = std::io::stdout().lock();
    let res = out.write_all(&head).and_then(|_| {
        if head.len() as u64 == CAT_BUFFER {
            std::io::copy(&mut reader, &mut out).map(|_| ())
        } else {
            Ok(())
        }
    });
    match res.and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(damaged(e)),
        Err(e) => Err(e.into()),
    }
}

fn verify(cli: &Cli, json: bool, quick: bool) -> CliResult<i32> {
    let ctx = context::open(cli)?;
    let rep = ctx.ledger.verify(VerifyOptions {
        contents: !quick,
        indexes: true,
    })?;
    for w in &rep.warnings {
        eprintln!("ledger: warning: {w}");
    }
    if json {
        json_line(&serde_json::to_value(&rep)?)?;
    } else if rep.ok() {
        println!(
            "ok: {} events (seq 0 to {}), head {}; {} content objects {} ({} bytes){}",
            rep.events,
            rep.head_seq.map_or("-".into(), |s| s.to_string()),
            rep.head_hash.map_or("-".into(), |h| h.to_hex()),
            rep.contents_checked,
            if quick { "present" } else { "re-hashed" },
            rep.content_bytes_checked,
            if rep.redacted_contents > 0 {
                format!("; {} redacted", rep.redacted_contents)
            } else {
                String::new()
            }
        );
    } else {
        let first = &rep.problems[0];
        eprintln!(
            "FAILED: {} problem(s); first: {}",
            rep.problems.len(),
            first.detail
        );
        for p in rep.problems.iter().skip(1).take(20) {
            eprintln!("  also: {}", p.detail);
        }
        println!("verified {} events before the first problem", rep.events);
    }
    Ok(if rep.ok() { 0 } else { EXIT_VERIFY })
}

fn reindex(cli: &Cli, json: bool) -> CliResult {
    let ctx = context::open(cli)?;
    let n = ctx.ledger.reindex()?;
    let rebuilt = state::rebuild_snapshots(&ctx.ledger)?;
    // The stat cache and the head files are rebuilt by the next scan (they only save
    // reading files and folding events).
    crate::cache::remove_all(&ctx.ledger);
    ctx.ledger.flush()?;
    if json {
        json_line(&json!({"events": n, "files": rebuilt.files}))?;
    } else {
        println!(
            "Rebuilt the indexes and snapshots from {n} journal events ({} files at the head).",
            rebuilt.files
        );
    }
    Ok(())
}
