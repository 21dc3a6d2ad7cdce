//! `azflow top` in a real terminal (tmux: send-keys, capture-pane), as a person uses it, against
//! a metrics endpoint served by the test whose counters grow by known amounts per scrape: the
//! rows, their order under each sort key, each workload's RTT p50/p99 per AZ in its row, the
//! filter and quitting are asserted. `--once` is checked on its stdout, also against an endpoint
//! without per-workload RTT (an older agent: the host's RTT per AZ is shown instead).
//!
//! Needs tmux; without it the test prints SKIPPED (and fails with `AZFLOW_REQUIRE_EBPF=1`).

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Bytes per scrape: (workload, kind, namespace, cross-AZ, same-AZ).
const GROWTH: [(&str, &str, &str, u64, u64); 3] = [
    ("api.service", "systemd", "", 50_000, 0),
    ("cart", "pod", "shop", 20_000, 60_000),
    ("batch", "container", "", 1_000, 1_000),
];

/// One workload's RTT buckets towards one zone: (workload, kind, namespace, zone, [(le,
/// cumulative)]), the last +Inf.
type RttRow = (&'static str, &'static str, &'static str, &'static str, [(&'static str, u64); 3]);

const RTT: [RttRow; 3] = [
    // 10 samples in (0.976, 1.381] ms: p50 1.18 ms, p99 1.38 ms.
    ("cart", "pod", "shop", "us-test-1b", [("0.000976", 0), ("0.001381", 10), ("+Inf", 10)]),
    // 4 in (0, 1.953] ms and 4 in (1.953, 2.762] ms: p50 1.95 ms, p99 2.75 ms.
    ("cart", "pod", "shop", "us-test-1c", [("0.001953", 4), ("0.002762", 8), ("+Inf", 8)]),
    ("api.service", "systemd", "", "us-test-1b", [("0.001953", 4), ("0.002762", 8), ("+Inf", 8)]),
];

/// Serves /metrics (and /old: the same without per-workload RTT, as an older agent); each
/// request sees the counters one step further.
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let step = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            // The whole request head, then the answer.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let n = step.fetch_add(1, Ordering::Relaxed) + 1;
            let mut body = String::from("# TYPE azflow_workload_tcp_bytes_total counter\n");
            for (w, kind, ns, cross, same) in GROWTH {
                for (class, per) in [("cross_az", cross), ("same_az", same)] {
                    body.push_str(&format!(
                        "azflow_workload_tcp_bytes_total{{workload=\"{w}\",workload_kind=\"{kind}\",namespace=\"{ns}\",direction=\"transmit\",dst_zone=\"b\",traffic_class=\"{class}\"}} {}\n",
                        per * n
                    ));
                }
            }
            body.push_str("azflow_tcp_rtt_seconds_bucket{dst_zone=\"us-test-1b\",le=\"0.001\"} 10\nazflow_tcp_rtt_seconds_bucket{dst_zone=\"us-test-1b\",le=\"+Inf\"} 10\n");
            if !head.starts_with(b"GET /old ") {
                body.push_str("# TYPE azflow_workload_tcp_rtt_seconds histogram\n");
                for (w, kind, ns, zone, buckets) in RTT {
                    for (le, n) in buckets {
                        body.push_str(&format!(
                            "azflow_workload_tcp_rtt_seconds_bucket{{workload=\"{w}\",workload_kind=\"{kind}\",namespace=\"{ns}\",dst_zone=\"{zone}\",traffic_class=\"cross_az\",le=\"{le}\"}} {n}\n"
                        ));
                    }
                }
            }
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last `n` cells of a workload's row (its RTT columns), left to right.
fn rtt_cells(screen: &str, workload: &str, n: usize) -> Vec<String> {
    let line = screen.lines().find(|l| l.starts_with(workload)).unwrap_or_else(|| panic!("no row {workload}:\n{screen}"));
    let mut cells: Vec<String> = line.split_whitespace().rev().take(n).map(str::to_string).collect();
    cells.reverse();
    cells
}

/// Workload column of the table's rows, top to bottom.
fn rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("WORKLOAD"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Waits until the pane shows `want` (a predicate over the screen), returning the screen.
fn wait_for(session: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if want(&screen) {
            return screen;
        }
        assert!(Instant::now() < deadline, "tmux pane never showed {what}:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_sorts_filters_and_quits_in_a_real_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        if std::env::var("AZFLOW_REQUIRE_EBPF").is_ok_and(|v| v == "1") {
            panic!("tmux is not installed");
        }
        eprintln!("SKIPPED: top_tmux: tmux is not installed");
        return;
    }
    let port = serve();
    let url = format!("127.0.0.1:{port}");

    // --once: one table for scripts.
    let out = Command::new(env!("CARGO_BIN_EXE_azflow")).args(["top", "--once", "--interval", "300ms", "--url", &url]).output().expect("azflow top --once");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(rows(&text), ["api.service", "shop/cart", "batch"], "{text}");
    let header = text.lines().find(|l| l.starts_with("WORKLOAD")).expect("header");
    assert!(header.ends_with("AFFINITY RTT us-test-1b RTT us-test-1c"), "an RTT column per AZ: {header:?}");
    assert_eq!(rtt_cells(&text, "shop/cart", 2), ["1.18/1.38", "1.95/2.75"], "{text}");
    assert_eq!(rtt_cells(&text, "api.service", 2), ["1.95/2.75", "-"], "{text}");
    assert_eq!(rtt_cells(&text, "batch", 2), ["-", "-"], "{text}");
    assert!(!text.contains("RTT of this host"), "the host's RTT only without per-workload RTT: {text}");

    // An agent without per-workload RTT: the host's RTT per AZ below the table, no RTT columns.
    let old = Command::new(env!("CARGO_BIN_EXE_azflow")).args(["top", "--once", "--interval", "300ms", "--url", &format!("{url}/old")]).output().expect("azflow top --once");
    assert!(old.status.success(), "{}", String::from_utf8_lossy(&old.stderr));
    let old = String::from_utf8_lossy(&old.stdout);
    assert_eq!(rows(&old), ["api.service", "shop/cart", "batch"], "{old}");
    assert!(old.lines().any(|l| l.starts_with("WORKLOAD") && l.ends_with("AFFINITY")), "{old}");
    assert!(old.contains("RTT of this host by destination AZ") && old.lines().any(|l| l.trim_start().starts_with("us-test-1b")), "{old}");

    // Bad flag: one line naming it, exit 78.
    let bad = Command::new(env!("CARGO_BIN_EXE_azflow")).args(["top", "--once", "--sort", "loudest", "--url", &url]).output().expect("azflow top");
    assert_eq!(bad.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--sort"), "{}", String::from_utf8_lossy(&bad.stderr));

    let session = format!("azflow-top-{}", std::process::id());
    let cmd = format!("{} top --url {url} --interval 300ms", env!("CARGO_BIN_EXE_azflow"));
    tmux(&["new-session", "-d", "-s", &session, "-x", "150", "-y", "40", &cmd]);
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
        }
    }
    let _kill = Kill(session.clone());

    let s = wait_for(&session, "three rows sorted by cross-AZ bytes/s", |s| rows(s).len() == 3 && s.contains("sort: cross-AZ"));
    assert_eq!(rows(&s), ["api.service", "shop/cart", "batch"], "{s}");
    assert_eq!(rtt_cells(&s, "shop/cart", 2), ["1.18/1.38", "1.95/2.75"], "{s}");

    tmux(&["send-keys", "-t", &session, "s"]);
    let s = wait_for(&session, "sort by $/day", |s| s.contains("sort: $/day"));
    assert_eq!(rows(&s), ["api.service", "shop/cart", "batch"], "{s}");

    tmux(&["send-keys", "-t", &session, "s"]);
    let s = wait_for(&session, "sort by affinity", |s| s.contains("sort: affinity"));
    // api.service 0 %, batch 50 %, cart 75 %: lowest first.
    assert_eq!(rows(&s), ["api.service", "batch", "shop/cart"], "{s}");
    assert!(s.lines().any(|l| l.starts_with("shop/cart") && l.contains("75.0%")), "{s}");

    tmux(&["send-keys", "-t", &session, "/", "c", "a", "r", "t", "Enter"]);
    let s = wait_for(&session, "the filter", |s| s.contains("filter: cart") && rows(s).len() == 1);
    assert_eq!(rows(&s), ["shop/cart"], "{s}");

    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("tmux").args(["has-session", "-t", &session]).output().is_ok_and(|o| o.status.success()) {
        assert!(Instant::now() < deadline, "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
