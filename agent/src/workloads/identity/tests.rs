use super::*;

const ID: &str = "3f1c2a9be04d5c6f7a8b9c0d1e2f30415263748596a7b8c9d0e1f2a3b4c5d6e7";
const UID: &str = "8a4b3c2d-1e0f-4a5b-9c8d-7e6f5a4b3c2d";

fn no_runtime(path: &str) -> Workload {
    identify(path, &RuntimeInfo::NotFound, 2)
}

fn kind_name(w: &Workload) -> (WorkloadKind, &str) {
    (w.kind, w.name.as_str())
}

#[test]
fn host_processes() {
    // Inner nodes (slices only, kubepods above the containers) hold no processes of their own.
    for p in [
        "",
        "/",
        "init.scope",
        "system.slice",
        "user.slice/user-1000.slice",
        "kubepods.slice/kubepods-burstable.slice",
        "kubepods/burstable",
    ] {
        assert_eq!(no_runtime(p), Workload::host(), "path {p:?}");
    }
}

#[test]
fn systemd_units_and_user_sessions() {
    assert_eq!(
        kind_name(&no_runtime("system.slice/nginx.service")),
        (WorkloadKind::Systemd, "nginx.service")
    );
    assert_eq!(
        kind_name(&no_runtime("/system.slice/nginx.service/worker")),
        (WorkloadKind::Systemd, "nginx.service")
    );
    assert_eq!(
        kind_name(&no_runtime(
            "system.slice/system-getty.slice/getty@tty1.service"
        )),
        (WorkloadKind::Systemd, "getty@tty1.service")
    );
    assert_eq!(
        kind_name(&no_runtime("system.slice/run-r8d1c.scope")),
        (WorkloadKind::Systemd, "run-r8d1c.scope")
    );
    for p in [
        "user.slice/user-1000.slice/session-3.scope",
        "user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
    ] {
        assert_eq!(
            kind_name(&no_runtime(p)),
            (WorkloadKind::Systemd, "user"),
            "path {p}"
        );
    }
}

#[test]
fn anything_else_is_cut_at_the_depth() {
    assert_eq!(
        kind_name(&no_runtime("azflow-bed-12/a1/inner/x")),
        (WorkloadKind::Host, "azflow-bed-12/a1")
    );
    assert_eq!(
        kind_name(&identify(
            "azflow-bed-12/a1/inner",
            &RuntimeInfo::NotFound,
            1
        )),
        (WorkloadKind::Host, "azflow-bed-12")
    );
    assert_eq!(
        kind_name(&no_runtime("lonely")),
        (WorkloadKind::Host, "lonely")
    );
}

fn reference(path: &str) -> ContainerRef {
    container_ref(path).unwrap_or_else(|| panic!("no container in {path}"))
}

#[test]
fn container_ids_under_the_systemd_driver() {
    let uid_ = UID.replace('-', "_");
    let r = reference(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
    ));
    assert_eq!(
        (
            r.runtime,
            r.id.as_str(),
            r.pod_uid.as_deref(),
            r.speculative
        ),
        (Some(Runtime::Containerd), ID, Some(UID), false)
    );
    let r = reference(&format!(
        "kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"
    ));
    assert_eq!(
        (r.runtime, r.pod_uid.as_deref()),
        (Some(Runtime::Crio), Some(UID))
    );
    let r = reference(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-conmon-{ID}.scope"
    ));
    assert_eq!((r.runtime, r.id.as_str()), (Some(Runtime::Crio), ID));
    let r = reference(&format!("system.slice/docker-{ID}.scope"));
    assert_eq!(
        (r.runtime, r.id.as_str(), r.pod_uid),
        (Some(Runtime::Docker), ID, None)
    );
    // A container's own sub-cgroups belong to it.
    let r = reference(&format!("system.slice/docker-{ID}.scope/init/sub"));
    assert_eq!(r.id, ID);
}

#[test]
fn container_ids_under_the_cgroupfs_driver() {
    let r = reference(&format!("/kubepods/burstable/pod{UID}/{ID}"));
    assert_eq!(
        (r.runtime, r.id.as_str(), r.pod_uid.as_deref()),
        (None, ID, Some(UID))
    );
    let r = reference(&format!("/kubepods/pod{UID}/{ID}"));
    assert_eq!(r.pod_uid.as_deref(), Some(UID));
    let r = reference(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}"));
    assert_eq!((r.runtime, r.id.as_str()), (Some(Runtime::Crio), ID));
    let r = reference(&format!("/docker/{ID}"));
    assert_eq!((r.runtime, r.speculative), (Some(Runtime::Docker), false));
    let r = reference(&format!("/k8s.io/{ID}"));
    assert_eq!(
        (r.runtime, r.namespace.as_deref(), r.speculative),
        (Some(Runtime::Containerd), Some("k8s.io"), true)
    );
    let r = reference("/default/web");
    assert_eq!(
        (r.namespace.as_deref(), r.id.as_str()),
        (Some("default"), "web")
    );
}

