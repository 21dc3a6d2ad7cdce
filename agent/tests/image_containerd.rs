//! The agent's image (`cargo xtask image`: the release binary on a distroless-like base, as
//! `deploy/container/Dockerfile` describes) imported into a real containerd started by the test
//! and run through CRI as the kubelet runs the DaemonSet's pod: the container's image, args,
//! environment, mounts, securityContext and resources are read from `deploy/kubernetes/` (which
//! the chart's defaults render exactly), not copied here.
//!
//! What the test changes, and why:
//! - the cgroup volume's hostPath is the bed's cgroup directory (what the chart's `cgroupRoot`
//!   value sets), so the agent counts the bed's traffic and nothing else on this shared machine;
//! - the topology ConfigMap volume holds the bed's topology, and `AZFLOW_TOPOLOGY` names it (the
//!   line the ConfigMap carries commented out);
//! - `AZFLOW_AWS=off` (nothing may reach the metadata address), `AZFLOW_PROMETHEUS` on a free
//!   loopback port (host network: 0.0.0.0:9464 would be this machine's), `AZFLOW_PIN_PATH` a
//!   directory of its own in bpffs, removed afterwards;
//! - the runtime state volumes' sources are the test containerd's task bundles and CRI-O and
//!   Docker state the test writes (see `image_support::runtimes`); the hostPath `type` is checked
//!   (or the directory created) as the kubelet does, and `recursiveReadOnly` translated as the
//!   kubelet translates it for this runtime (CRI Status).
//!
//! Asserted: the programs are attached to the cgroup (bpftool, from outside); the counts equal
//! wire truth within 0.5 % as in `ebpf_accuracy.rs`; `/healthz` and `/readyz` answer 200; the
//! process's effective, permitted and bounding capabilities are exactly BPF, PERFMON and
//! NET_ADMIN; root is read-only, no_new_privs is set, the network namespace is the host's; the
//! conntrack reader (NAT, CAP_NET_ADMIN) runs; the runtime state is mounted read-only and the
//! agent names a containerd pod, a CRI-O pod and a Docker container below the bed from it; SIGTERM through StopContainer ends it in time
//! with exit code 0; `azflow uninstall` then leaves nothing on the cgroup.
//!
//! Root only; without root, the tools or the image it prints SKIPPED, and with
//! `AZFLOW_REQUIRE_EBPF=1` fails.

mod common;
mod containerd_support;
mod deploy_support;
mod image_support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use azflow_tests::{Family, TestBed};
use common::{Metrics, rel_err, zone_labels};
use containerd_support::{Containerd, missing_tool};
use image_support::{
    bpftool_json, cri,
    daemonset::{AgentContainer, VolumeSource},
    decode_caps, ensure_shared_bpffs, free_port, http_get, image_tar,
    pod::AgentPod,
    runtimes::Runtimes,
    status_field,
};
use k8s_cri::v1::Mount;

/// Billing-grade, as `ebpf_accuracy.rs`: 0.5 %.
const TOLERANCE: f64 = 0.005;
const BULK_BYTES: u64 = 20_000_000;
const RR_COUNT: u64 = 5_000;
const RR_SIZE: u32 = 100;
const NODE: &str = "bed-node-a";
/// The DaemonSet's startupProbe allows 60 × 2 s.
const STARTUP: Duration = Duration::from_secs(120);
/// terminationGracePeriodSeconds; the agent itself should need a few seconds at most.
const GRACE: Duration = Duration::from_secs(30);
const STOPS_WITHIN: Duration = Duration::from_secs(10);

fn skip_or_fail(reason: &str) {
    if std::env::var(azflow_tests::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("cannot run the image test: {reason}");
    }
    eprintln!("SKIPPED: image_containerd: {reason}");
}

/// `azflow uninstall` of the agent's pins: detaches its programs however the test ends.
struct Pins(String);
impl Pins {
    fn uninstall(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_azflow"))
            .args(["uninstall", "--pin-path", &self.0])
            .output()
            .unwrap_or_else(|e| panic!("azflow uninstall: {e}"))
    }
}
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = self.uninstall();
    }
}

fn scrape(addr: SocketAddr) -> Metrics {
    let (code, body) = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(code, 200, "GET /metrics: {body}");
    Metrics::parse(&body)
}

