//! The kernel's histogram as a base-2 exponential histogram at its scale (3, or coarser for the
//! workload RTT histograms): the same buckets, with the empty ends trimmed. No re-bucketing: cell
//! `c ≥ 1` is OTLP index `hist::index_at(c, shift)` (see `agent_common::hist`), cell 0 is the
//! zero bucket.

use agent_common::hist;

use crate::snapshot::Histogram;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exponential {
    /// OTLP scale (Prometheus native schema).
    pub scale: i32,
    /// Samples of 0 µs.
    pub zero_count: u64,
    /// OTLP index of `counts[0]` (Prometheus numbers it one more).
    pub offset: i32,
    /// Counts of consecutive buckets from `offset`; empty when every sample is zero.
    pub counts: Vec<u64>,
}

impl Exponential {
    pub fn of(h: &Histogram) -> Self {
        let zero_count = h.buckets.first().copied().unwrap_or(0);
        let cells = h.buckets.get(1..).unwrap_or_default();
        let scale = h.scale();
        let (Some(first), Some(last)) = (cells.iter().position(|n| *n > 0), cells.iter().rposition(|n| *n > 0)) else {
            return Self { scale, zero_count, offset: 0, counts: Vec::new() };
        };
        Self { scale, zero_count, offset: hist::index_at(first as u32 + 1, h.shift), counts: cells[first..=last].to_vec() }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().fold(self.zero_count, |a, n| a.saturating_add(*n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_the_empty_ends_and_keeps_every_count() {
        let mut h = Histogram { buckets: vec![0; hist::BUCKETS as usize], sum_us: 0, shift: 0 };
        for s in [0u64, 1000, 1000, 1500, 3000] {
            h.buckets[hist::bucket(s) as usize] += 1;
        }
        let e = Exponential::of(&h);
        assert_eq!(e.zero_count, 1);
        assert_eq!(e.offset, -80, "1 ms is in (2^-10, 2^-9.875] s");
        assert_eq!(e.counts.first(), Some(&2));
        assert_eq!(e.counts.last(), Some(&1));
        assert_eq!(e.offset + e.counts.len() as i32 - 1, hist::index(hist::bucket(3000)));
        assert_eq!(e.count(), 5);
        assert_eq!(e.scale, 3);
        assert_eq!(Exponential::of(&Histogram::default()), Exponential { scale: 3, ..Exponential::default() });
    }

    #[test]
    fn a_coarse_histogram_keeps_its_scale_and_indices() {
        let shift = agent_common::workload_rtt::SHIFT;
        let mut h = Histogram { buckets: vec![0; hist::buckets_at(shift) as usize], sum_us: 0, shift };
        for s in [1000u64, 1200, 3000] {
            h.buckets[hist::coarse_cell(hist::bucket(s), shift) as usize] += 1;
        }
        let e = Exponential::of(&h);
        assert_eq!((e.scale, e.offset, e.counts.clone()), (1, -20, vec![2, 0, 0, 1]), "(2^-10, 2^-9.5] s first; 3 ms in (2^-8.5, 2^-8]");
    }
}
