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
    fn human_units() {
        assert_eq!(human(999.0), "999 B");
        assert_eq!(human(1_500_000_000.0), "1.5 GB");
    }
}
