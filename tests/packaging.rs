//! What an operator installs: the man pages and completions the binary
//! writes, install.sh's layout (as README.md documents it, owners and
//! modes), the Debian package's assets (the same layout), the systemd unit
//! (`systemd-analyze verify`), the tmpfiles.d entry and the default
//! configuration. (Root required: everything is installed owned by root.)

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "install.sh installs files owned by root: run the tests as root (CI does)");
}

fn require(tool: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(found, "{tool} is needed for this test: apt-get install systemd (.ci/run does)");
}

fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("__generate").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The visible commands, from `paddock --help`.
fn commands() -> Vec<String> {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let list = help.split("Commands:\n").nth(1).expect("a command list").split("\n\n").next().unwrap();
    // A command's line starts with two spaces; its wrapped description, with more.
    list.lines()
        .filter_map(|l| l.strip_prefix("  ").filter(|rest| !rest.starts_with(' ')))
        .filter_map(|l| l.split_whitespace().next())
        // clap's own: `paddock --help`'s list, not a page (the pages say what it does).
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_man_pages_and_completions_are_generated_and_not_empty() {
    let dir = generate();
    let commands = commands();
    assert!(commands.len() >= 11 && commands.iter().any(|c| c == "plan"), "{commands:?}");
    let main = read(&dir.path().join("man/man1/paddock.1"));
    assert!(main.starts_with(".ie") || main.contains(".TH PADDOCK 1"), "{main}");
    assert!(main.contains("/etc/paddock/workloads/*.toml"), "the FILES section");
    for command in &commands {
        let page = read(&dir.path().join(format!("man/man1/paddock-{command}.1")));
        assert!(page.contains(&format!(".TH PADDOCK-{} 1", command.to_uppercase())), "{command}: {page}");
        assert!(main.contains(&format!("paddock\\-{command}")), "paddock.1 lists {command}");
    }
    let status = read(&dir.path().join("man/man1/paddock-status.1"));
    assert!(status.contains("\\-\\-json") && status.contains("effective manifest"), "{status}");
    for (shell, file) in [
        ("bash", "bash-completion/completions/paddock"),
        ("zsh", "zsh/vendor-completions/_paddock"),
        ("fish", "fish/vendor_completions.d/paddock.fish"),
    ] {
        let script = read(&dir.path().join(file));
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell} completes {command}");
        }
        assert!(script.contains("timestamps"), "{shell} completes the options of `logs`");
        // Not the hidden ones: the sandbox's init, the generator (helper-103).
        assert!(!script.contains("__init") && !script.contains("__generate"), "{shell} offers an internal command");
    }
    // A page for each command a page names (`paddock-export` names
    // `paddock-export-kubernetes`), none for clap's `help`.
    let export = read(&dir.path().join("man/man1/paddock-export.1"));
    assert!(export.contains("paddock\\-export\\-kubernetes"), "{export}");
    let kubernetes = read(&dir.path().join("man/man1/paddock-export-kubernetes.1"));
    assert!(kubernetes.contains(".TH PADDOCK-EXPORT-KUBERNETES 1"), "{kubernetes}");
    assert!(!dir.path().join("man/man1/paddock-help.1").exists());
    assert!(
        main.contains("exec, start, stop, restart, reload, upgrade and plan use"),
        "FILES names the socket's users"
    );
    let bash = Command::new("bash").arg("-n").arg(dir.path().join("bash-completion/completions/paddock")).output();
    assert!(bash.unwrap().status.success(), "the bash completion parses");
}

/// An installed entry: owner and mode, as `ls -l` would say them.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    owner: String,
    mode: String,
}

fn install(destdir: &Path) -> String {
    let out =
        Command::new("sh").arg(repo("install.sh")).env("DESTDIR", destdir).env("PADDOCK_BIN", BIN).output().unwrap();
    assert!(out.status.success(), "install.sh: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tree(root: &Path) -> BTreeMap<String, (bool, Entry)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let owner = format!("{}:{}", name(meta.uid(), "/etc/passwd"), name(meta.gid(), "/etc/group"));
            let entry = Entry { owner, mode: format!("{:04o}", meta.permissions().mode() & 0o7777) };
            let shown = format!("/{}", path.strip_prefix(root).unwrap().display());
            if meta.is_dir() {
                stack.push(path);
            }
            found.insert(shown, (meta.is_dir(), entry));
        }
    }
    found
}

