//! The OTLP instruments. All are observable: their callbacks read the snapshot pinned for the
//! current collection ([`SnapshotCell`]) and nothing else — never a map, never I/O — so every
//! metric of one export comes from the same snapshot, and the same one Prometheus serves.
//!
//! | OTLP | Prometheus |
//! |---|---|
//! | `azflow.tcp.bytes` (By), `azflow.tcp.packets` | `azflow_tcp_bytes_total`, `azflow_tcp_packets_total` |
//! | `azflow.cross_az.bytes` (By; cross-AZ pairs only) | `azflow_tcp_bytes_total{traffic_class="cross_az"}` |
//! | `azflow.cost` ({USD}; attribute `azflow.billing.path`, `.hop_zone_id`) | `azflow_cost_usd_total{path, hop_zone_id}` |
//! | `azflow.tcp.retransmits` ({segment}), `azflow.tcp.rto` ({timeout}) | `azflow_tcp_retransmits_total`, `azflow_tcp_rto_total` |
//! | `azflow.tcp.rtt`, `azflow.tcp.connect.duration` (s; histograms, see [`super::histograms`]) | `azflow_tcp_rtt_seconds`, `azflow_tcp_connect_duration_seconds` |
//! | `azflow.agent.X` | `azflow_X` / `azflow_X_total` |

