//! `rootfs`: a read-only root is the rootfs's own mount, made read-only and
//! `nodev`, when the rootfs already has every mount point the sandbox
//! needs; an overlay (with a tmpfs upper layer holding the missing ones)
//! when it lacks one, or when one is reached through a symlink. Either way
//! `/` refuses writes and mount targets never follow a symlink out.
//! (Root and user namespaces required.)

mod common;

use std::path::{Path, PathBuf};

use common::Mounted;
use common::sandbox::{World, busybox_manifest, busybox_rootfs, stderr, stdout};

/// A busybox root holding `/bin` and `dirs`, readable by the remapped root.
fn rootfs(w: &World, name: &str, dirs: &[&str]) -> PathBuf {
    rootfs_at(w.path(name), dirs)
}

/// The same, at `root` (on a mount a test made).
fn rootfs_at(root: PathBuf, dirs: &[&str]) -> PathBuf {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox_rootfs().join("bin/busybox"), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "grep", "awk", "touch", "head", "readlink"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

fn readable(root: &Path) {
    assert!(std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(root).status().unwrap().success());
}

fn manifest(root: &Path, command: &str, extra: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", {command:?}]\nrootfs = {{ path = {:?} }}\n{extra}",
        root.display().to_string()
    )
}

fn mount(source: &Path, target: &str) -> String {
    format!("[[mounts]]\nsource = {:?}\ntarget = {target:?}\n", source.display().to_string())
}

/// The line of /proc/self/mountinfo for `/`, then the rest of the script.
const ROOT_LINE: &str = "awk '$5 == \"/\"' /proc/self/mountinfo; ";

/// The filesystem type and the mount options of `/`, from its mountinfo line.
fn root_mount(out: &str) -> (String, Vec<String>) {
    let line = out.lines().next().unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let dash = fields.iter().position(|f| *f == "-").unwrap_or_else(|| panic!("no mountinfo line for /: {out}"));
    (fields[dash + 1].to_owned(), fields[5].split(',').map(str::to_owned).collect())
}

