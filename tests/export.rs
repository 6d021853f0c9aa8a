//! `paddock export kubernetes` through the real binary: every example
//! exports to objects the Kubernetes OpenAPI schemas accept (checked
//! offline by `kubernetes-validate`, which .ci/run installs) and that pass
//! the Pod Security Standards level they claim (checked by the tests'
//! own checker, tests/common/pss.rs), and each example's list of what it
//! cannot say. Its errors and flags are tests/export_cli.rs.

mod common;

use common::export::{IMAGE, export, root, validate_offline};
use paddock::export::{Level, Unsupported, Violation};
use paddock::model::Signal;
use serde_json::Value;

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn level_named(name: &str) -> Level {
    match name {
        "privileged" => Level::Privileged,
        "baseline" => Level::Baseline,
        "restricted" => Level::Restricted,
        other => panic!("{other} is no level"),
    }
}

/// Exports, validates offline, and checks each workload's claim with
/// `pss_level`; returns each workload's claimed level.
fn export_and_check(args: &[&str]) -> Vec<(String, Level)> {
    let run = export(args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    validate_offline(&run.stdout);
    let docs = documents(&run.stdout);
    assert_eq!(docs[0]["kind"], "Namespace", "the namespace comes first");
    let enforced = level_named(docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str().unwrap());
    let mut claims = Vec::new();
    for d in &docs[1..] {
        let spec = match d["kind"].as_str().unwrap() {
            "Pod" => &d["spec"],
            "Deployment" => &d["spec"]["template"]["spec"],
            _ => continue,
        };
        let name = d["metadata"]["name"].as_str().unwrap().to_owned();
        let claimed = level_named(d["metadata"]["annotations"]["paddock/pod-security"].as_str().unwrap());
        let passes = common::pss::pss_level(spec);
        assert!(passes >= claimed, "{name} claims {claimed} and passes only {passes}");
        assert!(enforced <= claimed, "the namespace enforces {enforced}, stricter than {name}'s {claimed}");
        claims.push((name, claimed));
    }
    let least = claims.iter().map(|(_, l)| *l).min().unwrap();
    assert_eq!(enforced, least, "the namespace enforces the least strict claim");
    claims
}

#[test]
fn every_example_exports_to_valid_objects_at_the_level_they_claim() {
    let expected = [
        ("api", Level::Privileged),
        ("nightly-report", Level::Baseline),
        ("web", Level::Privileged),
        ("worker", Level::Privileged),
    ];
    for kind in ["pod", "deployment"] {
        let claims = export_and_check(&["examples/workloads", "--kind", kind, "--image", IMAGE]);
        let claims: Vec<(&str, Level)> = claims.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        assert_eq!(claims, expected, "--kind {kind}");
    }
    // api passes paddock's restricted policy: what PSS restricted wants
    // beyond it is listed, and the claim is what the pod passes.
    let claims = export_and_check(&["examples/workloads/api.toml", "--policy", "restricted", "--image", IMAGE]);
    assert_eq!(claims, [("api".to_owned(), Level::Privileged)]);
}

#[test]
fn a_restricted_workload_claims_restricted_and_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = "command = [\"/app\"]\nuser = 1000\ngroup = 1000\n[resources]\nmemory = \"64MiB\"\npids = 16\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n[health]\nhttp = { port = 8080 }\n[stop]\nsignal = \"SIGINT\"\ntimeout = \"1.5s\"\n";
    std::fs::write(dir.path().join("app.toml"), text).unwrap();
    std::fs::write(dir.path().join("edge.toml"), "command = [\"/edge\"]\nports = [\"127.0.0.1:8443:443\"]\nafter = [\"app\"]\n[resources]\nmemory = \"32MiB\"\npids = 8\n[health]\ncommand = [\"/bin/true\"]\nstart_period = \"20s\"\non_unhealthy = \"mark\"\n").unwrap();
    let path = dir.path().display().to_string();
    for kind in ["pod", "deployment"] {
        let claims = export_and_check(&[&path, "--policy", "restricted", "--kind", kind, "--image", IMAGE]);
        // edge runs as root: restricted in paddock, baseline in Kubernetes.
        assert_eq!(
            claims,
            [("app".to_owned(), Level::Restricted), ("edge".to_owned(), Level::Baseline)],
            "--kind {kind}"
        );
    }
    let claims = export_and_check(&[&path, "--image", IMAGE]);
    assert_eq!(claims, [("app".to_owned(), Level::Baseline), ("edge".to_owned(), Level::Baseline)]);
}

