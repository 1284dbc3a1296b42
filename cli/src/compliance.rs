//! Commands for auditors: keygen, checkpoint, verify --checkpoints, export,
//! verify-export, redact. The formats live in `ledger` (checkpoints, Merkle state) and
//! `replay::export` (the export file); this module finds files, keys and the ledger.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ledger::checkpoint::{self, CheckpointBody, SigningKey, VerifierKey};
use ledger::merkle::{self, Tree};
use ledger::{Actor, Body, Hash, Ledger, NewEvent, Precondition, Redaction, LEDGER_DIR};
use replay::export::{
    self, CsvWriter, ExportError, Filter, Header, JsonlWriter, VerifyError, MAX_LINE,
};
use serde_json::json;

use crate::args::{Cli, Command, ExportFormat};
use crate::context;
use crate::output::{json_line, CliError, CliResult, EXIT_ERROR, EXIT_VERIFY};
use crate::timeparse::{format_time, now_us, parse_range};

/// Runs the commands this module owns (the others are `crate::commands`'s).
pub fn dispatch(cli: &Cli) -> CliResult<i32> {
    match &cli.command {
        Command::Keygen { out, name, json } => keygen(cli, out, name.as_deref(), *json).map(|_| 0),
        Command::Checkpoint { key, out, json } => {
            checkpoint(cli, key, out.as_deref(), *json).map(|_| 0)
        }
        Command::Export {
            out,
            format,
            since,
            until,
            agent,
            change,
            sign,
            json,
        } => export(
            cli,
            out,
            *format,
            since.as_deref(),
            until.as_deref(),
            agent.as_deref(),
            change.as_deref(),
            sign.as_deref(),
            *json,
        )
        .map(|_| 0),
        Command::VerifyExport { file, pubkey, json } => {
            verify_export(file, pubkey.as_deref(), *json)
        }
        Command::Redact {
            hash,
            reason,
            agent,
            json,
        } => redact(cli, hash, reason, agent, *json).map(|_| 0),
        other => Err(CliError::new(
            EXIT_ERROR,
            format!("internal error: {other:?} is not a compliance command"),
        )),
    }
}

/// Key files are a line of text; anything much larger is not a key.
const MAX_KEY_FILE: u64 = 4096;
/// A signed checkpoint note is a few hundred bytes; witnesses add a line each.
const MAX_NOTE_FILE: u64 = 64 << 10;

fn err(message: impl Into<String>) -> CliError {
    CliError::new(EXIT_ERROR, message)
}

/// The actor of events the ledger itself records for a person (checkpoints, redactions).
fn ledger_actor(agent: &str) -> Actor {
    Actor {
        agent: agent.to_string(),
        principal: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        role: None,
    }
}

/// Whether `path` (a file that may not exist yet) lies inside a `.ledger` directory.
fn inside_ledger_dir(path: &Path) -> CliResult<bool> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| {
        err(format!(
            "cannot use directory {} for {}: {e}",
            parent.display(),
            path.display()
        ))
    })?;
    let named_ledger = |c: Component| c.as_os_str() == LEDGER_DIR;
    Ok(dir.components().any(named_ledger) || path.file_name() == Some(LEDGER_DIR.as_ref()))
}

fn refuse_existing(path: &Path, what: &str) -> CliResult {
    if fs::symlink_metadata(path).is_ok() {
        return Err(err(format!(
            "{} already exists; nothing was written",
            path.display()
        ))
        .with_hint(format!("choose a new file name for the {what}")));
    }
    Ok(())
}

/// Reads a small text file, refusing anything larger than `max` bytes.
fn read_small(path: &Path, max: u64, what: &str) -> CliResult<String> {
    let f =
        File::open(path).map_err(|e| err(format!("cannot read {what} {}: {e}", path.display())))?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(format!("cannot read {what} {}: {e}", path.display())))?;
    if text.len() as u64 > max {
        return Err(err(format!(
            "{} is larger than {max} bytes: not a {what}",
            path.display()
        )));
    }
    Ok(text)
}

