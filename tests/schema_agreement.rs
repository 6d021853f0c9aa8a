//! Property: any manifest the typed model can hold serializes to TOML that
//! the committed JSON Schema accepts and that parses back to the same value,
//! so the schema never refuses what the types allow (and editors using the
//! schema never flag a file paddock would take).

use std::collections::BTreeMap;
use std::path::PathBuf;

use paddock::model::*;
use proptest::prelude::*;

fn abs_path() -> impl Strategy<Value = PathBuf> {
    proptest::collection::vec("[a-zA-Z0-9_.-]{1,12}", 0..4)
        .prop_map(|parts| PathBuf::from(format!("/{}", parts.join("/"))))
}

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..10_000_000_000_000).prop_map(|nanos| format_nanos(nanos).parse().unwrap())
}

fn format_nanos(n: u64) -> String {
    format!("{}.{:06}ms", n / 1_000_000, n % 1_000_000)
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn manifest() -> impl Strategy<Value = Manifest> {
    let head = (
        proptest::collection::vec("[ -~]{1,20}", 1..5),
        proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,10}", "[ -~]{0,20}", 0..4),
        abs_path(),
        any::<u32>().prop_map(|u| u.min(u32::MAX - 1)),
        any::<u32>().prop_map(|g| g.min(u32::MAX - 1)),
        proptest::option::of("[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?"),
        (abs_path(), any::<bool>()).prop_map(|(path, readonly)| Rootfs { path, readonly }),
        proptest::collection::vec(
            (abs_path(), abs_path(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(source, target, readonly, idmap, setuid, devices, kernel_filesystems)| Mount {
                    source,
                    target,
                    readonly,
                    idmap,
                    setuid,
                    devices,
                    kernel_filesystems,
                }),
            0..3,
        ),
    );
    let namespaces = (
        pick(&[UserNamespace::Remap, UserNamespace::Host]),
        pick(&[0u8, 1, 2, 3]).prop_map(|n| match n {
            0 => Network::Private,
            1 => Network::Host,
            2 => Network::Cni("bridge".into()),
            _ => Network::Cni("lan-2.v".into()),
        }),
        pick(&[SharedOrPrivate::Private, SharedOrPrivate::Host]),
    )
        .prop_map(|(user, network, pid)| Namespaces { user, network, pid });
    let ports =
        proptest::collection::vec(
            (
                proptest::option::of(pick(&[0u8, 1, 2]).prop_map(|n| {
                    ["127.0.0.1", "::1", "192.0.2.7"][usize::from(n)].parse::<std::net::IpAddr>().unwrap()
                })),
                1u16..,
                1u16..,
                pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
            )
                .prop_map(|(host_ip, host_port, container_port, protocol)| PortMapping {
                    host_ip,
                    host_port,
                    container_port,
                    protocol,
                }),
            0..3,
        );
    let security = (
        any::<bool>(),
        proptest::collection::vec(pick(Capability::ALL), 0..4),
        any::<bool>(),
        pick(&[Seccomp::Default, Seccomp::Unconfined]),
    )
        .prop_map(|(privileged, capabilities, no_new_privileges, seccomp)| Security {
            privileged,
            capabilities,
            no_new_privileges,
            seccomp,
        });
    let resources = (
        proptest::option::of((1u64..1 << 30).prop_map(|k| Size::from_bytes(k << 10))),
        proptest::option::of(1u32..),
        proptest::option::of(0.01f64..=1024.0),
        proptest::option::of(1u32..=1_048_576),
    )
        .prop_map(|(memory, pids, cpu, nofile)| Resources { memory, pids, cpu, nofile });
    let restart = (
        pick(&[RestartPolicy::Always, RestartPolicy::OnFailure, RestartPolicy::Never]),
        any::<u32>(),
        duration(),
        duration(),
        duration(),
    )
        .prop_map(|(policy, max_retries, backoff, backoff_max, reset_after)| Restart {
            policy,
            max_retries,
            backoff,
            backoff_max,
            reset_after,
        });
    let stop = (pick(Signal::ALL), duration()).prop_map(|(signal, timeout)| Stop { signal, timeout });
    let probe = prop_oneof![
        proptest::collection::vec("[ -~]{1,20}", 1..4).prop_map(|argv| (Some(argv), None, None)),
        (1u16..).prop_map(|port| (None, Some(port), None)),
        ((1u16..), "/[!-~]{0,20}").prop_map(|(port, path)| (None, None, Some(HttpProbe { port, path }))),
    ];
    let health = proptest::option::of(
        (probe, duration(), duration(), 1u32..=1000, duration(), pick(&[OnUnhealthy::Restart, OnUnhealthy::Mark]))
            .prop_map(|((command, tcp, http), interval, timeout, retries, start_period, on_unhealthy)| Health {
                command,
                tcp,
                http,
                interval,
                timeout,
                retries,
                start_period,
                on_unhealthy,
            }),
    );
    let after = proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 0..4);
    let order = (after, health);
    (head, namespaces, ports, security, resources, restart, stop, order).prop_map(
        |(
            (command, env, workdir, user, group, hostname, rootfs, mounts),
            namespaces,
            ports,
            security,
            resources,
            restart,
            stop,
            (after, health),
        )| Manifest {
            command,
            env: env.into_iter().collect::<BTreeMap<_, _>>(),
            workdir,
            user,
            group,
            hostname,
            rootfs,
            mounts,
            ports,
            namespaces,
            security,
            resources,
            restart,
            stop,
            after,
            health,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_schema_accepts_what_the_types_can_hold(m in manifest()) {
        let schema: serde_json::Value = serde_json::from_str(paddock::validate::WORKLOAD_SCHEMA).unwrap();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let text = toml::to_string(&m).unwrap();
        let as_json: serde_json::Value = toml::from_str(&text).unwrap();
        let errors: Vec<String> = validator.iter_errors(&as_json).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        prop_assert!(errors.is_empty(), "{errors:?}\n{text}");
        let back: Manifest = toml::from_str(&text).unwrap();
        prop_assert_eq!(back, m);
    }
}

#[test]
fn durations_with_fractions_round_trip_through_the_pattern() {
    let schema: serde_json::Value = serde_json::from_str(paddock::validate::WORKLOAD_SCHEMA).unwrap();
    let pattern = schema["$defs"]["Duration"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, paddock::model::DURATION_PATTERN);
    for n in [0, 1, 999_999, 1_000_000, 1_500_000_000, 3_600_000_000_000] {
        let d: Duration = format_nanos(n).parse().unwrap();
        assert_eq!(d.as_std().as_nanos(), u128::from(n));
        assert_eq!(d.to_string().parse::<Duration>().unwrap(), d, "{d}");
    }
}
