//! `paddock schema`: prints the workload JSON Schema.

use std::io::Write;

use clap::Args;

/// Print the workload JSON Schema (draft 2020-12), for editors and CI tools.
///
/// Save it and point taplo or Even Better TOML at it with a first line
/// `#:schema ./workload.schema.json` in a manifest.
#[derive(Debug, Args)]
pub struct SchemaArgs {}

pub fn run(_: SchemaArgs) -> Result<super::ExitCode, super::CliError> {
    std::io::stdout().lock().write_all(crate::validate::WORKLOAD_SCHEMA.as_bytes())?;
    Ok(0)
}
