//! OTLP through receiver failures: a receiver that is down for over a minute while traffic flows,
//! and one that accepts connections and never answers. Counters are cumulative, so the first
//! export after the outage carries every byte; nothing piles up in the agent meanwhile.

mod common;
mod otlp_receiver;

use std::time::{Duration, Instant};

use azflow_tests::{Family, TestBed, Zone};
use common::{Agent, rel_err, write_topology, zone_labels};
use otlp_receiver::{BlackHole, Export, Protocol, Receiver};

const TOLERANCE: f64 = 0.005;
const OUTAGE: Duration = Duration::from_secs(62);
const MAX_RSS_GROWTH_KIB: u64 = 2048;

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn bytes(e: &Export, dir: &str, zone_id: &str) -> f64 {
    e.value("azflow.tcp.bytes", &[("network.io.direction", dir), ("dst.zone_id", zone_id)])
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

#[test]
fn otlp_receiver_down_for_a_minute_loses_no_byte() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let rx = Receiver::start(Protocol::Grpc, any_port());
    let (port, endpoint) = (rx.addr, rx.endpoint());
    let args = [
        "--topology",
        topo.to_str().expect("utf-8"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-interval",
        "1s",
        "--otlp-timeout",
        "1s",
    ];
    let agent = Agent::start(bed.cgroup_path(), &args);
    let src = bed.monitored().name().to_string();
    let (_, zone_id) = zone_labels(Zone::B);

    let m0 = agent.settled();
    let e0 = rx.wait_for_drains(m0.value("azflow_drains_total", &[]), Duration::from_secs(15));
    let dst0 = bed.host("b1").link_counters().expect("counters");
    let src0 = bed.host(&src).link_counters().expect("counters");
    drop(rx);
    let down_at = Instant::now();
    // A few failed exports first, so the baseline includes whatever a failing export holds.
    std::thread::sleep(Duration::from_secs(3));
    let rss0 = rss_kib(agent.pid());

    let (mut transfers, mut scrapes, mut slowest) = (0u32, 0u32, Duration::ZERO);
    while down_at.elapsed() < OUTAGE {
        bed.run_bulk(&src, "b1", 2_000_000, Family::V4).expect("bulk transfer during the outage");
        transfers += 1;
        let t = Instant::now();
        let m = agent.scrape();
        slowest = slowest.max(t.elapsed());
        scrapes += 1;
        assert!(m.value("azflow_drains_total", &[]) > 0.0);
        std::thread::sleep(Duration::from_millis(250));
    }
    let m1 = agent.settled();
    let rss1 = rss_kib(agent.pid());
    let dst1 = bed.host("b1").link_counters().expect("counters");
    let src1 = bed.host(&src).link_counters().expect("counters");
    let failures = m1.value("azflow_export_failures_total", &[]);
    let outage = down_at.elapsed();
    println!(
        "outage {outage:?}: {transfers} transfers, {failures} failed exports, {scrapes} scrapes (slowest {slowest:?}), \
         RSS {rss0} KiB -> {rss1} KiB ({:+} KiB)",
        rss1 as i64 - rss0 as i64
    );
    assert!(failures >= 30.0, "exports kept being tried during the outage: {failures}");
    assert!(m1.value("azflow_export_failures_total", &[("kind", "unavailable")]) > 0.0);
    assert!(slowest < Duration::from_secs(1), "the Prometheus endpoint stalled for {slowest:?}");
    assert!(rss1 <= rss0 + MAX_RSS_GROWTH_KIB, "RSS grew from {rss0} KiB to {rss1} KiB during the outage");

    // An export attempt still retrying (within its 1 s deadline) was collected before the
    // traffic ended; the receiver comes back after it has given up.
    std::thread::sleep(Duration::from_secs(2));
    let rx = Receiver::start(Protocol::Grpc, port);
    let back_at = Instant::now();
    let e1 = rx.wait_for(Duration::from_secs(10), "after the outage", |_| true);
    let settled_drains = m1.value("azflow_drains_total", &[]);
    assert!(e1.drains() >= settled_drains, "the first export ({} drains) is of a snapshot after the traffic ({settled_drains})", e1.drains());
    for (direction, wire) in [("transmit", (dst1 - dst0).l3_rx_bytes()), ("receive", (src1 - src0).l3_rx_bytes())] {
        let exported = bytes(&e1, direction, zone_id) - bytes(&e0, direction, zone_id);
        let err = rel_err(exported, wire as f64);
        println!(
            "first export {:?} after the receiver came back, {direction:<8}: OTLP {exported} B, wire {wire} B, error {:.4}%",
            e1.at - back_at,
            err * 100.0
        );
        assert!(err <= TOLERANCE, "{direction}: OTLP {exported} vs wire {wire}");
    }
    let (status, took) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    assert!(took < Duration::from_secs(5), "azflow took {took:?} to stop");
}

fn hung_receiver_then_a_real_one(protocol: Protocol) {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let hole = BlackHole::start(any_port());
    let port = hole.addr;
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{port}"),
        Protocol::Http => format!("http://{port}/v1/metrics"),
    };
    let args = [
        "--topology",
        topo.to_str().expect("utf-8"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol.flag(),
        "--otlp-interval",
        "500ms",
        "--otlp-timeout",
        "1s",
    ];
    let agent = Agent::start(bed.cgroup_path(), &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.scrape().value("azflow_export_failures_total", &[("kind", "timeout")]) < 2.0 {
        assert!(Instant::now() < deadline, "no export timed out against the black hole:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(hole.connections() >= 1, "the agent connected to the black hole");
    // The hung connections stay open; a real receiver takes over the port.
    let held = hole.close_listener_keep_connections();
    let rx = Receiver::start(protocol, port);
    let replaced_at = Instant::now();
    let e = rx.wait_for(Duration::from_secs(10), "after the hung receiver was replaced", |_| true);
    rx.wait_for(Duration::from_secs(10), "a few more", |x| x.at > e.at + Duration::from_secs(1));
    println!(
        "{protocol:?}: {} connections held open by the hung receiver; first export to its replacement after {:?}",
        held.len(),
        e.at - replaced_at
    );
    assert!(e.drains() > 0.0);
    let later = rx.exports().last().cloned().expect("exports");
    assert!(later.value("azflow.agent.export_failures", &[("kind", "timeout")]) >= 2.0, "timeouts are reported");
    let (status, took) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    assert!(took < Duration::from_secs(5), "azflow took {took:?} to stop");
    drop(held);
}

#[test]
fn otlp_hung_grpc_receiver_does_not_stop_later_exports() {
    hung_receiver_then_a_real_one(Protocol::Grpc);
}

#[test]
fn otlp_hung_http_receiver_does_not_stop_later_exports() {
    hung_receiver_then_a_real_one(Protocol::Http);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("azflow-otlp-outage-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
