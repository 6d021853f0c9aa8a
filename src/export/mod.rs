//! `paddock export kubernetes`, its pure core: a validated workload in,
//! typed Kubernetes objects and the list of what they cannot say out. No
//! I/O: the command (src/cli/export.rs) reads the files and prints.

pub mod image;
pub mod kubernetes;
pub mod objects;
pub mod pss;
pub mod reference;
pub mod unsupported;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use objects::Object;
pub use pss::{Level, Violation};
pub use reference::ImageRef;
pub use unsupported::Unsupported;

use crate::validate::WorkloadSpec;

/// The Kubernetes version whose API the objects are written for (the
/// `k8s-openapi` feature in Cargo.toml, and what tests validate against).
pub const KUBERNETES_VERSION: &str = "1.35";

/// What each workload becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Deployment,
}

/// A workload as exported: its objects (the Pod or Deployment first),
/// what they cannot say, and the Pod Security Standards level they claim.
#[derive(Debug, Clone)]
pub struct Exported {
    pub objects: Vec<Object>,
    pub unsupported: Vec<Unsupported>,
    /// The level the namespace must allow: the one the manifest's
    /// policies stand for, or lower when the pod passes only that.
    pub level: Level,
    /// The strictest level the pod passes, whatever the policies.
    pub passes: Level,
}

/// The settings of one export run.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub namespace: String,
    /// The level of the policies the manifests passed (`Level::of_policies`).
    pub policy_level: Level,
    /// The daemon gave every workload the same id slice.
    pub shared_slice: bool,
}

/// The objects for one valid workload, run from `image`.
pub fn export(spec: &WorkloadSpec, image: &ImageRef, options: &Options) -> Exported {
    let (pod, mut unsupported) = kubernetes::pod_spec(spec, image.as_str(), options.kind);
    if options.shared_slice && spec.manifest.namespaces.remapped() {
        unsupported.push(Unsupported::SharedSlice);
    }
    let violations = pss::violations(&pod);
    let passes = pss::passes(&violations);
    let level = passes.min(options.policy_level);
    // What the policy promised and the pod does not keep, said rule by rule.
    for violation in violations.into_iter().filter(|v| v.level() <= options.policy_level) {
        let keys = unsupported::causes(&violation, &spec.manifest);
        unsupported.push(Unsupported::Pss { claimed: options.policy_level, violation, keys });
    }
    let objects = objects::for_workload(spec, pod, options, level, &mut unsupported);
    Exported { objects, unsupported, level, passes }
}

/// The namespace the objects go in, labelled so the cluster enforces the
/// least strict level any of them claims (and no less), pinned to the
/// version the export was written for.
pub fn namespace(name: &str, level: Level) -> Namespace {
    let labels = [
        ("pod-security.kubernetes.io/enforce".to_owned(), level.name().to_owned()),
        ("pod-security.kubernetes.io/enforce-version".to_owned(), format!("v{KUBERNETES_VERSION}")),
    ];
    Namespace {
        metadata: ObjectMeta { name: Some(name.to_owned()), labels: Some(labels.into()), ..Default::default() },
        ..Default::default()
    }
}

/// The YAML stream: each object as a document, the workload's own with
/// what it cannot say as comments at its top (`header` lines, then one
/// `# paddock: not expressible in Kubernetes: ...` per item).
pub fn render(documents: &[(Vec<String>, Object)]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (comments, object) in documents {
        out.push_str("---\n");
        for line in comments {
            out.push_str("# ");
            out.push_str(&one_line(line));
            out.push('\n');
        }
        out.push_str(&object.to_yaml()?);
    }
    Ok(out)
}

/// `text` as one line that stays one line, in a YAML comment or on a
/// terminal: each control character (`\r` and `\n` among them, and
/// U+0085) and U+2028 and U+2029 (line breaks to YAML 1.1 parsers, PyYAML's
/// among them) is written as Rust escapes it (`\r`, `\u{2028}`). A break
/// left in a comment would end it, and what follows would be read as YAML:
/// a mount source or a directory's name could add objects to the stream.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The comment lines at the top of a workload's object.
pub fn comments(file: &str, name: &str, exported: &Exported) -> Vec<String> {
    let mut lines = vec![format!(
        "paddock: {name} from {file}; Pod Security Standard claimed: {} (the pod passes {})",
        exported.level, exported.passes
    )];
    lines.extend(exported.unsupported.iter().map(|u| format!("paddock: {NOT_EXPRESSIBLE}{u}")));
    lines
}

/// How each unsupported item is introduced, in the YAML and on stderr.
pub const NOT_EXPRESSIBLE: &str = "not expressible in Kubernetes: ";
