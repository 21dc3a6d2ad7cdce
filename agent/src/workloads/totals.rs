//! Per-workload cumulative totals from the kernel's per-(index, row, direction) counters.
//!
//! As for the host totals (`drain::Accumulator`), each cell's *growth* since the previous read is
//! credited to whoever holds its index at read time, so an index handed to another workload never
//! moves bytes already counted, and a workload that exits keeps its final counts.
//!
//! The export is capped: at most `cap` workloads get series of their own (host and `other`
//! always do). A workload is admitted while there is room, the busiest of a drain first; once
//! admitted it stays, so every exported counter only ever grows. Bytes of workloads refused by
//! the cap are summed into `other`, and the refusals are counted. Memory is bounded by the cap.

use std::collections::{BTreeMap, HashMap, HashSet};

use agent_common::{Counter, Direction};

use crate::snapshot::{WorkloadFlowKey, WorkloadLabels, ZoneKey};

/// Distinct refused workloads remembered for counting; beyond it each refusal is counted again.
const REFUSED_MEMORY: usize = 16_384;

#[derive(Debug)]
pub struct WorkloadTotals {
    cap: usize,
    last: HashMap<(u32, u32, Direction), Counter>,
    totals: BTreeMap<WorkloadFlowKey, Counter>,
    admitted: HashSet<WorkloadLabels>,
    refused: HashSet<WorkloadLabels>,
    refused_total: u64,
}

/// One cell's growth, before it is credited.
pub struct Growth {
    pub workload: WorkloadLabels,
    pub direction: Direction,
    pub dst: ZoneKey,
    pub delta: Counter,
}

impl WorkloadTotals {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            last: HashMap::new(),
            totals: BTreeMap::new(),
            admitted: HashSet::new(),
            refused: HashSet::new(),
            refused_total: 0,
        }
    }

    /// The growth of each cell since the previous call, labelled by `who` (index → workload)
    /// and `row` (destination row → zone labels). Cells are cumulative; a smaller value is a
    /// restarted counter.
    pub fn growth(
        &mut self,
        cells: &[crate::ebpf::WorkloadCell],
        who: impl Fn(u32) -> WorkloadLabels,
        row: impl Fn(u32) -> ZoneKey,
    ) -> Vec<Growth> {
        let mut out = Vec::new();
        for c in cells {
            let before = self
                .last
                .insert((c.index, c.row, c.direction), c.counter)
                .unwrap_or_default();
            let delta = Counter {
                bytes: grow(before.bytes, c.counter.bytes),
                packets: grow(before.packets, c.counter.packets),
            };
            if delta != Counter::default() {
                out.push(Growth {
                    workload: who(c.index),
                    direction: c.direction,
                    dst: row(c.row),
                    delta,
                });
            }
        }
        out
    }

    /// Reads `cells` as a baseline without crediting them (counters adopted from pinned maps,
    /// counted under another process's indices).
    pub fn baseline(&mut self, cells: &[crate::ebpf::WorkloadCell]) {
        for c in cells {
            self.last.insert((c.index, c.row, c.direction), c.counter);
        }
    }

    /// Credits growth, admitting new workloads busiest first while the cap allows.
    pub fn credit(&mut self, mut growth: Vec<Growth>) {
        let mut by_workload: HashMap<&WorkloadLabels, u64> = HashMap::new();
        for g in &growth {
            *by_workload.entry(&g.workload).or_default() += g.delta.bytes;
        }
        let mut candidates: Vec<(&WorkloadLabels, u64)> = by_workload
            .into_iter()
            .filter(|(w, _)| !w.is_fixed() && !self.admitted.contains(*w))
            .collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let room = self.cap.saturating_sub(self.admitted.len());
        let admit: Vec<WorkloadLabels> = candidates
            .iter()
            .take(room)
            .map(|(w, _)| (*w).clone())
            .collect();
        let refuse: Vec<WorkloadLabels> = candidates
            .iter()
            .skip(room)
            .map(|(w, _)| (*w).clone())
            .collect();
        self.admitted.extend(admit);
        for w in refuse {
            if self.refused.len() < REFUSED_MEMORY {
                if self.refused.insert(w) {
                    self.refused_total += 1;
                }
            } else if !self.refused.contains(&w) {
                self.refused_total += 1;
            }
        }
        for g in growth.drain(..) {
            let workload = if g.workload.is_fixed() || self.admitted.contains(&g.workload) {
                g.workload
            } else {
                WorkloadLabels::other()
            };
            let t = self
                .totals
                .entry(WorkloadFlowKey {
                    workload,
                    direction: g.direction,
                    dst: g.dst,
                })
                .or_default();
            t.bytes = t.bytes.saturating_add(g.delta.bytes);
            t.packets = t.packets.saturating_add(g.delta.packets);
        }
    }

    pub fn totals(&self) -> &BTreeMap<WorkloadFlowKey, Counter> {
        &self.totals
    }

    /// Whether a workload's growth goes to series of its own (host and other always do); the
    /// others' goes to `other`.
    pub fn exports(&self, w: &WorkloadLabels) -> bool {
        w.is_fixed() || self.admitted.contains(w)
    }

    /// Workloads with series of their own now (host and other not included).
    pub fn admitted(&self) -> usize {
        self.admitted.len()
    }

    /// Workloads whose bytes went to `other` because the series cap was full.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

