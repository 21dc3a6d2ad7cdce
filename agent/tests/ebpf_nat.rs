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
        for (d, wire) in [("transmit", c.l3_rx_bytes()), ("receive", c.l3_tx_bytes())] {
            let all = m1.value("azflow_tcp_bytes_total", &[("direction", d)]) - m0.value("azflow_tcp_bytes_total", &[("direction", d)]);
            let to_b = tcp(&m1, "bytes", d, b_id) - tcp(&m0, "bytes", d, b_id);
            let vip_class = m1.value("azflow_tcp_bytes_total", &[("direction", d), ("traffic_class", "cross_vpc")])
                - m0.value("azflow_tcp_bytes_total", &[("direction", d), ("traffic_class", "cross_vpc")]);
            let unresolved = m1.value("azflow_nat_unresolved_bytes_total", &[("direction", d)]) - m0.value("azflow_nat_unresolved_bytes_total", &[("direction", d)]);
            let e = rel_err(all, wire as f64);
            println!("{label} ({flushes} flushes) {d:<8}: all classes {all} B vs wire {wire} B ({:.4}%); backend AZ {to_b} B; VIP class {vip_class} B; unresolved {unresolved} B", e * 100.0);
            assert!(e <= TOLERANCE, "{label} {d}: {all} vs {wire}\n{}", agent.log());
            // What was not resolved is exactly what stayed under the VIP.
            assert_eq!(vip_class, unresolved, "{label} {d}: the unresolved counter must name every byte left under the VIP");
            if label == "conntrack events off" {
                assert!(rel_err(unresolved, wire as f64) <= TOLERANCE, "{label}: everything is unresolved");
            }
        }
        let (status, _) = agent.stop();
        assert!(status.success());
    }
}

