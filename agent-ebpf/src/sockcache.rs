//! Socket-local storage shared by both programs: the cached classification and the sock_ops
//! timestamps live in one value per socket.

use agent_common::SockState;
use aya_ebpf::{
    bindings::{BPF_SK_STORAGE_GET_F_CREATE, bpf_sock},
    helpers::generated::bpf_sk_storage_get,
};

use crate::maps::{AZF_SOCK_CLASS, AZF_STATE};

/// What user space published, read with one map lookup per packet.
#[derive(Clone, Copy)]
pub struct Published {
    /// Topology generation (0: no topology yet).
    pub generation: u32,
    /// Workload generation (0: no workload index written yet; every socket counts as host).
    pub workload_generation: u32,
    pub workload_capacity: u32,
}

#[inline(always)]
pub fn published() -> Published {
    match AZF_STATE.get(0) {
        Some(s) => Published {
            generation: s.generation,
            workload_generation: s.workload_generation,
            workload_capacity: s.workload_capacity,
        },
        None => Published { generation: 0, workload_generation: 0, workload_capacity: 0 },
    }
}

/// The topology generation user space published (0: no topology yet).
#[inline(always)]
pub fn generation() -> u32 {
    AZF_STATE.get(0).map_or(0, |s| s.generation)
}

/// The RTT sampling interval user space configured.
#[inline(always)]
pub fn rtt_interval_ns() -> u64 {
    AZF_STATE.get(0).map_or(0, |s| s.rtt_interval_ns)
}

/// This socket's storage, created zeroed on first use; NULL when the kernel refuses.
///
/// # Safety
/// `sk` must be a full socket pointer obtained from the kernel in this program run.
#[inline(always)]
pub unsafe fn storage(sk: *mut bpf_sock) -> *mut SockState {
    let map = core::ptr::from_ref(&AZF_SOCK_CLASS).cast_mut().cast();
    // SAFETY: per the contract; a NULL initial value asks for zeroed storage.
    unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), BPF_SK_STORAGE_GET_F_CREATE.into()) }
        .cast::<SockState>()
}
