//! Policies: JSON Schemas applied to the effective manifest. Each rule is one
//! entry of the policy's top-level `allOf`, named by its `title` and
//! explained by its `description`, which errors show.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::describe::describe;
use super::problem::Problem;
use super::source::SpanIndex;
use crate::model::WorkloadName;

/// The policies compiled into the binary, by name.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("baseline", include_str!("../../policies/baseline.json")),
    ("restricted", include_str!("../../policies/restricted.json")),
    ("privileged", include_str!("../../policies/privileged.json")),
];

/// What the owner of a policy file could do, for `read_trusted`'s errors.
const POLICY_RISK: &str = "chooses what the daemon lets workloads do";

/// The largest policy file read (the built-in ones are about 10 KiB).
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// The placeholder that policies use for the daemon's `volumes_root`, as a
/// regular expression (for `pattern`), without a trailing slash.
pub const VOLUMES_ROOT_PLACEHOLDER: &str = "{{volumes_root}}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    BuiltIn,
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy directory {path}: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] crate::fsutil::UntrustedFile),
    #[error("{path}:{line}:{column}: error: not valid JSON: {message}")]
    Json { path: String, line: usize, column: usize, message: String },
    #[error("{path}: error: not a valid JSON Schema: {message}")]
    Schema { path: String, message: String },
    #[error("{path}: error: `{stem}` cannot name a policy: {reason}")]
    Name { path: PathBuf, stem: String, reason: crate::model::NameError },
    #[error("{path}: error: `{name}` is the name of a built-in policy; rename the file")]
    ShadowsBuiltIn { path: PathBuf, name: String },
    #[error("{}unknown policy `{name}`{}; known policies: {known}{}", at_prefix(.at), closest_hint(.closest), dir_hint(.dir))]
    Unknown {
        name: String,
        known: String,
        /// A known name this one may be a typo of.
        closest: Option<String>,
        /// Where the operators' policies are looked for.
        dir: Option<PathBuf>,
        /// Where the name was written (`PATH:LINE:COLUMN`), when a file named it.
        at: Option<String>,
    },
}

impl PolicyError {
    /// Says where an unknown policy's name was written (see `Whereabouts`).
    pub fn written_at(mut self, lines: &crate::config::Whereabouts, names: &[String]) -> Self {
        if let PolicyError::Unknown { name, at, .. } = &mut self {
            *at = names.iter().position(|n| n == name).and_then(|i| lines.get(i)).map(str::to_owned);
        }
        self
    }
}

fn at_prefix(at: &Option<String>) -> String {
    at.as_ref().map(|at| format!("{at}: error: ")).unwrap_or_default()
}

