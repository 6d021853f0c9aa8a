//! Parse + schema + policy validation: one typical manifest, a directory
//! of 10,000 generated ones with the validator compiled once, and one
//! manifest of many `[[mounts]]` (up to the 1 MiB a file may have), whose
//! time must grow in proportion to its size.
//!
//! Run: cargo bench --bench validate
//! Targets: 10,000 manifests in under 1 s on a 2-core machine (issue 2);
//! the mounts group linear in the number of mounts (issue 10).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use paddock::validate::{HostChecks, Validator, load, load_policies};

const TYPICAL: &str = include_str!("../examples/workloads/worker.toml");

fn validator() -> Validator {
    let policies = load_policies(&["baseline".to_owned()], None, Path::new("/var/lib/paddock/volumes")).unwrap();
    Validator::new(policies)
}

/// 10,000 manifests that differ in name and in a few values, as a large
/// host's directory would.
fn generate(dir: &Path, n: usize) {
    for i in 0..n {
        let text = TYPICAL
            .replace("LOG_LEVEL = \"info\"", &format!("LOG_LEVEL = \"info\", SHARD = \"{i}\""))
            .replace("pids = 64", &format!("pids = {}", 64 + i % 100));
        std::fs::write(dir.join(format!("worker-{i:05}.toml")), text).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    c.bench_function("compile schema and baseline policy", |b| b.iter(|| black_box(validator())));

    let v = validator();
    c.bench_function("validate one typical manifest", |b| {
        b.iter(|| {
            let checked = v.validate("worker.toml", black_box(TYPICAL), HostChecks::Skip);
            assert!(checked.spec.is_some());
        })
    });

    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 10_000);
    let mut group = c.benchmark_group("directory");
    group.sample_size(10);
    group.bench_function("check 10,000 manifests (list, read, validate)", |b| {
        b.iter(|| {
            let files = load::list_manifests(dir.path()).unwrap();
            let valid = files.iter().filter(|f| v.validate_file(f, HostChecks::Skip).unwrap().1.spec.is_some()).count();
            assert_eq!(valid, 10_000);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("mounts");
    group.sample_size(10);
    for n in [1_000usize, 4_000, 16_000, 27_000] {
        let mut text = String::from("command = [\"/bin/true\"]\n");
        for i in 0..n {
            text.push_str(&format!("[[mounts]]\nsource = \"/srv/a{i}\"\ntarget = \"/b{i}\"\n"));
        }
        group.bench_function(format!("a manifest of {n} mounts ({} KiB)", text.len() >> 10), |b| {
            b.iter(|| black_box(v.validate("m.toml", &text, HostChecks::Skip)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
