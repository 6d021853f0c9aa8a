//! A table of manifests and the exact problems each produces: position,
//! message, policy and rule. These are the messages operators read.

mod common;

use common::baseline_problems;

#[track_caller]
fn expect(text: &str, expected: &[&str]) {
    let got = baseline_problems(text);
    assert_eq!(got, expected, "\n--- manifest ---\n{text}");
}

#[test]
fn a_minimal_manifest_is_valid() {
    expect("command = [\"/bin/true\"]\n", &[]);
}

#[test]
fn toml_syntax_errors_point_at_the_byte_where_parsing_stopped() {
    expect("command = [\"/bin/true\"\n", &["1:23: error: TOML syntax: unclosed array, expected `]`"]);
    expect("command = [\"x\"]\ncommand = [\"y\"]\n", &["2:1: error: TOML syntax: duplicate key"]);
    // toml gives no place for a key of 80 dotted parts or more: it is
    // found, past a line of dots inside a multi-line string.
    let key = vec!["a"; 85].join(".");
    let dots = ".".repeat(85);
    expect(
        &format!("command = [\"x\"]\nhostname = \"\"\"\n{dots}\n\"\"\"\n{key} = 1\n"),
        &["5:1: error: TOML syntax: recursion limit"],
    );
}

#[test]
fn a_float_past_f64_is_too_large_and_inf_is_refused() {
    expect("command = [\"x\"]\n[resources]\ncpu = 1e400\n", &["3:7: error: this number is too large (past 1.8e308)"]);
    expect("command = [\"x\"]\n[resources]\ncpu = inf\n", &["3:7: error: inf and nan are not allowed here"]);
}

/// JSON has no dates: an unquoted one passes the schema as the string it
/// reads as, and is refused by the types, saying to quote it.
#[test]
fn an_unquoted_date_is_said_to_need_quotes() {
    let text = "command = [\"x\"]\n[env]\nBUILD = 2024-05-01\n";
    expect(text, &["3:9: error: a TOML date-time, where a string is expected"]);
    let checked = common::check(&["baseline"], "t.toml", text);
    assert_eq!(checked.problems[0].help.as_deref(), Some("quote it: \"2024-05-01\""));
}

/// Checks the types cannot make: one probe a health check, no NUL in a
/// probe's command, each workload once in `after`.
#[test]
fn health_probes_and_after_are_checked_beyond_their_types() {
    expect(
        "command = [\"x\"]\n[health]\ninterval = \"1s\"\n",
        &["2:1: error: a health check needs exactly one probe: `command`, `tcp` or `http`"],
    );
    expect(
        "command = [\"x\"]\n[health]\ntcp = 80\ncommand = [\"true\"]\n",
        &["2:1: error: a health check needs exactly one probe: `command`, `tcp` or `http`"],
    );
    expect(
        "command = [\"x\"]\n[health]\ncommand = [\"a\\u0000b\"]\n",
        &["3:12: error: a command argument cannot contain a NUL byte"],
    );
    expect("command = [\"x\"]\nafter = [\"db\", \"db\"]\n", &["2:16: error: `db` is already after[0]"]);
    // Said as a name, not as the schema's pattern.
    expect(
        "command = [\"x\"]\nafter = [\"Web\"]\n",
        &[
            "2:10: error: `after[0]` must be a workload's name (its file's, without .toml): lower-case letters, digits and `-`, at most 63 characters, starting and ending with a letter or digit, not \"Web\"",
        ],
    );
}

