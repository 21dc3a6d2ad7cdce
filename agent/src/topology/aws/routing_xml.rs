//! The EC2 Query API's XML for what decides billing paths: `DescribeRouteTables`,
//! `DescribeNatGateways`, `DescribeVpcEndpoints` and `DescribeVpcPeeringConnections` pages. Pure
//! functions over text (fuzzed in `fuzz/`): any input gives a value or an error, never a panic.
//!
//! ```xml
//! <DescribeRouteTablesResponse><routeTableSet><item>
//!   <routeTableId>rtb-1</routeTableId> <vpcId>vpc-1</vpcId>
//!   <associationSet><item><subnetId>subnet-a</subnetId><main>false</main></item></associationSet>
//!   <routeSet><item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock>
//!     <natGatewayId>nat-1</natGatewayId><state>active</state></item></routeSet>
//! </item></routeTableSet><nextToken>…</nextToken></DescribeRouteTablesResponse>
//! ```

use ipnet::IpNet;
use roxmltree::{Document, Node, ParsingOptions};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingXmlError {
    #[error("not XML ({0})")]
    Syntax(String),
    #[error("expected <{expected}>, found <{found}>")]
    Root {
        expected: &'static str,
        found: String,
    },
    #[error("{what} {index} has no {field}")]
    Missing {
        what: &'static str,
        index: usize,
        field: &'static str,
    },
    #[error("{what} {index}: {field} {value:?} is not a valid CIDR")]
    BadCidr {
        what: &'static str,
        index: usize,
        field: &'static str,
        value: String,
    },
}

