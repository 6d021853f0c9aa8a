//! Upgrading in place: the daemon re-executes the binary now installed at
//! its path, keeping its pid (the one systemd watches), its control socket
//! (handed across the exec, so no client is refused meanwhile) and every
//! workload: the new image adopts each running sandbox from its record, as
//! after a crash, except that the inits are still its children.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The environment variable that hands the listening control socket to
/// the re-executed image.
pub const LISTEN_FD: &str = "PADDOCK_LISTEN_FD";

/// The binary at the path this daemon was started from, and whether it
/// was replaced since (a package upgrade unlinks the old file: the kernel
/// then shows `/proc/self/exe` as "PATH (deleted)").
pub fn installed() -> Option<(PathBuf, bool)> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?.into_os_string().into_vec();
    let (path, replaced) = match exe.strip_suffix(b" (deleted)") {
        Some(path) => (path.to_vec(), true),
        None => (exe, false),
    };
    let path = PathBuf::from(OsString::from_vec(path));
    path.exists().then_some((path, replaced))
}

/// The listening socket a previous image of this process handed over, if
/// any (the variable is unset: `take_env`, at the daemon's start).
pub fn inherited_listener() -> Option<OwnedFd> {
    let fd: RawFd = crate::sandbox::take_env(LISTEN_FD)?.parse().ok()?;
    // SAFETY: only paddock sets this, and only when it exec'd itself, for
    // this image to own; taken once (the variable is read only here).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Close-on-exec again: no sandbox may inherit it.
    let _ = crate::sandbox::set_cloexec(owned.as_fd(), true);
    Some(owned)
}

/// Which file is at a path, and which version of it: device, inode and
/// change time (a package's new binary is a new file renamed there; one
/// copied over the old one changes its change time).
pub type Identity = (u64, u64, i64, i64);

/// The `Identity` of the file at `binary`, if it can be read.
pub fn identity(binary: &std::path::Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(binary).ok()?;
    Some((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// What the daemon's configuration was read from, as it was then: the
/// configuration file, the operators' policies (`*.json` in policy_dir)
/// and the network definitions (`*.conflist` in networks_dir), each taken
/// before it is read. The daemon reads them once, at its start; a reload
/// that finds any of them changed re-executes the daemon (as `paddock
/// upgrade` does, every workload kept running) so that the change applies,
/// where it would have been ignored. What the daemon does not read (an
/// editor's swap file, a subdirectory) is no change.
#[derive(Debug, Clone, Default)]
pub struct ConfigFiles {
    file: PathBuf,
    /// Each directory, and the ending of the names read from it.
    dirs: Vec<(PathBuf, &'static str)>,
    taken: std::collections::BTreeMap<PathBuf, Option<Identity>>,
}

impl ConfigFiles {
    /// The configuration file at `path` (which may be absent: the
    /// defaults apply), as it is now.
    pub fn new(path: &std::path::Path) -> Self {
        let mut files = Self { file: path.to_owned(), ..Self::default() };
        files.taken = files.now();
        files
    }

    /// And the policies and network definitions, as they are now (taken
    /// before they are read); the configuration file as it was taken.
    pub fn with_dirs(mut self, policy_dir: &std::path::Path, networks_dir: &std::path::Path) -> Self {
        self.dirs = vec![(policy_dir.to_owned(), ".json"), (networks_dir.to_owned(), ".conflist")];
        let file = self.taken.remove(&self.file).flatten();
        self.taken = self.now();
        self.taken.insert(self.file.clone(), file);
        self
    }

    /// The same files taken again, as they are now.
    pub fn retaken(&self) -> Self {
        Self { taken: self.now(), ..self.clone() }
    }

    fn now(&self) -> std::collections::BTreeMap<PathBuf, Option<Identity>> {
        use std::os::unix::fs::MetadataExt;
        let mut taken = std::collections::BTreeMap::new();
        taken.insert(self.file.clone(), identity(&self.file));
        for (dir, ending) in &self.dirs {
            // A directory by which one it is (its change time moves with
            // every entry, read or not).
            let which = std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino(), 0, 0));
            taken.insert(dir.clone(), which);
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(ending) && !crate::model::is_ignored_file_name(&name) {
                    taken.insert(entry.path(), identity(&entry.path()));
                }
            }
        }
        taken
    }

    /// What differs now from what was taken: files changed, added or removed.
    pub fn changed(&self) -> Vec<PathBuf> {
        let now = self.now();
        let mut changed: Vec<PathBuf> =
            now.iter().filter(|(p, id)| self.taken.get(*p) != Some(*id)).map(|(p, _)| p.clone()).collect();
        changed.extend(self.taken.keys().filter(|p| !now.contains_key(*p)).cloned());
        changed.sort();
        changed
    }
}

/// The environment variable through which a daemon gives what it
/// executes (its next image, and the check of it first) the settings a
/// re-execution cannot change (`Fixed`).
pub const FIXED: &str = "PADDOCK_FIXED_SETTINGS";

/// This daemon's `Fixed`, as its next image and the check of it get it.
static HANDED_ON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// What a re-executed daemon keeps of its predecessor's configuration:
/// where the records, id slices, kept state and logs are (`state_dir`),
/// the network namespaces (`run_dir`), the cgroups (`cgroup_root`), how
/// ids are remapped (`[remap]`) and the bridge's subnet. The workloads
/// that run were started with them and are adopted through them: with
/// another `state_dir`, the new image would find no record, leave them
/// running unsupervised and start each again, its id slice given anew.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fixed {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub remap: crate::config::Remap,
    pub subnet: String,
}

