//! From [`OtlpConfig`] to an OTLP [`MetricExporter`]: a tonic channel (gRPC) or a reqwest client
//! (HTTP/protobuf), TLS by rustls with ring, the CA file read and checked once at start-up.
//! The exporter can be rebuilt at any time (a fresh connection after an export timed out).
//!
//! Beside the SDK's exporter, a [`RequestSender`] sends requests azflow builds itself (the
//! kernel's histograms, see [`super::histograms`]) over the very same channel or client, with
//! the same headers, compression and timeout.

use std::{sync::Arc, time::Duration};

use opentelemetry_otlp::{MetricExporter, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse, metrics_service_client::MetricsServiceClient,
};
use prost::Message as _;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};

use super::{
    OtlpError,
    config::{Compression, OtlpConfig, Protocol, Temporality},
};

/// Everything needed to build an exporter, prepared once.
#[derive(Debug, Clone)]
pub struct Transport {
    cfg: OtlpConfig,
    https: bool,
    /// The CA file as read (PEM) and its certificates, if one was given.
    ca: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
    /// For HTTP/protobuf: the TLS settings reqwest uses (always set, even for http://, so
    /// reqwest never looks for a process-wide crypto provider).
    rustls: Option<rustls::ClientConfig>,
}

impl Transport {
    /// Reads the CA file and builds one exporter to prove the settings work; errors are
    /// configuration errors (exit 78).
    pub fn prepare(cfg: &OtlpConfig) -> Result<Self, OtlpError> {
        let https = cfg.endpoint.starts_with("https://");
        let ca = match &cfg.ca_file {
            Some((path, source)) => {
                let pem = std::fs::read(path).map_err(|e| OtlpError::Config {
                    setting: source,
                    problem: format!("cannot read the CA file {}: {e}", path.display()),
                    fix: "point it at a readable PEM file of CA certificates",
                })?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| OtlpError::Config {
                        setting: source,
                        problem: format!("{} is not valid PEM: {e}", path.display()),
                        fix: "point it at a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)",
                    })?;
                if certs.is_empty() {
                    return Err(OtlpError::Config {
                        setting: source,
                        problem: format!("{} holds no certificate", path.display()),
                        fix: "point it at a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)",
                    });
                }
                if !https {
                    tracing::warn!(endpoint = %cfg.endpoint, "{source} is set but the OTLP endpoint is plain http://; the CA file is not used");
                }
                Some((pem, certs))
            }
            None => None,
        };
        let rustls = match cfg.protocol {
            Protocol::HttpProtobuf => {
                let ca = ca.as_ref().zip(cfg.ca_file.as_ref()).map(|((_, certs), (_, source))| (certs.as_slice(), *source));
                Some(rustls_config(ca, https)?)
            }
            Protocol::Grpc => None,
        };
        let transport = Self { cfg: cfg.clone(), https, ca, rustls };
        transport.exporter()?;
        Ok(transport)
    }

    pub fn config(&self) -> &OtlpConfig {
        &self.cfg
    }

    /// A new exporter with its own connection(s). Needs a tokio runtime (connections are lazy).
    pub fn exporter(&self) -> Result<MetricExporter, OtlpError> {
        self.connect().map(|(exporter, _)| exporter)
    }

    /// A new exporter and a sender of azflow's own requests, sharing one channel (gRPC) or one
    /// client's connection pool (HTTP). Needs a tokio runtime (connections are lazy).
    pub fn connect(&self) -> Result<(MetricExporter, RequestSender), OtlpError> {
        let cfg = &self.cfg;
        let temporality = match cfg.temporality {
            Temporality::Cumulative => opentelemetry_sdk::metrics::Temporality::Cumulative,
            Temporality::Delta => opentelemetry_sdk::metrics::Temporality::Delta,
        };
        let source = cfg.endpoint_source;
        let build_error = |e: &dyn std::fmt::Display| OtlpError::Config {
            setting: source,
            problem: format!("cannot build the OTLP exporter for {}: {e}", cfg.endpoint),
            fix: "check the endpoint URL and TLS settings",
        };
        let gzip = cfg.compression == Compression::Gzip;
        let connection = match cfg.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
                    .map_err(|e| build_error(&e))?
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout)
                    // A receiver that vanished without closing is noticed between exports.
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(cfg.timeout);
                if self.https {
                    let tls = tonic::transport::ClientTlsConfig::new();
                    let tls = match &self.ca {
                        Some((pem, _)) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                        None => tls.with_native_roots(),
                    };
                    endpoint = endpoint.tls_config(tls).map_err(|e| build_error(&e))?;
                }
                let mut metadata = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                        metadata.insert(k, v);
                    }
                }
                let metadata = tonic::metadata::MetadataMap::from_headers(metadata);
                let channel = endpoint.connect_lazy();
                let mut client = MetricsServiceClient::new(channel.clone());
                if gzip {
                    let encoding = tonic::codec::CompressionEncoding::Gzip;
                    client = client.send_compressed(encoding).accept_compressed(encoding);
                }
                let sender = RequestSender::Grpc { client, metadata: metadata.clone(), timeout: cfg.timeout };
                let mut b = MetricExporter::builder()
                    .with_tonic()
                    .with_channel(channel)
                    .with_timeout(cfg.timeout)
                    .with_metadata(metadata);
                if gzip {
                    b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
                }
                (b.with_temporality(temporality).build().map_err(|e| build_error(&e))?, sender)
            }
            Protocol::HttpProtobuf => {
                let mut client = reqwest::Client::builder()
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout)
                    .pool_idle_timeout(Duration::from_secs(90));
                if let Some(tls) = &self.rustls {
                    client = client.tls_backend_preconfigured(tls.clone());
                }
                let client = client.build().map_err(|e| build_error(&e))?;
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                        headers.insert(k, v);
                    }
                }
                let sender = RequestSender::Http {
                    client: client.clone(),
                    url: cfg.endpoint.clone(),
                    headers,
                    gzip,
                    timeout: cfg.timeout,
                };
                let mut b = MetricExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_endpoint(cfg.endpoint.clone())
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(cfg.timeout)
                    .with_headers(cfg.headers.iter().cloned().collect());
                if gzip {
                    b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
                }
                (b.with_temporality(temporality).build().map_err(|e| build_error(&e))?, sender)
            }
        };
        Ok(connection)
    }
}

