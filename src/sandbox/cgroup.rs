//! A cgroup per workload, under a `paddock` subtree (the daemon's
//! `workloads_group`, or `paddock-run` for `paddock run`), on either cgroup v1
//! (one hierarchy per controller, as on this hybrid host) or v2 (one
//! unified tree, as on most production hosts). The root is injectable, so
//! the v2 backend is tested against a fake tree in a temp dir.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// CPU quota period: 100ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// The limits a workload asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory: Option<u64>,
    pub pids: Option<u32>,
    pub cpu: Option<f64>,
}

/// Which cgroup layout the host has, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `root/<controller>/...` for memory, pids and cpu.
    V1 { root: PathBuf },
    /// One tree at `root`.
    V2 { root: PathBuf },
}

impl Limits {
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.pids.is_some() || self.cpu.is_some()
    }
}

impl Layout {
    /// The limits of `limits` this host has no controller for, each as the
    /// error a start would meet (`check` warns of them beforehand).
    pub fn lacks(&self, limits: &Limits) -> Vec<CgroupError> {
        self.lacks_with(limits, swap_in_use())
    }

    /// `lacks`, told whether the host has swap. On v1, a memory limit on a
    /// host with swap its kernel does not account (no memsw file in the
    /// memory hierarchy's root) is a start that fails too. (On v2 the root
    /// cgroup has no memory.swap.max to look at: that start says so.)
    fn lacks_with(&self, limits: &Limits, swap: bool) -> Vec<CgroupError> {
        let mut lacking = self.lacks_controllers(limits);
        if let Layout::V1 { root } = self {
            let memsw = root.join("memory/memory.memsw.limit_in_bytes");
            if swap && limits.memory.is_some() && root.join("memory/cgroup.procs").exists() && !memsw.exists() {
                lacking.push(CgroupError::NoSwapAccounting { path: memsw });
            }
        }
        lacking
    }

    fn lacks_controllers(&self, limits: &Limits) -> Vec<CgroupError> {
        let wanted = [
            ("memory", "memory", limits.memory.is_some()),
            ("pids", "pids", limits.pids.is_some()),
            ("cpu", "cpu", limits.cpu.is_some()),
        ];
        let available = match self {
            Layout::V2 { root } => std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default(),
            Layout::V1 { .. } => String::new(),
        };
        wanted
            .into_iter()
            .filter(|(_, _, needed)| *needed)
            .filter_map(|(controller, what, _)| match self {
                Layout::V2 { root } if !available.split_whitespace().any(|c| c == controller) => {
                    Some(CgroupError::MissingController {
                        what,
                        controller,
                        path: root.join("cgroup.controllers"),
                        listed: true,
                    })
                }
                Layout::V1 { root } if !root.join(controller).join("cgroup.procs").exists() => {
                    Some(CgroupError::MissingController {
                        what,
                        controller,
                        path: root.join(controller),
                        listed: false,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// The trees a cgroup is made in: the v1 hierarchies of the
    /// controllers paddock uses, or the one v2 tree.
    fn hierarchies(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 { root } => ["memory", "pids", "cpu"].iter().map(|c| root.join(c)).collect(),
            Layout::V2 { root } => vec![root.clone()],
        }
    }

    /// The host's layout: v2 when `root` is a cgroup2 mount (it has
    /// `cgroup.controllers`), else v1 hierarchies under it.
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Layout::V2 { root: root.to_owned() }
        } else {
            Layout::V1 { root: root.to_owned() }
        }
    }
}

/// systemd marks a cgroup it delegates (`Delegate=yes`) with this extended
/// attribute. Only root can set a `trusted.` one; `user.delegate`, which
/// systemd's user managers set, is any owner's to set on a cgroup of its
/// own, and is not taken: a root daemon's workloads are never put in a
/// cgroup an unprivileged user controls.
const DELEGATE_XATTR: &str = "trusted.delegate";

/// The leaf the daemon moves itself into, so that its delegated cgroup has
/// no processes of its own and may enable controllers for the workloads
/// (cgroup v2's "no internal processes" rule).
pub const SUPERVISOR_LEAF: &str = "supervisor";

impl Layout {
    /// Where the daemon puts `paddock/<name>`. On cgroup v2, when the
    /// daemon's own cgroup was delegated to it (systemd's `Delegate=yes`),
    /// that cgroup: the daemon moves itself into `<own>/supervisor` and
    /// workloads live beside it in `<own>/paddock/<name>`, inside the
    /// unit, where systemd accounts for them and never touches them.
    /// Otherwise (v1, or not delegated), `root/paddock/<name>` as before.
    /// `self_cgroup` is the text of /proc/self/cgroup.
    pub fn for_daemon(self, self_cgroup: &str) -> Result<Self, CgroupError> {
        let Layout::V2 { root } = &self else { return Ok(self) };
        let Some(own) = self_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else { return Ok(self) };
        let own = root.join(own.trim_start_matches('/'));
        // systemd 254's DelegateSubgroup=supervisor already put us in the leaf.
        if own.file_name().is_some_and(|n| n == SUPERVISOR_LEAF)
            && let Some(parent) = own.parent().filter(|p| *p != root.as_path() && delegated(p))
        {
            return Ok(Layout::V2 { root: parent.to_owned() });
        }
        if own == *root || !delegated(&own) {
            return Ok(self);
        }
        let leaf = own.join(SUPERVISOR_LEAF);
        mkdir(&leaf)?;
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        Ok(Layout::V2 { root: own })
    }
}

/// Whether systemd delegated `dir`: root's, and marked so by root.
fn delegated(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !std::fs::metadata(dir).is_ok_and(|m| m.uid() == 0) {
        return false;
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    let name = std::ffi::CString::new(DELEGATE_XATTR).expect("no NUL in a constant");
    let mut value = [0u8; 8];
    // SAFETY: both strings are NUL-terminated and live across the call;
    // the buffer is writable for its whole length.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    n > 0 && value[..n as usize] == *b"1"
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} limit needs the {controller} cgroup controller, which this host does not have ({} {})", .path.display(), if *.listed { "does not list it" } else { "is missing" })]
    MissingController { what: &'static str, controller: &'static str, path: PathBuf, listed: bool },
    #[error("{what} limit needs the {controller} controller enabled in {path}: {source}")]
    EnableController { what: &'static str, controller: &'static str, path: PathBuf, source: std::io::Error },
    #[error("creating cgroup {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cgroup {} already holds processes: another sandbox of that name runs there; stop it first", .path.display())]
    Occupied { path: PathBuf },
    #[error("the memory limit cannot hold: this host has swap, and its kernel does not count swap against a cgroup's limit ({} is missing), so the workload could swap past it; boot with swap accounting (remove swapaccount=0 or cgroup.memory=noswap from the kernel's command line) or turn swap off", .path.display())]
    NoSwapAccounting { path: PathBuf },
    #[error("writing {value:?} to {path}: {source}")]
    Write { path: PathBuf, value: String, source: std::io::Error },
}

/// A workload's cgroup: one directory on v2, one per controller on v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create { path: path.to_owned(), source })
}

/// Makes a sandbox's own cgroup `dir` (its parents as needed). One left
/// by an earlier sandbox is never shared: refused while it holds a
/// process, else made anew, since its limit files may hold limits this
/// manifest does not declare.
fn make_leaf(dir: &Path) -> Result<(), CgroupError> {
    let failed = |source| CgroupError::Create { path: dir.to_owned(), source };
    if let Some(parent) = dir.parent() {
        mkdir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).map_err(failed)?;
            if procs.lines().any(|l| !l.trim().is_empty()) {
                return Err(CgroupError::Occupied { path: dir.to_owned() });
            }
            remove_dir_patiently(dir).and_then(|()| std::fs::create_dir(dir)).map_err(failed)
        }
        made => made.map_err(failed),
    }
}

