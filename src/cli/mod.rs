//! The command line: one file per subcommand.

pub mod check;
pub mod run;
pub mod schema;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit status of a command, as documented for each (see DESIGN.md).
pub type ExitCode = u8;

#[derive(Debug, Parser)]
#[command(
    name = "paddock",
    version,
    about = "Runs a directory of TOML workload manifests in user-namespace sandboxes",
    long_about = "paddock keeps a directory of workload manifests (/etc/paddock/workloads/*.toml) true on one \
                  Linux host: it validates each file against a JSON Schema and policies, runs every valid \
                  workload in a sandbox whose root is an unprivileged host user, and applies every change to \
                  a file the moment it is saved."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(check::CheckArgs),
    Run(run::RunArgs),
    Schema(schema::SchemaArgs),
    /// The sandbox's init (internal: paddock executes itself as PID 1 of a sandbox).
    #[command(name = "__init", hide = true)]
    Init {
        fd: i32,
    },
}

/// Defaults shared by the commands that read policies.
pub const DEFAULT_POLICY_DIR: &str = "/etc/paddock/policies";
pub const DEFAULT_VOLUMES_ROOT: &str = "/var/lib/paddock/volumes";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/paddock";

/// Which policies apply, shared by every command that validates manifests.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// A policy to apply, by name; repeat for several. Built in: baseline,
    /// restricted, privileged. Default: baseline.
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Where operators' policies (NAME.json) are found.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_POLICY_DIR)]
    pub policy_dir: PathBuf,

    /// The daemon's volumes_root: idmapped mounts must come from under it.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_VOLUMES_ROOT)]
    pub volumes_root: PathBuf,
}

impl PolicyArgs {
    /// The validator for these policies. `strict` also compiles the
    /// policies not chosen, so a broken policy file is an error.
    pub fn validator(&self, strict: bool) -> Result<crate::validate::Validator, String> {
        let names = if self.policies.is_empty() { vec!["baseline".to_owned()] } else { self.policies.clone() };
        let load = if strict { crate::validate::load_policies_strict } else { crate::validate::load_policies };
        let policies = load(&names, Some(&self.policy_dir), &self.volumes_root).map_err(|e| e.to_string())?;
        crate::validate::Validator::new(policies).map_err(|e| e.to_string())
    }
}
