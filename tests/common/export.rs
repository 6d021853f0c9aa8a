//! Running `paddock export kubernetes` and checking what it writes
//! against the Kubernetes OpenAPI schemas (tests/export.rs, tests/export_cli.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

pub const IMAGE: &str = "docker.io/library/busybox:1.37";
/// The version the objects are written for (paddock::export::KUBERNETES_VERSION).
pub const KUBERNETES: &str = "1.35.0";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn export(args: &[&str]) -> Run {
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
pub fn kubernetes_validate() -> PathBuf {
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

pub fn validate_offline(yaml: &str) {
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
