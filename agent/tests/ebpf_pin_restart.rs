//! Zero-gap restarts: with `--pin`, a new agent adopts the maps and links of the one before, so
//! totals after a restart under continuous traffic still equal wire truth; `azflow uninstall`
//! then leaves no program or map behind (checked by id with bpftool, independently).

mod common;

use std::{process::Command, time::Duration};

use azflow_tests::{Family, TestBed};
use common::{Agent, Uninstall, ensure_bpffs, rel_err, write_topology, zone_labels};

const TOLERANCE: f64 = 0.005;

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool").arg("-j").args(args).output().expect("bpftool");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn ebpf_pinned_restart_under_traffic_keeps_totals_and_uninstall_removes_everything() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    ensure_bpffs();
    let dir = std::env::temp_dir().join(format!("azflow-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let pin_path = format!("/sys/fs/bpf/azft-pin-{}", std::process::id());
    let _guard = Uninstall(pin_path.clone());
    let args = ["--topology", topo.to_str().expect("utf-8"), "--pin", "--pin-path", &pin_path];
    let (_, zone_b) = zone_labels(bed.host("b1").zone());

    let first = Agent::start(bed.cgroup_path(), &args);
    let b0 = bed.host("b1").link_counters().expect("counters");
    let a0 = bed.host("a1").link_counters().expect("counters");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let second = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                bed.run_rr("a1", "b1", 2_000, 300, Family::V4).expect("request/response");
                bed.run_bulk("a1", "b1", 5_000_000, Family::V6).expect("bulk");
                rounds += 1;
            }
            rounds
        });
        std::thread::sleep(Duration::from_millis(700));
        let (status, took) = first.stop();
        assert!(status.success() && took < Duration::from_secs(5), "first agent: {status} after {took:?}");
        let second = Agent::start(bed.cgroup_path(), &args);
        assert!(second.log().contains("adopted_links=3"), "the second agent did not adopt the links:\n{}", second.log());
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = traffic.join().expect("traffic");
        println!("{rounds} rounds of traffic spanned the restart");
        second
    });
    let m = second.settled();
    let sent = (bed.host("b1").link_counters().expect("counters") - b0).l3_rx_bytes() as f64;
    let recv = (bed.host("a1").link_counters().expect("counters") - a0).l3_rx_bytes() as f64;
    let tx = m.value("azflow_tcp_bytes_total", &[("direction", "transmit"), ("dst_zone_id", zone_b)]);
    let rx = m.value("azflow_tcp_bytes_total", &[("direction", "receive"), ("dst_zone_id", zone_b)]);
    println!("after the restart: transmit {tx} B vs wire {sent} B ({:.4}%), receive {rx} B vs wire {recv} B ({:.4}%)", rel_err(tx, sent) * 100.0, rel_err(rx, recv) * 100.0);
    assert!(rel_err(tx, sent) <= TOLERANCE, "transmit {tx} vs wire {sent}");
    assert!(rel_err(rx, recv) <= TOLERANCE, "receive {rx} vs wire {recv}");

    // The ids of what is ours, from the cgroup (not from the agent).
    let progs: Vec<u64> = bpftool_json(&["cgroup", "show", bed.cgroup_path().to_str().expect("utf-8")])
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(progs.len(), 3, "egress, ingress and sock_ops attached: {progs:?}");
    let maps: Vec<u64> = progs
        .iter()
        .flat_map(|id| {
            bpftool_json(&["prog", "show", "id", &id.to_string()])["map_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    let mut maps = maps;
    maps.sort_unstable();
    maps.dedup();
    assert!(maps.len() >= 5, "maps of our programs: {maps:?}");
    let (status, _) = second.stop();
    assert!(status.success());

    let out = Command::new(env!("CARGO_BIN_EXE_azflow")).args(["uninstall", "--pin-path", &pin_path]).output().expect("uninstall");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Freed objects go asynchronously (RCU); give them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exists = |kind: &str, id: u64| bpftool_json(&[kind, "show", "id", &id.to_string()])["id"].as_u64() == Some(id);
        let left_progs: Vec<u64> = progs.iter().copied().filter(|id| exists("prog", *id)).collect();
        let left_maps: Vec<u64> = maps.iter().copied().filter(|id| exists("map", *id)).collect();
        if left_progs.is_empty() && left_maps.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left after uninstall: programs {left_progs:?}, maps {left_maps:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!std::path::Path::new(&pin_path).exists(), "{pin_path} still exists");
}
