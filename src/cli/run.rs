//! `paddock run FILE [-- CMD ARGS...]`: one manifest, once, in the
//! foreground, like `docker run --rm`.

use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::Args;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::{CliError, OrFail};
use crate::idmap::{AccountFile, AccountFiles, Allocations, Cutting, Isolation, NamedBy, RunHold, remap_ranges};
use crate::sandbox::cgroup::{Layout, Place};
use crate::sandbox::{self, Exit, InitMode, SpawnRequest};
use crate::validate::{Color, HostChecks, render};

/// paddock itself failed (bad manifest, sandbox setup), as docker run's 125.
pub const PADDOCK_FAILED: u8 = 125;

/// Run one manifest once in the foreground, in its sandbox.
///
/// stdin, stdout and stderr are attached; Ctrl-C, SIGTERM, SIGHUP and
/// SIGQUIT are forwarded to the workload; everything is torn down when it exits. Exit
/// status: the workload's (128+N when killed by signal N, 137 when
/// OOM-killed), 126/127 when the command cannot be executed or is not
/// found, 125 when paddock itself failed.
///
/// It writes on the host what the daemon would: the workload's id slice in
/// STATE_DIR/idmap.json (kept, so the same name gets the same host ids),
/// and STATE_DIR/runs/NAME.lock, locked while it runs and naming its slices; with remap.user = "default" and no range yet, the `paddock` user and its
/// ranges in /etc/passwd, /etc/subuid and /etc/subgid; a cgroup while it
/// runs; with -p, a network attachment undone at the end. --state-dir,
/// --subuid, --subgid, --passwd and --group-file keep all of it elsewhere.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest; its file name (without .toml) is the workload's name.
    pub file: PathBuf,

    /// A command to run instead of the manifest's `command`.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Publish a port, as `docker run -p`: HOST_PORT:PORT,
    /// HOST_IP:HOST_PORT:PORT, with /udp or /sctp when not TCP; added to
    /// the manifest's `ports`. The workload gets the bridge network unless
    /// its manifest names another (`private` is refused). Repeat for more
    /// ports.
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<crate::model::PortMapping>,

    #[command(flatten)]
    pub policy: super::PolicyArgs,

    /// The daemon's configuration file, for its policies and policy_dir,
    /// volumes_root, state_dir, run_dir, cgroup_root, [remap] and [network]
    /// settings [default: /etc/paddock/paddock.toml, if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where id allocations are kept (idmap.json) [default: /var/lib/paddock].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Whose /etc/subuid and /etc/subgid ranges to use; "default" means the
    /// user `paddock`, created with a range when missing.
    #[arg(long, value_name = "USER")]
    pub remap_user: Option<String>,

    /// "per-workload": a slice of its own for each workload; "shared": the first range for all.
    #[arg(long, value_name = "MODE", value_parser = parse_isolation)]
    pub isolation: Option<Isolation>,

    /// Ids per workload slice, at least 1 [default: 65536].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub slice_size: Option<u32>,

    /// The cgroup filesystem root: v2 when it is a cgroup2 mount, else v1
    /// hierarchies under it [default: /sys/fs/cgroup].
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// The account files (for tests and unusual hosts).
    #[arg(long, value_name = "FILE")]
    pub subuid: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub subgid: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub passwd: Option<PathBuf>,
    #[arg(long = "group-file", value_name = "FILE")]
    pub group_file: Option<PathBuf>,

    /// Start the init by re-executing paddock, as the daemon does (for tests).
    #[arg(long, hide = true)]
    pub init_exec: bool,
}

fn parse_isolation(s: &str) -> Result<Isolation, UnknownIsolation> {
    match s {
        "per-workload" => Ok(Isolation::PerWorkload),
        "shared" => Ok(Isolation::Shared),
        _ => Err(UnknownIsolation),
    }
}

/// `--isolation` names neither mode.
#[derive(Debug, thiserror::Error)]
#[error("expected per-workload or shared")]
struct UnknownIsolation;

