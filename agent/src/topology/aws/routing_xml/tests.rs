use super::*;

const ROUTE_TABLES: &str = include_str!("fixtures/describe_route_tables.xml");
const NAT_GATEWAYS: &str = include_str!("fixtures/describe_nat_gateways.xml");
const ENDPOINTS: &str = include_str!("fixtures/describe_vpc_endpoints.xml");
const PEERINGS: &str = include_str!("fixtures/describe_vpc_peering_connections.xml");

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn route_tables_with_every_target_kind() {
    let page = parse_route_tables(ROUTE_TABLES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.next_token.as_deref(), Some("eyJ2IjoiMiJ9"));
    assert_eq!(page.items.len(), 2);
    let t = &page.items[0];
    assert_eq!((t.id.as_str(), t.main), ("rtb-1122334455667788a", false));
    assert_eq!(t.subnets, ["subnet-0a11a11a11a11a11a"]);
    let routes: Vec<(String, &str, bool)> = t
        .routes
        .iter()
        .map(|r| {
            let d = match &r.dest {
                RouteDest::Cidr(n) => n.to_string(),
                RouteDest::PrefixList(p) => p.clone(),
            };
            (d, r.target.as_str(), r.active)
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("10.0.0.0/16".into(), "local", true),
            ("2600:1f18:4a1:e600::/56".into(), "local", true),
            ("0.0.0.0/0".into(), "nat-0b1b1b1b1b1b1b1b1", true),
            ("::/0".into(), "eigw-0a0a0a0a0a0a0a0a0", true),
            ("10.2.0.0/16".into(), "pcx-0b0b0b0b0b0b0b0b0", true),
            ("10.100.0.0/14".into(), "tgw-0d0d0d0d0d0d0d0d0", true),
            ("pl-63a5400a".into(), "vpce-0e0e0e0e0e0e0e0e0", true),
            ("192.0.2.0/24".into(), "vgw-0c0c0c0c0c0c0c0c0", false),
        ]
    );
    let main = &page.items[1];
    assert!(main.main && main.subnets.is_empty());
}

#[test]
fn nat_gateways_endpoints_and_peerings() {
    let nats = parse_nat_gateways(NAT_GATEWAYS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        nats.items[0],
        AwsNatGateway {
            id: "nat-0b1b1b1b1b1b1b1b1".into(),
            subnet_id: "subnet-0b11b11b11b11b11b".into(),
            state: Some("available".into()),
        }
    );
    assert_eq!(nats.items[1].state.as_deref(), Some("deleted"));
    let eps = parse_vpc_endpoints(ENDPOINTS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eps.items[0].kind, "Gateway");
    assert_eq!(eps.items[0].service, "com.amazonaws.us-east-1.s3");
    assert_eq!(eps.items[0].route_tables, ["rtb-1122334455667788a"]);
    assert_eq!(eps.items[1].subnets, ["subnet-0b11b11b11b11b11b"]);
    let peers = parse_peerings(PEERINGS).unwrap_or_else(|e| panic!("{e}"));
    let p = &peers.items[0];
    assert_eq!(p.status.as_deref(), Some("active"));
    assert_eq!(p.accepter.region.as_deref(), Some("us-west-2"));
    assert_eq!(
        p.accepter.cidrs,
        [
            net("10.2.0.0/16"),
            net("10.3.0.0/16"),
            net("2600:1f14:abc:de00::/56")
        ]
    );
    assert_eq!(p.requester.vpc_id.as_deref(), Some("vpc-0a0a0a0a0a0a0a0a0"));
    assert_eq!(peers.items[1].status.as_deref(), Some("pending-acceptance"));
}

#[test]
fn malformed_replies_say_what_is_wrong() {
    assert!(matches!(
        parse_route_tables(&ROUTE_TABLES[..300]),
        Err(RoutingXmlError::Syntax(_))
    ));
    let e = parse_nat_gateways(ROUTE_TABLES).expect_err("wrong root");
    assert_eq!(
        e.to_string(),
        "expected <DescribeNatGatewaysResponse>, found <DescribeRouteTablesResponse>"
    );
    let bad = ROUTE_TABLES.replace("10.100.0.0/14", "10.100.0.0/40");
    assert_eq!(
        parse_route_tables(&bad).expect_err("bad cidr").to_string(),
        "route table 0: destinationCidrBlock \"10.100.0.0/40\" is not a valid CIDR"
    );
    let no_id = NAT_GATEWAYS.replace("<natGatewayId>nat-0c1c1c1c1c1c1c1c1</natGatewayId>", "");
    assert_eq!(
        parse_nat_gateways(&no_id).expect_err("missing").to_string(),
        "NAT gateway 1 has no natGatewayId"
    );
    let no_side = PEERINGS.replacen("<requesterVpcInfo>", "<x>", 1).replacen(
        "</requesterVpcInfo>",
        "</x>",
        1,
    );
    assert!(
        parse_peerings(&no_side)
            .expect_err("missing side")
            .to_string()
            .contains("requesterVpcInfo")
    );
    let dtd = "<!DOCTYPE x [<!ENTITY a \"b\">]><DescribeVpcEndpointsResponse/>";
    assert!(matches!(
        parse_vpc_endpoints(dtd),
        Err(RoutingXmlError::Syntax(_))
    ));
    let empty =
        parse_vpc_endpoints("<DescribeVpcEndpointsResponse/>").unwrap_or_else(|e| panic!("{e}"));
    assert!(empty.items.is_empty() && empty.next_token.is_none());
}
