//! Seeing through Kubernetes Services: a pod (own netns and cgroup, behind a veth, address from
//! the node's subnet as the VPC CNI gives it) dials a Service VIP that the node rewrites with rules
//! shaped exactly as kube-proxy writes them (iptables and nftables modes) to backends in two other
//! AZs. Truth is each backend's interface counters (segmentation offload off on the node's egress
//! and on the backends, GRO off on receivers): receive counters for what the pod sent, transmit
//! counters for what it got back.

mod common;
mod nat_support;

use azflow_tests::{Family, TestBed, Zone, netns};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};
use nat_support::{Backends, Shape, install, settled, start_backends, tempdir, vip_addr, wait_armed, warm_up};

/// Billing-grade: 0.5 %.
const TOLERANCE: f64 = 0.005;

fn tcp(m: &Metrics, what: &str, dir: &str, zone_id: &str) -> f64 {
    m.value(&format!("azflow_tcp_{what}_total"), &[("direction", dir), ("dst_zone_id", zone_id)])
}

fn classes(m: &Metrics, names: &[&str]) -> f64 {
    names.iter().map(|c| m.value("azflow_tcp_bytes_total", &[("traffic_class", c)])).sum()
}

/// Runs `work`, then checks each backend AZ's bytes in both directions against its interface
/// counters, and that (almost) nothing was left under the VIP's class.
fn check_against_backends(bed: &TestBed, agent: &Agent, backends: &Backends, label: &str, work: impl FnOnce()) {
    let m0 = settled(agent);
    let before: Vec<_> = backends.hosts.iter().map(|h| bed.host(h).link_counters().expect("counters")).collect();
    work();
    let m1 = settled(agent);
    let mut total = 0.0;
    for (host, c0) in backends.hosts.iter().zip(&before) {
        let c = bed.host(host).link_counters().expect("counters") - *c0;
        let (_, zone_id) = zone_labels(bed.host(host).zone());
        for (dir, wire) in [("transmit", c.l3_rx_bytes()), ("receive", c.l3_tx_bytes())] {
            let agent_bytes = tcp(&m1, "bytes", dir, zone_id) - tcp(&m0, "bytes", dir, zone_id);
            let e = rel_err(agent_bytes, wire as f64);
            println!("{label}: backend {host} ({zone_id}) {dir:<8}: agent {agent_bytes} B, wire {wire} B, error {:.4}%", e * 100.0);
            assert!(wire > 0, "{label}: backend {host} got no traffic (random DNAT never picked it?)");
            assert!(e <= TOLERANCE, "{label}: {host} {dir}: agent {agent_bytes} vs wire {wire}\n{}", agent.log());
            total += wire as f64;
        }
    }
    let stray = classes(&m1, &["cross_vpc", "unknown", "internet"]) - classes(&m0, &["cross_vpc", "unknown", "internet"]);
    println!("{label}: {stray} B ({:.4}%) left under cross_vpc/unknown/internet", stray / total * 100.0);
    assert!(stray / total < TOLERANCE, "{label}: {stray} B of {total} stayed under the VIP's class");
}

fn service_through_node(shape: Shape) {
    let Some(mut bed) = TestBed::new_or_skip() else { return };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    for b in ["b1", "c1"] {
        bed.segment_in_software(b).expect("ethtool on a backend");
    }
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node_ns = netns::path(bed.host("a1").netns());
    // kube-proxy programs the node before the agent starts, as on a real node.
    let mut services = Vec::new();
    for family in [Family::V4, Family::V6] {
        let backends = start_backends(&bed, family, &["b1", "c1"]);
        install(bed.host("a1"), shape, family, &backends.endpoints());
        warm_up(&pod, family);
        services.push((family, backends));
    }
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--nat-netns", node_ns.to_str().expect("utf-8")]);
    wait_armed(&agent);
    for (family, backends) in &services {
        let family = *family;
        let to = vip_addr(family);
        check_against_backends(&bed, &agent, backends, &format!("{shape:?} {family:?} pod bulk 8x8MB"), || {
            for _ in 0..8 {
                pod.run_traffic(["bulk", "--to", &to, "--bytes", "8M"]).expect("bulk to the VIP");
            }
        });
        check_against_backends(&bed, &agent, backends, &format!("{shape:?} {family:?} pod 2000 short connections"), || {
            pod.run_traffic(["ask", "--to", &to, "--connections", "2000", "--bytes", "10240", "--reply", "2048"]).expect("short connections to the VIP");
        });
        // A host-network client behind OUTPUT DNAT sees the backend in its packets already.
        check_against_backends(&bed, &agent, backends, &format!("{shape:?} {family:?} host-network client"), || {
            let node = bed.host("a1");
            for _ in 0..4 {
                node.run_traffic(["bulk", "--to", &to, "--bytes", "4M"]).expect("bulk from the node");
            }
            node.run_traffic(["ask", "--to", &to, "--connections", "300", "--bytes", "10240", "--reply", "2048"]).expect("short connections from the node");
        });
    }
    let m = agent.settled();
    let unresolved = m.value("azflow_nat_unresolved_bytes_total", &[]);
    let pending = m.value("azflow_nat_sockets_total", &[("outcome", "pending")]);
    println!(
        "{shape:?}: {pending} sockets waited for their mapping, {} found it on a later packet (the rest had sent everything by then and were credited by the sweep), {} timed out; unresolved bytes {unresolved}",
        m.value("azflow_nat_sockets_total", &[("outcome", "resolved")]),
        m.value("azflow_nat_sockets_total", &[("outcome", "timed_out")])
    );
    // Every pod connection (2 families × (8 bulk + 2000 short)) waited; none gave up.
    assert_eq!(pending, 2.0 * 2008.0);
    assert_eq!(unresolved, 0.0);
    let (status, _) = agent.stop();
    assert!(status.success());
    drop(pod);
}

