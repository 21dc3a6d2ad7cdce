//! The OTLP resource: who is reporting. Semantic-convention attributes from the host's identity
//! (topology), the machine, and the environment; `OTEL_RESOURCE_ATTRIBUTES` and
//! `OTEL_SERVICE_NAME` override what azflow detected.

use super::config::OtlpConfig;
use crate::snapshot::HostLabels;

/// What the machine says about itself, read once at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    pub hostname: Option<String>,
    /// `/etc/machine-id`, used as `host.id` off EC2.
    pub machine_id: Option<String>,
}

impl Machine {
    pub fn detect() -> Self {
        let machine_id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Self { hostname: hostname(), machine_id }
    }
}

/// Resource attributes, in a stable order, later keys never repeated.
pub fn attributes(host: &HostLabels, cfg: &OtlpConfig, machine: &Machine) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.retain(|(old, _)| old != k);
            out.push((k.to_string(), v.to_string()));
        }
    };
    set("service.name", Some("azflow"));
    set("service.version", Some(env!("CARGO_PKG_VERSION")));
    // On EC2 the instance ID is the host ID (semantic conventions); elsewhere the machine ID.
    set("host.id", host.instance_id.as_deref().or(machine.machine_id.as_deref()));
    set("host.name", machine.hostname.as_deref());
    let on_aws = !host.region.is_empty() || host.instance_id.is_some() || host.account_id.is_some();
    if on_aws {
        set("cloud.provider", Some("aws"));
        let platform = match (&cfg.k8s_node_name, &host.instance_id) {
            (Some(_), _) => Some("aws_eks"),
            (None, Some(_)) => Some("aws_ec2"),
            (None, None) => None,
        };
        set("cloud.platform", platform);
    }
    set("cloud.region", Some(host.region.as_str()));
    // "local" is the stand-in zone of a host with no topology, not an availability zone.
    let zone = Some(host.zone.as_str()).filter(|z| *z != "local");
    set("cloud.availability_zone", zone);
    set("cloud.account.id", host.account_id.as_deref());
    set("k8s.node.name", cfg.k8s_node_name.as_deref());
    for (k, v) in &cfg.resource {
        set(k, Some(v));
    }
    out
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::export::otlp::config::{Compression, HistogramKind, Protocol, Temporality};

    fn cfg(resource: &[(&str, &str)], node: Option<&str>) -> OtlpConfig {
        OtlpConfig {
            protocol: Protocol::Grpc,
            endpoint: "http://127.0.0.1:4317".into(),
            endpoint_source: "otlp-endpoint",
            headers: vec![],
            ca_file: None,
            compression: Compression::None,
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            temporality: Temporality::Cumulative,
            histograms: HistogramKind::Exponential,
            dst_subnet_series: 0,
            resource: resource.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            k8s_node_name: node.map(String::from),
        }
    }

    fn get<'a>(attrs: &'a [(String, String)], k: &str) -> Option<&'a str> {
        attrs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn ec2_host_under_kubernetes() {
        let host = HostLabels {
            zone: "us-east-1a".into(),
            zone_id: "use1-az1".into(),
            region: "us-east-1".into(),
            account_id: Some("123456789012".into()),
            instance_id: Some("i-0abc".into()),
        };
        let machine = Machine { hostname: Some("ip-10-0-1-5".into()), machine_id: Some("m1".into()) };
        let attrs = attributes(&host, &cfg(&[("service.name", "azflow-prod"), ("team", "net")], Some("node-a")), &machine);
        assert_eq!(get(&attrs, "service.name"), Some("azflow-prod"));
        assert_eq!(get(&attrs, "service.version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(get(&attrs, "host.id"), Some("i-0abc"));
        assert_eq!(get(&attrs, "host.name"), Some("ip-10-0-1-5"));
        assert_eq!(get(&attrs, "cloud.provider"), Some("aws"));
        assert_eq!(get(&attrs, "cloud.platform"), Some("aws_eks"));
        assert_eq!(get(&attrs, "cloud.region"), Some("us-east-1"));
        assert_eq!(get(&attrs, "cloud.availability_zone"), Some("us-east-1a"));
        assert_eq!(get(&attrs, "cloud.account.id"), Some("123456789012"));
        assert_eq!(get(&attrs, "k8s.node.name"), Some("node-a"));
        assert_eq!(get(&attrs, "team"), Some("net"));
        assert_eq!(attrs.iter().filter(|(k, _)| k == "service.name").count(), 1);
    }

    #[test]
    fn host_without_topology_claims_no_cloud() {
        let host = HostLabels { zone: "local".into(), zone_id: "local".into(), ..HostLabels::default() };
        let machine = Machine { hostname: Some("laptop".into()), machine_id: Some("abc".into()) };
        let attrs = attributes(&host, &cfg(&[], None), &machine);
        assert_eq!(get(&attrs, "host.id"), Some("abc"));
        assert_eq!(get(&attrs, "cloud.provider"), None);
        assert_eq!(get(&attrs, "cloud.availability_zone"), None);
        assert_eq!(get(&attrs, "k8s.node.name"), None);
    }
}
