//! `paddock __generate DIR`: the man pages and shell completions, written
//! from the same clap definition the binary parses with, so they cannot
//! drift from it. install.sh and packaging/build-deb run it on the binary
//! they install (as ripgrep's `--generate` does): cargo's build scripts may
//! write only to an opaque `OUT_DIR` that packaging cannot name.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Where each file goes under DIR, as install.sh and the Debian package
/// lay them out below `/usr/share`.
const MAN_DIR: &str = "man/man1";
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash-completion/completions/paddock"),
    (Shell::Zsh, "zsh/vendor-completions/_paddock"),
    (Shell::Fish, "fish/vendor_completions.d/paddock.fish"),
];

/// The main page's FILES section (DESIGN.md's "Files").
const FILES: &str = r#".SH FILES
.TP
/etc/paddock/paddock.toml
The daemon's configuration (optional).
.TP
/etc/paddock/workloads/*.toml
One manifest per workload; the file name is the workload's name.
The directory must be owned by root and not writable by group or others.
.TP
/etc/paddock/policies/*.json
Operators' policies, beside the built-in baseline, restricted and privileged.
.TP
/var/lib/paddock/
State: id allocations (idmap.json), sandbox records, held workloads, logs/NAME.log.
.TP
/run/paddock/paddock.sock
The control socket (mode 0600, root only) that status, logs, exec, start, stop, restart, reload, upgrade and plan use.
.SH SEE ALSO
.BR systemctl (1),
.BR subuid (5),
.BR user_namespaces (7)
"#;

/// The pages of `command` (named `name`, run as `bin`) and of each of its
/// visible commands, theirs too (`paddock-export-kubernetes`): not of
/// the hidden ones, nor of clap's `help`, which says what the pages do.
fn pages(name: &str, bin: &str, command: &clap::Command, into: &mut Vec<(String, clap::Command)>) {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let (name, bin) = (format!("{name}-{}", sub.get_name()), format!("{bin} {}", sub.get_name()));
        // The page's title and its usage line name the full command.
        into.push((name.clone(), sub.clone().display_name(name.clone()).bin_name(bin.clone())));
        pages(&name, &bin, sub, into);
    }
}

/// `command` as completions offer it: without its hidden commands (the
/// sandbox's init, this generator) and arguments.
fn visible(command: &clap::Command) -> clap::Command {
    // Leaked: this process writes the files once and exits, and clap
    // names a command it builds with a static string.
    let name: &'static str = Box::leak(command.get_name().to_owned().into_boxed_str());
    // clap adds --help (and --version, given one) again as it builds.
    let generated = |a: &clap::Arg| {
        matches!(
            a.get_action(),
            clap::ArgAction::Help | clap::ArgAction::HelpShort | clap::ArgAction::HelpLong | clap::ArgAction::Version
        )
    };
    let mut shown =
        clap::Command::new(name).args(command.get_arguments().filter(|a| !a.is_hide_set() && !generated(a)).cloned());
    if command.get_version().is_some() {
        shown = shown.version(env!("CARGO_PKG_VERSION"));
    }
    if let Some(about) = command.get_about() {
        shown = shown.about(about.clone());
    }
    // clap's own `help` is added again too.
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        shown = shown.subcommand(visible(sub));
    }
    shown
}

/// Writes `paddock.1`, one `paddock-COMMAND.1` per visible command (and
/// per command of those), and the completions; returns the paths written.
pub fn write(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = dir.join(MAN_DIR);
    std::fs::create_dir_all(&man)?;
    let mut cli = Cli::command();
    cli.build();
    let mut pages_of = vec![("paddock".to_owned(), cli.clone())];
    pages("paddock", "paddock", &cli, &mut pages_of);
    let pages = pages_of;
    for (name, command) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .title(name.to_uppercase())
            .source(concat!("paddock ", env!("CARGO_PKG_VERSION")))
            .manual("paddock manual")
            .render(&mut page)?;
        if name == "paddock" {
            page.extend_from_slice(FILES.as_bytes());
        }
        let path = man.join(format!("{name}.1"));
        std::fs::write(&path, page)?;
        written.push(path);
    }
    for (shell, relative) in COMPLETIONS {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("a relative path with a directory"))?;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut visible(&cli), "paddock", &mut script);
        std::fs::write(&path, script)?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(dir: &Path) -> Result<super::ExitCode, super::CliError> {
    for path in write(dir)? {
        println!("{}", path.display());
    }
    Ok(0)
}
