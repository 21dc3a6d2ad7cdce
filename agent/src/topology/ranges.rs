//! Catch-all ranges: the prefixes under the known subnets, so every address falls into some class
//! by its most specific prefix.
//!
//! | range                                            | catch-all                                 |
//! |--------------------------------------------------|-------------------------------------------|
//! | `0.0.0.0/0`, `::/0`                              | `internet`                                |
//! | 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 | `cross_vpc` if VPC CIDRs known, else `unknown` |
//! | each VPC CIDR                                    | `unknown` (in the VPC, no subnet known)   |
//! | 127/8, ::1/128, 169.254/16, fe80::/10            | `local` (class `unknown`)                 |
//!
//! Every catch-all except `local` carries [`SUBNET_FLAG_UNMAPPED`], so the kernel remembers the
//! destinations the topology misses.

use std::collections::BTreeMap;

use agent_common::{SUBNET_FLAG_UNMAPPED, TrafficClass};
use ipnet::IpNet;

use super::model::HostIdentity;

/// A catch-all bucket. Each gets one counter slot shared by all its ranges (both families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum CatchAll {
    Internet,
    CrossVpc,
    Unknown,
    /// Loopback and link-local: this host or its link; never remembered as unmapped.
    Local,
}

impl CatchAll {
    pub const ALL: [Self; 4] = [Self::Internet, Self::CrossVpc, Self::Unknown, Self::Local];

    pub const fn class(self) -> TrafficClass {
        match self {
            Self::Internet => TrafficClass::Internet,
            Self::CrossVpc => TrafficClass::CrossVpc,
            Self::Unknown | Self::Local => TrafficClass::Unknown,
        }
    }

    /// Stands in for the zone name and zone ID of the destination in labels.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            other => other.class().as_str(),
        }
    }

    /// `SUBNET_FLAG_*` bits of its prefixes.
    pub const fn flags(self) -> u8 {
        match self {
            Self::Local => 0,
            _ => SUBNET_FLAG_UNMAPPED,
        }
    }
}

/// Why a range is in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeKind {
    /// `0.0.0.0/0` or `::/0`.
    Default,
    /// RFC 1918, RFC 6598 (shared address space) or RFC 4193 (unique local).
    Private,
    /// One of the host's VPC CIDRs.
    Vpc,
    Loopback,
    LinkLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchAllRange {
    pub net: IpNet,
    pub kind: RangeKind,
    pub catch_all: CatchAll,
}

const DEFAULTS: [&str; 2] = ["0.0.0.0/0", "::/0"];
const PRIVATE: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];
const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// The catch-all ranges for `host`, sorted by prefix, one per prefix. Where two kinds share a
/// prefix the more specific meaning wins: local over VPC over private over default.
pub fn catch_all_ranges(host: &HostIdentity) -> Vec<CatchAllRange> {
    let private = if host.vpc_cidrs.is_empty() {
        CatchAll::Unknown
    } else {
        CatchAll::CrossVpc
    };
    let fixed = |list: &'static [&'static str], kind, catch_all| {
        list.iter().filter_map(move |s| {
            s.parse().ok().map(|net| CatchAllRange {
                net,
                kind,
                catch_all,
            })
        })
    };
    let vpc = host.vpc_cidrs.iter().map(|net| CatchAllRange {
        net: net.trunc(),
        kind: RangeKind::Vpc,
        catch_all: CatchAll::Unknown,
    });
    let mut by_net = BTreeMap::new();
    let all = fixed(&DEFAULTS, RangeKind::Default, CatchAll::Internet)
        .chain(fixed(&PRIVATE, RangeKind::Private, private))
        .chain(vpc)
        .chain(fixed(&LOOPBACK, RangeKind::Loopback, CatchAll::Local))
        .chain(fixed(&LINK_LOCAL, RangeKind::LinkLocal, CatchAll::Local));
    for r in all {
        by_net.insert(r.net, r);
    }
    by_net.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::tests::{host, net};

    fn find(ranges: &[CatchAllRange], s: &str) -> CatchAllRange {
        *ranges
            .iter()
            .find(|r| r.net == net(s))
            .unwrap_or_else(|| panic!("{s} missing"))
    }

    #[test]
    fn every_fixed_range_is_present_and_parses() {
        let r = catch_all_ranges(&host("use1-az1", &[]));
        assert_eq!(
            r.len(),
            DEFAULTS.len() + PRIVATE.len() + LOOPBACK.len() + LINK_LOCAL.len()
        );
        assert_eq!(find(&r, "0.0.0.0/0").catch_all, CatchAll::Internet);
        assert_eq!(find(&r, "::/0").catch_all, CatchAll::Internet);
        assert_eq!(find(&r, "127.0.0.0/8").catch_all, CatchAll::Local);
        assert_eq!(find(&r, "fe80::/10").kind, RangeKind::LinkLocal);
    }

    #[test]
    fn private_ranges_are_cross_vpc_only_when_the_vpc_is_known() {
        let unknown = catch_all_ranges(&host("use1-az1", &[]));
        assert_eq!(find(&unknown, "172.16.0.0/12").catch_all, CatchAll::Unknown);
        let known = catch_all_ranges(&host("use1-az1", &["10.0.0.0/16", "2600:1f18:1::/56"]));
        assert_eq!(find(&known, "172.16.0.0/12").catch_all, CatchAll::CrossVpc);
        assert_eq!(find(&known, "fc00::/7").catch_all, CatchAll::CrossVpc);
        let vpc = find(&known, "10.0.0.0/16");
        assert_eq!(
            (vpc.kind, vpc.catch_all),
            (RangeKind::Vpc, CatchAll::Unknown)
        );
        assert_eq!(
            find(&known, "2600:1f18:1::/56").catch_all,
            CatchAll::Unknown
        );
    }

    #[test]
    fn a_vpc_cidr_equal_to_a_private_range_wins() {
        let r = catch_all_ranges(&host("use1-az1", &["192.168.0.0/16"]));
        assert_eq!(find(&r, "192.168.0.0/16").kind, RangeKind::Vpc);
        assert_eq!(
            r.iter().filter(|x| x.net == net("192.168.0.0/16")).count(),
            1
        );
    }

    #[test]
    fn only_local_ranges_skip_unmapped_tracking() {
        for c in CatchAll::ALL {
            assert_eq!(c.flags() == 0, c == CatchAll::Local, "{c:?}");
        }
        assert_eq!(CatchAll::Local.class(), TrafficClass::Unknown);
        assert_eq!(CatchAll::Local.label(), "local");
        assert_eq!(CatchAll::CrossVpc.label(), "cross_vpc");
    }
}