/// The figures once two more drains have completed (one may have been under way when the
/// traffic ended); the manifest's drain interval is 5 s.
fn settled(addr: SocketAddr) -> Metrics {
    let start = scrape(addr).value("azflow_drains_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let m = scrape(addr);
        if m.value("azflow_drains_total", &[]) >= start + 2.0 {
            return m;
        }
        assert!(Instant::now() < deadline, "no two drains within 40 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_for_200(addr: SocketAddr, path: &str, within: Duration, pod: &AgentPod) -> Duration {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < within {
        match http_get(addr, path) {
            Ok((200, _)) => return t.elapsed(),
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "{path} did not answer 200 within {within:?} (last: {last}); container log:\n{}",
        pod.log()
    );
}

/// The manifest's environment with the test's changes (see the file's doc).
fn environment(c: &AgentContainer, metrics: SocketAddr, pin_path: &str) -> Vec<(String, String)> {
    let mut env = c.env.clone();
    for (k, v) in [
        ("AZFLOW_AWS", "off".to_owned()),
        ("AZFLOW_PROMETHEUS", metrics.to_string()),
        ("AZFLOW_PIN_PATH", pin_path.to_owned()),
        (
            "AZFLOW_TOPOLOGY",
            "/etc/azflow/topology/topology.toml".to_owned(),
        ),
    ] {
        env.retain(|(key, _)| key != k);
        env.push((k.to_owned(), v));
    }
    env
}

/// The manifest's volumeMounts, each volume's source on this machine: the bed's cgroup for the
/// node's cgroup mount, the node's bpffs, the test's stand-ins for the runtimes' state,
/// `topology_dir` for the topology ConfigMap. A host path the test does not know fails it: it
/// must never mount this machine's own runtime state or anything else by accident.
fn mounts(
    c: &AgentContainer,
    bed_cgroup: &Path,
    runtimes: &Runtimes,
    topology_dir: &Path,
    rro_supported: bool,
) -> Vec<Mount> {
    c.mounts
        .iter()
        .map(|m| {
            let host: PathBuf = match &m.source {
                VolumeSource::HostPath { path, kind } => {
                    let host = match path.as_str() {
                        "/sys/fs/cgroup" => bed_cgroup.to_path_buf(),
                        "/sys/fs/bpf" => PathBuf::from(path),
                        p => runtimes.source(p).unwrap_or_else(|| {
                            panic!("volume {}: hostPath {p} is new; give it a source here", m.name)
                        }),
                    };
                    host_path_type(&host, kind);
                    host
                }
                VolumeSource::ConfigMap(n) if n == "azflow-topology" => topology_dir.to_path_buf(),
                VolumeSource::ConfigMap(n) => {
                    panic!(
                        "volume {}: ConfigMap {n} is new; give it contents here",
                        m.name
                    )
                }
            };
            cri::mount(m, &host, rro_supported)
        })
        .collect()
}

/// The kubelet's hostPath `type` check before it starts the pod.
fn host_path_type(host: &Path, kind: &str) {
    match kind {
        "" => {}
        "Directory" => assert!(host.is_dir(), "hostPath type Directory: {} is missing", host.display()),
        "DirectoryOrCreate" => std::fs::create_dir_all(host)
            .unwrap_or_else(|e| panic!("hostPath DirectoryOrCreate {}: {e}", host.display())),
        other => panic!("hostPath type {other} is not checked here; add it"),
    }
}

/// The container's process as the host sees it: command, capabilities, privileges, namespaces.
fn check_process(pid: u32, c: &AgentContainer) {
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .replace('\0', " ");
    assert_eq!(
        cmdline.trim(),
        format!("/usr/local/bin/azflow {}", c.args.join(" ")),
        "the image's entry point with the manifest's args"
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let mask = status_field(pid, set);
        println!("{set} {mask} = {:?}", decode_caps(&mask));
        assert_eq!(
            decode_caps(&mask),
            ["BPF", "NET_ADMIN", "PERFMON"],
            "{set} of the agent (pid {pid})"
        );
    }
    assert_eq!(
        decode_caps(&status_field(pid, "CapAmb")),
        Vec::<String>::new(),
        "no ambient capabilities"
    );
    assert_eq!(
        status_field(pid, "NoNewPrivs"),
        "1",
        "allowPrivilegeEscalation: false"
    );
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0"),
        "runAsUser: 0"
    );
    let netns = |p: &str| {
        std::fs::read_link(format!("/proc/{p}/ns/net"))
            .unwrap_or_else(|e| panic!("{p}'s netns: {e}"))
    };
    assert_eq!(
        netns(&pid.to_string()),
        netns("self"),
        "hostNetwork: the node's network namespace"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("a root mount");
    let options = root.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "readOnlyRootFilesystem: root is mounted {options}"
    );
}

/// "attach_type name" of each program the kernel runs on `cgroup`, sorted.
fn attached(cgroup: &Path) -> Vec<String> {
    let json = bpftool_json(&["cgroup", "show", cgroup.to_str().expect("utf-8 path")]);
    let mut progs: Vec<String> = json
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {}",
                p["attach_type"].as_str().unwrap_or("?"),
                p["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    progs.sort();
    progs
}

/// Bulk (v4) and request/response (v6) from a1 to b1 and c1: the agent's transmit bytes and
/// packets per zone against what b1's and c1's interfaces received, its receive bytes against
/// a1's (which hears only from those two here).
fn check_counts(bed: &TestBed, metrics: SocketAddr, pod: &AgentPod) {
    let hosts = ["a1", "b1", "c1"];
    let counters = || hosts.map(|h| bed.host(h).link_counters().expect("counters"));
    let m0 = settled(metrics);
    let before = counters();
    for dst in ["b1", "c1"] {
        bed.run_bulk("a1", dst, BULK_BYTES, Family::V4)
            .expect("bulk");
        bed.run_rr("a1", dst, RR_COUNT, RR_SIZE, Family::V6)
            .expect("request/response");
    }
    let m1 = settled(metrics);
    let after = counters();
    let grew = |name: &str, dir: &str, zone_id: &str| {
        let labels = [("direction", dir), ("dst_zone_id", zone_id)];
        m1.value(name, &labels) - m0.value(name, &labels)
    };
    let mut receive = 0.0;
    for i in [1, 2] {
        let (_, zone_id) = zone_labels(bed.host(hosts[i]).zone());
        let wire = after[i] - before[i];
        for (what, agent, truth) in [
            (
                "bytes",
                grew("azflow_tcp_bytes_total", "transmit", zone_id),
                wire.l3_rx_bytes(),
            ),
            (
                "packets",
                grew("azflow_tcp_packets_total", "transmit", zone_id),
                wire.rx_packets,
            ),
        ] {
            let err = rel_err(agent, truth as f64);
            println!(
                "a1->{} ({zone_id}) transmit {what}: agent {agent}, wire {truth}, error {:.4}%",
                hosts[i],
                err * 100.0
            );
            assert!(
                err <= TOLERANCE,
                "{} transmit {what}: agent {agent} vs wire {truth}\n{}",
                hosts[i],
                pod.log()
            );
        }
        receive += grew("azflow_tcp_bytes_total", "receive", zone_id);
    }
    let wire = (after[0] - before[0]).l3_rx_bytes();
    let err = rel_err(receive, wire as f64);
    println!(
        "b1+c1->a1 receive bytes: agent {receive}, wire {wire}, error {:.4}%",
        err * 100.0
    );
    assert!(err <= TOLERANCE, "receive: agent {receive} vs wire {wire}");
    assert_eq!(
        m1.value("azflow_nat_conntrack_listening", &[]),
        1.0,
        "the conntrack reader (NAT, CAP_NET_ADMIN) runs:\n{}",
        pod.log()
    );
}

#[test]
fn capability_masks_decode_to_names() {
    assert_eq!(
        decode_caps("000000c000001000"),
        ["BPF", "NET_ADMIN", "PERFMON"]
    );
    assert_eq!(decode_caps("0000000000000000"), Vec::<String>::new());
}

#[test]
fn image_runs_as_the_daemonset_attaches_counts_and_keeps_three_capabilities() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    if let Some(reason) = missing_tool() {
        return skip_or_fail(&reason);
    }
    if azflow_tests::find_tool("bpftool").is_none() {
        return skip_or_fail("`bpftool` is not installed (Debian bpftool)");
    }
    let tar = match image_tar() {
        Ok(t) => t,
        Err(reason) => return skip_or_fail(&reason),
    };
    let Some(python) = deploy_support::python_with_yaml() else {
        return;
    };
    let manifest =
        image_support::daemonset::agent_container(&python, &deploy_support::repo(), NODE);
    ensure_shared_bpffs();

    let pins = Pins(format!("/sys/fs/bpf/azft-img-{}", std::process::id()));
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let uid = format!("0a2f1c3e-5b6d-4e7f-8a9b-{:012x}", std::process::id());
    let mut ctrd = Containerd::start("image");
    ctrd.cgroups_to_remove = vec![
        format!("kubepods/burstable/pod{uid}"),
        "kubepods/burstable".into(),
        "kubepods".into(),
    ];
    let topology_dir = ctrd.dir.join("configmap-azflow-topology");
    std::fs::create_dir_all(&topology_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", topology_dir.display()));
    std::fs::write(topology_dir.join("topology.toml"), bed.topology_toml())
        .unwrap_or_else(|e| panic!("writing the topology: {e}"));

    // The sandbox runs the harness's busybox image (the CRI config's sandbox_image).
    ctrd.import_image(&["k8s.io"]);
    ctrd.ctr(
        "k8s.io",
        &[
            "image",
            "import",
            "--snapshotter",
            "native",
            tar.to_str().expect("utf-8 path"),
        ],
    );
    let images =
        String::from_utf8_lossy(&ctrd.ctr("k8s.io", &["image", "ls", "-q"]).stdout).into_owned();
    assert!(
        images.lines().any(|l| l == manifest.image),
        "the tar holds no image named {} (have: {images})",
        manifest.image
    );

    // Workloads of each runtime below the bed, named only through the runtime state mounts.
    let runtimes = Runtimes::prepare(&mut ctrd, &bed);
    let rro = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"))
        .block_on(async {
            let mut client = cri::client(&ctrd.socket()).await;
            cri::recursive_read_only_supported(&mut client).await
        });
    println!("the runtime does recursive read-only mounts: {rro}");

    let env = environment(&manifest, metrics, &pins.0);
    let mounts = mounts(&manifest, bed.cgroup_path(), &runtimes, &topology_dir, rro);
    let mut pod = AgentPod::start(&ctrd, &manifest, mounts, &env, &uid, NODE);

    // The probes, as the kubelet runs them (on loopback here).
    let started = wait_for_200(metrics, "/healthz", STARTUP, &pod);
    let ready = wait_for_200(metrics, "/readyz", Duration::from_secs(30), &pod);
    println!("/healthz 200 after {started:?}, /readyz 200 after a further {ready:?}");

    let agent_pid = ctrd.task_pid("k8s.io", &pod.container);
    check_process(agent_pid, &manifest);
    runtimes.check_read_only(agent_pid, &manifest.mounts);
    let programs = attached(bed.cgroup_path());
    println!("on {}: {programs:?}", bed.cgroup_path().display());
    assert_eq!(
        programs,
        [
            "cgroup_inet_egress azflow_egress",
            "cgroup_inet_ingress azflow_ingress",
            "cgroup_sock_ops azflow_sockops"
        ],
        "programs on the cgroup:\n{}",
        pod.log()
    );
    check_counts(&bed, metrics, &pod);
    runtimes.check_named(&bed, || settled(metrics), || pod.log());
    let (code, body) = http_get(metrics, "/readyz").unwrap_or_else(|e| panic!("GET /readyz: {e}"));
    assert_eq!(code, 200, "still ready after the traffic: {body}");

    let (took, exit_code) = pod.stop_container(GRACE);
    println!(
        "stopped in {took:?} with exit code {exit_code}; container log:\n{}",
        pod.log()
    );
    assert!(
        took < STOPS_WITHIN && exit_code == 0,
        "SIGTERM: exit code {exit_code} after {took:?}:\n{}",
        pod.log()
    );
    pod.remove();
    // Pinned, the programs outlive the container (zero-gap upgrades); uninstall removes them.
    let out = pins.uninstall();
    assert!(
        out.status.success(),
        "azflow uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attached(bed.cgroup_path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still attached after uninstall: {:?}",
            attached(bed.cgroup_path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
