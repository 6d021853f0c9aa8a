//! `paddock daemon`: the supervisor, in the foreground (systemd runs this).

use std::path::{Path, PathBuf};

use clap::Args;

use super::{CliError, OrFail};
use crate::config::metrics_address;
use crate::daemon::upgrade::Fixed;
use crate::daemon::{
    event_loop, executor, notify::Notifier, scan::check_directory, store::AccountStamps, store::DiskStore,
};
use crate::idmap::remap_ranges;
use crate::sandbox::cgroup::Layout;

/// Run the supervisor in the foreground: keep the workloads directory true.
///
/// Every valid manifest runs in its sandbox; changes apply as files are
/// saved; SIGHUP rescans; SIGTERM or SIGINT stops every workload and exits 0.
/// Exit status 78 for a configuration error a restart cannot fix (the unit
/// does not restart on it), 1 for anything else.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The configuration file [default: /etc/paddock/paddock.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The workloads directory, an absolute path (beats the configuration's `workloads`).
    #[arg(long, value_name = "DIR")]
    pub workloads: Option<PathBuf>,
    /// The state directory, an absolute path (beats `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The control socket (beats `socket`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log lines as text (colour on a terminal) or as JSON objects, one per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Check the configuration and what it names (directories, policies,
    /// networks, the remap user's ranges) as a start would, change nothing,
    /// and exit: 0 when the daemon would start, 78 with the error when not.
    /// `paddock upgrade` asks the new binary this before it re-executes it.
    #[arg(long)]
    pub validate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The daemon's exit status when its configuration (or what it names) is
/// wrong: a restart cannot fix it, so the unit does not retry it
/// (`RestartPreventExitStatus=78`). 78 is EX_CONFIG (sysexits.h).
pub const CONFIG_ERROR: super::ExitCode = 78;