/// Whether the host has swap on (/proc/swaps lists an area).
fn swap_in_use() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|t| t.lines().skip(1).any(|l| !l.trim().is_empty()))
}

/// Whether the cgroup directory `dir` holds the process `pid` (false
/// where that cannot be read: where it matters, `holds_checked`).
pub fn holds(dir: &Path, pid: i32) -> bool {
    holds_checked(dir, pid).unwrap_or(false)
}

/// As `holds`, telling "not there" (no such cgroup: `Ok(false)`) from
/// "cannot tell" (reading it failed otherwise: out of descriptors or
/// memory, say).
pub fn holds_checked(dir: &Path, pid: i32) -> std::io::Result<bool> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(procs) => Ok(procs.lines().any(|line| line.trim().parse() == Ok(pid))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV | libc::ENOTDIR)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `dir` is on a cgroup (v1) or cgroup2 filesystem.
fn on_cgroup_fs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == nix::sys::statfs::CGROUP_SUPER_MAGIC || kind == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    })
}

/// Removes a cgroup directory. One whose last process has just died may
/// refuse for a moment (EBUSY, as at a quick restart): tried again for up
/// to 100 ms.
fn remove_dir_patiently(dir: &Path) -> std::io::Result<()> {
    let mut removed = std::fs::remove_dir(dir);
    for _ in 0..50 {
        match &removed {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(2)),
            _ => break,
        }
        removed = std::fs::remove_dir(dir);
    }
    removed
}

/// Where under a layout's root a sandbox's cgroup is: `GROUP/LEAF`.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    group: &'a str,
    leaf: &'a str,
}

impl<'a> Place<'a> {
    /// A daemon's workload: `GROUP/NAME`, `group` being the daemon's
    /// (`workloads_group`), which a successor finds again.
    pub fn workload(group: &'a str, name: &'a str) -> Self {
        Place { group, leaf: name }
    }

    /// A `paddock run`: `paddock-run/LEAF` (`run_leaf`), apart from the
    /// daemon's, which never touches it, and from other runs of the same
    /// manifest.
    pub fn run(leaf: &'a str) -> Self {
        Place { group: RUNS, leaf }
    }
}

/// The file in a state directory that names its daemon's group, written
/// the first time (`workloads_group`): `GROUP DEV:INODE`, the directory's
/// own device and inode, so that a copy of the directory (a second
/// daemon's, made with `cp -a`) is not taken for it (helper-115).
pub const GROUP_FILE: &str = "cgroup-group";

/// The directory a daemon puts its workloads' cgroups in: `paddock` for a
/// daemon whose state is in the default /var/lib/paddock, and for one whose
/// state is elsewhere (try.sh's, a test's, a second daemon's) `paddock-`
/// and sixteen hex digits of its state directory's path. Two daemons on
/// one host never share a workload's cgroup (each would take the other's
/// workload of the same name for one its own predecessor left, and kill
/// it), and a daemon finds its own again after a restart or an upgrade.
/// The name is kept in the state directory (`GROUP_FILE`) the first time:
/// the same directory reached another way later (`..`, a link: helper-112)
/// is the same group, where its predecessor's sandboxes are.
pub fn workloads_group(state_dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // Spelled as the daemon would read it: `//`, `/./` and a trailing `/`
    // do not make another daemon.
    let path: PathBuf = state_dir.components().collect();
    if path == Path::new(crate::config::DEFAULT_STATE_DIR) {
        return WORKLOADS.to_owned();
    }
    let file = path.join(GROUP_FILE);
    let group = group_of(&path);
    // Not there yet (a test's name for it): named by its path each time.
    let Ok(this) = std::fs::metadata(&path).map(|m| format!("{}:{}", m.dev(), m.ino())) else { return group };
    match std::fs::read_to_string(&file) {
        Ok(kept) => match kept.split_whitespace().collect::<Vec<_>>()[..] {
            [kept, of] if of == this && kept != WORKLOADS && is_workloads_group(kept.as_ref()) => {
                return kept.to_owned();
            }
            // A copy's, or not a name: this directory's is written.
            _ => {}
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Unreadable for now: named by its path, the file left as it is.
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the cgroup group's name; naming it by the state directory's path");
            return group;
        }
    }
    if let Err(e) = crate::fsutil::write_atomic(&file, format!("{group} {this}\n").as_bytes(), 0o600) {
        tracing::warn!(file = %file.display(), error = %e, "cannot keep the cgroup group's name");
    }
    group
}

/// `paddock-` and the FNV-1a hash of `path`.
fn group_of(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: the same in every build (std's hasher may change between
    // Rust releases, and an upgraded daemon must find its cgroups).
    let hash =
        path.as_os_str().as_bytes().iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{WORKLOADS}-{hash:016x}")
}

/// Whether `name` is a directory `workloads_group` names (not `paddock-run`).
pub fn is_workloads_group(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|name| {
        name == WORKLOADS
            || name
                .strip_prefix("paddock-")
                .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    })
}

/// The leaf of this process's run of `name`: `NAME-PID.START.PIDNS`, its
/// pid, start time (clock ticks after boot) and pid namespace (its inode),
/// which together name the run after its pid is reused, and say which
/// pid namespace the pid is of (a name has no dot). `NAME-PID` when they
/// cannot be read, as older paddocks named every run's.
pub fn run_leaf(name: &str) -> String {
    let pid = std::process::id();
    match (crate::sandbox::process::start_time(pid as i32), own_pid_namespace()) {
        (Some(started), Some(ns)) => format!("{name}-{pid}.{started}.{ns}"),
        _ => format!("{name}-{pid}"),
    }
}

/// The inode of this process's pid namespace.
fn own_pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// What a run's leaf (`run_leaf`) names.
#[derive(Debug, PartialEq, Eq)]
struct RunLeaf {
    pid: u32,
    /// The run's start time and pid namespace, if the leaf has them.
    started: Option<(u64, u64)>,
}

