//! Ways out for the snapshot.

pub mod http;
pub mod otlp;
pub mod prometheus;
pub mod readiness;
