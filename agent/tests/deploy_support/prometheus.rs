//! A real Prometheus server (the Debian `prometheus` binary) for the tests: loopback only, its
//! storage in a temporary directory, scraping the given targets every second as job `azflow` with
//! a `cluster` target label, queried over its HTTP API (plain HTTP/1.0, so no chunked bodies).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub struct Prometheus {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `binary` scraping `targets` (may be empty) and waits until it is ready.
    pub fn start(binary: &Path, targets: &[SocketAddr], cluster: &str) -> Prometheus {
        Self::start_with(binary, targets, cluster, &[])
    }

    /// [`Prometheus::start`] with native histograms on: it then asks targets for the protobuf
    /// format, and keeps a histogram that has native buckets as a native histogram.
    pub fn start_native(binary: &Path, targets: &[SocketAddr], cluster: &str) -> Prometheus {
        Self::start_with(binary, targets, cluster, &["--enable-feature=native-histograms"])
    }

    fn start_with(binary: &Path, targets: &[SocketAddr], cluster: &str, flags: &[&str]) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "azflow-prometheus-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: azflow\n    static_configs:\n      - targets: [{}]\n        labels:\n          cluster: {cluster}\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let addr = free_loopback_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .args(["--storage.tsdb.retention.time=1h", "--log.level=warn"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus {
            child: Some(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if p.get("/-/ready").is_ok_and(|(status, _)| status == 200) {
                return p;
            }
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// (status code, body) of `GET path`.
    pub fn get(&self, path_and_query: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// `/api/v1/query` at `time` (Unix seconds); panics unless Prometheus says "success".
    pub fn query(&self, expr: &str, time: f64) -> Vec<Value> {
        self.api(
            &format!("/api/v1/query?query={}&time={time:.3}", encode(expr)),
            expr,
        )
    }

    /// `/api/v1/query_range` from `start` to `end` every `step` seconds.
    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
        self.api(
            &format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
                encode(expr)
            ),
            expr,
        )
    }

    fn api(&self, path: &str, expr: &str) -> Vec<Value> {
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("querying prometheus: {e}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("HTTP {status}, not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "query failed: {expr}\n{body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the latest sample of `expr` (one series) is later than `after` (Unix seconds),
    /// and returns that sample's timestamp: a scrape that happened after `after`.
    pub fn sample_after(&self, expr: &str, after: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = unix_now();
            let r = self.query(&format!("timestamp({expr})"), now);
            let ts = r
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(ts) = ts.filter(|ts| *ts > after) {
                return ts;
            }
            assert!(
                Instant::now() < deadline,
                "no sample of {expr} after {after} within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A loopback port free now (the kernel's choice; Prometheus binds it a moment later).
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Percent-encoding of a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The values of a result series: one for an instant vector, all for a matrix.
pub fn values(series: &Value) -> Vec<f64> {
    let parse = |p: &Value| p[1].as_str().and_then(|v| v.parse::<f64>().ok());
    match series.get("values").and_then(Value::as_array) {
        Some(points) => points.iter().filter_map(parse).collect(),
        None => parse(&series["value"]).into_iter().collect(),
    }
}
