//! Turns a JSON Schema error into a problem an operator can act on: the
//! key in TOML spelling, what was found, what is expected, where.

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::problem::Problem;
use super::source::{SpanIndex, push_pointer};
use crate::model::{DURATION_PATTERN, SIZE_PATTERN};

/// The key a JSON pointer names, as an operator writes it: `mounts[0].source`.
pub fn key_name(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            if segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                out.push_str(&shortened(&segment));
            } else {
                out.push_str(&format!("{:?}", shortened(&segment)));
            }
        }
    }
    out
}

/// How a value is written in TOML, shortened for a message.
pub fn toml_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "a table".to_owned(),
        other => other.to_string(),
    };
    shortened(&s)
}

/// At most 60 characters of `s` for a message (a key or a value may be
/// a megabyte long; the caret under the file's line says which).
pub fn shortened(s: &str) -> String {
    if s.chars().count() > 60 { format!("{}…", s.chars().take(57).collect::<String>()) } else { s.to_owned() }
}

fn toml_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

fn json_type_name(t: &str) -> &'static str {
    match t {
        "array" => "an array",
        "boolean" => "a boolean (true or false)",
        "integer" => "an integer",
        "number" => "a number",
        "object" => "a table",
        "string" => "a string",
        _ => "nothing",
    }
}

/// The table a pointer's key lives in, for messages: `[security]`, or "the top level".
fn table_name(pointer: &str) -> String {
    let parent = &pointer[..pointer.rfind('/').unwrap_or(0)];
    if parent.is_empty() { "at the top level".to_owned() } else { format!("in [{}]", key_name(parent)) }
}

/// Readable words for the patterns our own schema uses.
fn pattern_meaning(pattern: &str) -> Option<&'static str> {
    Some(match pattern {
        DURATION_PATTERN => "a duration: a number and one unit of ms, s, m or h, e.g. \"100ms\", \"1.5s\", \"2m\"",
        SIZE_PATTERN => "a size: a whole number and one unit of KiB, MiB, GiB or TiB, e.g. \"256MiB\"",
        "^/" => "an absolute path (starting with /)",
        "^[^=]+$" => "a variable name: not empty, and without `=`",
        crate::model::NAME_PATTERN => {
            "a workload's name (its file's, without .toml): lower-case letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit"
        }
        crate::model::NETWORK_NAME_PATTERN => {
            "a CNI network's name: letters, digits, `_`, `.` and `-`, at most 64 characters, starting with a letter or digit"
        }
        p if p.starts_with("^[A-Za-z0-9]([A-Za-z0-9.-]") => {
            "a hostname: letters, digits, `-` and `.`, at most 64 characters, starting and ending with a letter or digit"
        }
        _ => return None,
    })
}

/// `^/var/lib/x\\.y/` means "starts with /var/lib/x.y/": the shape policies
/// use for path prefixes. `None` for any other pattern.
fn literal_prefix(pattern: &str) -> Option<String> {
    let mut chars = pattern.strip_prefix('^')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().filter(|n| !n.is_ascii_alphanumeric())?),
            c if ".+*?()|[]{}^$".contains(c) => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    let word_chars = word_lower.chars().count();
    candidates
        .into_iter()
        .filter_map(|c| {
            let most = (c.len() / 3).max(1);
            // Two words differ by at least their difference in length: one
            // too long or too short to be a typo is not compared, which
            // also keeps a written value of a megabyte (a capability, a
            // key) from costing seconds of comparisons.
            if word_chars.abs_diff(c.chars().count()) > most {
                return None;
            }
            let d = edit_distance(&word_lower, &c.to_ascii_lowercase());
            (d <= most).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Known keys at an instance location, read from the schema that refused it.
pub fn known_keys<'s>(schema: &'s Value, pointer: &str) -> Vec<&'s str> {
    schema_node(schema, pointer)
        .and_then(|node| node.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The one JSON type of the values at an instance location, when the
/// schema gives exactly one (`"string"` for a size or a duration).
pub fn value_type<'s>(schema: &'s Value, pointer: &str) -> Option<&'s str> {
    schema_node(schema, pointer)?.get("type")?.as_str()
}

