//! The immutable, cumulative view every exporter reads. The drain task builds one per cycle and
//! publishes it; readers never touch a map or wait on I/O.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use agent_common::{Counter, Direction, KernelError, TrafficClass};

pub use crate::ebpf::maps::{Histogram, RowLatency};

/// Labels of one exported series (the source side is the host's own, in [`HostLabels`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub direction: Direction,
    pub dst_zone: String,
    pub dst_zone_id: String,
    pub class: TrafficClass,
    /// Billing path, hop AZ and price of the slot the bytes were counted in.
    pub billing: crate::topology::Billing,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLabels {
    pub zone: String,
    pub zone_id: String,
    pub region: String,
    pub account_id: Option<String>,
    pub instance_id: Option<String>,
}

/// Labels of a latency row: a destination zone (or a class's catch-all ranges).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneKey {
    pub dst_zone: String,
    pub dst_zone_id: String,
    pub class: TrafficClass,
}

/// A local workload as exported (`workload`, `workload_kind`, `namespace`; pod and container
/// only at a finer granularity and when enabled).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadLabels {
    pub name: String,
    pub kind: String,
    /// Empty outside Kubernetes.
    pub namespace: String,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl WorkloadLabels {
    pub fn host() -> Self {
        Self { name: "host".into(), kind: "host".into(), namespace: String::new(), pod: None, container: None }
    }

    /// Everything without a series of its own: cgroups beyond the kernel's cap or not named yet,
    /// and workloads beyond the export cap.
    pub fn other() -> Self {
        Self { name: "other".into(), kind: "other".into(), namespace: String::new(), pod: None, container: None }
    }

    /// Host and other are always exported, outside the cap.
    pub fn is_fixed(&self) -> bool {
        (self.kind == "host" && self.name == "host") || self.kind == "other"
    }

    pub fn from_workload(w: &crate::workloads::Workload, pod_labels: bool) -> Self {
        Self {
            name: w.name.clone(),
            kind: w.kind.as_str().into(),
            namespace: w.namespace.clone().unwrap_or_default(),
            pod: w.pod.clone().filter(|_| pod_labels),
            container: w.container.clone().filter(|_| pod_labels),
        }
    }
}

/// Labels of one per-workload byte series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadFlowKey {
    pub workload: WorkloadLabels,
    pub direction: Direction,
    pub dst: ZoneKey,
}

/// Labels of one per-workload RTT histogram: a workload and a destination row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRowKey {
    pub workload: WorkloadLabels,
    pub dst: ZoneKey,
}

/// Self-metrics of workload attribution: caps and what was folded into `other`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    pub enabled: bool,
    /// Kernel: workload indices with counters (host and other included), cgroups it can map,
    /// (workload, row) RTT histograms it keeps (0: `--workload-rtt off`).
    pub index_capacity: u32,
    pub cgroup_capacity: u32,
    pub rtt_entries: u32,
    /// Registry: live cgroups, those mapped to other, workloads holding an index.
    pub cgroups: u64,
    pub other_cgroups: u64,
    pub workloads: u64,
    /// cgroups mapped to `other` because every index was taken.
    pub index_overflow_total: u64,
    /// cgroup → index pairs the kernel map refused (full).
    pub map_full_total: u64,
    /// Kernel resolutions, and those whose cgroup had no index yet (counted as other).
    pub resolved_total: u64,
    pub unknown_total: u64,
    /// Unknown cgroup ids user space read, and how many of them were gone before it could
    /// name them (their sockets' bytes stay in other).
    pub unknown_read_total: u64,
    pub unknown_gone_total: u64,
    pub walks_total: u64,
    pub walk_errors_total: u64,
    pub runtime_errors_total: u64,
    pub released_total: u64,
    /// Export: series cap, workloads with series, workloads folded into other by the cap.
    pub series_cap: u64,
    pub series_workloads: u64,
    pub series_folded_total: u64,
}

/// `dst.subnet` of a per-subnet series (opt-in and bounded, see [`Snapshot::subnet_flows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DstSubnet {
    /// A catch-all range (internet, unknown, cross-VPC …): no subnet to name.
    None,
    Cidr(ipnet::IpNet),
    /// Subnets beyond the series cap, summed.
    Overflow,
}

impl DstSubnet {
    pub const OVERFLOW_LABEL: &'static str = "other";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmappedRow {
    /// "10.0.9.0/24" or "fd00:0:9::/48".
    pub prefix: String,
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
}

impl UnmappedRow {
    pub fn total_bytes(&self) -> u64 {
        self.bytes[0].saturating_add(self.bytes[1])
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub taken_at: Option<SystemTime>,
    pub host: HostLabels,
    /// Cumulative since the agent started.
    pub flows: BTreeMap<FlowKey, Counter>,
    /// Busiest unmapped destinations, at most the configured top-N.
    pub unmapped_top: Vec<UnmappedRow>,
    /// Distinct unmapped prefixes the kernel remembers now.
    pub unmapped_tracked: u64,
    /// Prefixes that entered the kernel's bounded list and were pushed out since (LRU).
    pub unmapped_evicted: u64,
    pub kernel_errors: Vec<(KernelError, u64)>,
    pub drains: u64,
    pub drain_failures: u64,
    pub last_drain: Duration,
    pub subnets: u64,
    pub topology_generation: u32,
    pub topology_loaded_at: Option<SystemTime>,
    /// Copied from [`crate::self_metrics::SelfMetrics`] at drain time: (name, kind, value).
    pub agent_counters: Vec<(&'static str, String, u64)>,
    pub agent_gauges: Vec<(&'static str, f64)>,
    /// The same totals as `flows`, split by destination subnet; empty unless enabled
    /// (`--otlp-dst-subnet-series`), at most that many [`DstSubnet::Cidr`] series.
    pub subnet_flows: BTreeMap<(FlowKey, DstSubnet), Counter>,
    /// Subnet series folded into [`DstSubnet::Overflow`] because of the cap.
    pub subnet_series_overflow: u64,
    /// Cumulative RTT and connect histograms (the kernel's buckets) and TCP events per zone.
    pub latency: BTreeMap<ZoneKey, RowLatency>,
    /// Seeing through NAT: unresolved and held bytes, conntrack reader health.
    pub nat: crate::nat::NatSnapshot,
    /// The same bytes as `flows`, split by local workload and destination row (zone, or class
    /// for catch-all ranges); capped (see `workloads::totals`).
    pub workload_flows: BTreeMap<WorkloadFlowKey, Counter>,
    /// RTT per local workload and destination row (scale-1 cells: `Histogram::shift` 2), for the
    /// rows `--workload-rtt` chose; capped as `workload_flows` (see `workloads::rtt`).
    pub workload_rtt: BTreeMap<WorkloadRowKey, Histogram>,
    pub workload_stats: WorkloadStats,
}

impl Snapshot {
    /// Sum over flows matching a predicate (used by the console and by tests).
    pub fn total(&self, pred: impl Fn(&FlowKey) -> bool) -> Counter {
        self.flows.iter().filter(|(k, _)| pred(k)).fold(Counter::default(), |mut a, (_, c)| {
            a.bytes = a.bytes.saturating_add(c.bytes);
            a.packets = a.packets.saturating_add(c.packets);
            a
        })
    }
}
