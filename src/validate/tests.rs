use super::*;

/// A limit whose cgroup controller the daemon's cgroups lack: `check`
/// warns; to the daemon the file is invalid, as its start would fail at
/// once (an edit bringing it stops nothing); the manifest a running
/// sandbox was started from is not refused for it, its cgroup made.
#[test]
fn a_limit_with_no_controller_is_an_error_to_the_daemon_but_not_for_a_running_sandbox() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("cgroup.controllers"), "memory pids\n").unwrap();
    let layout = crate::sandbox::cgroup::Layout::detect(root.path());
    let validator = Validator::new(Vec::new()).with_cgroups(layout);
    let text = "command = [\"x\"]\n[resources]\npids = 64\ncpu = 0.5\n";
    let daemon = validator.validate("w.toml", text, HostChecks::Require);
    assert!(daemon.spec.is_none());
    let [problem] = &daemon.problems[..] else { panic!("{:?}", daemon.problems) };
    assert!(
        problem.is_error() && problem.message.starts_with("cpu limit needs the cpu cgroup controller"),
        "{problem:?}"
    );
    assert_eq!(line_col(text, problem.span.clone().unwrap().start), (4, 7));
    assert!(problem.help.as_deref().is_some_and(|h| h.contains("remove the limit, or enable the controller")));
    let check = validator.validate("w.toml", text, HostChecks::Warn);
    assert!(check.spec.is_some() && !check.problems[0].is_error(), "`check` warns: {:?}", check.problems);
    let started = validator.validate_started("w.toml", text);
    assert!(started.spec.is_some() && started.problems.is_empty(), "{:?}", started.problems);
    assert!(validator.validate("w.toml", text, HostChecks::Skip).problems.is_empty());
    let fits = "command = [\"x\"]\n[resources]\npids = 64\n";
    assert!(validator.validate("w.toml", fits, HostChecks::Require).problems.is_empty());
}
