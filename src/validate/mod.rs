//! Manifest text in, a validated workload (or every problem with it) out:
//! TOML syntax, then the JSON Schema, then the typed model and the checks no
//! schema can express, then each active policy on the effective manifest.

pub mod across;
mod describe;
pub use describe::shortened;
pub mod load;
mod policy;
mod problem;
mod semantic;
mod source;

use std::path::Path;

use crate::config::RestartDefaults;
use crate::model::{Manifest, WorkloadName};

pub use describe::{did_you_mean, key_name, toml_value};
pub use policy::{BUILT_IN, Policy, PolicyCatalog, PolicyError, PolicySource, VOLUMES_ROOT_PLACEHOLDER};
pub use problem::{Color, Located, Problem, Severity, line_col, render};
pub use semantic::HostChecks;
pub(crate) use semantic::backoff_over_its_max;
pub use source::{SpanIndex, push_pointer};

/// The workload JSON Schema, as committed in `schemas/` (a test keeps it
/// equal to what the Rust types generate).
pub const WORKLOAD_SCHEMA: &str = include_str!("../../schemas/workload.schema.json");

/// `WORKLOAD_SCHEMA` as JSON, read once per process (when an invalid
/// manifest is described, or an operator's policy is looked over).
fn workload_document() -> &'static serde_json::Value {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::from_str(WORKLOAD_SCHEMA).expect("the macro compiled this JSON"))
}

/// A manifest that passed every check: what the supervisor and sandbox run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub name: WorkloadName,
    /// The effective manifest: every default filled in.
    pub manifest: Manifest,
}

/// The outcome for one file: the spec when it is valid, and every problem
/// found (warnings can accompany a valid spec).
#[derive(Debug)]
pub struct Checked {
    pub spec: Option<WorkloadSpec>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
#[error("the built-in workload schema does not compile: {0}")]
pub struct SchemaError(String);

/// A compiled JSON Schema for a TOML document type: text in, the typed
/// value (and where each key is) or every problem out. Shared by manifests
/// and the daemon's configuration, so both get the same errors.
#[derive(Debug)]
pub struct Schema {
    compiled: Compiled,
}

/// Where a schema's checks come from.
enum Compiled {
    /// The workload schema. Whether a document is valid is decided by code
    /// jsonschema's macro generated when paddock was built: each start of
    /// `paddock run` or `check` would otherwise spend about 2 ms building
    /// jsonschema's validator of the 2020-12 meta-schema and then ours. An
    /// invalid document is described by the run-time compiled schema, built
    /// then (once per process): the generated code may fold checks (a type
    /// implied by an enum), and users get the same problems either way.
    BuiltIn { described_by: std::sync::OnceLock<Box<Runtime>> },
    /// A schema compiled at run time (the configuration's, generated from
    /// its Rust type).
    Runtime(Box<Runtime>),
}

/// A schema compiled at run time, with its document (to describe errors).
struct Runtime {
    doc: serde_json::Value,
    validator: jsonschema::Validator,
}

impl Runtime {
    fn new(doc: serde_json::Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&doc)
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self { doc, validator })
    }

    fn problems(&self, value: &serde_json::Value, spans: &source::SpanIndex) -> Vec<Problem> {
        self.validator.iter_errors(value).flat_map(|e| describe::describe(&e, spans, &self.doc)).collect()
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compiled::BuiltIn { .. } => f.write_str("BuiltIn"),
            Compiled::Runtime(_) => f.write_str("Runtime"),
        }
    }
}

/// `schemas/workload.schema.json`, compiled by jsonschema's macro with the
/// options `Runtime::new` uses (draft 2020-12, formats as annotations).
/// tests/schema_file.rs checks that both judge documents alike.
#[jsonschema::validator(path = "schemas/workload.schema.json", draft = Draft202012, methods = { is_valid = true, validate = false, iter_errors = false })]
struct WorkloadSchema;

impl Schema {
    pub fn new(doc: serde_json::Value) -> Result<Self, SchemaError> {
        Ok(Self { compiled: Compiled::Runtime(Box::new(Runtime::new(doc)?)) })
    }

    /// The built-in workload schema, compiled when paddock was.
    pub fn workload() -> Self {
        Self { compiled: Compiled::BuiltIn { described_by: std::sync::OnceLock::new() } }
    }

