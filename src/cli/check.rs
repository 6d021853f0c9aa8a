//! `paddock check`: validates manifests as the daemon would, and says
//! exactly what is wrong and where.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::validate::{self, Color, HostChecks, Located, load};

/// Exit statuses of `check`.
pub const VALID: u8 = 0;
pub const INVALID: u8 = 1;
pub const USAGE_OR_IO: u8 = 2;

/// Validate manifests against the schema and policies.
///
/// Every problem is printed as FILE:LINE:COL: error: MESSAGE with the source
/// line, then a summary. Exit status: 0 when every file is valid, 1 when any
/// is invalid, 2 for a usage or I/O error.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest files, or directories whose *.toml files are checked (names
    /// the daemon ignores, such as dotfiles and editor temporaries, are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub policy: super::PolicyArgs,

    /// The daemon's configuration the manifests run under: its policies,
    /// policy_dir, volumes_root, restart defaults, networks and cgroup_root
    /// apply, as the daemon applies them (the flags above beat it)
    /// [default: /etc/paddock/paddock.toml when it exists, else the
    /// built-in defaults].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Do not look for mount sources, the rootfs and the cgroup controllers
    /// of limits on this host (for files meant for another machine). By
    /// default a missing one is a warning, as is a mount source a start
    /// here would refuse (a kernel filesystem, a directory others may not
    /// enter).
    #[arg(long)]
    pub no_host_checks: bool,
    /// Where this host's cgroups are, for the host checks [default: /sys/fs/cgroup].
    #[arg(long, value_name = "DIR", conflicts_with = "no_host_checks")]
    pub cgroup_root: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    files: usize,
    valid: usize,
    invalid: usize,
}

#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    problems: &'a [Located<'a>],
    /// Files that could not be read, and other failures that are not the file's fault.
    errors: &'a [String],
    /// Files of a directory checked that are not manifests (not `*.toml`),
    /// which the daemon does not read either.
    not_read: &'a [String],
}

pub fn run(args: CheckArgs) -> Result<super::ExitCode, super::CliError> {
    let loaded = crate::config::Config::load_for_client(args.config.as_deref());
    let config = match unreadable_hosts(&loaded, args.config.is_some()) {
        Some(warning) => {
            eprintln!("paddock check: warning: {warning}");
            crate::config::Config::default()
        }
        None => super::OrFail::or_fail(super::report_config(loaded, true), USAGE_OR_IO)?,
    };
    let validator = super::OrFail::or_fail(args.policy.validator(&config, true), USAGE_OR_IO)?
        .with_restart_defaults(config.restart.clone());
    // The networks a manifest may name: the built-in one, and this host's
    // networks directory when it can be read.
    let validator = match crate::network::Networks::load(&config.network, &config.state_dir, &config.run_dir) {
        Ok(networks) => validator
            .with_networks(networks.names(), networks.publishing())
            .with_refused_networks(networks.refused_for_validation())
            .with_unavailable_networks(networks.unavailable()),
        Err(_) => validator,
    };
    let host = if args.no_host_checks { HostChecks::Skip } else { HostChecks::Warn };
    let cgroup_root = args.cgroup_root.as_ref().unwrap_or(&config.cgroup_root);
    let validator = validator
        .with_cgroups(crate::sandbox::cgroup::Layout::detect(cgroup_root))
        .with_source_checks(&args.policy.volumes_root(&config));
    let color = Color::for_stdout();

    let Validated { files: mut checked, errors, not_read } = validate_paths(&validator, &args.paths, host);
    if host != HostChecks::Skip {
        refused_by_the_daemon(&mut checked, &config.workloads);
    }
    let summary = Summary {
        files: checked.len(),
        valid: checked.iter().filter(|f| f.spec.is_some()).count(),
        invalid: checked.iter().filter(|f| f.spec.is_none()).count(),
    };

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            for f in &checked {
                for p in &f.problems {
                    writeln!(out, "{}", validate::render(p, &f.file, &f.text, color))?;
                }
            }
            for e in &errors {
                eprintln!("paddock check: {e}");
            }
            for file in &not_read {
                writeln!(
                    out,
                    "{file}: not read: only *.toml files are manifests (the daemon does not read it either)"
                )?;
            }
            writeln!(out, "{} files, {} valid, {} invalid", summary.files, summary.valid, summary.invalid)?;
        }
        Format::Json => {
            let located: Vec<Located<'_>> =
                checked.iter().flat_map(|f| f.problems.iter().map(|p| p.locate(&f.file, &f.text))).collect();
            let report = JsonReport { summary: &summary, problems: &located, errors: &errors, not_read: &not_read };
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(if !errors.is_empty() {
        USAGE_OR_IO
    } else if summary.invalid > 0 {
        INVALID
    } else {
        VALID
    })
}