/// The schema of the value at an instance location (`$ref`s followed, an
/// optional one's non-null branch taken).
fn schema_node<'s>(schema: &'s Value, pointer: &str) -> Option<&'s Value> {
    let resolve = |mut node: &'s Value| {
        for _ in 0..8 {
            // Follow local `$ref`s (schemars puts tables under `$defs`).
            if let Some(target) = node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
                match schema.pointer(target) {
                    Some(n) => node = n,
                    None => break,
                }
                continue;
            }
            // An optional table is `anyOf` it or null; a port, a string or
            // a table: the branch that is a table.
            let table = node.get("anyOf").and_then(Value::as_array).and_then(|branches| {
                branches.iter().find(|b| b.get("$ref").is_some() || b.get("properties").is_some())
            });
            match table {
                Some(branch) if node.get("properties").is_none() => node = branch,
                _ => break,
            }
        }
        node
    };
    let mut node = resolve(schema);
    for segment in pointer.split('/').skip(1) {
        let next = node
            .get("properties")
            .and_then(|p| p.get(segment))
            .or_else(|| node.get("items").filter(|_| segment.parse::<usize>().is_ok()));
        node = resolve(next?);
    }
    Some(node)
}

/// An integer past 64 bits (`source::TooLarge`), said as a value past
/// its key's range is, in the direction it overflows; a key with no
/// bound there (or none the schema knows) says what it is past.
pub fn past_64_bits(schema: &Value, pointer: &str, span: std::ops::Range<usize>, written: &str) -> Problem {
    let key = key_name(pointer);
    let written = shortened(written.trim());
    let negative = written.starts_with('-');
    let bound = schema_node(schema, pointer).and_then(|n| n.get(if negative { "minimum" } else { "maximum" }));
    let message = match bound {
        Some(limit) if negative => format!("`{key}` must be at least {limit}, not {written}"),
        Some(limit) => format!("`{key}` must be at most {limit}, not {written}"),
        None => format!("`{key}` = {written} does not fit in 64 bits"),
    };
    Problem::error(Some(span), message)
}

