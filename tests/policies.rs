//! Every policy rule has a manifest refused because of it and one that
//! passes because the refused thing is absent; every default is DESIGN.md's.

mod common;

use paddock::model::{
    Capability, Duration, Manifest, Network, RestartPolicy, Seccomp, SharedOrPrivate, Signal, UserNamespace,
};

/// The rules a manifest breaks under `policy`, as `policy/rule`.
fn broken(policy: &str, text: &str) -> Vec<String> {
    let checked = common::check(&[policy], "t.toml", text);
    checked
        .problems
        .iter()
        // Warnings refuse nothing (`capabilities` on a privileged one, say).
        .filter(|p| p.severity == paddock::validate::Severity::Error)
        .map(|p| match (&p.policy, &p.rule) {
            (Some(policy), Some(rule)) => format!("{policy}/{rule}"),
            _ => panic!("not a policy problem: {p:?}\n{text}"),
        })
        .collect()
}

const CMD: &str = "command = [\"/bin/true\"]\n";
const LIMITS: &str = "[resources]\nmemory = \"64MiB\"\npids = 16\n";

/// (rule, a manifest body that breaks only that rule, the same without the breach)
const BASELINE_CASES: &[(&str, &str, &str)] = &[
    ("no-host-user-namespace", "[namespaces]\nuser = \"host\"\n", "[namespaces]\nuser = \"remap\"\n"),
    ("no-host-network-with-remap", "[namespaces]\nnetwork = \"host\"\n", "[namespaces]\nnetwork = \"private\"\n"),
    ("no-host-pid-with-remap", "[namespaces]\npid = \"host\"\n", "[namespaces]\npid = \"private\"\n"),
    ("no-privileged-with-remap", "[security]\nprivileged = true\n", "[security]\nprivileged = false\n"),
    ("no-unconfined-seccomp", "[security]\nseccomp = \"unconfined\"\n", "[security]\nseccomp = \"default\"\n"),
    (
        "baseline-capabilities",
        "[security]\ncapabilities = [\"SYS_ADMIN\"]\n",
        "[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n",
    ),
    (
        "idmap-only-under-volumes-root",
        "[[mounts]]\nsource = \"/srv/x\"\ntarget = \"/x\"\nidmap = true\n",
        "[[mounts]]\nsource = \"/var/lib/paddock/volumes/x\"\ntarget = \"/x\"\nidmap = true\n",
    ),
    (
        "no-setuid-mounts",
        "[[mounts]]\nsource = \"/srv/x\"\ntarget = \"/x\"\nsetuid = true\n",
        "[[mounts]]\nsource = \"/srv/x\"\ntarget = \"/x\"\nsetuid = false\n",
    ),
    (
        "no-device-mounts",
        "[[mounts]]\nsource = \"/srv/x\"\ntarget = \"/x\"\ndevices = true\n",
        "[[mounts]]\nsource = \"/srv/x\"\ntarget = \"/x\"\ndevices = false\n",
    ),
    (
        "no-host-kernel-filesystem-mounts",
        "[[mounts]]\nsource = \"/proc\"\ntarget = \"/host/proc\"\nkernel_filesystems = true\n",
        "[[mounts]]\nsource = \"/proc\"\ntarget = \"/host/proc\"\nkernel_filesystems = false\n",
    ),
    (
        "no-writable-host-root",
        "[rootfs]\npath = \"/\"\nreadonly = false\n",
        "[rootfs]\npath = \"/srv/root\"\nreadonly = false\n",
    ),
    (
        "no-writable-host-root-mount",
        "[[mounts]]\nsource = \"//\"\ntarget = \"/host\"\nreadonly = false\n",
        "[[mounts]]\nsource = \"/srv\"\ntarget = \"/host\"\nreadonly = false\n",
    ),
];

#[test]
fn each_baseline_rule_refuses_its_case_and_only_that() {
    for (rule, breach, fixed) in BASELINE_CASES {
        assert_eq!(broken("baseline", &format!("{CMD}{breach}")), [format!("baseline/{rule}")], "breach of {rule}");
        assert_eq!(broken("baseline", &format!("{CMD}{fixed}")), Vec::<String>::new(), "fix of {rule}");
    }
}

