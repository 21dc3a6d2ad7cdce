//! Billing paths on the kernel table: every address gets the path of its most specific prefix,
//! and the route that prefix takes.

use std::net::IpAddr;

use agent_common::SUBNET_FLAG_UNMAPPED;

use super::*;
use crate::{
    pricing::PriceTable,
    topology::{
        model::{
            Source,
            tests::{host, net, subnet},
        },
        paths::{BillingPath, Hop, NatGateway, Peering, RangeGroup, Route, RouteTarget, Routing},
    },
};

fn routing() -> Routing {
    let route = |d: &str, t: &str| Route {
        dest: net(d),
        target: RouteTarget::from_id(t),
    };
    Routing {
        routes: vec![
            route("0.0.0.0/0", "nat-b"),
            route("::/0", "eigw-1"),
            route("10.1.0.0/16", "pcx-near"),
            route("10.2.0.0/16", "pcx-far"),
            route("10.100.0.0/14", "tgw-1"),
            route("52.216.0.0/15", "vpce-s3"),
        ],
        nat_gateways: vec![NatGateway {
            id: "nat-b".into(),
            zone_id: Some("use1-az2".into()),
        }],
        peerings: vec![
            Peering {
                id: "pcx-near".into(),
                region: None,
                cidrs: vec![],
            },
            Peering {
                id: "pcx-far".into(),
                region: Some("us-west-2".into()),
                cidrs: vec![],
            },
        ],
        interface_endpoints: vec![],
        public_ranges: vec![
            (net("3.5.0.0/19"), RangeGroup::SameRegion),
            (net("3.6.0.0/19"), RangeGroup::SameRegion),
            (net("35.80.0.0/12"), RangeGroup::OtherRegion),
        ],
    }
}

fn table() -> KernelTable {
    let mut peer_a = subnet("10.1.1.0/24", "use1-az1", Source::StaticFile);
    peer_a.vpc_id = Some("vpc-peer".into());
    let t = Topology::new(
        host("use1-az1", &["10.0.0.0/16"]),
        [
            subnet("10.0.1.0/24", "use1-az1", Source::StaticFile),
            subnet("10.0.2.0/24", "use1-az2", Source::StaticFile),
            peer_a,
            subnet("10.1.2.0/24", "use1-az3", Source::StaticFile),
        ],
    )
    .with_routing(routing());
    let mut kt = build_kernel_table(&t, &mut SlotAllocator::new(64), &mut ZoneTable::new())
        .unwrap_or_else(|e| panic!("{e}"));
    kt.apply_prices(&PriceTable::default());
    kt
}

fn at(t: &KernelTable, addr: &str) -> (BillingPath, Option<String>, TrafficClass, u8) {
    let a: IpAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
    let (_, info) = classify(t, a).unwrap_or_else(|| panic!("{addr} unclassified"));
    let l = t
        .slots
        .get(&info.slot)
        .unwrap_or_else(|| panic!("slot {} unlabelled", info.slot));
    (
        l.billing.path,
        l.billing.hop_zone_id.clone(),
        TrafficClass::from_u8(info.class),
        info.flags,
    )
}

