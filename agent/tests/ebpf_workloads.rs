//! Per-workload bytes against each workload's own wire truth, on the three-AZ bed.
//!
//! Three workloads live below the bed's cgroup, which the agent attaches to and walks:
//! - a systemd-style unit: a cgroup `system.slice/shop-api.service` made by the test;
//! - a containerd container: `ctr run` in a containerd started by the test, its cgroup placed
//!   below the bed (`--cgroup /<bed>/azflow-test/inventory`);
//! - a CRI pod in namespace `shop` named like a Deployment's pod (`cart-7d9f8b6c5d-x2k4q`), made
//!   through the CRI API under the kubelet's cgroupfs parent below the bed.
//!
//! Each workload's traffic comes from a sender process that joins that workload's cgroup in the
//! bed's monitored host (a1): the kernel attributes by the socket's cgroup, and the containers'
//! own busybox has no sender. Each (workload, destination zone) transfer runs alone, so the
//! receiving interfaces' counters are that workload's wire truth (segmentation off at the router,
//! GRO off at the hosts, L2 header subtracted), as in `ebpf_accuracy`.
//!
//! Checked: per-workload bytes per (destination zone, direction) within 0.5 % of the wire; the
//! sum over workloads equals the host totals exactly once traffic has stopped; a workload that
//! exits (its cgroups gone, its index released) keeps its final counts in the export, its RTT
//! histograms (cross-AZ) included.
//!
//! Root only; without root or the tools it prints SKIPPED, and with `AZFLOW_REQUIRE_EBPF=1` fails.

mod common;
mod containerd_support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use azflow_tests::{Family, TestBed, process::Proc};
use common::{Agent, Metrics, rel_err, write_topology, zone_labels};
use containerd_support::{
    Containerd, IMAGE,
    cri::{self, PodSpec, unified_cgroup},
    missing_tool,
};

const TOLERANCE: f64 = 0.005;
const BYTES: u64 = 4_000_000;
const PLAIN_NS: &str = "azflow-test";
const CONTAINER: &str = "inventory";

struct Workload {
    /// Prometheus labels the agent should give it.
    name: &'static str,
    kind: &'static str,
    namespace: &'static str,
    cgroup: PathBuf,
}

fn skip_or_fail(reason: &str) {
    if std::env::var(azflow_tests::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("cannot run the workload test: {reason}");
    }
    eprintln!("SKIPPED: ebpf_workloads: {reason}");
}

fn workload_bytes(m: &Metrics, w: &Workload, direction: &str, zone_id: &str) -> f64 {
    m.value(
        "azflow_workload_tcp_bytes_total",
        &[
            ("workload", w.name),
            ("workload_kind", w.kind),
            ("namespace", w.namespace),
            ("direction", direction),
            ("dst_zone_id", zone_id),
        ],
    )
}

/// One bulk transfer from a1, by a sender that joined `cgroup`, to a server in `dst`.
fn send_from(bed: &TestBed, cgroup: &Path, dst: &str, bytes: u64) {
    let server = bed
        .host(dst)
        .start_tcp_server(Family::V4, 1)
        .expect("server");
    let mut cmd = bed.monitored().traffic_command();
    azflow_tests::cgroup::join_on_spawn(&mut cmd, cgroup).expect("joining the workload's cgroup");
    cmd.args([
        "bulk",
        "--to",
        &server.addr().to_string(),
        "--bytes",
        &bytes.to_string(),
        "--timeout-secs",
        "60",
    ]);
    Proc::spawn(cmd, None)
        .expect("sender")
        .wait_ok(Duration::from_secs(60))
        .expect("sender finished");
    let done = server.finish().expect("server summary");
    // The protocol's own header comes on top of the payload.
    assert!(
        done.bytes_received >= bytes,
        "the server read everything: {} of {bytes}",
        done.bytes_received
    );
}

