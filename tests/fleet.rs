//! README's fleet recipe against a real daemon: a git repository of
//! manifests, a directory per host, and examples/fleet/paddock-git-sync
//! swapping the daemon's workloads link to each new commit. (Root and
//! user namespaces required, as for every daemon test; and git.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Daemon;

fn run(cmd: &mut Command) -> String {
    let out =
        cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (git is needed: apt-get install git, as .ci/run does)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn git(repo: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "ops")
        .env("GIT_AUTHOR_EMAIL", "ops@example.com")
        .env("GIT_COMMITTER_NAME", "ops")
        .env("GIT_COMMITTER_EMAIL", "ops@example.com"))
}

fn app(rev: u32) -> String {
    format!("command = [\"/bin/sh\", \"-c\", \"echo rev {rev}; exec sleep 1000\"]\n")
}

/// One run of the timer's service: the script as README shows it.
fn sync(d: &Daemon) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/paddock-git-sync");
    run(Command::new("bash")
        .arg(script)
        .args(["--subdir", "hosts/h1"])
        .arg(d.path("repo"))
        .arg(d.path("etc/workloads")))
}

/// The CI gate of README's fleet recipe: for each host's directory,
/// `check`'s and `export`'s exit statuses.
fn gate(d: &Daemon) -> Vec<(&'static str, Option<i32>, Option<i32>)> {
    let images = d.path("images.toml");
    std::fs::write(&images, "app = \"busybox\"\nsteady = \"busybox\"\nother = \"busybox\"\n").unwrap();
    let paddock = |args: &[&str], host: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(args)
            .arg(d.path("repo").join("hosts").join(host))
            .output()
            .unwrap();
        out.status.code()
    };
    let export = ["export", "kubernetes", "--image-map", images.to_str().unwrap()];
    ["h1", "h2"].map(|h| (h, paddock(&["check", "--no-host-checks"], h), paddock(&export, h))).to_vec()
}

/// The last line the workload wrote (the log stamps each line: "TIME TEXT").
fn last_line(d: &Daemon, name: &str) -> String {
    let log = std::fs::read_to_string(d.path(&format!("state/logs/{name}.log"))).unwrap_or_default();
    log.lines().last().and_then(|l| l.split_once(' ')).map(|(_, text)| text.to_owned()).unwrap_or_default()
}

