//! The default topology when nothing is configured: the subnets of this host's own interfaces
//! form its AZ, called "local". Loopback, link-local and down interfaces are left out.
//!
//! The addresses come from `getifaddrs(3)` (never from running `ip`); turning them into subnets
//! is a pure function.

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

use super::model::{HostIdentity, Source, Subnet, Topology};

/// Zone name and zone ID of the host-interfaces topology.
pub const LOCAL_ZONE: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum HostInterfacesError {
    #[error("listing this host's interface addresses (getifaddrs): {0}")]
    GetIfAddrs(#[source] std::io::Error),
}

/// One address of one interface, as `getifaddrs` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub addr: IpAddr,
    pub netmask: IpAddr,
    pub up: bool,
    pub loopback: bool,
}

/// The subnets of `addrs`, one per CIDR (the first interface names it), sorted.
pub fn subnets_of(addrs: &[InterfaceAddr]) -> Vec<Subnet> {
    let mut out: Vec<Subnet> = Vec::new();
    for a in addrs {
        if !a.up || a.loopback || is_loopback_or_link_local(a.addr) {
            continue;
        }
        let Ok(net) = IpNet::with_netmask(a.addr, a.netmask) else {
            continue;
        };
        let cidr = net.trunc();
        if out.iter().any(|s| s.cidr == cidr) {
            continue;
        }
        out.push(Subnet {
            cidr,
            zone: LOCAL_ZONE.to_owned(),
            zone_id: LOCAL_ZONE.to_owned(),
            name: Some(a.interface.clone()),
            subnet_id: None,
            vpc_id: None,
            region: None,
            source: Source::HostInterfaces,
        });
    }
    out.sort_by_key(|a| a.cidr);
    out
}

fn is_loopback_or_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_unicast_link_local() || a.is_unspecified() || a.is_multicast()
        }
    }
}

/// The topology of a host that knows nothing but its interfaces.
pub fn topology_of(addrs: &[InterfaceAddr]) -> Topology {
    let host = HostIdentity {
        region: None,
        zone: LOCAL_ZONE.to_owned(),
        zone_id: LOCAL_ZONE.to_owned(),
        vpc_cidrs: Vec::new(),
        instance_id: None,
        account_id: None,
    };
    Topology::new(host, subnets_of(addrs))
}

/// Reads this host's interfaces and builds its topology.
pub fn load() -> Result<Topology, HostInterfacesError> {
    Ok(topology_of(&read_interfaces()?))
}

/// Every IPv4 and IPv6 address of every interface, with its netmask and flags.
pub fn read_interfaces() -> Result<Vec<InterfaceAddr>, HostInterfacesError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list head in `head`, which `List` frees exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(HostInterfacesError::GetIfAddrs(
            std::io::Error::last_os_error(),
        ));
    }
    let list = List(head);
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list, alive until `list` is dropped at the end.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: the address pointers are null or point at sockaddrs of their `sa_family`.
        let (addr, netmask) = unsafe { (ip_of(ifa.ifa_addr), ip_of(ifa.ifa_netmask)) };
        let (Some(addr), Some(netmask)) = (addr, netmask) else {
            continue;
        };
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let interface = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let flags = ifa.ifa_flags;
        out.push(InterfaceAddr {
            interface,
            addr,
            netmask,
            up: flags & libc::IFF_UP as libc::c_uint != 0,
            loopback: flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
        });
    }
    drop(list);
    Ok(out)
}

/// Owns the list `getifaddrs` returned.
struct List(*mut libc::ifaddrs);

impl Drop for List {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getifaddrs and is freed only here.
            unsafe { libc::freeifaddrs(self.0) };
        }
    }
}

/// The IP address in a `sockaddr`, if it is IPv4 or IPv6.
///
/// # Safety
/// `sa` is null or points at a valid sockaddr whose size matches its `sa_family`.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the contract; read unaligned to make no assumption.
    let family = i32::from(unsafe { std::ptr::read_unaligned(sa) }.sa_family);
    match family {
        libc::AF_INET => {
            // SAFETY: AF_INET means the storage is a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in>()) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 means the storage is a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(sa.cast::<libc::sockaddr_in6>()) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(interface: &str, addr: &str, mask: &str, up: bool) -> InterfaceAddr {
        InterfaceAddr {
            interface: interface.into(),
            addr: addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")),
            netmask: mask.parse().unwrap_or_else(|e| panic!("{mask}: {e}")),
            up,
            loopback: interface == "lo",
        }
    }

    #[test]
    fn interface_subnets_skip_loopback_link_local_and_down() {
        let addrs = [
            a("lo", "127.0.0.1", "255.0.0.0", true),
            a("lo", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            a("eth0", "10.0.1.23", "255.255.255.0", true),
            a("eth0", "fe80::1", "ffff:ffff:ffff:ffff::", true),
            a("eth0", "2600:1f18:1:2::17", "ffff:ffff:ffff:ffff::", true),
            a("eth1", "10.0.1.24", "255.255.255.0", true),
            a("eth2", "169.254.3.4", "255.255.0.0", true),
            a("eth3", "192.168.7.1", "255.255.255.0", false),
            a("docker0", "172.17.0.1", "255.255.0.0", true),
        ];
        let subnets = subnets_of(&addrs);
        let got: Vec<(String, Option<&str>)> = subnets
            .iter()
            .map(|s| (s.cidr.to_string(), s.name.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.1.0/24".to_owned(), Some("eth0")),
                ("172.17.0.0/16".to_owned(), Some("docker0")),
                ("2600:1f18:1:2::/64".to_owned(), Some("eth0")),
            ]
        );
        assert!(
            subnets
                .iter()
                .all(|s| s.zone_id == "local" && s.source == Source::HostInterfaces)
        );
    }

    #[test]
    fn non_contiguous_masks_are_skipped() {
        assert!(subnets_of(&[a("eth0", "10.0.1.2", "255.0.255.0", true)]).is_empty());
    }

    #[test]
    fn the_host_is_in_the_local_zone() {
        let t = topology_of(&[a("eth0", "10.0.1.23", "255.255.255.0", true)]);
        assert_eq!(
            (t.host().zone.as_str(), t.host().zone_id.as_str()),
            ("local", "local")
        );
        assert!(t.host().vpc_cidrs.is_empty());
        let s = &t.subnets()[0];
        assert_eq!(t.class_of_subnet(s), agent_common::TrafficClass::SameAz);
    }

    #[test]
    fn reading_this_hosts_interfaces_works() {
        // A loopback address (if lo is up in this namespace) comes back flagged as such.
        let addrs = read_interfaces().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            addrs
                .iter()
                .filter(|a| a.addr.is_loopback())
                .all(|a| a.loopback),
            "{addrs:?}"
        );
        assert!(
            subnets_of(&addrs)
                .iter()
                .all(|s| !s.cidr.addr().is_loopback())
        );
    }
}
