//! Commands over history: revert, replay, timeline, blame, diff.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use ledger::{Body, Change, Content, Hash, Ledger, NewEvent, Record, ResourceKey};
use replay::{ContentError, ContentSource, Projection};
use serde_json::json;

use crate::apply::{self, Root};
use crate::args::Cli;
use crate::cache::HeadFiles;
use crate::context::{self, Ctx};
use crate::output::{json_line, CliError, CliResult, EXIT_CONFLICT, EXIT_ERROR, EXIT_VERIFY};
use crate::state;
use crate::timeparse::{format_time, now_us, parse_range, parse_time};

/// The ledger's content store as the revert planner sees it.
struct Store<'a>(&'a Ledger);

impl Store<'_> {
    fn redacted(&self, hash: &Hash) -> Option<ContentError> {
        let seq = self.0.flat_index().ok()?.redaction(hash).ok()??;
        let r = self.0.event(seq).ok()?;
        let reason = match &r.event.body {
            Body::Redaction(rd) => rd.reason.clone(),
            _ => String::new(),
        };
        Some(ContentError::Redacted {
            hash: *hash,
            reason,
            time_us: r.event.time_us,
            seq,
        })
    }
}

impl ContentSource for Store<'_> {
    fn read(&self, hash: &Hash) -> Result<Vec<u8>, ContentError> {
        if let Some(e) = self.redacted(hash) {
            return Err(e);
        }
        self.0.store().get(hash).map_err(|e| match e {
            ledger::Error::MissingContent(h) => ContentError::Missing { hash: h },
            other => ContentError::Unreadable {
                hash: *hash,
                detail: other.to_string(),
            },
        })
    }

    fn check(&self, hash: &Hash) -> Result<(), ContentError> {
        if let Some(e) = self.redacted(hash) {
            return Err(e);
        }
        if self.0.store().contains(hash) {
            Ok(())
        } else {
            Err(ContentError::Missing { hash: *hash })
        }
    }
}

/// A seq from what the user typed: a seq number, a change ID (its last event), or a time
/// (the last event recorded at or before it).
pub fn resolve_point(ledger: &Ledger, s: &str) -> CliResult<u64> {
    let head = ledger
        .head()
        .ok_or_else(|| CliError::new(EXIT_ERROR, "the ledger is empty"))?;
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let seq: u64 = s
            .parse()
            .map_err(|_| CliError::usage(format!("seq {s} is too large")))?;
        if seq > head.seq {
            return Err(CliError::usage(format!(
                "seq {seq} is past the head (seq {})",
                head.seq
            )));
        }
        return Ok(seq);
    }
    if let Ok(id) = ledger.resolve_change(s) {
        let seqs = ledger.change_seqs(&id)?;
        return Ok(*seqs.last().expect("a resolved change has events"));
    }
    let t = parse_time(s, now_us()).map_err(|e| {
        CliError::usage(format!(
            "{s:?} is not a seq, a known change ID or a time ({e})"
        ))
    })?;
    let seqs = ledger
        .flat_index()?
        .time_seqs(None, Some(t.saturating_add(1)))?;
    match seqs.last() {
        Some(seq) => Ok(*seq),
        None => {
            let first = ledger.event(0)?;
            Err(CliError::usage(format!(
                "{} is before the first event (seq 0 at {})",
                format_time(t),
                format_time(first.event.time_us)
            )))
        }
    }
}

fn later_changes(ledger: &Ledger, key: &ResourceKey, after: u64) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seq in ledger
        .index()
        .and_then(|i| i.resource_seqs(&key.index_bytes()))
        .unwrap_or_default()
    {
        if seq > after {
            if let Ok(r) = ledger.event(seq) {
                if !out.contains(&r.event.change_id) {
                    out.push(r.event.change_id);
                }
            }
        }
    }
    out
}

