//! Pinned restarts after the topology changed (issue: a new process used to build a fresh slot
//! allocator, so bytes since the old process's last drain were dropped and a reused slot could
//! credit its history to a new subnet). Here subnets are removed and added, by the static file
//! across restarts and by an AWS refresh (moto) while the old agent runs, one restart is a
//! SIGKILL, and traffic never stops. At the end, per subnet, the agent's totals since the very
//! first agent equal each destination's wire counters within 0.01 %, and the subnet that took over
//! a removed subnet's slot shows only its own bytes.

mod common;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use azflow_tests::{Family, TestBed, Zone, addressing};
use common::{
    Agent, Metrics, Uninstall,
    aws::{Imds, Instance, Moto, aws_env},
    ensure_bpffs, rel_err, zone_labels,
};

const TOLERANCE: f64 = 0.0001;

/// A static topology with these subnets (zone labels as the bed's; `X` labelled as zone c).
fn topology(bed: &TestBed, subnets: &[(Zone, Family)]) -> String {
    let (zone, id) = zone_labels(bed.monitored().zone());
    let mut s = format!(
        "[host]\nregion = \"us-test-1\"\nzone = \"{zone}\"\nzone_id = \"{id}\"\nvpc_cidrs = [\"{}\", \"{}\"]\n\n",
        addressing::vpc_v4(),
        addressing::vpc_v6()
    );
    for (z, family) in subnets {
        let (zone, id) = zone_labels(if *z == Zone::X { Zone::C } else { *z });
        s.push_str(&format!("[[subnet]]\ncidr = \"{}\"\nzone = \"{zone}\"\nzone_id = \"{id}\"\n\n", z.subnet(*family)));
    }
    s
}

/// Traffic from a1 that never stops while the agents come and go: request/response and bulk to
/// b1, bulk to a2 and c1, and bulk to x1 once `to_x` is set.
struct Traffic<'a> {
    bed: &'a TestBed,
    stop: AtomicBool,
    to_x: AtomicBool,
}

impl Traffic<'_> {
    fn run(&self) -> u32 {
        let mut rounds = 0;
        while !self.stop.load(Ordering::Relaxed) {
            self.bed.run_rr("a1", "b1", 1_000, 300, Family::V4).expect("request/response");
            self.bed.run_bulk("a1", "b1", 3_000_000, Family::V6).expect("bulk b1");
            self.bed.run_bulk("a1", "a2", 2_000_000, Family::V4).expect("bulk a2");
            self.bed.run_bulk("a1", "c1", 2_000_000, Family::V4).expect("bulk c1");
            if self.to_x.load(Ordering::Relaxed) {
                self.bed.run_bulk("a1", "x1", 2_000_000, Family::V4).expect("bulk x1");
            }
            rounds += 1;
        }
        rounds
    }

    /// Back-to-back bulk to `to` (the host whose subnet goes away) on its own: a transfer is
    /// always in flight when the table changes, so bytes land in the old slot after the drain
    /// that preceded the change.
    fn steady(&self, to: &str) -> u32 {
        let mut transfers = 0;
        while !self.stop.load(Ordering::Relaxed) {
            self.bed.run_bulk("a1", to, 8_000_000, Family::V4).expect("steady bulk");
            transfers += 1;
        }
        transfers
    }
}

fn subnet_tx(m: &Metrics, z: Zone, family: Family) -> f64 {
    m.value("azflow_tcp_dst_subnet_bytes_total", &[("direction", "transmit"), ("dst_subnet", &z.subnet(family).to_string())])
}

