//! The README's examples are real: its manifest is valid and its example
//! policy compiles and refuses what it says it refuses.

mod common;

use paddock::validate::{HostChecks, Validator, load_policies};

fn blocks(lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{lang}\n");
    readme.split(&fence).skip(1).map(|rest| rest.split("```").next().unwrap().to_owned()).collect()
}

#[test]
fn the_full_manifest_in_the_readme_is_valid() {
    let manifest = blocks("toml")
        .into_iter()
        .find(|b| b.contains("command =") && b.contains("[restart]"))
        .expect("README shows a full manifest");
    let checked = common::check(&["baseline"], "web.toml", &manifest);
    assert!(checked.spec.is_some(), "{:?}", checked.problems);
}

#[test]
fn the_example_policy_in_the_readme_works() {
    let policy = blocks("json").into_iter().next().expect("README shows a policy");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("no-root.json"), policy).unwrap();
    let policies = load_policies(&["no-root".into()], Some(dir.path()), std::path::Path::new("/v")).unwrap();
    let v = Validator::new(policies);
    let rules = |text: &str| -> Vec<String> {
        v.validate("t.toml", text, HostChecks::Skip).problems.iter().filter_map(|p| p.rule.clone()).collect()
    };
    assert_eq!(rules("command = [\"x\"]\n"), ["not-root"]);
    assert_eq!(
        rules("command = [\"x\"]\nuser = 1000\n[[mounts]]\nsource = \"/etc\"\ntarget = \"/e\"\n"),
        ["data-under-srv"]
    );
    assert_eq!(
        rules("command = [\"x\"]\nuser = 1000\n[[mounts]]\nsource = \"/srv/d\"\ntarget = \"/d\"\n"),
        Vec::<String>::new()
    );
}

#[test]
fn the_configuration_in_the_readme_is_valid_and_is_the_defaults() {
    let text =
        blocks("toml").into_iter().find(|b| b.contains("resync_interval")).expect("README shows the configuration");
    let parsed = paddock::config::Config::parse(std::path::Path::new("paddock.toml"), text).unwrap();
    assert_eq!(parsed, paddock::config::Config::default());
}

/// README's manifest reference, rendered from the schema's descriptions.
fn manifest_reference(schema: &serde_json::Value) -> String {
    use serde_json::Value;
    let defs = &schema["$defs"];
    // An optional table is `anyOf: [{"$ref": ...}, {"type": "null"}]`.
    let reference = |v: &Value| -> Option<String> {
        let direct = v.get("$ref").and_then(Value::as_str);
        let optional = v["anyOf"].as_array().and_then(|a| a.iter().find_map(|x| x.get("$ref")?.as_str()));
        direct.or(optional).map(|r| r.trim_start_matches("#/$defs/").to_owned())
    };
    let resolve = |v: &Value| -> Value {
        match reference(v) {
            Some(r) => defs[r.as_str()].clone(),
            None => v.clone(),
        }
    };
    let kind = |v: &Value| -> String {
        let target = resolve(v);
        let name = reference(v);
        match (name.as_deref(), target.get("enum")) {
            (Some("Signal"), _) => "signal name".to_owned(),
            (Some("Capability"), _) => "capability".to_owned(),
            (Some("Duration"), _) => "duration".to_owned(),
            (Some("Size"), _) => "size".to_owned(),
            (_, Some(values)) => {
                values.as_array().unwrap().iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(" \\| ")
            }
            _ => match target["type"].as_str() {
                Some("array") => format!("array of {}", {
                    let item = &v["items"];
                    let inner = resolve(item);
                    match item.get("$ref").and_then(Value::as_str) {
                        Some(r) if r.ends_with("Capability") => "capabilities".to_owned(),
                        Some(_) if inner["type"] == "object" => "tables".to_owned(),
                        _ => format!("{}s", inner["type"].as_str().unwrap_or("value")),
                    }
                }),
                Some("object") if target.get("properties").is_none() => "table of strings".to_owned(),
                Some(t) => t.to_owned(),
                // Optional: ["integer", "null"].
                None => match target["type"].as_array().and_then(|t| t.iter().find(|t| *t != "null")) {
                    Some(Value::String(t)) if t == "array" => "array of strings".to_owned(),
                    Some(Value::String(t)) => t.to_owned(),
                    _ => "value".to_owned(),
                },
            },
        }
    };
    let default = |v: &Value, required: bool| -> String {
        match v.get("default") {
            _ if required => "required".to_owned(),
            Some(Value::Object(_)) | None => "—".to_owned(),
            Some(d) => format!("`{d}`"),
        }
    };
    let table = |object: &Value, prefix: &str| -> String {
        let required: Vec<&str> =
            object["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let mut out = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
        for (key, v) in object["properties"].as_object().unwrap() {
            let target = resolve(v);
            if target["type"] == "object" && target.get("properties").is_some() {
                continue;
            }
            if v["type"] == "array" && resolve(&v["items"])["type"] == "object" {
                continue;
            }
            let description = v["description"].as_str().or(target["description"].as_str()).unwrap_or("");
            let description = description.replace('|', "\\|").replace('\n', " ");
            out += &format!(
                "| `{prefix}{key}` | {} | {} | {description} |\n",
                kind(v),
                default(v, required.contains(&key.as_str()))
            );
        }
        out
    };
    let mut out = String::from("Top-level keys:\n\n");
    out += &table(schema, "");
    // Each table, and the tables within it (`[health.http]`).
    let mut sections: Vec<(String, Value)> =
        schema["properties"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut i = 0;
    while i < sections.len() {
        let (key, v) = sections[i].clone();
        i += 1;
        let (section, target) = if v["type"] == "array" {
            (format!("[[{key}]]"), resolve(&v["items"]))
        } else {
            (format!("[{key}]"), resolve(&v))
        };
        if target["type"] != "object" || target.get("properties").is_none() {
            continue;
        }
        let description = v["description"].as_str().or(target["description"].as_str()).unwrap_or("");
        out += &format!("\n`{section}`: {description}\n\n");
        out += &table(&target, "");
        let nested: Vec<(String, Value)> = target["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, inner)| resolve(inner).get("properties").is_some())
            .map(|(k, inner)| (format!("{key}.{k}"), inner.clone()))
            .collect();
        sections.splice(i..i, nested);
    }
    out
}

#[test]
fn the_manifest_reference_in_the_readme_is_the_schemas() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("schemas/workload.schema.json")).unwrap()).unwrap();
    let generated = manifest_reference(&schema);
    let (begin, end) = (
        "<!-- manifest reference: generated from the schema by tests/readme.rs -->\n",
        "<!-- end of manifest reference -->",
    );
    let path = root.join("README.md");
    let region = |readme: &str| {
        let start = readme.find(begin).expect("README has the manifest reference's begin marker") + begin.len();
        let stop = readme[start..].find(end).expect("and its end marker") + start;
        (start, stop)
    };
    if std::env::var_os("PADDOCK_UPDATE_README").is_some() {
        let readme = std::fs::read_to_string(&path).unwrap();
        let (start, stop) = region(&readme);
        std::fs::write(&path, format!("{}{generated}{}", &readme[..start], &readme[stop..])).unwrap();
    }
    let readme = std::fs::read_to_string(&path).unwrap();
    let (start, stop) = region(&readme);
    assert!(
        readme[start..stop] == generated,
        "README's manifest reference differs from the schema's descriptions; regenerate it with \
         `PADDOCK_UPDATE_README=1 cargo test --test readme` and commit it"
    );
}

