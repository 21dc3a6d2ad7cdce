//! Billing paths: which way AWS bills the bytes to a destination prefix, decided from the prefix
//! and this host's route table (the most specific route wins, as in the VPC router). Pure.
//!
//! The kernel still only knows a slot, a zone index and today's [`TrafficClass`]; the path, the
//! AZ of the hop (NAT gateway, interface endpoint, peer subnet) and the price ride on the slot's
//! labels in user space.
//!
//! | path (`path` label)                 | when                                                   | class it refines |
//! |-------------------------------------|--------------------------------------------------------|------------------|
//! | `same_az`, `cross_az`               | local route (or none) to a subnet, by AZ ID            | same             |
//! | `cross_vpc`, `internet`, `unknown`  | local route (or none), no subnet known                 | same             |
//! | `cross_region`                      | a subnet, peering or AWS range in another region       | `cross_vpc`, `internet` |
//! | `nat_gateway_{same,cross}_az`       | route to a NAT gateway; AZ of the NAT vs this host     | any              |
//! | `peering_{same,cross}_az`           | route to a same-region peering; AZ of the peer subnet  | any              |
//! | `transit_gateway`                   | route to a transit gateway                             | any              |
//! | `vpc_endpoint_gateway`              | route to a gateway endpoint (S3, DynamoDB)             | `internet`       |
//! | `vpc_endpoint_interface_{same,cross}_az` | an interface endpoint's address                   | `unknown`, `same_az`, `cross_az` |
//! | `public_ip_same_region`             | internet gateway route to an AWS range of this region  | `internet`       |
//!
//! A peer subnet whose AZ is unknown is taken as cross-AZ: AWS only waives the charge when both
//! ends share an AZ ID, so the unknown case is priced at the upper bound.

use agent_common::TrafficClass;
use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Hop {
    SameAz,
    CrossAz,
}

impl Hop {
    /// Same AZ only when both AZ IDs are known and equal.
    pub fn between(host_zone_id: &str, other: Option<&str>) -> Self {
        match other {
            Some(z) if z == host_zone_id => Self::SameAz,
            _ => Self::CrossAz,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub enum BillingPath {
    SameAz,
    CrossAz,
    CrossVpc,
    Internet,
    #[default]
    Unknown,
    CrossRegion,
    NatGateway(Hop),
    Peering(Hop),
    TransitGateway,
    VpcEndpointGateway,
    VpcEndpointInterface(Hop),
    PublicIpSameRegion,
}

impl BillingPath {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SameAz => "same_az",
            Self::CrossAz => "cross_az",
            Self::CrossVpc => "cross_vpc",
            Self::Internet => "internet",
            Self::Unknown => "unknown",
            Self::CrossRegion => "cross_region",
            Self::NatGateway(Hop::SameAz) => "nat_gateway_same_az",
            Self::NatGateway(Hop::CrossAz) => "nat_gateway_cross_az",
            Self::Peering(Hop::SameAz) => "peering_same_az",
            Self::Peering(Hop::CrossAz) => "peering_cross_az",
            Self::TransitGateway => "transit_gateway",
            Self::VpcEndpointGateway => "vpc_endpoint_gateway",
            Self::VpcEndpointInterface(Hop::SameAz) => "vpc_endpoint_interface_same_az",
            Self::VpcEndpointInterface(Hop::CrossAz) => "vpc_endpoint_interface_cross_az",
            Self::PublicIpSameRegion => "public_ip_same_region",
        }
    }

    /// The path of a class when no route says otherwise.
    pub const fn of_class(class: TrafficClass) -> Self {
        match class {
            TrafficClass::SameAz => Self::SameAz,
            TrafficClass::CrossAz => Self::CrossAz,
            TrafficClass::CrossVpc => Self::CrossVpc,
            TrafficClass::Internet => Self::Internet,
            TrafficClass::Unknown => Self::Unknown,
        }
    }

    /// What AWS charges on this path, each a line of the price table. Empty: free, or not known
    /// well enough to price (`cross_vpc`, `unknown`).
    pub fn charges(self) -> &'static [Charge] {
        use Charge as C;
        match self {
            Self::SameAz
            | Self::CrossVpc
            | Self::Unknown
            | Self::Peering(Hop::SameAz)
            | Self::VpcEndpointGateway => &[],
            Self::CrossAz | Self::Peering(Hop::CrossAz) => &[C::CrossAz],
            Self::Internet => &[C::Internet],
            Self::CrossRegion => &[C::InterRegion],
            // Bytes through a NAT gateway are processed by it and then leave for the internet.
            Self::NatGateway(Hop::SameAz) => &[C::NatGateway, C::Internet],
            Self::NatGateway(Hop::CrossAz) => &[C::NatGateway, C::Internet, C::CrossAz],
            Self::TransitGateway => &[C::TransitGateway],
            Self::VpcEndpointInterface(Hop::SameAz) => &[C::InterfaceEndpoint],
            Self::VpcEndpointInterface(Hop::CrossAz) => &[C::InterfaceEndpoint, C::CrossAz],
            Self::PublicIpSameRegion => &[C::PublicIp],
        }
    }
}