/// Loads a signing key, refusing files others can read and keys kept in a ledger.
fn load_signing_key(path: &Path) -> CliResult<SigningKey> {
    let meta = fs::metadata(path)
        .map_err(|e| err(format!("cannot read signing key {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "signing key {} is accessible to group or others (mode {mode:04o}); refusing to use it",
            path.display()
        ))
        .with_hint(format!("run `chmod 600 {}` if the key was not exposed; otherwise make a new key with `ledger keygen`", path.display())));
    }
    if inside_ledger_dir(path)? {
        return Err(err(format!(
            "signing key {} is inside a {LEDGER_DIR} directory: whoever can write the journal could also forge checkpoints",
            path.display()
        ))
        .with_hint("move the key outside the ledger directory"));
    }
    let text = read_small(path, MAX_KEY_FILE, "signing key")?;
    SigningKey::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn load_verifier_key(path: &Path) -> CliResult<VerifierKey> {
    let text = read_small(path, MAX_KEY_FILE, "verifier key")?;
    VerifierKey::parse(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates a new file (never replacing one) with `mode`, writes `text`, syncs it.
fn write_new(path: &Path, text: &str, mode: u32) -> CliResult {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            let _ = fs::remove_file(path);
            err(format!("cannot write {}: {e}", path.display()))
        })
}

pub fn keygen(cli: &Cli, out: &Path, name: Option<&str>, json: bool) -> CliResult {
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let dir = context::ledger_dir(cli).map_err(|_| {
                CliError::usage(
                    "not inside a ledger, so there is no default key name; give --name NAME",
                )
            })?;
            let opts = ledger::OpenOptions {
                lock_timeout: std::time::Duration::from_secs_f64(cli.lock_timeout.max(0.0)),
            };
            let (l, _) = Ledger::open_dir(&dir, &opts)?;
            l.origin()?
        }
    };
    checkpoint::check_key_name(&name).map_err(|e| CliError::usage(e.to_string()))?;
    if inside_ledger_dir(out)? {
        return Err(err(format!(
            "refusing to write a signing key inside a {LEDGER_DIR} directory ({}): whoever can write the journal could then forge checkpoints",
            out.display()
        ))
        .with_hint("keep the key outside the ledger directory, e.g. --out ~/keys/ledger.key"));
    }
    let pub_path = with_suffix(out, ".pub");
    refuse_existing(out, "signing key")?;
    refuse_existing(&pub_path, "verifier key")?;
    let key = SigningKey::generate(&name).map_err(|e| err(e.to_string()))?;
    let verifier = key.verifier().to_text();
    write_new(out, &format!("{}\n", key.to_text()), 0o600)?;
    if let Err(e) = write_new(&pub_path, &format!("{verifier}\n"), 0o644) {
        let _ = fs::remove_file(out);
        return Err(e);
    }
    if json {
        json_line(&json!({
            "key": out, "pubkey": pub_path, "name": name,
            "key_id": format!("{:08x}", key.key_id()), "verifier": verifier,
        }))?;
    } else {
        println!("{verifier}");
        eprintln!(
            "Wrote the signing key to {} (mode 0600; keep it secret and outside the ledger) and the verifier key above to {} (give it to auditors).",
            out.display(),
            pub_path.display()
        );
    }
    Ok(())
}

