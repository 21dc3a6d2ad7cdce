//! Seeing through Service VIPs and other NAT on the node: conntrack tells the real remote end of
//! each connection (`resolver`), the kernel holds a pending socket's bytes until it is known, and
//! each drain credits what was held (`pending`). The design is in `agent_common::nat`.

pub mod ctnetlink;
pub mod pending;
pub mod resolver;
mod socket;

pub use socket::NetlinkSocket;

use std::sync::atomic::Ordering;

pub use pending::{Credit, PendingMaps, PendingSweep, SweepOutcome};
pub use resolver::{Resolver, ResolverStats};

/// NAT figures of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatSnapshot {
    /// Whether NAT resolution is on.
    pub enabled: bool,
    /// Bytes and packets counted under their pre-NAT destination because no mapping came
    /// (kernel-counted plus credited by the sweep), indexed by direction.
    pub unresolved_bytes: [u64; 2],
    pub unresolved_packets: [u64; 2],
    /// Held now, not yet in any total.
    pub pending_bytes: u64,
    pub pending_connections: u64,
    /// Sockets that went pending / found their mapping since the maps were created.
    pub sockets_pending: u64,
    pub sockets_resolved: u64,
    /// Pending map full: counted as unresolved at once.
    pub pending_full: u64,
    pub callbacks_while_pending: u64,
    /// Connections given up on by the sweep (timeout).
    pub timeouts: u64,
    pub conntrack_entries: u64,
    pub conntrack_destroyed: u64,
    pub conntrack_overruns: u64,
    pub conntrack_parse_errors: u64,
    pub nat_map_write_failures: u64,
    pub conntrack_listening: bool,
    /// Candidates wait for their mapping (conntrack seen tracking connections here).
    pub armed: bool,
}

impl NatSnapshot {
    pub fn absorb_resolver(&mut self, s: &ResolverStats) {
        self.conntrack_entries = s.entries.load(Ordering::Relaxed);
        self.conntrack_destroyed = s.destroyed.load(Ordering::Relaxed);
        self.conntrack_overruns = s.overruns.load(Ordering::Relaxed);
        self.conntrack_parse_errors = s.parse_errors.load(Ordering::Relaxed);
        self.nat_map_write_failures = s.write_failures.load(Ordering::Relaxed);
        self.conntrack_listening = s.listening.load(Ordering::Relaxed) == 1;
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
