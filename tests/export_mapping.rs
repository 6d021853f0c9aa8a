//! `paddock export kubernetes`'s mapping, field by field: a manifest
//! snippet in, the value each field of its pod gets out (no root needed).

mod common;

use paddock::export::{self, Exported, Kind, Level, Object, Options, Unsupported};
use serde_json::{Value, json};

const IMAGE: &str = "registry.example/app:1";

pub fn export_text(policies: &[&str], text: &str, kind: Kind) -> Exported {
    let checked = common::check(policies, "t.toml", text);
    let spec = checked.spec.unwrap_or_else(|| panic!("{text}\n{:?}", checked.problems));
    let options = Options {
        kind,
        namespace: "ns".into(),
        policy_level: Level::of_policies(policies.iter().copied()),
        shared_slice: false,
    };
    export::export(&spec, &IMAGE.parse().unwrap(), &options)
}

fn json_of(object: &Object) -> Value {
    match object {
        Object::Namespace(o) => serde_json::to_value(o),
        Object::Pod(o) => serde_json::to_value(o),
        Object::Deployment(o) => serde_json::to_value(o),
        Object::Service(o) => serde_json::to_value(o),
        Object::NetworkPolicy(o) => serde_json::to_value(o),
    }
    .unwrap()
}

/// The pod spec of the workload's object.
fn pod(policies: &[&str], text: &str, kind: Kind) -> Value {
    let exported = export_text(policies, text, kind);
    serde_json::to_value(exported.objects[0].pod_spec().expect("the first object is the pod's")).unwrap()
}

const CMD: &str = "command = [\"/bin/app\", \"-v\"]\n";

