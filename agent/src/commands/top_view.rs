//! `azflow top`'s model: workloads from two scrapes of an agent's `/metrics`, their cross-AZ
//! rate, $/day, affinity, and the host's RTT per destination AZ. Pure (text in, text out), so the
//! table is tested without a terminal.

use std::{collections::BTreeMap, fmt::Write as _};

/// One series of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
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
}

/// Per workload: bytes by class, both directions.
fn by_workload(samples: &[Sample]) -> BTreeMap<(String, String), [f64; 2]> {
    let mut out: BTreeMap<(String, String), [f64; 2]> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "azflow_workload_tcp_bytes_total") {
        let get = |k: &str| s.labels.get(k).map_or("", String::as_str);
        let name = match get("namespace") {
            "" => get("workload").to_string(),
            ns => format!("{ns}/{}", get("workload")),
        };
        let cell = out.entry((name, get("workload_kind").to_string())).or_default();
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
            Row { workload, kind, cross_az_rate: cross, cost_per_day: cross * 86_400.0 / 1_073_741_824.0 * price_per_gb, affinity }
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

/// RTT p50/p99 per destination zone from the cumulative `azflow_tcp_rtt_seconds` buckets of
/// cross-AZ and same-AZ rows (per-workload RTT is not exported yet: this is the host's).
pub fn rtt_by_zone(samples: &[Sample]) -> BTreeMap<String, (f64, f64)> {
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == "azflow_tcp_rtt_seconds_bucket") {
        let (Some(zone), Some(le)) = (s.labels.get("dst_zone"), s.labels.get("le")) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let v = buckets.entry(zone.clone()).or_default();
        match v.iter_mut().find(|(b, _)| *b == le) {
            Some((_, n)) => *n += s.value,
            None => v.push((le, s.value)),
        }
    }
    buckets
        .into_iter()
        .filter_map(|(zone, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let total = b.last()?.1;
            if total <= 0.0 {
                return None;
            }
            let q = |p: f64| b.iter().find(|(_, n)| *n >= p * total).map_or(f64::NAN, |(le, _)| *le);
            Some((zone, (q(0.5), q(0.99))))
        })
        .collect()
}

/// The whole screen as text.
pub fn render(rows: &[Row], rtt: &BTreeMap<String, (f64, f64)>, sort: SortBy, filter: &str, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "azflow top — {source} — sort: {} — filter: {}", sort.as_str(), if filter.is_empty() { "-" } else { filter });
    let _ = writeln!(out, "{:<40} {:<10} {:>14} {:>10} {:>9}", "WORKLOAD", "KIND", "CROSS-AZ B/s", "$/DAY", "AFFINITY");
    for r in rows {
        let affinity = r.affinity.map_or("-".to_string(), |a| format!("{:.1}%", a * 100.0));
        let _ = writeln!(out, "{:<40} {:<10} {:>14} {:>10.2} {:>9}", r.workload, r.kind, crate::console::human(r.cross_az_rate), r.cost_per_day, affinity);
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no workload traffic yet)");
    }
    if !rtt.is_empty() {
        let _ = writeln!(out, "\nRTT of this host by destination AZ (bucket bounds):");
        for (zone, (p50, p99)) in rtt {
            let _ = writeln!(out, "  {zone:<20} p50 ≤ {:>9}  p99 ≤ {:>9}", ms(*p50), ms(*p99));
        }
    }
    let _ = writeln!(out, "\nkeys: s sort · / filter · q quit");
    out
}

fn ms(secs: f64) -> String {
    if secs.is_finite() { format!("{:.3} ms", secs * 1e3) } else { "> max".to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rtt_quantiles_are_bucket_bounds() {
        let rtt = rtt_by_zone(&parse(T0));
        assert_eq!(rtt.get("b"), Some(&(0.002, 0.002)));
    }

    #[test]
    fn labels_with_escapes_parse() {
        let s = parse(r#"m{a="x\"y",b="z"} 2"#);
        assert_eq!(s[0].labels.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(s[0].value, 2.0);
    }
}