use std::{
    borrow::Cow,
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use agent_common::{Direction, KernelError, TrafficClass};
use opentelemetry::{
    KeyValue,
    metrics::{AsyncInstrument, Meter},
};

use crate::snapshot::{DstSubnet, FlowKey, Snapshot, ZoneKey};

/// The snapshot the callbacks of the current collection read.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCell(Arc<RwLock<Arc<Snapshot>>>);

impl SnapshotCell {
    pub fn pin(&self, snap: Arc<Snapshot>) {
        if let Ok(mut g) = self.0.write() {
            *g = snap;
        }
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.0.read().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Registers every fixed instrument; [`Instruments::register_agent_counters`] adds the
/// self-metric counters as their names first appear.
pub struct Instruments {
    meter: Meter,
    cell: SnapshotCell,
    agent_names: Vec<&'static str>,
}

impl Instruments {
    pub fn register(meter: Meter, cell: SnapshotCell, dst_subnet: bool) -> Self {
        for (name, unit, description, packets) in [
            ("azflow.tcp.bytes", "By", "TCP bytes on the wire (IP and TCP headers included), by destination zone and traffic class.", false),
            ("azflow.tcp.packets", "{packet}", "TCP packets on the wire, by destination zone and traffic class.", true),
        ] {
            let cell = cell.clone();
            meter
                .u64_observable_counter(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |o| {
                    let s = cell.get();
                    let value = |c: &agent_common::Counter| if packets { c.packets } else { c.bytes };
                    if dst_subnet {
                        for ((k, sub), c) in &s.subnet_flows {
                            let mut attrs = flow_attributes(&s, k);
                            match sub {
                                DstSubnet::None => {}
                                DstSubnet::Cidr(net) => attrs.push(KeyValue::new("dst.subnet", net.to_string())),
                                DstSubnet::Overflow => attrs.push(KeyValue::new("dst.subnet", DstSubnet::OVERFLOW_LABEL)),
                            }
                            o.observe(value(c), &attrs);
                        }
                    } else {
                        for (k, c) in &s.flows {
                            o.observe(value(c), &flow_attributes(&s, k));
                        }
                    }
                })
                .build();
        }

        let c = cell.clone();
        meter
            .u64_observable_counter("azflow.cross_az.bytes")
            .with_unit("By")
            .with_description("TCP bytes between this host's zone and another zone of the region (cross-AZ pairs only).")
            .with_callback(move |o| {
                let s = c.get();
                // One series per (direction, zone pair), summed over whatever else tells flows apart.
                let mut pairs: BTreeMap<(Direction, &str, &str), u64> = BTreeMap::new();
                for (k, v) in s.flows.iter().filter(|(k, _)| k.class == TrafficClass::CrossAz) {
                    let e = pairs.entry((k.direction, k.dst_zone.as_str(), k.dst_zone_id.as_str())).or_default();
                    *e = e.saturating_add(v.bytes);
                }
                for ((dir, zone, zone_id), v) in pairs {
                    o.observe(
                        v,
                        &[
                            KeyValue::new("network.io.direction", dir.as_str()),
                            KeyValue::new("src.zone", s.host.zone.clone()),
                            KeyValue::new("dst.zone", zone.to_string()),
                            KeyValue::new("src.zone_id", s.host.zone_id.clone()),
                            KeyValue::new("dst.zone_id", zone_id.to_string()),
                        ],
                    );
                }
            })
            .build();

        // Priced from the same snapshot's counters as azflow.tcp.bytes, each direction at its own price.
        let c = cell.clone();
        meter
            .f64_observable_counter("azflow.cost")
            .with_unit("{USD}")
            .with_description("USD AWS bills for these bytes, by billing path (bytes × the price table's USD per GB, each direction).")
            .with_callback(move |o| {
                let s = c.get();
                for (k, v) in &s.flows {
                    o.observe(k.billing.price.cost_usd(k.direction as usize, v.bytes), &flow_attributes(&s, k));
                }
            })
            .build();

        let mut this = Self { meter, cell, agent_names: Vec::new() };
        this.register_tcp_events();
        this.register_self_metrics();
        this.register_nat();
        this.register_workloads();
        this
    }

    /// Per-workload bytes and the workload self-metrics, from `export::workload_metrics`.
    fn register_workloads(&self) {
        use crate::export::workload_metrics::{self, Kind};
        self.counter("azflow.workload.tcp.bytes", "By", "TCP bytes on the wire by local workload, direction and destination zone (workloads beyond the cap are summed as azflow.workload.name=other).", |s, o| {
            for (k, c) in &s.workload_flows {
                let attrs: Vec<KeyValue> = workload_metrics::flow_labels(&s.host, k).into_iter().map(|(_, a, v)| KeyValue::new(a, v.to_string())).collect();
                o.observe(c.bytes, &attrs);
            }
        });
        let probe = crate::snapshot::WorkloadStats { enabled: true, ..Default::default() };
        for (i, n) in workload_metrics::stats_series(&probe).into_iter().enumerate() {
            let name = format!("azflow.workload.{}", n.name);
            let pick = move |s: &Snapshot, o: &dyn AsyncInstrument<u64>| {
                if let Some(series) = workload_metrics::stats_series(&s.workload_stats).into_iter().nth(i) {
                    for (label, v) in series.points {
                        let attrs: Vec<KeyValue> = label.map(|(k, val)| KeyValue::new(k, val)).into_iter().collect();
                        o.observe(v, &attrs);
                    }
                }
            };
            match n.kind {
                Kind::Counter => self.counter(name, n.unit, n.help, pick),
                Kind::Gauge => self.gauge_u64(name, n.unit, n.help, pick),
            }
        }
    }

    fn counter(&self, name: impl Into<Cow<'static, str>>, unit: &'static str, description: &'static str, f: impl Fn(&Snapshot, &dyn AsyncInstrument<u64>) + Send + Sync + 'static) {
        let cell = self.cell.clone();
        self.meter
            .u64_observable_counter(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| f(&cell.get(), o))
            .build();
    }

    fn gauge(&self, name: &'static str, unit: &'static str, description: &'static str, f: impl Fn(&Snapshot) -> Option<f64> + Send + Sync + 'static) {
        let cell = self.cell.clone();
        self.meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                if let Some(v) = f(&cell.get()) {
                    o.observe(v, &[]);
                }
            })
            .build();
    }

    fn gauge_u64(&self, name: impl Into<Cow<'static, str>>, unit: &'static str, description: &'static str, f: impl Fn(&Snapshot, &dyn AsyncInstrument<u64>) + Send + Sync + 'static) {
        let cell = self.cell.clone();
        self.meter
            .u64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| f(&cell.get(), o))
            .build();
    }

    /// TCP events per destination zone, counted by the kernel beside the latency histograms.
    fn register_tcp_events(&self) {
        use agent_common::hist::TcpEvent;
        for (event, name, unit, description) in [
            (TcpEvent::RetransmitSegments, "azflow.tcp.retransmits", "{segment}", "TCP segments retransmitted, by destination zone."),
            (TcpEvent::Rto, "azflow.tcp.rto", "{timeout}", "TCP retransmission timeouts, by destination zone."),
        ] {
            self.counter(name, unit, description, move |s, o| {
                for (k, row) in &s.latency {
                    o.observe(row.events[event as usize], &zone_attributes(s, k));
                }
            });
        }
    }

    /// The NAT series (`azflow.nat.*`), the same list Prometheus renders.
    fn register_nat(&self) {
        use crate::export::nat_metrics::{self, Kind};
        // Instruments are registered once; a snapshot without NAT observes nothing.
        let probe = crate::nat::NatSnapshot { enabled: true, ..Default::default() };
        for (i, n) in nat_metrics::series(&probe).into_iter().enumerate() {
            let name = format!("azflow.nat.{}", n.name);
            let pick = move |s: &Snapshot, o: &dyn AsyncInstrument<u64>| {
                if let Some(series) = nat_metrics::series(&s.nat).into_iter().nth(i) {
                    for (label, v) in series.points {
                        let attrs: Vec<KeyValue> = label.map(|(k, val)| KeyValue::new(k, val)).into_iter().collect();
                        o.observe(v, &attrs);
                    }
                }
            };
            match n.kind {
                Kind::Counter => self.counter(name, n.unit, n.help, pick),
                Kind::Gauge => self.gauge_u64(name, n.unit, n.help, pick),
            }
        }
    }

    fn register_self_metrics(&mut self) {
        self.counter("azflow.agent.drains", "{drain}", "Kernel map drains completed.", |s, o| o.observe(s.drains, &[]));
        self.counter("azflow.agent.drain_failures", "{drain}", "Kernel map drains that failed (the previous snapshot stays published).", |s, o| {
            o.observe(s.drain_failures, &[]);
        });
        self.gauge("azflow.agent.drain_duration", "s", "Duration of the last drain.", |s| Some(s.last_drain.as_secs_f64()));
        self.counter("azflow.agent.kernel_errors", "{event}", "Kernel-side failures and events, by kind.", |s, o| {
            for (kind, n) in &s.kernel_errors {
                o.observe(*n, &[KeyValue::new("kind", kind.as_str())]);
            }
        });
        self.counter(
            "azflow.agent.map_overflows",
            "{event}",
            "Bounded tables that were full: kernel counter slots, the unmapped-prefix LRU (refused, evicted), dst.subnet series.",
            |s, o| {
                let kernel = |k: KernelError| s.kernel_errors.iter().find(|(e, _)| *e == k).map_or(0, |(_, n)| *n);
                o.observe(kernel(KernelError::CounterIndex), &[KeyValue::new("map", "counter_slots")]);
                o.observe(kernel(KernelError::UnmappedInsert), &[KeyValue::new("map", "unmapped_refused")]);
                o.observe(s.unmapped_evicted, &[KeyValue::new("map", "unmapped_evicted")]);
                o.observe(s.subnet_series_overflow, &[KeyValue::new("map", "dst_subnet_series")]);
            },
        );
        self.gauge("azflow.agent.unmapped_prefixes", "{prefix}", "Distinct unmapped destination prefixes the kernel remembers now.", |s| {
            Some(s.unmapped_tracked as f64)
        });
        self.counter(
            "azflow.agent.unmapped_prefixes_evicted",
            "{prefix}",
            "Unmapped prefixes pushed out of the kernel's bounded list (their bytes stay in the per-class totals).",
            |s, o| o.observe(s.unmapped_evicted, &[]),
        );
        self.counter(
            "azflow.agent.unmapped_tcp_bytes",
            "By",
            "TCP bytes to the busiest destinations in no known subnet, by /24 (IPv4) or /48 (IPv6).",
            |s, o| {
                for row in &s.unmapped_top {
                    for dir in Direction::ALL {
                        let attrs = [KeyValue::new("prefix", row.prefix.clone()), KeyValue::new("network.io.direction", dir.as_str())];
                        o.observe(row.bytes[dir as usize], &attrs);
                    }
                }
            },
        );
        self.gauge("azflow.agent.topology_subnets", "{subnet}", "Subnets in the kernel table.", |s| Some(s.subnets as f64));
        self.gauge("azflow.agent.topology_generation", "1", "Generation of the kernel subnet table.", |s| {
            Some(f64::from(s.topology_generation))
        });
        self.gauge("azflow.agent.topology_age", "s", "Age of the current topology when the snapshot was taken.", topology_age);
    }

    /// Registers a counter for each self-metric name not seen before (`azflow.agent.<name>`,
    /// attribute `kind`). Names are static strings of the agent's code, so this stays bounded.
    pub fn register_agent_counters(&mut self, snap: &Snapshot) {
        for (name, _, _) in &snap.agent_counters {
            if self.agent_names.contains(name) {
                continue;
            }
            self.agent_names.push(name);
            let name = *name;
            self.counter(format!("azflow.agent.{name}"), "1", "Agent self-metric, by kind.", move |s, o| {
                for (n, kind, v) in &s.agent_counters {
                    if *n == name {
                        o.observe(*v, &[KeyValue::new("kind", kind.clone())]);
                    }
                }
            });
        }
    }
}

