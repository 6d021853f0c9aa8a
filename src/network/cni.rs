//! A CNI runtime, specification 1.0: it runs the plugins of a network
//! configuration list for ADD (in order, each given the previous plugin's
//! result as `prevResult`) and DEL (in reverse order, with the cached
//! result), as kubelet, containerd
//! and CRI-O do through libcni. Capability arguments (`portMappings`)
//! reach the plugins that declare them, in `runtimeConfig`.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};

/// The specification version paddock speaks and writes in its own lists.
pub const CNI_VERSION: &str = "1.0.0";

/// The longest a plugin may run before it is killed.
#[cfg(not(test))]
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Short in unit tests, which time a plugin out on purpose.
#[cfg(test)]
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The most of a plugin's stdout, and of its stderr, that is kept (one
/// byte more is read, to tell a longer stream): a result or an error is a
/// few KiB.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// The most of what a failed plugin said that goes into its error.
const MESSAGE_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(
        "the CNI plugin `{plugin}` is not in {dirs}: install the CNI plugins (Debian and Ubuntu: `apt-get install containernetworking-plugins`), or name their directory in paddock.toml's [network] plugin_dirs"
    )]
    Missing { plugin: String, dirs: String },
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    #[error("the CNI plugin `{plugin}` is not run: {reason}")]
    Untrusted { plugin: String, reason: crate::fsutil::UnsafeInput },
    #[error("no CNI plugin is run: the plugins search {dir} for the plugins they run in turn, and {reason}")]
    UntrustedDir { dir: PathBuf, reason: crate::fsutil::UnsafeInput },
    #[error("running the CNI plugin {plugin}: {source}")]
    Run { plugin: String, source: std::io::Error },
    #[error("the CNI plugin {plugin} ({command}) did not finish within {}s and was killed", PLUGIN_TIMEOUT.as_secs())]
    Timeout { plugin: String, command: &'static str },
    #[error("the CNI plugin {plugin} ({command}) failed: {message}")]
    Failed { plugin: String, command: &'static str, message: String },
}

/// How long, after a plugin ended, the threads that relay its streams may
/// take to see them close before what holds them open is killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Whether `finished` (every relaying thread ended) holds within `grace`.
fn finished_within(finished: impl Fn() -> bool, grace: Duration) -> bool {
    let deadline = std::time::Instant::now() + grace;
    while !finished() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Kills a plugin and every process of its group (what it started), then
/// reaps it. Its group id cannot have been given to another group: the
/// plugin, its leader, is not reaped until here.
fn kill_group(child: &mut std::process::Child) {
    // SAFETY: kill takes a process group (negative) and a signal; no memory is involved.
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
    let _ = child.wait();
}

/// A plugin's `type` (checked present when its list was parsed).
fn type_of(plugin: &Map<String, Value>) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Where plugin programs are found.
#[derive(Debug, Clone)]
pub struct PluginDirs(pub Vec<PathBuf>);

impl PluginDirs {
    /// The program for a plugin `type`, in the first directory that has
    /// it, the directories unchecked (`programs` and DEL search only the
    /// checked ones).
    #[cfg(test)]
    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.find_in(&self.0, plugin)
    }

    /// The program for a plugin `type`, in the first of `searched` (some
    /// of these directories) that has it, checked; missing, it names the
    /// directories searched.
    fn find_in(&self, searched: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
        // Every directory configured is named, a missing one as such (the
        // list was empty on a host with none of them).
        let missing = || CniError::Missing {
            plugin: plugin.to_owned(),
            dirs: self
                .0
                .iter()
                .filter_map(|d| match searched.contains(d) {
                    true => Some(d.display().to_string()),
                    false if !d.exists() => Some(format!("{} (missing)", d.display())),
                    false => None,
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        if !is_program_name(plugin) {
            return Err(missing());
        }
        let program = searched.iter().map(|d| d.join(plugin)).find(|p| p.is_file()).ok_or_else(missing)?;
        crate::fsutil::check_root_program(&program)
            .map_err(|reason| CniError::Untrusted { plugin: plugin.to_owned(), reason })?;
        Ok(program)
    }

    /// Every program of `list`, in order, each found and checked once,
    /// with the IPAM plugin each runs, and the `CNI_PATH` they run with:
    /// found before any runs, a missing one changes nothing. A directory
    /// that fails its check refuses them all.
    pub fn programs(&self, list: &ConfList) -> Result<Programs, CniError> {
        let searched = self.searched(true)?;
        let paths = list
            .plugins
            .iter()
            .map(|plugin| {
                let program = self.find_in(&searched, type_of(plugin))?;
                self.check_ipam(&searched, plugin)?;
                Ok(program)
            })
            .collect::<Result<_, CniError>>()?;
        Ok(Programs { paths, cni_path: cni_path(&searched) })
    }

    /// The IPAM plugin `plugin` runs (`ipam.type`), if it names one,
    /// found and checked as a plugin is: the plugin finds it in the same
    /// directories and runs it as root.
    fn check_ipam(&self, searched: &[PathBuf], plugin: &Map<String, Value>) -> Result<(), CniError> {
        match ipam_of(plugin) {
            Some(ipam) => self.find_in(searched, ipam).map(drop),
            None => Ok(()),
        }
    }

    /// The directories searched, for `CNI_PATH` and for the plugins: the
    /// ones that exist (after their links), each checked (root's and
    /// writable by no one else, and so are its parents). A plugin searches
    /// them itself, first match first, for the plugins it runs (its IPAM
    /// plugin, a delegate), so one that others could write would let them
    /// put a program it runs as root ahead of the real one. One that is
    /// missing is left out: made later, it is not searched. One that fails
    /// its check refuses everything when `strict` (ADD); an undoing
    /// (DEL) leaves it out and says so, so that what the plugins made is
    /// still undone.
    fn searched(&self, strict: bool) -> Result<Vec<PathBuf>, CniError> {
        let mut searched = Vec::new();
        for dir in &self.0 {
            if std::fs::metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                continue;
            }
            match crate::fsutil::check_root_dir(dir, crate::fsutil::PROGRAMS_RISK) {
                Ok(()) => searched.push(dir.clone()),
                Err(reason) if strict => return Err(CniError::UntrustedDir { dir: dir.clone(), reason }),
                Err(reason) => {
                    tracing::warn!(dir = %dir.display(), %reason, "a CNI plugin directory is left out of the undoing's search");
                }
            }
        }
        Ok(searched)
    }
}

/// A plugin's or an IPAM plugin's `type` names a program, never a path.
fn is_program_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.starts_with('.')
}

/// A plugin's `ipam.type`, whatever it is.
fn ipam_type(plugin: &Map<String, Value>) -> Option<&Value> {
    plugin.get("ipam").and_then(|ipam| ipam.get("type"))
}

/// A plugin's IPAM plugin (`ipam.type`), if it names one.
fn ipam_of(plugin: &Map<String, Value>) -> Option<&str> {
    ipam_type(plugin).and_then(Value::as_str)
}

/// The directories plugins find `iptables`, `ip` and the like in, run as
/// root: those of the usual list that are root's and writable by no one
/// else (as a plugin directory must be), so that no one else can put a
/// program there ahead of the real one. The first left out is logged,
/// once per process.
pub(super) fn plugins_path() -> String {
    const USUAL: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
    checked_path(&USUAL)
}

fn checked_path(dirs: &[&str]) -> String {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let mut kept = Vec::new();
    for &dir in dirs {
        match crate::fsutil::check_root_dir(Path::new(dir), crate::fsutil::PROGRAMS_RISK) {
            Ok(()) => kept.push(dir),
            Err(crate::fsutil::UnsafeInput::Stat { .. }) => {}
            Err(reason) => WARNED.call_once(|| {
                tracing::warn!(%dir, %reason, "left out of the PATH CNI plugins run with");
            }),
        }
    }
    kept.join(":")
}

fn cni_path(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
}

/// A list's programs, found and checked (`PluginDirs::programs`), and the
/// checked `CNI_PATH` they run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Programs {
    pub paths: Vec<PathBuf>,
    pub cni_path: String,
}

/// A plugin's program and the `CNI_PATH` it runs with, both checked.
#[derive(Clone, Copy)]
struct Run<'a> {
    program: &'a Path,
    cni_path: &'a str,
}

