//! The kernel's workload maps: cgroup id → index (written after each walk), the per-CPU counters
//! per (index, destination row, direction), the RTT histograms per (index, destination row), the
//! cgroup ids sockets met without an index, and the resolution counters. See
//! `agent_common::workload` and `agent_common::workload_rtt`.

use std::os::fd::AsFd as _;

use agent_common::{
    Counter, Direction, map_names,
    workload::{self as abi, WorkloadStat},
    workload_rtt::WorkloadRtt,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
};

use super::{MapsError, batch};

fn err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

pub struct WorkloadMaps {
    index: HashMap<MapData, u64, u32>,
    counters: PerCpuArray<MapData, Counter>,
    unknown: HashMap<MapData, u64, u64>,
    stats: PerCpuArray<MapData, u64>,
    rtt: Array<MapData, WorkloadRtt>,
    /// Whether `rtt` holds histograms (`--workload-rtt` not off): a one-entry map is not read.
    rtt_on: bool,
}

/// One non-empty workload RTT histogram, as the kernel holds it (shared by all CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadRttCell {
    pub index: u32,
    pub row: u32,
    pub hist: WorkloadRtt,
}

/// One non-zero workload counter cell, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadCell {
    pub index: u32,
    pub row: u32,
    pub direction: Direction,
    pub counter: Counter,
}

impl WorkloadMaps {
    /// `rtt_on`: the RTT histograms are kept (`--workload-rtt` is not off).
    pub fn take(ebpf: &mut Ebpf, rtt_on: bool) -> Result<Self, MapsError> {
        fn take<M: TryFrom<aya::maps::Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<M, MapsError> {
            let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
            M::try_from(map).map_err(err(name))
        }
        Ok(Self {
            index: take(ebpf, map_names::WORKLOAD_IDX)?,
            counters: take(ebpf, map_names::WL_COUNTERS)?,
            unknown: take(ebpf, map_names::WL_UNKNOWN)?,
            stats: take(ebpf, map_names::WL_STATS)?,
            rtt: take(ebpf, map_names::WL_RTT)?,
            rtt_on,
        })
    }

    /// (workload, row) RTT histograms the kernel keeps (0 when off).
    pub fn rtt_entries(&self) -> u32 {
        if self.rtt_on { self.rtt.len() } else { 0 }
    }

    /// Every non-empty RTT histogram of the indices below `indices` (the map is sized for every
    /// index the cap allows; a host uses a few). Read with one batch call per 1024 entries where
    /// the kernel has it, element by element otherwise.
    pub fn read_rtt(&self, indices: u32) -> Result<Vec<WorkloadRttCell>, MapsError> {
        if !self.rtt_on {
            return Ok(Vec::new());
        }
        let name = map_names::WL_RTT;
        let len = indices.saturating_mul(abi::ROWS).min(self.rtt.len());
        let whole = batch::read_array(self.rtt.map().fd().as_fd(), len, WorkloadRtt::default())
            .map_err(|source| MapsError::Batch { name, source })?;
        let all: Vec<WorkloadRtt> = match whole {
            Some(all) => all,
            None => (0..len).map(|i| self.rtt.get(&i, 0).map_err(err(name))).collect::<Result<_, _>>()?,
        };
        Ok(all
            .into_iter()
            .enumerate()
            // Most entries never get a sample. The count is added after the bucket, so a read in
            // between sees a bucket without a count: the bucket decides.
            .filter(|(_, h)| h.count != 0 || h.buckets.iter().any(|n| *n != 0))
            .map(|(i, hist)| WorkloadRttCell { index: i as u32 / abi::ROWS, row: i as u32 % abi::ROWS, hist })
            .collect())
    }

    /// Workload indices the counters have cells for.
    pub fn capacity(&self) -> u32 {
        self.counters.len() / (abi::ROWS * 2)
    }

    /// Deletes every cgroup id → index pair (an adopted map was written by another process,
    /// whose indices mean other workloads).
    pub fn clear(&mut self) -> Result<(), MapsError> {
        let keys: Vec<u64> = self.index.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.index.remove(&k);
        }
        Ok(())
    }

    /// Applies one refresh of the registry: deletes gone cgroups, then writes new pairs. A full
    /// map refuses a write: that cgroup stays `other` (counted by the caller).
    pub fn apply(&mut self, remove: &[u64], upsert: &[(u64, u16)]) -> Result<u64, MapsError> {
        for id in remove {
            let _ = self.index.remove(id);
        }
        let mut refused = 0;
        for (id, index) in upsert {
            match self.index.insert(id, &u32::from(*index), 0) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    refused += 1
                }
                Err(e) => return Err(err(map_names::WORKLOAD_IDX)(e)),
            }
        }
        Ok(refused)
    }

    /// cgroup ids sockets resolved without an index since the last call; each is removed as it
    /// is read, so an id comes back only if a socket meets it again.
    pub fn take_unknown(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.unknown.keys().filter_map(Result::ok).collect();
        for id in &ids {
            let _ = self.unknown.remove(id);
        }
        ids
    }

    /// Every non-zero counter cell of the indices below `indices`, summed over CPUs (the map
    /// is sized for every index the cap allows; a host uses a few).
    pub fn read_counters(&self, indices: u32) -> Result<Vec<WorkloadCell>, MapsError> {
        let name = map_names::WL_COUNTERS;
        let sum = |a: Counter, b: Counter| Counter {
            bytes: a.bytes.wrapping_add(b.bytes),
            packets: a.packets.wrapping_add(b.packets),
        };
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, source)| MapsError::Batch { name, source })?
            .get() as usize;
        let len = abi::cells(indices).min(self.counters.len());
        let whole = batch::sum_per_cpu_range(
            self.counters.map().fd().as_fd(),
            0,
            len,
            cpus,
            Counter::default(),
            sum,
        )
        .map_err(|source| MapsError::Batch { name, source })?;
        let cells: Vec<Counter> = match whole {
            Some(all) => all,
            None => (0..len)
                .map(|i| {
                    Ok(self
                        .counters
                        .get(&i, 0)
                        .map_err(err(name))?
                        .iter()
                        .fold(Counter::default(), |a, c| sum(a, *c)))
                })
                .collect::<Result<_, MapsError>>()?,
        };
        Ok(cells
            .into_iter()
            .enumerate()
            .filter(|(_, c)| *c != Counter::default())
            .map(|(i, counter)| {
                let i = i as u32;
                let direction = if i.is_multiple_of(2) {
                    Direction::Transmit
                } else {
                    Direction::Receive
                };
                WorkloadCell {
                    index: i / 2 / abi::ROWS,
                    row: (i / 2) % abi::ROWS,
                    direction,
                    counter,
                }
            })
            .collect())
    }

    /// Resolution counters summed over CPUs, indexed by [`WorkloadStat`].
    pub fn read_stats(&self) -> Result<[u64; WorkloadStat::COUNT as usize], MapsError> {
        let mut out = [0u64; WorkloadStat::COUNT as usize];
        for (i, cell) in out.iter_mut().enumerate() {
            let per_cpu = self
                .stats
                .get(&(i as u32), 0)
                .map_err(err(map_names::WL_STATS))?;
            *cell = per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use agent_common::workload::cell;

    #[test]
    fn cell_numbers_decode_back() {
        for (index, row) in [(0u32, 0u32), (1, 36), (201, 5)] {
            for dir in agent_common::Direction::ALL {
                let i = cell(index, row, dir);
                assert_eq!(
                    (i / 2 / super::abi::ROWS, (i / 2) % super::abi::ROWS, i % 2),
                    (index, row, dir as u32)
                );
            }
        }
    }
}
