//! The daemon's event loop never blocks: a sandbox whose init hangs while
//! setting up does not delay `status` or the watchdog, and is killed at
//! `start_timeout`; the control socket survives clients that misbehave and
//! a daemon out of descriptors. (Root and user namespaces required.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, SLEEPER};
use common::sandbox::busybox_rootfs;

/// A directory with a FUSE filesystem mounted at `hang` inside it, whose
/// server never answers (the test holds /dev/fuse and never reads it).
/// Mounted into a sandbox (sources are copied with their submounts), the
/// first lookup under `hang` waits for good.
struct HungFuse {
    dir: tempfile::TempDir,
    _server: std::fs::File,
}

impl HungFuse {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("hang")).unwrap();
        let server =
            std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").expect("/dev/fuse (the fuse module)");
        let options =
            format!("fd={},rootmode=40000,user_id=0,group_id=0,allow_other", std::os::fd::AsRawFd::as_raw_fd(&server));
        nix::mount::mount(
            Some("paddock-hung"),
            &dir.path().join("hang"),
            Some("fuse"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mount a FUSE filesystem");
        HungFuse { dir, _server: server }
    }
}

impl Drop for HungFuse {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir.path().join("hang"), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A manifest whose start hangs for good in `hang` (its second mount's
/// target lies in the FUSE filesystem), with `extra` tables.
fn hung_manifest(d: &Daemon, hang: &HungFuse, extra: &str) -> String {
    std::fs::write(d.path("out/file"), "x").unwrap();
    format!(
        "command = [\"/bin/sleep\", \"100\"]\nrootfs = {{ path = {:?} }}\n{extra}[[mounts]]\nsource = {:?}\ntarget = \"/mnt\"\n[[mounts]]\nsource = {:?}\ntarget = \"/mnt/hang/file\"\n",
        busybox_rootfs().display().to_string(),
        hang.dir.path().display().to_string(),
        d.path("out/file").display().to_string()
    )
}

#[test]
fn an_init_that_hangs_blocks_neither_status_nor_the_watchdog_and_is_killed_at_its_timeout() {
    // An init that hangs for good, as on a dead network mount: the root has
    // a FUSE filesystem whose server never answers, and the manifest's mount
    // target lies inside it, so the init's lookup there waits (killably)
    // for an answer that never comes.
    let hang = HungFuse::new();
    let (_notify, sock_path, sock) = common::daemon::notify_socket(Duration::from_millis(50));
    let d = Daemon::setup();
    d.configure("policy_dir", "start_timeout = \"4s\"\npolicy_dir");
    let d = d.start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")]);
    d.write("hung.toml", &hung_manifest(&d, &hang, ""));
    d.wait_for("hung starting", |d| d.workload("hung").is_some_and(|w| w["state"] == "starting"));
    // While it hangs: every status answer at once (a loop blocked on the
    // init would take its whole start_timeout), the watchdog pinged.
    let mut slowest = Duration::ZERO;
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        let (took, answer) = d.timed_status();
        assert!(answer.contains("\"hung\""), "{answer}");
        slowest = slowest.max(took);
        while let Ok(n) = sock.recv(&mut buf) {
            pings += usize::from(&buf[..n] == b"WATCHDOG=1");
        }
    }
    assert!(slowest < Duration::from_millis(250), "status took {slowest:?} while an init hung");
    assert!(pings >= 5, "{pings} watchdog pings in 1.5 s (every 100 ms expected)");
    let w = d.workload("hung").unwrap();
    assert_eq!(w["state"], "starting", "still hung: {w}");
    // At its timeout it is killed, and the failure says why.
    d.wait_for("the hung start to be given up", |d| d.workload("hung").is_some_and(|w| w["state"] == "backoff"));
    let w = d.workload("hung").unwrap();
    assert!(w["error"].as_str().unwrap().contains("did not start within 4s (start_timeout)"), "{w}");
}

/// An upgrade asked while a start hangs waits for that start's deadline,
/// which kills it, as the loop would: the new image never adopts a
/// half-built sandbox as running. The watchdog is pinged meanwhile.
#[test]
fn an_upgrade_during_a_hung_start_kills_it_at_its_deadline_and_never_adopts_it() {
    let hang = HungFuse::new();
    let (_notify, sock_path, sock) = common::daemon::notify_socket(Duration::from_millis(50));
    let d = Daemon::setup();
    d.configure("policy_dir", "start_timeout = \"3s\"\npolicy_dir");
    let d = d.start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")]);
    d.write("hung.toml", &hung_manifest(&d, &hang, "[restart]\nbackoff = \"60s\"\nbackoff_max = \"60s\"\n"));
    // One that fails at once and is restarted without delay: in its backoff
    // when the upgrade comes, whose end only the loop acts on.
    d.write(
        "flaky.toml",
        &format!(
            "command = [\"/bin/false\"]\nrootfs = {{ path = {:?} }}\n[restart]\nbackoff = \"0s\"\n",
            busybox_rootfs().display().to_string()
        ),
    );
    d.wait_for("hung starting", |d| d.workload("hung").is_some_and(|w| w["state"] == "starting"));
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let daemon = d.child.as_ref().unwrap().id();
    let socket = d.path("paddock.sock");
    let upgrade = std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock")).args(["upgrade", "--socket"]).arg(socket).output()
    });
    // While the upgrade waits for the start's deadline: pinged (every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 256];
    while sock.recv(&mut buf).is_ok() {}
    let (mut pings, until) = (0, std::time::Instant::now() + Duration::from_millis(1500));
    let before = cpu(daemon);
    while std::time::Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            pings += usize::from(&buf[..n] == b"WATCHDOG=1");
        }
    }
    let ticks = cpu(daemon) - before;
    assert!(pings >= 5, "{pings} watchdog pings in 1.5 s while the upgrade waited");
    // Clock ticks are 10 ms: a wait that spun would take most of the 150.
    assert!(ticks < 50, "the daemon used {ticks} ticks of CPU in 1.5 s of waiting");
    let out = upgrade.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The new image waits out the rest of its 60 s delay (kept; why it
    // began is the old image's to say, in the log).
    let w = d.workload("hung").unwrap();
    assert_eq!(w["state"], "backoff", "killed at its deadline, not adopted as running: {w}");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    let upgrading = log.find("upgrading in place").expect("the upgrade in the log");
    assert!(
        log[..upgrading].contains("missed its deadline: killing every process of the sandbox workload=hung"),
        "{log}"
    );
    assert!(!log[upgrading..].contains("starting workload=hung"), "not started again at once: {log}");
}

