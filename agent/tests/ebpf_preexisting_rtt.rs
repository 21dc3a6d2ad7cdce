//! Latency of connections that were open before the agent started (long-lived gRPC, database and
//! cache connections): the byte path reads the kernel's smoothed RTT of such sockets, since no
//! sock_ops callbacks were ever switched on for them. Checked against the delay line and against
//! the kernel srtt the client reads on the same sockets (`tcp_info.tcpi_rtt`). The same smoothed
//! RTTs go to the sockets' workload (here `host`): its RTT count per zone is the host's per-ack
//! plus smoothed count, exactly.

mod common;

use std::time::Duration;

use azflow_tests::{Family, TestBed, Zone, process::Proc, protocol::Report};
use common::{
    Agent, Uninstall, ensure_bpffs, rel_err,
    latency::{measure_until_valid, on_time, quantile_us, quantile_us_where},
    write_topology, zone_labels,
};

const BASE_PROBE_US: f64 = 100.0;

#[test]
fn ebpf_connections_opened_before_the_agent_get_rtt() {
    measure_until_valid(attempt_ebpf_connections_opened_before_the_agent_get_rtt);
}

/// One measurement; `None` when the delay line did not inject what the test expects.
fn attempt_ebpf_connections_opened_before_the_agent_get_rtt() -> Option<()> {
    let Some(bed) = TestBed::new_or_skip() else { return Some(()) };
    let dir = std::env::temp_dir().join(format!("azflow-prertt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let delay = bed
        .delay_line(&[
            (Zone::A, Zone::B, Duration::from_micros(750)),
            (Zone::A, Zone::C, Duration::from_micros(250)),
            (Zone::A, Zone::X, Duration::from_micros(BASE_PROBE_US as u64)),
        ])
        .expect("delay line");
    // Connections to two AZs, opened now; their 2,000 round trips start once the agent runs.
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for dst in ["b1", "c1"] {
        let server = bed.host(dst).start_tcp_server(Family::V4, 1).expect("server");
        let mut cmd = bed.host("a1").traffic_command();
        cmd.args(["rr", "--to", &server.addr().to_string(), "--count", "2000", "--size", "100", "--start-after-ms", "5000"]);
        let mut proc = Proc::spawn(cmd, None).expect("client");
        let line = proc.next_line(Duration::from_secs(15)).expect("connected");
        assert!(line.contains("tcp-connected"), "{line}");
        clients.push((dst, proc));
        servers.push(server);
    }
    std::thread::sleep(Duration::from_secs(3));
    let agent = Agent::start(bed.cgroup_path(), &["--topology", topo.to_str().expect("utf-8"), "--prometheus-buckets", "all"]);
    let mut srtt = std::collections::BTreeMap::new();
    for (dst, proc) in clients {
        let done = proc.wait_ok(Duration::from_secs(60)).expect("client finished");
        let last = done.stdout.lines().rev().find(|l| !l.trim().is_empty()).expect("report");
        let Ok(Report::Rr(r)) = serde_json::from_str(last) else { panic!("not an rr report: {last}") };
        srtt.insert(dst, r.kernel_srtt_us.p50);
    }
    for s in servers {
        s.finish().expect("server");
    }
    // The bed's base (forwarding, delay-line mechanism) from a new connection's per-ack samples.
    bed.run_rr("a1", "x1", 2_000, 100, Family::V4).expect("base probe");
    let m = agent.settled();
    let stats = delay.stop().expect("delay line stats");
    if !on_time(&stats) {
        return None;
    }
    let base = quantile_us(&m, "azflow_tcp_rtt_seconds", "unknown", 0.5).expect("base samples") - 2.0 * BASE_PROBE_US;
    for (dst, added) in [("b1", 1500.0), ("c1", 500.0)] {
        let id = zone_labels(bed.host(dst).zone()).1;
        let smoothed = m.value("azflow_tcp_srtt_samples_total", &[("dst_zone_id", id)]);
        let per_ack = m.value("azflow_tcp_rtt_samples_total", &[("dst_zone_id", id)]);
        let p50 = quantile_us(&m, "azflow_tcp_srtt_seconds", id, 0.5).unwrap_or_else(|| panic!("no smoothed RTT towards {dst}:\n{}", agent.log()));
        let expect = added + base;
        let ss = srtt[dst];
        println!("a1->{dst} (opened before the agent): srtt p50 {p50:.0} µs over {smoothed} samples (expected {expect:.0} = {added} + base {base:.0}; the client's kernel srtt p50 {ss:.0} µs); per-ack samples {per_ack}");
        assert!(smoothed >= 50.0, "{dst}: only {smoothed} smoothed samples");
        assert!(rel_err(p50, expect) <= 0.10, "{dst}: srtt p50 {p50} vs {expect}");
        assert!(ss > 0.0 && rel_err(p50, ss) <= 0.10, "{dst}: srtt p50 {p50} vs the kernel's {ss}");
        // Per workload: the smoothed RTTs too (scale 1: a 41 % bucket, so 25 %; ebpf_workload_rtt).
        let count = |name: &str, want: &[(&str, &str)]| m.value(&format!("{name}_count"), want);
        let workload = count("azflow_workload_tcp_rtt_seconds", &[("dst_zone_id", id)]);
        // + 0.0: an empty sum is -0.0.
        let (host_rtt, host_srtt) = (count("azflow_tcp_rtt_seconds", &[("dst_zone_id", id)]) + 0.0, count("azflow_tcp_srtt_seconds", &[("dst_zone_id", id)]) + 0.0);
        let wl_p50 = quantile_us_where(&m, "azflow_workload_tcp_rtt_seconds", &[("workload", "host"), ("dst_zone_id", id)], 0.5).unwrap_or(0.0);
        println!("a1->{dst}: workload host RTT p50 {wl_p50:.0} µs over {workload} samples = {host_rtt} per-ack + {host_srtt} smoothed");
        assert_eq!(workload, host_rtt + host_srtt, "{dst}: the workload RTT count is the host's per-ack plus smoothed count");
        assert!(rel_err(wl_p50, expect) <= 0.25, "{dst}: workload RTT p50 {wl_p50} vs {expect}");
    }
    let (status, _) = agent.stop();
    assert!(status.success());
    Some(())
}

/// A pinned restart (`--pin`) under the same traffic: the kernel keeps sampling the connection
/// that predates both agents while one replaces the other, so the samples taken between the old
/// agent's last scrape and the new agent's first cover the whole gap.
#[test]
fn ebpf_pinned_restart_keeps_sampling_connections_older_than_the_agent() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    ensure_bpffs();
    let dir = std::env::temp_dir().join(format!("azflow-prertt-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let pin_path = format!("/sys/fs/bpf/azft-prertt-{}", std::process::id());
    let _guard = Uninstall(pin_path.clone());
    let delay = bed.delay_line(&[(Zone::A, Zone::B, Duration::from_micros(750))]).expect("delay line");
    let server = bed.host("b1").start_tcp_server(Family::V4, 1).expect("server");
    let mut cmd = bed.host("a1").traffic_command();
    cmd.args(["rr", "--to", &server.addr().to_string(), "--count", "6000", "--size", "100", "--start-after-ms", "3000"]);
    let mut client = Proc::spawn(cmd, None).expect("client");
    assert!(client.next_line(Duration::from_secs(15)).expect("connected").contains("tcp-connected"));
    let args = ["--topology", topo.to_str().expect("utf-8"), "--pin", "--pin-path", &pin_path];
    let first = Agent::start(bed.cgroup_path(), &args);
    let id = zone_labels(Zone::B).1;
    // Let the exchanges run a while under the first agent.
    std::thread::sleep(Duration::from_secs(4));
    let before = first.scrape().value("azflow_tcp_srtt_samples_total", &[("dst_zone_id", id)]);
    let t0 = std::time::Instant::now();
    let (status, _) = first.stop();
    assert!(status.success());
    let second = Agent::start(bed.cgroup_path(), &args);
    let after = second.scrape().value("azflow_tcp_srtt_samples_total", &[("dst_zone_id", id)]);
    let gap = t0.elapsed();
    client.wait_ok(Duration::from_secs(60)).expect("client finished");
    server.finish().expect("server");
    let m = second.settled();
    drop(delay);
    // One sample per 10 ms interval at most, and one packet every ~1.6 ms: a sample every ≤ 12 ms.
    let expected = gap.as_secs_f64() / 0.012;
    let total = m.value("azflow_tcp_srtt_samples_total", &[("dst_zone_id", id)]);
    println!("restart took {gap:?}: {} smoothed samples across it (≥ {:.0} expected without a gap); {before} before, {total} in all", after - before, expected * 0.5);
    assert!(before > 100.0, "the first agent took only {before} samples");
    assert!(after - before >= expected * 0.5, "sampling stopped during the restart: {} samples in {gap:?}", after - before);
    let p50 = quantile_us(&m, "azflow_tcp_srtt_seconds", id, 0.5).expect("samples");
    println!("srtt p50 across the restart: {p50:.0} µs");
    let (status, _) = second.stop();
    assert!(status.success());
}
