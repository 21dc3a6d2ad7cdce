//! The export task: a meter provider with a [`ManualReader`] that only this task drives, so
//! collection never races a drain, every export has a deadline, and the last export on SIGTERM
//! happens exactly once, after the final drain.

use std::{
    sync::{Arc, Weak},
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{InstrumentationScope, KeyValue, metrics::MeterProvider as _};
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality, data::ResourceMetrics,
        exporter::PushMetricExporter as _, reader::MetricReader,
    },
};
use tokio::sync::watch;

use super::{
    OtlpError,
    config::Temporality as ConfigTemporality,
    histograms::Histograms,
    instruments::{Instruments, SnapshotCell},
    resource::{self, Machine},
    transport::{RequestSender, Transport},
};
use crate::{
    self_metrics::Shared as SharedSelfMetrics,
    snapshot::{HostLabels, Snapshot},
};

/// Most the final export on shutdown may take (the whole shutdown has 5 s, and `run` waits 3 s
/// for each task).
pub const FINAL_EXPORT_BUDGET: Duration = Duration::from_millis(2500);
/// Beyond the exporter's own timeout, before the task gives up on an export itself.
const GRACE: Duration = Duration::from_millis(500);

/// The provider keeps one handle of the reader, the task the other.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

pub struct OtlpExporter {
    transport: Transport,
    exporter: MetricExporter,
    /// The kernel's histograms: built from the pinned snapshot, sent over the exporter's connection.
    histograms: Histograms,
    sender: RequestSender,
    provider: SdkMeterProvider,
    reader: SharedReader,
    instruments: Instruments,
    cell: SnapshotCell,
    rm: ResourceMetrics,
    self_metrics: SharedSelfMetrics,
    failures_in_a_row: u64,
}