fn run_of_leaf(leaf: &str) -> Option<RunLeaf> {
    let (rest, started) = match leaf.split_once('.') {
        Some((rest, tail)) => {
            let (started, ns) = tail.split_once('.')?;
            (rest, Some((started.parse().ok()?, ns.parse().ok()?)))
        }
        None => (leaf, None),
    };
    let pid = rest.rsplit_once('-')?.1.parse().ok()?;
    Some(RunLeaf { pid, started })
}

/// How long a sweep waits for what a killed run left to die: a process
/// blocked in the kernel (D state) is not waited for by every run's start.
const SWEEP_WAIT: Duration = Duration::from_millis(250);

/// The directories the daemon's workloads' and `paddock run`'s cgroups are in.
const WORKLOADS: &str = "paddock";
const RUNS: &str = "paddock-run";

impl Cgroup {
    /// Creates the cgroup at `place` and writes the limits. Any failure
    /// removes what was created (never a cgroup that was there before).
    pub fn create(layout: &Layout, place: Place<'_>, limits: Limits) -> Result<Self, CgroupError> {
        Self::create_with(layout, place, limits, swap_in_use())
    }

    /// `create`, told whether the host has swap.
    fn create_with(layout: &Layout, place: Place<'_>, limits: Limits, swap: bool) -> Result<Self, CgroupError> {
        let mut cgroup = Cgroup { layout: layout.clone(), dirs: Vec::new() };
        let result = match layout {
            Layout::V1 { root } => cgroup.create_v1(root, place, limits, swap),
            Layout::V2 { root } => cgroup.create_v2(root, place, limits, swap),
        };
        if result.is_err() {
            cgroup.remove();
        }
        result.map(|()| cgroup)
    }