/// What each example cannot say in Kubernetes, item by item.
#[test]
fn each_examples_unsupported_list() {
    use Unsupported as U;
    let read = |name: &str| std::fs::read_to_string(root().join("examples/workloads").join(name)).unwrap();
    let items = |policies: &[&str], file: &str| {
        let checked = common::check(policies, file, &read(file));
        let options = paddock::export::Options {
            kind: paddock::export::Kind::Pod,
            namespace: "paddock".into(),
            policy_level: Level::of_policies(policies.iter().copied()),
            shared_slice: false,
        };
        paddock::export::export(&checked.spec.unwrap(), &IMAGE.parse().unwrap(), &options).unsupported
    };
    let rootfs = U::Rootfs { path: "/".into(), image: IMAGE.into() };
    let backoff = |b: &str, m: &str, r: &str| U::Backoff {
        backoff: b.parse().unwrap(),
        backoff_max: m.parse().unwrap(),
        reset_after: r.parse().unwrap(),
    };
    let pss = |claimed, violation| {
        let keys = match &violation {
            Violation::HostPath { .. } => vec!["/mounts/0/source".to_owned()],
            _ => vec!["/user".to_owned()],
        };
        U::Pss { claimed, violation, keys }
    };
    let host_path = |p: &str| Violation::HostPath { path: p.into(), volume: "mount-0".into() };
    let not_idmapped = |p: &str| U::NotIdmapped { source: p.into(), writable: false, mount: 0 };
    let closed = U::NetworkPolicy { bridge: false };
    assert_eq!(
        items(&["baseline"], "api.toml"),
        [
            rootfs.clone(),
            U::UserNamespaces,
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            U::PidsLimit(32),
            backoff("100ms", "30s", "1m"),
            pss(Level::Baseline, host_path("/usr/share/doc")),
            closed.clone(),
        ]
    );
    assert_eq!(
        items(&["restricted"], "api.toml"),
        [
            rootfs.clone(),
            U::UserNamespaces,
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            U::PidsLimit(32),
            backoff("100ms", "30s", "1m"),
            pss(Level::Restricted, host_path("/usr/share/doc")),
            pss(Level::Restricted, Violation::RunAsRoot),
            pss(Level::Restricted, Violation::CapabilitiesNotDropped),
            closed.clone(),
        ]
    );
    assert_eq!(items(&["baseline"], "nightly-report.toml"), [rootfs.clone(), U::UserNamespaces, closed.clone()]);
    assert_eq!(
        items(&["baseline"], "web.toml"),
        [
            rootfs.clone(),
            U::UserNamespaces,
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            backoff("200ms", "10s", "1m"),
            pss(Level::Baseline, host_path("/usr/share/doc")),
            U::Published("8080:80".parse().unwrap()),
            U::NetworkPolicy { bridge: true },
        ]
    );
    assert_eq!(
        items(&["baseline"], "worker.toml"),
        [
            rootfs,
            U::UserNamespaces,
            not_idmapped("/usr/share/common-licenses"),
            U::MountFlags,
            U::PidsLimit(64),
            U::Nofile(1024),
            U::StopSignal(Signal::Int),
            backoff("100ms", "30s", "5m"),
            U::MaxRetries(5),
            pss(Level::Baseline, host_path("/usr/share/common-licenses")),
            closed,
        ]
    );
}

