//! Names from the container runtimes' own state on the host; no API server, no runtime socket.
//!
//! - **containerd** writes each task's OCI bundle to
//!   `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json` (state default
//!   `/run/containerd`). Its CRI plugin puts the pod into the spec's annotations:
//!   `io.kubernetes.cri.sandbox-namespace`, `…sandbox-name`, `…sandbox-uid`, `…container-name` and
//!   `…container-type` (`sandbox` for the pause container). `ctr run` containers have none.
//! - **CRI-O** keeps `<state>/<id>/userdata/config.json` (state default
//!   `/run/containers/storage/overlay-containers`) with `io.kubernetes.pod.namespace`,
//!   `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`,
//!   `io.kubernetes.cri-o.ContainerType` and `io.kubernetes.cri-o.SandboxID`; the sandbox's own
//!   file holds the pod's labels as JSON in `io.kubernetes.cri-o.Labels`, which settle the owner
//!   (see [`super::owner`]).
//! - **Docker** keeps `<containers>/<id>/config.v2.json` (default `/var/lib/docker/containers`)
//!   with the container's `Name`, and, for pods run through cri-dockerd, the labels
//!   `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.container.name` in
//!   `Config.Labels`.
//!
//! A file that is missing means "not this runtime's container". A file that is there but cannot
//! be read or parsed is an error naming the file and field; the registry warns once and counts it.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use super::identity::{ContainerMeta, ContainerRef, Runtime};

/// Where the runtimes keep their state (see [`super::WorkloadArgs`] for the flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePaths {
    pub containerd_state: PathBuf,
    pub crio_containers: PathBuf,
    pub docker_containers: PathBuf,
}

impl Default for RuntimePaths {
    fn default() -> Self {
        RuntimePaths {
            containerd_state: PathBuf::from(super::DEFAULT_CONTAINERD_STATE),
            crio_containers: PathBuf::from(super::DEFAULT_CRIO_CONTAINERS),
            docker_containers: PathBuf::from(super::DEFAULT_DOCKER_CONTAINERS),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}: {source}; check that the agent may read the runtime's state (mount it read-only)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}; the container is named by its id until the file is fixed", path.display())]
    Malformed { path: PathBuf, problem: String },
}

/// What the registry asks about a container named by a cgroup path.
pub trait RuntimeSource {
    /// The runtime's names for the container; `Ok(None)` when no runtime has it.
    fn lookup(&self, container: &ContainerRef) -> Result<Option<ContainerMeta>, RuntimeError>;
}

/// The runtimes' state files on this host.
#[derive(Debug, Clone, Default)]
pub struct RuntimeState {
    pub paths: RuntimePaths,
}

/// OCI specs are tens of KiB; anything this large is not one.
const MAX_FILE: u64 = 8 << 20;

impl RuntimeSource for RuntimeState {
    fn lookup(&self, c: &ContainerRef) -> Result<Option<ContainerMeta>, RuntimeError> {
        match c.runtime {
            Some(Runtime::Containerd) => self.containerd(c),
            Some(Runtime::Crio) => self.crio(&c.id),
            Some(Runtime::Docker) => self.docker(&c.id),
            // cgroupfs kubepods/<qos>/pod<uid>/<id>: containerd, or Docker through cri-dockerd.
            None => match self.containerd(c)? {
                Some(meta) => Ok(Some(meta)),
                None => self.docker(&c.id),
            },
        }
    }
}

impl RuntimeState {
    pub fn new(paths: RuntimePaths) -> Self {
        RuntimeState { paths }
    }

