//! A `MetricReader` the unit tests can clone: the SDK keeps the reader it is given, and the test
//! keeps a handle to collect from the same `ManualReader`.

use std::{sync::Arc, time::Duration};

use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{InstrumentKind, ManualReader, Pipeline, Temporality, data::ResourceMetrics, reader::MetricReader},
};

#[derive(Debug, Clone)]
pub struct Reader(pub Arc<ManualReader>);

impl MetricReader for Reader {
    fn register_pipeline(&self, p: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(p);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, t: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}