#[test]
fn no_container_in_systemd_or_bad_names() {
    for p in [
        "system.slice/containerd.service",
        "init.scope",
        "",
        "system.slice/docker-.scope",
        "kubepods/burstable/pod12",
    ] {
        assert_eq!(container_ref(p), None, "path {p}");
    }
    assert_eq!(
        container_ref(&format!("kubepods/burstable/pod{UID}/..")),
        None
    );
}

#[test]
fn without_runtime_state_a_container_is_its_short_id() {
    let w = no_runtime(&format!("system.slice/docker-{ID}.scope"));
    assert_eq!(kind_name(&w), (WorkloadKind::Container, &ID[..SHORT_ID]));
    let w = identify(
        &format!("/kubepods/burstable/pod{UID}/{ID}"),
        &RuntimeInfo::Unreadable,
        2,
    );
    assert_eq!(kind_name(&w), (WorkloadKind::Container, &ID[..SHORT_ID]));
    // The speculative `<namespace>/<id>` shape: unknown to the runtime, so not a container...
    assert_eq!(
        kind_name(&no_runtime("/default/web")),
        (WorkloadKind::Host, "default/web")
    );
    // ...but a bad bundle the runtime does have still makes it one.
    assert_eq!(
        kind_name(&identify("/default/web", &RuntimeInfo::Unreadable, 2)),
        (WorkloadKind::Container, "web")
    );
}

fn pod_meta(ns: &str, pod: &str, container: Option<&str>) -> RuntimeInfo {
    RuntimeInfo::Found(ContainerMeta {
        namespace: Some(ns.into()),
        pod: Some(pod.into()),
        pod_uid: Some(UID.into()),
        container: container.map(str::to_string),
        ..ContainerMeta::default()
    })
}

#[test]
fn pod_containers_get_namespace_pod_and_owner() {
    let path = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
        UID.replace('-', "_")
    );
    let w = identify(
        &path,
        &pod_meta("shop", "cart-7d9f8b6c5d-x2k4q", Some("app")),
        2,
    );
    assert_eq!(
        w,
        Workload {
            kind: WorkloadKind::Pod,
            name: "cart".into(),
            namespace: Some("shop".into()),
            pod: Some("cart-7d9f8b6c5d-x2k4q".into()),
            container: Some("app".into()),
            owner_kind: Some(OwnerKind::Deployment),
        }
    );
    // The sandbox belongs to the same workload, with no container name.
    let sandbox = RuntimeInfo::Found(ContainerMeta {
        sandbox: true,
        ..match pod_meta("shop", "cart-7d9f8b6c5d-x2k4q", None) {
            RuntimeInfo::Found(m) => m,
            other => panic!("pod_meta gave {other:?}"),
        }
    });
    let s = identify(&path, &sandbox, 2);
    assert_eq!(
        (s.kind, s.name.as_str(), s.container),
        (WorkloadKind::Pod, "cart", None)
    );
    // CRI-O's infra container is named POD.
    let infra = identify(
        &path,
        &pod_meta("kube-system", "kube-proxy-7xk2p", Some("POD")),
        2,
    );
    assert_eq!(
        (infra.name.as_str(), infra.container, infra.owner_kind),
        ("kube-proxy", None, Some(OwnerKind::DaemonSet))
    );
}

#[test]
fn docker_and_plain_containerd_names() {
    let docker = RuntimeInfo::Found(ContainerMeta {
        container: Some("/billing-worker".into()),
        ..ContainerMeta::default()
    });
    let w = identify(&format!("/docker/{ID}"), &docker, 2);
    assert_eq!(
        (w.kind, w.name.as_str(), w.container.as_deref()),
        (
            WorkloadKind::Container,
            "billing-worker",
            Some("billing-worker")
        )
    );
    let plain = RuntimeInfo::Found(ContainerMeta::default());
    assert_eq!(
        kind_name(&identify("/default/web", &plain, 2)),
        (WorkloadKind::Container, "web")
    );
    assert_eq!(
        kind_name(&identify(&format!("/k8s.io/{ID}"), &plain, 2)),
        (WorkloadKind::Container, &ID[..SHORT_ID])
    );
}