/// One JSON Schema error as problems (an unknown-keys error yields one per key).
pub fn describe(error: &ValidationError<'_>, spans: &SpanIndex, schema: &Value) -> Vec<Problem> {
    let pointer = error.instance_path().as_str();
    let key = key_name(pointer);
    let instance = error.instance();
    let at_value = || spans.value_span(pointer).or_else(|| spans.locate(pointer));
    let single = |message: String| vec![Problem::error(at_value(), message)];
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let known = known_keys(schema, pointer);
            let top = if pointer.is_empty() { Vec::new() } else { known_keys(schema, "") };
            unexpected
                .iter()
                .map(|name| {
                    let child = push_pointer(pointer, name);
                    let mut p = Problem::error(
                        spans.key_span(&child).or_else(|| spans.locate(&child)),
                        format!("unknown key `{}` {}", shortened(name), table_name(&child)),
                    );
                    if top.contains(&name.as_str()) {
                        // The commonest TOML slip: written after a `[table]` header.
                        p = p.with_help(format!(
                            "`{name}` is a top-level key: in TOML every key after a `[table]` header belongs to that table, so move it above the first one"
                        ));
                    } else if let Some(best) = did_you_mean(name, known.iter().copied()) {
                        p = p.with_help(format!("did you mean `{best}`?"));
                    } else if !known.is_empty() {
                        p = p.with_help(format!("known keys here: {}", known.join(", ")));
                    }
                    p
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let child = push_pointer(pointer, name);
            vec![Problem::error(spans.locate(pointer), format!("missing required key `{}`", key_name(&child)))]
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<&str> = match kind {
                TypeKind::Single(t) => vec![json_type_name(&t.to_string())],
                TypeKind::Multiple(set) => set.iter().map(|t| json_type_name(&t.to_string())).collect(),
            };
            // An optional value left out is no form to write: not "nothing or an array".
            let expected: Vec<&str> = match expected.len() {
                1 => expected,
                _ => expected.into_iter().filter(|t| *t != "nothing").collect(),
            };
            let mut p = Problem::error(
                at_value(),
                format!("`{key}` must be {}, not {}", expected.join(" or "), toml_type(instance)),
            );
            let written = schema_node(schema, pointer).and_then(|n| n.get("pattern")).and_then(Value::as_str);
            if let Some(meaning) = written.and_then(pattern_meaning) {
                p = p.with_help(format!("write {meaning}"));
            } else if expected == ["an array"] && instance.is_object() {
                p = p.with_help(format!("each `[[{key}]]` header adds one entry; `[{key}]` makes a single table"));
            }
            vec![p]
        }
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<&str> = options.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let shown: Vec<String> = options.as_array().into_iter().flatten().map(toml_value).collect();
            let mut p = Problem::error(at_value(), format!("`{key}` cannot be {}", toml_value(instance)));
            let found = instance.as_str().unwrap_or_default();
            // A signal written without its prefix, as kill(1) takes it: TERM.
            let prefixed = format!("SIG{}", found.to_ascii_uppercase());
            let named = choices.iter().copied().find(|c| *c == prefixed);
            let near = || {
                did_you_mean(found.strip_prefix("CAP_").unwrap_or(found), choices.iter().copied())
                    .or_else(|| did_you_mean(&prefixed, choices.iter().copied()).filter(|c| c.starts_with("SIG")))
            };
            p = match named.or_else(near) {
                Some(best) => p.with_help(format!("did you mean {best:?}?")),
                None if shown.len() <= 12 => p.with_help(format!("expected one of {}", shown.join(", "))),
                None => p.with_help("see `paddock schema` for the accepted names"),
            };
            vec![p]
        }
        ValidationErrorKind::Constant { expected_value } => {
            single(format!("`{key}` must be {}, not {}", toml_value(expected_value), toml_value(instance)))
        }
        ValidationErrorKind::Pattern { pattern } => match (pattern_meaning(pattern), literal_prefix(pattern)) {
            (Some(meaning), _) => single(format!("`{key}` must be {meaning}, not {}", toml_value(instance))),
            (None, Some(prefix)) => single(format!("`{key}` must start with {prefix:?}, not {}", toml_value(instance))),
            (None, None) => {
                single(format!("`{key}` = {} does not match the pattern {pattern:?}", toml_value(instance)))
            }
        },
        ValidationErrorKind::PropertyNames { error: inner } => {
            let name = inner.instance().as_str().unwrap_or_default().to_owned();
            let child = push_pointer(pointer, &name);
            let meaning = match inner.kind() {
                ValidationErrorKind::Pattern { pattern } => pattern_meaning(pattern).unwrap_or("an allowed name"),
                _ => "an allowed name",
            };
            vec![Problem::error(
                spans.key_span(&child).or_else(|| spans.locate(pointer)),
                format!("key {:?} {} must be {meaning}", shortened(&name), table_name(&child)),
            )]
        }
        ValidationErrorKind::MinItems { limit: 1 } => single(format!("`{key}` cannot be empty")),
        ValidationErrorKind::MinLength { limit: 1 } => single(format!("`{key}` cannot be an empty string")),
        ValidationErrorKind::MinItems { limit } => single(format!("`{key}` needs at least {limit} items")),
        ValidationErrorKind::MaxItems { limit } => single(format!("`{key}` takes at most {limit} items")),
        ValidationErrorKind::MinLength { limit } => single(format!("`{key}` needs at least {limit} characters")),
        ValidationErrorKind::MaxLength { limit } => single(format!("`{key}` takes at most {limit} characters")),
        ValidationErrorKind::Minimum { limit } => {
            single(format!("`{key}` must be at least {limit}, not {}", toml_value(instance)))
        }
        ValidationErrorKind::Maximum { limit } => {
            single(format!("`{key}` must be at most {limit}, not {}", toml_value(instance)))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            single(format!("`{key}` must be more than {limit}, not {}", toml_value(instance)))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            single(format!("`{key}` must be less than {limit}, not {}", toml_value(instance)))
        }
        ValidationErrorKind::Not { .. } => single(format!("`{key} = {}` is not allowed", toml_value(instance))),
        ValidationErrorKind::FalseSchema => single(format!("`{key}` is not allowed")),
        ValidationErrorKind::UniqueItems => single(format!("`{key}` lists the same item twice")),
        ValidationErrorKind::AnyOf { context } => {
            // A branch whose only complaint is the value's type is one the
            // value was not written for (the `null` of an optional table,
            // the string form of a port written as a table): what the
            // others say is what is wrong.
            let type_only = |branch: &Vec<ValidationError<'_>>| {
                branch.iter().all(|e| {
                    matches!(e.kind(), ValidationErrorKind::Type { .. }) && e.instance_path().as_str() == pointer
                })
            };
            let meant: Vec<&Vec<ValidationError<'_>>> = context.iter().filter(|b| !type_only(b)).collect();
            match meant.as_slice() {
                [branch] => branch.iter().flat_map(|e| describe(e, spans, schema)).collect(),
                [] => {
                    let mut expected: Vec<&str> = context
                        .iter()
                        .flatten()
                        .flat_map(|e| match e.kind() {
                            ValidationErrorKind::Type { kind: TypeKind::Single(t) } => {
                                vec![json_type_name(&t.to_string())]
                            }
                            ValidationErrorKind::Type { kind: TypeKind::Multiple(set) } => {
                                set.iter().map(|t| json_type_name(&t.to_string())).collect()
                            }
                            _ => Vec::new(),
                        })
                        .filter(|t| *t != json_type_name("null"))
                        .collect();
                    expected.dedup();
                    single(format!("`{key}` must be {}, not {}", expected.join(" or "), toml_type(instance)))
                }
                // Each branch a list of names or a shape (a network: one of
                // paddock's or a CNI network's name): say them all.
                branches => {
                    let each: Option<Vec<String>> = branches
                        .iter()
                        .map(|branch| match branch.as_slice() {
                            [e] => match e.kind() {
                                ValidationErrorKind::Enum { options } => Some(format!(
                                    "one of {}",
                                    options
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .map(toml_value)
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                                ValidationErrorKind::Pattern { pattern } => pattern_meaning(pattern).map(str::to_owned),
                                _ => None,
                            },
                            _ => None,
                        })
                        .collect();
                    match each {
                        Some(each) => vec![
                            Problem::error(at_value(), format!("`{key}` cannot be {}", toml_value(instance)))
                                .with_help(format!("expected {}", each.join(", or "))),
                        ],
                        None => single(format!("`{key}`: {error}")),
                    }
                }
            }
        }
        _ => {
            let where_ = if key.is_empty() { "the manifest".to_owned() } else { format!("`{key}`") };
            single(format!("{where_}: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spelled_as_in_toml() {
        assert_eq!(key_name(""), "");
        assert_eq!(key_name("/security/privileged"), "security.privileged");
        assert_eq!(key_name("/mounts/0/source"), "mounts[0].source");
        assert_eq!(key_name("/env/a~1b c"), "env.\"a/b c\"");
        // A key of a megabyte is named by its start.
        let long = key_name(&format!("/env/{}", "E".repeat(1 << 20)));
        assert!(long.starts_with("env.EEE") && long.ends_with('…') && long.chars().count() == 62, "{}", long.len());
    }

    #[test]
    fn prefix_patterns_read_as_words() {
        assert_eq!(literal_prefix("^/var/lib/x\\.y/").as_deref(), Some("/var/lib/x.y/"));
        assert_eq!(literal_prefix("^/a.*"), None);
        assert_eq!(literal_prefix("^\\d"), None);
        assert_eq!(literal_prefix("/a"), None);
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["privileged", "capabilities", "seccomp"];
        assert_eq!(did_you_mean("privileges", keys), Some("privileged"));
        assert_eq!(did_you_mean("capabilites", keys), Some("capabilities"));
        assert_eq!(did_you_mean("network", keys), None);
        assert_eq!(did_you_mean("seccom", keys), Some("seccomp"));
        assert_eq!(did_you_mean("seccompxxx", keys), None);
    }

    #[test]
    fn a_long_word_is_not_compared_letter_by_letter() {
        // A manifest may hold one string of nearly 1 MiB: as a capability,
        // a signal or a key it was compared with every name, a million
        // letters by each name's letters, seconds of work for the daemon's
        // scan (and minutes unoptimized) before any other file was read.
        let names: Vec<String> = (0..40).map(|i| format!("SOME_CAPABILITY_{i}")).collect();
        let word = "K".repeat(1 << 20);
        let started = std::time::Instant::now();
        assert_eq!(did_you_mean(&word, names.iter().map(String::as_str)), None);
        let took = started.elapsed();
        // Unfiltered it took 44 s here, unoptimized: a margin no busy machine reaches.
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn known_keys_follow_refs() {
        let schema = crate::model::workload_schema();
        let keys = known_keys(&schema, "/security");
        assert!(keys.contains(&"privileged") && keys.contains(&"seccomp"), "{keys:?}");
        assert!(known_keys(&schema, "/mounts/0").contains(&"idmap"));
        assert!(known_keys(&schema, "").contains(&"command"));
    }
}
