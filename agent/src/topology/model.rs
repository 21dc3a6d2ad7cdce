//! What user space knows about the network: this host's identity and the subnets around it, each
//! with its Availability Zone. A [`Topology`] is built once per refresh and never changed.
//!
//! AZ **IDs** (`use1-az1`) are the key everywhere: AZ names (`us-east-1a`) map to different
//! physical zones in different accounts, IDs do not.

use agent_common::TrafficClass;
use ipnet::IpNet;

use super::paths::Routing;

/// Where this host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub region: Option<String>,
    pub zone: String,
    pub zone_id: String,
    /// The VPC's CIDR blocks; empty when unknown (private ranges are then `unknown`, not
    /// `cross_vpc`).
    pub vpc_cidrs: Vec<IpNet>,
    pub instance_id: Option<String>,
    pub account_id: Option<String>,
}

/// Which source a subnet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The static TOML file; overrides every other source for the same CIDR.
    StaticFile,
    /// The host's own interfaces (the default when nothing is configured).
    HostInterfaces,
    /// EC2 `DescribeSubnets`.
    Aws,
}

impl Source {
    /// Short name shown by `azflow topology`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StaticFile => "file",
            Self::HostInterfaces => "interfaces",
            Self::Aws => "aws",
        }
    }
}

/// One subnet and the AZ it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub cidr: IpNet,
    pub zone: String,
    pub zone_id: String,
    pub name: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    /// The subnet's region, when known; set it for peered VPCs in other regions.
    pub region: Option<String>,
    pub source: Source,
}

/// The host's identity plus every known subnet, sorted by CIDR, one entry per CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    host: HostIdentity,
    subnets: Vec<Subnet>,
    /// Routes, NAT gateways, peerings, endpoints and AWS ranges: what decides billing paths.
    routing: Routing,
}

impl Topology {
    /// Builds a topology; CIDRs are truncated to their network address, and a later subnet with
    /// the same CIDR replaces an earlier one.
    pub fn new(host: HostIdentity, subnets: impl IntoIterator<Item = Subnet>) -> Self {
        let mut by_cidr = std::collections::BTreeMap::new();
        for mut s in subnets {
            s.cidr = s.cidr.trunc();
            by_cidr.insert(s.cidr, s);
        }
        let mut host = host;
        host.vpc_cidrs = host.vpc_cidrs.iter().map(IpNet::trunc).collect();
        host.vpc_cidrs.sort();
        host.vpc_cidrs.dedup();
        Self {
            host,
            subnets: by_cidr.into_values().collect(),
            routing: Routing::default(),
        }
    }

    /// The same topology with `routing`.
    #[must_use]
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    pub fn host(&self) -> &HostIdentity {
        &self.host
    }

    /// Every subnet, sorted by CIDR (IPv4 first).
    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// The subnet with exactly this CIDR.
    pub fn subnet(&self, cidr: &IpNet) -> Option<&Subnet> {
        self.subnets
            .binary_search_by(|s| s.cidr.cmp(cidr))
            .ok()
            .and_then(|i| self.subnets.get(i))
    }

    /// Layers `overrides` (the static file) on `base` (AWS): a subnet of `overrides` replaces
    /// the `base` subnet with the same CIDR, and the host's zone comes from `overrides`. Host
    /// fields `overrides` leaves unset (region, instance, account, VPC CIDRs) keep `base`'s.
    pub fn merge(base: Topology, overrides: Topology) -> Topology {
        let (b, o) = (base.host, overrides.host);
        let host = HostIdentity {
            region: o.region.or(b.region),
            zone: o.zone,
            zone_id: o.zone_id,
            vpc_cidrs: if o.vpc_cidrs.is_empty() {
                b.vpc_cidrs
            } else {
                o.vpc_cidrs
            },
            instance_id: o.instance_id.or(b.instance_id),
            account_id: o.account_id.or(b.account_id),
        };
        let routing = merge_routing(base.routing, overrides.routing);
        Topology::new(host, base.subnets.into_iter().chain(overrides.subnets)).with_routing(routing)
    }

    /// Class of traffic from this host to `subnet`: same AZ ID → `same_az`; a known region other
    /// than the host's → `cross_vpc`; otherwise `cross_az`.
    pub fn class_of_subnet(&self, subnet: &Subnet) -> TrafficClass {
        if subnet.zone_id == self.host.zone_id {
            return TrafficClass::SameAz;
        }
        match (&subnet.region, &self.host.region) {
            (Some(theirs), Some(ours)) if theirs != ours => TrafficClass::CrossVpc,
            _ => TrafficClass::CrossAz,
        }
    }
}

