//! RTT for sockets that predate the agent. sock_ops callbacks are switched on per socket when a
//! connection is established while attached; older sockets (long-lived gRPC, database and cache
//! connections) never get them. For those the byte path reads the kernel's smoothed RTT and
//! retransmission count through `bpf_tcp_sock` (cgroup_skb, kernel ≥ 5.1, no BTF), at most once
//! per socket per sampling interval, into a histogram kept apart from the per-ack samples.

use agent_common::{
    SockState,
    hist::{self, TcpEvent},
};
use aya_ebpf::{bindings::bpf_sock, helpers::{bpf_ktime_get_ns, generated::bpf_tcp_sock}};

use crate::{maps::AZF_SRTT_HIST, rtt, sockcache, workload_rtt};

/// Samples `full`'s smoothed RTT if it is due; the sample also goes to the socket's workload
/// (whose index the byte path has just refreshed in `cache`).
///
/// # Safety
/// `full` is a full TCP socket and `cache` its non-NULL storage, both valid for the program run.
#[inline(always)]
pub unsafe fn poll(full: *mut bpf_sock, cache: *mut SockState, zone_idx: u16, class: u8) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per the contract.
    let last = unsafe { (*cache).rtt_sampled_ns };
    if !hist::srtt_due(now, last, sockcache::rtt_interval_ns()) {
        return;
    }
    // SAFETY: `full` is a full socket; the helper returns NULL for non-TCP ones.
    let tp = unsafe { bpf_tcp_sock(full) };
    if tp.is_null() {
        return;
    }
    // SAFETY: a non-NULL tcp_sock view; the verifier rewrites these reads.
    let (srtt8, retrans) = unsafe { ((*tp).srtt_us, (*tp).total_retrans) };
    let row = hist::row(zone_idx, class);
    // SAFETY: per the contract.
    unsafe {
        let seen = (*cache).retrans_seen;
        let delta = hist::retrans_since(seen, retrans, last == 0);
        if delta != 0 {
            rtt::add_event(row, TcpEvent::RetransmitSegments, u64::from(delta));
        }
        (*cache).retrans_seen = retrans;
        (*cache).rtt_sampled_ns = now;
    }
    // srtt_us is kept ×8; 0 until the first RTT measurement.
    let us = u64::from(srtt8 >> 3);
    if us != 0 {
        rtt::add_sample(&AZF_SRTT_HIST, row, us);
        rtt::add_event(row, TcpEvent::SrttSamples, 1);
        // SAFETY: per the contract.
        unsafe { workload_rtt::record(cache, class, row, us) };
    }
}
