//! `paddock check` through the real binary: exit codes, the summary line,
//! JSON output, directories, ignore rules, and input of every bad kind.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

const VALID: &str = "command = [\"/bin/true\"]\n";

fn paddock() -> Command {
    let mut cmd = Command::cargo_bin("paddock").unwrap();
    cmd.env("NO_COLOR", "1").timeout(Duration::from_secs(20));
    cmd
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(args: &[&str], paths: &[&Path]) -> Run {
    // Not this host's configuration: the built-in defaults, unless a test names one.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = paddock();
    cmd.arg("check").args(args);
    if !args.contains(&"--config") {
        cmd.arg("--config").arg(empty.path());
    }
    let out = cmd.args(paths).output().unwrap();
    Run {
        code: out.status.code().expect("paddock check was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn valid_files_exit_0_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", VALID);
    let b = write(dir.path(), "b.toml", VALID);
    let run = check(&[], &[&a, &b]);
    assert_eq!((run.code, run.stdout.as_str()), (0, "2 files, 2 valid, 0 invalid\n"), "{}", run.stderr);
}

#[test]
fn an_invalid_file_exits_1_and_is_shown_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", VALID);
    let bad = write(dir.path(), "bad.toml", "command = [\"x\"]\n[namespaces]\nnetwork = \"host\"\n");
    let run = check(&[], &[&good, &bad]);
    assert_eq!(run.code, 1);
    let expected = format!(
        "{}:3:11: error: policy baseline refuses this: `namespaces.network = \"host\"` is not allowed\n  |\n3 | network = \"host\"\n  |           ^^^^^^\n  = policy: baseline, rule: no-host-network-with-remap\n",
        bad.display()
    );
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
    assert!(run.stdout.ends_with("2 files, 1 valid, 1 invalid\n"), "{}", run.stdout);
    assert!(!run.stdout.contains('\x1b'), "no colour when stdout is not a terminal");
}

#[test]
fn json_output_has_every_problem_and_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", "comand = 1\n[security]\nprivileged = true\n");
    let run = check(&["--format", "json"], &[&bad]);
    assert_eq!(run.code, 1);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (report["files"].as_u64(), report["valid"].as_u64(), report["invalid"].as_u64()),
        (Some(1), Some(0), Some(1))
    );
    let problems = report["problems"].as_array().unwrap();
    let summary: Vec<(u64, u64, &str)> = problems
        .iter()
        .map(|p| (p["line"].as_u64().unwrap(), p["column"].as_u64().unwrap(), p["message"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [(1, 1, "missing required key `command`"), (1, 1, "unknown key `comand` at the top level")]);
    assert_eq!(problems[0]["file"], bad.display().to_string());
    assert_eq!(problems[0]["severity"], "error");
    assert!(problems[0]["policy"].is_null() && problems[0]["rule"].is_null());

    let policy = write(dir.path(), "p.toml", "command = [\"x\"]\n[security]\nprivileged = true\n");
    let report: serde_json::Value = serde_json::from_str(&check(&["--format", "json"], &[&policy]).stdout).unwrap();
    assert_eq!(report["problems"][0]["policy"], "baseline");
    assert_eq!(report["problems"][0]["rule"], "no-privileged-with-remap");
    assert_eq!((report["problems"][0]["line"].as_u64(), report["problems"][0]["column"].as_u64()), (Some(3), Some(14)));
}

#[test]
fn a_directory_means_its_manifests_with_the_daemons_ignore_rules() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.toml", VALID);
    write(dir.path(), "worker.toml", VALID);
    // Each of these would be invalid if it were read.
    for ignored in
        [".hidden.toml", "web.toml~", "web.toml.swp", "web.toml.tmp", "web.toml.dpkg-new", "notes.txt", "README"]
    {
        write(dir.path(), ignored, "not = [valid");
    }
    let run = check(&[], &[dir.path()]);
    // What the daemon ignores on purpose is not mentioned; a file that is
    // no manifest is said to be not read.
    let not_read = |f: &str| {
        format!(
            "{}: not read: only *.toml files are manifests (the daemon does not read it either)\n",
            dir.path().join(f).display()
        )
    };
    let expected = format!("{}{}2 files, 2 valid, 0 invalid\n", not_read("README"), not_read("notes.txt"));
    assert_eq!((run.code, run.stdout.as_str()), (0, expected.as_str()));
}

