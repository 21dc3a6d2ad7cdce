//! The registry over a temp dir of real directories (ids are their inode numbers) and runtime
//! state files in containerd's layout.

use super::*;
use crate::workloads::{
    WorkloadKind,
    owner::OwnerKind,
    runtime::{RuntimePaths, RuntimeState},
    test_dir::TestDir,
    walk::CgroupDir,
};

const POD_SLICE: &str = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8a4b3c2d_1e0f_4a5b_9c8d_7e6f5a4b3c2d.slice";

struct Bed {
    dir: TestDir,
    registry: WorkloadRegistry<RuntimeState>,
    t0: Instant,
}

impl Bed {
    fn new(name: &str, config: RegistryConfig) -> Self {
        let dir = TestDir::new(name);
        dir.mkdir("cg");
        let runtime = RuntimeState::new(RuntimePaths {
            containerd_state: dir.path().join("containerd"),
            crio_containers: dir.path().join("crio"),
            docker_containers: dir.path().join("docker"),
        });
        Bed {
            dir,
            registry: WorkloadRegistry::new(config, runtime),
            t0: Instant::now(),
        }
    }

    fn cgroup(&self, rel: &str) -> u64 {
        self.dir.mkdir(&format!("cg/{rel}"));
        self.dir.ino(&format!("cg/{rel}"))
    }

    /// A CRI container of pod `pod` in namespace `ns`: its cgroup and its task bundle.
    fn pod_container(&self, id: &str, ns: &str, pod: &str, container: &str) -> u64 {
        self.dir.write(
            &format!("containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            &format!(
                r#"{{"annotations":{{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"{container}",
                "io.kubernetes.cri.sandbox-name":"{pod}","io.kubernetes.cri.sandbox-namespace":"{ns}"}}}}"#
            ),
        );
        self.cgroup(&format!("{POD_SLICE}/cri-containerd-{id}.scope"))
    }

    fn refresh(&mut self, at_secs: u64) -> Update {
        let tree = CgroupDir::new(self.dir.path().join("cg"));
        self.registry
            .refresh_from(&tree, self.t0 + Duration::from_secs(at_secs))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn index(&self, id: u64) -> u16 {
        self.registry
            .index_of(id)
            .unwrap_or_else(|| panic!("cgroup {id} not in the registry"))
    }

    fn name_of(&self, id: u64) -> (WorkloadKind, String) {
        let w = self
            .registry
            .workload(self.index(id))
            .unwrap_or_else(|| panic!("cgroup {id} has no workload"));
        (w.kind, w.name.clone())
    }
}

fn reg_cgroup(bed: &Bed, id: u64) -> Workload {
    bed.registry
        .cgroup_workload(id)
        .cloned()
        .unwrap_or_else(|| panic!("cgroup {id} not in the registry"))
}

fn config(max: u16, reuse_secs: u64) -> RegistryConfig {
    RegistryConfig {
        max_workloads: max,
        reuse_after: Duration::from_secs(reuse_secs),
        ..RegistryConfig::default()
    }
}

