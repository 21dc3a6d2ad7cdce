//! Runtime state files as the agent reads them from the host (containerd's task bundle
//! config.json, CRI-O's userdata/config.json, Docker's config.v2.json): any content gives names,
//! nothing, or an error naming the file, never a panic; whatever it names, a cgroup path of that
//! container is identified from it.

#![no_main]

use std::path::Path;

use azflow::workloads::{
    identity::{ContainerRef, Runtime, RuntimeInfo, identify},
    runtime::{RuntimePaths, RuntimeSource as _, RuntimeState},
};
use libfuzzer_sys::fuzz_target;

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("fuzz state dir");
    }
    std::fs::write(path, data).expect("fuzz state file");
}

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("azflow-fuzz-runtime-{}", std::process::id()));
    let paths = RuntimePaths {
        containerd_state: root.join("containerd"),
        crio_containers: root.join("crio"),
        docker_containers: root.join("docker"),
    };
    write(&paths.containerd_state.join("io.containerd.runtime.v2.task/k8s.io").join(ID).join("config.json"), data);
    write(&paths.crio_containers.join(ID).join("userdata/config.json"), data);
    write(&paths.docker_containers.join(ID).join("config.v2.json"), data);
    let state = RuntimeState::new(paths);
    for (runtime, cgroup) in [
        (Runtime::Containerd, format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope")),
        (Runtime::Crio, format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope")),
        (Runtime::Docker, format!("/system.slice/docker-{ID}.scope")),
    ] {
        let c = ContainerRef { runtime: Some(runtime), id: ID.into(), namespace: None, pod_uid: None, speculative: false };
        let info = match state.lookup(&c) {
            Ok(Some(meta)) => RuntimeInfo::Found(meta),
            Ok(None) => RuntimeInfo::NotFound,
            Err(e) => {
                assert!(e.to_string().contains(ID), "an error names the file: {e}");
                RuntimeInfo::Unreadable
            }
        };
        let _ = identify(&cgroup, &info, 3);
    }
});
