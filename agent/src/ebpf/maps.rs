//! Typed handles on the kernel maps: writing the subnet table, reading the counters.
//! Reads sum the per-CPU values; nothing here keeps state between calls.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    sync::atomic::{AtomicBool, Ordering},
};

use agent_common::{
    Counter, Direction, KernelError, SeenFlags, State,
    hist::{self, TcpEvent}, SubnetInfo, UnmappedKey, UnmappedValue,
    counter_index, map_names,
    nat::{NatKey, NatStat, NatTarget, PendingValue, target},
};
use aya::{
    Ebpf,
    Pod,
    maps::{Array, HashMap, IterableMap as _, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
};

use super::batch;
use ipnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("map {name}: batch lookup: {source}")]
    Batch { name: &'static str, source: std::io::Error },
}

fn err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

pub struct KernelMaps {
    /// What the State map holds: topology and workload generations are published separately.
    published: State,
    rtt: PerCpuArray<MapData, u64>,
    srtt: PerCpuArray<MapData, u64>,
    connect: PerCpuArray<MapData, u64>,
    events: PerCpuArray<MapData, u64>,
    v4: LpmTrie<MapData, [u8; 4], SubnetInfo>,
    v6: LpmTrie<MapData, [u8; 16], SubnetInfo>,
    counters: PerCpuArray<MapData, Counter>,
    seen: Array<MapData, SeenFlags>,
    unmapped: PerCpuHashMap<MapData, UnmappedKey, UnmappedValue>,
    errors: PerCpuArray<MapData, u64>,
    state: Array<MapData, State>,
    nat: HashMap<MapData, NatKey, NatTarget>,
    nat_pending: HashMap<MapData, NatKey, PendingValue>,
    nat_stats: PerCpuArray<MapData, u64>,
    /// Second handles on the NAT maps for the conntrack reader's thread (taken once).
    resolver_handles: Option<ResolverHandles>,
    /// Set once the kernel refuses BPF_MAP_LOOKUP_BATCH; reads then go element by element.
    no_batch: AtomicBool,
    pub workloads: super::WorkloadMaps,
}

/// The NAT map and the pending map, as a second pair of handles for the conntrack reader.
pub type ResolverHandles = (HashMap<MapData, NatKey, NatTarget>, HashMap<MapData, NatKey, PendingValue>);

/// Two handles on one hash map.
type HandlePair<K, V> = (HashMap<MapData, K, V>, HashMap<MapData, K, V>);

/// One cumulative histogram: per-bucket counts (empty when no sample yet) and the sum in µs.
/// `shift` 0: the kernel's scale-3 cells (`hist::bucket`); `shift` k: cells `2^k` times coarser,
/// at scale `3 − k` (`hist::coarse_cell`; the workload RTT histograms have shift 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
    pub shift: u32,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// OTLP exponential scale (Prometheus native schema) of the cells.
    pub fn scale(&self) -> i32 {
        hist::SCALE - self.shift as i32
    }

    /// The q-quantile in µs, interpolated inside its bucket's bounds `(2^(i/2^s), 2^((i+1)/2^s)]` s
    /// at the histogram's scale `s` (None when empty).
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (b, n) in self.buckets.iter().enumerate() {
            if *n > 0 && (seen + n) as f64 >= rank {
                if b as u32 == hist::ZERO_CELL {
                    return Some(0.0);
                }
                let (lo, hi) = bucket_bounds_us_at(b as u32, self.shift);
                return Some(lo + (hi - lo) * ((rank - seen as f64) / *n as f64).clamp(0.0, 1.0));
            }
            seen += n;
        }
        Some(bucket_bounds_us_at(hist::buckets_at(self.shift) - 1, self.shift).1)
    }
}

/// The real bounds of a non-zero kernel cell in µs: `10⁶·2^(i/8)` and `10⁶·2^((i+1)/8)`.
pub fn bucket_bounds_us(cell: u32) -> (f64, f64) {
    bucket_bounds_us_at(cell, 0)
}

/// The real bounds in µs of a non-zero cell `shift` steps coarser than the kernel's.
pub fn bucket_bounds_us_at(cell: u32, shift: u32) -> (f64, f64) {
    let i = f64::from(hist::index_at(cell, shift));
    let per_octave = f64::from(1u32 << (hist::SCALE as u32 - shift.min(hist::SCALE as u32)));
    (1e6 * (i / per_octave).exp2(), 1e6 * ((i + 1.0) / per_octave).exp2())
}