fn name(id: u32, file: &str) -> String {
    if id == 0 { "root".to_owned() } else { format!("{id} ({file})") }
}

/// README's "Installed files" table: `| `PATH` | OWNER | MODE | what |`.
fn documented_layout() -> Vec<(String, Entry)> {
    let readme = read(&repo("README.md"));
    let section = readme.split("### Installed files").nth(1).expect("README has ### Installed files");
    let section = section.split("\n#").next().unwrap();
    let rows: Vec<(String, Entry)> = section
        .lines()
        .filter(|l| l.starts_with("| `/"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), Entry { owner: cells[2].to_owned(), mode: cells[3].to_owned() })
        })
        .collect();
    assert!(rows.len() > 10, "the table parses: {rows:?}");
    rows
}

fn matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => path.starts_with(head) && path.ends_with(tail) && !path[head.len()..].contains('/'),
        None => pattern == path,
    }
}

#[test]
fn install_sh_produces_the_documented_layout_owners_and_modes() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    install(dest.path());
    let installed = tree(dest.path());
    let documented = documented_layout();
    for (pattern, want) in &documented {
        let hits: Vec<_> = installed.iter().filter(|(p, _)| matches(pattern, p)).collect();
        assert!(!hits.is_empty(), "README lists {pattern}, which install.sh did not install");
        for (path, (_, got)) in hits {
            assert_eq!(got, want, "{path}");
        }
    }
    for (path, (is_dir, _)) in &installed {
        if !is_dir {
            assert!(documented.iter().any(|(p, _)| matches(p, path)), "{path} is installed but not in README's table");
        }
    }
    assert_eq!(std::fs::read_dir(dest.path().join("etc/paddock/workloads")).unwrap().count(), 0);
    let config = dest.path().join("etc/paddock/paddock.toml");
    assert_eq!(read(&config), read(&repo("packaging/paddock.toml")));
    // Again, the default unchanged: nothing beside it.
    install(dest.path());
    assert!(!dest.path().join("etc/paddock/paddock.toml.new").exists(), "the default is the default");

    // Again over an installed host: the operator's files stay.
    std::fs::write(&config, "resync_interval = \"10s\"\n").unwrap();
    std::fs::write(dest.path().join("etc/paddock/workloads/web.toml"), "command = [\"/bin/true\"]\n").unwrap();
    let said = install(dest.path());
    assert_eq!(read(&config), "resync_interval = \"10s\"\n");
    assert!(dest.path().join("etc/paddock/workloads/web.toml").exists());
    assert!(dest.path().join("etc/paddock/paddock.toml.new").exists());
    assert!(said.contains("kept /etc/paddock/paddock.toml"), "{said}");
}

