//! One drain cycle: read the kernel maps, credit the growth to labels, build the next snapshot.
//! Owns the maps and the table they were written from, so a topology swap and a drain can never
//! interleave.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use agent_common::{KernelError, SLOT_NO_MATCH, TrafficClass};

use crate::{
    drain::{Accumulator, SlotMeaning},
    ebpf::{
        KernelMaps, MapsError,
        maps::unmapped_prefix,
    },
    self_metrics::Shared as SharedSelfMetrics,
    snapshot::{HostLabels, Snapshot, UnmappedRow},
    topology::{KernelTable, SlotKind},
};

pub struct Collector {
    maps: KernelMaps,
    table: KernelTable,
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
        let generation = maps.generation()?.wrapping_add(1).max(1);
        maps.sync(&table.v4, &table.v6, generation)?;
        Ok(Self {
            maps,
            table,
            generation,
            host,
            acc: Accumulator::default(),
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
        self.table = table;
        self.topology_loaded_at = SystemTime::now();
        Ok(snap)
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
                return Some(SlotMeaning { dst_zone: c.as_str().into(), dst_zone_id: c.as_str().into(), class: c });
            }
            table.slots.get(&slot).map(|l| SlotMeaning {
                dst_zone: l.dst_zone.clone(),
                dst_zone_id: l.dst_zone_id.clone(),
                class: l.class,
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
        })
    }
}
