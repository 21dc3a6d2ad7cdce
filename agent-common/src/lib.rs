//! The ABI shared by the azflow eBPF programs and user space.
//!
//! Everything here is `#[repr(C)]` with explicit padding, so the kernel and user space agree on
//! every byte; `size_of` tests pin the layouts. Pure logic that both sides need (slot arithmetic,
//! address masking, wire-byte correction) lives here too, so it is unit-tested on the host.
#![no_std]

pub mod hist;
pub mod nat;
pub mod workload;
pub mod workload_rtt;

/// Bumped whenever a map layout or meaning changes; pinned maps carry it in their path so a new
/// agent never misreads an old layout. (Not for additions an older agent of the same schema
/// reads safely: `AZF_WL_RTT` is a new map, and `State::workload_rtt` was zeroed padding.)
pub const SCHEMA_VERSION: u32 = 4;

/// Map names, shared so user space never spells one differently from the kernel.
pub mod map_names {
    pub const SUBNETS_V4: &str = "AZF_SUBNETS_V4";
    pub const SUBNETS_V6: &str = "AZF_SUBNETS_V6";
    pub const COUNTERS: &str = "AZF_COUNTERS";
    pub const UNMAPPED: &str = "AZF_UNMAPPED";
    pub const ERRORS: &str = "AZF_ERRORS";
    pub const STATE: &str = "AZF_STATE";
    pub const SOCK_CLASS: &str = "AZF_SOCK_CLASS";
    pub const RTT_HIST: &str = "AZF_RTT_HIST";
    pub const CONNECT_HIST: &str = "AZF_CONNECT_HIST";
    pub const TCP_EVENTS: &str = "AZF_TCP_EVENTS";
    pub const NAT: &str = "AZF_NAT";
    pub const NAT_PENDING: &str = "AZF_NAT_PENDING";
    pub const NAT_STATS: &str = "AZF_NAT_STATS";
    pub const SRTT_HIST: &str = "AZF_SRTT_HIST";
    pub const WORKLOAD_IDX: &str = "AZF_WORKLOAD_IDX";
    pub const WL_COUNTERS: &str = "AZF_WL_COUNTERS";
    pub const WL_UNKNOWN: &str = "AZF_WL_UNKNOWN";
    pub const WL_STATS: &str = "AZF_WL_STATS";
    pub const SLOT_SEEN: &str = "AZF_SLOT_SEEN";
    pub const WL_RTT: &str = "AZF_WL_RTT";

    /// Every map, for pinning.
    pub const ALL: [&str; 20] = [
        SUBNETS_V4, SUBNETS_V6, COUNTERS, UNMAPPED, ERRORS, STATE, SOCK_CLASS, RTT_HIST, CONNECT_HIST, TCP_EVENTS,
        NAT, NAT_PENDING, NAT_STATS, SRTT_HIST, WORKLOAD_IDX, WL_COUNTERS, WL_UNKNOWN, WL_STATS, SLOT_SEEN, WL_RTT,
    ];
}

/// Program names (distinct from every map and static: a clash fails at link time).
pub mod prog_names {
    pub const EGRESS: &str = "azflow_egress";
    pub const INGRESS: &str = "azflow_ingress";
    pub const SOCK_OPS: &str = "azflow_sockops";
    /// Does nothing: the baseline program of the benchmark.
    pub const BENCH_EMPTY: &str = "azflow_bench_empty";
}

/// Compile-time map capacities. User space resizes the maps at load from config
/// (`EbpfLoader::set_max_entries`); these are only the defaults baked into the object.
pub mod default_sizes {
    /// Subnet slots (real subnets plus the per-class catch-all ranges).
    pub const SUBNET_SLOTS: u32 = 4096;
    /// Prefixes per address family in the LPM tries.
    pub const LPM_PREFIXES: u32 = 4096;
    /// Distinct unmapped /24 (v4) or /48 (v6) prefixes remembered.
    pub const UNMAPPED_PREFIXES: u32 = 1024;
    /// Connections whose real remote end user space has named (an LRU: stale ones fall out).
    pub const NAT_ENTRIES: u32 = 65536;
    /// Connections whose bytes are held until their real remote end is known.
    pub const NAT_PENDING: u32 = 16384;
    /// Workload indices with counters: host, other and 200 workloads.
    pub const WORKLOAD_INDICES: u32 = 202;
    /// Live cgroups the kernel can map to a workload index (every cgroup on the host needs one).
    pub const WORKLOAD_CGROUPS: u32 = 16384;
    /// Distinct cgroup ids without an index remembered for user space to name (an LRU).
    pub const WORKLOAD_UNKNOWN: u32 = 4096;
}