/// A setting that would do nothing as written is said, not ignored.
#[test]
fn settings_that_would_do_nothing_are_warned_of() {
    // Restart settings the policy never reads.
    expect(
        "command = [\"x\"]\n[restart]\npolicy = \"always\"\nmax_retries = 3\nbackoff = \"1s\"\n",
        &["4:15: warning: `max_retries` does nothing: policy = \"always\" restarts for ever"],
    );
    expect(
        "command = [\"x\"]\n[restart]\npolicy = \"never\"\nbackoff = \"1s\"\n",
        &["4:11: warning: `backoff` does nothing: policy = \"never\" runs it once"],
    );
    expect("command = [\"x\"]\n[restart]\nmax_retries = 3\nbackoff = \"1s\"\n", &[]);
    expect(
        "command = [\"x\"]\n[resources]\nmemory = \"0MiB\"\n",
        &["3:10: error: a memory limit of 0 leaves the workload no memory at all"],
    );
    expect(
        "command = [\"x\"]\nuser = 1000\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n",
        &["4:16: warning: user 1000 gets none of these capabilities: only root in the workload holds them"],
    );
    // Root holds them; and without no_new_privileges a file capability can give them.
    expect("command = [\"x\"]\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\n", &[]);
    expect(
        "command = [\"x\"]\nuser = 1000\n[security]\ncapabilities = [\"NET_BIND_SERVICE\"]\nno_new_privileges = false\n",
        &[],
    );
    let privileged =
        "command = [\"x\"]\n[namespaces]\nuser = \"host\"\n[security]\nprivileged = true\nseccomp = \"default\"\n";
    let checked = common::check(&["privileged"], "t.toml", privileged);
    assert_eq!(
        common::lines("t.toml", privileged, &checked),
        ["6:11: warning: a privileged workload runs with no seccomp filter"]
    );
    assert!(checked.spec.is_some(), "a warning refuses nothing");
    let privileged = "command = [\"x\"]\n[namespaces]\nuser = \"host\"\n[security]\nprivileged = true\ncapabilities = [\"SYS_ADMIN\"]\n";
    let checked = common::check(&["privileged"], "t.toml", privileged);
    assert_eq!(
        common::lines("t.toml", privileged, &checked),
        ["6:16: warning: a privileged workload holds every capability already"]
    );
    // A mount's set-user-id bits, which no_new_privileges (the default) makes
    // the kernel ignore (baseline refuses setuid mounts; privileged lets them).
    let setuid = "command = [\"x\"]\n[[mounts]]\nsource = \"/srv\"\ntarget = \"/srv\"\nsetuid = true\n";
    let checked = common::check(&["privileged"], "t.toml", setuid);
    assert_eq!(
        common::lines("t.toml", setuid, &checked),
        [
            "5:10: warning: `setuid = true` does nothing while no_new_privileges is set (the default): the kernel ignores set-user-id bits and file capabilities then"
        ]
    );
    let honoured = format!("{setuid}[security]\nno_new_privileges = false\n");
    assert_eq!(
        common::lines("t.toml", &honoured, &common::check(&["privileged"], "t.toml", &honoured)),
        [] as [&str; 0]
    );
    // Every other signal is passed on by the init.
    expect(
        "command = [\"x\"]\n[stop]\nsignal = \"SIGSTOP\"\n",
        &[
            "3:10: warning: SIGSTOP never reaches the workload: it would stop the sandbox's init, not the workload; a stop kills it after stop.timeout",
        ],
    );
    expect(
        "command = [\"x\"]\nstop.signal = \"SIGCHLD\"\n",
        &[
            "2:15: warning: SIGCHLD never reaches the workload: it is the sandbox's init's own, never passed on; a stop kills it after stop.timeout",
        ],
    );
    expect("command = [\"x\"]\n[stop]\nsignal = \"SIGPWR\"\n", &[]);
}

