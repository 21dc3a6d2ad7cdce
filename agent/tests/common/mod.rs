//! Harness for the end-to-end suites: the real `azflow` binary attached to a test bed's cgroup,
//! scraped over HTTP with a Prometheus text parser of the tests' own (not the agent's code).

#![allow(dead_code, reason = "each suite uses a different part of the harness")]

pub mod aws;
pub mod latency;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use azflow_tests::{TestBed, Zone};

/// Test AZ name and ID of a mapped bed zone.
pub fn zone_labels(zone: Zone) -> (&'static str, &'static str) {
    azflow_tests::zone_labels(zone).unwrap_or(("unmapped", "unmapped"))
}

/// The bed's static topology, written to `dir`.
pub fn write_topology(bed: &TestBed, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}-topology.toml", bed.id()));
    std::fs::write(&path, bed.topology_toml()).expect("writing the bed topology");
    path
}

pub struct Agent {
    child: Option<Child>,
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Starts `azflow run` on `cgroup` and waits until it is attached and serving.
    pub fn start(cgroup: &Path, extra: &[&str]) -> Agent {
        Agent::start_with(cgroup, extra, |_| {})
    }

    /// [`Agent::start`], with `configure` applied to the command last (environment for the AWS
    /// suites). The AWS source is off unless `configure` turns it on: tests never reach a real
    /// metadata address.
    pub fn start_with(cgroup: &Path, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Agent {
        let mut command = Command::new(env!("CARGO_BIN_EXE_azflow"));
        command
            .args(["run", "--cgroup"])
            .arg(cgroup)
            .args(["--prometheus", "127.0.0.1:0", "--console", "never", "--drain-interval", "300ms"])
            .args(extra)
            .env("AZFLOW_LOG", "info")
            .env("AZFLOW_AWS", "off")
            .env("NO_COLOR", "1");
        configure(&mut command);
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting azflow");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().expect("log lock").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("attached and counting") => {
                    let addr = field(&line, "prometheus").expect("the ready line names the Prometheus address");
                    let metrics = strip_ansi(&addr).parse().expect("a socket address");
                    let agent = Agent { child: Some(child), metrics, log };
                    agent.wait_for_drains(1);
                    return agent;
                }
                Ok(_) => {}
                Err(_) => {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        panic!("azflow exited with {status} before attaching:\n{}", log.lock().expect("log").join("\n"));
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("azflow did not attach within 30 s:\n{}", log.lock().expect("log").join("\n"));
    }

    pub fn scrape(&self) -> Metrics {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(5)).expect("connect to /metrics");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response");
        let (head, body) = body.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        Metrics::parse(body)
    }

    /// Waits until `n` more drains have completed, so everything sent before this call is in.
    pub fn wait_for_drains(&self, n: u64) -> Metrics {
        let start = self.scrape().value("azflow_drains_total", &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.scrape();
            if m.value("azflow_drains_total", &[]) >= start + n as f64 {
                return m;
            }
            assert!(Instant::now() < deadline, "no drain within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The figures after everything sent so far has been drained (two drains: one may have been
    /// under way while the traffic ended).
    /// Two drains after now; and no slot's counters grew without the kernel flagging the slot
    /// seen (the drain reads only flagged slots between its periodic reads of every slot).
    pub fn settled(&self) -> Metrics {
        let m = self.wait_for_drains(2);
        let holes = m.value("azflow_drain_unflagged_slots_total", &[]);
        assert_eq!(holes, 0.0, "{holes} slots grew without their seen flag:\n{}", self.log());
        m
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// SIGKILL: no final drain, no cleanup — a crash or an OOM kill.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM; returns the exit status and how long the agent took to exit.
    pub fn stop(mut self) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (status, t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("azflow ignored SIGTERM for 15 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    let line = strip_ansi(line);
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(line[start..].split_whitespace().next()?.to_string())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Prometheus text format, parsed independently of the agent.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut series = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (name_labels, value) = line.rsplit_once(' ').expect("NAME{LABELS} VALUE");
            let value: f64 = value.parse().expect("a number");
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.strip_suffix('}').expect("closing brace"))),
                None => (name_labels.to_string(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Metrics { series }
    }

    /// Sum over the series of `name` whose labels include all of `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    pub fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.series.iter().any(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').to_string(), val);
        rest = &after[end..];
    }
    out
}

/// |a − b| / b, for tolerance checks.
pub fn rel_err(measured: f64, truth: f64) -> f64 {
    if truth == 0.0 { if measured == 0.0 { 0.0 } else { f64::INFINITY } } else { (measured - truth).abs() / truth }
}

/// Hosts mount a BPF filesystem at /sys/fs/bpf at boot (systemd does); this machine may not.
pub fn ensure_bpffs() {
    let out = Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]).output().expect("stat");
    if String::from_utf8_lossy(&out.stdout).trim() != "bpf_fs" {
        let st = Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status().expect("mount");
        assert!(st.success(), "mounting bpffs at /sys/fs/bpf failed");
    }
}

/// Removes the pins under its path however the test ends (a failing test's pins must not
/// outlive it).
pub struct Uninstall(pub String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_azflow")).args(["uninstall", "--pin-path", &self.0]).output();
    }
}