#[test]
fn cgroups_of_one_workload_share_an_index() {
    let mut bed = Bed::new("reg-share", config(200, 300));
    let init = bed.cgroup("init.scope");
    let nginx = bed.cgroup("system.slice/nginx.service");
    let nginx_sub = bed.cgroup("system.slice/nginx.service/worker");
    let session = bed.cgroup("user.slice/user-1000.slice/session-3.scope");
    let a = bed.pod_container(&"a".repeat(64), "shop", "cart-7d9f8b6c5d-x2k4q", "app");
    let b = bed.pod_container(&"b".repeat(64), "shop", "cart-7d9f8b6c5d-p9m2z", "app");
    let c = bed.pod_container(&"c".repeat(64), "shop", "cart-7d9f8b6c5d-x2k4q", "sidecar");
    let update = bed.refresh(0);

    assert_eq!(bed.index(init), HOST_INDEX);
    assert_eq!(bed.index(nginx), bed.index(nginx_sub));
    assert_eq!(
        bed.name_of(nginx),
        (WorkloadKind::Systemd, "nginx.service".into())
    );
    assert_eq!(bed.name_of(session), (WorkloadKind::Systemd, "user".into()));
    assert_eq!(
        (bed.index(a), bed.index(b)),
        (bed.index(c), bed.index(c)),
        "two pods, two containers: one Deployment"
    );
    let cart = bed
        .registry
        .workload(bed.index(a))
        .cloned()
        .unwrap_or_else(Workload::host);
    assert_eq!(
        (
            cart.kind,
            cart.name.as_str(),
            cart.namespace.as_deref(),
            cart.owner_kind
        ),
        (
            WorkloadKind::Pod,
            "cart",
            Some("shop"),
            Some(OwnerKind::Deployment)
        )
    );
    // The shared index names no single pod or container; each cgroup still knows its own.
    assert_eq!((cart.pod, cart.container), (None, None));
    let own = reg_cgroup(&bed, c);
    assert_eq!(
        (own.pod.as_deref(), own.container.as_deref()),
        (Some("cart-7d9f8b6c5d-x2k4q"), Some("sidecar"))
    );
    // Every cgroup is in the kernel update, each once; nothing to delete.
    let mut ids: Vec<u64> = update.upsert.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), update.upsert.len());
    for id in [init, nginx, nginx_sub, session, a, b, c] {
        assert!(
            update.upsert.contains(&(id, bed.index(id))),
            "cgroup {id} missing from the upsert list"
        );
    }
    assert!(update.remove.is_empty() && update.released.is_empty());
    // Workloads assigned: nginx, user, cart, and the inner nodes' neighbours are host.
    let names: Vec<&str> = update
        .assigned
        .iter()
        .map(|(_, w)| w.name.as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // A second walk of an unchanged tree changes nothing.
    assert_eq!(bed.refresh(2), Update::default());
}

#[test]
fn gone_workloads_keep_their_index_until_reuse_after() {
    let mut bed = Bed::new("reg-reuse", config(200, 60));
    let web = bed.cgroup("system.slice/web.service");
    bed.refresh(0);
    let web_index = bed.index(web);
    bed.dir.rmdir("cg/system.slice/web.service");
    let u = bed.refresh(2);
    assert_eq!(
        (u.remove.as_slice(), u.released.len()),
        ([web].as_slice(), 0)
    );
    assert_eq!(
        bed.registry
            .workloads()
            .map(|(i, _, live)| (i, live))
            .collect::<Vec<_>>(),
        [(web_index, false)]
    );
    // Back within the minute (a restarted unit, new cgroup id): same index.
    let web2 = bed.cgroup("system.slice/web.service");
    bed.refresh(30);
    assert_eq!(bed.index(web2), web_index);
    // Gone for a minute: released, and the next workload may take the index.
    bed.dir.rmdir("cg/system.slice/web.service");
    bed.refresh(40);
    let api = bed.cgroup("system.slice/api.service");
    let u = bed.refresh(100);
    assert_eq!(
        u.released
            .iter()
            .map(|(i, w)| (*i, w.name.as_str()))
            .collect::<Vec<_>>(),
        [(web_index, "web.service")]
    );
    assert_eq!(
        u.assigned.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [web_index],
        "the freed index is reused"
    );
    assert_eq!(bed.index(api), web_index);
    assert_eq!(bed.registry.stats().released_total, 1);
}

#[test]
fn beyond_the_cap_cgroups_go_to_other_and_are_counted() {
    let mut bed = Bed::new("reg-cap", config(2, 0));
    let a = bed.cgroup("system.slice/a.service");
    let b = bed.cgroup("system.slice/b.service");
    bed.refresh(0);
    let c = bed.cgroup("system.slice/c.service");
    let c2 = bed.cgroup("system.slice/c.service/child");
    bed.refresh(2);
    assert_eq!((bed.index(c), bed.index(c2)), (OTHER_INDEX, OTHER_INDEX));
    assert_eq!(bed.registry.workload(OTHER_INDEX), None);
    assert_ne!(bed.index(a), bed.index(b));
    let s = bed.registry.stats().clone();
    assert_eq!((s.overflow_total, s.other_cgroups, s.workloads), (2, 2, 2));
    // Still full: no new counts on the next walk.
    bed.refresh(4);
    assert_eq!(bed.registry.stats().overflow_total, 2);
    // `a` leaves; with reuse_after 0 its index is released at once and goes to `c`.
    let a_index = bed.index(a);
    bed.dir.rmdir("cg/system.slice/a.service");
    let u = bed.refresh(6);
    assert_eq!(u.remove, [a]);
    assert_eq!(
        u.released.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [a_index]
    );
    assert_eq!((bed.index(c), bed.index(c2)), (a_index, a_index));
    assert!(u.upsert.contains(&(c, a_index)) && u.upsert.contains(&(c2, a_index)));
    assert_eq!(bed.registry.stats().other_cgroups, 0);
}