/// Latency figures of one destination row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowLatency {
    pub rtt: Histogram,
    /// Smoothed RTTs of sockets that predate the agent.
    pub srtt: Histogram,
    pub connect: Histogram,
    /// Indexed by [`TcpEvent`].
    pub events: [u64; TcpEvent::COUNT as usize],
}

/// Summed counters of one slot, indexed by [`Direction`].
pub type SlotCounters = [Counter; 2];

impl KernelMaps {
    /// Takes the maps out of the loaded object; `rtt_interval_ns` and `workload_rtt` (which rows
    /// get per-workload RTT) are published with every sync.
    pub fn take(ebpf: &mut Ebpf, rtt_interval_ns: u64, workload_rtt: agent_common::workload_rtt::Mode) -> Result<Self, MapsError> {
        fn take<M: TryFrom<aya::maps::Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<M, MapsError> {
            let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
            M::try_from(map).map_err(err(name))
        }
        let (nat, nat_dup) = take_twice(ebpf, map_names::NAT)?;
        let (nat_pending, pending_dup) = take_twice(ebpf, map_names::NAT_PENDING)?;
        let state: Array<MapData, State> = take(ebpf, map_names::STATE)?;
        let adopted = state.get(&0, 0).unwrap_or_default();
        let workloads = super::WorkloadMaps::take(ebpf, workload_rtt != agent_common::workload_rtt::Mode::Off)?;
        let published = State {
            rtt_interval_ns,
            workload_capacity: workloads.capacity(),
            workload_rtt: workload_rtt as u32,
            ..adopted
        };
        Ok(Self {
            published,
            workloads,
            nat,
            nat_pending,
            resolver_handles: Some((nat_dup, pending_dup)),
            nat_stats: take(ebpf, map_names::NAT_STATS)?,
            rtt: take(ebpf, map_names::RTT_HIST)?,
            srtt: take(ebpf, map_names::SRTT_HIST)?,
            connect: take(ebpf, map_names::CONNECT_HIST)?,
            events: take(ebpf, map_names::TCP_EVENTS)?,
            v4: take(ebpf, map_names::SUBNETS_V4)?,
            v6: take(ebpf, map_names::SUBNETS_V6)?,
            counters: take(ebpf, map_names::COUNTERS)?,
            seen: take(ebpf, map_names::SLOT_SEEN)?,
            unmapped: take(ebpf, map_names::UNMAPPED)?,
            errors: take(ebpf, map_names::ERRORS)?,
            state,
            no_batch: AtomicBool::new(false),
        })
    }

    /// The NAT maps for the conntrack reader (its own file descriptors); `None` after the first call.
    pub fn take_resolver_handles(&mut self) -> Option<ResolverHandles> {
        self.resolver_handles.take()
    }

    /// Kernel NAT counters summed over CPUs, indexed by [`NatStat`].
    pub fn read_nat_stats(&self) -> Result<[u64; NatStat::COUNT as usize], MapsError> {
        let mut out = [0u64; NatStat::COUNT as usize];
        for (i, cell) in out.iter_mut().enumerate() {
            let per_cpu = self.nat_stats.get(&(i as u32), 0).map_err(err(map_names::NAT_STATS))?;
            *cell = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
        Ok(out)
    }

    /// Makes the tries hold exactly `v4`/`v6`, then publishes `generation` so sockets classify
    /// again. New and changed prefixes go in before stale ones come out, so a packet is always
    /// classified against either the old or the new entry for its address, never a gap.
    pub fn sync(
        &mut self,
        v4: &[(Ipv4Net, SubnetInfo)],
        v6: &[(Ipv6Net, SubnetInfo)],
        generation: u32,
    ) -> Result<(), MapsError> {
        let name = map_names::SUBNETS_V4;
        let keep4: HashSet<(u32, [u8; 4])> = v4.iter().map(|(n, _)| key4(n)).collect();
        for (net, info) in v4 {
            let (len, data) = key4(net);
            self.v4.insert(&Key::new(len, data), info, 0).map_err(err(name))?;
        }
        let stale4: Vec<Key<[u8; 4]>> = self
            .v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep4.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale4 {
            self.v4.remove(&k).map_err(err(name))?;
        }

        let name = map_names::SUBNETS_V6;
        let keep6: HashSet<(u32, [u8; 16])> = v6.iter().map(|(n, _)| key6(n)).collect();
        for (net, info) in v6 {
            let (len, data) = key6(net);
            self.v6.insert(&Key::new(len, data), info, 0).map_err(err(name))?;
        }
        let stale6: Vec<Key<[u8; 16]>> = self
            .v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep6.contains(&(k.prefix_len(), k.data())))
            .collect();
        for k in stale6 {
            self.v6.remove(&k).map_err(err(name))?;
        }

        self.published.generation = generation;
        self.state.set(0, &self.published, 0).map_err(err(map_names::STATE))
    }

