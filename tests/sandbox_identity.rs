//! `[namespaces] user = "remap"` and `[[mounts]]`: root inside is an
//! unprivileged host uid, host files keep their real owners, idmapped
//! volumes keep natural ownership. (Root and user namespaces required.)

mod common;

use std::os::unix::fs::MetadataExt;

use common::sandbox::{World, busybox_manifest, stderr, stdout};

#[test]
fn root_inside_is_the_slices_first_id_on_the_host() {
    let w = World::new();
    // The host's own / as a read-only rootfs (the default).
    let m = w.manifest("whoami", "command = [\"/bin/sh\", \"-c\", \"id -u; id -g; sleep 2\"]\n");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(&m)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs, look at it from the host: the init, the shell and its sleep.
    let pids = common::sandbox::wait_for_descendants(child.id(), 3);
    let start = w.slice_start("whoami");
    assert!(start >= 65536, "the slice starts at {start}");
    assert!(pids.len() >= 3, "the sandbox's processes are visible from the host: {pids:?}");
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("Uid: gone");
        let uids: Vec<u64> = uid_line.split_whitespace().skip(1).filter_map(|s| s.parse().ok()).collect();
        assert!(uids.iter().all(|u| *u == start), "pid {pid}: {uid_line}, expected {start} for every id");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "0\n0\n", "{}", stderr(&out));
    assert!(out.status.success());
}

#[test]
fn host_roots_files_stay_out_of_reach_of_root_inside() {
    let w = World::new();
    let shared = w.path("root-owned");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("precious"), "keep").unwrap();
    let text = busybox_manifest(
        "stat -c '%u:%g' /data/precious; rm /data/precious; touch /data/new; echo done",
        &format!("[[mounts]]\nsource = {:?}\ntarget = \"/data\"\nreadonly = false\n", shared.display().to_string()),
    );
    let out = w.run(&[], &w.manifest("reach", &text), &[]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(o.starts_with("65534:65534\n"), "host root's file must show as nobody: {o}{e}");
    assert!(e.contains("rm: can't remove '/data/precious': Permission denied"), "{e}");
    assert!(e.contains("touch: /data/new: Permission denied"), "{e}");
    assert!(shared.join("precious").exists() && !shared.join("new").exists());
}

