//! Seeing through Kubernetes Services: a pod (own netns and cgroup, behind a veth, address from
//! the node's subnet as the VPC CNI gives it) dials a Service VIP that the node rewrites with rules
//! shaped exactly as kube-proxy writes them (iptables and nftables modes) to backends in two other
//! AZs. Truth is each backend's interface counters (segmentation offload off on the node's egress
//! and on the backends, GRO off on receivers): receive counters for what the pod sent, transmit
//! counters for what it got back.

mod common;

use azflow_tests::{Family, Host, TestBed, TrafficServer, Zone, netns};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};

/// Billing-grade: 0.5 %.
const TOLERANCE: f64 = 0.005;
const VIP_PORT: u16 = 80;

#[derive(Clone, Copy, Debug)]
enum Shape {
    Iptables,
    Nftables,
}

fn vip(family: Family) -> String {
    match family {
        Family::V4 => "172.20.0.10".into(),
        Family::V6 => "fd20::10".into(),
    }
}

fn vip_addr(family: Family) -> String {
    match family {
        Family::V4 => format!("{}:{VIP_PORT}", vip(family)),
        Family::V6 => format!("[{}]:{VIP_PORT}", vip(family)),
    }
}

/// kube-proxy iptables mode: PREROUTING/OUTPUT → KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with
/// `statistic --mode random`, as `iptables-save` shows it on a node.
fn iptables_rules(family: Family, backends: &[(String, u16)]) -> String {
    let len = if family == Family::V4 { 32 } else { 128 };
    let mut r = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-CARTCARTCARTCART - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    for i in 0..backends.len() {
        r.push_str(&format!(":KUBE-SEP-CART{i:012} - [0:0]\n"));
    }
    r.push_str("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    r.push_str("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    r.push_str("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n");
    r.push_str(&format!("-A KUBE-SERVICES -d {}/{len} -p tcp -m comment --comment \"shop/cart:http cluster IP\" -m tcp --dport {VIP_PORT} -j KUBE-SVC-CARTCARTCARTCART\n", vip(family)));
    let n = backends.len();
    for (i, (ip, port)) in backends.iter().enumerate() {
        let dest = if family == Family::V4 { format!("{ip}:{port}") } else { format!("[{ip}]:{port}") };
        let left = n - i;
        if left > 1 {
            r.push_str(&format!("-A KUBE-SVC-CARTCARTCARTCART -m comment --comment \"shop/cart:http -> {dest}\" -m statistic --mode random --probability {:.11} -j KUBE-SEP-CART{i:012}\n", 1.0 / left as f64));
        } else {
            r.push_str(&format!("-A KUBE-SVC-CARTCARTCARTCART -m comment --comment \"shop/cart:http -> {dest}\" -j KUBE-SEP-CART{i:012}\n"));
        }
        r.push_str(&format!("-A KUBE-SEP-CART{i:012} -s {ip}/{len} -m comment --comment \"shop/cart:http\" -j KUBE-MARK-MASQ\n"));
        r.push_str(&format!("-A KUBE-SEP-CART{i:012} -p tcp -m comment --comment \"shop/cart:http\" -m tcp -j DNAT --to-destination {dest}\n"));
    }
    r.push_str("COMMIT\n");
    r
}

/// kube-proxy nftables mode: a `kube-proxy` table whose services map sends the VIP to a service
/// chain that picks an endpoint chain with `numgen random`.
fn nft_rules(family: Family, backends: &[(String, u16)]) -> String {
    let (fam, addr_type, daddr) = if family == Family::V4 { ("ip", "ipv4_addr", "ip daddr") } else { ("ip6", "ipv6_addr", "ip6 daddr") };
    let mut r = format!("table {fam} kube-proxy {{\n");
    r.push_str("  comment \"rules for kube-proxy\"\n");
    r.push_str(&format!("  map service-ips {{\n    type {addr_type} . inet_proto . inet_service : verdict\n    elements = {{ {} . tcp . {VIP_PORT} : goto service-CARTCART-shop/cart/tcp/http }}\n  }}\n", vip(family)));
    r.push_str("  chain nat-prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }\n");
    r.push_str("  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n");
    r.push_str(&format!("  chain services {{\n    {daddr} . meta l4proto . th dport vmap @service-ips\n  }}\n"));
    let arms: Vec<String> = (0..backends.len()).map(|i| format!("{i} : goto endpoint-CART{i}-shop/cart/tcp/http")).collect();
    r.push_str(&format!("  chain service-CARTCART-shop/cart/tcp/http {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n", backends.len(), arms.join(", ")));
    for (i, (ip, port)) in backends.iter().enumerate() {
        let dest = if family == Family::V4 { format!("{ip}:{port}") } else { format!("[{ip}]:{port}") };
        r.push_str(&format!("  chain endpoint-CART{i}-shop/cart/tcp/http {{\n    meta l4proto tcp dnat to {dest}\n  }}\n"));
    }
    r.push_str("}\n");
    r
}

fn install(node: &Host, shape: Shape, family: Family, backends: &[(String, u16)]) {
    let (program, rules) = match (shape, family) {
        (Shape::Iptables, Family::V4) => ("iptables-restore", iptables_rules(family, backends)),
        (Shape::Iptables, Family::V6) => ("ip6tables-restore", iptables_rules(family, backends)),
        (Shape::Nftables, _) => ("nft", nft_rules(family, backends)),
    };
    let mut cmd = netns::exec_command(node.netns(), program);
    if matches!(shape, Shape::Nftables) {
        // Replace whatever an earlier family left.
        let _ = netns::exec_command(node.netns(), "nft").args(["delete", "table", if family == Family::V4 { "ip" } else { "ip6" }, "kube-proxy"]).output();
        cmd.args(["-f", "-"]);
    }
    azflow_tests::process::run_with_stdin(cmd, &rules, std::time::Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("installing the {shape:?} rules in {}: {e:#}\n{rules}", node.netns()));
}

fn tcp(m: &Metrics, what: &str, dir: &str, zone_id: &str) -> f64 {
    m.value(&format!("azflow_tcp_{what}_total"), &[("direction", dir), ("dst_zone_id", zone_id)])
}

fn classes(m: &Metrics, names: &[&str]) -> f64 {
    names.iter().map(|c| m.value("azflow_tcp_bytes_total", &[("traffic_class", c)])).sum()
}

/// Waits until nothing is held for a NAT mapping and two more drains have published.
fn settled(agent: &Agent) -> Metrics {
    for _ in 0..100 {
        let m = agent.settled();
        if m.value("azflow_nat_pending_connections", &[]) == 0.0 {
            return agent.settled();
        }
    }
    panic!("NAT-pending bytes never settled:\n{}", agent.log());
}

struct Backends {
    servers: Vec<TrafficServer>,
    hosts: Vec<String>,
}

fn start_backends(bed: &TestBed, family: Family, names: &[&str]) -> Backends {
    let servers = names.iter().map(|n| bed.host(n).start_tcp_server(family, 0).expect("backend server")).collect();
    Backends { servers, hosts: names.iter().map(|n| (*n).to_string()).collect() }
}

impl Backends {
    fn endpoints(&self) -> Vec<(String, u16)> {
        self.servers.iter().map(|s| (s.addr().ip().to_string(), s.addr().port())).collect()
    }
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
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--nat-netns", node_ns.to_str().expect("utf-8")]);
    for family in [Family::V4, Family::V6] {
        let backends = start_backends(&bed, family, &["b1", "c1"]);
        install(bed.host("a1"), shape, family, &backends.endpoints());
        let to = vip_addr(family);
        check_against_backends(&bed, &agent, &backends, &format!("{shape:?} {family:?} pod bulk 8x8MB"), || {
            for _ in 0..8 {
                pod.run_traffic(["bulk", "--to", &to, "--bytes", "8M"]).expect("bulk to the VIP");
            }
        });
        check_against_backends(&bed, &agent, &backends, &format!("{shape:?} {family:?} pod 2000 short connections"), || {
            pod.run_traffic(["ask", "--to", &to, "--connections", "2000", "--bytes", "10240", "--reply", "2048"]).expect("short connections to the VIP");
        });
        // A host-network client behind OUTPUT DNAT sees the backend in its packets already.
        check_against_backends(&bed, &agent, &backends, &format!("{shape:?} {family:?} host-network client"), || {
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
/// Then with conntrack unreadable (the agent reads another namespace's), every byte times out
/// into the VIP's class and the unresolved counter, still exact.
#[test]
fn ebpf_service_vip_totals_stay_exact_when_conntrack_is_flushed_or_missing() {
    let Some(mut bed) = TestBed::new_or_skip() else { return };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    bed.segment_in_software("b1").expect("ethtool");
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node_ns = netns::path(bed.host("a1").netns());
    let backends = start_backends(&bed, Family::V4, &["b1"]);
    install(bed.host("a1"), Shape::Iptables, Family::V4, &backends.endpoints());
    let to = vip_addr(Family::V4);
    let (_, b_id) = zone_labels(Zone::B);
    for (label, extra) in [
        ("conntrack flushed", vec!["--nat-netns", node_ns.to_str().expect("utf-8")]),
        ("conntrack unreadable", vec!["--nat-pending-timeout", "1s"]),
    ] {
        let mut args = vec!["--topology", topo.to_str().expect("utf-8")];
        args.extend(extra);
        let agent = Agent::start(bed.cgroup_path(), &args);
        let m0 = settled(&agent);
        let c0 = bed.host("b1").link_counters().expect("counters");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flush = label == "conntrack flushed";
        let flusher = {
            let (stop, ns) = (stop.clone(), bed.host("a1").netns().to_string());
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
            if label == "conntrack unreadable" {
                assert!(rel_err(unresolved, wire as f64) <= TOLERANCE, "{label}: everything is unresolved");
            }
        }
        let (status, _) = agent.stop();
        assert!(status.success());
    }
}

/// `histogram_quantile` over the exported buckets of one destination (microseconds).
fn quantile_us(m: &Metrics, name: &str, zone_id: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = m
        .series
        .iter()
        .filter(|(n, l, _)| n == &format!("{name}_bucket") && l.get("dst_zone_id").map(String::as_str) == Some(zone_id))
        .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in buckets {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0 * 1e6);
            }
            let frac = if c > prev.1 { (rank - prev.1) / (c - prev.1) } else { 0.0 };
            return Some((prev.0 + (le - prev.0) * frac) * 1e6);
        }
        prev = (le, c);
    }
    None
}

/// Latency follows the bytes: RTT and connect samples of a pod's Service connections land in the
/// backends' zones only, at the delay the delay line injects between the pod's zone and each.
#[test]
fn ebpf_service_vip_latency_lands_in_the_backends_zones() {
    const BASE_PROBE_US: f64 = 100.0;
    let Some(mut bed) = TestBed::new_or_skip() else { return };
    let pod = bed.add_pod("a1", "pod").expect("adding a pod");
    let dir = tempdir();
    let topo = write_topology(&bed, &dir);
    let node_ns = netns::path(bed.host("a1").netns());
    let delay = bed
        .delay_line(&[
            (Zone::A, Zone::B, std::time::Duration::from_micros(750)),
            (Zone::A, Zone::C, std::time::Duration::from_micros(250)),
            (Zone::A, Zone::X, std::time::Duration::from_micros(BASE_PROBE_US as u64)),
        ])
        .expect("delay line");
    let backends = start_backends(&bed, Family::V4, &["b1", "c1"]);
    install(bed.host("a1"), Shape::Iptables, Family::V4, &backends.endpoints());
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--rtt-sample-interval", "0", "--nat-netns", node_ns.to_str().expect("utf-8")]);
    let to = vip_addr(Family::V4);
    // The base of the bed (forwarding, delay-line mechanism) from a probe that rides it with 100 µs.
    bed.run_rr("pod", "x1", 2_000, 100, Family::V4).expect("base probe");
    bed.run_connects("pod", "x1", 60, Family::V4).expect("base connects");
    pod.run_traffic(["rr", "--to", &to, "--count", "200", "--size", "100", "--sessions", "30"]).expect("request/response via the VIP");
    pod.run_traffic(["ask", "--to", &to, "--connections", "200", "--bytes", "1000", "--reply", "100"]).expect("connects via the VIP");
    let m = settled(&agent);
    let stats = delay.stop().expect("delay line stats");
    println!("delay line: {stats:?}");
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
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("azflow-nat-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
