//! The workload a socket's bytes count under (see `agent_common::workload` for the design):
//! resolved from the socket's cgroup once per workload generation and cached with the socket.

use agent_common::{
    SockState,
    workload::{self as abi, WorkloadStat},
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, bpf_sock},
    helpers::generated::{bpf_sk_cgroup_id, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};

use crate::{
    account::atomic_add,
    maps::{AZF_WL_STATS, AZF_WL_UNKNOWN, AZF_WORKLOAD_IDX},
    sockcache::{self, Published},
};

/// The cached index, or a fresh resolution when user space has published a newer generation.
///
/// # Safety
/// `sk` is a full socket from `bpf_sk_fullsock` and `cache` its non-NULL storage.
#[inline(always)]
pub unsafe fn of_socket(sk: *mut bpf_sock, cache: *mut SockState, published: &Published) -> u32 {
    // SAFETY: per the contract (every access below).
    unsafe {
        if (*cache).workload_generation == published.workload_generation {
            return (*cache).workload;
        }
        let index = resolve(bpf_sk_cgroup_id(sk.cast()), published.workload_capacity);
        (*cache).workload = index;
        (*cache).workload_generation = published.workload_generation;
        index
    }
}

/// A packet without socket storage (handshake, time-wait, storage refused): its cgroup, looked
/// up for this packet alone. A time-wait socket has no cgroup (id 0): `other`.
#[inline(always)]
pub fn of_skb(ctx: &SkBuffContext) -> u32 {
    let published = sockcache::published();
    if published.workload_generation == 0 {
        return abi::HOST_INDEX;
    }
    stat(WorkloadStat::Uncached);
    // SAFETY: the context pointer is this program run's __sk_buff.
    let id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    resolve(id, published.workload_capacity)
}

#[inline(always)]
fn resolve(cgroup_id: u64, capacity: u32) -> u32 {
    // SAFETY: a copy out of the map value.
    let found = unsafe { AZF_WORKLOAD_IDX.get(&cgroup_id).copied() };
    let r = abi::resolve(found, capacity);
    stat(WorkloadStat::Resolved);
    if r.unknown && cgroup_id != 0 {
        stat(WorkloadStat::Unknown);
        // An LRU: a full map drops its oldest id, which then stays `other` (counted above).
        let _ = AZF_WL_UNKNOWN.insert(&cgroup_id, &1, BPF_ANY.into());
    }
    r.index
}

#[inline(always)]
fn stat(which: WorkloadStat) {
    if let Some(cell) = AZF_WL_STATS.get_ptr_mut(which as u32) {
        // SAFETY: valid, aligned per-CPU array cell.
        unsafe { atomic_add(cell, 1) };
    }
}