#[test]
fn policies_are_chosen_by_name_and_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.toml", VALID);
    let run = check(&["--policy", "restricted"], &[&file]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("rule: memory-limit-required"), "{}", run.stdout);

    let policies = tempfile::tempdir().unwrap();
    write(
        policies.path(),
        "no-root.json",
        r#"{"allOf": [{"title": "not-root", "description": "run as a user", "properties": {"user": {"minimum": 1}}}]}"#,
    );
    let dir_arg = policies.path().to_str().unwrap();
    let run = check(&["--policy-dir", dir_arg, "--policy", "baseline", "--policy", "no-root"], &[&file]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("policy no-root refuses this: `user` must be at least 1, not 0 (the default)"),
        "{}",
        run.stdout
    );

    assert!(!run.stderr.contains("never applies"), "{}", run.stderr);
    // A rule on a key no manifest has (a typo) never applies: said.
    write(policies.path(), "typo.json", r#"{"properties": {"usr": {"minimum": 1}}}"#);
    let run = check(&["--policy-dir", dir_arg, "--policy", "typo"], &[&file]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("policy typo: the rule on `/usr` never applies: no manifest has that key (did you mean `user`?)"),
        "{}",
        run.stderr
    );

    let run = check(&["--policy", "nope"], &[&file]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "paddock check: unknown policy `nope`; known policies: baseline, restricted, privileged, and NAME.json for \
         each file in /etc/paddock/policies\n"
    );
}