pub fn checkpoint(cli: &Cli, key: &Path, out: Option<&Path>, json: bool) -> CliResult {
    let key = load_signing_key(key)?;
    if let Some(o) = out {
        refuse_existing(o, "checkpoint")?;
    }
    let ctx = context::open(cli)?;
    // Created before the checkpoint is recorded, so an unwritable --out records nothing.
    let mut file = match out {
        Some(o) => Some(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(o)
                .map_err(|e| err(format!("cannot create {}: {e}", o.display())))?,
        ),
        None => None,
    };
    let cp = match ctx
        .ledger
        .checkpoint(&key, ledger_actor("ledger"), now_us())
    {
        Ok(cp) => cp,
        Err(e) => {
            if let Some(o) = out {
                let _ = fs::remove_file(o);
            }
            return Err(e.into());
        }
    };
    ctx.ledger.flush()?;
    let seq = cp.record.event.seq;
    if let (Some(f), Some(o)) = (file.as_mut(), out) {
        if let Err(e) = f.write_all(cp.note.as_bytes()).and_then(|_| f.sync_all()) {
            return Err(err(format!(
                "the checkpoint was recorded at seq {seq} but writing {} failed: {e}; the signed note is:\n{}",
                o.display(),
                cp.note
            )));
        }
    }
    let b = &cp.body;
    if json {
        json_line(&json!({
            "seq": seq, "change_id": cp.record.event.change_id, "size": b.size,
            "root": b.root, "head": b.head, "time_us": b.time_us, "note": cp.note, "out": out,
        }))?;
    } else {
        if out.is_none() {
            print!("{}", cp.note);
        }
        eprintln!(
            "Checkpoint of {} events (seq 0 to {}), root {}, recorded as seq {seq} (change {}){}",
            b.size,
            b.size.saturating_sub(1),
            b.root,
            cp.record.event.change_id,
            out.map(|o| format!("; signed note written to {}", o.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The checkpoint files named by `--checkpoints`: the file, or every regular file in
/// the directory (names starting with `.` skipped), sorted by name.
fn checkpoint_files(path: &Path) -> CliResult<Vec<PathBuf>> {
    let meta = fs::metadata(path)
        .map_err(|e| err(format!("cannot read checkpoints {}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in
        fs::read_dir(path).map_err(|e| err(format!("cannot list {}: {e}", path.display())))?
    {
        let entry = entry.map_err(|e| err(format!("cannot list {}: {e}", path.display())))?;
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if !hidden && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(err(format!("no checkpoint files in {}", path.display())));
    }
    Ok(files)
}

/// `ledger verify --checkpoints`: runs after the journal check (whose exit code is
/// `code`) and returns the combined exit code.
pub fn verify_checkpoints(
    cli: &Cli,
    code: i32,
    checkpoints: Option<&Path>,
    pubkey: Option<&Path>,
    json: bool,
) -> CliResult<i32> {
    let (Some(cps), Some(pk)) = (checkpoints, pubkey) else {
        return Ok(code);
    };
    let vk = load_verifier_key(pk)?;
    let files = checkpoint_files(cps)?;
    // Per file: Ok(body) once its signature opened, or why not.
    let mut opened: Vec<Result<CheckpointBody, String>> = Vec::new();
    for f in &files {
        let r = fs::metadata(f)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if m.len() > MAX_NOTE_FILE {
                    Err(format!(
                        "larger than {MAX_NOTE_FILE} bytes: not a checkpoint"
                    ))
                } else {
                    fs::read(f).map_err(|e| e.to_string())
                }
            })
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| "not UTF-8 text: not a checkpoint".to_string())
            })
            .and_then(|t| CheckpointBody::open(&t, &vk).map_err(|e| e.to_string()));
        opened.push(r);
    }
    let ctx = context::open(cli)?;
    let bodies: Vec<CheckpointBody> = opened.iter().filter_map(|r| r.clone().ok()).collect();
    let mut checked = ctx.ledger.check_checkpoints(&bodies)?.into_iter();
    let mut report = Vec::new();
    let mut failed = 0;
    for (f, r) in files.iter().zip(opened) {
        let outcome = match r {
            Err(e) => Err(e),
            Ok(b) => match checked.next() {
                Some(Ok(())) => Ok(b),
                Some(Err(m)) => Err(format!("size {}: {m}", b.size)),
                None => Err("not checked".into()),
            },
        };
        match &outcome {
            Ok(b) => report.push(
                json!({"file": f, "ok": true, "size": b.size, "root": b.root, "head": b.head}),
            ),
            Err(e) => {
                failed += 1;
                if !json {
                    eprintln!("FAILED: checkpoint {}: {e}", f.display());
                }
                report.push(json!({"file": f, "ok": false, "error": e}));
            }
        }
    }
    if json {
        json_line(&json!({"checkpoints": report, "ok": failed == 0, "key": vk.to_text()}))?;
    } else if failed == 0 {
        let largest = report
            .iter()
            .filter_map(|r| r["size"].as_u64())
            .max()
            .unwrap_or(0);
        println!(
            "ok: {} checkpoint(s) signed by {}+{:08x} match the journal (largest covers {largest} events)",
            report.len(),
            vk.name(),
            vk.key_id()
        );
    } else {
        eprintln!(
            "FAILED: {failed} of {} checkpoint(s) do not match the journal",
            report.len()
        );
    }
    Ok(if failed > 0 { EXIT_VERIFY } else { code })
}

/// A temporary file beside `out`, moved onto `out` only when complete.
struct TempOut {
    tmp: PathBuf,
    out: PathBuf,
    done: bool,
}

impl TempOut {
    fn create(out: &Path) -> CliResult<(TempOut, File)> {
        let name = out
            .file_name()
            .ok_or_else(|| CliError::usage(format!("{} is not a file name", out.display())))?;
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = out.with_file_name(tmp_name);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| err(format!("cannot create {}: {e}", tmp.display())))?;
        Ok((
            TempOut {
                tmp,
                out: out.to_path_buf(),
                done: false,
            },
            f,
        ))
    }

    /// Syncs and moves the file into place, never replacing an existing file.
    fn commit(mut self, f: File) -> CliResult {
        f.sync_all()
            .map_err(|e| err(format!("cannot write {}: {e}", self.tmp.display())))?;
        drop(f);
        match fs::hard_link(&self.tmp, &self.out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(err(format!(
                    "{} appeared while exporting; nothing was written",
                    self.out.display()
                )))
            }
            // File systems without hard links: a rename (the existence was checked).
            Err(_) => {
                fs::rename(&self.tmp, &self.out)
                    .map_err(|e| err(format!("cannot create {}: {e}", self.out.display())))?;
                self.done = true;
                return Ok(());
            }
        }
        let _ = fs::remove_file(&self.tmp);
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes the export file on a thread of its own, in large pieces, and makes what it
/// wrote durable as it goes (every [`FileSink::SYNC_EVERY`] bytes), so that the
/// `fsync` before the rename has little left to do and the disk works while the journal
/// is read and the lines are made.
struct FileSink {
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<File>>>,
}

impl FileSink {
    const PIECE: usize = 2 << 20;
    const SYNC_EVERY: u64 = 64 << 20;

    fn new(mut file: File) -> std::io::Result<FileSink> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (spare_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("export-writer".into())
            .spawn(move || -> std::io::Result<File> {
                let (mut written, mut synced) = (0u64, 0u64);
                for mut piece in rx {
                    file.write_all(&piece)?;
                    written += piece.len() as u64;
                    if written - synced >= Self::SYNC_EVERY {
                        file.sync_data()?;
                        synced = written;
                    }
                    piece.clear();
                    let _ = spare_tx.send(piece);
                }
                Ok(file)
            })?;
        Ok(FileSink {
            buf: Vec::with_capacity(Self::PIECE),
            tx: Some(tx),
            spare,
            thread: Some(thread),
        })
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(Self::PIECE));
        let piece = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().map(|tx| tx.send(piece).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The writer thread stopped on an error: report it.
        match self.finish_thread() {
            Err(e) => Err(e),
            Ok(_) => Err(std::io::Error::other("the export writer stopped")),
        }
    }

    fn finish_thread(&mut self) -> std::io::Result<File> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the export writer panicked")),
            None => Err(std::io::Error::other("the export writer already stopped")),
        }
    }

    /// Writes what is left and returns the file (not yet synced as a whole).
    fn finish(mut self) -> std::io::Result<File> {
        self.send()?;
        self.finish_thread()
    }
}

impl Write for FileSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Pieces keep their capacity: send before a write would grow one.
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.send()?;
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish_thread();
        }
    }
}

