//! NAT-gateway billing in the test bed: host b1 (zone B) masquerades towards an "internet"
//! namespace this test creates, and the monitored host a1 (zone A) reaches it through b1. The
//! agent is told so by a static route (0.0.0.0/0 → a NAT gateway in zone B's AZ ID). Truth is
//! what the NAT namespace's internet-facing interface counted (segmentation offload off there, L2
//! header subtracted); the cost must be exactly bytes × the built-in prices.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use azflow_tests::{TestBed, Zone, netns};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};

const TOLERANCE: f64 = 0.005;
const NAT_WAN: &str = "198.18.0.1";
const INTERNET: &str = "198.18.0.2";
const PATH: &str = "nat_gateway_cross_az";

/// The "internet" namespace; removed (with its processes) when dropped.
struct Internet(String);

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = netns::kill_all(&self.0);
        let _ = netns::delete(&self.0);
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn series(m: &Metrics, name: &str, dir: &str) -> f64 {
    m.value(name, &[("direction", dir), ("path", PATH)])
}

#[test]
fn ebpf_nat_gateway_cross_az_bytes_match_the_nat_and_cost_is_bytes_times_price() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let nat = bed.host("b1");
    assert_eq!(nat.zone(), Zone::B);
    let internet = Internet(format!("{}-inet", bed.id()));
    netns::add(&internet.0).expect("internet namespace");
    netns::ip_batch(
        nat.netns(),
        &format!("link add wan0 type veth peer name eth0 netns {}\naddr add {NAT_WAN}/30 dev wan0\nlink set wan0 up\n", internet.0),
    )
    .expect("NAT uplink");
    netns::ip_batch(
        &internet.0,
        &format!("link set lo up\nlink set eth0 up\naddr add {INTERNET}/30 dev eth0\nroute add default via {NAT_WAN}\n"),
    )
    .expect("internet side");
    netns::write_sysctls(nat.netns(), &[("net/ipv4/ip_forward", "1")]).expect("forwarding");
    let mut masq = netns::exec_command(nat.netns(), "iptables");
    masq.args([
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "wan0",
        "-j",
        "MASQUERADE",
    ]);
    run(masq, "MASQUERADE in the NAT namespace");
    // Wire truth on both ends of the uplink: the kernel segments in software, nobody merges.
    for (ns, iface) in [
        (nat.netns().to_owned(), "wan0"),
        (internet.0.clone(), "eth0"),
    ] {
        let mut cmd = netns::exec_command(&ns, "ethtool");
        cmd.args(["-K", iface, "tso", "off", "gso", "off", "gro", "off"]);
        run(cmd, "ethtool");
    }
    let mut route = Command::new("ip");
    route.args([
        "-n",
        bed.router_netns(),
        "route",
        "add",
        "198.18.0.0/30",
        "via",
        &nat.ipv4().to_string(),
    ]);
    run(route, "router route to the internet");

    let dir = std::env::temp_dir().join(format!("azflow-nat-{}", bed.id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let (_, nat_zone_id) = zone_labels(Zone::B);
    let mut text = std::fs::read_to_string(&topo).expect("topology");
    text.push_str(&format!(
        "\n[[route]]\ndestination = \"0.0.0.0/0\"\ntarget = \"nat-0bed\"\n\n[[nat_gateway]]\nid = \"nat-0bed\"\nzone_id = \"{nat_zone_id}\"\n"
    ));
    std::fs::write(&topo, text).expect("topology with the NAT route");
    let agent = Agent::start(
        bed.cgroup_path(),
        &["--topology", topo.to_str().expect("utf-8")],
    );

    let mut server = netns::exec_command(&internet.0, "iperf3");
    server
        .args(["-s", "-1", "-B", INTERNET])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = server.spawn().expect("iperf3 server");
    let m0 = agent.settled();
    let wan0 = netns::if_counters(nat.netns(), "wan0").expect("counters");
    let client = bed.monitored();
    let started = Instant::now();
    loop {
        match client.run("iperf3", ["-c", INTERNET, "-n", "40M"]) {
            Ok(_) => break,
            // The server may not listen yet.
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                println!("retrying: {e:#}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("iperf3 through the NAT: {e:#}"),
        }
    }
    let _ = server.wait();
    let m1 = agent.settled();
    let wan = netns::if_counters(nat.netns(), "wan0").expect("counters") - wan0;

    for (dir_label, wire) in [
        ("transmit", wan.l3_tx_bytes()),
        ("receive", wan.l3_rx_bytes()),
    ] {
        let bytes = series(&m1, "azflow_tcp_bytes_total", dir_label)
            - series(&m0, "azflow_tcp_bytes_total", dir_label);
        let err = rel_err(bytes, wire as f64);
        println!(
            "{dir_label}: agent {bytes} B as {PATH}, NAT uplink {wire} B, error {:.4}%",
            err * 100.0
        );
        assert!(
            err <= TOLERANCE,
            "{dir_label}: agent {bytes} vs NAT uplink {wire}\n{}",
            agent.log()
        );
        // The hop is the NAT's AZ.
        assert!(m1.has(
            "azflow_tcp_bytes_total",
            &[("path", PATH), ("hop_zone_id", nat_zone_id)]
        ));
    }
    // Cost: bytes × the built-in us-east-1 prices per 2^30 bytes, each direction, same scrape.
    // nat_gateway 0.045 + internet 0.09 + cross_az 0.01 out; 0.045 + 0.01 in (examples/prices.toml).
    for (dir_label, nano_per_gb) in [("transmit", 145_000_000u128), ("receive", 55_000_000u128)] {
        let bytes = series(&m1, "azflow_tcp_bytes_total", dir_label);
        let cost = series(&m1, "azflow_cost_usd_total", dir_label);
        let want = (bytes as u128 * nano_per_gb) as f64 / ((1u64 << 30) as f64 * 1e9);
        assert!(bytes > 0.0);
        assert_eq!(cost, want, "{dir_label}: cost of {bytes} bytes");
    }
    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