#[test]
fn the_daemons_configuration_chooses_the_policies_and_restart_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.toml", VALID);
    let restricted = write(dir.path(), "restricted.toml", "policies = [\"restricted\"]\n");
    let run = check(&["--config", restricted.to_str().unwrap()], &[&file]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("rule: memory-limit-required"), "{}", run.stdout);
    // A flag beats the configuration.
    let run = check(&["--config", restricted.to_str().unwrap(), "--policy", "baseline"], &[&file]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // A manifest's backoff over the configuration's backoff_max, as the daemon refuses it.
    let slow = write(dir.path(), "slow.toml", "command = [\"/bin/true\"]\n[restart]\nbackoff = \"5s\"\n");
    let capped = write(dir.path(), "capped.toml", "[restart]\nbackoff_max = \"2s\"\n");
    let run = check(&["--config", capped.to_str().unwrap()], &[&slow]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("error: backoff (5s) is longer than backoff_max (2s)"), "{}", run.stdout);
    assert_eq!(check(&[], &[&slow]).code, 0, "the built-in backoff_max is 30s");

    // A remapped workload's ids are those of the configuration's slice size.
    let high = write(dir.path(), "high.toml", "command = [\"/bin/true\"]\nuser = 1000\n");
    let small = write(dir.path(), "small.toml", "[remap]\nslice_size = 1000\n");
    let run = check(&["--config", small.to_str().unwrap()], &[&high]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("error: user 1000 is outside the workload's 1000 ids (0-999)"), "{}", run.stdout);
    assert_eq!(check(&[], &[&high]).code, 0, "the built-in slice is 65536 ids");

    let run = check(&["--config", dir.path().join("missing.toml").to_str().unwrap()], &[&file]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("missing.toml"), "{}", run.stderr);

    // What the configuration says that does nothing is warned of at its line; the check goes on.
    let tuned = write(dir.path(), "tuned.toml", "[network]\nchain = [\"portmap\", \"tuning\"]\n");
    let run = check(&["--config", tuned.to_str().unwrap()], &[&file]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let said = format!("{}:2:21: warning: `tuning` in network.chain does nothing", tuned.display());
    assert!(run.stderr.contains(&said), "{}", run.stderr);
}

#[test]
fn a_policy_file_others_could_change_is_refused_when_root_reads_it() {
    assert!(nix::unistd::geteuid().is_root(), "this test gives a policy file to another user and must run as root");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.toml", VALID);
    let policies = tempfile::tempdir().unwrap();
    let policy = write(
        policies.path(),
        "open.json",
        r#"{"allOf": [{"title": "anything", "description": "allows everything"}]}"#,
    );
    let dir_arg = policies.path().to_str().unwrap();
    let run = |d: &str| check(&["--policy-dir", d, "--policy", "open"], &[&file]);
    assert_eq!(run(dir_arg).code, 0, "root's own, 0644");
    std::os::unix::fs::chown(&policy, Some(1000), None).unwrap();
    let r = run(dir_arg);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("open.json is owned by uid 1000, not root: whoever owns it chooses what the daemon lets workloads do; run `chown root"),
        "{}",
        r.stderr
    );
    std::os::unix::fs::chown(&policy, Some(0), None).unwrap();
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
    let r = run(dir_arg);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("open.json is writable by its group (mode 0664)"), "{}", r.stderr);
    // Another user (a CI job in its checkout) reads it as it is: nothing
    // of theirs runs as root.
    for d in [dir.path(), policies.path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("paddock"));
    cmd.args(["check", "--policy-dir", dir_arg, "--policy", "open"]).arg(&file).env("NO_COLOR", "1");
    let out = cmd.uid(65534).gid(65534).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // A FIFO named as a policy is refused for them too, not waited on
    // (nothing would ever write to it).
    nix::unistd::mkfifo(&policies.path().join("fifo.json"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("paddock"));
    cmd.args(["check", "--policy-dir", dir_arg, "--policy", "fifo"]).arg(&file).env("NO_COLOR", "1");
    let mut child = cmd.uid(65534).gid(65534).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("paddock check waited on a FIFO named as a policy");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("fifo.json is not a regular file"), "{err}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let run = check(&[], &[]);
    assert_eq!(run.code, 2, "no path is a usage error");
    assert!(run.stderr.contains("PATH"), "{}", run.stderr);

    let run = check(&["--format", "yaml"], &[Path::new("x.toml")]);
    assert_eq!(run.code, 2);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let good = write(dir.path(), "good.toml", VALID);
    let run = check(&[], &[&good, &missing]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!("cannot read {}: No such file or directory", missing.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.ends_with("1 files, 1 valid, 0 invalid\n"),
        "the readable file is still checked: {}",
        run.stdout
    );

    let broken_policy = tempfile::tempdir().unwrap();
    write(broken_policy.path(), "bad.json", "{");
    let run = check(&["--policy-dir", broken_policy.path().to_str().unwrap()], &[&good]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("bad.json:1:1: error: not valid JSON"), "{}", run.stderr);
}

#[test]
fn an_unreadable_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret.toml", VALID);
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // As root every file is readable, so read it as `nobody`.
    let bin = assert_cmd::cargo::cargo_bin("paddock");
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["check", "--policy-dir", "/nonexistent"]).arg(&secret).env("NO_COLOR", "1");
    let out = cmd.uid(65534).gid(65534).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_input_gives_an_error_never_a_panic_or_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (write(d, "garbage.toml", &garbage), "not valid UTF-8"),
        (
            write(d, "latin1.toml", b"command = [\"caf\xe9\"]\n"),
            "1:16: error: the file is not valid UTF-8 (at byte 15)",
        ),
        (write(d, "big.toml", vec![b'#'; 10 << 20]), "manifests are limited to 1048576 bytes (1 MiB)"),
        (write(d, "deep.toml", format!("command = {}\"x\"{}\n", "[".repeat(5000), "]".repeat(5000))), "error:"),
        (
            write(
                d,
                "deep-tables.toml",
                format!("command = [\"x\"]\nx = {}1{}\n", "{a = ".repeat(3000), "}".repeat(3000)),
            ),
            "error:",
        ),
        (write(d, "dup.toml", "command = [\"x\"]\ncommand = [\"y\"]\n"), "2:1: error: TOML syntax: duplicate key"),
        (write(d, "nul.toml", "command = [\"x\"]\0\n"), "error:"),
        (write(d, "empty.toml", ""), "missing required key `command`"),
    ];
    std::fs::create_dir(d.join("dir.toml")).unwrap();
    nix_mkfifo(&d.join("fifo.toml"));
    // A device no driver answers (major 240, for local use): its open would
    // fail, or act; it is refused by its type, never opened.
    let dev = std::ffi::CString::new(d.join("dev.toml").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mknod has no other preconditions.
    let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(240, 0)) };
    assert_eq!(made, 0, "mknod (this test needs root): {}", std::io::Error::last_os_error());
    for (path, expected) in &cases {
        let run = check(&["--policy-dir", "/nonexistent"], &[path]);
        assert_eq!(run.code, 1, "{}: {}{}", path.display(), run.stdout, run.stderr);
        assert!(run.stdout.contains(expected), "{}: expected {expected:?} in\n{}", path.display(), run.stdout);
    }
    let run = check(&[], &[d]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("dir.toml:1:1: error: a directory is not a manifest"), "{}", run.stdout);
    assert!(run.stdout.contains("fifo.toml:1:1: error: a FIFO is not a manifest"), "{}", run.stdout);
    assert!(run.stdout.contains("dev.toml:1:1: error: a device is not a manifest"), "{}", run.stdout);
    assert!(
        run.stdout.ends_with(&format!("{} files, 0 valid, {} invalid\n", cases.len() + 3, cases.len() + 3)),
        "{}",
        run.stdout
    );
}

