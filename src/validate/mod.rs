//! Manifest text in, a validated workload (or every problem with it) out:
//! TOML syntax, then the JSON Schema, then the typed model and the checks no
//! schema can express, then each active policy on the effective manifest.

mod describe;
pub mod load;
mod policy;
mod problem;
mod semantic;
mod source;

use std::path::Path;

use serde::Deserialize;

use crate::model::{Manifest, WorkloadName};

pub use describe::{did_you_mean, key_name};
pub use policy::{BUILT_IN, Policy, PolicyCatalog, PolicyError, PolicySource, VOLUMES_ROOT_PLACEHOLDER};
pub use problem::{Color, Located, Problem, Severity, line_col, render};
pub use semantic::HostChecks;

/// The workload JSON Schema, as committed in `schemas/` (a test keeps it
/// equal to what the Rust types generate).
pub const WORKLOAD_SCHEMA: &str = include_str!("../../schemas/workload.schema.json");

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

/// The compiled schema and policies, built once and used for every file.
#[derive(Debug)]
pub struct Validator {
    schema_doc: serde_json::Value,
    schema: jsonschema::Validator,
    policies: Vec<Policy>,
}

impl Validator {
    pub fn new(policies: Vec<Policy>) -> Result<Self, SchemaError> {
        let schema_doc: serde_json::Value =
            serde_json::from_str(WORKLOAD_SCHEMA).map_err(|e| SchemaError(e.to_string()))?;
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema_doc)
            .map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self { schema_doc, schema, policies })
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Validates a manifest's text. `file_name` is the file's name, whose
    /// stem is the workload's name.
    pub fn validate(&self, file_name: &str, text: &str, host: HostChecks) -> Checked {
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

        let parsed = match source::parse(text) {
            Ok(parsed) => parsed,
            Err(mut syntax) => {
                problems.append(&mut syntax);
                return Checked { spec: None, problems };
            }
        };
        let before = problems.len();
        for error in self.schema.iter_errors(&parsed.json) {
            problems.extend(describe::describe(&error, &parsed.spans, &self.schema_doc));
        }
        if problems.len() > before {
            // Typed checks and policies need a well-formed manifest.
            sort(&mut problems);
            return Checked { spec: None, problems };
        }
        let manifest = match Manifest::deserialize(toml::de::Deserializer::from(parsed.table)) {
            Ok(m) => m,
            Err(e) => {
                // The schema and the types agree (a property test checks it),
                // so this is a value the schema cannot bound, such as 2^40 for a u32.
                problems.push(Problem::error(e.span(), e.message().trim_end().to_owned()));
                sort(&mut problems);
                return Checked { spec: None, problems };
            }
        };
        problems.extend(semantic::check(&manifest, &parsed.spans));
        let effective = manifest.effective(stem);
        match serde_json::to_value(&effective) {
            Ok(json) => {
                for policy in &self.policies {
                    problems.extend(policy.check(&json, &parsed.spans));
                }
            }
            Err(e) => problems.push(Problem::error(None, format!("cannot apply policies: {e}"))),
        }
        problems.extend(semantic::host_checks(&effective, &parsed.spans, host));
        sort(&mut problems);
        let spec = match name {
            Some(name) if !problems.iter().any(Problem::is_error) => Some(WorkloadSpec { name, manifest: effective }),
            _ => None,
        };
        Checked { spec, problems }
    }

    /// Reads and validates a file. `Err` is an I/O error (the file could not
    /// be read); a file that was read but cannot be a manifest is a problem.
    pub fn validate_file(&self, path: &Path, host: HostChecks) -> Result<(String, Checked), load::LoadError> {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match load::read_manifest(path) {
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

/// In the order of the file, whole-file problems first; once each.
fn sort(problems: &mut Vec<Problem>) {
    problems.sort_by_key(|p| p.span.as_ref().map(|s| (s.start, s.end)));
    problems.dedup();
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