#[test]
fn the_readme_points_only_at_what_the_repository_holds() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for outside in ["DESIGN.md", "../shared", "STYLE.md", "HOST-FACTS.md"] {
        assert!(!readme.contains(outside), "README.md refers to {outside}, which is not in the repository");
    }
}

#[test]
fn the_status_json_fields_are_the_readmes() {
    use paddock::protocol::{Change, IdMap, ProbeOutcome, WorkloadDetail, WorkloadStatus};
    let map = Some(IdMap { host_start: 1, size: 1 });
    let status = WorkloadStatus {
        name: "web".into(),
        state: "running".into(),
        pid: Some(1),
        uid_map: map.clone(),
        gid_map: map,
        restarts: 0,
        last_exit: None,
        error: None,
        file_invalid: true,
        start_error: Some(String::new()),
        uptime_seconds: None,
        manifest: String::new(),
        held: false,
        network: Some("bridge".into()),
        addresses: vec![String::new()],
        ports: vec![String::new()],
        health: Some("healthy".into()),
        waiting_for: vec![String::new()],
    };
    let detail = WorkloadDetail {
        status,
        effective_manifest: None,
        changes: vec![Change { time: String::new(), event: String::new() }],
        log: String::new(),
        start_latency_ms: None,
        probes: vec![ProbeOutcome { time: String::new(), ok: true, output: String::new() }],
    };
    let json = serde_json::to_value(&detail).unwrap();
    let mut fields: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme.split("| field | type | meaning |").nth(1).expect("README documents status --json");
    let mut documented: Vec<String> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(|f| f.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    documented.sort();
    assert_eq!(fields, documented, "status --json fields against README's table");
}

/// The README's `paddock check` example is what `paddock check` prints.
#[test]
fn the_check_example_in_the_readme_is_what_check_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = "$ paddock check examples/invalid/host-network.toml\n";
    let start = readme.find(shown).expect("the example is in the README") + shown.len();
    let example = &readme[start..start + readme[start..].find("```").unwrap()];
    // The built-in defaults, whatever this host's configuration says.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paddock.toml");
    std::fs::write(&config, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["check", "--config"])
        .arg(&config)
        .arg("examples/invalid/host-network.toml")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(printed.trim_end(), example.trim_end());
}