/// Traffic class of a destination, as seen from this host.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficClass {
    SameAz = 0,
    CrossAz = 1,
    /// Private address outside this VPC's CIDRs (peered VPC, other region, on-premises).
    CrossVpc = 2,
    /// Public address.
    Internet = 3,
    /// Inside the VPC's CIDRs but in no known subnet, or nothing known at all.
    Unknown = 4,
}

impl TrafficClass {
    pub const ALL: [Self; 5] = [
        Self::SameAz,
        Self::CrossAz,
        Self::CrossVpc,
        Self::Internet,
        Self::Unknown,
    ];

    pub const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::SameAz,
            1 => Self::CrossAz,
            2 => Self::CrossVpc,
            3 => Self::Internet,
            _ => Self::Unknown,
        }
    }

    /// The label value used in every exported metric.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SameAz => "same_az",
            Self::CrossAz => "cross_az",
            Self::CrossVpc => "cross_vpc",
            Self::Internet => "internet",
            Self::Unknown => "unknown",
        }
    }
}

/// Direction of a packet relative to this host.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Sent by this host (cgroup egress).
    Transmit = 0,
    /// Received by this host (cgroup ingress).
    Receive = 1,
}

impl Direction {
    pub const ALL: [Self; 2] = [Self::Transmit, Self::Receive];

    /// OpenTelemetry `network.io.direction` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transmit => "transmit",
            Self::Receive => "receive",
        }
    }
}

/// Subnet slot 0 is never handed out: a lookup that misses every prefix counts there, which
/// only happens while user space has not written the catch-all ranges yet.
pub const SLOT_NO_MATCH: u32 = 0;

/// Slots per element of [`map_names::SLOT_SEEN`]: one flag byte each.
pub const SEEN_PER_ELEMENT: u32 = 64;

/// One element of [`map_names::SLOT_SEEN`].
pub type SeenFlags = [u8; SEEN_PER_ELEMENT as usize];

/// Where a slot's flag lives in [`map_names::SLOT_SEEN`]: (element, byte).
#[inline(always)]
pub const fn seen_position(slot: u32) -> (u32, u32) {
    (slot / SEEN_PER_ELEMENT, slot % SEEN_PER_ELEMENT)
}

/// Elements of [`map_names::SLOT_SEEN`] for `slots` slots.
pub const fn seen_elements(slots: u32) -> u32 {
    slots.div_ceil(SEEN_PER_ELEMENT)
}

/// Index into [`map_names::COUNTERS`] for a subnet slot and direction.
#[inline(always)]
pub const fn counter_index(slot: u32, dir: Direction) -> u32 {
    slot.wrapping_mul(2).wrapping_add(dir as u32)
}

/// Value of the LPM tries: what a destination prefix means.
///
/// Layout (8 bytes): `slot: u32 @0`, `zone_idx: u16 @4`, `class: u8 @6`, `flags: u8 @7`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubnetInfo {
    /// Counter slot; stable for the life of the subnet across topology refreshes.
    pub slot: u32,
    /// Index of the destination zone in user space's zone table (RTT histograms use it).
    pub zone_idx: u16,
    /// [`TrafficClass`] as u8.
    pub class: u8,
    /// `SUBNET_FLAG_*` bits.
    pub flags: u8,
}

/// The prefix is a catch-all range, not a known subnet: remember the destination in the
/// unmapped list so users can find subnets their topology misses.
pub const SUBNET_FLAG_UNMAPPED: u8 = 1;

/// A destination that may be a NAT front (a Service VIP): a socket's first packet to it makes the
/// socket pending until the node's conntrack names the real remote end (see [`nat`]).
pub const SUBNET_FLAG_NAT_CANDIDATE: u8 = 2;

/// Zone index meaning "no zone" (catch-all ranges).
pub const ZONE_NONE: u16 = u16::MAX;

/// Bytes and packets of one counter cell (per CPU in the kernel, summed in user space).
///
/// Layout (16 bytes): `bytes: u64 @0`, `packets: u64 @8`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub bytes: u64,
    pub packets: u64,
}

/// Key of the unmapped-destination LRU: the remote address masked to /24 (v4) or /48 (v6).
///
/// Layout (20 bytes): `family: u8 @0` (4 or 6), `_pad: [u8; 3] @1`, `addr: [u8; 16] @4` (v4 in
/// the first four bytes, the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnmappedKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

pub const UNMAPPED_V4_PREFIX: u8 = 24;
pub const UNMAPPED_V6_PREFIX: u8 = 48;

