//! A workload's objects around its pod: the Pod or Deployment itself, a
//! Service for its published ports, and the NetworkPolicy that keeps its
//! network as closed as paddock kept it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kubernetes::protocol_name;
use super::{Kind, Level, Options, Unsupported};
use crate::model::{Network, PortMapping};
use crate::validate::WorkloadSpec;

/// The label that ties a workload's objects to its pod.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label of the pods on paddock's bridge network: on the bridge,
/// workloads reach each other on every port.
pub const BRIDGE_LABEL: &str = "paddock/network";
/// The annotation on a workload's object naming the level it claims.
pub const LEVEL_ANNOTATION: &str = "paddock/pod-security";

/// One Kubernetes object of the export.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    NetworkPolicy(Box<NetworkPolicy>),
}

impl Object {
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let yaml = match self {
            Object::Namespace(o) => serde_yaml_ng::to_string(o),
            Object::Pod(o) => serde_yaml_ng::to_string(o),
            Object::Deployment(o) => serde_yaml_ng::to_string(o),
            Object::Service(o) => serde_yaml_ng::to_string(o),
            Object::NetworkPolicy(o) => serde_yaml_ng::to_string(o),
        };
        yaml.map(|y| quote_for_yaml_1_1(&y))
    }

    /// The object's kind, as its YAML names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::NetworkPolicy(_) => "NetworkPolicy",
        }
    }

    /// The object's name (`metadata.name`).
    pub fn name(&self) -> Option<&str> {
        match self {
            Object::Namespace(o) => o.metadata.name.as_deref(),
            Object::Pod(o) => o.metadata.name.as_deref(),
            Object::Deployment(o) => o.metadata.name.as_deref(),
            Object::Service(o) => o.metadata.name.as_deref(),
            Object::NetworkPolicy(o) => o.metadata.name.as_deref(),
        }
    }

    /// The pod spec of a Pod or a Deployment's template.
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match self {
            Object::Pod(p) => p.spec.as_ref(),
            Object::Deployment(d) => d.spec.as_ref()?.template.spec.as_ref(),
            _ => None,
        }
    }
}