fn closest_hint(closest: &Option<String>) -> String {
    closest.as_ref().map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

fn dir_hint(dir: &Option<PathBuf>) -> String {
    dir.as_ref().map(|d| format!(", and NAME.json for each file in {}", d.display())).unwrap_or_default()
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub source: PolicySource,
    pub description: Option<String>,
    document: Value,
    validator: jsonschema::Validator,
}

impl Policy {
    /// Compiles a policy from its JSON text. `origin` names it in errors.
    pub fn compile(name: &str, source: PolicySource, text: &str, volumes_root: &Path) -> Result<Self, PolicyError> {
        let origin = match &source {
            PolicySource::BuiltIn => format!("built-in policy {name}"),
            PolicySource::File(p) => p.display().to_string(),
        };
        let mut document: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json {
            path: origin.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let root = volumes_root.to_string_lossy();
        let root = root.trim_end_matches('/');
        substitute(&mut document, root, &regex_escape(root), false);
        if !document.is_object() {
            return Err(PolicyError::Schema { path: origin, message: "a policy must be a JSON object".to_owned() });
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&document)
            .map_err(|e| PolicyError::Schema { path: origin, message: e.to_string() })?;
        let description = document.get("description").and_then(Value::as_str).map(str::to_owned);
        Ok(Self { name: name.to_owned(), source, description, document, validator })
    }

    /// The rule an error came from: the `allOf` entry its evaluation path starts in.
    fn rule(&self, evaluation_path: &str) -> (Option<String>, Option<String>) {
        let mut segments = evaluation_path.split('/').skip(1);
        let rule = match (segments.next(), segments.next().and_then(|i| i.parse::<usize>().ok())) {
            (Some("allOf"), Some(i)) => self.document.pointer(&format!("/allOf/{i}")),
            _ => None,
        };
        let field = |k: &str| rule.and_then(|r| r.get(k)).and_then(Value::as_str).map(str::to_owned);
        (field("title"), field("description"))
    }

    /// The keys this policy's rules name that no manifest has (a typo such
    /// as `usr`): a rule on one never applies. Each as the key's path in a
    /// manifest (`/security/privilegd`), with the key it is closest to.
    pub fn unknown_keys(&self) -> Vec<(String, Option<String>)> {
        self.never_applies().unknown
    }

    /// The rules of this policy that check nothing, though each looks as
    /// if it did: a keyword that applies to another type than the values
    /// it is written for have (`maximum` on a size, which a policy sees
    /// as a string such as "256MiB"), `format` (a note in JSON Schema
    /// 2020-12, not a check), and a word that is no keyword (`minimun`).
    /// Each said as where it is, and why.
    pub fn inert_rules(&self) -> Vec<String> {
        self.never_applies().inert
    }

    fn never_applies(&self) -> NeverApplies {
        let mut found = NeverApplies::default();
        never_applies(&self.document, Some(""), super::workload_document(), &mut found);
        found
    }

    /// Every refusal of this policy, located in the source.
    pub fn check(&self, effective: &Value, spans: &SpanIndex) -> Vec<Problem> {
        let mut problems = Vec::new();
        for error in self.validator.iter_errors(effective) {
            let (rule, help) = self.rule(error.evaluation_path().as_str());
            let from_default = spans.get(error.instance_path().as_str()).is_none();
            for mut p in describe(&error, spans, &self.document) {
                if from_default && !p.message.starts_with("missing") {
                    p.message.push_str(" (the default)");
                }
                p.message = format!("policy {} refuses this: {}", self.name, p.message);
                p.policy = Some(self.name.clone());
                p.rule = rule.clone();
                if help.is_some() {
                    p.help = help.clone();
                }
                problems.push(p);
            }
        }
        problems
    }
}

/// JSON Schema 2020-12's keywords, by the type of value each checks
/// (None: any value, or none: annotations and applicators).
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("minimum", Some("number")),
    ("maximum", Some("number")),
    ("exclusiveMinimum", Some("number")),
    ("exclusiveMaximum", Some("number")),
    ("multipleOf", Some("number")),
    ("pattern", Some("string")),
    ("minLength", Some("string")),
    ("maxLength", Some("string")),
    ("items", Some("array")),
    ("prefixItems", Some("array")),
    ("contains", Some("array")),
    ("minContains", Some("array")),
    ("maxContains", Some("array")),
    ("minItems", Some("array")),
    ("maxItems", Some("array")),
    ("uniqueItems", Some("array")),
    ("unevaluatedItems", Some("array")),
    ("properties", Some("object")),
    ("patternProperties", Some("object")),
    ("additionalProperties", Some("object")),
    ("unevaluatedProperties", Some("object")),
    ("propertyNames", Some("object")),
    ("required", Some("object")),
    ("dependentRequired", Some("object")),
    ("dependentSchemas", Some("object")),
    ("minProperties", Some("object")),
    ("maxProperties", Some("object")),
    ("type", None),
    ("enum", None),
    ("const", None),
    ("allOf", None),
    ("anyOf", None),
    ("oneOf", None),
    ("not", None),
    ("if", None),
    ("then", None),
    ("else", None),
    ("format", None),
    ("$schema", None),
    ("$id", None),
    ("$ref", None),
    ("$defs", None),
    // Draft 7's place for them, which a `$ref` still reaches in 2020-12.
    ("definitions", None),
    ("$comment", None),
    ("$anchor", None),
    ("$dynamicRef", None),
    ("$dynamicAnchor", None),
    ("$vocabulary", None),
    ("title", None),
    ("description", None),
    ("default", None),
    ("examples", None),
    ("deprecated", None),
    ("readOnly", None),
    ("writeOnly", None),
    ("contentEncoding", None),
    ("contentMediaType", None),
    ("contentSchema", None),
];

/// A policy's rules that never apply: on keys no manifest has
/// (`Policy::unknown_keys`), and those that check nothing
/// (`Policy::inert_rules`).
#[derive(Default)]
struct NeverApplies {
    unknown: Vec<(String, Option<String>)>,
    inert: Vec<String>,
}

/// `NeverApplies` of the subschema `node`, which applies to the
/// manifest's value at `pointer` (None: a value the walk cannot name,
/// under `patternProperties` say).
fn never_applies(node: &Value, pointer: Option<&str>, manifest: &Value, found: &mut NeverApplies) {
    let Some(node) = node.as_object() else { return };
    let at = pointer.map_or_else(|| "a rule".to_owned(), |p| if p.is_empty() { "/".to_owned() } else { p.to_owned() });
    let is_type = |t: &str, of: &str| t == of || (of == "number" && t == "integer");
    let value_type = pointer.and_then(|p| super::describe::value_type(manifest, p));
    for key in node.keys() {
        match KEYWORDS.iter().find(|(k, _)| k == key) {
            None => {
                let closest = super::describe::did_you_mean(key, KEYWORDS.iter().map(|(k, _)| *k));
                let closest = closest.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                found.inert.push(format!("{at}: `{key}` is no JSON Schema keyword{closest}: it checks nothing"));
            }
            Some((_, Some(applies))) if value_type.is_some_and(|t| !is_type(t, applies)) => {
                let t = value_type.unwrap_or_default();
                let hint = match (t, *applies) {
                    ("string", "number") => {
                        " (a size or a duration is a string such as \"256MiB\" or \"10s\" to a policy: write a `pattern`)"
                    }
                    _ => "",
                };
                let a = if t.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                found.inert.push(format!(
                    "{at}: `{key}` checks {applies} values, and this one is {a} {t}: it never refuses{hint}"
                ));
            }
            Some(("format", _)) => found.inert.push(format!(
                "{at}: `format` is not checked (JSON Schema 2020-12 takes it as a note): write a `pattern`"
            )),
            Some(_) => {}
        }
    }
    let child = |key: &str| pointer.map(|p| format!("{p}/{key}"));
    // None known: a table of the user's own keys (`env`), or no table.
    let known = pointer.map(|p| super::describe::known_keys(manifest, p)).unwrap_or_default();
    for (key, sub) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        if known.is_empty() || known.contains(&key.as_str()) {
            never_applies(sub, child(key).as_deref(), manifest, found);
        } else {
            let closest = super::describe::did_you_mean(key, known.iter().copied()).map(str::to_owned);
            found.unknown.push((child(key).unwrap_or_default(), closest));
        }
    }
    for map in ["patternProperties", "dependentSchemas", "$defs", "definitions"] {
        for sub in node.get(map).and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
            never_applies(sub, None, manifest, found);
        }
    }
    for one in ["items", "contains", "unevaluatedItems"] {
        if let Some(sub) = node.get(one) {
            never_applies(sub, child("0").as_deref(), manifest, found);
        }
    }
    for one in ["additionalProperties", "unevaluatedProperties", "propertyNames"] {
        if let Some(sub) = node.get(one) {
            never_applies(sub, None, manifest, found);
        }
    }
    for one in ["not", "if", "then", "else"] {
        if let Some(sub) = node.get(one) {
            never_applies(sub, pointer, manifest, found);
        }
    }
    for each in ["allOf", "anyOf", "oneOf"] {
        for sub in node.get(each).and_then(Value::as_array).into_iter().flatten() {
            never_applies(sub, pointer, manifest, found);
        }
    }
    for sub in node.get("prefixItems").and_then(Value::as_array).into_iter().flatten() {
        never_applies(sub, None, manifest, found);
    }
}

