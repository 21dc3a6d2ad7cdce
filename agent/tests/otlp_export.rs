//! OTLP export end to end: the real agent in the network-namespace test bed exporting to a
//! receiver that is not our code (see `otlp_receiver`), over gRPC and over HTTP/protobuf. The
//! exported byte counts are checked against what the interfaces counted (wire truth) and against
//! the Prometheus endpoint, which serves the same snapshots.

mod common;
mod otlp_receiver;

use std::time::{Duration, Instant};

use azflow_tests::{Family, TestBed, Zone};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};
use otlp_receiver::{Export, Protocol, Receiver};

/// Billing-grade: 0.5 %.
const TOLERANCE: f64 = 0.005;
const BULK_BYTES: u64 = 20_000_000;
const FLOW_KEYS: [&str; 7] = ["azflow.billing.path", "azflow.traffic.class", "dst.zone", "dst.zone_id", "network.io.direction", "src.zone", "src.zone_id"];

fn any_port() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn bytes(e: &Export, dir: &str, zone_id: &str) -> f64 {
    e.value("azflow.tcp.bytes", &[("network.io.direction", dir), ("dst.zone_id", zone_id)])
}

fn check(protocol: Protocol) {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let rx = Receiver::start(protocol, any_port());
    let endpoint = rx.endpoint();
    let mut args = vec![
        "--topology",
        topo.to_str().expect("utf-8"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol.flag(),
        "--otlp-interval",
        "500ms",
        "--otlp-timeout",
        "2s",
        "--otlp-header",
        "x-tenant=azflow-test",
    ];
    if protocol == Protocol::Http {
        args.extend(["--otlp-compression", "gzip"]);
    }
    let agent = Agent::start_with(bed.cgroup_path(), &args, |c| {
        c.env("K8S_NODE_NAME", "node-7").env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=net%20ops");
    });

    // Resource and headers.
    let first = rx.wait_for(Duration::from_secs(15), "at all", |_| true);
    let (zone_a, zone_a_id) = zone_labels(Zone::A);
    let r = &first.resource;
    assert_eq!(r.get("service.name").map(String::as_str), Some("azflow"), "{r:?}");
    assert_eq!(r.get("service.version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")));
    assert!(r.get("host.name").is_some_and(|h| !h.is_empty()), "{r:?}");
    if std::fs::read_to_string("/etc/machine-id").is_ok_and(|m| !m.trim().is_empty()) {
        assert!(r.contains_key("host.id"), "{r:?}");
    }
    assert_eq!(r.get("cloud.provider").map(String::as_str), Some("aws"));
    assert_eq!(r.get("cloud.platform").map(String::as_str), Some("aws_eks"), "K8S_NODE_NAME is set");
    assert_eq!(r.get("cloud.region").map(String::as_str), Some("us-test-1"));
    assert_eq!(r.get("cloud.availability_zone").map(String::as_str), Some(zone_a));
    assert_eq!(r.get("k8s.node.name").map(String::as_str), Some("node-7"));
    assert_eq!(r.get("team").map(String::as_str), Some("net ops"), "OTEL_RESOURCE_ATTRIBUTES");
    assert_eq!(first.headers.get("x-tenant").map(String::as_str), Some("azflow-test"), "{:?}", first.headers);
    let src = bed.monitored().name().to_string();
    for dst in ["a2", "b1"] {
        let zone = bed.host(dst).zone();
        let (zone_name, zone_id) = zone_labels(zone);
        let m0 = agent.settled();
        let e0 = rx.wait_for_drains(m0.value("azflow_drains_total", &[]), Duration::from_secs(15));
        let dst0 = bed.host(dst).link_counters().expect("counters");
        let src0 = bed.host(&src).link_counters().expect("counters");
        bed.run_bulk(&src, dst, BULK_BYTES, Family::V4).expect("bulk transfer");
        let m1 = agent.settled();
        let e1 = rx.wait_for_drains(m1.value("azflow_drains_total", &[]), Duration::from_secs(15));
        let sent = bed.host(dst).link_counters().expect("counters") - dst0;
        let recv = bed.host(&src).link_counters().expect("counters") - src0;
        for (direction, wire) in [("transmit", sent.l3_rx_bytes()), ("receive", recv.l3_rx_bytes())] {
            let exported = bytes(&e1, direction, zone_id) - bytes(&e0, direction, zone_id);
            let err = rel_err(exported, wire as f64);
            println!(
                "{protocol:?} {src}->{dst} ({zone_id}) {direction:<8}: OTLP {exported} B, wire {wire} B, error {:.4}%",
                err * 100.0
            );
            assert!(err <= TOLERANCE, "{protocol:?} {dst} {direction}: OTLP {exported} vs wire {wire}\n{}", agent.log());
        }
        for p in e1.points_of("azflow.tcp.bytes").chain(e1.points_of("azflow.tcp.packets")) {
            assert_eq!(p.attributes.keys().map(String::as_str).collect::<Vec<_>>(), FLOW_KEYS, "{p:?}");
            assert_eq!((p.attributes["src.zone"].as_str(), p.attributes["src.zone_id"].as_str()), (zone_a, zone_a_id));
        }
        let flow = [("network.io.direction", "transmit"), ("dst.zone_id", zone_id)];
        assert_eq!(e1.points_of("azflow.tcp.bytes").filter(|p| p.attributes["dst.zone_id"] == zone_id).count(), 2);
        assert!(e1.value("azflow.tcp.bytes", &[("dst.zone", zone_name)]) > 0.0);
        // Only cross-AZ pairs in the cheap counter, with the same numbers.
        let cross = e1.value("azflow.cross_az.bytes", &flow);
        if zone == Zone::A {
            assert_eq!(cross, 0.0, "same-AZ traffic in azflow.cross_az.bytes");
        } else {
            assert_eq!(cross, e1.value("azflow.tcp.bytes", &[("azflow.traffic.class", "cross_az"), flow[0], flow[1]]));
            assert!(cross > BULK_BYTES as f64);
        }
        same_as_prometheus(&e1, &agent.scrape());
    }
    // Names, units and kinds (a metric with no point yet, like the flows before any traffic, is
    // not in an export at all).
    let last = rx.exports().last().cloned().expect("exports");
    for (name, unit, kind) in [
        ("azflow.tcp.bytes", "By", "sum"),
        ("azflow.tcp.packets", "{packet}", "sum"),
        ("azflow.cross_az.bytes", "By", "sum"),
        ("azflow.agent.drains", "{drain}", "sum"),
        ("azflow.agent.drain_duration", "s", "gauge"),
        ("azflow.agent.kernel_errors", "{event}", "sum"),
        ("azflow.agent.map_overflows", "{event}", "sum"),
        ("azflow.agent.unmapped_prefixes", "{prefix}", "gauge"),
        ("azflow.agent.topology_age", "s", "gauge"),
    ] {
        let m = last.metrics.get(name).unwrap_or_else(|| panic!("{name} missing: {:?}", last.metrics.keys()));
        assert_eq!((m.unit.as_str(), m.kind), (unit, kind), "{name}");
        if kind == "sum" {
            assert!(m.monotonic && m.cumulative, "{name}: {m:?}");
        }
    }

    assert!(last.value("azflow.agent.exports", &[("kind", "otlp")]) > 0.0, "successful exports are counted");
    let (status, took) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    assert!(took < Duration::from_secs(5), "azflow took {took:?} to stop");
}

