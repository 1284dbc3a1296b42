//! Every command, flag and help text of the `ledger` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "ledger",
    version,
    about = "Record every agent action as a hash-chained event; inspect, verify and undo them.",
    long_about = "ledger records what autonomous agents do to a workspace. Each action becomes one \
change: the files it created, modified or deleted with the BLAKE3 hash of their content before \
and after, who acted and why. Records are appended to a hash-chained journal in .ledger/ that \
`ledger verify` checks end to end.\n\nTypical use:\n  ledger init\n  ledger exec --agent bot-1 -- ./agent-step.sh\n  ledger log\n  ledger show <change-id> --diff\n  ledger verify",
    after_help = "Exit codes: 0 ok, 1 error, 2 bad usage, 3 verification failed or journal damaged, \
4 revert conflict, 5 ledger busy (locked by another process). `ledger exec` exits with the command's code."
)]
pub struct Cli {
    /// The workspace (or its .ledger directory) to use instead of searching upwards from
    /// the current directory.
    #[arg(long = "ledger", global = true, env = "LEDGER_DIR", value_name = "DIR")]
    pub ledger: Option<PathBuf>,

    /// Seconds to wait for another ledger process to finish before giving up.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS")]
    pub lock_timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Who {
    /// ID of the agent that acted (required): e.g. `claude-7` or `deploy-bot`.
    #[arg(long, value_name = "ID")]
    pub agent: String,
    /// Change ID to use; generated (time-ordered) when omitted. Must be new.
    #[arg(long = "change", value_name = "ID")]
    pub change: Option<String>,
    /// Why the agent acted.
    #[arg(long, short = 'm', value_name = "TEXT")]
    pub message: Option<String>,
    /// The request this action was part of.
    #[arg(long, value_name = "ID")]
    pub correlation: Option<String>,
    /// The human or service the agent acted for.
    #[arg(long, value_name = "P")]
    pub principal: Option<String>,
    /// The role the agent acted in.
    #[arg(long, value_name = "R")]
    pub role: Option<String>,
    /// Extra metadata, KEY=VALUE (repeatable). Redact secrets before passing them.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create .ledger/ in the current directory (refuses if one exists).
    Init {
        #[arg(long)]
        json: bool,
    },
    /// Record the workspace's unrecorded differences (or those under PATHs) as one change.
    Record {
        #[command(flatten)]
        who: Who,
        /// Only record differences under these paths.
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run a command and record everything it changed as one change.
    ///
    /// Refuses if the workspace has unrecorded changes. A non-zero exit is recorded as a
    /// failure event of the same change; ledger exits with the command's code.
    Exec {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        json: bool,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Show unrecorded differences between the workspace and the ledger.
    Status {
        /// Only look under these paths.
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List changes, newest first.
    Log {
        /// Only changes by this agent.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Only changes touching this path (a file or a directory).
        #[arg(long, value_name = "P")]
        path: Option<PathBuf>,
        /// Only changes at or after this time (RFC 3339, YYYY-MM-DD, or 2h/30m/7d ago).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only changes before this time.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// At most N changes.
        #[arg(long, short = 'n', value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one change: its events and every file with op, hashes, mode and size.
    Show {
        /// A change ID or an unambiguous prefix of one.
        change: String,
        /// Add a unified diff for text files.
        #[arg(long)]
        diff: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the stored bytes of a content hash to stdout.
    Cat {
        /// 64 hex digits, as in `ledger show` or `b3sum`.
        hash: String,
    },
    /// Check every event hash, link and seq, every content hash, and the indexes.
    ///
    /// With --checkpoints and --pubkey, also check signed checkpoints against the
    /// journal: signature, origin, Merkle root of the first SIZE events, and head hash.
    Verify {
        #[arg(long)]
        json: bool,
        /// Check that content is present without re-hashing it (faster).
        #[arg(long)]
        quick: bool,
        /// A signed checkpoint file, or a directory of them (from `ledger checkpoint`).
        #[arg(long, value_name = "DIR|FILE", requires = "pubkey")]
        checkpoints: Option<PathBuf>,
        /// The verifier key the checkpoints are signed with (KEY.pub from `ledger keygen`).
        #[arg(long, value_name = "KEY.pub", requires = "checkpoints")]
        pubkey: Option<PathBuf>,
    },
    /// Create an Ed25519 key for signing checkpoints and exports.
    ///
    /// Writes the signing key to PATH (mode 0600; keep it outside the ledger directory)
    /// and the verifier key, which auditors need, to PATH.pub. Refuses existing files.
    Keygen {
        /// Where to write the signing key.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Key name (default: the ledger's origin, agent-ledger/<ledger ID>).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of every event so far and record it as an event.
    ///
    /// The checkpoint covers seq 0 to the current head (SIZE events) and is recorded as
    /// event SIZE. Prints the signed note (C2SP tlog-checkpoint) or writes it to --out.
    Checkpoint {
        /// The signing key (from `ledger keygen`; must not be readable by others).
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// Write the signed note to this new file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write events to a file an auditor can check offline (`ledger verify-export`,
    /// docs/EXPORT.md).
    ///
    /// JSONL holds every field of every event, its hash, and for filtered exports an
    /// inclusion proof; --sign ends it with a signed checkpoint. CSV is one row per file
    /// operation, for spreadsheets (not evidence).
    Export {
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Only events recorded at or after this time.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only events recorded before this time.
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Only events by this agent.
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Only events of this change (ID or unambiguous prefix).
        #[arg(long, value_name = "ID")]
        change: Option<String>,
        /// Sign the export with this key (JSONL only).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Check an export file offline: every event hash, link or proof, and the trailer.
    ///
    /// Exits 0 when the file is intact, 3 naming the first bad line otherwise.
    VerifyExport {
        /// The export (JSONL) to check.
        file: PathBuf,
        /// The verifier key the export must be signed with (KEY.pub).
        #[arg(long, value_name = "KEY.pub")]
        pubkey: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Remove stored content for good, recording why; its hash stays valid.
    ///
    /// Appends a redaction event, then deletes the bytes from the content store.
    /// Commands that need them (cat, replay, revert) then say when and why they were
    /// redacted.
    Redact {
        /// The content hash (64 hex digits).
        hash: String,
        /// Why (recorded in the journal: do not repeat the secret here).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Who is redacting.
        #[arg(long, value_name = "ID", default_value = "ledger")]
        agent: String,
        #[arg(long)]
        json: bool,
    },
    /// Undo one change, keeping every change made since.
    ///
    /// Files nothing touched since are restored; text files that later changes edited
    /// are merged three-way (as `git revert` does). Any conflict, or an unrecorded edit
    /// in a file the revert must touch, writes nothing and exits 4 with every file, the
    /// reason and the later changes involved. The revert is recorded as a new change.
    Revert {
        /// The change to undo (ID or unambiguous prefix).
        change: String,
        /// Who is reverting (default: `ledger`).
        #[arg(long, value_name = "ID", default_value = "ledger")]
        agent: String,
        #[arg(long, short = 'm', value_name = "TEXT")]
        message: Option<String>,
        /// ID for the revert change; generated when omitted.
        #[arg(long = "change-id", value_name = "ID")]
        change_id: Option<String>,
        #[arg(long, value_name = "P")]
        principal: Option<String>,
        #[arg(long, value_name = "ID")]
        correlation: Option<String>,
        /// Print the plan (files, actions, conflicts) and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write the workspace as it was at a point into a new or empty directory.
    Replay {
        /// The point: a seq number, a change ID (state right after it), or a time.
        #[arg(
            long,
            value_name = "SEQ|CHANGE|TIME",
            conflicts_with = "before",
            required_unless_present = "before"
        )]
        at: Option<String>,
        /// The state right before this change.
        #[arg(long, value_name = "CHANGE")]
        before: Option<String>,
        /// Target directory (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every event in order, with time, actor, change, kind, files and the gap between steps.
    Timeline {
        #[arg(long, value_name = "T")]
        since: Option<String>,
        #[arg(long, value_name = "T")]
        until: Option<String>,
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        #[arg(long, value_name = "ID")]
        correlation: Option<String>,
        #[arg(long, value_name = "P")]
        path: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Every change that touched a path, by whom, with old and new hashes.
    Blame {
        path: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// File-level differences between two points (seq, change ID or time).
    Diff {
        from: String,
        to: String,
        /// Add unified diffs for text files.
        #[arg(long)]
        patch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the indexes and projection snapshots from the journal.
    Reindex {
        #[arg(long)]
        json: bool,
    },
}

/// `ledger export --format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines with hashes, proofs and a trailer (docs/EXPORT.md).
    Jsonl,
    /// One row per file operation, for spreadsheets.
    Csv,
}