#[test]
fn each_field_maps_as_the_readme_says() {
    let c = "/containers/0";
    let sc = "/containers/0/securityContext";
    #[rustfmt::skip]
    let table: &[(&[&str], &str, &str, Value)] = &[
        // The defaults, as paddock runs them.
        (&["baseline"], "", &format!("{c}/command"), json!(["/bin/app", "-v"])),
        (&["baseline"], "", &format!("{c}/image"), json!(IMAGE)),
        (&["baseline"], "", &format!("{c}/name"), json!("t")),
        (&["baseline"], "", &format!("{c}/workingDir"), json!("/")),
        (&["baseline"], "", "/hostUsers", json!(false)),
        (&["baseline"], "", "/securityContext", json!({"supplementalGroupsPolicy": "Strict"})),
        (&["baseline"], "", "/hostname", json!("t")),
        (&["baseline"], "", "/restartPolicy", json!("OnFailure")),
        (&["baseline"], "", "/terminationGracePeriodSeconds", json!(10)),
        (&["baseline"], "", "/automountServiceAccountToken", json!(false)),
        (&["baseline"], "", "/enableServiceLinks", json!(false)),
        (&["baseline"], "", "/volumes/0", json!({"name": "tmp", "emptyDir": {"medium": "Memory"}})),
        (&["baseline"], "", &format!("{c}/volumeMounts/0"), json!({"name": "tmp", "mountPath": "/tmp"})),
        (&["baseline"], "", &format!("{sc}/allowPrivilegeEscalation"), json!(false)),
        (&["baseline"], "", &format!("{sc}/readOnlyRootFilesystem"), json!(true)),
        (&["baseline"], "", &format!("{sc}/seccompProfile"), json!({"type": "RuntimeDefault"})),
        (&["baseline"], "", &format!("{sc}/runAsUser"), json!(0)),
        (&["baseline"], "", &format!("{sc}/runAsGroup"), json!(0)),
        (&["baseline"], "", &format!("{sc}/runAsNonRoot"), Value::Null),
        (&["baseline"], "", &format!("{sc}/capabilities"), Value::Null),
        (&["baseline"], "", &format!("{sc}/privileged"), Value::Null),
        (&["baseline"], "", "/hostNetwork", Value::Null),
        (&["baseline"], "", "/os", Value::Null),
        (&["baseline"], "", &format!("{c}/lifecycle"), Value::Null),
        // Environment, identity, hostname.
        (&["baseline"], "env = { B = \"2\", A = \"1\" }\n", &format!("{c}/env"), json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])),
        (&["baseline"], "workdir = \"/srv\"\n", &format!("{c}/workingDir"), json!("/srv")),
        (&["baseline"], "user = 1000\ngroup = 1001\n", &format!("{sc}/runAsUser"), json!(1000)),
        (&["baseline"], "user = 1000\ngroup = 1001\n", &format!("{sc}/runAsGroup"), json!(1001)),
        (&["baseline"], "user = 1000\n", &format!("{sc}/runAsNonRoot"), json!(true)),
        // A non-root workload under no_new_privs holds no capability: paddock ran it so.
        (&["baseline"], "user = 1000\n", &format!("{sc}/capabilities"), json!({"drop": ["ALL"]})),
        (&["baseline"], "hostname = \"db-1\"\n", "/hostname", json!("db-1")),
        (&["baseline"], "hostname = \"Db.example\"\n", "/hostname", Value::Null),
        // The security context paddock applied.
        (&["baseline"], "[security]\ncapabilities = [\"NET_BIND_SERVICE\", \"CHOWN\"]\n", &format!("{sc}/capabilities"), json!({"add": ["CHOWN", "NET_BIND_SERVICE"]})),
        (&["baseline"], "[security]\nno_new_privileges = false\n", &format!("{sc}/allowPrivilegeEscalation"), json!(true)),
        (&["baseline"], "[rootfs]\npath = \"/srv/root\"\nreadonly = false\n", &format!("{sc}/readOnlyRootFilesystem"), json!(false)),
        (&["privileged"], "[security]\nseccomp = \"unconfined\"\n", &format!("{sc}/seccompProfile"), json!({"type": "Unconfined"})),
        (&["privileged"], "[security]\nprivileged = true\n[namespaces]\nuser = \"host\"\n", &format!("{sc}/privileged"), json!(true)),
        (&["privileged"], "[security]\nprivileged = true\n[namespaces]\nuser = \"host\"\n", &format!("{sc}/allowPrivilegeEscalation"), Value::Null),
        (&["privileged"], "[security]\nprivileged = true\n[namespaces]\nuser = \"host\"\n", &format!("{sc}/seccompProfile"), json!({"type": "Unconfined"})),
        (&["privileged"], "[namespaces]\nuser = \"host\"\n", "/hostUsers", Value::Null),
        (&["privileged"], "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\npid = \"host\"\n", "/hostNetwork", json!(true)),
        (&["privileged"], "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\npid = \"host\"\n", "/hostPID", json!(true)),
        // A pod on the node's network has the node's hostname: none is written.
        (&["privileged"], "hostname = \"db-1\"\n[namespaces]\nuser = \"host\"\nnetwork = \"host\"\n", "/hostname", Value::Null),
        // A remapped root keeps its remap; the host namespace is what gives.
        (&["privileged"], "[namespaces]\nnetwork = \"host\"\n", "/hostNetwork", Value::Null),
        (&["privileged"], "[namespaces]\nnetwork = \"host\"\n", "/hostUsers", json!(false)),
        (&["privileged"], "[namespaces]\nnetwork = \"host\"\n", "/hostname", json!("t")),
        // Resources as limits, and requests of as much: paddock's limits are the workload's own.
        (&["baseline"], "[resources]\nmemory = \"256MiB\"\ncpu = 0.5\n", &format!("{c}/resources"), json!({"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "256Mi", "cpu": "500m"}})),
        (&["baseline"], "[resources]\nmemory = \"1536MiB\"\ncpu = 2\n", &format!("{c}/resources"), json!({"limits": {"memory": "1536Mi", "cpu": "2"}, "requests": {"memory": "1536Mi", "cpu": "2"}})),
        (&["baseline"], "[resources]\nmemory = \"64MiB\"\n", &format!("{c}/resources"), json!({"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}})),
        (&["baseline"], "[resources]\npids = 10\nnofile = 64\n", &format!("{c}/resources"), Value::Null),
        // Restart and stop.
        (&["baseline"], "[restart]\npolicy = \"always\"\n", "/restartPolicy", json!("Always")),
        (&["baseline"], "[restart]\npolicy = \"never\"\n", "/restartPolicy", json!("Never")),
        (&["baseline"], "[stop]\ntimeout = \"30s\"\n", "/terminationGracePeriodSeconds", json!(30)),
        (&["baseline"], "[stop]\ntimeout = \"1.5s\"\n", "/terminationGracePeriodSeconds", json!(2)),
        (&["baseline"], "[stop]\ntimeout = \"0s\"\n", "/terminationGracePeriodSeconds", json!(2)),
        (&["baseline"], "[stop]\ntimeout = \"1s\"\n", "/terminationGracePeriodSeconds", json!(2)),
        // The grace period is 64 bits: a long one is written whole.
        (&["baseline"], "[stop]\ntimeout = \"1000000h\"\n", "/terminationGracePeriodSeconds", json!(3_600_000_000_i64)),
        (&["baseline"], "[stop]\nsignal = \"SIGINT\"\n", &format!("{c}/lifecycle"), json!({"stopSignal": "SIGINT"})),
        (&["baseline"], "[stop]\nsignal = \"SIGINT\"\n", "/os", json!({"name": "linux"})),
        // Mounts as hostPath volumes, read-only where paddock made them so.
        (&["baseline"], "[[mounts]]\nsource = \"/etc\"\ntarget = \"/ssl\"\n", "/volumes/1", json!({"name": "mount-0", "hostPath": {"path": "/etc", "type": "Directory"}})),
        // Each typed as its source is here: the kubelet refuses a pod whose source is missing, as paddock refuses the start.
        (&["baseline"], "[[mounts]]\nsource = \"/etc/passwd\"\ntarget = \"/p\"\n", "/volumes/1/hostPath/type", json!("File")),
        (&["baseline"], "[[mounts]]\nsource = \"/dev/null\"\ntarget = \"/n\"\n", "/volumes/1/hostPath/type", json!("CharDevice")),
        (&["baseline"], "[[mounts]]\nsource = \"/etc/ssl\"\ntarget = \"/ssl\"\n", &format!("{c}/volumeMounts/1"), json!({"name": "mount-0", "mountPath": "/ssl", "readOnly": true, "recursiveReadOnly": "Enabled"})),
        (&["baseline"], "[[mounts]]\nsource = \"/var/lib/paddock/volumes/d\"\ntarget = \"/d\"\nreadonly = false\nidmap = true\n", &format!("{c}/volumeMounts/1/readOnly"), json!(false)),
        (&["baseline"], "[[mounts]]\nsource = \"/var/lib/paddock/volumes/d\"\ntarget = \"/d\"\nreadonly = false\nidmap = true\n", &format!("{c}/volumeMounts/1/recursiveReadOnly"), Value::Null),
        // A mount on /tmp replaces paddock's private tmpfs.
        (&["baseline"], "[[mounts]]\nsource = \"/srv/t\"\ntarget = \"/tmp\"\n", "/volumes/0/name", json!("mount-0")),
        // The same path however written: one volume at /tmp, not an emptyDir under a hostPath.
        (&["baseline"], "[[mounts]]\nsource = \"/srv/t\"\ntarget = \"/tmp/\"\n", "/volumes", json!([{"name": "mount-0", "hostPath": {"path": "/srv/t"}}])),
        (&["baseline"], "[[mounts]]\nsource = \"/srv/t\"\ntarget = \"//tmp/.\"\n", "/volumes", json!([{"name": "mount-0", "hostPath": {"path": "/srv/t"}}])),
        // Published ports: container ports (never hostPort: baseline forbids it).
        (&["baseline"], "ports = [\"8080:80\", \"8081:80\", \"127.0.0.1:5353:53/udp\"]\n", &format!("{c}/ports"), json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}])),
        // Health: restart is liveness, mark is readiness, a start period a startup probe.
        (&["baseline"], "[health]\ntcp = 80\n", &format!("{c}/livenessProbe"), json!({"tcpSocket": {"port": 80}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3, "initialDelaySeconds": 10})),
        (&["baseline"], "[health]\ntcp = 80\n", &format!("{c}/readinessProbe"), Value::Null),
        (&["baseline"], "[health]\nhttp = { port = 8080, path = \"/healthz\" }\non_unhealthy = \"mark\"\ninterval = \"2s\"\ntimeout = \"1s\"\nretries = 5\n", &format!("{c}/readinessProbe"), json!({"httpGet": {"port": 8080, "path": "/healthz"}, "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 5, "initialDelaySeconds": 2})),
        (&["baseline"], "[health]\nhttp = { port = 8080 }\non_unhealthy = \"mark\"\n", &format!("{c}/livenessProbe"), Value::Null),
        (&["baseline"], "[health]\ncommand = [\"/bin/check\"]\nstart_period = \"30s\"\n", &format!("{c}/startupProbe"), json!({"exec": {"command": ["/bin/check"]}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 5, "initialDelaySeconds": 10})),
        (&["baseline"], "[health]\ncommand = [\"/bin/check\"]\nstart_period = \"30s\"\n", &format!("{c}/livenessProbe"), json!({"exec": {"command": ["/bin/check"]}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3})),
        (&["baseline"], "[health]\ntcp = 80\ninterval = \"500ms\"\n", &format!("{c}/livenessProbe/periodSeconds"), json!(1)),
        (&["baseline"], "[health]\ntcp = 80\ninterval = \"1000000h\"\n", &format!("{c}/livenessProbe/periodSeconds"), json!(i32::MAX)),
        // Start order is a documented gap: no init container.
        (&["baseline"], "after = [\"db\"]\n", "/initContainers", Value::Null),
    ];
    for (policies, extra, pointer, expected) in table {
        let text = format!("{CMD}{extra}");
        let spec = pod(policies, &text, Kind::Pod);
        let got = spec.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(&got, expected, "{pointer} of\n{text}\nin {spec:#}");
    }
}

/// The kubelet expands `$(VAR)` and turns `$$` into `$` in a command, an
/// env value and an exec probe; paddock expands nothing, so each `$` is
/// written `$$` and the kubelet gives back what the manifest said.
#[test]
fn every_dollar_the_kubelet_would_expand_is_escaped() {
    let text = "command = [\"/bin/sh\", \"-c\", \"echo $$ $(HOME) $PATH\"]\nenv = { A = \"$(HOME)/x\", B = \"$$\" }\n[health]\ncommand = [\"/bin/sh\", \"-c\", \"test $$ -gt 1 || echo $(HOME)\"]\n";
    let spec = pod(&["baseline"], text, Kind::Pod);
    let c = &spec["containers"][0];
    assert_eq!(c["command"], json!(["/bin/sh", "-c", "echo $$$$ $$(HOME) $$PATH"]));
    assert_eq!(c["env"], json!([{"name": "A", "value": "$$(HOME)/x"}, {"name": "B", "value": "$$$$"}]));
    assert_eq!(c["livenessProbe"]["exec"]["command"], json!(["/bin/sh", "-c", "test $$$$ -gt 1 || echo $$(HOME)"]));
    // What expands nothing is written as it is.
    assert_eq!(c["workingDir"], json!("/"));
}

#[test]
fn a_deployment_is_one_replica_replaced_never_doubled_and_always_restarts() {
    let exported = export_text(&["baseline"], &format!("{CMD}[restart]\npolicy = \"never\"\n"), Kind::Deployment);
    let d = json_of(&exported.objects[0]);
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(d["spec"]["selector"]["matchLabels"], json!({"app.kubernetes.io/name": "t"}));
    assert_eq!(d["spec"]["template"]["metadata"]["labels"], json!({"app.kubernetes.io/name": "t"}));
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert!(exported.unsupported.contains(&Unsupported::DeploymentRestarts(paddock::model::RestartPolicy::Never)));
    assert_eq!(d["metadata"]["namespace"], "ns");
}

#[test]
fn published_ports_become_a_cluster_ip_service_and_the_network_a_policy() {
    let text = format!("{CMD}ports = [\"8080:80\", \"127.0.0.1:5353:53/udp\"]\n");
    let exported = export_text(&["baseline"], &text, Kind::Pod);
    let kinds: Vec<Value> = exported.objects.iter().map(|o| json_of(o)["kind"].clone()).collect();
    assert_eq!(kinds, [json!("Pod"), json!("Service"), json!("NetworkPolicy")]);
    let service = json_of(&exported.objects[1]);
    assert_eq!(
        service["spec"],
        json!({
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": "t"},
            "ports": [
                {"name": "tcp-8080", "port": 8080, "targetPort": 80, "protocol": "TCP"},
                {"name": "udp-5353", "port": 5353, "targetPort": 53, "protocol": "UDP"},
            ]
        })
    );
    // The bridge is reached from anywhere at the published ports, and at
    // every port from the other pods on the bridge, as on paddock's.
    let bridge = json!({"podSelector": {"matchLabels": {"paddock/network": "bridge"}}});
    let policy = json_of(&exported.objects[2]);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}, {"from": [bridge]}])
    );
    let pod = json_of(&exported.objects[0]);
    assert_eq!(pod["metadata"]["labels"], json!({"app.kubernetes.io/name": "t", "paddock/network": "bridge"}));
    assert_eq!(policy["spec"]["podSelector"], json!({"matchLabels": {"app.kubernetes.io/name": "t"}}));
    // With no port published, only from the bridge.
    let quiet = export_text(&["baseline"], &format!("{CMD}[namespaces]\nnetwork = \"bridge\"\n"), Kind::Deployment);
    let policy = json_of(&quiet.objects[1]);
    assert_eq!(policy["spec"]["ingress"], json!([{"from": [bridge]}]));
    let template = &json_of(&quiet.objects[0])["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["paddock/network"], "bridge");
    // The private network (the default) reaches nothing and is reached from nowhere.
    let private = export_text(&["baseline"], CMD, Kind::Pod);
    let policy = json_of(&private.objects[1]);
    assert_eq!(
        policy["spec"],
        json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "t"}}, "policyTypes": ["Ingress", "Egress"]})
    );
}

