//! The live console table: per destination zone and class, bytes and rate in each direction.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use agent_common::{Counter, Direction, TrafficClass};

use crate::snapshot::{Snapshot, ZoneKey};

type Row = (String, String, TrafficClass);

/// Renders `now`, with rates against `before` over `elapsed` (pure; the caller does the I/O).
pub fn render(now: &Snapshot, before: Option<&Snapshot>, elapsed: Duration, cgroup: &str) -> String {
    let rows = by_row(now);
    let prev = before.map(by_row).unwrap_or_default();
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "azflow — this host: {} ({}) — cgroup {} — drains {} (last {:.1} ms)",
        now.host.zone,
        now.host.zone_id,
        cgroup,
        now.drains,
        now.last_drain.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        out,
        "{:<18} {:<12} {:<10} {:>11} {:>12} {:>11} {:>12} {:>10} {:>10}",
        "DST ZONE", "ZONE ID", "CLASS", "TX BYTES", "TX RATE", "RX BYTES", "RX RATE", "RTT p50", "RTT p99"
    );
    for (row, cells) in &rows {
        let old = prev.get(row).copied().unwrap_or_default();
        let rate = |d: usize| cells[d].bytes.saturating_sub(old[d].bytes) as f64 / secs;
        let rtt = now.latency.get(&ZoneKey { dst_zone: row.0.clone(), dst_zone_id: row.1.clone(), class: row.2 });
        let q = |p: f64| rtt.and_then(|r| r.rtt.quantile_us(p).or_else(|| r.srtt.quantile_us(p))).map_or("-".to_string(), micros);
        let _ = writeln!(
            out,
            "{:<18} {:<12} {:<10} {:>11} {:>12} {:>11} {:>12} {:>10} {:>10}",
            row.0,
            row.1,
            row.2.as_str(),
            human(cells[0].bytes as f64),
            format!("{}/s", human(rate(0))),
            human(cells[1].bytes as f64),
            format!("{}/s", human(rate(1))),
            q(0.5),
            q(0.99),
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no TCP traffic counted yet)");
    }
    workloads(&mut out, now, before, secs);
    if !now.unmapped_top.is_empty() {
        let _ = writeln!(out, "\nUnmapped destinations (add their subnets to the topology):");
        for r in now.unmapped_top.iter().take(5) {
            let _ = writeln!(out, "  {:<24} tx {:>10}  rx {:>10}", r.prefix, human(r.bytes[0] as f64), human(r.bytes[1] as f64));
        }
    }
    let errors: Vec<String> = now
        .kernel_errors
        .iter()
        .filter(|(k, n)| *n > 0 && *k != agent_common::KernelError::UnmappedNew)
        .map(|(k, n)| format!("{}={n}", k.as_str()))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nkernel errors: {}", errors.join(" "));
    }
    out
}

/// Workloads shown in the console, busiest cross-AZ first.
const TOP_WORKLOADS: usize = 8;

/// (namespace, name, kind) of a workload.
type WorkloadName = (String, String, String);

/// Per workload: cross-AZ bytes (both directions) and same-AZ bytes.
fn by_workload(s: &Snapshot) -> BTreeMap<WorkloadName, [u64; 2]> {
    let mut out: BTreeMap<WorkloadName, [u64; 2]> = BTreeMap::new();
    for (k, c) in &s.workload_flows {
        let w = &k.workload;
        let cell = out.entry((w.namespace.clone(), w.name.clone(), w.kind.clone())).or_default();
        match k.dst.class {
            TrafficClass::CrossAz => cell[0] = cell[0].saturating_add(c.bytes),
            TrafficClass::SameAz => cell[1] = cell[1].saturating_add(c.bytes),
            _ => {}
        }
    }
    out
}