#[test]
fn a_bad_bundle_warns_once_and_falls_back_to_the_short_id() {
    let mut bed = Bed::new("reg-bad", config(200, 300));
    let id = "d".repeat(64);
    let bundle = format!("containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json");
    bed.dir.write(
        &bundle,
        "{\"annotations\": {\"io.kubernetes.cri.sandbox-name\": ",
    );
    let cg = bed.cgroup(&format!("{POD_SLICE}/cri-containerd-{id}.scope"));
    let sub = bed.cgroup(&format!("{POD_SLICE}/cri-containerd-{id}.scope/sub"));
    bed.refresh(0);
    bed.refresh(2);
    assert_eq!(
        bed.name_of(cg),
        (WorkloadKind::Container, "dddddddddddd".into())
    );
    assert_eq!(bed.index(sub), bed.index(cg));
    assert_eq!(
        bed.registry.stats().runtime_errors_total,
        1,
        "one warning for two cgroups and two walks"
    );
    // The runtime rewrites the file: a later walk (within the retries) names the pod.
    bed.dir.write(
        &bundle,
        r#"{"annotations":{"io.kubernetes.cri.sandbox-name":"redis-0","io.kubernetes.cri.sandbox-namespace":"db"}}"#,
    );
    let u = bed.refresh(4);
    assert_eq!(bed.name_of(cg), (WorkloadKind::Pod, "redis".into()));
    assert!(u.upsert.contains(&(cg, bed.index(cg))));
}

#[test]
fn pod_granularity_splits_pods() {
    let mut bed = Bed::new(
        "reg-gran",
        RegistryConfig {
            granularity: Granularity::Pod,
            ..config(200, 300)
        },
    );
    let a = bed.pod_container(&"a".repeat(64), "shop", "cart-7d9f8b6c5d-x2k4q", "app");
    let b = bed.pod_container(&"b".repeat(64), "shop", "cart-7d9f8b6c5d-p9m2z", "app");
    let c = bed.pod_container(&"c".repeat(64), "shop", "cart-7d9f8b6c5d-x2k4q", "sidecar");
    bed.refresh(0);
    assert_ne!(bed.index(a), bed.index(b));
    assert_eq!(bed.index(a), bed.index(c));
    let pod = bed
        .registry
        .workload(bed.index(b))
        .and_then(|w| w.pod.clone());
    assert_eq!(
        pod.as_deref(),
        Some("cart-7d9f8b6c5d-p9m2z"),
        "a per-pod index names its pod"
    );
}

#[test]
fn an_id_seen_under_a_new_path_is_named_again() {
    // refresh() is pure over the walk's entries: no tree needed.
    let mut reg = WorkloadRegistry::new(config(200, 300), RuntimeState::default());
    let t0 = Instant::now();
    let entry = |path: &str| CgroupEntry {
        id: 50,
        path: path.into(),
    };
    reg.refresh(&[entry("system.slice/a.service")], t0);
    let a = reg.index_of(50);
    let u = reg.refresh(&[entry("system.slice/b.service")], t0);
    let b = reg.index_of(50);
    assert_ne!(a, b);
    assert_eq!(
        reg.workload(b.unwrap_or(OTHER_INDEX))
            .map(|w| w.name.as_str()),
        Some("b.service")
    );
    assert_eq!(u.upsert, b.map(|b| (50, b)).into_iter().collect::<Vec<_>>());
}