/// What a revert of `target` looks at in the head tree (each file it touched, every
/// ancestor path, everything beneath it), read from the blocks of `head-files` that
/// hold those; `None` when the change touched resources outside the file namespace
/// (the planner then gets the whole tree).
fn partial_head(ledger: &Ledger, target: &Record) -> CliResult<Option<(replay::Tree, HeadFiles)>> {
    let keys = target.event.resources();
    if keys.iter().any(|rc| !rc.key.is_file()) {
        return Ok(None);
    }
    let paths: Vec<&[u8]> = keys.iter().map(|rc| rc.key.name.as_bytes()).collect();
    let head = HeadFiles::load_around(ledger, &paths)?;
    let mut entries = BTreeMap::new();
    let mut put = |path: &[u8], content: Content| {
        let key = ResourceKey::file(path);
        let entry = replay::Entry {
            content,
            seq: 0,
            change_id: String::new(),
        };
        entries.insert(key, entry);
    };
    for rc in keys {
        let name = rc.key.name.as_bytes();
        for path in crate::cache::with_ancestors(name) {
            if let Some(c) = head.get(path) {
                put(path, c);
            }
        }
        let mut dir = name.to_vec();
        dir.push(b'/');
        for (p, c) in head.with_prefix(&dir) {
            put(&p, c);
        }
    }
    let tree = replay::Tree::from_entries(entries, head.seq());
    Ok(Some((tree, head)))
}

