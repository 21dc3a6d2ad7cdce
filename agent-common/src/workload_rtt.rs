//! RTT per workload and destination row, in the kernel: when sock_ops records a socket's RTT
//! sample into the host histogram (and when the byte path reads the smoothed RTT of a socket
//! older than the agent), the same sample is added once more under the socket's workload, into
//! `AZF_WL_RTT[entry(index, row)]`.
//!
//! ```text
//!  sample (µs) ─► host: RTT_HIST[row][bucket] (scale 3, per CPU)        unchanged
//!             └─► wants(mode, class)? ─► index_of(cached workload) ─► WL_RTT[index × ROWS + row]
//!                                                      buckets[coarse_cell(bucket)] += 1, sum += µs, count += 1
//! ```
//!
//! - **Memory does not grow with the CPU count**: one shared array (not per CPU), updated with
//!   atomic adds. Samples are rate-limited per socket (`--rtt-sample-interval`), so two CPUs
//!   rarely add to one entry at once, and when they do the atomic add keeps both.
//! - **Coarser buckets**: scale [`SCALE`] (1), each bucket exactly four of the kernel's scale-3
//!   buckets (`hist::coarse_cell`): an exact OTLP downscale, so exporters send these counts as
//!   they are. 51 counts + sum + count = 424 bytes per (workload, row).
//! - **Which rows** ([`Mode`], `--workload-rtt`): cross-AZ destinations only by default, every
//!   row, or none (the map is then one entry long).
//! - **Which workload**: the index the byte path cached on the socket, when it was resolved under
//!   the workload generation user space publishes now. The byte path resolves it again on every
//!   packet after a bump, and an ack passes the ingress program before sock_ops sees its RTT, so
//!   a stale index is a race of microseconds; such a sample (and one from a socket without
//!   storage) goes to `other`, never dropped, so the sum over workloads stays the host's count.

use crate::{TrafficClass, hist, workload};

/// Kernel buckets folded into one workload bucket: `2^SHIFT`.
pub const SHIFT: u32 = 2;
/// OTLP exponential scale (Prometheus native schema) of the workload histograms.
pub const SCALE: i32 = hist::SCALE - SHIFT as i32;
/// Counts per entry: the zero bucket, then indices `MIN_INDEX >> SHIFT` ..= `MAX_INDEX >> SHIFT`.
pub const BUCKETS: u32 = hist::buckets_at(SHIFT);

// An exact downscale needs the kernel's first index to start a coarse bucket.
const _: () = assert!(hist::MIN_INDEX % (1 << SHIFT) == 0);

/// One (workload, destination row): counts per coarse bucket, the sum of the samples in µs, and
/// their number (so a reader tells an empty entry by one cell).
///
/// Layout (424 bytes): `buckets: [u64; 51] @0`, `sum_us: u64 @408`, `count: u64 @416`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadRtt {
    pub buckets: [u64; BUCKETS as usize],
    pub sum_us: u64,
    pub count: u64,
}

impl Default for WorkloadRtt {
    fn default() -> Self {
        Self { buckets: [0; BUCKETS as usize], sum_us: 0, count: 0 }
    }
}

impl WorkloadRtt {
    /// What the kernel does with one sample (it adds atomically, field by field).
    pub fn record(&mut self, us: u64) {
        let c = cell(us) as usize;
        self.buckets[c] = self.buckets[c].wrapping_add(1);
        self.sum_us = self.sum_us.wrapping_add(us);
        self.count = self.count.wrapping_add(1);
    }
}

/// Coarse cell of a sample in whole microseconds.
#[inline(always)]
pub fn cell(us: u64) -> u32 {
    hist::coarse_cell(hist::bucket(us), SHIFT)
}

/// Which rows get workload RTT (`State::workload_rtt`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off = 0,
    /// Destinations of class `cross_az` only.
    CrossAz = 1,
    All = 2,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::CrossAz => "cross-az",
            Self::All => "all",
        }
    }
}

/// Whether a sample towards a destination of `class` is recorded per workload under `mode`
/// (a mode value user space never writes means off).
#[inline(always)]
pub const fn wants(mode: u32, class: u8) -> bool {
    match mode {
        1 => class == TrafficClass::CrossAz as u8,
        2 => true,
        _ => false,
    }
}