impl UnmappedKey {
    #[inline(always)]
    pub const fn v4(addr: [u8; 4]) -> Self {
        Self {
            family: 4,
            _pad: [0; 3],
            addr: [
                addr[0], addr[1], addr[2], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }

    #[inline(always)]
    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            family: 6,
            _pad: [0; 3],
            addr: [
                addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }
}

/// Value of the unmapped-destination LRU (per CPU), indexed by [`Direction`].
///
/// Layout (32 bytes): `bytes: [u64; 2] @0`, `packets: [u64; 2] @16`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmappedValue {
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
}

/// Socket-local state: the cached classification (so the LPM lookup runs once per socket and
/// topology generation, not once per packet), how NAT was resolved, and the sock_ops timestamps.
///
/// Layout (72 bytes): `generation: u32 @0`, `info: SubnetInfo @4`, `nat: u8 @12`,
/// `nat_family: u8 @13`, `ops_callbacks: u8 @14`, `_pad: u8 @15`, `connect_start_ns: u64 @16`,
/// `rtt_sampled_ns: u64 @24`, `held_connect_us: u64 @32`, `nat_remote: [u8; 16] @40`,
/// `retrans_seen: u32 @56`, `_pad2: u32 @60`, `workload: u32 @64`, `workload_generation: u32 @68`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// [`State::generation`] at classification time; 0 means "not classified yet".
    pub generation: u32,
    pub info: SubnetInfo,
    /// [`nat::state`] value.
    pub nat: u8,
    /// 4 or 6: the family of `nat_remote` (0 when unresolved).
    pub nat_family: u8,
    /// 1 once sock_ops callbacks run for this socket (it was established while attached, or an
    /// earlier agent switched them on). 0: a socket that predates the agent, whose RTT the byte
    /// path reads from the kernel's smoothed RTT instead.
    pub ops_callbacks: u8,
    pub _pad: u8,
    /// `bpf_ktime_get_ns` when an active open started; 0 when none is pending.
    pub connect_start_ns: u64,
    /// When this socket's last RTT sample was taken (sampling interval).
    pub rtt_sampled_ns: u64,
    /// A connect duration measured while the socket was NAT-pending: recorded under the real
    /// destination once it is known (0: none held).
    pub held_connect_us: u64,
    /// The real remote end of a NAT-resolved socket, so a topology refresh re-classifies it by
    /// the backend, not by the VIP its packets carry.
    pub nat_remote: [u8; 16],
    /// `tcp_sock.total_retrans` when the byte path last read it (sockets without callbacks).
    pub retrans_seen: u32,
    pub _pad2: u32,
    /// Workload index of the socket's cgroup (see [`workload`]).
    pub workload: u32,
    /// [`State::workload_generation`] when `workload` was resolved; 0: not yet.
    pub workload_generation: u32,
}

/// Index 0 of the single-entry state array user space writes.
///
/// Layout (24 bytes): `generation: u32 @0`, `workload_generation: u32 @4`,
/// `rtt_interval_ns: u64 @8`, `workload_capacity: u32 @16`, `workload_rtt: u32 @20`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Bumped (never 0) after every change to the LPM tries; sockets whose cache is older
    /// classify again.
    pub generation: u32,
    /// Bumped (never 0) after user space writes new cgroup id → workload index pairs; sockets
    /// resolved under an older one resolve again.
    pub workload_generation: u32,
    /// At most one RTT sample per socket per this many nanoseconds (0: every sample).
    pub rtt_interval_ns: u64,
    /// Workload indices with counter cells; an index at or beyond it counts as `other`.
    pub workload_capacity: u32,
    /// [`workload_rtt::Mode`]: which rows get per-workload RTT. Was padding before; a state an
    /// older agent of this schema wrote holds 0 there, which is off.
    pub workload_rtt: u32,
}

/// Kernel-side failures, counted per CPU instead of logged (indexes into [`map_names::ERRORS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// The IP header could not be read.
    HeaderLoad = 0,
    /// A counter slot outside the array (a topology larger than the map).
    CounterIndex = 1,
    /// The unmapped LRU refused an insert.
    UnmappedInsert = 2,
    /// The TCP header of a segmented packet could not be read; counted without correction.
    TcpHeaderLoad = 3,
    /// Socket storage could not be created; classified per packet instead (slower, still exact).
    SockStorage = 4,
    /// A new unmapped prefix entered the LRU (not an error: inserted − present = evicted).
    UnmappedNew = 5,
    /// A workload counter cell or RTT entry outside its array (the bytes and the sample are in
    /// the host totals still).
    WorkloadIndex = 6,
}

