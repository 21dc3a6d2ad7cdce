//! `azflow top`'s model: workloads from two scrapes of an agent's `/metrics`, their cross-AZ
//! rate, $/day, affinity, and each workload's RTT p50/p99 to each destination AZ
//! (`azflow_workload_tcp_rtt_seconds`; from an agent without it, the host's RTT per AZ below the
//! table instead). Pure (text in, text out), so the table is tested without a terminal.

use std::{collections::BTreeMap, fmt::Write as _};

/// One series of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// When the agent's drain behind `samples` read the kernel (Unix seconds); `None` from an agent
/// that does not say.
pub fn drain_time(samples: &[Sample]) -> Option<f64> {
    samples.iter().find(|s| s.name == "azflow_last_drain_timestamp_seconds").map(|s| s.value)
}

/// Seconds between two scrapes' figures: the agent's drain clock when it has one (its counters
/// move only at drains, so the scraper's clock would read 0 or several drains' growth), else
/// `fallback`. `None` while no drain happened in between: nothing new to show.
pub fn elapsed(before: &[Sample], now: &[Sample], fallback: f64) -> Option<f64> {
    match (drain_time(before), drain_time(now)) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        (Some(_), Some(_)) => None,
        _ => Some(fallback),
    }
}

/// Parses the text exposition format (comments skipped; a line that does not parse is skipped:
/// the view shows what it can).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), BTreeMap::new()),
        Some((n, rest)) => (n.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name, labels, value })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(k.trim_start_matches(',').to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// What the table is sorted by (key `s` cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    CrossAzRate,
    Cost,
    Affinity,
    Name,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::CrossAzRate => Self::Cost,
            Self::Cost => Self::Affinity,
            Self::Affinity => Self::Name,
            Self::Name => Self::CrossAzRate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrossAzRate => "cross-AZ bytes/s",
            Self::Cost => "$/day",
            Self::Affinity => "affinity (lowest first)",
            Self::Name => "name",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cross" | "rate" => Some(Self::CrossAzRate),
            "cost" => Some(Self::Cost),
            "affinity" => Some(Self::Affinity),
            "name" => Some(Self::Name),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `namespace/name`, or the name outside Kubernetes.
    pub workload: String,
    pub kind: String,
    pub cross_az_rate: f64,
    pub cost_per_day: f64,
    /// Same-AZ share of same- and cross-AZ bytes/s; cumulative bytes when idle; None: none.
    pub affinity: Option<f64>,
    /// RTT (p50, p99) in seconds to each destination AZ, from the workload's own histograms
    /// (cumulative since the agent started).
    pub rtt: BTreeMap<String, (f64, f64)>,
}

/// (`namespace/name` or the name, kind) of a workload series.
type WorkloadKey = (String, String);

fn workload_key(s: &Sample) -> WorkloadKey {
    let get = |k: &str| s.labels.get(k).map_or("", String::as_str);
    let name = match get("namespace") {
        "" => get("workload").to_string(),
        ns => format!("{ns}/{}", get("workload")),
    };
    (name, get("workload_kind").to_string())
}

/// Per workload: bytes by class, both directions.
fn by_workload(samples: &[Sample]) -> BTreeMap<WorkloadKey, [f64; 2]> {
    let mut out: BTreeMap<WorkloadKey, [f64; 2]> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "azflow_workload_tcp_bytes_total") {
        let get = |k: &str| s.labels.get(k).map_or("", String::as_str);
        let cell = out.entry(workload_key(s)).or_default();
        match get("traffic_class") {
            "cross_az" => cell[0] += s.value,
            "same_az" => cell[1] += s.value,
            _ => {}
        }
    }
    out
}

/// Rows from two scrapes `secs` apart; `price_per_gb` in USD per 2^30 bytes each way.
pub fn rows(before: &[Sample], now: &[Sample], secs: f64, price_per_gb: f64) -> Vec<Row> {
    let old = by_workload(before);
    let mut rtt = rtt_by_workload(now);
    let secs = secs.max(1e-3);
    by_workload(now)
        .into_iter()
        .map(|((workload, kind), v)| {
            let o = old.get(&(workload.clone(), kind.clone())).copied().unwrap_or(v);
            let rate = |i: usize| (v[i] - o[i]).max(0.0) / secs;
            let (cross, same) = (rate(0), rate(1));
            let affinity = if cross + same > 0.0 {
                Some(same / (cross + same))
            } else if v[0] + v[1] > 0.0 {
                Some(v[1] / (v[0] + v[1]))
            } else {
                None
            };
            let rtt = rtt.remove(&(workload.clone(), kind.clone())).unwrap_or_default();
            Row { workload, kind, cross_az_rate: cross, cost_per_day: cross * 86_400.0 / 1_073_741_824.0 * price_per_gb, affinity, rtt }
        })
        .collect()
}

