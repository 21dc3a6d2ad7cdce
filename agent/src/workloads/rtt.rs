//! Per-workload RTT histograms from the kernel's cumulative (index, row) histograms
//! (`agent_common::workload_rtt`).
//!
//! As for bytes (`totals`), each entry's *growth* since the previous read is credited to whoever
//! holds its index at read time, bucket by bucket: an index handed to another workload never moves
//! samples already counted, and a workload that exits keeps its final histogram, so every
//! exported histogram only grows. The cap is the byte totals': a workload without byte series of
//! its own is summed into `other`, so both families name the same workloads and the sum over
//! workloads stays the host's count. Memory: one 51-cell histogram per (index, row) that ever
//! had a sample, and per exported (workload, row).

use std::collections::{BTreeMap, HashMap};

use agent_common::workload_rtt::{SHIFT, WorkloadRtt};

use crate::{
    ebpf::WorkloadRttCell,
    snapshot::{Histogram, WorkloadLabels, WorkloadRowKey, ZoneKey},
};

#[derive(Debug, Default)]
pub struct WorkloadRttTotals {
    last: HashMap<(u32, u32), WorkloadRtt>,
    totals: BTreeMap<WorkloadRowKey, Histogram>,
}

impl WorkloadRttTotals {
    /// Reads `cells` as a baseline without crediting them (histograms adopted from pinned maps,
    /// counted under another process's indices).
    pub fn baseline(&mut self, cells: &[WorkloadRttCell]) {
        for c in cells {
            self.last.insert((c.index, c.row), c.hist);
        }
    }

    /// Credits each entry's growth to `who(index)` towards `row(row)`, or to `other` when that
    /// workload has no series of its own (`exported`).
    pub fn absorb(
        &mut self,
        cells: &[WorkloadRttCell],
        who: impl Fn(u32) -> WorkloadLabels,
        row: impl Fn(u32) -> ZoneKey,
        exported: impl Fn(&WorkloadLabels) -> bool,
    ) {
        for c in cells {
            let before = self.last.insert((c.index, c.row), c.hist).unwrap_or_default();
            let Some(delta) = growth(&before, &c.hist) else { continue };
            let labels = who(c.index);
            let workload = if exported(&labels) { labels } else { WorkloadLabels::other() };
            let key = WorkloadRowKey { workload, dst: row(c.row) };
            let t = self.totals.entry(key).or_insert_with(|| Histogram {
                buckets: vec![0; delta.buckets.len()],
                sum_us: 0,
                shift: SHIFT,
            });
            for (t, d) in t.buckets.iter_mut().zip(&delta.buckets) {
                *t = t.saturating_add(*d);
            }
            t.sum_us = t.sum_us.saturating_add(delta.sum_us);
        }
    }

    pub fn totals(&self) -> &BTreeMap<WorkloadRowKey, Histogram> {
        &self.totals
    }
}

/// Growth of each cell (a cell that went backwards restarted from zero: all of it is growth);
/// `None` when nothing grew.
fn growth(before: &WorkloadRtt, now: &WorkloadRtt) -> Option<Histogram> {
    let grow = |b: u64, n: u64| if n >= b { n - b } else { n };
    let buckets: Vec<u64> = before.buckets.iter().zip(&now.buckets).map(|(b, n)| grow(*b, *n)).collect();
    let sum_us = grow(before.sum_us, now.sum_us);
    (sum_us != 0 || buckets.iter().any(|n| *n != 0)).then_some(Histogram { buckets, sum_us, shift: SHIFT })
}

#[cfg(test)]
mod tests {
    use agent_common::{TrafficClass, workload_rtt};

    use super::*;

    fn cell(index: u32, row: u32, samples: &[u64]) -> WorkloadRttCell {
        let mut hist = WorkloadRtt::default();
        for us in samples {
            hist.record(*us);
        }
        WorkloadRttCell { index, row, hist }
    }

    fn named(i: u32) -> WorkloadLabels {
        match i {
            0 => WorkloadLabels::host(),
            1 => WorkloadLabels::other(),
            i => WorkloadLabels { name: format!("w{i}.service"), kind: "systemd".into(), ..WorkloadLabels::host() },
        }
    }

    fn zone(r: u32) -> ZoneKey {
        ZoneKey { dst_zone: format!("z{r}"), dst_zone_id: format!("z{r}-id"), class: TrafficClass::CrossAz }
    }

    fn count(t: &WorkloadRttTotals, name: &str) -> u64 {
        t.totals().iter().filter(|(k, _)| k.workload.name == name).map(|(_, h)| h.count()).sum()
    }

    #[test]
    fn growth_goes_to_the_index_holder_at_read_time_and_exited_workloads_keep_theirs() {
        let mut t = WorkloadRttTotals::default();
        t.absorb(&[cell(2, 0, &[1000, 1200])], named, zone, |_| true);
        // Index 2 is released and handed to another workload: only the growth goes to it.
        t.absorb(&[cell(2, 0, &[1000, 1200, 3000])], |_| named(7), zone, |_| true);
        assert_eq!((count(&t, "w2.service"), count(&t, "w7.service")), (2, 1));
        let w7 = t.totals().iter().find(|(k, _)| k.workload.name == "w7.service").map(|(_, h)| h.clone()).expect("w7");
        assert_eq!((w7.sum_us, w7.shift, w7.buckets.len()), (3000, workload_rtt::SHIFT, workload_rtt::BUCKETS as usize));
        assert_eq!(w7.buckets[workload_rtt::cell(3000) as usize], 1);
        // Nothing new: nothing changes.
        let before = t.totals().clone();
        t.absorb(&[cell(2, 0, &[1000, 1200, 3000])], |_| named(7), zone, |_| true);
        assert_eq!(t.totals(), &before);
    }

    #[test]
    fn workloads_without_series_of_their_own_are_summed_into_other() {
        let mut t = WorkloadRttTotals::default();
        let exported = |w: &WorkloadLabels| w.is_fixed() || w.name == "w2.service";
        t.absorb(&[cell(0, 3, &[500]), cell(2, 3, &[1000]), cell(3, 3, &[2000, 2100]), cell(1, 3, &[900])], named, zone, exported);
        assert_eq!((count(&t, "host"), count(&t, "w2.service"), count(&t, "w3.service"), count(&t, "other")), (1, 1, 0, 3));
        let all: u64 = t.totals().values().map(Histogram::count).sum();
        assert_eq!(all, 5, "every sample is somewhere");
    }

    #[test]
    fn a_baseline_is_not_credited_and_a_restarted_map_counts_from_zero() {
        let mut t = WorkloadRttTotals::default();
        t.baseline(&[cell(2, 0, &[1000, 1000, 1000])]);
        t.absorb(&[cell(2, 0, &[1000, 1000, 1000, 1000])], named, zone, |_| true);
        assert_eq!(count(&t, "w2.service"), 1);
        t.absorb(&[cell(2, 0, &[1000])], named, zone, |_| true);
        assert_eq!(count(&t, "w2.service"), 2, "a smaller cell: the map restarted, its value is growth");
    }
}