#[test]
fn a_rootfs_with_every_mount_point_is_its_own_read_only_nodev_mount() {
    let w = World::new();
    let root = rootfs(&w, "complete", &["proc", "dev", "tmp", "sys", "data", "etc"]);
    std::fs::write(root.join("etc/conf"), "from the rootfs\n").unwrap();
    // A device node anyone may open, as an image could carry: inert inside.
    let node = root.join("null-device");
    let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mknod creates a node and touches no memory of ours.
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
    readable(&root);
    let (data, conf) = (w.path("data-source"), w.path("conf-source"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "volume\n").unwrap();
    std::fs::write(&conf, "mounted\n").unwrap();
    let script = format!(
        "{ROOT_LINE}touch /x 2>&1; cat /data/f /etc/conf /tmp/sub/f; head -c1 /null-device 2>&1; echo; echo ok > /tmp/y && cat /tmp/y"
    );
    let mounts = mount(&data, "/data") + &mount(&conf, "/etc/conf") + &mount(&data, "/tmp/sub");
    let out = w.run(&[], &w.manifest("complete", &manifest(&root, &script, &mounts)), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    let (fstype, options) = root_mount(&o);
    assert_ne!(fstype, "overlay", "no overlay is needed: {o}");
    assert!(options.contains(&"ro".into()) && options.contains(&"nodev".into()), "{o}");
    assert!(o.contains("touch: /x: Read-only file system"), "{o}");
    assert!(o.contains("volume\nmounted\nvolume\n"), "{o}");
    assert!(o.contains("head: /null-device: Permission denied"), "a device node of the rootfs is inert: {o}");
    assert!(o.ends_with("ok\n"), "{o}");
    assert_eq!(std::fs::read_to_string(root.join("etc/conf")).unwrap(), "from the rootfs\n");
}

#[test]
fn a_rootfs_lacking_a_mount_point_gets_an_overlay_and_stays_untouched() {
    let w = World::new();
    // No /sys, no /tmp, no /data.
    let root = rootfs(&w, "partial", &["proc", "dev"]);
    readable(&root);
    let data = w.path("data-source");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "volume\n").unwrap();
    // And one beneath /tmp: made in the init's own /tmp, not the overlay's.
    let script = format!("{ROOT_LINE}touch /x 2>&1; cat /data/f /tmp/sub/f; ls /sys/class/net");
    let mounts = mount(&data, "/data") + &mount(&data, "/tmp/sub");
    let out = w.run(&[], &w.manifest("partial", &manifest(&root, &script, &mounts)), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    let (fstype, options) = root_mount(&o);
    assert_eq!(fstype, "overlay", "{o}");
    assert!(options.contains(&"ro".into()), "{o}");
    assert!(o.contains("touch: /x: Read-only file system"), "{o}");
    assert!(o.contains("volume\nvolume\n") && o.contains("lo\n"), "{o}");
    for made in ["sys", "tmp", "data"] {
        assert!(!root.join(made).exists(), "/{made} was made in the overlay, not in the host's rootfs");
    }
}

#[test]
fn a_file_mount_point_that_is_a_symlink_in_a_read_only_root_is_covered_not_followed() {
    let w = World::new();
    let root = rootfs(&w, "linked", &["proc", "dev", "tmp", "sys", "etc"]);
    std::fs::write(root.join("etc/real"), "real\n").unwrap();
    std::os::unix::fs::symlink("real", root.join("etc/link")).unwrap();
    readable(&root);
    let conf = w.path("conf-source");
    std::fs::write(&conf, "mounted\n").unwrap();
    let script = format!("{ROOT_LINE}cat /etc/link /etc/real; readlink /etc/link || echo not-a-link");
    let out = w.run(&[], &w.manifest("linked", &manifest(&root, &script, &mount(&conf, "/etc/link"))), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    // As before: the overlay hides the link with a file, and the mount lands there.
    assert_eq!(root_mount(&o).0, "overlay", "{o}");
    assert!(o.contains("mounted\nreal\nnot-a-link\n"), "{o}");
    assert_eq!(std::fs::read_to_string(root.join("etc/real")).unwrap(), "real\n");
}

#[test]
fn a_mount_target_through_a_symlink_is_refused_when_every_other_mount_point_exists() {
    let w = World::new();
    let root = rootfs(&w, "evil", &["proc", "dev", "tmp", "sys"]);
    std::os::unix::fs::symlink("/etc", root.join("data")).unwrap();
    readable(&root);
    let source = w.path("payload");
    std::fs::create_dir(&source).unwrap();
    for target in ["/data", "/data/passwd.d"] {
        let out = w.run(&[], &w.manifest("evil", &manifest(&root, "true", &mount(&source, target))), &[]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let expected = format!("sandbox setup failed at resolve mount target (symlinks are not followed): {target}");
        assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    }
    assert!(!Path::new("/etc/passwd.d").exists(), "nothing was created on the host");
}

#[test]
fn a_writable_root_is_the_rootfs_itself() {
    let w = World::new();
    let root = rootfs(&w, "writable", &["proc", "dev", "tmp", "sys"]);
    readable(&root);
    let text = manifest(&root, ROOT_LINE, "").replace("rootfs = {", "rootfs = { readonly = false,");
    let out = w.run(&["--policy", "privileged"], &w.manifest("writable", &text), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    let (fstype, options) = root_mount(&o);
    assert_ne!(fstype, "overlay", "{o}");
    assert!(options.contains(&"rw".into()), "{o}");
}

/// A tmpfs at `w`'s `name` with `flags`, shared (as systemd leaves every
/// mount of the host) with `shared`; unmounted when the guard goes.
fn host_tmpfs(w: &World, name: &str, flags: nix::mount::MsFlags, shared: bool) -> (PathBuf, Mounted) {
    let on = w.path(name);
    std::fs::create_dir(&on).unwrap();
    nix::mount::mount(Some("tmpfs"), &on, Some("tmpfs"), flags, Some("mode=0755")).unwrap();
    let mounted = Mounted(on.clone());
    if shared {
        nix::mount::mount(None::<&str>, &on, None::<&str>, nix::mount::MsFlags::MS_SHARED, None::<&str>).unwrap();
    }
    (on, mounted)
}

#[test]
fn a_rootfs_on_a_noexec_host_mount_still_runs_through_the_overlay() {
    let w = World::new();
    let flags = nix::mount::MsFlags::MS_NOEXEC | nix::mount::MsFlags::MS_NOSUID;
    let (on, _mounted) = host_tmpfs(&w, "noexec", flags, false);
    let root = rootfs_at(on.join("root"), &["proc", "dev", "tmp", "sys"]);
    readable(&root);
    let out = w.run(&[], &w.manifest("noexec", &manifest(&root, ROOT_LINE, "")), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    assert_eq!(root_mount(&o).0, "overlay", "as it always was: {o}");
}

#[test]
fn a_rootfs_on_a_shared_host_mount_is_entered_and_nothing_propagates_back() {
    let w = World::new();
    let (on, _mounted) = host_tmpfs(&w, "shared", nix::mount::MsFlags::empty(), true);
    let root = rootfs_at(on.join("root"), &["proc", "dev", "tmp", "sys"]);
    readable(&root);
    let host_mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().matches(on.to_str().unwrap()).count();
    let before = host_mounts();
    for (name, readonly) in [("shared-ro", true), ("shared-rw", false)] {
        let text = manifest(&root, ROOT_LINE, "").replace("rootfs = {", &format!("rootfs = {{ readonly = {readonly},"));
        let out = w.run(&["--policy", "privileged"], &w.manifest(name, &text), &[]);
        let o = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {o}{}", stderr(&out));
        assert_ne!(root_mount(&o).0, "overlay", "{o}");
    }
    assert_eq!(host_mounts(), before, "no mount of the sandbox's reached the host");
}

#[test]
fn mount_sources_on_a_shared_host_mount_neither_propagate_back_nor_receive_the_hosts_mounts() {
    let w = World::new();
    let (on, _mounted) = host_tmpfs(&w, "shared-volumes", nix::mount::MsFlags::empty(), true);
    let (data, cache) = (on.join("data"), on.join("cache"));
    for d in [&data, &cache] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::create_dir(data.join("cache")).unwrap();
    std::fs::write(cache.join("f"), "cache\n").unwrap();
    let root = rootfs(&w, "root", &["proc", "dev", "tmp", "sys", "data"]);
    readable(&root);
    readable(&on);
    let host_mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap().matches(on.to_str().unwrap()).count();
    let before = host_mounts();
    // /data/cache is mounted onto /data's copy, inside the sandbox: on a
    // peer of the host's mount it would appear on the host too. The
    // workload prints its mounts' propagation (a `shared:N` field is a peer).
    let script = "cat /data/cache/f; awk '$5 ~ /^\\/data/ { print $5, $7 }' /proc/self/mountinfo";
    let mounts = mount(&data, "/data") + &mount(&cache, "/data/cache");
    let out = w.run(&[], &w.manifest("volumes", &manifest(&root, script, &mounts)), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    assert!(o.starts_with("cache\n"), "{o}");
    assert_eq!(host_mounts(), before, "a mount made inside the sandbox propagated to the host");
    assert!(!o.contains("shared:"), "a mount source stayed a peer of the host's shared mount: {o}");
}

/// The policies read a rootfs path as written: the host's root reached by
/// another path is not given writable. `/proc/self/root` is not followed at
/// all (a link of /proc's is not what its text says); an operator's link to
/// `/` is followed, and refused only when writable.
#[test]
fn a_writable_host_root_by_another_name_is_refused() {
    let w = World::new();
    let link = w.path("hostroot");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let manifest = |path: &Path, readonly: bool| {
        format!(
            "command = [\"/bin/busybox\", \"true\"]\nrootfs = {{ path = {:?}, readonly = {readonly} }}\n",
            path.display().to_string()
        )
    };
    let proc_root = w.run(&[], &w.manifest("proc", &manifest(Path::new("/proc/self/root"), false)), &[]);
    assert_eq!(proc_root.status.code(), Some(125), "{}", stdout(&proc_root));
    assert!(stderr(&proc_root).contains("rootfs /proc/self/root"), "{}", stderr(&proc_root));
    let writable = w.run(&[], &w.manifest("alias", &manifest(&link, false)), &[]);
    assert_eq!(writable.status.code(), Some(125), "{}", stdout(&writable));
    assert!(
        stderr(&writable).contains("is the host's root directory, reached through a link"),
        "{}",
        stderr(&writable)
    );
    let readonly = w.run(&[], &w.manifest("alias", &manifest(&link, true)), &[]);
    assert_eq!(readonly.status.code(), Some(0), "{}", stderr(&readonly));
    // A mount of it, likewise.
    let mount = |readonly: bool| {
        format!(
            "command = [\"/bin/busybox\", \"true\"]\nrootfs = {{ path = {:?} }}\n[[mounts]]\nsource = {:?}\ntarget = \"/host\"\nreadonly = {readonly}\n",
            busybox_rootfs().display().to_string(),
            link.display().to_string()
        )
    };
    let writable = w.run(&[], &w.manifest("mount", &mount(false)), &[]);
    assert_eq!(writable.status.code(), Some(125), "{}", stdout(&writable));
    assert!(
        stderr(&writable).contains("mount source") && stderr(&writable).contains("reached through a link"),
        "{}",
        stderr(&writable)
    );
    // Read-only, it holds the host's /proc: refused for that, unless the
    // mount asks for the kernel's filesystems (a policy of its own).
    let readonly = w.run(&[], &w.manifest("mount", &mount(true)), &[]);
    assert_eq!(readonly.status.code(), Some(125), "{}", stdout(&readonly));
    assert!(stderr(&readonly).contains("holds the host's"), "{}", stderr(&readonly));
    let asked = format!("{}kernel_filesystems = true\n", mount(true));
    let readonly = w.run(&["--policy", "privileged"], &w.manifest("mount", &asked), &[]);
    assert_eq!(readonly.status.code(), Some(0), "{}", stderr(&readonly));
}

/// What runc masks: /proc's views of the host kernel (the keys the
/// daemon's keyring shows, ACPI tables) and /sys/firmware, covered inside
/// (each a mount point in the sandbox's mountinfo, its content empty),
/// with /proc and /sys themselves intact: in a sandbox with its own
/// network (a fresh sysfs) and in one on the host's (its /sys bound, the
/// host's mounts beneath it covered). A privileged workload is not
/// masked, as Docker's --privileged is not.
#[test]
fn the_hosts_kernel_details_are_masked_in_proc_and_sys() {
    let w = World::new();
    // What this host has of the masked paths (else there is nothing to see).
    let masked: Vec<&str> = [
        "/proc/acpi",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .collect();
    assert!(masked.contains(&"/proc/keys"), "this kernel has no /proc/keys (CONFIG_KEYS): nothing to check");
    let script = format!(
        "for p in {}; do if [ -d $p ]; then n=$(ls -A $p | wc -l); else n=$(wc -c < $p); fi; \
         grep -q \" $p \" /proc/self/mountinfo && echo \"$p covered $n\"; done; \
         test -r /proc/self/status && test -d /sys/kernel && echo intact",
        masked.join(" ")
    );
    let covered: String = masked.iter().map(|p| format!("{p} covered 0\n")).collect();
    // What the host mounts beneath /sys (its cgroup tree at least): empty
    // inside, as in a fresh sysfs, also where /sys is the host's, bound.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let beneath: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with("/sys/") && !p.starts_with("/sys/firmware") && !p.contains('\\'))
        // On a cgroup v2 host, /sys/fs/cgroup shows the sandbox's own
        // cgroup (sandbox_resources); beneath it, nothing of the host's.
        .filter(|p| !(v2 && *p == "/sys/fs/cgroup"))
        .collect();
    assert!(beneath.iter().any(|p| p.starts_with("/sys/fs/cgroup")), "this host mounts no cgroup tree under /sys");
    let empty = format!(
        "for p in {}; do [ -d $p ] && [ -n \"$(ls -A $p 2>/dev/null)\" ] && echo \"$p shows\"; done; echo looked",
        beneath.join(" ")
    );
    for (name, extra, policy, want) in [
        ("own", "", "baseline", format!("{covered}intact\n")),
        ("hostnet", "[namespaces]\nnetwork = \"host\"\n", "privileged", format!("{covered}intact\n")),
        ("privileged", "[security]\nprivileged = true\n", "privileged", "intact\n".to_owned()),
    ] {
        let manifest = w.manifest(name, &busybox_manifest(&script, extra));
        let out = w.run(&["--policy", policy], &manifest, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), want, "{name}");
        if name != "privileged" {
            let manifest = w.manifest(&format!("{name}-sys"), &busybox_manifest(&empty, extra));
            let out = w.run(&["--policy", policy], &manifest, &[]);
            assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
            assert_eq!(stdout(&out), "looked\n", "{name}: the host's mounts beneath /sys");
        }
    }
}

/// A manifest's mount beneath a host mount that /sys brings (the host's
/// cgroup tree) shows it, as a mount over any masked path does: the
/// cover is left off there, and the file is mounted where the host has it.
#[test]
fn a_mount_beneath_what_the_host_mounts_under_sys_is_made_there() {
    let w = World::new();
    // A file the host has in its cgroup tree (v1: a controller's; v2: the root's).
    let host_file = ["/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("this host has neither /sys/fs/cgroup/cgroup.controllers nor a v1 memory controller's files");
    let source = w.dir.path().join("shown");
    std::fs::write(&source, "mine\n").unwrap();
    let extra = format!(
        "[namespaces]\nnetwork = \"host\"\n[[mounts]]\nsource = {:?}\ntarget = {host_file:?}\n",
        source.display().to_string()
    );
    let manifest = w.manifest("beneath", &busybox_manifest(&format!("cat {host_file}"), &extra));
    let out = w.run(&["--policy", "privileged"], &manifest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "mine\n");
}

#[test]
fn in_the_hosts_user_namespace_a_device_node_in_the_image_stays_inert_on_every_kind_of_root() {
    // Its root is the host's root: a node the image carries (as `tar x`
    // run as root makes them) must not open, whichever way the root is
    // built: the overlay (a mount point missing), the rootfs's own mount
    // (read-only with every mount point), or a writable one.
    let w = World::new();
    let script = "head -c 1 /node > /dev/null 2>&1 && echo opened || echo inert";
    for (name, dirs, readonly) in [
        ("overlay", &["proc", "dev", "tmp"][..], true),
        ("bind", &["proc", "dev", "tmp", "sys"][..], true),
        ("writable", &["proc", "dev", "tmp", "sys"][..], false),
    ] {
        let root = rootfs(&w, name, dirs);
        nix::sys::stat::mknod(
            &root.join("node"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        readable(&root);
        let text = manifest(&root, script, "[namespaces]\nuser = \"host\"\n")
            .replace("rootfs = {", &format!("rootfs = {{ readonly = {readonly},"));
        let out = w.run(&["--policy", "privileged"], &w.manifest(name, &text), &[]);
        assert_eq!(stdout(&out), "inert\n", "{name}: {}", stderr(&out));
    }
}

#[test]
fn in_the_hosts_user_and_pid_namespaces_the_hosts_proc_is_masked_too() {
    // The host's own /proc, bound in: its root is the host's root, which
    // could read the kernel's timers and keys there.
    assert!(std::fs::exists("/proc/timer_list").unwrap(), "this test needs the host's /proc/timer_list");
    let w = World::new();
    let script = "wc -c < /proc/timer_list; ls /proc | grep -c '^[0-9]'";
    let text = busybox_manifest(script, "[namespaces]\nuser = \"host\"\npid = \"host\"\n");
    let out = w.run(&["--policy", "privileged"], &w.manifest("hostproc", &text), &[]);
    let lines: Vec<String> = stdout(&out).lines().map(|l| l.trim().to_owned()).collect();
    assert_eq!(lines.first().map(String::as_str), Some("0"), "masked: {}", stderr(&out));
    assert!(
        lines.get(1).and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n > 10),
        "the host's processes: {lines:?}"
    );
}

/// Someone else who can write a writable rootfs (another workload given
/// the same directory, a host user) swaps its directories while the init
/// builds the root: `proc` with a plain `decoy`, or `dev` with a
/// `decoy-dev` whose `null` is a link to a host file. Every mount, mask
/// and device is made through a descriptor of what was checked, never by
/// its path again: every start succeeds, wherever /proc lands it is
/// masked, and no device node is made through the link (as the host's
/// root, in the host's user namespace, that emptied the file). Before,
/// most starts failed, and a run of them showed the host's timers or
/// emptied the file.
#[test]
fn a_rootfs_swapped_under_the_init_neither_unmasks_proc_nor_redirects_dev() {
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    // renameat2(RENAME_EXCHANGE), by number: neither nix nor libc has it for musl.
    let exchange = |a: &std::ffi::CString, b: &std::ffi::CString| {
        // SAFETY: both are valid C strings that outlive the call; no memory is handed over.
        let rc =
            unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), 2) };
        assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
    };
    let c_path = |p: PathBuf| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let w = World::new();
    assert!(std::fs::exists("/proc/timer_list").unwrap(), "this test needs the host's /proc/timer_list");
    // Not under /tmp, which the init's staging covers.
    let victim = PathBuf::from(format!("/var/tmp/paddock-test-victim-{}", std::process::id()));
    std::fs::write(&victim, "the host's file\n").unwrap();
    let _gone = common::Removed(victim.clone());
    let variants = [("host-user", "[namespaces]\nuser = \"host\"\n"), ("remapped", "")];
    for ((name, user), (a, b)) in variants.iter().flat_map(|v| [(*v, ("dev", "decoy-dev")), (*v, ("proc", "decoy"))]) {
        let label = format!("{name}, {a} swapped");
        let root = rootfs(&w, &format!("{name}-{a}"), &["proc", "dev", "tmp", "sys", "decoy", "decoy-dev"]);
        std::os::unix::fs::symlink(&victim, root.join("decoy-dev/null")).unwrap();
        readable(&root);
        let script = "for d in /proc /decoy; do test -e $d/timer_list && wc -c < $d/timer_list; done; true";
        // And a mount beneath /dev, which is made in the init's /dev, never
        // through the rootfs's entry of that name.
        let extra = w.path(&format!("extra-{name}-{a}"));
        std::fs::create_dir(&extra).unwrap();
        let text = manifest(&root, script, &format!("{user}{}", mount(&extra, "/dev/extra")))
            .replace("rootfs = {", "rootfs = { readonly = false,");
        let manifest = w.manifest(name, &text);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, a, b) = (stop.clone(), c_path(root.join(a)), c_path(root.join(b)));
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    exchange(&a, &b);
                    swaps += 1;
                }
                swaps
            })
        };
        let outs: Vec<_> = (0..16).map(|_| w.run(&["--policy", "privileged"], &manifest, &[])).collect();
        stop.store(true, Ordering::Relaxed);
        assert!(swapper.join().unwrap() > 1000, "{label}: the swapper hardly ran");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "the host's file\n", "{label}: a host file was written");
        for out in &outs {
            let o = stdout(out);
            let sizes: Vec<&str> = o.lines().map(str::trim).collect();
            assert!(sizes.iter().all(|n| *n == "0"), "{label}: the host's timers were readable: {sizes:?}");
        }
        for out in outs {
            assert_eq!(out.status.code(), Some(0), "{label}: {}", stderr(&out));
        }
        for dir in ["dev", "decoy-dev"] {
            assert!(!root.join(dir).join("extra").exists(), "{label}: a mount point was made in the rootfs's {dir}");
        }
    }
}