/// A stop (SIGTERM) asked while an upgrade settles (here: waiting out a
/// hung start's deadline) is not lost at the exec (it was, heard and never
/// acted on), nor kept waiting for the start: the upgrade is abandoned,
/// its client told, and the daemon stops every workload and exits.
#[test]
fn a_stop_asked_during_an_upgrade_abandons_it_and_stops_every_workload() {
    let hang = HungFuse::new();
    let d = Daemon::setup();
    d.configure("policy_dir", "start_timeout = \"2s\"\npolicy_dir");
    let mut d = d.start(&[]);
    d.write("steady.toml", SLEEPER);
    let steady = d.running_pid("steady");
    d.write("hung.toml", &hung_manifest(&d, &hang, "[restart]\nbackoff = \"60s\"\nbackoff_max = \"60s\"\n"));
    d.wait_for("hung starting", |d| d.workload("hung").is_some_and(|w| w["state"] == "starting"));
    // (The client may wait a while for the new image, which stops: not
    // waited for.)
    let _upgrade = common::Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["upgrade", "--socket"])
            .arg(d.path("paddock.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.path("out/upgrade.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let daemon = d.child.as_ref().unwrap().id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let child = d.child.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon still runs 20 s after SIGTERM\n{}",
            std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(common::daemon::gone(steady), "its workloads stopped");
    let log = std::fs::read_to_string(d.path("out/daemon.log")).unwrap();
    assert!(log.contains("the daemon was asked to stop: not upgraded"), "{log}");
    let told = || std::fs::read_to_string(d.path("out/upgrade.err")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !told().contains("not upgraded") {
        assert!(Instant::now() < deadline, "the client was not told: {}", told());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// systemd reads its notify socket in its own loop; while it does not
/// (PID 1 busy), the socket's queue fills (10 datagrams) and paddock's
/// messages wait for room, while the daemon goes on; once read again, the
/// latest status arrives.
#[test]
fn a_notify_socket_nobody_reads_never_stalls_the_daemon() {
    let notify = tempfile::tempdir().unwrap();
    let sock_path = notify.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // A ping every 10 ms, into a queue already full.
    let d = Daemon::setup().start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "20000")]);
    fill(&sock_path);
    let asked = Instant::now();
    d.write("one.toml", SLEEPER);
    d.write("two.toml", SLEEPER);
    d.running_pid("one");
    d.running_pid("two");
    // (Stalled, neither ever started.)
    assert!(asked.elapsed() < Duration::from_secs(10), "two starts took {:?}", asked.elapsed());
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (took, answer) = d.timed_status();
        assert!(answer.contains("\"two\""), "{answer}");
        slowest = slowest.max(took);
    }
    assert!(slowest < Duration::from_secs(1), "status took {slowest:?} while systemd did not read");
    // Read again: READY=1 and the latest status come.
    let said = notified_until(&sock, "STATUS=2 running");
    assert!(said.iter().any(|m| m.starts_with("READY=1")), "{said:?}");
}

