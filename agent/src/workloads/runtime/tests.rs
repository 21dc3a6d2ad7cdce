//! Runtime state in each runtime's documented layout, in a temp dir.

use super::*;
use crate::workloads::test_dir::TestDir;

const ID: &str = "3f1c2a9be04d5c6f7a8b9c0d1e2f30415263748596a7b8c9d0e1f2a3b4c5d6e7";
const SANDBOX: &str = "aa1c2a9be04d5c6f7a8b9c0d1e2f30415263748596a7b8c9d0e1f2a3b4c5d6e7";

fn state(dir: &TestDir) -> RuntimeState {
    RuntimeState::new(RuntimePaths {
        containerd_state: dir.path().join("containerd"),
        crio_containers: dir.path().join("crio"),
        docker_containers: dir.path().join("docker"),
    })
}

fn cref(runtime: Option<Runtime>, id: &str, namespace: Option<&str>) -> ContainerRef {
    ContainerRef {
        runtime,
        id: id.into(),
        namespace: namespace.map(str::to_string),
        pod_uid: None,
        speculative: false,
    }
}

fn found(r: Result<Option<ContainerMeta>, RuntimeError>) -> ContainerMeta {
    match r {
        Ok(Some(m)) => m,
        other => panic!("expected runtime metadata, got {other:?}"),
    }
}

#[test]
fn containerd_cri_annotations() {
    let dir = TestDir::new("rt-containerd");
    dir.write(
        &format!("containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
        r#"{"ociVersion":"1.0.2","annotations":{
            "io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"app",
            "io.kubernetes.cri.sandbox-name":"cart-7d9f8b6c5d-x2k4q",
            "io.kubernetes.cri.sandbox-namespace":"shop",
            "io.kubernetes.cri.sandbox-uid":"8a4b3c2d-1e0f-4a5b-9c8d-7e6f5a4b3c2d"}}"#,
    );
    let m = found(state(&dir).lookup(&cref(Some(Runtime::Containerd), ID, None)));
    assert_eq!(
        (
            m.namespace.as_deref(),
            m.pod.as_deref(),
            m.container.as_deref(),
            m.sandbox
        ),
        (
            Some("shop"),
            Some("cart-7d9f8b6c5d-x2k4q"),
            Some("app"),
            false
        )
    );
    assert_eq!(
        m.pod_uid.as_deref(),
        Some("8a4b3c2d-1e0f-4a5b-9c8d-7e6f5a4b3c2d")
    );
    // cgroupfs `kubepods/.../<id>` says no runtime: containerd is tried first.
    assert_eq!(found(state(&dir).lookup(&cref(None, ID, None))).pod, m.pod);
}

#[test]
fn containerd_plain_container_in_its_namespace() {
    let dir = TestDir::new("rt-ctr");
    dir.write(
        "containerd/io.containerd.runtime.v2.task/default/web/config.json",
        r#"{"ociVersion":"1.0.2","process":{}}"#,
    );
    let m = found(state(&dir).lookup(&cref(Some(Runtime::Containerd), "web", Some("default"))));
    assert_eq!(m, ContainerMeta::default());
    // Without a namespace in the path, every namespace is searched.
    assert_eq!(
        found(state(&dir).lookup(&cref(Some(Runtime::Containerd), "web", None))),
        ContainerMeta::default()
    );
    assert!(matches!(
        state(&dir).lookup(&cref(Some(Runtime::Containerd), "web", Some("k8s.io"))),
        Ok(None)
    ));
}