/// One host port on two host addresses is one port of the Service's one
/// address: a second target is not carried, and is said to be lost.
#[test]
fn a_host_port_on_two_addresses_with_two_targets_lists_the_second_as_lost() {
    let text = format!("{CMD}ports = [\"127.0.0.1:8080:80\", \"127.0.0.2:8080:81\", \"127.0.0.3:8080:80\"]\n");
    let exported = export_text(&["baseline"], &text, Kind::Pod);
    let service = json_of(&exported.objects[1]);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "tcp-8080", "port": 8080, "targetPort": 80, "protocol": "TCP"}])
    );
    let port = |s: &str| -> paddock::model::PortMapping { s.parse().unwrap() };
    let lost = Unsupported::PortMerged { lost: port("127.0.0.2:8080:81"), kept: port("127.0.0.1:8080:80") };
    let found = &exported.unsupported;
    assert!(found.contains(&lost), "{found:?}");
    assert!(!found.contains(&Unsupported::Published(port("127.0.0.2:8080:81"))), "{found:?}");
    // The same target again is carried: the Service reaches it.
    assert!(found.contains(&Unsupported::Published(port("127.0.0.3:8080:80"))), "{found:?}");
    assert!(lost.to_string().contains("port 127.0.0.2:8080:81/tcp is not in the Service"), "{lost}");
}