/// Without a watchdog nothing else is sent: what found no room is tried
/// again while the daemon is idle.
#[test]
fn what_systemd_had_no_room_for_is_sent_once_it_has() {
    let notify = tempfile::tempdir().unwrap();
    let sock_path = notify.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let d = Daemon::setup().start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let filled = fill(&sock_path);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    // Read again, with the daemon idle: its status comes.
    let said = notified_until(&sock, "STATUS=1 running");
    assert!(said.iter().any(|m| m.starts_with("READY=1")), "{said:?}");
    assert_eq!(said.iter().filter(|m| *m == "X=1").count(), filled, "{said:?}");
}

/// Fills the socket's queue with `X=1` datagrams, as if PID 1 were behind
/// on its reading; returns how many it took.
fn fill(path: &std::path::Path) -> usize {
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut filled = 0;
    while filler.send_to(b"X=1", path).is_ok() {
        filled += 1;
        assert!(filled < 100_000, "the queue never filled");
    }
    filled
}

/// What was sent to systemd's socket, read until a message holds `until`
/// (within 5 s).
fn notified_until(sock: &UnixDatagram, until: &str) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !said.iter().any(|m: &String| m.contains(until)) {
        assert!(Instant::now() < deadline, "{until} never came: {said:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    said
}

/// `status --watch` clients hold their connection for as long as they
/// watch: past 16 they are told so and let go, so that as many watchers
/// as there are connection slots still leave room for `status`.
#[test]
fn watchers_never_take_every_connection() {
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    let request = format!("{}\n", serde_json::to_string(&paddock::protocol::Request::Watch).unwrap());
    let watchers: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = UnixStream::connect(d.path("paddock.sock")).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let mut refused = 0;
    for s in &watchers {
        let mut first = String::new();
        BufReader::new(s).read_line(&mut first).unwrap();
        if first.contains("16 status --watch clients are served already: end one") {
            refused += 1;
        } else {
            assert!(first.contains("\"one\""), "{first}");
        }
    }
    assert_eq!(refused, 48);
    assert!(d.timed_status().1.contains("\"one\""), "status answers beside 16 watchers");
}

/// A watcher that reads slowly is sent the latest status once it reads
/// again, not every one it missed (which would pile up in the daemon
/// without bound): beside a watcher that reads at once, it gets fewer
/// lines, and the same last one.
#[test]
fn a_slow_watcher_gets_the_latest_status_not_every_one_it_missed() {
    const WORKLOADS: usize = 100;
    let d = Daemon::setup().start(&[]);
    let request = format!("{}\n", serde_json::to_string(&paddock::protocol::Request::Watch).unwrap());
    let watcher = || {
        let mut s = UnixStream::connect(d.path("paddock.sock")).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        BufReader::new(s)
    };
    let all_running = |line: &str| line.matches("\"state\":\"running\"").count() == WORKLOADS;
    // Each reads up to the line that shows every workload running.
    let read = move |mut watcher: BufReader<UnixStream>| {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(watcher.read_line(&mut line).unwrap() > 0, "the daemon let the watcher go");
            let done = all_running(&line);
            lines.push(line);
            if done {
                return lines;
            }
        }
    };
    let (fast, slow) = (watcher(), watcher());
    let (done, finished) = std::sync::mpsc::channel();
    let fast = std::thread::spawn(move || {
        let lines = read(fast);
        let _ = done.send(());
        lines
    });
    // The slow one reads once the fast one has seen everything running,
    // or after 5 s on a slow machine: well within the 10 s the daemon
    // gives a write to be taken before it lets a watcher go.
    let slow = std::thread::spawn(move || {
        let _ = finished.recv_timeout(Duration::from_secs(5));
        read(slow)
    });
    // About a hundred changes, each line of status some 30 KB: far more
    // than the socket holds for the watcher that does not read.
    for i in 0..WORKLOADS {
        d.write(&format!("a-workload-with-a-rather-long-name-{i:03}.toml"), SLEEPER);
        std::thread::sleep(Duration::from_millis(10));
    }
    let (fast, slow) = (fast.join().unwrap(), slow.join().unwrap());
    assert!(fast.len() > 20, "few changes were sent: {}", fast.len());
    assert!(slow.len() < fast.len(), "the slow watcher got every line: {} of {}", slow.len(), fast.len());
    assert_eq!(slow.last(), fast.last(), "both end at the status now");
}