    /// The schema's document, to describe a value against.
    fn document(&self) -> &serde_json::Value {
        match &self.compiled {
            Compiled::BuiltIn { .. } => workload_document(),
            Compiled::Runtime(runtime) => &runtime.doc,
        }
    }

    /// Every way `value` breaks the schema, described against its document.
    fn problems(&self, value: &serde_json::Value, spans: &source::SpanIndex) -> Vec<Problem> {
        match &self.compiled {
            Compiled::BuiltIn { .. } if WorkloadSchema::is_valid(value) => Vec::new(),
            Compiled::BuiltIn { described_by } => described_by
                .get_or_init(|| {
                    Box::new(Runtime::new(workload_document().clone()).expect("the macro compiled this schema"))
                })
                .problems(value, spans),
            Compiled::Runtime(runtime) => runtime.problems(value, spans),
        }
    }

    /// TOML syntax, then the schema (every problem), then the typed value.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, text: &str) -> Result<(T, source::SpanIndex), Vec<Problem>> {
        self.parse_with(text, |_, _| Vec::new())
    }

    /// As `parse`, with `before_types` looking at the document once it
    /// has passed the schema: what it finds is every problem (the typed
    /// value stops at the first of an array's bad entries, and cannot
    /// always say which it was).
    fn parse_with<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
        before_types: impl Fn(&serde_json::Value, &source::SpanIndex) -> Vec<Problem>,
    ) -> Result<(T, source::SpanIndex), Vec<Problem>> {
        let parsed = source::parse(text)?;
        let mut problems = self.problems(&parsed.json, &parsed.spans);
        // The schema saw null for an integer past 64 bits: what it says of
        // that gives way to the key's range.
        let at_too_large = |p: &Problem| parsed.too_large.iter().any(|t| p.span.as_ref() == Some(&t.span));
        problems.retain(|p| !at_too_large(p));
        problems.extend(parsed.too_large.iter().map(|t| {
            let written = text.get(t.span.clone()).unwrap_or_default();
            describe::past_64_bits(self.document(), &t.pointer, t.span.clone(), written)
        }));
        if problems.is_empty() {
            problems = before_types(&parsed.json, &parsed.spans);
        }
        if !problems.is_empty() {
            sort(&mut problems);
            return Err(problems);
        }
        match T::deserialize(toml::de::Deserializer::from(parsed.table)) {
            Ok(value) => Ok((value, parsed.spans)),
            // The schema and the types agree (a property test checks it), so
            // this is a value the schema cannot bound, such as a duration
            // too long to hold ("99999999999h").
            Err(e) => {
                // An unquoted date: JSON has no dates, so the schema saw it
                // as the string it reads as; the types see a TOML date-time.
                let written = e.span().and_then(|s| text.get(s)).map(str::trim);
                if let Some(date) = written.filter(|w| w.parse::<toml::value::Datetime>().is_ok()) {
                    return Err(vec![
                        Problem::error(e.span(), "a TOML date-time, where a string is expected")
                            .with_help(format!("quote it: \"{date}\"")),
                    ]);
                }
                Err(vec![Problem::error(e.span(), e.message().trim_end().to_owned())])
            }
        }
    }
}

/// Where each key and value of a manifest's text is, for a check made
/// after validation (`export`'s); empty for text that does not parse.
pub fn spans_of(text: &str) -> SpanIndex {
    source::parse(text).map(|p| p.spans).unwrap_or_default()
}

/// A TOML file that is not a manifest (export's image map) as the JSON
/// it reads as, with the span of every key and value, so that its
/// problems are shown at their line as a manifest's are; or its syntax
/// problems.
pub fn parse_toml(text: &str) -> Result<(serde_json::Value, SpanIndex), Vec<Problem>> {
    source::parse(text).map(|parsed| (parsed.json, parsed.spans))
}

/// Networks the host's networks directory defines and paddock refused
/// (a file that is no valid list, a name used twice), by name, with why;
/// and why one whose name cannot be read was (or the whole directory,
/// which could not be read or others could write): that one stands for
/// every name.
///
/// For the daemon, also the attachments its workloads have to those
/// networks (`kept`): a manifest is valid on one only while it fits the
/// attachment its workload has, since no new one can be made. An edit
/// that needs one (other ports, another hostname) is refused, and the
/// running version runs on, as for any bad edit.
#[derive(Debug, Clone, Default)]
pub struct RefusedNetworks {
    pub by_name: Vec<(String, String)>,
    pub all: Option<String>,
    pub kept: Vec<(WorkloadName, crate::network::Attachment)>,
}

