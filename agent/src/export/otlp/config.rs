//! OTLP settings: the `--otlp-*` flags and the standard `OTEL_*` environment variables, resolved
//! in one pure pass (the environment is passed in, so tests need not touch the process's).
//!
//! Precedence, per setting: flag, then the metrics-specific variable
//! (`OTEL_EXPORTER_OTLP_METRICS_*`), then the generic one (`OTEL_EXPORTER_OTLP_*`), then the
//! default. Every error names the flag or variable its value came from.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::OtlpError;
use crate::config::parse_duration;

/// `azflow run --otlp-*`. OTLP export is on when an endpoint is given by flag or environment,
/// or when `OTEL_METRICS_EXPORTER` names `otlp`.
#[derive(Debug, Clone, Default, Args)]
pub struct OtlpArgs {
    /// OTLP endpoint, http:// or https:// (TLS). For http/protobuf a URL without a path gets
    /// /v1/metrics. Default: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT;
    /// with neither, nothing is exported over OTLP.
    #[arg(long = "otlp-endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    /// "grpc" or "http/protobuf" (default: OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL, else http/protobuf).
    #[arg(long = "otlp-protocol", value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// Request header KEY=VALUE, repeatable; added to OTEL_EXPORTER_OTLP_[METRICS_]HEADERS (for
    /// the same key the environment wins, as the exporter library merges it last).
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// PEM file of the CA certificates that verify the receiver's certificate (https:// only;
    /// default: OTEL_EXPORTER_OTLP_[METRICS_]CERTIFICATE, else the system's roots).
    #[arg(long = "otlp-ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// "gzip" or "none" (default: OTEL_EXPORTER_OTLP_[METRICS_]COMPRESSION, else none).
    #[arg(long = "otlp-compression", value_name = "ALGORITHM")]
    pub compression: Option<String>,
    /// Deadline of one export, e.g. "10s" (default: OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT in
    /// milliseconds, else 10s). A hung receiver only delays points by this much.
    #[arg(long = "otlp-timeout", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Time between exports, e.g. "60s" (default: OTEL_METRIC_EXPORT_INTERVAL in milliseconds,
    /// else 60s).
    #[arg(long = "otlp-interval", value_name = "DURATION")]
    pub interval: Option<String>,
    /// "cumulative" or "delta" (default: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
    /// else cumulative). Cumulative loses nothing through an outage; delta loses the increase
    /// of each failed export.
    #[arg(long = "otlp-temporality", value_name = "TEMPORALITY")]
    pub temporality: Option<String>,
    /// Export `dst.subnet` on azflow.tcp.bytes/packets for at most this many subnet series (the
    /// rest are summed as dst.subnet="other"); 0 leaves the attribute out.
    #[arg(long = "otlp-dst-subnet-series", env = "AZFLOW_OTLP_DST_SUBNET_SERIES", default_value_t = 0)]
    pub dst_subnet_series: usize,
    /// Latency histograms as "exponential" (base-2 scale 3: the kernel's buckets, only the
    /// non-empty range sent) or "explicit" (every kernel bucket boundary as explicit bounds,
    /// 200 per point). Default: exponential.
    #[arg(long = "otlp-histograms", env = "AZFLOW_OTLP_HISTOGRAMS", value_name = "KIND")]
    pub histograms: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramKind {
    Exponential,
    Explicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

/// Validated OTLP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: Protocol,
    /// Complete URL: for http/protobuf including the /v1/metrics path.
    pub endpoint: String,
    /// Where `endpoint` came from (a flag or a variable), for later error messages.
    pub endpoint_source: &'static str,
    pub headers: Vec<(String, String)>,
    /// The CA file and the flag or variable that named it.
    pub ca_file: Option<(PathBuf, &'static str)>,
    pub compression: Compression,
    pub timeout: Duration,
    pub interval: Duration,
    pub temporality: Temporality,
    pub histograms: HistogramKind,
    /// 0: no `dst.subnet` attribute.
    pub dst_subnet_series: usize,
    /// `OTEL_RESOURCE_ATTRIBUTES` (decoded), then `OTEL_SERVICE_NAME` as `service.name`.
    pub resource: Vec<(String, String)>,
    /// `K8S_NODE_NAME`.
    pub k8s_node_name: Option<String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Below the SDK's own cardinality limit (2000 per metric), with room for the catch-alls.
pub const MAX_DST_SUBNET_SERIES: usize = 1000;

const GRPC_DEFAULT_ENDPOINT: &str = "http://localhost:4317";
const HTTP_DEFAULT_ENDPOINT: &str = "http://localhost:4318/v1/metrics";

/// A value and the flag ("otlp-endpoint") or variable ("OTEL_…") it came from.
type Sourced = (String, &'static str);

impl OtlpArgs {
    /// `Ok(None)`: OTLP export is off.
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>, OtlpError> {
        // Empty variables count as unset, as the specification asks.
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let pick = |flag: Option<&String>, flag_name: &'static str, vars: &[&'static str]| -> Option<Sourced> {
            if let Some(v) = flag {
                return Some((v.clone(), flag_name));
            }
            vars.iter().find_map(|var| env(var).map(|v| (v, *var)))
        };

        if self.dst_subnet_series > MAX_DST_SUBNET_SERIES {
            return Err(config(
                "otlp-dst-subnet-series",
                format!("{} series is too many", self.dst_subnet_series),
                "choose at most 1000 (or 0 to leave dst.subnet out)",
            ));
        }
        if self.endpoint.is_none() && env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }

        // Checked even when nothing is exported, so a typo never waits for an endpoint to show.
        let histograms = match self.histograms.as_deref().map_or("exponential", str::trim) {
            "exponential" => HistogramKind::Exponential,
            "explicit" => HistogramKind::Explicit,
            other => return Err(config("otlp-histograms", format!("unknown histogram kind {other:?}"), "use exponential or explicit")),
        };

        let protocol = match pick(
            self.protocol.as_ref(),
            "otlp-protocol",
            &["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
        ) {
            None => Protocol::HttpProtobuf,
            Some((v, source)) => match v.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => {
                    return Err(config(source, "http/json is not supported".into(), "use grpc or http/protobuf"));
                }
                other => {
                    return Err(config(source, format!("unknown protocol {other:?}"), "use grpc or http/protobuf"));
                }
            },
        };

        let wanted_by_env = env("OTEL_METRICS_EXPORTER")
            .map(|v| v.split(',').map(str::trim).map(str::to_ascii_lowercase).collect::<Vec<_>>());
        let endpoint = if let Some(v) = &self.endpoint {
            check_url(v.trim(), "otlp-endpoint")?;
            Some((endpoint_with_path(v.trim(), protocol), "otlp-endpoint"))
        } else if wanted_by_env.as_ref().is_some_and(|w| w.iter().all(|e| e != "otlp")) {
            // OTEL_METRICS_EXPORTER=none (or only other exporters): the environment opts out.
            None
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some((v.trim().to_string(), "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
        } else if let Some(v) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let v = v.trim();
            let url = match protocol {
                Protocol::Grpc => v.to_string(),
                Protocol::HttpProtobuf => format!("{}/v1/metrics", v.trim_end_matches('/')),
            };
            Some((url, "OTEL_EXPORTER_OTLP_ENDPOINT"))
        } else if wanted_by_env.is_some() {
            let default = match protocol {
                Protocol::Grpc => GRPC_DEFAULT_ENDPOINT,
                Protocol::HttpProtobuf => HTTP_DEFAULT_ENDPOINT,
            };
            Some((default.to_string(), "OTEL_METRICS_EXPORTER"))
        } else {
            None
        };
        let Some((endpoint, endpoint_source)) = endpoint else { return Ok(None) };
        check_url(&endpoint, endpoint_source)?;

        let mut headers = Vec::new();
        for h in &self.headers {
            let (k, v) = h.split_once('=').ok_or_else(|| {
                config("otlp-header", format!("{h:?} is not KEY=VALUE"), "write e.g. --otlp-header authorization=Bearer%20x")
            })?;
            set_header(&mut headers, k.trim(), &percent_decode(v.trim()), "otlp-header")?;
        }
        if let Some((list, source)) = pick(None, "", &["OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"]) {
            for (k, v) in parse_key_values(&list, source)? {
                set_header(&mut headers, &k, &v, source)?;
            }
        }

        let ca_file = pick(
            self.ca_file.as_ref().map(|p| p.display().to_string()).as_ref(),
            "otlp-ca-file",
            &["OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"],
        )
        .map(|(p, source)| (self.ca_file.clone().unwrap_or_else(|| PathBuf::from(p.trim())), source));

        let compression = match pick(
            self.compression.as_ref(),
            "otlp-compression",
            &["OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"],
        ) {
            None => Compression::None,
            Some((v, source)) => match v.trim().to_ascii_lowercase().as_str() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                other => return Err(config(source, format!("unsupported compression {other:?}"), "use gzip or none")),
            },
        };

        let timeout = match self.timeout.as_ref() {
            Some(v) => flag_duration(v, "otlp-timeout")?,
            None => env_millis(
                &env,
                &["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_METRIC_EXPORT_TIMEOUT"],
            )?
            .unwrap_or(DEFAULT_TIMEOUT),
        };
        check_between(timeout, Duration::from_millis(100), Duration::from_secs(120), "otlp-timeout", "choose between 100ms and 2m")?;

        let interval = match self.interval.as_ref() {
            Some(v) => flag_duration(v, "otlp-interval")?,
            None => env_millis(&env, &["OTEL_METRIC_EXPORT_INTERVAL"])?.unwrap_or(DEFAULT_INTERVAL),
        };
        check_between(interval, Duration::from_millis(100), Duration::from_secs(3600), "otlp-interval", "choose between 100ms and 1h")?;

        let temporality = match pick(
            self.temporality.as_ref(),
            "otlp-temporality",
            &["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"],
        ) {
            None => Temporality::Cumulative,
            Some((v, source)) => match v.trim().to_ascii_lowercase().as_str() {
                // Low-memory differs from cumulative only for synchronous instruments; azflow's
                // are all observable.
                "cumulative" | "lowmemory" => Temporality::Cumulative,
                "delta" => Temporality::Delta,
                other => return Err(config(source, format!("unknown temporality {other:?}"), "use cumulative or delta")),
            },
        };

        let mut resource = match env("OTEL_RESOURCE_ATTRIBUTES") {
            Some(list) => parse_key_values(&list, "OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        if let Some(name) = env("OTEL_SERVICE_NAME") {
            resource.retain(|(k, _)| k != "service.name");
            resource.push(("service.name".into(), name.trim().to_string()));
        }

        Ok(Some(OtlpConfig {
            protocol,
            endpoint,
            endpoint_source,
            headers,
            ca_file,
            compression,
            timeout,
            interval,
            temporality,
            histograms,
            dst_subnet_series: self.dst_subnet_series,
            resource,
            k8s_node_name: env("K8S_NODE_NAME").map(|v| v.trim().to_string()),
        }))
    }
}

fn config(setting: &'static str, problem: String, fix: &'static str) -> OtlpError {
    OtlpError::Config { setting, problem, fix }
}

/// For http/protobuf a bare `http://host:4318` means the standard path.
fn endpoint_with_path(url: &str, protocol: Protocol) -> String {
    if protocol == Protocol::HttpProtobuf
        && let Ok(uri) = url.parse::<http::Uri>()
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && uri.authority().is_some()
        && uri.scheme().is_some()
    {
        return format!("{}/v1/metrics", url.trim_end_matches('/'));
    }
    url.to_string()
}

fn check_url(url: &str, source: &'static str) -> Result<(), OtlpError> {
    const FIX: &str = "write e.g. http://127.0.0.1:4317 (grpc) or https://collector:4318 (http/protobuf)";
    let uri: http::Uri = url.parse().map_err(|e| config(source, format!("{url:?} is not a URL ({e})"), FIX))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(config(source, format!("{url:?}: scheme {other:?} is not http or https"), FIX)),
        None => return Err(config(source, format!("{url:?} has no scheme"), FIX)),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(config(source, format!("{url:?} has no host"), FIX)),
    }
}

fn set_header(headers: &mut Vec<(String, String)>, key: &str, value: &str, source: &'static str) -> Result<(), OtlpError> {
    let fix = "header names are tokens (letters, digits, '-') and values printable text";
    http::HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| config(source, format!("{key:?} is not a valid header name"), fix))?;
    http::HeaderValue::from_str(value).map_err(|_| config(source, format!("the value of {key:?} is not a valid header value"), fix))?;
    let key = key.to_ascii_lowercase();
    headers.retain(|(k, _)| *k != key);
    headers.push((key, value.to_string()));
    Ok(())
}

/// The W3C-baggage-like list of the OTEL_* variables: `k1=v1,k2=v2`, values percent-encoded.
fn parse_key_values(list: &str, source: &'static str) -> Result<Vec<(String, String)>, OtlpError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| config(source, format!("{item:?} is not KEY=VALUE"), "write key1=value1,key2=value2 (values percent-encoded)"))?;
        let k = percent_decode(k.trim());
        out.retain(|(old, _)| *old != k);
        out.push((k, percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag_duration(v: &str, flag: &'static str) -> Result<Duration, OtlpError> {
    parse_duration(v).ok_or_else(|| config(flag, format!("{v:?} is not a duration"), "write a number with a unit, e.g. 10s or 500ms"))
}

fn env_millis(env: &dyn Fn(&str) -> Option<String>, vars: &[&'static str]) -> Result<Option<Duration>, OtlpError> {
    for var in vars {
        if let Some(v) = env(var) {
            let ms: u64 = v
                .trim()
                .parse()
                .map_err(|_| config(var, format!("{v:?} is not a whole number of milliseconds"), "write e.g. 10000"))?;
            return Ok(Some(Duration::from_millis(ms)));
        }
    }
    Ok(None)
}

fn check_between(d: Duration, min: Duration, max: Duration, setting: &'static str, fix: &'static str) -> Result<(), OtlpError> {
    if (min..=max).contains(&d) { Ok(()) } else { Err(config(setting, format!("{d:?} is out of range"), fix)) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn validate(args: &OtlpArgs, vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, OtlpError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        args.validate(&|k| vars.get(k).cloned())
    }

    fn setting(e: OtlpError) -> &'static str {
        match e {
            OtlpError::Config { setting, .. } => setting,
            other => panic!("expected a configuration error, got {other}"),
        }
    }

    fn flags(endpoint: &str) -> OtlpArgs {
        OtlpArgs { endpoint: Some(endpoint.into()), ..OtlpArgs::default() }
    }

    #[test]
    fn off_without_an_endpoint_and_on_with_one() {
        assert_eq!(validate(&OtlpArgs::default(), &[]).expect("valid"), None);
        let c = validate(&flags("http://127.0.0.1:4318"), &[]).expect("valid").expect("on");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!((c.timeout, c.interval), (DEFAULT_TIMEOUT, DEFAULT_INTERVAL));
        assert_eq!(c.temporality, Temporality::Cumulative);
        assert_eq!(c.compression, Compression::None);
        let c = validate(&OtlpArgs::default(), &[("OTEL_METRICS_EXPORTER", "otlp"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
            .expect("valid")
            .expect("on");
        assert_eq!(c.endpoint, "http://localhost:4317");
        assert_eq!(validate(&OtlpArgs::default(), &[("OTEL_METRICS_EXPORTER", "none"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318")]).expect("valid"), None);
        assert_eq!(validate(&OtlpArgs::default(), &[("OTEL_SDK_DISABLED", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318")]).expect("valid"), None);
    }

    #[test]
    fn environment_follows_the_specification() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,x-tenant=t1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=metrics"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.name=x,team=net%2Cops"),
            ("OTEL_SERVICE_NAME", "azflow-eu"),
            ("K8S_NODE_NAME", "node-1"),
        ];
        let c = validate(&OtlpArgs::default(), &vars).expect("valid").expect("on");
        assert_eq!(c.endpoint, "https://collector:4318/v1/metrics");
        assert_eq!(c.endpoint_source, "OTEL_EXPORTER_OTLP_ENDPOINT");
        // The metrics-specific list replaces the generic one.
        assert_eq!(c.headers, vec![("api-key".to_string(), "metrics".to_string())]);
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.interval, Duration::from_secs(15));
        assert_eq!(c.temporality, Temporality::Delta);
        assert_eq!(c.ca_file, Some((PathBuf::from("/etc/ca.pem"), "OTEL_EXPORTER_OTLP_CERTIFICATE")));
        assert_eq!(
            c.resource,
            vec![
                ("deployment.environment".to_string(), "prod".to_string()),
                ("team".to_string(), "net,ops".to_string()),
                ("service.name".to_string(), "azflow-eu".to_string()),
            ]
        );
        assert_eq!(c.k8s_node_name.as_deref(), Some("node-1"));
    }

    #[test]
    fn flags_win_over_the_environment() {
        let args = OtlpArgs {
            endpoint: Some("http://127.0.0.1:4317".into()),
            protocol: Some("grpc".into()),
            headers: vec!["Authorization=Bearer%20t".into()],
            timeout: Some("1s".into()),
            interval: Some("500ms".into()),
            compression: Some("none".into()),
            ..OtlpArgs::default()
        };
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "9000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=t1"),
        ];
        let c = validate(&args, &vars).expect("valid").expect("on");
        assert_eq!((c.protocol, c.endpoint.as_str()), (Protocol::Grpc, "http://127.0.0.1:4317"));
        assert_eq!(c.compression, Compression::None);
        assert_eq!((c.timeout, c.interval), (Duration::from_secs(1), Duration::from_millis(500)));
        assert_eq!(
            c.headers,
            vec![("authorization".to_string(), "Bearer t".to_string()), ("x-tenant".to_string(), "t1".to_string())]
        );
    }

    #[test]
    fn errors_name_the_flag_or_variable() {
        assert_eq!(setting(validate(&flags("not a url"), &[]).expect_err("bad")), "otlp-endpoint");
        assert_eq!(setting(validate(&flags("localhost:4317"), &[]).expect_err("no scheme")), "otlp-endpoint");
        assert_eq!(setting(validate(&flags("ftp://x:21"), &[]).expect_err("scheme")), "otlp-endpoint");
        assert_eq!(
            setting(validate(&OtlpArgs::default(), &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "::nope")]).expect_err("bad")),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
        );
        let proto = OtlpArgs { protocol: Some("carrier-pigeon".into()), ..flags("http://x:1") };
        let e = validate(&proto, &[]).expect_err("unknown protocol");
        assert!(e.to_string().contains("unknown protocol \"carrier-pigeon\""), "{e}");
        assert_eq!(setting(e), "otlp-protocol");
        assert_eq!(
            setting(validate(&flags("http://x:1"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).expect_err("json")),
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        assert_eq!(
            setting(validate(&flags("http://x:1"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]).expect_err("zstd")),
            "OTEL_EXPORTER_OTLP_COMPRESSION"
        );
        assert_eq!(
            setting(validate(&flags("http://x:1"), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).expect_err("ms")),
            "OTEL_EXPORTER_OTLP_TIMEOUT"
        );
        assert_eq!(
            setting(validate(&flags("http://x:1"), &[("OTEL_RESOURCE_ATTRIBUTES", "a=1,oops")]).expect_err("list")),
            "OTEL_RESOURCE_ATTRIBUTES"
        );
        let bad_header = OtlpArgs { headers: vec!["no equals".into()], ..flags("http://x:1") };
        assert_eq!(setting(validate(&bad_header, &[]).expect_err("header")), "otlp-header");
        let too_fast = OtlpArgs { interval: Some("1ms".into()), ..flags("http://x:1") };
        assert_eq!(setting(validate(&too_fast, &[]).expect_err("interval")), "otlp-interval");
        let kind = OtlpArgs { histograms: Some("native".into()), ..OtlpArgs::default() };
        let e = validate(&kind, &[]).expect_err("unknown kind");
        assert_eq!(e.to_string(), "--otlp-histograms: unknown histogram kind \"native\"; use exponential or explicit");
        let explicit = OtlpArgs { histograms: Some("explicit".into()), ..flags("http://x:1") };
        assert_eq!(validate(&explicit, &[]).expect("valid").map(|c| c.histograms), Some(HistogramKind::Explicit));
        assert_eq!(validate(&flags("http://x:1"), &[]).expect("valid").map(|c| c.histograms), Some(HistogramKind::Exponential));
        let many = OtlpArgs { dst_subnet_series: 5000, ..flags("http://x:1") };
        assert_eq!(setting(validate(&many, &[]).expect_err("series")), "otlp-dst-subnet-series");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
