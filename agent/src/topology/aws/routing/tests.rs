use std::path::Path;

use super::*;
use crate::topology::{
    aws::{imds::Interface, routing_xml},
    ip_ranges,
    paths::RangeGroup,
};

const ROUTE_TABLES: &str = include_str!("../routing_xml/fixtures/describe_route_tables.xml");
const NAT_GATEWAYS: &str = include_str!("../routing_xml/fixtures/describe_nat_gateways.xml");
const ENDPOINTS: &str = include_str!("../routing_xml/fixtures/describe_vpc_endpoints.xml");
const PEERINGS: &str = include_str!("../routing_xml/fixtures/describe_vpc_peering_connections.xml");

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn identity(subnet: &str) -> InstanceIdentity {
    InstanceIdentity {
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        zone_id: "use1-az1".into(),
        instance_id: None,
        account_id: None,
        interfaces: vec![Interface {
            mac: "0e:00:00:00:00:01".into(),
            vpc_id: Some("vpc-0a0a0a0a0a0a0a0a0".into()),
            subnet_id: Some(subnet.into()),
            subnet_v4: Some("10.0.0.0/20".parse().unwrap_or_else(|e| panic!("{e}"))),
            subnets_v6: vec![],
            vpc_cidrs: vec![net("10.0.0.0/16")],
        }],
    }
}

fn replies() -> RoutingReplies {
    let ok = |e: routing_xml::RoutingXmlError| -> ! { panic!("{e}") };
    RoutingReplies {
        route_tables: routing_xml::parse_route_tables(ROUTE_TABLES)
            .unwrap_or_else(|e| ok(e))
            .items,
        nat_gateways: routing_xml::parse_nat_gateways(NAT_GATEWAYS)
            .unwrap_or_else(|e| ok(e))
            .items,
        endpoints: routing_xml::parse_vpc_endpoints(ENDPOINTS)
            .unwrap_or_else(|e| ok(e))
            .items,
        peerings: routing_xml::parse_peerings(PEERINGS)
            .unwrap_or_else(|e| ok(e))
            .items,
    }
}

fn subnets() -> Vec<AwsSubnet> {
    vec![AwsSubnet {
        subnet_id: "subnet-0b11b11b11b11b11b".into(),
        vpc_id: "vpc-0a0a0a0a0a0a0a0a0".into(),
        cidr_v4: Some("10.0.16.0/20".parse().unwrap_or_else(|e| panic!("{e}"))),
        cidrs_v6: vec![],
        zone: "us-east-1b".into(),
        zone_id: "use1-az2".into(),
        name: None,
    }]
}

const RANGES: &str = r#"{"prefixes": [
 {"ip_prefix": "52.216.0.0/15", "region": "us-east-1", "service": "S3"},
 {"ip_prefix": "3.5.0.0/19", "region": "us-east-1", "service": "S3"},
 {"ip_prefix": "35.80.0.0/12", "region": "us-west-2", "service": "EC2"}]}"#;

#[test]
fn the_host_subnets_table_with_its_targets_resolved() {
    let ranges =
        ip_ranges::parse_str(RANGES, Path::new("r.json")).unwrap_or_else(|e| panic!("{e}"));
    let r = routing_from(
        &identity("subnet-0a11a11a11a11a11a"),
        &subnets(),
        &replies(),
        Some(&ranges),
    );
    let routes: Vec<(String, String)> = r
        .routes
        .iter()
        .map(|x| (x.dest.to_string(), x.target.id().to_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        ("0.0.0.0/0", "nat-0b1b1b1b1b1b1b1b1"),
        ("3.5.0.0/19", "vpce-0e0e0e0e0e0e0e0e0"),
        ("10.0.0.0/16", "local"),
        ("10.2.0.0/16", "pcx-0b0b0b0b0b0b0b0b0"),
        ("10.100.0.0/14", "tgw-0d0d0d0d0d0d0d0d0"),
        ("52.216.0.0/15", "vpce-0e0e0e0e0e0e0e0e0"),
        ("::/0", "eigw-0a0a0a0a0a0a0a0a0"),
        ("2600:1f18:4a1:e600::/56", "local"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(routes, want, "the blackhole route is left out");
    assert_eq!(
        r.nat_gateways,
        [NatGateway {
            id: "nat-0b1b1b1b1b1b1b1b1".into(),
            zone_id: Some("use1-az2".into())
        }],
        "the deleted NAT is left out; the NAT's AZ comes from its subnet"
    );
    assert_eq!(
        r.peerings,
        [Peering {
            id: "pcx-0b0b0b0b0b0b0b0b0".into(),
            region: Some("us-west-2".into()),
            cidrs: vec![
                net("10.2.0.0/16"),
                net("10.3.0.0/16"),
                net("2600:1f14:abc:de00::/56")
            ],
        }],
        "the pending peering is left out"
    );
    assert_eq!(
        r.public_ranges,
        [
            (net("3.5.0.0/19"), RangeGroup::SameRegion),
            (net("35.80.0.0/12"), RangeGroup::OtherRegion),
            (net("52.216.0.0/15"), RangeGroup::SameRegion),
        ]
    );
}

#[test]
fn an_unassociated_subnet_uses_the_main_table_and_no_ranges_drop_prefix_lists() {
    let r = routing_from(&identity("subnet-0zzz"), &subnets(), &replies(), None);
    let routes: Vec<String> = r
        .routes
        .iter()
        .map(|x| format!("{} {}", x.dest, x.target.id()))
        .collect();
    assert_eq!(
        routes,
        ["0.0.0.0/0 igw-0f0f0f0f0f0f0f0f0", "10.0.0.0/16 local"]
    );
    let r = routing_from(
        &identity("subnet-0a11a11a11a11a11a"),
        &subnets(),
        &replies(),
        None,
    );
    assert!(
        r.routes.iter().all(|x| !x.target.id().starts_with("vpce-")),
        "{:?}",
        r.routes
    );
    assert!(r.public_ranges.is_empty());
}