#[test]
fn ebpf_service_vip_bytes_follow_the_backend_iptables_shape() {
    service_through_node(Shape::Iptables);
}

#[test]
fn ebpf_service_vip_bytes_follow_the_backend_nftables_shape() {
    service_through_node(Shape::Nftables);
}

/// Conntrack flushed again and again while connections run: whatever could not be resolved is
/// counted under the VIP and in the unresolved counter, and the sum over all classes stays exact.
/// Then with conntrack events switched off on the node (the table still tracks, so NAT works, but
/// no mapping ever reaches the agent), every byte times out into the VIP's class and the
/// unresolved counter, still exact.
#[test]
fn ebpf_service_vip_totals_stay_exact_when_conntrack_is_flushed_or_silent() {
    let Some(mut bed) = TestBed::new_or_skip() else { return };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    bed.segment_in_software("b1").expect("ethtool");
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node = bed.host("a1").netns().to_string();
    let node_ns = netns::path(&node);
    let backends = start_backends(&bed, Family::V4, &["b1"]);
    install(bed.host("a1"), Shape::Iptables, Family::V4, &backends.endpoints());
    let to = vip_addr(Family::V4);
    let (_, b_id) = zone_labels(Zone::B);
    for label in ["conntrack flushed", "conntrack events off"] {
        let events = if label == "conntrack events off" { "0" } else { "1" };
        netns::write_sysctls(&node, &[("net/netfilter/nf_conntrack_events", events)]).expect("conntrack events sysctl");
        warm_up(&pod, Family::V4);
        let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--nat-netns", node_ns.to_str().expect("utf-8"), "--nat-pending-timeout", "1s"]);
        wait_armed(&agent);
        let m0 = settled(&agent);
        let c0 = bed.host("b1").link_counters().expect("counters");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flush = label == "conntrack flushed";
        let flusher = {
            let (stop, ns) = (stop.clone(), node.clone());
            std::thread::spawn(move || {
                let mut flushes = 0;
                while flush && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = netns::exec_command(&ns, "conntrack").arg("-F").output();
                    flushes += 1;
                    std::thread::sleep(std::time::Duration::from_millis(150));
                }
                flushes
            })
        };
        // A flush makes the node pick the connection up again mid-stream; replies that race it
        // can reset a connection (as on a real node), so clients may fail: the truth is the wire.
        for _ in 0..4 {
            let _ = pod.run_traffic(["bulk", "--to", &to, "--bytes", "8M", "--timeout-secs", "5"]);
        }
        for _ in 0..5 {
            let _ = pod.run_traffic(["ask", "--to", &to, "--connections", "100", "--bytes", "10240", "--reply", "2048", "--timeout-secs", "5"]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flushes = flusher.join().expect("flusher");
        let m1 = settled(&agent);
        let c = bed.host("b1").link_counters().expect("counters") - c0;
        let (mut all_sum, mut wire_sum) = (0.0, 0.0);
        for (d, wire) in [("transmit", c.l3_rx_bytes()), ("receive", c.l3_tx_bytes())] {
            let all = m1.value("azflow_tcp_bytes_total", &[("direction", d)]) - m0.value("azflow_tcp_bytes_total", &[("direction", d)]);
            let to_b = tcp(&m1, "bytes", d, b_id) - tcp(&m0, "bytes", d, b_id);
            let vip_class = m1.value("azflow_tcp_bytes_total", &[("direction", d), ("traffic_class", "cross_vpc")])
                - m0.value("azflow_tcp_bytes_total", &[("direction", d), ("traffic_class", "cross_vpc")]);
            let unresolved = m1.value("azflow_nat_unresolved_bytes_total", &[("direction", d)]) - m0.value("azflow_nat_unresolved_bytes_total", &[("direction", d)]);
            println!("{label} ({flushes} flushes) {d:<8}: all classes {all} B vs wire {wire} B ({:.4}%); backend AZ {to_b} B; VIP class {vip_class} B; unresolved {unresolved} B", rel_err(all, wire as f64) * 100.0);
            // What was not resolved is exactly what stayed under the VIP.
            assert_eq!(vip_class, unresolved, "{label} {d}: the unresolved counter must name every byte left under the VIP");
            if label == "conntrack events off" {
                assert!(rel_err(unresolved, wire as f64) <= TOLERANCE, "{label}: everything is unresolved");
            }
            if d == "transmit" {
                // Everything the pod sends reaches the backend (still the only one after a flush).
                assert!(rel_err(all, wire as f64) <= TOLERANCE, "{label} {d}: {all} vs {wire}\n{}", agent.log());
            }
            all_sum += all;
            wire_sum += wire as f64;
        }
        // The sum over all classes and both directions. Replies that race a flush reach the pod
        // un-NATed and are dropped by its stack before any socket: on the backend's wire, in no
        // host meter; the flush test's receive side is short by exactly those.
        let e = rel_err(all_sum, wire_sum);
        println!("{label}: all classes, both directions: {all_sum} B vs wire {wire_sum} B ({:.4}%)", e * 100.0);
        assert!(e <= TOLERANCE, "{label}: {all_sum} vs {wire_sum}");
        let (status, _) = agent.stop();
        assert!(status.success());
    }
}


fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).expect("VmRSS")
}