#[test]
fn a_host_follows_its_directory_of_a_git_repository_commit_by_commit() {
    let started = Instant::now();
    let d = Daemon::setup();
    let repo = d.path("repo");
    std::fs::create_dir_all(repo.join("hosts/h1")).unwrap();
    std::fs::create_dir_all(repo.join("common")).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("hosts/h1/app.toml"), app(0)).unwrap();
    // What several hosts run lives once, linked from each host's directory.
    std::fs::write(repo.join("common/steady.toml"), common::daemon::SLEEPER).unwrap();
    std::os::unix::fs::symlink("../../common/steady.toml", repo.join("hosts/h1/steady.toml")).unwrap();
    // Another host's workloads are not this host's.
    std::fs::create_dir_all(repo.join("hosts/h2")).unwrap();
    std::fs::write(repo.join("hosts/h2/other.toml"), common::daemon::SLEEPER).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "rev 0"]);

    std::fs::create_dir(d.path("etc")).unwrap();
    std::fs::set_permissions(d.path("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The host ran its workloads from a directory, as the package makes it.
    std::fs::create_dir(d.path("etc/workloads")).unwrap();
    std::fs::set_permissions(d.path("etc/workloads"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.path("etc/workloads/app.toml"), app(0)).unwrap();
    std::fs::write(d.path("etc/workloads/steady.toml"), common::daemon::SLEEPER).unwrap();
    let wl = d.path("wl").display().to_string();
    d.configure(
        &format!("workloads = {wl:?}"),
        &format!("workloads = {:?}", d.path("etc/workloads").display().to_string()),
    );
    let d = d.start(&[]);
    let steady = d.running_pid("steady");
    let app_pid = d.running_pid("app");
    // README's first step: the directory moved aside, then the first sync
    // makes the path a link to the same manifests; nothing restarts.
    run(Command::new("mv").arg("-T").arg(d.path("etc/workloads")).arg(d.path("etc/workloads.orig")));
    assert!(sync(&d).contains("rev 0"));
    d.wait_for("the link to be read", |d| {
        std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default().contains("watching what it is now")
    });
    assert_eq!((d.running_pid("steady"), d.running_pid("app")), (steady, app_pid));
    d.wait_for("app at rev 0", |d| last_line(d, "app") == "rev 0");
    assert!(d.workload("other").is_none(), "h2's workload runs on h1");

    // A hundred commits, each applied in order, each seen running.
    for rev in 1..=100 {
        std::fs::write(repo.join("hosts/h1/app.toml"), app(rev)).unwrap();
        git(&repo, &["commit", "--quiet", "-am", &format!("rev {rev}")]);
        let said = sync(&d);
        assert!(said.contains(&format!("rev {rev}")), "{said}");
        d.wait_for(&format!("app at rev {rev}"), |d| last_line(d, "app") == format!("rev {rev}"));
    }
    let app_pid = d.running_pid("app");
    assert_eq!(d.running_pid("steady"), steady, "a workload whose manifest did not change is never touched");

    // A bad commit: the previous version keeps running, and status says why.
    std::fs::write(repo.join("hosts/h1/app.toml"), format!("{}colour = \"red\"\n", app(101))).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "a typo"]);
    sync(&d);
    d.wait_for("app's error", |d| d.workload("app").is_some_and(|w| w["error"].is_string()));
    let w = d.workload("app").unwrap();
    let error = w["error"].as_str().unwrap();
    assert!(error.contains("app.toml:2:1") && error.contains("colour"), "{error}");
    assert_eq!((w["state"].as_str(), w["pid"].as_i64()), (Some("running"), Some(app_pid)));
    assert_eq!(last_line(&d, "app"), "rev 100");
    // The repository's CI gate, as README runs it (each host's directory
    // on its own, one image map for all), would have refused it, in h1 only.
    assert_eq!(gate(&d), [("h1", Some(1), Some(1)), ("h2", Some(0), Some(0))]);

    // The revert heals it: the error goes, and the version running is the one kept.
    git(&repo, &["revert", "--no-edit", "HEAD"]);
    sync(&d);
    d.wait_for("app's error to clear", |d| d.workload("app").is_some_and(|w| w["error"].is_null()));
    assert_eq!(d.running_pid("app"), app_pid);
    assert_eq!(d.running_pid("steady"), steady);
    assert_eq!(last_line(&d, "app"), "rev 100");
    assert_eq!(gate(&d), [("h1", Some(0), Some(0)), ("h2", Some(0), Some(0))]);

    // Only the current checkout and the one before it are kept.
    let checkouts = std::fs::read_dir(d.path("etc"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".workloads@"))
        .count();
    assert_eq!(checkouts, 2);
    // Root's alone, as the bare clone: manifests hold secrets (`env`).
    let link = std::fs::read_link(d.path("etc/workloads")).unwrap();
    let checkout = d.path("etc").join(link.components().next().unwrap());
    for private in [checkout, d.path("etc/.workloads.git")] {
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", private.display());
    }
    assert!(!paddock::fsutil::reachable_by_others(&d.path("etc/workloads")));
    // A sync with nothing new changes nothing, but makes a clone and a
    // checkout from before the umask (an older script's, 0755) private.
    let old = [d.path("etc").join(link.components().next().unwrap()), d.path("etc/.workloads.git")];
    for dir in &old {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(sync(&d), "");
    assert_eq!(std::fs::read_link(d.path("etc/workloads")).unwrap(), link);
    for dir in &old {
        assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
    eprintln!("102 syncs applied in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(120), "the fleet loop took {:?}", started.elapsed());
}

#[test]
fn the_timer_and_its_service_pass_systemd_analyze_verify() {
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet");
    let dir = tempfile::tempdir().unwrap();
    // The script where the unit expects it to be installed, here the repository's.
    let service = std::fs::read_to_string(fleet.join("paddock-git-sync.service")).unwrap();
    let script = fleet.join("paddock-git-sync").display().to_string();
    std::fs::write(
        dir.path().join("paddock-git-sync.service"),
        service.replace("/usr/local/bin/paddock-git-sync", &script),
    )
    .unwrap();
    std::fs::copy(fleet.join("paddock-git-sync.timer"), dir.path().join("paddock-git-sync.timer")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(["paddock-git-sync.service", "paddock-git-sync.timer"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd, as .ci/run does)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn check_keeps_the_old_version_whole_and_a_relative_repository_path_works() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("hosts/h1")).unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("hosts/h1/app.toml"), app(1)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "good"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet/paddock-git-sync");
    let sync = || {
        Command::new("bash")
            .arg(&script)
            .args(["--check", "--subdir", "hosts/h1", "repo", "etc/workloads"])
            .current_dir(dir.path())
            .env("PADDOCK", env!("CARGO_BIN_EXE_paddock"))
            .output()
            .unwrap()
    };
    // A directory where the link goes (as the package makes one) is refused, saying what to do.
    std::fs::create_dir(dir.path().join("etc/workloads")).unwrap();
    let out = sync();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && said.contains("is not a symlink") && said.contains("mv -T"), "{said}");
    std::fs::remove_dir(dir.path().join("etc/workloads")).unwrap();
    let out = sync();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let good = std::fs::read_link(dir.path().join("etc/workloads")).unwrap();
    std::fs::write(repo.join("hosts/h1/app.toml"), format!("{}colour = \"red\"\n", app(2))).unwrap();
    git(&repo, &["commit", "--quiet", "-am", "a typo"]);
    let out = sync();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("does not pass paddock check") && said.contains("app.toml:2:1"), "{said}");
    assert_eq!(std::fs::read_link(dir.path().join("etc/workloads")).unwrap(), good);
    // A symbolic link out of the repository (to a host file) is refused, and the link stays.
    git(&repo, &["revert", "--no-edit", "HEAD"]);
    std::os::unix::fs::symlink("/etc/shadow", repo.join("hosts/h1/leak.toml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "a link"]);
    let out = sync();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && said.contains("lead out of the repository")
            && said.contains("hosts/h1/leak.toml"),
        "{said}"
    );
    assert_eq!(std::fs::read_link(dir.path().join("etc/workloads")).unwrap(), good);
    // Relative, climbing out, as well.
    std::fs::remove_file(repo.join("hosts/h1/leak.toml")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/shadow", repo.join("hosts/h1/leak.toml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "a climbing link"]);
    let out = sync();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && said.contains("lead out of the repository"), "{said}");
    assert_eq!(std::fs::read_link(dir.path().join("etc/workloads")).unwrap(), good);
    // Through another link: on paper s/s/../.. stays in hosts/h1; on disk,
    // with s -> ., each .. climbs, out of the checkout to /etc/passwd.
    std::fs::remove_file(repo.join("hosts/h1/leak.toml")).unwrap();
    std::os::unix::fs::symlink(".", repo.join("hosts/h1/s")).unwrap();
    let climb = format!("{}{}etc/passwd", "s/".repeat(10), "../".repeat(10));
    std::os::unix::fs::symlink(&climb, repo.join("hosts/h1/x.toml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "a link through a link"]);
    let out = sync();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && said.contains("lead out of the repository")
            && said.contains("hosts/h1/x.toml")
            && !said.contains("hosts/h1/s "),
        "{said}"
    );
    assert_eq!(std::fs::read_link(dir.path().join("etc/workloads")).unwrap(), good);
    // Links through links that stay inside are synced.
    std::fs::remove_file(repo.join("hosts/h1/x.toml")).unwrap();
    std::fs::create_dir(repo.join("common")).unwrap();
    std::fs::write(repo.join("common/shared.toml"), app(3)).unwrap();
    std::os::unix::fs::symlink("../../common", repo.join("hosts/h1/c")).unwrap();
    std::os::unix::fs::symlink("s/s/c/shared.toml", repo.join("hosts/h1/shared.toml")).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "links that stay inside"]);
    let out = sync();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let synced = dir.path().join("etc/workloads/shared.toml");
    assert_eq!(std::fs::read_to_string(synced).unwrap(), app(3));
}