    /// Publishes a new workload generation (never 0): every socket resolves its cgroup again on
    /// its next packet. Returns it.
    pub fn bump_workload_generation(&mut self) -> Result<u32, MapsError> {
        self.published.workload_generation = self.published.workload_generation.wrapping_add(1).max(1);
        self.state.set(0, &self.published, 0).map_err(err(map_names::STATE))?;
        Ok(self.published.workload_generation)
    }

    /// True when the tries hold exactly these prefixes with these slots (an adopted table that
    /// means what the new one means).
    pub fn lpm_matches(&self, v4: &[(Ipv4Net, SubnetInfo)], v6: &[(Ipv6Net, SubnetInfo)]) -> bool {
        let have4: HashSet<(u32, [u8; 4], u32)> =
            self.v4.iter().filter_map(Result::ok).map(|(k, v)| (k.prefix_len(), k.data(), v.slot)).collect();
        let have6: HashSet<(u32, [u8; 16], u32)> =
            self.v6.iter().filter_map(Result::ok).map(|(k, v)| (k.prefix_len(), k.data(), v.slot)).collect();
        let want4: HashSet<(u32, [u8; 4], u32)> = v4.iter().map(|(n, i)| (key4(n).0, key4(n).1, i.slot)).collect();
        let want6: HashSet<(u32, [u8; 16], u32)> = v6.iter().map(|(n, i)| (key6(n).0, key6(n).1, i.slot)).collect();
        have4 == want4 && have6 == want6
    }

    /// The kernel's current generation (0 before the first sync).
    pub fn generation(&self) -> Result<u32, MapsError> {
        Ok(self.state.get(&0, 0).map_err(err(map_names::STATE))?.generation)
    }

    /// The slots the kernel has flagged seen (a socket was classified into them), ascending;
    /// `None` where the kernel has no batch lookup (the caller then reads every slot).
    pub fn read_seen(&self) -> Result<Option<Vec<u32>>, MapsError> {
        if self.no_batch.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let name = map_names::SLOT_SEEN;
        let Some(elements) = batch::read_array(self.seen.map().fd().as_fd(), self.seen.len(), [0u8; agent_common::SEEN_PER_ELEMENT as usize])
            .map_err(|source| MapsError::Batch { name, source })?
        else {
            return Ok(None);
        };
        let per = agent_common::SEEN_PER_ELEMENT;
        Ok(Some(
            elements
                .iter()
                .enumerate()
                .flat_map(|(e, flags)| flags.iter().enumerate().filter(|(_, f)| **f != 0).map(move |(b, _)| e as u32 * per + b as u32))
                .collect(),
        ))
    }

