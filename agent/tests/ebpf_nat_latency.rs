//! Latency follows the bytes: RTT and connect samples of a pod's Service connections land in the
//! backends' zones only, at the delay the delay line injects between the pod's zone and each. Its
//! own test binary, so no other bed competes with the delay line for the CPU.

mod common;
mod nat_support;

use std::time::Duration;

use azflow_tests::{Family, TestBed, Zone, netns};
use common::{
    Agent, rel_err,
    latency::{measure_until_valid, on_time, quantile_us},
    write_topology, zone_labels,
};
use nat_support::{Shape, install, settled, start_backends, tempdir, vip_addr, wait_armed, warm_up};

const BASE_PROBE_US: f64 = 100.0;

#[test]
fn ebpf_service_vip_latency_lands_in_the_backends_zones() {
    measure_until_valid(attempt_ebpf_service_vip_latency_lands_in_the_backends_zones);
}

/// One measurement; `None` when the delay line did not inject what the test expects.
fn attempt_ebpf_service_vip_latency_lands_in_the_backends_zones() -> Option<()> {
    let Some(mut bed) = TestBed::new_or_skip() else { return Some(()) };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node_ns = netns::path(bed.host("a1").netns());
    let delay = bed
        .delay_line(&[
            (Zone::A, Zone::B, Duration::from_micros(750)),
            (Zone::A, Zone::C, Duration::from_micros(250)),
            (Zone::A, Zone::X, Duration::from_micros(BASE_PROBE_US as u64)),
        ])
        .expect("delay line");
    let backends = start_backends(&bed, Family::V4, &["b1", "c1"]);
    install(bed.host("a1"), Shape::Iptables, Family::V4, &backends.endpoints());
    warm_up(&pod, Family::V4);
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--rtt-sample-interval", "0", "--prometheus-buckets", "all", "--nat-netns", node_ns.to_str().expect("utf-8")]);
    wait_armed(&agent);
    let to = vip_addr(Family::V4);
    // The bed's base (forwarding, the delay line's mechanism) from a probe that rides it with
    // 100 µs, interleaved with the Service traffic so both see the same machine.
    for _ in 0..3 {
        bed.run_rr("pod", "x1", 700, 100, Family::V4).expect("base probe");
        bed.run_connects("pod", "x1", 20, Family::V4).expect("base connects");
        pod.run_traffic(["rr", "--to", &to, "--count", "200", "--size", "100", "--sessions", "10"]).expect("request/response via the VIP");
        pod.run_traffic(["ask", "--to", &to, "--connections", "70", "--bytes", "1000", "--reply", "100"]).expect("connects via the VIP");
    }
    let m = settled(&agent);
    let stats = delay.stop().expect("delay line stats");
    if !on_time(&stats) {
        return None;
    }
    let base = quantile_us(&m, "azflow_tcp_rtt_seconds", "unknown", 0.5).expect("base RTT samples") - 2.0 * BASE_PROBE_US;
    let base_connect = quantile_us(&m, "azflow_tcp_connect_duration_seconds", "unknown", 0.5).expect("base connects") - 2.0 * BASE_PROBE_US;
    for stray in ["cross_vpc", "internet", zone_labels(Zone::A).1] {
        for name in ["azflow_tcp_rtt_seconds_count", "azflow_tcp_connect_duration_seconds_count"] {
            let n = m.value(name, &[("dst_zone_id", stray)]);
            assert_eq!(n, 0.0, "{name} has {n} samples under {stray}: latency did not follow the bytes");
        }
    }
    for (zone, added) in [(Zone::B, 1500.0), (Zone::C, 500.0)] {
        let id = zone_labels(zone).1;
        let rtt = quantile_us(&m, "azflow_tcp_rtt_seconds", id, 0.5).unwrap_or_else(|| panic!("no RTT samples in {id}"));
        let connect = quantile_us(&m, "azflow_tcp_connect_duration_seconds", id, 0.5).unwrap_or_else(|| panic!("no connect samples in {id}"));
        let (n, c) = (m.value("azflow_tcp_rtt_seconds_count", &[("dst_zone_id", id)]), m.value("azflow_tcp_connect_duration_seconds_count", &[("dst_zone_id", id)]));
        println!("pod->VIP->{id}: RTT p50 {rtt:.0} µs over {n} samples (expected {:.0}), connect p50 {connect:.0} µs over {c} (expected {:.0})", added + base, added + base_connect);
        assert!(rel_err(rtt, added + base) <= 0.10, "{id}: RTT p50 {rtt} vs {}", added + base);
        // Connects pay for the node's NAT work on the SYN (rule walk, conntrack entry and event)
        // that the base probe does not: 15 %.
        assert!(rel_err(connect, added + base_connect) <= 0.15, "{id}: connect p50 {connect} vs {}", added + base_connect);
    }
    println!("RTT/retransmit callbacks dropped while a socket waited for its mapping: {}", m.value("azflow_nat_callbacks_while_pending_total", &[]));
    let (status, _) = agent.stop();
    assert!(status.success());
    Some(())
}
