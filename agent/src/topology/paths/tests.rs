use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn route(dest: &str, target: &str) -> Route {
    Route {
        dest: net(dest),
        target: RouteTarget::from_id(target),
    }
}

/// Host in use1-az1 (us-east-1); NAT gateway in use1-az2; a same-region and a cross-region
/// peering; a TGW; an S3 gateway endpoint; an interface endpoint in use1-az2.
fn routing() -> Routing {
    Routing {
        routes: vec![
            route("0.0.0.0/0", "nat-0b"),
            route("::/0", "eigw-1"),
            route("10.1.0.0/16", "pcx-near"),
            route("10.2.0.0/16", "pcx-far"),
            route("10.100.0.0/14", "tgw-1"),
            route("52.216.0.0/15", "vpce-s3"),
            route("192.0.2.0/24", "vgw-1"),
        ],
        nat_gateways: vec![NatGateway {
            id: "nat-0b".into(),
            zone_id: Some("use1-az2".into()),
        }],
        peerings: vec![
            Peering {
                id: "pcx-near".into(),
                region: Some("us-east-1".into()),
                cidrs: vec![net("10.1.0.0/16")],
            },
            Peering {
                id: "pcx-far".into(),
                region: Some("us-west-2".into()),
                cidrs: vec![net("10.2.0.0/16")],
            },
        ],
        interface_endpoints: vec![InterfaceEndpoint {
            id: "vpce-if".into(),
            zone_id: Some("use1-az2".into()),
            addresses: vec![net("10.0.2.50/32")],
        }],
        public_ranges: vec![],
    }
}

fn dest(class: TrafficClass) -> Destination<'static> {
    Destination {
        class,
        zone_id: None,
        region: None,
        range: None,
    }
}

fn path_of(prefix: &str, d: Destination<'_>) -> Decided {
    let r = routing();
    let routes = r.effective_routes(&[net("10.0.0.0/16")]);
    let chosen = route_for(&routes, &net(prefix));
    decide(&r, "use1-az1", Some("us-east-1"), &d, chosen)
}

#[test]
fn the_most_specific_route_containing_the_prefix_wins() {
    let routes = routing().effective_routes(&[net("10.0.0.0/16")]);
    let target = |p: &str| route_for(&routes, &net(p)).map(|r| r.target.id().to_owned());
    assert_eq!(target("10.0.1.0/24").as_deref(), Some("local"));
    assert_eq!(target("10.1.5.0/24").as_deref(), Some("pcx-near"));
    assert_eq!(
        target("10.0.0.0/8").as_deref(),
        Some("nat-0b"),
        "wider than every VPC route"
    );
    assert_eq!(target("0.0.0.0/0").as_deref(), Some("nat-0b"));
    assert_eq!(target("52.216.4.0/24").as_deref(), Some("vpce-s3"));
    assert_eq!(target("10.0.2.50/32").as_deref(), Some("vpce-if"));
    assert_eq!(target("fd00::/8"), Some("eigw-1".into()));
    // No route at all: a v4 table without a default route.
    assert_eq!(route_for(&routes[..0], &net("8.8.8.0/24")), None);
}

