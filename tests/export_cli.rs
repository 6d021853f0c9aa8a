//! `paddock export kubernetes`'s errors and flags through the real
//! binary: no image, the image map, invalid manifests, one workload
//! twice, two objects of one name, the namespace, nothing to export.

mod common;

use common::export::{IMAGE, export, validate_offline};

#[test]
fn no_image_names_the_flags_and_writes_nothing() {
    let run = export(&["examples/workloads"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(
        run.stderr.contains("no image for api, nightly-report, web, worker")
            && run.stderr.contains("--image IMAGE")
            && run.stderr.contains("--image-map FILE"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_image_map_gives_each_workload_its_image_and_refuses_what_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("images.toml");
    let map_arg = map.display().to_string();
    std::fs::write(&map, "web = \"nginx:1.27\"\nworker = \"busybox:1.37\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "examples/workloads/worker.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("image: nginx:1.27") && run.stdout.contains("image: busybox:1.37"));
    // A workload the map lacks.
    let run = export(&["examples/workloads", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.contains("no image for api, nightly-report"), "{}", run.stderr);
    // Names of other workloads are left alone: one map serves every host's directory.
    std::fs::write(&map, "web = \"nginx\"\ndb = \"postgres:17\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("image: nginx") && !run.stdout.contains("postgres"), "{}", run.stdout);
    // A misspelt name leaves its workload with no image, and is pointed at.
    std::fs::write(&map, "wbe = \"nginx\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(
        run.stderr.contains("no image for web")
            && run.stderr.contains(&format!("({map_arg} names no workload of the PATHs: wbe)")),
        "{}",
        run.stderr
    );
    // Not TOML of strings.
    std::fs::write(&map, "web = 3\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not an image map (TOML lines of WORKLOAD = \"IMAGE\")"), "{}", run.stderr);
    let run = export(&["examples/workloads/web.toml", "--image-map", "/nonexistent/images.toml"]);
    assert!(
        run.code == 2 && run.stderr.contains("cannot read the image map /nonexistent/images.toml"),
        "{}",
        run.stderr
    );
    // Read as a manifest is: never a FIFO (which would hang), never past 1 MiB.
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", fifo.to_str().unwrap()]);
    assert!(run.code == 2 && run.stderr.contains("only regular files are read"), "{}", run.stderr);
    std::fs::write(&map, format!("web = \"nginx\"\n# {}\n", "x".repeat(2 << 20))).unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert!(run.code == 2 && run.stderr.contains("limited to 1048576 bytes"), "{}", run.stderr);
    // One or the other.
    let run = export(&["examples/workloads/web.toml", "--image", IMAGE, "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
    let run = export(&["examples/workloads/web.toml", "--image", "has space"]);
    assert!(run.code == 2 && run.stderr.contains("not an image reference: it has a space"), "{}", run.stderr);
}

/// An image map's problems are shown as a manifest's are: FILE:LINE:COL,
/// the line itself, what to do; every one of them, and nothing written.
#[test]
fn an_image_maps_problems_name_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("images.toml");
    let map_arg = map.display().to_string();
    std::fs::write(&map, "web = \"nginx:1.27\"\n\nworker = \"\"\napi = 3\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{map_arg}:3:10: error: ")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{map_arg}:4:7: error: ")), "{}", run.stderr);
    assert!(run.stderr.contains("3 | worker = \"\""), "{}", run.stderr);
    // TOML that does not parse is shown so too.
    std::fs::write(&map, "web = \"nginx\"\nworker = \"busybox\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(&format!("{map_arg}:2:")) && run.stderr.contains("error: TOML syntax"),
        "{}",
        run.stderr
    );
    // So is a byte that is not UTF-8, as a manifest's.
    std::fs::write(&map, b"web = \"nginx\"\nworker = \"b\xffx\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&format!("{map_arg}:2:12: error: the file is not valid UTF-8")), "{}", run.stderr);
}

/// An image reference the kubelet could not pull is refused where it is
/// written, saying what is wrong and showing one that is right, not
/// exported to fail at `kubectl apply` or on the node.
#[test]
fn an_image_reference_outside_the_grammar_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("images.toml");
    let map_arg = map.display().to_string();
    std::fs::write(&map, "web = \"Nginx:1.27\"\ndb = \"registry.example.com:port/db\"\n").unwrap();
    let run = export(&["examples/workloads/web.toml", "--image-map", &map_arg]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{map_arg}:1:7: error: ")) && run.stderr.contains("lowercase"),
        "{}",
        run.stderr
    );
    // A map's entry for a workload not exported is checked too: the map is one file.
    assert!(run.stderr.contains(&format!("{map_arg}:2:6: error: ")) && run.stderr.contains("port"), "{}", run.stderr);
    assert!(run.stderr.contains("docker.io/library/nginx:1.27"), "{}", run.stderr);
    let run = export(&["examples/workloads/web.toml", "--image", "nginx:1.27:2"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{}", run.stderr);
    assert!(run.stderr.contains("--image") && run.stderr.contains("docker.io/library/nginx:1.27"), "{}", run.stderr);
}

#[test]
fn an_invalid_manifest_is_reported_as_check_reports_it_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), "command = [\"/good\"]\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "command = [\"x\"]\n[namespaces]\nnetwork = \"host\"\n").unwrap();
    let run = export(&[&dir.path().display().to_string(), "--image", IMAGE]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let expected = format!(
        "{}:3:11: error: policy baseline refuses this: `namespaces.network = \"host\"` is not allowed",
        bad.display()
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stdout.contains("name: good") && !run.stdout.contains("name: bad"), "{}", run.stdout);
    validate_offline(&run.stdout);
    // Bad input of every kind never panics: not UTF-8, a directory named x.toml, a syntax error.
    std::fs::write(dir.path().join("bytes.toml"), b"command = [\"\xff\"]\n").unwrap();
    std::fs::create_dir(dir.path().join("dir.toml")).unwrap();
    std::fs::write(dir.path().join("syntax.toml"), "command = [\n").unwrap();
    let run = export(&[&dir.path().display().to_string(), "--image", IMAGE]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(run.stdout.matches("kind: Pod").count(), 1);
    // Nothing valid: nothing written, not even the namespace.
    let run = export(&[&bad.display().to_string(), "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""));
    let run = export(&["/nonexistent.toml", "--image", IMAGE]);
    assert!(run.code == 2 && run.stderr.contains("cannot read /nonexistent.toml"), "{}", run.stderr);
}

#[test]
fn one_workload_twice_an_empty_directory_and_a_bad_namespace() {
    // Two hosts' directories each with a web: one namespace cannot hold both pods.
    let dir = tempfile::tempdir().unwrap();
    for host in ["h1", "h2"] {
        std::fs::create_dir(dir.path().join(host)).unwrap();
        std::fs::write(dir.path().join(host).join("web.toml"), "command = [\"/web\"]\n").unwrap();
    }
    let (h1, h2) = (dir.path().join("h1").display().to_string(), dir.path().join("h2").display().to_string());
    let run = export(&[&h1, &h2, "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.contains("h2/web.toml are both the workload `web`"), "{}", run.stderr);
    // So they are when each publishes a port (a fleet's node exporter):
    // said as such, not as two workloads publishing one port of one host.
    for host in ["h1", "h2"] {
        std::fs::write(dir.path().join(host).join("web.toml"), "command = [\"/web\"]\nports = [\"9100:9100\"]\n")
            .unwrap();
    }
    let run = export(&[&h1, &h2, "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.contains("are both the workload `web`"), "{}", run.stderr);
    assert!(!run.stderr.contains("already published"), "{}", run.stderr);
    // One file named twice is one workload.
    let web = dir.path().join("h1/web.toml");
    let again = dir.path().join("h1/../h1/web.toml");
    let run = export(&[web.to_str().unwrap(), again.to_str().unwrap(), "--image", IMAGE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.matches("kind: Pod").count(), 1, "{}", run.stdout);
    // Two links to one file are two workloads (named by the links, as the
    // daemon reads them).
    let links = dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    std::fs::write(links.join("common"), "command = [\"/web\"]\n").unwrap();
    for name in ["a.toml", "b.toml"] {
        std::os::unix::fs::symlink("common", links.join(name)).unwrap();
    }
    let run = export(&[links.to_str().unwrap(), "--image", IMAGE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.matches("kind: Pod").count(), 2, "{}", run.stdout);
    let run = export(&[&h1, "--namespace", "Team A", "--image", IMAGE]);
    assert!(run.code == 2 && run.stderr.contains("a namespace is a DNS label"), "{}", run.stderr);
    for system in ["kube-system", "default", "kube-node-lease"] {
        let run = export(&[&h1, "--namespace", system, "--image", IMAGE]);
        assert!(run.code == 2 && run.stderr.contains("a namespace of the cluster's own"), "{system}: {}", run.stderr);
        assert_eq!(run.stdout, "", "nothing written for {system}");
    }
    // Nothing to export is said, not only shown by an empty stdout.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = export(&[&empty.display().to_string(), "--image", IMAGE]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    assert!(run.stderr.contains("no manifest in"), "{}", run.stderr);
}

#[test]
fn two_workloads_whose_services_would_have_one_name_are_refused_naming_both_files() {
    let ports = "command = [\"/web\"]\nports = [\"8080:80\"]\n";
    let long = |end: char| format!("1{}{end}", "a".repeat(61));
    let cases: [([String; 2], String); 2] = [
        // A Service's name starts with a letter: 1web's is w-1web, as is w-1web's.
        (["1web".into(), "w-1web".into()], "Service `w-1web`".into()),
        // Cut to 63 characters, two names that differ only at their end are one.
        ([long('b'), long('c')], format!("Service `w-1{}`", "a".repeat(60))),
    ];
    for (names, said) in cases {
        let dir = tempfile::tempdir().unwrap();
        let port = |i: usize| ports.replace("8080", &(8080 + i).to_string());
        for (i, name) in names.iter().enumerate() {
            std::fs::write(dir.path().join(format!("{name}.toml")), port(i)).unwrap();
        }
        let run = export(&[dir.path().to_str().unwrap(), "--image", IMAGE]);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{}", run.stderr);
        for name in &names {
            assert!(run.stderr.contains(&format!("/{name}.toml")), "{name} not named: {}", run.stderr);
        }
        assert!(run.stderr.contains(&said) && run.stderr.contains("rename one of the files"), "{}", run.stderr);
        // Each alone is exported.
        for name in &names {
            let file = dir.path().join(format!("{name}.toml"));
            let run = export(&[file.to_str().unwrap(), "--image", IMAGE]);
            assert_eq!(run.code, 0, "{}", run.stderr);
        }
    }
}

/// A pod's user namespace maps 65536 ids, the kubelet's, whatever this
/// host's slices hold: a remapped workload's user past them is refused
/// when the host's slices are larger, and one below them exported when
/// they are smaller (the pod runs on a cluster's node, not this host).
#[test]
fn a_remapped_id_is_checked_against_what_a_pod_maps_not_the_slice_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paddock.toml");
    let export_with = |slice_size: u32, user: u32| {
        std::fs::write(&config, format!("[remap]\nslice_size = {slice_size}\n")).unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(&file, format!("command = [\"/x\"]\nuser = {user}\n")).unwrap();
        export(&[file.to_str().unwrap(), "--image", IMAGE, "--config", config.to_str().unwrap()])
    };
    let run = export_with(262144, 100000);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{}", run.stderr);
    assert!(
        run.stderr.contains("w.toml:2:8: error: user 100000 is outside the workload's 65536 ids"),
        "{}",
        run.stderr
    );
    // Raising slice_size cannot help: the help says what the limit is.
    assert!(
        run.stderr.contains("help: a pod's user namespace maps 65536 ids (the kubelet's): use an id below 65536"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("slice_size"), "{}", run.stderr);
    let run = export_with(4096, 5000);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("runAsUser: 5000"), "{}", run.stdout);
}

/// What paddock runs and the API server would refuse: the file is invalid
/// for the export, each problem at its key with what to do, and the
/// others are exported.
#[test]
fn a_value_the_api_server_refuses_is_an_error_at_its_key_and_its_file_left_out() {
    let dir = tempfile::tempdir().unwrap();
    // The host's ids (a remapped workload's are its slice's, below 65536).
    let host = "[namespaces]\nuser = \"host\"\n";
    let big = format!(
        "command = [\"/x\"]\nuser = 3000000000\ngroup = 2147483648\n[env]\n\"é\" = \"1\"\n\"A\\nB\" = \"2\"\nOK = \"3\"\n{host}"
    );
    std::fs::write(dir.path().join("big.toml"), big).unwrap();
    let ok = format!("command = [\"/x\"]\nuser = 2147483647\ngroup = 2147483647\n{host}");
    std::fs::write(dir.path().join("ok.toml"), ok).unwrap();
    let run = export(&[dir.path().to_str().unwrap(), "--image", IMAGE, "--policy", "privileged"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let file = dir.path().join("big.toml").display().to_string();
    for said in [
        format!("{file}:2:8: error: Kubernetes refuses user = 3000000000: runAsUser is at most 2147483647"),
        "help: give the workload a user of at most 2147483647".to_owned(),
        format!("{file}:3:9: error: Kubernetes refuses group = 2147483648: runAsGroup is at most 2147483647"),
        format!("{file}:5:1: error: Kubernetes refuses the env name \"é\": a name is printable ASCII without `=`"),
        format!("{file}:6:1: error: Kubernetes refuses the env name \"A\\nB\""),
        "help: rename the variable".to_owned(),
    ] {
        assert!(run.stderr.contains(&said), "{said} not in\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("\"OK\""), "{}", run.stderr);
    assert!(run.stdout.contains("name: ok") && !run.stdout.contains("name: big"), "{}", run.stdout);
    validate_offline(&run.stdout);
}