impl Fixed {
    /// How these differ from `running`'s, each as `KEY is NEW here, OLD in the running daemon`.
    pub fn differences(&self, running: &Fixed) -> Vec<String> {
        let path = |key: &str, new: &std::path::Path, old: &std::path::Path| {
            (new != old).then(|| format!("{key} is {} here, {} in the running daemon", new.display(), old.display()))
        };
        [
            path("state_dir", &self.state_dir, &running.state_dir),
            path("run_dir", &self.run_dir, &running.run_dir),
            path("cgroup_root", &self.cgroup_root, &running.cgroup_root),
            (self.remap != running.remap).then(|| "[remap] differs from the running daemon's".to_owned()),
            (self.subnet != running.subnet)
                .then(|| format!("[network] subnet is {} here, {} in the running daemon", self.subnet, running.subnet)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Gives these to the next image this daemon executes, and to the
    /// check of it (`reexec`, `validate`).
    pub fn hand_on(&self) {
        if let Ok(text) = serde_json::to_string(self) {
            let _ = HANDED_ON.set(text);
        }
    }

    /// The running daemon's, when this process is its next image or the
    /// check of it (taken from the environment); `Err` when it cannot be read.
    pub fn handed() -> Option<Result<Fixed, String>> {
        let text = crate::sandbox::take_env(FIXED)?;
        Some(serde_json::from_str(&text).map_err(|e| format!("{FIXED}: {e}")))
    }
}

/// Where an image hands the next what it knows of the runs it is to
/// adopt (`hand_on_runs`): named for what it held first (the runs'
/// health), as images before this one write and read it.
const RUNS_HANDED: &str = "health.handed.json";

/// How long a hand-over of the runs is good for: the next image reads it
/// at once; one that a failed exec left is never taken by a later daemon.
const RUNS_HANDED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize)]
struct Handed {
    until: crate::daemon::kept::Delay,
    health: std::collections::BTreeMap<String, crate::reconcile::KeptHealth>,
    /// Absent from an older image's file.
    #[serde(default)]
    exits: std::collections::BTreeMap<String, crate::model::Exit>,
}

/// What an image knows of the runs the next is to adopt, and the kept
/// state does not hold: what the probes said of each. And how the run
/// before each ended (its LAST EXIT), which images before this one handed
/// on here, their kept state holding it only while a workload did not
/// run; this one keeps it there and hands on none.
#[derive(Debug, PartialEq)]
pub struct Runs<K> {
    pub health: std::collections::BTreeMap<K, crate::reconcile::KeptHealth>,
    pub exits: std::collections::BTreeMap<K, crate::model::Exit>,
}

impl<K> Default for Runs<K> {
    fn default() -> Self {
        Runs { health: Default::default(), exits: Default::default() }
    }
}

/// Hands the next image what it knows of the runs it is to adopt: a file
/// beside the kept state, not synced (only this boot's next image reads
/// it, within a minute), taken by `handed_runs`. The health is not kept
/// otherwise: a daemon that comes after a crash probes at once.
pub fn hand_on_runs(state_dir: &std::path::Path, runs: Runs<String>) {
    let Runs { health, exits } = runs;
    let something = !health.is_empty() || !exits.is_empty();
    let Some(until) = crate::daemon::kept::Delay::ending_in(RUNS_HANDED_FOR).filter(|_| something) else {
        return;
    };
    let written = serde_json::to_vec(&Handed { until, health, exits })
        .map_err(std::io::Error::other)
        .and_then(|text| crate::fsutil::write_replace(&state_dir.join(RUNS_HANDED), &text, 0o600));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot hand the runs' health on; the next image probes them at once");
    }
}

