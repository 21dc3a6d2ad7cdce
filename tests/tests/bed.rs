//! Self-tests of the test bed: connectivity, wire truth, cgroup membership, teardown, sweeping.
//! They need root (network namespaces, cgroups); elsewhere they print SKIPPED, or fail with
//! AZFLOW_REQUIRE_EBPF=1.

use std::{
    net::IpAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use azflow_tests::{
    Family, TestBed, Zone, cgroup,
    names::{BedId, process_start_time},
    netns,
    process::{self, Proc},
    require_root_or_skip, sweep_stale_beds, traffic_bin,
};

/// Bulk transfer size for the wire-truth checks (≥ 50 MB).
const BULK_BYTES: u64 = 64 << 20;

fn build_bed() -> TestBed {
    let started = Instant::now();
    let bed = TestBed::builder()
        .traffic_binary(traffic_bin!())
        .build()
        .unwrap_or_else(|e| panic!("building a test bed: {e:#}"));
    eprintln!("bed {} built in {:?}", bed.id(), started.elapsed());
    bed
}

#[test]
fn two_beds_in_parallel_reach_every_pair_in_both_families() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let started = Instant::now();
    let beds: Vec<TestBed> = thread::scope(|s| {
        let a = s.spawn(build_bed);
        let b = s.spawn(build_bed);
        [a, b]
            .into_iter()
            .map(|h| h.join().expect("building a bed panicked"))
            .collect()
    });
    eprintln!("two beds built in parallel in {:?}", started.elapsed());
    assert_ne!(beds[0].id(), beds[1].id());

    for bed in &beds {
        assert_eq!(
            bed.hosts().iter().map(|h| h.name()).collect::<Vec<_>>(),
            ["a1", "a2", "b1", "c1", "x1"]
        );
        assert_eq!(bed.host("a1").zone(), Zone::A);
        assert_eq!(bed.host("a2").subnet_v4(), bed.host("a1").subnet_v4());
        assert_eq!(bed.host("x1").ipv4().to_string(), "10.0.9.10");
        assert_eq!(bed.host("b1").ipv6().to_string(), "fd00:0:0:2::10");
        assert!(!bed.host("x1").zone().is_mapped());
        for from in bed.hosts() {
            let targets: Vec<IpAddr> = Family::ALL
                .iter()
                .flat_map(|&f| {
                    bed.hosts()
                        .iter()
                        .filter(|to| to.name() != from.name())
                        .map(move |to| to.ip(f))
                })
                .collect();
            let report = from
                .ping(&targets)
                .unwrap_or_else(|e| panic!("ping from {}: {e:#}", from.name()));
            assert!(
                report.silent().is_empty(),
                "bed {}: {} got no reply from {:?}",
                bed.id(),
                from.name(),
                report.silent()
            );
        }
    }
    // Both beds use the same addresses; traffic in one must not show in the other.
    let quiet_before = beds[1].host("b1").link_counters().expect("counters");
    beds[0]
        .run_bulk("a1", "b1", 1 << 20, Family::V4)
        .expect("bulk in bed 0");
    let quiet_after = beds[1].host("b1").link_counters().expect("counters");
    assert_eq!(quiet_before, quiet_after, "bed 1 saw traffic of bed 0");
    eprintln!("parallel-beds test took {:?}", started.elapsed());
}