/// Entries of `AZF_WL_RTT` for `indices` workload indices under `mode` (off: one, unused).
pub const fn entries(indices: u32, mode: Mode) -> u32 {
    match mode {
        Mode::Off => 1,
        _ => indices.saturating_mul(workload::ROWS),
    }
}

/// Entry of a workload's histogram towards one destination row.
#[inline(always)]
pub const fn entry(index: u32, row: u32) -> u32 {
    index.wrapping_mul(workload::ROWS).wrapping_add(row)
}

/// The workload index a sample counts under: the socket's cached one when it was resolved under
/// the published generation; `other` when it is stale or the socket has no storage. Before user
/// space has published any index (generation 0) everything is `host`, as in the byte path.
#[inline(always)]
pub const fn index_of(cached: Option<(u32, u32)>, published_generation: u32) -> u32 {
    if published_generation == 0 {
        return workload::HOST_INDEX;
    }
    match cached {
        Some((index, generation)) if generation == published_generation => index,
        _ => workload::OTHER_INDEX,
    }
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layout_is_pinned() {
        assert_eq!(BUCKETS, 51);
        assert_eq!(SCALE, 1);
        assert_eq!(size_of::<WorkloadRtt>(), 424);
    }

    #[test]
    fn a_sample_lands_in_the_coarse_bucket_of_its_kernel_bucket() {
        let mut h = WorkloadRtt::default();
        for us in [0u64, 1, 976, 977, 1000, 1381, 1382, 40_000_000] {
            h.record(us);
        }
        assert_eq!(h.count, 8);
        assert_eq!(h.sum_us, 1 + 976 + 977 + 1000 + 1381 + 1382 + 40_000_000);
        assert_eq!(h.buckets[0], 1, "0 µs: the zero bucket");
        // 976 µs ≤ 2^-10 s closes scale-1 index -21; (2^-10, 2^-9.5] s = (976, 1381] µs is index -20.
        let at = |us| hist::index_at(cell(us), SHIFT);
        assert_eq!((at(976), at(977), at(1000), at(1381), at(1382)), (-21, -20, -20, -20, -19));
        assert_eq!(h.buckets[cell(1000) as usize], 3);
        assert_eq!(cell(40_000_000), BUCKETS - 1, "beyond 32 s: the last bucket");
        assert_eq!(h.buckets.iter().sum::<u64>(), h.count);
    }

    #[test]
    fn only_the_chosen_classes_are_recorded() {
        let [same, cross] = [TrafficClass::SameAz as u8, TrafficClass::CrossAz as u8];
        assert!(wants(Mode::CrossAz as u32, cross) && !wants(Mode::CrossAz as u32, same));
        assert!(wants(Mode::All as u32, same) && wants(Mode::All as u32, TrafficClass::Internet as u8));
        assert!(!wants(Mode::Off as u32, cross));
        assert!(!wants(7, cross), "an unknown mode is off");
    }

    #[test]
    fn entries_do_not_overlap_and_fit() {
        let n = entries(5, Mode::CrossAz);
        assert_eq!(n, 5 * workload::ROWS);
        let mut seen = [false; 5 * workload::ROWS as usize];
        for i in 0..5 {
            for r in 0..workload::ROWS {
                let e = entry(i, r) as usize;
                assert!(e < n as usize && !seen[e], "entry {e}");
                seen[e] = true;
            }
        }
        assert_eq!(entries(202, Mode::Off), 1);
        assert_eq!(entries(u32::MAX, Mode::All), u32::MAX);
    }

    #[test]
    fn a_stale_or_missing_index_counts_as_other() {
        assert_eq!(index_of(Some((7, 3)), 3), 7);
        assert_eq!(index_of(Some((7, 2)), 3), workload::OTHER_INDEX, "resolved under an older generation");
        assert_eq!(index_of(None, 3), workload::OTHER_INDEX, "no socket storage");
        assert_eq!(index_of(None, 0), workload::HOST_INDEX, "nothing published yet: host, as the byte path");
        assert_eq!(index_of(Some((0, 0)), 0), workload::HOST_INDEX);
    }
}