pub fn run(args: DaemonArgs) -> Result<super::ExitCode, CliError> {
    // A stop or reload asked before the loop listens waits for it, rather
    // than end the daemon (`daemon::signals`): here too (main holds them
    // first), while one thread, so that every thread made blocks them.
    crate::daemon::signals::hold();
    // Taken before they are read: an edit meanwhile makes the next reload read them again.
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
    let config_files = crate::daemon::upgrade::ConfigFiles::new(&config_path);
    let mut config = super::load_config(args.config.as_deref()).or_fail(CONFIG_ERROR)?;
    let config_files = config_files.with_dirs(&config.policy_dir, &config.network.networks_dir);
    // As the configuration's paths: a relative one would name another
    // directory after an upgrade's re-execution from elsewhere, and its
    // cgroup group (named by the state directory's path) another daemon's.
    for (flag, path) in [("--workloads", &args.workloads), ("--state-dir", &args.state_dir)] {
        if let Some(path) = path.as_ref().filter(|p| p.is_relative()) {
            let message = format!("{flag} {}: give an absolute path, as the configuration's are", path.display());
            return Err(CliError::new(CONFIG_ERROR, message));
        }
    }
    let workloads = args.workloads.unwrap_or_else(|| config.workloads.clone());
    let mut state_dir = args.state_dir.unwrap_or_else(|| config.state_dir.clone());
    // What a re-execution cannot change: refused by the check that comes
    // first; kept as the running daemon had it, should it change after.
    let mut fixed = Fixed {
        state_dir: state_dir.clone(),
        run_dir: config.run_dir.clone(),
        cgroup_root: config.cgroup_root.clone(),
        remap: config.remap.clone(),
        subnet: config.network.subnet.clone(),
    };
    // What cannot be read (another version's form) is no reason to end a
    // daemon whose workloads run: said, and not compared.
    let handed = Fixed::handed().and_then(|running| {
        running.map_err(|e| tracing::warn!("{e}: the running daemon's settings cannot be compared")).ok()
    });
    if let Some(running) = handed {
        let differences = fixed.differences(&running);
        if !differences.is_empty() {
            let message = format!(
                "{}: a re-execution (a reload or an upgrade) cannot change that, for the workloads that run were started with it and are adopted through it; put it back, or apply it with `systemctl restart paddock` (which stops every workload, then starts them)",
                differences.join("; ")
            );
            if args.validate {
                return Err(CliError::new(CONFIG_ERROR, message));
            }
            tracing::error!("{message}; the running daemon's are kept until then");
            state_dir = running.state_dir.clone();
            config.run_dir = running.run_dir.clone();
            config.cgroup_root = running.cgroup_root.clone();
            config.remap = running.remap.clone();
            config.network.subnet = running.subnet.clone();
            fixed = running;
        }
    }
    fixed.hand_on();
    let socket = args.socket.unwrap_or_else(|| config.socket.clone());
    if !workloads.exists() {
        return Err(CliError::new(
            CONFIG_ERROR,
            format!(
                "the workloads directory {} does not exist: install paddock (./install.sh makes it), give --workloads DIR (a directory of root's), or try it from a checkout with ./try.sh",
                workloads.display()
            ),
        ));
    }
    // Whoever can write these chooses what runs as root: refuse as sshd's StrictModes does.
    check_directory(&workloads).or_fail(CONFIG_ERROR)?;
    if crate::fsutil::reachable_by_others(&workloads) {
        tracing::warn!(
            "any user can reach the manifests in {} (it and its parents can be entered by others): a workload whose root is the host's / reads every manifest that others may read (0644, as most are written), `env` included; run `chmod go-rwx {}`",
            workloads.display(),
            workloads.display()
        );
    }
    if config.policy_dir.exists() {
        check_directory(&config.policy_dir).or_fail(CONFIG_ERROR)?;
    }
    if !config.cgroup_root.is_dir() {
        return Err(CliError::new(
            CONFIG_ERROR,
            format!(
                "cgroup_root {} is not a directory: it names the cgroup filesystem (/sys/fs/cgroup, the default)",
                config.cgroup_root.display()
            ),
        ));
    }
    // The state directory (ids, records, logs) and volumes_root are root's
    // alone: made 0700 when missing, and volumes_root refused when others
    // could reach what a workload plants in an idmapped volume.
    // The state and run directories and the socket's hold what the daemon
    // acts on as root (records, logs, namespaces' mount points): only root
    // may change them, or their ancestors.
    let socket_dir = socket.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut checked: Vec<&Path> = Vec::new();
    for (what, dir) in [
        ("the state directory", &*state_dir),
        ("run_dir", &*config.run_dir),
        ("the control socket's directory", socket_dir),
    ] {
        // run_dir and the socket's are one directory by default.
        if checked.contains(&dir) {
            continue;
        }
        checked.push(dir);
        // A file (a FIFO, a typo naming the socket) is no directory to
        // make or use: said so, as the configuration's fault.
        if dir.exists() && !dir.is_dir() {
            return Err(CliError::new(
                CONFIG_ERROR,
                format!("{what} {} is not a directory: name a directory, or one to be made", dir.display()),
            ));
        }
        // One missing is made 0700 by the start, not by a check.
        if args.validate && !dir.exists() {
            continue;
        }
        crate::fsutil::create_private_dir(dir)
            .map_err(|e| CliError::new(1, format!("cannot create {what} {}: {e}", dir.display())))?;
        crate::fsutil::check_root_dir(dir, crate::fsutil::STATE_RISK)
            .map_err(|e| CliError::new(CONFIG_ERROR, format!("{what} {}: {e}", dir.display())))?;
    }
    if !config.volumes_root.exists() && !args.validate {
        crate::fsutil::create_private_dir(&config.volumes_root).map_err(|e| {
            CliError::new(1, format!("cannot create volumes_root {}: {e}", config.volumes_root.display()))
        })?;
    }
    if config.volumes_root.exists() || !args.validate {
        crate::fsutil::open_volumes_root(&config.volumes_root).or_fail(CONFIG_ERROR)?;
    }
    let networks =
        crate::network::Networks::load(&config.network, &state_dir, &config.run_dir).or_fail(CONFIG_ERROR)?;
    for file in networks.not_read() {
        tracing::warn!(
            file = %file.display(),
            "not read: only NAME.conflist files (CNI network lists) are networks; a single plugin's .conf goes in a list's \"plugins\", in a file NAME.conflist"
        );
    }
    for refused in networks.refusals() {
        tracing::error!(
            file = %refused.path.display(),
            "a network definition is refused: {refused}; workloads on that network keep the network they have and cannot get a new one until it is mended (`paddock upgrade` reads the networks directory again, every workload kept running)"
        );
    }
    if !networks.names().is_empty() && crate::sandbox::netns::mounts_die_with_us() {
        tracing::warn!(
            "paddock runs in a mount namespace other than its parent's (a unit option such as ProtectSystem=, PrivateTmp= or ProtectKernelModules= gives it one): the network namespaces it keeps mounted under {} die with this daemon, so after a crash its successor finds the running workloads' networks gone; remove that option (`systemctl edit paddock`)",
            config.run_dir.join("netns").display()
        );
    }
    let validator = super::config_validator(&config, &config.policy_dir, &config.volumes_root, true)
        .or_fail(CONFIG_ERROR)?
        .with_restart_defaults(config.restart.clone())
        .with_networks(networks.names(), networks.publishing())
        .with_refused_networks(networks.refused_for_daemon())
        .with_attachments(networks.clone())
        .with_source_checks(&config.volumes_root);
    let remap = &config.remap;
    let accounts = remap.accounts();
    if args.validate {
        // What a start would refuse there (a file a typo names), not a stale socket.
        crate::daemon::server::socket_at(&socket).or_fail(CONFIG_ERROR)?;
        // Read only: the default user's ranges, missing, are added by a start.
        crate::idmap::read_remap_ranges(&accounts, &remap.user, remap.slice_size).or_fail(CONFIG_ERROR)?;
        let default = Path::new(crate::config::DEFAULT_CONFIG);
        let file = match args.config.as_deref() {
            Some(file) => file.display().to_string(),
            None if default.exists() => default.display().to_string(),
            None => format!("the defaults ({} is absent)", default.display()),
        };
        println!("the daemon would start with this configuration: {file}");
        // Said, though no reason to refuse a start (or an upgrade).
        let refused = networks.refusals().len();
        if refused > 0 {
            println!(
                "but {refused} network definition(s) are refused (above): workloads on them cannot get a new network until mended"
            );
        }
        return Ok(0);
    }
    // Before they are read: an edit meanwhile is seen by the store.
    let stamps = AccountStamps::of(&accounts);
    let ranges = remap_ranges(&accounts, &remap.user, remap.slice_size).or_fail(CONFIG_ERROR)?;
    for warning in crate::idmap::account_overlaps(&accounts, &ranges) {
        tracing::warn!("{warning}");
    }
    let metrics = metrics_address(&config.metrics_listen).or_fail(CONFIG_ERROR)?;
    let notifier = Notifier::from_env().or_fail(1)?;
    // Under systemd with Delegate=yes, workloads live in the unit's own cgroup.
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroups = Layout::detect(&config.cgroup_root)
        .for_daemon(&self_cgroup)
        .map_err(|e| CliError::new(1, format!("cannot use the cgroup systemd delegated to paddock: {e}")))?;
    // Where its workloads' cgroups are made: a limit with no controller
    // there makes a file invalid, as its start would fail at once.
    let validator = validator.with_cgroups(cgroups.clone());
    // The zygote that clones the sandboxes (see sandbox::zygote): forked
    // while this process is one thread (before the store's writer and the
    // runtime) and has read no manifest, and after it moved into its
    // delegated cgroup's leaf, which the zygote must share (a v2 cgroup
    // with a process in it cannot enable controllers for its children).
    let inherited = crate::sandbox::unreaped::Inherited::take();
    let inherited_listener = crate::daemon::upgrade::inherited_listener();
    // (An upgrade that moved the socket onto one keeps its old socket
    // instead: `server::bind`.)
    if inherited_listener.is_none() {
        crate::daemon::server::socket_at(&socket).or_fail(CONFIG_ERROR)?;
    }
    // Here too while one thread: it takes the limit an upgraded image was
    // handed from the environment.
    match crate::sandbox::raise_nofile_limit() {
        Ok(n) => tracing::debug!(nofile = n, "raised the open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit; many workloads may not start"),
    }
    let zygote = match crate::sandbox::zygote::Zygote::start() {
        Ok(zygote) => Some(std::sync::Arc::new(zygote)),
        Err(e) => {
            tracing::warn!(error = %e, "no zygote; sandboxes' inits will be executed");
            None
        }
    };
    inherited.reap();
    let options = event_loop::Options {
        workloads: workloads.clone(),
        state_dir: state_dir.clone(),
        socket: socket.clone(),
        resync: config.resync_interval.as_std(),
        start_timeout: config.start_timeout.as_std(),
        shutdown_timeout: config.shutdown_timeout.as_std(),
        metrics,
        executor: executor::Settings {
            state_dir: state_dir.clone(),
            cgroup_group: crate::sandbox::cgroup::workloads_group(&state_dir),
            volumes_root: config.volumes_root.clone(),
            cgroups,
            networks: std::sync::Arc::new(networks),
            zygote,
        },
        store: DiskStore::new(state_dir, ranges, remap.isolation, remap.slice_size).following(
            accounts,
            &remap.user,
            stamps,
        ),
        inherited_listener,
        config_files,
    };
    tracing::info!(workloads = %workloads.display(), socket = %socket.display(), "paddock daemon starting");
    event_loop::run(options, validator, notifier).or_fail(1)?;
    tracing::info!("every workload stopped; exiting");
    Ok(0)
}
