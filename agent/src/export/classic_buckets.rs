//! The classic (`le`) buckets Prometheus gets: a small configured set instead of the kernel's 201.
//!
//! Each configured boundary is snapped to the nearest kernel bucket boundary, so every cumulative
//! count is exact (no interpolation inside a kernel bucket). Samples are whole microseconds, so the
//! boundary between kernel cells `j` and `j + 1` is printed as the largest whole microsecond of
//! cell `j`, in seconds (`le="0.000118"` holds exactly the samples ≤ 118 µs).
//!
//! A coarser histogram (the workload RTT ones, scale 1) has fewer boundaries: each configured
//! boundary is snapped to the nearest of *its* boundaries instead (every one of them is also a
//! kernel boundary), so its counts are exact too; its `le` set is that snapped set.

use agent_common::hist;

use crate::snapshot::Histogram;

/// 16 boundaries from 50 µs to 5 s, dense from 0.1 to 2 ms, where RTTs inside one AZ (0.1–0.3 ms)
/// and across AZs (1–1.5 ms) live; 10 ms for the cross-AZ RTT alert's threshold; 1 s where a
/// connect that lost its SYN lands.
pub const DEFAULT: &str = "0.00005,0.0001,0.0002,0.0003,0.0005,0.00075,0.001,0.00125,0.0015,0.002,0.003,0.005,0.01,0.1,1,5";
/// Every kernel boundary (182 `le` values per row): full resolution, for tests and debugging.
pub const ALL: &str = "all";
const MAX_BOUNDARIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicBuckets {
    /// Per histogram shift (0: the kernel's cells; see `snapshot::Histogram::shift`): cells
    /// `0..=last` are at or below each boundary, in increasing order; the boundary is
    /// `hist::upper_us_at(last, shift)`.
    sets: Vec<(u32, Vec<u32>)>,
}

/// The shifts exported histograms have: the kernel's, and the workload RTT histograms'.
const SHIFTS: [u32; 2] = [0, agent_common::workload_rtt::SHIFT];

impl Default for ClassicBuckets {
    fn default() -> Self {
        Self::parse(DEFAULT).unwrap_or_else(|_| Self::all())
    }
}

impl ClassicBuckets {
    /// Every kernel boundary below the last (open-ended) cell, each once (below 12 µs some cells
    /// hold no whole microsecond and share the boundary of the cell before).
    pub fn all() -> Self {
        let every = |shift| (0..hist::buckets_at(shift) - 1).filter(|c| *c == 0 || hist::upper_us_at(*c, shift) > hist::upper_us_at(c - 1, shift)).collect();
        Self { sets: SHIFTS.iter().map(|s| (*s, every(*s))).collect() }
    }