#[test]
fn the_hosts_root_may_be_mounted_read_only_which_is_a_mounts_default() {
    for source in ["/", "/.", "//"] {
        let text = format!("{CMD}[[mounts]]\nsource = {source:?}\ntarget = \"/host\"\n");
        assert_eq!(broken("baseline", &text), Vec::<String>::new(), "{text}");
        let writable = format!("{text}readonly = false\n");
        assert_eq!(broken("baseline", &writable), ["baseline/no-writable-host-root-mount"], "{writable}");
    }
}

#[test]
fn host_namespaces_are_allowed_when_the_user_namespace_is_not_remapped() {
    // The remap rules are conditional, as DESIGN.md states them: only the
    // host-user rule refuses this manifest.
    let text = format!(
        "{CMD}[namespaces]\nuser = \"host\"\nnetwork = \"host\"\npid = \"host\"\n[security]\nprivileged = true\n"
    );
    assert_eq!(broken("baseline", &text), ["baseline/no-host-user-namespace"]);
    assert_eq!(broken("privileged", &text), Vec::<String>::new());
}

#[test]
fn idmap_outside_the_volumes_root_prefix_is_refused_even_when_it_shares_the_prefix_text() {
    let text =
        format!("{CMD}[[mounts]]\nsource = \"/var/lib/paddock/volumes-evil/x\"\ntarget = \"/x\"\nidmap = true\n");
    assert_eq!(broken("baseline", &text), ["baseline/idmap-only-under-volumes-root"]);
}

#[test]
fn every_baseline_rule_is_in_restricted() {
    let doc = |name: &str| -> serde_json::Value {
        let text = paddock::validate::BUILT_IN.iter().find(|(n, _)| *n == name).unwrap().1;
        serde_json::from_str(text).unwrap()
    };
    let (baseline, restricted) = (doc("baseline"), doc("restricted"));
    for rule in baseline["allOf"].as_array().unwrap() {
        assert!(restricted["allOf"].as_array().unwrap().contains(rule), "restricted lacks {}", rule["title"]);
    }
}

#[test]
fn each_restricted_rule_refuses_its_case_and_only_that() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "readonly-rootfs",
            "[rootfs]\npath = \"/srv/root\"\nreadonly = false\n",
            "[rootfs]\npath = \"/srv/root\"\nreadonly = true\n",
        ),
        (
            "only-net-bind-service",
            "[security]\ncapabilities = [\"CHOWN\"]\n",
            "[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n",
        ),
        ("no-new-privileges", "[security]\nno_new_privileges = false\n", "[security]\nno_new_privileges = true\n"),
        (
            "readonly-mounts",
            "[[mounts]]\nsource = \"/srv\"\ntarget = \"/srv\"\nreadonly = false\n",
            "[[mounts]]\nsource = \"/var/lib/paddock/volumes/db\"\ntarget = \"/db\"\nreadonly = false\nidmap = true\n",
        ),
    ];
    for (rule, breach, fixed) in cases {
        assert_eq!(
            broken("restricted", &format!("{CMD}{LIMITS}{breach}")),
            [format!("restricted/{rule}")],
            "breach of {rule}"
        );
        assert_eq!(broken("restricted", &format!("{CMD}{LIMITS}{fixed}")), Vec::<String>::new(), "fix of {rule}");
    }
    assert_eq!(broken("restricted", &format!("{CMD}[resources]\npids = 1\n")), ["restricted/memory-limit-required"]);
    assert_eq!(
        broken("restricted", &format!("{CMD}[resources]\nmemory = \"1MiB\"\n")),
        ["restricted/pids-limit-required"]
    );
    // A capability outside baseline's list breaks both lists.
    assert_eq!(
        broken("restricted", &format!("{CMD}{LIMITS}[security]\ncapabilities = [\"SYS_ADMIN\"]\n")),
        ["restricted/baseline-capabilities", "restricted/only-net-bind-service"]
    );
}

