//! The Grafana dashboard against real data: the agent attached in the network-namespace test bed,
//! a real Prometheus (Debian `prometheus`, loopback, temporary storage, 1 s scrapes, a `cluster`
//! target label) scraping it while traffic crosses the bed's AZs; then every query of every panel,
//! with the dashboard's variables set to the bed's values, must return data through Prometheus's
//! HTTP API, and the dollar figures must be the bytes times the price — and those bytes the wire's.
//!
//! The dashboard's time range is set to two scrapes of the agent — one just before the measured
//! traffic, one just after it was drained — so `increase(…[$__range])` needs no extrapolation and is
//! exactly what the agent counted between them.

mod common;
mod deploy_support;

use std::{collections::BTreeMap, net::TcpListener, time::Duration};

use azflow_tests::{Family, TestBed};
use common::{Agent, rel_err, write_topology, zone_labels};
use deploy_support::{
    dashboard, panels,
    prometheus::{Prometheus, unix_now, values},
    queries, substitute, tool,
};
use serde_json::Value;

const CLUSTER: &str = "e2e";
const PRICE_PER_GB: f64 = 0.01;
const GB: f64 = 1_073_741_824.0;
/// Billing-grade, as the accuracy suite.
const TOLERANCE: f64 = 0.005;
const BULK_BYTES: u64 = 20_000_000;
const ROUNDS: u64 = 4;

/// Bytes on the wire both ways between the monitored host and `dst` while `f` runs.
fn wire_bytes(bed: &TestBed, dst: &str, f: impl FnOnce()) -> u64 {
    let src = bed.monitored().name().to_string();
    let (d0, s0) = (
        bed.host(dst).link_counters().expect("counters"),
        bed.host(&src).link_counters().expect("counters"),
    );
    f();
    let sent = bed.host(dst).link_counters().expect("counters") - d0;
    let received = bed.host(&src).link_counters().expect("counters") - s0;
    sent.l3_rx_bytes() + received.l3_rx_bytes()
}

fn traffic(bed: &TestBed, dst: &str, bulk: u64, rr: u64, connects: u32) {
    let src = bed.monitored().name().to_string();
    if bulk > 0 {
        bed.run_bulk(&src, dst, bulk, Family::V4)
            .expect("bulk transfer");
    }
    bed.run_rr(&src, dst, rr, 100, Family::V4)
        .expect("request/response");
    bed.run_connects(&src, dst, connects, Family::V4)
        .expect("short connections");
}

/// `(src_zone, dst_zone) → value` of an instant query by those labels.
fn cells(result: &[Value]) -> BTreeMap<(String, String), f64> {
    result
        .iter()
        .map(|s| {
            let l = |k: &str| s["metric"][k].as_str().unwrap_or_default().to_string();
            ((l("src_zone"), l("dst_zone")), values(s)[0])
        })
        .collect()
}

fn single(result: &[Value], what: &str) -> f64 {
    assert_eq!(result.len(), 1, "{what}: one series expected: {result:?}");
    values(&result[0])[0]
}

