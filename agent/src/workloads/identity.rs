//! Who a cgroup is: a pure function of its cgroup v2 path (relative to the cgroup2 root) and of
//! what the container runtime says about the container the path names.
//!
//! Rules, first match wins (components are the path split at `/`):
//! 1. **Containers.** The first component that names a container decides, for the cgroup and
//!    every cgroup below it (a container's own sub-cgroups are the container):
//!    - systemd cgroup driver: `cri-containerd-<id>.scope` (containerd's CRI), `crio-<id>.scope`
//!      and `crio-conmon-<id>.scope` (CRI-O; conmon counts to its container), `docker-<id>.scope`;
//!      the pod's uid comes from `kubepods[-<qos>]-pod<uid>.slice` (`_` for `-`);
//!    - cgroupfs driver: `kubepods[/<qos>]/pod<uid>/<id>` (containerd, or `crio-<id>` for CRI-O),
//!      `docker/<id>`;
//!    - containerd outside Kubernetes (`ctr run`): `<namespace>/<id>` at the root, e.g.
//!      `k8s.io/<id>`. Any two-level path has this shape, so it is a container only if the
//!      runtime has a task bundle for it; otherwise the later rules apply.
//!
//!    With the runtime's names: a container with pod annotations is kind `pod` (namespace, pod,
//!    container, and the owner from [`super::owner`]); a Docker container is kind `container`
//!    named by its Docker name; a plain containerd container is kind `container` named by its id.
//!    Without them (no state on the host, or a file that does not parse): kind `container`, named
//!    by the id's first 12 characters.
//! 2. The root cgroup, `init.scope`, cgroups made only of `.slice` components (systemd's inner
//!    nodes, which hold no processes of their own) and `kubepods/...` above the containers:
//!    kind `host`, name `host`.
//! 3. `user.slice/...` (login sessions `session-N.scope`, `user@UID.service` and everything the
//!    user's manager starts), and `user@UID.service` anywhere: kind `systemd`, name `user`.
//! 4. The first `.service` or `.scope` component: kind `systemd`, named by it
//!    (`system.slice/system-getty.slice/getty@tty1.service` → `getty@tty1.service`). Template
//!    instances keep their instance; transient `run-<random>.scope` units each get a name.
//! 5. Anything else: kind `host`, named by its first `depth` components
//!    (`azflow-bed-12/a1/inner` → `azflow-bed-12/a1` at depth 2).
//!
//! Limits: a cgroup driver or runtime that names containers differently (Podman's `libpod-<id>`,
//! systemd-nspawn's `machine.slice`) falls to rules 4–5; nested container runtimes are named by
//! the outermost container; a path is only read, never checked against `/proc`.

use std::collections::BTreeMap;

use super::owner::{OwnerKind, owner_from_labels, owner_from_name};

/// What a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// The host's own processes, or a cgroup no other rule names.
    Host,
    Systemd,
    /// A container outside Kubernetes (or one whose runtime state is unreadable).
    Container,
    Pod,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Host => "host",
            WorkloadKind::Systemd => "systemd",
            WorkloadKind::Container => "container",
            WorkloadKind::Pod => "pod",
        }
    }
}

/// A local workload, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// Unit name, container name, or (for pods) the owning workload's name.
    pub name: String,
    /// Kubernetes namespace (pods only).
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub owner_kind: Option<OwnerKind>,
}

impl Workload {
    fn simple(kind: WorkloadKind, name: impl Into<String>) -> Self {
        Workload {
            kind,
            name: name.into(),
            namespace: None,
            pod: None,
            container: None,
            owner_kind: None,
        }
    }

    /// The host's own processes (registry index 0).
    pub fn host() -> Self {
        Workload::simple(WorkloadKind::Host, "host")
    }
}

/// Which runtime a cgroup name points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
}

/// A container named by a cgroup path, to be looked up in the runtime's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// None when the name does not say (cgroupfs `kubepods/.../<id>`: containerd or cri-dockerd).
    pub runtime: Option<Runtime>,
    pub id: String,
    /// containerd namespace, when the path holds it (`<namespace>/<id>`).
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    /// True for the `<namespace>/<id>` shape: a container only if the runtime knows it.
    pub speculative: bool,
}

/// What the runtime's own state says about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// Kubernetes namespace and pod name (CRI annotations).
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    /// Container name in the pod, or Docker's container name.
    pub container: Option<String>,
    /// The pod's sandbox (pause/infra) container.
    pub sandbox: bool,
    /// The pod's labels, when the runtime keeps them (CRI-O).
    pub labels: BTreeMap<String, String>,
}

/// The outcome of a runtime lookup, as identity needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeInfo {
    /// No state for this id on the host.
    NotFound,
    /// State exists but could not be read or parsed (already warned about and counted).
    Unreadable,
    Found(ContainerMeta),
}

/// Characters kept from a long container id in a fallback name (as `docker ps` shows them).
pub const SHORT_ID: usize = 12;

fn valid_id(id: &str) -> bool {
    // Ids become file names in the runtime's state: no separators, no dot-only names.
    !id.is_empty() && !id.starts_with('.') && id.len() <= 128 && !id.contains(['/', '\0'])
}

fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..SHORT_ID]
    } else {
        id
    }
}

fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// The pod uid in a kubelet pod cgroup name, either driver.
fn pod_uid(component: &str) -> Option<String> {
    if let Some(rest) = component
        .strip_prefix("kubepods-")
        .and_then(|c| c.strip_suffix(".slice"))
    {
        // kubepods-pod<uid>.slice or kubepods-<qos>-pod<uid>.slice; systemd writes '-' as '_'.
        let uid = rest.rsplit_once("pod").map(|(_, u)| u)?;
        return (!uid.is_empty()).then(|| uid.replace('_', "-"));
    }
    component
        .strip_prefix("pod")
        .filter(|u| u.len() >= 32)
        .map(str::to_string)
}