#[test]
fn the_privileged_policy_allows_everything_the_schema_does() {
    // Every baseline breach at once (one table of each kind): an idmapped
    // mount needs the workload's own user namespace, so it comes second.
    let breaches = "network = \"host\"\npid = \"host\"\n[security]\nprivileged = true\nseccomp = \"unconfined\"\ncapabilities = [\"SYS_ADMIN\"]\n[[mounts]]\nsource = \"/srv\"\ntarget = \"/srv\"\nreadonly = false\nsetuid = true\ndevices = true\n[rootfs]\nreadonly = false\n";
    for text in [
        format!("{CMD}[namespaces]\nuser = \"host\"\n{breaches}"),
        format!(
            "{CMD}[namespaces]\n{}",
            breaches.replace("readonly = false\nsetuid", "idmap = true\nreadonly = false\nsetuid")
        ),
    ] {
        assert_eq!(broken("privileged", &text), Vec::<String>::new());
        assert!(!broken("baseline", &text).is_empty());
    }
}

#[test]
fn several_policies_all_apply() {
    let text = format!("{CMD}[security]\nseccomp = \"unconfined\"\n");
    let checked = common::check(&["baseline", "restricted"], "t.toml", &text);
    let rules: Vec<_> = checked
        .problems
        .iter()
        .map(|p| format!("{}/{}", p.policy.as_deref().unwrap(), p.rule.as_deref().unwrap()))
        .collect();
    assert!(rules.contains(&"baseline/no-unconfined-seccomp".to_owned()), "{rules:?}");
    assert!(rules.contains(&"restricted/no-unconfined-seccomp".to_owned()), "{rules:?}");
    assert!(rules.contains(&"restricted/memory-limit-required".to_owned()), "{rules:?}");
}

#[test]
fn every_default_is_what_design_md_says() {
    let checked = common::check(&["baseline"], "web.toml", CMD);
    let m: Manifest = checked.spec.expect("a minimal manifest is valid").manifest;
    assert_eq!(m.command, ["/bin/true"]);
    assert!(m.env.is_empty());
    assert_eq!(m.workdir.to_str(), Some("/"));
    assert_eq!((m.user, m.group), (0, 0));
    assert_eq!(m.hostname.as_deref(), Some("web"), "hostname defaults to the workload name");
    assert_eq!(m.rootfs.path.to_str(), Some("/"));
    assert!(m.rootfs.readonly);
    assert!(m.mounts.is_empty());
    assert_eq!(m.namespaces.user, UserNamespace::Remap);
    assert_eq!(m.namespaces.network, Network::Private);
    assert_eq!(m.namespaces.pid, SharedOrPrivate::Private);
    assert!(!m.security.privileged);
    assert_eq!(m.security.capabilities, Vec::<Capability>::new());
    assert!(m.security.no_new_privileges);
    assert_eq!(m.security.seccomp, Seccomp::Default);
    assert_eq!((m.resources.memory, m.resources.pids, m.resources.cpu, m.resources.nofile), (None, None, None, None));
    assert_eq!(m.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(m.restart.max_retries, 10);
    assert_eq!(m.restart.backoff, "100ms".parse::<Duration>().unwrap());
    assert_eq!(m.restart.backoff_max, "30s".parse::<Duration>().unwrap());
    assert_eq!(m.restart.reset_after, "60s".parse::<Duration>().unwrap());
    assert_eq!(m.stop.signal, Signal::Term);
    assert_eq!(m.stop.timeout, "10s".parse::<Duration>().unwrap());
}

#[test]
fn mount_defaults_are_readonly_nosuid_nodev_and_not_idmapped() {
    let checked =
        common::check(&["baseline"], "t.toml", &format!("{CMD}[[mounts]]\nsource = \"/a\"\ntarget = \"/b\"\n"));
    let mount = &checked.spec.unwrap().manifest.mounts[0];
    assert!(mount.readonly);
    assert!(!mount.idmap);
    assert!(!mount.setuid, "mounts are nosuid unless asked");
    assert!(!mount.devices, "mounts are nodev unless asked");
}

#[test]
fn operator_policies_load_from_a_directory_and_are_chosen_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("always-restart.json"),
        r#"{"title": "always-restart", "allOf": [{"title": "restart-always", "description": "set restart.policy = \"always\"",
            "properties": {"restart": {"properties": {"policy": {"const": "always"}}}}}]}"#,
    )
    .unwrap();
    let policies =
        paddock::validate::load_policies(&["always-restart".into()], Some(dir.path()), std::path::Path::new("/v"))
            .unwrap();
    let validator = paddock::validate::Validator::new(policies);
    let checked = validator.validate("t.toml", CMD, paddock::validate::HostChecks::Skip);
    let lines = common::lines("t.toml", CMD, &checked);
    assert_eq!(
        lines,
        [
            "1:1: error: policy always-restart refuses this: `restart.policy` must be \"always\", not \"on-failure\" (the default) [always-restart/restart-always]"
        ]
    );
}

