//! A scan of the workloads directory in a process out of descriptors: a
//! manifest whose read fails for want of one is taken as it was and read
//! again in a moment, never reported invalid until the next full rescan.
//! (A test binary of its own: it lowers this process's descriptor limit,
//! which every test in a binary would share.)

use std::os::fd::OwnedFd;

use paddock::daemon::scan::{Held, Rescan, Snapshot, run_job};
use paddock::reconcile::ManifestEvent;
use paddock::validate::Validator;

/// Takes every descriptor this process may open but `left`, for as long
/// as the result lives (the test lowers its limit first: filling it is
/// cheap).
fn all_descriptors_but(left: usize) -> Vec<OwnedFd> {
    let mut held = vec![OwnedFd::from(std::fs::File::open("/dev/null").unwrap())];
    loop {
        match nix::unistd::dup(&held[0]) {
            Ok(fd) => held.push(fd),
            Err(nix::errno::Errno::EMFILE) => break,
            Err(e) => panic!("dup: {e}"),
        }
    }
    assert!(held.len() > left, "only {} descriptors could be taken", held.len());
    held.truncate(held.len() - left);
    held
}

fn valid(outcome: &paddock::daemon::scan::Outcome, file: &str) -> Option<String> {
    outcome.changes.iter().find(|c| c.file == file).map(|c| match &c.event {
        ManifestEvent::Valid(d) => d.source.to_string(),
        other => format!("not valid: {other:?}"),
    })
}

#[test]
fn a_manifest_unread_for_want_of_descriptors_keeps_its_version_and_is_read_again() {
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, (open + 64).min(soft), hard).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(0), Some(0))
        .expect("this test runs as root (the directory must be root's)");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v1 = "command = [\"/bin/sleep\", \"1\"]\n";
    // Of another length: two writes within one clock tick (kernels before
    // 6.13 stamp coarsely) would leave the stamp as it was.
    let v2 = "command = [\"/bin/sleep\", \"20\"]\n";
    std::fs::write(dir.path().join("a.toml"), v1).unwrap();
    let validator = Validator::new(Vec::new());
    let first = run_job(dir.path(), &Snapshot::new(), Rescan::Everything, &validator, &Held::default());
    assert_eq!(valid(&first, "a.toml").as_deref(), Some(v1));

    // Edited, and a new file beside it, while the process is out of descriptors.
    std::fs::write(dir.path().join("a.toml"), v2).unwrap();
    std::fs::write(dir.path().join("b.toml"), v1).unwrap();
    let starved = |left: usize| {
        let held = all_descriptors_but(left);
        let outcome = run_job(dir.path(), &first.snapshot, Rescan::Changed, &validator, &Held::default());
        drop(held);
        outcome
    };

    // Not even the directory can be listed: nothing applied, looked at again.
    let none = starved(0);
    assert!(none.refused.as_deref().is_some_and(|r| r.contains("cannot scan")), "{:?}", none.refused);
    assert_eq!(none.again, Some(Rescan::Changed), "the directory is not looked at again: {none:?}");

    // Listed, and each file's read (which holds two descriptors) fails.
    let listed = (1..4).map(starved).find(|o| o.refused.is_none()).expect("the directory is listed");
    assert_eq!(listed.unread.keys().collect::<Vec<_>>(), ["a.toml", "b.toml"], "{listed:?}");
    assert_eq!(listed.again, Some(Rescan::Changed));
    // The edited file is taken as it was: no change, nothing reported invalid.
    assert!(valid(&listed, "a.toml").is_none(), "{:?}", listed.changes);
    assert_eq!(listed.snapshot.get("a.toml"), first.snapshot.get("a.toml"), "the version before stands");
    // A new one is said to be unreadable for now.
    let b = valid(&listed, "b.toml").unwrap();
    assert!(b.contains("cannot be read for now") && b.contains("read again in a moment"), "{b}");

    // Read again with descriptors to spare: both apply, with no full rescan.
    let again = run_job(dir.path(), &listed.snapshot, Rescan::Changed, &validator, &Held::default());
    assert!(again.unread.is_empty() && again.again.is_none());
    assert_eq!(valid(&again, "a.toml").as_deref(), Some(v2));
    assert_eq!(valid(&again, "b.toml").as_deref(), Some(v1));
}