/// The top workloads by cross-AZ rate, with their affinity (same-AZ share of same- and cross-AZ
/// bytes, cumulative).
fn workloads(out: &mut String, now: &Snapshot, before: Option<&Snapshot>, secs: f64) {
    if now.workload_flows.is_empty() {
        return;
    }
    let rows = by_workload(now);
    let prev = before.map(by_workload).unwrap_or_default();
    let mut ranked: Vec<(&WorkloadName, [u64; 2], f64)> = rows
        .iter()
        .map(|(k, v)| (k, *v, prev.get(k).map_or(v[0], |p| v[0].saturating_sub(p[0])) as f64 / secs))
        .collect();
    ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| b.1[0].cmp(&a.1[0])));
    let _ = writeln!(out, "\n{:<32} {:<10} {:>14} {:>13} {:>9}", "WORKLOAD", "KIND", "CROSS-AZ RATE", "CROSS-AZ", "AFFINITY");
    for ((ns, name, kind), v, rate) in ranked.into_iter().take(TOP_WORKLOADS) {
        let shown = if ns.is_empty() { name.clone() } else { format!("{ns}/{name}") };
        let total = v[0].saturating_add(v[1]);
        let affinity = if total == 0 { "-".to_string() } else { format!("{:.0}%", v[1] as f64 * 100.0 / total as f64) };
        let _ = writeln!(out, "{:<32} {:<10} {:>14} {:>13} {:>9}", shown, kind, format!("{}/s", human(rate)), human(v[0] as f64), affinity);
    }
}

fn by_row(s: &Snapshot) -> BTreeMap<Row, [Counter; 2]> {
    let mut rows: BTreeMap<Row, [Counter; 2]> = BTreeMap::new();
    for (k, c) in &s.flows {
        let cell = &mut rows.entry((k.dst_zone.clone(), k.dst_zone_id.clone(), k.class)).or_default()
            [if k.direction == Direction::Transmit { 0 } else { 1 }];
        cell.bytes = cell.bytes.saturating_add(c.bytes);
        cell.packets = cell.packets.saturating_add(c.packets);
    }
    rows
}

/// 1500.0 µs → "1.50 ms".
fn micros(us: f64) -> String {
    if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

/// 1234567 → "1.2 MB" (decimal units, as AWS bills).
pub fn human(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{v:.0} {}", UNITS[i]) } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::FlowKey;

    #[test]
    fn shows_bytes_and_rates_per_zone() {
        let key = |d| FlowKey { direction: d, dst_zone: "az-b".into(), dst_zone_id: "b-id".into(), class: TrafficClass::CrossAz, billing: Default::default() };
        let mut before = Snapshot::default();
        before.flows.insert(key(Direction::Transmit), Counter { bytes: 1_000_000, packets: 1 });
        let mut now = before.clone();
        now.flows.insert(key(Direction::Transmit), Counter { bytes: 3_000_000, packets: 2 });
        now.flows.insert(key(Direction::Receive), Counter { bytes: 500, packets: 2 });
        let text = render(&now, Some(&before), Duration::from_secs(2), "/cg");
        let line = text.lines().find(|l| l.starts_with("az-b")).expect("a row for az-b");
        assert!(line.contains("3.0 MB") && line.contains("1.0 MB/s") && line.contains("500 B"), "{line}");
    }

    #[test]
    fn shows_top_workloads_by_cross_az_rate() {
        use crate::snapshot::{WorkloadFlowKey, WorkloadLabels};
        let key = |name: &str, class| WorkloadFlowKey {
            workload: WorkloadLabels { name: name.into(), kind: "pod".into(), namespace: "shop".into(), pod: None, container: None },
            direction: Direction::Transmit,
            dst: ZoneKey { dst_zone: "az-b".into(), dst_zone_id: "b-id".into(), class },
        };
        let mut now = Snapshot::default();
        now.workload_flows.insert(key("cart", TrafficClass::CrossAz), Counter { bytes: 3_000_000, packets: 1 });
        now.workload_flows.insert(key("cart", TrafficClass::SameAz), Counter { bytes: 1_000_000, packets: 1 });
        now.workload_flows.insert(key("web", TrafficClass::CrossAz), Counter { bytes: 9_000_000, packets: 1 });
        let text = render(&now, None, Duration::from_secs(1), "/cg");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("shop/")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("shop/web") && lines[0].contains("0%"), "{text}");
        assert!(lines[1].starts_with("shop/cart") && lines[1].contains("25%"), "{text}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(999.0), "999 B");
        assert_eq!(human(1_500_000_000.0), "1.5 GB");
    }
}
