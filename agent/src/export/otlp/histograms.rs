//! `azflow.tcp.rtt`, `azflow.tcp.srtt`, `azflow.tcp.connect.duration` and
//! `azflow.workload.tcp.rtt`: the kernel's histograms, sent as they are.
//!
//! The SDK cannot carry them: its data types cannot be built outside it (`pub(crate)` in 0.33),
//! and its histogram instrument aggregates measurements anew. So every export cycle also builds
//! an OTLP request of its own from the same pinned snapshot — the SDK path's resource and scope,
//! converted from the very objects the meter provider uses — and the pipeline sends it right
//! after the SDK's request over the same connection ([`super::transport::RequestSender`]).
//!
//! Buckets, one for one (`--otlp-histograms`):
//! - **exponential** (default): the kernel's buckets *are* base-2 exponential buckets at scale 3
//!   of the sample in seconds (see `agent_common::hist`): cell 0 is `zero_count`, and cell
//!   `c ≥ 1` is positive index `hist::index(c)`, upper-inclusive as OTLP defines. Only the range
//!   from the first to the last non-empty bucket is sent, so a point carries a few dozen counts.
//!   The workload RTT histograms are the same at scale 1 (`agent_common::workload_rtt`).
//! - **explicit**: every kernel boundary as an explicit bound. Kernel cell `c` holds the
//!   whole-microsecond samples in `(lower_us(c), upper_us(c)]`; OTLP explicit bounds are
//!   inclusive upper bounds too, so `bounds[c] = upper_us(c) µs` for every cell but the last,
//!   which also holds every longer sample and is OTLP's overflow bucket: N cells, N − 1 bounds,
//!   N counts.
//!
//! Sum and count are the kernel's.
//!
//! Temporality follows `--otlp-temporality`. Delta points are the growth since the previous
//! request was built (built every cycle, sent or not — as the SDK's delta counters are), so a
//! failed export loses that interval's samples, as documented for delta.

use std::{collections::HashMap, time::SystemTime};

use agent_common::hist;
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Histogram as OtlpHistogram,
        HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, exponential_histogram_data_point::Buckets,
        metric::Data,
    },
    resource::v1::Resource,
};

use super::{
    config::{HistogramKind, Temporality},
    instruments::zone_attributes,
};
use crate::export::{exponential::Exponential, workload_metrics};
use crate::snapshot::{Histogram, RowLatency, Snapshot, WorkloadRowKey, ZoneKey};

/// The histogram metrics: three per latency row, one per (workload, row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    Rtt,
    /// Smoothed RTTs of connections that predate the agent: a separate series, as a smoothed
    /// value is not a per-ack sample.
    Srtt,
    Connect,
    /// RTT per local workload and destination row (`Snapshot::workload_rtt`).
    WorkloadRtt,
}

impl Which {
    pub const ALL: [Which; 4] = [Which::Rtt, Which::Srtt, Which::Connect, Which::WorkloadRtt];

    pub fn name(self) -> &'static str {
        match self {
            Which::Rtt => "azflow.tcp.rtt",
            Which::Srtt => "azflow.tcp.srtt",
            Which::Connect => "azflow.tcp.connect.duration",
            Which::WorkloadRtt => "azflow.workload.tcp.rtt",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Which::Rtt => "TCP round-trip time samples (the kernel's own), by destination zone; the kernel's buckets.",
            Which::Srtt => "The kernel's smoothed RTT of connections opened before the agent started (read at most once per socket per sampling interval), by destination zone; the kernel's buckets.",
            Which::Connect => "Duration of active TCP opens (connect to established), by destination zone; the kernel's buckets.",
            Which::WorkloadRtt => "TCP round-trip time samples by local workload and destination zone (cross-AZ destinations by default; workloads beyond the cap are summed as azflow.workload.name=other); the kernel's buckets at scale 1.",
        }
    }

    /// Each series of this metric in `snap`: its key (for delta), attributes and histogram.
    fn series<'a>(self, snap: &'a Snapshot) -> Vec<(Series, Vec<KeyValue>, &'a Histogram)> {
        let of = |row: &'a RowLatency| match self {
            Which::Rtt | Which::WorkloadRtt => &row.rtt,
            Which::Srtt => &row.srtt,
            Which::Connect => &row.connect,
        };
        if self == Which::WorkloadRtt {
            return snap
                .workload_rtt
                .iter()
                .map(|(k, h)| {
                    let attributes = workload_metrics::row_labels(&snap.host, &k.workload, &k.dst)
                        .into_iter()
                        .map(|(_, name, v)| KeyValue::from(&opentelemetry::KeyValue::new(name, v.to_string())))
                        .collect();
                    (Series::Workload(k.clone()), attributes, h)
                })
                .collect();
        }
        snap.latency
            .iter()
            .map(|(k, row)| (Series::Row(k.clone()), zone_attributes(snap, k).iter().map(KeyValue::from).collect(), of(row)))
            .collect()
    }
}