/// Checks that b1's interface sees MTU-sized segments for a large transfer from a1, and that
/// its L3 byte count matches payload plus per-segment headers.
fn check_wire_truth(family: Family) {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let bed = build_bed();
    let (a1, b1) = (bed.host("a1"), bed.host("b1"));
    let rx_before = b1.link_counters().expect("b1 counters");
    let tx_before = a1.link_counters().expect("a1 counters");
    let tcp_before = a1.tcp_counters().expect("a1 TCP counters");
    let run = bed
        .run_bulk("a1", "b1", BULK_BYTES, family)
        .unwrap_or_else(|e| panic!("bulk a1 -> b1 over {family}: {e:#}"));
    let rx = b1.link_counters().expect("b1 counters") - rx_before;
    let tx = a1.link_counters().expect("a1 counters") - tx_before;
    let tcp = a1.tcp_counters().expect("a1 TCP counters") - tcp_before;

    let payload = run.client.bytes_sent; // header + payload, everything a1's socket carried
    let mss = family.tcp_mss();
    let headers = family.ip_header_len() + azflow_tests::addressing::TCP_HEADER_WITH_TIMESTAMPS;
    let min_segments = payload.div_ceil(mss);
    let ideal_l3 = payload + min_segments * headers;
    let l3 = rx.l3_rx_bytes();
    let packet_ratio = rx.rx_packets as f64 / min_segments as f64;
    let byte_ratio = l3 as f64 / ideal_l3 as f64;
    eprintln!(
        "{family} wire truth: {payload} payload bytes in {:.2} s ({:.2} Gbit/s); \
         b1 eth0 rx {} packets (payload/MSS = {min_segments}, ratio {packet_ratio:.4}), \
         avg frame {:.1} B, L3 {l3} B vs ideal {ideal_l3} B (ratio {byte_ratio:.4}); \
         a1 eth0 tx {} packets ({:.0} B avg: GSO super-packets); \
         a1 TCP: {} segments out, {} retransmitted",
        run.client.elapsed_secs,
        run.client.goodput_bits_per_sec / 1e9,
        rx.rx_packets,
        rx.avg_rx_frame(),
        tx.tx_packets,
        tx.l3_tx_bytes() as f64 / tx.tx_packets.max(1) as f64,
        tcp.out_segs,
        tcp.retrans_segs,
    );
    // Segmentation really happened: every frame is at most MTU + Ethernet header, and there are
    // at least as many as the payload needs at the MSS.
    assert!(
        rx.avg_rx_frame() <= (azflow_tests::LINK_MTU + azflow_tests::ETHERNET_HEADER_LEN) as f64,
        "b1 received frames larger than the MTU on average: {rx:?}"
    );
    assert!(
        rx.rx_packets >= min_segments,
        "b1 received {} packets, fewer than the {min_segments} MSS-sized segments \
         {payload} bytes need: GSO super-packets reached the receiver ({rx:?})",
        rx.rx_packets
    );
    // Retransmissions (veth reorders across CPUs) add packets and bytes; allow a few percent.
    assert!(
        packet_ratio < 1.05,
        "b1 received {} packets for {min_segments} segments",
        rx.rx_packets
    );
    assert!(
        (0.999..1.03).contains(&byte_ratio),
        "b1 L3 bytes {l3} vs payload + headers {ideal_l3} (ratio {byte_ratio:.4})"
    );
    let started = Instant::now();
    bed.destroy().expect("teardown");
    eprintln!("teardown took {:?}", started.elapsed());
}

#[test]
fn bulk_over_ipv4_arrives_as_mtu_sized_segments() {
    check_wire_truth(Family::V4);
}

#[test]
fn bulk_over_ipv6_arrives_as_mtu_sized_segments() {
    check_wire_truth(Family::V6);
}

#[test]
fn request_response_20000_messages() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let bed = build_bed();
    let c1_before = bed.host("c1").link_counters().expect("c1 counters");
    let started = Instant::now();
    let run = bed
        .run_rr("a1", "c1", 20_000, 64, Family::V4)
        .unwrap_or_else(|e| panic!("rr a1 -> c1: {e:#}"));
    let elapsed = started.elapsed();
    let rx = bed.host("c1").link_counters().expect("c1 counters") - c1_before;
    eprintln!(
        "rr: {} round trips of {} B in {:?}; rtt µs min {:.1} mean {:.1} p50 {:.1} p99 {:.1} \
         max {:.1}; c1 eth0 rx {} packets",
        run.client.count,
        run.client.size,
        elapsed,
        run.client.rtt_us.min,
        run.client.rtt_us.mean,
        run.client.rtt_us.p50,
        run.client.rtt_us.p99,
        run.client.rtt_us.max,
        rx.rx_packets
    );
    assert_eq!(run.client.count, 20_000);
    assert_eq!(run.server.connections.len(), 1);
    assert_eq!(run.server.connections[0].messages, 20_000);
    assert!(rx.rx_packets >= 20_000, "c1 received {rx:?}");

    let run6 = bed
        .run_rr("x1", "a2", 2_000, 1_000, Family::V6)
        .unwrap_or_else(|e| panic!("rr x1 -> a2 over IPv6: {e:#}"));
    assert_eq!(run6.server.connections[0].messages, 2_000);
}

