//! The ledger crate's one error type.

use std::io;
use std::path::PathBuf;

use crate::hash::Hash;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage core. Messages say what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("journal damaged at seq {seq} ({location}): {reason}")]
    Damaged {
        seq: u64,
        location: String,
        reason: String,
    },

    #[error("the ledger is in use by another process ({holder}); retry when it has finished")]
    Locked { holder: String },

    #[error("no ledger at {} (run `ledger init` there, or point LEDGER_DIR at one)", .0.display())]
    NotFound(PathBuf),

    #[error("a ledger already exists at {}; nothing was changed", .0.display())]
    AlreadyExists(PathBuf),

    #[error("unknown change ID {0:?}")]
    UnknownChange(String),

    #[error("change ID {id:?} already exists (seq {seq}); choose another")]
    DuplicateChange { id: String, seq: u64 },

    #[error("content {0} is not in the content store")]
    MissingContent(Hash),

    #[error("content {hash} is damaged in the store (its bytes hash to {actual})")]
    CorruptContent { hash: Hash, actual: Hash },

    #[error("content {hash} was redacted at seq {seq}: {reason}")]
    Redacted {
        hash: Hash,
        seq: u64,
        time_us: i64,
        reason: String,
    },

    #[error("index database: {0}")]
    Index(String),

    #[error("invalid input: {0}")]
    Invalid(String),

    #[error("appends are refused: {0}")]
    Refused(String),

    /// Returned by a scan callback to end the scan early; scans turn it into success.
    #[error("scan stopped")]
    Stopped,
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Index(e.to_string())
    }
}
