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

pub fn default_policy_dir() -> PathBuf {
    PathBuf::from(DEFAULT_POLICY_DIR)
}
