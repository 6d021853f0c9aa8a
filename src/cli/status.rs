//! `paddock status`: the running daemon's workloads, as a table or JSON.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::daemon::status::{Request, Response, WorkloadStatus};

/// Show the workloads of the running daemon: name, state, pid, host uid
/// range, restarts, uptime, last exit, and the current error.
///
/// Exit status 1 when the daemon cannot be reached.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON array, an object per workload.
    #[arg(long)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = "/run/paddock/paddock.sock")]
    pub socket: PathBuf,
}

/// Sends one request to the daemon and reads its answer.
pub fn ask(socket: &std::path::Path, request: &Request) -> Result<Response, String> {
    let unreachable = |e: std::io::Error| {
        format!("cannot reach the daemon at {}: {e} (is `paddock daemon` running?)", socket.display())
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(unreachable)?;
    serde_json::from_str(&answer).map_err(|e| format!("the daemon's answer is not understood: {e}"))
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn table(workloads: &[WorkloadStatus]) -> String {
    let rows: Vec<[String; 7]> = workloads
        .iter()
        .map(|w| {
            [
                w.name.clone(),
                w.state.clone(),
                w.pid.map_or("-".into(), |p| p.to_string()),
                w.uid_map.as_ref().map_or("-".into(), |m| {
                    format!("{}-{}", m.host_start, u64::from(m.host_start) + u64::from(m.size) - 1)
                }),
                w.restarts.to_string(),
                w.uptime_seconds.map_or("-".into(), uptime),
                w.last_exit.as_ref().map_or("-".into(), |e| e.to_string().trim_matches('"').to_owned()),
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "PID", "HOST UIDS", "RESTARTS", "UPTIME", "LAST EXIT"];
    let widths: Vec<usize> =
        (0..7).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = line(&header.map(String::from)) + "\n";
    for (row, w) in rows.iter().zip(workloads) {
        out += &(line(row) + "\n");
        if let Some(error) = &w.error {
            for l in error.lines() {
                out += &format!("    {l}\n");
            }
        }
    }
    out
}

pub fn run(args: StatusArgs) -> std::io::Result<super::ExitCode> {
    match ask(&args.socket, &Request::Status) {
        Ok(Response::Status(workloads)) => {
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &workloads)?;
                writeln!(out)?;
            } else {
                out.write_all(table(&workloads).as_bytes())?;
            }
            Ok(0)
        }
        Ok(Response::Error(e)) => {
            eprintln!("paddock status: {e}");
            Ok(1)
        }
        Err(e) => {
            eprintln!("paddock status: {e}");
            Ok(1)
        }
    }
}