/// With no traffic since, the latest export and a scrape show the same totals, series by series.
fn same_as_prometheus(e: &Export, m: &Metrics) {
    let mut compared = 0;
    for (name, labels, value) in m.series.iter().filter(|s| s.0 == "azflow_tcp_bytes_total" || s.0 == "azflow_tcp_packets_total") {
        let metric = if name == "azflow_tcp_bytes_total" { "azflow.tcp.bytes" } else { "azflow.tcp.packets" };
        let want = [
            ("network.io.direction", labels["direction"].as_str()),
            ("dst.zone_id", labels["dst_zone_id"].as_str()),
            ("dst.zone", labels["dst_zone"].as_str()),
            ("azflow.traffic.class", labels["traffic_class"].as_str()),
        ];
        assert_eq!(e.value(metric, &want), *value, "{metric} {want:?}: OTLP vs Prometheus");
        compared += 1;
    }
    let otlp_series = e.points_of("azflow.tcp.bytes").count() + e.points_of("azflow.tcp.packets").count();
    assert_eq!(compared, otlp_series, "the same series on both sides");
}

#[test]
fn otlp_grpc_exports_match_wire_truth_and_prometheus() {
    check(Protocol::Grpc);
}

#[test]
fn otlp_http_exports_match_wire_truth_and_prometheus() {
    check(Protocol::Http);
}

