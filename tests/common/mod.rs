//! Helpers shared by the validation tests.
#![allow(dead_code)]

pub mod daemon;
pub mod export;
pub mod pss;
pub mod sandbox;

use std::path::Path;

use paddock::validate::{self, Checked, HostChecks, Validator};

pub const VOLUMES_ROOT: &str = "/var/lib/paddock/volumes";

pub fn validator(policies: &[&str]) -> Validator {
    let names: Vec<String> = policies.iter().map(|s| s.to_string()).collect();
    let policies = validate::load_policies(&names, None, Path::new(VOLUMES_ROOT)).expect("built-in policies load");
    Validator::new(policies)
}

pub fn check(policies: &[&str], file_name: &str, text: &str) -> Checked {
    validator(policies).validate(file_name, text, HostChecks::Skip)
}

/// A problem as a test compares it: `LINE:COL: severity: message [policy/rule]`.
pub fn lines(file_name: &str, text: &str, checked: &Checked) -> Vec<String> {
    checked
        .problems
        .iter()
        .map(|p| {
            let at = p.locate(file_name, text);
            let rule = match (at.policy, at.rule) {
                (Some(policy), Some(rule)) => format!(" [{policy}/{rule}]"),
                _ => String::new(),
            };
            let severity = match at.severity {
                validate::Severity::Error => "error",
                validate::Severity::Warning => "warning",
            };
            format!("{}:{}: {severity}: {}{rule}", at.line, at.column, at.message)
        })
        .collect()
}

/// Validates with `baseline` and returns the problem lines.
pub fn baseline_problems(text: &str) -> Vec<String> {
    let checked = check(&["baseline"], "t.toml", text);
    lines("t.toml", text, &checked)
}

/// A mount a test made on the host, detached when dropped (also when the
/// test fails first).
pub struct Mounted(pub std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A file a test made outside its temporary directory, removed when
/// dropped (also when the test fails first).
pub struct Removed(pub std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process a test started, killed and reaped when dropped (also
/// when the test fails first, which would otherwise wait for it).
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's output, line by line (without the newline), read beside the
/// test, so a child that prints nothing fails a `recv_timeout` instead of
/// hanging the test.
pub fn output_lines(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// What a pseudo-terminal's master reads until its slave side is closed
/// everywhere (the read then fails with EIO).
pub fn read_until_hangup(master: std::os::fd::OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut master = std::fs::File::from(master);
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}