    /// Comma-separated boundaries in seconds, or `all`. The error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim() == ALL {
            return Ok(Self::all());
        }
        let mut boundaries_us = Vec::new();
        for part in s.split(',').map(str::trim) {
            let secs: f64 = part.parse().map_err(|_| format!("{part:?} is not a number of seconds"))?;
            if !(1e-6..=30.0).contains(&secs) {
                return Err(format!("{part} s is outside 0.000001..30 s"));
            }
            boundaries_us.push(secs * 1e6);
        }
        if boundaries_us.len() > MAX_BOUNDARIES {
            return Err(format!("{} boundaries is too many", boundaries_us.len()));
        }
        let snapped = |shift: u32| {
            let mut cells: Vec<u32> = boundaries_us.iter().map(|us| nearest_cell(*us, shift)).collect();
            cells.sort_unstable();
            // Boundaries that snap to the same whole microsecond are one boundary.
            cells.dedup_by_key(|c| hist::upper_us_at(*c, shift));
            cells
        };
        Ok(Self { sets: SHIFTS.iter().map(|s| (*s, snapped(*s))).collect() })
    }

    /// The boundaries of a histogram of this shift (one no exporter makes: none).
    fn cells(&self, shift: u32) -> &[u32] {
        self.sets.iter().find(|(s, _)| *s == shift).map_or(&[], |(_, c)| c.as_slice())
    }

    /// `(le in seconds, cumulative count)` for each boundary, then `(+Inf, count)`.
    pub fn cumulative(&self, h: &Histogram) -> Vec<(f64, u64)> {
        let cells = self.cells(h.shift);
        let mut out = Vec::with_capacity(cells.len() + 1);
        let (mut sum, mut next) = (0u64, 0usize);
        for &last in cells {
            let upto = (last as usize + 1).min(h.buckets.len());
            sum = h.buckets[next.min(upto)..upto].iter().fold(sum, |a, n| a.saturating_add(*n));
            next = next.max(upto);
            out.push((le_seconds_at(last, h.shift), sum));
        }
        out.push((f64::INFINITY, h.count()));
        out
    }

    /// Boundaries of the kernel's (scale-3) histograms.
    pub fn len(&self) -> usize {
        self.len_at(0)
    }

    /// Boundaries of histograms `shift` steps coarser.
    pub fn len_at(&self, shift: u32) -> usize {
        self.cells(shift).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The cell whose upper boundary (largest whole µs) is nearest to `us`, never the open-ended last.
fn nearest_cell(us: f64, shift: u32) -> u32 {
    (0..hist::buckets_at(shift) - 1)
        .min_by(|a, b| (hist::upper_us_at(*a, shift) as f64 - us).abs().total_cmp(&(hist::upper_us_at(*b, shift) as f64 - us).abs()))
        .unwrap_or(0)
}

/// The `le` of a boundary: its whole microseconds, in seconds (exact to the µs when printed).
pub fn le_seconds(last_cell: u32) -> f64 {
    le_seconds_at(last_cell, 0)
}

/// The `le` of a boundary of a histogram `shift` steps coarser than the kernel's.
pub fn le_seconds_at(last_cell: u32, shift: u32) -> f64 {
    hist::upper_us_at(last_cell, shift) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(samples: &[u64]) -> Histogram {
        let mut h = Histogram { buckets: vec![0; hist::BUCKETS as usize], sum_us: 0, shift: 0 };
        for s in samples {
            h.buckets[hist::bucket(*s) as usize] += 1;
            h.sum_us += s;
        }
        h
    }

    #[test]
    fn the_default_is_at_most_16_boundaries_from_50_us_to_5_s_snapped_to_kernel_bounds() {
        let d = ClassicBuckets::default();
        assert!(d.len() <= 16, "{}", d.len());
        let les: Vec<f64> = d.cumulative(&kernel(&[])).iter().map(|(le, _)| *le).collect();
        assert_eq!(
            les,
            [0.000051, 0.000102, 0.000205, 0.00029, 0.000488, 0.000753, 0.000976, 0.001266, 0.001506, 0.001953, 0.003012, 0.005065, 0.010131, 0.096388, 1.0, 5.187358, f64::INFINITY]
        );
        // Each printed le is a whole microsecond and a kernel boundary.
        for le in &les[..les.len() - 1] {
            let us = (le * 1e6).round() as u64;
            assert_eq!(hist::upper_us(hist::bucket(us)), us, "{le}");
        }
    }

    #[test]
    fn cumulative_counts_are_exact_at_every_boundary() {
        let samples = [0, 1, 50, 51, 52, 118, 119, 976, 977, 1000, 1506, 1507, 250_000, 250_001, 40_000_000];
        let h = kernel(&samples);
        for b in [ClassicBuckets::default(), ClassicBuckets::all(), ClassicBuckets::parse("0.0001, 0.000118,1").expect("valid")] {
            for (le, n) in b.cumulative(&h) {
                let truth = samples.iter().filter(|s| (**s as f64) <= le * 1e6 + 1e-6).count() as u64;
                assert_eq!(n, truth, "le {le}");
            }
        }
        assert_eq!(ClassicBuckets::all().len(), hist::BUCKETS as usize - 1 - 18);
    }

    /// The workload RTT histograms (scale 1): the configured boundaries snap to their own
    /// boundaries, and each count is exact against the samples.
    #[test]
    fn coarse_histograms_get_exact_counts_at_their_own_boundaries() {
        let shift = agent_common::workload_rtt::SHIFT;
        let samples = [0u64, 1, 50, 51, 52, 118, 119, 976, 977, 1000, 1381, 1382, 1506, 1507, 250_000, 40_000_000];
        let mut h = Histogram { buckets: vec![0; hist::buckets_at(shift) as usize], sum_us: 0, shift };
        for s in samples {
            h.buckets[hist::coarse_cell(hist::bucket(s), shift) as usize] += 1;
        }
        for b in [ClassicBuckets::default(), ClassicBuckets::all()] {
            let les = b.cumulative(&h);
            assert_eq!(les.len(), b.len_at(shift) + 1);
            for (le, n) in les {
                let truth = samples.iter().filter(|s| (**s as f64) <= le * 1e6 + 1e-6).count() as u64;
                assert_eq!(n, truth, "le {le}");
                if le.is_finite() {
                    // A scale-1 boundary: a whole power of √2 seconds, floored to the µs.
                    let us = (le * 1e6).round() as u64;
                    assert_eq!(hist::upper_us_at(hist::coarse_cell(hist::bucket(us), shift), shift), us, "{le}");
                }
            }
        }
        let les: Vec<f64> = ClassicBuckets::default().cumulative(&h).iter().map(|(le, _)| *le).collect();
        assert_eq!(
            les,
            [0.000043, 0.000086, 0.000172, 0.000345, 0.000488, 0.00069, 0.000976, 0.001381, 0.001953, 0.002762, 0.005524, 0.011048, 0.088388, 1.0, 5.656854, f64::INFINITY],
            "the default set at scale 1 (1.25 and 1.5 ms both snap to 1381 µs)"
        );
        assert_eq!(ClassicBuckets::all().len_at(shift), 49, "every bound below the last cell; cells 1 and 2 share the bound 1 µs");
    }

    #[test]
    fn bad_sets_say_why() {
        assert!(ClassicBuckets::parse("0.001,x").expect_err("x").contains("\"x\" is not a number"));
        assert!(ClassicBuckets::parse("0").expect_err("0").contains("outside"));
        assert!(ClassicBuckets::parse("100").expect_err("100").contains("outside"));
        assert!(ClassicBuckets::parse("").is_err());
        // Duplicates after snapping collapse.
        assert_eq!(ClassicBuckets::parse("0.001,0.000976,0.00098").expect("valid").len(), 1);
    }
}