/// The init's own filesystems are named as mount(8) names them (their
/// mountinfo source), and a read-only sysfs is read-only down to its
/// superblock, as a mount with `-o ro` is.
#[test]
fn the_inits_own_mounts_are_named_and_a_read_only_sysfs_is_so_to_its_superblock() {
    let w = World::new();
    let script =
        "awk '{ for (i = 7; $i != \"-\"; i++); print $5, $(i+1), $(i+2), substr($(i+3), 1, 2) }' /proc/self/mountinfo";
    let out = w.run(&[], &w.manifest("named", &busybox_manifest(script, "")), &[]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{o}{}", stderr(&out));
    for line in [
        "/proc proc proc rw",
        "/dev tmpfs tmpfs rw",
        "/dev/pts devpts devpts rw",
        "/dev/shm tmpfs shm rw",
        "/tmp tmpfs tmpfs rw",
        "/sys sysfs sysfs ro",
    ] {
        assert!(o.lines().any(|l| l == line), "no `{line}` in:\n{o}");
    }
}

/// A writable root whose `/etc/hosts`, a file mount's target, is a
/// symlink whose text is `link`; `prepare` changes the root first, and the
/// manifest (`cat /etc/hosts`, named `name`) gets `before` and `after`
/// around that mount. Returns the root and the manifest.
fn linked_hosts(
    w: &World,
    name: &str,
    link: &str,
    prepare: impl FnOnce(&Path),
    (before, after): (&str, &str),
) -> (PathBuf, PathBuf) {
    let root = rootfs(w, name, &["proc", "dev", "tmp", "sys", "etc", "run", "srv"]);
    std::os::unix::fs::symlink(link, root.join("etc/hosts")).unwrap();
    prepare(&root);
    readable(&root);
    let source = w.path(&format!("{name}-hosts"));
    std::fs::write(&source, "127.0.0.1 here\n").unwrap();
    let mounts = format!("{before}{}{after}", mount(&source, "/etc/hosts"));
    let text = manifest(&root, "cat /etc/hosts", &mounts).replace("rootfs = {", "rootfs = { readonly = false,");
    (root, w.manifest(name, &text))
}

/// `paddock run` under the privileged policy (a writable root).
fn run_privileged(w: &World, manifest: &Path) -> std::process::Output {
    w.run(&["--policy", "privileged"], manifest, &[])
}

/// `linked_hosts`, with `/run` open to the workload's root, run.
fn dangling(
    w: &World,
    name: &str,
    link: &str,
    prepare: impl FnOnce(&Path),
    around: (&str, &str),
) -> (PathBuf, std::process::Output) {
    use std::os::unix::fs::PermissionsExt;
    let (root, manifest) = linked_hosts(w, name, link, prepare, around);
    std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    (root, run_privileged(w, &manifest))
}

/// That the start named `name` failed before the workload (125), its
/// error saying `says`.
#[track_caller]
fn refused(name: &str, out: &std::process::Output, says: &str) {
    assert_eq!(out.status.code(), Some(125), "{name}: {}{}", stdout(out), stderr(out));
    assert!(stderr(out).contains(says), "{name}: {}", stderr(out));
}

/// A file mount's target that is a symlink in a writable rootfs is
/// resolved inside the root, and one that leads onto what the init made
/// of /dev, /proc or /sys (its /dev/null here) is refused, not covered
/// with the mount.
#[test]
fn a_file_mount_target_leading_into_the_inits_own_mounts_is_refused() {
    let w = World::new();
    let (_, manifest) = linked_hosts(&w, "xdev", "/dev/null", |_| {}, ("", ""));
    let out = run_privileged(&w, &manifest);
    refused("xdev", &out, "mount on a symlink leading into the sandbox's /dev, /proc or /sys: /etc/hosts: refused");
}

/// A file mount's target that is a dangling symlink in a writable rootfs
/// (as `/etc/resolv.conf` is, linking into a `/run` the image leaves
/// empty) gets what the link names made inside the root, directories and
/// all, as runc does; a `..` too many stays at the root. Where the
/// workload's root may not make it, the start fails naming the file and
/// the step.
#[test]
fn a_file_mount_target_that_is_a_dangling_symlink_gets_its_file_made_inside_the_root() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    // Relative, as systemd-resolved's link is, with one `..` too many:
    // beyond the root it would name this test's own `run`.
    let (root, manifest) = linked_hosts(&w, "dangling", "../../run/x/y/hosts", |_| {}, ("", ""));

    // The image's /run is the host root's: the workload's root may not
    // make anything in it.
    let out = run_privileged(&w, &manifest);
    assert_eq!(out.status.code(), Some(125), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains(
            "make what the symlink names (inside the root, following no other symlink): /etc/hosts -> /run/x/y/hosts: Permission denied (the workload's root may not write there"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!root.join("run/x").exists());

    std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_privileged(&w, &manifest);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 here\n", "the mount covers the file the link names");
    let made = std::fs::symlink_metadata(root.join("run/x/y/hosts")).unwrap();
    assert!(made.is_file() && made.len() == 0, "an empty file was made for the mount: {made:?}");
    assert!(!w.path("run").exists(), "the `..` too many climbed out of the root");
    assert_eq!(std::fs::read_link(root.join("etc/hosts")).unwrap(), Path::new("../../run/x/y/hosts"));

    // Made once: the next start finds it there.
    let out = run_privileged(&w, &manifest);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 here\n", "{}", stderr(&out));
}

/// What a dangling symlink names is made only where the mount shows as
/// the workload reads the link, and refused, with nothing made,
/// otherwise: a text naming a directory, a link to another link, and a
/// link beneath a mount listed after it (which would cover the file).
/// Listed before it, that mount is where the link leads, and the file is
/// made in it.
#[test]
fn a_dangling_symlink_mount_target_is_refused_where_the_mount_would_not_show() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();

    let (root, out) = dangling(&w, "slash", "/run/dir/", |_| {}, ("", ""));
    refused("slash", &out, "mount a file on a symlink naming a directory: /etc/hosts: refused");
    assert!(!root.join("run/dir").exists(), "made before it was refused");

    // `sub` could be a symlink: read lexically, `..` would undo a step
    // the kernel takes through it.
    let (root, out) = dangling(&w, "back", "/run/sub/../hosts", |_| {}, ("", ""));
    refused("back", &out, "make what a symlink names when its text goes back up (`a/../b`): /etc/hosts: refused");
    assert!(!root.join("run/sub").exists() && !root.join("run/hosts").exists(), "made before it was refused");

    let (root, out) =
        dangling(&w, "chain", "/run/a", |root| std::os::unix::fs::symlink("b", root.join("run/a")).unwrap(), ("", ""));
    refused(
        "chain",
        &out,
        "make what the symlink names (inside the root, following no other symlink): /etc/hosts -> /run/a: Too many symbolic links encountered",
    );
    assert!(!root.join("run/b").exists());

    let volume = w.path("srv");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777)).unwrap();
    let srv = format!("[[mounts]]\nsource = {:?}\ntarget = \"/srv\"\nreadonly = false\n", volume.display().to_string());
    let (root, out) = dangling(&w, "after", "../srv/hosts", |_| {}, ("", &srv));
    refused(
        "after",
        &out,
        "mount on a symlink leading beneath a mount listed after it (list that mount first): /etc/hosts -> /srv/hosts, beneath the mount on /srv: refused",
    );
    assert!(!root.join("srv/hosts").exists() && !volume.join("hosts").exists(), "made before it was refused");

    let (root, out) = dangling(&w, "before", "../srv/hosts", |_| {}, (&srv, ""));
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 here\n");
    assert!(volume.join("hosts").is_file(), "the file was made in the volume the link leads into");
    assert!(!root.join("srv/hosts").exists(), "the file was made in the rootfs, under the volume");
}