impl KernelError {
    pub const COUNT: u32 = 7;
    pub const ALL: [Self; 7] = [
        Self::HeaderLoad,
        Self::CounterIndex,
        Self::UnmappedInsert,
        Self::TcpHeaderLoad,
        Self::SockStorage,
        Self::UnmappedNew,
        Self::WorkloadIndex,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HeaderLoad => "header_load",
            Self::CounterIndex => "counter_index",
            Self::UnmappedInsert => "unmapped_insert",
            Self::TcpHeaderLoad => "tcp_header_load",
            Self::SockStorage => "sock_storage",
            Self::UnmappedNew => "unmapped_new",
            Self::WorkloadIndex => "workload_index",
        }
    }
}

/// Bytes a (possibly GSO/TSO) packet puts on the wire at L3: the super-packet's length plus one
/// more IP + TCP header for every extra segment it is cut into.
#[inline(always)]
pub const fn wire_bytes(len: u32, gso_segs: u32, l3_l4_header_len: u32) -> u64 {
    let extra = gso_segs.saturating_sub(1);
    len as u64 + extra as u64 * l3_l4_header_len as u64
}

/// Packets on the wire for a packet with `gso_segs` segments (0 means "not GSO": one packet).
#[inline(always)]
pub const fn wire_packets(gso_segs: u32) -> u64 {
    if gso_segs > 1 { gso_segs as u64 } else { 1 }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), only integer fields, no implicit padding (8 bytes = 4 + 2 + 1 + 1).
    unsafe impl aya::Pod for SubnetInfo {}
    // SAFETY: repr(C), two u64, no padding.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: repr(C), u8 + explicit [u8; 3] pad + [u8; 16], no implicit padding.
    unsafe impl aya::Pod for UnmappedKey {}
    // SAFETY: repr(C), u64 arrays only, no padding.
    unsafe impl aya::Pod for UnmappedValue {}
    // SAFETY: repr(C), u32 + 8-byte SubnetInfo + four u8 + three u64 + [u8; 16] + four u32: no
    // implicit padding (72 bytes).
    unsafe impl aya::Pod for SockState {}
    // SAFETY: repr(C), two u32, a u64, two u32: no implicit padding (24 bytes).
    unsafe impl aya::Pod for State {}
    // SAFETY: repr(C), u64 fields only (an array and two more), no padding (424 bytes).
    unsafe impl aya::Pod for workload_rtt::WorkloadRtt {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<SubnetInfo>(), 8);
        assert_eq!(align_of::<SubnetInfo>(), 4);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<UnmappedKey>(), 20);
        assert_eq!(size_of::<UnmappedValue>(), 32);
        assert_eq!(size_of::<SockState>(), 72);
        assert_eq!(size_of::<State>(), 24);
    }

    #[test]
    fn every_slot_has_its_own_seen_flag_inside_the_map() {
        let slots = 4096 + 17;
        let elements = seen_elements(slots);
        assert_eq!(elements, 65);
        let mut seen = [[false; SEEN_PER_ELEMENT as usize]; 65];
        for slot in 0..slots {
            let (e, b) = seen_position(slot);
            assert!(e < elements && b < SEEN_PER_ELEMENT);
            assert!(!seen[e as usize][b as usize], "slot {slot} shares a flag");
            seen[e as usize][b as usize] = true;
        }
        assert_eq!(seen_elements(0), 0);
        assert_eq!(seen_elements(u32::MAX), u32::MAX / 64 + 1);
    }

    #[test]
    fn wire_bytes_adds_one_header_set_per_extra_segment() {
        assert_eq!(wire_bytes(1500, 0, 52), 1500);
        assert_eq!(wire_bytes(1500, 1, 52), 1500);
        // 64 KiB TSO super-packet of 45 segments with 20-byte IP + 32-byte TCP headers.
        assert_eq!(wire_bytes(65_212, 45, 52), 65_212 + 44 * 52);
        assert_eq!(wire_packets(0), 1);
        assert_eq!(wire_packets(45), 45);
    }

    #[test]
    fn unmapped_keys_mask_to_24_and_48() {
        let k = UnmappedKey::v4([10, 1, 2, 3]);
        assert_eq!(&k.addr[..4], &[10, 1, 2, 0]);
        let k = UnmappedKey::v6([0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(&k.addr[..8], &[0xfd, 0, 1, 2, 3, 4, 0, 0]);
        assert_eq!(k.family, 6);
    }

    #[test]
    fn counter_index_interleaves_directions() {
        assert_eq!(counter_index(0, Direction::Transmit), 0);
        assert_eq!(counter_index(3, Direction::Receive), 7);
    }

    #[test]
    fn class_round_trips() {
        for c in TrafficClass::ALL {
            assert_eq!(TrafficClass::from_u8(c as u8), c);
        }
    }
}
