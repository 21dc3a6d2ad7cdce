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

    // Cost from the same counters as the bytes above, each direction at its own price.
    header(&mut out, "azflow_cost_usd_total", "counter", "USD AWS bills for these bytes, by billing path (bytes × the price table's USD per GB, each direction).");
    for (k, c) in &s.flows {
        let cost = k.billing.price.cost_usd(k.direction as usize, c.bytes);
        out.push_str("azflow_cost_usd_total");
        label_set(&mut out, &flow_labels(host, k));
        let _ = writeln!(out, " {cost}");
    }

    header(&mut out, "azflow_tcp_dst_subnet_bytes_total", "counter", "TCP bytes by destination subnet (opt-in with --dst-subnet-series; subnets beyond the cap are summed as dst_subnet=\"other\").");
    for ((k, sub), c) in &s.subnet_flows {
        let name = match sub {
            crate::snapshot::DstSubnet::Cidr(net) => net.to_string(),
            crate::snapshot::DstSubnet::Overflow => crate::snapshot::DstSubnet::OVERFLOW_LABEL.to_string(),
            crate::snapshot::DstSubnet::None => continue,
        };
        let labels = [
            ("direction", k.direction.as_str()),
            ("src_zone", host.zone.as_str()),
            ("dst_zone", k.dst_zone.as_str()),
            ("src_zone_id", host.zone_id.as_str()),
            ("dst_zone_id", k.dst_zone_id.as_str()),
            ("traffic_class", k.class.as_str()),
            ("dst_subnet", name.as_str()),
        ];
        series(&mut out, "azflow_tcp_dst_subnet_bytes_total", &labels, c.bytes);
    }
    latency(&mut out, s);
    workloads(&mut out, s);

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

    for n in crate::export::nat_metrics::series(&s.nat) {
        let (full, kind) = match n.kind {
            crate::export::nat_metrics::Kind::Counter => (format!("azflow_nat_{}_total", n.name), "counter"),
            crate::export::nat_metrics::Kind::Gauge => (format!("azflow_nat_{}", n.name), "gauge"),
        };
        header(&mut out, &full, kind, n.help);
        for (label, v) in n.points {
            series(&mut out, &full, label.as_slice(), v);
        }
    }

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
    // The same figures OTLP sends as azflow.agent.topology_age and .map_overflows{map="dst_subnet_series"}.
    if let Some(age) = crate::export::otlp::instruments::topology_age(s) {
        header(&mut out, "azflow_topology_age_seconds", "gauge", "Age of the current topology when the snapshot was taken.");
        let _ = writeln!(out, "azflow_topology_age_seconds {age}");
    }
    header(&mut out, "azflow_subnet_series_overflow", "gauge", "dst.subnet series folded into dst.subnet=\"other\" by --otlp-dst-subnet-series.");
    series(&mut out, "azflow_subnet_series_overflow", &[], s.subnet_series_overflow);
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
        &[("version", env!("CARGO_PKG_VERSION")), ("region", &host.region), ("zone", &host.zone), ("zone_id", &host.zone_id)],
        1,
    );
    out
}