/// A file mount on a symlink that already leads to a file is refused where
/// a mount listed after it covers that file (a volume on the directory the
/// link leads into), and so are two file mounts whose targets lead to one
/// file, through a link or not: the workload would not see what it was
/// given. Listed before it, the volume is where the link leads, and the
/// mount lands there.
#[test]
fn an_existing_symlink_mount_target_beneath_a_later_mount_is_refused() {
    let w = World::new();
    let in_root = |root: &Path| std::fs::write(root.join("srv/hosts"), "rootfs\n").unwrap();
    let volume = w.path("srv");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("hosts"), "volume\n").unwrap();
    let srv = mount(&volume, "/srv");

    let (_, manifest) = linked_hosts(&w, "after", "../srv/hosts", in_root, ("", &srv));
    refused(
        "after",
        &run_privileged(&w, &manifest),
        "mount on a symlink leading beneath a mount listed after it (list that mount first): /etc/hosts, beneath the mount on /srv: refused",
    );

    let other = w.path("other");
    std::fs::write(&other, "other\n").unwrap();
    let one_file = "mount two targets that lead to one file (through a symlink): ";
    let both = |root: &Path| {
        in_root(root);
        std::os::unix::fs::symlink("/srv/hosts", root.join("etc/other")).unwrap();
    };
    let (_, manifest) = linked_hosts(&w, "same", "../srv/hosts", both, ("", &mount(&other, "/etc/other")));
    let out = run_privileged(&w, &manifest);
    refused("same", &out, &format!("{one_file}/etc/hosts and /etc/other: refused ("));
    assert!(stderr(&out).contains("mount the file at one of them only"), "no hint: {}", stderr(&out));

    // The first of the two on the file itself, the second through a link.
    let (_, manifest) = linked_hosts(&w, "plain", "../srv/hosts", in_root, (&mount(&other, "/srv/hosts"), ""));
    refused("plain", &run_privileged(&w, &manifest), &format!("{one_file}/srv/hosts and /etc/hosts: refused ("));

    let (root, manifest) = linked_hosts(&w, "before", "../srv/hosts", in_root, (&srv, ""));
    let out = run_privileged(&w, &manifest);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 here\n", "the mount shows where the link leads");
    assert_eq!(std::fs::read_to_string(root.join("srv/hosts")).unwrap(), "rootfs\n");
    assert_eq!(std::fs::read_to_string(volume.join("hosts")).unwrap(), "volume\n");
}