/// The host's configuration (none `named`), which this user may not read:
/// said, and checked without (the warning to show), rather than failed.
fn unreadable_hosts(loaded: &Result<crate::config::Config, crate::config::ConfigError>, named: bool) -> Option<String> {
    match loaded {
        Err(crate::config::ConfigError::Read { path, source })
            if !named && source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Some(format!(
                "cannot read {} ({source}): checking with the built-in defaults (give the configuration with --config FILE)",
                path.display()
            ))
        }
        _ => None,
    }
}

/// A manifest file as `check` saw it: its text, every problem, and the
/// workload when it is valid.
#[derive(Debug)]
pub struct CheckedFile {
    pub file: String,
    pub text: String,
    pub problems: Vec<validate::Problem>,
    pub spec: Option<validate::WorkloadSpec>,
}

/// The files of `paths`, each validated as the daemon would, then the
/// checks across them; `errors` are the paths that could not be read, and
/// `not_read` the files of its directories that are not manifests.
#[derive(Debug)]
pub struct Validated {
    pub files: Vec<CheckedFile>,
    pub errors: Vec<String>,
    pub not_read: Vec<String>,
}

/// Files in the daemon's workloads directory that its scan refuses as they
/// are (not root's, writable by others, reached through a link others
/// could have made) are invalid as the daemon has them, with its reason
/// and the fix: `check` said "valid" of them.
fn refused_by_the_daemon(checked: &mut [CheckedFile], workloads: &Path) {
    let Ok(workloads) = workloads.canonicalize() else { return };
    let mut scanned: Option<crate::daemon::scan::Snapshot> = None;
    for f in checked {
        let path = Path::new(&f.file);
        let (Some(name), Some(dir)) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else { continue };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if dir.canonicalize().ok().as_ref() != Some(&workloads) {
            continue;
        }
        if scanned.is_none() {
            scanned = crate::daemon::scan::scan(&workloads, None).ok();
        }
        if let Some(crate::daemon::scan::Found::Refused { message }) = scanned.as_ref().and_then(|s| s.get(name)) {
            // Refused for what `check` said of it already (a directory, a
            // link leading nowhere: the same words, the daemon's after the
            // file's path): said once.
            if f.problems.iter().any(|p| p.span.is_none() && message.ends_with(&p.message)) {
                continue;
            }
            f.problems
                .push(validate::Problem::error(None, format!("the daemon refuses this file as it is: {message}")));
            f.spec = None;
        }
    }
}