/// An optional table is `anyOf` it or null in the schema, a port a string
/// or a table, a network one of paddock's or a CNI network's name: what is
/// wrong is said of the form that was written, not of the `anyOf`.
#[test]
fn a_value_of_several_forms_is_described_in_the_form_written() {
    let got = common::check(&["baseline"], "t.toml", "command = [\"x\"]\n[health]\ntcp = 80\nintervall = \"5s\"\n");
    let shown: Vec<(String, Option<String>)> =
        got.problems.iter().map(|p| (p.message.clone(), p.help.clone())).collect();
    assert_eq!(
        shown,
        [("unknown key `intervall` in [health]".to_owned(), Some("did you mean `interval`?".to_owned()))]
    );
    expect(
        "command = [\"x\"]\n[health]\nhttp = { port = 80, pth = \"/\" }\n",
        &["3:21: error: unknown key `pth` in [health.http]"],
    );
    expect(
        "command = [\"x\"]\nports = [\"80:80\", 5]\n",
        &["2:19: error: `ports[1]` must be a string or a table, not an integer"],
    );
    expect(
        "command = [\"x\"]\nports = [{ host_port = 80, containerport = 80 }]\n",
        &[
            "2:10: error: missing required key `ports[0].container_port`",
            "2:28: error: unknown key `containerport` in [ports[0]]",
        ],
    );
    let got = common::check(&["baseline"], "t.toml", "command = [\"x\"]\n[namespaces]\nnetwork = \"my net\"\n");
    assert_eq!(got.problems.len(), 1);
    assert_eq!(got.problems[0].message, "`namespaces.network` cannot be \"my net\"");
    assert_eq!(
        got.problems[0].help.as_deref(),
        Some(
            "expected one of \"private\", \"bridge\", \"host\", or a CNI network's name: letters, digits, `_`, `.` and `-`, at most 64 characters, starting with a letter or digit"
        )
    );
}

#[test]
fn missing_keys_point_at_their_table() {
    expect("user = 0\n", &["1:1: error: missing required key `command`"]);
    expect(
        "command = [\"x\"]\n\n[[mounts]]\ntarget = \"/data\"\n",
        &["3:1: error: missing required key `mounts[0].source`"],
    );
}

#[test]
fn unknown_keys_point_at_the_key_with_a_suggestion() {
    let got = baseline_problems("command = [\"x\"]\n[security]\nprivilege = false\n");
    assert_eq!(got, ["3:1: error: unknown key `privilege` in [security]"]);
    let checked = common::check(&["baseline"], "t.toml", "command = [\"x\"]\n[security]\nprivilege = false\n");
    assert_eq!(checked.problems[0].help.as_deref(), Some("did you mean `privileged`?"));
    expect("command = [\"x\"]\n[resource]\n", &["2:2: error: unknown key `resource` at the top level"]);
    // A wrong type says how to write the right one.
    let helped = |text: &str| {
        let checked = common::check(&["baseline"], "t.toml", text);
        checked.problems.iter().map(|p| (p.message.clone(), p.help.clone().unwrap_or_default())).collect::<Vec<_>>()
    };
    assert_eq!(
        helped("command = [\"x\"]\n[stop]\ntimeout = 10\n"),
        [(
            "`stop.timeout` must be a string, not an integer".to_owned(),
            "write a duration: a number and one unit of ms, s, m or h, e.g. \"100ms\", \"1.5s\", \"2m\"".to_owned()
        )]
    );
    assert_eq!(
        helped("command = [\"x\"]\n[mounts]\nsource = \"/srv\"\ntarget = \"/srv\"\n"),
        [(
            "`mounts` must be an array, not a table".to_owned(),
            "each `[[mounts]]` header adds one entry; `[mounts]` makes a single table".to_owned()
        )]
    );
    assert_eq!(
        helped("command = [\"x\"]\n[health]\ncommand = \"pg_isready\"\n")[0].0,
        "`health.command` must be an array, not a string"
    );
    // A signal as kill(1) takes it.
    let checked = common::check(&["baseline"], "t.toml", "command = [\"x\"]\n[stop]\nsignal = \"TERM\"\n");
    assert_eq!(checked.problems[0].message, "`stop.signal` cannot be \"TERM\"");
    assert_eq!(checked.problems[0].help.as_deref(), Some("did you mean \"SIGTERM\"?"));
    // And a typo in one so written.
    let checked = common::check(&["baseline"], "t.toml", "command = [\"x\"]\n[stop]\nsignal = \"KILLL\"\n");
    assert_eq!(checked.problems[0].help.as_deref(), Some("did you mean \"SIGKILL\"?"));
    // A top-level key written after a table's header (TOML's commonest slip).
    let text = "command = [\"x\"]\n[restart]\npolicy = \"always\"\nports = [\"8080:80\"]\n";
    let checked = common::check(&["baseline"], "t.toml", text);
    assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
    assert_eq!(checked.problems[0].message, "unknown key `ports` in [restart]");
    assert_eq!(
        checked.problems[0].help.as_deref(),
        Some(
            "`ports` is a top-level key: in TOML every key after a `[table]` header belongs to that table, so move it above the first one"
        )
    );
}

