//! One drain cycle: read the kernel maps, credit the growth to labels, build the next snapshot.
//! Owns the maps and the table they were written from, so a topology swap and a drain can never
//! interleave.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Instant, SystemTime},
};

use agent_common::{KernelError, SLOT_NO_MATCH, TrafficClass, hist, nat::NatStat};

use crate::{
    drain::{Accumulator, SlotMeaning},
    ebpf::{
        KernelMaps, MapsError,
        maps::{SlotCounters, unmapped_prefix},
    },
    ledger::{self, AccState, Ledger, LedgerStore, state::TableRecord, store::Record},
    nat::{self, NatSnapshot, PendingSweep, ResolverStats},
    self_metrics::Shared as SharedSelfMetrics,
    snapshot::{HostLabels, Snapshot, UnmappedRow, ZoneKey},
    topology::{KernelTable, SlotAllocator, SlotKind, SlotLabels, ZoneTable},
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
    /// NAT: whether catch-all ranges wait for conntrack, the sweep of held bytes, and what it
    /// credited as unresolved.
    nat_candidates: bool,
    /// Candidates are flagged only once conntrack is seen tracking connections here (see
    /// [`NatSetup::candidates`]).
    nat_armed: bool,
    pending: PendingSweep,
    nat_user: NatSnapshot,
    resolver: Option<Arc<ResolverStats>>,
    /// Per-workload attribution; `None` in tests and tools that do not walk cgroups.
    workloads: Option<crate::workloads::attribution::Attribution>,
    /// The allocators `table` was built by, kept for refreshes (unchanged subnets keep their
    /// slots, zones their histogram rows) and for the ledger.
    slots: SlotAllocator,
    zones: ZoneTable,
    /// Pinned: where the totals and the table are recorded for the next agent.
    ledger: Option<LedgerSink>,
    /// Slots a table change gave up, with the labels they had. A socket classified before the
    /// change counts into its old slot until its next packet sees the new generation, which can
    /// be after the drain that preceded the change: so each is read, and credited to its old
    /// labels, at every drain until the allocator hands it out again (not before the next
    /// change, whose preceding drain is its last read).
    retired: BTreeMap<u32, SlotLabels>,
    /// Drains until the next read of every slot's counters (see `read_slot_counters`).
    until_full_read: u32,
    /// (generation, subnets in `table`): counted once per table, not at every drain.
    subnet_count: (u32, u64),
}

/// Every this many drains (and at the first), the counters of every slot are read instead of
/// only the flagged ones: a check that no slot grew without its flag (counted in
/// `azflow_drain_unflagged_slots_total`), and a floor under any hole in the flagging (a socket
/// the previous agent classified before the flag map existed). At 5 s drains: once a minute.
const FULL_READ_EVERY: u32 = 12;

/// The ledger of a pinned agent (see `ledger`).
pub struct Persist {
    pub store: LedgerStore,
    /// What the previous agent recorded, if anything.
    pub restored: Option<Ledger>,
}

struct LedgerSink {
    store: LedgerStore,
    warned: bool,
}

/// NAT settings of a [`Collector`].
pub struct NatSetup {
    /// Flag catch-all ranges as NAT candidates — only when conntrack can be read, and only from
    /// the moment the reader has seen it track a connection: on a host where conntrack tracks
    /// nothing, no socket would ever get its mapping, so none waits for one.
    pub candidates: bool,
    pub pending_timeout: std::time::Duration,
    pub resolver: Option<Arc<ResolverStats>>,
}

