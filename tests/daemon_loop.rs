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

/// One status request on the socket, timed (the daemon's answer, without
/// a client process's start).
fn timed_status(d: &Daemon) -> (Duration, String) {
    let asked = Instant::now();
    let mut s = UnixStream::connect(d.path("paddock.sock")).unwrap();
    s.write_all(b"{\"cmd\": \"status\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    (asked.elapsed(), answer)
}

#[test]
fn an_init_that_hangs_blocks_neither_status_nor_the_watchdog_and_is_killed_at_its_timeout() {
    // An init that hangs for good: a file mount onto a FIFO in the root
    // blocks in open(2) until a reader comes, and none does.
    let root = busybox_rootfs();
    let fifo = root.join("hang");
    if !fifo.exists() {
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        // Writable by the sandbox's root (not the host's): the open blocks, it is not refused.
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    }
    let notify = tempfile::tempdir().unwrap();
    let sock_path = notify.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let d = Daemon::setup();
    d.configure("policy_dir", "start_timeout = \"2s\"\npolicy_dir");
    std::fs::write(d.path("out/file"), "x").unwrap();
    let d = d.start(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")]);
    let hung = format!(
        "command = [\"/bin/sleep\", \"100\"]\nrootfs = {{ path = {:?} }}\n[[mounts]]\nsource = {:?}\ntarget = \"/hang\"\n",
        root.display().to_string(),
        d.path("out/file").display().to_string()
    );
    d.write("hung.toml", &hung);
    d.wait_for("hung starting", |d| d.workload("hung").is_some_and(|w| w["state"] == "starting"));
    // While it hangs: every status answer within 100 ms, the watchdog pinged.
    let mut slowest = Duration::ZERO;
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        let (took, answer) = timed_status(&d);
        assert!(answer.contains("\"hung\""), "{answer}");
        slowest = slowest.max(took);
        while let Ok(n) = sock.recv(&mut buf) {
            pings += usize::from(&buf[..n] == b"WATCHDOG=1");
        }
    }
    assert!(slowest < Duration::from_millis(100), "status took {slowest:?} while an init hung");
    assert!(pings >= 5, "{pings} watchdog pings in 1.5 s (every 100 ms expected)");
    let w = d.workload("hung").unwrap();
    assert_eq!(w["state"], "starting", "still hung: {w}");
    // At its timeout it is killed, and the failure says why.
    d.wait_for("the hung start to be given up", |d| d.workload("hung").is_some_and(|w| w["state"] == "backoff"));
    let w = d.workload("hung").unwrap();
    assert!(w["error"].as_str().unwrap().contains("did not start within 2s (start_timeout)"), "{w}");
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
    d.wait_for("status to answer past the crowd", |d| timed_status(d).1.contains("\"one\""));
    let mut rest = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = idle.read_to_end(&mut rest);
    assert!(String::from_utf8_lossy(&rest).contains("no request within 5 s"), "{}", String::from_utf8_lossy(&rest));
    drop(crowd);
    assert!(timed_status(&d).1.contains("\"one\""));
}

#[test]
fn a_daemon_out_of_descriptors_keeps_answering_and_stops_on_sigterm() {
    let mut d = Daemon::setup();
    // A soft limit the daemon cannot raise: its hard limit too.
    d.nofile_soft = Some(64);
    d.nofile_hard = Some(64);
    let mut d = d.start(&[]);
    for i in 0..40 {
        d.write(&format!("w{i:02}.toml"), &format!("command = [\"/bin/sleep\", \"{}\"]\n", 200_000 + i));
    }
    // Some start, the others wait for descriptors with a clear reason.
    d.wait_for("every workload seen", |d| d.status().len() == 40);
    std::thread::sleep(Duration::from_secs(2));
    let status = d.status();
    let running = status.iter().filter(|w| w["state"] == "running").count();
    let waiting: Vec<_> = status.iter().filter(|w| w["state"] != "running").collect();
    assert!(running > 0, "some workloads run");
    assert!(!waiting.is_empty(), "not all 40 fit in 64 descriptors");
    for w in &waiting {
        let error = w["error"].as_str().unwrap_or_default();
        assert!(error.contains("Too many open files") || w["state"] == "starting", "{w}");
        assert_ne!(w["state"], "failed", "the daemon's trouble is not the workload's: {w}");
    }
    // Clients are still answered (after the accept errors), and SIGTERM stops everything.
    let (took, answer) = timed_status(&d);
    assert!(answer.contains("\"w00\""), "{answer}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let asked = Instant::now();
    assert_eq!(d.terminate(), 0);
    assert!(asked.elapsed() < Duration::from_secs(20), "SIGTERM took {:?}", asked.elapsed());
}