/// A manifest that is a symbolic link leading to no file (its target
/// removed, a commit that linked to a file it did not add) is an invalid
/// manifest, as the daemon has it, saying where it leads: not a file that
/// could not be read (exit 2 is for "could not check at all").
#[test]
fn a_manifest_that_is_a_link_leading_nowhere_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.toml", VALID);
    let target = dir.path().join("common").join("web.toml");
    let link = dir.path().join("web.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let said = format!(
        "{}:1:1: error: a symbolic link to {}, and no file is there: make it lead to a manifest, or remove it\n",
        link.display(),
        target.display()
    );
    for named in [dir.path(), link.as_path()] {
        let run = check(&[], &[named]);
        assert_eq!(run.code, 1, "{}: {}{}", named.display(), run.stdout, run.stderr);
        assert!(run.stdout.starts_with(&said), "{}: {}", named.display(), run.stdout);
        assert_eq!(run.stderr, "", "{}", named.display());
    }
    let run = check(&[], &[dir.path()]);
    assert!(run.stdout.ends_with("2 files, 1 valid, 1 invalid\n"), "{}", run.stdout);
    // Checked as the daemon's workloads directory, said once (the daemon
    // refuses it for what `check` said already).
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("workloads = {:?}\n", dir.path().display().to_string())).unwrap();
    let run = check(&["--config", config.path().to_str().unwrap()], &[dir.path()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{said}\n2 files, 1 valid, 1 invalid\n"));
}

/// So is one that loops (`web.toml` -> `web.toml`): invalid, saying so,
/// not exit 2 with "Too many levels of symbolic links".
#[test]
fn a_manifest_that_is_a_link_that_loops_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("web.toml");
    std::os::unix::fs::symlink("web.toml", &link).unwrap();
    let said = format!(
        "{}:1:1: error: a symbolic link to web.toml, which loops (too many levels of links): make it lead to a manifest, or remove it\n",
        link.display()
    );
    for named in [dir.path(), link.as_path()] {
        let run = check(&[], &[named]);
        assert_eq!(run.code, 1, "{}: {}{}", named.display(), run.stdout, run.stderr);
        assert!(run.stdout.starts_with(&said), "{}: {}", named.display(), run.stdout);
        assert_eq!(run.stderr, "", "{}", named.display());
    }
    // As the daemon's workloads directory: said once.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("workloads = {:?}\n", dir.path().display().to_string())).unwrap();
    let run = check(&["--config", config.path().to_str().unwrap()], &[dir.path()]);
    assert_eq!(run.stdout, format!("{said}\n1 files, 0 valid, 1 invalid\n"));
}