impl Collector {
    /// Writes `table` to the kernel (generation 1) and starts counting from there.
    #[expect(clippy::too_many_arguments, reason = "each is a separate piece `run` builds and hands over once; a struct for them would only move the list")]
    pub fn new(
        mut maps: KernelMaps,
        table: KernelTable,
        (slots, zones): (SlotAllocator, ZoneTable),
        host: HostLabels,
        unmapped_top: usize,
        self_metrics: SharedSelfMetrics,
        nat_setup: NatSetup,
        persist: Option<Persist>,
    ) -> Result<Self, MapsError> {
        let nat_armed = nat_setup.candidates && nat_setup.resolver.as_ref().is_some_and(|r| r.tracking());
        let table = if nat_armed { table.with_nat_candidates() } else { table };
        let previous = maps.generation()?;
        let (persist, restored) = match persist {
            Some(Persist { store, restored }) => (Some(LedgerSink { store, warned: false }), restored),
            None => (None, None),
        };
        let mut acc = Accumulator::default();
        let mut retired = BTreeMap::new();
        let mut nat_user = NatSnapshot { enabled: nat_setup.candidates, ..NatSnapshot::default() };
        match restored {
            // Adopted maps (a restart with --pin) and the ledger of the agent that counted into
            // them: its totals continue, and each slot's growth since its last drain goes to the
            // labels the slot had then, whatever the new table makes of the slot.
            Some(l) if previous != 0 && l.table.generation == previous => {
                acc = Accumulator::from_state(&l.acc);
                let slots: std::collections::BTreeSet<u32> = std::iter::once(SLOT_NO_MATCH)
                    .chain(l.table.labels.keys().copied())
                    .chain(l.acc.last.iter().map(|(s, _)| *s))
                    .collect();
                acc.absorb(&maps.read_counters(slots)?, |slot| meaning_in(&l.table.labels, slot));
                retired = l.table.labels.into_iter().filter(|(slot, _)| !table.slots.contains_key(slot)).collect();
                let n = l.acc.nat_unresolved;
                (nat_user.unresolved_bytes, nat_user.unresolved_packets) = ([n[0], n[2]], [n[1], n[3]]);
                tracing::info!(generation = previous, "continuing the previous agent's totals from its ledger");
            }
            restored => {
                // Without a ledger that matches the kernel's table, adopted counts continue the
                // totals only when every prefix keeps its slot; otherwise they become the baseline.
                if let Some(l) = restored {
                    tracing::warn!(ledger = l.table.generation, kernel = previous, "the ledger does not describe the adopted table; not used");
                }
                if previous != 0 && !maps.lpm_matches(&table.v4, &table.v6) {
                    tracing::warn!("adopted counters were written under another subnet table; totals restart from here");
                    let slots = std::iter::once(SLOT_NO_MATCH).chain(table.slots.keys().copied());
                    acc.absorb(&maps.read_counters(slots)?, |_| None);
                }
            }
        }
        let generation = previous.wrapping_add(1).max(1);
        maps.sync(&table.v4, &table.v6, generation)?;
        let mut collector = Self {
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
            nat_candidates: nat_setup.candidates,
            nat_armed,
            pending: PendingSweep::new(nat_setup.pending_timeout),
            nat_user,
            resolver: nat_setup.resolver,
            slots,
            zones,
            ledger: persist,
            workloads: None,
            retired,
            until_full_read: 0,
            subnet_count: (0, 0),
        };
        collector.record_table();
        collector.record_totals();
        Ok(collector)
    }

    /// Attributes bytes to local workloads from now on (writes the first walk to the kernel).
    pub fn attribute_workloads(&mut self, mut a: crate::workloads::attribution::Attribution) -> Result<(), MapsError> {
        a.start(&mut self.maps)?;
        self.workloads = Some(a);
        Ok(())
    }

    /// Walks the cgroup tree when due (between drains, so short-lived cgroups are named soon).
    pub fn refresh_workloads(&mut self) {
        if let Some(a) = &mut self.workloads
            && let Err(e) = a.refresh(&mut self.maps, &self.latency_rows, false)
        {
            tracing::warn!("workload refresh failed (retried at the next one): {e}");
        }
    }

    /// Records the table the kernel now holds (after every sync).
    fn record_table(&mut self) {
        if self.ledger.is_none() {
            return;
        }
        // The next agent reads the retired slots with these labels too (a restart right after a
        // change must not lose what sockets still counted into them).
        let merged;
        let labels = if self.retired.is_empty() {
            &self.table.slots
        } else {
            merged = self.table.slots.iter().chain(&self.retired).map(|(s, l)| (*s, l.clone())).collect();
            &merged
        };
        let state = TableRecord { generation: self.generation, slots: &self.slots, zones: &self.zones, labels };
        self.write_ledger(Record::Table, ledger::state::encode(&state));
    }

    /// Records the totals and each slot's last read (after every drain).
    fn record_totals(&mut self) {
        if self.ledger.is_none() {
            return;
        }
        let mut state: AccState = self.acc.to_state();
        state.generation = self.generation;
        let (b, p) = (self.nat_user.unresolved_bytes, self.nat_user.unresolved_packets);
        state.nat_unresolved = [b[0], p[0], b[1], p[1]];
        self.write_ledger(Record::Acc, ledger::state::encode(&state));
    }