/// Attributes of a latency row (histograms and TCP events): the flow attributes but the direction.
pub fn zone_attributes(s: &Snapshot, k: &ZoneKey) -> Vec<KeyValue> {
    vec![
        KeyValue::new("src.zone", s.host.zone.clone()),
        KeyValue::new("dst.zone", k.dst_zone.clone()),
        KeyValue::new("src.zone_id", s.host.zone_id.clone()),
        KeyValue::new("dst.zone_id", k.dst_zone_id.clone()),
        KeyValue::new("azflow.traffic.class", k.class.as_str()),
    ]
}

pub fn flow_attributes(s: &Snapshot, k: &FlowKey) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(9);
    attrs.push(KeyValue::new("network.io.direction", k.direction.as_str()));
    attrs.push(KeyValue::new("src.zone", s.host.zone.clone()));
    attrs.push(KeyValue::new("dst.zone", k.dst_zone.clone()));
    attrs.push(KeyValue::new("src.zone_id", s.host.zone_id.clone()));
    attrs.push(KeyValue::new("dst.zone_id", k.dst_zone_id.clone()));
    attrs.push(KeyValue::new("azflow.traffic.class", k.class.as_str()));
    attrs.push(KeyValue::new("azflow.billing.path", k.billing.path.as_str()));
    if let Some(hop) = &k.billing.hop_zone_id {
        attrs.push(KeyValue::new("azflow.billing.hop_zone_id", hop.clone()));
    }
    attrs
}

