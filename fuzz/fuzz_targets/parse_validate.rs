//! Any bytes as a manifest: parse, schema, typed model, semantic checks,
//! every built-in policy, and rendering every problem. Nothing may panic,
//! and a file reported valid must have no error.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paddock::validate::{Color, HostChecks, Validator, load_policies, render};

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let names = ["baseline", "restricted"].map(String::from);
        Validator::new(load_policies(&names, None, Path::new("/var/lib/paddock/volumes")).unwrap())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = validator().validate("fuzz.toml", text, HostChecks::Skip);
    for p in &checked.problems {
        let shown = render(p, "fuzz.toml", text, Color::Never);
        assert!(shown.starts_with("fuzz.toml:"));
    }
    assert_eq!(checked.spec.is_some(), !checked.problems.iter().any(|p| p.is_error()));
});
