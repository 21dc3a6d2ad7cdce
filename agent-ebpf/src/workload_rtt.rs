//! RTT per workload (design and decisions: `agent_common::workload_rtt`): the sample the host
//! histogram has just taken, added once more under the socket's workload. Called from sock_ops
//! (per-ack samples) and from the byte path's smoothed-RTT read of sockets older than the agent,
//! never from the per-packet hot path.

use agent_common::{KernelError, SockState, workload_rtt as abi};

use crate::{
    account::{atomic_add, count_error},
    maps::{AZF_STATE, AZF_WL_RTT},
};

/// Records `us` towards `row`, a destination of `class`, under the workload cached on `cache`.
///
/// # Safety
/// `cache` is NULL (a socket without storage) or this socket's storage, valid for the program run.
#[inline(always)]
pub unsafe fn record(cache: *const SockState, class: u8, row: u32, us: u64) {
    let Some(state) = AZF_STATE.get(0) else { return };
    if !abi::wants(state.workload_rtt, class) {
        return;
    }
    // SAFETY: per the contract.
    let cached = if cache.is_null() { None } else { unsafe { Some(((*cache).workload, (*cache).workload_generation)) } };
    let index = abi::index_of(cached, state.workload_generation);
    let Some(v) = AZF_WL_RTT.get_ptr_mut(abi::entry(index, row)) else {
        count_error(KernelError::WorkloadIndex);
        return;
    };
    // Clamped (it already is) so the verifier sees the bucket inside the value.
    let c = (abi::cell(us) as usize).min(abi::BUCKETS as usize - 1);
    // SAFETY: a valid, 8-byte aligned array value for the program run; `c` < BUCKETS. Shared by
    // every CPU, so each field is added atomically.
    unsafe {
        atomic_add((&raw mut (*v).buckets).cast::<u64>().add(c), 1);
        atomic_add(&raw mut (*v).sum_us, us);
        atomic_add(&raw mut (*v).count, 1);
    }
}