/// RTT and connect-time histograms with the kernel's buckets exactly (a sample of n whole
/// microseconds falls in the bucket whose `le` is the largest whole microsecond it holds), and
/// the TCP event counters, per destination zone.
fn latency(out: &mut String, s: &Snapshot) {
    use agent_common::hist::{self, TcpEvent};
    let host = &s.host;
    for (name, help, pick) in [
        ("azflow_tcp_rtt_seconds", "TCP round-trip time samples (the kernel's own), by destination zone.", 0),
        ("azflow_tcp_srtt_seconds", "The kernel's smoothed RTT of connections opened before the agent started (at most once per socket per sampling interval), by destination zone.", 2),
        ("azflow_tcp_connect_duration_seconds", "Duration of active TCP opens (connect to established), by destination zone.", 1),
    ] {
        header(out, name, "histogram", help);
        for (k, row) in &s.latency {
            let h = match pick {
                0 => &row.rtt,
                2 => &row.srtt,
                _ => &row.connect,
            };
            if h.buckets.is_empty() {
                continue;
            }
            let labels = zone_labels(host, k);
            let mut cumulative = 0u64;
            // The last kernel bucket also takes every longer sample: it is only `+Inf`.
            let (finite, _) = h.buckets.split_at(h.buckets.len().saturating_sub(1));
            for (b, n) in finite.iter().enumerate() {
                cumulative += n;
                let le = (hist::upper_bound_us(b as u32) - 1) as f64 / 1e6;
                bucket_line(out, name, &labels, &format!("{le}"), cumulative);
            }
            cumulative = h.buckets.iter().sum();
            bucket_line(out, name, &labels, "+Inf", cumulative);
            let _ = write!(out, "{name}_sum");
            label_set(out, &labels);
            let _ = writeln!(out, " {}", h.sum_us as f64 / 1e6);
            let _ = write!(out, "{name}_count");
            label_set(out, &labels);
            let _ = writeln!(out, " {cumulative}");
        }
    }
    for (event, name, help) in [
        (TcpEvent::RetransmitSegments, "azflow_tcp_retransmits_total", "TCP segments retransmitted, by destination zone."),
        (TcpEvent::Rto, "azflow_tcp_rto_total", "TCP retransmission timeouts, by destination zone."),
        (TcpEvent::RttSamples, "azflow_tcp_rtt_samples_total", "RTT samples taken into the histogram."),
        (TcpEvent::RttSkipped, "azflow_tcp_rtt_samples_skipped_total", "RTT callbacks skipped by the per-socket sampling interval."),
        (TcpEvent::SrttSamples, "azflow_tcp_srtt_samples_total", "Smoothed RTTs read from connections that predate the agent."),
    ] {
        header(out, name, "counter", help);
        for (k, row) in &s.latency {
            series(out, name, &zone_labels(host, k), row.events[event as usize]);
        }
    }
}

fn zone_labels<'a>(host: &'a crate::snapshot::HostLabels, k: &'a crate::snapshot::ZoneKey) -> [(&'static str, &'a str); 5] {
    [
        ("src_zone", &host.zone),
        ("dst_zone", &k.dst_zone),
        ("src_zone_id", &host.zone_id),
        ("dst_zone_id", &k.dst_zone_id),
        ("traffic_class", k.class.as_str()),
    ]
}

fn bucket_line(out: &mut String, name: &str, labels: &[(&str, &str)], le: &str, v: u64) {
    let _ = write!(out, "{name}_bucket");
    let mut with_le: Vec<(&str, &str)> = labels.to_vec();
    with_le.push(("le", le));
    label_set(out, &with_le);
    let _ = writeln!(out, " {v}");
}

fn label_set(out: &mut String, labels: &[(&str, &str)]) {
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

fn flow_labels<'a>(
    host: &'a crate::snapshot::HostLabels,
    k: &'a crate::snapshot::FlowKey,
) -> [(&'static str, &'a str); 8] {
    [
        ("direction", k.direction.as_str()),
        ("src_zone", &host.zone),
        ("dst_zone", &k.dst_zone),
        ("src_zone_id", &host.zone_id),
        ("dst_zone_id", &k.dst_zone_id),
        ("traffic_class", k.class.as_str()),
        ("path", k.billing.path.as_str()),
        // Empty (no label, to Prometheus) when the path has no hop.
        ("hop_zone_id", k.billing.hop_zone_id.as_deref().unwrap_or("")),
    ]
}

