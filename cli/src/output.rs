//! Errors as the user sees them: a message, an optional hint, an exit code.

use std::fmt;

pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_VERIFY: i32 = 3;
#[allow(dead_code)] // used by `ledger revert`
pub const EXIT_CONFLICT: i32 = 4;
pub const EXIT_LOCKED: i32 = 5;

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    pub hint: Option<String>,
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            hint: None,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(EXIT_USAGE, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ledger::Error> for CliError {
    fn from(e: ledger::Error) -> Self {
        use ledger::Error as E;
        let code = match &e {
            E::Locked { .. } => EXIT_LOCKED,
            E::Damaged { .. } | E::CorruptContent { .. } => EXIT_VERIFY,
            _ => EXIT_ERROR,
        };
        let hint = match &e {
            E::Damaged { .. } => Some(
                "run `ledger verify` for a full report; the journal was not changed".to_string(),
            ),
            E::UnknownChange(_) => Some("`ledger log` lists change IDs".to_string()),
            E::Locked { .. } => Some("use --lock-timeout to wait longer".to_string()),
            _ => None,
        };
        CliError {
            code,
            message: e.to_string(),
            hint,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::new(EXIT_ERROR, e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::new(EXIT_ERROR, format!("writing JSON: {e}"))
    }
}

/// Prints one JSON value on its own line.
pub fn json_line(v: &serde_json::Value) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out).map_err(Into::into)
}
