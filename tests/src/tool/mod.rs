//! The implementation of the `azflow-traffic` binary (std and libc only, blocking sockets).
//!
//! ```text
//! azflow-traffic serve --bind ADDR:PORT [--connections N] [--timeout-secs S]
//! azflow-traffic serve --udp --bind ADDR:PORT [--datagrams N] [--idle-ms MS] [--timeout-secs S]
//! azflow-traffic bulk --to ADDR:PORT --bytes N [--chunk BYTES] [--rate BYTES] [--timeout-secs S]
//! azflow-traffic rr   --to ADDR:PORT --count N --size S [--timeout-secs S]
//! azflow-traffic udp  --to ADDR:PORT --count N --size S
//! azflow-traffic ping --to ADDR [--to ADDR…] [--count N] [--timeout-ms MS]
//! ```
//!
//! Port 0 in `--bind` lets the kernel choose; the `listening` line tells which. IPv6 socket
//! addresses are written `[fd00:0:0:1::10]:5000`. Each run prints JSON lines
//! ([`crate::protocol::Report`]) on stdout, and on failure a message on stderr and exit status 1.

mod args;
mod ping;
mod tcp;
mod udp;

use std::{
    io::{self, Write},
    time::Duration,
};

use self::args::Args;
use crate::protocol::Report;

/// Default bound on any single blocking socket operation and on waiting for connections.
const DEFAULT_TIMEOUT_SECS: u64 = 60;

pub const USAGE: &str = "\
usage:
  azflow-traffic serve --bind ADDR:PORT [--connections N (0: until idle)] [--timeout-secs S]
  azflow-traffic serve --udp --bind ADDR:PORT [--datagrams N] [--idle-ms MS] [--timeout-secs S]
  azflow-traffic bulk --to ADDR:PORT --bytes N [--chunk BYTES] [--rate BYTES (per second)] [--timeout-secs S]
  azflow-traffic rr --to ADDR:PORT --count N --size S [--sessions N] [--start-after-ms MS] [--timeout-secs S]
  azflow-traffic ask --to ADDR:PORT [--connections N] --bytes N --reply N [--timeout-secs S]
  azflow-traffic udp --to ADDR:PORT --count N --size S
  azflow-traffic ping --to ADDR [--to ADDR ...] [--count N] [--timeout-ms MS]";

/// Runs the tool with `argv` (without the program name); returns the process exit code.
pub fn main(argv: &[String]) -> i32 {
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    if command == "-h" || command == "--help" || command == "help" {
        println!("{USAGE}");
        return 0;
    }
    let result = Args::parse(rest).and_then(|args| dispatch(command, args));
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("azflow-traffic {command}: {message}");
            1
        }
    }
}

fn dispatch(command: &str, mut args: Args) -> Result<(), String> {
    let timeout = args.take_secs("timeout-secs", DEFAULT_TIMEOUT_SECS)?;
    match command {
        "serve" if args.flag("udp") => {
            let opts = udp::ServeOptions {
                bind: args.take_socket_addr("bind")?,
                datagrams: args.take_parsed("datagrams")?,
                idle: args.take_millis("idle-ms", 500)?,
                timeout,
            };
            args.finish()?;
            udp::serve(&opts)
        }
        "serve" => {
            let bind = args.take_socket_addr("bind")?;
            let connections = args.take_parsed("connections")?.unwrap_or(1);
            args.finish()?;
            tcp::serve(bind, connections, timeout)
        }
        "bulk" => {
            let to = args.take_socket_addr("to")?;
            let bytes = args.take_bytes("bytes")?.ok_or("--bytes is required")?;
            let chunk = args.take_bytes("chunk")?.unwrap_or(256 << 10);
            let rate = args.take_bytes("rate")?;
            args.finish()?;
            let chunk = usize::try_from(chunk)
                .ok()
                .filter(|c| *c > 0)
                .ok_or("--chunk must be positive")?;
            if rate == Some(0) {
                return Err("--rate must be positive".into());
            }
            emit(&Report::Bulk(tcp::bulk(to, bytes, chunk, rate, timeout)?))
        }
        "rr" => {
            let to = args.take_socket_addr("to")?;
            let count = args.require("count")?;
            let size = args.require("size")?;
            let sessions: u64 = args.take_parsed("sessions")?.unwrap_or(1);
            let start_after = args.take_millis("start-after-ms", 0)?;
            args.finish()?;
            emit(&Report::Rr(tcp::rr_sessions(to, sessions, count, size, timeout, start_after)?))
        }
        "ask" => {
            let to = args.take_socket_addr("to")?;
            let connections = args.take_parsed("connections")?.unwrap_or(1);
            let request = args.take_bytes("bytes")?.ok_or("--bytes is required")?;
            let reply = args.require("reply")?;
            args.finish()?;
            emit(&Report::Rr(tcp::ask(to, connections, request, reply, timeout)?))
        }
        "udp" => {
            let to = args.take_socket_addr("to")?;
            let count = args.require("count")?;
            let size = args.require("size")?;
            args.finish()?;
            emit(&Report::Udp(udp::send(to, count, size)?))
        }
        "ping" => {
            let targets = args
                .take_all("to")?
                .iter()
                .map(|t| t.parse().map_err(|e| format!("--to {t:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if targets.is_empty() {
                return Err("--to is required".into());
            }
            let count = args.take_parsed("count")?.unwrap_or(1);
            let wait = args.take_millis("timeout-ms", 2000)?;
            args.finish()?;
            emit(&Report::Ping(ping::ping(&targets, count, wait)?))
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// Prints one report line and flushes, so a harness reading the pipe sees it at once.
fn emit(report: &Report) -> Result<(), String> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", report.to_line())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

/// Elapsed seconds as f64, never 0 (so rates stay finite).
fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

/// Formats an io::Error with what was being done.
fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {e}")
}
