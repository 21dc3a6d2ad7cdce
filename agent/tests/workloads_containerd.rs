//! Workload identity against a real containerd (Debian's containerd 1.6 + runc), started by the
//! test with its own root, state and socket:
//! (a) `ctr run` of a plain container in a containerd namespace → kind `container`;
//! (b) a pod driven through the CRI gRPC API as the kubelet drives it (RunPodSandbox,
//!     CreateContainer, StartContainer; host network, so no CNI), in namespace `shop` with a
//!     Deployment-style name, under the kubelet's cgroupfs-driver parent → kind `pod`, owner
//!     Deployment `cart`.
//!
//! Each container's cgroup is the one its process really runs in (`/proc/<pid>/cgroup`), and the
//! registry walks the host's real cgroup2 tree and reads containerd's real task bundles.
//!
//! Not runnable here: the **systemd cgroup driver**. runc's systemd driver asks systemd over D-Bus
//! to create `kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope`, and this machine's PID 1 is
//! not systemd. That layout is checked against a directory tree named as runc's systemd driver
//! names it (`libcontainer/cgroups/systemd`: `<parent slice>` expanded by dashes, unit
//! `<prefix>-<id>.scope` with prefix `cri-containerd` from containerd's CRI), with the bundle
//! the real containerd wrote for the pod.
//!
//! Root only; without root or the tools it prints SKIPPED, and with `AZFLOW_REQUIRE_EBPF=1` fails.

mod containerd_support;

use std::{os::unix::fs::MetadataExt, path::Path, time::Instant};

use azflow::workloads::{
    CgroupDir, OwnerKind, RegistryConfig, RuntimePaths, RuntimeState, Workload, WorkloadKind,
    WorkloadRegistry,
};
use containerd_support::{
    Containerd, IMAGE, missing_tool,
    cri::{self, PodSpec, unified_cgroup},
};

/// containerd namespace of the plain container (and its cgroup parent, `/<namespace>/<id>`).
const PLAIN_NS: &str = "azflow-test";
const POD_NS: &str = "shop";
const POD_NAME: &str = "cart-7d9f8b6c5d-x2k4q";

fn skip_or_fail(reason: &str) {
    if std::env::var(azflow_tests::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("cannot run the containerd test: {reason}");
    }
    eprintln!("SKIPPED: workloads_containerd: {reason}");
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino()
}

fn registry(ctrd: &Containerd) -> WorkloadRegistry<RuntimeState> {
    let runtime = RuntimeState::new(RuntimePaths {
        containerd_state: ctrd.state(),
        crio_containers: ctrd.dir.join("no-crio"),
        docker_containers: ctrd.dir.join("no-docker"),
    });
    WorkloadRegistry::new(RegistryConfig::default(), runtime)
}

fn workload_of(reg: &WorkloadRegistry<RuntimeState>, cgroup_id: u64) -> Workload {
    let index = reg
        .index_of(cgroup_id)
        .unwrap_or_else(|| panic!("cgroup {cgroup_id} was not walked"));
    reg.workload(index)
        .cloned()
        .unwrap_or_else(|| panic!("index {index} has no workload (other?)"))
}

fn expected_cart(pod: Option<&str>, container: Option<&str>) -> Workload {
    Workload {
        kind: WorkloadKind::Pod,
        name: "cart".into(),
        namespace: Some(POD_NS.into()),
        pod: pod.map(str::to_string),
        container: container.map(str::to_string),
        owner_kind: Some(OwnerKind::Deployment),
    }
}

#[test]
fn plain_container_and_cri_pod_resolve_to_their_workloads() {
    let Some(_root) = azflow_tests::require_root_or_skip() else {
        return;
    };
    if let Some(reason) = missing_tool() {
        return skip_or_fail(&reason);
    }
    let cgroot = azflow::cgroup::default_cgroup().unwrap_or_else(|e| panic!("{e}"));
    let uid = format!("6f1c0e2a-3b4d-4c5e-8f90-{:012x}", std::process::id());
    let mut ctrd = Containerd::start("workloads");
    ctrd.cgroups_to_remove = vec![
        PLAIN_NS.into(),
        format!("kubepods/besteffort/pod{uid}"),
        "kubepods/besteffort".into(),
        "kubepods".into(),
    ];
    ctrd.import_image(&["k8s.io", PLAIN_NS]);

    // (a) ctr run: cgroup /<namespace>/<id>, no annotations.
    ctrd.ctr(
        PLAIN_NS,
        &["run", "-d", "--snapshotter", "native", IMAGE, "plain"],
    );
    let plain_path = unified_cgroup(ctrd.task_pid(PLAIN_NS, "plain"));
    assert_eq!(plain_path, format!("/{PLAIN_NS}/plain"));

    // (b) the CRI pod.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    let mut client = rt.block_on(cri::client(&ctrd.socket()));
    let spec = PodSpec {
        namespace: POD_NS,
        name: POD_NAME,
        uid: &uid,
        template_hash: "7d9f8b6c5d",
        cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
        container: "app",
    };
    let (sandbox, container) = rt.block_on(cri::run_pod(&mut client, &spec));
    let pod_path = unified_cgroup(ctrd.task_pid("k8s.io", &container));
    assert_eq!(
        pod_path,
        format!("/kubepods/besteffort/pod{uid}/{container}"),
        "kubelet's cgroupfs layout"
    );
    let sandbox_path = unified_cgroup(ctrd.task_pid("k8s.io", &sandbox));

    let mut reg = registry(&ctrd);
    let t0 = Instant::now();
    reg.refresh_from(&CgroupDir::new(&cgroot), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    let plain = workload_of(&reg, ino(&cgroot.join(plain_path.trim_start_matches('/'))));
    assert_eq!(
        (plain.kind, plain.name.as_str(), plain.namespace),
        (WorkloadKind::Container, "plain", None)
    );
    let pod_id = ino(&cgroot.join(pod_path.trim_start_matches('/')));
    assert_eq!(
        workload_of(&reg, pod_id),
        expected_cart(None, None),
        "the index is the Deployment's"
    );
    assert_eq!(
        reg.cgroup_workload(pod_id),
        Some(&expected_cart(Some(POD_NAME), Some("app")))
    );
    let sandbox_id = ino(&cgroot.join(sandbox_path.trim_start_matches('/')));
    assert_eq!(
        reg.index_of(sandbox_id),
        reg.index_of(pod_id),
        "the pod's sandbox counts to its workload"
    );
    assert_eq!(reg.stats().runtime_errors_total, 0);

    // The systemd driver's names for the same containers, with the bundles containerd wrote.
    let tree = ctrd.dir.join("systemd-tree");
    let slice = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        uid.replace('-', "_")
    );
    let scope = tree
        .join(&slice)
        .join(format!("cri-containerd-{container}.scope"));
    std::fs::create_dir_all(&scope).unwrap_or_else(|e| panic!("creating {}: {e}", scope.display()));
    let mut reg = registry(&ctrd);
    reg.refresh_from(&CgroupDir::new(&tree), t0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        reg.cgroup_workload(ino(&scope)),
        Some(&expected_cart(Some(POD_NAME), Some("app")))
    );

    rt.block_on(cri::remove_pod(&mut client, &sandbox));
    ctrd.ctr(PLAIN_NS, &["tasks", "kill", "-s", "SIGKILL", "plain"]);
}
