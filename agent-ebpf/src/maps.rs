//! Every map the programs share with user space. Names match `agent_common::map_names`;
//! capacities here are defaults that user space overrides at load from config.

use agent_common::{
    Counter, hist, SeenFlags, SockState, State, SubnetInfo, UnmappedKey, UnmappedValue,
    default_sizes::{
        LPM_PREFIXES, NAT_ENTRIES, NAT_PENDING, SUBNET_SLOTS, UNMAPPED_PREFIXES, WORKLOAD_CGROUPS, WORKLOAD_INDICES,
        WORKLOAD_UNKNOWN,
    },
    nat::{NatKey, NatStat, NatTarget, PendingValue},
    workload_rtt::{Mode, WorkloadRtt},
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, SkStorage},
    macros::btf_map,
};

#[btf_map]
pub static AZF_SUBNETS_V4: LpmTrie<[u8; 4], SubnetInfo, { LPM_PREFIXES as usize }> = LpmTrie::new();

#[btf_map]
pub static AZF_SUBNETS_V6: LpmTrie<[u8; 16], SubnetInfo, { LPM_PREFIXES as usize }> =
    LpmTrie::new();

/// `counter_index(slot, direction)` → bytes and packets.
#[btf_map]
pub static AZF_COUNTERS: PerCpuArray<Counter, { (SUBNET_SLOTS * 2) as usize }> = PerCpuArray::new();

/// A flag byte per slot (`seen_position`), set once a socket is classified into the slot: the
/// drain reads the counters of flagged slots only, instead of every cell of a table sized for
/// 100k subnets. Never cleared, so a plain byte store is enough (no update to lose between CPUs).
#[btf_map]
pub static AZF_SLOT_SEEN: Array<SeenFlags, { agent_common::seen_elements(SUBNET_SLOTS) as usize }> = Array::new();

#[btf_map]
pub static AZF_UNMAPPED: LruPerCpuHashMap<UnmappedKey, UnmappedValue, { UNMAPPED_PREFIXES as usize }> =
    LruPerCpuHashMap::new();

#[btf_map]
pub static AZF_ERRORS: PerCpuArray<u64, { agent_common::KernelError::COUNT as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static AZF_STATE: Array<State, 1> = Array::new();

#[btf_map]
pub static AZF_SOCK_CLASS: SkStorage<SockState> = SkStorage::new();

/// `hist::row(zone, class) * ROW_STRIDE + bucket` → samples (the row's last cell: sum in µs).
#[btf_map]
pub static AZF_RTT_HIST: PerCpuArray<u64, { hist::CELLS as usize }> = PerCpuArray::new();

/// Smoothed RTTs of sockets that predate the agent, same rows as `AZF_RTT_HIST` (kept apart:
/// a smoothed value is not a per-ack sample).
#[btf_map]
pub static AZF_SRTT_HIST: PerCpuArray<u64, { hist::CELLS as usize }> = PerCpuArray::new();

#[btf_map]
pub static AZF_CONNECT_HIST: PerCpuArray<u64, { hist::CELLS as usize }> = PerCpuArray::new();

/// `row * TcpEvent::COUNT + event` → count.
#[btf_map]
pub static AZF_TCP_EVENTS: PerCpuArray<u64, { (hist::ROWS * hist::TcpEvent::COUNT) as usize }> =
    PerCpuArray::new();

/// Connection (pre-NAT tuple) → its real remote end, written by user space from conntrack. An LRU:
/// user space writes every mapping it learns, and only pending sockets ever read one.
#[btf_map]
pub static AZF_NAT: LruHashMap<NatKey, NatTarget, { NAT_ENTRIES as usize }> = LruHashMap::new();

/// Bytes held per pending connection. Not an LRU (an eviction would lose bytes) and not
/// preallocated, so an entry user space deletes is freed after RCU rather than recycled under a
/// program still adding to it.
#[btf_map]
pub static AZF_NAT_PENDING: HashMap<NatKey, PendingValue, { NAT_PENDING as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// `NatStat` → count.
#[btf_map]
pub static AZF_NAT_STATS: PerCpuArray<u64, { NatStat::COUNT as usize }> = PerCpuArray::new();

/// cgroup v2 id → workload index, written by user space after each walk of the cgroup tree.
#[btf_map]
pub static AZF_WORKLOAD_IDX: HashMap<u64, u32, { WORKLOAD_CGROUPS as usize }> = HashMap::new();

/// `workload::cell(index, row, direction)` → bytes and packets (the same bytes as `AZF_COUNTERS`,
/// split by workload and destination row).
#[btf_map]
pub static AZF_WL_COUNTERS: PerCpuArray<Counter, { agent_common::workload::cells(WORKLOAD_INDICES) as usize }> =
    PerCpuArray::new();

/// cgroup ids a socket resolved without an index (counted as `other`): user space names them at
/// its next drain instead of waiting for its next walk. An LRU, so a storm of short-lived cgroups
/// costs a bounded map; user space deletes what it read.
#[btf_map]
pub static AZF_WL_UNKNOWN: LruHashMap<u64, u64, { WORKLOAD_UNKNOWN as usize }> = LruHashMap::new();

/// `workload_rtt::entry(index, row)` → that workload's RTT samples towards that row. Shared, not
/// per CPU (atomic adds; samples are rate-limited per socket), so its memory does not grow with
/// the CPU count; user space sizes it (one entry when `--workload-rtt off`).
#[btf_map]
pub static AZF_WL_RTT: Array<WorkloadRtt, { agent_common::workload_rtt::entries(WORKLOAD_INDICES, Mode::CrossAz) as usize }> =
    Array::new();

/// `WorkloadStat` → count.
#[btf_map]
pub static AZF_WL_STATS: PerCpuArray<u64, { agent_common::workload::WorkloadStat::COUNT as usize }> =
    PerCpuArray::new();