#[test]
fn the_namespace_is_labelled_with_a_level_and_pinned_to_the_version() {
    let ns = serde_json::to_value(export::namespace("team", Level::Baseline)).unwrap();
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["metadata"]["name"], "team");
    assert_eq!(
        ns["metadata"]["labels"],
        json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.35"})
    );
}

#[test]
fn what_cannot_be_expressed_is_listed_item_by_item() {
    use Unsupported as U;
    let items = |policies: &[&str], extra: &str| export_text(policies, &format!("{CMD}{extra}"), Kind::Pod).unsupported;
    let has = |policies: &[&str], extra: &str, item: Unsupported| {
        let found = items(policies, extra);
        assert!(found.contains(&item), "{extra}: {item:?} not in {found:?}");
    };
    has(
        &["baseline"],
        "[health]\ntcp = 80\ninterval = \"500ms\"\n",
        U::Rounded { key: "health.interval", written: "500ms".parse().unwrap(), seconds: 1 },
    );
    // A probe's seconds are 32 bits: a longer interval is cut, and said; the grace period is not cut.
    has(
        &["baseline"],
        "[health]\ntcp = 80\ninterval = \"1000000h\"\n",
        U::Clamped { key: "health.interval", written: "1000000h".parse().unwrap(), seconds: i32::MAX },
    );
    let found = items(&["baseline"], "[stop]\ntimeout = \"1000000h\"\n");
    assert!(!found.iter().any(|u| matches!(u, U::Clamped { .. } | U::Rounded { .. })), "{found:?}");
    // Under the kubelet's least grace (and 0 would delete the pod at once): said, not rounded.
    has(&["baseline"], "[stop]\ntimeout = \"0s\"\n", U::ShortGrace("0s".parse().unwrap()));
    let found = items(&["baseline"], "[stop]\ntimeout = \"1.5s\"\n");
    assert!(found.contains(&U::ShortGrace("1.5s".parse().unwrap())), "{found:?}");
    assert!(!found.iter().any(|u| matches!(u, U::Rounded { .. })), "{found:?}");
    has(&["baseline"], "hostname = \"Db.example\"\n", U::Hostname("Db.example".into()));
    has(&["baseline"], "after = [\"db\", \"cache\"]\n", U::After(vec!["db".into(), "cache".into()]));
    has(&["baseline"], "[health]\ntcp = 80\n", U::ProbeAddress);
    // hostUsers: false is kept only where the cluster has user namespaces: said for every remapped workload.
    has(&["baseline"], "", U::UserNamespaces);
    let found = items(&["privileged"], "[namespaces]\nuser = \"host\"\n");
    assert!(!found.contains(&U::UserNamespaces), "{found:?}");
    has(&["baseline"], "[namespaces]\nnetwork = \"lan\"\n", U::CniNetwork("lan".into()));
    let host_network = "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\n";
    has(&["privileged"], host_network, U::HostnameOfTheNode("t".into()));
    has(&["privileged"], &format!("hostname = \"db-1\"\n{host_network}"), U::HostnameOfTheNode("db-1".into()));
    // With a remapped root the pod keeps a network of its own, and its hostname.
    let found = items(&["privileged"], "[namespaces]\nnetwork = \"host\"\n");
    assert!(!found.iter().any(|u| matches!(u, U::HostnameOfTheNode(_))), "{found:?}");
    has(&["privileged"], "[namespaces]\npid = \"host\"\n", U::HostNamespaceWithRemap("pid"));
    has(&["baseline"], "ports = [\"127.0.0.1:8080:80\"]\n", U::HostIp("127.0.0.1:8080:80".parse().unwrap()));
    let found = items(&["baseline"], "ports = [\"0.0.0.0:8080:80\"]\n");
    assert!(!found.iter().any(|u| matches!(u, U::HostIp(_))), "every address is no one address: {found:?}");
    // Every volume of a hostUsers: false pod is idmapped: a plain mount of a remapped workload gains its owners' rights.
    let plain = "[[mounts]]\nsource = \"/srv/a\"\ntarget = \"/a\"\nreadonly = false\n";
    has(&["privileged"], plain, U::NotIdmapped { source: "/srv/a".into(), writable: true, mount: 0 });
    let unlisted = |policies: &[&str], extra: &str| {
        let found = items(policies, extra);
        assert!(!found.iter().any(|u| matches!(u, U::NotIdmapped { .. })), "{extra}: {found:?}");
    };
    unlisted(
        &["baseline"],
        "[[mounts]]\nsource = \"/var/lib/paddock/volumes/d\"\ntarget = \"/d\"\nreadonly = false\nidmap = true\n",
    );
    unlisted(&["privileged"], &format!("{plain}[namespaces]\nuser = \"host\"\n"));
    // A command probe reaches the workload as paddock's did; and `always` has no max_retries to lose.
    let found = items(&["baseline"], "[health]\ncommand = [\"/bin/check\"]\n[restart]\npolicy = \"always\"\n");
    assert!(!found.contains(&U::ProbeAddress) && !found.iter().any(|u| matches!(u, U::MaxRetries(_))), "{found:?}");
}

