//! Latency buckets shared by the kernel (which fills them) and user space (which exports them):
//! each bucket is exactly one bucket of OpenTelemetry's base-2 exponential histogram at scale 3
//! (and Prometheus's native histogram schema 3) of the sample **in seconds**, so OTLP and
//! Prometheus get the kernel's counts with no re-bucketing.
//!
//! Bucket of OTLP index `i` holds the samples `v` µs with `2^(i/8) < v·10⁻⁶ ≤ 2^((i+1)/8)`
//! (OTLP's upper-inclusive rule; Prometheus numbers the same bucket `i + 1`). Samples are whole
//! microseconds, so that test is `T(i) < v ≤ T(i+1)` with the integer thresholds
//! `T(k) = ⌊10⁶·2^(k/8)⌋` of [`THRESHOLDS_US`], computed exactly (tests check `T(k)⁸` against
//! `10⁴⁸·2^k` in integers). Relative bucket width is 2^(1/8) − 1 ≈ 9.05 %.
//!
//! Cells of a row: 0 is the zero bucket (a 0 µs sample), 1.. are indices [`MIN_INDEX`] (whose
//! bucket holds 1 µs) to [`MAX_INDEX`] (up to 2^5 s = 32 s), and the last of them also takes every
//! longer sample; then the sum of the samples in µs. Below ~12 µs buckets are narrower than a
//! microsecond, so 18 of them can never hold a whole-µs sample and stay empty.

/// OTLP exponential scale (Prometheus native schema) the buckets are exact at.
pub const SCALE: i32 = 3;
/// OTLP index of the first bucket after the zero bucket: (2^-20 s, 2^(-159/8) s] holds 1 µs.
pub const MIN_INDEX: i32 = -160;
/// OTLP index of the last bucket: (2^(39/8) s, 32 s], and every longer sample.
pub const MAX_INDEX: i32 = 39;
/// Cell of the zero bucket.
pub const ZERO_CELL: u32 = 0;
/// Cells holding counts: the zero bucket, then one per index.
pub const BUCKETS: u32 = 1 + (MAX_INDEX - MIN_INDEX + 1) as u32;
/// Cells per histogram row: the buckets, then the sum of the samples in µs.
pub const ROW_STRIDE: u32 = BUCKETS + 1;
pub const SUM_CELL: u32 = BUCKETS;
/// Size of the threshold table: a power of two, so a masked index is always in bounds (which
/// the verifier can see) and the binary search has a fixed number of steps.
pub const TABLE: usize = 256;

/// `THRESHOLDS_US[j] = ⌊10⁶·2^((MIN_INDEX + j)/8)⌋` for `j ≤ BUCKETS − 1` (up to 32 s), then
/// `u64::MAX` padding. A whole-µs sample `v ≥ 1` is in cell `1 + j` iff
/// `THRESHOLDS_US[j] < v ≤ THRESHOLDS_US[j + 1]`. Generated with exact integer roots and checked
/// exactly by the tests below.
pub static THRESHOLDS_US: [u64; TABLE] = {
    const REAL: [u64; BUCKETS as usize] = [
        0, 1, 1, 1, 1, 1, 1, 1,
        1, 2, 2, 2, 2, 2, 3, 3,
        3, 4, 4, 4, 5, 5, 6, 6,
        7, 8, 9, 9, 10, 11, 12, 13,
        15, 16, 18, 19, 21, 23, 25, 27,
        30, 33, 36, 39, 43, 47, 51, 55,
        61, 66, 72, 79, 86, 94, 102, 111,
        122, 133, 145, 158, 172, 188, 205, 223,
        244, 266, 290, 316, 345, 376, 410, 447,
        488, 532, 580, 633, 690, 753, 821, 895,
        976, 1064, 1161, 1266, 1381, 1506, 1642, 1791,
        1953, 2129, 2322, 2532, 2762, 3012, 3284, 3582,
        3906, 4259, 4645, 5065, 5524, 6024, 6569, 7164,
        7812, 8519, 9290, 10131, 11048, 12048, 13139, 14328,
        15625, 17039, 18581, 20263, 22097, 24097, 26278, 28656,
        31250, 34078, 37162, 40526, 44194, 48194, 52556, 57312,
        62500, 68156, 74325, 81052, 88388, 96388, 105112, 114625,
        125000, 136313, 148650, 162104, 176776, 192776, 210224, 229251,
        250000, 272626, 297301, 324209, 353553, 385552, 420448, 458502,
        500000, 545253, 594603, 648419, 707106, 771105, 840896, 917004,
        1000000, 1090507, 1189207, 1296839, 1414213, 1542210, 1681792, 1834008,
        2000000, 2181015, 2378414, 2593679, 2828427, 3084421, 3363585, 3668016,
        4000000, 4362030, 4756828, 5187358, 5656854, 6168843, 6727171, 7336032,
        8000000, 8724061, 9513656, 10374716, 11313708, 12337686, 13454342, 14672064,
        16000000, 17448123, 19027313, 20749432, 22627416, 24675373, 26908685, 29344129,
        32000000,
    ];
    let mut t = [u64::MAX; TABLE];
    let mut j = 0;
    while j < REAL.len() {
        t[j] = REAL[j];
        j += 1;
    }
    t
};

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

