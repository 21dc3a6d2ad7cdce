//! The bed's address plan. Every bed lives in its own namespaces, so every bed reuses it.
//!
//! | zone | IPv4          | IPv6              | router             | hosts                  |
//! |------|---------------|-------------------|--------------------|------------------------|
//! | a    | 10.0.1.0/24   | fd00:0:0:1::/64   | 10.0.1.1, ::1      | .10, .11… / ::10, ::11… |
//! | b    | 10.0.2.0/24   | fd00:0:0:2::/64   | 10.0.2.1, ::1      |                        |
//! | c    | 10.0.3.0/24   | fd00:0:0:3::/64   | 10.0.3.1, ::1      |                        |
//! | x    | 10.0.9.0/24   | fd00:0:0:9::/64   | 10.0.9.1, ::1      | (left out of the topology) |
//!
//! All inside the VPC 10.0.0.0/16 and fd00::/48.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// IPv4 header (20) for V4, IPv6 header (40) for V6, without options or extension headers.
    pub fn ip_header_len(self) -> u64 {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }

    /// The TCP MSS on the bed's 1500-byte MTU links with TCP timestamps on (the Linux default):
    /// 1448 for IPv4, 1428 for IPv6.
    pub fn tcp_mss(self) -> u64 {
        crate::LINK_MTU - self.ip_header_len() - TCP_HEADER_WITH_TIMESTAMPS
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A TCP header with the timestamp option that Linux puts on every segment (20 + 12 bytes).
pub const TCP_HEADER_WITH_TIMESTAMPS: u64 = 32;

/// The VPC that holds every zone's IPv4 subnet.
pub fn vpc_v4() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 16).expect("/16 is a valid IPv4 prefix length")
}

/// The VPC that holds every zone's IPv6 subnet.
pub fn vpc_v6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 48)
        .expect("/48 is a valid IPv6 prefix length")
}

/// A subnet of the bed. `A`, `B` and `C` stand for availability zones; `X` is a subnet inside the
/// VPC that a topology is meant to leave out ("unmapped").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Zone {
    A,
    B,
    C,
    X,
}

impl Zone {
    pub const ALL: [Zone; 4] = [Zone::A, Zone::B, Zone::C, Zone::X];
    /// The zones a topology maps to availability zones.
    pub const MAPPED: [Zone; 3] = [Zone::A, Zone::B, Zone::C];

    /// "a", "b", "c" or "x".
    pub fn name(self) -> &'static str {
        match self {
            Zone::A => "a",
            Zone::B => "b",
            Zone::C => "c",
            Zone::X => "x",
        }
    }

    pub fn from_name(name: &str) -> Option<Zone> {
        Zone::ALL.into_iter().find(|z| z.name() == name)
    }

    /// False for `X`, the subnet meant to stay out of the topology.
    pub fn is_mapped(self) -> bool {
        self != Zone::X
    }

    /// The third octet of the IPv4 subnet and the fourth group of the IPv6 one.
    pub(crate) fn number(self) -> u8 {
        match self {
            Zone::A => 1,
            Zone::B => 2,
            Zone::C => 3,
            Zone::X => 9,
        }
    }

    pub fn subnet_v4(self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 0, self.number(), 0), 24)
            .expect("/24 is a valid IPv4 prefix length")
    }

    pub fn subnet_v6(self) -> Ipv6Net {
        Ipv6Net::new(
            Ipv6Addr::new(0xfd00, 0, 0, u16::from(self.number()), 0, 0, 0, 0),
            64,
        )
        .expect("/64 is a valid IPv6 prefix length")
    }

    pub fn subnet(self, family: Family) -> IpNet {
        match family {
            Family::V4 => self.subnet_v4().into(),
            Family::V6 => self.subnet_v6().into(),
        }
    }

    /// The router's address in this subnet (.1 / ::1), every host's default gateway.
    pub fn router_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.number(), 1)
    }

    pub fn router_v6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0, 0, u16::from(self.number()), 0, 0, 0, 1)
    }

    pub fn router(self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.router_v4().into(),
            Family::V6 => self.router_v6().into(),
        }
    }

    /// The address of the `index`-th host (from 0) of this zone: .10, .11, … and ::10, ::11, …
    pub fn host_v4(self, index: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.number(), 10 + index)
    }

    pub fn host_v6(self, index: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            0,
            0,
            u16::from(self.number()),
            0,
            0,
            0,
            0x10 + u16::from(index),
        )
    }

    /// The bridge in the router namespace that forms this subnet.
    pub fn bridge(self) -> String {
        format!("br-{}", self.name())
    }

    /// The MAC address of this zone's bridge (the router's interface in the subnet).
    pub(crate) fn router_mac(self) -> String {
        format!("02:af:{:02x}:00:00:01", self.number())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan() {
        assert_eq!(Zone::A.subnet_v4().to_string(), "10.0.1.0/24");
        assert_eq!(Zone::X.subnet_v6().to_string(), "fd00:0:0:9::/64");
        assert_eq!(Zone::B.host_v4(1).to_string(), "10.0.2.11");
        assert_eq!(Zone::C.host_v6(0).to_string(), "fd00:0:0:3::10");
        assert_eq!(Zone::A.router_v6().to_string(), "fd00:0:0:1::1");
        for zone in Zone::ALL {
            assert!(vpc_v4().contains(&zone.subnet_v4()));
            assert!(vpc_v6().contains(&zone.subnet_v6()));
            assert!(zone.subnet_v4().contains(&zone.host_v4(0)));
            assert!(zone.subnet_v6().contains(&zone.host_v6(0)));
            assert_eq!(Zone::from_name(zone.name()), Some(zone));
        }
        assert_eq!(Family::V4.tcp_mss(), 1448);
        assert_eq!(Family::V6.tcp_mss(), 1428);
    }
}
