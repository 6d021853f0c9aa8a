//! `[[mounts]]` under attack: an idmapped source swapped for a symlink
//! while the sandbox starts, a set-user-ID root binary planted through an
//! idmapped volume, and a volumes_root others could enter. (Root and user
//! namespaces required.)

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sandbox::{World, busybox_manifest, stderr, stdout};

/// A plain (not idmapped) mount of `source` at `target`.
fn plain_mount(source: &Path, target: &str) -> String {
    format!("[[mounts]]\nsource = {:?}\ntarget = {target:?}\n", source.display().to_string())
}

/// A start refused before anything ran (exit 125), saying `said`.
fn refused(out: &std::process::Output, what: &str, said: &str) {
    assert_eq!(out.status.code(), Some(125), "{what}: {}{}", stdout(out), stderr(out));
    assert!(stderr(out).contains(said), "{what}: {}", stderr(out));
}

fn volume_mount(source: &std::path::Path, target: &str, extra: &str) -> String {
    format!(
        "[[mounts]]\nsource = {:?}\ntarget = {target:?}\nreadonly = false\nidmap = true\n{extra}",
        source.display().to_string()
    )
}

/// A host user (or another workload owning a directory under the volume)
/// swaps the idmapped source with a symlink to a host directory, again and
/// again, while the sandbox starts. paddock resolves the source once,
/// beneath volumes_root and without following symlinks: no run may see
/// the host directory, whatever the timing.
#[test]
fn an_idmap_source_swapped_for_a_symlink_mid_start_never_reaches_outside() {
    let w = World::new();
    let outside = w.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("host-secret"), "root's").unwrap();
    std::fs::set_permissions(outside.join("host-secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let vol = w.path("volumes/vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("inside"), "ok").unwrap();
    let swap = w.path("volumes/swap");
    std::os::unix::fs::symlink(&outside, &swap).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let racer = {
        let (stop, swaps, vol, swap) = (stop.clone(), swaps.clone(), vol.clone(), swap.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                exchange(&vol, &swap);
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let m = w.manifest("race", &busybox_manifest("ls /v", &volume_mount(&vol, "/v", "")));
    let (mut inside, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..300 {
        if Instant::now() > deadline {
            break;
        }
        let out = w.run(&[], &m, &[]);
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(!o.contains("host-secret"), "a run saw the host directory through the volume:\n{o}{e}");
        if out.status.success() {
            assert!(o.contains("inside"), "{o}{e}");
            inside += 1;
        } else {
            assert!(e.contains("must lie under volumes_root"), "{e}");
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    assert!(swaps.load(Ordering::Relaxed) > 1000, "the racer ran: {} swaps", swaps.load(Ordering::Relaxed));
    // Both sides of the race were met: the test exercised it.
    assert!(inside > 0 && refused > 0, "{inside} runs saw the volume, {refused} were refused");
}

/// Root in the workload owns an idmapped volume's root-owned files, so it
/// can make a set-user-ID root binary there. Inside, mounts are nosuid: the
/// binary does not raise anyone's privileges. Outside, volumes_root is
/// root's alone (0700): no host user can reach the file.
#[test]
fn a_setuid_root_binary_planted_through_an_idmapped_volume_raises_nobody() {
    let w = World::new();
    let vol = w.path("volumes/plant");
    std::fs::create_dir(&vol).unwrap();
    // The host's root as the sandbox's (read-only), for a dynamically linked `id`.
    let plant = format!(
        "command = [\"/bin/sh\", \"-c\", \"cp /usr/bin/id /v/suid && chown 0:0 /v/suid && chmod 4755 /v/suid\"]\n{}",
        volume_mount(&vol, "/v", "")
    );
    let out = w.run(&[], &w.manifest("plant", &plant), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(vol.join("suid")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o4755), "the plant lands as a set-user-ID root file");

    // Inside, as an ordinary user who may gain privileges (no_new_privs off):
    // the mount is nosuid, so the binary runs with the user's own ids.
    let run = format!(
        "command = [\"/v/suid\", \"-u\"]\nuser = 1000\ngroup = 1000\n[security]\nno_new_privileges = false\n{}",
        volume_mount(&vol, "/v", "")
    );
    let out = w.run(&["--policy", "privileged"], &w.manifest("plantrun", &run), &[]);
    assert_eq!(stdout(&out), "1000\n", "the set-user-ID bit was honoured inside: {}", stderr(&out));

    // Outside, a host user cannot even reach it.
    let err = std::process::Command::new(vol.join("suid")).arg("-u").uid(65534).gid(65534).output().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
}

#[test]
fn a_volumes_root_others_can_enter_is_refused_and_says_how_to_fix_it() {
    let w = World::new();
    let vol = w.path("volumes/open");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(w.path("volumes"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.run(&[], &w.manifest("open", &busybox_manifest("true", &volume_mount(&vol, "/v", ""))), &[]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(e.contains("can be entered by others (mode 0755)") && e.contains("chmod o-rwx"), "{e}");
    // The same volume named through a link of root's to volumes_root, and
    // as a plain (not idmapped) mount: the same check, the same refusal.
    let alias = w.path("alias");
    std::os::unix::fs::symlink(w.path("volumes"), &alias).unwrap();
    let m = w.manifest("aliased", &busybox_manifest("true", &plain_mount(&alias.join("open"), "/v")));
    let out = w.run(&[], &m, &[]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("can be entered by others (mode 0755)") && e.contains("chmod o-rwx"), "{e}");
}

#[test]
fn every_mount_is_nosuid_and_nodev_unless_the_manifest_says_otherwise() {
    let w = World::new();
    let data = w.path("data");
    std::fs::create_dir(&data).unwrap();
    let mounts = format!(
        "[[mounts]]\nsource = {0:?}\ntarget = \"/plain\"\n[[mounts]]\nsource = {0:?}\ntarget = \"/dev-ok\"\ndevices = true\nsetuid = true\n",
        data.display().to_string()
    );
    let m = w.manifest("flags", &busybox_manifest("grep -E ' /(plain|dev-ok) ' /proc/self/mounts", &mounts));
    let out = w.run(&["--policy", "privileged"], &m, &[]);
    let o = stdout(&out);
    let options = |target: &str| -> Vec<String> {
        let line = o.lines().find(|l| l.split_whitespace().nth(1) == Some(target)).unwrap_or_else(|| panic!("{o}"));
        line.split_whitespace().nth(3).unwrap().split(',').map(str::to_owned).collect()
    };
    let plain = options("/plain");
    assert!(plain.contains(&"nosuid".into()) && plain.contains(&"nodev".into()) && plain.contains(&"ro".into()), "{o}");
    let open = options("/dev-ok");
    assert!(!open.contains(&"nosuid".into()) && !open.contains(&"nodev".into()), "{o}");
}

/// A mount source inside a volume that a workload writes (here its own
/// idmapped volume, whose `conf` is also mounted on its own): the workload
/// replaces `conf` with a link to the host's `/` (owned by the host's
/// root, as all it makes there is). paddock follows no link under
/// volumes_root: the next start is refused, saying why, and never mounts
/// the host's root.
#[test]
fn a_link_a_workload_plants_in_another_mounts_source_is_not_followed() {
    let w = World::new();
    let vol = w.path("volumes/app");
    std::fs::create_dir_all(vol.join("conf")).unwrap();
    let mounts = format!("{}{}", volume_mount(&vol, "/app", ""), plain_mount(&vol.join("conf"), "/conf"));
    let m = w.manifest("plant", &busybox_manifest("ls /conf; rm -rf /app/conf && ln -s / /app/conf", &mounts));
    let first = w.run(&[], &m, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let planted = std::fs::symlink_metadata(vol.join("conf")).unwrap();
    assert!(planted.file_type().is_symlink() && planted.uid() == 0, "the workload planted a link of root's");
    let second = w.run(&[], &m, &[]);
    assert!(!stdout(&second).contains("etc"), "the host's root was mounted:\n{}", stdout(&second));
    refused(&second, "the second start", "where paddock follows no symlink");
}

/// The same plant, named by another path: through a link of root's to
/// volumes_root, or with volumes_root itself configured as a link. What is
/// under volumes_root is a matter of what a path reaches, not of how it is
/// spelled.
#[test]
fn a_planted_link_is_not_followed_whatever_name_reaches_its_volume() {
    let w = World::new();
    let vol = w.path("volumes/app");
    std::fs::create_dir_all(&vol).unwrap();
    // As the workload plants it through its idmapped volume: root's.
    std::os::unix::fs::symlink("/", vol.join("conf")).unwrap();
    let alias = w.path("alias");
    std::os::unix::fs::symlink(w.path("volumes"), &alias).unwrap();
    let run = |source: &Path, volumes_root: &Path| {
        let m = w.manifest("alias", &busybox_manifest("ls /conf", &plain_mount(source, "/conf")));
        let mut args = w.run_args();
        *args.last_mut().unwrap() = volumes_root.display().to_string();
        w.run_with(args, &m, &[])
    };
    for (source, volumes_root) in [(alias.join("app/conf"), w.path("volumes")), (vol.join("conf"), alias.clone())] {
        let out = run(&source, &volumes_root);
        let what = format!("{} with volumes_root {}", source.display(), volumes_root.display());
        assert!(!stdout(&out).contains("etc"), "{what}: the host's root was mounted:\n{}", stdout(&out));
        refused(&out, &what, "where paddock follows no symlink");
    }
}

/// A rootfs under volumes_root is reached as a mount source there is: a
/// link there, even root's, is not followed.
#[test]
fn a_rootfs_through_a_link_under_volumes_root_is_refused() {
    let w = World::new();
    let link = w.path("volumes/root");
    std::os::unix::fs::symlink(common::sandbox::busybox_rootfs(), &link).unwrap();
    let m = w.manifest(
        "linked",
        &format!("command = [\"/bin/true\"]\nrootfs = {{ path = {:?} }}\n", link.display().to_string()),
    );
    refused(&w.run(&[], &m, &[]), "a rootfs through a link", "where paddock follows no symlink");
}

/// A source spelled as volumes_root itself (a trailing `/` or `/.`, which
/// a policy's prefix pattern reads as under it) would give the workload
/// every volume at once, idmapped: refused.
#[test]
fn volumes_root_itself_is_no_workloads_volume_however_it_is_spelled() {
    let w = World::new();
    let root = w.path("volumes");
    for spelling in ["/", "/."] {
        let source = Path::new(&format!("{}{spelling}", root.display())).to_owned();
        let m = w.manifest("all", &busybox_manifest("ls /v", &volume_mount(&source, "/v", "")));
        refused(&w.run(&[], &m, &[]), spelling, "itself: a workload may be given a volume under it");
    }
}

/// Outside volumes_root, a source is followed through an operator's link
/// (root's, in a directory only root may change) and through no other: not
/// a link someone else owns, nor one in a directory others may write.
#[test]
fn a_source_goes_through_a_link_only_where_no_one_but_root_could_have_made_it() {
    use std::os::unix::fs::symlink;
    let w = World::new();
    let real = w.path("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("marker"), "real").unwrap();
    let safe = w.path("safe");
    std::fs::create_dir(&safe).unwrap();
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&real, safe.join("link")).unwrap();
    let open = w.path("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&real, open.join("link")).unwrap();
    let theirs = safe.join("theirs");
    symlink(&real, &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(1000), Some(1000)).unwrap();
    let run = |source: &Path| {
        w.run(&[], &w.manifest("links", &busybox_manifest("cat /m/marker", &plain_mount(source, "/m"))), &[])
    };
    let followed = run(&safe.join("link"));
    assert_eq!(stdout(&followed), "real", "{}", stderr(&followed));
    for (source, link) in [(open.join("link/."), open.join("link")), (theirs.clone(), theirs.clone())] {
        let said = format!("{} is a symlink that someone other than root could have made", link.display());
        refused(&run(&source), &source.display().to_string(), &said);
    }
}

/// The host's /proc, /sys and the other kernel filesystems are no mount
/// source unless the manifest says so (and baseline refuses that): a mount
/// of one, or of `/` (which takes the host's /proc along), fails the start
/// saying where. A rootfs on one is refused whatever the manifest says.
#[test]
fn the_hosts_kernel_filesystems_are_mounted_only_when_the_manifest_says_so() {
    let w = World::new();
    let run = |policy: &str, source: &str, extra: &str| {
        let mounts = format!("[[mounts]]\nsource = {source:?}\ntarget = \"/h\"\n{extra}");
        let m = w.manifest("kfs", &busybox_manifest("test -e /h/1/cmdline && echo seen", &mounts));
        w.run(&["--policy", policy], &m, &[])
    };
    let sees_host = "it shows the workload the host's processes, network and kernel settings";
    refused(
        &run("baseline", "/proc", ""),
        "/proc",
        &format!("mount source /proc is on the host's proc filesystem: {sees_host}"),
    );
    refused(&run("baseline", "/proc/1", ""), "/proc/1", "mount source /proc/1 is on the host's proc filesystem");
    refused(
        &run("baseline", "/sys/kernel", ""),
        "/sys/kernel",
        "mount source /sys/kernel is on the host's sysfs filesystem",
    );
    let out = run("baseline", "/", "");
    refused(&out, "/", "mount source / holds the host's ");
    assert!(stderr(&out).contains(" filesystem at /"), "{}", stderr(&out));
    // Asked for, where a policy allows it: the host's processes are seen.
    let out = run("privileged", "/proc", "kernel_filesystems = true\n");
    assert_eq!(stdout(&out), "seen\n", "{}", stderr(&out));
    let out = run("baseline", "/proc", "kernel_filesystems = true\n");
    assert!(stderr(&out).contains("no-host-kernel-filesystem-mounts"), "{}", stderr(&out));
    let m = w.manifest("kfsroot", "command = [\"/bin/true\"]\n[rootfs]\npath = \"/proc\"\n");
    let out = w.run(&["--policy", "privileged"], &m, &[]);
    refused(&out, "rootfs /proc", "rootfs /proc is on the host's proc filesystem");
}

/// A mount gives a workload what lies below its source without the walk
/// from `/` that the host's permissions guard: a source below a directory
/// others may not enter (a 0644 manifest in the 0700 workloads directory)
/// is refused, saying which directory and what to do, by whatever path it
/// is reached. volumes_root (root's alone) is the place for such data.
#[test]
fn a_source_below_a_directory_others_may_not_enter_is_refused() {
    use std::os::unix::fs::symlink;
    let w = World::new();
    let locked = w.path("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("db.toml"), "env = { PASSWORD = \"hunter2\" }\n").unwrap();
    std::fs::set_permissions(locked.join("db.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A link of root's, in a directory of root's, that leads there.
    let safe = w.path("safe");
    std::fs::create_dir(&safe).unwrap();
    symlink(&locked, safe.join("link")).unwrap();
    let run =
        |source: &Path| w.run(&[], &w.manifest("peek", &busybox_manifest("cat /m", &plain_mount(source, "/m"))), &[]);
    for source in [locked.join("db.toml"), safe.join("link/db.toml")] {
        let out = run(&source);
        let said = format!(
            "mount source {} lies below {}, a directory others may not enter (mode 0700)",
            source.display(),
            locked.display()
        );
        refused(&out, &source.display().to_string(), &said);
        assert!(stderr(&out).contains("move the data under volumes_root"), "{}", stderr(&out));
        assert!(!stdout(&out).contains("hunter2"));
    }
    // Others may enter: mounted.
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = run(&locked.join("db.toml"));
    assert!(stdout(&out).contains("hunter2"), "{}", stderr(&out));
}

/// Swaps two paths (renameat2 with RENAME_EXCHANGE), by the system call
/// itself: nix offers it only with glibc, and these tests also run against
/// the musl build that ships.
fn exchange(a: &Path, b: &Path) {
    use std::os::unix::ffi::OsStrExt;
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two NUL-terminated paths that outlive the call, which writes no memory of ours.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), RENAME_EXCHANGE)
    };
    assert_eq!(rc, 0, "renameat2(RENAME_EXCHANGE): {}", std::io::Error::last_os_error());
}