/// Sorts and filters (a case-insensitive substring of the workload or its kind).
pub fn arrange(mut rows: Vec<Row>, sort: SortBy, filter: &str) -> Vec<Row> {
    let f = filter.to_lowercase();
    rows.retain(|r| f.is_empty() || r.workload.to_lowercase().contains(&f) || r.kind.to_lowercase().contains(&f));
    rows.sort_by(|a, b| {
        let by = match sort {
            SortBy::CrossAzRate => b.cross_az_rate.total_cmp(&a.cross_az_rate),
            SortBy::Cost => b.cost_per_day.total_cmp(&a.cost_per_day),
            SortBy::Affinity => a.affinity.unwrap_or(2.0).total_cmp(&b.affinity.unwrap_or(2.0)),
            SortBy::Name => std::cmp::Ordering::Equal,
        };
        by.then_with(|| a.workload.cmp(&b.workload))
    });
    rows
}

/// Cumulative classic buckets `(le, count)` of one histogram family, summed per key.
fn buckets_by<K: Ord>(samples: &[Sample], name: &str, key: impl Fn(&Sample) -> Option<K>) -> BTreeMap<K, Vec<(f64, f64)>> {
    let mut out: BTreeMap<K, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let (Some(k), Some(le)) = (key(s), s.labels.get("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let v = out.entry(k).or_default();
        match v.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += s.value,
            None => v.push((le, s.value)),
        }
    }
    out
}

/// (p50, p99) in seconds of cumulative classic buckets, as Prometheus's `histogram_quantile`
/// computes it (linear inside the bucket; in the `+Inf` bucket, the highest finite bound), so top
/// and the dashboard agree. None without samples.
fn p50_p99(mut b: Vec<(f64, f64)>) -> Option<(f64, f64)> {
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let q = |p: f64| {
        let rank = p * total;
        let (mut lo, mut below) = (0.0, 0.0);
        for (le, n) in &b {
            if *n >= rank {
                if le.is_infinite() {
                    return lo;
                }
                let frac = if *n > below { (rank - below) / (n - below) } else { 0.0 };
                return lo + (le - lo) * frac;
            }
            (lo, below) = (*le, *n);
        }
        f64::NAN
    };
    Some((q(0.5), q(0.99)))
}

/// Each workload's RTT p50/p99 per destination zone (`azflow_workload_tcp_rtt_seconds`).
pub fn rtt_by_workload(samples: &[Sample]) -> BTreeMap<WorkloadKey, BTreeMap<String, (f64, f64)>> {
    let buckets = buckets_by(samples, "azflow_workload_tcp_rtt_seconds_bucket", |s| Some((workload_key(s), s.labels.get("dst_zone")?.clone())));
    let mut out: BTreeMap<WorkloadKey, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    for ((w, zone), b) in buckets {
        if let Some(q) = p50_p99(b) {
            out.entry(w).or_default().insert(zone, q);
        }
    }
    out
}

/// The host's RTT p50/p99 per destination zone (`azflow_tcp_rtt_seconds`): shown only when the
/// agent exports no per-workload RTT (an older agent, or `--workload-rtt off`).
pub fn rtt_by_zone(samples: &[Sample]) -> BTreeMap<String, (f64, f64)> {
    buckets_by(samples, "azflow_tcp_rtt_seconds_bucket", |s| s.labels.get("dst_zone").cloned())
        .into_iter()
        .filter_map(|(zone, b)| Some((zone, p50_p99(b)?)))
        .collect()
}

