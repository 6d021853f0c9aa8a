//! `paddock export kubernetes` through the real binary: every example
//! exports to objects the Kubernetes OpenAPI schemas accept (checked
//! offline by `kubernetes-validate`, which .ci/run installs) and that pass
//! the Pod Security Standards level they claim (checked by the tests'
//! own checker, tests/common/pss.rs), each example's list of what it cannot say, and errors.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use paddock::export::{Level, Unsupported, Violation};
use paddock::model::Signal;
use serde_json::Value;

const IMAGE: &str = "docker.io/library/busybox:1.37";
/// The version the objects are written for (paddock::export::KUBERNETES_VERSION).
const KUBERNETES: &str = "1.35.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn export(args: &[&str]) -> Run {
    let out = Command::cargo_bin("paddock")
        .unwrap()
        .current_dir(root())
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(30))
        .args(["export", "kubernetes"])
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `kubernetes-validate`: $PADDOCK_KUBERNETES_VALIDATE, .ci/run's venv, or PATH.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("PADDOCK_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/opt/paddock-ci/venv/bin/kubernetes-validate")])
        .chain(std::env::split_paths(&path).map(|d| d.join("kubernetes-validate")));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "kubernetes-validate is needed to check exported objects against the Kubernetes OpenAPI schemas and was not found \
         ($PADDOCK_KUBERNETES_VALIDATE, /opt/paddock-ci/venv/bin, PATH): run .ci/run, or \
         `python3 -m venv /opt/paddock-ci/venv && /opt/paddock-ci/venv/bin/pip install kubernetes-validate`"
    );
}

fn validate_offline(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate refused the export:\n{said}\n{yaml}");
    let documents = yaml.matches("\n---\n").count() + 1;
    assert_eq!(said.matches(" passed for resource ").count(), documents, "every object validated: {said}");
}

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
        paddock::export::export(&checked.spec.unwrap(), IMAGE, &options).unsupported
    };
    let rootfs = U::Rootfs { path: "/".into(), image: IMAGE.into() };
    let backoff = |b: &str, m: &str, r: &str| U::Backoff {
        backoff: b.parse().unwrap(),
        backoff_max: m.parse().unwrap(),
        reset_after: r.parse().unwrap(),
    };
    let pss = |claimed, violation| U::Pss { claimed, violation };
    let host_path = |p: &str| Violation::HostPath(p.into());
    let not_idmapped = |p: &str| U::NotIdmapped { source: p.into(), writable: false };
    assert_eq!(
        items(&["baseline"], "api.toml"),
        [
            rootfs.clone(),
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            U::PidsLimit(32),
            backoff("100ms", "30s", "1m"),
            pss(Level::Baseline, host_path("/usr/share/doc")),
        ]
    );
    assert_eq!(
        items(&["restricted"], "api.toml"),
        [
            rootfs.clone(),
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            U::PidsLimit(32),
            backoff("100ms", "30s", "1m"),
            pss(Level::Restricted, host_path("/usr/share/doc")),
            pss(Level::Restricted, Violation::RunAsRoot),
            pss(Level::Restricted, Violation::CapabilitiesNotDropped),
        ]
    );
    assert_eq!(items(&["baseline"], "nightly-report.toml"), std::slice::from_ref(&rootfs));
    assert_eq!(
        items(&["baseline"], "web.toml"),
        [
            rootfs.clone(),
            not_idmapped("/usr/share/doc"),
            U::MountFlags,
            backoff("200ms", "10s", "1m"),
            pss(Level::Baseline, host_path("/usr/share/doc")),
            U::Published("8080:80".parse().unwrap()),
        ]
    );
    assert_eq!(
        items(&["baseline"], "worker.toml"),
        [
            rootfs,
            not_idmapped("/usr/share/common-licenses"),
            U::MountFlags,
            U::PidsLimit(64),
            U::Nofile(1024),
            U::StopSignal(Signal::Int),
            backoff("100ms", "30s", "5m"),
            U::MaxRetries(5),
            pss(Level::Baseline, host_path("/usr/share/common-licenses")),
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
    assert_eq!(items.len(), 9, "{pod}");
    let stderr: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("examples/workloads/worker.toml: worker: not expressible in Kubernetes: "))
        .collect();
    assert_eq!(stderr, items, "{}", run.stderr);
    assert!(items.iter().any(|i| i.starts_with("resources.pids = 64")), "{items:?}");
}