    /// Cumulative counters of the given slots, summed over CPUs: cell by cell when they are few
    /// against the map (each lookup is a system call), else the whole map in batches.
    pub fn read_counters(
        &self,
        slots: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<(u32, SlotCounters)>, MapsError> {
        let name = map_names::COUNTERS;
        let sum = |a: Counter, b: Counter| Counter {
            bytes: a.bytes.wrapping_add(b.bytes),
            packets: a.packets.wrapping_add(b.packets),
        };
        let slots: Vec<u32> = slots.into_iter().collect();
        // A batch costs about a sixth of a lookup per element (measured: 66 ms for 220k
        // per-CPU cells on two CPUs, against ~2 µs per lookup); eight is the safe side.
        let few = slots.len().saturating_mul(2).saturating_mul(8) < self.counters.len() as usize;
        let whole = if few { None } else { self.whole(&self.counters, name, Counter::default(), sum)? };
        slots
            .into_iter()
            .map(|slot| {
                let mut cells = [Counter::default(); 2];
                for dir in Direction::ALL {
                    let index = counter_index(slot, dir);
                    let cell = &mut cells[dir as usize];
                    let mut add = |c: &Counter| {
                        cell.bytes = cell.bytes.wrapping_add(c.bytes);
                        cell.packets = cell.packets.wrapping_add(c.packets);
                    };
                    match whole.as_ref().map(|all| all.get(index as usize)) {
                        Some(Some(c)) => add(c),
                        // Not batched, or an index past the map (which the lookup reports).
                        _ => self.counters.get(&index, 0).map_err(err(name))?.iter().for_each(add),
                    }
                }
                Ok((slot, cells))
            })
            .collect()
    }

    /// Every element of a per-CPU array summed over CPUs, in a few batch calls; `None` where the
    /// kernel has no batch lookup (the caller then reads the cells it needs one by one).
    fn whole<V: Pod>(
        &self,
        map: &PerCpuArray<MapData, V>,
        name: &'static str,
        zero: V,
        add: impl Fn(V, V) -> V,
    ) -> Result<Option<Vec<V>>, MapsError> {
        if self.no_batch.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| MapsError::Batch { name, source })?.get() as usize;
        let read = batch::sum_per_cpu_array(map.map().fd().as_fd(), map.len(), cpus, zero, add)
            .map_err(|source| MapsError::Batch { name, source })?;
        if read.is_none() {
            tracing::info!("this kernel has no BPF_MAP_LOOKUP_BATCH; reading maps element by element");
            self.no_batch.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }

    /// Cells `start..start + len` of a per-CPU u64 array, summed over CPUs: one batch call, or
    /// one lookup per cell where the kernel has no batch lookup.
    fn cells(&self, map: &PerCpuArray<MapData, u64>, name: &'static str, start: u32, len: u32) -> Result<Vec<u64>, MapsError> {
        if !self.no_batch.load(Ordering::Relaxed) {
            let cpus = aya::util::nr_cpus().map_err(|(_, source)| MapsError::Batch { name, source })?.get() as usize;
            match batch::sum_per_cpu_range(map.map().fd().as_fd(), start, len, cpus, 0, u64::wrapping_add) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => self.no_batch.store(true, Ordering::Relaxed),
                Err(source) => return Err(MapsError::Batch { name, source }),
            }
        }
        (start..start + len)
            .map(|i| Ok(map.get(&i, 0).map_err(err(name))?.iter().fold(0u64, |a, v| a.wrapping_add(*v))))
            .collect()
    }

    /// Latency histograms and TCP events of the given rows, summed over CPUs: each row's cells
    /// in one call per map (the maps hold every row there could be; a host uses a few).
    pub fn read_latency(&self, rows: impl IntoIterator<Item = u32>) -> Result<Vec<(u32, RowLatency)>, MapsError> {
        let mut out = Vec::new();
        for row in rows {
            let mut r = RowLatency::default();
            let events = self.cells(&self.events, map_names::TCP_EVENTS, row * TcpEvent::COUNT, TcpEvent::COUNT)?;
            for (cell, v) in r.events.iter_mut().zip(events) {
                *cell = v;
            }
            for (map, name, h) in [
                (&self.rtt, map_names::RTT_HIST, &mut r.rtt),
                (&self.srtt, map_names::SRTT_HIST, &mut r.srtt),
                (&self.connect, map_names::CONNECT_HIST, &mut r.connect),
            ] {
                let cells = self.cells(map, name, row * hist::ROW_STRIDE, hist::ROW_STRIDE)?;
                h.sum_us = cells.get(hist::SUM_CELL as usize).copied().unwrap_or(0);
                let buckets = cells.get(..hist::BUCKETS as usize).unwrap_or_default();
                // Empty until the first sample (a sub-µs sample adds nothing to the sum).
                if buckets.iter().any(|n| *n != 0) {
                    h.buckets = buckets.to_vec();
                }
            }
            out.push((row, r));
        }
        Ok(out)
    }

    /// Kernel error counters, summed over CPUs, indexed by [`KernelError`].
    pub fn read_errors(&self) -> Result<[u64; KernelError::COUNT as usize], MapsError> {
        let mut out = [0u64; KernelError::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.errors.get(&(i as u32), 0).map_err(err(map_names::ERRORS))?;
            *slot = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
        Ok(out)
    }

    /// Every remembered unmapped prefix with its counters summed over CPUs. Entries evicted
    /// while iterating are skipped (their bytes stay in the per-class counters).
    pub fn read_unmapped(&self) -> Vec<(UnmappedKey, UnmappedValue)> {
        self.unmapped
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let sum = per_cpu.iter().fold(UnmappedValue::default(), |mut a, v| {
                    for d in 0..2 {
                        a.bytes[d] = a.bytes[d].wrapping_add(v.bytes[d]);
                        a.packets[d] = a.packets[d].wrapping_add(v.packets[d]);
                    }
                    a
                });
                (k, sum)
            })
            .collect()
    }
}

