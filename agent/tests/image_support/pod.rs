//! The DaemonSet's pod on the test's containerd, driven over CRI as the kubelet drives it:
//! RunPodSandbox, CreateContainer, StartContainer; StopContainer with the grace period, then
//! StopPodSandbox and RemovePodSandbox.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    ContainerStatusRequest, CreateContainerRequest, Mount, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

use super::{cri, daemonset::AgentContainer};
use crate::containerd_support::Containerd;

pub struct AgentPod {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    sandbox: String,
    pub container: String,
    log_path: PathBuf,
}

impl AgentPod {
    /// Starts the pod `uid` on node `node` with the manifest's container, `mounts` and `env`.
    pub fn start(
        ctrd: &Containerd,
        c: &AgentContainer,
        mounts: Vec<Mount>,
        env: &[(String, String)],
        uid: &str,
        node: &str,
    ) -> AgentPod {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio: {e}"));
        let mut client = rt.block_on(cri::client(&ctrd.socket()));
        let log_dir = ctrd.dir.join("pods").join(uid);
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_dir.display()));
        let sandbox_config = cri::sandbox_config(uid, node, &log_dir, c.host_network);
        let sandbox = rt
            .block_on(client.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: String::new(),
            }))
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;
        let container = rt
            .block_on(client.create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(cri::container_config(c, mounts, env)),
                sandbox_config: Some(sandbox_config),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
            .into_inner()
            .container_id;
        rt.block_on(client.start_container(StartContainerRequest {
            container_id: container.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
        let log_path = log_dir.join(format!("{}/0.log", cri::CONTAINER_NAME));
        AgentPod {
            rt,
            client,
            sandbox,
            container,
            log_path,
        }
    }

    /// The container's stdout and stderr as containerd logged them.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// SIGTERM with `grace` before SIGKILL, as the kubelet stops a container; how long it took
    /// and the exit code.
    pub fn stop_container(&mut self, grace: Duration) -> (Duration, i32) {
        let t = Instant::now();
        self.rt
            .block_on(self.client.stop_container(StopContainerRequest {
                container_id: self.container.clone(),
                timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            }))
            .unwrap_or_else(|e| panic!("StopContainer: {e}"));
        let took = t.elapsed();
        let status = self
            .rt
            .block_on(self.client.container_status(ContainerStatusRequest {
                container_id: self.container.clone(),
                verbose: false,
            }))
            .unwrap_or_else(|e| panic!("ContainerStatus: {e}"))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("ContainerStatus without a status"));
        (took, status.exit_code)
    }

    pub fn remove(mut self) {
        self.rt
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            }))
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
        self.rt
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: self.sandbox.clone(),
            }))
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    }
}
