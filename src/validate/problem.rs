//! A problem found in a file, and how it is shown: rustc style on a
//! terminal or in a log, JSON objects for CI tools.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem. `span` is a byte range in the file's text; `None` means the
/// file as a whole (its first line is shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub span: Option<Range<usize>>,
    pub message: String,
    /// For a policy refusal: the policy and the rule (its `title`).
    pub policy: Option<String>,
    pub rule: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Problem {
    pub fn error(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, span, message: message.into(), policy: None, rule: None, help: None }
    }

    pub fn warning(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(span, message) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// At most this many problems are kept for one file, in the file's order:
/// a file with more (a generated one gone wrong) is no better shown in
/// full, and each shown quotes its line.
pub const MAX_PER_FILE: usize = 50;

/// Keeps the first `MAX_PER_FILE - 1` problems of a sorted list and, in
/// place of the rest, one that says how many there were, where the first
/// of them is, and is an error when any of them was.
pub fn cap(problems: &mut Vec<Problem>) {
    if problems.len() <= MAX_PER_FILE {
        return;
    }
    let rest = problems.split_off(MAX_PER_FILE - 1);
    let severity = if rest.iter().any(Problem::is_error) { Severity::Error } else { Severity::Warning };
    problems.push(Problem {
        severity,
        span: rest[0].span.clone(),
        message: format!("{} more problems from here on, not shown", rest.len()),
        policy: None,
        rule: None,
        help: Some("mend the ones above and check the file again".to_owned()),
    });
}

/// Line and column (both from 1; the column counts characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A problem with its position resolved, as `--format json` prints it.
#[derive(Debug, Serialize)]
pub struct Located<'a> {
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: &'a str,
    pub policy: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub help: Option<&'a str>,
}

impl Problem {
    pub fn locate<'a>(&'a self, file: &'a str, text: &str) -> Located<'a> {
        let (line, column) = self.span.as_ref().map_or((1, 1), |s| line_col(text, s.start));
        Located {
            file,
            line,
            column,
            severity: self.severity,
            message: &self.message,
            policy: self.policy.as_deref(),
            rule: self.rule.as_deref(),
            help: self.help.as_deref(),
        }
    }
}

/// ANSI colour, used only when the output is a terminal and NO_COLOR is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Never,
    Always,
}

impl Color {
    /// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org).
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) {
            Color::Always
        } else {
            Color::Never
        }
    }

    pub fn paint(self, code: &str, s: &str) -> String {
        match self {
            Color::Never => s.to_owned(),
            Color::Always => format!("\x1b[{code}m{s}\x1b[0m"),
        }
    }
}

/// A source line longer than this many characters is shown in part: this
/// many from `SHOWN_BEFORE` before the caret.
const SHOWN_LINE: usize = 120;
const SHOWN_BEFORE: usize = 40;