/// A key of any length is named in a message by its first 57 characters
/// (a megabyte's key made a megabyte's line in the daemon's log and in
/// `status`); the caret under the file's line says which.
#[test]
fn a_long_key_is_named_by_its_start() {
    let long = "K".repeat(100);
    let short = format!("{}…", "K".repeat(57));
    expect(
        &format!("command = [\"x\"]\n{long} = 1\n[env]\n{long} = 2\n"),
        &[
            &format!("2:1: error: unknown key `{short}` at the top level"),
            &format!("4:104: error: `env.{short}` must be a string, not an integer"),
        ],
    );
    // Past what the kernel passes a program, said by its start too.
    let huge = "E".repeat(200_000);
    expect(
        &format!("command = [\"x\"]\n[env]\n{huge} = \"1\"\n"),
        &[&format!("3:200004: error: {}…=... is 200002 bytes long", "E".repeat(57))],
    );
    // A name the schema refuses (`=` in a variable's name) too.
    let named = format!("{}=B", "A".repeat(200_000));
    expect(
        &format!("command = [\"x\"]\n[env]\n\"{named}\" = \"1\"\n"),
        &[&format!(
            "3:1: error: key \"{}…\" in [env] must be a variable name: not empty, and without `=`",
            "A".repeat(57)
        )],
    );
}

#[test]
fn every_problem_of_a_file_is_reported() {
    expect(
        "command = []\nuser = -1\nworkdir = \"tmp\"\n[namespaces]\nuser = \"rmap\"\n",
        &[
            "1:11: error: `command` cannot be empty",
            "2:8: error: `user` must be at least 0, not -1",
            "3:11: error: `workdir` must be an absolute path (starting with /), not \"tmp\"",
            "5:8: error: `namespaces.user` cannot be \"rmap\"",
        ],
    );
}

/// An integer is bounded by its type, and said so as any range is (not
/// as serde words it, "expected u32").
#[test]
fn integers_past_their_type_say_the_range() {
    expect(
        "command = [\"x\"]\n[restart]\nmax_retries = 5000000000\n",
        &["3:15: error: `restart.max_retries` must be at most 4294967295, not 5000000000"],
    );
    expect(
        "command = [\"x\"]\n[resources]\npids = 4294967296\n",
        &["3:8: error: `resources.pids` must be at most 4294967295, not 4294967296"],
    );
    expect("command = [\"x\"]\n[restart]\nmax_retries = 4294967295\n", &[]);
}