/// One page of any `Describe…` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Where a route goes: a CIDR, or a prefix list (gateway endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDest {
    Cidr(IpNet),
    PrefixList(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRoute {
    pub dest: RouteDest,
    /// The target's id (`local`, `igw-…`, `nat-…`, `pcx-…`, `tgw-…`, `vpce-…`, `eni-…`, …).
    pub target: String,
    /// `blackhole` routes drop packets: they are left out of the table.
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRouteTable {
    pub id: String,
    pub vpc_id: Option<String>,
    /// Subnets explicitly associated.
    pub subnets: Vec<String>,
    /// The VPC's main table (used by subnets with no explicit association).
    pub main: bool,
    pub routes: Vec<AwsRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNatGateway {
    pub id: String,
    pub subnet_id: String,
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsVpcEndpoint {
    pub id: String,
    /// `Gateway`, `Interface`, `GatewayLoadBalancer`.
    pub kind: String,
    /// `com.amazonaws.us-east-1.s3`.
    pub service: String,
    pub route_tables: Vec<String>,
    pub subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSide {
    pub vpc_id: Option<String>,
    pub region: Option<String>,
    pub cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsPeering {
    pub id: String,
    pub status: Option<String>,
    pub requester: PeerSide,
    pub accepter: PeerSide,
}

const NODES_LIMIT: u32 = 1_000_000;

fn parse(text: &str) -> Result<Document<'_>, RoutingXmlError> {
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: NODES_LIMIT,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, opts).map_err(|e| RoutingXmlError::Syntax(e.to_string()))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn items<'a, 'i: 'a>(node: Option<Node<'a, 'i>>) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.into_iter().flat_map(|n| {
        n.children()
            .filter(|c| c.is_element() && c.tag_name().name() == "item")
    })
}

fn text_of(node: Node<'_, '_>, name: &str) -> Option<String> {
    let t = child(node, name)?.text()?.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The text of each `<item>` of a string set (`<routeTableIdSet><item>rtb-1</item>…`).
fn strings(node: Node<'_, '_>, set: &str) -> Vec<String> {
    items(child(node, set))
        .filter_map(|i| {
            i.text()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// Parses a page whose root is `root` and whose items sit in `set`.
fn page<T>(
    text: &str,
    root: &'static str,
    set: &str,
    item: impl Fn(usize, Node<'_, '_>) -> Result<T, RoutingXmlError>,
) -> Result<Page<T>, RoutingXmlError> {
    let doc = parse(text)?;
    let r = doc.root_element();
    if r.tag_name().name() != root {
        return Err(RoutingXmlError::Root {
            expected: root,
            found: r.tag_name().name().to_owned(),
        });
    }
    let mut out = Page {
        items: Vec::new(),
        next_token: text_of(r, "nextToken"),
    };
    for (index, node) in items(child(r, set)).enumerate() {
        out.items.push(item(index, node)?);
    }
    Ok(out)
}

fn cidr(
    what: &'static str,
    index: usize,
    field: &'static str,
    value: String,
) -> Result<IpNet, RoutingXmlError> {
    value
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| RoutingXmlError::BadCidr {
            what,
            index,
            field,
            value,
        })
}

fn required(
    what: &'static str,
    index: usize,
    node: Node<'_, '_>,
    field: &'static str,
) -> Result<String, RoutingXmlError> {
    text_of(node, field).ok_or(RoutingXmlError::Missing { what, index, field })
}

const TARGET_FIELDS: [&str; 9] = [
    "natGatewayId",
    "transitGatewayId",
    "vpcPeeringConnectionId",
    "egressOnlyInternetGatewayId",
    "gatewayId",
    "networkInterfaceId",
    "instanceId",
    "localGatewayId",
    "carrierGatewayId",
];

pub fn parse_route_tables(text: &str) -> Result<Page<AwsRouteTable>, RoutingXmlError> {
    const W: &str = "route table";
    page(
        text,
        "DescribeRouteTablesResponse",
        "routeTableSet",
        |index, t| {
            let mut routes = Vec::new();
            for r in items(child(t, "routeSet")) {
                let dest = if let Some(v) = text_of(r, "destinationCidrBlock") {
                    RouteDest::Cidr(cidr(W, index, "destinationCidrBlock", v)?)
                } else if let Some(v) = text_of(r, "destinationIpv6CidrBlock") {
                    RouteDest::Cidr(cidr(W, index, "destinationIpv6CidrBlock", v)?)
                } else if let Some(v) = text_of(r, "destinationPrefixListId") {
                    RouteDest::PrefixList(v)
                } else {
                    return Err(RoutingXmlError::Missing {
                        what: W,
                        index,
                        field: "destinationCidrBlock",
                    });
                };
                let target = TARGET_FIELDS
                    .iter()
                    .find_map(|f| text_of(r, f))
                    .unwrap_or_else(|| "unknown".to_owned());
                let active = text_of(r, "state").is_none_or(|s| s != "blackhole");
                routes.push(AwsRoute {
                    dest,
                    target,
                    active,
                });
            }
            let assoc: Vec<Node<'_, '_>> = items(child(t, "associationSet")).collect();
            Ok(AwsRouteTable {
                id: required(W, index, t, "routeTableId")?,
                vpc_id: text_of(t, "vpcId"),
                subnets: assoc
                    .iter()
                    .filter_map(|a| text_of(*a, "subnetId"))
                    .collect(),
                main: assoc
                    .iter()
                    .any(|a| text_of(*a, "main").as_deref() == Some("true")),
                routes,
            })
        },
    )
}

pub fn parse_nat_gateways(text: &str) -> Result<Page<AwsNatGateway>, RoutingXmlError> {
    const W: &str = "NAT gateway";
    page(
        text,
        "DescribeNatGatewaysResponse",
        "natGatewaySet",
        |index, n| {
            Ok(AwsNatGateway {
                id: required(W, index, n, "natGatewayId")?,
                subnet_id: required(W, index, n, "subnetId")?,
                state: text_of(n, "state"),
            })
        },
    )
}

pub fn parse_vpc_endpoints(text: &str) -> Result<Page<AwsVpcEndpoint>, RoutingXmlError> {
    const W: &str = "VPC endpoint";
    page(
        text,
        "DescribeVpcEndpointsResponse",
        "vpcEndpointSet",
        |index, e| {
            Ok(AwsVpcEndpoint {
                id: required(W, index, e, "vpcEndpointId")?,
                kind: required(W, index, e, "vpcEndpointType")?,
                service: required(W, index, e, "serviceName")?,
                route_tables: strings(e, "routeTableIdSet"),
                subnets: strings(e, "subnetIdSet"),
            })
        },
    )
}

pub fn parse_peerings(text: &str) -> Result<Page<AwsPeering>, RoutingXmlError> {
    const W: &str = "peering connection";
    page(
        text,
        "DescribeVpcPeeringConnectionsResponse",
        "vpcPeeringConnectionSet",
        |index, p| {
            let side = |name: &'static str| -> Result<PeerSide, RoutingXmlError> {
                let Some(info) = child(p, name) else {
                    return Err(RoutingXmlError::Missing {
                        what: W,
                        index,
                        field: name,
                    });
                };
                let mut cidrs = Vec::new();
                let v4 = text_of(info, "cidrBlock").into_iter().chain(
                    items(child(info, "cidrBlockSet")).filter_map(|i| text_of(i, "cidrBlock")),
                );
                for v in v4 {
                    cidrs.push(cidr(W, index, "cidrBlock", v)?);
                }
                for v in items(child(info, "ipv6CidrBlockSet"))
                    .filter_map(|i| text_of(i, "ipv6CidrBlock"))
                {
                    cidrs.push(cidr(W, index, "ipv6CidrBlock", v)?);
                }
                cidrs.sort();
                cidrs.dedup();
                Ok(PeerSide {
                    vpc_id: text_of(info, "vpcId"),
                    region: text_of(info, "region"),
                    cidrs,
                })
            };
            Ok(AwsPeering {
                id: required(W, index, p, "vpcPeeringConnectionId")?,
                status: child(p, "status").and_then(|s| text_of(s, "code")),
                requester: side("requesterVpcInfo")?,
                accepter: side("accepterVpcInfo")?,
            })
        },
    )
}

#[cfg(test)]
mod tests;