/// Identity of one series, for delta temporality.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Series {
    Row(ZoneKey),
    Workload(WorkloadRowKey),
}

/// The OTLP bound that closes kernel cell `c`, in seconds: its largest whole microsecond.
pub fn bound_seconds(c: u32) -> f64 {
    hist::upper_us(c) as f64 / 1e6
}

/// The cells an explicit-bounds point carries, for a histogram `shift` steps coarser than the
/// kernel's (0: the kernel's): all but those below 12 µs that no whole microsecond falls in
/// (their bound would repeat the one before, and bounds must increase; 18 at shift 0).
pub fn explicit_cells(shift: u32) -> Vec<u32> {
    (0..hist::buckets_at(shift)).filter(|c| *c == 0 || hist::upper_us_at(*c, shift) > hist::upper_us_at(c - 1, shift)).collect()
}

/// Explicit bounds of [`explicit_cells`]: one fewer, the last cell being OTLP's overflow bucket.
pub fn explicit_bounds(shift: u32) -> Vec<f64> {
    let cells = explicit_cells(shift);
    cells[..cells.len() - 1].iter().map(|c| hist::upper_us_at(*c, shift) as f64 / 1e6).collect()
}

/// One OTLP point of a kernel histogram (cumulative, or already a delta), unchanged.
pub fn data_point(attributes: Vec<KeyValue>, h: &Histogram, start: SystemTime, time: SystemTime) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: nanos(start),
        time_unix_nano: nanos(time),
        count: h.buckets.iter().fold(0u64, |a, n| a.saturating_add(*n)),
        sum: Some(h.sum_us as f64 / 1e6),
        bucket_counts: explicit_cells(h.shift).iter().map(|c| h.buckets.get(*c as usize).copied().unwrap_or(0)).collect(),
        explicit_bounds: explicit_bounds(h.shift),
        exemplars: Vec::new(),
        flags: 0,
        // The kernel keeps no extremes; OTLP makes them optional.
        min: None,
        max: None,
    }
}

/// One OTLP exponential point (scale 3, or the histogram's own) of a kernel histogram: the same
/// buckets, trimmed.
pub fn exponential_point(attributes: Vec<KeyValue>, h: &Histogram, start: SystemTime, time: SystemTime) -> ExponentialHistogramDataPoint {
    let e = Exponential::of(h);
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: nanos(start),
        time_unix_nano: nanos(time),
        count: e.count(),
        sum: Some(h.sum_us as f64 / 1e6),
        scale: e.scale,
        zero_count: e.zero_count,
        positive: Some(Buckets { offset: e.offset, bucket_counts: e.counts }),
        negative: None,
        flags: 0,
        exemplars: Vec::new(),
        min: None,
        max: None,
        // Only a 0 µs sample is zero: every other is at least 1 µs, above the first bucket's 2^-20 s.
        zero_threshold: 0.0,
    }
}

