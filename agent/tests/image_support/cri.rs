//! The CRI requests the kubelet sends for the DaemonSet's pod: a host-network sandbox in the
//! Burstable QoS cgroup (requests below limits), and the container with the manifest's
//! securityContext, resources, mounts, command, args and environment, translated as the kubelet
//! translates them (capability names without `CAP_`, which containerd adds; limits as CFS quota
//! and memory bytes; `allowPrivilegeEscalation: false` as no_new_privs).

use std::{collections::HashMap, path::Path};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode,
    NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile, StatusRequest,
    runtime_service_client::RuntimeServiceClient, security_profile::ProfileType,
};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

use super::daemonset::{AgentContainer, VolumeMount};

pub const POD_NAMESPACE: &str = "azflow";
pub const CONTAINER_NAME: &str = "azflow";

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

fn namespaces(host_network: bool) -> Option<NamespaceOption> {
    let network = if host_network {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    Some(NamespaceOption {
        network: network as i32,
        ..NamespaceOption::default()
    })
}

/// The DaemonSet pod's sandbox on node `node`, logs under `log_dir`.
pub fn sandbox_config(
    uid: &str,
    node: &str,
    log_dir: &Path,
    host_network: bool,
) -> PodSandboxConfig {
    let name = format!("azflow-{}", &uid[uid.len() - 5..]);
    let labels: HashMap<String, String> = [
        ("io.kubernetes.pod.name", name.as_str()),
        ("io.kubernetes.pod.namespace", POD_NAMESPACE),
        ("io.kubernetes.pod.uid", uid),
        ("app.kubernetes.io/name", "azflow"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name,
            uid: uid.into(),
            namespace: POD_NAMESPACE.into(),
            attempt: 0,
        }),
        // A host-network pod keeps the node's UTS namespace and name.
        hostname: if host_network {
            String::new()
        } else {
            node.into()
        },
        log_directory: log_dir.display().to_string(),
        labels,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/burstable/pod{uid}"),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: namespaces(host_network),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container, with `mounts` (the manifest's, their sources placed by the test) and `env`.
pub fn container_config(
    c: &AgentContainer,
    mounts: Vec<Mount>,
    env: &[(String, String)],
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: CONTAINER_NAME.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        envs: env
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts,
        log_path: format!("{CONTAINER_NAME}/0.log"),
        labels: [(
            "io.kubernetes.container.name".to_owned(),
            CONTAINER_NAME.to_owned(),
        )]
        .into_iter()
        .collect(),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(&c.resources)),
            security_context: Some(security_context(&c.security, c.host_network)),
        }),
        ..Default::default()
    }
}

/// A manifest volumeMount as a CRI mount of `host_path`. `rro_supported`: the runtime handler
/// advertises recursive read-only mounts ([`recursive_read_only_supported`]).
pub fn mount(m: &VolumeMount, host_path: &Path, rro_supported: bool) -> Mount {
    // As the kubelet decides it (makeMounts): IfPossible follows the runtime, Enabled requires it.
    let recursive_read_only = match m.recursive_read_only.as_str() {
        "Disabled" => false,
        "IfPossible" => rro_supported,
        "Enabled" if rro_supported => true,
        "Enabled" => panic!("{}: recursiveReadOnly Enabled, and the runtime cannot", m.name),
        other => panic!("{}: recursiveReadOnly {other:?} is not a Kubernetes value", m.name),
    };
    assert!(
        !recursive_read_only || (m.read_only && m.propagation == "None"),
        "{}: the API server allows recursiveReadOnly only on readOnly mounts without propagation",
        m.name
    );
    let propagation = match m.propagation.as_str() {
        "None" => MountPropagation::PropagationPrivate,
        "HostToContainer" => MountPropagation::PropagationHostToContainer,
        "Bidirectional" => MountPropagation::PropagationBidirectional,
        other => panic!("mountPropagation {other:?} is not a Kubernetes value"),
    };
    Mount {
        container_path: m.container_path.clone(),
        host_path: host_path.display().to_string(),
        readonly: m.read_only,
        recursive_read_only,
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// Whether the default runtime handler does recursive read-only mounts (CRI Status), as the
/// kubelet asks before it translates `recursiveReadOnly: IfPossible`.
pub async fn recursive_read_only_supported(client: &mut RuntimeServiceClient<Channel>) -> bool {
    let status = client
        .status(StatusRequest { verbose: false })
        .await
        .unwrap_or_else(|e| panic!("Status: {e}"))
        .into_inner();
    status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .is_some_and(|f| f.recursive_read_only_mounts)
}

/// The securityContext, field by field; a field this test does not know fails it, so a new
/// setting in the manifest cannot go untested.
fn security_context(sc: &Value, host_network: bool) -> LinuxContainerSecurityContext {
    let obj = sc
        .as_object()
        .expect("the DaemonSet's container has a securityContext");
    let known = [
        "privileged",
        "allowPrivilegeEscalation",
        "readOnlyRootFilesystem",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "capabilities",
        "seccompProfile",
        "appArmorProfile",
    ];
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        panic!(
            "securityContext.{k} is new: translate it in image_support/cri.rs as the kubelet does"
        );
    }
    let names = |k: &str| -> Vec<String> {
        sc["capabilities"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let profile = |v: &Value| -> Option<SecurityProfile> {
        let t = match v["type"].as_str()? {
            "Unconfined" => ProfileType::Unconfined,
            "RuntimeDefault" => ProfileType::RuntimeDefault,
            other => panic!("profile type {other} is not translated here"),
        };
        Some(SecurityProfile {
            profile_type: t as i32,
            ..Default::default()
        })
    };
    assert!(
        sc["runAsNonRoot"].as_bool() != Some(true),
        "runAsNonRoot: the kubelet would check the image's user"
    );
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: names("add"),
            drop_capabilities: names("drop"),
            ..Default::default()
        }),
        privileged: sc["privileged"].as_bool().unwrap_or(false),
        namespace_options: namespaces(host_network),
        run_as_user: sc["runAsUser"].as_i64().map(|value| Int64Value { value }),
        run_as_group: sc["runAsGroup"].as_i64().map(|value| Int64Value { value }),
        readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        no_new_privs: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        seccomp: profile(&sc["seccompProfile"]),
        apparmor: profile(&sc["appArmorProfile"]),
        ..Default::default()
    }
}

/// "500m" → 500, "1" → 1000.
fn millicpu(v: &Value) -> Option<i64> {
    let s = v
        .as_str()
        .map(str::to_owned)
        .or_else(|| v.as_i64().map(|n| n.to_string()))?;
    match s.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => s.parse::<i64>().ok().map(|n| n * 1000),
    }
}

/// "256Mi" → bytes.
fn bytes(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    for (suffix, mult) in [("Ki", 1i64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<i64>().ok().map(|n| n * mult);
        }
    }
    s.parse().ok()
}

/// As the kubelet's cgroup v1 translation: shares from the CPU request, a CFS quota per 100 ms
/// from the CPU limit, and the memory limit.
fn resources(r: &Value) -> LinuxContainerResources {
    const PERIOD: i64 = 100_000;
    let limit = millicpu(&r["limits"]["cpu"]);
    LinuxContainerResources {
        cpu_shares: millicpu(&r["requests"]["cpu"]).map_or(2, |m| (m * 1024 / 1000).max(2)),
        cpu_period: limit.map_or(0, |_| PERIOD),
        cpu_quota: limit.map_or(0, |m| m * PERIOD / 1000),
        memory_limit_in_bytes: bytes(&r["limits"]["memory"]).unwrap_or(0),
        ..Default::default()
    }
}