    /// A failed write is counted and logged once; counting goes on (the next agent then falls
    /// back to the old rule: continue only when the table is unchanged).
    fn write_ledger(&mut self, record: Record, bytes: Result<Vec<u8>, postcard::Error>) {
        let Some(sink) = &mut self.ledger else { return };
        let result = bytes.map_err(|e| e.to_string()).and_then(|b| sink.store.write(record, &b).map_err(|e| e.to_string()));
        if let Err(e) = result {
            self.self_metrics.incr("ledger_write_failures", if record == Record::Table { "table" } else { "totals" });
            if !std::mem::replace(&mut sink.warned, true) {
                tracing::warn!("writing the restart ledger failed ({e}); a restart may not continue these totals exactly");
            }
        }
    }

    /// Swaps in a new table built by `slots` and `zones`: drains first so every byte counted so
    /// far keeps its old labels; slots the new table drops are retired (see `retired`).
    pub fn replace_table(&mut self, table: KernelTable, slots: SlotAllocator, zones: ZoneTable) -> Result<Arc<Snapshot>, MapsError> {
        let table = if self.nat_armed { table.with_nat_candidates() } else { table };
        let snap = self.drain();
        let generation = self.generation.wrapping_add(1).max(1);
        self.maps.sync(&table.v4, &table.v6, generation)?;
        self.generation = generation;
        self.latency_rows = latency_rows(&table);
        let old = std::mem::replace(&mut self.table, table);
        let current = &self.table.slots;
        self.retired.retain(|slot, _| !current.contains_key(slot));
        self.retired.extend(old.slots.into_iter().filter(|(slot, _)| !current.contains_key(slot)));
        self.topology_loaded_at = SystemTime::now();
        (self.slots, self.zones) = (slots, zones);
        self.record_table();
        Ok(snap)
    }

