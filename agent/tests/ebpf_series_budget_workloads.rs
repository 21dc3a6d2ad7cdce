//! Series per node with workloads (issue 14 item 2: "3 AZs and 20 workloads"): the bed's three
//! AZ subnets and 20 systemd-style unit cgroups on the monitored host, each exchanging with a
//! host in every AZ, under the default configuration (RTT on every ack, so every row has
//! samples). Counted three ways: a text scrape (classic buckets), a scrape that negotiates native
//! histograms (each histogram one series), and an OTLP export (data points).

mod common;
mod otlp_receiver;

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use azflow_tests::{Family, TestBed};
use common::{Agent, Metrics, write_topology};
use otlp_receiver::{Protocol, Receiver};

const WORKLOADS: usize = 20;
const BUDGET: usize = 400;

/// One request/response exchange from a1, by a process in `cgroup`, to a server in `dst`.
fn exchange_from(bed: &TestBed, cgroup: &Path, dst: &str) {
    let server = bed.host(dst).start_tcp_server(Family::V4, 1).expect("server");
    let mut cmd: Command = bed.monitored().traffic_command();
    azflow_tests::cgroup::join_on_spawn(&mut cmd, cgroup).expect("joining the workload's cgroup");
    cmd.args(["rr", "--to", &server.addr().to_string(), "--count", "50", "--size", "100"]);
    let out = cmd.output().expect("sender");
    assert!(out.status.success(), "sender: {}", String::from_utf8_lossy(&out.stderr));
    server.finish().expect("server summary");
}

/// Series as a scraper that negotiates native histograms stores them: every classic bucket
/// family (`_bucket`, `_sum`, `_count` of one label set) is one series.
fn native_series(m: &Metrics) -> usize {
    let mut histograms = std::collections::BTreeSet::new();
    let mut plain = 0;
    for (name, labels, _) in &m.series {
        match ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)) {
            Some(family) if m.series.iter().any(|(n, _, _)| *n == format!("{family}_bucket")) => {
                let mut key: Vec<(String, String)> = labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone())).collect();
                key.sort();
                histograms.insert((family.to_string(), key));
            }
            _ => plain += 1,
        }
    }
    plain + histograms.len()
}

#[test]
fn ebpf_series_per_node_with_three_azs_and_twenty_workloads() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("azflow-series-wl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let units: Vec<_> = (0..WORKLOADS)
        .map(|i| {
            let p = bed.cgroup_path().join("system.slice").join(format!("svc{i:02}.service"));
            std::fs::create_dir_all(&p).expect("unit cgroup");
            p
        })
        .collect();
    let rx = Receiver::start(Protocol::Grpc, "127.0.0.1:0".parse().expect("addr"));
    let endpoint = rx.endpoint();
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
            "--workload-refresh",
            "300ms",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while agent.scrape().value("azflow_workload_count", &[("of", "indexed_workloads")]) < WORKLOADS as f64 {
        assert!(std::time::Instant::now() < deadline, "the agent did not name the units:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for unit in &units {
        for dst in ["a2", "b1", "c1"] {
            exchange_from(&bed, unit, dst);
        }
    }
    let m = agent.settled();
    let drains = m.value("azflow_drains_total", &[]);
    let e = rx.wait_for(Duration::from_secs(15), "a full export after the traffic", |e| e.drains() >= drains && e.requests == 2);

    let text = m.series.len();
    let native = native_series(&m);
    let otlp = e.points.len() + e.histograms.len() + e.exponentials.len();
    let mut families: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _, _) in &m.series {
        let family = ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        *families.entry(family.to_string()).or_default() += 1;
    }
    let mut by_size: Vec<(&String, &usize)> = families.iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(a.1));
    let named = m.series.iter().filter(|(n, l, _)| n == "azflow_workload_tcp_bytes_total" && l.get("workload").is_some_and(|w| w.starts_with("svc"))).count();
    println!(
        "series per node, 3 AZs and {WORKLOADS} workloads: Prometheus text {text}, native-histogram scrape {native}, OTLP {otlp} data points; largest text families: {:?}",
        &by_size[..by_size.len().min(8)]
    );
    assert!(named >= WORKLOADS * 3, "every unit's bytes to every AZ are exported: {named} series");
    assert!(native <= BUDGET, "a native-histogram scrape: {native} series");
    assert!(otlp <= BUDGET, "OTLP: {otlp} data points");
    let _ = agent.stop();
}