impl RefusedNetworks {
    /// Why the network `name` is refused, if it is.
    pub fn reason(&self, name: &str) -> Option<&str> {
        self.by_name.iter().find(|(n, _)| n == name).map(|(_, why)| why.as_str()).or(self.all.as_deref())
    }

    /// The attachment `workload` has to a refused network, if any, and
    /// whether `m` fits it.
    pub fn kept(&self, workload: &WorkloadName, m: &Manifest) -> Option<bool> {
        let (_, a) = self.kept.iter().find(|(w, _)| w == workload)?;
        Some(crate::network::fits_as_made(workload, m, a))
    }
}

/// The compiled schema and policies, built once and used for every file.
#[derive(Debug)]
pub struct Validator {
    schema: Schema,
    policies: Vec<Policy>,
    restart_defaults: RestartDefaults,
    /// The CNI networks a manifest may name (the built-in `bridge` and
    /// the daemon's networks directory).
    networks: Vec<String>,
    /// Those of them that publish `ports` (a plugin declares portMappings).
    publishing: Vec<String>,
    /// Networks whose definition the host's networks directory holds and
    /// paddock refused.
    refused: RefusedNetworks,
    /// This host's cgroup layout, for `check` to warn of limits it cannot apply.
    cgroups: Option<crate::sandbox::cgroup::Layout>,
    /// Networks whose plugins this host cannot run, with why, for `check`
    /// to warn of (`Networks::unavailable`).
    unavailable: Vec<(String, String)>,
    /// The daemon's volumes_root, for `check` to warn of mount sources a
    /// start on this host would refuse.
    sources: Option<std::path::PathBuf>,
    /// The daemon's networks, for what a new attachment would be refused
    /// now (`Networks::refused_now`: a plugin missing, a host port a host
    /// service has), looked up at each validation.
    attachments: Option<crate::network::Networks>,
    /// The ids a remapped workload's `user` and `group` must be below.
    ids: Ids,
}

/// What maps a remapped workload's ids, and so bounds them.
#[derive(Debug, Clone, Copy)]
enum Ids {
    /// This host's slice of each workload (`[remap] slice_size`).
    Slice(u32),
    /// A pod's user namespace, of the kubelet's 65536 ids: `export`
    /// writes for a cluster's nodes, whatever this host's slices hold.
    Pod,
}

impl Ids {
    fn count(self) -> u32 {
        match self {
            Ids::Slice(size) => size,
            Ids::Pod => POD_IDS,
        }
    }

    fn help(self) -> String {
        let count = self.count();
        match self {
            Ids::Slice(_) => format!(
                "a remapped workload's ids are those of its slice of the host's ([remap] slice_size): use an id below {count}"
            ),
            Ids::Pod => format!("a pod's user namespace maps {count} ids (the kubelet's): use an id below {count}"),
        }
    }
}

/// The ids the kubelet maps into a pod's user namespace (`hostUsers: false`).
const POD_IDS: u32 = 65536;

impl Validator {
    pub fn new(policies: Vec<Policy>) -> Self {
        Self {
            schema: Schema::workload(),
            policies,
            restart_defaults: RestartDefaults::default(),
            networks: vec![crate::model::BRIDGE.to_owned()],
            publishing: vec![crate::model::BRIDGE.to_owned()],
            refused: RefusedNetworks::default(),
            cgroups: None,
            unavailable: Vec::new(),
            sources: None,
            attachments: None,
            ids: Ids::Slice(crate::config::DEFAULT_SLICE_SIZE),
        }
    }

    /// The ids a remapped workload's slice has (`[remap] slice_size`).
    pub fn with_slice_size(mut self, slice_size: u32) -> Self {
        self.ids = Ids::Slice(slice_size);
        self
    }

    /// Check a remapped workload's ids against what a pod's user namespace
    /// maps, not this host's slices (for `export`).
    pub fn for_pods(mut self) -> Self {
        self.ids = Ids::Pod;
        self
    }

    /// Warn (in `check`) of limits this cgroup layout has no controller
    /// for; for the daemon (`HostChecks::Require`) they are errors, as a
    /// start would fail at once.
    pub fn with_cgroups(mut self, layout: crate::sandbox::cgroup::Layout) -> Self {
        self.cgroups = Some(layout);
        self
    }

