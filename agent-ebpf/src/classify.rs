//! Reading the packet's remote address and mapping it to a subnet slot.
//!
//! Values here are plain, fully initialised structs: copying an enum whose inactive bytes are
//! undefined makes LLVM emit reads of uninitialised registers, which the verifier rejects.

use agent_common::{Direction, SubnetInfo, UnmappedKey, nat::NatKey};
use aya_ebpf::{btf_maps::lpm_trie::Key, programs::SkBuffContext};

use crate::maps::{AZF_SUBNETS_V4, AZF_SUBNETS_V6};

pub const IPPROTO_TCP: u8 = 6;

/// What the program needs from the IP header.
pub struct IpInfo {
    pub protocol: u8,
    /// 4 or 6.
    pub version: u8,
    /// IP header length in bytes (options included for v4; v6 fixed header only).
    pub header_len: u32,
    /// The remote address; v4 uses the first four bytes, the rest stay zero.
    pub remote: [u8; 16],
}

impl IpInfo {
    #[inline(always)]
    pub fn unmapped_key(&self) -> UnmappedKey {
        if self.version == 4 {
            UnmappedKey::v4([self.remote[0], self.remote[1], self.remote[2], self.remote[3]])
        } else {
            UnmappedKey::v6(self.remote)
        }
    }
}

/// Parses the IP header at the start of the packet (cgroup_skb data begins at L3).
#[inline(always)]
pub fn parse_ip(ctx: &SkBuffContext, dir: Direction) -> Option<IpInfo> {
    let first: u8 = ctx.load(0).ok()?;
    let mut remote = [0u8; 16];
    match first >> 4 {
        4 => {
            let h: [u8; 20] = ctx.load(0).ok()?;
            let off = if matches!(dir, Direction::Transmit) { 16 } else { 12 };
            remote[0] = h[off];
            remote[1] = h[off + 1];
            remote[2] = h[off + 2];
            remote[3] = h[off + 3];
            Some(IpInfo { protocol: h[9], version: 4, header_len: u32::from(h[0] & 0x0f) * 4, remote })
        }
        6 => {
            let next: u8 = ctx.load(6).ok()?;
            let off = if matches!(dir, Direction::Transmit) { 24 } else { 8 };
            remote = ctx.load(off).ok()?;
            // Extension headers before TCP are not walked: `protocol` is then not TCP and the
            // packet is left alone (TCP over v6 with extension headers is vanishingly rare).
            Some(IpInfo { protocol: next, version: 6, header_len: 40, remote })
        }
        _ => None,
    }
}

/// The connection's tuple as the local socket sees it (the NAT maps' key): the local address and
/// both ports are read only here, on the rare NAT-pending path.
#[inline(always)]
pub fn nat_key(ctx: &SkBuffContext, dir: Direction, ip: &IpInfo) -> Option<NatKey> {
    let mut local = [0u8; 16];
    if ip.version == 4 {
        let off = if matches!(dir, Direction::Transmit) { 12 } else { 16 };
        let a: [u8; 4] = ctx.load(off).ok()?;
        local[..4].copy_from_slice(&a);
    } else {
        let off = if matches!(dir, Direction::Transmit) { 8 } else { 24 };
        local = ctx.load(off).ok()?;
    }
    let ports: [u8; 4] = ctx.load(ip.header_len as usize).ok()?;
    let (sport, dport) = (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]]));
    let (src, dst) = if matches!(dir, Direction::Transmit) { (local, ip.remote) } else { (ip.remote, local) };
    Some(NatKey::from_packet(ip.version, dir, src, dst, sport, dport))
}

/// Longest-prefix match of an address (16 bytes, v4 in the first four).
#[inline(always)]
pub fn lookup_addr(version: u8, addr: [u8; 16]) -> SubnetInfo {
    lookup(&IpInfo { protocol: IPPROTO_TCP, version, header_len: 0, remote: addr })
}

/// Longest-prefix match of the remote address; a miss (only before user space wrote the
/// catch-all ranges) gives slot 0, `SLOT_NO_MATCH`.
#[inline(always)]
pub fn lookup(ip: &IpInfo) -> SubnetInfo {
    let hit = if ip.version == 4 {
        let a = [ip.remote[0], ip.remote[1], ip.remote[2], ip.remote[3]];
        AZF_SUBNETS_V4.get(&Key::new(32, a))
    } else {
        AZF_SUBNETS_V6.get(&Key::new(128, ip.remote))
    };
    match hit {
        Some(info) => SubnetInfo { slot: info.slot, zone_idx: info.zone_idx, class: info.class, flags: info.flags },
        None => SubnetInfo { slot: 0, zone_idx: 0, class: 0, flags: 0 },
    }
}