/// Per-workload bytes and the workload self-metrics (see `export::workload_metrics`).
fn workloads(out: &mut String, s: &Snapshot) {
    use crate::export::workload_metrics::{Kind, flow_labels, stats_series};
    if !s.workload_stats.enabled {
        return;
    }
    header(out, "azflow_workload_tcp_bytes_total", "counter", "TCP bytes on the wire by local workload, direction and destination zone (the same bytes as azflow_tcp_bytes_total; workloads beyond the cap are summed as workload=\"other\").");
    for (k, c) in &s.workload_flows {
        let labels: Vec<(&str, &str)> = flow_labels(&s.host, k).into_iter().map(|(p, _, v)| (p, v)).collect();
        series(out, "azflow_workload_tcp_bytes_total", &labels, c.bytes);
    }
    for n in stats_series(&s.workload_stats) {
        let (full, kind) = match n.kind {
            Kind::Counter => (format!("azflow_workload_{}_total", n.name), "counter"),
            Kind::Gauge => (format!("azflow_workload_{}", n.name), "gauge"),
        };
        header(out, &full, kind, n.help);
        for (label, v) in n.points {
            series(out, &full, label.as_slice(), v);
        }
    }
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
        label_set(out, labels);
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
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), region: "us-east-1".into(), ..HostLabels::default() },
            ..Snapshot::default()
        };
        s.flows.insert(
            FlowKey {
                direction: Direction::Transmit,
                dst_zone: "us-east-1\"b".into(),
                dst_zone_id: "use1-az2".into(),
                class: TrafficClass::CrossAz,
                billing: Default::default(),
            },
            Counter { bytes: 12345, packets: 10 },
        );
        let text = render(&s);
        assert!(text.contains(
            "azflow_tcp_bytes_total{direction=\"transmit\",src_zone=\"us-east-1a\",dst_zone=\"us-east-1\\\"b\",src_zone_id=\"use1-az1\",dst_zone_id=\"use1-az2\",traffic_class=\"cross_az\",path=\"unknown\",hop_zone_id=\"\"} 12345\n"
        ), "{text}");
        assert!(text.contains("hop_zone_id=\"\"} 10\n"));
        assert!(text.contains("# TYPE azflow_tcp_bytes_total counter\n"));
    }

    #[test]
    fn renders_workload_series_and_caps() {
        use crate::snapshot::{WorkloadFlowKey, WorkloadLabels, WorkloadStats, ZoneKey};
        let mut s = Snapshot {
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), ..HostLabels::default() },
            workload_stats: WorkloadStats { enabled: true, series_cap: 200, index_overflow_total: 3, ..WorkloadStats::default() },
            ..Snapshot::default()
        };
        let key = WorkloadFlowKey {
            workload: WorkloadLabels { name: "cart".into(), kind: "pod".into(), namespace: "shop".into(), pod: None, container: None },
            direction: Direction::Transmit,
            dst: ZoneKey { dst_zone: "us-east-1b".into(), dst_zone_id: "use1-az2".into(), class: TrafficClass::CrossAz },
        };
        s.workload_flows.insert(key, Counter { bytes: 4242, packets: 3 });
        let text = render(&s);
        assert!(text.contains(r#"azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",src_zone="us-east-1a",dst_zone="us-east-1b",src_zone_id="use1-az1",dst_zone_id="use1-az2",traffic_class="cross_az"} 4242"#), "{text}");
        assert!(text.contains(r#"azflow_workload_caps{cap="series"} 200"#), "{text}");
        assert!(text.contains(r#"azflow_workload_folded_total{reason="index_cap"} 3"#), "{text}");
        assert!(!render(&Snapshot::default()).contains("azflow_workload_"), "nothing while attribution is off");
    }

    #[test]
    fn cost_is_bytes_times_each_directions_price() {
        use crate::topology::{Billing, BillingPath, paths::{Hop, PathPrice}};
        let mut s = Snapshot::default();
        let billing = Billing {
            path: BillingPath::NatGateway(Hop::CrossAz),
            hop_zone_id: Some("use1-az2".into()),
            // $0.145 out, $0.055 in, per 2^30 bytes.
            price: PathPrice { nano_usd_per_gb: [145_000_000, 55_000_000], bytes_per_gb: 1 << 30 },
        };
        for (direction, gb) in [(Direction::Transmit, 4u64), (Direction::Receive, 2)] {
            let key = FlowKey { direction, dst_zone: "internet".into(), dst_zone_id: "internet".into(), class: TrafficClass::Internet, billing: billing.clone() };
            s.flows.insert(key, Counter { bytes: gb << 30, packets: 1 });
        }
        let text = render(&s);
        let line = |dir: &str| {
            text.lines()
                .find(|l| l.starts_with("azflow_cost_usd_total{") && l.contains(&format!("direction=\"{dir}\"")))
                .unwrap_or_else(|| panic!("no {dir} cost in {text}"))
                .to_owned()
        };
        assert!(line("transmit").ends_with(",path=\"nat_gateway_cross_az\",hop_zone_id=\"use1-az2\"} 0.58"), "{}", line("transmit"));
        assert!(line("receive").ends_with("} 0.11"), "{}", line("receive"));
        assert!(text.contains("# TYPE azflow_cost_usd_total counter\n"));
    }
}
