//! Text from the guest (error messages, software names, serde errors quoting
//! guest bytes) on its way into a log line or an error containerd shows:
//! control characters and bidi overrides escaped, so a guest can forge no log
//! line and move no terminal cursor; length capped.

/// Characters of guest text kept; the rest is counted, not shown.
pub const MAX_GUEST_TEXT: usize = 512;

/// Escape and cap `s`.
pub fn guest_text(s: &str) -> String {
    escape_controls(s, MAX_GUEST_TEXT, true)
}

/// `s` on one line: control characters (and the bidi controls that reorder
/// what a reader sees) escaped, backslashes too if `backslashes` (so an
/// escape in `s` cannot pass for one of ours), cut after `max_chars`
/// characters with the count of bytes cut.
pub fn escape_controls(s: &str, max_chars: usize, backslashes: bool) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars + 16));
    for (shown, (i, c)) in s.char_indices().enumerate() {
        if shown == max_chars {
            out.push_str(&format!("…(+{} bytes)", s.len() - i));
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' if backslashes => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_forged_lines_no_escapes_bounded() {
        let forged = "oops\ntime=\"2026-01-01\" level=error msg=\"FORGED\"\r\x1b[2J";
        let t = guest_text(forged);
        assert!(
            !t.contains('\n') && !t.contains('\r') && !t.contains('\x1b'),
            "{t}"
        );
        assert!(
            t.starts_with("oops\\ntime=") && t.contains("\\u{1b}[2J"),
            "{t}"
        );
        let long = "é".repeat(10_000);
        let t = guest_text(&long);
        assert!(
            t.chars().count() < MAX_GUEST_TEXT + 32 && t.ends_with("bytes)"),
            "{t}"
        );
        assert_eq!(guest_text("plain text, 100% fine"), "plain text, 100% fine");
        assert_eq!(guest_text("a\u{202e}b"), "a\\u{202e}b");
    }
}
