//! The Prometheus protobuf exposition (`io.prometheus.client.MetricFamily`, length-delimited),
//! served when a scraper asks for it: the only format that carries native histograms.
//!
//! Every family goes out, counters and gauges as well. A histogram carries both its native form
//! (schema 3: the kernel's buckets one for one, Prometheus index = OTLP index + 1; schema 1 for
//! the workload RTT histograms, theirs one for one) and the same classic buckets as the text format, so `_bucket` queries keep working when the scraper keeps
//! classic histograms too.
//!
//! The messages are written here from the field numbers of client_model's `metrics.proto`
//! (proto2): only the fields we send.

use prost::Message;

use super::{
    classic_buckets::ClassicBuckets,
    exponential::Exponential,
    prometheus::{Family, Kind, Value},
};

pub const CONTENT_TYPE: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A zero bucket narrower than the first bucket (2^-20 s, which holds 1 µs), so it holds exactly
/// the 0 µs samples; the value client libraries use by default. Non-zero also marks the
/// histogram as native before it has a sample.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39; // 2^-128

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    /// COUNTER = 0, GAUGE = 1, HISTOGRAM = 4.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Scalar>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Scalar>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `Gauge` and `Counter` share their only field we send: `double value = 1`.
#[derive(Clone, PartialEq, Message)]
pub struct Scalar {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

/// Whether an `Accept` header asks for the delimited MetricFamily protobuf (Prometheus sends it
/// first, with a q-value, when native histograms are on).
pub fn accepts(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        params.next().is_some_and(|t| t.eq_ignore_ascii_case("application/vnd.google.protobuf"))
            && params.clone().any(|p| p.eq_ignore_ascii_case("proto=io.prometheus.client.MetricFamily"))
            && params.any(|p| p.eq_ignore_ascii_case("encoding=delimited"))
    })
}

/// Every family, each a varint length then the message.
pub fn render(families: &[Family], classic: &ClassicBuckets) -> Vec<u8> {
    let mut out = Vec::with_capacity(families.iter().map(|f| 64 + f.points.len() * 256).sum());
    // A family without series is left out, as client libraries do (the text format still
    // announces it with HELP and TYPE).
    for f in families.iter().filter(|f| !f.points.is_empty()) {
        let r#type = match f.kind {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Histogram => 4,
        };
        let metric = f
            .points
            .iter()
            .map(|p| {
                let label = p
                    .labels
                    .iter()
                    // An empty value is no label, as in the text format.
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| LabelPair { name: Some((*k).to_string()), value: Some(v.clone()) })
                    .collect();
                let scalar = |v: f64| Some(Scalar { value: Some(v) });
                let (gauge, counter, histogram) = match (&p.value, f.kind) {
                    (Value::Int(v), Kind::Counter) => (None, scalar(*v as f64), None),
                    (Value::Float(v), Kind::Counter) => (None, scalar(*v), None),
                    (Value::Int(v), _) => (scalar(*v as f64), None, None),
                    (Value::Float(v), _) => (scalar(*v), None, None),
                    (Value::Histogram(h), _) => (None, None, Some(histogram(h, classic))),
                };
                Metric { label, gauge, counter, histogram }
            })
            .collect();
        let family = MetricFamily { name: Some(f.name.clone()), help: Some(f.help.clone()), r#type: Some(r#type), metric };
        // Writing into a Vec cannot run out of room.
        let _ = family.encode_length_delimited(&mut out);
    }
    out
}

fn histogram(h: &crate::snapshot::Histogram, classic: &ClassicBuckets) -> Histogram {
    let e = Exponential::of(h);
    let (positive_span, positive_delta) = spans_and_deltas(&e);
    let bucket = classic
        .cumulative(h)
        .into_iter()
        .filter(|(le, _)| le.is_finite())
        .map(|(le, n)| Bucket { cumulative_count: Some(n), upper_bound: Some(le) })
        .collect();
    Histogram {
        sample_count: Some(h.count()),
        sample_sum: Some(h.sum_us as f64 / 1e6),
        bucket,
        schema: Some(e.scale),
        zero_threshold: Some(ZERO_THRESHOLD),
        zero_count: Some(e.zero_count),
        positive_span,
        positive_delta,
    }
}