#[test]
fn the_control_socket_outlives_idle_huge_and_many_clients() {
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    // A client that sends nothing is dropped after the read timeout.
    let mut idle = UnixStream::connect(d.path("paddock.sock")).unwrap();
    // A request line of 1 MiB is refused, not buffered.
    let mut huge = UnixStream::connect(d.path("paddock.sock")).unwrap();
    let line = vec![b'x'; 1 << 20];
    let _ = huge.write_all(&line);
    let mut answer = String::new();
    BufReader::new(&huge).read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than 65536 bytes"), "{answer}");
    // More idle clients than are served at once: the rest wait in the
    // backlog, and status answers once the idle ones time out.
    let crowd: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(d.path("paddock.sock")).unwrap()).collect();
    d.wait_for("status to answer past the crowd", |d| d.timed_status().1.contains("\"one\""));
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = idle.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).contains("no request within 5 s"), "{}", String::from_utf8_lossy(&rest));
    drop(crowd);
    assert!(d.timed_status().1.contains("\"one\""));
}

/// The daemon's open descriptors now.
fn descriptors_of(d: &Daemon) -> usize {
    let pid = d.child.as_ref().unwrap().id();
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A request that carries more descriptors than any may (exec's three)
/// is refused saying so, and every descriptor the kernel handed the
/// daemon with it is closed. (The kernel installs as many as the
/// daemon's room holds, then says the list was cut short: those were
/// never closed, four a request, until the daemon could start nothing.)
#[test]
fn descriptors_past_a_requests_room_are_refused_and_closed() {
    use std::os::fd::AsRawFd;
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    let before = descriptors_of(&d);
    let null = std::fs::File::open("/dev/null").unwrap();
    for _ in 0..50 {
        let mut client = common::daemon::connect_sending(&d, b"{", &[null.as_raw_fd(); 5]);
        let _ = client.write_all(b"\"cmd\":\"status\"}\n");
        let mut answer = String::new();
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = BufReader::new(&client).read_line(&mut answer);
        assert!(answer.contains("a request carries at most 3 descriptors"), "{answer}");
    }
    let after = descriptors_of(&d);
    assert!(after <= before + 2, "{} descriptors left open ({before} before, {after} after)", after - before);
    assert!(d.timed_status().1.contains("\"one\""));
}

/// A request whose client closed its connection before the daemon came
/// to it (it waited in the backlog behind busy clients, and its client
/// gave up, told the daemon did not answer) is not carried out: it was
/// carried out a minute later, unasked.
#[test]
fn a_request_whose_client_went_before_it_was_read_is_not_carried_out() {
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    let pid = d.running_pid("one");
    // Every connection slot held by a client that sends nothing (each is
    // let go after 5 s).
    let crowd: Vec<UnixStream> = (0..64).map(|_| UnixStream::connect(d.path("paddock.sock")).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut gone = UnixStream::connect(d.path("paddock.sock")).unwrap();
    gone.write_all(b"{\"cmd\":\"stop\",\"name\":\"one\"}\n").unwrap();
    drop(gone);
    let log = || std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
    d.wait_for("the request to be read", |_| log().contains("is not carried out"));
    assert!(log().contains("request=\"stop\""), "{}", log());
    drop(crowd);
    let one = d.workload("one").unwrap();
    assert_eq!((one["state"].as_str(), one["pid"].as_i64()), (Some("running"), Some(pid)), "{one}");
    // A client that closes only its writing half still gets its answer.
    let mut half = UnixStream::connect(d.path("paddock.sock")).unwrap();
    half.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    half.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    half.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"one\""), "{answer}");
}

/// Long request lines from many clients at once take turns with the
/// event loop: a status asked meanwhile is answered at once. (Read a byte
/// at a time, 60 lines of 64 KB held every other task for seconds.)
#[test]
fn long_requests_from_many_clients_do_not_hold_up_the_loop() {
    let d = Daemon::setup().start(&[]);
    d.write("one.toml", SLEEPER);
    d.running_pid("one");
    let line = vec![b'x'; 65_000];
    let clients: Vec<UnixStream> = (0..60)
        .map(|_| {
            let mut client = UnixStream::connect(d.path("paddock.sock")).unwrap();
            client.write_all(&line).unwrap();
            client
        })
        .collect();
    let (took, answer) = d.timed_status();
    assert!(answer.contains("\"one\""), "{answer}");
    assert!(took < Duration::from_secs(2), "status took {took:?} behind the long requests");
    drop(clients);
}

#[test]
fn a_daemon_out_of_descriptors_keeps_answering_and_stops_on_sigterm() {
    let mut d = Daemon::setup();
    // A soft limit the daemon cannot raise: its hard limit too.
    d.nofile_soft = Some(64);
    d.nofile_hard = Some(64);
    let mut d = d.start(&[]);
    // More than 64 descriptors can hold (one channel per sandbox at least).
    for i in 0..80 {
        d.write(&format!("w{i:02}.toml"), &format!("command = [\"/bin/sleep\", \"{}\"]\n", 200_000 + i));
    }
    // Some start, the others wait for descriptors with a clear reason.
    d.wait_for("every workload seen", |d| d.status().len() == 80);
    std::thread::sleep(Duration::from_secs(2));
    let status = d.status();
    let running = status.iter().filter(|w| w["state"] == "running").count();
    let waiting: Vec<_> = status.iter().filter(|w| w["state"] != "running").collect();
    assert!(running > 0, "some workloads run");
    assert!(!waiting.is_empty(), "not all 80 fit in 64 descriptors");
    for w in &waiting {
        let error = w["error"].as_str().unwrap_or_default();
        // EMFILE, however it is worded: nix's name, std's number (glibc
        // says "Too many open files", musl "No file descriptors available").
        let emfile = ["EMFILE", "(os error 24)", "Too many open files"].iter().any(|e| error.contains(e));
        assert!(emfile || w["state"] == "starting", "{w}");
        assert_ne!(w["state"], "failed", "the daemon's trouble is not the workload's: {w}");
    }
    // Clients are still answered (after the accept errors), and SIGTERM stops everything.
    let (took, answer) = d.timed_status();
    assert!(answer.contains("\"w00\""), "{answer}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let asked = Instant::now();
    assert_eq!(d.terminate(), 0);
    assert!(asked.elapsed() < Duration::from_secs(20), "SIGTERM took {:?}", asked.elapsed());
}

/// A manifest the daemon cannot read for want of a descriptor (its limit
/// lowered under it to what it holds) is read again a moment later, not
/// left unread until the next full rescan (an hour away here). (The
/// file-by-file case: tests/scan_out_of_descriptors.rs.)
#[test]
fn a_manifest_unread_for_want_of_descriptors_is_read_again_in_a_moment() {
    let d = Daemon::setup();
    d.configure("[remap]\n", "resync_interval = \"1h\"\n[remap]\n");
    let d = d.start(&[]);
    let pid = d.child.as_ref().unwrap().id() as libc::pid_t;
    let limit = |soft: Option<u64>| {
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: prlimit with a valid pid and pointers to live rlimits.
        assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut now) }, 0);
        let new = libc::rlimit { rlim_cur: soft.unwrap_or(now.rlim_max), rlim_max: now.rlim_max };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) }, 0);
    };
    // The lowest descriptor number free: the next one opened would take it.
    let lowest_free = || {
        let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        (0..).find(|n| !open.contains(n)).unwrap()
    };
    // Idle (its first scan done, the status client gone): none to spare.
    d.wait_for("the daemon idle", |_| {
        let before = lowest_free();
        std::thread::sleep(Duration::from_millis(200));
        before == lowest_free()
    });
    limit(Some(lowest_free()));
    d.write("late.toml", SLEEPER);
    let said = "cannot read the manifests for want of descriptors or memory";
    let log = || std::fs::read_to_string(d.path("out/daemon.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains(said) {
        assert!(Instant::now() < deadline, "the daemon did not say it could not read late.toml: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    limit(None);
    d.running_pid("late");
    assert!(log().contains("the manifests can be read again"), "{}", log());
    assert_eq!(log().matches(said).count(), 1, "said once, not at every try: {}", log());
    // Not unsafe: the directory is not said to be refused.
    assert!(!log().contains("the workloads directory is refused"), "{}", log());
}
