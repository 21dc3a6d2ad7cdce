//! Series per node under the default configuration: the agent in the test bed (three AZ subnets
//! and one unmapped subnet, both directions of traffic to each, RTT samples and connects to
//! each), counted as a Prometheus text scrape sees them (every sample line) and as an OTLP
//! export carries them (data points, the histograms' request included). Budget: ≤ 400 each.

mod common;
mod otlp_receiver;

use std::{collections::BTreeMap, time::Duration};

use azflow_tests::{Family, TestBed};
use common::{Agent, write_topology};
use otlp_receiver::{Protocol, Receiver};

const BUDGET: usize = 400;

#[test]
fn ebpf_default_configuration_exports_at_most_400_series_per_node_with_three_azs() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("azflow-series-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let rx = Receiver::start(Protocol::Grpc, "127.0.0.1:0".parse().expect("addr"));
    let endpoint = rx.endpoint();
    // Defaults but for the bed's topology, a fast export, the receiver, and an RTT sample on
    // every ack (the bed's exchanges are too quick for the 10 ms default to sample each row; the
    // interval decides which rows have samples, never how many series a row has).
    let agent = Agent::start(
        bed.cgroup_path(),
        &[
            "--topology",
            topo.to_str().expect("utf-8"),
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--otlp-interval",
            "500ms",
            "--rtt-sample-interval",
            "0",
        ],
    );
    for dst in ["a2", "b1", "c1", "x1"] {
        bed.run_rr("a1", dst, 200, 100, Family::V4).expect("request/response");
        bed.run_connects("a1", dst, 5, Family::V4).expect("short connections");
    }
    let m = agent.settled();
    let drains = m.value("azflow_drains_total", &[]);
    let e = rx.wait_for(Duration::from_secs(15), "a full export after the traffic", |e| e.drains() >= drains && e.requests == 2);

    let prometheus = m.series.len();
    let mut families: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _, _) in &m.series {
        let family = ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        *families.entry(family.to_string()).or_default() += 1;
    }
    let mut by_size: Vec<(&String, &usize)> = families.iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(a.1));
    let otlp = e.points.len() + e.histograms.len() + e.exponentials.len();
    let rows = m.series.iter().filter(|s| s.0 == "azflow_tcp_rtt_seconds_count").count();
    println!(
        "series per node: Prometheus text {prometheus}, OTLP {otlp} data points ({} exponential histograms); {rows} RTT rows; largest families: {:?}",
        e.exponentials.len(),
        &by_size[..by_size.len().min(8)]
    );
    assert!(rows >= 4, "RTT rows for a, b, c and the unmapped range: {rows}");
    assert!(e.histograms.is_empty() && !e.exponentials.is_empty(), "exponential histograms by default");
    assert!(prometheus <= BUDGET, "Prometheus: {prometheus} series");
    assert!(otlp <= BUDGET, "OTLP: {otlp} data points");
    let _ = agent.stop();
}