/// With an interval of an hour, the only exports are the one at start-up and the final one that
/// SIGTERM triggers after the final drain.
#[test]
fn otlp_sigterm_sends_one_final_export() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let rx = Receiver::start(Protocol::Http, any_port());
    let endpoint = rx.endpoint();
    let args = ["--topology", topo.to_str().expect("utf-8"), "--otlp-endpoint", &endpoint, "--otlp-interval", "1h"];
    let agent = Agent::start(bed.cgroup_path(), &args);
    let first = rx.wait_for(Duration::from_secs(15), "at start-up", |_| true);
    let src = bed.monitored().name().to_string();
    let (_, zone_id) = zone_labels(Zone::B);
    let before = bed.host("b1").link_counters().expect("counters");
    bed.run_bulk(&src, "b1", BULK_BYTES, Family::V4).expect("bulk transfer");
    let wire = (bed.host("b1").link_counters().expect("counters") - before).l3_rx_bytes();
    agent.settled();
    assert_eq!(rx.count(), 1, "no periodic export within the hour");
    let stopped_at = Instant::now();
    let (status, took) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    assert!(took < Duration::from_secs(5), "azflow took {took:?} to stop");
    let exports = rx.exports();
    assert_eq!(exports.len(), 2, "exactly one final export");
    let last = &exports[1];
    assert!(last.at >= stopped_at);
    let exported = bytes(last, "transmit", zone_id) - bytes(&first, "transmit", zone_id);
    let err = rel_err(exported, wire as f64);
    println!(
        "SIGTERM: exit after {took:?}, final export {:?} after the signal; OTLP {exported} B, wire {wire} B, error {:.4}%",
        last.at - stopped_at,
        err * 100.0
    );
    assert!(err <= TOLERANCE, "final export {exported} vs wire {wire}");
}

/// `dst.subnet` (opt-in): at most the configured number of subnet series, the rest summed as
/// "other", every byte still there.
#[test]
fn otlp_dst_subnet_series_are_capped() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let rx = Receiver::start(Protocol::Grpc, any_port());
    let endpoint = rx.endpoint();
    let args = [
        "--topology",
        topo.to_str().expect("utf-8"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-interval",
        "500ms",
        "--otlp-dst-subnet-series",
        "2",
    ];
    let agent = Agent::start(bed.cgroup_path(), &args);
    let src = bed.monitored().name().to_string();
    for dst in ["a2", "b1", "c1"] {
        bed.run_bulk(&src, dst, 1_000_000, Family::V4).expect("bulk transfer");
        agent.settled();
    }
    let m = agent.settled();
    let e = rx.wait_for_drains(m.value("azflow_drains_total", &[]), Duration::from_secs(15));
    let named: std::collections::BTreeSet<(String, String)> = e
        .points_of("azflow.tcp.bytes")
        .filter_map(|p| Some((p.attributes.get("dst.subnet")?.clone(), p.attributes["network.io.direction"].clone())))
        .filter(|(s, _)| s != "other")
        .collect();
    let other = e.value("azflow.tcp.bytes", &[("dst.subnet", "other")]);
    let overflow = e.value("azflow.agent.map_overflows", &[("map", "dst_subnet_series")]);
    println!("dst.subnet series {named:?}, other {other} B, {overflow} series folded");
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(other > 2_000_000.0, "b1 and c1 traffic is summed as other: {other}");
    assert!(overflow >= 2.0);
    assert_eq!(overflow, m.value("azflow_subnet_series_overflow", &[]), "Prometheus shows the same count");
    // Split differently, the same totals.
    assert_eq!(e.value("azflow.tcp.bytes", &[]), m.value("azflow_tcp_bytes_total", &[]));
    assert_eq!(e.value("azflow.tcp.packets", &[]), m.value("azflow_tcp_packets_total", &[]));
    let (status, _) = agent.stop();
    assert!(status.success());
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("azflow-otlp-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
