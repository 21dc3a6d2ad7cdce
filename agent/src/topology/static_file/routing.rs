//! The static file's routing sections: what decides billing paths without API access.
//!
//! ```toml
//! [[route]]                      # this host's route table; the most specific route wins
//! destination = "0.0.0.0/0"
//! target = "nat-0b1b1b1b1b1b1b1b1"   # local, igw-…, eigw-…, nat-…, pcx-…, tgw-…, vpce-…, or any id
//!
//! [[nat_gateway]]
//! id = "nat-0b1b1b1b1b1b1b1b1"
//! zone_id = "use1-az2"           # the AZ ID of the NAT's subnet
//!
//! [[peering]]
//! id = "pcx-0c0c0c0c0c0c0c0c0"
//! region = "us-west-2"           # optional: the peer VPC's region (default: the host's)
//! cidrs = ["10.2.0.0/16"]        # optional: routes to this peering (unless a [[route]] says otherwise)
//!
//! [[endpoint]]
//! id = "vpce-0e0e0e0e0e0e0e0e0"
//! type = "gateway"               # gateway: cidrs are its prefix list, routed to it
//! cidrs = ["52.216.0.0/15"]      # interface: cidrs are its ENI addresses; zone_id is required
//! ```

use std::collections::BTreeMap;

use ipnet::IpNet;
use toml::de::DeValue;

use super::{Checker, Fields, found, values};
use crate::topology::paths::{InterfaceEndpoint, NatGateway, Peering, Route, RouteTarget, Routing};

const ROUTE_FIELDS: &[&str] = &["destination", "target"];
const NAT_FIELDS: &[&str] = &["id", "zone_id"];
const PEERING_FIELDS: &[&str] = &["id", "region", "cidrs"];
const ENDPOINT_FIELDS: &[&str] = &["id", "type", "cidrs", "zone_id"];

/// A route target: `local` or an AWS id (`nat-…`), no spaces.
fn target(s: &str) -> Result<(), String> {
    if s == "local" {
        return Ok(());
    }
    let ok = s.split_once('-').is_some_and(|(kind, rest)| {
        !kind.is_empty() && !rest.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase())
    }) && !s.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a route target; write local or an AWS id such as igw-…, nat-…, pcx-…, \
             tgw-… or vpce-…"
        ))
    }
}

fn id_with(s: &str, prefix: &str) -> Result<(), String> {
    let ok = s.strip_prefix(prefix).is_some_and(|rest| {
        rest.strip_prefix('-')
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a {prefix}- id; write e.g. {prefix}-0123456789abcdef0"
        ))
    }
}

