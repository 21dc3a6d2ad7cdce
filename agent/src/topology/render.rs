//! What `azflow topology` prints: the host's identity, then one row per kernel prefix (prefix,
//! zone, zone ID, name, source, class from this host, route, billing path, hop AZ, price per GB
//! each direction, slot), as a table or as JSON.

use agent_common::{SUBNET_FLAG_UNMAPPED, SubnetInfo, TrafficClass, ZONE_NONE};
use ipnet::IpNet;
use serde_json::{Value, json};

use super::{
    kernel_table::{KernelTable, SlotKind},
    model::Topology,
    paths::{Billing, route_for},
    ranges::{CatchAll, RangeKind, catch_all_ranges},
};

/// One printed prefix.
struct Row<'a> {
    prefix: IpNet,
    info: SubnetInfo,
    kind: SlotKind,
    zone: &'a str,
    zone_id: &'a str,
    /// The subnet's name, or for a catch-all why the range is there.
    name: Option<&'a str>,
    subnet_id: Option<&'a str>,
    vpc_id: Option<&'a str>,
    region: Option<&'a str>,
    source: &'static str,
    /// The route target the VPC router picks for the prefix (`local`, `nat-…`, …).
    route: Option<String>,
    billing: Option<&'a Billing>,
}

fn rows<'a>(topology: &'a Topology, table: &'a KernelTable) -> Vec<Row<'a>> {
    let ranges = catch_all_ranges(topology.host());
    let routes = topology
        .routing()
        .effective_routes(&topology.host().vpc_cidrs);
    table
        .entries()
        .map(|(prefix, info)| {
            let label = table.slots.get(&info.slot);
            let kind = label.map_or(SlotKind::CatchAll, |l| l.kind);
            // Loopback and link-local never reach the VPC router (as in build_kernel_table).
            let local = ranges
                .iter()
                .any(|r| r.net == prefix && r.catch_all == CatchAll::Local);
            let route = route_for(&routes, &prefix)
                .filter(|_| !local)
                .map(|r| r.target.id().to_owned());
            let billing = label.map(|l| &l.billing);
            let is_range = topology
                .routing()
                .public_ranges
                .iter()
                .any(|(n, _)| *n == prefix);
            match topology
                .subnet(&prefix)
                .filter(|_| kind == SlotKind::Subnet)
            {
                Some(s) => Row {
                    prefix,
                    info,
                    kind,
                    zone: &s.zone,
                    zone_id: &s.zone_id,
                    name: s.name.as_deref(),
                    subnet_id: s.subnet_id.as_deref(),
                    vpc_id: s.vpc_id.as_deref(),
                    region: s.region.as_deref(),
                    source: s.source.as_str(),
                    route,
                    billing,
                },
                None => Row {
                    prefix,
                    info,
                    kind,
                    zone: label.map_or("", |l| l.dst_zone.as_str()),
                    zone_id: label.map_or("", |l| l.dst_zone_id.as_str()),
                    name: ranges
                        .iter()
                        .find(|r| r.net == prefix)
                        .map(|r| range_name(r.kind)),
                    subnet_id: None,
                    vpc_id: None,
                    region: None,
                    source: match kind {
                        SlotKind::Routed if is_range => "aws-ranges",
                        SlotKind::Routed if !ranges.iter().any(|r| r.net == prefix) => "route",
                        _ => "catch-all",
                    },
                    route,
                    billing,
                },
            }
        })
        .collect()
}

const fn range_name(kind: RangeKind) -> &'static str {
    match kind {
        RangeKind::Default => "(default)",
        RangeKind::Private => "(private range)",
        RangeKind::Vpc => "(VPC, no subnet)",
        RangeKind::Loopback => "(loopback)",
        RangeKind::LinkLocal => "(link-local)",
    }
}

const fn kind_name(kind: SlotKind) -> &'static str {
    match kind {
        SlotKind::Subnet => "subnet",
        SlotKind::CatchAll => "catch_all",
        SlotKind::Routed => "routed",
    }
}

fn path_of(r: &Row<'_>) -> &'static str {
    r.billing.map_or("unknown", |b| b.path.as_str())
}

/// USD per GB of each direction.
fn usd_per_gb(r: &Row<'_>) -> [f64; 2] {
    let nano = r.billing.map_or([0, 0], |b| b.price.nano_usd_per_gb);
    nano.map(|n| n as f64 / 1e9)
}

fn class_of(info: &SubnetInfo) -> &'static str {
    TrafficClass::from_u8(info.class).as_str()
}