/// `FILE:LINE:COL: error: MESSAGE`, the source line with a caret under the
/// span, then the policy, rule and help lines.
pub fn render(problem: &Problem, file: &str, text: &str, color: Color) -> String {
    let at = problem.locate(file, text);
    let (label, code) = match problem.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    let mut out = String::new();
    // The file's own bytes and what quotes them are shown escaped: a
    // manifest must not drive the terminal of whoever checks it.
    let escape = crate::text::escape_controls;
    let message = escape(&problem.message);
    let _ = writeln!(out, "{}:{}:{}: {}: {message}", escape(file), at.line, at.column, color.paint(code, label));
    if let Some(source_line) = text.lines().nth(at.line - 1) {
        let number = at.line.to_string();
        let pad = " ".repeat(number.len());
        let bar = color.paint("1;34", "|");
        let width = problem
            .span
            .as_ref()
            .map(|s| {
                let s = floor_char_boundary(text, s.start.min(text.len()))
                    ..floor_char_boundary(text, s.end.min(text.len()));
                text[s].split('\n').next().unwrap_or("").chars().count()
            })
            .unwrap_or(0)
            .max(1);
        let chars: Vec<char> = source_line.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
        let column = (at.column - 1).min(chars.len());
        // A long line is shown around the caret only, cut where marked.
        let (from, to) = match chars.len() > SHOWN_LINE {
            true => {
                let from = column.saturating_sub(SHOWN_BEFORE);
                (from, (from + SHOWN_LINE).min(chars.len()))
            }
            false => (0, chars.len()),
        };
        let cut = |a: usize, b: usize| escape(&chars[a..b].iter().collect::<String>()).into_owned();
        let (lead, tail) = (if from > 0 { "…" } else { "" }, if to < chars.len() { "…" } else { "" });
        // The caret stays under its text once the line before it is escaped;
        // a span past the line's end (its newline) gets the carets it had.
        let spanned = (column + width).min(to);
        let past = if to < chars.len() { 0 } else { (column + width).saturating_sub(chars.len()) };
        let width = (cut(column, spanned).chars().count() + past).max(1);
        let _ = writeln!(out, "{pad} {bar}");
        let _ = writeln!(out, "{} {bar} {lead}{}{tail}", color.paint("1;34", &number), cut(from, to));
        let caret = " ".repeat(lead.chars().count() + cut(from, column).chars().count()) + &"^".repeat(width);
        let _ = writeln!(out, "{pad} {bar} {}", color.paint(code, &caret));
    }
    let pad = " ".repeat(at.line.to_string().len());
    if let Some(policy) = &problem.policy {
        let rule = problem.rule.as_deref().map(|r| format!(", rule: {r}")).unwrap_or_default();
        let _ = writeln!(out, "{pad} = policy: {policy}{rule}");
    }
    if let Some(help) = &problem.help {
        let _ = writeln!(out, "{pad} = help: {}", escape(help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        let second_eq = text.rfind('=').unwrap();
        assert_eq!(line_col(text, second_eq), (2, 4));
        assert_eq!(line_col(text, 999), (3, 1));
    }

    #[test]
    fn renders_like_rustc() {
        let text = "command = [\"x\"]\n[security]\nprivileged = true\n";
        let start = text.find("true").unwrap();
        let mut p = Problem::error(Some(start..start + 4), "refused").with_help("set it to false");
        p.policy = Some("baseline".into());
        p.rule = Some("no-privileged".into());
        let shown = render(&p, "web.toml", text, Color::Never);
        assert_eq!(
            shown,
            "web.toml:3:14: error: refused\n  |\n3 | privileged = true\n  |              ^^^^\n  = policy: baseline, rule: no-privileged\n  = help: set it to false\n"
        );
    }

    #[test]
    fn a_long_line_is_shown_around_its_caret() {
        let text = format!("command = [\"{}\", 1, \"{}\"]\n", "a".repeat(200), "b".repeat(200));
        let start = text.find(", 1,").unwrap() + 2;
        let shown = render(&Problem::error(Some(start..start + 1), "not a string"), "w.toml", &text, Color::Never);
        let lines: Vec<&str> = shown.lines().collect();
        let (quoted, caret) = (lines[2].strip_prefix("1 | ").unwrap(), lines[3].strip_prefix("  | ").unwrap());
        assert!(quoted.starts_with('…') && quoted.ends_with('…'), "{quoted}");
        assert_eq!(quoted.chars().count(), SHOWN_LINE + 2);
        let at = caret.chars().position(|c| c == '^').unwrap();
        assert_eq!(quoted.chars().nth(at), Some('1'), "\n{quoted}\n{caret}");
        assert_eq!(at, SHOWN_BEFORE + 1);
        // Near the start, nothing is cut before it.
        let shown = render(&Problem::error(Some(0..7), "x"), "w.toml", &text, Color::Never);
        assert!(shown.contains("1 | command = [\"aaa") && shown.contains("\n  | ^^^^^^^\n"), "{shown}");
    }

    #[test]
    fn past_fifty_problems_one_says_how_many_more() {
        let at = |i: usize| Some(i..i + 1);
        let mut warnings: Vec<Problem> = (0..80).map(|i| Problem::warning(at(i), "w")).collect();
        cap(&mut warnings);
        assert_eq!(warnings.len(), MAX_PER_FILE);
        let last = warnings.last().unwrap();
        assert_eq!((last.severity, last.span.clone()), (Severity::Warning, at(49)));
        assert_eq!(last.message, "31 more problems from here on, not shown");
        // An error among those not shown keeps the file refused.
        let mut mixed: Vec<Problem> = (0..80).map(|i| Problem::warning(at(i), "w")).collect();
        mixed[70] = Problem::error(at(70), "e");
        cap(&mut mixed);
        assert!(mixed.last().unwrap().is_error());
        let mut few: Vec<Problem> = (0..MAX_PER_FILE).map(|i| Problem::error(at(i), "e")).collect();
        cap(&mut few);
        assert!(few.iter().all(|p| p.message == "e"));
    }

    #[test]
    fn colour_marks_the_label_and_caret_only_when_asked() {
        let text = "user = -1\n";
        let p = Problem::error(Some(7..9), "bad");
        let coloured = render(&p, "f.toml", text, Color::Always);
        assert!(coloured.starts_with("f.toml:1:8: \x1b[1;31merror\x1b[0m: bad\n"), "{coloured:?}");
        assert!(coloured.contains("\x1b[1;31m       ^^\x1b[0m"), "{coloured:?}");
        assert!(!render(&p, "f.toml", text, Color::Never).contains('\x1b'));
    }

    #[test]
    fn a_whole_file_problem_shows_the_first_line() {
        let shown = render(&Problem::error(None, "bad name"), "Web.toml", "command = []\n", Color::Never);
        assert!(shown.starts_with("Web.toml:1:1: error: bad name\n"), "{shown}");
    }
}