#[test]
fn a_policy_that_is_not_a_json_schema_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, r#"{"type": "no-such-type"}"#).unwrap();
    let err =
        paddock::validate::load_policies_strict(&["baseline".into()], Some(dir.path()), std::path::Path::new("/v"))
            .unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: error: not a valid JSON Schema", path.display())), "{err}");
    std::fs::write(&path, "{\n  \"type\": \n}").unwrap();
    let err =
        paddock::validate::load_policies_strict(&["baseline".into()], Some(dir.path()), std::path::Path::new("/v"))
            .unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}:3:1: error: not valid JSON", path.display())), "{err}");
    std::fs::write(&path, "{}").unwrap();
    std::fs::rename(&path, dir.path().join("baseline.json")).unwrap();
    let err =
        paddock::validate::load_policies_strict(&["baseline".into()], Some(dir.path()), std::path::Path::new("/v"))
            .unwrap_err();
    assert!(err.to_string().contains("is the name of a built-in policy"), "{err}");
}

#[test]
fn an_operator_policy_can_restrict_published_ports_to_a_list() {
    let dir = tempfile::tempdir().unwrap();
    // The policy of README's "Writing a policy", word for word.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(
            "```json\n{\n  \"$schema\": \"https://json-schema.org/draft/2020-12/schema\",\n  \"title\": \"web-ports\"",
        )
        .expect("README shows the web-ports policy")
        + 8;
    let end = readme[start..].find("```").unwrap() + start;
    std::fs::write(dir.path().join("web-ports.json"), &readme[start..end]).unwrap();
    let policies = paddock::validate::load_policies_strict(
        &["baseline".into(), "web-ports".into()],
        Some(dir.path()),
        std::path::Path::new("/v"),
    )
    .unwrap();
    let validator = paddock::validate::Validator::new(policies);
    let ok = format!("{CMD}ports = [\"80:8080\", \"127.0.0.1:8443:443\"]\n");
    let checked = validator.validate("t.toml", &ok, paddock::validate::HostChecks::Skip);
    assert_eq!(common::lines("t.toml", &ok, &checked), Vec::<String>::new());
    let bad = format!("{CMD}ports = [\"80:8080\", \"2222:22\"]\n");
    let checked = validator.validate("t.toml", &bad, paddock::validate::HostChecks::Skip);
    let lines = common::lines("t.toml", &bad, &checked);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("policy web-ports refuses this") && lines[0].contains("[web-ports/listed-host-ports]"),
        "{lines:?}"
    );
    // And the baseline says bridge networks and published ports are fine.
    let baseline = paddock::validate::Validator::new(
        paddock::validate::load_policies_strict(&["baseline".into()], None, std::path::Path::new("/v")).unwrap(),
    );
    let bridged = format!("{CMD}ports = [\"2222:22\"]\n[namespaces]\nnetwork = \"bridge\"\n");
    let checked = baseline.validate("t.toml", &bridged, paddock::validate::HostChecks::Skip);
    assert_eq!(common::lines("t.toml", &bridged, &checked), Vec::<String>::new());
}
