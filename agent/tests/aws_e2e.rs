//! End to end with no topology file: moto holds the bed's VPC (zones a, b, c in three AZs, dual
//! stack), the local IMDS says the monitored host a1 is in zone a, and the agent learns the rest.
//! Traffic to each subnet is credited to the right AZ and class, within 0.5 % of the wire.

mod common;

use azflow_tests::{Family, TestBed, Zone, addressing};
use common::{
    Agent, Metrics,
    aws::{Imds, Instance, Moto, aws_env},
    rel_err,
};

const TOLERANCE: f64 = 0.005;
const BULK_BYTES: u64 = 20_000_000;
const RR_COUNT: u64 = 10_000;
const RR_SIZE: u32 = 100;

/// moto's VPC mirroring the bed; returns each mapped zone's (AZ name, AZ ID) as moto reports them.
fn moto_bed(moto: &Moto) -> (String, Vec<(Zone, String, String)>) {
    let zones = [
        (Zone::A, "us-east-1a"),
        (Zone::B, "us-east-1b"),
        (Zone::C, "us-east-1c"),
    ];
    let nets: Vec<(String, String)> = zones
        .iter()
        .map(|(z, _)| (z.subnet_v4().to_string(), z.subnet_v6().to_string()))
        .collect();
    let specs: Vec<(&str, &str, Option<&str>)> = zones
        .iter()
        .zip(&nets)
        .map(|((_, az), (v4, v6))| (*az, v4.as_str(), Some(v6.as_str())))
        .collect();
    let (vpc, rows) = moto.create_vpc(&addressing::vpc_v4().to_string(), &specs);
    let labels = zones
        .iter()
        .zip(rows)
        .map(|((z, _), r)| (*z, r[3].clone(), r[4].clone()))
        .collect();
    (vpc, labels)
}

fn tcp(m: &Metrics, what: &str, dir: &str, zone_id: &str, class: &str) -> f64 {
    m.value(
        &format!("azflow_tcp_{what}_total"),
        &[
            ("direction", dir),
            ("dst_zone_id", zone_id),
            ("traffic_class", class),
        ],
    )
}

fn check_family(family: Family) {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let moto = Moto::start();
    let (vpc, labels) = moto_bed(&moto);
    let (_, a_zone, a_id) = labels[0].clone();
    let instance = Instance {
        region: "us-east-1".into(),
        zone: a_zone.clone(),
        zone_id: a_id.clone(),
        instance_id: "i-0a1".into(),
        account_id: "123456789012".into(),
        mac: "0e:a1:00:00:00:01".into(),
        vpc_id: vpc,
        subnet_id: "subnet-from-imds".into(),
        subnet_v4: Zone::A.subnet_v4().to_string(),
        subnet_v6: Some(Zone::A.subnet_v6().to_string()),
        vpc_v4: vec![addressing::vpc_v4().to_string()],
        vpc_v6: vec![addressing::vpc_v6().to_string()],
    };
    // Placement is ours (zone a); instance credentials come from moto.
    let imds = Imds::start(instance.values(true), Some(moto.addr));
    let (imds_url, moto_url) = (imds.url(), moto.url());
    let agent = Agent::start_with(bed.cgroup_path(), &[], |cmd| {
        aws_env(cmd, &imds_url, Some(&moto_url));
        cmd.env("AZFLOW_AWS", "auto");
    });
    let log = agent.log();
    assert!(log.contains("AWS topology loaded"), "{log}");
    let m = agent.scrape();
    assert!(
        m.has("azflow_build_info", &[("zone_id", &a_id)]),
        "the host's zone is zone a's AZ ID {a_id}"
    );

    let src = bed.monitored().name().to_string();
    for (dst, zone) in [("a2", Zone::A), ("b1", Zone::B), ("c1", Zone::C)] {
        let (_, _, zone_id) = labels
            .iter()
            .find(|(z, _, _)| *z == zone)
            .cloned()
            .expect("mapped zone");
        let class = if zone == Zone::A {
            "same_az"
        } else {
            "cross_az"
        };
        for workload in ["bulk", "rr"] {
            let m0 = agent.settled();
            let dst0 = bed.host(dst).link_counters().expect("counters");
            let src0 = bed.host(&src).link_counters().expect("counters");
            match workload {
                "bulk" => drop(
                    bed.run_bulk(&src, dst, BULK_BYTES, family)
                        .expect("bulk transfer"),
                ),
                _ => drop(
                    bed.run_rr(&src, dst, RR_COUNT, RR_SIZE, family)
                        .expect("request/response"),
                ),
            }
            let m1 = agent.settled();
            let sent = bed.host(dst).link_counters().expect("counters") - dst0;
            let recv = bed.host(&src).link_counters().expect("counters") - src0;
            for (direction, wire_bytes, wire_packets) in [
                ("transmit", sent.l3_rx_bytes(), sent.rx_packets),
                ("receive", recv.l3_rx_bytes(), recv.rx_packets),
            ] {
                let bytes = tcp(&m1, "bytes", direction, &zone_id, class)
                    - tcp(&m0, "bytes", direction, &zone_id, class);
                let packets = tcp(&m1, "packets", direction, &zone_id, class)
                    - tcp(&m0, "packets", direction, &zone_id, class);
                let (eb, ep) = (
                    rel_err(bytes, wire_bytes as f64),
                    rel_err(packets, wire_packets as f64),
                );
                println!(
                    "{family:?} {src}->{dst} ({zone_id}, {class}) {workload:<4} {direction:<8}: agent {bytes} B / {packets} pkts, wire {wire_bytes} B / {wire_packets} pkts, error {:.4}% / {:.4}%",
                    eb * 100.0,
                    ep * 100.0
                );
                assert!(
                    eb <= TOLERANCE,
                    "{family:?} {dst} {workload} {direction}: bytes agent {bytes} vs wire {wire_bytes}\n{}",
                    agent.log()
                );
                assert!(
                    ep <= TOLERANCE,
                    "{family:?} {dst} {workload} {direction}: packets agent {packets} vs wire {wire_packets}"
                );
            }
        }
    }
    // Zone x is in the VPC but not in EC2: unknown, not cross_vpc or internet.
    let m0 = agent.settled();
    let before = bed.host("x1").link_counters().expect("counters");
    bed.run_bulk(&src, "x1", 5_000_000, family)
        .expect("bulk to x1");
    let wire = (bed.host("x1").link_counters().expect("counters") - before).l3_rx_bytes() as f64;
    let m1 = agent.settled();
    let unknown = tcp(&m1, "bytes", "transmit", "unknown", "unknown")
        - tcp(&m0, "bytes", "transmit", "unknown", "unknown");
    println!("{family:?} {src}->x1 (not in EC2): agent {unknown} B as unknown, wire {wire} B");
    assert!(
        rel_err(unknown, wire) <= TOLERANCE,
        "{family:?}: x1 bytes {unknown} as unknown vs wire {wire}"
    );
    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
}

#[test]
fn aws_e2e_no_topology_file_ipv4_matches_wire_truth() {
    check_family(Family::V4);
}

#[test]
fn aws_e2e_no_topology_file_ipv6_matches_wire_truth() {
    check_family(Family::V6);
}