/// Waits until the agent exports a series for every workload (it walks at start, and again
/// every --workload-refresh).
fn wait_named(agent: &Agent, workloads: &[Workload]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = agent.scrape();
        let named = m.value("azflow_workload_count", &[("of", "indexed_workloads")]);
        if named >= workloads.len() as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not name the workloads within 20 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ebpf_workload_bytes_match_each_workloads_wire_truth() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    if let Some(reason) = missing_tool() {
        return skip_or_fail(&reason);
    }
    let root = azflow::cgroup::default_cgroup().unwrap_or_else(|e| panic!("{e}"));
    let bed_cg = bed.cgroup_path().to_path_buf();
    let rel = bed_cg
        .strip_prefix(&root)
        .expect("the bed's cgroup is below the cgroup2 root")
        .to_string_lossy()
        .into_owned();
    let uid = format!("0b6c2f4e-1a3d-4e5f-9a8b-{:012x}", std::process::id());

    let unit = bed_cg.join("system.slice/shop-api.service");
    std::fs::create_dir_all(&unit).unwrap_or_else(|e| panic!("creating {}: {e}", unit.display()));

    let mut ctrd = Containerd::start("workload-bytes");
    ctrd.cgroups_to_remove = vec![
        format!("{rel}/{PLAIN_NS}/{CONTAINER}"),
        format!("{rel}/{PLAIN_NS}"),
        format!("{rel}/kubepods/besteffort/pod{uid}"),
        format!("{rel}/kubepods/besteffort"),
        format!("{rel}/kubepods"),
        format!("{rel}/system.slice/shop-api.service"),
        format!("{rel}/system.slice"),
    ];
    ctrd.import_image(&["k8s.io", PLAIN_NS]);
    ctrd.ctr(
        PLAIN_NS,
        &[
            "run",
            "-d",
            "--snapshotter",
            "native",
            "--cgroup",
            &format!("/{rel}/{PLAIN_NS}/{CONTAINER}"),
            IMAGE,
            CONTAINER,
        ],
    );
    let container_cg =
        root.join(unified_cgroup(ctrd.task_pid(PLAIN_NS, CONTAINER)).trim_start_matches('/'));
    assert!(
        container_cg.starts_with(&bed_cg),
        "the container runs below the bed: {}",
        container_cg.display()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    let mut client = rt.block_on(cri::client(&ctrd.socket()));
    let spec = PodSpec {
        namespace: "shop",
        name: "cart-7d9f8b6c5d-x2k4q",
        uid: &uid,
        template_hash: "7d9f8b6c5d",
        cgroup_parent: format!("/{rel}/kubepods/besteffort/pod{uid}"),
        container: "app",
    };
    let (sandbox, pod_container) = rt.block_on(cri::run_pod(&mut client, &spec));
    let pod_cg =
        root.join(unified_cgroup(ctrd.task_pid("k8s.io", &pod_container)).trim_start_matches('/'));
    assert!(
        pod_cg.starts_with(&bed_cg),
        "the pod runs below the bed: {}",
        pod_cg.display()
    );

    let workloads = [
        Workload {
            name: "shop-api.service",
            kind: "systemd",
            namespace: "",
            cgroup: unit.clone(),
        },
        Workload {
            name: CONTAINER,
            kind: "container",
            namespace: "",
            cgroup: container_cg,
        },
        Workload {
            name: "cart",
            kind: "pod",
            namespace: "shop",
            cgroup: pod_cg,
        },
    ];

    let dir = std::env::temp_dir().join(format!("azflow-wl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let state = ctrd.state();
    let agent = Agent::start(
        &bed_cg,
        &[
            "--topology",
            topo.to_str().expect("utf-8"),
            "--containerd-state",
            state.to_str().expect("utf-8"),
            "--workload-refresh",
            "300ms",
            "--workload-reuse-after",
            "1s",
        ],
    );
    wait_named(&agent, &workloads);

    for w in &workloads {
        for dst in ["a2", "b1", "c1"] {
            let (_, zone_id) = zone_labels(bed.host(dst).zone());
            let m0 = agent.settled();
            let dst0 = bed.host(dst).link_counters().expect("counters");
            let src0 = bed.monitored().link_counters().expect("counters");
            send_from(&bed, &w.cgroup, dst, BYTES);
            let m1 = agent.settled();
            let sent = (bed.host(dst).link_counters().expect("counters") - dst0).l3_rx_bytes();
            let recv = (bed.monitored().link_counters().expect("counters") - src0).l3_rx_bytes();
            for (direction, wire) in [("transmit", sent), ("receive", recv)] {
                let counted = workload_bytes(&m1, w, direction, zone_id)
                    - workload_bytes(&m0, w, direction, zone_id);
                let err = rel_err(counted, wire as f64);
                println!(
                    "{:<18} {:<9} -> {dst} ({zone_id}) {direction:<8}: agent {counted} B, wire {wire} B, error {:.4}%",
                    w.name,
                    w.kind,
                    err * 100.0
                );
                assert!(
                    err <= TOLERANCE,
                    "{} {dst} {direction}: agent {counted} vs wire {wire}\n{}",
                    w.name,
                    agent.log()
                );
            }
        }
    }

    let m = agent.settled();
    let workload_sum = m.value("azflow_workload_tcp_bytes_total", &[]);
    let host_total = m.value("azflow_tcp_bytes_total", &[]);
    println!("sum over workloads {workload_sum} B, host total {host_total} B");
    assert_eq!(
        workload_sum, host_total,
        "the sum over workloads equals the host totals exactly"
    );
    assert_eq!(
        m.value("azflow_kernel_errors_total", &[("kind", "workload_index")]),
        0.0
    );

    // The workloads exit: the pod and the container are removed, the unit's cgroup goes.
    let finals: Vec<f64> = workloads
        .iter()
        .map(|w| m.value("azflow_workload_tcp_bytes_total", &[("workload", w.name)]))
        .collect();
    let rtt_count = |m: &Metrics, w: &Workload| m.value("azflow_workload_tcp_rtt_seconds_count", &[("workload", w.name)]);
    let rtt_finals: Vec<f64> = workloads.iter().map(|w| rtt_count(&m, w)).collect();
    for (w, n) in workloads.iter().zip(&rtt_finals) {
        assert!(*n > 0.0, "{}: RTT samples towards the other AZs", w.name);
    }
    rt.block_on(cri::remove_pod(&mut client, &sandbox));
    ctrd.ctr(PLAIN_NS, &["tasks", "kill", "-s", "SIGKILL", CONTAINER]);
    let deadline = Instant::now() + Duration::from_secs(10);
    // The task's cgroup goes when the task is deleted, which works once it has died.
    while !std::process::Command::new("ctr")
        .arg("-a")
        .arg(ctrd.socket())
        .args(["-n", PLAIN_NS, "tasks", "delete", CONTAINER])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            Instant::now() < deadline,
            "the container's task could not be deleted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir(&unit);
    // Past --workload-reuse-after: the indices are released.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = agent.settled();
        if m.value("azflow_workload_events_total", &[("kind", "released")])
            >= workloads.len() as f64
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gone workloads' indices were not released:\n{}",
            agent.log()
        );
    }
    let m = agent.settled();
    for (w, before) in workloads.iter().zip(&finals) {
        let after = m.value("azflow_workload_tcp_bytes_total", &[("workload", w.name)]);
        println!("{} after exit: {after} B (before {before} B)", w.name);
        assert_eq!(
            after, *before,
            "{} keeps its final counts after it exits",
            w.name
        );
    }
    for (w, before) in workloads.iter().zip(&rtt_finals) {
        let after = rtt_count(&m, w);
        println!("{} RTT samples after exit: {after} (before {before})", w.name);
        assert_eq!(after, *before, "{} keeps its final RTT histograms after it exits", w.name);
    }
    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
}