/// Topology age at the snapshot's own time, so OTLP and Prometheus agree on it.
pub fn topology_age(s: &Snapshot) -> Option<f64> {
    let (taken, loaded) = (s.taken_at?, s.topology_loaded_at?);
    Some(taken.duration_since(loaded).unwrap_or_default().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::SystemTime};

    use agent_common::Counter;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_proto::tonic::{
        collector::metrics::v1::ExportMetricsServiceRequest,
        common::v1::any_value::Value,
        metrics::v1::{metric::Data, number_data_point},
    };
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, data::ResourceMetrics, reader::MetricReader};

    use super::*;
    use crate::snapshot::HostLabels;


    /// (metric, unit, attributes, value) of every number point.
    type Point = (String, String, BTreeMap<String, String>, f64);

    fn collect(snap: Snapshot, dst_subnet: bool) -> Vec<Point> {
        let reader = crate::export::otlp::test_reader::Reader(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let cell = SnapshotCell::default();
        let mut inst = Instruments::register(provider.meter("test"), cell.clone(), dst_subnet);
        inst.register_agent_counters(&snap);
        cell.pin(Arc::new(snap));
        let mut rm = ResourceMetrics::default();
        reader.collect(&mut rm).expect("collects");
        points(&rm)
    }

    fn points(rm: &ResourceMetrics) -> Vec<Point> {
        let req = ExportMetricsServiceRequest::from(rm);
        let mut out = Vec::new();
        for m in req.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
            let points = match &m.data {
                Some(Data::Sum(s)) => &s.data_points,
                Some(Data::Gauge(g)) => &g.data_points,
                other => panic!("unexpected data {other:?}"),
            };
            for p in points {
                let attrs = p
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => s.clone(),
                            other => format!("{other:?}"),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                let v = match p.value {
                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                    Some(number_data_point::Value::AsDouble(d)) => d,
                    None => f64::NAN,
                };
                out.push((m.name.clone(), m.unit.clone(), attrs, v));
            }
        }
        out
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), region: "us-east-1".into(), ..HostLabels::default() },
            drains: 7,
            kernel_errors: vec![(KernelError::CounterIndex, 2), (KernelError::UnmappedInsert, 0)],
            agent_counters: vec![("export_failures", "timeout".into(), 3)],
            taken_at: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100)),
            topology_loaded_at: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(40)),
            ..Snapshot::default()
        };
        let key = |dir, zone: &str, id: &str, class| FlowKey { direction: dir, dst_zone: zone.into(), dst_zone_id: id.into(), class, billing: Default::default() };
        let b = key(Direction::Transmit, "us-east-1b", "use1-az2", TrafficClass::CrossAz);
        let a = key(Direction::Receive, "us-east-1a", "use1-az1", TrafficClass::SameAz);
        let i = key(Direction::Transmit, "internet", "internet", TrafficClass::Internet);
        s.flows.insert(b.clone(), Counter { bytes: 5000, packets: 5 });
        s.flows.insert(a.clone(), Counter { bytes: 300, packets: 3 });
        s.flows.insert(i.clone(), Counter { bytes: 70, packets: 1 });
        let net = |n: &str| DstSubnet::Cidr(n.parse().expect("cidr"));
        s.subnet_flows.insert((b.clone(), net("10.0.2.0/24")), Counter { bytes: 4000, packets: 4 });
        s.subnet_flows.insert((b, DstSubnet::Overflow), Counter { bytes: 1000, packets: 1 });
        s.subnet_flows.insert((a, net("10.0.1.0/24")), Counter { bytes: 300, packets: 3 });
        s.subnet_flows.insert((i, DstSubnet::None), Counter { bytes: 70, packets: 1 });
        s.subnet_series_overflow = 1;
        s
    }

    fn sum(points: &[Point], name: &str, want: &[(&str, &str)]) -> f64 {
        points
            .iter()
            .filter(|(n, _, a, _)| n == name && want.iter().all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v)))
            .map(|p| p.3)
            .sum()
    }

    #[test]
    fn flows_carry_the_six_attributes_and_the_snapshot_values() {
        let points = collect(snapshot(), false);
        let bytes: Vec<&Point> = points.iter().filter(|p| p.0 == "azflow.tcp.bytes").collect();
        assert_eq!(bytes.len(), 3);
        for p in &bytes {
            assert_eq!(p.1, "By");
            let keys: Vec<&str> = p.2.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                ["azflow.billing.path", "azflow.traffic.class", "dst.zone", "dst.zone_id", "network.io.direction", "src.zone", "src.zone_id"]
            );
            assert_eq!(p.2["src.zone_id"], "use1-az1");
        }
        let cross = [("azflow.traffic.class", "cross_az"), ("network.io.direction", "transmit"), ("dst.zone_id", "use1-az2")];
        assert_eq!(sum(&points, "azflow.tcp.bytes", &cross), 5000.0);
        assert_eq!(sum(&points, "azflow.tcp.packets", &cross), 5.0);
        // Only the cross-AZ pair, with no class attribute.
        let c: Vec<&Point> = points.iter().filter(|p| p.0 == "azflow.cross_az.bytes").collect();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].3, c[0].2.get("azflow.traffic.class")), (5000.0, None));
        assert_eq!(c[0].2["dst.zone_id"], "use1-az2");
        assert_eq!(sum(&points, "azflow.agent.export_failures", &[("kind", "timeout")]), 3.0);
        assert_eq!(sum(&points, "azflow.agent.drains", &[]), 7.0);
        assert_eq!(sum(&points, "azflow.agent.kernel_errors", &[("kind", "counter_index")]), 2.0);
        assert_eq!(sum(&points, "azflow.agent.map_overflows", &[("map", "counter_slots")]), 2.0);
        assert_eq!(sum(&points, "azflow.agent.map_overflows", &[("map", "dst_subnet_series")]), 1.0);
        assert_eq!(sum(&points, "azflow.agent.topology_age", &[]), 60.0);
        assert!(points.iter().all(|p| !p.2.contains_key("dst.subnet")));
    }

    #[test]
    fn workload_bytes_carry_the_workload_attributes_and_pod_names_only_when_present() {
        use crate::snapshot::{WorkloadFlowKey, WorkloadLabels, WorkloadStats};
        let mut snap = snapshot();
        snap.workload_stats = WorkloadStats { enabled: true, series_cap: 200, ..WorkloadStats::default() };
        let dst = ZoneKey { dst_zone: "us-east-1b".into(), dst_zone_id: "use1-az2".into(), class: TrafficClass::CrossAz };
        let cart = WorkloadLabels { name: "cart".into(), kind: "pod".into(), namespace: "shop".into(), pod: None, container: None };
        let pod = WorkloadLabels { pod: Some("cart-7d9f8b6c5d-x2k4q".into()), container: Some("app".into()), ..cart.clone() };
        snap.workload_flows.insert(WorkloadFlowKey { workload: cart, direction: Direction::Transmit, dst: dst.clone() }, Counter { bytes: 700, packets: 1 });
        snap.workload_flows.insert(WorkloadFlowKey { workload: pod, direction: Direction::Transmit, dst }, Counter { bytes: 50, packets: 1 });
        let points = collect(snap, false);
        let w: Vec<&Point> = points.iter().filter(|p| p.0 == "azflow.workload.tcp.bytes").collect();
        assert_eq!(w.len(), 2);
        let plain = w.iter().find(|p| !p.2.contains_key("k8s.pod.name")).expect("a series without pod names");
        assert_eq!(plain.2["azflow.workload.name"], "cart");
        assert_eq!(plain.2["azflow.workload.kind"], "pod");
        assert_eq!(plain.2["k8s.namespace.name"], "shop");
        assert_eq!(plain.2["azflow.traffic.class"], "cross_az");
        let named = w.iter().find(|p| p.2.contains_key("k8s.pod.name")).expect("a series with pod names");
        assert_eq!((named.2["k8s.pod.name"].as_str(), named.2["container.name"].as_str()), ("cart-7d9f8b6c5d-x2k4q", "app"));
        assert!(points.iter().any(|p| p.0 == "azflow.workload.caps"), "self-metrics");
    }

    #[test]
    fn cost_is_priced_from_the_same_snapshot_in_usd() {
        use crate::topology::{Billing, BillingPath, paths::{Hop, PathPrice}};
        let mut snap = snapshot();
        let billing = Billing {
            path: BillingPath::NatGateway(Hop::CrossAz),
            hop_zone_id: Some("use1-az2".into()),
            price: PathPrice { nano_usd_per_gb: [145_000_000, 55_000_000], bytes_per_gb: 1_000_000_000 },
        };
        for (direction, bytes) in [(Direction::Transmit, 3_000_000_000u64), (Direction::Receive, 1_000_000_000)] {
            let k = FlowKey { direction, dst_zone: "internet".into(), dst_zone_id: "internet".into(), class: TrafficClass::Internet, billing: billing.clone() };
            snap.flows.insert(k, Counter { bytes, packets: 1 });
        }
        let points = collect(snap, false);
        let cost: Vec<&Point> = points.iter().filter(|p| p.0 == "azflow.cost").collect();
        // The three unpriced flows of the sample plus the two NAT ones.
        assert_eq!(cost.len(), 5);
        assert!(cost.iter().all(|p| p.1 == "{USD}"));
        let nat = [("azflow.billing.path", "nat_gateway_cross_az"), ("azflow.billing.hop_zone_id", "use1-az2")];
        let tx = [nat[0], nat[1], ("network.io.direction", "transmit")];
        let rx = [nat[0], nat[1], ("network.io.direction", "receive")];
        assert_eq!(sum(&points, "azflow.cost", &tx), 0.435);
        assert_eq!(sum(&points, "azflow.cost", &rx), 0.055);
        assert_eq!(sum(&points, "azflow.tcp.bytes", &tx), 3e9);
        assert_eq!(sum(&points, "azflow.cost", &[("azflow.billing.path", "unknown")]), 0.0);
    }

    #[test]
    fn delta_temporality_sends_the_growth_since_the_last_export() {
        let reader = crate::export::otlp::test_reader::Reader(Arc::new(
            ManualReader::builder().with_temporality(opentelemetry_sdk::metrics::Temporality::Delta).build(),
        ));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let cell = SnapshotCell::default();
        let _inst = Instruments::register(provider.meter("test"), cell.clone(), false);
        let mut rm = ResourceMetrics::default();
        let mut snap = snapshot();
        cell.pin(Arc::new(snap.clone()));
        reader.collect(&mut rm).expect("collects");
        let cross = [("azflow.traffic.class", "cross_az")];
        assert_eq!(sum(&points(&rm), "azflow.tcp.bytes", &cross), 5000.0);
        for c in snap.flows.values_mut() {
            c.bytes += 100;
        }
        cell.pin(Arc::new(snap));
        reader.collect(&mut rm).expect("collects");
        assert_eq!(sum(&points(&rm), "azflow.tcp.bytes", &cross), 100.0);
        assert_eq!(sum(&points(&rm), "azflow.cross_az.bytes", &[]), 100.0);
    }

    #[test]
    fn tcp_events_per_zone() {
        use agent_common::hist::TcpEvent;
        let mut snap = snapshot();
        let mut events = [0u64; TcpEvent::COUNT as usize];
        events[TcpEvent::RetransmitSegments as usize] = 12;
        events[TcpEvent::Rto as usize] = 2;
        events[TcpEvent::RttSamples as usize] = 900;
        let b = ZoneKey { dst_zone: "us-east-1b".into(), dst_zone_id: "use1-az2".into(), class: TrafficClass::CrossAz };
        snap.latency.insert(b, crate::snapshot::RowLatency { events, ..Default::default() });
        let points = collect(snap, false);
        let retransmits: Vec<&Point> = points.iter().filter(|p| p.0 == "azflow.tcp.retransmits").collect();
        assert_eq!(retransmits.len(), 1);
        assert_eq!((retransmits[0].1.as_str(), retransmits[0].3), ("{segment}", 12.0));
        assert_eq!(
            retransmits[0].2.keys().map(String::as_str).collect::<Vec<_>>(),
            ["azflow.traffic.class", "dst.zone", "dst.zone_id", "src.zone", "src.zone_id"]
        );
        assert_eq!(retransmits[0].2["dst.zone_id"], "use1-az2");
        assert_eq!(sum(&points, "azflow.tcp.rto", &[("dst.zone", "us-east-1b"), ("src.zone_id", "use1-az1")]), 2.0);
        assert!(points.iter().any(|p| p.0 == "azflow.tcp.rto" && p.1 == "{timeout}"));
    }

    #[test]
    fn dst_subnet_splits_the_same_totals() {
        let points = collect(snapshot(), true);
        assert_eq!(sum(&points, "azflow.tcp.bytes", &[]), 5370.0);
        assert_eq!(sum(&points, "azflow.tcp.bytes", &[("dst.subnet", "10.0.2.0/24")]), 4000.0);
        assert_eq!(sum(&points, "azflow.tcp.bytes", &[("dst.subnet", "other")]), 1000.0);
        assert_eq!(sum(&points, "azflow.tcp.packets", &[("dst.subnet", "10.0.1.0/24")]), 3.0);
        // Catch-alls have no subnet to name.
        let internet = points.iter().find(|p| p.0 == "azflow.tcp.bytes" && p.2["dst.zone"] == "internet").expect("internet");
        assert_eq!((internet.3, internet.2.get("dst.subnet")), (70.0, None));
    }
}
