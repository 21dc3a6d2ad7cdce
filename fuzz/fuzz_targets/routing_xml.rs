//! EC2 `DescribeRouteTables`, `DescribeNatGateways`, `DescribeVpcEndpoints` and
//! `DescribeVpcPeeringConnections` pages: any text parses to a value or an error.

#![no_main]

use azflow::topology::aws::routing_xml::{
    RouteDest, parse_nat_gateways, parse_peerings, parse_route_tables, parse_vpc_endpoints,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(page) = parse_route_tables(text) {
        // Accepted CIDRs are network addresses, as the route lookup assumes.
        for r in page.items.iter().flat_map(|t| &t.routes) {
            if let RouteDest::Cidr(n) = &r.dest {
                assert_eq!(*n, n.trunc());
            }
            assert!(!r.target.is_empty());
        }
    }
    if let Ok(page) = parse_nat_gateways(text) {
        assert!(
            page.items
                .iter()
                .all(|n| !n.id.is_empty() && !n.subnet_id.is_empty())
        );
    }
    let _ = parse_vpc_endpoints(text);
    let _ = parse_peerings(text);
});
