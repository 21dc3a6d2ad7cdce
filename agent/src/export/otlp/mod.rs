//! OTLP metrics export (gRPC or HTTP/protobuf) of the drained [`Snapshot`](crate::snapshot::Snapshot).
//!
//! ```text
//!  drain ─► watch<Arc<Snapshot>> ─► every --otlp-interval:  pin snapshot ─► ManualReader::collect
//!                                   (observable callbacks read the pinned snapshot only)
//!                                   ─► MetricExporter::export, then the kernel's histograms
//!                                      (built from the same snapshot, sent as our own request
//!                                      over the same connection), both bounded by --otlp-timeout
//!                                      timeout ⇒ fresh connection next time; failure ⇒ counted
//!  SIGTERM: final drain ─► one last collect + export within the shutdown budget
//! ```
//!
//! The kernel counters are cumulative, so with cumulative temporality (the default) an outage of
//! the receiver loses resolution, never bytes: nothing is queued meanwhile, and the first export
//! after it carries the totals.

pub mod config;
pub mod histograms;
pub mod instruments;
mod pipeline;
pub mod resource;
pub mod transport;
#[cfg(test)]
mod test_reader;

pub use config::{OtlpArgs, OtlpConfig};
pub use pipeline::{FINAL_EXPORT_BUDGET, OtlpExporter};
pub use transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A bad flag or `OTEL_*` variable, or a CA file that cannot be used: exit 78.
    #[error("{}{}: {}; {}", dashes(.setting), .setting, .problem, .fix)]
    Config {
        /// The flag without dashes ("otlp-endpoint") or the variable ("OTEL_EXPORTER_OTLP_ENDPOINT").
        setting: &'static str,
        problem: String,
        fix: &'static str,
    },
    #[error("OTLP metrics pipeline: {0}")]
    Sdk(String),
}

/// Flags are written `--name`, environment variables as they are.
fn dashes(setting: &str) -> &'static str {
    if setting.starts_with(|c: char| c.is_ascii_uppercase()) { "" } else { "--" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_the_other_configuration_errors() {
        let e = OtlpError::Config { setting: "otlp-protocol", problem: "unknown protocol \"x\"".into(), fix: "use grpc" };
        assert_eq!(e.to_string(), "--otlp-protocol: unknown protocol \"x\"; use grpc");
        let e = OtlpError::Config { setting: "OTEL_EXPORTER_OTLP_PROTOCOL", problem: "p".into(), fix: "f" };
        assert_eq!(e.to_string(), "OTEL_EXPORTER_OTLP_PROTOCOL: p; f");
    }
}
