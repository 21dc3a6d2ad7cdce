//! Ways out for the snapshot.

pub mod classic_buckets;
pub mod exponential;
pub mod http;
pub mod nat_metrics;
pub mod otlp;
pub mod prometheus;
pub mod prometheus_proto;
pub mod readiness;
pub mod workload_metrics;