/// The whole screen as text. Rows carry their RTT per AZ when the agent exports it (one column
/// per destination AZ); otherwise `host_rtt` is shown below the table.
pub fn render(rows: &[Row], host_rtt: &BTreeMap<String, (f64, f64)>, sort: SortBy, filter: &str, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "azflow top — {source} — sort: {} — filter: {}", sort.as_str(), if filter.is_empty() { "-" } else { filter });
    let zones: std::collections::BTreeSet<&String> = rows.iter().flat_map(|r| r.rtt.keys()).collect();
    let columns: Vec<(String, usize)> = zones.iter().map(|z| (format!("RTT {z}"), 11.max(4 + z.chars().count()))).collect();
    let _ = write!(out, "{:<40} {:<10} {:>14} {:>10} {:>9}", "WORKLOAD", "KIND", "CROSS-AZ B/s", "$/DAY", "AFFINITY");
    for (head, w) in &columns {
        let _ = write!(out, " {head:>w$}");
    }
    out.push('\n');
    for r in rows {
        let affinity = r.affinity.map_or("-".to_string(), |a| format!("{:.1}%", a * 100.0));
        let _ = write!(out, "{:<40} {:<10} {:>14} {:>10.2} {:>9}", r.workload, r.kind, crate::console::human(r.cross_az_rate), r.cost_per_day, affinity);
        for (zone, (_, w)) in zones.iter().zip(&columns) {
            let cell = r.rtt.get(*zone).map_or("-".to_string(), |(p50, p99)| format!("{}/{}", ms(*p50), ms(*p99)));
            let _ = write!(out, " {cell:>w$}");
        }
        out.push('\n');
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no workload traffic yet)");
    }
    if !zones.is_empty() {
        let _ = writeln!(out, "\nRTT: each workload's p50/p99 in ms to each destination AZ (its own sockets, since the agent started).");
    } else if !host_rtt.is_empty() {
        let _ = writeln!(out, "\nRTT of this host by destination AZ (this agent exports no per-workload RTT):");
        for (zone, (p50, p99)) in host_rtt {
            let _ = writeln!(out, "  {zone:<20} p50 {:>7} ms  p99 {:>7} ms", ms(*p50), ms(*p99));
        }
    }
    let _ = writeln!(out, "\nkeys: s sort · / filter · q quit");
    out
}