fn grow(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

#[cfg(test)]
mod tests {
    use agent_common::TrafficClass;

    use super::*;
    use crate::ebpf::WorkloadCell;

    fn cell(index: u32, row: u32, bytes: u64) -> WorkloadCell {
        WorkloadCell {
            index,
            row,
            direction: Direction::Transmit,
            counter: Counter {
                bytes,
                packets: bytes / 100,
            },
        }
    }

    fn named(i: u32) -> WorkloadLabels {
        match i {
            0 => WorkloadLabels::host(),
            1 => WorkloadLabels::other(),
            i => WorkloadLabels {
                name: format!("w{i}.service"),
                kind: "systemd".into(),
                ..WorkloadLabels::host()
            },
        }
    }

    fn zone(r: u32) -> ZoneKey {
        ZoneKey {
            dst_zone: format!("z{r}"),
            dst_zone_id: format!("z{r}-id"),
            class: TrafficClass::CrossAz,
        }
    }

    fn bytes_of(t: &WorkloadTotals, name: &str) -> u64 {
        t.totals()
            .iter()
            .filter(|(k, _)| k.workload.name == name)
            .map(|(_, c)| c.bytes)
            .sum()
    }

    #[test]
    fn growth_is_credited_to_the_index_holder_at_read_time() {
        let mut t = WorkloadTotals::new(10);
        let g = t.growth(&[cell(2, 0, 1000)], named, zone);
        t.credit(g);
        // Index 2 now belongs to someone else: only the growth goes to them.
        let g = t.growth(&[cell(2, 0, 1500)], |_| named(7), zone);
        t.credit(g);
        assert_eq!(bytes_of(&t, "w2.service"), 1000);
        assert_eq!(bytes_of(&t, "w7.service"), 500);
    }

    #[test]
    fn cap_admits_busiest_first_and_folds_the_rest_into_other() {
        let mut t = WorkloadTotals::new(2);
        let g = t.growth(
            &[
                cell(0, 0, 5),
                cell(2, 0, 10),
                cell(3, 0, 300),
                cell(4, 1, 200),
                cell(1, 0, 7),
            ],
            named,
            zone,
        );
        t.credit(g);
        assert_eq!(bytes_of(&t, "w3.service"), 300);
        assert_eq!(bytes_of(&t, "w4.service"), 200);
        assert_eq!(bytes_of(&t, "w2.service"), 0);
        assert_eq!(bytes_of(&t, "other"), 17);
        assert_eq!(bytes_of(&t, "host"), 5);
        assert_eq!(t.refused_total(), 1);
        // Admitted stays admitted: a later burst of w2 still goes to other, counters only grow.
        let g = t.growth(&[cell(2, 0, 10_000), cell(3, 0, 301)], named, zone);
        t.credit(g);
        assert_eq!(bytes_of(&t, "other"), 17 + 9_990);
        assert_eq!(bytes_of(&t, "w3.service"), 301);
        assert_eq!(t.refused_total(), 1);
        let sum: u64 = t.totals().values().map(|c| c.bytes).sum();
        assert_eq!(sum, 5 + 10_000 + 301 + 200 + 7);
    }

    #[test]
    fn baseline_is_not_credited() {
        let mut t = WorkloadTotals::new(2);
        t.baseline(&[cell(2, 0, 1000)]);
        let g = t.growth(&[cell(2, 0, 1200)], named, zone);
        t.credit(g);
        assert_eq!(bytes_of(&t, "w2.service"), 200);
    }
}
