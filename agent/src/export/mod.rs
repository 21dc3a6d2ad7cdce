//! Ways out for the snapshot.

pub mod http;
pub mod nat_metrics;
pub mod otlp;
pub mod prometheus;
pub mod readiness;
pub mod workload_metrics;
