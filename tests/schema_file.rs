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