/// The tests' Pod Security Standards checker (tests/common/pss.rs), on specs that break one rule each (so a claim it
/// accepts is a claim it could have refused).
#[test]
fn the_pss_checker_refuses_each_rule_it_knows() {
    use serde_json::json;
    let good = json!({
        "containers": [{"name": "c", "securityContext": {
            "allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
        }}],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}]
    });
    assert_eq!(common::pss::pss_level(&good), Level::Restricted);
    let with = |pointer: &str, value: Value| {
        let mut spec = good.clone();
        match spec.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                let parent =
                    spec.pointer_mut(parent).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("{parent}"));
                parent.insert(key.into(), value);
            }
        }
        spec
    };
    let sc = "/containers/0/securityContext";
    #[rustfmt::skip]
    let table: Vec<(Value, Level)> = vec![
        (with("/hostNetwork", json!(true)), Level::Privileged),
        (with("/hostPID", json!(true)), Level::Privileged),
        (with("/hostIPC", json!(true)), Level::Privileged),
        (with(&format!("{sc}/privileged"), json!(true)), Level::Privileged),
        (with(&format!("{sc}/capabilities/add"), json!(["SYS_ADMIN"])), Level::Privileged),
        (with(&format!("{sc}/capabilities/add"), json!(["CHOWN"])), Level::Baseline),
        (with(&format!("{sc}/capabilities/drop"), json!([])), Level::Baseline),
        (with("/volumes/0", json!({"name": "h", "hostPath": {"path": "/etc"}})), Level::Privileged),
        (with("/volumes/0", json!({"name": "n", "nfs": {"server": "s", "path": "/"}})), Level::Baseline),
        (with("/containers/0/ports", json!([{"containerPort": 80, "hostPort": 80}])), Level::Privileged),
        (with(&format!("{sc}/seccompProfile"), json!({"type": "Unconfined"})), Level::Privileged),
        (with(&format!("{sc}/seccompProfile"), Value::Null), Level::Baseline),
        (with(&format!("{sc}/procMount"), json!("Unmasked")), Level::Privileged),
        (with(&format!("{sc}/seLinuxOptions"), json!({"type": "spc_t"})), Level::Privileged),
        (with(&format!("{sc}/appArmorProfile"), json!({"type": "Unconfined"})), Level::Privileged),
        (with("/securityContext", json!({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]})), Level::Privileged),
        (with(&format!("{sc}/allowPrivilegeEscalation"), json!(true)), Level::Baseline),
        (with(&format!("{sc}/runAsNonRoot"), json!(false)), Level::Baseline),
        (with(&format!("{sc}/runAsUser"), json!(0)), Level::Baseline),
    ];
    for (spec, expected) in table {
        assert_eq!(common::pss::pss_level(&spec), expected, "{spec:#}");
    }
}

