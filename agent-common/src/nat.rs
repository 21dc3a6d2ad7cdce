//! Seeing through NAT: the ABI of the pending and resolved maps, and the pure decisions the kernel
//! makes per socket, so they are unit-tested on the host.
//!
//! A pod's socket talks to a Service VIP; the node rewrites the destination after the pod's hooks
//! have seen the packet. A socket whose remote end falls in a prefix flagged
//! [`crate::SUBNET_FLAG_NAT_CANDIDATE`] starts *pending*: its bytes go to
//! `AZF_NAT_PENDING[tuple]` instead of the counters. User space learns the real remote end from
//! the node's conntrack and writes it to `AZF_NAT[tuple]`; the socket's next packet (or sock_ops
//! callback) finds it, caches the backend in the socket's storage and counts normally from then
//! on. User space credits the pending bytes to the backend, or, when no mapping comes within the
//! timeout, to the pre-NAT destination as *unresolved*. No byte is counted twice: a pending byte
//! is never in the counters.
//!
//! ```text
//!  first packet ─► LPM(VIP) has NAT_CANDIDATE ─► PENDING ─► AZF_NAT[tuple]? ─┬─ resolved ─► LPM(backend), cached
//!                                                   │                        └─ unresolved ─► pre-NAT class, counted as such
//!                                                   └─► bytes to AZF_NAT_PENDING[tuple] (credited by user space)
//! ```

use crate::Direction;

/// `SockState::nat`: how a socket's remote end was decided. Ordered so the hot path needs one
/// comparison: everything `<= RESOLVED` counts straight into the counters.
pub mod state {
    /// Not a NAT candidate: the packet's own remote address is the real one.
    pub const NONE: u8 = 0;
    /// The real remote end came from the NAT map (cached in `SockState::nat_remote`).
    pub const RESOLVED: u8 = 1;
    /// Waiting for user space to name the real remote end; bytes are held.
    pub const PENDING: u8 = 2;
    /// No mapping came in time (or the pending map was full): counted under the pre-NAT
    /// destination, and in the unresolved counters.
    pub const UNRESOLVED: u8 = 3;
}

/// `NatTarget::state` values written by user space.
pub mod target {
    /// `remote` is the real remote end (the post-NAT destination, or the address itself when the
    /// connection was not rewritten).
    pub const RESOLVED: u8 = 1;
    /// Give up: count under the pre-NAT destination.
    pub const UNRESOLVED: u8 = 2;
}

/// A connection as its local socket sees it, before any NAT on the node: the key of both NAT
/// maps. It equals conntrack's *original* tuple of the connection on the node.
///
/// Layout (40 bytes): `family: u8 @0` (4 or 6), `_pad: [u8; 3] @1`, `local_port: u16 @4`,
/// `remote_port: u16 @6` (both host byte order), `local: [u8; 16] @8`, `remote: [u8; 16] @24`
/// (v4 in the first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub local_port: u16,
    pub remote_port: u16,
    pub local: [u8; 16],
    pub remote: [u8; 16],
}

impl NatKey {
    /// The key of a packet: on transmit the source is local, on receive the destination is.
    /// Addresses are 16 bytes with v4 in the first four; ports in host byte order.
    #[inline(always)]
    pub const fn from_packet(family: u8, dir: Direction, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        match dir {
            Direction::Transmit => {
                Self { family, _pad: [0; 3], local_port: sport, remote_port: dport, local: src, remote: dst }
            }
            Direction::Receive => {
                Self { family, _pad: [0; 3], local_port: dport, remote_port: sport, local: dst, remote: src }
            }
        }
    }
}

/// Value of `AZF_NAT`: what user space learned about a connection.
///
/// Layout (20 bytes): `remote: [u8; 16] @0`, `family: u8 @16`, `state: u8 @17`, `_pad: [u8; 2] @18`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatTarget {
    pub remote: [u8; 16],
    pub family: u8,
    /// [`target`] value.
    pub state: u8,
    pub _pad: [u8; 2],
}

/// Value of `AZF_NAT_PENDING`: bytes held for a connection until its real remote end is known.
/// Shared by all CPUs (atomic adds), so user space reads one value per connection.
///
/// Layout (48 bytes): `bytes: [u64; 2] @0`, `packets: [u64; 2] @16` (indexed by [`Direction`]),
/// `pre_slot: u32 @32` (the pre-NAT destination's counter slot), `done: u16 @36` (the socket
/// resolved and stopped adding), `workload: u16 @38` (the socket's workload index, so held bytes
/// are credited to the workload too), `first_ns: u64 @40` (`bpf_ktime_get_ns` of the first packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingValue {
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
    pub pre_slot: u32,
    pub done: u16,
    pub workload: u16,
    pub first_ns: u64,
}