    /// Warn (`check`) of mount sources a start on this host would refuse,
    /// as a daemon with this volumes_root resolves them; for the daemon
    /// (`HostChecks::Require`) they are errors.
    pub fn with_source_checks(mut self, volumes_root: &Path) -> Self {
        self.sources = Some(volumes_root.to_owned());
        self
    }

    /// For the daemon: a manifest whose start would be refused a new
    /// attachment to one of these networks now (a plugin missing, a host
    /// port a host service has) is invalid, unless it fits the attachment
    /// its workload has.
    pub fn with_attachments(mut self, networks: crate::network::Networks) -> Self {
        self.attachments = Some(networks);
        self
    }

    /// The networks a manifest may name besides "private" and "host",
    /// and those of them that can publish its `ports`.
    pub fn with_networks(mut self, networks: Vec<String>, publishing: Vec<String>) -> Self {
        self.networks = networks;
        self.publishing = publishing;
        self
    }

    /// Networks whose definition was refused: a manifest naming one is
    /// valid (a workload on it keeps the network it has; a start that
    /// needs a new one fails, saying why), and `check` warns.
    pub fn with_refused_networks(mut self, refused: RefusedNetworks) -> Self {
        self.refused = refused;
        self
    }

    /// Networks whose plugins this host cannot run: `check` warns of a
    /// workload on one.
    pub fn with_unavailable_networks(mut self, unavailable: Vec<(String, String)>) -> Self {
        self.unavailable = unavailable;
        self
    }