#[test]
fn udp_datagrams_arrive() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let bed = build_bed();
    for family in Family::ALL {
        let run = bed
            .run_udp("b1", "a2", 200, 1000, family)
            .unwrap_or_else(|e| panic!("udp b1 -> a2 over {family}: {e:#}"));
        assert_eq!(run.client.datagrams_sent, 200, "{run:?}");
        // The sink's 16 MiB receive buffer holds the whole burst.
        assert_eq!(run.server.datagrams, 200, "{run:?}");
        assert_eq!(run.server.bytes_received, run.server.datagrams * 1000);
    }
}

#[test]
fn monitored_host_runs_in_the_bed_cgroup_and_counters_agree_with_ip() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let bed = build_bed();
    let root = cgroup::cgroup2_root().expect("cgroup2 root");
    assert_eq!(bed.cgroup_path(), root.join(bed.id()));
    assert!(bed.monitored().is_monitored());
    assert_eq!(bed.monitored().name(), "a1");

    let a1_cgroup = bed
        .host("a1")
        .run("cat", ["/proc/self/cgroup"])
        .expect("cat in a1");
    assert!(
        a1_cgroup.contains(&format!("0::/{}\n", bed.id())),
        "a1 is not in the bed's cgroup: {a1_cgroup}"
    );
    let b1_cgroup = bed
        .host("b1")
        .run("cat", ["/proc/self/cgroup"])
        .expect("cat in b1");
    assert!(
        !b1_cgroup.contains(bed.id()),
        "b1 is in the bed's cgroup: {b1_cgroup}"
    );

    // A running server of the monitored host is listed in the cgroup.
    let server = bed
        .host("a1")
        .start_tcp_server(Family::V4, 1)
        .expect("server in a1");
    let procs = cgroup::procs(bed.cgroup_path()).expect("cgroup.procs");
    assert!(
        !procs.is_empty(),
        "no process in {}",
        bed.cgroup_path().display()
    );
    drop(server);

    // Counters from /proc/net/dev equal those of `ip -s link` on a quiet link.
    let host = bed.host("c1");
    let ours = host.link_counters().expect("c1 counters");
    let mut cmd = Command::new("ip");
    cmd.args([
        "-n",
        host.netns(),
        "-j",
        "-s",
        "link",
        "show",
        "dev",
        "eth0",
    ]);
    let out = process::run(cmd, Duration::from_secs(10)).expect("ip -s link");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("ip -j prints JSON");
    let stats = &json[0]["stats64"];
    assert_eq!(stats["rx"]["bytes"].as_u64(), Some(ours.rx_bytes), "{json}");
    assert_eq!(
        stats["rx"]["packets"].as_u64(),
        Some(ours.rx_packets),
        "{json}"
    );
    assert_eq!(stats["tx"]["bytes"].as_u64(), Some(ours.tx_bytes), "{json}");
    assert_eq!(
        stats["tx"]["packets"].as_u64(),
        Some(ours.tx_packets),
        "{json}"
    );

    // The quiet-link sysctls landed in the bed's namespaces.
    let dad = host
        .run("cat", ["/proc/sys/net/ipv6/conf/eth0/accept_dad"])
        .expect("read accept_dad");
    assert_eq!(dad.trim(), "0");
    assert_eq!(
        netns::read_sysctl(bed.router_netns(), "net/ipv6/conf/all/forwarding").expect("sysctl"),
        "1"
    );

    // Offloads as the wire truth needs them.
    let mut cmd = bed.router_command("ethtool");
    cmd.args(["-k", &host.router_port()]);
    let features = process::run(cmd, Duration::from_secs(10))
        .expect("ethtool -k")
        .stdout;
    for off in [
        "tcp-segmentation-offload: off",
        "generic-segmentation-offload: off",
    ] {
        assert!(
            features.contains(off),
            "router port: no {off:?} in\n{features}"
        );
    }
    let features = host
        .run("ethtool", ["-k", "eth0"])
        .expect("ethtool -k eth0");
    assert!(
        features.contains("generic-receive-offload: off"),
        "c1 eth0 still has GRO on:\n{features}"
    );

    // The links stay quiet: no ARP, NDP, MLD or router solicitations once the bed is up.
    let before = host.link_counters().expect("counters");
    let sent_before = bed
        .router_port_counters("c1")
        .expect("router port counters");
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        host.link_counters().expect("counters"),
        before,
        "c1's link is not quiet"
    );
    assert_eq!(
        bed.router_port_counters("c1")
            .expect("router port counters"),
        sent_before
    );
}