/// Cells of the per-CPU `AZF_NAT_STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatStat {
    /// Wire bytes of unresolved sockets counted by the kernel, transmit then receive.
    UnresolvedBytesTx = 0,
    UnresolvedBytesRx = 1,
    UnresolvedPacketsTx = 2,
    UnresolvedPacketsRx = 3,
    /// Sockets that went pending.
    Pending = 4,
    /// Sockets that found their mapping.
    Resolved = 5,
    /// The pending map was full: the socket was counted as unresolved at once.
    PendingFull = 6,
    /// RTT or retransmit callbacks dropped because the socket was still pending.
    CallbacksWhilePending = 7,
}

impl NatStat {
    pub const COUNT: u32 = 8;

    #[inline(always)]
    pub const fn unresolved_bytes(dir: Direction) -> Self {
        match dir {
            Direction::Transmit => Self::UnresolvedBytesTx,
            Direction::Receive => Self::UnresolvedBytesRx,
        }
    }

    #[inline(always)]
    pub const fn unresolved_packets(dir: Direction) -> Self {
        match dir {
            Direction::Transmit => Self::UnresolvedPacketsTx,
            Direction::Receive => Self::UnresolvedPacketsRx,
        }
    }
}

/// What the byte path does with a socket whose cache is not current (or pending), decided from
/// the cache alone. Pure, so every transition is tested on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Count with the cached classification.
    UseCached,
    /// Classify by the cached real remote end (`nat_remote`), keep it resolved.
    ReclassifyResolved,
    /// Classify by the packet's own address; a first classification may go pending.
    ClassifyPacket { first: bool },
    /// Look the connection up in the NAT map; hold its bytes while there is no answer.
    TryResolve,
}

/// The decision for a socket with cache `generation`/`nat` when user space published
/// `current`. A current, non-pending cache is the hot path.
#[inline(always)]
pub const fn refresh(cached_generation: u32, nat: u8, current: u32) -> Refresh {
    if nat == state::PENDING {
        return Refresh::TryResolve;
    }
    if cached_generation == current {
        return Refresh::UseCached;
    }
    match nat {
        // A topology refresh re-classifies a resolved socket by its backend, never by the VIP.
        state::RESOLVED => Refresh::ReclassifyResolved,
        // Only a socket seen for the first time may start pending; one already counted directly
        // keeps counting directly, so no byte ever changes side.
        _ => Refresh::ClassifyPacket { first: cached_generation == 0 && nat == state::NONE },
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C); u8 + explicit [u8; 3] + two u16 + two [u8; 16]: 40 bytes, no implicit padding.
    unsafe impl aya::Pod for NatKey {}
    // SAFETY: repr(C); [u8; 16] + two u8 + explicit [u8; 2]: 20 bytes, no implicit padding.
    unsafe impl aya::Pod for NatTarget {}
    // SAFETY: repr(C); four u64 arrays' worth, a u32, two u16, one u64: 48 bytes, no implicit padding.
    unsafe impl aya::Pod for PendingValue {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<NatKey>(), 40);
        assert_eq!(size_of::<NatTarget>(), 20);
        assert_eq!(size_of::<PendingValue>(), 48);
    }

    #[test]
    fn both_directions_of_a_connection_share_one_key() {
        let (pod, vip) = ([10, 0, 1, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [172, 20, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let tx = NatKey::from_packet(4, Direction::Transmit, pod, vip, 40000, 80);
        let rx = NatKey::from_packet(4, Direction::Receive, vip, pod, 80, 40000);
        assert_eq!(tx, rx);
        assert_eq!((tx.local_port, tx.remote_port, tx.remote), (40000, 80, vip));
    }

    #[test]
    fn hot_path_only_when_current_and_not_pending() {
        assert_eq!(refresh(7, state::NONE, 7), Refresh::UseCached);
        assert_eq!(refresh(7, state::RESOLVED, 7), Refresh::UseCached);
        assert_eq!(refresh(7, state::UNRESOLVED, 7), Refresh::UseCached);
        assert_eq!(refresh(7, state::PENDING, 7), Refresh::TryResolve);
        assert_eq!(refresh(3, state::PENDING, 7), Refresh::TryResolve);
    }

    #[test]
    fn refresh_keeps_the_resolution() {
        assert_eq!(refresh(6, state::RESOLVED, 7), Refresh::ReclassifyResolved);
        assert_eq!(refresh(6, state::UNRESOLVED, 7), Refresh::ClassifyPacket { first: false });
        assert_eq!(refresh(6, state::NONE, 7), Refresh::ClassifyPacket { first: false });
        assert_eq!(refresh(0, state::NONE, 7), Refresh::ClassifyPacket { first: true });
    }
}
