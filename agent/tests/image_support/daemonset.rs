//! The agent's container as `deploy/kubernetes/` declares it (the chart's defaults render the
//! same objects, `deploy_manifests.rs` checks it), read from the YAML — so a mount, variable or
//! capability added to the manifest reaches this test without anyone copying it here.

use std::{path::Path, process::Command};

use serde_json::Value;

/// One volumeMount with the volume it names.
#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub name: String,
    pub container_path: String,
    pub read_only: bool,
    /// `HostToContainer`, `Bidirectional` or `None`.
    pub propagation: String,
    /// `recursiveReadOnly`: `Disabled` (or unset), `IfPossible` or `Enabled`.
    pub recursive_read_only: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone)]
pub enum VolumeSource {
    /// The node's path and the hostPath `type` ("" when unset: no check).
    HostPath { path: String, kind: String },
    /// A ConfigMap's name (its keys become files).
    ConfigMap(String),
}

/// What the kubelet would hand the runtime for the DaemonSet's one container.
#[derive(Debug, Clone)]
pub struct AgentContainer {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `env` values (fieldRefs resolved as on `node_name`), after `envFrom`'s ConfigMap data.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<VolumeMount>,
    pub host_network: bool,
    /// The container's securityContext as written.
    pub security: Value,
    /// resources.requests / resources.limits, as written.
    pub resources: Value,
}

/// Every YAML document of `files` (paths relative to the repository), as JSON.
fn load(python: &Path, repo: &Path, files: &[&str]) -> Vec<Value> {
    let out = Command::new(python)
        .current_dir(repo)
        .args([
            "-c",
            "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))",
        ])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "reading {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("the manifests as JSON: {e}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The DaemonSet's container, its env resolved for a node called `node_name`.
pub fn agent_container(python: &Path, repo: &Path, node_name: &str) -> AgentContainer {
    let docs = load(
        python,
        repo,
        &[
            "deploy/kubernetes/daemonset.yaml",
            "deploy/kubernetes/configmap.yaml",
        ],
    );
    let ds = find(&docs, "DaemonSet", "azflow");
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "the DaemonSet runs one container");
    let c = &containers[0];

    let mut env = Vec::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"]
            .as_str()
            .expect("only configMapRef envFrom is known here");
        let data = find(&docs, "ConfigMap", name)["data"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        env.extend(
            data.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())),
        );
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let key = e["name"].as_str().expect("env name").to_owned();
        let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(f)) if f == "spec.nodeName" => node_name.to_owned(),
            other => panic!("env {key}: {other:?} is not a form this test resolves"),
        };
        // `env` wins over `envFrom`, as in Kubernetes.
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }

    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let known = ["name", "mountPath", "readOnly", "mountPropagation", "recursiveReadOnly"];
            if let Some(k) = m.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
                panic!("volumeMount field {k} is new: translate it in image_support as the kubelet does");
            }
            let name = m["name"].as_str().expect("mount name").to_owned();
            let vol = volumes.iter().find(|v| v["name"] == name.as_str()).unwrap_or_else(|| panic!("no volume {name}"));
            let source = if let Some(p) = vol["hostPath"]["path"].as_str() {
                VolumeSource::HostPath {
                    path: p.to_owned(),
                    kind: vol["hostPath"]["type"].as_str().unwrap_or_default().to_owned(),
                }
            } else if let Some(cm) = vol["configMap"]["name"].as_str() {
                VolumeSource::ConfigMap(cm.to_owned())
            } else {
                panic!("volume {name}: {vol} is neither hostPath nor configMap; teach image_support about it")
            };
            VolumeMount {
                container_path: m["mountPath"].as_str().expect("mountPath").to_owned(),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
                propagation: m["mountPropagation"].as_str().unwrap_or("None").to_owned(),
                recursive_read_only: m["recursiveReadOnly"].as_str().unwrap_or("Disabled").to_owned(),
                name,
                source,
            }
        })
        .collect();

    AgentContainer {
        image: c["image"].as_str().expect("image").to_owned(),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        mounts,
        host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
        security: c["securityContext"].clone(),
        resources: c["resources"].clone(),
    }
}
