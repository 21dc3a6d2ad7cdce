//! Running `azflow-traffic` inside the bed's hosts and parsing what it reports.

use std::{
    env,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    TestBed,
    addressing::Family,
    host::Host,
    process::Proc,
    protocol::{BulkReport, PingReport, Report, RrReport, ServerDone, UdpReport},
};

/// Environment variable that overrides where the harness finds `azflow-traffic`.
pub const TRAFFIC_BIN_ENV: &str = "AZFLOW_TRAFFIC_BIN";

/// How long a server may take to bind and say so.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// The path of `azflow-traffic` as Cargo built it for this package's integration tests:
/// `azflow_tests::traffic_bin!()`. Expands `env!("CARGO_BIN_EXE_azflow-traffic")` in the calling
/// crate, so it only compiles in integration tests, benches and examples of `azflow-tests`.
#[macro_export]
macro_rules! traffic_bin {
    () => {
        ::std::path::PathBuf::from(env!("CARGO_BIN_EXE_azflow-traffic"))
    };
}

/// Finds the `azflow-traffic` binary: `$AZFLOW_TRAFFIC_BIN` if set, else next to the running
/// executable or one directory up (integration tests run from `target/<profile>/deps/`, the
/// binary is in `target/<profile>/`). Cargo builds the binary before this package's integration
/// tests; other packages must build it first (`cargo build -p azflow-tests --bin azflow-traffic`).
pub fn locate_binary() -> Result<PathBuf> {
    if let Some(path) = env::var_os(TRAFFIC_BIN_ENV) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "{TRAFFIC_BIN_ENV}={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = env::current_exe().context("finding the running executable")?;
    let mut tried = Vec::new();
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("azflow-traffic");
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    bail!(
        "azflow-traffic not found (tried {}); build it with \
         `cargo build -p azflow-tests --bin azflow-traffic` or set {TRAFFIC_BIN_ENV}",
        tried.join(", ")
    )
}

/// A result of `run_bulk`: what the client and the server each reported.
#[derive(Debug, Clone)]
pub struct BulkRun {
    pub client: BulkReport,
    pub server: ServerDone,
}

/// A result of `run_rr`.
#[derive(Debug, Clone)]
pub struct RrRun {
    pub client: RrReport,
    pub server: ServerDone,
}

/// A result of `run_udp`.
#[derive(Debug, Clone)]
pub struct UdpRun {
    pub client: UdpReport,
    pub server: ServerDone,
}

/// An `azflow-traffic serve` running in a host. Dropping it kills the server.
#[derive(Debug)]
pub struct TrafficServer {
    host: String,
    proc: Proc,
    addr: SocketAddr,
    timeout: Duration,
}

impl TrafficServer {
    /// The address clients connect to (host address and the port the kernel chose).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server to exit (after its connections, or when the UDP flow went idle)
    /// and returns its summary.
    pub fn finish(self) -> Result<ServerDone> {
        let host = self.host;
        let done = self
            .proc
            .wait_ok(self.timeout)
            .with_context(|| format!("traffic server in host {host}"))?;
        match parse_last_line(&done.stdout, &done.command)? {
            Report::ServerDone(summary) => Ok(summary),
            other => bail!("traffic server in host {host} ended with {other:?}, not a summary"),
        }
    }
}

fn parse_last_line(stdout: &str, command: &str) -> Result<Report> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("`{command}` printed nothing on stdout"))?;
    serde_json::from_str(line)
        .with_context(|| format!("`{command}` printed {line:?}, not a JSON report"))
}

fn timeout_arg(timeout: Duration) -> String {
    timeout.as_secs().max(1).to_string()
}

impl Host {
    /// A command that runs `azflow-traffic` in this host (in the cgroup, if monitored).
    pub fn traffic_command(&self) -> Command {
        self.command(&self.traffic_bin)
    }

    /// Starts a TCP server on this host's address (port chosen by the kernel) that serves
    /// `connections` connections, then exits.
    pub fn start_tcp_server(&self, family: Family, connections: u32) -> Result<TrafficServer> {
        let mut cmd = self.traffic_command();
        cmd.args(["serve", "--bind"])
            .arg(SocketAddr::new(self.ip(family), 0).to_string())
            .args(["--connections", &connections.to_string()])
            .args(["--timeout-secs", &timeout_arg(self.timeout)]);
        self.start_server(cmd, "tcp")
    }

    /// Starts a UDP sink on this host's address that exits after `datagrams` datagrams, or
    /// 500 ms after the last one.
    pub fn start_udp_server(
        &self,
        family: Family,
        datagrams: Option<u64>,
    ) -> Result<TrafficServer> {
        let mut cmd = self.traffic_command();
        cmd.args(["serve", "--udp", "--bind"])
            .arg(SocketAddr::new(self.ip(family), 0).to_string())
            .args(["--timeout-secs", &timeout_arg(self.timeout)]);
        if let Some(n) = datagrams {
            cmd.args(["--datagrams", &n.to_string()]);
        }
        self.start_server(cmd, "udp")
    }

    fn start_server(&self, cmd: Command, proto: &str) -> Result<TrafficServer> {
        let mut proc = Proc::spawn(cmd, None)?;
        let line = proc
            .next_line(SERVER_START_TIMEOUT)
            .with_context(|| format!("starting a {proto} server in host {}", self.name))?;
        let listening = match serde_json::from_str(&line) {
            Ok(Report::Listening(l)) => l,
            _ => bail!(
                "`{}` in host {} printed {line:?} instead of a listening report",
                proc.command(),
                self.name
            ),
        };
        Ok(TrafficServer {
            host: self.name.clone(),
            proc,
            addr: listening.addr,
            timeout: self.timeout,
        })
    }

