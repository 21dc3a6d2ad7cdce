//! Map capacities from config: one pure function, so the arithmetic is tested without a kernel.

use crate::config::Limits;

/// Slots and prefixes reserved for the catch-all ranges (internet, private, VPC, local).
pub const RESERVED_SLOTS: u32 = 16;
pub const RESERVED_PREFIXES_PER_FAMILY: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// Highest usable slot + 1 (slot 0 is `SLOT_NO_MATCH`).
    pub slots: u32,
    /// Cells of the per-CPU counter array: one per slot and direction.
    pub counter_cells: u32,
    /// Elements of the slot-seen flags (64 slots each).
    pub seen_elements: u32,
    /// Prefixes per LPM trie (one trie per address family).
    pub lpm_prefixes: u32,
    pub unmapped_entries: u32,
    /// Connections the NAT map remembers (LRU).
    pub nat_entries: u32,
    /// Connections whose bytes can be held at once while their NAT mapping is unknown.
    pub nat_pending: u32,
    /// Cells of the per-CPU workload counters: per index, destination row and direction.
    pub workload_cells: u32,
    /// Live cgroups the kernel maps to a workload index.
    pub workload_cgroups: u32,
    /// (workload index, destination row) RTT histograms, shared by all CPUs (1 when off).
    pub workload_rtt_entries: u32,
}

pub fn map_sizes(limits: &Limits) -> MapSizes {
    let slots = limits.max_subnets.saturating_add(RESERVED_SLOTS + 1);
    MapSizes {
        slots,
        counter_cells: slots.saturating_mul(2),
        seen_elements: agent_common::seen_elements(slots),
        lpm_prefixes: limits.max_subnets.saturating_add(RESERVED_PREFIXES_PER_FAMILY),
        unmapped_entries: limits.unmapped_entries,
        nat_entries: limits.nat_entries,
        nat_pending: limits.nat_pending,
        workload_cells: agent_common::workload::cells(limits.workload_indices),
        workload_cgroups: limits.workload_cgroups,
        workload_rtt_entries: agent_common::workload_rtt::entries(limits.workload_indices, limits.workload_rtt),
    }
}

impl MapSizes {
    /// Memory the preallocated per-CPU counters take, for the start-up log line.
    pub fn counter_bytes(&self, cpus: u32) -> u64 {
        u64::from(self.counter_cells) * 16 * u64::from(cpus)
    }

    /// Memory of the workload RTT histograms: the same whatever the CPU count.
    pub fn workload_rtt_bytes(&self) -> u64 {
        u64::from(self.workload_rtt_entries) * size_of::<agent_common::workload_rtt::WorkloadRtt>() as u64
    }
}

#[cfg(test)]
mod tests {
    use agent_common::workload_rtt::Mode;

    use super::*;

    #[test]
    fn every_subnet_and_catch_all_gets_two_cells() {
        let s = map_sizes(&Limits { max_subnets: 4096, unmapped_entries: 1024, nat_entries: 65536, nat_pending: 16384, workload_indices: 202, workload_cgroups: 16384, workload_rtt: Mode::CrossAz });
        assert_eq!(s.slots, 4096 + 17);
        assert_eq!(s.counter_cells, (4096 + 17) * 2);
        assert_eq!(s.seen_elements, 65);
        assert_eq!(s.lpm_prefixes, 4096 + 64);
        assert_eq!(s.unmapped_entries, 1024);
        assert_eq!(s.counter_bytes(2), u64::from(s.counter_cells) * 32);
        assert_eq!(s.workload_cells, 202 * agent_common::workload::ROWS * 2);
        // 202 × 37 histograms of 424 bytes: 3.0 MiB, on any number of CPUs.
        assert_eq!(s.workload_rtt_entries, 202 * 37);
        assert_eq!(s.workload_rtt_bytes(), 3_168_976);
        let off = map_sizes(&Limits { workload_rtt: Mode::Off, ..limits() });
        assert_eq!(off.workload_rtt_entries, 1);
    }

    fn limits() -> Limits {
        Limits { max_subnets: 4096, unmapped_entries: 1024, nat_entries: 65536, nat_pending: 16384, workload_indices: 202, workload_cgroups: 16384, workload_rtt: Mode::CrossAz }
    }

    #[test]
    fn never_overflows() {
        let s = map_sizes(&Limits { max_subnets: u32::MAX, unmapped_entries: 1, nat_entries: 1, nat_pending: 1, workload_indices: u32::MAX, workload_cgroups: 1, workload_rtt: Mode::All });
        assert_eq!(s.counter_cells, u32::MAX);
        assert_eq!(s.workload_cells, u32::MAX);
        assert_eq!(s.workload_rtt_entries, u32::MAX);
    }
}