#[test]
fn a_shared_id_slice_is_listed_for_remapped_workloads_only() {
    let spec = |text: &str| common::check(&["privileged"], "t.toml", text).spec.unwrap();
    let options =
        Options { kind: Kind::Pod, namespace: "ns".into(), policy_level: Level::Privileged, shared_slice: true };
    let remapped = export::export(&spec(CMD), &IMAGE.parse().unwrap(), &options).unsupported;
    assert!(remapped.contains(&Unsupported::SharedSlice), "{remapped:?}");
    let host =
        export::export(&spec(&format!("{CMD}[namespaces]\nuser = \"host\"\n")), &IMAGE.parse().unwrap(), &options)
            .unsupported;
    assert!(!host.contains(&Unsupported::SharedSlice), "{host:?}");
}

/// `security.capabilities` is exported as `add:` on top of the runtime's
/// default set, which gives the pod paddock's set only while paddock's
/// default set is containerd's (oci.defaultUnixCaps, Docker's too; CRI-O's
/// is smaller). Should paddock's ever change, the mapping must become an
/// explicit `drop: [ALL]` and `add:` list, or the pod gains what paddock took away.
#[test]
fn paddocks_default_capabilities_are_containerds() {
    let containerd = [
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    ];
    let mut paddock: Vec<&str> = paddock::model::Capability::DEFAULT_SET.iter().map(|c| c.name()).collect();
    let mut containerd = containerd.to_vec();
    paddock.sort_unstable();
    containerd.sort_unstable();
    assert_eq!(paddock, containerd);
}

