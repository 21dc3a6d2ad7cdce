//! Byte accuracy against wire truth: the agent's per-(zone, direction) counts versus what the
//! receiving interfaces counted (segmentation offload off at the router, GRO off at the hosts,
//! L2 header subtracted) — numbers the agent had no part in computing.

mod common;

use azflow_tests::{Family, TestBed, Zone};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};

/// Billing-grade: 0.5 %.
const TOLERANCE: f64 = 0.005;
const BULK_BYTES: u64 = 50_000_000;
const RR_COUNT: u64 = 20_000;
const RR_SIZE: u32 = 100;

fn tcp(m: &Metrics, what: &str, dir: &str, zone_id: &str) -> f64 {
    m.value(&format!("azflow_tcp_{what}_total"), &[("direction", dir), ("dst_zone_id", zone_id)])
}

fn check_family(family: Family) {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8")]);
    let src = bed.monitored().name().to_string();
    for dst in ["a2", "b1", "c1"] {
        let zone = bed.host(dst).zone();
        let (_, zone_id) = zone_labels(zone);
        for workload in ["bulk", "rr"] {
            let m0 = agent.settled();
            let dst0 = bed.host(dst).link_counters().expect("counters");
            let src0 = bed.host(&src).link_counters().expect("counters");
            match workload {
                "bulk" => drop(bed.run_bulk(&src, dst, BULK_BYTES, family).expect("bulk transfer")),
                _ => drop(bed.run_rr(&src, dst, RR_COUNT, RR_SIZE, family).expect("request/response")),
            }
            let m1 = agent.settled();
            let sent = bed.host(dst).link_counters().expect("counters") - dst0;
            let recv = bed.host(&src).link_counters().expect("counters") - src0;
            for (direction, wire_bytes, wire_packets) in [
                ("transmit", sent.l3_rx_bytes(), sent.rx_packets),
                ("receive", recv.l3_rx_bytes(), recv.rx_packets),
            ] {
                let bytes = tcp(&m1, "bytes", direction, zone_id) - tcp(&m0, "bytes", direction, zone_id);
                let packets = tcp(&m1, "packets", direction, zone_id) - tcp(&m0, "packets", direction, zone_id);
                let (eb, ep) = (rel_err(bytes, wire_bytes as f64), rel_err(packets, wire_packets as f64));
                println!(
                    "{family:?} {src}->{dst} ({zone_id}) {workload:<4} {direction:<8}: agent {bytes} B / {packets} pkts, wire {wire_bytes} B / {wire_packets} pkts, error {:.4}% / {:.4}%",
                    eb * 100.0,
                    ep * 100.0
                );
                assert!(eb <= TOLERANCE, "{family:?} {dst} {workload} {direction}: bytes agent {bytes} vs wire {wire_bytes}\n{}", agent.log());
                assert!(ep <= TOLERANCE, "{family:?} {dst} {workload} {direction}: packets agent {packets} vs wire {wire_packets}");
            }
            // Nothing leaks into another zone's counters.
            for other in [Zone::A, Zone::B, Zone::C].into_iter().filter(|z| *z != zone) {
                let (_, other_id) = zone_labels(other);
                for d in ["transmit", "receive"] {
                    assert_eq!(tcp(&m1, "bytes", d, other_id), tcp(&m0, "bytes", d, other_id), "{dst} traffic leaked into {other_id}");
                }
            }
        }
    }
    let (status, took) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    assert!(took.as_secs_f64() < 5.0, "azflow took {took:?} to stop");
}

#[test]
fn ebpf_bytes_and_packets_match_wire_truth_ipv4() {
    check_family(Family::V4);
}

#[test]
fn ebpf_bytes_and_packets_match_wire_truth_ipv6() {
    check_family(Family::V6);
}

#[test]
fn ebpf_udp_and_unmapped_traffic_are_not_mapped_tcp() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8")]);
    let src = bed.monitored().name().to_string();
    let mapped = |m: &Metrics| -> f64 {
        ["same_az", "cross_az"].iter().map(|c| m.value("azflow_tcp_bytes_total", &[("traffic_class", c)])).sum()
    };

    let m0 = agent.settled();
    for family in [Family::V4, Family::V6] {
        let udp = bed.run_udp(&src, "b1", 5_000, 1_000, family).expect("udp");
        assert!(udp.client.datagrams_sent > 4_000, "UDP traffic really flowed: {udp:?}");
    }
    let mut m1 = agent.settled();
    assert_eq!(mapped(&m1), mapped(&m0), "UDP must not count as mapped TCP bytes");
    assert_eq!(m1.value("azflow_tcp_bytes_total", &[]), m0.value("azflow_tcp_bytes_total", &[]), "UDP must not count as TCP at all");

    for family in [Family::V4, Family::V6] {
        let before = bed.host("x1").link_counters().expect("counters");
        bed.run_bulk(&src, "x1", 5_000_000, family).expect("bulk to the unmapped subnet");
        let wire = (bed.host("x1").link_counters().expect("counters") - before).l3_rx_bytes();
        let m2 = agent.settled();
        assert_eq!(mapped(&m2), mapped(&m1), "{family:?}: unmapped traffic must not count as mapped");
        let unknown = |m: &Metrics| m.value("azflow_tcp_bytes_total", &[("traffic_class", "unknown"), ("direction", "transmit")]);
        let counted = unknown(&m2) - unknown(&m1);
        println!("{family:?} a1->x1 unmapped: agent {counted} B (class unknown), wire {wire} B");
        assert!(rel_err(counted, wire as f64) <= TOLERANCE, "{family:?}: unknown-class bytes {counted} vs wire {wire}");
        let prefix = match family {
            Family::V4 => "10.0.9.0/24".to_string(),
            Family::V6 => "fd00::/48".to_string(),
        };
        assert!(
            m2.value("azflow_unmapped_tcp_bytes_total", &[("prefix", &prefix), ("direction", "transmit")]) >= wire as f64 * (1.0 - TOLERANCE),
            "{prefix} missing from the unmapped top list:\n{:?}",
            m2.series.iter().filter(|s| s.0.starts_with("azflow_unmapped")).collect::<Vec<_>>()
        );
        assert!(m2.value("azflow_unmapped_prefixes", &[]) >= 1.0);
        m1 = m2;
    }
    let (status, _) = agent.stop();
    assert!(status.success());
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("azflow-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