    /// The daemon's defaults for restart keys a manifest leaves out; the
    /// policies see them as the manifest's values.
    pub fn with_restart_defaults(mut self, defaults: RestartDefaults) -> Self {
        self.restart_defaults = defaults;
        self
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Validates a manifest's text. `file_name` is the file's name, whose
    /// stem is the workload's name.
    pub fn validate(&self, file_name: &str, text: &str, host: HostChecks) -> Checked {
        self.validate_with(file_name, text, host, true)
    }

    /// Validates, for the daemon, the manifest a running sandbox was
    /// started from (its record's): as `validate` with host checks, but
    /// not refused for what only a new start meets (its mounts' sources
    /// as checked now, its limits' cgroup controllers, a new attachment's
    /// plugins and ports): the sandbox has them already; that is for its
    /// next start to say, not a reason to stop what runs.
    pub fn validate_started(&self, file_name: &str, text: &str) -> Checked {
        self.validate_with(file_name, text, HostChecks::Require, false)
    }

    /// `start`: with the checks of what only a new start meets.
    fn validate_with(&self, file_name: &str, text: &str, host: HostChecks, start: bool) -> Checked {
        let mut problems = Vec::new();
        let stem = file_name.strip_suffix(".toml").unwrap_or(file_name);
        let name = WorkloadName::try_from(stem)
            .map_err(|e| {
                problems.push(
                    Problem::error(None, format!("the file name gives the workload name: {e}"))
                        .with_help("rename the file: names are DNS labels, like `web` or `log-shipper`"),
                )
            })
            .ok();
        let (mut manifest, spans) = match self.schema.parse_with::<Manifest>(text, semantic::ports_as_written) {
            Ok(parsed) => parsed,
            Err(mut found) => {
                // Typed checks and policies need a well-formed manifest.
                problems.append(&mut found);
                sort(&mut problems);
                return Checked { spec: None, problems };
            }
        };
        self.restart_defaults.fill(&mut manifest.restart, |key| spans.get(&format!("/restart/{key}")).is_some());
        // Ports need a network of their own: without a word, the bridge.
        if !manifest.ports.is_empty() && spans.get("/namespaces/network").is_none() {
            manifest.namespaces.network = crate::model::Network::Cni(crate::model::BRIDGE.to_owned());
        }
        problems.extend(semantic::check(&manifest, &spans));
        let effective = manifest.effective(stem);
        match serde_json::to_value(&effective) {
            Ok(json) => {
                for policy in &self.policies {
                    problems.extend(policy.check(&json, &spans));
                }
            }
            Err(e) => problems.push(Problem::error(None, format!("cannot apply policies: {e}"))),
        }
        // A remapped workload's ids are those its user namespace maps (its
        // slice's, or a pod's): another fails its start (setresuid inside
        // a namespace that does not map it).
        if effective.namespaces.remapped() {
            let count = self.ids.count();
            let last = count.saturating_sub(1);
            for (key, id) in [("user", effective.user), ("group", effective.group)] {
                if id >= count {
                    let at = spans.value_span(&format!("/{key}"));
                    problems.push(
                        Problem::error(at, format!("{key} {id} is outside the workload's {count} ids (0-{last})"))
                            .with_help(self.ids.help()),
                    );
                }
            }
        }
        problems.extend(semantic::host_checks(&effective, &spans, host));
        let networks =
            semantic::Networks { known: &self.networks, publishing: &self.publishing, refused: &self.refused };
        problems.extend(semantic::network_checks(&effective, name.as_ref(), &spans, host, &networks));
        // What a start would fail at once for (a mount it refuses, a limit
        // with no controller, a new attachment it cannot make): to the
        // daemon an error, since an edit that brings it would stop the
        // running version for nothing; as invalid, the version that runs
        // runs on. `check` warns.
        let refused_start = |at, said: String| match host {
            HostChecks::Require => Problem::error(at, said),
            HostChecks::Warn | HostChecks::Skip => Problem::warning(at, said),
        };
        let start = start && host != HostChecks::Skip;
        if let (Some(volumes_root), true) = (&self.sources, start) {
            for (i, mount) in effective.mounts.iter().enumerate() {
                use crate::sandbox::SourceError;
                match crate::sandbox::check_mount(mount, volumes_root) {
                    // Not there (said above), or not to be told now.
                    Ok(()) | Err(SourceError::Mount { .. } | SourceError::MountTable { .. }) => {}
                    // Not for a file's validity: volumes_root's own state
                    // (its start says so), or a daemon short of descriptors
                    // or memory, not to be taken for a refusal.
                    Err(SourceError::VolumesRoot(_)) if host == HostChecks::Require => {}
                    Err(refused)
                        if host == HostChecks::Require && refused.errno().is_some_and(crate::sandbox::is_exhausted) => {
                    }
                    Err(refused) => {
                        let at = spans.value_span(&format!("/mounts/{i}/source"));
                        let said = format!("on this host the workload would not start: {refused}");
                        problems.push(refused_start(at, said));
                    }
                }
            }
        }
        if let (Some(network), HostChecks::Warn) = (effective.namespaces.network.cni(), host)
            && let Some((_, why)) = self.unavailable.iter().find(|(n, _)| n == network)
        {
            let at = spans.value_span("/namespaces/network").or_else(|| spans.value_span("/ports"));
            problems.push(Problem::warning(at, format!("on this host the workload would fail to start: {why}")));
        }
        // A port a host service has: the daemon refuses a new attachment
        // that publishes it (`attachment_refusals`); `check` warns.
        if host == HostChecks::Warn && effective.namespaces.network.cni().is_some() {
            for (i, port) in effective.ports.iter().enumerate().filter(|(_, p)| crate::network::port_in_use(p)) {
                let at = spans.value_span(&format!("/ports/{i}")).or_else(|| spans.value_span("/ports"));
                let refused = crate::network::NetworkError::PortInUse(*port);
                problems
                    .push(Problem::warning(at, format!("on this host the workload would fail to start: {refused}")));
            }
        }
        if let (Some(networks), Some(workload), true) = (&self.attachments, name.as_ref(), start) {
            problems.extend(self.attachment_refusals(networks, workload, &effective, &spans, &refused_start));
        }
        if let (Some(layout), true) = (&self.cgroups, start) {
            let r = &effective.resources;
            let limits =
                crate::sandbox::cgroup::Limits { memory: r.memory.map(|s| s.bytes()), pids: r.pids, cpu: r.cpu };
            for lack in layout.lacks(&limits) {
                use crate::sandbox::cgroup::CgroupError;
                let (what, help) = match &lack {
                    CgroupError::MissingController { what, .. } => (
                        *what,
                        "on this host the workload would fail to start: remove the limit, or enable the controller (on cgroup v2, in the parent's cgroup.subtree_control)",
                    ),
                    CgroupError::NoSwapAccounting { .. } => ("memory", "on this host the workload would fail to start"),
                    _ => continue,
                };
                let at = spans.value_span(&format!("/resources/{what}"));
                problems.push(refused_start(at, lack.to_string()).with_help(help));
            }
        }
        sort(&mut problems);
        let spec = match name {
            Some(name) if !problems.iter().any(Problem::is_error) => Some(WorkloadSpec { name, manifest: effective }),
            _ => None,
        };
        Checked { spec, problems }
    }

    /// What a start of `m` would be refused a new attachment for now
    /// (`Networks::refused_now`), each at its key: a plugin at the
    /// network's name, a port at its entry.
    fn attachment_refusals(
        &self,
        networks: &crate::network::Networks,
        workload: &WorkloadName,
        m: &Manifest,
        spans: &source::SpanIndex,
        make: &dyn Fn(Option<std::ops::Range<usize>>, String) -> Problem,
    ) -> Vec<Problem> {
        use crate::network::NetworkError;
        let again = "the daemon looks again each time it validates the file: `paddock reload` (or the next rescan, \
                     every resync_interval) applies it once mended";
        networks
            .refused_now(workload, m)
            .into_iter()
            .map(|refused| match &refused {
                NetworkError::PortInUse(port) => {
                    let i = m.ports.iter().position(|p| p == port).unwrap_or_default();
                    let at = spans.value_span(&format!("/ports/{i}")).or_else(|| spans.value_span("/ports"));
                    make(at, refused.to_string()).with_help(format!(
                        "this version needs a new attachment to its network, whose start would fail; {again}"
                    ))
                }
                _ => {
                    let at = spans.value_span("/namespaces/network").or_else(|| spans.value_span("/ports"));
                    make(at, format!("on this host the workload would fail to start: {refused}"))
                        .with_help(format!("this version needs a new attachment to its network; {again}"))
                }
            })
            .collect()
    }

    /// Checks a manifest changed after its file was validated (`paddock
    /// run -p` adds ports): the typed checks and the policies again, with
    /// no file positions to point at.
    pub fn recheck(&self, manifest: &Manifest) -> Vec<Problem> {
        let spans = source::SpanIndex::default();
        let mut problems = semantic::check(manifest, &spans);
        match serde_json::to_value(manifest) {
            Ok(json) => {
                for policy in &self.policies {
                    problems.extend(policy.check(&json, &spans));
                }
            }
            Err(e) => problems.push(Problem::error(None, format!("cannot apply policies: {e}"))),
        }
        let networks =
            semantic::Networks { known: &self.networks, publishing: &self.publishing, refused: &self.refused };
        problems.extend(semantic::network_checks(manifest, None, &spans, HostChecks::Require, &networks));
        problems
    }

    /// Reads and validates a file. `Err` is an I/O error (the file could not
    /// be read); a file that was read but cannot be a manifest is a problem.
    pub fn validate_file(&self, path: &Path, host: HostChecks) -> Result<(String, Checked), load::LoadError> {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let read = match load::read_manifest(path) {
            // A link that leads nowhere, or loops, is a file the operator
            // put there: invalid, as the daemon has it, not one that could
            // not be read.
            Err(load::LoadError::Io { source, .. }) if let Some(invalid) = load::link_problem(path, &source) => {
                Err(load::LoadError::Invalid(invalid))
            }
            read => read,
        };
        match read {
            Ok(text) => {
                let checked = self.validate(&file_name, &text, host);
                Ok((text, checked))
            }
            Err(load::LoadError::Invalid(invalid)) => {
                Ok((invalid.text().to_owned(), Checked { spec: None, problems: vec![invalid.problem()] }))
            }
            Err(e) => Err(e),
        }
    }
}

/// In the order of the file, whole-file problems first; once each; at most
/// `problem::MAX_PER_FILE`.
fn sort(problems: &mut Vec<Problem>) {
    problems.sort_by_key(|p| p.span.as_ref().map(|s| (s.start, s.end)));
    problems.dedup();
    problem::cap(problems);
}

/// Compiles the policies named, from the built-in ones and those in `dir`.
pub fn load_policies(names: &[String], dir: Option<&Path>, volumes_root: &Path) -> Result<Vec<Policy>, PolicyError> {
    PolicyCatalog::load(dir, volumes_root)?.select(names)
}

/// As `load_policies`, but first compiles every policy in `dir`, chosen or
/// not, so a broken policy file is an error (what `check` wants).
pub fn load_policies_strict(
    names: &[String],
    dir: Option<&Path>,
    volumes_root: &Path,
) -> Result<Vec<Policy>, PolicyError> {
    let catalog = PolicyCatalog::load(dir, volumes_root)?;
    catalog.compile_all()?;
    catalog.select(names)
}

#[cfg(test)]
mod tests;