/// What the image before this one handed on (`hand_on_runs`), taken: the
/// file is removed. Empty when there is none, or it is stale (not this
/// boot's, or older than a minute: an exec that failed left it).
pub fn handed_runs(state_dir: &std::path::Path) -> Runs<crate::model::WorkloadName> {
    let path = state_dir.join(RUNS_HANDED);
    let text = std::fs::read(&path);
    let _ = std::fs::remove_file(&path);
    let handed = text.ok().and_then(|text| serde_json::from_slice::<Handed>(&text).ok());
    let Some(handed) = handed.filter(|h| h.until.left().is_some()) else { return Runs::default() };
    fn named<T>(
        all: std::collections::BTreeMap<String, T>,
    ) -> std::collections::BTreeMap<crate::model::WorkloadName, T> {
        all.into_iter()
            .filter_map(|(name, t)| Some((crate::model::WorkloadName::try_from(name.as_str()).ok()?, t)))
            .collect()
    }
    Runs { health: named(handed.health), exits: named(handed.exits) }
}

/// Why a reload (SIGHUP, `paddock reload`) re-executes the daemon instead
/// of rescanning: its binary was replaced (a package upgrade), or its
/// configuration changed since it was read.
pub fn reload_reexecutes(config: &ConfigFiles) -> Option<String> {
    if installed().is_some_and(|(_, replaced)| replaced) {
        return Some("the binary was replaced".to_owned());
    }
    let changed = config.changed();
    let shown: Vec<String> = changed.iter().take(3).map(|p| p.display().to_string()).collect();
    let more = changed.len().saturating_sub(shown.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    (!changed.is_empty()).then(|| format!("the configuration changed since it was read ({}{more})", shown.join(", ")))
}

/// How long the new binary may take to check the configuration.
const VALIDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// At most this much of what the check wrote is kept for the refusal.
const VALIDATE_OUTPUT: u64 = 8 * 1024;

/// Asks `binary` whether it would start with this daemon's arguments
/// (`paddock daemon --validate`, which changes nothing): after the exec
/// there is no going back, and a new image that refused the configuration
/// (edited since this one read it, or a rule the new version adds) would
/// end the daemon. Blocking; `Err` holds why not, as the binary said it.
/// A binary older than the check (it does not know the flag) is let
/// through, with a warning: a downgrade works as it did. Setting `cancel`
/// ends the check at once (its process group killed): not upgraded.
pub fn validate(binary: &std::path::Path, cancel: &std::sync::atomic::AtomicBool) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(binary);
    command
        .args(std::env::args_os().skip(1))
        .arg("--validate")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // A group of its own: whatever it starts (a wrapper script's
        // paddock) ends with it, and its stderr with them.
        .process_group(0);
    // Nothing of this daemon's: it must not speak to systemd or take a socket.
    for variable in ["NOTIFY_SOCKET", "JOURNAL_STREAM", LISTEN_FD, FIXED] {
        command.env_remove(variable);
    }
    // What it may not change (refused, as the next image would keep it).
    if let Some(fixed) = HANDED_ON.get() {
        command.env(FIXED, fixed);
    }
    let mut child =
        command.spawn().map_err(|e| format!("cannot run {} to check the configuration: {e}", binary.display()))?;
    let mut stderr = child.stderr.take().expect("piped");
    let (said_tx, said_rx) = std::sync::mpsc::channel();
    // Not joined: a process that left the group may hold the pipe for
    // good, and the check must end anyway (the thread, blocked in its
    // read, then lasts as long as that process).
    let reader = std::thread::Builder::new().name("paddock-check".into()).spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(VALIDATE_OUTPUT).read_to_end(&mut text);
        let _ = said_tx.send(String::from_utf8_lossy(&text).into_owned());
    });
    let deadline = std::time::Instant::now() + VALIDATE_TIMEOUT;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Its end seen but the child not reaped (WNOWAIT), so that its group,
    // named by its pid, is still its own when what is left of it is killed.
    let ended = || {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
    };
    let cancelled = || cancel.load(std::sync::atomic::Ordering::Relaxed);
    let cut = loop {
        if ended() {
            break false;
        }
        if std::time::Instant::now() >= deadline || cancelled() {
            break true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    let status = child.wait().ok().filter(|_| !cut);
    if cancelled() {
        return Err("the daemon was asked to stop".to_owned());
    }
    let said = match reader {
        Ok(_) => said_rx.recv_timeout(std::time::Duration::from_secs(1)).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let said = said.trim();
    match status {
        Some(status) if status.success() => Ok(()),
        // clap's usage error: a paddock from before `--validate`.
        Some(status) if status.code() == Some(2) && said.contains("'--validate'") => {
            tracing::warn!(binary = %binary.display(), "the new binary cannot check the configuration (it is older than `paddock daemon --validate`): re-executing it unchecked");
            Ok(())
        }
        Some(status) if said.is_empty() => Err(format!("it exited with {status}")),
        Some(_) => Err(said.to_owned()),
        None => Err(format!("it did not answer within {} s", VALIDATE_TIMEOUT.as_secs())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot re-execute {binary}: {source}")]
pub struct ExecError {
    binary: PathBuf,
    source: std::io::Error,
}

/// Replaces this process with `binary`, with the same arguments, handing
/// it `listener`. Returns only on failure, having changed nothing.
pub fn reexec(binary: &std::path::Path, listener: &OwnedFd) -> ExecError {
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // It stays open across the exec.
    if let Err(e) = crate::sandbox::set_cloexec(listener.as_fd(), false) {
        return ExecError { binary: binary.to_owned(), source: e.into() };
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = std::process::Command::new(binary);
    command.args(args).env(LISTEN_FD, fd.to_string());
    // What this image was handed (left set where it could not be unset,
    // `take_env`) never reaches the next one: only what is set below.
    command
        .env_remove(crate::sandbox::zygote::PREDECESSOR)
        .env_remove(crate::sandbox::unreaped::INHERITED)
        .env_remove(crate::sandbox::INHERITED_NOFILE_ENV)
        .env_remove(FIXED);
    if let Some(fixed) = HANDED_ON.get() {
        command.env(FIXED, fixed);
    }
    // Workloads and execs get the open-files limit the first image was
    // started with, not the one it raised its own to.
    if let Some(soft) = crate::sandbox::inherited_nofile_env() {
        command.env(crate::sandbox::INHERITED_NOFILE_ENV, soft);
    }
    // The zygote reads end-of-file at the exec and exits: the new image
    // reaps it, by the pid given here (see `zygote::reap_predecessor`).
    if let Some(zygote) = crate::sandbox::zygote::running() {
        command.env(crate::sandbox::zygote::PREDECESSOR, zygote.to_string());
    }
    // So are the exec sessions' `__enter`s, once they have hung up.
    if let Some(pidfds) = crate::sandbox::unreaped::hand_over() {
        command.env(crate::sandbox::unreaped::INHERITED, pidfds);
    }
    let source = command.exec();
    // The exec failed: close-on-exec again.
    let _ = crate::sandbox::set_cloexec(listener.as_fd(), true);
    crate::sandbox::unreaped::take_back();
    ExecError { binary: binary.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// The runs' health and last exits handed on are taken once, by this
    /// boot's next image within a minute: one a failed exec left is never
    /// taken later. An older image's file (health alone) is read too.
    #[test]
    fn runs_handed_on_are_taken_once_and_only_while_fresh() {
        use super::Runs;
        use crate::reconcile::{HealthStatus, KeptHealth, Version};
        let dir = tempfile::tempdir().unwrap();
        let web = KeptHealth { version: Version(3), pid: 4242, status: HealthStatus::Healthy };
        let exit = crate::model::Exit::Code(3);
        let runs = Runs { health: [("web".to_owned(), web)].into(), exits: [("db".to_owned(), exit)].into() };
        super::hand_on_runs(dir.path(), runs);
        let name = |n: &str| crate::model::WorkloadName::try_from(n).unwrap();
        let taken = super::handed_runs(dir.path());
        assert_eq!(taken, Runs { health: [(name("web"), web)].into(), exits: [(name("db"), exit)].into() });
        assert_eq!(super::handed_runs(dir.path()), Runs::default(), "taken");
        // A last exit alone is handed on; nothing at all: no file.
        super::hand_on_runs(dir.path(), Runs { health: Default::default(), exits: [("db".to_owned(), exit)].into() });
        assert_eq!(super::handed_runs(dir.path()).exits, [(name("db"), exit)].into());
        super::hand_on_runs(dir.path(), Runs::default());
        assert!(!dir.path().join(super::RUNS_HANDED).exists());
        // An older image's: health alone.
        let until = crate::daemon::kept::Delay::ending_in(Duration::from_secs(60)).unwrap();
        let older = serde_json::json!({ "until": until, "health": { "web": web } });
        std::fs::write(dir.path().join(super::RUNS_HANDED), older.to_string()).unwrap();
        assert_eq!(
            super::handed_runs(dir.path()),
            Runs { health: [(name("web"), web)].into(), exits: Default::default() }
        );
        // Stale: over, or of another boot.
        let mut stale = until;
        for until in [crate::daemon::kept::Delay { until_ms: 1, ..stale.clone() }, {
            stale.boot = "another boot".into();
            stale
        }] {
            let handed = super::Handed {
                until,
                health: [("web".to_owned(), web)].into(),
                exits: [("db".to_owned(), exit)].into(),
            };
            std::fs::write(dir.path().join(super::RUNS_HANDED), serde_json::to_vec(&handed).unwrap()).unwrap();
            assert_eq!(super::handed_runs(dir.path()), Runs::default());
            assert!(!dir.path().join(super::RUNS_HANDED).exists(), "removed");
        }
    }

    /// Whether a process runs with this command line.
    fn running(cmdline: &[u8]) -> bool {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.strip_suffix(b"\0").unwrap_or(&c) == cmdline)
        })
    }

    /// Waits (5 s at most) until no process runs with this command line.
    fn wait_gone(cmdline: &[u8], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(cmdline) {
            assert!(Instant::now() < deadline, "{what} runs on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A script `text`, as the new binary, at `dir/paddock`: written by
    /// another process (a descriptor open for writing in here could be
    /// inherited by a fork of another test's: ETXTBSY).
    fn script(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
        let script = dir.join("paddock");
        let made = std::process::Command::new("/bin/sh")
            .args(["-c", "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"", "sh", text])
            .arg(&script)
            .status()
            .unwrap();
        assert!(made.success());
        script
    }

    /// A check that leaves a process holding its stderr (a wrapper script
    /// that runs paddock without exec) is answered once the check ends, and
    /// what it left ends with it; what it said is the refusal.
    #[test]
    fn a_check_that_leaves_a_process_behind_is_answered_and_takes_it_along() {
        let dir = tempfile::tempdir().unwrap();
        let script = script(dir.path(), "#!/bin/sh\n/bin/sleep 1001.5 &\necho 'it refuses: because' >&2\nexit 78\n");
        let began = Instant::now();
        let keep_on = std::sync::atomic::AtomicBool::new(false);
        assert_eq!(super::validate(&script, &keep_on), Err("it refuses: because".to_owned()));
        assert!(began.elapsed() < Duration::from_secs(5), "waited for what it left: {:?}", began.elapsed());
        wait_gone(b"/bin/sleep\x001001.5", "what the check left");
    }

    /// A check cancelled (the daemon asked to stop) ends at once, and what
    /// it started with it.
    #[test]
    fn a_cancelled_check_ends_at_once_and_takes_its_processes_along() {
        let dir = tempfile::tempdir().unwrap();
        let script = script(dir.path(), "#!/bin/sh\n/bin/sleep 1002.5\n");
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let began = Instant::now();
        let outcome = std::thread::scope(|scope| {
            let check = scope.spawn(|| super::validate(&script, &cancel));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !running(b"/bin/sleep\x001002.5") {
                assert!(Instant::now() < deadline, "the check did not begin");
                std::thread::sleep(Duration::from_millis(10));
            }
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            check.join().unwrap()
        });
        assert_eq!(outcome, Err("the daemon was asked to stop".to_owned()));
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        wait_gone(b"/bin/sleep\x001002.5", "what the check started");
    }

    /// The configuration file is as it was taken before it was read: an
    /// edit between that and the directories' taking is a change.
    #[test]
    fn the_configuration_file_is_as_it_was_before_it_was_read() {
        use super::ConfigFiles;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("paddock.toml");
        std::fs::write(&config, "").unwrap();
        let files = ConfigFiles::new(&config);
        std::fs::write(dir.path().join(".new"), "policies = [\"privileged\"]\n").unwrap();
        std::fs::rename(dir.path().join(".new"), &config).unwrap();
        let files = files.with_dirs(&dir.path().join("p"), &dir.path().join("n"));
        assert_eq!(files.changed(), [config]);
    }

    /// A reload reads the configuration again when paddock.toml, or a
    /// file of the policies' or the networks' directory, is written,
    /// added or removed since it was read (a file replaced by a rename
    /// is another inode; an edit in place moves its change time).
    #[test]
    fn the_configuration_changed_is_any_of_its_files_written_added_or_removed() {
        use super::ConfigFiles;
        let dir = tempfile::tempdir().unwrap();
        let (config, policies, networks) =
            (dir.path().join("paddock.toml"), dir.path().join("policies"), dir.path().join("networks"));
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("a.json"), "{}").unwrap();
        let files = ConfigFiles::new(&config).with_dirs(&policies, &networks);
        assert!(files.changed().is_empty(), "absent then, absent now");
        std::fs::write(&config, "").unwrap();
        assert_eq!(files.changed(), std::slice::from_ref(&config), "made");
        std::fs::write(policies.join("b.json"), "{}").unwrap();
        std::fs::write(policies.join(".a.json.tmp"), "{ }").unwrap();
        std::fs::rename(policies.join(".a.json.tmp"), policies.join("a.json")).unwrap();
        std::fs::create_dir(&networks).unwrap();
        assert_eq!(
            files.changed(),
            [networks.clone(), config.clone(), policies.join("a.json"), policies.join("b.json")]
        );
        let files = files.retaken();
        assert!(files.changed().is_empty(), "taken again");
        std::fs::remove_file(policies.join("b.json")).unwrap();
        assert_eq!(files.changed(), [policies.join("b.json")], "removed");
        // What the daemon does not read is no change: an editor's swap
        // file, a subdirectory, a file of another kind.
        let files = files.retaken();
        std::fs::write(policies.join(".a.json.swp"), "x").unwrap();
        std::fs::create_dir(policies.join("old")).unwrap();
        std::fs::write(networks.join("notes.txt"), "x").unwrap();
        assert!(files.changed().is_empty(), "{:?}", files.changed());
        // An edit in place (a later change time; the clock's tick is coarse).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(policies.join("a.json"), "{\"title\": \"a\"}").unwrap();
        assert_eq!(files.changed(), [policies.join("a.json")], "edited in place");
    }
}
