//! The `paddock` binary: argument parsing and wiring only.

use std::process::ExitCode;

use clap::Parser;
use paddock::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Init { fd } = cli.command {
        // PID 1 of a sandbox: no logging set-up, no stdout of its own.
        let code = paddock::sandbox::init::main(fd);
        return ExitCode::from(u8::try_from(code).unwrap_or(125));
    }
    init_logging();
    let result = match cli.command {
        Command::Init { .. } => unreachable!("handled above"),
        Command::Check(args) => cli::check::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Schema(args) => cli::schema::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // A closed stdout (`paddock check | head`) is not worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(0),
        Err(e) => {
            eprintln!("paddock: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `PADDOCK_LOG` (or `RUST_LOG`) sets the filter.
fn init_logging() {
    let filter =
        std::env::var("PADDOCK_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "warn".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