#[test]
fn the_list_is_at_the_top_of_the_object_and_on_stderr_naming_file_and_workload() {
    let run = export(&["examples/workloads/worker.toml", "--image", IMAGE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pod = run.stdout.split("---\n").find(|d| d.contains("kind: Pod")).unwrap();
    let comments: Vec<&str> = pod.lines().take_while(|l| l.starts_with('#')).collect();
    let items: Vec<&str> =
        comments.iter().filter_map(|l| l.strip_prefix("# paddock: not expressible in Kubernetes: ")).collect();
    assert_eq!(items.len(), 11, "{pod}");
    // On stderr each says where the manifest says it (FILE:LINE), when one key does.
    let stderr: Vec<(&str, &str)> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("examples/workloads/worker.toml"))
        .filter_map(|l| l.split_once(": worker: not expressible in Kubernetes: "))
        .collect();
    assert_eq!(stderr.iter().map(|(_, item)| *item).collect::<Vec<_>>(), items, "{}", run.stderr);
    let text = std::fs::read_to_string("examples/workloads/worker.toml").unwrap();
    let line_of = |start: &str| format!(":{}", text.lines().position(|l| l.starts_with(start)).unwrap() + 1);
    let at = |item: &str| stderr.iter().find(|(_, i)| i.starts_with(item)).map(|(at, _)| *at);
    assert_eq!(at("resources.pids = 64"), Some(line_of("pids = 64").as_str()), "{}", run.stderr);
    assert_eq!(at("restart.max_retries = 5"), Some(line_of("max_retries").as_str()));
    assert_eq!(at("mount \"/usr/share/common-licenses\""), Some(line_of("source = \"/usr/share").as_str()));
    // The first written of the backoff's keys.
    assert_eq!(at("restart backoff"), Some(line_of("reset_after").as_str()));
    // A Pod Security Standards item, at the key that breaks the rule.
    assert_eq!(at("the policy passed"), Some(line_of("source = \"/usr/share").as_str()), "{}", run.stderr);
    // Not written (the host's / is the default root): the file alone.
    assert_eq!(at("rootfs.path"), Some(""));
}

/// Each Pod Security Standards item names the manifest's key that breaks
/// the rule, and the line that says it where one does (a default, the
/// file alone).
#[test]
fn each_pod_security_item_names_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    let restricted = |user: &str| {
        let manifest = format!(
            "command = [\"/app\"]\n{user}[[mounts]]\nsource = \"/usr/share/doc\"\ntarget = \"/a\"\n\
             [[mounts]]\nsource = \"/usr/share/doc\"\ntarget = \"/b\"\n[resources]\nmemory = \"64MiB\"\npids = 8\n"
        );
        std::fs::write(&file, manifest).unwrap();
        let run = export(&[file.to_str().unwrap(), "--image", IMAGE, "--policy", "restricted"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let items: Vec<(String, String)> = run
            .stderr
            .lines()
            .filter_map(|l| l.split_once(": web: not expressible in Kubernetes: the policy passed stands for the "))
            .map(|(at, item)| (at.rsplit_once("web.toml").unwrap().1.to_owned(), item.to_owned()))
            .collect();
        let pod = run.stdout.split("---\n").find(|d| d.contains("kind: Pod")).unwrap().to_owned();
        (items, pod)
    };
    let (items, pod) = restricted("user = 0\n");
    let at: Vec<(&str, &str)> =
        items.iter().map(|(at, item)| (at.as_str(), item.split_once(": ").unwrap().1)).collect();
    assert_eq!(
        at,
        [
            (
                ":4",
                "a hostPath volume (\"/usr/share/doc\") (from `mounts[0].source`); the namespace is labelled with the level it passes"
            ),
            (
                ":7",
                "a hostPath volume (\"/usr/share/doc\") (from `mounts[1].source`); the namespace is labelled with the level it passes"
            ),
            (
                ":2",
                "runAsNonRoot is not true (the container runs as uid 0, remapped under hostUsers: false, which restricted does not count) (from `user`); the namespace is labelled with the level it passes"
            ),
            (
                ":2",
                "capabilities are not dropped (drop: [ALL]); paddock kept the runtime's default set (from `user`); the namespace is labelled with the level it passes"
            ),
        ],
        "{items:?}"
    );
    // The object's comments name the key too.
    assert!(
        pod.contains("which this pod breaks: a hostPath volume (\"/usr/share/doc\") (from `mounts[1].source`)"),
        "{pod}"
    );
    // user not written: its items name the key, and the file alone.
    let (items, _) = restricted("");
    let lines: Vec<&str> = items.iter().map(|(at, _)| at.as_str()).collect();
    assert_eq!(lines, [":3", ":6", "", ""], "{items:?}");
    assert!(items[2].1.ends_with("(from `user`); the namespace is labelled with the level it passes"), "{items:?}");
}

/// Two mounts of one source are each listed at their own line, and a
/// default (a table written, its key not) at none.
#[test]
fn each_mount_is_listed_at_its_own_line_and_a_default_at_none() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "command = [\"/bin/true\"]\n\
        [[mounts]]\nsource = \"/usr/share/doc\"\ntarget = \"/a\"\n\
        [[mounts]]\nsource = \"/usr/share/doc\"\ntarget = \"/b\"\n\
        [restart]\nreset_after = \"1m\"\n\
        [resources]\npids = 8\n\
        [[mounts]]\nsource = \"/srv/paddock-test-no-such-source\"\ntarget = \"/c\"\n";
    let file = dir.path().join("web.toml");
    std::fs::write(&file, manifest).unwrap();
    let run = export(&[file.to_str().unwrap(), "--image", IMAGE, "--kind", "deployment"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let at = |item: &str| -> Vec<String> {
        run.stderr
            .lines()
            .filter(|l| l.contains(item))
            .map(|l| l.split_once(": web: ").unwrap().0.rsplit_once("web.toml").unwrap().1.to_owned())
            .collect()
    };
    assert_eq!(at("is not idmapped"), [":3", ":6", ":13"], "{}", run.stderr);
    // The restart policy is not written (a Deployment restarts even its
    // default, on-failure): no line, though [restart] is.
    assert_eq!(at("restart.policy"), [""], "{}", run.stderr);
    assert_eq!(at("restart backoff"), [":9"], "{}", run.stderr);
    assert_eq!(at("resources.pids"), [":11"], "{}", run.stderr);
    assert_eq!(at("is no directory, file, socket or device on this host"), [":13"], "{}", run.stderr);
}

/// paddock closes each workload's network; a cluster does so only where
/// its network plugin enforces NetworkPolicy, and takes the policy without
/// a word where none does. So the policy is written, and what it needs is
/// listed, at the key that chose the network.
#[test]
fn the_network_policy_is_written_and_what_it_needs_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        ("private", ""),
        ("bridged", "ports = [\"8080:80\"]\n"),
        ("closed", "[namespaces]\nnetwork = \"private\"\n"),
        ("host", "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\n"),
    ];
    for (name, extra) in manifests {
        std::fs::write(dir.path().join(format!("{name}.toml")), format!("command = [\"/bin/app\"]\n{extra}")).unwrap();
    }
    let run = export(&[dir.path().to_str().unwrap(), "--image", IMAGE, "--policy", "privileged"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let policies: Vec<&str> = run
        .stdout
        .split("---\n")
        .filter(|d| d.contains("kind: NetworkPolicy"))
        .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("  name: ")))
        .collect();
    assert_eq!(policies, ["bridged", "closed", "private"], "{}", run.stdout);
    let listed = |name: &str| -> Vec<String> {
        run.stderr
            .lines()
            .filter(|l| {
                l.contains(&format!(": {name}: not expressible in Kubernetes: ")) && l.contains("NetworkPolicy")
            })
            .map(|l| l.split_once(&format!(": {name}: ")).unwrap().0.rsplit_once(".toml").unwrap().1.to_owned())
            .collect()
    };
    // The default, not written: the file alone; the ports that imply the bridge, at their line.
    assert_eq!(listed("private"), [""], "{}", run.stderr);
    assert_eq!(listed("closed"), [":3"], "{}", run.stderr);
    assert_eq!(listed("bridged"), [":2"], "{}", run.stderr);
    // The node's network: no policy, as paddock kept none, and nothing to list.
    assert!(listed("host").is_empty(), "{}", run.stderr);
    assert!(run.stderr.contains("only a network plugin that enforces NetworkPolicy keeps it"), "{}", run.stderr);
}

/// Every kind of setting the mapping has a branch for, in manifests only
/// the privileged policy lets through: still valid objects, at the level
/// they claim, with nothing the issue names missing from the list.
#[test]
fn what_only_the_privileged_policy_allows_exports_valid_objects_too() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        ("priv", "[security]\nprivileged = true\n"),
        (
            "host",
            "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\npid = \"host\"\n[security]\ncapabilities = [\"SYS_ADMIN\"]\nseccomp = \"unconfined\"\nno_new_privileges = false\n",
        ),
        ("hostnet", "[namespaces]\nnetwork = \"host\"\n"),
        (
            "rw",
            "user = 1000\n[security]\nno_new_privileges = false\ncapabilities = [\"NET_RAW\"]\n[[mounts]]\nsource = \"/srv/data\"\ntarget = \"/data\"\nreadonly = false\nsetuid = true\ndevices = true\n",
        ),
        (
            "probes",
            "ports = [\"127.0.0.1:5353:53/udp\", \"8443:443/sctp\", \"8080:80\"]\nafter = [\"priv\"]\n[health]\nhttp = { port = 80, path = \"/h\" }\nstart_period = \"5s\"\n[resources]\ncpu = 0.25\nnofile = 64\n",
        ),
        (
            "marked",
            "hostname = \"Not.A.Label\"\n[health]\ncommand = [\"/bin/true\"]\non_unhealthy = \"mark\"\ninterval = \"500ms\"\n[stop]\nsignal = \"SIGUSR1\"\ntimeout = \"0ms\"\n",
        ),
        ("tcp", "[health]\ntcp = 80\n[restart]\npolicy = \"never\"\n"),
    ];
    for (name, extra) in manifests {
        std::fs::write(dir.path().join(format!("{name}.toml")), format!("command = [\"/bin/app\"]\n{extra}")).unwrap();
    }
    let path = dir.path().display().to_string();
    for kind in ["pod", "deployment"] {
        let claims = export_and_check(&[&path, "--policy", "privileged", "--kind", kind, "--image", IMAGE]);
        assert_eq!(claims.len(), manifests.len(), "--kind {kind}");
        assert!(claims.iter().all(|(_, l)| *l == Level::Privileged), "{claims:?}");
    }
    let run = export(&[&path, "--policy", "privileged", "--image", IMAGE]);
    for said in [
        "resources.nofile = 64",
        "after = [\"priv\"]",
        "127.0.0.1:5353:53/udp is published on one host address",
        "namespaces.network = \"host\" with a remapped root",
        "mount \"/srv/data\" is not idmapped",
        "stop.signal = \"SIGUSR1\"",
        "hostname = \"Not.A.Label\"",
        "health.interval = \"500ms\"",
    ] {
        assert!(run.stderr.contains(said), "{said} not listed:\n{}", run.stderr);
    }
}