/// Cell of a sample in whole microseconds: a binary search over [`THRESHOLDS_US`] written out
/// as eight steps with masked indexes, so the verifier sees neither a loop nor an unbounded
/// index. Beyond 32 s, the last bucket.
#[inline(always)]
pub fn bucket(us: u64) -> u32 {
    if us == 0 {
        return ZERO_CELL;
    }
    // Invariant: THRESHOLDS_US[lo] < us (true for lo = 0, whose threshold is 0).
    let mut lo = 0usize;
    lo = step(lo, 128, us);
    lo = step(lo, 64, us);
    lo = step(lo, 32, us);
    lo = step(lo, 16, us);
    lo = step(lo, 8, us);
    lo = step(lo, 4, us);
    lo = step(lo, 2, us);
    lo = step(lo, 1, us);
    let last = (BUCKETS - 2) as usize;
    1 + if lo > last { last } else { lo } as u32
}

#[inline(always)]
fn step(lo: usize, width: usize, us: u64) -> usize {
    let probe = (lo + width) & (TABLE - 1);
    if THRESHOLDS_US[probe] < us { probe } else { lo }
}

/// OTLP exponential index of a non-zero cell (Prometheus's is one more).
pub const fn index(cell: u32) -> i32 {
    MIN_INDEX + cell as i32 - 1
}

/// Largest whole microsecond a cell holds (the last cell also holds everything beyond).
pub fn upper_us(cell: u32) -> u64 {
    if cell == ZERO_CELL { 0 } else { THRESHOLDS_US[(cell as usize).min(BUCKETS as usize - 1)] }
}

/// Largest whole microsecond *below* a non-zero cell: the cell holds `(lower_us, upper_us]`.
pub fn lower_us(cell: u32) -> u64 {
    if cell == ZERO_CELL { 0 } else { THRESHOLDS_US[(cell as usize - 1).min(BUCKETS as usize - 1)] }
}

/// Cells of a histogram `shift` steps coarser than the kernel's (scale `SCALE − shift`): each of
/// its buckets is exactly `2^shift` consecutive kernel buckets, OTLP's downscaling rule (index
/// `i` → `i >> shift`), because [`MIN_INDEX`] is a multiple of `2^shift` (for `shift ≤ 5`), so
/// no coarse bucket straddles the zero bucket or the start of the range.
pub const fn buckets_at(shift: u32) -> u32 {
    1 + ((MAX_INDEX >> shift) - (MIN_INDEX >> shift) + 1) as u32
}

/// The coarse cell holding kernel cell `cell` (the zero bucket stays the zero bucket).
#[inline(always)]
pub const fn coarse_cell(cell: u32, shift: u32) -> u32 {
    if cell == ZERO_CELL { ZERO_CELL } else { 1 + ((cell - 1) >> shift) }
}

/// OTLP exponential index, at scale `SCALE − shift`, of a non-zero coarse cell.
pub const fn index_at(cell: u32, shift: u32) -> i32 {
    (MIN_INDEX >> shift) + cell as i32 - 1
}

/// Largest whole microsecond a coarse cell holds: that of the last kernel cell it covers.
pub fn upper_us_at(cell: u32, shift: u32) -> u64 {
    if cell == ZERO_CELL { 0 } else { THRESHOLDS_US[((cell as usize) << shift).min(BUCKETS as usize - 1)] }
}