/// A generated file gone wrong (a command of 250,000 empty strings, on one
/// line or one a line) is refused with its first problems, each quoting
/// at most a window of its line, and a count of the rest: not gigabytes
/// of output, nor minutes of work.
#[test]
fn a_file_with_thousands_of_problems_is_shown_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let items = vec!["\"\""; 250_000];
    let head = |s: &str| s.chars().take(4096).collect::<String>();
    let one_line = write(dir.path(), "one-line.toml", format!("command = [{}]\n", items.join(",")));
    let many_lines = write(dir.path(), "many-lines.toml", format!("command = [\n{}\n]\n", items.join(",\n")));
    for (path, line) in [(&one_line, "1:12"), (&many_lines, "2:1")] {
        let run = check(&["--policy-dir", "/nonexistent"], &[path]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stdout.len() < 64 << 10, "{} bytes of output", run.stdout.len());
        assert_eq!(run.stdout.matches(": error: ").count(), 50, "{}", head(&run.stdout));
        assert!(run.stdout.contains(&format!("{line}: error: ")), "{}", head(&run.stdout));
        assert!(run.stdout.contains(": error: 249951 more problems from here on, not shown"), "{}", run.stdout);
    }
    // The long line is cut around each caret, and says so.
    let run = check(&["--policy-dir", "/nonexistent"], &[&one_line]);
    let quoted = run.stdout.lines().find(|l| l.starts_with("1 | ")).unwrap();
    assert!(quoted.chars().count() < 130 && quoted.ends_with('…'), "{quoted}");
}

/// A manifest's bytes (a raw escape in a comment, a decoded one in a
/// value) never reach the terminal of whoever checks it.
#[test]
fn control_characters_in_a_manifest_are_shown_escaped() {
    let d = tempfile::tempdir().unwrap();
    let raw = write(d.path(), "raw.toml", "command = [\"/bin/true\"] # \x1b]0;pwned\x07\n");
    let decoded =
        write(d.path(), "decoded.toml", "command = [\"/bin/true\"]\nhostname = \"\\u001b]52;c;aGk=\\u0007\"\n");
    for path in [raw, decoded] {
        let run = check(&[], &[&path]);
        assert_eq!(run.code, 1, "{}", run.stdout);
        assert!(!run.stdout.contains('\x1b') && !run.stdout.contains('\x07'), "{:?}", run.stdout);
        assert!(run.stdout.contains("\\x1b") || run.stdout.contains("\\u{1b}"), "{:?}", run.stdout);
    }
}

fn nix_mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = paddock().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/workload.schema.json")).unwrap();
    assert_eq!(out.stdout, committed);
}

#[test]
fn help_explains_the_command() {
    let out = paddock().args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
    for words in [
        "Exit status: 0 when every file is valid, 1 when any is invalid, 2",
        "--policy <NAME>",
        "--policy-dir <DIR>",
        "--format <FORMAT>",
    ] {
        assert!(help.contains(words), "--help lacks {words:?}:\n{help}");
    }
}

#[test]
fn run_help_says_what_it_writes_on_the_host() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for said in ["idmap.json", "/etc/subuid", "--state-dir"] {
        assert!(help.contains(said), "paddock run --help does not say {said}:\n{help}");
    }
    // A slice of no ids is a usage error, not a division by zero; 125, as
    // every failure of paddock's own (its other statuses are the command's).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["run", "--slice-size", "0", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 is not in 1..="),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_warns_of_a_limit_this_hosts_cgroups_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    // A cgroup v2 tree without the memory controller.
    let cgroups = dir.path().join("cgroup");
    std::fs::create_dir(&cgroups).unwrap();
    std::fs::write(cgroups.join("cgroup.controllers"), "cpu pids\n").unwrap();
    let manifest = dir.path().join("web.toml");
    std::fs::write(&manifest, "command = [\"/bin/true\"]\n[resources]\nmemory = \"64MiB\"\npids = 10\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["check", "--cgroup-root"])
        .arg(&cgroups)
        .arg(&manifest)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "web.toml:3:10: warning: memory limit needs the memory cgroup controller, which this host does not have"
        ),
        "{said}"
    );
    assert!(said.contains("cgroup.controllers does not list it"), "{said}");
    assert!(!said.contains("pids limit"), "pids is there: {said}");
}