/// One line of the price table (USD per GB, per direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Charge {
    CrossAz,
    Internet,
    InterRegion,
    PublicIp,
    NatGateway,
    TransitGateway,
    InterfaceEndpoint,
}

impl Charge {
    pub const ALL: [Self; 7] = [
        Self::CrossAz,
        Self::Internet,
        Self::InterRegion,
        Self::PublicIp,
        Self::NatGateway,
        Self::TransitGateway,
        Self::InterfaceEndpoint,
    ];

    /// Its key in the price table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CrossAz => "cross_az",
            Self::Internet => "internet",
            Self::InterRegion => "inter_region",
            Self::PublicIp => "public_ip",
            Self::NatGateway => "nat_gateway",
            Self::TransitGateway => "transit_gateway",
            Self::InterfaceEndpoint => "interface_endpoint",
        }
    }
}

/// The price of a path per direction (`Direction as usize`), in nano-USD per GB of
/// `bytes_per_gb` bytes: integers, so a cost is exactly bytes × price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct PathPrice {
    pub nano_usd_per_gb: [u64; 2],
    pub bytes_per_gb: u64,
}

impl PathPrice {
    /// USD for `bytes` in direction index `dir` (0 transmit, 1 receive).
    pub fn cost_usd(&self, dir: usize, bytes: u64) -> f64 {
        let nano = self.nano_usd_per_gb.get(dir).copied().unwrap_or(0);
        if self.bytes_per_gb == 0 {
            return 0.0;
        }
        // u128: bytes × nano-USD never overflows, and the one division is the only rounding.
        let numerator = u128::from(bytes) * u128::from(nano);
        numerator as f64 / (self.bytes_per_gb as f64 * 1e9)
    }
}

/// What a slot's bytes are billed as: the path, the AZ ID of its hop, and its price.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct Billing {
    pub path: BillingPath,
    pub hop_zone_id: Option<String>,
    pub price: PathPrice,
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteTarget {
    /// Inside the VPC (implicit for every VPC CIDR).
    Local,
    /// `igw-…` or `eigw-…`.
    InternetGateway(String),
    NatGateway(String),
    Peering(String),
    TransitGateway(String),
    /// `vpce-…` of a gateway endpoint (its route's prefix list, expanded to CIDRs).
    GatewayEndpoint(String),
    /// An interface endpoint's address (not a VPC route: a /32 or /128 per ENI address).
    InterfaceEndpoint(String),
    /// Anything else (virtual private gateway, ENI, blackhole …): the class decides.
    Other(String),
}