/// Past what TOML holds (64 bits), the same words, with the rest of the
/// file's problems.
#[test]
fn integers_past_64_bits_say_the_range() {
    expect(
        "command = [\"x\"]\n[restart]\nmax_retries = 99999999999999999999\n",
        &["3:15: error: `restart.max_retries` must be at most 4294967295, not 99999999999999999999"],
    );
    expect(
        "command = []\nuser = -99999999999999999999\n",
        &["1:11: error: `command` cannot be empty", "2:8: error: `user` must be at least 0, not -99999999999999999999"],
    );
    // A key with no range says what it is past.
    expect(
        "command = [\"x\"]\n[env]\nA = 99999999999999999999\n",
        &["3:5: error: `env.A` = 99999999999999999999 does not fit in 64 bits"],
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    expect("command = \"/bin/true\"\n", &["1:11: error: `command` must be an array, not a string"]);
    expect(
        "command = [\"x\"]\n[rootfs]\nreadonly = \"yes\"\n",
        &["3:12: error: `rootfs.readonly` must be a boolean (true or false), not a string"],
    );
    expect("command = [\"x\"]\nuser = 1.5\n", &["2:8: error: `user` must be an integer, not a float"]);
}

#[test]
fn units_explain_their_format() {
    expect(
        "command = [\"x\"]\n[resources]\nmemory = \"1GB\"\n",
        &[
            "3:10: error: `resources.memory` must be a size: a whole number and one unit of KiB, MiB, GiB or TiB, e.g. \"256MiB\", not \"1GB\"",
        ],
    );
    expect(
        "command = [\"x\"]\n[stop]\ntimeout = \"10 s\"\nsignal = \"TERM\"\n",
        &[
            "3:11: error: `stop.timeout` must be a duration: a number and one unit of ms, s, m or h, e.g. \"100ms\", \"1.5s\", \"2m\", not \"10 s\"",
            "4:10: error: `stop.signal` cannot be \"TERM\"",
        ],
    );
}

#[test]
fn values_the_schema_cannot_bound_are_still_caught_with_a_position() {
    expect("command = [\"x\"]\n[restart]\nbackoff = \"99999999999h\"\n", &["3:11: error: `99999999999h` is too large"]);
}

#[test]
fn semantic_checks_point_at_the_value() {
    expect(
        "command = [\"x\"]\n[[mounts]]\nsource = \"/a\"\ntarget = \"/data/../etc\"\n[[mounts]]\nsource = \"/b\"\ntarget = \"/x\"\n[[mounts]]\nsource = \"/c\"\ntarget = \"/x/\"\n",
        &[
            "4:10: error: mount target /data/../etc contains a `..` component",
            "10:10: error: /x/ is already the target of mounts[1]",
        ],
    );
    expect(
        "command = [\"x\"]\n[restart]\nbackoff = \"1m\"\nbackoff_max = \"10s\"\n",
        &["3:11: error: backoff (1m) is longer than backoff_max (10s)"],
    );
    expect(
        "command = [\"x\"]\n[health]\ntcp = 80\ninterval = \"0s\"\ntimeout = \"0ms\"\n",
        &[
            "4:12: warning: an interval of 0ms is probed every 100ms",
            "5:11: warning: a probe given no time fails every time",
        ],
    );
    expect("command = [\"x\"]\n[health]\ntcp = 80\ninterval = \"100ms\"\ntimeout = \"1ms\"\n", &[]);
    expect(
        "command = [\"x\"]\n[[mounts]]\nsource = \"/a\"\ntarget = \"/\"\n",
        &["4:10: error: a mount cannot replace the sandbox's `/`"],
    );
    expect(
        "command = [\"x\"]\n[[mounts]]\nsource = \"/a\"\ntarget = \"/data/x\"\n[[mounts]]\nsource = \"/b\"\ntarget = \"/data/\"\n[[mounts]]\nsource = \"/c\"\ntarget = \"/data/x/y\"\n[[mounts]]\nsource = \"/d\"\ntarget = \"/database\"\n",
        &[
            "4:10: error: /data/x lies beneath /data/, the target of mounts[1], which is mounted after it and would hide it",
        ],
    );
    expect("command = [\"a\\u0000b\"]\n", &["1:12: error: a command argument cannot contain a NUL byte"]);
    // A remapped workload's ids are its slice's (65536 by default); the
    // host's user namespace has them all (the privileged policy's).
    expect(
        "command = [\"x\"]\nuser = 65536\ngroup = 70000\n",
        &[
            "2:8: error: user 65536 is outside the workload's 65536 ids (0-65535)",
            "3:9: error: group 70000 is outside the workload's 65536 ids (0-65535)",
        ],
    );
    expect("command = [\"x\"]\nuser = 65535\ngroup = 65535\n", &[]);
}

#[test]
fn a_port_on_an_ipv6_address_of_the_ipv4_bridge_is_refused() {
    expect(
        "command = [\"x\"]\nports = [\"[::1]:8080:80\", \"127.0.0.1:8081:80\"]\n",
        &["2:10: error: paddock's bridge network is IPv4 only: nothing would be published on [::1]:8080:80/tcp"],
    );
}

/// Each entry of `ports` is judged on its own and said at its own entry,
/// as a mount is: one that is no port does not hide the next, nor a host
/// port published twice among the others (the typed manifest stopped at
/// the first, and pointed at the whole array).
#[test]
fn every_bad_port_is_said_at_its_entry() {
    expect(
        "command = [\"x\"]\nports = [\"70000:80\", \"8081:81\", \"8082:0\", \"8081:83\"]\n",
        &[
            "2:10: error: `70000` in `70000:80` is not a port: ports are 1 to 65535",
            "2:33: error: `0` in `8082:0` is not a port: ports are 1 to 65535",
            "2:43: error: host port 8081/tcp is already published by ports[1]",
        ],
    );
    expect(
        "command = [\"x\"]\nports = [\"8080:80\", \"8081\", \"8080:82\", { host_port = 8081, container_port = 83 }]\n",
        &[
            "2:21: error: `8081` gives no host port: paddock publishes on a fixed port, as in \"8080:80\" (host port 8080 to the workload's port 80)",
            "2:29: error: host port 8080/tcp is already published by ports[0]",
        ],
    );
    // Once every entry is a port, the checks of the typed manifest (two
    // collisions, each at its entry) as before.
    expect(
        "command = [\"x\"]\nports = [\"8080:80\", \"8081:81\", \"8080:82\", \"8081:83\"]\n",
        &[
            "2:32: error: host port 8080/tcp is already published by ports[0]",
            "2:43: error: host port 8081/tcp is already published by ports[1]",
        ],
    );
}

#[test]
fn an_idmapped_mount_in_the_hosts_user_namespace_is_refused_at_its_idmap() {
    // Only the privileged policy allows the host's user namespace: what is
    // left is paddock's own check (an idmap needs a namespace to map into).
    let text = "command = [\"x\"]\n[namespaces]\nuser = \"host\"\n[[mounts]]\nsource = \"/srv\"\ntarget = \"/srv\"\nidmap = true\n";
    let checked = common::check(&["privileged"], "t.toml", text);
    assert_eq!(
        common::lines("t.toml", text, &checked),
        [
            "7:9: error: an idmapped mount maps the files' owners into the workload's user namespace, and with namespaces.user = \"host\" it has none"
        ]
    );
    assert!(checked.problems[0].help.as_deref().unwrap().contains("remove idmap"));
}

#[test]
fn policy_errors_name_policy_and_rule() {
    expect(
        "command = [\"x\"]\n[namespaces]\npid = \"host\"\n",
        &[
            "3:7: error: policy baseline refuses this: `namespaces.pid = \"host\"` is not allowed [baseline/no-host-pid-with-remap]",
        ],
    );
    let text = "command = [\"x\"]\n[[mounts]]\nsource = \"/srv/data\"\ntarget = \"/data\"\nidmap = true\n";
    expect(
        text,
        &[
            "3:10: error: policy baseline refuses this: `mounts[0].source` must start with \"/var/lib/paddock/volumes/\", not \"/srv/data\" [baseline/idmap-only-under-volumes-root]",
        ],
    );
    let checked = common::check(&["baseline"], "t.toml", text);
    assert!(checked.problems[0].help.as_deref().unwrap().contains("Move the data there, or set idmap = false"));
}

#[test]
fn a_policy_refusing_a_default_says_so() {
    let text = "command = [\"x\"]\n";
    let checked = common::check(&["restricted"], "t.toml", text);
    assert_eq!(
        common::lines("t.toml", text, &checked),
        [
            "1:1: error: policy restricted refuses this: missing required key `resources.memory` [restricted/memory-limit-required]",
            "1:1: error: policy restricted refuses this: missing required key `resources.pids` [restricted/pids-limit-required]",
        ]
    );
}

#[test]
fn a_bad_file_name_is_reported_with_the_contents_problems() {
    let checked = common::check(&["baseline"], "My_App.toml", "user = 0\n");
    let lines = common::lines("My_App.toml", "user = 0\n", &checked);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("1:1: error: the file name gives the workload name: `My_App` may only contain"));
    assert_eq!(lines[1], "1:1: error: missing required key `command`");
}

