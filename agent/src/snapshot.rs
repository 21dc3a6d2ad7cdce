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
