//! Workload attribution at drain time: keeps the kernel's cgroup id → index map in step with the
//! registry, and turns the kernel's per-workload counters and RTT histograms into labelled totals.
//!
//! Order within one call, so that no byte changes hands: credit the counters' growth to the
//! current index holders first, then walk and apply the registry's update (releases, deletes,
//! writes), then publish a new workload generation so sockets resolve again.
//!
//! Short-lived cgroups: a socket whose cgroup has no index counts under `other`, and the kernel
//! records the cgroup id (a bounded LRU). Any such id triggers a walk at the next drain or refresh
//! instead of waiting for the walk interval, so a cgroup that lives longer than that is named
//! and its later bytes attributed. Ids gone before the walk are counted (`unknown_gone_total`);
//! their bytes stay in `other`, which the export shows.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{Counter, Direction, TrafficClass, workload::WorkloadStat};

use super::{
    CgroupDir, HOST_INDEX, OTHER_INDEX, RuntimeState, WorkloadRegistry, WorkloadsConfig,
    rtt::WorkloadRttTotals,
    totals::{Growth, WorkloadTotals},
};
use crate::{
    ebpf::{KernelMaps, MapsError},
    snapshot::{Histogram, WorkloadFlowKey, WorkloadLabels, WorkloadRowKey, WorkloadStats, ZoneKey},
};

/// What attribution adds to a snapshot.
#[derive(Debug, Default)]
pub struct WorkloadView {
    pub flows: BTreeMap<WorkloadFlowKey, Counter>,
    pub rtt: BTreeMap<WorkloadRowKey, Histogram>,
    pub stats: WorkloadStats,
}

pub struct Attribution {
    registry: WorkloadRegistry<RuntimeState>,
    tree: CgroupDir,
    refresh: Duration,
    last_walk: Option<Instant>,
    totals: WorkloadTotals,
    rtt: WorkloadRttTotals,
    pod_labels: bool,
    stats: WorkloadStats,
    /// One past the highest index the adopted counters had counted under: read on (and
    /// credited as today) until this agent's own indices pass it.
    adopted_bound: u32,
}

impl Attribution {
    /// `root` is the cgroup2 mount (the walk names paths relative to it).
    pub fn new(cfg: &WorkloadsConfig, root: PathBuf, series_cap: usize) -> Self {
        Self {
            registry: WorkloadRegistry::new(
                cfg.registry.clone(),
                RuntimeState::new(cfg.runtime.clone()),
            ),
            tree: CgroupDir::new(root),
            refresh: cfg.refresh,
            last_walk: None,
            totals: WorkloadTotals::new(series_cap),
            rtt: WorkloadRttTotals::default(),
            pod_labels: cfg.pod_labels,
            adopted_bound: 0,
            stats: WorkloadStats {
                enabled: true,
                cgroup_capacity: cfg.max_cgroups,
                series_cap: series_cap as u64,
                ..WorkloadStats::default()
            },
        }
    }

    /// At start: forget adopted cgroup ids (another process's indices), take the adopted
    /// counters as the baseline, and write the first walk.
    pub fn start(&mut self, maps: &mut KernelMaps) -> Result<(), MapsError> {
        maps.workloads.clear()?;
        // Every index: adopted (pinned) maps may hold counts under any of them.
        let adopted = maps.workloads.read_counters(u32::MAX)?;
        let adopted_rtt = maps.workloads.read_rtt(u32::MAX)?;
        self.adopted_bound = adopted.iter().map(|c| c.index + 1).chain(adopted_rtt.iter().map(|c| c.index + 1)).max().unwrap_or(0);
        self.totals.baseline(&adopted);
        self.rtt.baseline(&adopted_rtt);
        self.stats.index_capacity = maps.workloads.capacity();
        self.stats.rtt_entries = maps.workloads.rtt_entries();
        self.walk(maps, Instant::now(), &[])
    }

    /// Credits growth, then walks when due (or when sockets met cgroups without an index).
    pub fn refresh(
        &mut self,
        maps: &mut KernelMaps,
        rows: &BTreeMap<u32, ZoneKey>,
        force: bool,
    ) -> Result<(), MapsError> {
        self.absorb(maps, rows)?;
        let unknown = maps.workloads.take_unknown();
        let now = Instant::now();
        let due = force
            || !unknown.is_empty()
            || self
                .last_walk
                .is_none_or(|t| now.duration_since(t) >= self.refresh);
        if due {
            self.walk(maps, now, &unknown)?;
        }
        Ok(())
    }