impl OtlpExporter {
    pub fn new(transport: Transport, host: &HostLabels, machine: &Machine, self_metrics: SharedSelfMetrics) -> Result<Self, OtlpError> {
        let cfg = transport.config();
        let temporality = match cfg.temporality {
            ConfigTemporality::Cumulative => Temporality::Cumulative,
            ConfigTemporality::Delta => Temporality::Delta,
        };
        let reader = SharedReader(Arc::new(ManualReader::builder().with_temporality(temporality).build()));
        let attrs = resource::attributes(host, cfg, machine).into_iter().map(|(k, v)| KeyValue::new(k, v));
        let resource = Resource::builder_empty().with_attributes(attrs).build();
        let scope = InstrumentationScope::builder("azflow").with_version(env!("CARGO_PKG_VERSION")).build();
        let histograms = Histograms::new(&resource, &scope, cfg.temporality, cfg.histograms, SystemTime::now());
        let provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.clone()).build();
        let meter = provider.meter_with_scope(scope);
        let cell = SnapshotCell::default();
        let instruments = Instruments::register(meter, cell.clone(), cfg.dst_subnet_series > 0);
        let (exporter, sender) = transport.connect()?;
        Ok(Self {
            transport,
            exporter,
            histograms,
            sender,
            provider,
            reader,
            instruments,
            cell,
            rm: ResourceMetrics::default(),
            self_metrics,
            failures_in_a_row: 0,
        })
    }

    /// Exports every interval until `stop` flips, then once more (the final drain's snapshot)
    /// within [`FINAL_EXPORT_BUDGET`].
    pub async fn run(mut self, snapshots: watch::Receiver<Arc<Snapshot>>, mut stop: watch::Receiver<bool>) {
        let cfg = self.transport.config();
        let (interval, deadline) = (cfg.interval, cfg.timeout + GRACE);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stop.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let snap = snapshots.borrow().clone();
            tokio::select! {
                _ = self.export(snap, deadline) => {}
                // An export in flight is abandoned: the final one below supersedes it.
                _ = stop.changed() => break,
            }
        }
        let snap = snapshots.borrow().clone();
        let drains = snap.drains;
        let started = Instant::now();
        let outcome = self.export(snap, deadline.min(FINAL_EXPORT_BUDGET)).await;
        match outcome {
            Ok(()) => tracing::info!(drains, took = ?started.elapsed(), "final OTLP export sent"),
            Err(kind) => tracing::warn!(drains, kind, took = ?started.elapsed(), "final OTLP export failed"),
        }
        self.shutdown();
    }

    /// One collection of `snap` and one export of it — the SDK's request, then the kernel's
    /// histograms of the same snapshot — given up after `deadline`. Returns the failure kind,
    /// which is also counted (`azflow.agent.export_failures{kind}`), once per export.
    pub async fn export(&mut self, snap: Arc<Snapshot>, deadline: Duration) -> Result<(), &'static str> {
        self.instruments.register_agent_counters(&snap);
        // Built at every collection, like the SDK's delta state, whether or not it is sent.
        let histograms = self.histograms.request(&snap, SystemTime::now());
        self.cell.pin(snap);
        let outcome = match self.reader.collect(&mut self.rm) {
            Err(e) => Err(("collect", e.to_string())),
            Ok(()) => {
                let started = Instant::now();
                let timeout = self.transport.config().timeout;
                let (exporter, sender, rm) = (&self.exporter, &self.sender, &self.rm);
                let both = async move {
                    exporter.export(rm).await.map_err(|e| (classify(&e, started.elapsed() >= timeout), e.to_string()))?;
                    if let Some(request) = histograms {
                        sender.send(request).await.map_err(|e| (e.kind, format!("histograms: {}", e.message)))?;
                    }
                    Ok(())
                };
                match tokio::time::timeout(deadline, both).await {
                    Ok(result) => result,
                    Err(_) => Err(("timeout", format!("no answer within {deadline:?}"))),
                }
            }
        };
        match outcome {
            Ok(()) => {
                self.self_metrics.incr("exports", "otlp");
                if self.failures_in_a_row > 0 {
                    tracing::info!(failed_exports = self.failures_in_a_row, "OTLP export recovered");
                }
                self.failures_in_a_row = 0;
                Ok(())
            }
            Err((kind, error)) => {
                self.self_metrics.incr("export_failures", kind);
                self.failures_in_a_row += 1;
                let endpoint = &self.transport.config().endpoint;
                if self.failures_in_a_row == 1 {
                    tracing::warn!(%endpoint, kind, %error, "OTLP export failed; the totals go with the next export that succeeds");
                } else {
                    tracing::debug!(%endpoint, kind, %error, failures = self.failures_in_a_row, "OTLP export failed again");
                }
                if kind == "timeout" {
                    // The connection may be wedged (a receiver that accepts and never answers):
                    // the next export starts on a fresh one.
                    match self.transport.connect() {
                        Ok((fresh, sender)) => {
                            let old = std::mem::replace(&mut self.exporter, fresh);
                            let _ = old.shutdown();
                            self.sender = sender;
                        }
                        Err(e) => tracing::warn!("rebuilding the OTLP exporter failed: {e}"),
                    }
                }
                Err(kind)
            }
        }
    }

    fn shutdown(self) {
        let _ = self.exporter.shutdown();
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("OTLP meter provider shutdown: {e}");
        }
    }
}

/// Failure kinds, few and stable: timeout, unavailable (no connection), rejected (the receiver
/// answered with an error), other.
fn classify(e: &OTelSdkError, took_the_whole_timeout: bool) -> &'static str {
    let msg = match e {
        OTelSdkError::Timeout(_) => return "timeout",
        OTelSdkError::AlreadyShutdown => return "other",
        OTelSdkError::InternalFailure(m) => m.as_str(),
    };
    if took_the_whole_timeout || msg.contains("DeadlineExceeded") || msg.contains("Cancelled") {
        "timeout"
    } else if msg.contains("Unavailable") || msg.contains("network error") {
        "unavailable"
    } else if msg.contains("gRPC code") || msg.contains("status code") {
        "rejected"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds() {
        let f = |m: &str| OTelSdkError::InternalFailure(m.into());
        assert_eq!(classify(&f("TonicMetricsClient export failed with gRPC code: Unavailable: tcp connect error"), false), "unavailable");
        assert_eq!(classify(&f("TonicMetricsClient export failed with gRPC code: Cancelled: Timeout expired"), false), "timeout");
        assert_eq!(classify(&f("TonicMetricsClient export failed with gRPC code: Unauthenticated"), false), "rejected");
        assert_eq!(classify(&f("HTTP export failed with status code: 503"), false), "rejected");
        assert_eq!(classify(&f("HTTP export failed: network error"), false), "unavailable");
        assert_eq!(classify(&f("HTTP export failed: network error"), true), "timeout");
        assert_eq!(classify(&OTelSdkError::Timeout(Duration::from_secs(1)), false), "timeout");
    }
}
