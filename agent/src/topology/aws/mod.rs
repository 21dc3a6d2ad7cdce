//! The AWS topology source: IMDSv2 says where this host runs and which VPC it is in; EC2
//! `DescribeSubnets` says which subnet lives in which AZ. Refreshed periodically; a failed
//! refresh keeps the last good topology.
//!
//! ```text
//!  IMDSv2 ── identity, VPC ids + CIDRs ──┐
//!                                        ├─► topology_from ─► merge(static file wins) ─► Topology
//!  EC2 DescribeSubnets (SigV4, paged) ───┘        ▲
//!        credentials: aws-config default chain    └── Refresher: every 5 min ± jitter,
//!                                                     backoff when throttled, counted failures
//! ```

pub mod args;
pub mod credentials;
pub mod ec2;
pub mod http;
pub mod imds;
pub mod refresh;
pub mod resolve;
pub mod routing;
pub mod routing_xml;
pub mod xml;

use std::time::Duration;

pub use args::{AwsArgs, AwsMode, AwsSettings};
pub use refresh::Refresher;
pub use resolve::{ResolveError, Resolved, resolve};

use self::{
    credentials::CredentialsCache,
    ec2::{Ec2Client, Ec2Error},
    http::{HttpClient, HttpError},
    imds::{ImdsClient, ImdsError, InstanceIdentity},
    xml::AwsSubnet,
};
use super::model::{HostIdentity, Source, Subnet, Topology};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(transparent)]
    Imds(#[from] ImdsError),
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    #[error("no answer from AWS within {0:?}")]
    Deadline(Duration),
}

impl AwsError {
    /// Metric kind (`topology_refresh_failures{kind}`), one per failure mode.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Imds(e) => e.kind(),
            Self::Ec2(e) => e.kind(),
            Self::Deadline(_) => "timeout",
        }
    }

    pub fn is_throttling(&self) -> bool {
        matches!(self, Self::Ec2(Ec2Error::Throttled { .. }))
    }
}

/// Metric kind of a transport failure.
pub(crate) fn http_kind(e: &HttpError) -> &'static str {
    match e {
        HttpError::Timeout(_) => "timeout",
        HttpError::Connect(_) => "connect",
        HttpError::Truncated(_) => "truncated",
        HttpError::TooLarge(_) => "too_large",
        HttpError::Request(_) | HttpError::Other(_) => "http",
    }
}

/// The two AWS clients and which VPCs to ask about.
pub struct Discovery {
    pub imds: ImdsClient,
    pub ec2: Ec2Client,
    pub extra_vpc_ids: Vec<String>,
    /// AWS's published ranges (`--aws-ip-ranges`), read once at startup.
    pub ip_ranges: Option<crate::topology::ip_ranges::IpRanges>,
}

impl Discovery {
    /// The EC2 client for `identity`'s region; endpoints from the standard variables.
    pub async fn new(
        imds: ImdsClient,
        http: HttpClient,
        identity: &InstanceIdentity,
        settings: &AwsSettings,
    ) -> Self {
        let credentials = CredentialsCache::default_chain(&identity.region).await;
        let endpoint = Ec2Client::endpoint_from_env(&identity.region);
        let ec2 = Ec2Client::new(
            endpoint,
            identity.region.clone(),
            http,
            credentials,
            settings.timeout,
        );
        Self {
            imds,
            ec2,
            extra_vpc_ids: settings.extra_vpc_ids.clone(),
            ip_ranges: None,
        }
    }