/// What a start on this host would refuse of a mount source (the host's
/// /proc, a file below a directory others may not enter) is a warning of
/// `check`'s, at the source's line; with --no-host-checks, nothing.
#[test]
fn a_mount_source_a_start_here_would_refuse_is_warned_of_at_its_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("secret"), "").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let text = format!(
        "command = [\"/bin/true\"]\n[[mounts]]\nsource = \"/proc\"\ntarget = \"/h\"\n[[mounts]]\nsource = {:?}\ntarget = \"/s\"\n",
        locked.join("secret").display().to_string()
    );
    let manifest = write(dir.path(), "agent.toml", text);
    let run = check(&[], &[&manifest]);
    assert_eq!(run.code, 0, "warnings only: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("agent.toml:3:10: warning: on this host the workload would not start: mount source /proc is on the host's proc filesystem"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("a directory others may not enter (mode 0700)"), "{}", run.stdout);
    let run = check(&["--no-host-checks"], &[&manifest]);
    assert!(!run.stdout.contains("warning"), "{}", run.stdout);
}

/// A networked workload whose CNI plugins this host has not is warned
/// of: the daemon's start would fail (it said "1 valid": helper-103).
#[test]
fn a_network_whose_plugins_this_host_lacks_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let web = write(dir.path(), "web.toml", "command = [\"/bin/true\"]\nports = [\"8080:80\"]\n");
    let config = write(dir.path(), "paddock.toml", "[network]\nplugin_dirs = [\"/nonexistent/cni\"]\n");
    let run = check(&["--config", config.to_str().unwrap()], &[&web]);
    assert_eq!(run.code, 0, "a warning only: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "web.toml:2:9: warning: on this host the workload would fail to start: the CNI plugin `bridge` is not in /nonexistent/cni (missing)"
        ),
        "{}",
        run.stdout
    );
    let run = check(&["--config", config.to_str().unwrap(), "--no-host-checks"], &[&web]);
    assert!(!run.stdout.contains("warning"), "{}", run.stdout);
}

/// A published host port a host service has is warned of, at its entry:
/// the daemon refuses a new attachment that publishes it.
#[test]
fn a_published_port_a_host_service_has_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = service.local_addr().unwrap().port();
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ports = format!("ports = [\"{free}:53/udp\", \"{port}:80\"]");
    let web = write(dir.path(), "web.toml", format!("command = [\"/bin/true\"]\n{ports}\n"));
    let run = check(&[], &[&web]);
    assert_eq!(run.code, 0, "a warning only: {}{}", run.stdout, run.stderr);
    let column = ports.find(&format!("\"{port}:")).unwrap() + 1;
    let said = format!(
        "web.toml:2:{column}: warning: on this host the workload would fail to start: host port {port}:80/tcp is in use on this host (a host service has it)"
    );
    assert!(run.stdout.contains(&said), "{}", run.stdout);
    assert_eq!(run.stdout.matches("warning").count(), 1, "the free port is not: {}", run.stdout);
    let run = check(&["--no-host-checks"], &[&web]);
    assert!(!run.stdout.contains("warning"), "{}", run.stdout);
    drop(service);
    let run = check(&[], &[&web]);
    assert!(!run.stdout.contains("warning"), "free again: {}", run.stdout);
}

/// A file of the daemon's workloads directory that the daemon refuses as
/// it is (writable by others, not root's) is invalid to `check` too, with
/// the fix; the same file elsewhere (a checkout) is not (helper-103).
#[test]
fn a_file_the_daemon_refuses_for_its_owner_or_mode_is_invalid_in_its_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("wl");
    std::fs::create_dir(&wl).unwrap();
    let open = write(&wl, "open.toml", VALID);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let theirs = write(&wl, "theirs.toml", VALID);
    std::os::unix::fs::chown(&theirs, Some(1000), None).unwrap();
    let fine = write(&wl, "fine.toml", VALID);
    let config = write(dir.path(), "paddock.toml", format!("workloads = {:?}\n", wl.display().to_string()));
    let cfg = ["--config", config.to_str().unwrap()];
    let run = check(&cfg, &[&wl]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("3 files, 1 valid, 2 invalid"), "{}", run.stdout);
    assert!(
        run.stdout.contains("the daemon refuses this file as it is") && run.stdout.contains("chmod go-w"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("not root") && run.stdout.contains("chown root"), "{}", run.stdout);
    assert_eq!(check(&cfg, &[&fine]).code, 0);
    assert_eq!(check(&[&cfg[..], &["--no-host-checks"]].concat(), &[&open]).code, 0);
    // Elsewhere, the daemon does not read it: no word of its owner or mode.
    let elsewhere = write(dir.path(), "open.toml", VALID);
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(check(&cfg, &[&elsewhere]).code, 0);
}

