//! Native histograms through a real Prometheus: the agent in the network-namespace test bed with
//! its default classic bucket set, RTT and connect traffic through the delay line, and two Debian
//! `prometheus` servers scraping it — one with native histograms on (it negotiates the protobuf
//! format), one without (text, classic `_bucket` series). For every latency row, the native
//! histogram's count and sum must be the kernel's (the agent's own count, and its RTT sample
//! counter), and its median must agree with the classic median: both inside the same classic
//! bucket, since every classic boundary is a kernel, hence native, boundary.
//!
//! Prometheus 2.x keeps a scraped histogram that has native buckets as native only (keeping the
//! classic buckets too needs `scrape_classic_histograms`, from 2.45); so the classic series come
//! from the second server. Both scrape the same agent after the traffic has stopped.

mod common;
mod deploy_support;

use std::time::Duration;

use azflow_tests::{Family, TestBed, Zone};
use common::{Agent, write_topology, zone_labels};
use deploy_support::{
    prometheus::{Prometheus, unix_now, values},
    tool,
};
use serde_json::Value;

const HISTOGRAMS: [&str; 2] = ["azflow_tcp_rtt_seconds", "azflow_tcp_connect_duration_seconds"];

fn single(result: &[Value], what: &str) -> f64 {
    assert_eq!(result.len(), 1, "{what}: one series expected: {result:?}");
    values(&result[0])[0]
}