/// What `check` does to its PATHs (and `export` before it writes anything):
/// every file validated, then the checks across the files (a host port
/// published twice, start order), which make a file invalid too.
pub fn validate_paths(validator: &validate::Validator, paths: &[PathBuf], host: HostChecks) -> Validated {
    let mut errors = Vec::new();
    let mut found = Vec::new();
    let mut not_read = Vec::new();
    for path in paths {
        match expand(path) {
            Ok(more) => found.extend(more),
            Err(e) => errors.push(format!("cannot read {}: {e}", path.display())),
        }
        if path.is_dir() && path.extension().is_none_or(|e| e != "toml") {
            not_read.extend(load::not_manifests(path).iter().map(|f| f.display().to_string()));
        }
    }
    // A file named twice (`wl wl/web.toml`, `x.toml ./x.toml`) is one
    // file: its directory resolved, its own name kept (two links to one
    // file are two workloads, named by the links, as the daemon reads them).
    let mut named = std::collections::BTreeSet::new();
    found.retain(|path| {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match (std::fs::canonicalize(dir), path.file_name()) {
            (Ok(dir), Some(name)) => named.insert(dir.join(name)),
            _ => true,
        }
    });
    let mut files = Vec::with_capacity(found.len());
    for path in &found {
        match validator.validate_file(path, host) {
            Ok((text, result)) => files.push(CheckedFile {
                file: path.display().to_string(),
                text,
                problems: result.problems,
                spec: result.spec,
            }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // Across the files: each host port published once.
    let candidates: Vec<validate::across::Candidate<'_>> = files
        .iter()
        .filter_map(|f| {
            let s = f.spec.as_ref()?;
            Some(validate::across::Candidate { file: &f.file, text: &f.text, manifest: &s.manifest })
        })
        .collect();
    // No order among files checked: a shared port is said of each.
    let mut conflicts = validate::across::port_conflicts(&candidates, &[], &|_, _| true);
    // Start order: a cycle anywhere; a name no manifest defines, an error
    // when whole directories are checked; of files named one by one, a
    // warning unless a manifest beside them (not checked) is it.
    let whole_dirs = paths.iter().all(|p| p.is_dir());
    let beside: Vec<String> = match whole_dirs {
        true => Vec::new(),
        false => {
            // Each directory once (`check wl/*.toml`).
            let dirs: std::collections::BTreeSet<&Path> = found
                .iter()
                .filter_map(|f| f.parent())
                .map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
                .collect();
            dirs.into_iter()
                .flat_map(|dir| load::list_manifests(dir).unwrap_or_default())
                .filter_map(|f| Some(f.file_stem()?.to_str()?.to_owned()))
                .collect()
        }
    };
    let unknown = match whole_dirs {
        true => validate::across::UnknownAfter::Refused,
        false => validate::across::UnknownAfter::Warned { beside: &beside },
    };
    for (file, mut more) in validate::across::order_problems(&candidates, &[], unknown) {
        conflicts.entry(file).or_default().append(&mut more);
    }
    let conflicts: Vec<(String, Vec<validate::Problem>)> =
        conflicts.into_iter().map(|(file, problems)| (file.to_owned(), problems)).collect();
    for (file, mut more) in conflicts {
        if let Some(f) = files.iter_mut().find(|f| f.file == file) {
            if more.iter().any(|p| p.severity == validate::Severity::Error) {
                f.spec = None;
            }
            f.problems.append(&mut more);
        }
    }
    Validated { files, errors, not_read }
}

/// A path on the command line: a directory stands for its manifests, and
/// anything else for itself (so a FIFO, a directory named `x.toml` or a
/// link leading nowhere or looping, given by name, is reported as what it is).
fn expand(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).or_else(|e| match std::fs::symlink_metadata(path) {
        Ok(link) if load::link_problem(path, &e).is_some() => Ok(link),
        _ => Err(e),
    })?;
    if meta.is_dir() && path.extension().is_none_or(|e| e != "toml") {
        load::list_manifests(path)
    } else {
        Ok(vec![path.to_owned()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn a_host_configuration_this_user_may_not_read_is_warned_of_a_named_one_fails() {
        let denied = || {
            Err(ConfigError::Read {
                path: "/etc/paddock/paddock.toml".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            })
        };
        let warning = unreadable_hosts(&denied(), false).expect("warned of");
        assert!(warning.starts_with("cannot read /etc/paddock/paddock.toml (permission denied)"), "{warning}");
        assert!(warning.contains("--config FILE"), "{warning}");
        assert_eq!(unreadable_hosts(&denied(), true), None, "a file named with --config must be read");
        let missing =
            Err(ConfigError::Read { path: "/x".into(), source: std::io::Error::from(std::io::ErrorKind::Other) });
        assert_eq!(unreadable_hosts(&missing, false), None, "other errors fail");
        assert_eq!(unreadable_hosts(&Ok(crate::config::Config::default()), false), None);
    }
}