/// `now − before`, or `now` whole when the series went backwards (a reset).
fn growth(now: &Histogram, before: &Histogram) -> Histogram {
    let comparable = before.buckets.len() == now.buckets.len()
        && before.sum_us <= now.sum_us
        && before.buckets.iter().zip(&now.buckets).all(|(b, n)| b <= n);
    if !comparable {
        return now.clone();
    }
    Histogram {
        buckets: now.buckets.iter().zip(&before.buckets).map(|(n, b)| n - b).collect(),
        sum_us: now.sum_us - before.sum_us,
        shift: now.shift,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Builds the histogram request of each export cycle.
#[derive(Debug)]
pub struct Histograms {
    resource: Resource,
    resource_schema_url: String,
    scope: InstrumentationScope,
    scope_schema_url: String,
    delta: bool,
    kind: HistogramKind,
    /// Start of every cumulative series (the exporter's creation, near the agent's start).
    start: SystemTime,
    /// Delta only: the cumulative histograms the previous request was built from, and when.
    previous: HashMap<(Which, Series), Histogram>,
    previous_at: SystemTime,
}

impl Histograms {
    /// `resource` and `scope`: the objects the SDK path's meter provider and meter were built with.
    pub fn new(
        resource: &opentelemetry_sdk::Resource,
        scope: &opentelemetry::InstrumentationScope,
        temporality: Temporality,
        kind: HistogramKind,
        start: SystemTime,
    ) -> Self {
        Self {
            resource: resource.into(),
            resource_schema_url: resource.schema_url().unwrap_or_default().to_string(),
            scope: (scope, None).into(),
            scope_schema_url: scope.schema_url().unwrap_or_default().to_string(),
            delta: temporality == Temporality::Delta,
            kind,
            start,
            previous: HashMap::new(),
            previous_at: start,
        }
    }

    /// The request for `snap`, built at `now`; `None` while no histogram has a sample.
    pub fn request(&mut self, snap: &Snapshot, now: SystemTime) -> Option<ExportMetricsServiceRequest> {
        let mut metrics = Vec::new();
        let mut seen = HashMap::new();
        for which in Which::ALL {
            let mut points: Vec<(Vec<KeyValue>, Histogram, SystemTime)> = Vec::new();
            for (key, attributes, h) in which.series(snap) {
                if h.buckets.is_empty() {
                    continue; // no sample yet
                }
                let series = (which, key);
                let point = if self.delta {
                    let grown = self.previous.get(&series).map_or_else(|| h.clone(), |before| growth(h, before));
                    (attributes, grown, self.previous_at)
                } else {
                    (attributes, h.clone(), self.start)
                };
                points.push(point);
                if self.delta {
                    seen.insert(series, h.clone());
                }
            }
            if points.is_empty() {
                continue;
            }
            let temporality = if self.delta { AggregationTemporality::Delta } else { AggregationTemporality::Cumulative };
            metrics.push(Metric {
                name: which.name().to_string(),
                description: which.description().to_string(),
                unit: "s".to_string(),
                metadata: Vec::new(),
                data: Some(match self.kind {
                    HistogramKind::Exponential => Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: points.iter().map(|(a, h, start)| exponential_point(a.clone(), h, *start, now)).collect(),
                        aggregation_temporality: temporality as i32,
                    }),
                    HistogramKind::Explicit => Data::Histogram(OtlpHistogram {
                        data_points: points.iter().map(|(a, h, start)| data_point(a.clone(), h, *start, now)).collect(),
                        aggregation_temporality: temporality as i32,
                    }),
                }),
            });
        }
        if self.delta {
            self.previous = seen;
            self.previous_at = now;
        }
        if metrics.is_empty() {
            return None;
        }
        Some(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope.clone()),
                    metrics,
                    schema_url: self.scope_schema_url.clone(),
                }],
                schema_url: self.resource_schema_url.clone(),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use agent_common::{TrafficClass, hist::TcpEvent};
    use opentelemetry::{KeyValue as SdkKeyValue, metrics::MeterProvider as _};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, data::ResourceMetrics as SdkResourceMetrics, reader::MetricReader};

    use super::*;
    use crate::snapshot::HostLabels;

    const N: usize = hist::BUCKETS as usize;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A histogram of whole-microsecond samples, filled the way the kernel fills it.
    fn kernel_histogram(samples_us: &[u64]) -> Histogram {
        let mut h = Histogram { buckets: vec![0; N], sum_us: 0, shift: 0 };
        for s in samples_us {
            h.buckets[hist::bucket(*s) as usize] += 1;
            h.sum_us += s;
        }
        h
    }

    fn zone(zone: &str, id: &str, class: TrafficClass) -> ZoneKey {
        ZoneKey { dst_zone: zone.into(), dst_zone_id: id.into(), class }
    }

    fn snapshot(rows: Vec<(ZoneKey, RowLatency)>) -> Snapshot {
        Snapshot {
            host: HostLabels { zone: "us-east-1a".into(), zone_id: "use1-az1".into(), region: "us-east-1".into(), ..HostLabels::default() },
            latency: rows.into_iter().collect(),
            ..Snapshot::default()
        }
    }

    fn builder(temporality: Temporality) -> Histograms {
        let resource = opentelemetry_sdk::Resource::builder_empty().with_attribute(SdkKeyValue::new("service.name", "azflow")).build();
        let scope = opentelemetry::InstrumentationScope::builder("azflow").with_version("9.9.9").build();
        Histograms::new(&resource, &scope, temporality, HistogramKind::Explicit, at(1000))
    }

    fn attributes(p: &HistogramDataPoint) -> BTreeMap<String, String> {
        p.attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn metrics(req: &ExportMetricsServiceRequest) -> Vec<&Metric> {
        req.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).collect()
    }

    fn points<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Vec<&'a HistogramDataPoint> {
        let mut out = Vec::new();
        for m in metrics(req).into_iter().filter(|m| m.name == name) {
            match &m.data {
                Some(Data::Histogram(h)) => out.extend(&h.data_points),
                other => panic!("{name} is not a histogram: {other:?}"),
            }
        }
        out
    }

    /// The counts an explicit point carries for a kernel histogram.
    fn explicit(h: &Histogram) -> Vec<u64> {
        explicit_cells(0).iter().map(|c| h.buckets[*c as usize]).collect()
    }

    /// Position of a sample's kernel cell among the explicit point's buckets.
    fn slot(us: u64) -> usize {
        explicit_cells(0).iter().position(|c| *c == hist::bucket(us)).expect("kept")
    }

    #[test]
    fn bounds_close_each_kernel_bucket_at_its_largest_microsecond() {
        let bounds = explicit_bounds(0);
        assert_eq!(bounds.len(), explicit_cells(0).len() - 1);
        assert_eq!(bounds.len(), N - 1 - 18, "the 18 cells no whole µs falls in are left out");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(&bounds[..3], &[0.0, 0.000001, 0.000002]);
        for (i, c) in explicit_cells(0)[..bounds.len()].iter().enumerate() {
            assert_eq!(bounds[i], hist::upper_us(*c) as f64 / 1e6, "the Prometheus le of cell {c}");
        }
        // OTLP's rule (bounds[i-1] < v ≤ bounds[i], last bucket unbounded) puts every whole
        // microsecond, in range or far beyond, in the kernel's bucket.
        let cells = explicit_cells(0);
        let mut v = 0u64;
        while v < 100_000_000 {
            let s = v as f64 / 1e6;
            let otlp = bounds.partition_point(|b| *b < s);
            assert_eq!(cells[otlp], hist::bucket(v), "{v} µs");
            v = v + 1 + v / 61;
        }
    }

    #[test]
    fn a_hand_built_row_is_exported_bucket_for_bucket() {
        let rtt = kernel_histogram(&[0, 5, 5, 16, 17, 18, 1499, 1500, 1501, 1600, 250_000, 60_000_000]);
        let connect = kernel_histogram(&[1520, 1530, 3000]);
        let mut events = [0u64; TcpEvent::COUNT as usize];
        events[TcpEvent::RetransmitSegments as usize] = 4;
        let b = zone("us-east-1b", "use1-az2", TrafficClass::CrossAz);
        let internet = zone("internet", "internet", TrafficClass::Internet);
        let snap = snapshot(vec![
            (b.clone(), RowLatency { rtt: rtt.clone(), srtt: kernel_histogram(&[1600, 1700]), connect: connect.clone(), events }),
            // Events but no sample: no point.
            (internet, RowLatency { events, ..RowLatency::default() }),
        ]);
        let req = builder(Temporality::Cumulative).request(&snap, at(1060)).expect("a request");

        let names: Vec<(&str, &str)> = metrics(&req).iter().map(|m| (m.name.as_str(), m.unit.as_str())).collect();
        assert_eq!(names, [("azflow.tcp.rtt", "s"), ("azflow.tcp.srtt", "s"), ("azflow.tcp.connect.duration", "s")]);
        for m in metrics(&req) {
            let Some(Data::Histogram(h)) = &m.data else { panic!("{} is not a histogram", m.name) };
            assert_eq!(h.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        }
        for (name, want) in [("azflow.tcp.rtt", &rtt), ("azflow.tcp.connect.duration", &connect)] {
            let p = points(&req, name);
            assert_eq!(p.len(), 1, "{name}: one point, the row with samples");
            let p = p[0];
            assert_eq!(p.bucket_counts, explicit(want), "{name}: the kernel's counts");
            assert_eq!(p.explicit_bounds, explicit_bounds(0));
            assert_eq!(p.count, want.buckets.iter().sum::<u64>());
            assert_eq!(p.sum, Some(want.sum_us as f64 / 1e6));
            assert_eq!((p.min, p.max), (None, None));
            assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1000 * 1_000_000_000, 1060 * 1_000_000_000));
            let a = attributes(p);
            assert_eq!(
                a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
                [
                    ("azflow.traffic.class", "cross_az"),
                    ("dst.zone", "us-east-1b"),
                    ("dst.zone_id", "use1-az2"),
                    ("src.zone", "us-east-1a"),
                    ("src.zone_id", "use1-az1"),
                ]
            );
        }
        let p = points(&req, "azflow.tcp.rtt")[0];
        assert_eq!(p.count, 12);
        assert_eq!(p.bucket_counts[slot(5)], 2);
        assert_eq!(p.bucket_counts.last(), Some(&1), "60 s is in the last kernel bucket, OTLP's overflow bucket");
        assert_eq!(p.sum, Some(60_256_161.0 / 1e6), "the kernel's sum of whole microseconds, in seconds");
    }

    #[test]
    fn no_samples_no_request() {
        let mut h = builder(Temporality::Cumulative);
        assert!(h.request(&snapshot(vec![]), at(1001)).is_none());
        let row = RowLatency { events: [1, 2, 0, 0, 0], ..RowLatency::default() };
        assert!(h.request(&snapshot(vec![(zone("a", "b", TrafficClass::SameAz), row)]), at(1002)).is_none());
    }

    #[test]
    fn delta_sends_the_growth_since_the_previous_request() {
        let b = zone("us-east-1b", "use1-az2", TrafficClass::CrossAz);
        let c = zone("us-east-1c", "use1-az3", TrafficClass::CrossAz);
        let first = kernel_histogram(&[1500, 1500, 20]);
        let second = kernel_histogram(&[1500, 1500, 20, 1500, 3000]);
        let mut h = builder(Temporality::Delta);
        let req = h
            .request(&snapshot(vec![(b.clone(), RowLatency { rtt: first.clone(), ..RowLatency::default() })]), at(1010))
            .expect("request");
        for m in metrics(&req) {
            let Some(Data::Histogram(hh)) = &m.data else { panic!("not a histogram") };
            assert_eq!(hh.aggregation_temporality, AggregationTemporality::Delta as i32);
        }
        let p = points(&req, "azflow.tcp.rtt")[0];
        assert_eq!((p.count, p.start_time_unix_nano), (3, 1000 * 1_000_000_000), "first: everything since the start");

        let later = kernel_histogram(&[700]);
        let snap = snapshot(vec![
            (b.clone(), RowLatency { rtt: second.clone(), ..RowLatency::default() }),
            (c, RowLatency { rtt: later.clone(), ..RowLatency::default() }),
        ]);
        let req = h.request(&snap, at(1020)).expect("request");
        let p = points(&req, "azflow.tcp.rtt");
        assert_eq!(p.len(), 2);
        let pb = p.iter().find(|p| attributes(p)["dst.zone_id"] == "use1-az2").expect("b");
        assert_eq!((pb.start_time_unix_nano, pb.time_unix_nano), (1010 * 1_000_000_000, 1020 * 1_000_000_000));
        assert_eq!(pb.count, 2);
        assert_eq!(pb.sum, Some(0.0045));
        assert_eq!(pb.bucket_counts[slot(1500)], 1);
        assert_eq!(pb.bucket_counts[slot(3000)], 1);
        assert_eq!(pb.bucket_counts.iter().sum::<u64>(), 2);
        let pc = p.iter().find(|p| attributes(p)["dst.zone_id"] == "use1-az3").expect("c");
        assert_eq!((pc.count, pc.bucket_counts.clone(), pc.start_time_unix_nano), (1, explicit(&later), 1010 * 1_000_000_000));

        // Nothing new: zero-count points, not silence.
        let req = h.request(&snap, at(1030)).expect("request");
        assert!(points(&req, "azflow.tcp.rtt").iter().all(|p| p.count == 0 && p.sum == Some(0.0)));

        // A series that went backwards starts over.
        let snap = snapshot(vec![(b, RowLatency { rtt: first.clone(), ..RowLatency::default() })]);
        let req = h.request(&snap, at(1040)).expect("request");
        assert_eq!(points(&req, "azflow.tcp.rtt")[0].bucket_counts, explicit(&first));
    }


    fn exponential_points<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Vec<&'a ExponentialHistogramDataPoint> {
        let mut out = Vec::new();
        for m in metrics(req).into_iter().filter(|m| m.name == name) {
            match &m.data {
                Some(Data::ExponentialHistogram(h)) => out.extend(&h.data_points),
                other => panic!("{name} is not an exponential histogram: {other:?}"),
            }
        }
        out
    }

    /// q-quantile (seconds) of an exponential point, linear inside the bucket (2^(i/8), 2^((i+1)/8)].
    fn exponential_quantile(p: &ExponentialHistogramDataPoint, q: f64) -> f64 {
        let rank = q * p.count as f64;
        if rank <= p.zero_count as f64 {
            return 0.0;
        }
        let b = p.positive.as_ref().expect("positive");
        let mut seen = p.zero_count as f64;
        for (k, n) in b.bucket_counts.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let i = f64::from(b.offset + k as i32);
                let (lo, hi) = ((i / 8.0).exp2(), ((i + 1.0) / 8.0).exp2());
                return lo + (hi - lo) * (rank - seen) / n;
            }
            seen += n;
        }
        f64::NAN
    }

    /// q-quantile (seconds) of an explicit point, linear inside the bucket (bounds[i-1], bounds[i]].
    fn explicit_quantile(p: &HistogramDataPoint, q: f64) -> f64 {
        let rank = q * p.count as f64;
        let mut seen = 0.0;
        for (i, n) in p.bucket_counts.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && seen + n >= rank {
                let lo = if i == 0 { 0.0 } else { p.explicit_bounds[i - 1] };
                let hi = p.explicit_bounds.get(i).copied().unwrap_or(lo);
                return lo + (hi - lo) * (rank - seen) / n;
            }
            seen += n;
        }
        f64::NAN
    }

    #[test]
    fn exponential_points_are_the_kernel_buckets_at_scale_3() {
        let samples = [0, 5, 5, 16, 17, 18, 120, 130, 1499, 1500, 1501, 1600, 250_000, 60_000_000];
        let rtt = kernel_histogram(&samples);
        let b = zone("us-east-1b", "use1-az2", TrafficClass::CrossAz);
        let snap = snapshot(vec![(b, RowLatency { rtt: rtt.clone(), ..RowLatency::default() })]);
        let resource = opentelemetry_sdk::Resource::builder_empty().build();
        let scope = opentelemetry::InstrumentationScope::builder("azflow").build();
        let req = Histograms::new(&resource, &scope, Temporality::Cumulative, HistogramKind::Exponential, at(1000))
            .request(&snap, at(1060))
            .expect("a request");
        let p = exponential_points(&req, "azflow.tcp.rtt");
        assert_eq!(p.len(), 1);
        let p = p[0];
        assert_eq!((p.scale, p.zero_count, p.zero_threshold), (3, 1, 0.0));
        assert_eq!((p.count, p.sum), (samples.len() as u64, Some(rtt.sum_us as f64 / 1e6)));
        let buckets = p.positive.as_ref().expect("positive buckets");
        assert!(p.negative.is_none());
        // Each sample, by the spec's own rule (index i holds (2^(i/8), 2^((i+1)/8)] s), is in the
        // bucket it was counted in.
        let mut want = vec![0u64; buckets.bucket_counts.len()];
        for s in samples.iter().filter(|s| **s > 0) {
            let secs = *s as f64 / 1e6;
            let i = (secs.log2() * 8.0).ceil() as i32 - 1;
            let i = i.min(hist::MAX_INDEX);
            want[(i - buckets.offset) as usize] += 1;
        }
        assert_eq!(buckets.bucket_counts, want);
        assert_eq!(buckets.offset, -141, "5 µs is in (2^(-141/8), 2^(-140/8)] s");
        assert_eq!(buckets.bucket_counts.last(), Some(&1), "60 s: the last bucket");

        // The same snapshot exported with explicit bounds: the same quantiles, up to where inside
        // one bucket each interpolates (the real bound 2^(i/8) or the whole microsecond below it):
        // at most one bucket's width, 2^(1/8) − 1 of the value, or 1 µs where buckets are finer.
        let explicit_req = Histograms::new(&resource, &scope, Temporality::Cumulative, HistogramKind::Explicit, at(1000))
            .request(&snap, at(1060))
            .expect("a request");
        let e = points(&explicit_req, "azflow.tcp.rtt")[0];
        assert_eq!(e.count, p.count);
        for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
            let (x, y) = (exponential_quantile(p, q), explicit_quantile(e, q));
            assert!((x - y).abs() <= (y * (2f64.powf(0.125) - 1.0)).max(1e-6), "q{q}: exponential {x} vs explicit {y}");
        }
    }

    /// Workload RTT: scale 1, the workload attributes, both kinds of point, delta per series.
    #[test]
    fn workload_rtt_goes_out_at_scale_1_with_the_workload_attributes() {
        use agent_common::workload_rtt;

        use crate::snapshot::{WorkloadLabels, WorkloadRowKey};
        let shift = workload_rtt::SHIFT;
        let coarse = |samples: &[u64]| {
            let mut h = Histogram { buckets: vec![0; workload_rtt::BUCKETS as usize], sum_us: 0, shift };
            for s in samples {
                h.buckets[workload_rtt::cell(*s) as usize] += 1;
                h.sum_us += s;
            }
            h
        };
        let key = WorkloadRowKey {
            workload: WorkloadLabels { name: "cart".into(), kind: "pod".into(), namespace: "shop".into(), pod: None, container: None },
            dst: zone("us-east-1b", "use1-az2", TrafficClass::CrossAz),
        };
        let mut snap = snapshot(vec![]);
        snap.workload_rtt.insert(key.clone(), coarse(&[1000, 1200, 3000]));
        let resource = opentelemetry_sdk::Resource::builder_empty().build();
        let scope = opentelemetry::InstrumentationScope::builder("azflow").build();
        let mut exp = Histograms::new(&resource, &scope, Temporality::Delta, HistogramKind::Exponential, at(1000));
        let req = exp.request(&snap, at(1010)).expect("a request");
        let p = exponential_points(&req, "azflow.workload.tcp.rtt");
        assert_eq!(p.len(), 1);
        let b = p[0].positive.as_ref().expect("buckets");
        assert_eq!((p[0].scale, p[0].count, b.offset, b.bucket_counts.clone()), (1, 3, -20, vec![2, 0, 0, 1]));
        let keys: Vec<String> = p[0].attributes.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            ["azflow.workload.name", "azflow.workload.kind", "k8s.namespace.name", "src.zone", "dst.zone", "src.zone_id", "dst.zone_id", "azflow.traffic.class"]
        );
        snap.workload_rtt.insert(key, coarse(&[1000, 1200, 3000, 3100]));
        let req = exp.request(&snap, at(1020)).expect("a request");
        assert_eq!(exponential_points(&req, "azflow.workload.tcp.rtt")[0].count, 1, "delta: the growth");

        let req = builder(Temporality::Cumulative).request(&snap, at(1030)).expect("a request");
        let p = points(&req, "azflow.workload.tcp.rtt");
        assert_eq!(p[0].explicit_bounds, explicit_bounds(shift));
        assert_eq!(p[0].bucket_counts.len(), explicit_bounds(shift).len() + 1);
        assert_eq!((p[0].count, p[0].bucket_counts.iter().sum::<u64>()), (4, 4));
        let le = |us: u64| explicit_bounds(shift).iter().position(|b| *b * 1e6 >= us as f64 - 1e-6).expect("bound");
        assert_eq!(p[0].bucket_counts[le(1381)], 2, "(976, 1381] µs");
        assert_eq!(p[0].bucket_counts[le(3906)], 2, "(2762, 3906] µs");
    }

    /// The SDK's request and ours carry the same resource and scope.
    #[test]
    fn resource_and_scope_are_the_sdk_paths() {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([SdkKeyValue::new("service.name", "azflow"), SdkKeyValue::new("host.id", "i-1"), SdkKeyValue::new("team", "net")])
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("azflow").with_version(env!("CARGO_PKG_VERSION")).build();
        let reader = crate::export::otlp::test_reader::Reader(std::sync::Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_resource(resource.clone()).with_reader(reader.clone()).build();
        let meter = provider.meter_with_scope(scope.clone());
        meter.u64_observable_counter("x").with_callback(|o| o.observe(1, &[])).build();
        let mut rm = SdkResourceMetrics::default();
        reader.collect(&mut rm).expect("collects");
        let sdk = ExportMetricsServiceRequest::from(&rm);

        let snap = snapshot(vec![(zone("b", "b-id", TrafficClass::CrossAz), RowLatency { rtt: kernel_histogram(&[10]), ..RowLatency::default() })]);
        let ours = Histograms::new(&resource, &scope, Temporality::Cumulative, HistogramKind::Explicit, at(1)).request(&snap, at(2)).expect("request");
        let sorted = |r: &ResourceMetrics| {
            let mut a: Vec<String> = r.resource.as_ref().expect("resource").attributes.iter().map(|kv| format!("{kv:?}")).collect();
            a.sort();
            a
        };
        let (s, o) = (&sdk.resource_metrics[0], &ours.resource_metrics[0]);
        assert_eq!(sorted(s), sorted(o));
        assert_eq!(sorted(o).len(), 3);
        assert_eq!(s.schema_url, o.schema_url);
        assert_eq!(s.scope_metrics[0].scope, o.scope_metrics[0].scope);
        assert_eq!(o.scope_metrics[0].scope.as_ref().map(|s| s.name.as_str()), Some("azflow"));
        assert_eq!(s.scope_metrics[0].schema_url, o.scope_metrics[0].schema_url);
    }
}
