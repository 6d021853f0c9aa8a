//! Text from outside (a workload's output, a manifest's bytes, an error
//! that quotes them) shown on a terminal: control characters are escaped
//! so that nothing but paddock drives the terminal (a window title, the
//! clipboard through OSC 52, a line erased), as journalctl does for a
//! unit's output. Newlines and tabs pass.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` would be interpreted by a terminal rather than shown, or
/// would reorder what is shown around it: the bidirectional embeddings,
/// overrides and isolates, with which a line can show other than it
/// reads ("Trojan Source").
fn is_control(c: char) -> bool {
    c != '\n'
        && c != '\t'
        && (c.is_control() || c == '\u{7f}' || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// `s` with every control character written as `\xNN` (or `\u{NNNN}`
/// for the C1 range and beyond).
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !is_control(c) => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_drives_a_terminal_and_keeps_the_rest() {
        assert_eq!(escape_controls("plain text\twith a tab\n"), "plain text\twith a tab\n");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        // A window title, OSC 52 (the clipboard), a line erase, a bell, C1 CSI.
        assert_eq!(escape_controls("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape_controls("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(escape_controls("a\x1b[2Kb\r"), "a\\x1b[2Kb\\x0d");
        assert_eq!(escape_controls("\u{9b}31m\u{7f}"), "\\u{9b}31m\\x7f");
        assert_eq!(escape_controls("é ✓"), "é ✓");
        // Bidirectional overrides and isolates reorder a line; the marks
        // and joiners that right-to-left text and emoji use stay.
        assert_eq!(escape_controls("ok\u{202e}kO\u{2066}"), "ok\\u{202e}kO\\u{2066}");
        assert_eq!(escape_controls("\u{200f}\u{200d}"), "\u{200f}\u{200d}");
    }
}
