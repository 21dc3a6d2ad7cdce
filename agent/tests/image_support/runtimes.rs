//! The container runtimes' state as the DaemonSet mounts it (`deploy/kubernetes`: containerd's
//! task bundles, CRI-O's and Docker's per-container state, read-only), and a workload of each
//! runtime below the bed's cgroup that only those mounts can name:
//! - a CRI pod `shop/cart-…` in the test's own containerd (its bundle is containerd's own);
//! - a CRI-O pod `billing/invoice-…` and a Docker container `ledger`, whose state files the test
//!   writes in each runtime's layout (neither runtime can run here; see docs/workloads.md), each
//!   with a cgroup named as that runtime names it.
//!
//! Each sends from its own cgroup; the agent in the container must name all three.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use azflow::workloads::{
    DEFAULT_CONTAINERD_STATE, DEFAULT_CRIO_CONTAINERS, DEFAULT_DOCKER_CONTAINERS,
};
use azflow_tests::{Family, TestBed, process::Proc};

use super::daemonset::{VolumeMount, VolumeSource};
use crate::{
    common::Metrics,
    containerd_support::{
        Containerd,
        cri::{self, PodSpec, unified_cgroup},
    },
};

/// containerd keeps its shim v2 task bundles here, below its state directory.
const TASKS: &str = "io.containerd.runtime.v2.task";
const BYTES: u64 = 1_000_000;

/// A workload and the labels the agent should give it.
pub struct Named {
    pub workload: &'static str,
    pub kind: &'static str,
    pub namespace: &'static str,
    pub cgroup: PathBuf,
}

pub struct Runtimes {
    containerd_tasks: PathBuf,
    crio: PathBuf,
    docker: PathBuf,
    pub workloads: Vec<Named>,
}

