//! Text detection and unified diffs.

/// Content the planner and [`text_diff`] treat as text: valid UTF-8 with no NUL byte
/// (the NUL rule is how git and diff tools tell binary files too).
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

/// A unified diff (3 lines of context) from `old` to `new` with the given `---`/`+++`
/// labels, or `None` when either side is not text ([`is_text`]). Identical inputs give
/// an empty string. For a created or deleted file pass empty bytes and `/dev/null` as
/// that side's label, as `git diff` does.
pub fn text_diff(old: &[u8], new: &[u8], label_old: &str, label_new: &str) -> Option<String> {
    if !is_text(old) || !is_text(new) {
        return None;
    }
    let (old, new) = (
        std::str::from_utf8(old).ok()?,
        std::str::from_utf8(new).ok()?,
    );
    if old == new {
        return Some(String::new());
    }
    let mut opts = diffy::DiffOptions::new();
    opts.set_original_filename(label_old.to_string())
        .set_modified_filename(label_new.to_string());
    Some(opts.create_patch(old, new).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_detection() {
        assert!(is_text(b""));
        assert!(is_text("h\u{e9}llo\n".as_bytes()));
        assert!(!is_text(b"a\0b"));
        assert!(!is_text(b"\xff\xfe"));
    }

    #[test]
    fn unified_diff() {
        let d = text_diff(b"a\nb\nc\n", b"a\nB\nc\n", "a/f.txt", "b/f.txt").unwrap();
        assert_eq!(
            d,
            "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        assert_eq!(text_diff(b"x\n", b"x\n", "a", "b").unwrap(), "");
        let created = text_diff(b"", b"new\n", "/dev/null", "b/n").unwrap();
        assert_eq!(created, "--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+new\n");
        let no_eol = text_diff(b"a", b"b", "x", "y").unwrap();
        assert!(no_eol.contains("\\ No newline at end of file"), "{no_eol}");
    }

    #[test]
    fn binary_has_no_text_diff() {
        assert_eq!(text_diff(b"\0", b"x", "a", "b"), None);
        assert_eq!(text_diff(b"x", b"\xff", "a", "b"), None);
    }
}