/// Churn: 100,000 Service connections at over 100,000 a minute. The agent's memory stays flat,
/// the bounded maps stay bounded, and the bytes still equal the wire.
#[test]
fn ebpf_service_vip_churn_keeps_memory_flat() {
    let Some(mut bed) = TestBed::new_or_skip() else { return };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    bed.segment_in_software("b1").expect("ethtool");
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node_ns = netns::path(bed.host("a1").netns());
    let backends = start_backends(&bed, Family::V4, &["b1"]);
    install(bed.host("a1"), Shape::Iptables, Family::V4, &backends.endpoints());
    warm_up(&pod, Family::V4);
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--nat-netns", node_ns.to_str().expect("utf-8")]);
    wait_armed(&agent);
    let m0 = settled(&agent);
    let c0 = bed.host("b1").link_counters().expect("counters");
    let to = vip_addr(Family::V4);
    // 100k connections a minute from one pod to one VIP reuse source ports within TIME_WAIT.
    netns::write_sysctls(pod.netns(), &[("net/ipv4/tcp_tw_reuse", "1")]).expect("tcp_tw_reuse");
    let started = std::time::Instant::now();
    let mut rss = Vec::new();
    let mut connections = 0u64;
    while connections < 100_000 && started.elapsed() < std::time::Duration::from_secs(90) {
        // Four clients at once, as several pods' worth of callers would.
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = pod.traffic_command();
                cmd.args(["ask", "--to", &to, "--connections", "2500", "--bytes", "200", "--reply", "100"]);
                azflow_tests::process::Proc::spawn(cmd, None).expect("client")
            })
            .collect();
        // A reset connection fails its client; the wire still counts what it carried.
        for c in clients {
            match c.wait_ok(std::time::Duration::from_secs(120)) {
                Ok(_) => connections += 2_500,
                Err(e) => println!("churn: a client stopped early: {e:#}"),
            }
        }
        let m = agent.scrape();
        rss.push((started.elapsed().as_secs_f64(), rss_kib(agent.pid()), m.value("azflow_nat_pending_connections", &[])));
    }
    let per_minute = connections as f64 / started.elapsed().as_secs_f64() * 60.0;
    let m1 = settled(&agent);
    let c = bed.host("b1").link_counters().expect("counters") - c0;
    for (t, kib, pending) in &rss {
        println!("churn t={t:5.1}s: agent RSS {kib} KiB, connections held {pending}");
    }
    let (_, b_id) = zone_labels(Zone::B);
    for (d, wire) in [("transmit", c.l3_rx_bytes()), ("receive", c.l3_tx_bytes())] {
        let got = tcp(&m1, "bytes", d, b_id) - tcp(&m0, "bytes", d, b_id);
        println!("churn {d}: agent {got} B vs wire {wire} B ({:.4}%)", rel_err(got, wire as f64) * 100.0);
        assert!(rel_err(got, wire as f64) <= TOLERANCE, "churn {d}: {got} vs {wire}");
    }
    // Flat: after the first round (maps and tables at working size), RSS grows by under 2 MiB.
    let (first, last) = (rss[0].1, rss[rss.len() - 1].1);
    println!("churn: {connections} connections ({per_minute:.0}/min); RSS {first} KiB -> {last} KiB; pending map peak {}", rss.iter().map(|r| r.2 as u64).max().unwrap_or(0));
    assert!(per_minute >= 100_000.0, "only {per_minute:.0} connections a minute");
    assert!(last <= first + 2048, "agent RSS grew from {first} KiB to {last} KiB");
    assert_eq!(m1.value("azflow_nat_pending_connections", &[]), 0.0);
    assert_eq!(m1.value("azflow_nat_unresolved_bytes_total", &[]), 0.0);
    let (status, _) = agent.stop();
    assert!(status.success());
}
