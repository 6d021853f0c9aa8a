//! The Pod Security Standards' baseline and restricted checks, written
//! from their documentation for the tests and independent of
//! paddock::export::pss: what an exported pod claims is checked here.

use paddock::export::Level;
use serde_json::Value;

/// The Pod Security Standards (v1.35), baseline then restricted, applied
/// to a pod spec as the admission controller reads it.
pub fn pss_level(spec: &Value) -> Level {
    let t = |v: &Value| v.as_bool() == Some(true);
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let pod_sc = &spec["securityContext"];
    let seccomp = |c: &Value| {
        c["securityContext"]["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str())
            .map(str::to_owned)
    };
    // The standard's list, written here again: the checker must not share
    // a mistake with the code it checks (paddock::export::pss).
    const BASELINE_CAPS: &[&str] = &[
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    const SAFE_SYSCTLS: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    let selinux_ok = |o: &Value| {
        o.is_null()
            || (o["type"].as_str().is_none_or(|ty| {
                ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"].contains(&ty)
            }) && o["user"].is_null()
                && o["role"].is_null())
    };
    let apparmor_ok =
        |o: &Value| o.is_null() || ["RuntimeDefault", "Localhost"].contains(&o["type"].as_str().unwrap_or(""));
    let baseline = !t(&spec["hostNetwork"])
        && !t(&spec["hostPID"])
        && !t(&spec["hostIPC"])
        && !t(&pod_sc["windowsOptions"]["hostProcess"])
        && spec["volumes"].as_array().into_iter().flatten().all(|v| v["hostPath"].is_null())
        && selinux_ok(&pod_sc["seLinuxOptions"])
        && apparmor_ok(&pod_sc["appArmorProfile"])
        && pod_sc["sysctls"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| SAFE_SYSCTLS.contains(&s["name"].as_str().unwrap_or("")))
        && pod_sc["seccompProfile"]["type"] != "Unconfined"
        && containers.iter().all(|c| {
            let sc = &c["securityContext"];
            !t(&sc["privileged"])
                && !t(&sc["windowsOptions"]["hostProcess"])
                && sc["capabilities"]["add"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|a| BASELINE_CAPS.contains(&a.as_str().unwrap_or("")))
                && c["ports"].as_array().into_iter().flatten().all(|p| p["hostPort"].as_i64().unwrap_or(0) == 0)
                && sc["procMount"].as_str().is_none_or(|m| m == "Default")
                && selinux_ok(&sc["seLinuxOptions"])
                && apparmor_ok(&sc["appArmorProfile"])
                && sc["seccompProfile"]["type"] != "Unconfined"
        });
    if !baseline {
        return Level::Privileged;
    }
    const RESTRICTED_VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
        "name",
    ];
    let restricted = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|v| v.as_object().unwrap().keys().all(|k| RESTRICTED_VOLUMES.contains(&k.as_str())))
        && pod_sc["runAsUser"].as_i64() != Some(0)
        && containers.iter().all(|c| {
            let sc = &c["securityContext"];
            let non_root = sc["runAsNonRoot"].as_bool().or(pod_sc["runAsNonRoot"].as_bool()) == Some(true);
            sc["allowPrivilegeEscalation"].as_bool() == Some(false)
                && non_root
                && sc["runAsUser"].as_i64() != Some(0)
                && seccomp(c).is_some_and(|s| s == "RuntimeDefault" || s == "Localhost")
                && sc["capabilities"]["drop"].as_array().is_some_and(|d| d.iter().any(|c| c == "ALL"))
                && sc["capabilities"]["add"].as_array().into_iter().flatten().all(|a| a == "NET_BIND_SERVICE")
        });
    if restricted { Level::Restricted } else { Level::Baseline }
}