impl Checker<'_> {
    /// Every `[[section]]` table of `name`, or `None` (reported) when it is not an array of tables.
    fn sections<'v, 'i>(
        &mut self,
        root: &Fields<'v, 'i>,
        name: &str,
        allowed: &[&str],
    ) -> Option<Vec<Fields<'v, 'i>>> {
        let Some(v) = root.map.get(name) else {
            return Some(Vec::new());
        };
        let DeValue::Array(items) = v.get_ref() else {
            let found = found(v.get_ref());
            let message = format!(
                "expected an array of tables, found {found}; write each as its own [[{name}]] section"
            );
            self.report(&v.span(), name, message);
            return None;
        };
        let mut out = Some(Vec::new());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{name}[{i}]");
            match item.get_ref() {
                DeValue::Table(t) => {
                    let f = self.fields(t, item.span(), path, allowed);
                    if let Some(list) = out.as_mut() {
                        list.push(f);
                    }
                }
                other => {
                    let found = found(other);
                    let message =
                        format!("expected a table, found {found}; write a [[{name}]] section");
                    self.report(&item.span(), path, message);
                    out = None;
                }
            }
        }
        out
    }

    /// An optional array of CIDR strings (empty when absent).
    pub(super) fn cidr_array(
        &mut self,
        f: &Fields<'_, '_>,
        name: &str,
        example: &str,
    ) -> Option<Vec<IpNet>> {
        let Some(v) = f.map.get(name) else {
            return Some(Vec::new());
        };
        let path = f.path_of(name);
        let DeValue::Array(items) = v.get_ref() else {
            let found = found(v.get_ref());
            let message = format!(
                "expected an array of strings, found {found}; write e.g. {name} = [\"{example}\"]"
            );
            self.report(&v.span(), path, message);
            return None;
        };
        let mut ok = true;
        let mut nets = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            match item.get_ref() {
                DeValue::String(s) => match values::cidr(s) {
                    Ok(net) => nets.push(net),
                    Err(message) => {
                        self.report(&item.span(), at, message);
                        ok = false;
                    }
                },
                other => {
                    let found = found(other);
                    let message = format!(
                        "expected a string, found {found}; write it in quotes, e.g. \"{example}\""
                    );
                    self.report(&item.span(), at, message);
                    ok = false;
                }
            }
        }
        ok.then_some(nets)
    }

    /// Reports a second use of `key` (an id or destination) within one section kind.
    fn unique<K: Ord + std::fmt::Display>(
        &mut self,
        seen: &mut BTreeMap<K, usize>,
        key: K,
        f: &Fields<'_, '_>,
        field: &str,
    ) {
        let span = f.map.get(field).map_or(f.span.clone(), |v| v.span());
        let line = self.line_of(&span);
        if let Some(first) = seen.get(&key) {
            let message = format!("{key} is listed twice: here and on line {first}; remove one");
            self.report(&span, f.path_of(field), message);
        } else {
            seen.insert(key, line);
        }
    }

    fn line_of(&self, span: &std::ops::Range<usize>) -> usize {
        super::position(self.text, &self.line_starts, span.start).0
    }

    /// The routing sections of the file; `None` when any is invalid (all problems reported).
    pub(super) fn routing(&mut self, root: &Fields<'_, '_>) -> Option<Routing> {
        let mut routing = Some(Routing::default());
        let fail = |r: &mut Option<Routing>| *r = None;

        let mut seen = BTreeMap::new();
        for f in self
            .sections(root, "route", ROUTE_FIELDS)
            .unwrap_or_else(|| {
                fail(&mut routing);
                Vec::new()
            })
        {
            let dest = self.required(&f, "destination", "0.0.0.0/0", |s| {
                values::cidr(s).map(|_| ())
            });
            let tgt = self.required(&f, "target", "nat-0123456789abcdef0", target);
            match (
                dest.and_then(|d| d.parse::<IpNet>().ok()),
                tgt,
                routing.as_mut(),
            ) {
                (Some(dest), Some(t), Some(r)) => {
                    self.unique(&mut seen, dest, &f, "destination");
                    r.routes.push(Route {
                        dest,
                        target: RouteTarget::from_id(&t),
                    });
                }
                _ => fail(&mut routing),
            }
        }

        let mut seen = BTreeMap::new();
        for f in self
            .sections(root, "nat_gateway", NAT_FIELDS)
            .unwrap_or_else(|| {
                fail(&mut routing);
                Vec::new()
            })
        {
            let id = self.required(&f, "id", "nat-0123456789abcdef0", |s| id_with(s, "nat"));
            let zone_id = self.required(&f, "zone_id", "use1-az2", values::zone_id);
            match (id, zone_id, routing.as_mut()) {
                (Some(id), Some(zone_id), Some(r)) => {
                    self.unique(&mut seen, id.clone(), &f, "id");
                    r.nat_gateways.push(NatGateway {
                        id,
                        zone_id: Some(zone_id),
                    });
                }
                _ => fail(&mut routing),
            }
        }

        let mut seen = BTreeMap::new();
        for f in self
            .sections(root, "peering", PEERING_FIELDS)
            .unwrap_or_else(|| {
                fail(&mut routing);
                Vec::new()
            })
        {
            let id = self.required(&f, "id", "pcx-0123456789abcdef0", |s| id_with(s, "pcx"));
            let region = self.optional(&f, "region", "us-west-2", values::region);
            let cidrs = self.cidr_array(&f, "cidrs", "10.2.0.0/16");
            match (id, region, cidrs, routing.as_mut()) {
                (Some(id), Some(region), Some(cidrs), Some(r)) => {
                    self.unique(&mut seen, id.clone(), &f, "id");
                    r.peerings.push(Peering { id, region, cidrs });
                }
                _ => fail(&mut routing),
            }
        }

        let mut seen = BTreeMap::new();
        let mut gateway_routes = Vec::new();
        for f in self
            .sections(root, "endpoint", ENDPOINT_FIELDS)
            .unwrap_or_else(|| {
                fail(&mut routing);
                Vec::new()
            })
        {
            let id = self.required(&f, "id", "vpce-0123456789abcdef0", |s| id_with(s, "vpce"));
            let kind = self.required(&f, "type", "gateway", |s| match s {
                "gateway" | "interface" => Ok(()),
                _ => Err(format!(
                    "{s:?} is not an endpoint type; write gateway or interface"
                )),
            });
            let cidrs = self.cidr_array(&f, "cidrs", "52.216.0.0/15");
            let zone_id = self.optional(&f, "zone_id", "use1-az2", values::zone_id);
            if kind.as_deref() == Some("interface") && zone_id == Some(None) {
                self.report(
                    &f.span,
                    f.path_of("zone_id"),
                    "missing; an interface endpoint's ENI lives in one AZ: add zone_id = \"use1-az1\"",
                );
                fail(&mut routing);
                continue;
            }
            match (id, kind, cidrs, zone_id, routing.as_mut()) {
                (Some(id), Some(kind), Some(cidrs), Some(zone_id), Some(r)) => {
                    self.unique(&mut seen, id.clone(), &f, "id");
                    if kind == "interface" {
                        r.interface_endpoints.push(InterfaceEndpoint {
                            id,
                            zone_id,
                            addresses: cidrs,
                        });
                    } else {
                        gateway_routes.extend(cidrs.into_iter().map(|dest| Route {
                            dest,
                            target: RouteTarget::GatewayEndpoint(id.clone()),
                        }));
                    }
                }
                _ => fail(&mut routing),
            }
        }

        let mut r = routing?;
        // Shorthands become routes, unless a [[route]] states the same destination.
        let peering_routes = r.peerings.iter().flat_map(|p| {
            p.cidrs.iter().map(|dest| Route {
                dest: *dest,
                target: RouteTarget::Peering(p.id.clone()),
            })
        });
        let implied: Vec<Route> = peering_routes.chain(gateway_routes).collect();
        for route in implied {
            if !r.routes.iter().any(|x| x.dest == route.dest) {
                r.routes.push(route);
            }
        }
        r.routes.sort();
        Some(r)
    }
}

#[cfg(test)]
mod tests;
