//! A manifest's text, parsed once into the JSON that schemas see, with the
//! byte span of every key and value kept, so that a problem found at a JSON
//! pointer can be shown at its line and column.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::{Map, Number, Value};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::problem::Problem;

/// Deeper than any manifest needs; refusing deeper input keeps every walk
/// over the tree (here and in the validators) far from the stack's end.
const MAX_DEPTH: usize = 32;

/// Where a node sits in the source: the key that names it (absent for the
/// root and array items) and the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
}

/// JSON pointer (RFC 6901, as jsonschema reports instance locations) to node.
#[derive(Debug, Default)]
pub struct SpanIndex(HashMap<String, Node>);

impl SpanIndex {
    pub fn get(&self, pointer: &str) -> Option<&Node> {
        self.0.get(pointer)
    }

    /// The span to show for a problem at `pointer`: the value when it is in
    /// the file, else the nearest enclosing table that is (a missing key
    /// points at the table it belongs in), else `None` (the file as a whole).
    pub fn locate(&self, pointer: &str) -> Option<Range<usize>> {
        let mut p = pointer;
        loop {
            if let Some(node) = self.0.get(p) {
                return (!p.is_empty()).then(|| node.key.clone().unwrap_or_else(|| node.value.clone()));
            }
            p = &p[..p.rfind('/')?];
        }
    }

    /// The span of a key's name, for problems about the key itself (unknown keys).
    pub fn key_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.0.get(pointer).and_then(|n| n.key.clone())
    }

    /// The span of a value, for problems about what was written.
    pub fn value_span(&self, pointer: &str) -> Option<Range<usize>> {
        self.0.get(pointer).map(|n| n.value.clone())
    }
}

pub fn push_pointer(base: &str, segment: &str) -> String {
    let mut p = String::with_capacity(base.len() + segment.len() + 1);
    p.push_str(base);
    p.push('/');
    for c in segment.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

/// A parsed document: the JSON for the schema, the spans, and the TOML tree
/// kept for typed deserialization (whose errors carry spans too).
pub struct Parsed<'i> {
    pub json: Value,
    pub spans: SpanIndex,
    pub table: Spanned<DeTable<'i>>,
    /// Integers past 64 bits, null in `json`: said with their key's range
    /// by whoever holds the schema (`Schema::parse`).
    pub too_large: Vec<TooLarge>,
}

/// An integer TOML allows and no 64-bit number holds, at a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub pointer: String,
    pub span: Range<usize>,
}

/// Parses TOML. Only the first syntax error is reported, at the byte where
/// the parser stopped: what a recovering parser says after it is guesswork
/// that sends readers after problems that are not there.
pub fn parse(text: &str) -> Result<Parsed<'_>, Vec<Problem>> {
    let table = DeTable::parse(text).map_err(|e| {
        let message = e.message().trim_end();
        let problem = Problem::error(e.span(), format!("TOML syntax: {message}"));
        // toml says this one without a place: say what it counts, and
        // find the key it counted.
        vec![match message {
            "recursion limit" => {
                Problem { span: e.span().or_else(|| long_dotted_key(text)), ..problem }.with_help(format!(
                    "a key or table header of 80 or more dotted parts, or arrays and inline tables nested 80 deep; \
                     a manifest nests at most {MAX_DEPTH}"
                ))
            }
            _ => problem,
        }]
    })?;
    let mut spans = SpanIndex::default();
    let mut problems = Vec::new();
    let mut too_large = Vec::new();
    let json = {
        let mut walk = Walk { spans: &mut spans, problems: &mut problems, too_large: &mut too_large };
        let root = Spanned::new(0..text.len(), table.get_ref());
        walk.table(&root, String::new(), None, 0)
    };
    if problems.is_empty() { Ok(Parsed { json, spans, table, too_large }) } else { Err(problems) }
}