/// The container a systemd-driver scope or CRI-O cgroupfs name points at.
fn named_container(component: &str) -> Option<(Runtime, &str)> {
    let scope = component.strip_suffix(".scope");
    let body = scope.unwrap_or(component);
    let found = if let Some(id) = body.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = body
        .strip_prefix("crio-conmon-")
        .or_else(|| body.strip_prefix("crio-"))
    {
        (Runtime::Crio, id)
    } else {
        // Docker's systemd-driver scope only: a bare `docker-…` name is nobody's container.
        (Runtime::Docker, scope?.strip_prefix("docker-")?)
    };
    valid_id(found.1).then_some(found)
}

/// The container a cgroup path names, if any: what to look up in the runtime's state.
pub fn container_ref(path: &str) -> Option<ContainerRef> {
    let comps = components(path);
    let mut uid = None;
    for (i, c) in comps.iter().enumerate() {
        if let Some((runtime, id)) = named_container(c) {
            let r = ContainerRef {
                runtime: Some(runtime),
                id: id.into(),
                namespace: None,
                pod_uid: uid,
                speculative: false,
            };
            return Some(r);
        }
        if let Some(u) = pod_uid(c) {
            uid = Some(u);
            // cgroupfs driver: the container is the next component, named by its bare id.
            if comps[0] == "kubepods" && !c.ends_with(".slice") {
                let next = comps.get(i + 1)?;
                let (runtime, id) = match named_container(next) {
                    Some((runtime, id)) => (Some(runtime), id),
                    None => (None, *next),
                };
                let r = ContainerRef {
                    runtime,
                    id: id.to_string(),
                    namespace: None,
                    pod_uid: uid,
                    speculative: false,
                };
                return valid_id(id).then_some(r);
            }
        }
    }
    match comps.as_slice() {
        ["docker", id, ..] if valid_id(id) => Some(ContainerRef {
            runtime: Some(Runtime::Docker),
            id: id.to_string(),
            namespace: None,
            pod_uid: None,
            speculative: false,
        }),
        [ns, id, ..]
            if is_plain_name(ns) && valid_id(id) && !matches!(*ns, "kubepods" | "docker") =>
        {
            Some(ContainerRef {
                runtime: Some(Runtime::Containerd),
                id: id.to_string(),
                namespace: Some(ns.to_string()),
                pod_uid: None,
                speculative: true,
            })
        }
        _ => None,
    }
}

/// A name systemd did not make (containerd namespaces are plain words like `k8s.io`, `default`).
fn is_plain_name(c: &str) -> bool {
    valid_id(c)
        && ![".slice", ".scope", ".service", ".mount", ".socket"]
            .iter()
            .any(|s| c.ends_with(s))
}

/// The workload of a cgroup, by the rules in the module doc. `info` is the runtime's answer for
/// [`container_ref`]'s container (ignored when the path names none); `depth` is rule 5's cut.
pub fn identify(path: &str, info: &RuntimeInfo, depth: usize) -> Workload {
    if let Some(c) = container_ref(path) {
        match info {
            RuntimeInfo::Found(meta) => return from_meta(&c, meta),
            RuntimeInfo::Unreadable => {
                return Workload::simple(WorkloadKind::Container, short_id(&c.id));
            }
            RuntimeInfo::NotFound if !c.speculative => {
                return Workload::simple(WorkloadKind::Container, short_id(&c.id));
            }
            RuntimeInfo::NotFound => {}
        }
    }
    by_path(&components(path), depth)
}

fn from_meta(c: &ContainerRef, meta: &ContainerMeta) -> Workload {
    let container = meta
        .container
        .clone()
        .filter(|n| !meta.sandbox && n != "POD");
    match (&meta.namespace, &meta.pod) {
        (Some(ns), Some(pod)) => {
            let owner = if meta.labels.is_empty() {
                owner_from_name(pod)
            } else {
                owner_from_labels(pod, &meta.labels)
            };
            Workload {
                kind: WorkloadKind::Pod,
                name: owner.name,
                namespace: Some(ns.clone()),
                pod: Some(pod.clone()),
                container,
                owner_kind: Some(owner.kind),
            }
        }
        _ => {
            // Docker names carry a leading '/'.
            let name = container
                .as_deref()
                .map(|n| n.trim_start_matches('/'))
                .filter(|n| !n.is_empty());
            let name = name.unwrap_or(short_id(&c.id)).to_string();
            let mut w = Workload::simple(WorkloadKind::Container, name.clone());
            w.container = Some(name);
            w
        }
    }
}

fn by_path(comps: &[&str], depth: usize) -> Workload {
    let Some(first) = comps.first() else {
        return Workload::host();
    };
    // kubepods without a container below: QoS and pod cgroups, which hold no processes.
    if matches!(*first, "init.scope" | "kubepods") || comps.iter().all(|c| c.ends_with(".slice")) {
        return Workload::host();
    }
    if *first == "user.slice" {
        return Workload::simple(WorkloadKind::Systemd, "user");
    }
    if let Some(unit) = comps
        .iter()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
    {
        let name = if unit.starts_with("user@") {
            "user"
        } else {
            *unit
        };
        return Workload::simple(WorkloadKind::Systemd, name);
    }
    Workload::simple(
        WorkloadKind::Host,
        comps[..depth.clamp(1, comps.len())].join("/"),
    )
}

#[cfg(test)]
mod tests;