    /// The allocators the current table was built by.
    pub fn allocators(&self) -> (&SlotAllocator, &ZoneTable) {
        (&self.slots, &self.zones)
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
                self.record_totals();
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
        if self.subnet_count.0 != self.generation {
            self.subnet_count = (self.generation, self.table.slots.values().filter(|l| l.kind == SlotKind::Subnet).count() as u64);
        }
        let reads = self.read_slot_counters()?;
        let (table, retired) = (&self.table, &self.retired);
        self.acc.absorb(&reads, |slot| slot_meaning(table, slot).or_else(|| meaning_in(retired, slot)));
        let nat = self.sweep_nat()?;
        let workloads = match &mut self.workloads {
            Some(a) => {
                a.refresh(&mut self.maps, &self.latency_rows, false)?;
                a.snapshot(&self.maps)?
            }
            None => Default::default(),
        };
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
            let active = r.events.iter().any(|e| *e > 0) || r.connect.count() > 0 || r.rtt.count() > 0 || r.srtt.count() > 0;
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
            subnets: self.subnet_count.1,
            topology_generation: self.generation,
            topology_loaded_at: Some(self.topology_loaded_at),
            agent_counters: self.self_metrics.counters(),
            agent_gauges: self.self_metrics.gauges(),
            latency,
            subnet_flows,
            subnet_series_overflow,
            nat,
            workload_flows: workloads.flows,
            workload_rtt: workloads.rtt,
            workload_stats: workloads.stats,
        })
    }

    /// The counters of every slot a socket was classified into (the kernel flags them), of the
    /// retired slots and of `SLOT_NO_MATCH`: at 100k subnets a host talks to a few, and reading
    /// all 200k per-CPU cells cost 66 ms of system time per drain. Every `FULL_READ_EVERY`
    /// drains every slot is read, and a slot that grew without its flag is counted.
    fn read_slot_counters(&mut self) -> Result<Vec<(u32, SlotCounters)>, MapsError> {
        let (table, retired) = (&self.table, &self.retired);
        let known = |slot: &u32| table.slots.contains_key(slot) || retired.contains_key(slot);
        let every = || std::iter::once(SLOT_NO_MATCH).chain(table.slots.keys().copied()).chain(retired.keys().copied());
        let full = self.until_full_read == 0;
        self.until_full_read = if full { FULL_READ_EVERY - 1 } else { self.until_full_read - 1 };
        if !full && let Some(seen) = self.maps.read_seen()? {
            let flagged = seen.into_iter().filter(|s| *s != SLOT_NO_MATCH && known(s));
            let reads = self.maps.read_counters(std::iter::once(SLOT_NO_MATCH).chain(flagged))?;
            self.self_metrics.add("drain_slot_reads", "flagged", reads.len() as u64);
            return Ok(reads);
        }
        let reads = self.maps.read_counters(every())?;
        self.self_metrics.add("drain_slot_reads", "every", reads.len() as u64);
        // Flags read after the counters: a slot flagged in between is not mistaken for a hole.
        if let Some(seen) = self.maps.read_seen()? {
            let unflagged =
                reads.iter().filter(|(slot, now)| *slot != SLOT_NO_MATCH && self.acc.grew(*slot, now) && seen.binary_search(slot).is_err()).count();
            self.self_metrics.add("drain_unflagged_slots", "grew", unflagged as u64);
        }
        Ok(reads)
    }

    /// Flags the NAT candidates once conntrack is seen tracking connections (a new generation, so
    /// sockets seen from now on may wait; sockets already counted keep counting directly).
    fn arm_nat(&mut self) -> Result<(), MapsError> {
        if self.nat_armed || !self.nat_candidates || !self.resolver.as_ref().is_some_and(|r| r.tracking()) {
            return Ok(());
        }
        let table = self.table.clone().with_nat_candidates();
        let generation = self.generation.wrapping_add(1).max(1);
        self.maps.sync(&table.v4, &table.v6, generation)?;
        (self.table, self.generation, self.nat_armed) = (table, generation, true);
        self.record_table();
        tracing::info!("conntrack tracks connections on this node: Service/NAT destinations now wait for their real remote end");
        Ok(())
    }

    /// Credits what the kernel held for NAT-pending connections (see `nat::pending`).
    fn sweep_nat(&mut self) -> Result<NatSnapshot, MapsError> {
        self.arm_nat()?;
        let mut credits = Vec::new();
        let outcome = self.pending.sweep(&mut self.maps, nat::monotonic_ns(), &mut credits);
        for c in credits {
            if let Some(m) = slot_meaning(&self.table, c.slot) {
                self.acc.credit(&m, c.direction, c.counter);
                if let Some(a) = &mut self.workloads {
                    let dst = ZoneKey { dst_zone: m.dst_zone.clone(), dst_zone_id: m.dst_zone_id.clone(), class: m.class };
                    a.credit(c.workload, dst, c.direction, c.counter);
                }
            }
            if c.unresolved {
                let d = c.direction as usize;
                self.nat_user.unresolved_bytes[d] = self.nat_user.unresolved_bytes[d].saturating_add(c.counter.bytes);
                self.nat_user.unresolved_packets[d] = self.nat_user.unresolved_packets[d].saturating_add(c.counter.packets);
            }
        }
        self.nat_user.timeouts += outcome.gave_up;
        let k = self.maps.read_nat_stats()?;
        let mut snap = self.nat_user.clone();
        snap.armed = self.nat_armed;
        for dir in agent_common::Direction::ALL {
            let d = dir as usize;
            snap.unresolved_bytes[d] = snap.unresolved_bytes[d].saturating_add(k[NatStat::unresolved_bytes(dir) as usize]);
            snap.unresolved_packets[d] = snap.unresolved_packets[d].saturating_add(k[NatStat::unresolved_packets(dir) as usize]);
        }
        snap.pending_bytes = outcome.held_bytes;
        snap.pending_connections = outcome.held_connections;
        snap.sockets_pending = k[NatStat::Pending as usize];
        snap.sockets_resolved = k[NatStat::Resolved as usize];
        snap.pending_full = k[NatStat::PendingFull as usize];
        snap.callbacks_while_pending = k[NatStat::CallbacksWhilePending as usize];
        if let Some(r) = &self.resolver {
            snap.absorb_resolver(r);
        }
        Ok(snap)
    }
}

/// What a slot means for export, `SLOT_NO_MATCH` included.
fn slot_meaning(table: &KernelTable, slot: u32) -> Option<SlotMeaning> {
    meaning_in(&table.slots, slot)
}

fn meaning_in(labels: &BTreeMap<u32, SlotLabels>, slot: u32) -> Option<SlotMeaning> {
    if slot == SLOT_NO_MATCH {
        let c = TrafficClass::Unknown;
        return Some(SlotMeaning { dst_zone: c.as_str().into(), dst_zone_id: c.as_str().into(), class: c, subnet: None, billing: Default::default() });
    }
    labels.get(&slot).map(|l| SlotMeaning {
        dst_zone: l.dst_zone.clone(),
        dst_zone_id: l.dst_zone_id.clone(),
        class: l.class,
        subnet: l.subnet,
        billing: l.billing.clone(),
    })
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
