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
    let v = Validator::new(policies).unwrap();
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
