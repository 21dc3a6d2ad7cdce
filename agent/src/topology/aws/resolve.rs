//! The topology at startup: AWS when IMDS answers (merged under the static file), else the
//! static file, else this host's interface subnets — decided within a few seconds.

use std::{path::Path, time::Duration};

use super::{AwsMode, AwsSettings, Discovery, Refresher, http::HttpClient, imds::ImdsClient};
use crate::{
    self_metrics::Shared as SharedSelfMetrics,
    topology::{HostInterfacesError, Topology, TopologyFileError, host_interfaces, static_file},
};

/// IMDS must hand out a token within this, or the host is taken as not on EC2 (the whole
/// decision stays under 3 s).
pub const NOT_ON_EC2_BUDGET: Duration = Duration::from_millis(2500);
/// Reading the identity and interfaces once IMDS has answered.
const IDENTITY_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    File(#[from] TopologyFileError),
    #[error(transparent)]
    HostInterfaces(#[from] HostInterfacesError),
    #[error(transparent)]
    IpRanges(#[from] crate::topology::ip_ranges::IpRangesError),
    #[error("--aws on, but this host is not on EC2: {0}; run on EC2 or pass --aws auto")]
    NotOnEc2(String),
    #[error("--aws on, but IMDS did not describe this instance: {0}")]
    Identity(String),
}

impl ResolveError {
    /// True when the user's configuration is at fault (exit 78).
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::File(_) | Self::IpRanges(_))
    }
}

/// What startup decided.
pub struct Resolved {
    pub topology: Topology,
    /// Present when AWS answered: keeps the topology fresh.
    pub refresher: Option<Refresher>,
    /// Where the topology came from, one line per source, for people.
    pub sources: Vec<String>,
}

/// The budget of the first EC2 pass at startup: after it the agent starts on what it has and
/// the refresher keeps trying.
pub fn startup_budget(settings: &AwsSettings) -> Duration {
    (settings.timeout * 2 + Duration::from_secs(5)).min(Duration::from_secs(60))
}

pub async fn resolve(
    settings: &AwsSettings,
    static_path: Option<&Path>,
    metrics: &SharedSelfMetrics,
) -> Result<Resolved, ResolveError> {
    let static_topology = match static_path {
        Some(p) => Some(static_file::load_file(p)?),
        None => None,
    };
    let ip_ranges = match &settings.ip_ranges {
        Some(p) => Some(crate::topology::ip_ranges::load(p)?),
        None => None,
    };
    let file_line = static_path.map(|p| {
        format!(
            "file      {} (wins over AWS for the same CIDR and the host's zone)",
            p.display()
        )
    });
    let fallback = |why: String| -> Result<Resolved, ResolveError> {
        let (topology, using) = match (&static_topology, static_path) {
            (Some(t), Some(p)) => (t.clone(), format!("the static file {}", p.display())),
            _ => (
                host_interfaces::load()?,
                "this host's interface subnets as its AZ".to_owned(),
            ),
        };
        // Without AWS, the ranges still tell AWS addresses apart by region.
        let topology = match (&ip_ranges, topology.host().region.clone()) {
            (Some(r), Some(region)) => {
                let mut routing = topology.routing().clone();
                routing.public_ranges = r.groups(&region);
                topology.with_routing(routing)
            }
            _ => topology,
        };
        let mut sources = vec![format!("aws       not used: {why}")];
        sources.extend(file_line.clone());
        if static_path.is_none() {
            sources.push("interfaces  this host's own subnets, zone \"local\"".to_owned());
        }
        if settings.mode != AwsMode::Off {
            tracing::info!("not on EC2 ({why}); using {using}");
        }
        Ok(Resolved {
            topology,
            refresher: None,
            sources,
        })
    };
    if settings.mode == AwsMode::Off {
        return fallback("--aws off".to_owned());
    }

    let http = HttpClient::new();
    let imds = ImdsClient::from_env(http.clone());
    let probe = match tokio::time::timeout(NOT_ON_EC2_BUDGET, imds.probe()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "IMDS at {} did not answer within {NOT_ON_EC2_BUDGET:?}",
            imds.base()
        )),
    };
    if let Err(why) = probe {
        if settings.mode == AwsMode::On {
            return Err(ResolveError::NotOnEc2(why));
        }
        return fallback(why);
    }
    let identity = match tokio::time::timeout(IDENTITY_BUDGET, imds.identity()).await {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => {
            return identity_failed(settings, &e.to_string(), e.kind(), metrics, fallback);
        }
        Err(_) => {
            let why = format!("IMDS at {} stopped answering", imds.base());
            return identity_failed(settings, &why, "imds_timeout", metrics, fallback);
        }
    };
    let imds_line = format!(
        "aws       IMDS {}: instance {}, {} ({}), VPC {}",
        imds.base(),
        identity.instance_id.as_deref().unwrap_or("-"),
        identity.zone,
        identity.zone_id,
        identity.vpc_ids().join(", "),
    );
    let mut discovery = Discovery::new(imds, http, &identity, settings).await;
    discovery.ip_ranges = ip_ranges;
    let ec2_line = format!(
        "aws       EC2 {} DescribeSubnets, DescribeRouteTables, DescribeNatGateways, DescribeVpcEndpoints, DescribeVpcPeeringConnections of {}",
        discovery.ec2.endpoint(),
        discovery.vpc_ids(&identity).join(", ")
    );
    let mut refresher = Refresher::new(
        discovery,
        identity,
        static_topology,
        settings.refresh_interval,
        metrics.clone(),
    );
    let _ = refresher.refresh(startup_budget(settings)).await;
    let mut sources = vec![imds_line, ec2_line];
    sources.extend(file_line);
    Ok(Resolved {
        topology: refresher.topology().clone(),
        refresher: Some(refresher),
        sources,
    })
}

fn identity_failed(
    settings: &AwsSettings,
    why: &str,
    kind: &'static str,
    metrics: &SharedSelfMetrics,
    fallback: impl FnOnce(String) -> Result<Resolved, ResolveError>,
) -> Result<Resolved, ResolveError> {
    metrics.incr("topology_refresh_failures", kind);
    if settings.mode == AwsMode::On {
        return Err(ResolveError::Identity(why.to_owned()));
    }
    tracing::warn!(
        kind,
        "IMDS answered but did not describe this instance: {why}"
    );
    fallback(why.to_owned())
}