/// Seconds as milliseconds, two decimals ("> max" beyond the last bucket).
fn ms(secs: f64) -> String {
    if secs.is_finite() { format!("{:.2}", secs * 1e3) } else { "> max".to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_divide_by_the_agents_drain_clock() {
        let at = |t: f64| parse(&format!("azflow_last_drain_timestamp_seconds {t}\n"));
        assert_eq!(elapsed(&at(100.0), &at(105.0), 2.0), Some(5.0), "two drains 5 s apart, scraped 2 s apart");
        assert_eq!(elapsed(&at(100.0), &at(100.0), 2.0), None, "no drain in between: nothing new");
        assert_eq!(elapsed(&[], &[], 2.0), Some(2.0), "an agent without the clock: the scraper's");
    }

    const T0: &str = r#"# HELP azflow_workload_tcp_bytes_total x
azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",traffic_class="cross_az"} 1000
azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",traffic_class="same_az"} 0
azflow_workload_tcp_bytes_total{workload="api.service",workload_kind="systemd",namespace="",direction="receive",traffic_class="cross_az"} 0
azflow_tcp_rtt_seconds_bucket{dst_zone="b",le="0.001"} 5
azflow_tcp_rtt_seconds_bucket{dst_zone="b",le="0.002"} 99
azflow_tcp_rtt_seconds_bucket{dst_zone="b",le="+Inf"} 100
"#;
    const T1: &str = r#"azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",traffic_class="cross_az"} 3000
azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",traffic_class="same_az"} 6000
azflow_workload_tcp_bytes_total{workload="api.service",workload_kind="systemd",namespace="",direction="receive",traffic_class="cross_az"} 8000
"#;

    #[test]
    fn rates_cost_affinity_and_sorting() {
        let r = rows(&parse(T0), &parse(T1), 2.0, 1.0);
        let sorted = arrange(r.clone(), SortBy::CrossAzRate, "");
        assert_eq!(sorted.iter().map(|r| r.workload.as_str()).collect::<Vec<_>>(), ["api.service", "shop/cart"]);
        assert_eq!((sorted[0].cross_az_rate, sorted[1].cross_az_rate), (4000.0, 1000.0));
        assert_eq!(sorted[1].affinity, Some(0.75));
        assert!((sorted[0].cost_per_day - 4000.0 * 86_400.0 / 1_073_741_824.0).abs() < 1e-9);
        let by_affinity = arrange(r.clone(), SortBy::Affinity, "");
        assert_eq!(by_affinity[0].workload, "api.service");
        assert_eq!(arrange(r, SortBy::Name, "POD").len(), 1);
    }

    #[test]
    fn rtt_quantiles_interpolate_as_histogram_quantile() {
        let rtt = rtt_by_zone(&parse(T0));
        let (p50, p99) = rtt["b"];
        // Rank 50 of 100 is the 45th of 94 samples in (1, 2] ms; rank 99 closes that bucket.
        assert!((p50 - (0.001 + 0.001 * 45.0 / 94.0)).abs() < 1e-12, "{p50}");
        assert!((p99 - 0.002).abs() < 1e-12, "{p99}");
        // In the +Inf bucket: the highest finite bound.
        let inf = rtt_by_zone(&parse("azflow_tcp_rtt_seconds_bucket{dst_zone=\"c\",le=\"0.001\"} 1\nazflow_tcp_rtt_seconds_bucket{dst_zone=\"c\",le=\"+Inf\"} 10\n"));
        assert_eq!(inf["c"], (0.001, 0.001));
    }

    /// Each workload's RTT to each AZ is a column of its row; the host's is not shown then.
    #[test]
    fn workload_rtt_columns_replace_the_host_rtt() {
        let wl = r#"azflow_workload_tcp_rtt_seconds_bucket{workload="cart",workload_kind="pod",namespace="shop",dst_zone="b",le="0.000976"} 0
azflow_workload_tcp_rtt_seconds_bucket{workload="cart",workload_kind="pod",namespace="shop",dst_zone="b",le="0.001381"} 10
azflow_workload_tcp_rtt_seconds_bucket{workload="cart",workload_kind="pod",namespace="shop",dst_zone="b",le="+Inf"} 10
azflow_workload_tcp_rtt_seconds_bucket{workload="api.service",workload_kind="systemd",namespace="",dst_zone="c",le="0.001953"} 4
azflow_workload_tcp_rtt_seconds_bucket{workload="api.service",workload_kind="systemd",namespace="",dst_zone="c",le="0.002762"} 8
azflow_workload_tcp_rtt_seconds_bucket{workload="api.service",workload_kind="systemd",namespace="",dst_zone="c",le="+Inf"} 8
"#;
        let now = parse(&format!("{T1}{wl}"));
        let r = arrange(rows(&parse(T0), &now, 2.0, 1.0), SortBy::CrossAzRate, "");
        let cart = r.iter().find(|r| r.workload == "shop/cart").expect("cart");
        let (p50, p99) = cart.rtt["b"];
        assert!((p50 - (0.000976 + 0.000405 * 0.5)).abs() < 1e-9 && (p99 - (0.000976 + 0.000405 * 0.99)).abs() < 1e-9, "{p50} {p99}");
        let text = render(&r, &rtt_by_zone(&parse(T0)), SortBy::CrossAzRate, "", "x");
        let header = text.lines().find(|l| l.starts_with("WORKLOAD")).expect("header");
        assert!(header.ends_with("AFFINITY       RTT b       RTT c"), "{header:?}");
        let last2 = |w: &str| {
            let line = text.lines().find(|l| l.starts_with(w)).unwrap_or_else(|| panic!("{w} in {text}"));
            assert_eq!(line.chars().count(), header.chars().count(), "{line:?}: cells under their headers");
            line.split_whitespace().rev().take(2).collect::<Vec<_>>()
        };
        assert_eq!(last2("shop/cart"), ["-", "1.18/1.38"]);
        // Rank 4 of 8 closes the first bucket, which Prometheus starts at 0.
        assert_eq!(last2("api.service"), ["1.95/2.75", "-"]);
        assert!(!text.contains("RTT of this host"), "{text}");
        // From an agent without per-workload RTT: the host's, below the table.
        let old = render(&arrange(rows(&parse(T0), &parse(T1), 2.0, 1.0), SortBy::CrossAzRate, ""), &rtt_by_zone(&parse(T0)), SortBy::CrossAzRate, "", "x");
        assert!(old.contains("RTT of this host by destination AZ") && old.contains("  b "), "{old}");
        assert!(old.lines().find(|l| l.starts_with("WORKLOAD")).is_some_and(|h| h.ends_with("AFFINITY")), "{old}");
    }

    #[test]
    fn labels_with_escapes_parse() {
        let s = parse(r#"m{a="x\"y",b="z"} 2"#);
        assert_eq!(s[0].labels.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(s[0].value, 2.0);
    }
}
