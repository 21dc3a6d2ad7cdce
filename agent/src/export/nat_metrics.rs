//! NAT-resolution series, named once for both exporters: (name without prefix/suffix, help,
//! labels, value). Prometheus appends `_total` to counters; OTLP prefixes `azflow.nat.`.

use crate::nat::NatSnapshot;

pub enum Kind {
    Counter,
    Gauge,
}

pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub unit: &'static str,
    pub points: Vec<(Option<(&'static str, &'static str)>, u64)>,
}

/// Every NAT series of a snapshot (empty while NAT resolution is off).
pub fn series(n: &NatSnapshot) -> Vec<Series> {
    if !n.enabled {
        return Vec::new();
    }
    let dir = |v: [u64; 2]| vec![(Some(("direction", "transmit")), v[0]), (Some(("direction", "receive")), v[1])];
    vec![
        Series { name: "unresolved_bytes", kind: Kind::Counter, unit: "By", help: "TCP bytes counted under the address a socket dialed because no NAT mapping came for it (conntrack entry gone, conntrack off, or the pending map full).", points: dir(n.unresolved_bytes) },
        Series { name: "unresolved_packets", kind: Kind::Counter, unit: "{packet}", help: "TCP packets counted under the address a socket dialed because no NAT mapping came.", points: dir(n.unresolved_packets) },
        Series { name: "pending_bytes", kind: Kind::Gauge, unit: "By", help: "TCP bytes held now for connections whose real remote end is not known yet (not in any total until it is).", points: vec![(None, n.pending_bytes)] },
        Series { name: "pending_connections", kind: Kind::Gauge, unit: "{connection}", help: "Connections whose bytes are held now.", points: vec![(None, n.pending_connections)] },
        Series { name: "sockets", kind: Kind::Counter, unit: "{socket}", help: "Sockets that waited for their NAT mapping, by outcome.", points: vec![
            (Some(("outcome", "pending")), n.sockets_pending),
            (Some(("outcome", "resolved")), n.sockets_resolved),
            (Some(("outcome", "pending_map_full")), n.pending_full),
            (Some(("outcome", "timed_out")), n.timeouts),
        ] },
        Series { name: "callbacks_while_pending", kind: Kind::Counter, unit: "{event}", help: "RTT and retransmit callbacks dropped because the socket's real remote end was not known yet.", points: vec![(None, n.callbacks_while_pending)] },
        Series { name: "conntrack_entries", kind: Kind::Counter, unit: "{entry}", help: "Conntrack entries read (dump and events), by kind.", points: vec![
            (Some(("kind", "new")), n.conntrack_entries),
            (Some(("kind", "destroy")), n.conntrack_destroyed),
        ] },
        Series { name: "conntrack_errors", kind: Kind::Counter, unit: "{event}", help: "Conntrack reader problems: event overruns (the table is read again), unparsable messages, NAT map writes refused.", points: vec![
            (Some(("kind", "overrun")), n.conntrack_overruns),
            (Some(("kind", "parse")), n.conntrack_parse_errors),
            (Some(("kind", "map_write")), n.nat_map_write_failures),
        ] },
        Series { name: "conntrack_listening", kind: Kind::Gauge, unit: "1", help: "1 while the conntrack event reader runs.", points: vec![(None, u64::from(n.conntrack_listening))] },
        Series { name: "armed", kind: Kind::Gauge, unit: "1", help: "1 once conntrack was seen tracking connections here: from then on, connections to ranges outside the known subnets wait for their real remote end.", points: vec![(None, u64::from(n.armed))] },
    ]
}