/// Wire counters of the destinations at the start.
struct Wire {
    start: Vec<(&'static str, azflow_tests::IfCounters)>,
    a1: azflow_tests::IfCounters,
}

impl Wire {
    fn read(bed: &TestBed, hosts: &[&'static str]) -> Self {
        let start = hosts.iter().map(|h| (*h, bed.host(h).link_counters().expect("counters"))).collect();
        Wire { start, a1: bed.host("a1").link_counters().expect("counters") }
    }

    /// L3 bytes `host` received since the start: what a1 transmitted to it.
    fn to(&self, bed: &TestBed, host: &str) -> f64 {
        let (_, c0) = self.start.iter().find(|(h, _)| *h == host).expect("host measured");
        (bed.host(host).link_counters().expect("counters") - *c0).l3_rx_bytes() as f64
    }

    fn received(&self, bed: &TestBed) -> f64 {
        (bed.host("a1").link_counters().expect("counters") - self.a1).l3_rx_bytes() as f64
    }
}

fn check(what: &str, got: f64, wire: f64) {
    println!("{what}: agent {got} B vs wire {wire} B ({:.4}%)", rel_err(got, wire) * 100.0);
    assert!(rel_err(got, wire) <= TOLERANCE, "{what}: agent {got} vs wire {wire}");
}

/// Per subnet, against the wire since `wire` was read: b (kept throughout), `kept` (v4 bulk),
/// `removed` midway (its subnet series holds what came before, the class `unknown` what came
/// after), x (added midway, into a reused slot: only its own bytes, counted from `x_wire`).
fn assert_per_subnet(bed: &TestBed, m: &Metrics, wire: &Wire, x_wire: &Wire, kept: (Zone, &str), removed: (Zone, &str)) {
    check("b1 (subnet kept)", subnet_tx(m, Zone::B, Family::V4) + subnet_tx(m, Zone::B, Family::V6), wire.to(bed, "b1"));
    check(&format!("{} (subnet kept)", kept.1), subnet_tx(m, kept.0, Family::V4), wire.to(bed, kept.1));
    let unknown = m.value("azflow_tcp_bytes_total", &[("direction", "transmit"), ("traffic_class", "unknown")]);
    let before = subnet_tx(m, removed.0, Family::V4);
    println!("{}: {before} B under its subnet before it was removed, {unknown} B under unknown after", removed.1);
    assert!(before > 0.0 && unknown > 0.0, "{}'s bytes span the removal", removed.1);
    check(&format!("{} (subnet removed)", removed.1), before + unknown, wire.to(bed, removed.1));
    check("x1 (subnet added into a reused slot)", subnet_tx(m, Zone::X, Family::V4), x_wire.to(bed, "x1"));
    let rx = m.value("azflow_tcp_bytes_total", &[("direction", "receive")]);
    check("everything received", rx, wire.received(bed));
}

fn assert_continued(agent: &Agent) {
    assert!(agent.log().contains("continuing the previous agent's totals from its ledger"), "the ledger was not used:\n{}", agent.log());
}

#[test]
fn ebpf_pinned_restarts_across_static_file_changes_keep_every_subnet_exact() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    ensure_bpffs();
    let dir = std::env::temp_dir().join(format!("azflow-pintopo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pin_path = format!("/sys/fs/bpf/azft-pintopo-{}", std::process::id());
    let _guard = Uninstall(pin_path.clone());
    let file = |name: &str, subnets: &[(Zone, Family)]| {
        let p = dir.join(name);
        std::fs::write(&p, topology(&bed, subnets)).expect("topology");
        p
    };
    use Family::{V4, V6};
    let all = file("1.toml", &[(Zone::A, V4), (Zone::A, V6), (Zone::B, V4), (Zone::B, V6), (Zone::C, V4), (Zone::C, V6)]);
    let without_a = file("2.toml", &[(Zone::B, V4), (Zone::B, V6), (Zone::C, V4), (Zone::C, V6)]);
    let with_x = file("3.toml", &[(Zone::B, V4), (Zone::B, V6), (Zone::C, V4), (Zone::C, V6), (Zone::X, V4)]);
    let args = |topo: &Path| -> Vec<String> {
        ["--topology", topo.to_str().expect("utf-8"), "--pin", "--pin-path", &pin_path, "--dst-subnet-series", "100"].map(String::from).to_vec()
    };
    let start = |topo: &Path| {
        let a = args(topo);
        Agent::start(bed.cgroup_path(), &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let wire = Wire::read(&bed, &["a2", "b1", "c1", "x1"]);
    let first = start(&all);
    let traffic = Traffic { bed: &bed, stop: AtomicBool::new(false), to_x: AtomicBool::new(false) };
    let (last, x_wire) = std::thread::scope(|s| {
        let t = s.spawn(|| traffic.run());
        let steady = s.spawn(|| traffic.steady("a2"));
        std::thread::sleep(Duration::from_millis(1500));
        // A crash: no final drain. Subnet a is gone when the next agent starts.
        first.kill();
        let second = start(&without_a);
        assert_continued(&second);
        std::thread::sleep(Duration::from_millis(1500));
        let (status, _) = second.stop();
        assert!(status.success());
        // Subnet x arrives and takes the slot a gave up (reused one table later, as a long-lived
        // agent would): it must not inherit a's bytes.
        let x_wire = Wire::read(&bed, &["x1"]);
        let third = start(&with_x);
        assert_continued(&third);
        traffic.to_x.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1500));
        traffic.stop.store(true, Ordering::Relaxed);
        println!("{} rounds of traffic spanned both restarts", t.join().expect("traffic"));
        println!("{} steady transfers to a2", steady.join().expect("steady traffic"));
        (third, x_wire)
    });
    let m = last.settled();
    assert_per_subnet(&bed, &m, &wire, &x_wire, (Zone::C, "c1"), (Zone::A, "a2"));
    let (status, _) = last.stop();
    assert!(status.success());
}

/// moto as EC2 (and, behind a local IMDSv2, the instance's placement): the bed's VPC with a
/// subnet per zone. Returns the VPC id and (zone, subnet id).
fn moto_bed(moto: &Moto) -> (String, Vec<(Zone, String)>) {
    let zones = [(Zone::A, "us-east-1a"), (Zone::B, "us-east-1b"), (Zone::C, "us-east-1c")];
    let nets: Vec<(String, String)> = zones.iter().map(|(z, _)| (z.subnet_v4().to_string(), z.subnet_v6().to_string())).collect();
    let specs: Vec<(&str, &str, Option<&str>)> =
        zones.iter().zip(&nets).map(|((_, az), (v4, v6))| (*az, v4.as_str(), Some(v6.as_str()))).collect();
    let (vpc, rows) = moto.create_vpc(&addressing::vpc_v4().to_string(), &specs);
    (vpc, zones.iter().zip(rows).map(|((z, _), r)| (*z, r[0].clone())).collect())
}

#[test]
fn ebpf_pinned_restart_after_aws_refreshes_keeps_every_subnet_exact() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    ensure_bpffs();
    let moto = Moto::start();
    let (vpc, subnets) = moto_bed(&moto);
    let instance = Instance {
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        zone_id: "unused: moto serves placement".into(),
        instance_id: "i-0a1".into(),
        account_id: "123456789012".into(),
        mac: "0e:a1:00:00:00:01".into(),
        vpc_id: vpc.clone(),
        subnet_id: subnets[0].1.clone(),
        subnet_v4: Zone::A.subnet_v4().to_string(),
        subnet_v6: Some(Zone::A.subnet_v6().to_string()),
        vpc_v4: vec![addressing::vpc_v4().to_string()],
        vpc_v6: vec![addressing::vpc_v6().to_string()],
    };
    let imds = Imds::start(instance.values(false), Some(moto.addr));
    let pin_path = format!("/sys/fs/bpf/azft-pinaws-{}", std::process::id());
    let _guard = Uninstall(pin_path.clone());
    let (imds_url, moto_url) = (imds.url(), moto.url());
    let start = || {
        Agent::start_with(
            bed.cgroup_path(),
            &["--pin", "--pin-path", &pin_path, "--dst-subnet-series", "100", "--refresh-interval", "1s"],
            |cmd| {
                aws_env(cmd, &imds_url, Some(&moto_url));
                cmd.env("AZFLOW_AWS", "auto");
            },
        )
    };
    let generation = |a: &Agent| a.scrape().value("azflow_topology_generation", &[]);
    let wait_new_table = |a: &Agent, after: f64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while generation(a) <= after {
            assert!(Instant::now() < deadline, "no refreshed table:\n{}", a.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let wire = Wire::read(&bed, &["a2", "b1", "c1", "x1"]);
    let first = start();
    assert!(first.log().contains("AWS topology loaded"), "{}", first.log());
    let traffic = Traffic { bed: &bed, stop: AtomicBool::new(false), to_x: AtomicBool::new(false) };
    let (last, x_wire) = std::thread::scope(|s| {
        let t = s.spawn(|| traffic.run());
        let steady = s.spawn(|| traffic.steady("c1"));
        std::thread::sleep(Duration::from_millis(1500));
        // Subnet c goes away while the first agent runs (not a: the host's own subnet is known
        // from IMDS too); one refresh later subnet x arrives and is handed c's freed slot.
        let g = generation(&first);
        moto.boto3(&format!("ec2.delete_subnet(SubnetId='{}')", subnets[2].1));
        wait_new_table(&first, g);
        std::thread::sleep(Duration::from_millis(1200));
        let g = generation(&first);
        moto.boto3(&format!(
            "ec2.create_subnet(VpcId='{vpc}', CidrBlock='{}', AvailabilityZone='us-east-1c')",
            Zone::X.subnet_v4()
        ));
        wait_new_table(&first, g);
        let x_wire = Wire::read(&bed, &["x1"]);
        traffic.to_x.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1500));
        // A crash: the second agent builds its table from the same (changed) VPC.
        first.kill();
        let second = start();
        assert_continued(&second);
        std::thread::sleep(Duration::from_millis(1500));
        traffic.stop.store(true, Ordering::Relaxed);
        println!("{} rounds of traffic spanned the refreshes and the restart", t.join().expect("traffic"));
        println!("{} steady transfers to c1", steady.join().expect("steady traffic"));
        (second, x_wire)
    });
    let m = last.settled();
    assert_per_subnet(&bed, &m, &wire, &x_wire, (Zone::A, "a2"), (Zone::C, "c1"));
    let (status, _) = last.stop();
    assert!(status.success());
}
