//! Ways out for the snapshot.

pub mod http;
pub mod prometheus;