fn export_error(e: ExportError) -> CliError {
    match e {
        ExportError::Inconsistent(m) => CliError::new(
            EXIT_VERIFY,
            format!("the export does not agree with the journal: {m}; nothing was written"),
        )
        .with_hint("run `ledger verify`, then `ledger reindex` if the indexes are at fault"),
        other => err(format!("{other}; nothing was written")),
    }
}

/// Runs a scan whose callback can fail with an export error.
fn scan_export(
    ledger: &Ledger,
    from: u64,
    until: u64,
    f: &mut dyn FnMut(&ledger::Record) -> Result<(), ExportError>,
) -> CliResult {
    let mut failure = None;
    let r = ledger.scan_range(from, until, &mut |r| match f(r) {
        Ok(()) => Ok(()),
        Err(e) => {
            failure = Some(e);
            Err(ledger::Error::Stopped)
        }
    });
    match (r, failure) {
        (_, Some(e)) => Err(export_error(e)),
        (Ok(()), None) | (Err(ledger::Error::Stopped), None) => Ok(()),
        (Err(e), None) => Err(e.into()),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn export(
    cli: &Cli,
    out: &Path,
    format: ExportFormat,
    since: Option<&str>,
    until: Option<&str>,
    agent: Option<&str>,
    change: Option<&str>,
    sign: Option<&Path>,
    json: bool,
) -> CliResult {
    let now = now_us();
    let (since_us, until_us) = parse_range(since, until, now).map_err(CliError::usage)?;
    if format == ExportFormat::Csv && sign.is_some() {
        return Err(CliError::usage(
            "--sign applies to JSONL exports; CSV is a spreadsheet view without proofs",
        ));
    }
    let key = sign.map(load_signing_key).transpose()?;
    refuse_existing(out, "export")?;
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let change_id = change.map(|c| ledger.resolve_change(c)).transpose()?;
    let filter = Filter {
        since_us,
        until_us,
        agent: agent.map(str::to_string),
        change_id,
    };
    let (tmp, file) = TempOut::create(out)?;
    let mut w =
        FileSink::new(file).map_err(|e| err(format!("cannot write {}: {e}", tmp.tmp.display())))?;
    let summary = match format {
        ExportFormat::Csv => {
            let head = ledger.head().map_or(0, |h| h.seq);
            let mut csv = CsvWriter::new(&mut w).map_err(|e| export_error(ExportError::Io(e)))?;
            let mut events = 0u64;
            scan_export(ledger, 0, head, &mut |r| {
                if filter.matches(&r.event) {
                    events += 1;
                    csv.event(&r.event)?;
                }
                Ok(())
            })?;
            let (_, rows) = csv.finish().map_err(|e| export_error(ExportError::Io(e)))?;
            json!({"out": out, "format": "csv", "events": events, "rows": rows})
        }
        ExportFormat::Jsonl => {
            let st = ledger.merkle_state()?;
            let size = st.frontier.size();
            let root = st.frontier.root();
            let header = Header::new(
                ledger.origin()?,
                now,
                filter.clone(),
                key.is_some(),
                size,
                root,
            );
            let writer = if filter.is_empty() {
                let mut writer = JsonlWriter::new(&mut w, header, None).map_err(export_error)?;
                if size > 0 {
                    scan_export(ledger, 0, size - 1, &mut |r| {
                        writer.event(&r.event, &r.hash)
                    })?;
                }
                writer
            } else {
                // Pass 1: every leaf (for the proofs) and which events match. The leaves
                // are collected at their final size and the tree built over them once:
                // growing it leaf by leaf peaked about 20 MiB higher at 10^6 events
                // (vectors doubling while the old copy is still held).
                let mut leaves: Vec<Hash> =
                    Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 28));
                let mut matches: Vec<u64> = Vec::new();
                if size > 0 {
                    scan_export(ledger, 0, size - 1, &mut |r| {
                        leaves.push(merkle::leaf_hash(&r.hash));
                        if filter.matches(&r.event) {
                            matches.push(r.event.seq);
                        }
                        Ok(())
                    })?;
                }
                let tree = Tree::from_leaves(leaves);
                let mut writer =
                    JsonlWriter::new(&mut w, header, Some(tree)).map_err(export_error)?;
                // Pass 2: the matching events, read by position.
                for seq in matches {
                    let r = ledger.event(seq)?;
                    writer.event(&r.event, &r.hash).map_err(export_error)?;
                }
                writer
            };
            let (_, s) = writer
                .finish(st.last, now, key.as_ref())
                .map_err(export_error)?;
            json!({
                "out": out, "format": "jsonl", "events": s.events, "tree_size": s.tree_size,
                "root": s.root, "signed": s.signed, "bytes": s.bytes,
                "key": key.as_ref().map(|k| format!("{}+{:08x}", k.name(), k.key_id())),
            })
        }
    };
    let file = w.finish().map_err(|e| {
        err(format!(
            "cannot write {}: {e}; nothing was written",
            out.display()
        ))
    })?;
    tmp.commit(file)?;
    if json {
        json_line(&summary)?;
    } else {
        let events = summary["events"].as_u64().unwrap_or(0);
        let what = match format {
            ExportFormat::Csv => format!(
                "{} rows (file operations) from {events} events",
                summary["rows"].as_u64().unwrap_or(0)
            ),
            ExportFormat::Jsonl => format!(
                "{events} of {} events{}",
                summary["tree_size"].as_u64().unwrap_or(0),
                match &summary["key"] {
                    serde_json::Value::String(k) => format!(", signed by {k}"),
                    _ => ", unsigned".to_string(),
                }
            ),
        };
        eprintln!("Exported {what} to {}", out.display());
    }
    Ok(())
}