    fn create_v1(&mut self, root: &Path, place: Place<'_>, limits: Limits, swap: bool) -> Result<(), CgroupError> {
        let wanted = [
            ("memory", "memory", limits.memory.is_some()),
            ("pids", "pids", limits.pids.is_some()),
            ("cpu", "cpu", limits.cpu.is_some()),
        ];
        for (controller, what, needed) in wanted {
            let hierarchy = root.join(controller);
            if !hierarchy.join("cgroup.procs").exists() {
                if needed {
                    return Err(CgroupError::MissingController { what, controller, path: hierarchy, listed: false });
                }
                continue;
            }
            // Each v1 group is a hierarchy of its own to make, join and
            // remove (a memory cgroup alone costs 0.27 ms here, and lingers
            // in the kernel while pages are charged to it): only for its
            // limit, but pids always, where `kill_all` stops forks.
            if !needed && controller != "pids" {
                continue;
            }
            let dir = hierarchy.join(place.group).join(place.leaf);
            make_leaf(&dir)?;
            self.dirs.push(dir.clone());
            match controller {
                "memory" => {
                    if let Some(bytes) = limits.memory {
                        // Memory and swap together, as v2's memory.swap.max = 0
                        // does: the limit is not passed by swapping. Where the
                        // kernel accounts swap (swapaccount=1). The kernel keeps
                        // memsw at or above the memory limit: lifted first (a
                        // cgroup left from before may hold a lower one), set last.
                        let memsw = dir.join("memory.memsw.limit_in_bytes");
                        if swap && !memsw.exists() {
                            return Err(CgroupError::NoSwapAccounting { path: memsw });
                        }
                        let memsw = memsw.exists().then_some(memsw);
                        if let Some(memsw) = &memsw {
                            write(memsw, "-1")?;
                        }
                        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                        if let Some(memsw) = &memsw {
                            write(memsw, &bytes.to_string())?;
                        }
                    }
                }
                "pids" => {
                    if let Some(max) = limits.pids {
                        write(&dir.join("pids.max"), &max.to_string())?;
                    }
                }
                _ => {
                    if let Some(cores) = limits.cpu {
                        write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        write(&dir.join("cpu.cfs_quota_us"), &quota(cores).to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn create_v2(&mut self, root: &Path, place: Place<'_>, limits: Limits, swap: bool) -> Result<(), CgroupError> {
        let parent = root.join(place.group);
        mkdir(&parent)?;
        // Controllers must be enabled on every level above the workload's cgroup.
        let needed = [
            ("memory", "memory", limits.memory.is_some()),
            ("pids", "pids", limits.pids.is_some()),
            ("cpu", "cpu", limits.cpu.is_some()),
        ];
        let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        for (controller, what, needed) in needed {
            if !available.split_whitespace().any(|c| c == controller) {
                if needed {
                    return Err(CgroupError::MissingController {
                        what,
                        controller,
                        path: root.join("cgroup.controllers"),
                        listed: true,
                    });
                }
                continue;
            }
            for level in [root, parent.as_path()] {
                let path = level.join("cgroup.subtree_control");
                if let Err(source) = enable(&path, controller)
                    && needed
                {
                    return Err(CgroupError::EnableController { what, controller, path, source });
                }
            }
        }
        let dir = parent.join(place.leaf);
        make_leaf(&dir)?;
        self.dirs.push(dir.clone());
        if let Some(bytes) = limits.memory {
            // Without memory.swap.max = 0 the limit would only move the excess to swap.
            let swap_max = dir.join("memory.swap.max");
            if swap && !swap_max.exists() {
                return Err(CgroupError::NoSwapAccounting { path: swap_max });
            }
            write(&dir.join("memory.max"), &bytes.to_string())?;
            if swap_max.exists() {
                write(&swap_max, "0")?;
            }
        }
        if let Some(max) = limits.pids {
            write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(cores) = limits.cpu {
            write(&dir.join("cpu.max"), &format!("{} {CPU_PERIOD_US}", quota(cores)))?;
        }
        Ok(())
    }

    /// The cgroup `GROUP/<name>` as it exists now (a sandbox left by an
    /// earlier process), or None when no hierarchy has it.
    pub fn existing(layout: &Layout, group: &str, name: &str) -> Option<Self> {
        let dirs: Vec<PathBuf> =
            layout.hierarchies().into_iter().map(|h| h.join(group).join(name)).filter(|d| d.is_dir()).collect();
        (!dirs.is_empty()).then(|| Cgroup { layout: layout.clone(), dirs })
    }

    /// Removes a daemon's `group` where it is empty (at the daemon's end:
    /// every workload's cgroup is gone by then, unless one would not die).
    pub fn remove_group(layout: &Layout, group: &str) {
        for dir in layout.hierarchies().into_iter().map(|h| h.join(group)) {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// The cgroup a sandbox record names (`dirs`, absolute, as `dirs()`
    /// gave them), wherever a layout put it then, as the sandbox's init
    /// `pid` (pinned by the caller) shows it: those of the directories that
    /// are `GROUP/<name>` (any daemon's `workloads_group`) on a cgroup
    /// filesystem and hold the init. v2 when they hold
    /// `cgroup.controllers`. None when none is left.
    pub fn recorded(dirs: &[PathBuf], name: &str, pid: i32) -> Option<Self> {
        Self::recorded_where(dirs, name, |d| on_cgroup_fs(d) && holds(d, pid))
    }

    fn recorded_where(dirs: &[PathBuf], name: &str, trusted: impl Fn(&Path) -> bool) -> Option<Self> {
        let dirs: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| {
                d.is_absolute()
                    && d.file_name().is_some_and(|leaf| leaf == name)
                    && d.parent().and_then(Path::file_name).is_some_and(is_workloads_group)
                    && d.is_dir()
                    && trusted(d)
            })
            .cloned()
            .collect();
        let first = dirs.first()?;
        let root = |up: usize| first.ancestors().nth(up).unwrap_or(Path::new("/")).to_owned();
        let layout = if first.join("cgroup.controllers").exists() {
            Layout::V2 { root: root(2) }
        } else {
            Layout::V1 { root: root(3) }
        };
        Some(Cgroup { layout, dirs })
    }

    /// Empties and removes the cgroups `paddock run`s killed with -9 left
    /// (theirs is `paddock-run/NAME-PID.START.PIDNS`, removed at a normal
    /// end): those whose run is gone. A sandbox in its own pid namespace died
    /// with its init; one in the host's (`pid = "host"`) leaves what its
    /// workload started, which is killed here. Done by each run before it
    /// starts its sandbox, and by the daemon at its start.
    pub fn sweep_runs(layout: &Layout) {
        use std::os::unix::fs::MetadataExt;
        let groups: Vec<PathBuf> = layout.hierarchies().into_iter().map(|h| h.join(RUNS)).collect();
        // A run's leaf, in each hierarchy that has it.
        let mut left: BTreeMap<std::ffi::OsString, Vec<PathBuf>> = BTreeMap::new();
        // A directory's link count is 2 and one per subdirectory (on
        // cgroupfs, ext4, tmpfs): with no run's leaf, nothing is listed
        // (the common case, at every run's start). Where it says nothing
        // (btrfs counts 1), the directory is listed.
        let with_leaves = |g: &&PathBuf| std::fs::metadata(g).is_ok_and(|m| m.nlink() != 2);
        let own_ns = own_pid_namespace();
        for entry in groups.iter().filter(with_leaves).filter_map(|g| std::fs::read_dir(g).ok()).flatten().flatten() {
            let name = entry.file_name();
            let Some(RunLeaf { pid, started }) = name.to_str().and_then(run_of_leaf) else { continue };
            // Gone: no such process, or (where the leaf says when the run
            // started) another that has its pid now. A run of another pid
            // namespace is judged there (its pid means nothing here), and
            // what cannot be told is left for a later sweep.
            let gone = match started {
                Some((started, ns)) if Some(ns) == own_ns => crate::sandbox::process::has_ended(pid, started),
                Some(_) => false,
                None => !Path::new(&format!("/proc/{pid}")).exists(),
            };
            if gone && entry.path().is_dir() {
                left.entry(name).or_default().push(entry.path());
            }
        }
        for dirs in left.into_values() {
            let cgroup = Cgroup { layout: layout.clone(), dirs };
            let pids = cgroup.pids();
            if a_live_runs(&pids) {
                continue;
            }
            if !pids.is_empty() {
                tracing::warn!(cgroup = %cgroup.dirs[0].display(), "killing what a `paddock run` killed with -9 left running");
            }
            // Not `discard`'s 5 s: every run's start waits for this.
            if cgroup.kill_all(SWEEP_WAIT) {
                cgroup.remove();
            } else {
                tracing::warn!(
                    cgroup = %cgroup.dirs[0].display(),
                    "processes a `paddock run` killed with -9 left did not end within {SWEEP_WAIT:?} of SIGKILL; \
                     the cgroup stays, and the next run or daemon start tries again"
                );
            }
        }
    }

    /// Whether any process is in the cgroup.
    pub fn occupied(&self) -> bool {
        !self.pids().is_empty()
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// On cgroup v2, the directory a child can be created in directly
    /// (clone3 with CLONE_INTO_CGROUP), which spares the kernel a migration.
    pub fn v2_dir(&self) -> Option<&Path> {
        match self.layout {
            Layout::V2 { .. } => self.dirs.first().map(PathBuf::as_path),
            Layout::V1 { .. } => None,
        }
    }

    /// Moves a process into the cgroup (every hierarchy on v1).
    pub fn attach(&self, pid: Pid) -> Result<(), CgroupError> {
        self.dirs.iter().try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// Whether the kernel's OOM killer has killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = match self.layout {
            Layout::V1 { .. } => "memory.oom_control",
            Layout::V2 { .. } => "memory.events",
        };
        self.dirs.iter().filter_map(|d| std::fs::read_to_string(d.join(file)).ok()).any(|text| {
            text.lines()
                .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
        })
    }

    fn pids(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).map(Pid::from_raw).collect::<Vec<_>>())
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup and waits (up to `timeout`)
    /// until none is left. Returns whether it emptied. With cgroup v2's
    /// `cgroup.kill` (Linux 5.14) the kernel kills them all at once;
    /// otherwise (v1, v2 before Linux 5.14, or a failed write) each
    /// process is signalled, and only as `kill_listed` allows, so that a
    /// pid recycled by a host process between the read and the signal is
    /// never hit.
    pub fn kill_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let pinned_at_once = pinned_at_once();
        let mut warned = false;
        let mut frozen = false;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            // Without cgroup.kill (v1, and v2 before 5.14) processes are
            // killed a round at a time: no fork may add more meanwhile, or
            // a fork loop could outrun the rounds. (A workload in its own
            // pid namespace dies with its init anyway; this is for `pid =
            // "host"`.) Not for a cgroup already empty, as at each end.
            if !std::mem::replace(&mut frozen, true) && !self.dirs.iter().any(|d| d.join("cgroup.kill").exists()) {
                for dir in &self.dirs {
                    let max = dir.join("pids.max");
                    if max.exists() {
                        let _ = std::fs::write(&max, "0");
                    }
                }
            }
            let killed = self
                .dirs
                .iter()
                .find(|d| d.join("cgroup.kill").exists())
                .is_some_and(|dir| std::fs::write(dir.join("cgroup.kill"), "1").is_ok());
            if !killed {
                for batch in pids.chunks(pinned_at_once) {
                    if let Err(e) = kill_listed(batch, || self.pids())
                        && !std::mem::replace(&mut warned, true)
                    {
                        tracing::warn!(cgroup = %self.dirs[0].display(), error = %e, "cannot pin a process of the cgroup to kill it (pidfd_open)");
                    }
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes the cgroup's directories (they must be empty of processes);
    /// one that stays is logged.
    pub fn remove(&self) {
        for dir in &self.dirs {
            match remove_dir_patiently(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove a sandbox's cgroup");
                }
                _ => {}
            }
        }
    }

    /// Kills what is left in the cgroup (for up to 5 s) and removes it.
    /// Processes that do not die are logged, and keep the cgroup: a start
    /// of its workload is refused until it is empty.
    pub fn discard(&self) {
        if !self.kill_all(Duration::from_secs(5)) {
            tracing::error!(
                cgroup = %self.dirs.first().map_or_else(String::new, |d| d.display().to_string()),
                "processes of a sandbox's cgroup do not die; the cgroup stays"
            );
        }
        self.remove();
    }
}

/// Whether a run's cgroup, its processes `pids`, holds that run's init
/// still: a run this process cannot see (in another pid namespace, so the
/// pid in the cgroup's name tells nothing) is alive. The init's parent is
/// the run itself, a paddock process outside the cgroup. A workload
/// cannot pass for it (whatever it names itself): its processes' parents
/// are in the cgroup, or, once theirs died, the host's init or a
/// subreaper. A process of a pid namespace this one cannot see at all is
/// listed as 0 (v2): it may be such a run's, and is left alone too.
fn a_live_runs(pids: &[Pid]) -> bool {
    let members: std::collections::BTreeSet<i32> = pids.iter().map(|p| p.as_raw()).collect();
    let paddock = |pid: i32| std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(b"paddock"));
    pids.iter().any(|p| {
        p.as_raw() == 0
            || crate::sandbox::process::parent(p.as_raw()).is_some_and(|up| !members.contains(&up) && paddock(up))
    })
}

/// How many pidfds `kill_all` holds at a time: a quarter of this
/// process's descriptors (the daemon raises its soft limit to the hard
/// one), at least 64. A cgroup of more processes is read again per batch.
fn pinned_at_once() -> usize {
    let soft =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).max(64)
}

/// SIGKILLs those of `listed` (pids just read from `cgroup.procs`) that
/// are still in the cgroup, never a process that merely has one of their
/// pids now. Each pid is first pinned by a pidfd, then the cgroup is read
/// again (`relist`, sorted) and only a pid still listed is signalled,
/// through its pidfd. A pid stays its process's until that process is
/// reaped; so if the process a pidfd holds is not yet reaped when
/// signalled, the second read's entry for its pid was this process, in
/// the cgroup then. If it was reaped meanwhile, the signal goes nowhere
/// (a pidfd never follows a pid to a new process). A process that left
/// the list between the reads (its pid since taken by a host process) is
/// spared. Freezing the cgroup, as runc does on v1, would also stop new
/// forks; this only rules out recycled pids, and the caller's next round
/// takes the forks. Fails only when a pid could not be pinned for a reason
/// other than its process being gone (for example out of descriptors:
/// EMFILE, ENFILE).
fn kill_listed(listed: &[Pid], relist: impl FnOnce() -> Vec<Pid>) -> Result<(), nix::errno::Errno> {
    let mut failed = Ok(());
    let mut pinned = Vec::with_capacity(listed.len());
    for &pid in listed {
        match super::sys::pidfd_open(pid.as_raw()) {
            Ok(pidfd) => pinned.push((pid, pidfd)),
            // Gone (ESRCH), or not in this pid namespace (v2 lists it as 0: EINVAL).
            Err(nix::errno::Errno::ESRCH | nix::errno::Errno::EINVAL) => {}
            Err(e) => failed = Err(e),
        }
    }
    if pinned.is_empty() {
        return failed;
    }
    let still = relist();
    for (pid, pidfd) in &pinned {
        if still.binary_search(pid).is_ok() {
            let _ = super::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
        }
    }
    failed
}

fn quota(cores: f64) -> u64 {
    ((cores * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

fn enable(subtree_control: &Path, controller: &str) -> std::io::Result<()> {
    let current = std::fs::read_to_string(subtree_control).unwrap_or_default();
    if current.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    std::fs::write(subtree_control, format!("+{controller}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_cannot_be_read_is_not_taken_for_one_without_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        assert!(!holds_checked(&dir.path().join("missing"), me).unwrap(), "no such cgroup: not there");
        std::fs::write(dir.path().join("cgroup.procs"), format!("1\n{me}\n")).unwrap();
        assert!(holds_checked(dir.path(), me).unwrap());
        assert!(!holds_checked(dir.path(), me + 1).unwrap());
        let odd = dir.path().join("odd");
        std::fs::create_dir_all(odd.join("cgroup.procs")).unwrap();
        assert!(holds_checked(&odd, me).is_err(), "unreadable: cannot tell");
        assert!(!holds(&odd, me));
    }

    #[test]
    fn v2_writes_limits_and_enables_controllers_in_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        let layout = Layout::detect(root.path());
        assert_eq!(layout, Layout::V2 { root: root.path().to_owned() });
        let limits = Limits { memory: Some(256 << 20), pids: Some(512), cpu: Some(0.5) };
        let cg = Cgroup::create_with(&layout, Place::workload(WORKLOADS, "web"), limits, false).unwrap();
        let dir = root.path().join("paddock/web");
        assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&dir.join("memory.max")), "268435456");
        assert_eq!(read(&dir.join("pids.max")), "512");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        // A real cgroupfs accumulates "+ctl" writes; the fake file keeps the last.
        assert_eq!(read(&root.path().join("paddock/cgroup.subtree_control")), "+cpu");
        assert!(!cg.oom_killed());
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(cg.oom_killed());
        cg.attach(Pid::from_raw(4242)).unwrap();
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    }

    #[test]
    fn a_delegated_v2_cgroup_holds_the_daemon_in_a_leaf_and_the_workloads_beside_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let own = root.path().join("system.slice/paddock.service");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        let layout = || Layout::V2 { root: root.path().to_owned() };
        let line = "0::/system.slice/paddock.service\n";

        // Not delegated: the root, as for `paddock run`; nothing moved.
        assert_eq!(layout().for_daemon(line).unwrap(), layout());
        assert!(!own.join(SUPERVISOR_LEAF).exists());
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let mark = |name: &str| {
            // SAFETY: NUL-terminated strings and a one-byte value that outlive the call.
            let set = unsafe {
                libc::setxattr(c(own.to_str().unwrap()).as_ptr(), c(name).as_ptr(), b"1".as_ptr().cast(), 1, 0)
            };
            assert_eq!(set, 0, "setting {name} needs root: {}", std::io::Error::last_os_error());
        };
        // user.delegate, which any owner may set on its own cgroup: not taken.
        mark("user.delegate");
        assert_eq!(layout().for_daemon(line).unwrap(), layout());
        // trusted.delegate on a cgroup another user owns: not taken either.
        mark("trusted.delegate");
        std::os::unix::fs::chown(&own, Some(1000), None).unwrap();
        assert_eq!(layout().for_daemon(line).unwrap(), layout());
        assert!(!own.join(SUPERVISOR_LEAF).exists());
        // Delegated, as systemd marks it: root's, trusted.delegate.
        std::os::unix::fs::chown(&own, Some(0), None).unwrap();
        let delegated = layout().for_daemon(line).unwrap();
        assert_eq!(delegated, Layout::V2 { root: own.clone() });
        assert_eq!(read(&own.join("supervisor/cgroup.procs")), std::process::id().to_string());
        let cg = Cgroup::create_with(
            &delegated,
            Place::workload(WORKLOADS, "web"),
            Limits { memory: Some(1 << 20), ..Limits::default() },
            false,
        )
        .unwrap();
        assert_eq!(cg.dirs(), [own.join("paddock/web")]);
        // Controllers are enabled from the delegated cgroup down, never above it.
        assert_eq!(read(&own.join("cgroup.subtree_control")), "+cpu", "the fake keeps the last write");
        assert!(!root.path().join("cgroup.subtree_control").exists());
        // Already in the leaf (systemd's DelegateSubgroup=supervisor): the same layout.
        assert_eq!(layout().for_daemon("0::/system.slice/paddock.service/supervisor\n").unwrap(), delegated);
        // At the root, or on v1, nothing changes.
        assert_eq!(layout().for_daemon("0::/\n").unwrap(), layout());
        let v1 = Layout::V1 { root: root.path().to_owned() };
        assert_eq!(v1.clone().for_daemon(line).unwrap(), v1);
    }

    #[test]
    fn a_missing_controller_is_named_in_the_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
        let err = Cgroup::create_with(
            &Layout::detect(root.path()),
            Place::workload(WORKLOADS, "web"),
            Limits { memory: Some(1 << 20), ..Limits::default() },
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("memory limit needs the memory cgroup controller, which this host does not have"),
            "{err}"
        );
        assert!(err.to_string().ends_with("cgroup.controllers does not list it)"), "{err}");
        let lacks = Layout::detect(root.path()).lacks(&Limits { memory: Some(1), pids: Some(1), ..Limits::default() });
        assert_eq!(lacks.len(), 1, "pids is there, memory is not: {lacks:?}");
        assert!(!root.path().join("paddock/web").exists(), "nothing is left behind");
    }

    /// The default state directory's daemon keeps `paddock`; any other's
    /// group is its path's, the same in every build (an upgraded daemon
    /// must find the cgroups of the sandboxes it adopts, and its
    /// predecessor's leftovers).
    #[test]
    fn a_daemon_s_group_is_named_for_its_state_directory() {
        for default in ["/var/lib/paddock", "/var/lib/paddock/", "//var/lib/./paddock"] {
            assert_eq!(workloads_group(Path::new(default)), "paddock", "{default}");
        }
        assert_eq!(workloads_group(Path::new("/tmp/me2/a/state")), "paddock-4aea49a07af865b2");
        assert_eq!(workloads_group(Path::new("/tmp/me2/a/state/")), "paddock-4aea49a07af865b2");
        assert_eq!(workloads_group(Path::new("/tmp/paddock-try/state")), "paddock-87dc8dca64618c10");
        for group in ["paddock", "paddock-4aea49a07af865b2"] {
            assert!(is_workloads_group(group.as_ref()), "{group}");
        }
        for other in ["paddock-run", "paddock-4aea49a07af865b", "paddock-4AEA49A07AF865B2", "paddockx", "system.slice"]
        {
            assert!(!is_workloads_group(other.as_ref()), "{other}");
        }
        // An existing directory keeps the group it was first given, by
        // whatever way it is reached later.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/state")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        let group = workloads_group(&dir.path().join("link/state"));
        assert_eq!(group, group_of(&dir.path().join("link/state")), "named by its path the first time");
        for other in ["a/state", "b/../a/state", "link/state", "link/../a/state/"] {
            assert_eq!(workloads_group(&dir.path().join(other)), group, "{other}");
        }
        // A file that names no group is not taken, nor one of another
        // directory (a copy of this one, a second daemon's).
        let kept = std::fs::read_to_string(dir.path().join("a/state").join(GROUP_FILE)).unwrap();
        std::fs::create_dir(dir.path().join("copy")).unwrap();
        std::fs::write(dir.path().join("copy").join(GROUP_FILE), &kept).unwrap();
        assert_eq!(workloads_group(&dir.path().join("copy")), group_of(&dir.path().join("copy")), "{kept}");
        for other in ["paddock-run", "paddock"] {
            std::fs::write(
                dir.path().join("a/state").join(GROUP_FILE),
                format!("{other} {}", kept.split(' ').nth(1).unwrap()),
            )
            .unwrap();
            assert_eq!(workloads_group(&dir.path().join("a/state")), group_of(&dir.path().join("a/state")), "{other}");
        }
    }

    #[test]
    fn a_recorded_cgroup_is_taken_only_as_a_sandboxs_own_directory() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("v1/memory/paddock/web");
        let v2 = root.path().join("v2/paddock/web");
        let other = root.path().join("v1/memory/paddock/api");
        for d in [&v1, &v2, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(v2.join("cgroup.controllers"), "memory\n").unwrap();
        let any = |_: &Path| true;
        let dirs = [other.clone(), root.path().join("gone/paddock/web"), v1.clone()];
        let cg = Cgroup::recorded_where(&dirs, "web", any).unwrap();
        assert_eq!(cg.dirs(), std::slice::from_ref(&v1), "another's, and one that is gone, are left out");
        assert_eq!(cg.layout, Layout::V1 { root: root.path().join("v1") });
        let cg = Cgroup::recorded_where(std::slice::from_ref(&v2), "web", any).unwrap();
        assert_eq!(cg.v2_dir(), Some(v2.as_path()));
        assert!(Cgroup::recorded_where(&[other, PathBuf::from("paddock/web")], "web", any).is_none());
        // Another state directory's daemon's group, but never a run's.
        let hashed = root.path().join("v1/pids/paddock-4aea49a07af865b2/web");
        let run = root.path().join("v1/pids/paddock-run/web");
        for d in [&hashed, &run] {
            std::fs::create_dir_all(d).unwrap();
        }
        assert_eq!(Cgroup::recorded_where(&[run, hashed.clone()], "web", any).unwrap().dirs(), [hashed]);
        // Not on a cgroup filesystem, or not holding the init: not taken.
        assert!(Cgroup::recorded(std::slice::from_ref(&v1), "web", std::process::id() as i32).is_none());
        assert!(!on_cgroup_fs(&v1));
        let cgroup2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|r| Path::new(r).join("cgroup.controllers").exists())
            .expect("a cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified");
        assert!(on_cgroup_fs(Path::new(cgroup2)));
    }

    /// A fake v2 tree, and the pid of a process that has ended.
    fn fake_tree_and_a_gone_pid() -> (tempfile::TempDir, u32) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "memory").unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        (root, dead)
    }

    #[test]
    fn the_cgroups_killed_runs_left_are_swept_and_a_live_runs_kept() {
        let (root, dead) = fake_tree_and_a_gone_pid();
        let me = std::process::id();
        let started = crate::sandbox::process::start_time(me as i32).unwrap();
        let left = root.path().join(format!("paddock-run/web-{dead}"));
        let live = root.path().join(format!("paddock-run/web-{me}"));
        // Named by pid and start time: this process's pid is alive, but a
        // run that started at another time had it before.
        let ns = own_pid_namespace().unwrap();
        let reused = root.path().join(format!("paddock-run/my-app-{me}.{}.{ns}", started + 1));
        let live_timed = root.path().join(format!("paddock-run/my-app-{me}.{started}.{ns}"));
        assert_eq!(Path::new(&run_leaf("my-app")), live_timed.strip_prefix(root.path().join(RUNS)).unwrap());
        // A run of another pid namespace, its pid and start time not this
        // one's to judge (here a pid gone in this one): kept, even empty
        // (its run may not have cloned its init yet).
        let other_ns = root.path().join(format!("paddock-run/web-{dead}.{started}.{}", ns + 1));
        for d in [&left, &live, &reused, &live_timed, &other_ns] {
            std::fs::create_dir_all(d).unwrap();
        }
        // A run of another pid namespace, its pid in the name not one this
        // process sees: its init (a child of a paddock process, as this
        // test's child is of this test's binary) is in it: kept (else the
        // child is killed).
        assert!(std::fs::read("/proc/self/comm").unwrap().starts_with(b"paddock"), "this test needs its name");
        let mut init = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let elsewhere = root.path().join(format!("paddock-run/db-{dead}"));
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("cgroup.procs"), format!("{}\n", init.id())).unwrap();
        Cgroup::sweep_runs(&Layout::detect(root.path()));
        assert!(!left.exists(), "a killed run's is removed");
        assert!(!reused.exists(), "a killed run's whose pid another process has now is removed");
        assert!(live.exists(), "a live run's is kept");
        assert!(live_timed.exists(), "a live run's, named by pid and start time, is kept");
        assert!(other_ns.exists(), "a run of another pid namespace is judged there");
        assert!(elsewhere.exists(), "a run of another pid namespace is kept");
        assert!(init.try_wait().unwrap().is_none(), "its init was killed");
        init.kill().unwrap();
        init.wait().unwrap();
    }

    /// A process that does not die when killed (here a pid that cannot
    /// exist, listed in a fake tree) keeps its cgroup, and the sweep,
    /// which each run's start waits for, does not wait `discard`'s 5 s.
    #[test]
    fn a_sweep_does_not_wait_long_for_what_does_not_die() {
        let (root, dead) = fake_tree_and_a_gone_pid();
        let stuck = root.path().join(format!("paddock-run/web-{dead}.1.{}", own_pid_namespace().unwrap()));
        std::fs::create_dir_all(&stuck).unwrap();
        // Above the kernel's largest pid_max (2^22): no process has it.
        std::fs::write(stuck.join("cgroup.procs"), "99999999\n").unwrap();
        let began = Instant::now();
        Cgroup::sweep_runs(&Layout::detect(root.path()));
        let took = began.elapsed();
        assert!(stuck.exists(), "a cgroup whose processes do not die stays");
        assert!(took < Duration::from_secs(3), "the sweep waited {took:?}");
    }

    #[test]
    fn a_run_leaf_names_its_pid_and_start_time() {
        let leaf = |pid, started| Some(RunLeaf { pid, started });
        assert_eq!(run_of_leaf("web-12-3456"), leaf(3456, None));
        assert_eq!(run_of_leaf("web-12-3456.789.4026531836"), leaf(3456, Some((789, 4026531836))));
        assert_eq!(run_of_leaf("web-12-3456.789"), None);
        assert_eq!(run_of_leaf("web.789.1"), None);
        assert_eq!(run_of_leaf("web-12.x.1"), None);
        assert_eq!(run_of_leaf("web"), None);
    }

    /// A live run is told by its init's parent, a paddock process outside
    /// the cgroup, never by a name a workload can give itself.
    #[test]
    fn a_workload_named_paddock_passes_for_no_live_run() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("paddock-init");
        std::fs::copy("/bin/sleep", &fake).unwrap();
        // Orphaned (its shell gone), as what a killed run left is.
        let shell = format!("{} 30 >/dev/null 2>&1 & echo $!", fake.display());
        let out = std::process::Command::new("sh").args(["-c", &shell]).output().unwrap();
        let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(std::fs::read(format!("/proc/{orphan}/comm")).unwrap().starts_with(b"paddock"));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = |p: i32| Pid::from_raw(p);
        let live = a_live_runs(&[pid(orphan), pid(child.id() as i32)]);
        let left = a_live_runs(&[pid(orphan)]);
        let unseen = a_live_runs(&[pid(0)]);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(orphan, libc::SIGKILL) };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(live, "a child of this paddock-named process, with a parent outside the cgroup, is a live run's init");
        assert!(!left, "an orphan that named itself paddock-init is no run's");
        assert!(unseen, "a process of a pid namespace not seen may be a live run's");
    }

    #[test]
    fn check_knows_a_memory_limit_unaccounted_swap_would_get_past_on_v1() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("memory")).unwrap();
        std::fs::write(root.path().join("memory/cgroup.procs"), "").unwrap();
        let layout = Layout::detect(root.path());
        let limits = Limits { memory: Some(1 << 20), ..Limits::default() };
        let lacking = layout.lacks_with(&limits, true);
        assert!(matches!(lacking.as_slice(), [CgroupError::NoSwapAccounting { .. }]), "{lacking:?}");
        assert!(layout.lacks_with(&limits, false).is_empty(), "no swap, nothing to account");
        std::fs::write(root.path().join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        assert!(layout.lacks_with(&limits, true).is_empty(), "accounted");
    }

    #[test]
    fn a_memory_limit_swap_would_get_past_is_refused_on_v1_and_v2() {
        let limits = Limits { memory: Some(1 << 20), ..Limits::default() };
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        std::fs::write(v1.path().join("memory/cgroup.procs"), "").unwrap();
        let err = Cgroup::create_with(&Layout::detect(v1.path()), Place::workload(WORKLOADS, "web"), limits, true)
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::NoSwapAccounting { path } if path.ends_with("memory.memsw.limit_in_bytes")),
            "{err:?}"
        );
        assert!(err.to_string().contains("swapaccount=0"), "{err}");
        assert!(!v1.path().join("memory/paddock/web").exists(), "nothing left");
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "memory").unwrap();
        let err = Cgroup::create_with(&Layout::detect(v2.path()), Place::workload(WORKLOADS, "web"), limits, true)
            .unwrap_err();
        assert!(matches!(&err, CgroupError::NoSwapAccounting { path } if path.ends_with("memory.swap.max")), "{err:?}");
        // Without swap there is nothing to account.
        Cgroup::create_with(&Layout::detect(v1.path()), Place::workload(WORKLOADS, "web"), limits, false).unwrap();
    }

    #[test]
    fn a_cgroup_left_with_processes_in_it_is_refused_and_left_as_it_is() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("memory")).unwrap();
        std::fs::write(root.path().join("memory/cgroup.procs"), "").unwrap();
        let left = root.path().join("memory/paddock/web");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("cgroup.procs"), "4242\n").unwrap();
        let limits = Limits { memory: Some(1 << 20), ..Limits::default() };
        let err = Cgroup::create_with(&Layout::detect(root.path()), Place::workload(WORKLOADS, "web"), limits, false)
            .unwrap_err();
        assert!(matches!(&err, CgroupError::Occupied { path } if *path == left), "{err:?}");
        assert!(err.to_string().contains("already holds processes") && err.to_string().contains("stop it first"));
        assert_eq!(std::fs::read_to_string(left.join("cgroup.procs")).unwrap(), "4242\n");
        assert!(!left.join("memory.limit_in_bytes").exists(), "no limit written over the other sandbox's");
        // A run's cgroup is elsewhere, and its own.
        let run = Cgroup::create_with(&Layout::detect(root.path()), Place::run("web-77"), limits, false).unwrap();
        assert_eq!(run.dirs(), [root.path().join("memory/paddock-run/web-77")]);
    }

    /// A v1 layout: the memory, pids and cpu hierarchies.
    fn v1_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu"] {
            std::fs::create_dir(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        root
    }

    #[test]
    fn v1_writes_one_directory_per_controller() {
        let root = v1_tree();
        let cg = Cgroup::create_with(
            &Layout::detect(root.path()),
            Place::workload(WORKLOADS, "job"),
            Limits { memory: Some(32 << 20), pids: Some(5), cpu: Some(1.5) },
            false,
        )
        .unwrap();
        assert_eq!(cg.dirs().len(), 3);
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("memory/paddock/job/memory.limit_in_bytes"), "33554432");
        assert_eq!(read("pids/paddock/job/pids.max"), "5");
        assert_eq!(read("cpu/paddock/job/cpu.cfs_quota_us"), "150000");
        std::fs::write(
            root.path().join("memory/paddock/job/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(cg.oom_killed());
    }

    #[test]
    fn v1_makes_memory_and_cpu_groups_only_for_their_limits() {
        let root = v1_tree();
        let layout = Layout::detect(root.path());
        let limits = Limits { memory: None, pids: None, cpu: Some(0.5) };
        let cg = Cgroup::create_with(&layout, Place::workload(WORKLOADS, "job"), limits, false).unwrap();
        assert_eq!(cg.dirs(), [root.path().join("pids/paddock/job"), root.path().join("cpu/paddock/job")]);
        assert!(!root.path().join("memory/paddock/job").exists());
        let none = Limits { memory: None, pids: None, cpu: None };
        let cg = Cgroup::create_with(&layout, Place::workload(WORKLOADS, "other"), none, false).unwrap();
        assert_eq!(cg.dirs(), [root.path().join("pids/paddock/other")], "pids: where kill_all stops forks");
    }

    /// A live process that is not in any cgroup of ours: `sleep`, killed
    /// and reaped when dropped (a failed assertion leaves nothing running).
    struct Stranger(std::process::Child);

    impl Stranger {
        fn new() -> Self {
            Stranger(std::process::Command::new("sleep").arg("100").spawn().expect("spawn sleep"))
        }

        fn pid(&self) -> Pid {
            Pid::from_raw(self.0.id() as i32)
        }

        /// The signal that ended it, once it has ended (within 5 s).
        fn ended_by(&mut self) -> Option<i32> {
            use std::os::unix::process::ExitStatusExt;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(status) = self.0.try_wait().unwrap() {
                    return status.signal();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        }

        /// Whether nothing had signalled it: a SIGTERM is sent now, and
        /// whatever signal reached it first is how it ends (a SIGKILL sent
        /// earlier wins over this SIGTERM however late it is delivered).
        fn was_spared(&mut self) -> bool {
            let pidfd = crate::sandbox::sys::pidfd_open(self.pid().as_raw()).unwrap();
            crate::sandbox::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM).unwrap();
            self.ended_by() == Some(libc::SIGTERM)
        }
    }

    impl Drop for Stranger {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_pid_the_cgroup_no_longer_lists_is_never_signalled() {
        // The first read listed this pid; by the second, the cgroup's
        // process had gone and a host process had its pid.
        let mut host = Stranger::new();
        kill_listed(&[host.pid()], Vec::new).unwrap();
        assert!(host.was_spared(), "a process outside the cgroup was signalled");
        // Listed both times: it is in the cgroup, and killed.
        let mut member = Stranger::new();
        kill_listed(&[member.pid()], || vec![member.pid()]).unwrap();
        assert_eq!(member.ended_by(), Some(libc::SIGKILL), "a process the cgroup still lists was not killed");
    }

    /// A fake cgroup directory under `root` listing `pid`: the kernel's
    /// file would drop the pid once it died; this one keeps it.
    fn fake_cgroup(root: &Path, dir: &str, pid: Pid) -> PathBuf {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), format!("{pid}\n")).unwrap();
        dir
    }

    #[test]
    fn kill_all_kills_what_a_v1_cgroup_lists() {
        let root = tempfile::tempdir().unwrap();
        let mut member = Stranger::new();
        fake_cgroup(root.path(), "memory/paddock/job", member.pid());
        std::fs::create_dir_all(root.path().join("pids/paddock/job")).unwrap();
        std::fs::write(root.path().join("pids/paddock/job/pids.max"), "max\n").unwrap();
        let cg = Cgroup::existing(&Layout::V1 { root: root.path().to_owned() }, WORKLOADS, "job")
            .expect("the cgroup exists");
        assert!(!cg.kill_all(Duration::from_millis(20)), "the fake cgroup.procs never empties");
        assert_eq!(member.ended_by(), Some(libc::SIGKILL), "the listed process was not killed");
        let max = std::fs::read_to_string(root.path().join("pids/paddock/job/pids.max")).unwrap();
        assert_eq!(max, "0", "no fork while the rounds of kills run");
    }

    #[test]
    fn on_v2_the_kernel_kills_through_cgroup_kill_and_no_pid_is_signalled() {
        let root = tempfile::tempdir().unwrap();
        // Listed, but (a fake tree) not killed by the write: were it signalled, it would be by pid.
        let mut listed = Stranger::new();
        let dir = fake_cgroup(root.path(), "paddock/job", listed.pid());
        std::fs::write(root.path().join("cgroup.controllers"), "").unwrap();
        std::fs::write(dir.join("cgroup.kill"), "").unwrap();
        let cg = Cgroup::existing(&Layout::detect(root.path()), WORKLOADS, "job").expect("the cgroup exists");
        assert!(!cg.kill_all(Duration::from_millis(20)), "the fake cgroup.procs never empties");
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.kill")).unwrap(), "1", "cgroup.kill was written");
        assert!(listed.was_spared(), "a pid was signalled beside cgroup.kill");
    }
}