/// Spans of buckets in Prometheus's numbering (OTLP index + 1), a new span after a gap of more
/// than two empty buckets (shorter gaps are sent as zero counts); each count as the difference
/// from the one before. No bucket yet: the no-op span (offset 0, length 0).
pub fn spans_and_deltas(e: &Exponential) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::new();
    let (mut prev_count, mut prev_index): (i64, Option<i32>) = (0, None);
    for (i, n) in e.counts.iter().enumerate() {
        let index = e.offset + i as i32 + 1;
        if *n == 0 {
            continue;
        }
        match (prev_index, spans.last_mut()) {
            (Some(p), Some(span)) if index - p - 1 <= 2 => {
                for _ in 0..index - p - 1 {
                    deltas.push(-prev_count);
                    prev_count = 0;
                }
                span.length = Some(span.length.unwrap_or(0) + (index - p) as u32);
            }
            (Some(p), _) => spans.push(BucketSpan { offset: Some(index - p - 1), length: Some(1) }),
            (None, _) => spans.push(BucketSpan { offset: Some(index), length: Some(1) }),
        }
        let count = i64::try_from(*n).unwrap_or(i64::MAX);
        deltas.push(count - prev_count);
        prev_count = count;
        prev_index = Some(index);
    }
    if spans.is_empty() {
        spans.push(BucketSpan { offset: Some(0), length: Some(0) });
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use agent_common::hist;

    use super::*;

    fn kernel(samples: &[u64]) -> crate::snapshot::Histogram {
        let mut h = crate::snapshot::Histogram { buckets: vec![0; hist::BUCKETS as usize], sum_us: 0, shift: 0 };
        for s in samples {
            h.buckets[hist::bucket(*s) as usize] += 1;
            h.sum_us += s;
        }
        h
    }

    /// Expands spans and deltas back into (Prometheus index, count).
    fn expand(spans: &[BucketSpan], deltas: &[i64]) -> Vec<(i32, u64)> {
        let (mut out, mut index, mut count, mut d) = (Vec::new(), 0i32, 0i64, deltas.iter());
        for (k, s) in spans.iter().enumerate() {
            index += s.offset.unwrap_or(0) + if k == 0 { 0 } else { 1 };
            for j in 0..s.length.unwrap_or(0) {
                if j > 0 {
                    index += 1;
                }
                count += d.next().copied().unwrap_or_else(|| panic!("too few deltas"));
                if count != 0 {
                    out.push((index, count as u64));
                }
            }
        }
        assert!(d.next().is_none(), "too many deltas");
        out
    }

    #[test]
    fn spans_and_deltas_round_trip_to_the_kernel_buckets() {
        let samples = [0, 0, 1, 118, 119, 120, 130, 1000, 1000, 1001, 1500, 16_000_000, 60_000_000];
        let h = kernel(&samples);
        let e = Exponential::of(&h);
        let (spans, deltas) = spans_and_deltas(&e);
        let want: Vec<(i32, u64)> = (1..hist::BUCKETS).filter(|c| h.buckets[*c as usize] > 0).map(|c| (hist::index(c) + 1, h.buckets[c as usize])).collect();
        assert_eq!(expand(&spans, &deltas), want);
        assert_eq!(e.zero_count, 2);
        assert!(spans.len() > 1, "far-apart buckets make several spans");
        let empty = spans_and_deltas(&Exponential::of(&kernel(&[])));
        assert_eq!((empty.0.len(), empty.0[0].length, empty.1.len()), (1, Some(0), 0), "the no-op span");
    }

    #[test]
    fn content_negotiation_follows_the_accept_header() {
        assert!(accepts("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(accepts("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"));
        assert!(!accepts("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(!accepts("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"));
        assert!(!accepts(""));
    }

    #[test]
    fn every_family_is_encoded_and_decodes_back() {
        let fams = vec![
            Family { name: "c_total".into(), help: "h".into(), kind: Kind::Counter, points: vec![super::super::prometheus::Point { labels: vec![("a", "x".into()), ("e", String::new())], value: Value::Int(7) }] },
            Family { name: "h_seconds".into(), help: "h".into(), kind: Kind::Histogram, points: vec![super::super::prometheus::Point { labels: vec![], value: Value::Histogram(kernel(&[5, 1000])) }] },
        ];
        let bytes = render(&fams, &ClassicBuckets::default());
        let mut buf = bytes.as_slice();
        let c = MetricFamily::decode_length_delimited(&mut buf).expect("first");
        assert_eq!((c.name.as_deref(), c.r#type), (Some("c_total"), Some(0)));
        assert_eq!(c.metric[0].label.len(), 1, "empty label values are left out");
        assert_eq!(c.metric[0].counter.as_ref().and_then(|s| s.value), Some(7.0));
        let h = MetricFamily::decode_length_delimited(&mut buf).expect("second");
        let hh = h.metric[0].histogram.as_ref().expect("histogram");
        assert_eq!((hh.sample_count, hh.schema, hh.sample_sum), (Some(2), Some(3), Some(0.001005)));
        assert_eq!(hh.bucket.len(), ClassicBuckets::default().len());
        assert!(buf.is_empty());
    }
}