pub fn verify_export(file: &Path, pubkey: Option<&Path>, json: bool) -> CliResult<i32> {
    let vk = pubkey.map(load_verifier_key).transpose()?;
    let f = File::open(file).map_err(|e| err(format!("cannot read {}: {e}", file.display())))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    match export::verify_export_seekable(&mut r, vk.as_ref(), MAX_LINE) {
        Ok(v) => {
            let h = &v.header;
            let scope = if h.filter.is_empty() {
                "every event".to_string()
            } else {
                let f = &h.filter;
                let mut parts = Vec::new();
                if let Some(t) = f.since_us {
                    parts.push(format!("since {}", format_time(t)));
                }
                if let Some(t) = f.until_us {
                    parts.push(format!("until {}", format_time(t)));
                }
                if let Some(a) = &f.agent {
                    parts.push(format!("agent {a}"));
                }
                if let Some(c) = &f.change_id {
                    parts.push(format!("change {c}"));
                }
                format!(
                    "events with {}, each with an inclusion proof",
                    parts.join(", ")
                )
            };
            let sig = match (h.signed, v.signature_checked, &vk) {
                (true, true, Some(k)) => {
                    format!("signature by {}+{:08x} verified", k.name(), k.key_id())
                }
                (true, _, _) => {
                    "signed, but the signature was NOT checked (give --pubkey)".to_string()
                }
                _ => "unsigned".to_string(),
            };
            if json {
                json_line(&json!({
                    "ok": true, "file": file, "origin": h.origin, "events": v.events,
                    "first_seq": v.first_seq, "last_seq": v.last_seq, "tree_size": h.tree_size,
                    "root": h.tree_root, "filter": h.filter, "signed": h.signed,
                    "signature_checked": v.signature_checked, "exported_at_us": h.exported_at_us,
                }))?;
            } else {
                println!(
                    "ok: {}: {} event(s){} of ledger {} ({scope}); tree of {} events, root {}; {sig}",
                    file.display(),
                    v.events,
                    match (v.first_seq, v.last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
                        _ => String::new(),
                    },
                    h.origin,
                    h.tree_size,
                    h.tree_root
                );
            }
            Ok(0)
        }
        Err(VerifyError::Rejected { line, reason }) => {
            if json {
                json_line(&json!({"ok": false, "file": file, "line": line, "reason": reason}))?;
            } else {
                eprintln!("REJECTED: {} line {line}: {reason}", file.display());
            }
            Ok(EXIT_VERIFY)
        }
        Err(VerifyError::Io(e)) => Err(err(format!("cannot read {}: {e}", file.display()))),
        Err(e) => Err(err(format!("{}: {e}", file.display()))),
    }
}