/// The first key or table header of 79 dots or more (80 parts), outside
/// quotes: what toml refuses as a "recursion limit" without saying where.
/// toml read the file up to that key, so what comes before is TOML: a
/// line that begins inside a multi-line string, or inside an array or
/// inline table written over several lines, is not a key's.
fn long_dotted_key(text: &str) -> Option<Range<usize>> {
    // The string open where the scan is, by its closing delimiter.
    let mut open: Option<&[u8]> = None;
    // Arrays and inline tables open in a value.
    let mut depth = 0usize;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let b = line.as_bytes();
        let (mut dots, mut in_key) = (0, open.is_none() && depth == 0);
        let mut i = 0;
        while i < b.len() {
            if let Some(close) = open {
                if close[0] == b'"' && b[i] == b'\\' {
                    i += 2;
                } else if b[i..].starts_with(close) {
                    i += close.len();
                    // A multi-line string may end in one or two of its quotes.
                    while close.len() == 3 && b.get(i) == Some(&close[0]) {
                        i += 1;
                    }
                    open = None;
                } else {
                    i += 1;
                }
                continue;
            }
            match b[i] {
                q @ (b'"' | b'\'') => {
                    let multi = b[i..].starts_with(&[q, q, q]);
                    let close: &[u8] = match (q, multi) {
                        (b'"', true) => b"\"\"\"",
                        (b'"', false) => b"\"",
                        (_, true) => b"\'\'\'",
                        (_, false) => b"'",
                    };
                    open = Some(close);
                    i += if multi { 3 } else { 1 };
                    continue;
                }
                b'#' => break,
                b'.' if in_key => dots += 1,
                b'=' | b']' if in_key => in_key = false,
                b'[' | b'{' if !in_key => depth += 1,
                b']' | b'}' if !in_key => depth = depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        if dots >= 79 {
            let key = line.trim_end();
            return Some(start + (line.len() - line.trim_start().len())..start + key.len());
        }
        // A one-line string does not go on to the next line.
        if open.is_some_and(|close| close.len() == 1) {
            open = None;
        }
        start += line.len();
    }
    None
}

struct Walk<'a> {
    spans: &'a mut SpanIndex,
    problems: &'a mut Vec<Problem>,
    too_large: &'a mut Vec<TooLarge>,
}