/// Largest whole microsecond *below* a non-zero coarse cell: it holds `(lower_us_at, upper_us_at]`.
pub fn lower_us_at(cell: u32, shift: u32) -> u64 {
    if cell == ZERO_CELL { 0 } else { THRESHOLDS_US[((cell as usize - 1) << shift).min(BUCKETS as usize - 1)] }
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

    /// A little unsigned big integer (little-endian 32-bit limbs), enough for 10⁴⁸·2⁴⁰ and
    /// n⁸·2¹⁶⁰ with n < 2³²: the thresholds are checked in exact integers, not floats.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Big([u32; 16]);

    impl Big {
        fn from(v: u64) -> Self {
            let mut b = [0; 16];
            b[0] = v as u32;
            b[1] = (v >> 32) as u32;
            Big(b)
        }
        fn mul(self, m: u32) -> Self {
            let mut out = [0u32; 16];
            let mut carry = 0u64;
            for (o, l) in out.iter_mut().zip(self.0) {
                let p = u64::from(l) * u64::from(m) + carry;
                *o = p as u32;
                carry = p >> 32;
            }
            assert_eq!(carry, 0, "overflow");
            Big(out)
        }
        fn shl(self, bits: u32) -> Self {
            (0..bits).fold(self, |b, _| b.mul(2))
        }
        fn pow8(n: u64) -> Self {
            let n = u32::try_from(n).expect("small");
            (0..8).fold(Big::from(1), |b, _| b.mul(n))
        }
        /// Big-endian limb order compares like the number.
        fn key(self) -> [u32; 16] {
            let mut k = self.0;
            k.reverse();
            k
        }
    }

    /// `n = ⌊10⁶·2^(k/8)⌋` ⟺ `n⁸ ≤ 10⁴⁸·2^k < (n+1)⁸`, with 2^k moved to the side it is whole on.
    fn is_floor_of_threshold(n: u64, k: i32) -> bool {
        let mut ten48 = Big::from(1);
        for _ in 0..48 {
            ten48 = ten48.mul(10);
        }
        let (rhs, lhs_shift) = if k >= 0 { (ten48.shl(k as u32), 0) } else { (ten48, k.unsigned_abs()) };
        let lo = Big::pow8(n).shl(lhs_shift);
        let hi = Big::pow8(n + 1).shl(lhs_shift);
        lo.key() <= rhs.key() && rhs.key() < hi.key()
    }

    #[test]
    fn thresholds_are_exact_integer_floors_of_scale_3_bounds_in_seconds() {
        for (j, t) in THRESHOLDS_US.iter().take(BUCKETS as usize).enumerate() {
            let k = MIN_INDEX + j as i32;
            assert!(is_floor_of_threshold(*t, k), "T({k}) = {t}");
        }
        assert!(THRESHOLDS_US[BUCKETS as usize..].iter().all(|t| *t == u64::MAX), "padding");
        // Where 10⁶·2^(k/8) is a whole number the threshold is that number.
        assert_eq!(THRESHOLDS_US[(0 - MIN_INDEX) as usize], 1_000_000, "2^0 s");
        assert_eq!(THRESHOLDS_US[(32 - MIN_INDEX) as usize], 16_000_000, "2^4 s");
        assert_eq!(THRESHOLDS_US[(-48 - MIN_INDEX) as usize], 15_625, "2^-6 s");
        assert!(!is_floor_of_threshold(THRESHOLDS_US[5] + 1, MIN_INDEX + 5), "the check can fail");
    }

    /// Every whole microsecond up to 20 s, against a walk over the exact thresholds (independent
    /// of the binary search), and against the bounds 2^(i/8) s in floating point wherever a
    /// sample is not within rounding of a bound.
    #[test]
    fn every_whole_microsecond_to_20_s_lands_in_its_scale_3_bucket() {
        assert_eq!(bucket(0), ZERO_CELL);
        let mut j = 0usize; // THRESHOLDS_US[j] < v ≤ THRESHOLDS_US[j + 1]
        for v in 1..=20_000_000u64 {
            while THRESHOLDS_US[j + 1] < v {
                j += 1;
            }
            let cell = bucket(v);
            assert_eq!(cell, 1 + j as u32, "{v} µs");
            assert!(lower_us(cell) < v && v <= upper_us(cell), "{v} µs in cell {cell}");
            let (i, s) = (index(cell), v as f64 * 1e-6);
            let (lo, hi) = (2f64.powf(f64::from(i) / 8.0), 2f64.powf(f64::from(i + 1) / 8.0));
            let near = |b: f64| (s - b).abs() <= b * 1e-12;
            assert!(near(hi) || near(lo) || (lo < s && s <= hi), "{v} µs: index {i} is ({lo}, {hi}]");
        }
    }

    #[test]
    fn known_samples_and_the_range_ends() {
        assert_eq!(index(bucket(1)), -160, "1 µs is in (2^-20, 2^-19.875] s");
        assert_eq!(index(bucket(976)), -81, "976 µs ≤ ⌊10⁶·2^-10⌋ = 976");
        assert_eq!(index(bucket(977)), -80);
        assert_eq!(index(bucket(1000)), -80, "1 ms is in (2^-10, 2^-9.875] s");
        assert_eq!(index(bucket(1_000_000)), -1, "upper-inclusive: 1 s closes index -1");
        assert_eq!(index(bucket(1_000_001)), 0);
        assert_eq!(index(bucket(16_000_000)), 31);
        assert_eq!(bucket(32_000_000), BUCKETS - 1);
        assert_eq!(bucket(32_000_001), BUCKETS - 1, "beyond the range: the last bucket");
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(index(BUCKETS - 1), MAX_INDEX);
        assert_eq!((lower_us(1), upper_us(1)), (0, 1));
        assert_eq!(upper_us(ZERO_CELL), 0);
    }

    #[test]
    fn bounds_are_contiguous_and_non_decreasing() {
        for c in 2..BUCKETS {
            assert_eq!(lower_us(c), upper_us(c - 1), "cell {c}");
            assert!(upper_us(c) >= lower_us(c));
        }
        // From ~12 µs on, every bucket holds at least one whole microsecond.
        let empty = (1..BUCKETS).filter(|c| upper_us(*c) == lower_us(*c)).count();
        assert_eq!(empty, 18);
        assert!((bucket(12)..BUCKETS).all(|c| upper_us(c) > lower_us(c)));
    }

    /// Every whole microsecond up to 20 s: the coarse cell of its kernel cell is the coarse bucket
    /// of the OTLP definition at scale `3 − shift` (index `⌈log2(v)·2^scale⌉ − 1`, clamped to the
    /// range), its whole-µs bounds contain it, and coarse cells tile the kernel's exactly.
    #[test]
    fn coarse_cells_are_exact_downscales_of_the_kernel_buckets() {
        for shift in 0..=3u32 {
            let n = buckets_at(shift);
            assert_eq!(n, 1 + (200 >> shift), "shift {shift}");
            assert_eq!(coarse_cell(BUCKETS - 1, shift), n - 1, "the last kernel cell is the last coarse one");
            assert_eq!(coarse_cell(ZERO_CELL, shift), ZERO_CELL);
            for c in 1..BUCKETS {
                // OTLP downscaling: the coarse index is the kernel index shifted.
                assert_eq!(index_at(coarse_cell(c, shift), shift), index(c) >> shift, "cell {c} shift {shift}");
            }
            for c in 2..n {
                assert_eq!(lower_us_at(c, shift), upper_us_at(c - 1, shift), "contiguous: cell {c} shift {shift}");
            }
        }
        let mut v = 1u64;
        while v <= 20_000_000 {
            for shift in [1u32, 2] {
                let c = coarse_cell(bucket(v), shift);
                assert!(lower_us_at(c, shift) < v && v <= upper_us_at(c, shift), "{v} µs in coarse cell {c} (shift {shift})");
                let scale = SCALE - shift as i32;
                let i = index_at(c, shift);
                let s = v as f64 * 1e-6;
                let (lo, hi) = ((f64::from(i) / f64::from(1 << scale)).exp2(), (f64::from(i + 1) / f64::from(1 << scale)).exp2());
                let near = |b: f64| (s - b).abs() <= b * 1e-12;
                assert!(near(hi) || near(lo) || (lo < s && s <= hi), "{v} µs: scale-{scale} index {i} is ({lo}, {hi}]");
            }
            v += 1 + v / 997;
        }
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
