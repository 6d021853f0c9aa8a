//! The command line: one file per subcommand.

pub mod check;
pub mod client;
pub mod control;
pub mod daemon;
pub mod exec;
pub mod export;
pub mod generate;
pub mod logs;
pub mod run;
pub mod schema;
pub mod status;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::validate::{PolicyError, Validator};

/// Exit status of a command, as documented for each.
pub type ExitCode = u8;

/// A command's failure: `paddock COMMAND: MESSAGE` on stderr, and its exit
/// status. Commands return `Result<ExitCode, CliError>` and use `?`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{message}")]
    Failed { message: String, code: ExitCode },
    /// Writing the command's output failed (a closed pipe is not worth a word).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CliError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CliError::Failed { message: message.into(), code }
    }
}

/// `?` with the exit status a failure of this step means.
pub trait OrFail<T> {
    fn or_fail(self, code: ExitCode) -> Result<T, CliError>;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, code: ExitCode) -> Result<T, CliError> {
        self.map_err(|e| CliError::new(code, e.to_string()))
    }
}

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

impl Command {
    /// Its name, as error messages start (`paddock status: ...`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Daemon(_) => "daemon",
            Command::Run(_) => "run",
            Command::Status(_) => "status",
            Command::Logs(_) => "logs",
            Command::Exec(_) => "exec",
            Command::Start(_) => "start",
            Command::Stop(_) => "stop",
            Command::Restart(_) => "restart",
            Command::Reload(_) => "reload",
            Command::Upgrade(_) => "upgrade",
            Command::Plan(_) => "plan",
            Command::Check(_) => "check",
            Command::Export(_) => "export",
            Command::Schema(_) => "schema",
            Command::Generate { .. } => "__generate",
            Command::Init { .. } => "__init",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Daemon(daemon::DaemonArgs),
    Run(Box<run::RunArgs>),
    Status(status::StatusArgs),
    Logs(logs::LogsArgs),
    Exec(exec::ExecArgs),
    /// Start a workload held by `stop`, or one that ended or failed; waits
    /// until it runs (exit status 1 when it does not within --timeout).
    Start(control::NameArgs),
    /// Stop a workload and hold it stopped until `start` or a change to its
    /// manifest; waits until it has stopped (exit status 1 past --timeout).
    Stop(control::NameArgs),
    /// Stop a workload and start it again; also revives a failed one; waits
    /// until it runs again (exit status 1 past --timeout).
    Restart(control::NameArgs),
    Reload(control::ReloadArgs),
    Upgrade(control::UpgradeArgs),
    Plan(control::PlanArgs),
    Check(check::CheckArgs),
    Export(export::ExportArgs),
    Schema(schema::SchemaArgs),
    /// Write the man pages and shell completions under DIR (internal: install.sh and packaging use it).
    #[command(name = "__generate", hide = true)]
    Generate {
        dir: PathBuf,
    },
    /// The sandbox's init (internal: paddock executes itself as PID 1 of a sandbox).
    #[command(name = "__init", hide = true)]
    Init {
        fd: i32,
    },
}

/// Which policies apply, shared by every command that validates manifests.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// A policy to apply, by name; repeat for several. Built in: baseline,
    /// restricted, privileged. Default: baseline (or the configuration's).
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,

    /// Where operators' policies (NAME.json) are found [default: the
    /// configuration's policy_dir, /etc/paddock/policies].
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,

    /// The daemon's volumes_root: idmapped mounts must come from under it
    /// [default: the configuration's volumes_root, /var/lib/paddock/volumes].
    #[arg(long, value_name = "DIR")]
    pub volumes_root: Option<PathBuf>,
}

impl PolicyArgs {
    /// Flags beat the configuration, which beats the defaults.
    pub fn volumes_root(&self, config: &Config) -> PathBuf {
        self.volumes_root.clone().unwrap_or_else(|| config.volumes_root.clone())
    }

    /// The validator for these policies (see `validator`).
    pub fn validator(&self, config: &Config, strict: bool) -> Result<Validator, ValidatorError> {
        let dir = self.policy_dir.as_ref().unwrap_or(&config.policy_dir);
        if self.policies.is_empty() {
            config_validator(config, dir, &self.volumes_root(config), strict)
        } else {
            validator(&self.policies, dir, &self.volumes_root(config), strict)
                .map(|v| v.with_slice_size(config.remap.slice_size))
        }
    }
}

/// The validator for the configuration's policies (see `validator`): an
/// unknown one is an error at its line of the file.
pub fn config_validator(
    config: &Config,
    dir: &Path,
    volumes_root: &Path,
    strict: bool,
) -> Result<Validator, ValidatorError> {
    validator(&config.policies, dir, volumes_root, strict).map(|v| v.with_slice_size(config.remap.slice_size)).map_err(
        |e| match e {
            ValidatorError::Policy(e) => ValidatorError::Policy(e.written_at(&config.policy_lines, &config.policies)),
        },
    )
}

/// The validator for the policies `names`, built in or found in `dir`,
/// whose idmapped mounts must come from under `volumes_root`: what the
/// daemon and every command that validates manifests check them with.
/// `strict` also compiles the policies not chosen, so a broken policy
/// file is an error.
pub fn validator(names: &[String], dir: &Path, volumes_root: &Path, strict: bool) -> Result<Validator, ValidatorError> {
    let load = if strict { crate::validate::load_policies_strict } else { crate::validate::load_policies };
    let policies = load(names, Some(dir), volumes_root)?;
    // A rule on a key no manifest has never applies: said, not ignored.
    // (Of operators' policies: the built-in ones are tested.)
    for policy in policies.iter().filter(|p| !matches!(p.source, crate::validate::PolicySource::BuiltIn)) {
        for (key, closest) in policy.unknown_keys() {
            let closest = closest.map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            tracing::warn!(
                "policy {}: the rule on `{key}` never applies: no manifest has that key{closest}",
                policy.name
            );
        }
        for inert in policy.inert_rules() {
            tracing::warn!("policy {}: {inert}", policy.name);
        }
    }
    Ok(Validator::new(policies))
}

/// Why the validator cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Loads the daemon's configuration for a command; an invalid file's
/// problems are printed (as `check` prints a manifest's) before the error.
pub fn load_config(path: Option<&Path>) -> Result<Config, LoadConfigError> {
    report_config(Config::load(path), true)
}

/// `load_config` for the commands that only look for the daemon
/// (`Config::load_for_client`).
pub fn load_client_config(path: Option<&Path>) -> Result<Config, LoadConfigError> {
    report_config(Config::load_for_client(path), false)
}

/// The configuration, its problems printed; its warnings too, with `warn`
/// (not for a command that only looks for the daemon's socket).
fn report_config(loaded: Result<Config, ConfigError>, warn: bool) -> Result<Config, LoadConfigError> {
    match loaded {
        Ok(c) => {
            if warn {
                c.warnings.iter().for_each(|w| eprint!("{w}"));
            }
            Ok(c)
        }
        Err(ConfigError::Invalid { path, text, problems }) => {
            let shown = path.display().to_string();
            for p in &problems {
                eprint!("{}", crate::validate::render(p, &shown, &text, crate::validate::Color::Never));
            }
            Err(LoadConfigError::Invalid(path))
        }
        Err(e) => Err(LoadConfigError::Config(e)),
    }
}

/// Why a command cannot use the daemon's configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// Its problems were printed already: the message only names it.
    #[error("{} is not a valid configuration", .0.display())]
    Invalid(PathBuf),
    #[error(transparent)]
    Config(ConfigError),
}
