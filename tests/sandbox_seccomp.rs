//! `[security] seccomp = "default"`: Docker's default profile, probed from
//! inside a sandbox, each system call and socket family named. (Root, user
//! namespaces and a C compiler for the probe required.)

mod common;

use std::collections::BTreeMap;

use common::sandbox::{World, busybox_manifest, stderr, stdout, syscall_probe};

/// Runs the probe in a sandbox with `extra` manifest TOML; returns NAME -> RESULT.
fn results(w: &World, policy: &str, extra: &str) -> BTreeMap<String, String> {
    let dir = syscall_probe(&w.path("probe"));
    let mount = format!("[[mounts]]\nsource = {:?}\ntarget = \"/probe\"\n{extra}", dir.display().to_string());
    let m = w.manifest("probe", &busybox_manifest("/probe/syscalls", &mount));
    let out = w.run(&["--policy", policy], &m, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned()))).collect()
}

#[test]
fn the_default_filter_refuses_what_dockers_current_profile_refuses() {
    let w = World::new();
    let r = results(&w, "baseline", "");
    let expect = [
        // io_uring's operations would bypass the filter: Docker's current profile refuses it.
        ("io_uring_setup", "EPERM"),
        ("io_uring_enter", "EPERM"),
        ("io_uring_register", "EPERM"),
        // vsock is not network-namespaced: a sandbox's port would be the host's.
        ("socket_vsock", "EPERM"),
        ("socket_inet", "ok"),
        // personality: only the values Docker lets through.
        ("personality_query", "ok"),
        ("personality_linux", "ok"),
        ("personality_no_randomize", "EPERM"),
        ("personality_read_implies_exec", "EPERM"),
        // NUMA placement needs CAP_SYS_NICE, which the workload does not keep.
        ("mbind", "EPERM"),
        ("move_pages", "EPERM"),
        ("set_mempolicy", "EPERM"),
        ("unshare_user", "EPERM"),
        ("clone3", "ENOSYS"),
        ("keyctl", "EPERM"),
        ("bpf", "EPERM"),
        ("getpid", "ok"),
        // The x32 ABI's numbers are refused by the filter itself (EPERM), not
        // merely by a kernel built without x32 (ENOSYS).
        ("x32_getpid", "EPERM"),
        ("x32_mount", "EPERM"),
        ("x32_unshare", "EPERM"),
    ];
    for (name, want) in expect {
        assert_eq!(r.get(name).map(String::as_str), Some(want), "{name}: {r:?}");
    }
}

#[test]
fn unconfined_lifts_the_filter() {
    let w = World::new();
    // Keyrings are not namespaced: the session keyring of whoever started
    // it (the daemon's, an operator's) is not the workload's to use. This
    // thread, which starts the run, joins one of its own first (a test
    // run without a login session has none).
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL) takes no memory but
    // the null name.
    let ours = unsafe { libc::syscall(libc::SYS_keyctl, 1, std::ptr::null::<libc::c_char>()) };
    assert!(ours > 0, "cannot join a session keyring: {}", std::io::Error::last_os_error());
    let r = results(&w, "privileged", "[security]\nseccomp = \"unconfined\"\n");
    assert_eq!(r["socket_vsock"], "ok", "{r:?}");
    assert_ne!(r["io_uring_setup"], "EPERM", "{r:?}");
    let theirs: i64 = r["session_keyring"].parse().unwrap_or_else(|_| panic!("{r:?}"));
    assert_ne!(theirs, ours, "the workload has its starter's session keyring");
}
