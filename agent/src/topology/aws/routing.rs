//! The AWS routing source: this host's route table, the NAT gateways, VPC endpoints and peerings it
//! points at, read with `DescribeRouteTables`, `DescribeNatGateways`, `DescribeVpcEndpoints` and
//! `DescribeVpcPeeringConnections`, then turned into [`Routing`] (pure: [`routing_from`]).
//!
//! Gateway-endpoint routes name a prefix list; its CIDRs come from the endpoint's service in the
//! `--aws-ip-ranges` file (no file: those routes are left out, the addresses stay `internet` or
//! `nat_gateway`). Interface endpoints need their ENI addresses, which these calls do not give:
//! state them in the static file.

use super::{
    ec2::{Ec2Client, Ec2Error},
    imds::InstanceIdentity,
    routing_xml::{self, AwsNatGateway, AwsPeering, AwsRouteTable, AwsVpcEndpoint, RouteDest},
    xml::AwsSubnet,
};
use crate::topology::{
    ip_ranges::IpRanges,
    paths::{NatGateway, Peering, Route, RouteTarget, Routing},
};

/// What the four calls answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingReplies {
    pub route_tables: Vec<AwsRouteTable>,
    pub nat_gateways: Vec<AwsNatGateway>,
    pub endpoints: Vec<AwsVpcEndpoint>,
    pub peerings: Vec<AwsPeering>,
}

/// The four calls for the VPCs `vpc_ids`, in order; the first failure ends the pass (its error
/// names the action).
pub async fn describe_routing(
    ec2: &Ec2Client,
    vpc_ids: &[String],
) -> Result<RoutingReplies, Ec2Error> {
    let route_tables = ec2
        .describe(
            "DescribeRouteTables",
            &[("vpc-id", vpc_ids)],
            routing_xml::parse_route_tables,
        )
        .await?;
    let nat_gateways = ec2
        .describe(
            "DescribeNatGateways",
            &[("vpc-id", vpc_ids)],
            routing_xml::parse_nat_gateways,
        )
        .await?;
    let endpoints = ec2
        .describe(
            "DescribeVpcEndpoints",
            &[("vpc-id", vpc_ids)],
            routing_xml::parse_vpc_endpoints,
        )
        .await?;
    // A peering lists this VPC on either side: ask for both, then keep each once.
    let mut peerings = ec2
        .describe(
            "DescribeVpcPeeringConnections",
            &[("requester-vpc-info.vpc-id", vpc_ids)],
            routing_xml::parse_peerings,
        )
        .await?;
    let accepted = ec2
        .describe(
            "DescribeVpcPeeringConnections",
            &[("accepter-vpc-info.vpc-id", vpc_ids)],
            routing_xml::parse_peerings,
        )
        .await?;
    for p in accepted {
        if !peerings.iter().any(|q| q.id == p.id) {
            peerings.push(p);
        }
    }
    Ok(RoutingReplies {
        route_tables,
        nat_gateways,
        endpoints,
        peerings,
    })
}

/// Peerings that carry traffic (`pending-acceptance`, `rejected`, `deleted` … do not).
fn usable(status: Option<&str>) -> bool {
    matches!(status, None | Some("active" | "provisioning"))
}

/// The routing of the host's subnet: its explicitly associated table, else its VPC's main table.
pub fn routing_from(
    identity: &InstanceIdentity,
    subnets: &[AwsSubnet],
    replies: &RoutingReplies,
    ranges: Option<&IpRanges>,
) -> Routing {
    let primary = identity.interfaces.first();
    let host_subnet = primary.and_then(|i| i.subnet_id.as_deref());
    let host_vpc = primary.and_then(|i| i.vpc_id.as_deref());
    let tables = &replies.route_tables;
    let table = tables
        .iter()
        .find(|t| host_subnet.is_some_and(|s| t.subnets.iter().any(|x| x == s)))
        .or_else(|| {
            tables
                .iter()
                .find(|t| t.main && (t.vpc_id.as_deref() == host_vpc || t.vpc_id.is_none()))
        });

    let mut routing = Routing::default();
    for r in table.iter().flat_map(|t| &t.routes).filter(|r| r.active) {
        let target = RouteTarget::from_id(&r.target);
        match &r.dest {
            RouteDest::Cidr(dest) => routing.routes.push(Route {
                dest: *dest,
                target,
            }),
            RouteDest::PrefixList(_) => {
                // The endpoint's service names the prefix list's ranges.
                let service = replies
                    .endpoints
                    .iter()
                    .find(|e| e.id == r.target)
                    .and_then(|e| e.service.rsplit('.').next());
                let cidrs = match (service, ranges) {
                    (Some(s), Some(ranges)) => ranges.service(s, &identity.region),
                    _ => Vec::new(),
                };
                routing.routes.extend(cidrs.into_iter().map(|dest| Route {
                    dest,
                    target: target.clone(),
                }));
            }
        }
    }
    routing.routes.sort();
    routing.routes.dedup_by(|a, b| a.dest == b.dest);

    let zone_of = |subnet: &str| {
        subnets
            .iter()
            .find(|s| s.subnet_id == subnet)
            .map(|s| s.zone_id.clone())
    };
    routing.nat_gateways = replies
        .nat_gateways
        .iter()
        .filter(|n| n.state.as_deref() != Some("deleted"))
        .map(|n| NatGateway {
            id: n.id.clone(),
            zone_id: zone_of(&n.subnet_id),
        })
        .collect();

    let ours = |vpc: &Option<String>| {
        vpc.as_deref()
            .is_some_and(|v| identity.vpc_ids().iter().any(|x| x == v))
    };
    routing.peerings = replies
        .peerings
        .iter()
        .filter(|p| usable(p.status.as_deref()))
        .filter_map(|p| {
            let peer = if ours(&p.requester.vpc_id) {
                &p.accepter
            } else if ours(&p.accepter.vpc_id) {
                &p.requester
            } else {
                return None;
            };
            Some(Peering {
                id: p.id.clone(),
                region: peer.region.clone(),
                cidrs: peer.cidrs.clone(),
            })
        })
        .collect();
    if let Some(r) = ranges {
        routing.public_ranges = r.groups(&identity.region);
    }
    routing
}

#[cfg(test)]
mod tests;