    /// Runs `azflow-traffic` with `args` to completion and parses its report.
    pub fn run_traffic<I, S>(&self, args: I) -> Result<Report>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.traffic_command();
        cmd.args(args);
        let done = Proc::spawn(cmd, None)?
            .wait_ok(self.timeout)
            .with_context(|| format!("in host {}", self.name))?;
        parse_last_line(&done.stdout, &done.command)
    }

    /// Sends `bytes` payload bytes over one TCP connection to a server at `to`.
    pub fn bulk(&self, to: SocketAddr, bytes: u64) -> Result<BulkReport> {
        match self.run_traffic([
            "bulk".to_owned(),
            "--to".to_owned(),
            to.to_string(),
            "--bytes".to_owned(),
            bytes.to_string(),
            "--timeout-secs".to_owned(),
            timeout_arg(self.timeout),
        ])? {
            Report::Bulk(r) => Ok(r),
            other => bail!("bulk run in host {} reported {other:?}", self.name),
        }
    }

    /// `count` request/response round trips of `size` bytes over one TCP connection to `to`.
    pub fn rr(&self, to: SocketAddr, count: u64, size: u32) -> Result<RrReport> {
        match self.run_traffic([
            "rr".to_owned(),
            "--to".to_owned(),
            to.to_string(),
            "--count".to_owned(),
            count.to_string(),
            "--size".to_owned(),
            size.to_string(),
            "--timeout-secs".to_owned(),
            timeout_arg(self.timeout),
        ])? {
            Report::Rr(r) => Ok(r),
            other => bail!("rr run in host {} reported {other:?}", self.name),
        }
    }

    /// Sends `count` UDP datagrams of `size` bytes to `to`.
    pub fn udp(&self, to: SocketAddr, count: u64, size: usize) -> Result<UdpReport> {
        match self.run_traffic([
            "udp".to_owned(),
            "--to".to_owned(),
            to.to_string(),
            "--count".to_owned(),
            count.to_string(),
            "--size".to_owned(),
            size.to_string(),
        ])? {
            Report::Udp(r) => Ok(r),
            other => bail!("udp run in host {} reported {other:?}", self.name),
        }
    }

    /// One ICMP echo to each target (in parallel), waiting up to 2 s for each reply.
    pub fn ping(&self, targets: &[IpAddr]) -> Result<PingReport> {
        let mut args = vec!["ping".to_owned()];
        for t in targets {
            args.push("--to".to_owned());
            args.push(t.to_string());
        }
        match self.run_traffic(args)? {
            Report::Ping(r) => Ok(r),
            other => bail!("ping in host {} reported {other:?}", self.name),
        }
    }
}

impl TestBed {
    /// Sends `bytes` payload bytes from host `from` to a server in host `to` over one TCP
    /// connection, and checks that the server read everything the client wrote.
    pub fn run_bulk(&self, from: &str, to: &str, bytes: u64, family: Family) -> Result<BulkRun> {
        let server = self.host(to).start_tcp_server(family, 1)?;
        let client = self.host(from).bulk(server.addr(), bytes)?;
        let server = server.finish()?;
        ensure!(
            server.bytes_received == client.bytes_sent,
            "bulk {from} -> {to}: the client wrote {} bytes, the server read {}",
            client.bytes_sent,
            server.bytes_received
        );
        Ok(BulkRun { client, server })
    }

    /// `sessions` short connections (one round trip each) from one client process in `from` to
    /// an echo server in `to`: many handshakes with no process start-up in between.
    pub fn run_connects(&self, from: &str, to: &str, sessions: u32, family: Family) -> Result<RrRun> {
        let server = self.host(to).start_tcp_server(family, sessions)?;
        let client = match self.host(from).run_traffic([
            "rr".to_owned(),
            "--to".to_owned(),
            server.addr().to_string(),
            "--count".to_owned(),
            "1".to_owned(),
            "--size".to_owned(),
            "100".to_owned(),
            "--sessions".to_owned(),
            sessions.to_string(),
        ])? {
            Report::Rr(r) => r,
            other => bail!("connects {from} -> {to} reported {other:?}"),
        };
        let server = server.finish()?;
        ensure!(server.bytes_received == client.bytes_sent, "connects {from} -> {to}: server received {} of {} bytes", server.bytes_received, client.bytes_sent);
        Ok(RrRun { client, server })
    }

    /// `count` request/response round trips of `size` bytes from `from` to an echo server in
    /// `to`, over one TCP connection with TCP_NODELAY.
    pub fn run_rr(
        &self,
        from: &str,
        to: &str,
        count: u64,
        size: u32,
        family: Family,
    ) -> Result<RrRun> {
        let server = self.host(to).start_tcp_server(family, 1)?;
        let client = self.host(from).rr(server.addr(), count, size)?;
        let server = server.finish()?;
        ensure!(
            server.bytes_received == client.bytes_sent
                && server.bytes_sent == client.bytes_received,
            "rr {from} -> {to}: client sent/received {}/{} bytes, server received/sent {}/{}",
            client.bytes_sent,
            client.bytes_received,
            server.bytes_received,
            server.bytes_sent
        );
        Ok(RrRun { client, server })
    }

    /// `count` UDP datagrams of `size` bytes from `from` to a sink in `to`. UDP may drop
    /// datagrams; compare `server.datagrams` with `client.datagrams_sent` as the test requires.
    pub fn run_udp(
        &self,
        from: &str,
        to: &str,
        count: u64,
        size: usize,
        family: Family,
    ) -> Result<UdpRun> {
        let server = self.host(to).start_udp_server(family, Some(count))?;
        let client = self.host(from).udp(server.addr(), count, size)?;
        let server = server.finish()?;
        Ok(UdpRun { client, server })
    }
}
