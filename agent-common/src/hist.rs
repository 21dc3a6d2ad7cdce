//! Log-linear latency buckets shared by the kernel (which fills them) and user space (which
//! exports them unchanged): 1 µs wide below 16 µs, then 8 sub-buckets per power of two, so the
//! relative width of a bucket is at most 1/8 (midpoint error ≤ 6.25 %) from 16 µs to 16.7 s.
//! The kernel's RTT samples are whole microseconds, so below 16 µs a bucket is one sample value.

/// Exact buckets for 0..16 µs.
pub const LINEAR_BUCKETS: u32 = 16;
pub const SUB_BUCKETS: u32 = 8;
/// log2 of the first log-linear bucket's lower bound (16 µs).
pub const MIN_EXP: u32 = 4;
/// log2 of the last power of two covered (2^23 µs ≈ 8.4 s; its buckets reach 16.7 s).
pub const MAX_EXP: u32 = 23;
pub const BUCKETS: u32 = LINEAR_BUCKETS + (MAX_EXP - MIN_EXP + 1) * SUB_BUCKETS;
/// Cells per histogram row: the buckets, then the sum of the samples in µs.
pub const ROW_STRIDE: u32 = BUCKETS + 1;
pub const SUM_CELL: u32 = BUCKETS;

/// Rows for destination zones; zones beyond this share their class's row.
pub const MAX_ZONES: u32 = 32;
/// One row per zone, then one per traffic class for the catch-all ranges.
pub const ROWS: u32 = MAX_ZONES + 5;
pub const CELLS: u32 = ROWS * ROW_STRIDE;

/// Row of a destination: its zone when it has one, else its class.
#[inline(always)]
pub const fn row(zone_idx: u16, class: u8) -> u32 {
    if (zone_idx as u32) < MAX_ZONES { zone_idx as u32 } else { MAX_ZONES + if class < 5 { class as u32 } else { 4 } }
}

/// floor(log2(v)) for v ≥ 1, branch-only (the BPF target has no count-leading-zeros).
#[inline(always)]
const fn ilog2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a sample in microseconds; beyond the range, the last bucket.
#[inline(always)]
pub const fn bucket(us: u64) -> u32 {
    if us < LINEAR_BUCKETS as u64 {
        return us as u32;
    }
    let e = ilog2(us);
    if e > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((us >> (e - 3)) & 7) as u32;
    LINEAR_BUCKETS + (e - MIN_EXP) * SUB_BUCKETS + sub
}

/// Exclusive upper bound of a bucket in microseconds (the exported `le` is this bound).
pub const fn upper_bound_us(b: u32) -> u64 {
    if b < LINEAR_BUCKETS {
        return b as u64 + 1;
    }
    let e = MIN_EXP + (b - LINEAR_BUCKETS) / SUB_BUCKETS;
    let sub = (b - LINEAR_BUCKETS) % SUB_BUCKETS;
    (9 + sub as u64) << (e - 3)
}

/// Inclusive lower bound of a bucket in microseconds.
pub const fn lower_bound_us(b: u32) -> u64 {
    if b < LINEAR_BUCKETS {
        return b as u64;
    }
    let e = MIN_EXP + (b - LINEAR_BUCKETS) / SUB_BUCKETS;
    let sub = (b - LINEAR_BUCKETS) % SUB_BUCKETS;
    (8 + sub as u64) << (e - 3)
}

/// Events counted per row besides the histograms.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// Segments retransmitted.
    RetransmitSegments = 0,
    /// Retransmission timeouts fired.
    Rto = 1,
    /// RTT samples taken into the histogram.
    RttSamples = 2,
    /// RTT callbacks skipped by the per-socket sampling interval.
    RttSkipped = 3,
    /// Smoothed RTTs read by the byte path from sockets that predate the agent (no callbacks).
    SrttSamples = 4,
}