#[test]
fn a_daemon_without_its_workloads_directory_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paddock.toml");
    std::fs::write(&config, "workloads = \"/nonexistent/workloads\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(said.contains("does not exist") && said.contains("./try.sh") && said.contains("--workloads"), "{said}");
}

/// A network whose definition the host refused (a bad edit of its file):
/// `check` warns at the line; to the daemon, a workload with no attachment
/// to it to keep is refused at the same line (its attachment kept: the
/// unit test in network::attachment). A name no file defines is an error.
#[test]
fn a_network_whose_definition_is_refused_is_warned_of_by_check() {
    use paddock::validate::{HostChecks, RefusedNetworks};
    let why = "/etc/paddock/networks/lan.conflist:2:11: not valid JSON: expected value at line 2 column 11";
    let refused = RefusedNetworks { by_name: vec![("lan".into(), why.into())], all: None, kept: Vec::new() };
    let validator = common::validator(&["baseline"])
        .with_networks(vec!["bridge".into()], vec!["bridge".into()])
        .with_refused_networks(refused);
    let text = "command = [\"x\"]\n[namespaces]\nnetwork = \"lan\"\n";
    let checked = validator.validate("t.toml", text, HostChecks::Warn);
    assert_eq!(
        common::lines("t.toml", text, &checked),
        [format!("3:11: warning: the network `lan` is refused on this host: {why}")]
    );
    assert!(checked.spec.is_some(), "a warning refuses nothing");
    let checked = validator.validate("t.toml", text, HostChecks::Require);
    assert_eq!(
        common::lines("t.toml", text, &checked),
        [format!("3:11: error: the network `lan` is refused on this host: {why}")]
    );
    let text = "command = [\"x\"]\n[namespaces]\nnetwork = \"wan\"\n";
    let checked = validator.validate("t.toml", text, HostChecks::Require);
    assert_eq!(common::lines("t.toml", text, &checked), ["3:11: error: no network `wan` on this host"]);
}