    /// Held NAT bytes, credited by user space once their destination is known.
    pub fn credit(&mut self, index: u16, dst: ZoneKey, direction: Direction, delta: Counter) {
        let workload = self.labels(u32::from(index));
        self.totals.credit(vec![Growth {
            workload,
            direction,
            dst,
            delta,
        }]);
    }

    /// The capped totals and the self-metrics, for the snapshot.
    pub fn snapshot(&self, maps: &KernelMaps) -> Result<WorkloadView, MapsError> {
        let k = maps.workloads.read_stats()?;
        let r = self.registry.stats();
        let mut s = self.stats.clone();
        s.resolved_total = k[WorkloadStat::Resolved as usize];
        s.unknown_total = k[WorkloadStat::Unknown as usize];
        s.cgroups = r.cgroups as u64;
        s.other_cgroups = r.other_cgroups as u64;
        s.workloads = r.workloads as u64;
        s.index_overflow_total = r.overflow_total;
        s.walks_total = r.refreshes_total;
        s.walk_errors_total = r.walk_errors_total;
        s.runtime_errors_total = r.runtime_errors_total;
        s.released_total = r.released_total;
        s.series_workloads = self.totals.admitted() as u64;
        s.series_folded_total = self.totals.refused_total();
        Ok(WorkloadView { flows: self.totals.totals().clone(), rtt: self.rtt.totals().clone(), stats: s })
    }

    /// Credits the growth of bytes, then of RTT histograms.
    ///
    /// The RTT histograms are read *before* the byte counters: an ack's bytes are counted at
    /// ingress before sock_ops takes its RTT sample, so every workload with RTT growth in this
    /// read has had its bytes read too, and the byte totals have decided (busiest first) whether
    /// it gets series of its own before its RTT growth is credited by that decision.
    fn absorb(
        &mut self,
        maps: &KernelMaps,
        rows: &BTreeMap<u32, ZoneKey>,
    ) -> Result<(), MapsError> {
        let bound = self.registry.index_bound().max(self.adopted_bound);
        let rtt = maps.workloads.read_rtt(bound)?;
        let cells = maps.workloads.read_counters(bound)?;
        let labels: BTreeMap<u32, WorkloadLabels> = cells
            .iter()
            .map(|c| c.index)
            .chain(rtt.iter().map(|c| c.index))
            .map(|i| (i, self.labels(i)))
            .collect();
        let unknown_row = ZoneKey {
            dst_zone: "unknown".into(),
            dst_zone_id: "unknown".into(),
            class: TrafficClass::Unknown,
        };
        let growth = self.totals.growth(
            &cells,
            |i| {
                labels
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(WorkloadLabels::other)
            },
            |r| rows.get(&r).cloned().unwrap_or_else(|| unknown_row.clone()),
        );
        self.totals.credit(growth);
        let totals = &self.totals;
        self.rtt.absorb(
            &rtt,
            |i| labels.get(&i).cloned().unwrap_or_else(WorkloadLabels::other),
            |r| rows.get(&r).cloned().unwrap_or_else(|| unknown_row.clone()),
            |w| totals.exports(w),
        );
        Ok(())
    }

    fn walk(
        &mut self,
        maps: &mut KernelMaps,
        now: Instant,
        unknown: &[u64],
    ) -> Result<(), MapsError> {
        self.last_walk = Some(now);
        let update = match self.registry.refresh_from(&self.tree, now) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("{e}");
                self.stats.walk_errors_total += 1;
                return Ok(());
            }
        };
        self.stats.unknown_read_total += unknown.len() as u64;
        self.stats.unknown_gone_total += unknown
            .iter()
            .filter(|id| self.registry.index_of(**id).is_none())
            .count() as u64;
        self.stats.map_full_total += maps.workloads.apply(&update.remove, &update.upsert)?;
        if !update.upsert.is_empty() {
            maps.bump_workload_generation()?;
        }
        Ok(())
    }

    fn labels(&self, index: u32) -> WorkloadLabels {
        match u16::try_from(index) {
            Ok(HOST_INDEX) => WorkloadLabels::host(),
            Ok(OTHER_INDEX) | Err(_) => WorkloadLabels::other(),
            Ok(i) => self
                .registry
                .workload(i)
                .map_or_else(WorkloadLabels::other, |w| {
                    WorkloadLabels::from_workload(w, self.pod_labels)
                }),
        }
    }
}
