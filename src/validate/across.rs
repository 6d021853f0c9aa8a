//! Checks across manifests, which no single file can fail alone: two
//! workloads cannot publish the same port of the host.

use std::collections::BTreeMap;

use super::problem::Problem;
use crate::model::Manifest;

/// A manifest being checked: its file name, its text (to point into) and
/// what it declares.
pub struct Candidate<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub manifest: &'a Manifest,
}

/// For each candidate whose published ports collide with another
/// candidate's or with a settled manifest's (one that is not being
/// checked again and keeps what it holds), the problems, by file name.
/// Each names the other file.
/// `running` names the candidates whose workload runs now (its file is
/// read again, as after a daemon restart): one of them keeps its ports
/// against a candidate that does not run, which alone is refused.
pub fn port_conflicts(
    candidates: &[Candidate<'_>],
    settled: &[(&str, &Manifest)],
    running: &[&str],
) -> BTreeMap<String, Vec<Problem>> {
    let mut found: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    let all: Vec<(&str, &Manifest)> =
        candidates.iter().map(|c| (c.file, c.manifest)).chain(settled.iter().copied()).collect();
    for c in candidates.iter().filter(|c| !c.manifest.ports.is_empty()) {
        let mut spans = None;
        for (i, port) in c.manifest.ports.iter().enumerate() {
            let Some((other, theirs)) = all
                .iter()
                .filter(|(f, _)| *f != c.file)
                .filter(|(f, _)| {
                    // A running candidate yields only to what also runs or is settled.
                    !running.contains(&c.file)
                        || running.contains(f)
                        || !candidates.iter().any(|other| other.file == *f)
                })
                .find_map(|(f, m)| m.ports.iter().find(|p| p.collides_with(port)).map(|p| (*f, p)))
            else {
                continue;
            };
            let spans = spans.get_or_insert_with(|| super::source::parse(c.text).map(|p| p.spans).ok());
            let at = spans.as_ref().and_then(|s| s.value_span(&format!("/ports/{i}")));
            found.entry(c.file.to_owned()).or_default().push(
                Problem::error(
                    at,
                    format!(
                        "host port {}/{} is already published by {other} ({theirs})",
                        port.host_port, port.protocol
                    ),
                )
                .with_help("two workloads cannot publish one port of the host: change the host port of one of them"),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ports: &[&str]) -> Manifest {
        let mut m: Manifest = toml::from_str("command = [\"x\"]").unwrap();
        m.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        m
    }

    #[test]
    fn a_shared_host_port_is_refused_in_both_files_naming_the_other() {
        let (a, b, c) = (m(&["8080:80"]), m(&["127.0.0.1:8080:81", "9000:9000"]), m(&["8080:80/udp"]));
        let text = "command = [\"x\"]\nports = [\"127.0.0.1:8080:81\", \"9000:9000\"]\n";
        let found = port_conflicts(
            &[
                Candidate { file: "a.toml", text: "", manifest: &a },
                Candidate { file: "b.toml", text, manifest: &b },
                Candidate { file: "c.toml", text: "", manifest: &c },
            ],
            &[],
            &[],
        );
        assert_eq!(found.keys().collect::<Vec<_>>(), ["a.toml", "b.toml"]);
        assert!(found["a.toml"][0].message.contains("already published by b.toml (127.0.0.1:8080:81/tcp)"));
        let p = &found["b.toml"][0];
        assert!(p.message.contains("by a.toml (8080:80/tcp)"), "{}", p.message);
        assert_eq!(&text[p.span.clone().unwrap()], "\"127.0.0.1:8080:81\"");
    }

    #[test]
    fn a_settled_workload_keeps_its_port_and_the_newcomer_is_refused() {
        let (running, new) = (m(&["8080:80"]), m(&["8080:80"]));
        let found =
            port_conflicts(&[Candidate { file: "new.toml", text: "", manifest: &new }], &[("web.toml", &running)], &[]);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["new.toml"]);
        assert!(found["new.toml"][0].message.contains("web.toml"));
    }

    #[test]
    fn read_again_after_a_restart_the_running_workload_keeps_its_port() {
        let (web, api) = (m(&["8080:80"]), m(&["8080:81"]));
        let candidates = [
            Candidate { file: "api.toml", text: "", manifest: &api },
            Candidate { file: "web.toml", text: "", manifest: &web },
        ];
        let found = port_conflicts(&candidates, &[], &["web.toml"]);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["api.toml"], "only the newcomer is refused");
        assert!(found["api.toml"][0].message.contains("web.toml"));
    }
}