pub fn run(args: RunArgs) -> Result<super::ExitCode, CliError> {
    let config = super::load_config(args.config.as_deref()).or_fail(PADDOCK_FAILED)?;
    // Flags beat the configuration file, which beats the defaults.
    let state_dir = args.state_dir.clone().unwrap_or_else(|| config.state_dir.clone());
    let remap = &config.remap;
    let remap_user = args.remap_user.clone().unwrap_or_else(|| remap.user.clone());
    let isolation = args.isolation.unwrap_or(remap.isolation);
    let slice_size = args.slice_size.unwrap_or(remap.slice_size);
    let cgroup_root = args.cgroup_root.clone().unwrap_or_else(|| config.cgroup_root.clone());
    let volumes_root = args.policy.volumes_root(&config);
    // The networks a manifest may name; an error in their definitions
    // matters only to a manifest that asks for one.
    let networks = crate::network::Networks::load(&config.network, &state_dir, &config.run_dir);
    let (names, publishing, refused) = networks.as_ref().map_or_else(
        |_| (vec![crate::model::BRIDGE.to_owned()], vec![crate::model::BRIDGE.to_owned()], Default::default()),
        |n| (n.names(), n.publishing(), n.refused_for_validation()),
    );
    let validator = args
        .policy
        .validator(&config, false)
        .or_fail(PADDOCK_FAILED)?
        .with_networks(names, publishing)
        .with_refused_networks(refused)
        .with_slice_size(slice_size);
    let (text, checked) = validator.validate_file(&args.file, HostChecks::Require).or_fail(PADDOCK_FAILED)?;
    let file = args.file.display().to_string();
    for p in &checked.problems {
        eprint!("{}", render(p, &file, &text, Color::Never));
    }
    let said: Vec<String> = checked.problems.iter().map(|p| p.message.clone()).collect();
    let Some(mut spec) = checked.spec else {
        return Err(CliError::new(PADDOCK_FAILED, format!("{file} is invalid; nothing was started")));
    };
    // What only the daemon does, said rather than ignored (the text is
    // parsed again for the keys' lines only when it may name one).
    let named = ["restart", "health", "after", "stop"].iter().any(|key| text.contains(key));
    let spans = if named { crate::validate::spans_of(&text) } else { Default::default() };
    for (key, what) in [
        ("restart", "`run` runs it once and exits with its status"),
        ("health", "`run` runs no health checks"),
        ("after", "`run` waits for no other workload"),
        ("stop", "`run` passes on the signals it is sent, and ends when the workload does"),
    ] {
        let pointer = format!("/{key}");
        if let Some(span) = spans.key_span(&pointer).or_else(|| spans.value_span(&pointer)) {
            let note = crate::validate::Problem::warning(Some(span), format!("`{key}` applies under the daemon only"))
                .with_help(what);
            eprint!("{}", render(&note, &file, &text, Color::Never));
        }
    }
    if !args.command.is_empty() {
        spec.manifest.command = args.command.clone();
    }
    if !args.publish.is_empty() || !args.command.is_empty() {
        let m = &mut spec.manifest;
        m.ports.extend(args.publish.iter().copied());
        if !args.publish.is_empty() && m.namespaces.network == crate::model::Network::Private {
            // Private by default, the bridge then; written, it is refused
            // rather than replaced.
            let written = crate::validate::spans_of(&text).value_span("/namespaces/network");
            if let Some(span) = written {
                let refusal = crate::validate::Problem::error(
                    Some(span),
                    "`-p` publishes ports, and this network is private (loopback only): nothing could reach them",
                )
                .with_help("remove this line to run it on the bridge network, or name a network that publishes ports");
                eprint!("{}", render(&refusal, &file, &text, Color::Never));
                return Err(CliError::new(PADDOCK_FAILED, format!("{file} with -p is invalid; nothing was started")));
            }
            m.namespaces.network = crate::model::Network::Cni(crate::model::BRIDGE.to_owned());
        }
        // The manifest as it will run, checked again: the policies see
        // the command and the ports given here too.
        let with = match (args.publish.is_empty(), args.command.is_empty()) {
            (false, true) => "-p",
            (true, false) => "-- CMD",
            _ => "-p and -- CMD",
        };
        let problems = validator.recheck(m);
        // (What the file's own check said is not said twice.)
        for p in problems.iter().filter(|p| !said.contains(&p.message)) {
            eprint!("{}", render(p, &format!("{file} with {with}"), "", Color::Never));
        }
        if problems.iter().any(crate::validate::Problem::is_error) {
            return Err(CliError::new(PADDOCK_FAILED, format!("{file} with {with} is invalid; nothing was started")));
        }
    }
    // Blocked before anything is made (a network, the sandbox), so none is
    // lost and a Ctrl-C meanwhile cannot leave them behind: read from a
    // signalfd below, and forwarded to the workload once it runs.
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        forwarded.add(s);
    }
    let mut previous = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut previous)).map_err(std::io::Error::from)?;
    // A network of its own, made for this run and undone after it.
    let attachment = match spec.manifest.namespaces.network.cni() {
        Some(_) => {
            let networks = networks.or_fail(PADDOCK_FAILED)?.for_runs();
            // What runs that were killed left behind (kill -9 gives no
            // chance to undo anything) is undone first.
            for (run, undone) in networks.undo_abandoned_runs() {
                match undone {
                    Ok(()) => eprintln!("paddock run: undid the network of an earlier run that was killed ({run})"),
                    Err(e) => eprintln!("paddock run: cannot undo the network of an earlier run ({run}): {e}"),
                }
            }
            // This process, by pid and start time (see `undo_abandoned_runs`).
            let me = std::process::id();
            let key = match crate::sandbox::process::start_time(me as i32) {
                Some(started) => format!("run{me}-{started}"),
                // Unknown: judged by the pid alone, as older records are.
                None => format!("run{me}"),
            };
            let key = crate::model::WorkloadName::try_from(key.as_str()).expect("a valid name");
            let a = networks.attach(&key, &spec.manifest).or_fail(PADDOCK_FAILED)?;
            Some(RunNetwork { networks, key, attachment: a })
        }
        None => None,
    };

    // Each account file: the flag, else the configuration's.
    let defaults = remap.accounts();
    let flag = |path: Option<PathBuf>, flag: &'static str, default: AccountFile| match path {
        Some(path) => AccountFile { path, named_by: NamedBy::Flag { flag, key: default.named_by.key() } },
        None => default,
    };
    let accounts = AccountFiles {
        passwd: flag(args.passwd, "--passwd", defaults.passwd),
        group: flag(args.group_file, "--group-file", defaults.group),
        subuid: flag(args.subuid, "--subuid", defaults.subuid),
        subgid: flag(args.subgid, "--subgid", defaults.subgid),
    };
    let ranges = remap_ranges(&accounts, &remap_user, slice_size).or_fail(PADDOCK_FAILED)?;
    // Held while this process lives: the slice is kept for the manifest's
    // runs until the last ends. Taken first, so no other process gives the
    // slice away between the allocation and the hold.
    let hold = RunHold::take(&state_dir, spec.name.as_str()).or_fail(PADDOCK_FAILED)?;
    let ended = RunHold::ended_under(&state_dir);
    let slice = Allocations::update(&state_dir, |table| {
        let slice = table.allocate_for_run(
            spec.name.as_str(),
            Cutting { uids: &ranges.uids, gids: &ranges.gids, size: slice_size, isolation },
            &ended,
        )?;
        hold.record(&table.slices_of(spec.name.as_str()))?;
        Ok(slice)
    })
    .or_fail(PADDOCK_FAILED)?;

    let layout = Layout::detect(&cgroup_root);
    // What runs killed with -9 left (in the host's pid namespace, what
    // their workloads started goes on until swept).
    crate::sandbox::cgroup::Cgroup::sweep_runs(&layout);
    // Its own cgroup, apart from the daemon's workload of that name and
    // from other runs of this manifest.
    let cgroup_leaf = crate::sandbox::cgroup::run_leaf(spec.name.as_str());
    let netns = match &attachment {
        Some(n) => Some(crate::sandbox::netns::open_ns(&n.attachment.netns).or_fail(PADDOCK_FAILED)?),
        None => None,
    };
    let manifest = match &attachment {
        Some(n) => n.attachment.mounted_into(&spec.manifest),
        None => spec.manifest.clone(),
    };
    let own_files = attachment.as_ref().map(|n| n.attachment.files()).unwrap_or_default();
    let request = SpawnRequest {
        name: &spec.name,
        manifest: &manifest,
        slice,
        cgroups: &layout,
        cgroup_place: Place::run(&cgroup_leaf),
        volumes_root: &volumes_root,
        own_files: &own_files,
        die_with_parent: true,
        // Attached to this process, which no daemon supervises.
        supervised: false,
        // This process has no other thread, so the clone child can be the
        // init without re-executing paddock (the daemon's path, --init-exec).
        init: if args.init_exec { InitMode::Exec } else { InitMode::InPlace },
        // Attached: the sandbox shares this terminal's stdin, stdout and stderr.
        output: None,
        netns: netns.as_ref().map(AsFd::as_fd),
        // It lives and dies with this process, which no successor adopts.
        on_cloned: None,
    };
    let mut sandbox = match sandbox::spawn(&request) {
        Ok(s) => s,
        Err(sandbox::SpawnError::Exec { command, errno }) => {
            eprintln!("paddock run: cannot execute {command}: {}", nix::errno::Errno::from_raw(errno).desc());
            return Ok(if errno == libc::ENOENT { 127 } else { 126 });
        }
        Err(e) => return Err(CliError::new(PADDOCK_FAILED, e.to_string())),
    };
    let signals = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC).map_err(std::io::Error::from)?;
    let pidfd = sandbox.pidfd.take().expect("a sandbox just spawned has its pidfd");
    loop {
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from(e).into()),
            Ok(_) => {}
        }
        if fds[1].any().unwrap_or(false) {
            break;
        }
        if let Ok(Some(info)) = signals.read_signal()
            && let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
        {
            let _ = sandbox.signal(sig);
        }
    }
    let limit = spec.manifest.resources.memory;
    let exit = sandbox.wait();
    drop(attachment);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    match exit {
        Exit::OomKilled => {
            let limit = limit.map(|l| format!(" (memory limit {l})")).unwrap_or_default();
            eprintln!(
                "paddock run: {} was oom-killed: the kernel's OOM killer ended it at its memory limit{limit}",
                spec.name
            );
        }
        Exit::Signal(s) => {
            let name = crate::model::Signal::from_number(s).map_or_else(|| s.to_string(), |s| s.to_string());
            eprintln!("paddock run: {} was killed by {name}", spec.name);
        }
        Exit::Code(_) => {}
    }
    Ok(u8::try_from(exit.code()).unwrap_or(PADDOCK_FAILED))
}

/// The network made for one run: undone when dropped (the workload ended,
/// or its start failed).
struct RunNetwork {
    networks: crate::network::Networks,
    key: crate::model::WorkloadName,
    attachment: crate::network::Attachment,
}

impl Drop for RunNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.networks.detach(&self.key, &mut self.attachment) {
            eprintln!("paddock run: undoing the network: {e}");
        }
    }
}
