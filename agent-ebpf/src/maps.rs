//! Every map the programs share with user space. Names match `agent_common::map_names`;
//! capacities here are defaults that user space overrides at load from config.

use agent_common::{
    Counter, hist, SockClass, State, SubnetInfo, UnmappedKey, UnmappedValue,
    default_sizes::{LPM_PREFIXES, SUBNET_SLOTS, UNMAPPED_PREFIXES},
};
use aya_ebpf::{
    btf_maps::{Array, LpmTrie, LruPerCpuHashMap, PerCpuArray, SkStorage},
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

#[btf_map]
pub static AZF_UNMAPPED: LruPerCpuHashMap<UnmappedKey, UnmappedValue, { UNMAPPED_PREFIXES as usize }> =
    LruPerCpuHashMap::new();

#[btf_map]
pub static AZF_ERRORS: PerCpuArray<u64, { agent_common::KernelError::COUNT as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static AZF_STATE: Array<State, 1> = Array::new();

#[btf_map]
pub static AZF_SOCK_CLASS: SkStorage<SockClass> = SkStorage::new();

/// `hist::row(zone, class) * ROW_STRIDE + bucket` → samples (the row's last cell: sum in µs).
#[btf_map]
pub static AZF_RTT_HIST: PerCpuArray<u64, { hist::CELLS as usize }> = PerCpuArray::new();

#[btf_map]
pub static AZF_CONNECT_HIST: PerCpuArray<u64, { hist::CELLS as usize }> = PerCpuArray::new();

/// `row * TcpEvent::COUNT + event` → count.
#[btf_map]
pub static AZF_TCP_EVENTS: PerCpuArray<u64, { (hist::ROWS * hist::TcpEvent::COUNT) as usize }> =
    PerCpuArray::new();