/// Sends an [`ExportMetricsServiceRequest`] azflow built itself, the way the SDK's exporter
/// sends its own: same connection, headers (metadata), compression and timeout; no retry (the
/// next export carries the cumulative totals).
#[derive(Clone)]
pub enum RequestSender {
    Grpc {
        client: MetricsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        /// Complete URL, path included.
        url: String,
        headers: http::HeaderMap,
        gzip: bool,
        timeout: Duration,
    },
}

impl std::fmt::Debug for RequestSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Grpc { .. } => f.write_str("RequestSender::Grpc"),
            Self::Http { url, .. } => write!(f, "RequestSender::Http({url})"),
        }
    }
}

/// A failed send: the kind counted in `azflow.agent.export_failures` (the same few kinds as the
/// SDK exporter's failures) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub kind: &'static str,
    pub message: String,
}

impl RequestSender {
    pub async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), SendError> {
        let started = std::time::Instant::now();
        match self {
            Self::Grpc { client, metadata, timeout } => {
                let mut r = tonic::Request::new(request);
                *r.metadata_mut() = metadata.clone();
                r.set_timeout(*timeout);
                match client.clone().export(r).await {
                    Ok(response) => {
                        partial_success(&response.into_inner());
                        Ok(())
                    }
                    Err(status) => {
                        let kind = if started.elapsed() >= *timeout { "timeout" } else { grpc_kind(status.code()) };
                        Err(SendError { kind, message: format!("gRPC code {:?}: {}", status.code(), status.message()) })
                    }
                }
            }
            Self::Http { client, url, headers, gzip, timeout } => {
                let mut body = request.encode_to_vec();
                let mut req = client
                    .post(url.as_str())
                    .timeout(*timeout)
                    .headers(headers.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    body = gzip_bytes(&body).map_err(|e| SendError { kind: "other", message: format!("gzip: {e}") })?;
                    req = req.header(http::header::CONTENT_ENCODING, "gzip");
                }
                let response = req.body(body).send().await.map_err(|e| SendError {
                    kind: if e.is_timeout() || started.elapsed() >= *timeout { "timeout" } else { "unavailable" },
                    message: format!("HTTP export failed: {e}"),
                })?;
                let status = response.status();
                if !status.is_success() {
                    return Err(SendError { kind: "rejected", message: format!("HTTP export failed with status code: {}", status.as_u16()) });
                }
                // A body that does not decode is no failure: the receiver took the request.
                if let Ok(bytes) = response.bytes().await
                    && let Ok(answer) = ExportMetricsServiceResponse::decode(bytes)
                {
                    partial_success(&answer);
                }
                Ok(())
            }
        }
    }
}

/// The receiver took the request but refused some points: logged, as the SDK does, not retried.
fn partial_success(answer: &ExportMetricsServiceResponse) {
    if let Some(p) = &answer.partial_success
        && (p.rejected_data_points > 0 || !p.error_message.is_empty())
    {
        tracing::debug!(rejected = p.rejected_data_points, message = %p.error_message, "OTLP receiver rejected some histogram points");
    }
}

/// Failure kinds of a gRPC status, as [`super::pipeline`] classifies the SDK exporter's.
fn grpc_kind(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
        tonic::Code::Unknown | tonic::Code::Internal => "other",
        _ => "rejected",
    }
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

/// `ca`: the CA file's certificates and the flag or variable that named it.
fn rustls_config(ca: Option<(&[CertificateDer<'static>], &'static str)>, https: bool) -> Result<rustls::ClientConfig, OtlpError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some((certs, source)) => {
            for c in certs {
                roots.add(c.clone()).map_err(|e| OtlpError::Config {
                    setting: source,
                    problem: format!("a CA certificate is unusable: {e}"),
                    fix: "point the CA file at CA certificates in PEM",
                })?;
            }
        }
        // The system's roots are read only when they can matter.
        None if https => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
        None => {}
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| OtlpError::Sdk(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn grpc_failure_kinds_match_the_sdk_exporters() {
        assert_eq!(grpc_kind(tonic::Code::Unavailable), "unavailable");
        assert_eq!(grpc_kind(tonic::Code::DeadlineExceeded), "timeout");
        assert_eq!(grpc_kind(tonic::Code::Cancelled), "timeout");
        assert_eq!(grpc_kind(tonic::Code::Unauthenticated), "rejected");
        assert_eq!(grpc_kind(tonic::Code::ResourceExhausted), "rejected");
        assert_eq!(grpc_kind(tonic::Code::Unknown), "other");
    }

    #[test]
    fn gzip_round_trips() {
        let body = ExportMetricsServiceRequest::default().encode_to_vec().repeat(3);
        let packed = gzip_bytes(b"azflow histograms").expect("gzip");
        let mut out = String::new();
        flate2::read::GzDecoder::new(packed.as_slice()).read_to_string(&mut out).expect("gunzip");
        assert_eq!(out, "azflow histograms");
        assert!(gzip_bytes(&body).is_ok());
    }
}
