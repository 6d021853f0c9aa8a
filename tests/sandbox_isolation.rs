//! `[namespaces]` and `[security]`: what a workload can see and do.
//! (Root and user namespaces required.)

mod common;

use common::sandbox::{World, busybox_manifest, stderr, stdout};
use paddock::model::Capability;

fn run(w: &World, name: &str, command: &str, extra: &str) -> (Option<i32>, String, String) {
    let out = w.run(&[], &w.manifest(name, &busybox_manifest(command, extra)), &[]);
    (out.status.code(), stdout(&out), stderr(&out))
}

#[test]
fn private_namespaces_show_only_the_workload() {
    let w = World::new();
    let (code, out, err) = run(&w, "seer", "ls /proc | grep -c '^[0-9]'; ls /sys/class/net; hostname", "");
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let pids: usize = lines[0].parse().unwrap();
    assert!((1..=5).contains(&pids), "only a few pids are visible inside, saw {pids}: {out}");
    assert_eq!(&lines[1..], ["lo", "seer"], "only lo, and the workload's name as hostname");
}

#[test]
fn loopback_is_up_in_a_private_network() {
    let w = World::new();
    let (code, out, err) = run(&w, "net", "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags", "");
    assert_eq!(code, Some(0), "{err}");
    let flags = u32::from_str_radix(out.lines().nth(1).unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP is set on lo: {out}");
}

#[test]
fn security_defaults_show_in_proc_status() {
    let w = World::new();
    let (code, out, err) =
        run(&w, "sec", "grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status", "hostname = \"custom\"\n");
    assert_eq!(code, Some(0), "{err}");
    let expected = Capability::DEFAULT_SET.iter().fold(0u64, |m, c| m | 1 << c.number());
    assert!(out.contains("NoNewPrivs:\t1\n"), "{out}");
    assert!(out.contains("Seccomp:\t2\n"), "{out}");
    assert!(out.contains(&format!("CapEff:\t{expected:016x}\n")), "expected {expected:016x}: {out}");
    assert!(out.contains(&format!("CapBnd:\t{expected:016x}\n")), "{out}");
}

#[test]
fn added_capabilities_and_a_non_root_user() {
    let w = World::new();
    // Every capability baseline allows is already in the default set; the
    // privileged policy lets a manifest add one that is not.
    let text = busybox_manifest("grep CapEff /proc/self/status", "[security]\ncapabilities = [\"SYS_PTRACE\"]\n");
    let out = w.run(&["--policy", "privileged"], &w.manifest("caps", &text), &[]);
    let expected =
        Capability::DEFAULT_SET.iter().fold(0u64, |m, c| m | 1 << c.number()) | 1 << Capability::SysPtrace.number();
    assert_eq!(stdout(&out), format!("CapEff:\t{expected:016x}\n"), "{}", stderr(&out));
    let (code, out, err) =
        run(&w, "user", "id -u; id -g; grep CapEff /proc/self/status", "user = 1000\ngroup = 1001\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "1000\n1001\nCapEff:\t0000000000000000\n", "a non-root user has no capabilities, as in Docker");
}

#[test]
fn a_readonly_root_refuses_writes_and_tmp_is_writable() {
    let w = World::new();
    let (code, out, err) = run(&w, "ro", "touch /etc/x 2>&1; echo ok > /tmp/y && cat /tmp/y", "");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
    // The host's / as rootfs, read-only too.
    let out = w.run(&[], &w.manifest("hostroot", "command = [\"/bin/sh\", \"-c\", \"touch /usr/x\"]\n"), &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("Read-only file system"), "{}", stderr(&out));
}

#[test]
fn mount_unshare_and_module_loading_fail_inside() {
    let w = World::new();
    let script = "mount -t tmpfs none /tmp 2>&1 && echo MOUNTED; unshare --user true 2>&1 && echo UNSHARED; \
                  insmod /nonexistent.ko 2>&1; echo; cat /proc/self/status | grep Seccomp";
    let (_, out, _) = run(&w, "escape", script, "");
    assert!(!out.contains("MOUNTED") && !out.contains("UNSHARED"), "{out}");
    assert!(out.contains("mount: permission denied") || out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare: unshare(0x10000000): Operation not permitted"), "{out}");
    // busybox insmod reads the file first; the seccomp filter refuses init_module itself.
    let module = w.path("fake.ko");
    std::fs::write(&module, b"\x7fELF not really a module").unwrap();
    let text = busybox_manifest(
        "insmod /m/fake.ko 2>&1; echo rc=$?",
        &format!("[[mounts]]\nsource = {:?}\ntarget = \"/m/fake.ko\"\n", module.display().to_string()),
    );
    let out = w.run(&[], &w.manifest("insmod", &text), &[]);
    assert!(stdout(&out).contains("Operation not permitted"), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn seccomp_unconfined_turns_the_filter_off() {
    let w = World::new();
    let out = w.run(
        &["--policy", "privileged"],
        &w.manifest(
            "unconfined",
            &busybox_manifest("grep Seccomp: /proc/self/status", "[security]\nseccomp = \"unconfined\"\n"),
        ),
        &[],
    );
    assert_eq!(stdout(&out), "Seccomp:\t0\n", "{}", stderr(&out));
}

#[test]
fn a_privileged_workload_has_the_hosts_devices_and_others_only_six() {
    // The host's /dev/kmsg (top level) and /dev/net/tun (in a directory),
    // which no workload gets otherwise; /dev/pts stays the sandbox's own.
    for dev in ["/dev/kmsg", "/dev/net/tun"] {
        assert!(std::fs::exists(dev).unwrap(), "this test needs the host's {dev}");
    }
    let w = World::new();
    let script = "for d in /dev/kmsg /dev/net/tun /dev/null; do [ -c $d ] && echo $d; done; ls /dev/pts";
    let text = busybox_manifest(script, "[security]\nprivileged = true\n");
    let out = w.run(&["--policy", "privileged"], &w.manifest("devices", &text), &[]);
    assert_eq!(stdout(&out), "/dev/kmsg\n/dev/net/tun\n/dev/null\nptmx\n", "{}", stderr(&out));
    let (code, out, err) = run(&w, "six", script, "");
    assert_eq!((code, out.as_str()), (Some(0), "/dev/null\nptmx\n"), "{err}");
}

#[test]
fn host_network_and_pid_namespaces_when_a_policy_allows_them() {
    let w = World::new();
    let text = busybox_manifest(
        "ls /sys/class/net | grep -vc '^lo$'; ls /proc | grep -c '^[0-9]'",
        "[namespaces]\nnetwork = \"host\"\npid = \"host\"\n",
    );
    let out = w.run(&["--policy", "privileged"], &w.manifest("hostns", &text), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let counts: Vec<usize> = stdout(&out).lines().map(|l| l.parse().unwrap()).collect();
    assert!(counts[0] >= 1, "the host's interfaces are visible: {counts:?}");
    assert!(counts[1] > 10, "the host's processes are visible: {counts:?}");
    // The baseline policy refuses this manifest before anything starts.
    let out = w.run(&[], &w.path("hostns.toml"), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("rule: no-host-network-with-remap"), "{}", stderr(&out));
}

#[test]
fn the_daemons_exec_init_gives_the_same_sandbox_as_the_in_place_one() {
    // `paddock run` runs the init in its clone child; the daemon (which has
    // threads) re-executes paddock instead. Both must build the same sandbox.
    let w = World::new();
    // The processes counted by the shell's own glob: a pipeline's count
    // would race its second command's fork.
    let script = "id; hostname; grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status; set -- /proc/[0-9]*; echo $#; ls /sys/class/net; touch /etc/x 2>&1; echo ok > /tmp/y && cat /tmp/y";
    let m = w.manifest("modes", &busybox_manifest(script, ""));
    let in_place = w.run(&[], &m, &[]);
    let exec = w.run(&["--init-exec"], &m, &[]);
    assert_eq!(in_place.status.code(), exec.status.code());
    assert_eq!(stdout(&in_place), stdout(&exec), "{}{}", stderr(&in_place), stderr(&exec));
    assert!(stdout(&exec).starts_with("uid=0(root) gid=0(root)"), "{}", stdout(&exec));
    assert!(stdout(&exec).contains("\n2\nlo\n"), "the init and the shell alone: {}", stdout(&exec));
}

/// Once the workload runs, its init (PID 1) is no more privileged than
/// it: CAP_KILL alone, no_new_privs, the workload's seccomp filter. A
/// workload that could trace its init (given SYS_PTRACE, when the init was
/// executed in the sandbox's user namespace) gains nothing by it.
#[test]
fn the_init_keeps_only_cap_kill_under_the_workloads_filter_in_both_init_modes() {
    let w = World::new();
    let m = w.manifest(
        "init",
        &busybox_manifest("grep -E '^(NoNewPrivs|Seccomp|CapPrm|CapEff|CapBnd|CapAmb):' /proc/1/status", ""),
    );
    for mode in [&[][..], &["--init-exec"]] {
        let out = w.run(mode, &m, &[]);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "CapPrm:\t0000000000000020\nCapEff:\t0000000000000020\nCapBnd:\t0000000000000020\n\
             CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
            "{mode:?}: the init's privileges"
        );
    }
    // Not dumpable: a workload without SYS_PTRACE cannot open its init's
    // descriptors (the log, the channel to paddock) or memory, although the
    // init keeps no capability the workload lacks.
    let m = w.manifest("peek", &busybox_manifest("cat /proc/1/fd/0; cat /proc/1/environ; true", ""));
    for mode in [&[][..], &["--init-exec"]] {
        let out = w.run(mode, &m, &[]);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).matches("Permission denied").count(), 2, "{mode:?}: {}", stderr(&out));
    }
}

/// Nor may the workload set (or read) its init's resource limits, which
/// the kernel allows any process with the init's ids whatever its
/// dumpability (prlimit): a workload's root has them, and could make the
/// init's log writes fail at will (RLIMIT_FSIZE), or kill it (RLIMIT_CPU).
#[test]
fn the_workloads_root_cannot_set_its_inits_limits_in_both_init_modes() {
    let w = World::new();
    let dir = common::sandbox::syscall_probe(&w.path("probe"));
    let mount = format!("[[mounts]]\nsource = {:?}\ntarget = \"/probe\"\n", dir.display().to_string());
    let m = w.manifest("limits", &busybox_manifest("/probe/syscalls | grep '^prlimit_init '", &mount));
    for mode in [&[][..], &["--init-exec"]] {
        let out = w.run(mode, &m, &[]);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "prlimit_init EPERM\n", "{mode:?}");
    }
}

/// A workload's user namespace is owned by its own root (its slice's first
/// uid), not by the host's root that made it: the kernel counts what a
/// namespace's processes hold of its per-user limits (inotify instances,
/// 128 by default, and watches) against its owner too, and a workload
/// that held root's 128 left no root process on the host (systemd, a
/// restarted paddock) able to watch a file. `paddock run`'s both init
/// modes here; the daemon's zygote in tests/daemon_zygote.rs.
#[test]
fn the_workloads_user_namespace_is_its_roots_in_both_init_modes() {
    let w = World::new();
    let dir = common::sandbox::syscall_probe(&w.path("probe"));
    let mount = format!("[[mounts]]\nsource = {:?}\ntarget = \"/probe\"\n", dir.display().to_string());
    let m = w.manifest("owner", &busybox_manifest("/probe/syscalls | grep '^userns_owner '", &mount));
    for mode in [&[][..], &["--init-exec"]] {
        let out = w.run(mode, &m, &[]);
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "userns_owner 0\n", "{mode:?}: its owner, as it sees it");
    }
}

#[test]
fn only_stdin_stdout_and_stderr_reach_the_workload_in_both_init_modes() {
    // Neither the init's channel to paddock (a workload could forge reports
    // on it) nor a descriptor paddock inherited without O_CLOEXEC.
    use std::os::unix::process::CommandExt;
    let w = World::new();
    let m = w.manifest("fds", &busybox_manifest("ls /proc/$$/fd; exit 0", ""));
    for mode in [&[][..], &["--init-exec"]] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"));
        cmd.args(w.run_args()).args(mode).arg(&m).stdin(std::process::Stdio::null());
        // SAFETY: dup2 is async-signal-safe, as pre_exec requires; fd 7 is left
        // without FD_CLOEXEC, as a careless parent would leave it.
        unsafe {
            cmd.pre_exec(|| match libc::dup2(2, 7) {
                7 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            })
        };
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{mode:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "0\n1\n2\n", "{mode:?}: the workload's descriptors");
    }
}