/// serde_yaml_ng quotes the strings a YAML 1.2 reader would take for
/// something else, not those a YAML 1.1 reader would: kubectl's (go-yaml
/// v2) reads `on`, `yes` and `y` as booleans, and PyYAML (kubernetes-
/// validate's) `1_000` as a number, `2001-12-14` as a date and `=` as a
/// value key. Those plain values of its block output are quoted here;
/// the rest is left as written. (Its output never folds a plain scalar
/// across lines; the lines of a block scalar, `|-`, are left alone.)
fn quote_for_yaml_1_1(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    // The indentation of a block scalar's header, while in its lines.
    let mut block: Option<usize> = None;
    for line in yaml.split_inclusive('\n') {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let indent = text.len() - text.trim_start_matches(' ').len();
        if let Some(header) = block {
            if text.trim().is_empty() || indent > header {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let mut rest = &text[indent..];
        let mut dashes = 0;
        while let Some(after) = rest.strip_prefix("- ") {
            (rest, dashes) = (after, dashes + 1);
        }
        let item = dashes > 0;
        // `key: value`, or a sequence's `- value` (a plain value holds no
        // `: `); a quoted value is the serializer's, and right.
        let (value, keyed) = match rest.find(": ") {
            _ if rest.starts_with(['\'', '"', '#']) => (None, false),
            Some(at) => (Some(&rest[at + 2..]), true),
            None if item => (Some(rest), false),
            None => (None, false),
        };
        match value {
            Some(v) if v.starts_with(['|', '>']) => {
                // Its lines are indented past its key's (`- key: |-`
                // puts the key two columns past the dash), or, for a
                // sequence item that is the block itself (`- |-`), past
                // its dash: the lines start two columns after the dash.
                block = Some(if keyed { indent + 2 * dashes } else { indent + 2 * (dashes - 1) });
                out.push_str(line);
            }
            Some(v) if yaml_1_1_reads_otherwise(v) => {
                out.push_str(&text[..text.len() - v.len()]);
                out.push('\'');
                out.push_str(&v.replace('\'', "''"));
                out.push('\'');
                out.push_str(&line[text.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Whether a plain value the serializer left unquoted (a string, or a
/// number or boolean of the object) is one a YAML 1.1 reader takes for
/// something it is not: a string that looks like a YAML 1.1 boolean,
/// null, value key, number, or date (over-quoting such a string changes
/// nothing).
fn yaml_1_1_reads_otherwise(v: &str) -> bool {
    // The object's own numbers and booleans, as YAML 1.2 writes them (a
    // string that reads as a finite number serde_yaml_ng quotes itself;
    // one it leaves plain, such as `1.0e+400`, is quoted below).
    let number = v.parse::<i64>().is_ok() || v.parse::<f64>().is_ok_and(f64::is_finite);
    if number || matches!(v, "true" | "false" | "null") {
        return false;
    }
    let word = v.to_ascii_lowercase();
    if matches!(word.as_str(), "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~" | "=" | "<<") {
        return true;
    }
    // Numbers with `_`, sexagesimals (`1:20`), 0b/0x/octal, floats, and
    // dates and times: a digit (or a sign or dot before one) first, then
    // only what those are written with.
    let mut chars = v.chars();
    let numeric_start = match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('+' | '-' | '.') => chars.next().is_some_and(|c| c.is_ascii_digit() || c == '.'),
        _ => false,
    };
    numeric_start && v.chars().all(|c| c.is_ascii_hexdigit() || "_:.+-xXoObBtTzZ ".contains(c))
}

/// The workload's objects, its Pod or Deployment first.
pub fn for_workload(
    spec: &WorkloadSpec,
    pod: PodSpec,
    options: &Options,
    level: Level,
    unsupported: &mut Vec<Unsupported>,
) -> Vec<Object> {
    let name = spec.name.to_string();
    let selector: BTreeMap<String, String> = [(NAME_LABEL.to_owned(), name.clone())].into();
    // A pod on the bridge says so, for the other bridge pods' policies.
    let mut pod_labels = selector.clone();
    if spec.manifest.namespaces.network.cni() == Some(crate::model::BRIDGE) {
        pod_labels.insert(BRIDGE_LABEL.to_owned(), crate::model::BRIDGE.to_owned());
    }
    let meta = |annotations: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(options.namespace.clone()),
        labels: Some(selector.clone()),
        annotations,
        ..Default::default()
    };
    let pod_meta = |annotations| ObjectMeta { labels: Some(pod_labels.clone()), ..meta(annotations) };
    let claim = Some([(LEVEL_ANNOTATION.to_owned(), level.name().to_owned())].into());
    let mut objects = vec![match options.kind {
        Kind::Pod => Object::Pod(Box::new(Pod { metadata: pod_meta(claim), spec: Some(pod), ..Default::default() })),
        Kind::Deployment => Object::Deployment(Box::new(Deployment {
            metadata: meta(claim),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
                // paddock stops a workload's old run before its new one
                // starts: never two at once, whatever their volumes.
                strategy: Some(DeploymentStrategy { type_: Some("Recreate".to_owned()), rolling_update: None }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(pod_labels.clone()), ..Default::default() }),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            ..Default::default()
        })),
    }];
    let ports = &spec.manifest.ports;
    if !ports.is_empty() {
        let service = service_name(&name, unsupported);
        objects.push(Object::Service(Box::new(Service {
            metadata: ObjectMeta { name: Some(service), ..meta(None) },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(selector.clone()),
                ports: Some(service_ports(ports, unsupported)),
                ..Default::default()
            }),
            ..Default::default()
        })));
    }
    if let Some(policy) = network_policy(&spec.manifest.namespaces.network, ports, &selector) {
        objects.push(Object::NetworkPolicy(Box::new(NetworkPolicy { metadata: meta(None), spec: Some(policy) })));
        let bridge = spec.manifest.namespaces.network.cni() == Some(crate::model::BRIDGE);
        unsupported.push(Unsupported::NetworkPolicy { bridge });
    }
    objects
}

/// A Service's name is a DNS-1035 label: it starts with a letter.
fn service_name(workload: &str, unsupported: &mut Vec<Unsupported>) -> String {
    if workload.starts_with(|c: char| c.is_ascii_lowercase()) {
        return workload.to_owned();
    }
    let mut service = format!("w-{workload}");
    service.truncate(63);
    let service = service.trim_end_matches('-').to_owned();
    unsupported.push(Unsupported::ServiceName { workload: workload.to_owned(), service: service.clone() });
    service
}

/// Each published port as the Service's port: the host port is the
/// Service's, the workload's port its target. A Service has one address,
/// so two host addresses on one port and protocol are one Service port,
/// with the first one's target; another target on it is listed as lost.
fn service_ports(ports: &[PortMapping], unsupported: &mut Vec<Unsupported>) -> Vec<ServicePort> {
    let mut carried: Vec<PortMapping> = Vec::new();
    for p in ports {
        // 0.0.0.0 (or ::) is every address, as no address is (the portmap plugin is given none).
        if p.host_ip.is_some_and(|ip| !ip.is_unspecified()) {
            unsupported.push(Unsupported::HostIp(*p));
        }
        match carried.iter().find(|c| c.host_port == p.host_port && c.protocol == p.protocol) {
            Some(kept) if kept.container_port != p.container_port => {
                unsupported.push(Unsupported::PortMerged { lost: *p, kept: *kept });
            }
            Some(_) => unsupported.push(Unsupported::Published(*p)),
            None => {
                unsupported.push(Unsupported::Published(*p));
                carried.push(*p);
            }
        }
    }
    carried
        .iter()
        .map(|p| {
            let protocol = protocol_name(p.protocol);
            ServicePort {
                name: Some(format!("{}-{}", protocol.to_ascii_lowercase(), p.host_port)),
                port: i32::from(p.host_port),
                target_port: Some(IntOrString::Int(i32::from(p.container_port))),
                protocol: Some(protocol.to_owned()),
                ..Default::default()
            }
        })
        .collect()
}

/// paddock's private network reaches nothing and is reached from nowhere;
/// its bridge is reached only at the published ports. The pod network is
/// open by default, so a NetworkPolicy says the same (where the cluster's
/// network plugin enforces NetworkPolicy).
fn network_policy(
    network: &Network,
    ports: &[PortMapping],
    selector: &BTreeMap<String, String>,
) -> Option<NetworkPolicySpec> {
    let pod_selector = Some(LabelSelector { match_labels: Some(selector.clone()), ..Default::default() });
    match network {
        Network::Private => Some(NetworkPolicySpec {
            pod_selector,
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ..Default::default()
        }),
        Network::Cni(name) if name == crate::model::BRIDGE => {
            let mut allowed: Vec<NetworkPolicyPort> = Vec::new();
            for p in ports {
                let port = NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(p.container_port))),
                    protocol: Some(protocol_name(p.protocol).to_owned()),
                    end_port: None,
                };
                if !allowed.contains(&port) {
                    allowed.push(port);
                }
            }
            // From anywhere to the published ports; from the other pods
            // on the bridge (of this namespace) to every port, as on
            // paddock's bridge.
            let bridge = LabelSelector {
                match_labels: Some([(BRIDGE_LABEL.to_owned(), crate::model::BRIDGE.to_owned())].into()),
                ..Default::default()
            };
            let from_bridge = NetworkPolicyIngressRule {
                ports: None,
                from: Some(vec![NetworkPolicyPeer { pod_selector: Some(bridge), ..Default::default() }]),
            };
            let published =
                (!allowed.is_empty()).then_some(NetworkPolicyIngressRule { ports: Some(allowed), from: None });
            Some(NetworkPolicySpec {
                pod_selector,
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(published.into_iter().chain([from_bridge]).collect()),
                egress: None,
            })
        }
        Network::Cni(_) | Network::Host => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only plain values are quoted: not the object's numbers and
    /// booleans, not keys, not what is already quoted, not the lines of a
    /// block scalar.
    #[test]
    fn yaml_1_1_quoting_touches_plain_values_only() {
        let yaml = "cmd:\n- |-\n  echo mode: on\n  - y\n- - |\n    a: no\na: yes\nport: 80\nratio: 0.5\nflag: true\nlist:\n- on\n- - 1_000\n- name: y\n  value: |-\n    yes\n    on: no\n- 'no'\n- key: |-\n    x\n  mode: on\nb: 10m\nc: 2001-12-14\nd: don't\ne: 1.0e+400\n";
        let want = "cmd:\n- |-\n  echo mode: on\n  - y\n- - |\n    a: no\na: 'yes'\nport: 80\nratio: 0.5\nflag: true\nlist:\n- 'on'\n- - '1_000'\n- name: 'y'\n  value: |-\n    yes\n    on: no\n- 'no'\n- key: |-\n    x\n  mode: 'on'\nb: 10m\nc: '2001-12-14'\nd: don't\ne: '1.0e+400'\n";
        assert_eq!(quote_for_yaml_1_1(yaml), want);
    }
}