#[test]
fn ebpf_native_histograms_in_prometheus_agree_with_the_classic_buckets_and_the_kernel() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let Some(binary) = tool("prometheus", "Debian prometheus") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("azflow-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let delay = bed
        .delay_line(&[(Zone::A, Zone::B, Duration::from_micros(750)), (Zone::A, Zone::C, Duration::from_micros(250))])
        .expect("delay line");
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--rtt-sample-interval", "0"]);
    let native = Prometheus::start_native(&binary, &[agent.metrics], "native");
    let classic = Prometheus::start(&binary, &[agent.metrics], "classic");

    for dst in ["b1", "c1", "a2"] {
        bed.run_rr("a1", dst, 2_000, 100, Family::V4).expect("request/response");
        bed.run_connects("a1", dst, 30, Family::V4).expect("short connections");
    }
    // No traffic from here on: the latency rows no longer move.
    let kernel = agent.settled();
    let stats = delay.stop().expect("delay line stats");
    let t_native = native.sample_after("azflow_drains_total", unix_now());
    let t_classic = classic.sample_after("azflow_drains_total", unix_now());
    assert_eq!(kernel.series.iter().filter(|s| s.0.ends_with("_count")).map(|s| s.2).collect::<Vec<_>>(),
        agent.scrape().series.iter().filter(|s| s.0.ends_with("_count")).map(|s| s.2).collect::<Vec<_>>(),
        "the histograms moved after the traffic");

    let mut rows = 0;
    for zone in [Zone::B, Zone::C, Zone::A] {
        let (_, id) = zone_labels(zone);
        let sel = format!("{{dst_zone_id=\"{id}\"}}");
        for name in HISTOGRAMS {
            let kernel_count = kernel.value(&format!("{name}_count"), &[("dst_zone_id", id)]);
            let kernel_sum = kernel.value(&format!("{name}_sum"), &[("dst_zone_id", id)]);
            // Native: the series is a histogram sample, not a float.
            let raw = native.query(&format!("{name}{sel}"), t_native);
            assert_eq!(raw.len(), 1, "{name}{sel}: one native series: {raw:?}\n{}", native.log());
            let h = &raw[0]["histogram"][1];
            assert!(h.is_object(), "{name}{sel} is not a native histogram: {raw:?}");
            let buckets = h["buckets"].as_array().map_or(0, Vec::len);
            let n_count = single(&native.query(&format!("histogram_count({name}{sel})"), t_native), "histogram_count");
            let n_sum = single(&native.query(&format!("histogram_sum({name}{sel})"), t_native), "histogram_sum");
            let n_p50 = single(&native.query(&format!("histogram_quantile(0.5, {name}{sel})"), t_native), "native p50");
            let c_count = single(&classic.query(&format!("{name}_count{sel}"), t_classic), "classic count");
            let c_p50 = single(&classic.query(&format!("histogram_quantile(0.5, {name}_bucket{sel})"), t_classic), "classic p50");
            let classic_in_native = native.query(&format!("{name}_bucket{sel}"), t_native).len();

            // The classic bucket holding the classic median, from the agent's own `le` values.
            let mut les: Vec<f64> = kernel
                .series
                .iter()
                .filter(|(n, l, _)| n == &format!("{name}_bucket") && l.get("dst_zone_id").map(String::as_str) == Some(id))
                .map(|(_, l, _)| l["le"].parse::<f64>().unwrap_or(f64::INFINITY))
                .collect();
            les.sort_by(f64::total_cmp);
            assert!(les.len() <= 17, "{name}: the default classic set is at most 16 boundaries and +Inf: {}", les.len());
            let hi = les.iter().copied().find(|le| *le >= c_p50).unwrap_or(f64::INFINITY);
            let lo = les.iter().copied().rev().find(|le| *le < hi).unwrap_or(0.0);
            println!(
                "{name} → {id}: kernel count {kernel_count} sum {kernel_sum:.6}; native count {n_count} sum {n_sum:.6} ({buckets} buckets) p50 {:.1} µs; classic count {c_count} p50 {:.1} µs in ({:.0}, {:.0}] µs; classic series in the native server: {classic_in_native}",
                n_p50 * 1e6,
                c_p50 * 1e6,
                lo * 1e6,
                hi * 1e6,
            );
            assert!(kernel_count > 0.0, "{name} → {id}: samples");
            assert_eq!(n_count, kernel_count, "{name} → {id}: native count is the kernel's");
            assert_eq!(c_count, kernel_count, "{name} → {id}: classic count is the kernel's");
            assert!((n_sum - kernel_sum).abs() <= kernel_sum * 1e-12, "{name} → {id}: native sum {n_sum} vs {kernel_sum}");
            assert!(lo - 1e-9 <= n_p50 && n_p50 <= hi + 1e-9, "{name} → {id}: native p50 {n_p50} outside the classic bucket ({lo}, {hi}] of the classic p50 {c_p50}");
            if name == "azflow_tcp_rtt_seconds" {
                let samples = kernel.value("azflow_tcp_rtt_samples_total", &[("dst_zone_id", id)]);
                assert_eq!(n_count, samples, "{id}: every RTT sample the kernel counted is in the native histogram");
            }
            rows += 1;
        }
    }
    println!("{rows} rows agree; delay line {stats:?}");
    assert_eq!(rows, 6);

    // The host workload's RTT towards the cross-AZ zones: a native histogram at schema 1 whose
    // count and sum are the agent's, and whose median lies in the classic bucket of the classic
    // median (every scale-1 boundary is a native boundary at schema 1).
    let name = "azflow_workload_tcp_rtt_seconds";
    for zone in [Zone::B, Zone::C] {
        let (_, id) = zone_labels(zone);
        let sel = format!("{{workload=\"host\",dst_zone_id=\"{id}\"}}");
        let want = [("workload", "host"), ("dst_zone_id", id)];
        let (kernel_count, kernel_sum) = (kernel.value(&format!("{name}_count"), &want), kernel.value(&format!("{name}_sum"), &want));
        let raw = native.query(&format!("{name}{sel}"), t_native);
        assert_eq!(raw.len(), 1, "{name}{sel}: one native series: {raw:?}");
        assert!(raw[0]["histogram"][1].is_object(), "{name}{sel} is not a native histogram: {raw:?}");
        let n_count = single(&native.query(&format!("histogram_count({name}{sel})"), t_native), "histogram_count");
        let n_sum = single(&native.query(&format!("histogram_sum({name}{sel})"), t_native), "histogram_sum");
        let n_p50 = single(&native.query(&format!("histogram_quantile(0.5, {name}{sel})"), t_native), "native p50");
        let c_p50 = single(&classic.query(&format!("histogram_quantile(0.5, {name}_bucket{sel})"), t_classic), "classic p50");
        let mut les: Vec<f64> = kernel
            .series
            .iter()
            .filter(|(n, l, _)| n == &format!("{name}_bucket") && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, l, _)| l["le"].parse::<f64>().unwrap_or(f64::INFINITY))
            .collect();
        les.sort_by(f64::total_cmp);
        let hi = les.iter().copied().find(|le| *le >= c_p50).unwrap_or(f64::INFINITY);
        let lo = les.iter().copied().rev().find(|le| *le < hi).unwrap_or(0.0);
        println!("{name} → {id}: kernel count {kernel_count} sum {kernel_sum:.6}; native count {n_count} sum {n_sum:.6} p50 {:.1} µs; classic p50 {:.1} µs in ({:.0}, {:.0}] µs", n_p50 * 1e6, c_p50 * 1e6, lo * 1e6, hi * 1e6);
        assert!(kernel_count > 0.0, "{id}: workload RTT samples");
        assert_eq!(n_count, kernel_count, "{id}: native count is the agent's");
        assert!((n_sum - kernel_sum).abs() <= kernel_sum * 1e-12, "{id}: native sum {n_sum} vs {kernel_sum}");
        assert!(lo - 1e-9 <= n_p50 && n_p50 <= hi + 1e-9, "{id}: native p50 {n_p50} outside the classic bucket ({lo}, {hi}]");
    }
}