#[test]
fn every_target_gives_its_path_and_hop() {
    let internet = dest(TrafficClass::Internet);
    let nat = path_of("0.0.0.0/0", internet);
    assert_eq!(nat.path, BillingPath::NatGateway(Hop::CrossAz));
    assert_eq!(nat.hop_zone_id.as_deref(), Some("use1-az2"));
    assert_eq!(nat.path.as_str(), "nat_gateway_cross_az");

    let mut peer = dest(TrafficClass::CrossAz);
    peer.zone_id = Some("use1-az1");
    let p = path_of("10.1.5.0/24", peer);
    assert_eq!(p.path, BillingPath::Peering(Hop::SameAz));
    peer.zone_id = Some("use1-az3");
    assert_eq!(
        path_of("10.1.5.0/24", peer).path,
        BillingPath::Peering(Hop::CrossAz)
    );
    peer.zone_id = None;
    assert_eq!(
        path_of("10.1.0.0/16", peer).path,
        BillingPath::Peering(Hop::CrossAz),
        "unknown AZ"
    );
    assert_eq!(
        path_of("10.2.0.0/16", dest(TrafficClass::CrossVpc)).path,
        BillingPath::CrossRegion
    );
    assert_eq!(
        path_of("10.100.0.0/14", dest(TrafficClass::CrossVpc)).path,
        BillingPath::TransitGateway
    );
    assert_eq!(
        path_of("52.216.0.0/15", internet).path,
        BillingPath::VpcEndpointGateway
    );
    let ife = path_of("10.0.2.50/32", dest(TrafficClass::CrossAz));
    assert_eq!(
        (ife.path, ife.hop_zone_id.as_deref()),
        (
            BillingPath::VpcEndpointInterface(Hop::CrossAz),
            Some("use1-az2")
        )
    );
    // A virtual private gateway is not priced by azflow: the class decides.
    assert_eq!(
        path_of("192.0.2.0/24", internet).path,
        BillingPath::Internet
    );
    // Local routes keep today's classes.
    let mut local = dest(TrafficClass::SameAz);
    local.zone_id = Some("use1-az1");
    assert_eq!(path_of("10.0.1.0/24", local).path, BillingPath::SameAz);
    assert_eq!(
        path_of("10.0.9.0/24", dest(TrafficClass::CrossAz)).path,
        BillingPath::CrossAz
    );
    // A known subnet of another region is cross_region even on a local-looking route.
    let mut far = dest(TrafficClass::CrossVpc);
    far.region = Some("eu-west-1");
    assert_eq!(path_of("10.0.9.0/24", far).path, BillingPath::CrossRegion);
}

#[test]
fn aws_ranges_through_an_internet_gateway() {
    let r = Routing {
        routes: vec![route("0.0.0.0/0", "igw-1")],
        ..Routing::default()
    };
    let routes = r.effective_routes(&[]);
    let at = |range| {
        let mut d = dest(TrafficClass::Internet);
        d.range = range;
        decide(
            &r,
            "use1-az1",
            Some("us-east-1"),
            &d,
            route_for(&routes, &net("3.5.0.0/16")),
        )
        .path
    };
    assert_eq!(
        at(Some(RangeGroup::SameRegion)),
        BillingPath::PublicIpSameRegion
    );
    assert_eq!(at(Some(RangeGroup::OtherRegion)), BillingPath::CrossRegion);
    assert_eq!(at(None), BillingPath::Internet);
}

#[test]
fn charges_follow_the_aws_price_list_lines() {
    use Charge as C;
    assert_eq!(BillingPath::SameAz.charges(), &[] as &[Charge]);
    assert_eq!(
        BillingPath::NatGateway(Hop::CrossAz).charges(),
        &[C::NatGateway, C::Internet, C::CrossAz]
    );
    assert_eq!(
        BillingPath::NatGateway(Hop::SameAz).charges(),
        &[C::NatGateway, C::Internet]
    );
    assert_eq!(
        BillingPath::Peering(Hop::SameAz).charges(),
        &[] as &[Charge]
    );
    assert_eq!(BillingPath::VpcEndpointGateway.charges(), &[] as &[Charge]);
    assert_eq!(BillingPath::PublicIpSameRegion.charges(), &[C::PublicIp]);
    for c in TrafficClass::ALL {
        assert_eq!(
            BillingPath::of_class(c).as_str(),
            c.as_str(),
            "today's classes keep their names"
        );
    }
}

#[test]
fn target_ids_by_prefix() {
    assert_eq!(RouteTarget::from_id("local"), RouteTarget::Local);
    assert_eq!(
        RouteTarget::from_id("eigw-9"),
        RouteTarget::InternetGateway("eigw-9".into())
    );
    assert_eq!(
        RouteTarget::from_id("vgw-1"),
        RouteTarget::Other("vgw-1".into())
    );
    assert_eq!(RouteTarget::from_id("tgw-1").id(), "tgw-1");
}