#[test]
fn crio_annotations_and_sandbox_labels() {
    let dir = TestDir::new("rt-crio");
    dir.write(
        &format!("crio/{SANDBOX}/userdata/config.json"),
        r#"{"annotations":{"io.kubernetes.cri-o.ContainerType":"sandbox",
            "io.kubernetes.pod.namespace":"batch","io.kubernetes.pod.name":"migrate-db-9fk2w",
            "io.kubernetes.container.name":"POD",
            "io.kubernetes.cri-o.Labels":"{\"batch.kubernetes.io/job-name\":\"migrate-db\",\"job-name\":\"migrate-db\"}"}}"#,
    );
    dir.write(
        &format!("crio/{ID}/userdata/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri-o.ContainerType":"container","io.kubernetes.cri-o.SandboxID":"{SANDBOX}",
            "io.kubernetes.pod.namespace":"batch","io.kubernetes.pod.name":"migrate-db-9fk2w",
            "io.kubernetes.container.name":"migrate","io.kubernetes.cri-o.Labels":"{{\"io.kubernetes.container.name\":\"migrate\"}}"}}}}"#
        ),
    );
    let m = found(state(&dir).lookup(&cref(Some(Runtime::Crio), ID, None)));
    assert_eq!(
        (m.namespace.as_deref(), m.container.as_deref()),
        (Some("batch"), Some("migrate"))
    );
    assert_eq!(
        m.labels.get("job-name").map(String::as_str),
        Some("migrate-db"),
        "labels come from the sandbox"
    );
    let s = found(state(&dir).lookup(&cref(Some(Runtime::Crio), SANDBOX, None)));
    assert!(s.sandbox);
    assert_eq!(s.labels.len(), 2);
}

#[test]
fn docker_name_and_cri_dockerd_labels() {
    let dir = TestDir::new("rt-docker");
    dir.write(
        &format!("docker/{ID}/config.v2.json"),
        r#"{"ID":"x","Name":"/billing-worker","Config":{"Labels":{}}}"#,
    );
    let m = found(state(&dir).lookup(&cref(Some(Runtime::Docker), ID, None)));
    assert_eq!(
        (m.container.as_deref(), m.pod),
        (Some("/billing-worker"), None)
    );
    dir.write(
        &format!("docker/{SANDBOX}/config.v2.json"),
        r#"{"Name":"/k8s_app_web-0_shop_uid_0","Config":{"Labels":{"io.kubernetes.pod.namespace":"shop",
            "io.kubernetes.pod.name":"web-0","io.kubernetes.container.name":"app"}}}"#,
    );
    let m = found(state(&dir).lookup(&cref(None, SANDBOX, None)));
    assert_eq!(
        (m.pod.as_deref(), m.container.as_deref()),
        (Some("web-0"), Some("app"))
    );
}

#[test]
fn missing_state_is_not_an_error() {
    let dir = TestDir::new("rt-none");
    for runtime in [
        Some(Runtime::Containerd),
        Some(Runtime::Crio),
        Some(Runtime::Docker),
        None,
    ] {
        assert!(
            matches!(state(&dir).lookup(&cref(runtime, ID, None)), Ok(None)),
            "{runtime:?}"
        );
    }
}

fn malformed(r: Result<Option<ContainerMeta>, RuntimeError>) -> String {
    match r {
        Err(e @ RuntimeError::Malformed { .. }) => e.to_string(),
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

#[test]
fn bad_files_name_the_file_and_field() {
    let dir = TestDir::new("rt-bad");
    let st = state(&dir);
    let task = format!("containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json");
    dir.write(&task, "{\"annotations\": ");
    let e = malformed(st.lookup(&cref(Some(Runtime::Containerd), ID, None)));
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
    dir.write(&task, r#"{"annotations": ["x"]}"#);
    let e = malformed(st.lookup(&cref(Some(Runtime::Containerd), ID, None)));
    assert!(e.contains("field annotations is not an object"), "{e}");
    dir.write(
        &task,
        r#"{"annotations": {"io.kubernetes.cri.sandbox-name": 7}}"#,
    );
    let e = malformed(st.lookup(&cref(Some(Runtime::Containerd), ID, None)));
    assert!(
        e.contains("io.kubernetes.cri.sandbox-name is not a string"),
        "{e}"
    );
    dir.write(&format!("docker/{ID}/config.v2.json"), r#"{"ID":"x"}"#);
    let e = malformed(st.lookup(&cref(Some(Runtime::Docker), ID, None)));
    assert!(
        e.contains("config.v2.json") && e.contains("field Name"),
        "{e}"
    );
}

#[test]
fn odd_crio_labels_fall_back_to_no_labels() {
    assert!(parse_labels("not json").is_empty());
    assert_eq!(parse_labels(r#"{"a":"b","n":3}"#).len(), 1);
}