#[test]
fn no_image_names_the_flags_and_writes_nothing() {
    let run = export(&["examples/workloads"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(
        run.stderr.contains("no image for api, nightly-report, web, worker")
            && run.stderr.contains("--image IMAGE")
            && run.stderr.contains("--image-map FILE"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_image_map_gives_each_workload_its_image_and_refuses_what_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("images.toml");
    let map_arg = map.display().to_string();
    std::fs::write(&map, "web = \"nginx:1.27\"\nworker = \"busybox:1.37\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "examples/workloads/worker.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("image: nginx:1.27") && run.stdout.contains("image: busybox:1.37"));
    // A workload the map lacks.
    let run = export(&["examples/workloads", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.contains("no image for api, nightly-report"), "{}", run.stderr);
    // Names of other workloads are left alone: one map serves every host's directory.
    std::fs::write(&map, "web = \"nginx\"\ndb = \"postgres:17\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("image: nginx") && !run.stdout.contains("postgres"), "{}", run.stdout);
    // A misspelt name leaves its workload with no image, and is pointed at.
    std::fs::write(&map, "wbe = \"nginx\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(
        run.stderr.contains("no image for web")
            && run.stderr.contains(&format!("({map_arg} names no workload of the PATHs: wbe)")),
        "{}",
        run.stderr
    );
    // Not TOML of strings.
    std::fs::write(&map, "web = 3\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not an image map (TOML lines of WORKLOAD = \"IMAGE\")"), "{}", run.stderr);
    let run = export(&["examples/workloads/web.toml", "--image-map", "/nonexistent/images.toml"]);
    assert!(
        run.code == 2 && run.stderr.contains("cannot read the image map /nonexistent/images.toml"),
        "{}",
        run.stderr
    );
    // One or the other.
    let run = export(&["examples/workloads/web.toml", "--image", IMAGE, "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    let run = export(&["examples/workloads/web.toml", "--image", "has space"]);
    assert!(run.code == 2 && run.stderr.contains("is empty or has spaces"), "{}", run.stderr);
}

#[test]
fn an_invalid_manifest_is_reported_as_check_reports_it_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), "command = [\"/good\"]\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "command = [\"x\"]\n[namespaces]\nnetwork = \"host\"\n").unwrap();
    let run = export(&[&dir.path().display().to_string(), "--image", IMAGE]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let expected = format!(
        "{}:3:11: error: policy baseline refuses this: `namespaces.network = \"host\"` is not allowed",
        bad.display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stdout.contains("name: good") && !run.stdout.contains("name: bad"), "{}", run.stdout);
    validate_offline(&run.stdout);
    // Bad input of every kind never panics: not UTF-8, a directory named x.toml, a syntax error.
    std::fs::write(dir.path().join("bytes.toml"), b"command = [\"\xff\"]\n").unwrap();
    std::fs::create_dir(dir.path().join("dir.toml")).unwrap();
    std::fs::write(dir.path().join("syntax.toml"), "command = [\n").unwrap();
    let run = export(&[&dir.path().display().to_string(), "--image", IMAGE]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.stdout.matches("kind: Pod").count(), 1);
    // Nothing valid: nothing written, not even the namespace.
    let run = export(&[&bad.display().to_string(), "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""));
    let run = export(&["/nonexistent.toml", "--image", IMAGE]);
    assert!(run.code == 2 && run.stderr.contains("cannot read /nonexistent.toml"), "{}", run.stderr);
}

#[test]
fn one_workload_twice_an_empty_directory_and_a_bad_namespace() {
    // Two hosts' directories each with a web: one namespace cannot hold both pods.
    let dir = tempfile::tempdir().unwrap();
    for host in ["h1", "h2"] {
        std::fs::create_dir(dir.path().join(host)).unwrap();
        std::fs::write(dir.path().join(host).join("web.toml"), "command = [\"/web\"]\n").unwrap();
    }
    let (h1, h2) = (dir.path().join("h1").display().to_string(), dir.path().join("h2").display().to_string());
    let run = export(&[&h1, &h2, "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.contains("h2/web.toml are both the workload `web`"), "{}", run.stderr);
    let run = export(&[&h1, "--namespace", "Team A", "--image", IMAGE]);
    assert!(run.code == 2 && run.stderr.contains("a namespace is a DNS label"), "{}", run.stderr);
    // Nothing to export is said, not only shown by an empty stdout.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = export(&[&empty.display().to_string(), "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    assert!(run.stderr.contains("no manifest in"), "{}", run.stderr);
}