/// Takes a map and opens a second handle on it (a duplicated descriptor) for another thread.
fn take_twice<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HandlePair<K, V>, MapsError> {
    let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
    let data = match &map {
        Map::HashMap(d) | Map::LruHashMap(d) => d,
        _ => return Err(MapsError::Missing(name)),
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapsError::Map { name, source: MapError::SyscallError(aya::sys::SyscallError { call: "dup", io_error: e }) })?;
    let second = Map::from_map_data(MapData::from_fd(fd).map_err(err(name))?).map_err(err(name))?;
    Ok((HashMap::try_from(map).map_err(err(name))?, HashMap::try_from(second).map_err(err(name))?))
}

impl crate::nat::PendingMaps for KernelMaps {
    fn pending(&self) -> Vec<(NatKey, PendingValue)> {
        self.nat_pending.iter().filter_map(Result::ok).collect()
    }

    fn nat(&self, key: &NatKey) -> Option<NatTarget> {
        self.nat.get(key, 0).ok()
    }

    fn give_up(&mut self, key: &NatKey) {
        let t = NatTarget { state: target::UNRESOLVED, ..NatTarget::default() };
        if let Err(e) = self.nat.insert(key, &t, 0) {
            tracing::debug!("marking a pending connection unresolved failed: {e}");
        }
    }

    fn forget(&mut self, key: &NatKey, settled: bool) {
        let _ = self.nat_pending.remove(key);
        if settled {
            let _ = self.nat.remove(key);
        }
    }

    fn slot_of(&self, family: u8, addr: [u8; 16]) -> Option<u32> {
        match family {
            4 => self.v4.get(&Key::new(32, [addr[0], addr[1], addr[2], addr[3]]), 0).ok().map(|i| i.slot),
            6 => self.v6.get(&Key::new(128, addr), 0).ok().map(|i| i.slot),
            _ => None,
        }
    }
}

fn key4(net: &Ipv4Net) -> (u32, [u8; 4]) {
    (u32::from(net.prefix_len()), net.network().octets())
}

fn key6(net: &Ipv6Net) -> (u32, [u8; 16]) {
    (u32::from(net.prefix_len()), net.network().octets())
}

/// Human form of an unmapped key: "10.0.9.0/24" or "fd00:0:9::/48".
pub fn unmapped_prefix(key: &UnmappedKey) -> String {
    if key.family == 4 {
        let a = Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]);
        format!("{a}/{}", agent_common::UNMAPPED_V4_PREFIX)
    } else {
        format!("{}/{}", Ipv6Addr::from(key.addr), agent_common::UNMAPPED_V6_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut h = Histogram { buckets: vec![0; hist::BUCKETS as usize], sum_us: 0, shift: 0 };
        assert_eq!(h.quantile_us(0.5), None);
        let b = hist::bucket(1500) as usize;
        h.buckets[b] = 100;
        let p50 = h.quantile_us(0.5).expect("non-empty");
        let (lo, hi) = bucket_bounds_us(b as u32);
        assert!((lo..=hi).contains(&p50) && (p50 - 1500.0).abs() / 1500.0 < 0.07, "{p50}");
        assert!(lo < 1500.0 && 1500.0 <= hi, "{lo}..{hi}");
        // 1200 µs in a scale-1 histogram: its bucket is (2^-10, 2^-9.5] s.
        let shift = agent_common::workload_rtt::SHIFT;
        let mut coarse = Histogram { buckets: vec![0; hist::buckets_at(shift) as usize], sum_us: 0, shift };
        coarse.buckets[hist::coarse_cell(hist::bucket(1200), shift) as usize] = 100;
        assert_eq!(coarse.scale(), 1);
        let (lo, hi) = bucket_bounds_us_at(hist::coarse_cell(hist::bucket(1200), shift), shift);
        assert!((lo - 976.5625).abs() < 1e-6 && (hi - 1381.0).abs() < 1.0, "{lo}..{hi}");
        let p50 = coarse.quantile_us(0.5).expect("non-empty");
        assert!(lo < p50 && p50 < hi, "{p50}");
    }

    #[test]
    fn unmapped_prefixes_render() {
        assert_eq!(unmapped_prefix(&UnmappedKey::v4([10, 0, 9, 7])), "10.0.9.0/24");
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[5] = 9;
        a[15] = 1;
        assert_eq!(unmapped_prefix(&UnmappedKey::v6(a)), "fd00:0:9::/48");
    }
}