impl TcpEvent {
    pub const COUNT: u32 = 5;
    pub const ALL: [Self; 5] = [Self::RetransmitSegments, Self::Rto, Self::RttSamples, Self::RttSkipped, Self::SrttSamples];
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RetransmitSegments => "retransmit_segments",
            Self::Rto => "rto",
            Self::RttSamples => "rtt_samples",
            Self::RttSkipped => "rtt_skipped",
            Self::SrttSamples => "srtt_samples",
        }
    }
}

/// Whether a socket without sock_ops callbacks is due for a smoothed-RTT read: never sampled, or
/// sampled at least `interval_ns` ago (an interval of 0 still reads at most once per ms, so a
/// busy socket does not pay the read on every packet).
#[inline(always)]
pub const fn srtt_due(now_ns: u64, last_ns: u64, interval_ns: u64) -> bool {
    let min = if interval_ns < 1_000_000 { 1_000_000 } else { interval_ns };
    last_ns == 0 || now_ns.wrapping_sub(last_ns) >= min
}

/// Retransmitted segments since the last read of `total_retrans` (a counter that only grows; the
/// first read of a socket only sets the baseline).
#[inline(always)]
pub const fn retrans_since(seen: u32, total: u32, first: bool) -> u32 {
    if first { 0 } else { total.wrapping_sub(seen) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtt_reads_are_rate_limited_per_socket() {
        assert!(srtt_due(5, 0, 10_000_000));
        assert!(!srtt_due(5_000_000, 1, 10_000_000));
        assert!(srtt_due(10_000_001, 1, 10_000_000));
        // Interval 0 ("every sample") still means at most one read per millisecond.
        assert!(!srtt_due(500_000, 1, 0));
        assert!(srtt_due(1_000_001, 1, 0));
        assert_eq!(retrans_since(7, 7, true), 0);
        assert_eq!(retrans_since(7, 9, false), 2);
        assert_eq!(retrans_since(u32::MAX, 1, false), 2);
    }

    #[test]
    fn ilog2_matches_std() {
        for v in [1u64, 2, 3, 15, 16, 17, 1000, 1 << 20, (1 << 33) + 5, u64::MAX] {
            assert_eq!(ilog2(v), v.ilog2(), "{v}");
        }
    }

    #[test]
    fn every_sample_lands_inside_its_bucket() {
        let mut v = 0u64;
        while v < 20_000_000 {
            let b = bucket(v);
            assert!(b < BUCKETS);
            if v < upper_bound_us(BUCKETS - 1) {
                assert!(lower_bound_us(b) <= v && v < upper_bound_us(b), "{v} in bucket {b}");
            }
            v = v + 1 + v / 97;
        }
    }

    #[test]
    fn relative_error_is_at_most_ten_percent_from_10us_to_10s() {
        for b in bucket(10)..=bucket(10_000_000) {
            let (lo, hi) = (lower_bound_us(b) as f64, upper_bound_us(b) as f64);
            let mid = (lo + hi) / 2.0;
            // Any sample in [lo, hi) is within this of the bucket's midpoint.
            let err = (hi - mid) / lo;
            assert!(err <= 0.10, "bucket {b} [{lo}, {hi}) error {err}");
        }
    }

    #[test]
    fn bounds_are_contiguous_and_increasing() {
        for b in 1..BUCKETS {
            assert_eq!(lower_bound_us(b), upper_bound_us(b - 1), "bucket {b}");
        }
        assert!(upper_bound_us(BUCKETS - 1) >= 10_000_000);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn rows_fold_zones_beyond_the_limit_into_their_class() {
        assert_eq!(row(0, 1), 0);
        assert_eq!(row(31, 1), 31);
        assert_eq!(row(32, 1), MAX_ZONES + 1);
        assert_eq!(row(u16::MAX, 3), MAX_ZONES + 3);
        assert_eq!(row(u16::MAX, 200), MAX_ZONES + 4);
    }
}
