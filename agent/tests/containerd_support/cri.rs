//! The kubelet's side of the CRI, as far as the tests need it: a client on containerd's socket,
//! and a host-network pod with one container made the way the kubelet makes it (RunPodSandbox,
//! CreateContainer, StartContainer) under a cgroupfs-driver parent.
#![allow(dead_code, reason = "each suite that includes containerd_support uses a different part")]

use std::{collections::HashMap, path::Path};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint, Uri};

use super::IMAGE;

/// What the kubelet knows of a pod: its names and its cgroup parent
/// (`/kubepods/besteffort/pod<uid>` for a BestEffort pod with the cgroupfs driver).
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    /// `pod-template-hash` label of a Deployment's pod.
    pub template_hash: &'a str,
    pub cgroup_parent: String,
    pub container: &'a str,
}

pub async fn client(socket: &Path) -> RuntimeServiceClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]")
        .unwrap_or_else(|e| panic!("endpoint: {e}"))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connecting to containerd's CRI: {e}"));
    RuntimeServiceClient::new(channel)
}

fn host_network() -> Option<NamespaceOption> {
    Some(NamespaceOption {
        network: NamespaceMode::Node as i32,
        ..NamespaceOption::default()
    })
}

/// The sandbox config as the kubelet sends it (no hostname: a host-network pod has the node's
/// UTS namespace).
pub fn sandbox_config(p: &PodSpec<'_>) -> PodSandboxConfig {
    let labels: HashMap<String, String> = [
        ("io.kubernetes.pod.name", p.name),
        ("io.kubernetes.pod.namespace", p.namespace),
        ("io.kubernetes.pod.uid", p.uid),
        ("pod-template-hash", p.template_hash),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: p.name.into(),
            uid: p.uid.into(),
            namespace: p.namespace.into(),
            attempt: 0,
        }),
        labels,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: p.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: host_network(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox + CreateContainer + StartContainer; returns (sandbox id, container id).
pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    p: &PodSpec<'_>,
) -> (String, String) {
    let config = sandbox_config(p);
    let sandbox = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: p.container.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".into(), "100000".into()],
        labels: [(
            "io.kubernetes.container.name".to_string(),
            p.container.to_string(),
        )]
        .into_iter()
        .collect(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: host_network(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
    (sandbox, id)
}

pub async fn remove_pod(client: &mut RuntimeServiceClient<Channel>, sandbox: &str) {
    let id = sandbox.to_string();
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    client
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
}

/// The process's cgroup v2 path (the `0::` line; hybrid hosts list v1 controllers beside it).
pub fn unified_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no cgroup v2 line in {text}"))
}