#[test]
fn each_address_is_priced_by_its_prefix_and_route() {
    let t = table();
    let path = |a: &str| at(&t, a).0;
    // Local routes keep today's classes.
    assert_eq!(path("10.0.1.9"), BillingPath::SameAz);
    assert_eq!(path("10.0.2.9"), BillingPath::CrossAz);
    assert_eq!(
        path("10.0.9.9"),
        BillingPath::Unknown,
        "in the VPC, no subnet"
    );
    // The internet through the NAT gateway in use1-az2.
    let nat = at(&t, "8.8.8.8");
    assert_eq!(
        (nat.0, nat.1.as_deref(), nat.2),
        (
            BillingPath::NatGateway(Hop::CrossAz),
            Some("use1-az2"),
            TrafficClass::Internet
        )
    );
    // Private addresses outside the VPC with no route of their own take the default route too.
    assert_eq!(path("172.16.0.1"), BillingPath::NatGateway(Hop::CrossAz));
    // Peering: by the peer subnet's AZ ID; unknown subnet → cross-AZ.
    assert_eq!(path("10.1.1.5"), BillingPath::Peering(Hop::SameAz));
    assert_eq!(path("10.1.2.5"), BillingPath::Peering(Hop::CrossAz));
    assert_eq!(path("10.1.200.5"), BillingPath::Peering(Hop::CrossAz));
    assert_eq!(path("10.2.0.5"), BillingPath::CrossRegion);
    assert_eq!(path("10.101.0.1"), BillingPath::TransitGateway);
    assert_eq!(path("52.217.1.1"), BillingPath::VpcEndpointGateway);
    // AWS ranges behind the NAT are still NAT-processed; v6 leaves through the egress-only IGW.
    assert_eq!(path("3.5.1.1"), BillingPath::NatGateway(Hop::CrossAz));
    assert_eq!(path("2001:db8::1"), BillingPath::Internet);
    assert_eq!(path("127.0.0.1"), BillingPath::Unknown);
    // The kernel class of a routed prefix is its container's; unmapped tracking is kept.
    let peer = at(&t, "10.1.200.5");
    assert_eq!(
        (peer.2, peer.3),
        (TrafficClass::CrossVpc, SUBNET_FLAG_UNMAPPED)
    );
}

#[test]
fn prefixes_with_the_same_labels_share_one_slot() {
    let t = table();
    let slot = |a: &str| {
        let a: IpAddr = a.parse().unwrap_or_else(|e| panic!("{e}"));
        classify(&t, a).map(|(_, i)| i.slot)
    };
    // The default route and the AWS ranges under it go through the NAT with the same labels;
    // the private catch-alls too, under their own zone label.
    assert_eq!(slot("8.8.8.8"), slot("3.6.0.1"));
    assert_eq!(slot("8.8.8.8"), slot("35.80.0.1"));
    assert_eq!(slot("172.16.0.1"), slot("192.168.0.1"));
    assert_ne!(slot("8.8.8.8"), slot("172.16.0.1"));
    assert_ne!(slot("8.8.8.8"), slot("10.101.0.1"));
    // Each subnet keeps its own slot.
    assert_ne!(slot("10.1.1.5"), slot("10.1.2.5"));
    let shared = t
        .slots
        .values()
        .filter(|l| l.kind == SlotKind::Routed)
        .count();
    // NAT (internet and ranges), NAT (private catch-alls), peering with unknown AZ,
    // cross-region peering, TGW, gateway endpoint.
    assert_eq!(shared, 6, "{:#?}", t.slots);
}

#[test]
fn prices_come_from_the_table_per_path() {
    let t = table();
    let a: IpAddr = "8.8.8.8".parse().unwrap_or_else(|e| panic!("{e}"));
    let (_, info) = classify(&t, a).unwrap_or_else(|| panic!("unclassified"));
    let price = t.slots[&info.slot].billing.price;
    assert_eq!(price.nano_usd_per_gb, [145_000_000, 55_000_000]);
    assert_eq!(price.bytes_per_gb, 1 << 30);
    let a: IpAddr = "10.0.1.1".parse().unwrap_or_else(|e| panic!("{e}"));
    let (_, info) = classify(&t, a).unwrap_or_else(|| panic!("unclassified"));
    assert_eq!(t.slots[&info.slot].billing.price.nano_usd_per_gb, [0, 0]);
}

#[test]
fn no_routing_keeps_todays_table() {
    let t = Topology::new(
        host("use1-az1", &["10.0.0.0/16"]),
        [subnet("10.0.1.0/24", "use1-az1", Source::Aws)],
    );
    let kt = build_kernel_table(&t, &mut SlotAllocator::new(64), &mut ZoneTable::new())
        .unwrap_or_else(|e| panic!("{e}"));
    // The implicit local route changes no catch-all: no shared slots at all.
    assert!(
        kt.slots.values().all(|l| l.kind != SlotKind::Routed),
        "{:#?}",
        kt.slots
    );
    for l in kt.slots.values() {
        assert_eq!(l.billing.path.as_str(), l.class.as_str(), "{l:?}");
    }
}