/// A text table for people: host identity on top, then one row per prefix.
pub fn render_table(topology: &Topology, table: &KernelTable) -> String {
    let h = topology.host();
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let vpc = if h.vpc_cidrs.is_empty() {
        "- (unknown: private ranges count as unknown, not cross_vpc)".to_owned()
    } else {
        h.vpc_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    out.push_str(&format!(
        "host      zone {} ({}), region {}\n",
        h.zone,
        h.zone_id,
        or_dash(&h.region)
    ));
    out.push_str(&format!(
        "          instance {}, account {}\n",
        or_dash(&h.instance_id),
        or_dash(&h.account_id)
    ));
    out.push_str(&format!("vpc       {vpc}\n"));
    out.push_str(&format!(
        "table     {} subnets, {} IPv4 + {} IPv6 prefixes, {} slots\n\n",
        topology.subnets().len(),
        table.v4.len(),
        table.v6.len(),
        table.slots.len()
    ));

    let header = [
        "PREFIX",
        "ZONE",
        "ZONE ID",
        "NAME",
        "SOURCE",
        "CLASS",
        "ROUTE",
        "PATH",
        "HOP AZ",
        "USD/GB OUT",
        "USD/GB IN",
        "SLOT",
    ];
    let cells: Vec<[String; 12]> = rows(topology, table)
        .iter()
        .map(|r| {
            let [out, inn] = usd_per_gb(r);
            [
                r.prefix.to_string(),
                r.zone.to_owned(),
                r.zone_id.to_owned(),
                r.name.unwrap_or("-").to_owned(),
                r.source.to_owned(),
                class_of(&r.info).to_owned(),
                r.route.clone().unwrap_or_else(|| "-".into()),
                path_of(r).to_owned(),
                r.billing
                    .and_then(|b| b.hop_zone_id.clone())
                    .unwrap_or_else(|| "-".into()),
                out.to_string(),
                inn.to_string(),
                r.info.slot.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |row: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// The same content as [`render_table`], for scripts.
pub fn to_json(topology: &Topology, table: &KernelTable) -> Value {
    let h = topology.host();
    let prefixes: Vec<Value> = rows(topology, table)
        .iter()
        .map(|r| {
            json!({
                "prefix": r.prefix.to_string(),
                "zone": r.zone,
                "zone_id": r.zone_id,
                "name": r.name,
                "subnet_id": r.subnet_id,
                "vpc_id": r.vpc_id,
                "region": r.region,
                "source": r.source,
                "kind": kind_name(r.kind),
                "class": class_of(&r.info),
                "route": r.route,
                "path": path_of(r),
                "hop_zone_id": r.billing.and_then(|b| b.hop_zone_id.clone()),
                "usd_per_gb": { "transmit": usd_per_gb(r)[0], "receive": usd_per_gb(r)[1] },
                "slot": r.info.slot,
                "zone_idx": (r.info.zone_idx != ZONE_NONE).then_some(r.info.zone_idx),
                "unmapped": r.info.flags & SUBNET_FLAG_UNMAPPED != 0,
            })
        })
        .collect();
    json!({
        "host": {
            "region": h.region,
            "zone": h.zone,
            "zone_id": h.zone_id,
            "vpc_cidrs": h.vpc_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "instance_id": h.instance_id,
            "account_id": h.account_id,
        },
        "prefixes": prefixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{
        kernel_table::{SlotAllocator, ZoneTable, build_kernel_table},
        model::{
            Source,
            tests::{host, subnet},
        },
    };

    fn sample() -> (Topology, KernelTable) {
        let mut named = subnet("10.0.1.0/24", "use1-az1", Source::StaticFile);
        named.name = Some("private-a".into());
        let t = Topology::new(
            host("use1-az1", &["10.0.0.0/16"]),
            [named, subnet("fd00:0:2::/64", "use1-az2", Source::Aws)],
        );
        let kt = build_kernel_table(&t, &mut SlotAllocator::new(64), &mut ZoneTable::new())
            .expect("builds");
        (t, kt)
    }

    #[test]
    fn the_table_shows_the_host_then_every_prefix() {
        let (t, kt) = sample();
        let text = render_table(&t, &kt);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("host      zone us-east-1a (use1-az1), region us-east-1"),
            "{text}"
        );
        assert!(lines[2].starts_with("vpc       10.0.0.0/16"), "{text}");
        let header = lines
            .iter()
            .position(|l| l.starts_with("PREFIX"))
            .expect("header");
        assert_eq!(
            lines.len() - header - 1,
            kt.v4.len() + kt.v6.len(),
            "{text}"
        );
        let row = lines
            .iter()
            .find(|l| l.starts_with("10.0.1.0/24"))
            .expect("subnet row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cols[1..6],
            [
                "zone-of-use1-az1",
                "use1-az1",
                "private-a",
                "file",
                "same_az"
            ],
            "{row}"
        );
        let row = lines
            .iter()
            .find(|l| l.starts_with("fd00:0:2::/64"))
            .expect("v6 row");
        assert!(row.contains(" aws ") && row.contains(" cross_az "), "{row}");
        let row = lines
            .iter()
            .find(|l| l.starts_with("0.0.0.0/0"))
            .expect("default row");
        assert!(
            row.contains("catch-all") && row.contains("internet"),
            "{row}"
        );
        assert!(
            lines.iter().all(|l| l.trim_end() == *l),
            "no trailing spaces"
        );
    }

    #[test]
    fn each_prefix_shows_its_route_path_and_price() {
        use crate::topology::paths::{NatGateway, Route, RouteTarget, Routing};
        let (t, _) = sample();
        let t = t.with_routing(Routing {
            routes: vec![Route {
                dest: "0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}")),
                target: RouteTarget::NatGateway("nat-b".into()),
            }],
            nat_gateways: vec![NatGateway {
                id: "nat-b".into(),
                zone_id: Some("use1-az2".into()),
            }],
            ..Routing::default()
        });
        let mut kt = build_kernel_table(&t, &mut SlotAllocator::new(64), &mut ZoneTable::new())
            .expect("builds");
        kt.apply_prices(&crate::pricing::PriceTable::default());
        let text = render_table(&t, &kt);
        let row = text
            .lines()
            .find(|l| l.starts_with("0.0.0.0/0"))
            .expect("default row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        // PREFIX ZONE ZONE-ID NAME SOURCE CLASS ROUTE PATH HOP OUT IN SLOT
        assert_eq!(
            &cols[5..11],
            [
                "internet",
                "nat-b",
                "nat_gateway_cross_az",
                "use1-az2",
                "0.145",
                "0.055"
            ],
            "{row}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("10.0.1.0/24"))
            .expect("subnet row");
        assert!(
            row.contains(" local ") && row.contains(" same_az ") && row.contains(" 0 "),
            "{row}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("127.0.0.0/8"))
            .expect("loopback row");
        assert_eq!(
            row.split_whitespace().nth(6),
            Some("-"),
            "loopback has no route: {row}"
        );
        let v = to_json(&t, &kt);
        let p = v["prefixes"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["prefix"] == "0.0.0.0/0"))
            .expect("default");
        assert_eq!(p["path"], "nat_gateway_cross_az");
        assert_eq!(p["route"], "nat-b");
        assert_eq!(p["hop_zone_id"], "use1-az2");
        assert_eq!(p["usd_per_gb"]["transmit"], 0.145);
        assert_eq!(p["usd_per_gb"]["receive"], 0.055);
        assert_eq!(p["kind"], "routed");
    }

    #[test]
    fn json_has_the_same_rows() {
        let (t, kt) = sample();
        let v = to_json(&t, &kt);
        assert_eq!(v["host"]["zone_id"], "use1-az1");
        assert_eq!(v["host"]["vpc_cidrs"][0], "10.0.0.0/16");
        let prefixes = v["prefixes"].as_array().expect("array");
        assert_eq!(prefixes.len(), kt.v4.len() + kt.v6.len());
        let sub = prefixes
            .iter()
            .find(|p| p["prefix"] == "10.0.1.0/24")
            .expect("subnet");
        assert_eq!(sub["class"], "same_az");
        assert_eq!(sub["source"], "file");
        assert_eq!(sub["name"], "private-a");
        assert_eq!(sub["unmapped"], false);
        let vpc = prefixes
            .iter()
            .find(|p| p["prefix"] == "10.0.0.0/16")
            .expect("vpc");
        assert_eq!(
            (vpc["kind"].as_str(), vpc["zone"].as_str()),
            (Some("catch_all"), Some("unknown"))
        );
        assert_eq!(vpc["unmapped"], true);
        assert!(vpc["zone_idx"].is_null());
    }
}