#[test]
fn ebpf_every_dashboard_panel_shows_the_bed_traffic_and_dollars_are_wire_bytes_times_price() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let Some(binary) = tool("prometheus", "Debian prometheus") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("azflow-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    // OTLP towards a loopback port nobody listens on, so the export-failure panel has data too.
    let dead = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let otlp = format!("http://{dead}");
    let agent = Agent::start(
        bed.cgroup_path(),
        &[
            "--topology",
            topo.to_str().expect("utf-8"),
            "--rtt-sample-interval",
            "0",
            "--dst-subnet-series",
            "50",
            "--otlp-endpoint",
            &otlp,
            "--otlp-interval",
            "1s",
            "--otlp-timeout",
            "500ms",
        ],
    );
    let prom = Prometheus::start(&binary, &[agent.metrics], CLUSTER);

    // Warm-up: every series the panels read exists before the measured window opens.
    for dst in ["a2", "b1", "c1", "x1"] {
        traffic(&bed, dst, 0, 50, 2);
    }
    agent.settled();
    let drains = format!("azflow_drains_total{{cluster=\"{CLUSTER}\"}}");
    let start = prom.sample_after(&drains, unix_now());

    // A few rounds a couple of seconds apart, so the rate panels see traffic come and go.
    let mut wire: BTreeMap<&str, f64> = BTreeMap::new();
    for round in 0..ROUNDS {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        for (dst, bulk) in [
            ("b1", BULK_BYTES),
            ("c1", BULK_BYTES / 2),
            ("a2", BULK_BYTES),
            ("x1", BULK_BYTES / 4),
        ] {
            let bytes = wire_bytes(&bed, dst, || traffic(&bed, dst, bulk / ROUNDS, 1_000, 10));
            *wire.entry(dst).or_default() += bytes as f64;
        }
    }
    agent.settled();
    let end = prom.sample_after(&drains, unix_now());
    // One millisecond more than the two scrapes apart, so both samples are inside the range whether
    // the range's start is inclusive (Prometheus 2) or not (3).
    let range_ms = ((end - start) * 1000.0).round() as u64 + 1;
    println!(
        "window {:.3} → {:.3} ({range_ms} ms); wire bytes {wire:?}",
        start, end
    );

    let (zone, _) = zone_labels(bed.monitored().zone());
    let vars: BTreeMap<&str, String> = [
        ("cluster", CLUSTER.to_string()),
        ("region", "us-test-1".to_string()),
        ("az", zone.to_string()),
        ("price_per_gb", PRICE_PER_GB.to_string()),
        // Grafana: max($__interval + scrape interval, 4 × scrape interval) with 1 s scrapes.
        ("__rate_interval", "4s".to_string()),
        ("__range", format!("{range_ms}ms")),
        ("datasource", "prometheus".to_string()),
    ]
    .into_iter()
    .collect();

    // Every query of every panel returns data.
    let mut by_title: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let d = dashboard();
    for p in panels(&d) {
        for q in queries(&p) {
            let expr = substitute(&q.expr, &vars);
            let result = if q.instant {
                prom.query(&expr, end)
            } else {
                prom.query_range(&expr, start, end, 1.0)
            };
            let finite: Vec<f64> = result
                .iter()
                .flat_map(values)
                .filter(|v| v.is_finite())
                .collect();
            println!(
                "{:<50} {} {:>3} series, e.g. {:?}",
                q.panel,
                q.ref_id,
                result.len(),
                finite.first()
            );
            assert!(
                !finite.is_empty(),
                "panel {:?} query {}: no data\n{expr}\n{result:?}",
                q.panel,
                q.ref_id
            );
            by_title.entry(q.panel.clone()).or_default().push(result);
        }
    }
    let panel = |needle: &str| -> &Vec<Vec<Value>> {
        by_title
            .iter()
            .find(|(t, _)| t.contains(needle))
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no panel …{needle}…"))
    };

    // $ matrix = bytes matrix × price, cell by cell; the cross-AZ bytes are the wire's.
    let dollars = cells(&panel("AZ → AZ $")[0]);
    let bytes = cells(&panel("AZ → AZ bytes")[0]);
    let id = |host: &str| zone_labels(bed.host(host).zone()).0.to_string();
    assert_eq!(
        dollars.keys().cloned().collect::<Vec<_>>(),
        vec![(zone.to_string(), id("b1")), (zone.to_string(), id("c1"))]
    );
    for (pair, usd) in &dollars {
        let expected = bytes[pair] / GB * PRICE_PER_GB;
        println!(
            "{} → {}: {} B, ${usd:.9} (bytes × price ${expected:.9})",
            pair.0, pair.1, bytes[pair]
        );
        assert!(
            rel_err(*usd, expected) < 1e-9,
            "{pair:?}: ${usd} vs bytes × price ${expected}"
        );
    }
    // increase() stretches the two samples' difference over the extra millisecond of the range:
    // undone here, what is left is the agent's count against the wire.
    let unstretch = (range_ms - 1) as f64 / range_ms as f64;
    for host in ["b1", "c1", "a2"] {
        let counted = bytes[&(zone.to_string(), id(host))] * unstretch;
        let e = rel_err(counted, wire[host]);
        println!(
            "{zone} → {}: dashboard {counted:.0} B, wire {} B, error {:.4}%",
            id(host),
            wire[host],
            e * 100.0
        );
        assert!(
            e <= TOLERANCE,
            "{host}: dashboard bytes {counted} vs wire {}",
            wire[host]
        );
    }

    // The stats agree with the matrix and with each other.
    let total = single(&panel("Cross-AZ $ in the selected range")[0], "$ in range");
    let wire_total = (wire["b1"] + wire["c1"]) / GB * PRICE_PER_GB;
    assert!(
        rel_err(total, dollars.values().sum()) < 1e-9,
        "$ in range {total} vs matrix {:?}",
        dollars
    );
    assert!(
        rel_err(total, wire_total) <= TOLERANCE,
        "$ in range {total} vs wire × price {wire_total}"
    );
    let per_day = single(&panel("Cross-AZ $/day")[0], "$/day");
    let range_s = range_ms as f64 / 1000.0;
    assert!(
        rel_err(per_day * range_s / 86_400.0, total) < 1e-3,
        "$/day {per_day} over {range_s} s vs $ {total}"
    );
    let per_month = single(&panel("Projected $/month")[0], "$/month");
    assert!(
        rel_err(per_month, per_day * 30.4375) < 1e-9,
        "$/month {per_month} vs $/day {per_day}"
    );
    let share = single(&panel("Same-AZ share (selected range)")[0], "same-AZ share");
    let wire_share = wire["a2"] / (wire["a2"] + wire["b1"] + wire["c1"]);
    assert!(
        (share - wire_share).abs() < 0.005,
        "same-AZ share {share} vs wire {wire_share}"
    );
    println!(
        "cross-AZ ${total:.6} in {range_s} s (wire × price ${wire_total:.6}), ${per_day:.2}/day, ${per_month:.2}/month, same-AZ share {share:.4}"
    );

    // Workload RTT: the bed's host processes are the host workload; by default only its cross-AZ
    // destinations have workload RTT, each with a p50 and a p99.
    for (q, result) in ["p50", "p99"].iter().zip(panel("Workload RTT p50 / p99 to each AZ")) {
        let mut seen: Vec<(String, String)> = result
            .iter()
            .filter(|s| values(s).iter().any(|v| v.is_finite()))
            .map(|s| (s["metric"]["workload"].as_str().unwrap_or_default().to_string(), s["metric"]["dst_zone"].as_str().unwrap_or_default().to_string()))
            .collect();
        seen.sort();
        println!("workload RTT {q}: {seen:?}");
        assert_eq!(seen, [("host".to_string(), id("b1")), ("host".to_string(), id("c1"))], "{q}: the host workload towards the cross-AZ zones only");
    }

    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