/// A directory mounted on `/tmp` covers the init's own mount there (as
/// one on `/dev`, `/proc` or `/sys` would): a mount listed after it
/// beneath it lands in it, where the workload sees it, not in the covered
/// one; its mount point is made in that directory on the host when
/// missing (refused, with a hint, while the workload's root may not
/// write there); and a symlink in that directory is read from the root,
/// as the workload reads it.
#[test]
fn a_mount_beneath_a_volume_on_tmp_is_seen() {
    let w = World::new();
    let root = rootfs(&w, "tmpvol", &["proc", "dev", "tmp", "sys", "etc"]);
    std::fs::write(root.join("etc/app.conf"), "rootfs\n").unwrap();
    readable(&root);
    let (outer, inner, conf) = (w.path("outer"), w.path("inner"), w.path("conf"));
    std::fs::create_dir(&outer).unwrap();
    std::os::unix::fs::symlink("/etc/app.conf", outer.join("app.conf")).unwrap();
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("f"), "inner\n").unwrap();
    std::fs::write(&conf, "mounted\n").unwrap();
    let text = |outer_options: &str| {
        let mounts = format!(
            "{}{outer_options}{}{}",
            mount(&outer, "/tmp"),
            mount(&inner, "/tmp/x"),
            mount(&conf, "/tmp/app.conf")
        );
        manifest(&root, "cat /tmp/x/f /tmp/app.conf", &mounts)
    };
    let hint = "make it beforehand in the rootfs or in the directory mounted there";
    // Mounted read-only (the default), then writable but the host root's:
    // the workload's root may not make the mount point in it.
    let out = w.run(&[], &w.manifest("tmpvol-ro", &text("")), &[]);
    refused("read-only", &out, "resolve mount target (symlinks are not followed): /tmp/x: Read-only file system");
    assert!(stderr(&out).contains(hint), "{}", stderr(&out));
    let manifest = w.manifest("tmpvol", &text("readonly = false\n"));
    let out = w.run(&[], &manifest, &[]);
    refused("not theirs", &out, "resolve mount target (symlinks are not followed): /tmp/x: Permission denied");
    assert!(stderr(&out).contains(hint), "{}", stderr(&out));
    std::fs::set_permissions(&outer, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = w.run(&[], &manifest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "inner\nmounted\n");
    assert!(outer.join("x").is_dir(), "the mount point was not made in the volume");
    assert_eq!(std::fs::read_to_string(root.join("etc/app.conf")).unwrap(), "rootfs\n");
}