    /// The VPCs to describe: the host's, then the configured extra ones.
    pub fn vpc_ids(&self, identity: &InstanceIdentity) -> Vec<String> {
        let mut ids = identity.vpc_ids();
        for id in &self.extra_vpc_ids {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }

    /// One full pass: IMDS identity, then every subnet of every VPC.
    pub async fn discover(&self) -> Result<(InstanceIdentity, Vec<AwsSubnet>), AwsError> {
        let identity = self.imds.identity().await?;
        let subnets = self.ec2.describe_subnets(&self.vpc_ids(&identity)).await?;
        Ok((identity, subnets))
    }

    /// The host subnet's routing (route table, NAT gateways, endpoints, peerings) after a
    /// successful [`Discovery::discover`].
    pub async fn discover_routing(
        &self,
        identity: &InstanceIdentity,
        subnets: &[AwsSubnet],
    ) -> Result<crate::topology::Routing, AwsError> {
        let replies = routing::describe_routing(&self.ec2, &identity.vpc_ids()).await?;
        Ok(routing::routing_from(
            identity,
            subnets,
            &replies,
            self.ip_ranges.as_ref(),
        ))
    }

    /// The routing known without EC2: AWS's ranges only.
    pub fn ranges_only(&self, identity: &InstanceIdentity) -> crate::topology::Routing {
        crate::topology::Routing {
            public_ranges: self
                .ip_ranges
                .as_ref()
                .map(|r| r.groups(&identity.region))
                .unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// The topology AWS describes: the host from IMDS, its own interfaces' subnets (in its AZ), then
/// every described subnet (which wins for the same CIDR).
pub fn topology_from(identity: &InstanceIdentity, subnets: &[AwsSubnet]) -> Topology {
    let host = HostIdentity {
        region: Some(identity.region.clone()),
        zone: identity.zone.clone(),
        zone_id: identity.zone_id.clone(),
        vpc_cidrs: identity.vpc_cidrs(),
        instance_id: identity.instance_id.clone(),
        account_id: identity.account_id.clone(),
    };
    let own = identity.interfaces.iter().flat_map(|i| {
        let cidrs = i
            .subnet_v4
            .map(ipnet::IpNet::V4)
            .into_iter()
            .chain(i.subnets_v6.iter().copied().map(ipnet::IpNet::V6));
        cidrs.map(move |cidr| Subnet {
            cidr,
            zone: identity.zone.clone(),
            zone_id: identity.zone_id.clone(),
            name: None,
            subnet_id: i.subnet_id.clone(),
            vpc_id: i.vpc_id.clone(),
            region: Some(identity.region.clone()),
            source: Source::Aws,
        })
    });
    let described = subnets.iter().flat_map(|s| {
        xml::cidrs(s).map(move |cidr| Subnet {
            cidr,
            zone: s.zone.clone(),
            zone_id: s.zone_id.clone(),
            name: s.name.clone(),
            subnet_id: Some(s.subnet_id.clone()),
            vpc_id: Some(s.vpc_id.clone()),
            region: Some(identity.region.clone()),
            source: Source::Aws,
        })
    });
    Topology::new(host, own.chain(described))
}

/// `aws` with the static file layered on top (the file wins for each CIDR and the host's zone).
pub fn merge_static(aws: Topology, static_file: Option<&Topology>) -> Topology {
    match static_file {
        Some(file) => Topology::merge(aws, file.clone()),
        None => aws,
    }
}

#[cfg(test)]
mod tests {
    use super::{imds::Interface, *};

    fn identity() -> InstanceIdentity {
        InstanceIdentity {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            zone_id: "use1-az6".into(),
            instance_id: Some("i-1".into()),
            account_id: Some("123456789012".into()),
            interfaces: vec![Interface {
                mac: "0e:00:00:00:00:01".into(),
                vpc_id: Some("vpc-1".into()),
                subnet_id: Some("subnet-a".into()),
                subnet_v4: Some("10.0.1.0/24".parse().unwrap_or_else(|e| panic!("{e}"))),
                subnets_v6: vec!["fd00:0:0:1::/64".parse().unwrap_or_else(|e| panic!("{e}"))],
                vpc_cidrs: vec!["10.0.0.0/16".parse().unwrap_or_else(|e| panic!("{e}"))],
            }],
        }
    }

    fn described(id: &str, v4: &str, zone: &str, zone_id: &str) -> AwsSubnet {
        AwsSubnet {
            subnet_id: id.into(),
            vpc_id: "vpc-1".into(),
            cidr_v4: Some(v4.parse().unwrap_or_else(|e| panic!("{e}"))),
            cidrs_v6: Vec::new(),
            zone: zone.into(),
            zone_id: zone_id.into(),
            name: Some(format!("{id}-name")),
        }
    }

    #[test]
    fn imds_alone_gives_the_host_and_its_own_subnets() {
        let t = topology_from(&identity(), &[]);
        assert_eq!(t.host().zone_id, "use1-az6");
        assert_eq!(t.host().account_id.as_deref(), Some("123456789012"));
        assert_eq!(t.host().vpc_cidrs.len(), 1);
        let cidrs: Vec<String> = t.subnets().iter().map(|s| s.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.0.1.0/24", "fd00:0:0:1::/64"]);
        assert!(
            t.subnets()
                .iter()
                .all(|s| s.zone_id == "use1-az6" && s.source == Source::Aws)
        );
    }

    #[test]
    fn described_subnets_win_and_the_static_file_wins_over_them() {
        let subnets = [
            described("subnet-a", "10.0.1.0/24", "us-east-1a", "use1-az6"),
            described("subnet-b", "10.0.2.0/24", "us-east-1b", "use1-az1"),
        ];
        let t = topology_from(&identity(), &subnets);
        let a = t
            .subnet(&"10.0.1.0/24".parse().unwrap_or_else(|e| panic!("{e}")))
            .expect("a");
        assert_eq!(a.name.as_deref(), Some("subnet-a-name"));
        let mut file_host = t.host().clone();
        file_host.zone_id = "use1-az6".into();
        let file = Topology::new(
            file_host,
            [Subnet {
                cidr: "10.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}")),
                zone: "us-east-1c".into(),
                zone_id: "use1-az2".into(),
                name: None,
                subnet_id: None,
                vpc_id: None,
                region: None,
                source: Source::StaticFile,
            }],
        );
        let merged = merge_static(t, Some(&file));
        let b = merged
            .subnet(&"10.0.2.0/24".parse().unwrap_or_else(|e| panic!("{e}")))
            .expect("b");
        assert_eq!(
            (b.zone_id.as_str(), b.source),
            ("use1-az2", Source::StaticFile)
        );
        assert_eq!(merged.subnets().len(), 3);
    }
}