/// What paddock enforces and a pod cannot say is listed, never dropped: a
/// privileged workload's no_new_privileges (the API refuses it beside
/// privileged), and a mount of the host's /, /proc or /sys that paddock
/// refuses to start without `kernel_filesystems`.
#[test]
fn no_new_privileges_beside_privileged_and_kernel_filesystems_are_listed() {
    let items = |extra: &str| export_text(&["privileged"], &format!("{CMD}{extra}"), Kind::Pod).unsupported;
    let privileged = "[namespaces]\nuser = \"host\"\n[security]\nprivileged = true\n";
    assert!(items(privileged).contains(&Unsupported::PrivilegedEscalation), "{:?}", items(privileged));
    let said = items(&format!("{privileged}no_new_privileges = false\n"));
    assert!(!said.contains(&Unsupported::PrivilegedEscalation), "{said:?}");
    assert!(!items("").contains(&Unsupported::PrivilegedEscalation));
    let mount = |source: &str, extra: &str| format!("[[mounts]]\nsource = {source:?}\ntarget = \"/m\"\n{extra}");
    for source in ["/", "/proc", "/sys/fs/cgroup", "/proc/"] {
        let kernel = Unsupported::KernelFilesystems { source: source.into(), mount: 0 };
        let listed = items(&mount(source, ""));
        assert!(listed.iter().any(|u| matches!(u, Unsupported::KernelFilesystems { .. })), "{source}: {listed:?}");
        assert!(kernel.to_string().contains("kernel_filesystems = true"), "{kernel}");
        let meant = items(&mount(source, "kernel_filesystems = true\n"));
        assert!(!meant.iter().any(|u| matches!(u, Unsupported::KernelFilesystems { .. })), "{source}: {meant:?}");
    }
    for source in ["/srv/data", "/process", "/system"] {
        let listed = items(&mount(source, ""));
        assert!(!listed.iter().any(|u| matches!(u, Unsupported::KernelFilesystems { .. })), "{source}: {listed:?}");
    }
    // A mount that allows device nodes: a container opens the node's
    // devices only when privileged (or through a device plugin).
    let device = Unsupported::DeviceMount { source: "/dev/fuse".into(), mount: 0 };
    assert!(items(&mount("/dev/fuse", "devices = true\n")).contains(&device));
    assert!(!items(&format!("{}{privileged}", mount("/dev/fuse", "devices = true\n"))).contains(&device));
    assert!(!items(&mount("/dev/fuse", "")).contains(&device));
}