/// Replaces the placeholder: as a regular expression inside `pattern`s, as
/// the plain path elsewhere (descriptions are read by people).
fn substitute(value: &mut Value, plain: &str, escaped: &str, in_pattern: bool) {
    match value {
        Value::String(s) if s.contains(VOLUMES_ROOT_PLACEHOLDER) => {
            *s = s.replace(VOLUMES_ROOT_PLACEHOLDER, if in_pattern { escaped } else { plain });
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, plain, escaped, false)),
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| substitute(v, plain, escaped, k == "pattern")),
        _ => {}
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A policy found but not yet compiled: compiling a JSON Schema costs
/// about a millisecond, so only the chosen ones are compiled.
#[derive(Debug)]
struct Found {
    name: String,
    source: PolicySource,
    text: std::borrow::Cow<'static, str>,
}

/// Every policy that can be chosen: the built-in ones and the operator's.
#[derive(Debug)]
pub struct PolicyCatalog {
    found: Vec<Found>,
    volumes_root: PathBuf,
    /// The operators' policies' directory, when one was read.
    dir: Option<PathBuf>,
}

impl PolicyCatalog {
    /// The built-in policies plus every `*.json` in `dir` (when it exists).
    /// A directory that does not exist holds no policies. Names are checked
    /// here; schemas when compiled (`select`, `compile_all`).
    pub fn load(dir: Option<&Path>, volumes_root: &Path) -> Result<Self, PolicyError> {
        let mut found: Vec<Found> = BUILT_IN
            .iter()
            .map(|(name, text)| Found { name: (*name).to_owned(), source: PolicySource::BuiltIn, text: (*text).into() })
            .collect();
        if let Some(dir) = dir {
            for path in policy_files(dir)? {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                WorkloadName::try_from(stem.as_str()).map_err(|reason| PolicyError::Name {
                    path: path.clone(),
                    stem: stem.clone(),
                    reason,
                })?;
                if BUILT_IN.iter().any(|(n, _)| *n == stem) {
                    return Err(PolicyError::ShadowsBuiltIn { path, name: stem });
                }
                let text = crate::fsutil::read_trusted(&path, POLICY_RISK, MAX_POLICY_BYTES)?;
                found.push(Found { name: stem, source: PolicySource::File(path), text: text.into() });
            }
        }
        Ok(Self { found, volumes_root: volumes_root.to_owned(), dir: dir.map(Path::to_owned) })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.found.iter().map(|p| p.name.as_str())
    }

