//! Checks across manifests, which no single file can fail alone: two
//! workloads cannot publish the same port of the host, and start order
//! (`after`) cannot go round in a circle.

use std::collections::{BTreeMap, HashMap, VecDeque};

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
/// `precedes(a, b)` says whether candidate `a`'s claim comes before
/// candidate `b`'s: `b` alone is then refused. The daemon orders them
/// (what runs as written first, then the older file: `scan`), so that
/// one keeps the port; `check`, which knows no order, says it of both.
pub fn port_conflicts(
    candidates: &[Candidate<'_>],
    settled: &[(&str, &Manifest)],
    precedes: &dyn Fn(&str, &str) -> bool,
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
                // What is settled holds; another candidate, if it comes first.
                .filter(|(f, _)| !candidates.iter().any(|other| other.file == *f) || precedes(f, c.file))
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

/// A manifest file's workload name: its file name without `.toml`.
fn name_of(file: &str) -> &str {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.strip_suffix(".toml").unwrap_or(base)
}

/// What an `after` entry that no manifest defines is.
#[derive(Debug, Clone, Copy)]
pub enum UnknownAfter<'a> {
    /// Nothing: the daemon lets such a workload wait, as it waits for one
    /// whose file was removed.
    Waits,
    /// An error: `check DIR`, every manifest there known.
    Refused,
    /// A warning, unless one of `beside` (the manifests beside the files,
    /// by name) is it: `check FILE...`, the others not all known.
    Warned { beside: &'a [String] },
}

/// Start order across the files: each candidate that lies on a cycle of
/// `after` (through candidates or settled manifests) gets an error that
/// shows the cycle with its files; each `after` entry that no manifest
/// defines, as `unknown` says.
pub fn order_problems(
    candidates: &[Candidate<'_>],
    settled: &[(&str, &Manifest)],
    unknown: UnknownAfter<'_>,
) -> BTreeMap<String, Vec<Problem>> {
    let mut found: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    // A candidate is the newer version of a settled manifest of the same name.
    let mut graph: HashMap<&str, (&str, &Manifest)> =
        settled.iter().map(|(file, m)| (name_of(file), (*file, *m))).collect();
    graph.extend(candidates.iter().map(|c| (name_of(c.file), (c.file, c.manifest))));
    for c in candidates.iter().filter(|c| !c.manifest.after.is_empty()) {
        let me = name_of(c.file);
        let spans = super::source::parse(c.text).map(|p| p.spans).ok();
        let at = |i: usize| spans.as_ref().and_then(|s| s.value_span(&format!("/after/{i}")));
        for (i, dep) in c.manifest.after.iter().enumerate().filter(|(_, dep)| !graph.contains_key(dep.as_str())) {
            let waits = format!("until then the daemon starts this workload only once {dep} runs");
            let problem = match unknown {
                UnknownAfter::Waits => continue,
                UnknownAfter::Refused => Problem::error(at(i), format!("no manifest defines `{dep}`"))
                    .with_help(format!("add {dep}.toml, or remove `{dep}` from `after`; {waits}")),
                UnknownAfter::Warned { beside } if beside.iter().any(|b| b == dep) => continue,
                UnknownAfter::Warned { .. } => {
                    Problem::warning(at(i), format!("no manifest checked, or beside those, defines `{dep}`"))
                        .with_help(format!("check the whole directory to be sure (`paddock check DIR`); {waits}"))
                }
            };
            found.entry(c.file.to_owned()).or_default().push(problem);
        }
        // Breadth first from each of its own entries, back to itself: the shortest cycle.
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut queue: VecDeque<&str> = VecDeque::new();
        for dep in &c.manifest.after {
            if graph.contains_key(dep.as_str()) && !came_from.contains_key(dep.as_str()) {
                came_from.insert(dep, me);
                queue.push_back(dep);
            }
        }
        let mut closed = None;
        while let Some(node) = queue.pop_front() {
            if node == me {
                closed = Some(node);
                break;
            }
            for dep in graph.get(node).map(|(_, m)| m.after.as_slice()).unwrap_or_default() {
                if graph.contains_key(dep.as_str()) && !came_from.contains_key(dep.as_str()) {
                    came_from.insert(dep, node);
                    queue.push_back(dep);
                }
            }
        }
        if closed.is_none() {
            continue;
        }
        // Walk back from me to me: me <- ... <- first entry <- me.
        let mut path = vec![me];
        let mut node = came_from[me];
        while node != me {
            path.push(node);
            node = came_from[node];
        }
        path.push(me);
        path.reverse();
        let first = path[1];
        let i = c.manifest.after.iter().position(|d| d == first).unwrap_or(0);
        let shown: Vec<String> =
            path.iter().map(|n| format!("{n} ({})", graph.get(n).map_or("?", |(f, _)| name_file(f)))).collect();
        found.entry(c.file.to_owned()).or_default().push(
            Problem::error(at(i), format!("start order goes round in a circle: {}", shown.join(" after ")))
                .with_help("remove one of these `after` entries: none of them could ever start"),
        );
    }
    found
}

fn name_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::problem::Severity;

    fn m(ports: &[&str]) -> Manifest {
        let mut m: Manifest = toml::from_str("command = [\"x\"]").unwrap();
        m.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        m
    }

    fn after(names: &[&str]) -> Manifest {
        let mut m: Manifest = toml::from_str("command = [\"x\"]").unwrap();
        m.after = names.iter().map(|n| n.to_string()).collect();
        m
    }

    #[test]
    fn a_cycle_of_after_is_refused_in_each_file_on_it_showing_the_circle() {
        let (a, b, c, d) = (after(&["b"]), after(&["c"]), after(&["a"]), after(&["a"]));
        let text = "command = [\"x\"]\nafter = [\"b\"]\n";
        let found = order_problems(
            &[
                Candidate { file: "wl/a.toml", text, manifest: &a },
                Candidate { file: "wl/b.toml", text: "", manifest: &b },
                Candidate { file: "wl/c.toml", text: "", manifest: &c },
                Candidate { file: "wl/d.toml", text: "", manifest: &d },
            ],
            &[],
            UnknownAfter::Refused,
        );
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["wl/a.toml", "wl/b.toml", "wl/c.toml"],
            "d waits on the cycle, it is not on it"
        );
        let p = &found["wl/a.toml"][0];
        assert_eq!(
            p.message,
            "start order goes round in a circle: a (a.toml) after b (b.toml) after c (c.toml) after a (a.toml)"
        );
        assert_eq!(&text[p.span.clone().unwrap()], "\"b\"");
    }

    #[test]
    fn a_name_no_manifest_defines_is_reported_only_when_asked() {
        let app = after(&["db", "cache"]);
        let db = after(&[]);
        let candidates = [Candidate { file: "app.toml", text: "", manifest: &app }];
        let found = order_problems(&candidates, &[("db.toml", &db)], UnknownAfter::Refused);
        assert_eq!(found["app.toml"].len(), 1);
        assert_eq!(found["app.toml"][0].message, "no manifest defines `cache`");
        assert!(order_problems(&candidates, &[("db.toml", &db)], UnknownAfter::Waits).is_empty());
        // Files named one by one: a warning, unless a manifest beside them is it.
        let found = order_problems(&candidates, &[("db.toml", &db)], UnknownAfter::Warned { beside: &[] });
        let p = &found["app.toml"][0];
        assert_eq!(
            (p.message.as_str(), p.severity),
            ("no manifest checked, or beside those, defines `cache`", Severity::Warning)
        );
        let beside = ["cache".to_owned()];
        assert!(order_problems(&candidates, &[("db.toml", &db)], UnknownAfter::Warned { beside: &beside }).is_empty());
    }

    #[test]
    fn a_workload_after_itself_is_a_cycle_and_a_settled_manifest_closes_one() {
        let me = after(&["me"]);
        let found = order_problems(&[Candidate { file: "me.toml", text: "", manifest: &me }], &[], UnknownAfter::Waits);
        assert!(found["me.toml"][0].message.contains("me (me.toml) after me (me.toml)"));
        let (new, settled) = (after(&["db"]), after(&["app"]));
        let found = order_problems(
            &[Candidate { file: "app.toml", text: "", manifest: &new }],
            &[("db.toml", &settled)],
            UnknownAfter::Waits,
        );
        assert_eq!(found.keys().collect::<Vec<_>>(), ["app.toml"], "the settled one keeps running");
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
            &|_, _| true,
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
        let found = port_conflicts(
            &[Candidate { file: "new.toml", text: "", manifest: &new }],
            &[("web.toml", &running)],
            &|_, _| true,
        );
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
        let found = port_conflicts(&candidates, &[], &|a, _| a == "web.toml");
        assert_eq!(found.keys().collect::<Vec<_>>(), ["api.toml"], "only the one that comes after is refused");
        assert!(found["api.toml"][0].message.contains("web.toml"));
    }
}