/// A mount whose source is not on the exporting host has an untyped
/// hostPath, which a runtime would make as an empty directory where it is
/// missing: listed at the mount's source, with what to do. (It was left
/// untyped in silence, every mount.)
#[test]
fn a_mount_source_missing_here_is_left_untyped_and_listed() {
    let items = |source: &str| {
        export_text(&["baseline"], &format!("{CMD}[[mounts]]\nsource = {source:?}\ntarget = \"/m\"\n"), Kind::Pod)
            .unsupported
    };
    let missing = "/srv/paddock-test-no-such-source";
    let listed = items(missing);
    let untyped = Unsupported::UntypedSource { source: missing.into(), mount: 0 };
    assert!(listed.contains(&untyped), "{listed:?}");
    assert!(untyped.to_string().contains("the runtime makes it an empty directory"), "{untyped}");
    assert!(!items("/etc").iter().any(|u| matches!(u, Unsupported::UntypedSource { .. })));
    // One that cannot be looked at (a name longer than any) says so, not that it is missing.
    let unlooked = items(&format!("/{}", "a".repeat(300)));
    let said: Vec<String> = unlooked
        .iter()
        .filter(|u| matches!(u, Unsupported::UnlookedSource { .. } | Unsupported::UntypedSource { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("cannot be looked at here (") && said[0].contains("export as root"), "{said:?}");
}

/// A CPU limit finer than a millicore is rounded, and said to be.
#[test]
fn a_cpu_limit_finer_than_a_millicore_is_listed_as_rounded() {
    let items =
        |cpu: &str| export_text(&["baseline"], &format!("{CMD}[resources]\ncpu = {cpu}\n"), Kind::Pod).unsupported;
    let rounded: Vec<String> = items("0.0125")
        .iter()
        .filter(|u| matches!(u, Unsupported::CpuRounded { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(rounded, ["resources.cpu = 0.0125: Kubernetes counts thousandths of a core; exported as 13m"]);
    for exact in ["0.5", "2", "0.25", "0.01", "1.5", "0.333"] {
        assert!(!items(exact).iter().any(|u| matches!(u, Unsupported::CpuRounded { .. })), "{exact}");
    }
}

/// Each Pod Security Standards rule a pod breaks is put down to the
/// manifest's keys that make it so (a stderr item is at the first written
/// of them): only those whose value is a cause, none where no key sets the field.
#[test]
fn each_broken_rule_names_the_keys_that_break_it() {
    let keys_of = |text: &str| -> Vec<(String, Vec<String>)> {
        let text = format!("{CMD}{text}");
        let spec = common::check(&["privileged"], "t.toml", &text).spec.unwrap();
        let exported = export_text(&["privileged"], &text, Kind::Pod);
        let pod = exported.objects[0].pod_spec().unwrap();
        export::pss::violations(pod)
            .iter()
            .map(|v| {
                let kind = format!("{v:?}").split(['(', ' ']).next().unwrap().to_owned();
                (kind, export::unsupported::causes(v, &spec.manifest))
            })
            .collect()
    };
    let want = |rows: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
        rows.iter().map(|(k, keys)| ((*k).to_owned(), keys.iter().map(|k| (*k).to_owned()).collect())).collect()
    };
    assert_eq!(
        keys_of("[security]\nprivileged = true\n[namespaces]\nuser = \"host\"\n"),
        want(&[
            ("Privileged", &["/security/privileged"]),
            ("SeccompUnconfined", &["/security/privileged"]),
            ("RunAsRoot", &["/user"]),
            ("PrivilegeEscalation", &["/security/privileged"]),
            ("CapabilitiesNotDropped", &["/security/privileged", "/user"]),
        ])
    );
    assert_eq!(
        keys_of(
            "[namespaces]\nuser = \"host\"\nnetwork = \"host\"\npid = \"host\"\n[security]\ncapabilities = [\"SYS_ADMIN\", \"CHOWN\"]\nseccomp = \"unconfined\"\nno_new_privileges = false\n"
        ),
        want(&[
            ("HostNamespace", &["/namespaces/network"]),
            ("HostNamespace", &["/namespaces/pid"]),
            ("SeccompUnconfined", &["/security/seccomp"]),
            ("CapabilitiesBeyondBaseline", &["/security/capabilities/0"]),
            ("RunAsRoot", &["/user"]),
            ("PrivilegeEscalation", &["/security/no_new_privileges"]),
            ("CapabilitiesNotDropped", &["/security/no_new_privileges", "/user"]),
            // CHOWN is the first the rule names (the pod's list is sorted), the second in the manifest.
            ("CapabilitiesBeyondRestricted", &["/security/capabilities/1"]),
        ])
    );
    // Each hostPath volume at its own mount; a non-root user breaks no restricted rule.
    assert_eq!(
        keys_of(
            "user = 1000\n[[mounts]]\nsource = \"/etc\"\ntarget = \"/a\"\n[[mounts]]\nsource = \"/etc\"\ntarget = \"/b\"\n"
        ),
        want(&[("HostPath", &["/mounts/0/source"]), ("HostPath", &["/mounts/1/source"])])
    );
}