#[test]
fn the_debian_package_installs_what_install_sh_does() {
    require_root();
    let dest = tempfile::tempdir().unwrap();
    install(dest.path());
    let installed: BTreeMap<String, String> =
        tree(dest.path()).into_iter().filter(|(_, (is_dir, _))| !is_dir).map(|(p, (_, e))| (p, e.mode)).collect();

    let cargo: toml::Table = toml::from_str(&read(&repo("Cargo.toml"))).unwrap();
    let deb = &cargo["package"]["metadata"]["deb"];
    let generated = generate();
    let mut packaged = BTreeMap::new();
    for asset in deb["assets"].as_array().unwrap() {
        let [source, dest, mode] = asset.as_array().unwrap().as_slice() else { panic!("{asset}") };
        let (source, dest, mode) = (source.as_str().unwrap(), dest.as_str().unwrap(), mode.as_str().unwrap());
        // `target/release/generated/` is what packaging/build-deb writes with `paddock __generate`.
        let base = match source.strip_prefix("target/release/generated/") {
            Some(rest) => generated.path().join(rest),
            None if source == "target/release/paddock" => PathBuf::from(BIN),
            None => repo(source),
        };
        let sources: Vec<PathBuf> = match base.file_name().unwrap().to_str().unwrap().split_once('*') {
            Some((head, tail)) => std::fs::read_dir(base.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_str().unwrap();
                    n.starts_with(head) && n.ends_with(tail)
                })
                .collect(),
            None => vec![base],
        };
        assert!(!sources.is_empty(), "{source} matches nothing");
        for s in sources {
            let to = if dest.ends_with('/') {
                format!("/{dest}{}", s.file_name().unwrap().to_str().unwrap())
            } else {
                format!("/{dest}")
            };
            let to = if source == "target/release/paddock" { "/usr/bin/paddock".to_owned() } else { to };
            packaged.insert(to, format!("0{mode}"));
        }
    }
    // cargo-deb installs the unit named by systemd-units from its unit-scripts directory.
    let units = deb["systemd-units"].as_table().unwrap();
    assert!(repo(units["unit-scripts"].as_str().unwrap()).join("paddock.service").is_file());
    packaged.insert("/usr/lib/systemd/system/paddock.service".to_owned(), "0644".to_owned());
    assert_eq!(packaged, installed, "Cargo.toml's [package.metadata.deb] assets against install.sh");

    // The directories a package cannot ship empty, made by its postinst as install.sh makes them.
    let postinst = read(&repo(&format!("{}/postinst", deb["maintainer-scripts"].as_str().unwrap())));
    assert!(postinst.contains("install -d -m 0700 -o root -g root /etc/paddock/workloads\n"));
    assert!(postinst.contains("install -d -m 0755 -o root -g root /etc/paddock/policies\n"));
    assert!(postinst.contains("install -d -m 0700 -o root -g root /var/lib/paddock"));
    assert!(postinst.contains("#DEBHELPER#"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    require("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = read(&repo("packaging/paddock.service"));
    for key in [
        "Type=notify",
        "ExecReload=/usr/bin/paddock reload --pid $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=",
        "Delegate=yes",
        "KillMode=process",
        "TasksMax=infinity",
        "RestartPreventExitStatus=78",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(key)), "the unit sets {key}");
    }
    // The binary as built, and the man pages its Documentation= names.
    std::fs::write(dir.path().join("paddock.service"), unit.replace("/usr/bin/paddock", BIN)).unwrap();
    let generated = generate();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("paddock.service"))
        .env("MANPATH", generated.path().join("man"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_tmpfiles_entry_makes_the_socket_and_state_directories() {
    require_root();
    require("systemd-tmpfiles");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(repo("packaging/tmpfiles.d/paddock.conf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for dir in ["run/paddock", "var/lib/paddock"] {
        let meta = std::fs::metadata(root.path().join(dir)).unwrap();
        assert!(meta.is_dir() && meta.uid() == 0 && meta.permissions().mode() & 0o7777 == 0o700, "{dir}");
    }
}

#[test]
fn the_default_configuration_file_states_the_built_in_defaults() {
    let text = read(&repo("packaging/paddock.toml"));
    let defaults = paddock::config::Config::default();
    let as_shipped = paddock::config::Config::parse(Path::new("paddock.toml"), text.clone()).unwrap();
    assert_eq!(as_shipped, defaults, "everything commented out");
    // Uncommented, every value it shows is the default, and every key is there.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let shown = paddock::config::Config::parse(Path::new("paddock.toml"), uncommented.clone()).unwrap();
    assert_eq!(shown, defaults, "{uncommented}");
    let table: toml::Table = toml::from_str(&uncommented).unwrap();
    // Every key the configuration has, each table's too.
    let schema = paddock::config::schema();
    let properties = |s: &serde_json::Value| -> Vec<String> {
        s["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    };
    let defs = &schema["$defs"];
    for key in properties(&schema) {
        assert!(table.contains_key(&key), "{key} is not shown");
        let nested = &schema["properties"][&key];
        let reference = nested["$ref"].as_str().or_else(|| nested["allOf"][0]["$ref"].as_str());
        if let Some(name) = reference.and_then(|r| r.strip_prefix("#/$defs/")) {
            for inner in properties(&defs[name]) {
                assert!(table[&key].as_table().unwrap().contains_key(&inner), "{key}.{inner} is not shown");
            }
        }
    }
    assert!(table["remap"].as_table().unwrap().contains_key("subuid"), "tables' keys are looked at");
}

#[test]
fn install_sh_as_root_without_cargo_says_to_build_as_yourself() {
    // root's PATH without cargo, as `sudo ./install.sh` has with a per-user
    // rustup: only `id` and `dirname` on it (whether this host has a cargo in /usr/bin or not).
    let path = tempfile::tempdir().unwrap();
    for tool in ["id", "dirname"] {
        let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists()).unwrap();
        std::os::unix::fs::symlink(found, path.path().join(tool)).unwrap();
    }
    let out = Command::new("/bin/sh")
        .arg(repo("install.sh"))
        .env("PATH", path.path())
        .env("PADDOCK_BIN", "/nonexistent/paddock")
        .env("DESTDIR", "/nonexistent-destdir")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("root has no cargo: run ./install.sh as yourself"), "{said}");
    assert!(!Path::new("/nonexistent-destdir").exists());
}

/// packaging/build-release links the release binary with the lld of Rust's
/// toolchain and hands it packaging/paddock.order, the functions one
/// `paddock run` executes, to lay out first: its flags name an ld.lld that
/// runs, and the list is one of function names, the executable's entry and
/// paddock's own among them. (The layout's effect is measured, not tested:
/// bench/PROFILE.md.)
#[test]
fn the_release_build_links_with_lld_and_the_functions_a_run_executes_listed() {
    let out = Command::new(repo("packaging/build-release")).arg("--linker").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let flags = String::from_utf8(out.stdout).unwrap();
    assert!(
        flags.contains("-C link-arg=-fuse-ld=lld"),
        "build-release would link without lld (is there no gcc-ld/ld.lld in Rust's toolchain?): {flags:?}"
    );
    let dir = flags.split_whitespace().find_map(|f| f.strip_prefix("link-arg=-B")).expect("a -B directory for ld.lld");
    let version = Command::new(Path::new(dir).join("ld.lld")).arg("--version").output().unwrap();
    assert!(
        version.status.success() && String::from_utf8_lossy(&version.stdout).contains("LLD"),
        "{dir}/ld.lld --version: {}",
        String::from_utf8_lossy(&version.stderr)
    );

    let order = read(&repo("packaging/paddock.order"));
    let names: Vec<&str> = order.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(names.len() > 500, "packaging/paddock.order lists only {} functions", names.len());
    let bad: Vec<&&str> = names.iter().filter(|n| n.is_empty() || n.contains(char::is_whitespace)).collect();
    assert!(bad.is_empty(), "not function names: {bad:?}");
    let unique: std::collections::BTreeSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a function is listed twice");
    assert!(names.contains(&"_start_c"), "the executable's entry (musl's _start_c) is not listed");
    assert!(names.iter().any(|n| n.starts_with("_ZN7paddock")), "none of paddock's own functions is listed");
}

/// What packaging/build-release hands cargo (a stand-in `cargo` records its
/// arguments): `cargo rustc` for the binary alone, the caller's arguments,
/// then lld and the order file, as a copy named by its content in the target
/// directory; and on stdout nothing but the binary's path.
#[test]
fn the_release_build_passes_lld_and_the_order_file_to_cargo() {
    let tools = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let recorded = tools.path().join("args");
    let cargo = tools.path().join("cargo");
    std::fs::write(&cargo, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", recorded.display())).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        std::iter::once(tools.path().to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = Command::new(repo("packaging/build-release"))
        .args(["--quiet", "--features", ""])
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let tuple =
        String::from_utf8(Command::new(repo("packaging/build-release")).arg("--tuple").output().unwrap().stdout)
            .unwrap();
    let bin = target.path().join(tuple.trim()).join("release/paddock");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", bin.display()), "stdout: the path alone");

    let args = read(&recorded);
    let args: Vec<&str> = args.lines().collect();
    let split = args.iter().position(|a| *a == "--").expect("rustc's arguments after --");
    let (cargo_args, rustc_args) = (&args[..split], &args[split + 1..]);
    for expected in ["rustc", "--release", "--locked", "--bin", "paddock", "--quiet", "--features"] {
        assert!(cargo_args.contains(&expected), "{expected} not passed to cargo: {cargo_args:?}");
    }
    assert!(rustc_args.contains(&"link-arg=-fuse-ld=lld"), "not linked with lld: {rustc_args:?}");
    // CI's musl tests link with what --linker prints: the same flags.
    let linker = Command::new(repo("packaging/build-release")).arg("--linker").output().unwrap();
    let linker = String::from_utf8(linker.stdout).unwrap();
    let linker: Vec<&str> = linker.split_whitespace().collect();
    assert_eq!(rustc_args[..linker.len()], linker[..], "--linker prints other flags than the build uses");
    if cfg!(target_arch = "x86_64") {
        let order = rustc_args
            .iter()
            .find_map(|a| a.strip_prefix("link-arg=-Wl,--symbol-ordering-file="))
            .unwrap_or_else(|| panic!("no order file: {rustc_args:?}"));
        assert!(Path::new(order).starts_with(target.path().join("paddock-order")), "{order}");
        assert_eq!(read(Path::new(order)), read(&repo("packaging/paddock.order")), "the copy is the list");
        let left: Vec<_> = std::fs::read_dir(target.path().join("paddock-order"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// The musl binary's entry (src/entry.rs) asks the kernel for the pages
/// musl's relocation writes, and for the stack's first 64 KiB, in one call
/// each: `paddock --version` takes at least 100 page faults fewer than the
/// same executable entered at musl's `_start` (its ELF header's entry set
/// back), counted by the kernel's page-fault event, which counts traps,
/// not the pages asked for.
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
#[test]
fn the_musl_binary_asks_for_its_relocated_pages_in_one_call() {
    require("nm");
    let symbols = Command::new("nm").arg(BIN).output().unwrap();
    assert!(symbols.status.success(), "nm {BIN}: {}", String::from_utf8_lossy(&symbols.stderr));
    let symbols = String::from_utf8(symbols.stdout).unwrap();
    let address = |name: &str| {
        let line = symbols.lines().find(|l| l.split_whitespace().nth(2) == Some(name));
        let line = line.unwrap_or_else(|| panic!("{BIN} has no symbol {name}"));
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    };
    let image = std::fs::read(BIN).unwrap();
    let entry = u64::from_le_bytes(image[0x18..0x20].try_into().unwrap());
    assert_eq!(entry, address("paddock_start"), "the binary's entry is not paddock_start (build.rs's link argument)");
    let dir = tempfile::tempdir().unwrap();
    let at_start = dir.path().join("paddock");
    let mut changed = image.clone();
    changed[0x18..0x20].copy_from_slice(&address("_start").to_le_bytes());
    std::fs::write(&at_start, changed).unwrap();
    std::fs::set_permissions(&at_start, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The least of three runs each, alternated: the counter also counts
    // this thread's own faults, more in its first spawn than later.
    let (mut ours, mut musls) = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        ours = ours.min(faults(Path::new(BIN)));
        musls = musls.min(faults(&at_start));
    }
    assert!(musls >= ours + 100, "entered at paddock_start, {ours} page faults; at musl's _start, {musls}");
}

/// The page faults (traps) of one `BIN --version`, by a software event
/// counter this thread opens (counting its own too), which the child
/// inherits and hands back at its exit.
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
fn faults(bin: &Path) -> u64 {
    // perf_event_attr as of its first version (64 bytes).
    #[repr(C)]
    struct Attr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
    const INHERIT: u64 = 1 << 1;
    let attr = Attr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<Attr>() as u32,
        config: PERF_COUNT_SW_PAGE_FAULTS,
        sample_period: 0,
        sample_type: 0,
        read_format: 0,
        flags: INHERIT,
        wakeup_events: 0,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it says; this
    // thread (0), any CPU (-1), no group (-1), no flags.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &attr, 0, -1, -1, 0) };
    assert!(fd >= 0, "perf_event_open (a page-fault counter): {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor the call above just opened, owned here alone.
    let counter = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let before = read_counter(&counter);
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success(), "{} --version: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    read_counter(&counter) - before
}

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
fn read_counter(counter: &std::fs::File) -> u64 {
    let mut value = [0u8; 8];
    std::io::Read::read_exact(&mut &*counter, &mut value).unwrap();
    u64::from_le_bytes(value)
}