#[test]
fn idmapped_volumes_keep_natural_ownership() {
    let w = World::new();
    let vol = w.path("volumes/db");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("owned-by-1000"), "x").unwrap();
    std::os::unix::fs::chown(&vol, Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(vol.join("owned-by-1000"), Some(1000), Some(1000)).unwrap();
    let text = busybox_manifest(
        "stat -c '%u:%g' /db/owned-by-1000; touch /db/created-inside && echo created",
        &format!(
            "user = 1000\ngroup = 1000\n[[mounts]]\nsource = {:?}\ntarget = \"/db\"\nreadonly = false\nidmap = true\n",
            vol.display().to_string()
        ),
    );
    let out = w.run(&[], &w.manifest("idmapped", &text), &[]);
    assert_eq!(stdout(&out), "1000:1000\ncreated\n", "{}", stderr(&out));
    let meta = std::fs::metadata(vol.join("created-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "a file made inside as 1000 is 1000's on the host");
}

#[test]
fn an_idmap_source_that_escapes_the_volumes_root_through_a_symlink_is_refused() {
    let w = World::new();
    std::os::unix::fs::symlink("/etc", w.path("volumes/sneaky")).unwrap();
    let text = busybox_manifest(
        "true",
        &format!(
            "[[mounts]]\nsource = {:?}\ntarget = \"/e\"\nidmap = true\n",
            w.path("volumes/sneaky").display().to_string()
        ),
    );
    let out = w.run(&[], &w.manifest("sneaky", &text), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("must lie under volumes_root"), "{}", stderr(&out));
    assert!(stderr(&out).contains("without a symlink"), "{}", stderr(&out));
}

#[test]
fn two_workloads_get_disjoint_slices_and_keep_them() {
    let w = World::new();
    for name in ["one", "two"] {
        let out = w.run(&[], &w.manifest(name, &busybox_manifest("true", "")), &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (one, two) = (w.slice_start("one"), w.slice_start("two"));
    assert!(one.abs_diff(two) >= 65536, "slices overlap: {one} and {two}");
    use std::os::unix::fs::MetadataExt as _;
    let table = || std::fs::metadata(w.path("state/idmap.json")).unwrap().ino();
    let before = table();
    let out = w.run(&[], &w.path("one.toml"), &[]);
    assert!(out.status.success());
    assert_eq!(w.slice_start("one"), one, "the same workload gets the same slice after the state is reloaded");
    // Nor is the table written again (a durable write at every run cost
    // `paddock run` half a millisecond); the run held its name's lock.
    assert_eq!(table(), before, "the id table was replaced by a run that kept its slice");
    assert!(w.path("state/runs/one.lock").exists());
    // A link planted at a run's lock file is not followed: refused, saying where.
    std::fs::remove_file(w.path("state/runs/one.lock")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", w.path("state/runs/one.lock")).unwrap();
    let out = w.run(&[], &w.path("one.toml"), &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot hold this run's id slice by its lock file"), "{}", stderr(&out));
    assert!(stderr(&out).contains("runs/one.lock"), "{}", stderr(&out));
}

#[test]
fn exhausted_ranges_are_a_clear_error() {
    let w = World::new();
    // Room for exactly one workload.
    std::fs::write(w.path("subuid"), "paddock:300000:65536\n").unwrap();
    std::fs::write(w.path("subgid"), "paddock:300000:65536\n").unwrap();
    // The first runs on while the second asks.
    let mut args = w.run_args();
    args.extend(["--slice-size".to_owned(), "65536".to_owned()]);
    let first = w.manifest("first", &busybox_manifest("sleep 60", ""));
    let mut first = common::Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(&args)
            .arg(&first)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(w.path("state/idmap.json")).map_or(true, |t| !t.contains("\"first\"")) {
        assert!(std::time::Instant::now() < deadline, "the first run never took its slice");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = w.run(&["--slice-size", "65536"], &w.manifest("second", &busybox_manifest("true", "")), &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no id slice is free: the ranges hold 1 slices of 65536 ids and all are in use"),
        "{}",
        stderr(&out)
    );
    // Once it has ended, the slice kept for it is given to the second.
    let start = w.slice_start("first");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(first.0.id() as i32, libc::SIGTERM) };
    first.0.wait().unwrap();
    let out = w.run(&["--slice-size", "65536"], &w.path("second.toml"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.slice_start("second"), start);
}

#[test]
fn a_mount_target_through_a_symlink_in_the_rootfs_is_refused() {
    let w = World::new();
    // A rootfs whose /data is a symlink to the host-looking /etc.
    let root = w.path("evil-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(common::sandbox::busybox_rootfs().join("bin/busybox"), root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();
    let source = w.path("payload");
    std::fs::create_dir(&source).unwrap();
    let text = format!(
        "command = [\"/bin/sh\", \"-c\", \"true\"]\nrootfs = {{ path = {:?} }}\n[[mounts]]\nsource = {:?}\ntarget = \"/data/passwd.d\"\n",
        root.display().to_string(),
        source.display().to_string()
    );
    let out = w.run(&[], &w.manifest("evil", &text), &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("sandbox setup failed at resolve mount target (symlinks are not followed): /data/passwd.d"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new("/etc/passwd.d").exists(), "nothing was created on the host");
}

#[test]
fn in_the_hosts_user_namespace_root_inside_is_the_hosts_root() {
    // `user = "host"`, which only the privileged policy allows: no user
    // namespace of the sandbox's own, so a root-only host file is readable.
    let w = World::new();
    let secret = w.path("root-only");
    std::fs::write(&secret, "for root\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = busybox_manifest(
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; cat /secret",
        &format!(
            "[namespaces]\nuser = \"host\"\n[[mounts]]\nsource = {:?}\ntarget = \"/secret\"\n",
            secret.display().to_string()
        ),
    );
    let out = w.run(&["--policy", "privileged"], &w.manifest("hostuser", &text), &[]);
    let squeezed: Vec<String> =
        stdout(&out).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(squeezed, ["0 0 4294967295", "0 0 4294967295", "0", "for root"], "{}", stderr(&out));
    assert!(out.status.success());
}

#[test]
fn in_the_hosts_user_namespace_the_kernels_knobs_and_new_device_nodes_stay_out_of_reach() {
    // Its root is the host's root: without read-only /proc knobs and
    // `nodev`, it could set core_pattern, or mknod the host's disk. (This
    // VM's kernel has no /proc/sysrq-trigger; sysctls stand for the knobs.)
    let w = World::new();
    let script = "cat /proc/sys/kernel/printk_ratelimit > /proc/sys/kernel/printk_ratelimit 2>/dev/null && echo sysctl-written; \
                  mknod /dev/made c 1 3 && { head -c 1 /dev/made > /dev/null 2>&1 && echo dev-opened || echo dev-inert; }; \
                  echo done";
    let text = busybox_manifest(script, "[namespaces]\nuser = \"host\"\n");
    let out = w.run(&["--policy", "privileged"], &w.manifest("knobs", &text), &[]);
    assert_eq!(stdout(&out), "dev-inert\ndone\n", "{}", stderr(&out));
    // A privileged one is given them, as Docker's --privileged is.
    let text = busybox_manifest(script, "[namespaces]\nuser = \"host\"\n[security]\nprivileged = true\n");
    let out = w.run(&["--policy", "privileged"], &w.manifest("knobs-privileged", &text), &[]);
    assert_eq!(stdout(&out), "sysctl-written\ndev-opened\ndone\n", "{}", stderr(&out));
}

/// What only the daemon does is said at its line, not silently ignored;
/// the run goes ahead.
#[test]
fn a_run_says_which_keys_apply_under_the_daemon_only() {
    let w = World::new();
    let extra = "after = [\"db\"]\n[restart]\npolicy = \"always\"\n[health]\ntcp = 80\n";
    let out = w.run(&[], &w.manifest("once", &busybox_manifest("true", extra)), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    for key in ["after", "restart", "health"] {
        assert!(said.contains(&format!("warning: `{key}` applies under the daemon only")), "{key}: {said}");
    }
    assert!(said.contains("once.toml:4:2: warning: `restart`"), "{said}");
    assert!(!said.contains("`stop`"), "{said}");
}
