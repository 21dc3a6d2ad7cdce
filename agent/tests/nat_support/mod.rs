//! Shared by the Service/NAT suites: kube-proxy-shaped rules, backends behind a VIP, waiting for
//! the agent to settle.

#![allow(dead_code, reason = "each suite uses a different part")]

use azflow_tests::{Family, Host, TestBed, TrafficServer, netns};

use crate::common::{Agent, Metrics};

pub const VIP_PORT: u16 = 80;

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Iptables,
    Nftables,
}

pub fn vip(family: Family) -> String {
    match family {
        Family::V4 => "172.20.0.10".into(),
        Family::V6 => "fd20::10".into(),
    }
}

pub fn vip_addr(family: Family) -> String {
    match family {
        Family::V4 => format!("{}:{VIP_PORT}", vip(family)),
        Family::V6 => format!("[{}]:{VIP_PORT}", vip(family)),
    }
}

/// kube-proxy iptables mode: PREROUTING/OUTPUT → KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* with
/// `statistic --mode random`, as `iptables-save` shows it on a node.
pub fn iptables_rules(family: Family, backends: &[(String, u16)]) -> String {
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
pub fn nft_rules(family: Family, backends: &[(String, u16)]) -> String {
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

pub fn install(node: &Host, shape: Shape, family: Family, backends: &[(String, u16)]) {
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

/// One short connection through the VIP before the agent starts, as a node's own Service
/// traffic (kubelet, CoreDNS) always gives it: the agent finds conntrack tracking connections in
/// its first dump and makes Service destinations wait from the start.
pub fn warm_up(client: &Host, family: Family) {
    let vip = vip_addr(family);
    client.run_traffic(["ask", "--to", &vip, "--connections", "1", "--bytes", "100", "--reply", "10"]).expect("warm-up connection to the VIP");
    // Sockets to the VIP that are still open now (the warm-up closing, or connections an earlier
    // round's conntrack flush left hanging) would be first seen by the next agent before NAT is
    // armed, and rightly keep counting directly under the VIP: their last packets must not fall
    // into a measurement. Destroy them (ss -K) and wait until only TIME-WAIT (no socket) is left.
    let mut left = String::new();
    for _ in 0..100 {
        let _ = netns::exec_command(client.netns(), "ss").args(["-HtnK", "dst", &vip]).output();
        let out = netns::exec_command(client.netns(), "ss").args(["-Htn", "dst", &vip]).output().expect("ss");
        left = String::from_utf8_lossy(&out.stdout).into_owned();
        if left.lines().all(|l| l.trim().is_empty() || l.starts_with("TIME-WAIT")) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("sockets to {vip} still open after the warm-up:\n{left}");
}

pub fn wait_armed(agent: &Agent) {
    for _ in 0..50 {
        if agent.scrape().value("azflow_nat_armed", &[]) == 1.0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the agent never saw conntrack tracking connections:\n{}", agent.log());
}

/// Waits until nothing is held for a NAT mapping and two more drains have published.
pub fn settled(agent: &Agent) -> Metrics {
    for _ in 0..100 {
        let m = agent.settled();
        if m.value("azflow_nat_pending_connections", &[]) == 0.0 {
            return agent.settled();
        }
    }
    panic!("NAT-pending bytes never settled:\n{}", agent.log());
}

pub struct Backends {
    pub servers: Vec<TrafficServer>,
    pub hosts: Vec<String>,
}

pub fn start_backends(bed: &TestBed, family: Family, names: &[&str]) -> Backends {
    let servers = names.iter().map(|n| bed.host(n).start_tcp_server(family, 0).expect("backend server")).collect();
    Backends { servers, hosts: names.iter().map(|n| (*n).to_string()).collect() }
}

impl Backends {
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        self.servers.iter().map(|s| (s.addr().ip().to_string(), s.addr().port())).collect()
    }
}

pub fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("azflow-nat-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