impl Runtimes {
    /// The three workloads and the CRI-O and Docker state, under `ctrd`'s directory; their
    /// cgroups are removed with `ctrd`.
    pub fn prepare(ctrd: &mut Containerd, bed: &TestBed) -> Runtimes {
        let root = azflow::cgroup::default_cgroup().unwrap_or_else(|e| panic!("{e}"));
        let bed_cg = bed.cgroup_path();
        let rel = bed_cg
            .strip_prefix(&root)
            .expect("the bed's cgroup is below the cgroup2 root")
            .to_string_lossy()
            .into_owned();
        let pid = std::process::id();
        let (cart_uid, invoice_uid) = (
            format!("6c0d2e4f-8a1b-4c3d-9e5f-{pid:012x}"),
            format!("7e1f3a5b-9c2d-4e4f-8a6b-{pid:012x}"),
        );
        let crio_id = format!("{:064x}", (0xc410_u64 << 32) | u64::from(pid));
        let sandbox_id = format!("{:064x}", (0x5a4d_u64 << 32) | u64::from(pid));
        let docker_id = format!("{:064x}", (0xd0c4_u64 << 32) | u64::from(pid));

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio: {e}"));
        let spec = PodSpec {
            namespace: "shop",
            name: "cart-7d9f8b6c5d-x2k4q",
            uid: &cart_uid,
            template_hash: "7d9f8b6c5d",
            cgroup_parent: format!("/{rel}/kubepods/besteffort/pod{cart_uid}"),
            container: "app",
        };
        let (_, cart) = rt.block_on(async {
            let mut client = cri::client(&ctrd.socket()).await;
            cri::run_pod(&mut client, &spec).await
        });
        let cart_cg =
            root.join(unified_cgroup(ctrd.task_pid("k8s.io", &cart)).trim_start_matches('/'));

        let crio = ctrd.dir.join("node-crio-containers");
        let docker = ctrd.dir.join("node-docker-containers");
        let notes = |kind: &str, name: &str, labels: &str| {
            serde_json::json!({ "annotations": {
                "io.kubernetes.cri-o.ContainerType": kind,
                "io.kubernetes.cri-o.SandboxID": sandbox_id,
                "io.kubernetes.cri-o.Labels": labels,
                "io.kubernetes.pod.namespace": "billing",
                "io.kubernetes.pod.name": "invoice-5c8d7f9b6d-q2w4x",
                "io.kubernetes.pod.uid": invoice_uid,
                "io.kubernetes.container.name": name,
            }})
        };
        write_json(
            &crio.join(&sandbox_id).join("userdata/config.json"),
            &notes("sandbox", "POD", r#"{"pod-template-hash":"5c8d7f9b6d"}"#),
        );
        write_json(
            &crio.join(&crio_id).join("userdata/config.json"),
            &notes(
                "container",
                "invoice",
                r#"{"io.kubernetes.container.name":"invoice"}"#,
            ),
        );
        write_json(
            &docker.join(&docker_id).join("config.v2.json"),
            &serde_json::json!({ "ID": docker_id, "Name": "/ledger", "Config": { "Labels": {} } }),
        );
        let invoice_cg = bed_cg.join(format!(
            "kubepods/besteffort/pod{invoice_uid}/crio-{crio_id}"
        ));
        let ledger_cg = bed_cg.join(format!("docker/{docker_id}"));
        for cg in [&invoice_cg, &ledger_cg] {
            std::fs::create_dir_all(cg)
                .unwrap_or_else(|e| panic!("creating {}: {e}", cg.display()));
        }
        ctrd.cgroups_to_remove.extend([
            format!("{rel}/kubepods/besteffort/pod{cart_uid}"),
            format!("{rel}/kubepods/besteffort/pod{invoice_uid}/crio-{crio_id}"),
            format!("{rel}/kubepods/besteffort/pod{invoice_uid}"),
            format!("{rel}/kubepods/besteffort"),
            format!("{rel}/kubepods"),
            format!("{rel}/docker/{docker_id}"),
            format!("{rel}/docker"),
        ]);
        Runtimes {
            containerd_tasks: ctrd.state().join(TASKS),
            crio,
            docker,
            workloads: vec![
                Named {
                    workload: "cart",
                    kind: "pod",
                    namespace: "shop",
                    cgroup: cart_cg,
                },
                Named {
                    workload: "invoice",
                    kind: "pod",
                    namespace: "billing",
                    cgroup: invoice_cg,
                },
                Named {
                    workload: "ledger",
                    kind: "container",
                    namespace: "",
                    cgroup: ledger_cg,
                },
            ],
        }
    }

    /// This test's stand-in for a node's runtime state directory, None for any other path.
    pub fn source(&self, host_path: &str) -> Option<PathBuf> {
        if host_path == format!("{DEFAULT_CONTAINERD_STATE}/{TASKS}") {
            Some(self.containerd_tasks.clone())
        } else if host_path == DEFAULT_CRIO_CONTAINERS {
            Some(self.crio.clone())
        } else if host_path == DEFAULT_DOCKER_CONTAINERS {
            Some(self.docker.clone())
        } else {
            None
        }
    }

    /// The manifest's runtime state mounts are in the agent's mount namespace, read-only.
    pub fn check_read_only(&self, pid: u32, mounts: &[VolumeMount]) {
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/mountinfo: {e}"));
        let runtime: Vec<&VolumeMount> = mounts
            .iter()
            .filter(|m| matches!(&m.source, VolumeSource::HostPath { path, .. } if self.source(path).is_some()))
            .collect();
        assert_eq!(
            runtime.len(),
            3,
            "containerd, CRI-O and Docker state are mounted: {mounts:?}"
        );
        for m in runtime {
            let line = info
                .lines()
                .find(|l| l.split_whitespace().nth(4) == Some(m.container_path.as_str()))
                .unwrap_or_else(|| {
                    panic!("{} is not mounted in the agent:\n{info}", m.container_path)
                });
            let options = line.split_whitespace().nth(5).unwrap_or_default();
            println!("in the agent: {} {options}", m.container_path);
            assert!(
                options.split(',').any(|o| o == "ro"),
                "{} is mounted {options}, not read-only",
                m.container_path
            );
        }
    }

    /// 1 MB from each workload's cgroup in a1 to b1; the agent names each (workload, kind,
    /// namespace) from the mounted state and counts at least the payload under it.
    pub fn check_named(
        &self,
        bed: &TestBed,
        settled: impl Fn() -> Metrics,
        log: impl Fn() -> String,
    ) {
        for w in &self.workloads {
            send_from(bed, &w.cgroup, "b1", BYTES);
        }
        let m = settled();
        for w in &self.workloads {
            let labels = [
                ("workload", w.workload),
                ("workload_kind", w.kind),
                ("namespace", w.namespace),
                ("direction", "transmit"),
            ];
            let bytes = m.value("azflow_workload_tcp_bytes_total", &labels);
            let who = match w.namespace {
                "" => w.workload.to_owned(),
                ns => format!("{ns}/{}", w.workload),
            };
            println!(
                "{who} ({}): {bytes} B transmitted, named from the mounted state",
                w.kind
            );
            assert!(
                bytes >= BYTES as f64,
                "{} ({}) not named from the mounted runtime state: {bytes} B\n{}",
                w.workload,
                w.kind,
                log()
            );
        }
        let errors = m.value(
            "azflow_workload_events_total",
            &[("kind", "runtime_errors")],
        );
        assert_eq!(errors, 0.0, "runtime state read errors:\n{}", log());
    }
}

fn write_json(path: &Path, doc: &serde_json::Value) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(path, doc.to_string())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
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
    ]);
    Proc::spawn(cmd, None)
        .expect("sender")
        .wait_ok(Duration::from_secs(60))
        .expect("sender finished");
    server.finish().expect("server summary");
}