    fn compile(&self, f: &Found) -> Result<Policy, PolicyError> {
        Policy::compile(&f.name, f.source.clone(), &f.text, &self.volumes_root)
    }

    /// Compiles every policy, chosen or not, so that `check` reports a
    /// broken policy file before the daemon meets it.
    pub fn compile_all(&self) -> Result<(), PolicyError> {
        self.found.iter().try_for_each(|f| self.compile(f).map(drop))
    }

    /// The chosen policies, compiled, in the order asked for; an unknown
    /// name is an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<Policy>, PolicyError> {
        let mut chosen: Vec<Policy> = Vec::with_capacity(names.len());
        for name in names {
            if chosen.iter().any(|p| &p.name == name) {
                continue;
            }
            let found = self.found.iter().find(|p| &p.name == name).ok_or_else(|| PolicyError::Unknown {
                name: name.clone(),
                known: self.names().collect::<Vec<_>>().join(", "),
                closest: super::did_you_mean(name, self.names()).map(str::to_owned),
                dir: self.dir.clone(),
                at: None,
            })?;
            chosen.push(self.compile(found)?);
        }
        Ok(chosen)
    }
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PolicyError::ReadDir { path: dir.to_owned(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::ReadDir { path: dir.to_owned(), source })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !crate::model::is_ignored_file_name(&name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule on a key no manifest has (a typo) is found, with the key it
    /// was meant for; the built-in policies name none, and a table of the
    /// user's own keys (`env`) is not judged.
    #[test]
    fn a_rule_on_a_key_no_manifest_has_is_found() {
        let catalog = PolicyCatalog::load(None, Path::new("/var/lib/paddock/volumes")).unwrap();
        for name in catalog.names().map(str::to_owned).collect::<Vec<_>>() {
            let policy = catalog.select(std::slice::from_ref(&name)).unwrap().remove(0);
            assert_eq!(policy.unknown_keys(), [], "{name}");
        }
        let text = r#"{"allOf": [
            {"properties": {"usr": {"minimum": 1}, "env": {"properties": {"ANY": {"type": "string"}}}}},
            {"properties": {"security": {"properties": {"privilegd": {"const": false}}}}},
            {"properties": {"mounts": {"items": {"properties": {"readonly": {"const": true}, "sorce": {}}}}}}
        ]}"#;
        let policy = Policy::compile("mine", PolicySource::BuiltIn, text, Path::new("/v")).unwrap();
        assert_eq!(
            policy.unknown_keys(),
            [
                ("/usr".to_owned(), Some("user".to_owned())),
                ("/security/privilegd".to_owned(), Some("privileged".to_owned())),
                ("/mounts/0/sorce".to_owned(), Some("source".to_owned())),
            ]
        );
    }

    /// A rule that checks nothing though it looks as if it did is found:
    /// a cap on a size (a string to a policy), `format` (a note in JSON
    /// Schema 2020-12), a misspelt keyword. (Each compiled and refused
    /// nothing, silently.) The built-in policies have none.
    #[test]
    fn rules_that_check_nothing_are_found() {
        let catalog = PolicyCatalog::load(None, Path::new("/var/lib/paddock/volumes")).unwrap();
        for name in catalog.names().map(str::to_owned).collect::<Vec<_>>() {
            let policy = catalog.select(std::slice::from_ref(&name)).unwrap().remove(0);
            assert_eq!(policy.inert_rules(), Vec::<String>::new(), "{name}");
        }
        // (`definitions`, draft 7's `$defs`, is reached by a `$ref` still.)
        let text = r##"{"definitions": {"small": {"maximum": 100}}, "properties": {
            "resources": {"properties": {"memory": {"maximum": 1073741824}, "pids": {"$ref": "#/definitions/small"}}},
            "stop": {"properties": {"timeout": {"exclusiveMaximum": 30}}},
            "user": {"minimun": 1, "pattern": "^1"},
            "mounts": {"items": {"properties": {"source": {"format": "uri", "maxLength": 64}}}}
        }}"##;
        let policy = Policy::compile("mine", PolicySource::BuiltIn, text, Path::new("/v")).unwrap();
        let size = " (a size or a duration is a string such as \"256MiB\" or \"10s\" to a policy: write a `pattern`)";
        assert_eq!(
            policy.inert_rules(),
            [
                "/mounts/0/source: `format` is not checked (JSON Schema 2020-12 takes it as a note): write a `pattern`"
                    .to_owned(),
                format!(
                    "/resources/memory: `maximum` checks number values, and this one is a string: it never refuses{size}"
                ),
                format!(
                    "/stop/timeout: `exclusiveMaximum` checks number values, and this one is a string: it never refuses{size}"
                ),
                "/user: `minimun` is no JSON Schema keyword (did you mean `minimum`?): it checks nothing".to_owned(),
                "/user: `pattern` checks string values, and this one is an integer: it never refuses".to_owned(),
            ]
        );
    }

    #[test]
    fn built_in_policies_compile_and_describe_themselves() {
        let catalog = PolicyCatalog::load(None, Path::new("/var/lib/paddock/volumes")).unwrap();
        assert_eq!(catalog.names().collect::<Vec<_>>(), ["baseline", "restricted", "privileged"]);
        catalog.compile_all().unwrap();
        for (name, text) in BUILT_IN {
            let doc: Value = serde_json::from_str(text).unwrap();
            assert_eq!(doc["title"], *name);
            assert!(doc["description"].as_str().is_some_and(|d| d.len() > 20), "{name} needs a description");
            for rule in doc["allOf"].as_array().into_iter().flatten() {
                assert!(rule["title"].is_string() && rule["description"].is_string(), "{name}: {rule}");
            }
        }
    }

    #[test]
    fn the_volumes_root_is_escaped_for_patterns() {
        assert_eq!(regex_escape("/var/lib/x.y"), "/var/lib/x\\.y");
        let mut v = serde_json::json!({"pattern": "^{{volumes_root}}/", "description": "under {{volumes_root}}"});
        substitute(&mut v, "/v.r", "/v\\.r", false);
        assert_eq!(v["pattern"], "^/v\\.r/");
        assert_eq!(v["description"], "under /v.r");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let catalog = PolicyCatalog::load(None, Path::new("/v")).unwrap();
        let err = catalog.select(&["nope".to_owned()]).unwrap_err();
        assert_eq!(err.to_string(), "unknown policy `nope`; known policies: baseline, restricted, privileged");
    }

    /// A name in paddock.toml that is no policy is an error at its line,
    /// with the name it may be a typo of and where operators' policies are
    /// looked for. (It had neither file nor line.)
    #[test]
    fn an_unknown_policy_in_the_configuration_is_an_error_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# the host's policies\npolicies = [\n  \"baseline\",\n  \"restriced\",\n]\n";
        let config = crate::config::Config::parse(Path::new("/etc/paddock/paddock.toml"), text.to_owned()).unwrap();
        let catalog = PolicyCatalog::load(Some(dir.path()), Path::new("/v")).unwrap();
        let err = catalog.select(&config.policies).unwrap_err().written_at(&config.policy_lines, &config.policies);
        assert_eq!(
            err.to_string(),
            format!(
                "/etc/paddock/paddock.toml:4:3: error: unknown policy `restriced` (did you mean `restricted`?); \
                 known policies: baseline, restricted, privileged, and NAME.json for each file in {}",
                dir.path().display()
            )
        );
        // Where the configuration's lines move, it is the same configuration.
        let moved = crate::config::Config::parse(Path::new("p.toml"), format!("\n\n{text}")).unwrap();
        assert_eq!(moved, config);
    }
}
