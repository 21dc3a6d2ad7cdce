//! What the delay-line latency suites share: when a run counts as a measurement, how often to
//! measure again, and quantiles read from the exported buckets.

use azflow_tests::DelayStats;

use super::Metrics;

/// A run whose delay line delivered packets later than this on average did not inject the delay
/// the test expects (the machine was busy: steal time, other work); it is measured again rather
/// than judged. A run that was on time is judged, and fails on any mismatch.
pub const LATE_LIMIT_US: f64 = 20.0;
pub const ATTEMPTS: u32 = 3;

/// Whether the delay line injected what the test expects (printed either way).
pub fn on_time(stats: &DelayStats) -> bool {
    println!("delay line: {stats:?}");
    if stats.late_mean_us > LATE_LIMIT_US {
        println!("the delay line ran {:.1} µs late on average (limit {LATE_LIMIT_US}): not a valid measurement", stats.late_mean_us);
        return false;
    }
    true
}

/// Runs `attempt` until one is a valid measurement (`Some`), at most [`ATTEMPTS`] times.
pub fn measure_until_valid(mut attempt: impl FnMut() -> Option<()>) {
    for n in 1..=ATTEMPTS {
        if attempt().is_some() {
            return;
        }
        println!("attempt {n} of {ATTEMPTS} was not a valid measurement; measuring again");
    }
    panic!("the delay line ran late in all {ATTEMPTS} attempts: this machine is too busy to measure latency");
}

/// `histogram_quantile` over the exported buckets of one destination (microseconds); the agent
/// runs with `--prometheus-buckets all`, so these are the kernel's buckets.
pub fn quantile_us(m: &Metrics, name: &str, zone_id: &str, q: f64) -> Option<f64> {
    quantile_us_where(m, name, &[("dst_zone_id", zone_id)], q)
}

/// The cumulative `(le in seconds, count)` buckets of the series of histogram `name` whose labels
/// include `want`, summed per `le`, `+Inf` last.
pub fn buckets_where(m: &Metrics, name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let matching = m.series.iter().filter(|(n, l, _)| {
        n == &format!("{name}_bucket") && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    });
    for (_, l, v) in matching {
        let le = l["le"].parse::<f64>().unwrap_or(f64::INFINITY);
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += *v,
            None => buckets.push((le, *v)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// [`quantile_us`] over the series whose labels include `want` (summed per `le`).
pub fn quantile_us_where(m: &Metrics, name: &str, want: &[(&str, &str)], q: f64) -> Option<f64> {
    quantile_of(&buckets_where(m, name, want), q)
}

/// `histogram_quantile` (microseconds) of cumulative `(le in seconds, count)` buckets, `+Inf` last.
pub fn quantile_of(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in buckets {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0 * 1e6);
            }
            let frac = if c > prev.1 { (rank - prev.1) / (c - prev.1) } else { 0.0 };
            return Some((prev.0 + (le - prev.0) * frac) * 1e6);
        }
        prev = (le, c);
    }
    None
}
