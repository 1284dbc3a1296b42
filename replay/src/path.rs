//! Checking that a recorded file name stays beneath the workspace root.

use serde::{Deserialize, Serialize};

/// The ledger's own directory at the workspace root (`ledger::LEDGER_DIR` on main).
/// A revert never writes into it, whatever an event names: a forged or corrupt event
/// must not overwrite the journal.
const LEDGER_DIR: &[u8] = b".ledger";

/// Why a file name is not a safe workspace-relative path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafePath {
    #[error("the path is empty")]
    Empty,
    #[error("the path is absolute")]
    Absolute,
    #[error("the path contains a NUL byte")]
    Nul,
    #[error("the path has an empty component (`//` or a trailing `/`)")]
    EmptyComponent,
    #[error("the path has a `.` component")]
    CurrentDir,
    #[error("the path has a `..` component")]
    ParentDir,
    #[error("the path is inside the ledger's own `.ledger` directory")]
    LedgerDir,
}

/// A checked workspace-relative path: one or more components, none empty, `.`, `..`
/// or containing NUL or `/`, the first not `.ledger`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafePath<'a> {
    components: Vec<&'a [u8]>,
}

impl<'a> SafePath<'a> {
    /// The components, root first. Callers open them one by one beneath the workspace
    /// root without following symlinks, so a symlinked directory cannot lead out.
    pub fn components(&self) -> &[&'a [u8]] {
        &self.components
    }

    /// The last component (the file's own name).
    pub fn file_name(&self) -> &'a [u8] {
        self.components
            .last()
            .expect("a SafePath has at least one component")
    }

    /// The components before the last one.
    pub fn parents(&self) -> &[&'a [u8]] {
        &self.components[..self.components.len() - 1]
    }

    /// The path as a relative `PathBuf` (raw bytes; Unix only).
    #[cfg(unix)]
    pub fn to_path_buf(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut p = std::path::PathBuf::new();
        for c in &self.components {
            p.push(std::ffi::OsStr::from_bytes(c));
        }
        p
    }
}

/// Checks a `/`-separated, workspace-relative file name (a `file:` resource key's name)
/// before anything is written there. Rejects empty names, absolute paths, NUL bytes,
/// empty, `.` and `..` components, and the ledger's own directory.
///
/// This is a lexical check: the caller must still refuse to follow symlinks in the
/// parent directories when it writes.
pub fn safe_relative_path(name: &[u8]) -> Result<SafePath<'_>, UnsafePath> {
    if name.is_empty() {
        return Err(UnsafePath::Empty);
    }
    if name[0] == b'/' {
        return Err(UnsafePath::Absolute);
    }
    if name.contains(&0) {
        return Err(UnsafePath::Nul);
    }
    let mut components = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" => return Err(UnsafePath::EmptyComponent),
            b"." => return Err(UnsafePath::CurrentDir),
            b".." => return Err(UnsafePath::ParentDir),
            _ => components.push(c),
        }
    }
    if components[0] == LEDGER_DIR {
        return Err(UnsafePath::LedgerDir);
    }
    Ok(SafePath { components })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        let p = safe_relative_path(b"src/main.rs").unwrap();
        assert_eq!(p.components(), &[&b"src"[..], &b"main.rs"[..]]);
        assert_eq!(p.file_name(), b"main.rs");
        assert_eq!(p.parents(), &[&b"src"[..]]);
        assert!(safe_relative_path(b"a").is_ok());
        assert!(safe_relative_path(b"...").is_ok());
        assert!(safe_relative_path(b".hidden/..x/x..").is_ok());
        assert!(safe_relative_path(b"\xff\xfe/name").is_ok());
        assert!(safe_relative_path(b"dir/.ledger").is_ok());
        assert!(safe_relative_path(b".ledgerx").is_ok());
    }

    #[test]
    fn rejects_escapes() {
        let cases: &[(&[u8], UnsafePath)] = &[
            (b"", UnsafePath::Empty),
            (b"/etc/passwd", UnsafePath::Absolute),
            (b"/", UnsafePath::Absolute),
            (b"a\0b", UnsafePath::Nul),
            (b"a//b", UnsafePath::EmptyComponent),
            (b"a/", UnsafePath::EmptyComponent),
            (b".", UnsafePath::CurrentDir),
            (b"a/./b", UnsafePath::CurrentDir),
            (b"..", UnsafePath::ParentDir),
            (b"../x", UnsafePath::ParentDir),
            (b"a/../../x", UnsafePath::ParentDir),
            (b"a/..", UnsafePath::ParentDir),
            (b".ledger", UnsafePath::LedgerDir),
            (b".ledger/journal", UnsafePath::LedgerDir),
        ];
        for (name, want) in cases {
            assert_eq!(safe_relative_path(name).unwrap_err(), *want, "{name:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn path_buf_is_relative() {
        let p = safe_relative_path(b"a/b/c").unwrap().to_path_buf();
        assert!(p.is_relative());
        assert_eq!(p, std::path::Path::new("a/b/c"));
    }
}