#[test]
fn drop_removes_namespaces_cgroup_and_processes() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let bed = build_bed();
    let id = bed.id().to_owned();
    let cgroup_path = bed.cgroup_path().to_owned();
    // Leave processes behind in the monitored host (in the cgroup) and in another host.
    let mut in_a1 = bed.host("a1").command("sleep");
    in_a1.arg("600");
    let in_a1 = Proc::spawn(in_a1, None).expect("sleep in a1");
    let mut in_b1 = bed.host("b1").command("sleep");
    in_b1.arg("600");
    let in_b1 = Proc::spawn(in_b1, None).expect("sleep in b1");
    process::wait_until("sleep to be in the cgroup", Duration::from_secs(5), || {
        Ok(cgroup::procs(&cgroup_path)?.contains(&in_a1.pid()))
    })
    .expect("the a1 process joins the cgroup");
    let names = bed.netns_names();
    assert_eq!(names.len(), 6);
    for name in &names {
        assert!(name.starts_with(&id), "{name} does not start with {id}");
    }

    let started = Instant::now();
    drop(bed);
    eprintln!("drop took {:?}", started.elapsed());

    let left: Vec<String> = netns::list()
        .expect("list netns")
        .into_iter()
        .filter(|n| n.starts_with(&id))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !cgroup_path.exists(),
        "{} left behind",
        cgroup_path.display()
    );
    for proc in [&in_a1, &in_b1] {
        assert_eq!(
            process_start_time(proc.pid()).expect("read /proc"),
            None,
            "{} survived the bed",
            proc.command()
        );
    }
}

#[test]
fn a_panicking_test_still_removes_its_bed() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = thread::Builder::new()
        .name("panics-with-a-bed".into())
        .spawn(move || {
            let bed = build_bed();
            tx.send((bed.id().to_owned(), bed.cgroup_path().to_owned()))
                .expect("send the bed's names");
            panic!("deliberate panic while bed {} is up", bed.id());
        })
        .expect("spawn a thread")
        .join();
    assert!(outcome.is_err(), "the thread was meant to panic");
    let (id, cgroup_path) = rx.recv().expect("the thread built a bed");
    let left: Vec<String> = netns::list()
        .expect("list netns")
        .into_iter()
        .filter(|n| n.starts_with(&id))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !cgroup_path.exists(),
        "{} left behind",
        cgroup_path.display()
    );
}

#[test]
fn sweeper_removes_beds_of_dead_owners_only() {
    let Some(_root) = require_root_or_skip() else {
        return;
    };
    let live = build_bed();

    // A bed id whose owner is surely gone: a pid that just exited, with a start time of 1.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("reap true");
    let stale = BedId::with_owner(dead_pid, 1, 0);
    assert!(!stale.owner_alive().expect("read /proc"));
    let stale_ns = format!("{stale}-r");
    netns::add(&stale_ns).expect("create a stale netns");
    let stale_cgroup = cgroup::cgroup2_root()
        .expect("cgroup2 root")
        .join(stale.to_string());
    std::fs::create_dir(&stale_cgroup).expect("create a stale cgroup");
    // A process left running in the stale bed's namespace and cgroup.
    let mut cmd = netns::exec_command(&stale_ns, "sleep");
    cmd.arg("600");
    cgroup::join_on_spawn(&mut cmd, &stale_cgroup).expect("join the stale cgroup");
    let orphan = Proc::spawn(cmd, None).expect("sleep in the stale bed");

    let report = sweep_stale_beds().expect("sweep");
    eprintln!("sweep: {report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    // A sweeper of a concurrently running test process may have removed it first, so check
    // the outcome rather than who did it.
    assert!(
        !netns::path(&stale_ns).exists(),
        "{stale_ns} survived the sweep: {report:?}"
    );
    assert!(
        !stale_cgroup.exists(),
        "{} survived the sweep: {report:?}",
        stale_cgroup.display()
    );
    assert_eq!(
        process_start_time(orphan.pid()).expect("read /proc"),
        None,
        "the process left in the stale bed survived the sweep"
    );
    // The live bed is untouched and still works.
    for name in live.netns_names() {
        assert!(netns::path(&name).exists(), "sweeper removed live {name}");
    }
    assert!(live.cgroup_path().exists());
    live.warm_up()
        .expect("live bed still works after the sweep");
}