/// Mounts and unmounts a tmpfs in a loop, in a mount namespace of its
/// own, until dropped: any mount anywhere on the host moves the kernel's
/// mount sequence count, which a resolution through `..` inside a root
/// checks (and answers EAGAIN when it moved).
struct MountStorm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl MountStorm {
    fn start(dir: PathBuf) -> MountStorm {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        use std::sync::atomic::Ordering;
        std::fs::create_dir(&dir).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("a mount namespace for the storm");
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).unwrap();
            let mut mounts = 0;
            while !stopped.load(Ordering::Relaxed) {
                mount(Some("tmpfs"), &dir, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
                umount2(&dir, MntFlags::empty()).unwrap();
                mounts += 1;
            }
            mounts
        });
        MountStorm { stop, thread: Some(thread) }
    }

    /// Stops the storm; returns how many mounts it made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |thread| thread.join().expect("the storm panicked"))
    }
}

impl Drop for MountStorm {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A file mount on a link whose text has `..` (systemd-resolved's
/// `/etc/resolv.conf` has), and a mount source reaching volumes_root
/// through a root's link whose text has `..`, start while mounts happen
/// elsewhere on the host, as they do all the time while other sandboxes
/// start: the kernel's EAGAIN for a raced `..` is retried, not a failed
/// start.
#[test]
fn links_with_dotdot_resolve_while_the_host_mounts_beside_them() {
    let w = World::new();
    let in_root = |root: &Path| std::fs::write(root.join("srv/hosts"), "").unwrap();
    std::fs::create_dir_all(w.path("volumes/b")).unwrap();
    let into_volumes = w.path("into-volumes");
    std::os::unix::fs::symlink(w.path("volumes/a/../b"), &into_volumes).unwrap();
    std::fs::create_dir(w.path("volumes/a")).unwrap();
    let (_, manifest) = linked_hosts(&w, "storm", "../srv/hosts", in_root, ("", &mount(&into_volumes, "/run")));
    let storm = MountStorm::start(w.path("mount-storm"));
    for i in 0..40 {
        let out = run_privileged(&w, &manifest);
        assert_eq!(out.status.code(), Some(0), "start {i}: {}{}", stdout(&out), stderr(&out));
        assert_eq!(stdout(&out), "127.0.0.1 here\n");
    }
    assert!(storm.stop() > 0, "the storm made no mount: the starts were not raced");
}

/// In the host's user namespace the init is the host's root: a link whose
/// text climbs out with `..`, or names the host's paths, still makes its
/// file inside the root, never in the host's `/run`.
#[test]
fn a_dangling_symlink_made_by_the_hosts_root_stays_inside_the_root() {
    let w = World::new();
    let unique = format!("paddock-test-{}", std::process::id());
    let link = format!("../../../../run/{unique}/hosts");
    let (root, out) = dangling(&w, "hostroot", &link, |_| {}, ("[namespaces]\nuser = \"host\"\n", ""));
    assert!(!Path::new("/run").join(&unique).exists(), "made in the host's /run");
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "127.0.0.1 here\n");
    assert!(root.join("run").join(&unique).join("hosts").is_file());
}

/// Where mounts cover parts of the host's `/proc` or `/sys` (a
/// container's masked paths, systemd's ProtectKernelTunables=), the
/// kernel refuses a sandbox its own: the error says why and what to do.
#[test]
fn a_hosts_proc_or_sys_with_covered_parts_fails_saying_why_and_what_to_do() {
    use std::os::unix::process::CommandExt;
    let w = World::new();
    let manifest = w.manifest("covered", &busybox_manifest("true", ""));
    for (covered, step) in [(c"/proc/cmdline", "mount proc: /proc"), (c"/sys/kernel/notes", "mount sysfs: /sys")] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"));
        cmd.args(w.run_args()).arg(&manifest).stdin(std::process::Stdio::null());
        let (root, null) = (c"/", c"/dev/null");
        // SAFETY: unshare and mount are system calls, async-signal-safe as
        // pre_exec requires, on strings made before the fork. paddock runs
        // in a mount namespace of its own, where one file is covered.
        unsafe {
            cmd.pre_exec(move || {
                let private = libc::MS_REC | libc::MS_PRIVATE;
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) == 0
                    && libc::mount(null.as_ptr(), covered.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
                        == 0;
                if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            })
        };
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{step}: {}{}", stdout(&out), stderr(&out));
        let says = format!(
            "{step}: Operation not permitted (the kernel refuses a sandbox its own /proc and /sys while mounts cover parts of the host's"
        );
        assert!(stderr(&out).contains(&says), "{}", stderr(&out));
    }
}
