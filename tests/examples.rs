//! The bundled examples do what their comments say: every file under
//! `examples/workloads` passes baseline (api.toml also restricted), and
//! every file under `examples/invalid` produces each of its `# expect:` lines.

mod common;

use std::path::Path;

use paddock::validate::{Color, HostChecks, render};

fn examples(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(dir);
    let files = paddock::validate::load::list_manifests(&dir).unwrap();
    assert!(files.len() >= 4, "too few examples in {}", dir.display());
    files
}

#[test]
fn valid_examples_pass_baseline() {
    let validator = common::validator(&["baseline"]);
    for path in examples("workloads") {
        let (text, checked) = validator.validate_file(&path, HostChecks::Skip).unwrap();
        let shown: Vec<_> = checked.problems.iter().map(|p| render(p, "x", &text, Color::Never)).collect();
        assert!(checked.spec.is_some() && shown.is_empty(), "{}:\n{}", path.display(), shown.join("\n"));
    }
}

#[test]
fn the_restricted_example_passes_restricted() {
    let validator = common::validator(&["restricted"]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workloads/api.toml");
    let (_, checked) = validator.validate_file(&path, HostChecks::Skip).unwrap();
    assert!(checked.spec.is_some(), "{:?}", checked.problems);
}

#[test]
fn invalid_examples_fail_with_the_error_their_comment_names() {
    let validator = common::validator(&["baseline"]);
    for path in examples("invalid") {
        let (text, checked) = validator.validate_file(&path, HostChecks::Skip).unwrap();
        assert!(checked.spec.is_none(), "{} should be invalid", path.display());
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let shown: String = checked.problems.iter().map(|p| render(p, &file, &text, Color::Never)).collect();
        let expected: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{} has no `# expect:` comment", path.display());
        for e in expected {
            assert!(shown.contains(e), "{}: expected {e:?} in\n{shown}", path.display());
        }
    }
}
