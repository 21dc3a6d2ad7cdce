//! RTT and connect-time histograms per AZ pair, against a delay line in the test bed and the
//! kernel's own smoothed RTT of the same sockets — `tcp_info.tcpi_rtt`, the field `ss -ti`
//! prints, read by the traffic client itself every 50 round trips (spawning `ss` on a 2-core
//! machine delayed the very exchanges it measured, lifting srtt by ~10 %).

mod common;

use std::time::Duration;

use azflow_tests::{Family, TestBed, Zone};
use common::{
    Agent, rel_err,
    latency::{measure_until_valid, on_time, quantile_us},
    write_topology, zone_labels,
};

const TOLERANCE: f64 = 0.10;
const BASE_PROBE_US: f64 = 100.0;

#[test]
fn ebpf_rtt_and_connect_time_per_zone_pair_follow_the_injected_delay() {
    measure_until_valid(attempt_ebpf_rtt_and_connect_time_per_zone_pair_follow_the_injected_delay);
}

/// One measurement; `None` when the delay line did not inject what the test expects.
fn attempt_ebpf_rtt_and_connect_time_per_zone_pair_follow_the_injected_delay() -> Option<()> {
    let Some(bed) = TestBed::new_or_skip() else { return Some(()) };
    let dir = std::env::temp_dir().join(format!("azflow-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    // x rides the delay line with a small delay, so its packets go through exactly the same
    // mechanism (timer, spin, write) as the others: its RTT minus 2 × 100 µs is the bed's base.
    let delay = bed
        .delay_line(&[
            (Zone::A, Zone::B, Duration::from_micros(750)),
            (Zone::A, Zone::C, Duration::from_micros(250)),
            (Zone::A, Zone::X, Duration::from_micros(BASE_PROBE_US as u64)),
        ])
        .expect("delay line");
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--rtt-sample-interval", "0", "--prometheus-buckets", "all"]);

    let mut srtt = std::collections::BTreeMap::new();
    for dst in ["x1", "b1", "c1", "a2"] {
        let run = bed.run_rr("a1", dst, 4_000, 100, Family::V4).expect("request/response");
        srtt.insert(dst, run.client.kernel_srtt_us.p50);
        bed.run_connects("a1", dst, 60, Family::V4).expect("short connections");
    }
    let m = agent.settled();
    let stats = delay.stop().expect("delay line stats");
    if !on_time(&stats) {
        return None;
    }

    let row = |dst: &str| -> &str {
        match bed.host(dst).zone() {
            Zone::X => "unknown",
            z => zone_labels(z).1,
        }
    };
    let p50 = |dst: &str| quantile_us(&m, "azflow_tcp_rtt_seconds", row(dst), 0.5).unwrap_or_else(|| panic!("no RTT samples towards {dst}"));
    let c50 = |dst: &str| quantile_us(&m, "azflow_tcp_connect_duration_seconds", row(dst), 0.5).unwrap_or_else(|| panic!("no connects towards {dst}"));
    let base = p50("x1") - 2.0 * BASE_PROBE_US;
    let base_connect = c50("x1") - 2.0 * BASE_PROBE_US;
    for (dst, added) in [("b1", 1500.0), ("c1", 500.0)] {
        let (rtt, connect) = (p50(dst), c50(dst));
        let id = row(dst);
        let mean = m.value("azflow_tcp_rtt_seconds_sum", &[("dst_zone_id", id)]) / m.value("azflow_tcp_rtt_seconds_count", &[("dst_zone_id", id)]) * 1e6;
        let p = |q| quantile_us(&m, "azflow_tcp_rtt_seconds", id, q).unwrap_or(0.0);
        println!("a1->{dst}: RTT mean {mean:.0} p10 {:.0} p25 {:.0} p75 {:.0} p90 {:.0} p99 {:.0}", p(0.1), p(0.25), p(0.75), p(0.9), p(0.99));
        let expect = added + base;
        let expect_connect = added + base_connect;
        println!(
            "a1->{dst}: RTT p50 {rtt:.0} µs (expected {expect:.0} = {added} + base {base:.0}; kernel srtt p50 {:?} µs), connect p50 {connect:.0} µs (expected {expect_connect:.0})",
            srtt.get(dst)
        );
        assert!(rel_err(rtt, expect) <= TOLERANCE, "{dst}: RTT p50 {rtt} vs {expect}");
        assert!(rel_err(connect, expect_connect) <= TOLERANCE, "{dst}: connect p50 {connect} vs {expect_connect}");
        let ss = srtt[dst];
        assert!(ss > 0.0 && rel_err(rtt, ss) <= TOLERANCE, "{dst}: histogram p50 {rtt} vs kernel srtt {ss}");
    }
    let same = p50("a2");
    println!("a1->a2 (same subnet): RTT p50 {same:.0} µs; base through the delay line {base:.0} µs");
    assert!(same < 100.0, "same-subnet RTT p50 {same} µs is not in the sub-100 µs buckets");
    assert!(m.value("azflow_tcp_rtt_samples_total", &[]) > 8_000.0);
    let (status, _) = agent.stop();
    assert!(status.success());
    Some(())
}