/// `overrides` (the static file) wins per route destination and per NAT gateway, peering and
/// endpoint id; AWS ranges come from `overrides` when it has any.
fn merge_routing(base: Routing, overrides: Routing) -> Routing {
    fn by_key<T, K: Ord>(base: Vec<T>, over: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
        let mut m = std::collections::BTreeMap::new();
        for item in base.into_iter().chain(over) {
            m.insert(key(&item), item);
        }
        m.into_values().collect()
    }
    Routing {
        routes: by_key(base.routes, overrides.routes, |r| r.dest),
        nat_gateways: by_key(base.nat_gateways, overrides.nat_gateways, |n| n.id.clone()),
        peerings: by_key(base.peerings, overrides.peerings, |p| p.id.clone()),
        interface_endpoints: by_key(
            base.interface_endpoints,
            overrides.interface_endpoints,
            |e| e.id.clone(),
        ),
        public_ranges: if overrides.public_ranges.is_empty() {
            base.public_ranges
        } else {
            overrides.public_ranges
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    pub(crate) fn host(zone_id: &str, vpc: &[&str]) -> HostIdentity {
        HostIdentity {
            region: Some("us-east-1".into()),
            zone: "us-east-1a".into(),
            zone_id: zone_id.into(),
            vpc_cidrs: vpc.iter().map(|s| net(s)).collect(),
            instance_id: None,
            account_id: None,
        }
    }

    pub(crate) fn subnet(cidr: &str, zone_id: &str, source: Source) -> Subnet {
        Subnet {
            cidr: net(cidr),
            zone: format!("zone-of-{zone_id}"),
            zone_id: zone_id.into(),
            name: None,
            subnet_id: None,
            vpc_id: None,
            region: None,
            source,
        }
    }

    #[test]
    fn classes_follow_zone_id_then_region() {
        let t = Topology::new(host("use1-az1", &[]), []);
        let same = subnet("10.0.1.0/24", "use1-az1", Source::StaticFile);
        let other = subnet("10.0.2.0/24", "use1-az2", Source::StaticFile);
        let mut far = subnet("10.9.0.0/24", "usw2-az1", Source::StaticFile);
        far.region = Some("us-west-2".into());
        let mut near_peer = subnet("10.8.0.0/24", "use1-az3", Source::StaticFile);
        near_peer.region = Some("us-east-1".into());
        assert_eq!(t.class_of_subnet(&same), TrafficClass::SameAz);
        assert_eq!(t.class_of_subnet(&other), TrafficClass::CrossAz);
        assert_eq!(t.class_of_subnet(&far), TrafficClass::CrossVpc);
        assert_eq!(t.class_of_subnet(&near_peer), TrafficClass::CrossAz);
    }

    #[test]
    fn unknown_host_region_never_makes_cross_vpc() {
        let mut h = host("use1-az1", &[]);
        h.region = None;
        let t = Topology::new(h, []);
        let mut far = subnet("10.9.0.0/24", "usw2-az1", Source::Aws);
        far.region = Some("us-west-2".into());
        assert_eq!(t.class_of_subnet(&far), TrafficClass::CrossAz);
    }

    #[test]
    fn new_sorts_truncates_and_keeps_the_last_duplicate() {
        let t = Topology::new(
            host("use1-az1", &["10.0.0.0/16", "10.0.0.0/16"]),
            [
                subnet("fd00::/64", "use1-az1", Source::Aws),
                subnet("10.0.2.0/24", "use1-az2", Source::Aws),
                subnet("10.0.1.7/24", "use1-az1", Source::Aws),
                subnet("10.0.2.0/24", "use1-az3", Source::Aws),
            ],
        );
        let cidrs: Vec<String> = t.subnets().iter().map(|s| s.cidr.to_string()).collect();
        assert_eq!(cidrs, ["10.0.1.0/24", "10.0.2.0/24", "fd00::/64"]);
        assert_eq!(
            t.subnet(&net("10.0.2.0/24")).map(|s| s.zone_id.as_str()),
            Some("use1-az3")
        );
        assert_eq!(t.host().vpc_cidrs, [net("10.0.0.0/16")]);
    }

    #[test]
    fn static_file_overrides_aws_for_the_same_cidr() {
        let mut aws_host = host("use1-az9", &["10.0.0.0/16"]);
        aws_host.instance_id = Some("i-0abc".into());
        let aws = Topology::new(
            aws_host,
            [
                subnet("10.0.1.0/24", "use1-az1", Source::Aws),
                subnet("10.0.2.0/24", "use1-az2", Source::Aws),
            ],
        );
        let mut file_host = host("use1-az1", &[]);
        file_host.region = None;
        let file = Topology::new(
            file_host,
            [subnet("10.0.2.0/24", "use1-az4", Source::StaticFile)],
        );
        let t = Topology::merge(aws, file);
        assert_eq!(t.host().zone_id, "use1-az1");
        assert_eq!(t.host().region.as_deref(), Some("us-east-1"));
        assert_eq!(t.host().instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(t.host().vpc_cidrs, [net("10.0.0.0/16")]);
        let two = t.subnet(&net("10.0.2.0/24")).expect("merged");
        assert_eq!(
            (two.zone_id.as_str(), two.source),
            ("use1-az4", Source::StaticFile)
        );
        let one = t.subnet(&net("10.0.1.0/24")).expect("kept");
        assert_eq!(one.source, Source::Aws);
    }
}
