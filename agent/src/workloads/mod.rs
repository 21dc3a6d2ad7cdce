//! Who sent a byte: cgroup id → cgroup path → workload identity → small index for the kernel.
//!
//! - [`walk`]: the cgroup v2 tree, each directory's id (its inode number, which is what
//!   `bpf_get_current_cgroup_id`/`bpf_skb_cgroup_id` return) and path.
//! - [`identity`]: a pure function from a path and the runtime's answer to a [`Workload`]
//!   (`host`, `systemd`, `container` or `pod`); its rules and limits are in its doc and in
//!   `docs/workloads.md`.
//! - [`runtime`]: names from containerd's, CRI-O's and Docker's state files on the host.
//! - [`owner`]: a pod's owning Deployment, StatefulSet, DaemonSet, Job or CronJob, from its name.
//! - [`registry`]: the index table (0 `host`, 1 `other`, 2.. workloads, capped) and the changes
//!   to write into the kernel after each walk.
//! - [`totals`], [`rtt`]: the kernel's per-index bytes and RTT histograms as capped, labelled,
//!   only-growing totals.
//!
//! Nothing here runs per packet: a walk every `--workload-refresh` keeps the table fresh, and the
//! kernel resolves a socket's cgroup id to its index once.

pub mod attribution;
pub mod identity;
pub mod owner;
pub mod registry;
pub mod rtt;
pub mod runtime;
pub mod totals;
pub mod walk;

#[cfg(test)]
mod test_dir;

use std::{path::PathBuf, time::Duration};

use clap::Args;

pub use identity::{Workload, WorkloadKind};
pub use owner::OwnerKind;
pub use registry::{
    FIRST_WORKLOAD_INDEX, Granularity, HOST_INDEX, OTHER_INDEX, RegistryConfig, RegistryStats,
    Update, WorkloadRegistry,
};
pub use runtime::{RuntimePaths, RuntimeSource, RuntimeState};
pub use walk::{CgroupDir, CgroupEntry, CgroupTree};

use crate::config::{ConfigError, parse_duration};

pub const DEFAULT_CONTAINERD_STATE: &str = "/run/containerd";
pub const DEFAULT_CRIO_CONTAINERS: &str = "/run/containers/storage/overlay-containers";
pub const DEFAULT_DOCKER_CONTAINERS: &str = "/var/lib/docker/containers";
pub const DEFAULT_MAX_WORKLOADS: u16 = 200;
/// Indices are u16 and 0, 1 are taken.
pub const MAX_WORKLOADS_LIMIT: u16 = u16::MAX - FIRST_WORKLOAD_INDEX;

/// Flags of the workload attribution (flattened into `azflow run`).
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// containerd's state directory (task bundles under io.containerd.runtime.v2.task/).
    #[arg(long, env = "AZFLOW_CONTAINERD_STATE", default_value = DEFAULT_CONTAINERD_STATE)]
    pub containerd_state: PathBuf,
    /// CRI-O's per-container state (<id>/userdata/config.json).
    #[arg(long, env = "AZFLOW_CRIO_CONTAINERS", default_value = DEFAULT_CRIO_CONTAINERS)]
    pub crio_containers: PathBuf,
    /// Docker's per-container state (<id>/config.v2.json).
    #[arg(long, env = "AZFLOW_DOCKER_CONTAINERS", default_value = DEFAULT_DOCKER_CONTAINERS)]
    pub docker_containers: PathBuf,
    /// Workloads with counters of their own; the rest are counted as "other".
    #[arg(long, env = "AZFLOW_MAX_WORKLOADS", default_value_t = DEFAULT_MAX_WORKLOADS)]
    pub max_workloads: u16,
    /// How often the cgroup tree is walked for new and gone workloads.
    #[arg(long, env = "AZFLOW_WORKLOAD_REFRESH", default_value = "2s")]
    pub workload_refresh: String,
    /// How long a gone workload keeps its index (and a returning one gets it back).
    #[arg(long, env = "AZFLOW_WORKLOAD_REUSE_AFTER", default_value = "5m")]
    pub workload_reuse_after: String,
    /// Path components that name a cgroup no other rule knows (e.g. 2: "team-a/batch").
    #[arg(long, env = "AZFLOW_WORKLOAD_PATH_DEPTH", default_value_t = 2)]
    pub workload_path_depth: usize,
    /// Live cgroups the kernel can map to a workload (every cgroup on the host needs an entry; a
    /// cgroup beyond it is counted as "other").
    #[arg(long, env = "AZFLOW_WORKLOAD_MAX_CGROUPS", default_value_t = 16384)]
    pub workload_max_cgroups: u32,
    /// Also export k8s.pod.name and container.name (OTLP) / pod and container (Prometheus); only
    /// meaningful with --workload-granularity pod or container.
    #[arg(long, env = "AZFLOW_WORKLOAD_POD_LABELS")]
    pub workload_pod_labels: bool,
    /// What one workload is: "workload" (all pods of a Deployment), "pod" or "container".
    #[arg(long, env = "AZFLOW_WORKLOAD_GRANULARITY", value_enum, default_value_t = Granularity::Workload)]
    pub workload_granularity: Granularity,
}

