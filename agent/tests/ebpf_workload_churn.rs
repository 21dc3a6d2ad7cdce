//! Churn: 10,000 short-lived cgroups below the bed's cgroup, each making one TCP connection to a
//! host in another AZ, against an agent capped at 50 workload indices.
//!
//! One bash process in the monitored host's network namespace moves itself into a fresh cgroup
//! (`churn.slice/job-N.service`), opens one connection with bash's own `/dev/tcp` (so the socket
//! is created in that cgroup, with no fork), sends a line, closes it, moves back and removes the
//! cgroup — thousands of distinct systemd-style workloads, most gone before any walk sees them.
//!
//! Checked against independent truth: the host total for the destination zone equals the wire
//! bytes the receiver's interface counted (within 0.5 %); the sum over workloads (named ones plus
//! `other`) equals the host total exactly; at most the cap of workloads get series, and `other`
//! carries the rest with the reasons counted. Agent RSS and the memory of its BPF maps (bpftool's
//! `bytes_memlock`) are reported after 1,000 and after 10,000 cgroups and must stay flat.
//!
//! Root only; without root it prints SKIPPED, and with `AZFLOW_REQUIRE_EBPF=1` fails.

mod common;

use std::{process::Command, time::Duration};

use azflow_tests::{TestBed, netns, process::Proc};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};

const TOLERANCE: f64 = 0.005;
const CGROUPS: u32 = 10_000;
const WARM: u32 = 1_000;
const CAP: u32 = 50;
/// RSS growth allowed between 1,000 and 10,000 cgroups.
const RSS_SLACK_KIB: u64 = 8 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Sum of `bytes_memlock` of the BPF maps the agent process holds (their ids from its fds).
fn bpf_map_bytes(pid: u32) -> u64 {
    let ids: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse().ok()))
        .collect();
    assert!(!ids.is_empty(), "the agent holds BPF maps");
    let out = Command::new("bpftool").args(["-j", "map", "show"]).output().expect("bpftool");
    assert!(out.status.success(), "bpftool map show: {}", String::from_utf8_lossy(&out.stderr));
    let maps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    maps.as_array()
        .expect("a list of maps")
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .sum()
}

/// A sink in `host` that accepts `n` connections and reads each to EOF.
fn start_sink(bed: &TestBed, host: &str, port: u16, n: u32) -> Proc {
    let script = "import socket,sys\n\
        s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1024); print('listening', flush=True)\n\
        total=0\n\
        for _ in range(int(sys.argv[3])):\n\
        \x20   c,_=s.accept()\n\
        \x20   while True:\n\
        \x20       d=c.recv(65536)\n\
        \x20       if not d: break\n\
        \x20       total+=len(d)\n\
        \x20   c.close()\n\
        print(total, flush=True)\n";
    let mut cmd = netns::exec_command(bed.host(host).netns(), "/usr/bin/python3");
    cmd.args(["-c", script, &bed.host(host).ipv4().to_string(), &port.to_string(), &n.to_string()]);
    let mut p = Proc::spawn(cmd, None).expect("sink");
    assert_eq!(p.next_line(Duration::from_secs(10)).expect("sink start"), "listening");
    p
}

/// `from..to` jobs, each in its own fresh cgroup below `parent`, one connection each.
fn churn(bed: &TestBed, parent: &std::path::Path, dst: std::net::Ipv4Addr, port: u16, from: u32, to: u32) {
    let script = format!(
        "set -e\n\
         for i in $(seq {from} {to}); do\n\
           d={p}/job-$i.service\n\
           mkdir $d\n\
           echo $$ > $d/cgroup.procs\n\
           exec 3<>/dev/tcp/{dst}/{port}\n\
           echo job-$i >&3\n\
           exec 3>&-\n\
           echo $$ > {p}/cgroup.procs\n\
           rmdir $d\n\
         done\n",
        p = parent.display()
    );
    // nsenter, not `ip netns exec`: the latter mounts a fresh /sys, hiding the cgroup2 mount.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", bed.monitored().netns())).args(["/bin/bash", "-c", &script]);
    azflow_tests::cgroup::join_on_spawn(&mut cmd, bed.cgroup_path()).expect("joining the bed's cgroup");
    Proc::spawn(cmd, None).expect("churn").wait_ok(Duration::from_secs(600)).expect("churn finished");
}