pub fn redact(cli: &Cli, hash: &str, reason: &str, agent: &str, json: bool) -> CliResult {
    let h = Hash::from_hex(hash).ok_or_else(|| {
        CliError::usage(format!("{hash:?} is not a content hash (64 hex digits)"))
    })?;
    if reason.trim().is_empty() {
        return Err(CliError::usage(
            "--reason must say why the content is redacted",
        ));
    }
    ledger::validate_id("agent ID", agent)?;
    let ctx = context::open(cli)?;
    let ledger = &ctx.ledger;
    let store = ledger.store();
    if let Some(seq) = ledger.flat_index()?.redaction(&h)? {
        let r = ledger.event(seq)?;
        let why = match &r.event.body {
            Body::Redaction(rd) => rd.reason.clone(),
            _ => String::new(),
        };
        if !store.contains(&h) {
            return Err(err(format!(
                "content {h} was already redacted at seq {seq} ({}): {why}; nothing was changed",
                format_time(r.event.time_us)
            )));
        }
        // An earlier `ledger redact` recorded the event but did not get to remove the
        // bytes: finish its work.
        store.remove(&h)?;
        if json {
            json_line(&json!({"hash": h, "seq": seq, "removed": true, "recorded_now": false}))?;
        } else {
            eprintln!("Content {h} was redacted at seq {seq}; its stored bytes are now removed.");
        }
        return Ok(());
    }
    if !store.contains(&h) {
        return Err(err(format!(
            "content {h} is not in the content store; nothing was redacted"
        ))
        .with_hint("`ledger show CHANGE` lists the content hashes a change recorded"));
    }
    let id = crate::commands::fresh_change_id(ledger)?;
    let records = ledger.append(
        vec![NewEvent {
            time_us: now_us(),
            actor: ledger_actor(agent),
            change_id: id.clone(),
            correlation_id: None,
            body: Body::Redaction(Redaction {
                hash: h,
                reason: reason.to_string(),
            }),
            meta: Default::default(),
        }],
        Precondition::NewChange(id.clone()),
    )?;
    let seq = records[0].event.seq;
    ledger.flush()?;
    store.remove(&h).map_err(|e| {
        err(format!(
            "the redaction was recorded at seq {seq} but removing the stored bytes failed: {e}"
        ))
        .with_hint(format!(
            "run `ledger redact {h} --reason ...` again to remove them"
        ))
    })?;
    if json {
        json_line(
            &json!({"hash": h, "seq": seq, "change_id": id, "removed": true, "recorded_now": true}),
        )?;
    } else {
        println!("{id}");
        eprintln!(
            "Redacted content {h} at seq {seq}: its bytes are removed from the store; every hash and proof stays valid."
        );
    }
    Ok(())
}