impl Walk<'_> {
    fn table(&mut self, t: &Spanned<&DeTable<'_>>, pointer: String, key: Option<Range<usize>>, depth: usize) -> Value {
        let mut map = Map::with_capacity(t.get_ref().len());
        for (k, v) in t.get_ref().iter() {
            let child = push_pointer(&pointer, k.get_ref());
            let value = self.value(v, child, Some(k.span()), depth + 1);
            map.insert(k.get_ref().to_string(), value);
        }
        self.spans.0.insert(pointer, Node { key, value: t.span() });
        Value::Object(map)
    }

    fn value(&mut self, v: &Spanned<DeValue<'_>>, pointer: String, key: Option<Range<usize>>, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            self.problems.push(Problem::error(Some(v.span()), format!("nested more than {MAX_DEPTH} levels deep")));
            return Value::Null;
        }
        let json = match v.get_ref() {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Value::Number(n.into()),
                Err(_) => {
                    self.too_large.push(TooLarge { pointer: pointer.clone(), span: v.span() });
                    Value::Null
                }
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => {
                    let written = f.as_str();
                    let message = match written.contains("inf") || written.contains("nan") {
                        true => "inf and nan are not allowed here",
                        false => "this number is too large (past 1.8e308)",
                    };
                    self.problems.push(Problem::error(Some(v.span()), message));
                    Value::Null
                }
            },
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.value(item, push_pointer(&pointer, &i.to_string()), None, depth + 1))
                    .collect(),
            ),
            DeValue::Table(t) => return self.table(&Spanned::new(v.span(), t), pointer, key, depth),
        };
        self.spans.0.insert(pointer, Node { key, value: v.span() });
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(text: &'a str, span: &Range<usize>) -> &'a str {
        &text[span.clone()]
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "command = [\"/bin/true\"]\n[security]\nprivileged = true\n[[mounts]]\nsource = \"/a\"\n";
        let parsed = parse(text).unwrap();
        let node = parsed.spans.get("/security/privileged").unwrap();
        assert_eq!(at(text, node.key.as_ref().unwrap()), "privileged");
        assert_eq!(at(text, &node.value), "true");
        assert_eq!(at(text, &parsed.spans.value_span("/command/0").unwrap()), "\"/bin/true\"");
        assert_eq!(at(text, &parsed.spans.value_span("/mounts/0/source").unwrap()), "\"/a\"");
        assert_eq!(parsed.json["security"]["privileged"], Value::Bool(true));
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        let text = "command = [\"x\"]\n[resources]\ncpu = 1\n";
        let parsed = parse(text).unwrap();
        let span = parsed.spans.locate("/resources/memory").unwrap();
        assert!(at(text, &span).contains("resources"), "{:?}", at(text, &span));
        assert_eq!(parsed.spans.locate("/restart/policy"), None);
    }

    #[test]
    fn pointers_escape_slash_and_tilde() {
        let text = "[env]\n\"a/b~c\" = \"x\"\n";
        let parsed = parse(text).unwrap();
        assert!(parsed.spans.get("/env/a~1b~0c").is_some());
    }

    #[test]
    fn syntax_errors_carry_a_span() {
        let text = "command = [\"x\"]\nuser = \n";
        let problems = parse(text).err().unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span.as_ref().map(|s| s.start), Some(text.rfind("= ").unwrap() + 2));
    }

    #[test]
    fn a_long_dotted_key_is_refused_without_overflow() {
        // A header or a dotted key of 200,000 parts would be a tree
        // 200,000 tables deep, too deep to walk or drop by recursion: toml
        // refuses one of 80 parts or more, without a place, so the help
        // says what it counted. Past our own limit and under toml's, ours.
        let path = vec!["a"; 200_000].join(".");
        for text in [format!("[{path}]\n"), format!("{path} = 1\n")] {
            let problems = parse(&text).err().unwrap();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].message, "TOML syntax: recursion limit");
            // At the key, not at the file's start: toml gives no place.
            let text = format!("command = [\"x\"]\n# a.b.c\nhostname = \"a.b\"\n{text}");
            let problems = parse(&text).err().unwrap();
            let at = text.find(&path[..10]).map(|i| i - usize::from(text[..i].ends_with('[')));
            assert_eq!(problems[0].span.as_ref().map(|s| s.start), at, "{:?}", problems[0]);
            assert!(
                problems[0].help.as_deref().is_some_and(|h| h.contains("80 or more dotted parts")),
                "{:?}",
                problems[0]
            );
        }
        let path = vec!["a"; 79].join(".");
        for text in [format!("[{path}]\nb.c = 1\n"), format!("{path} = 1\n")] {
            let problems = parse(&text).err().unwrap();
            assert!(problems[0].message.contains("nested more than 32 levels"), "{:?}", problems[0]);
        }
    }

    #[test]
    fn a_long_dotted_key_is_found_past_strings_and_arrays_of_many_lines() {
        // What reads as a long dotted key inside a multi-line string, past
        // an escaped quote, or on a line of a multi-line array, is not
        // the key: the caret goes under the key.
        let dots = ".".repeat(85);
        let key = vec!["a"; 86].join(".");
        for (before, key) in [
            (format!("hostname = \"\"\"\n{dots}\n\"\"\"\n"), key.clone()),
            (format!("hostname = \"\"\"\n\\\"\"\"\n{dots}\n\"\"\"\n"), key.clone()),
            (format!("hostname = \'\'\'\n{dots}\n\'\'\'\n"), key.clone()),
            (format!("x = [\n  \"a\",\n  {}\n]\n", vec!["1.5"; 85].join(", ")), key.clone()),
            (String::new(), format!("\"a\\\"b\".{key}")),
        ] {
            let text = format!("command = [\"x\"]\n{before}{key} = 1\n");
            let problems = parse(&text).err().unwrap();
            assert_eq!(problems[0].message, "TOML syntax: recursion limit", "{text}");
            assert_eq!(problems[0].span.as_ref().map(|s| s.start), text.rfind(&key), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = format!("x = {}1{}", "[".repeat(200), "]".repeat(200));
        let problems = parse(&text).err().unwrap();
        assert!(problems[0].message.contains("nested") || problems[0].message.contains("TOML"), "{:?}", problems[0]);
    }
}