impl RouteTarget {
    /// Reads an AWS target id by its prefix (`nat-`, `pcx-`, `tgw-`, `vpce-`, `igw-`, `eigw-`,
    /// `local`).
    pub fn from_id(id: &str) -> Self {
        let id = id.trim();
        let owned = id.to_owned();
        match id.split('-').next().unwrap_or("") {
            "local" => Self::Local,
            "igw" | "eigw" => Self::InternetGateway(owned),
            "nat" => Self::NatGateway(owned),
            "pcx" => Self::Peering(owned),
            "tgw" => Self::TransitGateway(owned),
            "vpce" => Self::GatewayEndpoint(owned),
            _ => Self::Other(owned),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::InternetGateway(id)
            | Self::NatGateway(id)
            | Self::Peering(id)
            | Self::TransitGateway(id)
            | Self::GatewayEndpoint(id)
            | Self::InterfaceEndpoint(id)
            | Self::Other(id) => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dest: IpNet,
    pub target: RouteTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatGateway {
    pub id: String,
    /// AZ ID of the NAT's subnet; `None` when unknown (then priced as cross-AZ).
    pub zone_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peering {
    pub id: String,
    /// The peer VPC's region; `None`: the host's.
    pub region: Option<String>,
    pub cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceEndpoint {
    pub id: String,
    pub zone_id: Option<String>,
    /// Its ENI addresses, as /32 or /128 (or wider) prefixes.
    pub addresses: Vec<IpNet>,
}

/// AWS's published ranges (ip-ranges.json), relative to the host's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeGroup {
    SameRegion,
    OtherRegion,
}

/// Everything besides subnets that decides a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The host subnet's route table (without the implicit local routes).
    pub routes: Vec<Route>,
    pub nat_gateways: Vec<NatGateway>,
    pub peerings: Vec<Peering>,
    pub interface_endpoints: Vec<InterfaceEndpoint>,
    /// Public AWS prefixes by region group (from `--aws-ip-ranges`).
    pub public_ranges: Vec<(IpNet, RangeGroup)>,
}

impl Routing {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The routes the VPC router uses, plus a `local` route per VPC CIDR and a route per
    /// interface-endpoint address; sorted, one per destination (a stated route wins over an
    /// implicit one).
    pub fn effective_routes(&self, vpc_cidrs: &[IpNet]) -> Vec<Route> {
        let mut by_dest = std::collections::BTreeMap::new();
        for net in vpc_cidrs {
            by_dest.insert(net.trunc(), RouteTarget::Local);
        }
        for r in &self.routes {
            by_dest.insert(r.dest.trunc(), r.target.clone());
        }
        for e in &self.interface_endpoints {
            for a in &e.addresses {
                by_dest.insert(a.trunc(), RouteTarget::InterfaceEndpoint(e.id.clone()));
            }
        }
        by_dest
            .into_iter()
            .map(|(dest, target)| Route { dest, target })
            .collect()
    }

    pub fn nat(&self, id: &str) -> Option<&NatGateway> {
        self.nat_gateways.iter().find(|n| n.id == id)
    }

    pub fn peering(&self, id: &str) -> Option<&Peering> {
        self.peerings.iter().find(|p| p.id == id)
    }

    pub fn interface_endpoint(&self, id: &str) -> Option<&InterfaceEndpoint> {
        self.interface_endpoints.iter().find(|e| e.id == id)
    }
}

/// The route the VPC router picks for every address of `prefix` that no more specific kernel
/// prefix takes: the longest route destination containing the whole prefix. (A route more
/// specific than `prefix` is a kernel prefix of its own.)
pub fn route_for<'r>(routes: &'r [Route], prefix: &IpNet) -> Option<&'r Route> {
    routes
        .iter()
        .filter(|r| {
            r.dest.prefix_len() <= prefix.prefix_len() && r.dest.contains(&prefix.network())
        })
        .max_by_key(|r| r.dest.prefix_len())
}

/// What the path decision needs to know about a destination prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'a> {
    /// The class the kernel gives it (from its subnet or catch-all).
    pub class: TrafficClass,
    /// The AZ ID of its subnet, when it is one.
    pub zone_id: Option<&'a str>,
    /// The region of its subnet, when known.
    pub region: Option<&'a str>,
    /// When it is an AWS public range.
    pub range: Option<RangeGroup>,
}

/// A path and the AZ ID of its hop (NAT gateway, endpoint ENI, peer subnet), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub path: BillingPath,
    pub hop_zone_id: Option<String>,
}

/// The path from this host (in `host_zone_id`, `host_region`) to `dest` through `route`.
pub fn decide(
    routing: &Routing,
    host_zone_id: &str,
    host_region: Option<&str>,
    dest: &Destination<'_>,
    route: Option<&Route>,
) -> Decided {
    let other_region = |r: Option<&str>| matches!((r, host_region), (Some(a), Some(b)) if a != b);
    let plain = |path| Decided {
        path,
        hop_zone_id: None,
    };
    let by_class = || {
        if dest.range == Some(RangeGroup::OtherRegion) || other_region(dest.region) {
            return plain(BillingPath::CrossRegion);
        }
        plain(BillingPath::of_class(dest.class))
    };
    let Some(route) = route else {
        return by_class();
    };
    match &route.target {
        RouteTarget::Local | RouteTarget::Other(_) => by_class(),
        RouteTarget::InternetGateway(_) => match dest.range {
            Some(RangeGroup::SameRegion) => plain(BillingPath::PublicIpSameRegion),
            Some(RangeGroup::OtherRegion) => plain(BillingPath::CrossRegion),
            None => by_class(),
        },
        RouteTarget::NatGateway(id) => {
            let zone = routing.nat(id).and_then(|n| n.zone_id.clone());
            Decided {
                path: BillingPath::NatGateway(Hop::between(host_zone_id, zone.as_deref())),
                hop_zone_id: zone,
            }
        }
        RouteTarget::Peering(id) => {
            let peer_region = routing.peering(id).and_then(|p| p.region.as_deref());
            if other_region(peer_region) || other_region(dest.region) {
                return plain(BillingPath::CrossRegion);
            }
            Decided {
                path: BillingPath::Peering(Hop::between(host_zone_id, dest.zone_id)),
                hop_zone_id: dest.zone_id.map(str::to_owned),
            }
        }
        RouteTarget::TransitGateway(_) => plain(BillingPath::TransitGateway),
        RouteTarget::GatewayEndpoint(_) => plain(BillingPath::VpcEndpointGateway),
        RouteTarget::InterfaceEndpoint(id) => {
            let zone = routing
                .interface_endpoint(id)
                .and_then(|e| e.zone_id.clone());
            Decided {
                path: BillingPath::VpcEndpointInterface(Hop::between(
                    host_zone_id,
                    zone.as_deref(),
                )),
                hop_zone_id: zone,
            }
        }
    }
}

#[cfg(test)]
mod tests;
