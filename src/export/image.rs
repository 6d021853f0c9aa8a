//! The image map of `export --image-map FILE`: TOML lines of
//! `WORKLOAD = "IMAGE"`, each image a reference the kubelet can pull
//! (`super::reference`). It is shown as a manifest is: each of its
//! problems at its line, all of them at once.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reference::{ImageRef, SHAPE};
use crate::model::WorkloadName;
use crate::validate::{Problem, key_name, parse_toml, push_pointer, shortened, toml_value};

/// The image reference a help shows.
pub const EXAMPLE: &str = "docker.io/library/nginx:1.27";

/// Each workload's image, or every problem of the map in the file's order.
pub fn parse_map(text: &str) -> Result<BTreeMap<String, ImageRef>, Vec<Problem>> {
    let (json, spans) = parse_toml(text)?;
    let mut map = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in json.as_object().into_iter().flatten() {
        let pointer = push_pointer("", name);
        let key = key_name(&pointer);
        let at = spans.value_span(&pointer);
        // A key that no file name could give would never match: said,
        // rather than left to look like a workload of another host's.
        if let Err(e) = WorkloadName::try_from(name.as_str()) {
            let key_at = spans.key_span(&pointer).or_else(|| at.clone());
            let shown = if name.is_empty() { "\"\"" } else { key.as_str() };
            problems.push(
                Problem::error(key_at, format!("the key `{shown}` is no workload's name: {e}"))
                    .with_help("a workload's name is its manifest's file name without `.toml` (web.toml's is `web`)"),
            );
        }
        match value {
            Value::String(image) => match ImageRef::parse(image) {
                Ok(image) => {
                    map.insert(name.clone(), image);
                }
                Err(e) => problems.push(
                    Problem::error(at, format!("`{key}` = {:?} is not an image reference: {e}", shortened(image)))
                        .with_help(SHAPE),
                ),
            },
            other => problems.push(
                Problem::error(at, format!("`{key}` is {}, where an image reference is a string", toml_value(other)))
                    .with_help(format!("write it as {key} = \"{EXAMPLE}\"")),
            ),
        }
    }
    if problems.is_empty() {
        return Ok(map);
    }
    problems.sort_by_key(|p| p.span.as_ref().map(|s| s.start));
    Err(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each problem is, as `LINE:COL`, and its message.
    fn problems(text: &str) -> Vec<(String, String)> {
        let problems = parse_map(text).expect_err(text);
        problems
            .iter()
            .map(|p| {
                let (line, col) = crate::validate::line_col(text, p.span.as_ref().expect("at a place").start);
                (format!("{line}:{col}"), p.message.clone())
            })
            .collect()
    }

    #[test]
    fn every_problem_of_a_map_is_at_its_value() {
        let text = "web = \"nginx:1.27\"\n\nworker = \"\"\napi = 3\n[db]\nimage = \"postgres\"\n\"a b\" = \"x y\"\n";
        let want = [
            ("3:10", "`worker` = \"\" is not an image reference: it is empty"),
            ("4:7", "`api` is 3, where an image reference is a string"),
            ("5:1", "`db` is a table, where an image reference is a string"),
        ];
        let got = problems(text);
        assert_eq!(got[..3], want.map(|(at, m)| (at.to_owned(), m.to_owned())), "{got:?}");
        // A table's keys are its own: `"a b"` is in [db].
        assert_eq!(got.len(), 3, "{got:?}");
        let got = problems("\"a b\" = \"x y\"\nweb = \"Nginx\"\n");
        let want = [
            (
                "1:1",
                "the key `\"a b\"` is no workload's name: `a b` may only contain lowercase letters, digits and `-`, and must start and end with a letter or digit",
            ),
            ("1:9", "`\"a b\"` = \"x y\" is not an image reference: it has a space or a control character"),
            (
                "2:7",
                "`web` = \"Nginx\" is not an image reference: the repository `Nginx` has capital letters, and a repository is lowercase (`nginx`)",
            ),
        ];
        assert_eq!(got, want.map(|(at, m)| (at.to_owned(), m.to_owned())));
    }

    #[test]
    fn a_key_no_file_name_could_give_is_an_error_at_the_key() {
        let got = problems("web = \"nginx\"\nMy_App = \"nginx\"\n\"\" = \"nginx\"\n");
        let want = [
            (
                "2:1",
                "the key `My_App` is no workload's name: `My_App` may only contain lowercase letters, digits and `-`, and must start and end with a letter or digit",
            ),
            ("3:1", "the key `\"\"` is no workload's name: a workload name cannot be empty"),
        ];
        assert_eq!(got, want.map(|(at, m)| (at.to_owned(), m.to_owned())));
    }

    #[test]
    fn a_map_that_is_not_toml_is_shown_at_its_line() {
        let got = problems("web = \"nginx\"\nworker = \"busybox\n");
        assert!(got.len() == 1 && got[0].0.starts_with("2:") && got[0].1.starts_with("TOML syntax"), "{got:?}");
    }

    #[test]
    fn a_good_map_is_each_workloads_image() {
        let text =
            format!("web = \"nginx:1.27\"\nworker = \"registry.example.com:5000/w@sha256:{}\"\n", "0".repeat(64));
        let map = parse_map(&text).unwrap();
        assert_eq!(map["web"].as_str(), "nginx:1.27");
        assert_eq!(map.len(), 2);
        assert!(parse_map("").unwrap().is_empty());
    }
}