/// Validated workload settings.
#[derive(Debug, Clone)]
pub struct WorkloadsConfig {
    pub runtime: RuntimePaths,
    pub registry: RegistryConfig,
    pub refresh: Duration,
    pub max_cgroups: u32,
    pub pod_labels: bool,
}

impl WorkloadArgs {
    pub fn validate(&self) -> Result<WorkloadsConfig, ConfigError> {
        let duration =
            |flag: &'static str, text: &str, min: Duration, max: Duration, fix: &'static str| {
                parse_duration(text)
                    .filter(|d| (min..=max).contains(d))
                    .ok_or_else(|| ConfigError {
                        flag,
                        problem: format!("{text:?} is not a duration in range"),
                        fix,
                    })
            };
        let refresh = duration(
            "workload-refresh",
            &self.workload_refresh,
            Duration::from_millis(100),
            Duration::from_secs(600),
            "choose between 100ms and 10m, e.g. 2s",
        )?;
        let reuse_after = duration(
            "workload-reuse-after",
            &self.workload_reuse_after,
            Duration::ZERO,
            Duration::from_secs(86_400),
            "choose between 0s and 24h, e.g. 5m",
        )?;
        if self.max_workloads > MAX_WORKLOADS_LIMIT {
            return Err(ConfigError {
                flag: "max-workloads",
                problem: format!(
                    "{} is more than the kernel's u16 index allows",
                    self.max_workloads
                ),
                fix: "choose at most 65533",
            });
        }
        if !(1..=16).contains(&self.workload_path_depth) {
            return Err(ConfigError {
                flag: "workload-path-depth",
                problem: format!("{} is out of range", self.workload_path_depth),
                fix: "choose between 1 and 16",
            });
        }
        if !(16..=1_048_576).contains(&self.workload_max_cgroups) {
            return Err(ConfigError {
                flag: "workload-max-cgroups",
                problem: format!("{} is out of range", self.workload_max_cgroups),
                fix: "choose between 16 and 1048576 (at least the host's number of cgroups)",
            });
        }
        Ok(WorkloadsConfig {
            max_cgroups: self.workload_max_cgroups,
            pod_labels: self.workload_pod_labels,
            runtime: RuntimePaths {
                containerd_state: self.containerd_state.clone(),
                crio_containers: self.crio_containers.clone(),
                docker_containers: self.docker_containers.clone(),
            },
            registry: RegistryConfig {
                max_workloads: self.max_workloads,
                reuse_after,
                depth: self.workload_path_depth,
                granularity: self.workload_granularity,
            },
            refresh,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        w: WorkloadArgs,
    }

    fn parse(extra: &[&str]) -> WorkloadArgs {
        let args = std::iter::once("azflow").chain(extra.iter().copied());
        Cli::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{e}"))
            .w
    }

    #[test]
    fn defaults_validate() {
        let c = parse(&[]).validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.runtime, RuntimePaths::default());
        assert_eq!(
            (c.refresh, c.registry.reuse_after),
            (Duration::from_secs(2), Duration::from_secs(300))
        );
        assert_eq!((c.registry.max_workloads, c.registry.depth), (200, 2));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = |a: &[&str]| {
            parse(a)
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e(&["--workload-refresh", "soon"]).starts_with("--workload-refresh: "));
        assert!(e(&["--workload-reuse-after", "48h"]).starts_with("--workload-reuse-after: "));
        assert!(e(&["--max-workloads", "65535"]).starts_with("--max-workloads: "));
        assert!(e(&["--workload-path-depth", "0"]).starts_with("--workload-path-depth: "));
    }
}