/// A network configuration list (`.conflist`): a name, a version and the
/// plugins, each a JSON object with at least `type`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    /// The whole list as read: what is cached, to undo an attachment with.
    pub raw: Value,
}

impl ConfList {
    /// Whether one of its plugins declares the capability `cap`
    /// (`"capabilities": {"portMappings": true}`).
    pub fn declares(&self, cap: &str) -> bool {
        self.plugins
            .iter()
            .any(|p| p.get("capabilities").and_then(|c| c.get(cap)).and_then(Value::as_bool) == Some(true))
    }

    /// Parses a list; `origin` names it in errors.
    pub fn parse(raw: Value, origin: &str) -> Result<Self, CniError> {
        let bad = |message: String| CniError::Config { origin: origin.to_owned(), message };
        let Value::Object(top) = &raw else { return Err(bad("a network configuration list is a JSON object".into())) };
        let text = |key: &str| top.get(key).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").ok_or_else(|| bad("`name` (a string) is missing".into()))?;
        if !crate::model::is_network_name(&name) {
            return Err(bad(format!("`{name}` cannot name a network: letters, digits, `_`, `.` and `-`")));
        }
        let cni_version = text("cniVersion").ok_or_else(|| bad("`cniVersion` (a string) is missing".into()))?;
        let plugins = match top.get("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
            _ => return Err(bad("`plugins` must be a list of at least one plugin".into())),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::Object(p) if p.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) => {
                    let ipam = match ipam_type(p).map(Value::as_str) {
                        Some(None) => return Err(bad(format!("plugins[{i}]: `ipam.type` must be a string"))),
                        ipam => ipam.flatten(),
                    };
                    match [Some(type_of(p)), ipam].into_iter().flatten().find(|name| !is_program_name(name)) {
                        Some(name) => Err(bad(format!(
                            "plugins[{i}]: `{name}` cannot name a plugin (its `type` or `ipam.type`): a program's name, without `/`, not starting with `.`"
                        ))),
                        None => Ok(p.clone()),
                    }
                }
                _ => Err(bad(format!("plugins[{i}] must be an object with a `type`"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConfList { name, cni_version, plugins, raw })
    }

    /// The plugin types, in order (what the tests compare).
    #[cfg(test)]
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(type_of)
    }
}

/// What a network is attached to: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
/// and the capability arguments (`{"portMappings": [...]}`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub capabilities: &'a Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
        }
    }
}