fn host_bytes(m: &Metrics, zone_id: &str) -> f64 {
    m.value("azflow_tcp_bytes_total", &[("direction", "transmit"), ("dst_zone_id", zone_id)])
}

#[test]
fn ebpf_workload_churn_is_bounded_and_accounted() {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let parent = bed.cgroup_path().join("churn.slice");
    std::fs::create_dir_all(&parent).expect("churn.slice");
    // Removed before the bed (declared after it), so the bed's cgroup can go.
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _parent_guard = RemoveDir(parent.clone());
    let dir = std::env::temp_dir().join(format!("azflow-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let cap = CAP.to_string();
    let agent = Agent::start(
        bed.cgroup_path(),
        &["--topology", topo.to_str().expect("utf-8"), "--max-workloads", &cap, "--workload-refresh", "300ms"],
    );
    let (dst, port) = ("b1", 7070);
    let (_, zone_id) = zone_labels(bed.host(dst).zone());
    let ip = bed.host(dst).ipv4();

    let m0 = agent.settled();
    let wire0 = bed.host(dst).link_counters().expect("counters");
    let sink = start_sink(&bed, dst, port, CGROUPS);
    churn(&bed, &parent, ip, port, 1, WARM);
    agent.settled();
    let (rss_warm, bpf_warm) = (rss_kib(agent.pid()), bpf_map_bytes(agent.pid()));
    churn(&bed, &parent, ip, port, WARM + 1, CGROUPS);
    let payload: u64 = sink.wait_ok(Duration::from_secs(60)).expect("sink").stdout.trim().parse().expect("byte count");
    let m1 = agent.settled();
    let wire = (bed.host(dst).link_counters().expect("counters") - wire0).l3_rx_bytes();
    let (rss_end, bpf_end) = (rss_kib(agent.pid()), bpf_map_bytes(agent.pid()));

    let counted = host_bytes(&m1, zone_id) - host_bytes(&m0, zone_id);
    let workload_sum = m1.value("azflow_workload_tcp_bytes_total", &[]);
    let host_total = m1.value("azflow_tcp_bytes_total", &[]);
    let other = m1.value("azflow_workload_tcp_bytes_total", &[("workload", "other")]);
    let named = m1
        .series
        .iter()
        .filter(|(n, l, _)| n == "azflow_workload_tcp_bytes_total" && l.get("workload").is_some_and(|w| w.starts_with("job-")))
        .map(|(_, l, _)| l["workload"].clone())
        .collect::<std::collections::BTreeSet<_>>();
    let folded = |r: &str| m1.value("azflow_workload_folded_total", &[("reason", r)]);
    println!("{CGROUPS} cgroups, one connection each: payload {payload} B; host total to {zone_id}: agent {counted} B, wire {wire} B, error {:.4}%", rel_err(counted, wire as f64) * 100.0);
    println!("sum over workloads {workload_sum} B, host total {host_total} B; other {other} B; job workloads with series {}", named.len());
    println!(
        "folded: index_cap {} series_cap {} map_full {} unknown_socket {} unknown_gone {}",
        folded("index_cap"),
        folded("series_cap"),
        folded("map_full"),
        folded("unknown_socket"),
        folded("unknown_gone")
    );
    println!("agent RSS {rss_warm} KiB after {WARM} cgroups, {rss_end} KiB after {CGROUPS}; BPF maps {bpf_warm} B, then {bpf_end} B");

    assert!(rel_err(counted, wire as f64) <= TOLERANCE, "host total {counted} vs wire {wire}\n{}", agent.log());
    assert_eq!(workload_sum, host_total, "the sum over workloads (other included) equals the host total");
    assert!(named.len() as u32 <= CAP, "at most {CAP} job workloads get series: {}", named.len());
    assert!(other > 0.0, "bytes beyond the cap are under other");
    assert!(folded("index_cap") + folded("unknown_socket") > 0.0, "what went to other is counted");
    assert_eq!(bpf_end, bpf_warm, "BPF map memory is flat");
    assert!(rss_end <= rss_warm + RSS_SLACK_KIB, "agent RSS grew from {rss_warm} to {rss_end} KiB");
    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
}
