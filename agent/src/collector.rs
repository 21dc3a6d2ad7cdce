//! One drain cycle: read the kernel maps, credit the growth to labels, build the next snapshot.
//! Owns the maps and the table they were written from, so a topology swap and a drain can never
//! interleave.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use agent_common::{KernelError, SLOT_NO_MATCH, TrafficClass, hist};

use crate::{
    drain::{Accumulator, SlotMeaning},
    ebpf::{
        KernelMaps, MapsError,
        maps::unmapped_prefix,
    },
    self_metrics::Shared as SharedSelfMetrics,
    snapshot::{HostLabels, Snapshot, UnmappedRow, ZoneKey},
    topology::{KernelTable, SlotKind},
};

pub struct Collector {
    maps: KernelMaps,
    table: KernelTable,
    /// Histogram row → the labels of its destination, derived from `table`.
    latency_rows: BTreeMap<u32, ZoneKey>,
    generation: u32,
    host: HostLabels,
    acc: Accumulator,
    unmapped_top: usize,
    drains: u64,
    failures: u64,
    topology_loaded_at: SystemTime,
    last: Arc<Snapshot>,
    self_metrics: SharedSelfMetrics,
}

impl Collector {
    /// Writes `table` to the kernel (generation 1) and starts counting from there.
    pub fn new(
        mut maps: KernelMaps,
        table: KernelTable,
        host: HostLabels,
        unmapped_top: usize,
        self_metrics: SharedSelfMetrics,
    ) -> Result<Self, MapsError> {
        let previous = maps.generation()?;
        // Adopted maps (a restart with --pin) already hold counts. They continue the totals
        // only when every prefix keeps its slot; otherwise they become the baseline.
        let continuing = previous != 0 && maps.lpm_matches(&table.v4, &table.v6);
        let generation = previous.wrapping_add(1).max(1);
        maps.sync(&table.v4, &table.v6, generation)?;
        let mut acc = Accumulator::default();
        if previous != 0 && !continuing {
            tracing::warn!("adopted counters were written under another subnet table; totals restart from here");
            let slots = std::iter::once(SLOT_NO_MATCH).chain(table.slots.keys().copied());
            acc.absorb(&maps.read_counters(slots)?, |_| None);
        }
        Ok(Self {
            maps,
            latency_rows: latency_rows(&table),
            table,
            generation,
            host,
            acc,
            unmapped_top,
            drains: 0,
            failures: 0,
            topology_loaded_at: SystemTime::now(),
            last: Arc::new(Snapshot::default()),
            self_metrics,
        })
    }

    /// Swaps in a new table: drains first so every byte counted so far keeps its old labels.
    pub fn replace_table(&mut self, table: KernelTable) -> Result<Arc<Snapshot>, MapsError> {
        let snap = self.drain();
        let generation = self.generation.wrapping_add(1).max(1);
        self.maps.sync(&table.v4, &table.v6, generation)?;
        self.generation = generation;
        self.latency_rows = latency_rows(&table);
        self.table = table;
        self.topology_loaded_at = SystemTime::now();
        Ok(snap)
    }

    /// Keeps per-subnet totals (for `dst.subnet`) from now on, at most `cap` series; 0: none.
    pub fn track_subnets(&mut self, cap: usize) {
        self.acc.track_subnets(cap);
    }

    /// Never fails: a failed read keeps the previous totals and is counted.
    pub fn drain(&mut self) -> Arc<Snapshot> {
        let started = Instant::now();
        match self.try_drain() {
            Ok(mut snap) => {
                self.drains += 1;
                snap.drains = self.drains;
                snap.drain_failures = self.failures;
                snap.last_drain = started.elapsed();
                self.last = Arc::new(snap);
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!("drain failed (previous snapshot kept): {e}");
                let mut snap = (*self.last).clone();
                snap.drain_failures = self.failures;
                self.last = Arc::new(snap);
            }
        }
        self.last.clone()
    }

    fn try_drain(&mut self) -> Result<Snapshot, MapsError> {
        let slots = std::iter::once(SLOT_NO_MATCH).chain(self.table.slots.keys().copied());
        let reads = self.maps.read_counters(slots)?;
        let table = &self.table;
        self.acc.absorb(&reads, |slot| {
            if slot == SLOT_NO_MATCH {
                let c = TrafficClass::Unknown;
                return Some(SlotMeaning { dst_zone: c.as_str().into(), dst_zone_id: c.as_str().into(), class: c, subnet: None, billing: Default::default() });
            }
            table.slots.get(&slot).map(|l| SlotMeaning {
                dst_zone: l.dst_zone.clone(),
                dst_zone_id: l.dst_zone_id.clone(),
                class: l.class,
                subnet: l.subnet,
                billing: l.billing.clone(),
            })
        });
        let errors = self.maps.read_errors()?;
        let mut unmapped: Vec<UnmappedRow> = self
            .maps
            .read_unmapped()
            .into_iter()
            .map(|(k, v)| UnmappedRow { prefix: unmapped_prefix(&k), bytes: v.bytes, packets: v.packets })
            .collect();
        let tracked = unmapped.len() as u64;
        unmapped.sort_by(|a, b| b.total_bytes().cmp(&a.total_bytes()).then_with(|| a.prefix.cmp(&b.prefix)));
        unmapped.truncate(self.unmapped_top);
        let inserted = errors[KernelError::UnmappedNew as usize];
        let (subnet_flows, subnet_series_overflow) = self.acc.subnet_totals();
        let mut latency = BTreeMap::new();
        for (row, r) in self.maps.read_latency(self.latency_rows.keys().copied())? {
            let active = r.events.iter().any(|e| *e > 0) || r.connect.count() > 0 || r.rtt.count() > 0;
            if let (true, Some(key)) = (active, self.latency_rows.get(&row)) {
                latency.insert(key.clone(), r);
            }
        }
        Ok(Snapshot {
            taken_at: Some(SystemTime::now()),
            host: self.host.clone(),
            flows: self.acc.totals().clone(),
            unmapped_top: unmapped,
            unmapped_tracked: tracked,
            unmapped_evicted: inserted.saturating_sub(tracked),
            kernel_errors: KernelError::ALL.iter().map(|k| (*k, errors[*k as usize])).collect(),
            drains: 0,
            drain_failures: 0,
            last_drain: Default::default(),
            subnets: self.table.slots.values().filter(|l| l.kind == SlotKind::Subnet).count() as u64,
            topology_generation: self.generation,
            topology_loaded_at: Some(self.topology_loaded_at),
            agent_counters: self.self_metrics.counters(),
            agent_gauges: self.self_metrics.gauges(),
            latency,
            subnet_flows,
            subnet_series_overflow,
        })
    }
}

/// Each histogram row's destination labels: a zone's row takes the zone's labels, a class row
/// the labels of that class's catch-all slot.
fn latency_rows(table: &KernelTable) -> BTreeMap<u32, ZoneKey> {
    let mut rows = BTreeMap::new();
    for (_, info) in table.entries() {
        let Some(labels) = table.slots.get(&info.slot) else { continue };
        rows.entry(hist::row(info.zone_idx, info.class)).or_insert_with(|| ZoneKey {
            dst_zone: labels.dst_zone.clone(),
            dst_zone_id: labels.dst_zone_id.clone(),
            class: labels.class,
        });
    }
    rows
}
