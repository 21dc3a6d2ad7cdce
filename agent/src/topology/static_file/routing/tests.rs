use std::path::Path;

use super::super::{Problem, parse_str};
use crate::topology::paths::{InterfaceEndpoint, NatGateway, Peering, Route, RouteTarget};

const HOST: &str =
    "[host]\nregion = \"us-east-1\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n";

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn problems(text: &str) -> Vec<(usize, usize, String, String)> {
    match parse_str(text, Path::new("t.toml")) {
        Ok(t) => panic!("expected problems, parsed {t:?}"),
        Err(e) => e
            .problems()
            .iter()
            .map(|p: &Problem| (p.line, p.column, p.field.clone(), p.message.clone()))
            .collect(),
    }
}

#[test]
fn routes_nat_peering_tgw_and_endpoints_parse() {
    let text = format!(
        "{HOST}\
[[route]]\ndestination = \"0.0.0.0/0\"\ntarget = \"nat-0b\"\n\
[[route]]\ndestination = \"10.100.0.0/14\"\ntarget = \"tgw-1\"\n\
[[route]]\ndestination = \"10.2.0.0/16\"\ntarget = \"vgw-9\"\n\
[[nat_gateway]]\nid = \"nat-0b\"\nzone_id = \"use1-az2\"\n\
[[peering]]\nid = \"pcx-far\"\nregion = \"us-west-2\"\ncidrs = [\"10.2.0.0/16\", \"10.3.0.0/16\"]\n\
[[endpoint]]\nid = \"vpce-s3\"\ntype = \"gateway\"\ncidrs = [\"52.216.0.0/15\"]\n\
[[endpoint]]\nid = \"vpce-if\"\ntype = \"interface\"\nzone_id = \"use1-az2\"\ncidrs = [\"10.0.2.50/32\"]\n"
    );
    let t = parse_str(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let r = t.routing();
    let route = |d: &str, t: RouteTarget| Route {
        dest: net(d),
        target: t,
    };
    assert_eq!(
        r.routes,
        [
            route("0.0.0.0/0", RouteTarget::NatGateway("nat-0b".into())),
            // The stated route wins over the peering's shorthand for the same destination.
            route("10.2.0.0/16", RouteTarget::Other("vgw-9".into())),
            route("10.3.0.0/16", RouteTarget::Peering("pcx-far".into())),
            route("10.100.0.0/14", RouteTarget::TransitGateway("tgw-1".into())),
            route(
                "52.216.0.0/15",
                RouteTarget::GatewayEndpoint("vpce-s3".into())
            ),
        ]
    );
    assert_eq!(
        r.nat_gateways,
        [NatGateway {
            id: "nat-0b".into(),
            zone_id: Some("use1-az2".into())
        }]
    );
    assert_eq!(
        r.peerings,
        [Peering {
            id: "pcx-far".into(),
            region: Some("us-west-2".into()),
            cidrs: vec![net("10.2.0.0/16"), net("10.3.0.0/16")]
        }]
    );
    assert_eq!(
        r.interface_endpoints,
        [InterfaceEndpoint {
            id: "vpce-if".into(),
            zone_id: Some("use1-az2".into()),
            addresses: vec![net("10.0.2.50/32")]
        }]
    );
}

#[test]
fn bad_entries_name_line_and_field() {
    let text = format!(
        "{HOST}\
[[route]]\ndestination = \"0.0.0.1/0\"\ntarget = \"nat 0b\"\n\
[[route]]\ntarget = \"igw-1\"\n\
[[nat_gateway]]\nid = \"igw-1\"\nzone_id = \"us-east-1b\"\n\
[[peering]]\nid = \"pcx-1\"\ncidrs = \"10.2.0.0/16\"\n\
[[endpoint]]\nid = \"vpce-1\"\ntype = \"interface\"\ncidrs = [\"10.0.2.50/32\"]\n\
[[endpoint]]\nid = \"vpce-2\"\ntype = \"gatewy\"\n"
    );
    let p = problems(&text);
    let fields: Vec<(usize, &str)> = p.iter().map(|x| (x.0, x.2.as_str())).collect();
    assert_eq!(
        fields,
        [
            (6, "route[0].destination"),
            (7, "route[0].target"),
            (8, "route[1].destination"),
            (11, "nat_gateway[0].id"),
            (12, "nat_gateway[0].zone_id"),
            (15, "peering[0].cidrs"),
            (16, "endpoint[0].zone_id"),
            (22, "endpoint[1].type"),
        ],
        "{p:#?}"
    );
    assert!(
        p[0].3
            .contains("host bits set; write the network address: 0.0.0.0/0"),
        "{}",
        p[0].3
    );
    assert!(p[1].3.contains("is not a route target"), "{}", p[1].3);
    assert!(
        p[2].3
            .starts_with("missing; add destination = \"0.0.0.0/0\""),
        "{}",
        p[2].3
    );
    assert!(p[3].3.contains("is not a nat- id"), "{}", p[3].3);
    assert!(p[4].3.contains("is an AZ name, not an AZ ID"), "{}", p[4].3);
    assert!(
        p[5].3
            .starts_with("expected an array of strings, found a string"),
        "{}",
        p[5].3
    );
    assert!(
        p[6].3.contains("interface endpoint's ENI lives in one AZ"),
        "{}",
        p[6].3
    );
    assert!(p[7].3.contains("write gateway or interface"), "{}", p[7].3);
}

#[test]
fn duplicates_and_unknown_fields() {
    let text = format!(
        "{HOST}\
[[route]]\ndestination = \"0.0.0.0/0\"\ntarget = \"igw-1\"\n\
[[route]]\ndestination = \"0.0.0.0/0\"\ntarget = \"nat-1\"\nvia = \"x\"\n\
route = 5\n"
    );
    let p = problems(&text);
    // `route = 5` after [[route]] is a key of the last section, so `via` and `route` both belong to it.
    let fields: Vec<&str> = p.iter().map(|x| x.2.as_str()).collect();
    assert!(fields.contains(&"route[1].destination"), "{p:#?}");
    assert!(fields.contains(&"route[1].via"), "{p:#?}");
    let dup = p
        .iter()
        .find(|x| x.2 == "route[1].destination")
        .map(|x| x.3.clone())
        .unwrap_or_default();
    assert!(
        dup.contains("0.0.0.0/0 is listed twice: here and on line 6"),
        "{dup}"
    );
}