    fn containerd(&self, c: &ContainerRef) -> Result<Option<ContainerMeta>, RuntimeError> {
        let tasks = self
            .paths
            .containerd_state
            .join("io.containerd.runtime.v2.task");
        // The CRI plugin's namespace first; other namespaces only when the path did not say.
        let mut namespaces = vec![c.namespace.clone().unwrap_or_else(|| "k8s.io".into())];
        if c.namespace.is_none()
            && let Ok(dir) = fs::read_dir(&tasks)
        {
            namespaces.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n != "k8s.io"),
            );
        }
        for ns in namespaces {
            let path = tasks.join(&ns).join(&c.id).join("config.json");
            let Some(doc) = read_json(&path)? else {
                continue;
            };
            let notes = annotations(&doc, &path)?;
            let get = |k: &str| string_at(&notes, k, &path);
            return Ok(Some(ContainerMeta {
                namespace: get("io.kubernetes.cri.sandbox-namespace")?,
                pod: get("io.kubernetes.cri.sandbox-name")?,
                pod_uid: get("io.kubernetes.cri.sandbox-uid")?,
                container: get("io.kubernetes.cri.container-name")?,
                sandbox: get("io.kubernetes.cri.container-type")?.as_deref() == Some("sandbox"),
                labels: BTreeMap::new(),
            }));
        }
        Ok(None)
    }

    fn crio(&self, id: &str) -> Result<Option<ContainerMeta>, RuntimeError> {
        let path = self.crio_file(id);
        let Some(doc) = read_json(&path)? else {
            return Ok(None);
        };
        let notes = annotations(&doc, &path)?;
        let get = |k: &str| string_at(&notes, k, &path);
        let sandbox = get("io.kubernetes.cri-o.ContainerType")?.as_deref() == Some("sandbox");
        let labels = if sandbox {
            get("io.kubernetes.cri-o.Labels")?
        } else {
            self.crio_pod_labels(get("io.kubernetes.cri-o.SandboxID")?)
        };
        Ok(Some(ContainerMeta {
            namespace: get("io.kubernetes.pod.namespace")?,
            pod: get("io.kubernetes.pod.name")?,
            pod_uid: get("io.kubernetes.pod.uid")?,
            container: get("io.kubernetes.container.name")?,
            sandbox,
            labels: labels.as_deref().map(parse_labels).unwrap_or_default(),
        }))
    }

    fn crio_file(&self, id: &str) -> PathBuf {
        self.paths
            .crio_containers
            .join(id)
            .join("userdata")
            .join("config.json")
    }

    /// The pod's labels from its sandbox. Only a refinement of the owner rule, so a sandbox file
    /// that is gone or odd leaves the name rules in charge instead of failing the container.
    fn crio_pod_labels(&self, sandbox_id: Option<String>) -> Option<String> {
        let id = sandbox_id.filter(|id| !id.contains('/') && !id.starts_with('.'))?;
        let path = self.crio_file(&id);
        let doc = read_json(&path).ok()??;
        let notes = annotations(&doc, &path).ok()?;
        string_at(&notes, "io.kubernetes.cri-o.Labels", &path).ok()?
    }

    fn docker(&self, id: &str) -> Result<Option<ContainerMeta>, RuntimeError> {
        let path = self.paths.docker_containers.join(id).join("config.v2.json");
        let Some(doc) = read_json(&path)? else {
            return Ok(None);
        };
        let name =
            doc.get("Name")
                .and_then(Value::as_str)
                .ok_or_else(|| RuntimeError::Malformed {
                    path: path.clone(),
                    problem: "field Name is missing or not a string".into(),
                })?;
        let empty = Map::new();
        let labels = doc
            .pointer("/Config/Labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let get = |k: &str| string_at(labels, k, &path);
        let pod_container = get("io.kubernetes.container.name")?;
        Ok(Some(ContainerMeta {
            namespace: get("io.kubernetes.pod.namespace")?,
            pod: get("io.kubernetes.pod.name")?,
            pod_uid: get("io.kubernetes.pod.uid")?,
            sandbox: get("io.kubernetes.docker.type")?.as_deref() == Some("podsandbox"),
            container: pod_container.or_else(|| Some(name.to_string())),
            labels: BTreeMap::new(),
        }))
    }
}

/// The file as JSON; `Ok(None)` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, RuntimeError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RuntimeError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RuntimeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(RuntimeError::Malformed {
            path: path.to_path_buf(),
            problem: format!("larger than {MAX_FILE} bytes"),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RuntimeError::Malformed {
            path: path.to_path_buf(),
            problem: format!("not JSON ({e})"),
        })
}

/// The OCI spec's `annotations`; a spec without any (plain `ctr run`) has an empty set.
fn annotations(doc: &Value, path: &Path) -> Result<Map<String, Value>, RuntimeError> {
    match doc.get("annotations") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(RuntimeError::Malformed {
            path: path.to_path_buf(),
            problem: "field annotations is not an object".into(),
        }),
    }
}

fn string_at(
    map: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<String>, RuntimeError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RuntimeError::Malformed {
            path: path.to_path_buf(),
            problem: format!("annotation {key} is not a string"),
        }),
    }
}

/// CRI-O's labels annotation: a JSON object of strings. Anything else gives no labels.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str::<BTreeMap<String, Value>>(text)
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
