//! The `paddock` binary: argument parsing and wiring only.

use std::process::ExitCode;

use clap::Parser;
use paddock::cli::control::Act;
use paddock::cli::{self, Cli, CliError, Command};

mod entry;

fn main() -> ExitCode {
    populate_heap();
    // PID 1 of a sandbox starts here on every workload start: skip building
    // the command line parser and logging (it has neither a user nor a log).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "__init")
        && let Some(fd) = args.next().and_then(|a| a.to_str()?.parse().ok())
    {
        let code = paddock::sandbox::init::main(fd);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    // A process entering a running sandbox (`paddock exec`, health checks).
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "__enter")
        && let Some(fd) = args.next().and_then(|a| a.to_str()?.parse().ok())
    {
        let code = paddock::sandbox::enter::main(fd);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    // The daemon's stop and reload signals wait from its first
    // instructions on (an upgrade's new image too), rather than end it
    // before it listens (`daemon::signals`).
    let daemon = std::env::args_os().nth(1).is_some_and(|a| a == "daemon");
    if daemon {
        paddock::daemon::signals::hold();
    }
    // An empty PADDOCK_SOCKET (`PADDOCK_SOCKET= paddock status`) is unset,
    // not an empty --socket the user never wrote.
    if std::env::var_os("PADDOCK_SOCKET").is_some_and(|v| v.is_empty()) {
        // SAFETY: no other thread runs yet (none is started before this).
        unsafe { std::env::remove_var("PADDOCK_SOCKET") };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // The daemon's arguments are its unit's: a flag it does not know is
        // a configuration error a restart cannot fix (78, which the unit
        // does not restart on), not clap's usage status 2.
        Err(e) if daemon && e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(cli::daemon::CONFIG_ERROR);
        }
        // `exec` and `run` exit with their command's status: any other
        // is 125, a usage error too (as `docker exec` and `docker run`),
        // never a status the command could have had.
        Err(e) if e.use_stderr() && std::env::args_os().nth(1).is_some_and(|a| a == "exec" || a == "run") => {
            let _ = e.print();
            return ExitCode::from(125);
        }
        Err(e) => e.exit(),
    };
    // The daemon tells its story at info; the other commands speak for themselves.
    match &cli.command {
        Command::Daemon(args) => init_logging("info", args.log_format == cli::daemon::LogFormat::Json),
        _ => init_logging("warn", false),
    }
    let name = cli.command.name();
    let result = match cli.command {
        // Reached only when the fast path above could not parse the descriptor.
        Command::Init { fd } => Ok(u8::try_from(paddock::sandbox::init::main(fd)).unwrap_or(125)),
        Command::Check(args) => cli::check::run(args),
        Command::Export(args) => cli::export::run(args),
        Command::Run(args) => cli::run::run(*args),
        Command::Daemon(args) => cli::daemon::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::Logs(args) => cli::logs::run(args),
        Command::Exec(args) => cli::exec::run(args),
        Command::Start(args) => cli::control::act(Act::Start, args),
        Command::Stop(args) => cli::control::act(Act::Stop, args),
        Command::Restart(args) => cli::control::act(Act::Restart, args),
        Command::Reload(args) => cli::control::reload(args),
        Command::Upgrade(args) => cli::control::upgrade(args),
        Command::Plan(args) => cli::control::plan(args),
        Command::Schema(args) => cli::schema::run(args),
        Command::Generate { dir } => cli::generate::run(&dir),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // A closed stdout (`paddock check | head`) is not worth a message.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(0),
        Err(CliError::Io(e)) => {
            eprintln!("paddock {name}: {e}");
            ExitCode::from(2)
        }
        Err(CliError::Failed { message, code }) => {
            eprintln!("paddock {name}: {message}");
            ExitCode::from(code)
        }
    }
}

/// The heap a command starts with, asked of the kernel in one call rather
/// than faulted in page by page (a `paddock run` touches about 190 KiB of
/// it: about 60 faults fewer, bench/PROFILE.md). musl builds (the release
/// binary) only, whose allocator is dlmalloc (Cargo.toml): it keeps what is
/// freed here for the allocations that follow, and returns memory to the
/// kernel only once 2 MiB lie free at its top.
fn populate_heap() {
    #[cfg(target_env = "musl")]
    {
        const FIRST: usize = 192 << 10;
        let mut first = Vec::<u8>::with_capacity(FIRST);
        let at = first.as_mut_ptr().addr();
        let (start, end) = (at.next_multiple_of(4096), (at + FIRST) & !4095);
        // SAFETY: whole pages within `first`'s allocation, owned here and
        // freed only after the call; populating changes no byte of them,
        // it only faults them in. A kernel without MADV_POPULATE_WRITE
        // (before 5.14) fails it, and nothing changes.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) };
    }
}

/// Logs go to stderr (journald takes them from there under systemd);
/// `PADDOCK_LOG` (or `RUST_LOG`) sets the filter.
fn init_logging(default: &str, json: bool) {
    use tracing_subscriber::prelude::*;
    let filter =
        std::env::var("PADDOCK_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::new(filter);
    // Under systemd, stderr is the journal: speak its native protocol, so
    // each event is one entry (however many lines) with its priority and
    // its fields (WORKLOAD=web), and journald stamps the time.
    if !json
        && on_the_journal()
        && let Some(journal) = paddock::journal::Journal::new(paddock::journal::SOCKET, "paddock")
    {
        tracing_subscriber::registry().with(filter).with(journal).init();
        return;
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// Whether stderr is the journal's stream: systemd says so in
/// JOURNAL_STREAM ("DEVICE:INODE" of that stream), as sd_journal's
/// documentation asks services to check.
fn on_the_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().and_then(|v| {
        let (dev, ino) = v.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    }) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|s| s.st_dev == dev && s.st_ino == ino)
}
