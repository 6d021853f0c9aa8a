//! The committed schema is what the Rust types generate.

use std::path::Path;

#[test]
fn committed_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/workload.schema.json");
    let generated = serde_json::to_string_pretty(&paddock::model::workload_schema()).unwrap() + "\n";
    if std::env::var_os("PADDOCK_UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/workload.schema.json differs from what the Rust types generate; \
         regenerate it with `PADDOCK_UPDATE_SCHEMA=1 cargo test --test schema_file` and commit it"
    );
}

/// The workload schema is compiled into paddock by jsonschema's macro (no
/// run-time compilation on each start). It must judge every document as
/// the run-time compiler does with the same options: the same problems, in
/// the same words, at the same places.
mod built_in_and_run_time_agree {
    use paddock::validate::{Color, Schema, render};
    use proptest::prelude::*;

    /// Compiled once: compiling takes milliseconds, and so does the built-in
    /// schema's first description of an invalid document.
    static RUN_TIME: std::sync::LazyLock<Schema> = std::sync::LazyLock::new(|| {
        Schema::new(serde_json::from_str(paddock::validate::WORKLOAD_SCHEMA).unwrap()).unwrap()
    });
    static BUILT_IN: std::sync::LazyLock<Schema> = std::sync::LazyLock::new(Schema::workload);

    fn judged(schema: &Schema, text: &str) -> Vec<String> {
        match schema.parse::<toml::Value>(text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(|p| render(p, "t.toml", text, Color::Never)).collect(),
        }
    }

    /// Keys the schema knows (at the top and in its tables), and some it does not.
    const KEYS: &[&str] = &[
        "command",
        "env",
        "workdir",
        "user",
        "group",
        "hostname",
        "rootfs",
        "mounts",
        "namespaces",
        "security",
        "resources",
        "restart",
        "health",
        "after",
        "ports",
        "stop_signal",
        "stop_timeout",
        "path",
        "readonly",
        "source",
        "target",
        "idmap",
        "network",
        "pid",
        "privileged",
        "capabilities",
        "memory",
        "cpu",
        "pids",
        "policy",
        "backoff",
        "max_retries",
        "tcp",
        "http",
        "port",
        "interval",
        "retries",
        "on_unhealthy",
        "host_port",
        "container_port",
        "protocol",
        "nofile",
        "seccomp",
        "no_new_privileges",
        "bogus",
        "Command",
    ];

    fn leaf() -> impl Strategy<Value = toml::Value> {
        prop_oneof![
            any::<bool>().prop_map(toml::Value::Boolean),
            prop_oneof![Just(-1i64), Just(0), Just(80), Just(65536), Just(1 << 40), any::<i64>()]
                .prop_map(toml::Value::Integer),
            Just(toml::Value::Float(1.5)),
            prop_oneof![
                Just("/bin/true".to_owned()),
                Just("".to_owned()),
                Just("tmp".to_owned()),
                Just("512M".to_owned()),
                Just("8080:80".to_owned()),
                Just("always".to_owned()),
                Just("remap".to_owned()),
                Just("bridge".to_owned()),
                Just("10s".to_owned()),
                "[ -~]{0,12}",
            ]
            .prop_map(toml::Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = toml::Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
                proptest::collection::btree_map(proptest::sample::select(KEYS), inner, 0..4)
                    .prop_map(|m| toml::Value::Table(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    /// Half of them with a valid `command`, so that many are valid or
    /// nearly so, where a disagreement would hide.
    fn document() -> impl Strategy<Value = String> {
        (proptest::collection::btree_map(proptest::sample::select(KEYS), value(), 0..7), any::<bool>()).prop_map(
            |(m, with_command)| {
                let mut table: toml::Table = m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                if with_command {
                    table.insert("command".into(), toml::Value::Array(vec![toml::Value::String("/bin/true".into())]));
                }
                toml::to_string(&table).unwrap_or_default()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn on_any_document(text in document()) {
            prop_assert_eq!(judged(&BUILT_IN, &text), judged(&RUN_TIME, &text));
        }
    }

    #[test]
    fn on_the_examples_and_the_error_tables_inputs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workloads");
        let mut texts: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect();
        texts.extend(
            [
                "user = 0\n",
                "command = []\nuser = -1\nworkdir = \"tmp\"\n[namespaces]\nuser = \"rmap\"\n",
                "command = \"/bin/true\"\n",
                "command = [\"x\"]\n[[mounts]]\ntarget = \"/data\"\n",
                "command = [\"x\"]\n[security]\nprivilege = false\n",
                "command = [\"x\"]\nports = [\"99999:80\", 8080]\n[health]\ntcp = 0\nhttp = { port = 1 }\n",
            ]
            .map(str::to_owned),
        );
        let mut judged_some = 0;
        for text in &texts {
            let built_in = judged(&BUILT_IN, text);
            assert_eq!(built_in, judged(&RUN_TIME, text), "{text}");
            judged_some += usize::from(!built_in.is_empty());
        }
        assert!(judged_some >= 6, "the bad inputs must be refused");
    }
}