/// README's example of `export`, output included, is what the command says.
#[test]
fn the_readmes_example_is_what_export_writes() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let prompt = "$ paddock export kubernetes ";
    let start = readme.find(prompt).expect("README shows an export");
    let block = &readme[start..readme[start..].find("\n```").map(|end| start + end).unwrap()];
    let (command, shown) = block.split_once('\n').unwrap();
    let args: Vec<&str> = command[prompt.len()..].split(' ').collect();
    let run = export(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(format!("{}{}", run.stdout, run.stderr), format!("{shown}\n"));
}

/// Text a user writes reaches the YAML's comments (a mount source, the
/// file's path): a line break there, of any kind YAML knows, would end the
/// comment and let the rest be read as objects of the stream.
#[test]
fn line_breaks_in_a_path_or_a_value_never_leave_their_comment() {
    let dir = tempfile::tempdir().unwrap();
    let inject = |kind: &str, brk: &str| {
        format!("{brk}--- {{apiVersion: v1, kind: {kind}, metadata: {{name: x}}}}{brk}---{brk}#")
    };
    // The directory's name is in the header comment, the mount source in two items.
    let host = dir.path().join(format!("hosts{}", inject("ConfigMap", "\u{2028}")));
    std::fs::create_dir(&host).unwrap();
    let source = format!("/srv/x{}\u{1b}[2K{}", inject("Secret", "\r"), inject("ServiceAccount", "\u{85}"));
    let manifest = format!(
        "command = [\"/bin/sh\", \"-c\", \"a\\u2029--- b\\r\\n--- c\"]\nenv = {{ A = \"x\\u0085--- {{kind: Y}}\" }}\n[[mounts]]\nsource = \"{source}\"\ntarget = \"/x\"\n",
        source = source.replace('\r', "\\r").replace('\u{1b}', "\\u001b").replace('\u{85}', "\\u0085"),
    );
    std::fs::write(host.join("web.toml"), manifest).unwrap();
    let run = export(&[host.to_str().unwrap(), "--image", IMAGE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let kinds: Vec<Value> = documents(&run.stdout).iter().map(|d| d["kind"].clone()).collect();
    assert_eq!(kinds, ["Namespace", "Pod", "NetworkPolicy"], "{}", run.stdout);
    for brk in ['\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{1b}'] {
        assert!(!run.stdout.contains(brk), "{brk:?} in\n{}", run.stdout);
        assert!(!run.stderr.contains(brk), "{brk:?} on stderr\n{}", run.stderr);
    }
    // Every line of stderr is one item of one file, as on any run.
    assert!(
        run.stderr.lines().all(|l| {
            l.contains("/web.toml")
                && l.split_once("/web.toml")
                    .unwrap()
                    .1
                    .split_once(": web: not expressible in Kubernetes: ")
                    .is_some_and(|(at, _)| {
                        at.is_empty() || at.strip_prefix(':').is_some_and(|n| n.parse::<u32>().is_ok())
                    })
        }),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("# paddock: not expressible in Kubernetes: mount \"/srv/x\\r--- "), "{}", run.stdout);
    // PyYAML, a YAML 1.1 parser, reads U+2028 as a line break: it sees the same three objects.
    validate_offline(&run.stdout);
}

/// A multi-line argument (a script) and a health check's are written as
/// blocks and left as they are: a line in them that reads as `key: on` or
/// `- y` is the script's, not the YAML's, and gets no quotes (it did when
/// the block was a sequence's item, `- |`: `echo mode: 'on'`).
#[test]
fn multi_line_arguments_are_exported_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let script = "set -e\necho mode: on\n- y\nexec sleep 1\n";
    let check = "grep -q 'state: on' /tmp/s\necho ready: yes\n";
    let manifest =
        format!("command = [\"/bin/sh\", \"-c\", {script:?}]\n[health]\ncommand = [\"/bin/sh\", \"-c\", {check:?}]\n");
    std::fs::write(dir.path().join("script.toml"), manifest).unwrap();
    for kind in ["pod", "deployment"] {
        let run = export(&[dir.path().to_str().unwrap(), "--image", IMAGE, "--kind", kind]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let docs = documents(&run.stdout);
        let object = docs.iter().find(|d| d["kind"] == "Pod" || d["kind"] == "Deployment").unwrap();
        let spec = if kind == "pod" { &object["spec"] } else { &object["spec"]["template"]["spec"] };
        let container = &spec["containers"][0];
        assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-c", script]), "{}", run.stdout);
        assert_eq!(container["livenessProbe"]["exec"]["command"][2], check, "{}", run.stdout);
    }
}

/// Strings a YAML 1.1 reader takes for something else (kubectl's go-yaml
/// v2 reads `on`, `yes`, `y` as booleans; PyYAML, kubernetes-validate's,
/// also `1_000` as a number, `2001-12-14` as a date) are quoted: each
/// reads back as the string it was, in a name, a label, an argument and
/// an environment value.
#[test]
fn strings_a_yaml_1_1_reader_would_take_for_booleans_numbers_or_dates_are_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let tricky = ["yes", "No", "on", "OFF", "y", "n", "~", "=", "1_000", "2001-12-14", "1:20", "0x_1F", "+.5", "0b101"];
    let args: Vec<String> = tricky.iter().map(|t| format!("{t:?}")).collect();
    let env: Vec<String> = tricky.iter().enumerate().map(|(i, t)| format!("V{i} = {t:?}")).collect();
    let manifest = format!("command = [\"/bin/app\", {}]\n[env]\n{}\n", args.join(", "), env.join("\n"));
    for name in ["on", "no", "y"] {
        std::fs::write(dir.path().join(format!("{name}.toml")), &manifest).unwrap();
    }
    let run = export(&[dir.path().to_str().unwrap(), "--image", IMAGE, "--namespace", "yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    validate_offline(&run.stdout);
    // Read back by PyYAML (YAML 1.1), as JSON.
    let python = common::export::kubernetes_validate().with_file_name("python");
    let read = std::process::Command::new(&python)
        .args(["-c", "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin)), default=repr))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(run.stdout.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let docs: Vec<Value> = serde_json::from_slice(&read.stdout).unwrap();
    let pods: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 3, "{}", run.stdout);
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().expect("the name reads as a string");
        assert!(["on", "no", "y"].contains(&name), "{name}");
        assert_eq!(pod["metadata"]["namespace"], "yes");
        assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/name"], name);
        let container = &pod["spec"]["containers"][0];
        let command: Vec<&str> = container["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(command[1..], tricky, "{}", run.stdout);
        for (i, t) in tricky.iter().enumerate() {
            let value = container["env"].as_array().unwrap().iter().find(|e| e["name"] == format!("V{i}")).unwrap();
            assert_eq!(value["value"], *t, "{}", run.stdout);
        }
    }
}