/// A bind keeps the flags of the host's mount it is made from: asking a
/// directory the host mounts read-only, nosuid or nodev for writes, set-user-id
/// bits or devices is warned at the key that asks, for it would be ignored
/// (the workload's writes would fail, its bits be ignored). (Said nowhere.)
#[test]
fn what_the_hosts_own_mount_of_a_source_keeps_from_a_workload_is_warned_of() {
    use paddock::validate::HostChecks;
    assert!(nix::unistd::geteuid().is_root(), "this test mounts a tmpfs: run it as root");
    let dir = tempfile::tempdir().unwrap();
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), flags, None::<&str>).unwrap();
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(dir.path());
    let source = dir.path().display();
    let text = format!(
        "command = [\"x\"]\n[[mounts]]\nsource = \"{source}\"\ntarget = \"/data\"\nreadonly = false\nsetuid = true\ndevices = true\n"
    );
    let checked = common::validator(&["privileged"]).validate("t.toml", &text, HostChecks::Require);
    let lines = common::lines("t.toml", &text, &checked);
    let said = |line: &str| lines.iter().any(|l| l == line);
    assert!(
        said(&format!(
            "5:12: warning: this host mounts {source} read-only: `readonly = false` cannot make it writable"
        )),
        "{lines:?}"
    );
    assert!(
        said(&format!(
            "6:10: warning: this host mounts {source} nosuid: `setuid = true` cannot honour set-user-id bits there"
        )),
        "{lines:?}"
    );
    assert!(
        said(&format!(
            "7:11: warning: this host mounts {source} nodev: `devices = true` cannot open device files there"
        )),
        "{lines:?}"
    );
    assert!(checked.spec.is_some(), "warnings: it may start");
    // A read-only mount asked of it is no warning.
    let text = format!("command = [\"x\"]\n[[mounts]]\nsource = \"{source}\"\ntarget = \"/data\"\n");
    let checked = common::validator(&["privileged"]).validate("t.toml", &text, HostChecks::Require);
    assert_eq!(common::lines("t.toml", &text, &checked), [] as [&str; 0]);
}
