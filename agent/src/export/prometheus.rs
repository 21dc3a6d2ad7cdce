//! Prometheus text exposition of a [`Snapshot`]: a pure function, so the format is unit-tested.

use std::{fmt::Write as _, time::SystemTime};

use crate::snapshot::Snapshot;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + s.flows.len() * 512);
    let host = &s.host;

    header(&mut out, "azflow_tcp_bytes_total", "counter", "TCP bytes on the wire (IP and TCP headers included, segments counted as sent), by destination zone and traffic class.");
    for (k, c) in &s.flows {
        series(&mut out, "azflow_tcp_bytes_total", &flow_labels(host, k), c.bytes);
    }
    header(&mut out, "azflow_tcp_packets_total", "counter", "TCP packets on the wire, by destination zone and traffic class.");
    for (k, c) in &s.flows {
        series(&mut out, "azflow_tcp_packets_total", &flow_labels(host, k), c.packets);
    }

    header(&mut out, "azflow_unmapped_tcp_bytes_total", "counter", "TCP bytes to the busiest destinations in no known subnet, by /24 (IPv4) or /48 (IPv6).");
    for row in &s.unmapped_top {
        for dir in agent_common::Direction::ALL {
            let labels = [("prefix", row.prefix.as_str()), ("direction", dir.as_str())];
            series(&mut out, "azflow_unmapped_tcp_bytes_total", &labels, row.bytes[dir as usize]);
        }
    }
    gauge(&mut out, "azflow_unmapped_prefixes", "Distinct unmapped destination prefixes the kernel remembers now.", s.unmapped_tracked);
    header(&mut out, "azflow_unmapped_prefixes_evicted_total", "counter", "Unmapped prefixes pushed out of the kernel's bounded list (their bytes stay in the per-class totals).");
    series(&mut out, "azflow_unmapped_prefixes_evicted_total", &[], s.unmapped_evicted);

    header(&mut out, "azflow_kernel_errors_total", "counter", "Kernel-side failures and events, by kind.");
    for (kind, n) in &s.kernel_errors {
        series(&mut out, "azflow_kernel_errors_total", &[("kind", kind.as_str())], *n);
    }
    header(&mut out, "azflow_drains_total", "counter", "Kernel map drains completed.");
    series(&mut out, "azflow_drains_total", &[], s.drains);
    header(&mut out, "azflow_drain_failures_total", "counter", "Kernel map drains that failed (the previous snapshot stays published).");
    series(&mut out, "azflow_drain_failures_total", &[], s.drain_failures);
    header(&mut out, "azflow_drain_duration_seconds", "gauge", "Duration of the last drain.");
    let _ = writeln!(out, "azflow_drain_duration_seconds {}", s.last_drain.as_secs_f64());
    gauge(&mut out, "azflow_topology_subnets", "Subnets in the kernel table.", s.subnets);
    gauge(&mut out, "azflow_topology_generation", "Generation of the kernel subnet table.", u64::from(s.topology_generation));
    if let Some(t) = s.topology_loaded_at {
        header(&mut out, "azflow_topology_last_load_timestamp_seconds", "gauge", "When the current topology was loaded (Unix time).");
        let _ = writeln!(out, "azflow_topology_last_load_timestamp_seconds {}", unix(t));
    }
    let mut last_name = "";
    for (name, kind, v) in &s.agent_counters {
        let full = format!("azflow_{name}_total");
        if *name != last_name {
            header(&mut out, &full, "counter", "Agent self-metric, by kind.");
            last_name = name;
        }
        series(&mut out, &full, &[("kind", kind)], *v);
    }
    for (name, v) in &s.agent_gauges {
        let full = format!("azflow_{name}");
        header(&mut out, &full, "gauge", "Agent self-metric.");
        let _ = writeln!(out, "{full} {v}");
    }
    header(&mut out, "azflow_build_info", "gauge", "Agent version and this host's zone.");
    series(
        &mut out,
        "azflow_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("zone", &host.zone), ("zone_id", &host.zone_id)],
        1,
    );
    out
}

fn flow_labels<'a>(
    host: &'a crate::snapshot::HostLabels,
    k: &'a crate::snapshot::FlowKey,
) -> [(&'static str, &'a str); 6] {
    [
        ("direction", k.direction.as_str()),
        ("src_zone", &host.zone),
        ("dst_zone", &k.dst_zone),
        ("src_zone_id", &host.zone_id),
        ("dst_zone_id", &k.dst_zone_id),
        ("traffic_class", k.class.as_str()),
    ]
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    series(out, name, &[], v);
}

fn series(out: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            escape(out, val);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {v}");
}

fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use agent_common::{Counter, Direction, TrafficClass};

    use super::*;
    use crate::snapshot::{FlowKey, HostLabels};

    #[test]
    fn renders_flows_with_all_six_labels_and_escapes() {
        let mut s = Snapshot {
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), region: "us-east-1".into() },
            ..Snapshot::default()
        };
        s.flows.insert(
            FlowKey {
                direction: Direction::Transmit,
                dst_zone: "us-east-1\"b".into(),
                dst_zone_id: "use1-az2".into(),
                class: TrafficClass::CrossAz,
            },
            Counter { bytes: 12345, packets: 10 },
        );
        let text = render(&s);
        assert!(text.contains(
            "azflow_tcp_bytes_total{direction=\"transmit\",src_zone=\"us-east-1a\",dst_zone=\"us-east-1\\\"b\",src_zone_id=\"use1-az1\",dst_zone_id=\"use1-az2\",traffic_class=\"cross_az\"} 12345\n"
        ), "{text}");
        assert!(text.contains("traffic_class=\"cross_az\"} 10\n"));
        assert!(text.contains("# TYPE azflow_tcp_bytes_total counter\n"));
    }
}