/// The lifecycle of one change: its events and every revert of it, of those reverts,
/// and so on, folded from indexes (no scan) into the change projection.
pub fn lifecycle(ledger: &Ledger, id: &str) -> CliResult<replay::Changes> {
    let mut records: BTreeMap<u64, Record> = BTreeMap::new();
    let mut todo = vec![id.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(cur) = todo.pop() {
        if !seen.insert(cur.clone()) {
            continue;
        }
        for r in ledger.change(&cur)? {
            records.insert(r.event.seq, r);
        }
        todo.extend(ledger.reverters(&cur)?);
    }
    let mut changes = replay::Changes::new();
    for r in records.values() {
        changes
            .apply(&r.event)
            .map_err(|e| CliError::new(EXIT_ERROR, e.to_string()))?;
    }
    Ok(changes)
}

#[allow(clippy::too_many_arguments)]
pub fn revert(
    cli: &Cli,
    change: &str,
    agent: &str,
    message: Option<&str>,
    change_id: Option<&str>,
    principal: Option<&str>,
    correlation: Option<&str>,
    dry_run: bool,
    json: bool,
) -> CliResult<i32> {
    ledger::validate_id("agent ID", agent)?;
    // Checked before anything else: a bad value is refused before any work is done.
    let sync = if dry_run {
        apply::SyncSetting::Auto
    } else {
        apply::SyncSetting::from_env()?
    };
    // The kernel is asked to read `head-files` while the ledger opens; `partial_head`
    // then reads its index and the blocks it needs.
    let (ctx, ()) = context::open_then(cli, |_, dir| HeadFiles::prefetch(dir))?;
    let ledger = &ctx.ledger;
    if let Some(d) = ledger.damaged() {
        // Appends are refused, so the revert could not be recorded; and the history
        // read ends before the damage, so no plan made from it can be trusted.
        return Err(CliError::new(
            EXIT_VERIFY,
            format!("cannot revert: {d}; nothing was written"),
        )
        .with_hint("run `ledger verify` for a full report"));
    }
    let id = ledger.resolve_change(change)?;
    let records = ledger.change(&id)?;
    let Some(target) = records
        .iter()
        .find(|r| matches!(r.event.body, Body::Change(_)))
    else {
        let kind = records[0].event.body.kind();
        return Err(CliError::new(EXIT_ERROR, format!("change {id} recorded no resource changes (its events: {kind}); there is nothing to revert")));
    };
    // Beside the planning, on a thread of its own: the objects the revert will write
    // are asked for (reads that overlap the planning instead of waiting in the
    // staging), and a fresh change ID is found (its check reads the change index, a
    // page likely not in memory).
    std::thread::scope(|s| {
        let ahead = (!dry_run).then(|| {
            s.spawn(|| {
                for c in target.event.resources().iter().filter_map(|rc| rc.old) {
                    ledger.store().prefetch(&c.hash);
                }
                match change_id {
                    Some(_) => Ok(None),
                    None => crate::commands::fresh_change_id(ledger).map(Some),
                }
            })
        });
        let changes = lifecycle(ledger, &id)?;
        // The part of the head the plan looks at, from `head-files` (its size does not grow
        // with the ledger), or the whole head tree for a change outside the file namespace.
        let (partial, whole, mut head_files) = match partial_head(ledger, target)? {
            Some((t, head)) => (t, None, Some(head)),
            None => (replay::Tree::new(), Some(state::head_tree(ledger)?), None),
        };
        let tree = whole.as_ref().map_or(&partial, |(t, _)| t);
        let (on_disk, odd) = disk_state(&ctx, target, tree)?;
        // The planner sees anything that is neither a file nor absent as an unrecorded
        // edit; say what is really there.
        let reason = |c: &replay::Conflict| match (&c.reason, odd.get(&c.key)) {
            (replay::ConflictReason::Unrecorded { recorded, .. }, Some(what)) => format!(
                "changed outside the ledger (recorded: {}, on disk: {what})",
                recorded.map_or("absent".to_string(), |c| format!(
                    "{} {}",
                    c.mode.as_str(),
                    &c.hash.to_hex()[..12]
                ))
            ),
            _ => c.reason.to_string(),
        };
        let store = Store(ledger);
        let plan = replay::plan_revert(
            &target.event,
            &changes,
            tree,
            &on_disk,
            |k| later_changes(ledger, k, target.event.seq),
            &store,
        );
        let plan = match plan {
            Ok(p) => p,
            Err(replay::Error::Conflicts {
                change_id,
                conflicts,
            }) => {
                if json {
                    let v: Vec<_> = conflicts.iter().map(|c| json!({"resource": c.key.display(), "reason": reason(c), "later_changes": c.later_changes})).collect();
                    json_line(&json!({"change_id": change_id, "reverted": false, "conflicts": v}))?;
                } else {
                    eprintln!(
                        "error: cannot revert change {change_id}: {} conflict(s); nothing was written",
                        conflicts.len()
                    );
                    for c in &conflicts {
                        eprintln!("  {}: {}", c.key.name.display(), reason(c));
                        if !c.later_changes.is_empty() {
                            eprintln!("      later changes: {}", c.later_changes.join(", "));
                        }
                    }
                    eprintln!("hint: record or undo unrecorded edits first; for overlapping edits, revert the later changes first or edit by hand");
                }
                return Ok(EXIT_CONFLICT);
            }
            Err(e) => return Err(CliError::new(EXIT_ERROR, e.to_string())),
        };
        if dry_run || json {
            let actions: Vec<_> = plan
                .actions
                .iter()
                .map(|a| {
                    let what = match &a.kind {
                        replay::ActionKind::Delete => "delete".to_string(),
                        replay::ActionKind::SetMode { mode } => format!("set mode {}", mode.as_str()),
                        replay::ActionKind::Write { payload: replay::Payload::Bytes(_), .. } => "write merged content".to_string(),
                        replay::ActionKind::Write { .. } => if a.before.is_none() { "recreate".to_string() } else { "restore".to_string() },
                    };
                    json!({"resource": a.key.display(), "path": a.key.name.display(), "action": what, "before": a.before.map(|c| c.hash), "after": a.after.map(|c| c.hash), "merged_with": a.merged_with})
                })
                .collect();
            if dry_run {
                if json {
                    json_line(&json!({"change_id": id, "dry_run": true, "actions": actions}))?;
                } else {
                    println!(
                        "Reverting {id} would change {} file(s) (dry run, nothing written):",
                        actions.len()
                    );
                    for a in &actions {
                        let merged = a["merged_with"]
                            .as_array()
                            .filter(|m| !m.is_empty())
                            .map(|m| {
                                format!(
                                    " (merged with later {})",
                                    m.iter()
                                        .filter_map(|x| x.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            })
                            .unwrap_or_default();
                        println!(
                            "  {:<22} {}{merged}",
                            a["action"].as_str().unwrap_or(""),
                            a["path"].as_str().unwrap_or("")
                        );
                    }
                }
                return Ok(0);
            }
        }
        // Merged content goes into the store first, so the revert event names only stored content.
        let mut pending = ledger::Pending::default();
        for a in &plan.actions {
            if let replay::ActionKind::Write {
                payload: replay::Payload::Bytes(b),
                ..
            } = &a.kind
            {
                ledger.store().put_bytes(b, &mut pending)?;
            }
        }
        ledger.commit_content(pending)?;
        // Joined whether or not it looked for an ID, so a failure there cannot come out
        // of the scope after the revert is done.
        let found = ahead.map(|t| t.join());
        let new_id = match change_id {
            Some(c) => {
                ledger::validate_id("change ID", c)?;
                if ledger.change_exists(c)?.is_some() {
                    return Err(CliError::new(
                        EXIT_ERROR,
                        format!("change ID {c:?} already exists; nothing was written"),
                    ));
                }
                c.to_string()
            }
            // Found ahead (`fresh_change_id` checks it is free); found here if that
            // thread did not get to it.
            None => match found {
                Some(Ok(Ok(Some(found)))) => found,
                Some(Ok(Err(e))) => return Err(e),
                _ => crate::commands::fresh_change_id(ledger)?,
            },
        };
        let root = Root::open(&ctx.ws.root)?;
        // Waits, when dropped at the end, for the replaced files' inodes to be let go of.
        let releasing = apply::apply_actions(ledger, &root, &plan.actions, sync)?;
        let message = message
            .map(str::to_string)
            .unwrap_or_else(|| format!("Revert {id}"));
        let ev = NewEvent {
            time_us: now_us(),
            actor: ledger::Actor {
                agent: agent.to_string(),
                principal: principal.map(str::to_string),
                role: None,
            },
            change_id: new_id.clone(),
            correlation_id: correlation.map(str::to_string),
            body: Body::Change(Change {
                message: Some(message),
                ..plan.change(None)
            }),
            meta: BTreeMap::new(),
        };
        let records = match crate::commands::append_change(ledger, vec![ev], &new_id, whole) {
            Ok(r) => r,
            Err(e) => {
                return Err(CliError::new(e.code, format!("{}; the files were reverted on disk but the revert was not recorded: `ledger status` shows them", e.message)));
            }
        };
        // `head-files` moves with the head, so the next command catches up from a recent
        // base. The stat cache needs nothing: every file written here is a new inode, a
        // mode change changes the mode and ctime, and a delete leaves no file, so no cached
        // entry can match what is on disk now.
        if let Some(head) = &mut head_files {
            head.apply(&records);
            head.save_if_due(ledger);
        }
        drop(releasing);
        if json {
            json_line(&json!({"change_id": new_id, "reverts": id, "files": plan.actions.len()}))?;
        } else {
            println!("{new_id}");
            let merged = plan
                .actions
                .iter()
                .filter(|a| !a.merged_with.is_empty())
                .count();
            eprintln!(
                "Reverted {id} as change {new_id}: {} file(s) changed{}",
                plan.actions.len(),
                if merged > 0 {
                    format!(", {merged} merged with later changes")
                } else {
                    String::new()
                }
            );
        }

        Ok(0)
    })
}

/// Where `p` leads: its longest existing prefix with symlinks resolved, then the rest
/// of it applied lexically.
fn resolve_path(p: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::path::{Component, PathBuf};
    let abs = std::path::absolute(p).ok()?;
    let comps: Vec<Component> = abs.components().collect();
    for i in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..i].iter().collect();
        if let Ok(mut c) = prefix.canonicalize() {
            for comp in &comps[i..] {
                match comp {
                    Component::ParentDir => {
                        c.pop();
                    }
                    Component::Normal(n) => c.push(n),
                    _ => {}
                }
            }
            return Some(c);
        }
    }
    None
}

/// What is on disk now at every file the change touched (None = absent), and for the
/// paths holding something else, what that is.
type DiskState = (
    BTreeMap<ResourceKey, Option<Content>>,
    BTreeMap<ResourceKey, String>,
);

fn disk_state(ctx: &Ctx, target: &Record, head: &replay::Tree) -> CliResult<DiskState> {
    let keys: Vec<ResourceKey> = target
        .event
        .resources()
        .iter()
        .filter(|r| r.key.is_file())
        .map(|r| r.key.clone())
        .collect();
    let mut out: BTreeMap<ResourceKey, Option<Content>> = BTreeMap::new();
    let mut odd: BTreeMap<ResourceKey, String> = BTreeMap::new();
    if keys.is_empty() {
        return Ok((out, odd));
    }
    let root = Root::open(&ctx.ws.root)?;
    // Stands for "something the ledger did not record": never equal to recorded content.
    let unrecorded = Some(Content {
        hash: Hash::ZERO,
        mode: ledger::Mode::Regular,
        size: 0,
    });
    let mut dirs = apply::DirCache::default();
    for k in keys {
        // Looked at directly (no symlinks followed); anything that is not a file or
        // symlink counts as an unrecorded difference, except a directory where the
        // recorded tree has files beneath the path and none at it.
        let found = match root.look(&k, &mut dirs) {
            Ok(apply::Found::Absent) => None,
            Ok(apply::Found::File(c)) => Some(c),
            Ok(apply::Found::Directory) => {
                let mut dir = k.name.as_bytes().to_vec();
                dir.push(b'/');
                let expected =
                    head.get(&k).is_none() && head.with_prefix(&k.namespace, &dir).next().is_some();
                if expected {
                    None
                } else {
                    odd.insert(k.clone(), "a directory".into());
                    unrecorded
                }
            }
            Ok(apply::Found::Other(what)) => {
                odd.insert(k.clone(), what.into());
                unrecorded
            }
            Err(e) => {
                odd.insert(k.clone(), format!("not reachable ({})", e.message));
                unrecorded
            }
        };
        out.insert(k, found);
    }
    Ok((out, odd))
}

pub fn replay_cmd(
    cli: &Cli,
    at: Option<&str>,
    before: Option<&str>,
    out: &std::path::Path,
    json: bool,
) -> CliResult {
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let seq = match (at, before) {
        (Some(p), _) => resolve_point(ledger, p)?,
        (None, Some(c)) => {
            let id = ledger.resolve_change(c)?;
            let first = ledger.change_seqs(&id)?[0];
            first
                .checked_sub(1)
                .ok_or_else(|| CliError::usage("there is no state before the genesis event"))?
        }
        (None, None) => return Err(CliError::usage("give --at or --before")),
    };
    if let (Some(o), Ok(l)) = (resolve_path(out), ledger.dir().canonicalize()) {
        if o.starts_with(&l) {
            return Err(CliError::usage(format!(
                "{} is inside the ledger's own directory {}; replay writes only outside it",
                out.display(),
                l.display()
            )));
        }
    }
    let created = match std::fs::read_dir(out) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(CliError::usage(format!(
                    "{} is not empty; replay writes only into a new or empty directory",
                    out.display()
                )));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| {
                CliError::new(EXIT_ERROR, format!("cannot create {}: {e}", out.display()))
            })?;
            true
        }
        Err(e) => {
            return Err(CliError::new(
                EXIT_ERROR,
                format!("cannot use {}: {e}", out.display()),
            ))
        }
    };
    let (tree, _) = state::tree_at(ledger, seq)?;
    // Every path must be writable beneath the output and every byte available before
    // the first is written.
    let store = Store(ledger);
    for (k, e) in tree.files() {
        let problem = match replay::safe_relative_path(k.name.as_bytes()) {
            Err(u) => Some(format!("refusing an unsafe path: {u}")),
            Ok(_) => {
                let mut dir = k.name.as_bytes().to_vec();
                dir.push(b'/');
                let below = tree
                    .with_prefix(&k.namespace, &dir)
                    .next()
                    .map(|(b, _)| b.name.display());
                match below {
                    Some(below) => Some(format!(
                        "it is recorded as a file ({}) and as a directory holding {below}; a path cannot be both",
                        e.content.mode.as_str(),
                    )),
                    None => store.check(&e.content.hash).err().map(|e| e.to_string()),
                }
            }
        };
        if let Some(err) = problem {
            if created {
                let _ = std::fs::remove_dir(out);
            }
            return Err(CliError::new(
                EXIT_ERROR,
                format!(
                    "cannot replay {}: {err}; nothing was written",
                    k.name.display()
                ),
            ));
        }
    }
    let root = Root::open(out)?;
    let mut n = 0u64;
    let mut dirs = apply::DirCache::default();
    for (k, e) in tree.files() {
        if let Err(err) = apply::write_new(ledger, &root, &mut dirs, k, &e.content) {
            // Remove what this command wrote; the directory was new or empty.
            if let Ok(rd) = std::fs::read_dir(out) {
                for entry in rd.flatten() {
                    let p = entry.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            return Err(err);
        }
        n += 1;
    }
    if json {
        json_line(&json!({"seq": seq, "files": n, "out": out}))?;
    } else {
        println!("Wrote {n} file(s) as of seq {seq} into {}", out.display());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn timeline(
    cli: &Cli,
    since: Option<&str>,
    until: Option<&str>,
    agent: Option<&str>,
    correlation: Option<&str>,
    path: Option<&std::path::Path>,
    json: bool,
) -> CliResult {
    let now = now_us();
    let (since, until) = parse_range(since, until, now).map_err(CliError::usage)?;
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let mut sets: Vec<BTreeSet<u64>> = Vec::new();
    if let Some(a) = agent {
        sets.push(ledger.index()?.agent_seqs(a)?.into_iter().collect());
    }
    if let Some(c) = correlation {
        sets.push(ledger.index()?.correlation_seqs(c)?.into_iter().collect());
    }
    if let Some(p) = path {
        sets.push(path_seqs(&ctx, p)?);
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
    let mut out = std::io::stdout().lock();
    let mut prev_time: Option<i64> = None;
    let mut emit = |r: &Record| -> CliResult {
        let gap = prev_time.map(|p| r.event.time_us - p);
        prev_time = Some(r.event.time_us);
        let files: Vec<String> = r
            .event
            .resources()
            .iter()
            .map(|c| format!("{} {}", c.op.as_str(), c.key.name.display()))
            .collect();
        if json {
            let v = json!({
                "seq": r.event.seq, "time": format_time(r.event.time_us), "time_us": r.event.time_us,
                "since_previous_us": gap, "agent": r.event.actor.agent, "principal": r.event.actor.principal,
                "role": r.event.actor.role, "change_id": r.event.change_id, "correlation_id": r.event.correlation_id,
                "kind": r.event.body.kind(), "files": files, "hash": r.hash,
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        } else {
            let gap = gap
                .map(|g| format!("+{:.3}s", g as f64 / 1e6))
                .unwrap_or_else(|| "".into());
            let who = match &r.event.actor.principal {
                Some(p) => format!("{} (for {p})", r.event.actor.agent),
                None => r.event.actor.agent.clone(),
            };
            let corr = r
                .event
                .correlation_id
                .as_deref()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:>6}  {}  {:>10}  {:<20} {:<11} {}{}",
                r.event.seq,
                format_time(r.event.time_us),
                gap,
                who,
                r.event.body.kind(),
                r.event.change_id,
                corr
            )?;
            for f in files {
                writeln!(out, "{:>40}{f}", "")?;
            }
        }
        Ok(())
    };
    let res = if sets.is_empty() {
        let mut err = None;
        let r = ledger.scan(0, &mut |r| match emit(r) {
            Ok(()) => Ok(()),
            Err(e) => {
                err = Some(e);
                Err(ledger::Error::Stopped)
            }
        });
        match (r, err) {
            (_, Some(e)) => Err(e),
            (Err(ledger::Error::Stopped), None) | (Ok(()), None) => Ok(()),
            (Err(e), None) => Err(e.into()),
        }
    } else {
        let mut it = sets.into_iter();
        let mut acc = it.next().unwrap();
        for s in it {
            acc = acc.intersection(&s).copied().collect();
        }
        acc.into_iter()
            .try_for_each(|seq| emit(&ledger.event(seq)?))
    };
    match res {
        Err(e) if e.message.contains("Broken pipe") => Ok(()),
        other => other,
    }
}

/// Seqs of events touching a path (file or directory).
pub(crate) fn path_seqs(ctx: &Ctx, p: &std::path::Path) -> CliResult<BTreeSet<u64>> {
    let scope = ctx.ws.scope(&[p.to_path_buf()])?;
    let key = ResourceKey::file(&scope[0]).index_bytes();
    let mut s: BTreeSet<u64> = ctx
        .ledger
        .index()?
        .resource_seqs(&key)?
        .into_iter()
        .collect();
    let mut dir = key;
    if !scope[0].is_empty() {
        dir.push(b'/');
    }
    s.extend(ctx.ledger.index()?.resource_prefix_seqs(&dir)?);
    Ok(s)
}

pub fn blame(cli: &Cli, path: &std::path::Path, json: bool) -> CliResult {
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let scope = ctx.ws.scope(&[path.to_path_buf()])?;
    let key = ResourceKey::file(&scope[0]);
    let seqs = ledger.index()?.resource_seqs(&key.index_bytes())?;
    if seqs.is_empty() {
        return Err(CliError::new(EXIT_ERROR, format!("no change ever touched {}", key.name.display())).with_hint("`ledger blame` takes a file path; `ledger log --path DIR` lists changes under a directory"));
    }
    let mut out = std::io::stdout().lock();
    for seq in seqs {
        let r = ledger.event(seq)?;
        let Some(rc) = r.event.resources().iter().find(|c| c.key == key) else {
            continue;
        };
        let reverts = match &r.event.body {
            Body::Change(c) => c.reverts.clone(),
            _ => None,
        };
        if json {
            serde_json::to_writer(
                &mut out,
                &json!({
                    "seq": seq, "time": format_time(r.event.time_us), "change_id": r.event.change_id,
                    "agent": r.event.actor.agent, "principal": r.event.actor.principal, "op": rc.op.as_str(),
                    "old_hash": rc.old.map(|c| c.hash), "new_hash": rc.new.map(|c| c.hash),
                    "old_mode": rc.old.map(|c| c.mode.as_str()), "new_mode": rc.new.map(|c| c.mode.as_str()), "reverts": reverts,
                }),
            )?;
            writeln!(out)?;
        } else {
            let h = |c: Option<Content>| {
                c.map(|c| c.hash.to_hex()[..16].to_string())
                    .unwrap_or_else(|| "-".repeat(16))
            };
            writeln!(
                out,
                "{:>6}  {}  {:<7} {} -> {}  {}  by {}{}",
                seq,
                format_time(r.event.time_us),
                rc.op.as_str(),
                h(rc.old),
                h(rc.new),
                r.event.change_id,
                r.event.actor.agent,
                reverts
                    .map(|x| format!("  (reverts {x})"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

pub fn diff(cli: &Cli, from: &str, to: &str, patch: bool, json: bool) -> CliResult {
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let a = resolve_point(ledger, from)?;
    let b = resolve_point(ledger, to)?;
    let (ta, _) = state::tree_at(ledger, a)?;
    let (tb, _) = state::tree_at(ledger, b)?;
    let diffs = replay::diff(&ta, &tb);
    let mut out = std::io::stdout().lock();
    for d in &diffs {
        let kind = match d.kind {
            replay::DiffKind::Added => "added",
            replay::DiffKind::Removed => "removed",
            replay::DiffKind::Modified => "modified",
            replay::DiffKind::ModeChanged => "mode",
        };
        let text = if patch {
            let load = |e: &Option<replay::Entry>| -> Option<Vec<u8>> {
                match e {
                    None => Some(Vec::new()),
                    Some(e) if e.content.mode == ledger::Mode::Symlink => None,
                    Some(e) => ledger.store().get(&e.content.hash).ok(),
                }
            };
            match (load(&d.old), load(&d.new)) {
                (Some(o), Some(n)) => replay::text_diff(
                    &o,
                    &n,
                    &format!("a/{}", d.key.name.display()),
                    &format!("b/{}", d.key.name.display()),
                ),
                _ => None,
            }
        } else {
            None
        };
        if json {
            serde_json::to_writer(
                &mut out,
                &json!({"resource": d.key.display(), "path": d.key.name.display(), "kind": kind, "old_hash": d.old.as_ref().map(|e| e.content.hash), "new_hash": d.new.as_ref().map(|e| e.content.hash), "patch": text}),
            )?;
            writeln!(out)?;
        } else {
            writeln!(out, "{kind:<9} {}", d.key.name.display())?;
            if let Some(t) = text {
                write!(out, "{t}")?;
            }
        }
    }
    if !json && diffs.is_empty() {
        writeln!(out, "No differences between seq {a} and seq {b}.")?;
    }
    Ok(())
}