/// An ADD that failed, and whether what the plugins before the failing
/// one did was undone: when it was not (a DEL failed too), their leases
/// and rules stay until a DEL succeeds, so the caller keeps what is needed
/// to run it again.
#[derive(Debug)]
pub struct AddFailed {
    pub error: CniError,
    pub undone: Result<(), CniError>,
    /// The result of the plugins before the failing one, for a DEL tried
    /// again later to give them (`prevResult`).
    pub so_far: Option<Value>,
}

/// The plugins of a list, run against one target.
pub struct Runtime<'a> {
    pub dirs: &'a PluginDirs,
}

impl Runtime<'_> {
    /// ADD: each plugin in order, each given the result so far; the last
    /// result is the attachment's. If a plugin fails, what the ones before
    /// it did is undone (DEL, in reverse) before the error is returned,
    /// with whether that worked (`AddFailed::undone`).
    /// `programs` are the list's, as `PluginDirs::programs` found them
    /// (before anything was made for the attachment). `before` is given
    /// the result so far before each plugin that gets one runs, to record:
    /// should the caller die while that plugin runs, a DEL given it undoes
    /// what that plugin and the ones before it did (the firewall plugin
    /// finds its rules by the addresses in it; without one it removes none).
    pub fn add(
        &self,
        list: &ConfList,
        programs: &Programs,
        target: Target<'_>,
        before: &mut dyn FnMut(&Value),
    ) -> Result<Value, Box<AddFailed>> {
        let mut result: Option<Value> = None;
        for (plugin, program) in list.plugins.iter().zip(&programs.paths) {
            if let Some(so_far) = &result {
                before(so_far);
            }
            let run = Run { program, cni_path: &programs.cni_path };
            match self.invoke(Verb::Add, list, plugin, run, target, result.as_ref()) {
                Ok(Some(next)) => result = Some(next),
                // A plugin with nothing to say passes the previous result on.
                Ok(None) => {}
                Err(error) => {
                    let undone = self.del(list, target, result.as_ref());
                    return Err(Box::new(AddFailed { error, undone, so_far: result }));
                }
            }
        }
        Ok(result.unwrap_or_else(|| serde_json::json!({ "cniVersion": list.cni_version })))
    }

    /// DEL: each plugin in reverse order, with the cached result (if the
    /// ADD got that far). Every plugin is run even after one fails, so each
    /// undoes what it can; the first error is returned.
    pub fn del(&self, list: &ConfList, target: Target<'_>, cached: Option<&Value>) -> Result<(), CniError> {
        let searched = self.dirs.searched(false)?;
        let cni_path = cni_path(&searched);
        let mut first = None;
        for plugin in list.plugins.iter().rev() {
            // Each found on its own: one that is missing keeps none of the
            // others from undoing. One whose IPAM plugin is missing is run
            // still: it may undo some of what it made (bridge removes its
            // link) before it fails, and the DEL is tried again anyway.
            let program = self.dirs.find_in(&searched, type_of(plugin)).and_then(|program| {
                match self.dirs.check_ipam(&searched, plugin) {
                    Ok(()) | Err(CniError::Missing { .. }) => Ok(program),
                    Err(e) => Err(e),
                }
            });
            let run = |program: PathBuf| {
                self.invoke(Verb::Del, list, plugin, Run { program: &program, cni_path: &cni_path }, target, cached)
            };
            if let Err(e) = program.and_then(run) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn invoke(
        &self,
        verb: Verb,
        list: &ConfList,
        plugin: &Map<String, Value>,
        run: Run<'_>,
        target: Target<'_>,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, CniError> {
        let kind = type_of(plugin).to_owned();
        let mut config = plugin.clone();
        config.insert("name".into(), Value::String(list.name.clone()));
        config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
        if let Some(prev) = prev {
            config.insert("prevResult".into(), prev.clone());
        }
        // Capability arguments, to the plugins that declare them.
        let mut runtime = Map::new();
        if let Some(Value::Object(caps)) = plugin.get("capabilities") {
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(args) = target.capabilities.get(cap)
                {
                    runtime.insert(cap.clone(), args.clone());
                }
            }
        }
        if !runtime.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        let stdin = serde_json::to_vec(&Value::Object(config)).expect("JSON values serialize");
        // A process group of its own: a plugin that times out is killed
        // with what it started (iptables, ip), not just itself.
        let mut command = Command::new(run.program);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: runs in the forked child before exec and only unblocks
        // signals and calls prctl and getppid, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                crate::sandbox::unblock_daemon_signals();
                // It dies with the thread that waits for it (the daemon's, or
                // `paddock run`'s, killed or re-executed): left running, it
                // would go on making rules and addresses after the next daemon
                // has undone what the record says, with nothing to undo them.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Gone before the prctl: no signal will come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = command
            .process_group(0)
            .env_clear()
            // Plugins run iptables, ip and the like.
            .env("PATH", plugins_path())
            .env("CNI_COMMAND", verb.as_str())
            .env("CNI_CONTAINERID", target.container_id)
            .env("CNI_NETNS", target.netns)
            .env("CNI_IFNAME", target.ifname)
            .env("CNI_PATH", run.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CniError::Run { plugin: kind.clone(), source })?;
        let (input, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // Each stream on a thread of its own: neither can fill up and block
        // the plugin. At most OUTPUT_LIMIT of each is kept: past it, the
        // stream is closed, and a plugin still writing gets EPIPE rather
        // than the daemon's memory.
        let drain = |stream: Option<Box<dyn Read + Send>>| {
            std::thread::Builder::new().spawn(move || {
                let mut bytes = Vec::new();
                if let Some(s) = stream {
                    let _ = s.take(OUTPUT_LIMIT + 1).read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let out_reader = drain(stdout.map(|s| Box::new(s) as Box<dyn Read + Send>));
        let err_reader = drain(stderr.map(|s| Box::new(s) as Box<dyn Read + Send>));
        // The configuration (up to a conflist's 1 MiB, more than a pipe
        // holds) is written on a thread too: a plugin that does not read
        // it is timed out below like any other, not waited for here.
        let writer = std::thread::Builder::new().spawn(move || input.map(|mut s| s.write_all(&stdin)));
        // No thread to be had (the host is out of processes): the plugin
        // is killed, and the drain that did start ends with its output.
        let (out_reader, err_reader, writer) = match (out_reader, err_reader, writer) {
            (Ok(out), Ok(err), Ok(writer)) => (out, err, writer),
            (out, err, writer) => {
                kill_group(&mut child);
                let failed = [out.err(), err.err(), writer.err()].into_iter().flatten().next();
                let source = failed.unwrap_or_else(|| std::io::Error::other("a drain thread did not start"));
                return Err(CniError::Run { plugin: kind.clone(), source });
            }
        };
        // Its end, waited for on a pidfd (no polling), at most PLUGIN_TIMEOUT.
        if !crate::sandbox::process::ends_within(&child, PLUGIN_TIMEOUT) {
            kill_group(&mut child);
            return Err(CniError::Timeout { plugin: kind, command: verb.as_str() });
        }
        // It ended, and is a zombie until reaped below, which keeps its
        // process group's id its own: what it started and left behind
        // holding its streams open goes with that group, as at a timeout.
        let relayed = || out_reader.is_finished() && err_reader.is_finished() && writer.is_finished();
        if !finished_within(relayed, LEFTOVER_GRACE) {
            // SAFETY: kill takes a process group (negative) and a signal; no memory is involved.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        }
        let status = child.wait().map_err(|source| CniError::Run { plugin: kind.clone(), source })?;
        // One that left its process group keeps them open still.
        if !finished_within(relayed, LEFTOVER_GRACE) {
            return Err(CniError::Failed {
                plugin: kind,
                command: verb.as_str(),
                message: "it ended, but a process it started outside its process group holds its stdin, stdout or stderr open".into(),
            });
        }
        let (out, err) = (out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
        if let Ok(Some(Err(source))) = writer.join()
            && status.success()
        {
            return Err(CniError::Run { plugin: kind, source });
        }
        // Whatever its status: closing its stdout may be what ended it.
        if out.len() as u64 > OUTPUT_LIMIT {
            return Err(CniError::Failed {
                plugin: kind,
                command: verb.as_str(),
                message: format!("it wrote more than {} MiB to its stdout (a result is a few KiB)", OUTPUT_LIMIT >> 20),
            });
        }
        if !status.success() {
            return Err(CniError::Failed {
                plugin: kind,
                command: verb.as_str(),
                message: failure(&out, &err, status),
            });
        }
        if verb != Verb::Add || out.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out).map(Some).map_err(|e| CniError::Failed {
            plugin: kind,
            command: verb.as_str(),
            message: format!("its result is not JSON ({e})"),
        })
    }
}

/// A plugin's error, from its JSON error object (`msg`, `details`) or
/// whatever it wrote.
fn failure(out: &[u8], err: &[u8], status: std::process::ExitStatus) -> String {
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(out) {
        let msg = e.get("msg").and_then(Value::as_str).unwrap_or("no message");
        let code = e.get("code").and_then(Value::as_u64).map(|c| format!(" (code {c})")).unwrap_or_default();
        return match e.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            Some(details) => format!("{msg}: {details}{code}"),
            None => format!("{msg}{code}"),
        };
    }
    let said = if err.is_empty() { out } else { err };
    let cut = if said.len() > MESSAGE_LIMIT { " (cut)" } else { "" };
    let said = String::from_utf8_lossy(&said[..said.len().min(MESSAGE_LIMIT)]).trim().to_owned() + cut;
    if said.is_empty() { format!("it exited with {status}") } else { said }
}

/// The workload's addresses in a result (`ips[].address`, CIDR form).
pub fn addresses(result: &Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| ips.iter().filter_map(|ip| ip.get("address")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_plugins_run_with_leaves_out_a_directory_others_could_write() {
        use std::os::unix::fs::PermissionsExt;
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let open = open.path().to_str().unwrap();
        assert_eq!(checked_path(&[open, "/usr/bin", "/nonexistent"]), "/usr/bin");
        assert!(plugins_path().split(':').any(|d| d == "/usr/sbin"), "{}", plugins_path());
    }

    #[test]
    fn a_list_needs_a_name_a_version_and_typed_plugins() {
        let ok = serde_json::json!({"cniVersion": "1.0.0", "name": "lan", "plugins": [{"type": "macvlan"}]});
        let list = ConfList::parse(ok, "lan.conflist").unwrap();
        assert_eq!(list.types().collect::<Vec<_>>(), ["macvlan"]);
        for (bad, says) in [
            (serde_json::json!([]), "is a JSON object"),
            (serde_json::json!({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "`name`"),
            (serde_json::json!({"name": "a b", "cniVersion": "1.0.0", "plugins": [{"type": "x"}]}), "cannot name"),
            (serde_json::json!({"name": "a", "plugins": [{"type": "x"}]}), "`cniVersion`"),
            (serde_json::json!({"name": "a", "cniVersion": "1.0.0", "plugins": []}), "at least one"),
            (serde_json::json!({"name": "a", "cniVersion": "1.0.0", "plugins": [{"type": ""}]}), "plugins[0]"),
            (serde_json::json!({"name": "a", "cniVersion": "1.0.0", "plugins": [{"type": "../x"}]}), "`../x` cannot"),
            (
                serde_json::json!({"name": "a", "cniVersion": "1.0.0", "plugins": [{"type": "x", "ipam": {"type": "a/b"}}]}),
                "plugins[0]: `a/b` cannot name a plugin",
            ),
            (
                serde_json::json!({"name": "a", "cniVersion": "1.0.0", "plugins": [{"type": "x", "ipam": {"type": 7}}]}),
                "plugins[0]: `ipam.type` must be a string",
            ),
        ] {
            let e = ConfList::parse(bad, "f").unwrap_err().to_string();
            assert!(e.starts_with("f: ") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_missing_plugin_names_the_package_and_types_are_never_paths() {
        let dirs = PluginDirs(vec![PathBuf::from("/nonexistent")]);
        let e = dirs.find("bridge").unwrap_err().to_string();
        assert!(e.contains("`bridge` is not in /nonexistent") && e.contains("containernetworking-plugins"), "{e}");
        // Those searched, and those missing, are named (an undoing leaves
        // out one that fails its check; on a host with none of them the
        // list was empty: helper-103).
        let two = PluginDirs(vec![PathBuf::from("/nonexistent"), PathBuf::from("/bin")]);
        let e = two.find_in(&[], "bridge").unwrap_err().to_string();
        assert!(e.contains("`bridge` is not in /nonexistent (missing): install"), "{e}");
        let e = two.find_in(&two.0[1..], "no-such-plugin").unwrap_err().to_string();
        assert!(e.contains("is not in /nonexistent (missing), /bin: install"), "{e}");
        let bin = PluginDirs(vec![PathBuf::from("/bin")]);
        assert!(bin.find("../bin/sh").is_err() && bin.find("..").is_err());
    }

    #[test]
    fn the_ipam_plugin_a_plugin_runs_and_the_directories_it_searches_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let (good, missing) = (dir.path().join("good"), dir.path().join("missing"));
        std::fs::create_dir(&good).unwrap();
        for plugin in ["bridge", "host-local"] {
            std::fs::write(good.join(plugin), "#!/bin/sh\ncat > /dev/null\n").unwrap();
            mode(&good.join(plugin), 0o755);
        }
        // A link to a directory that is gone is missing too.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        let dirs = PluginDirs(vec![missing.clone(), dangling, good.clone()]);
        let plugins = serde_json::json!([{"type": "bridge", "ipam": {"type": "host-local"}}]);
        let list =
            ConfList::parse(serde_json::json!({"cniVersion": "1.0.0", "name": "t", "plugins": plugins}), "t").unwrap();
        // A directory that is not there is not searched.
        assert_eq!(list.types().collect::<Vec<_>>(), ["bridge"]);
        let programs = dirs.programs(&list).unwrap();
        assert_eq!(programs, Programs { paths: vec![good.join("bridge")], cni_path: good.display().to_string() });
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let runtime = Runtime { dirs: &dirs };

        // Anyone could replace the IPAM plugin: bridge would run it as root.
        mode(&good.join("host-local"), 0o757);
        let e = dirs.programs(&list).unwrap_err();
        assert!(matches!(&e, CniError::Untrusted { plugin, .. } if plugin == "host-local"), "{e}");
        let e = runtime.del(&list, target, None).unwrap_err();
        assert!(matches!(&e, CniError::Untrusted { plugin, .. } if plugin == "host-local"), "{e}");
        // Missing: no ADD; a DEL still runs bridge, which may undo its own part.
        std::fs::remove_file(good.join("host-local")).unwrap();
        let e = dirs.programs(&list).unwrap_err();
        assert!(matches!(&e, CniError::Missing { plugin, .. } if plugin == "host-local"), "{e}");
        runtime.del(&list, target, None).unwrap();

        // A directory searched first that others may write: they could put
        // a host-local there that bridge finds first. Nothing is added; an
        // undoing leaves that directory out of its search and runs.
        std::fs::write(good.join("host-local"), "#!/bin/sh\ncat > /dev/null\n").unwrap();
        mode(&good.join("host-local"), 0o755);
        std::fs::create_dir(&missing).unwrap();
        mode(&missing, 0o777);
        let e = dirs.programs(&list).unwrap_err();
        assert!(matches!(&e, CniError::UntrustedDir { dir, .. } if *dir == missing), "{e}");
        assert!(e.to_string().contains("writable by"), "{e}");
        std::fs::write(missing.join("bridge"), "#!/bin/sh\ncat > /dev/null; exit 1\n").unwrap();
        mode(&missing.join("bridge"), 0o755);
        runtime.del(&list, target, None).unwrap();
        mode(&missing, 0o755);
        std::fs::remove_file(missing.join("bridge")).unwrap();
        assert_eq!(dirs.programs(&list).unwrap().cni_path, format!("{}:{}", missing.display(), good.display()));
    }

    #[test]
    fn a_plugin_that_times_out_is_killed_with_what_it_started() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        // It starts a helper (as plugins start iptables), then hangs.
        let script = format!("#!/bin/sh\nsleep 1000 &\necho $! > {}\nsleep 1000\n", pid_file.display());
        std::fs::write(dir.path().join("hang"), script).unwrap();
        std::fs::set_permissions(dir.path().join("hang"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = PluginDirs(vec![dir.path().to_owned()]);
        let list = ConfList::parse(
            serde_json::json!({"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "hang"}]}),
            "t.conflist",
        )
        .unwrap();
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let failed =
            *Runtime { dirs: &dirs }.add(&list, &dirs.programs(&list).unwrap(), target, &mut |_| {}).unwrap_err();
        assert!(matches!(failed.error, CniError::Timeout { .. }), "{:?}", failed.error);
        let helper: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // Killed with the plugin (a zombie until init reaps it, at most).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let alive = || {
            std::fs::read_to_string(format!("/proc/{helper}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        };
        while alive() {
            assert!(std::time::Instant::now() < deadline, "the plugin's helper {helper} outlived it");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plugin that never reads its configuration (larger than a pipe
    /// holds) is timed out like any other, not waited on at the write; one
    /// that ends leaving a helper holding its output gets that helper
    /// killed with its group and its result read; one whose helper left
    /// the group is an error that says so, not a wait without end.
    #[test]
    fn a_plugin_is_never_waited_on_for_its_streams_past_its_end_or_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("helper.pid");
        let escaped = dir.path().join("escaped");
        let result = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"}]}"#;
        for (name, script) in [
            ("deaf", "sleep 1000".to_owned()),
            ("leaves", format!("cat > /dev/null\nsleep 1000 &\necho $! > {}\necho '{result}'", helper.display())),
            (
                "escapes",
                // Run for the ADD and again for the DEL that undoes it: each
                // run's helper writes its own pid, before the plugin goes on,
                // into a file of that run's.
                format!(
                    "cat > /dev/null\npids={0}.$CNI_COMMAND\nsetsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' \"$pids\" &\nwhile [ ! -s \"$pids\" ]; do sleep 0.01; done\necho '{result}'",
                    escaped.display()
                ),
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dirs = PluginDirs(vec![dir.path().to_owned()]);
        let add = move |plugin: &'static str| {
            let dirs = dirs.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let caps = Map::new();
                let target =
                    Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
                let padding = "x".repeat(200 << 10);
                let list = serde_json::json!({"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": plugin, "padding": padding}]});
                let list = ConfList::parse(list, "t.conflist").unwrap();
                let _ = tx.send(
                    Runtime { dirs: &dirs }
                        .add(&list, &dirs.programs(&list).unwrap(), target, &mut |_| {})
                        .map_err(|f| f.error),
                );
            });
            rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("{plugin}: still waited on after 20 s"))
        };
        let e = add("deaf").unwrap_err();
        assert!(matches!(e, CniError::Timeout { .. }), "{e:?}");
        let kill_helper = |helper: &Path| {
            let pid: i32 = std::fs::read_to_string(helper).unwrap().trim().parse().unwrap();
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')));
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            alive
        };
        let got = add("leaves").unwrap();
        assert_eq!(got["ips"][0]["address"], "10.1.0.2/24");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!kill_helper(&helper), "the helper went with the plugin's group");
        let e = add("escapes").unwrap_err();
        let message = e.to_string();
        assert!(message.contains("outside its process group holds its stdin, stdout or stderr open"), "{message}");
        for run in ["ADD", "DEL"] {
            let pids = escaped.with_extension(run);
            assert!(kill_helper(&pids), "{run}: the helper that left the group ran on, until killed here");
        }
    }

    /// A plugin that writes without end, to its stdout or its stderr, is
    /// read up to OUTPUT_LIMIT and no further: its stream is closed, it
    /// ends on EPIPE, and the error says so (stdout) or holds the first
    /// MESSAGE_LIMIT of what it said, cut (stderr), instead of the daemon
    /// holding all it wrote until the timeout.
    #[test]
    fn a_plugin_that_writes_without_end_is_cut_off_at_the_limit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, script) in [("chatty", "cat > /dev/null; exec yes"), ("loud", "cat > /dev/null; yes >&2; exit 1")] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dirs = PluginDirs(vec![dir.path().to_owned()]);
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let add = |plugin: &str| {
            let list = serde_json::json!({"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": plugin}]});
            let list = ConfList::parse(list, "t.conflist").unwrap();
            Runtime { dirs: &dirs }.add(&list, &dirs.programs(&list).unwrap(), target, &mut |_| {}).unwrap_err().error
        };
        let e = add("chatty");
        assert!(
            matches!(&e, CniError::Failed { message, .. } if message == "it wrote more than 1 MiB to its stdout (a result is a few KiB)"),
            "{e:?}"
        );
        let e = add("loud");
        let CniError::Failed { message, .. } = &e else { panic!("{e:?}") };
        assert!(message.len() <= MESSAGE_LIMIT + 6 && message.ends_with("y (cut)"), "{} bytes", message.len());
    }

    #[test]
    fn errors_come_from_the_plugins_json_error_object() {
        let status = std::process::ExitStatus::default();
        let out =
            br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"no IP addresses available"}"#;
        assert_eq!(failure(out, b"", status), "failed to allocate: no IP addresses available (code 11)");
        assert_eq!(failure(b"", b"panic: boom\n", status), "panic: boom");
    }

    /// Fake plugins (shell scripts) that log what they were asked and with
    /// which `prevResult`, and add an address named after themselves to the
    /// `ips` they were given.
    fn fakes(dir: &Path, failing: &str) -> PluginDirs {
        use std::os::unix::fs::PermissionsExt;
        let log = dir.join("log");
        for name in ["one", "two", "three"] {
            let fail = if name == failing {
                "[ \"$CNI_COMMAND\" = ADD ] && { echo '{\"code\":7,\"msg\":\"no\"}'; exit 1; }"
            } else {
                ""
            };
            let script = format!(
                "#!/bin/sh\nin=$(cat)\nprev=$(printf '%s' \"$in\" | tr -d ' \\n' | grep -o 'prevResult\":{{[^}}]*' | grep -o '[a-z]*-ip' | tr '\\n' ,)\necho \"$CNI_COMMAND {name} prev=$prev netns=$CNI_NETNS if=$CNI_IFNAME\" >> {log}\n{fail}\n[ \"$CNI_COMMAND\" = ADD ] && printf '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"%s\"}}]}}' \"$(printf '%s' \"$prev\" | tr , ' ')\"{name}-ip\nexit 0\n",
                log = log.display()
            );
            std::fs::write(dir.join(name), script).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        PluginDirs(vec![dir.to_owned()])
    }

    fn chain() -> ConfList {
        let raw = serde_json::json!({"cniVersion": "1.0.0", "name": "t",
            "plugins": [{"type": "one"}, {"type": "two"}, {"type": "three"}]});
        ConfList::parse(raw, "t.conflist").unwrap()
    }

    #[test]
    fn add_chains_prev_results_in_order_and_del_runs_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = fakes(dir.path(), "");
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let runtime = Runtime { dirs: &dirs };
        let mut recorded = Vec::new();
        let mut before = |so_far: &Value| recorded.push(addresses(so_far).join(","));
        let result = runtime.add(&chain(), &dirs.programs(&chain()).unwrap(), target, &mut before).unwrap();
        // (Each fake's address names every plugin so far.)
        assert_eq!(recorded, ["one-ip", "one-ip two-ip"], "the result so far, before each plugin given one");
        runtime.del(&chain(), target, Some(&result)).unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "ADD one prev= netns=/run/x if=eth0",
                "ADD two prev=one-ip, netns=/run/x if=eth0",
                "ADD three prev=one-ip,two-ip, netns=/run/x if=eth0",
                "DEL three prev=one-ip,two-ip,three-ip, netns=/run/x if=eth0",
                "DEL two prev=one-ip,two-ip,three-ip, netns=/run/x if=eth0",
                "DEL one prev=one-ip,two-ip,three-ip, netns=/run/x if=eth0",
            ],
            "each ADD sees the result so far; DEL goes backwards with the cached result"
        );
    }

    #[test]
    fn a_failing_add_undoes_the_plugins_before_it_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = fakes(dir.path(), "three");
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let failed =
            *Runtime { dirs: &dirs }.add(&chain(), &dirs.programs(&chain()).unwrap(), target, &mut |_| {}).unwrap_err();
        let e = failed.error.to_string();
        assert!(e.contains("no (code 7)"), "{e}");
        assert!(failed.undone.is_ok());
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let verbs: Vec<&str> = log.lines().map(|l| l.split(" prev").next().unwrap()).collect();
        assert_eq!(verbs, ["ADD one", "ADD two", "ADD three", "DEL three", "DEL two", "DEL one"]);
    }

    #[test]
    fn an_add_whose_undoing_fails_too_says_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dirs = fakes(dir.path(), "three");
        // `two` cannot undo what it did.
        let two = dir.path().join("two");
        let script = std::fs::read_to_string(&two).unwrap().replacen(
            "#!/bin/sh\n",
            "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && { echo '{\"code\":11,\"msg\":\"stuck\"}'; exit 1; }\n",
            1,
        );
        std::fs::write(&two, script).unwrap();
        std::fs::set_permissions(&two, std::fs::Permissions::from_mode(0o755)).unwrap();
        let caps = Map::new();
        let target = Target { container_id: "c1", netns: Path::new("/run/x"), ifname: "eth0", capabilities: &caps };
        let failed =
            *Runtime { dirs: &dirs }.add(&chain(), &dirs.programs(&chain()).unwrap(), target, &mut |_| {}).unwrap_err();
        assert!(failed.error.to_string().contains("no (code 7)"), "{:?}", failed.error);
        let undo = failed.undone.unwrap_err().to_string();
        assert!(undo.contains("stuck (code 11)"), "{undo}");
        assert_eq!(addresses(&failed.so_far.unwrap()), ["one-ip two-ip"], "two's result, for the DEL tried again");
    }
}
