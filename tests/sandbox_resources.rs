//! `[resources]`: limits hold inside, and the host and paddock are
//! unaffected. (Root, user namespaces and the memory/pids cgroup
//! controllers required.)

mod common;

use common::sandbox::{World, busybox_manifest, cgroup_dirs, stderr, stdout};

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let w = World::new();
    let started = std::time::Instant::now();
    // busybox sh gives up (status 2) when fork fails; a shell that kept going would still be capped.
    let script = "i=0; while [ $i -lt 200 ]; do sleep 2 & i=$((i+1)); done; echo unreachable";
    let out = w.run(&[], &w.manifest("bomb", &busybox_manifest(script, "[resources]\npids = 10\n")), &[]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("can't fork: Resource temporarily unavailable"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("unreachable"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the sleeps left behind were killed with the sandbox"
    );
    assert!(cgroup_dirs("bomb").is_empty(), "the cgroup is removed");
}

#[test]
fn a_memory_hog_is_oom_killed_at_the_memory_limit() {
    let w = World::new();
    // The workload's own process is the hog (a child killed by the OOM killer
    // would just be a failed command to the shell).
    let text =
        busybox_manifest("exec dd if=/dev/zero of=/dev/null bs=64M count=1", "[resources]\nmemory = \"32MiB\"\n");
    let out = w.run(&[], &w.manifest("hog", &text), &[]);
    assert_eq!(out.status.code(), Some(137), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("hog was oom-killed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("(memory limit 32MiB)"), "{}", stderr(&out));
}

#[test]
fn nofile_sets_the_open_files_limit() {
    let w = World::new();
    let out = w.run(
        &[],
        &w.manifest("files", &busybox_manifest("ulimit -n; ulimit -Hn", "[resources]\nnofile = 256\n")),
        &[],
    );
    assert_eq!(stdout(&out), "256\n256\n", "{}", stderr(&out));
}

/// Runs a one-second workload `name` with `resources` (TOML) and returns
/// the first of `files` found in its cgroup once the workload runs (its
/// limits are written before it does: read earlier, a file can still
/// hold the kernel's default); the run must succeed.
fn cgroup_file_while_running(name: &str, resources: &str, files: &[&str]) -> Option<String> {
    let w = World::new();
    let script = "echo up; sleep 1";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .arg(w.manifest(name, &busybox_manifest(script, &format!("[resources]\n{resources}\n"))))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = common::output_lines(child.stdout.take().unwrap()).recv_timeout(std::time::Duration::from_secs(15));
    assert_eq!(up.as_deref(), Ok("up"), "the workload did not start");
    let found =
        cgroup_dirs(name).iter().find_map(|d| files.iter().find_map(|f| std::fs::read_to_string(d.join(f)).ok()));
    assert!(child.wait().unwrap().success());
    found
}

#[test]
fn cpu_limit_is_written_to_the_cgroup() {
    let quota = cgroup_file_while_running("cpu", "cpu = 0.25", &["cpu.cfs_quota_us", "cpu.max"]);
    let quota = quota.expect("the workload's cpu cgroup exists while it runs");
    assert!(quota.starts_with("25000"), "0.25 cores is 25ms per 100ms: {quota}");
}

/// The memory limit holds memory and swap together: on v1 (with swap
/// accounting) memory.memsw.limit_in_bytes is the limit too, as v2's
/// memory.swap.max is 0, so a workload cannot pass it by swapping.
#[test]
fn the_memory_limit_counts_swap_too() {
    let files = ["memory.memsw.limit_in_bytes", "memory.swap.max"];
    let swap = cgroup_file_while_running("swap", "memory = \"64MiB\"", &files).expect(
        "the workload's memory cgroup, with swap accounting, exists while it runs \
         (on v1 the kernel needs swapaccount=1 for memory.memsw.limit_in_bytes)",
    );
    assert!(["67108864\n", "0\n"].contains(&swap.as_str()), "memory and swap together: {swap:?}");
}

#[test]
fn a_limit_the_host_cannot_enforce_is_a_clear_start_error() {
    let w = World::new();
    // An empty directory as the cgroup root: no controllers at all.
    let fake = w.path("no-cgroups");
    std::fs::create_dir(&fake).unwrap();
    let out = w.run(
        &["--cgroup-root", fake.to_str().unwrap()],
        &w.manifest("limited", &busybox_manifest("true", "[resources]\nmemory = \"64MiB\"\n")),
        &[],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("memory limit needs the memory cgroup controller, which this host does not have"),
        "{}",
        stderr(&out)
    );
}

/// On cgroup v2, a sandbox sees its own cgroup at /sys/fs/cgroup,
/// read-only, as Docker shows a container its own: where JVMs and Go
/// runtimes read the limits they size themselves to. On a private network
/// (a sysfs of its own) and on the host's (the host's /sys, bound, whose
/// cgroup tree is covered): the same. (On a v1 host, /sys/fs/cgroup stays
/// empty: sandbox_rootfs's masking test.)
#[test]
fn on_cgroup_v2_a_sandbox_sees_its_own_cgroup_read_only_at_sys_fs_cgroup() {
    let w = World::new();
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|r| std::path::Path::new(r).join("cgroup.controllers").exists())
        .expect("this test needs a cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    // The last mount there is the one seen (on the host's /sys, the
    // host's tree and its cover lie beneath).
    let script = "grep ' /sys/fs/cgroup ' /proc/self/mountinfo | tail -n 1 | cut -d' ' -f4,5,6,9; \
                  grep '^0::' /proc/self/cgroup; echo procs $(cat /sys/fs/cgroup/cgroup.procs); \
                  touch /sys/fs/cgroup/x 2>/dev/null || echo read-only";
    for (name, extra, policy) in
        [("own", "", "baseline"), ("hostnet", "[namespaces]\nnetwork = \"host\"\n", "privileged")]
    {
        let manifest = w.manifest(name, &busybox_manifest(script, extra));
        let out = w.run(&["--policy", policy, "--cgroup-root", root], &manifest, &[]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let said = stdout(&out);
        let lines: Vec<&str> = said.lines().collect();
        assert_eq!(lines.len(), 4, "{name}: {said}");
        assert!(lines[0].starts_with("/ /sys/fs/cgroup ro,") && lines[0].ends_with(" cgroup2"), "{name}: {said}");
        assert_eq!(lines[1], "0::/", "{name}: the namespace is rooted at its cgroup");
        // Its own processes only (the init, the shell, the cat), by their
        // pids in its pid namespace.
        let procs: Vec<u32> = lines[2].strip_prefix("procs ").unwrap().split(' ').map(|p| p.parse().unwrap()).collect();
        assert!(procs.contains(&1) && procs.len() <= 4 && procs.iter().all(|p| *p < 20), "{name}: {said}");
        assert_eq!(lines[3], "read-only", "{name}");
    }
}

/// The real cgroup v2 path: the sandbox is born in its cgroup (clone3 with
/// CLONE_INTO_CGROUP). Uses the host's cgroup2 mount: /sys/fs/cgroup on a
/// pure-v2 host, /sys/fs/cgroup/unified on a hybrid one like this.
#[test]
fn on_cgroup_v2_the_sandbox_is_born_in_its_cgroup() {
    let w = World::new();
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|r| std::path::Path::new(r).join("cgroup.controllers").exists())
        .expect("this test needs a cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(w.run_args())
        .args(["--cgroup-root", root])
        .arg(w.manifest("born-in", &busybox_manifest("sleep 1", "")))
        .spawn()
        .unwrap();
    let pids = common::sandbox::wait_for_descendants(child.id(), 2);
    assert!(!pids.is_empty());
    // A run's own cgroup: paddock-run/NAME-PID.START.PIDNS, paddock run's
    // pid, start time and pid namespace.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let started = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().to_owned();
    let ns = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/pid").unwrap());
    let own = format!("paddock-run/born-in-{}.{started}.{ns}", child.id());
    for pid in &pids {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(cgroups.lines().any(|l| l == format!("0::/{own}")), "pid {pid} is in {cgroups}");
    }
    assert!(child.wait_with_output().unwrap().status.success());
    assert!(!std::path::Path::new(root).join(&own).exists(), "the cgroup is removed");
}
