//! Prometheus exposition of a [`Snapshot`]: pure functions, so the formats are unit-tested.
//!
//! The snapshot becomes a list of metric families ([`families`]) once; the text format
//! ([`render`], the default) and the protobuf format ([`super::prometheus_proto`], served when the
//! scraper asks for it, and the only one that carries native histograms) are two writings of it.

use std::{fmt::Write as _, time::SystemTime};

use super::classic_buckets::ClassicBuckets;
use crate::snapshot::{Histogram, Snapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// The kernel's histogram; each format picks its buckets from it.
    Histogram(Histogram),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub points: Vec<Point>,
}

/// Families being built; points go to the family opened last.
#[derive(Default)]
struct Out(Vec<Family>);

impl Out {
    fn push(&mut self, name: &str, labels: &[(&'static str, &str)], value: Value) {
        let point = Point { labels: labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(), value };
        match self.0.last_mut() {
            Some(f) if f.name == name => f.points.push(point),
            // Every series follows its header; one without would be a bug, still shown (as a gauge).
            _ => self.0.push(Family { name: name.to_string(), help: String::new(), kind: Kind::Gauge, points: vec![point] }),
        }
    }
}

/// The text format (0.0.4), classic histogram buckets limited to `classic`.
pub fn render(s: &Snapshot, classic: &ClassicBuckets) -> String {
    text(&families(s), classic)
}

/// Every metric family of a snapshot, in exposition order.
pub fn families(s: &Snapshot) -> Vec<Family> {
    let mut out = Out::default();
    let out = &mut out;
    let host = &s.host;

    header(out, "azflow_tcp_bytes_total", "counter", "TCP bytes on the wire (IP and TCP headers included, segments counted as sent), by destination zone and traffic class.");
    for (k, c) in &s.flows {
        series(out, "azflow_tcp_bytes_total", &flow_labels(host, k), c.bytes);
    }
    header(out, "azflow_tcp_packets_total", "counter", "TCP packets on the wire, by destination zone and traffic class.");
    for (k, c) in &s.flows {
        series(out, "azflow_tcp_packets_total", &flow_labels(host, k), c.packets);
    }

    // Cost from the same counters as the bytes above, each direction at its own price.
    header(out, "azflow_cost_usd_total", "counter", "USD AWS bills for these bytes, by billing path (bytes × the price table's USD per GB, each direction).");
    for (k, c) in &s.flows {
        let cost = k.billing.price.cost_usd(k.direction as usize, c.bytes);
        out.push("azflow_cost_usd_total", &flow_labels(host, k), Value::Float(cost));
    }

    header(out, "azflow_tcp_dst_subnet_bytes_total", "counter", "TCP bytes by destination subnet (opt-in with --dst-subnet-series; subnets beyond the cap are summed as dst_subnet=\"other\").");
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
        series(out, "azflow_tcp_dst_subnet_bytes_total", &labels, c.bytes);
    }
    latency(out, s);
    workloads(out, s);

    header(out, "azflow_unmapped_tcp_bytes_total", "counter", "TCP bytes to the busiest destinations in no known subnet, by /24 (IPv4) or /48 (IPv6).");
    for row in &s.unmapped_top {
        for dir in agent_common::Direction::ALL {
            let labels = [("prefix", row.prefix.as_str()), ("direction", dir.as_str())];
            series(out, "azflow_unmapped_tcp_bytes_total", &labels, row.bytes[dir as usize]);
        }
    }
    gauge(out, "azflow_unmapped_prefixes", "Distinct unmapped destination prefixes the kernel remembers now.", s.unmapped_tracked);
    header(out, "azflow_unmapped_prefixes_evicted_total", "counter", "Unmapped prefixes pushed out of the kernel's bounded list (their bytes stay in the per-class totals).");
    series(out, "azflow_unmapped_prefixes_evicted_total", &[], s.unmapped_evicted);

    for n in crate::export::nat_metrics::series(&s.nat) {
        let (full, kind) = match n.kind {
            crate::export::nat_metrics::Kind::Counter => (format!("azflow_nat_{}_total", n.name), "counter"),
            crate::export::nat_metrics::Kind::Gauge => (format!("azflow_nat_{}", n.name), "gauge"),
        };
        header(out, &full, kind, n.help);
        for (label, v) in n.points {
            series(out, &full, label.as_slice(), v);
        }
    }

    header(out, "azflow_kernel_errors_total", "counter", "Kernel-side failures and events, by kind.");
    for (kind, n) in &s.kernel_errors {
        series(out, "azflow_kernel_errors_total", &[("kind", kind.as_str())], *n);
    }
    header(out, "azflow_drains_total", "counter", "Kernel map drains completed.");
    series(out, "azflow_drains_total", &[], s.drains);
    header(out, "azflow_drain_failures_total", "counter", "Kernel map drains that failed (the previous snapshot stays published).");
    series(out, "azflow_drain_failures_total", &[], s.drain_failures);
    if let Some(t) = s.taken_at {
        // Counters move once per drain: a rate over scrapes that do not line up with drains
        // (azflow top) divides by this clock, not the scraper's.
        header(out, "azflow_last_drain_timestamp_seconds", "gauge", "When the drain behind these figures read the kernel (Unix time).");
        out.push("azflow_last_drain_timestamp_seconds", &[], Value::Float(unix(t)));
    }
    header(out, "azflow_drain_duration_seconds", "gauge", "Duration of the last drain.");
    out.push("azflow_drain_duration_seconds", &[], Value::Float(s.last_drain.as_secs_f64()));
    gauge(out, "azflow_topology_subnets", "Subnets in the kernel table.", s.subnets);
    gauge(out, "azflow_topology_generation", "Generation of the kernel subnet table.", u64::from(s.topology_generation));
    if let Some(t) = s.topology_loaded_at {
        header(out, "azflow_topology_last_load_timestamp_seconds", "gauge", "When the current topology was loaded (Unix time).");
        out.push("azflow_topology_last_load_timestamp_seconds", &[], Value::Float(unix(t)));
    }
    // The same figures OTLP sends as azflow.agent.topology_age and .map_overflows{map="dst_subnet_series"}.
    if let Some(age) = crate::export::otlp::instruments::topology_age(s) {
        header(out, "azflow_topology_age_seconds", "gauge", "Age of the current topology when the snapshot was taken.");
        out.push("azflow_topology_age_seconds", &[], Value::Float(age));
    }
    header(out, "azflow_subnet_series_overflow", "gauge", "dst.subnet series folded into dst.subnet=\"other\" by --otlp-dst-subnet-series.");
    series(out, "azflow_subnet_series_overflow", &[], s.subnet_series_overflow);
    let mut last_name = "";
    for (name, kind, v) in &s.agent_counters {
        let full = format!("azflow_{name}_total");
        if *name != last_name {
            header(out, &full, "counter", "Agent self-metric, by kind.");
            last_name = name;
        }
        series(out, &full, &[("kind", kind)], *v);
    }
    for (name, v) in &s.agent_gauges {
        let full = format!("azflow_{name}");
        header(out, &full, "gauge", "Agent self-metric.");
        out.push(&full, &[], Value::Float(*v));
    }
    header(out, "azflow_build_info", "gauge", "Agent version and this host's zone.");
    series(
        out,
        "azflow_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("region", &host.region), ("zone", &host.zone), ("zone_id", &host.zone_id)],
        1,
    );
    std::mem::take(&mut out.0)
}

/// RTT and connect-time histograms (the kernel's, whole), and the TCP event counters, per
/// destination zone.
fn latency(out: &mut Out, s: &Snapshot) {
    use agent_common::hist::TcpEvent;
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
            out.push(name, &zone_labels(host, k), Value::Histogram(h.clone()));
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

/// Per-workload bytes and RTT, and the workload self-metrics (see `export::workload_metrics`).
fn workloads(out: &mut Out, s: &Snapshot) {
    use crate::export::workload_metrics::{Kind, flow_labels, row_labels, stats_series};
    if !s.workload_stats.enabled {
        return;
    }
    header(out, "azflow_workload_tcp_bytes_total", "counter", "TCP bytes on the wire by local workload, direction and destination zone (the same bytes as azflow_tcp_bytes_total; workloads beyond the cap are summed as workload=\"other\").");
    for (k, c) in &s.workload_flows {
        let labels: Vec<(&str, &str)> = flow_labels(&s.host, k).into_iter().map(|(p, _, v)| (p, v)).collect();
        series(out, "azflow_workload_tcp_bytes_total", &labels, c.bytes);
    }
    header(out, "azflow_workload_tcp_rtt_seconds", "histogram", "TCP round-trip time samples by local workload and destination zone (the same samples as azflow_tcp_rtt_seconds, and the smoothed RTT of connections older than the agent; cross-AZ destinations unless --workload-rtt all; workloads beyond the cap are summed as workload=\"other\"). Native: schema 1.");
    for (k, h) in &s.workload_rtt {
        let labels: Vec<(&str, &str)> = row_labels(&s.host, &k.workload, &k.dst).into_iter().map(|(p, _, v)| (p, v)).collect();
        out.push("azflow_workload_tcp_rtt_seconds", &labels, Value::Histogram(h.clone()));
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

fn header(out: &mut Out, name: &str, kind: &str, help: &str) {
    let kind = match kind {
        "counter" => Kind::Counter,
        "histogram" => Kind::Histogram,
        _ => Kind::Gauge,
    };
    out.0.push(Family { name: name.to_string(), help: help.to_string(), kind, points: Vec::new() });
}

fn gauge(out: &mut Out, name: &str, help: &str, v: u64) {
    header(out, name, "gauge", help);
    series(out, name, &[], v);
}

fn series(out: &mut Out, name: &str, labels: &[(&'static str, &str)], v: u64) {
    out.push(name, labels, Value::Int(v));
}

/// The text format of `families`: a histogram's classic buckets are `classic`, snapped to kernel
/// boundaries, so each `le` count is exact; the last kernel bucket (it also holds every longer
/// sample) is only in `+Inf`.
pub fn text(families: &[Family], classic: &ClassicBuckets) -> String {
    let mut out = String::with_capacity(4096 + families.iter().map(|f| f.points.len() * 256).sum::<usize>());
    for f in families {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}", f.name, f.help, f.name, f.kind.as_str());
        for p in &f.points {
            let labels: Vec<(&str, &str)> = p.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match &p.value {
                Value::Int(v) => sample(&mut out, &f.name, "", &labels, *v),
                Value::Float(v) => sample(&mut out, &f.name, "", &labels, *v),
                Value::Histogram(h) => {
                    for (le, n) in classic.cumulative(h) {
                        let le = if le.is_infinite() { "+Inf".to_string() } else { format!("{le}") };
                        let mut with_le = labels.clone();
                        with_le.push(("le", &le));
                        sample(&mut out, &f.name, "_bucket", &with_le, n);
                    }
                    sample(&mut out, &f.name, "_sum", &labels, h.sum_us as f64 / 1e6);
                    sample(&mut out, &f.name, "_count", &labels, h.count());
                }
            }
        }
    }
    out
}

fn sample(out: &mut String, name: &str, suffix: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
    out.push_str(name);
    out.push_str(suffix);
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
        let text = render(&s, &ClassicBuckets::default());
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
        let text = render(&s, &ClassicBuckets::default());
        assert!(text.contains(r#"azflow_workload_tcp_bytes_total{workload="cart",workload_kind="pod",namespace="shop",direction="transmit",src_zone="us-east-1a",dst_zone="us-east-1b",src_zone_id="use1-az1",dst_zone_id="use1-az2",traffic_class="cross_az"} 4242"#), "{text}");
        assert!(text.contains(r#"azflow_workload_caps{cap="series"} 200"#), "{text}");
        assert!(text.contains("# TYPE azflow_workload_tcp_rtt_seconds histogram\n"), "{text}");
        assert!(text.contains(r#"azflow_workload_folded_total{reason="index_cap"} 3"#), "{text}");
        assert!(!render(&Snapshot::default(), &ClassicBuckets::default()).contains("azflow_workload_"), "nothing while attribution is off");
    }

    #[test]
    fn renders_workload_rtt_with_the_byte_series_labels_and_scale_1_buckets() {
        use agent_common::{hist, workload_rtt};

        use crate::snapshot::{WorkloadLabels, WorkloadRowKey, WorkloadStats, ZoneKey};
        let mut s = Snapshot {
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), ..HostLabels::default() },
            workload_stats: WorkloadStats { enabled: true, ..WorkloadStats::default() },
            ..Snapshot::default()
        };
        let shift = workload_rtt::SHIFT;
        let mut h = Histogram { buckets: vec![0; workload_rtt::BUCKETS as usize], sum_us: 0, shift };
        for us in [900u64, 1200, 1300, 3000] {
            h.buckets[hist::coarse_cell(hist::bucket(us), shift) as usize] += 1;
            h.sum_us += us;
        }
        let key = WorkloadRowKey {
            workload: WorkloadLabels { name: "cart".into(), kind: "pod".into(), namespace: "shop".into(), pod: None, container: None },
            dst: ZoneKey { dst_zone: "us-east-1b".into(), dst_zone_id: "use1-az2".into(), class: TrafficClass::CrossAz },
        };
        s.workload_rtt.insert(key, h);
        let text = render(&s, &ClassicBuckets::default());
        let labels = r#"workload="cart",workload_kind="pod",namespace="shop",src_zone="us-east-1a",dst_zone="us-east-1b",src_zone_id="use1-az1",dst_zone_id="use1-az2",traffic_class="cross_az""#;
        // Scale-1 boundaries: 976 µs (2^-10 s) and 1381 µs (2^-9.5 s), each exact.
        for (le, n) in [("0.000976", 1), ("0.001381", 3), ("0.002762", 3), ("0.005524", 4), ("+Inf", 4)] {
            let line = format!("azflow_workload_tcp_rtt_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains(&format!("azflow_workload_tcp_rtt_seconds_count{{{labels}}} 4\n")), "{text}");
        assert!(text.contains(&format!("azflow_workload_tcp_rtt_seconds_sum{{{labels}}} 0.0064\n")), "{text}");
        // Native: schema 1.
        let fams = families(&s);
        let bytes = crate::export::prometheus_proto::render(&fams, &ClassicBuckets::default());
        let mut buf = bytes.as_slice();
        let mut found = false;
        while !buf.is_empty() {
            let f = <crate::export::prometheus_proto::MetricFamily as prost::Message>::decode_length_delimited(&mut buf).expect("decodes");
            if f.name.as_deref() == Some("azflow_workload_tcp_rtt_seconds") {
                let h = f.metric[0].histogram.as_ref().expect("histogram");
                assert_eq!((h.schema, h.sample_count), (Some(1), Some(4)));
                found = true;
            }
        }
        assert!(found, "the workload RTT family goes out over protobuf");
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
        let text = render(&s, &ClassicBuckets::default());
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

    #[test]
    fn histograms_print_the_configured_classic_buckets_exactly() {
        use agent_common::hist;

        use crate::snapshot::{RowLatency, ZoneKey};
        let mut rtt = Histogram { buckets: vec![0; hist::BUCKETS as usize], sum_us: 0, shift: 0 };
        for us in [0u64, 100, 976, 977, 1500, 40_000_000] {
            rtt.buckets[hist::bucket(us) as usize] += 1;
            rtt.sum_us += us;
        }
        let key = ZoneKey { dst_zone: "b".into(), dst_zone_id: "b-id".into(), class: TrafficClass::CrossAz };
        let mut s = Snapshot::default();
        s.latency.insert(key, RowLatency { rtt, ..RowLatency::default() });
        let text = render(&s, &ClassicBuckets::parse("0.0001,0.001,0.002").expect("valid"));
        let bucket = |le: &str| {
            text.lines()
                .find(|l| l.starts_with("azflow_tcp_rtt_seconds_bucket{") && l.contains(&format!("le=\"{le}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("no le {le} in {text}"))
                .to_string()
        };
        // 0.0001 snaps to 102 µs, 0.001 to 976 µs (the kernel boundary nearest to 1 ms), 0.002 to 1953 µs.
        assert_eq!([bucket("0.000102"), bucket("0.000976"), bucket("0.001953"), bucket("+Inf")], ["2", "3", "5", "6"]);
        assert_eq!(text.lines().filter(|l| l.starts_with("azflow_tcp_rtt_seconds_bucket{")).count(), 4);
        let sum: f64 = text
            .lines()
            .find(|l| l.starts_with("azflow_tcp_rtt_seconds_sum{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sum in {text}"));
        assert!((sum - 40.003553).abs() < 1e-9, "{sum}");
        assert!(text.contains("_count{src_zone=\"\",dst_zone=\"b\",src_zone_id=\"\",dst_zone_id=\"b-id\",traffic_class=\"cross_az\"} 6\n"), "{text}");
    }
}