/// An `after` that names no manifest: an error when the directory is
/// checked; of files named one by one, a warning unless a manifest beside
/// them is it (the Quick start checks one file, a shell glob many).
#[test]
fn an_after_naming_no_manifest_is_an_error_of_a_directory_and_a_warning_of_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = write(dir.path(), "app.toml", "command = [\"/bin/true\"]\nafter = [\"db\", \"nosuch\"]\n");
    let db = write(dir.path(), "db.toml", VALID);
    let run = check(&[], &[dir.path()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("app.toml:2:16: error: no manifest defines `nosuch`"), "{}", run.stdout);
    assert!(!run.stdout.contains("`db`"), "{}", run.stdout);
    for named in [vec![app.as_path()], vec![app.as_path(), db.as_path()]] {
        let run = check(&[], &named);
        assert_eq!(run.code, 0, "a warning: {}", run.stdout);
        assert!(
            run.stdout.contains("app.toml:2:16: warning: no manifest checked, or beside those, defines `nosuch`"),
            "{}",
            run.stdout
        );
        assert!(!run.stdout.contains("`db`"), "db.toml is beside it: {}", run.stdout);
    }
}

/// A file of a checked directory that is no manifest (`web.yaml`) is said
/// to be not read, as the daemon does not read it; what the daemon ignores
/// on purpose (dotfiles, editors' temporaries) is not.
#[test]
fn a_file_of_a_directory_that_is_no_manifest_is_said_to_be_not_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "web.toml", VALID);
    let yaml = write(dir.path(), "web.yaml", "command: [/bin/true]\n");
    write(dir.path(), ".hidden", "");
    write(dir.path(), "web.toml~", VALID);
    let run = check(&[], &[dir.path()]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let said = format!("{}: not read: only *.toml files are manifests", yaml.display());
    assert!(run.stdout.contains(&said), "{}", run.stdout);
    assert_eq!(run.stdout.lines().filter(|l| l.contains(": not read:")).count(), 1, "{}", run.stdout);
    let run = check(&["--format", "json"], &[dir.path()]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["not_read"], serde_json::json!([yaml.display().to_string()]), "{report}");
}

/// `paddock run FILE -- CMD` is checked against the policies as it will
/// run: a rule on `command` refuses the command given after `--`, and
/// nothing is started. (Only the file's own command was checked.)
#[test]
fn run_checks_the_command_given_after_the_double_dash_against_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let rule = r#"{"title": "no-shell", "properties": {"command": {"prefixItems": [{"not": {"const": "/bin/sh"}}]}}}"#;
    write(&policies, "no-shell.json", rule);
    let manifest = write(dir.path(), "t.toml", VALID);
    let config = write(dir.path(), "paddock.toml", "");
    let out = paddock()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--policy", "baseline", "--policy", "no-shell", "--policy-dir"])
        .arg(&policies)
        .arg(&manifest)
        .args(["--", "/bin/sh", "-c", "echo ran"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(125), "{stdout}{stderr}");
    assert!(!stdout.contains("ran"), "{stdout}");
    assert!(stderr.contains("policy no-shell refuses this"), "{stderr}");
    assert!(
        stderr.contains(&format!("{} with -- CMD is invalid; nothing was started", manifest.display())),
        "{stderr}"
    );
}

/// `--cgroup-root` is for the host checks: with `--no-host-checks` it
/// would do nothing, and is refused as a usage error. (It was ignored.)
#[test]
fn check_refuses_a_cgroup_root_with_no_host_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "t.toml", VALID);
    let run = check(&["--no-host-checks", "--cgroup-root", "/sys/fs/cgroup"], &[&file]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}
