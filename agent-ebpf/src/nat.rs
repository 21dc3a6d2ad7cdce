//! The NAT-pending path shared by both programs (see `agent_common::nat` for the design).
//! Only sockets that went pending ever come here; everything else stays on the hot path.

use agent_common::{
    SockState, SubnetInfo,
    hist,
    nat::{NatKey, NatStat, PendingValue, state, target},
};
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};

use crate::{
    account::atomic_add,
    classify,
    maps::{AZF_CONNECT_HIST, AZF_NAT, AZF_NAT_PENDING, AZF_NAT_STATS},
    rtt::add_sample,
};

/// What the NAT map says about a pending connection. A plain, fully initialised struct rather
/// than an enum with a payload (see `classify`: the verifier rejects reads of undefined bytes).
pub struct Answer {
    /// One of the `ANSWER_*` codes.
    pub code: u8,
    /// The backend's classification when resolved; zero otherwise.
    pub info: SubnetInfo,
}

/// Not known yet: keep holding.
pub const ANSWER_PENDING: u8 = 0;
/// Resolved; the cache now names the backend and `info` is its classification.
pub const ANSWER_RESOLVED: u8 = 1;
/// User space gave up: the caller classifies by the pre-NAT address and calls [`give_up`].
pub const ANSWER_UNRESOLVED: u8 = 2;

const NOTHING: SubnetInfo = SubnetInfo { slot: 0, zone_idx: 0, class: 0, flags: 0 };

/// Looks the connection up and, when user space named its real remote end, caches it.
///
/// # Safety
/// `cache` is this socket's non-NULL storage, valid for the program run.
#[inline(always)]
pub unsafe fn try_resolve(cache: *mut SockState, key: &NatKey, generation: u32) -> Answer {
    // SAFETY: a copy out of the map value, read once.
    let Some(t) = (unsafe { AZF_NAT.get(key).copied() }) else {
        return Answer { code: ANSWER_PENDING, info: NOTHING };
    };
    if t.state != target::RESOLVED {
        return Answer { code: ANSWER_UNRESOLVED, info: NOTHING };
    }
    let info = classify::lookup_addr(t.family, t.remote);
    // SAFETY: per the contract.
    unsafe {
        (*cache).nat_remote = t.remote;
        (*cache).nat_family = t.family;
        (*cache).nat = state::RESOLVED;
        settle(cache, key, info, generation);
    }
    stat(NatStat::Resolved, 1);
    Answer { code: ANSWER_RESOLVED, info }
}

/// Marks a pending socket unresolved, counted from now on under `pre_nat`.
///
/// # Safety
/// As [`try_resolve`].
#[inline(always)]
pub unsafe fn give_up(cache: *mut SockState, key: &NatKey, pre_nat: SubnetInfo, generation: u32) {
    // SAFETY: per the contract.
    unsafe {
        (*cache).nat = state::UNRESOLVED;
        settle(cache, key, pre_nat, generation);
    }
}

/// The end of pending: cache the classification, tell user space the socket stopped adding to its
/// pending entry, and record the connect time held while it was unknown.
#[inline(always)]
unsafe fn settle(cache: *mut SockState, key: &NatKey, info: SubnetInfo, generation: u32) {
    // SAFETY: the callers' contract.
    unsafe {
        (*cache).info = info;
        (*cache).generation = generation;
        if let Some(p) = AZF_NAT_PENDING.get_ptr_mut(key) {
            (*p).done = 1;
        }
        let held = (*cache).held_connect_us;
        if held != 0 {
            (*cache).held_connect_us = 0;
            add_sample(&AZF_CONNECT_HIST, hist::row(info.zone_idx, info.class), held);
        }
    }
}

/// Adds one packet to the connection's pending entry. False when the map is full (the caller
/// then counts the socket as unresolved instead: bytes are never dropped).
#[inline(always)]
pub fn hold(key: &NatKey, pre_slot: u32, workload: u32, dir: usize, bytes: u64, packets: u64) -> bool {
    if add_pending(key, dir, bytes, packets) {
        return true;
    }
    // Indices are u16 by configuration (`--max-workloads` ≤ 65533).
    let workload = if workload > u32::from(u16::MAX) { agent_common::workload::OTHER_INDEX as u16 } else { workload as u16 };
    let mut value = PendingValue { pre_slot, workload, first_ns: now_ns(), ..PendingValue::default() };
    if dir < 2 {
        value.bytes[dir] = bytes;
        value.packets[dir] = packets;
    }
    match AZF_NAT_PENDING.insert(key, &value, BPF_NOEXIST.into()) {
        Ok(()) => true,
        // Another CPU created it in between.
        Err(_) => add_pending(key, dir, bytes, packets),
    }
}

#[inline(always)]
fn add_pending(key: &NatKey, dir: usize, bytes: u64, packets: u64) -> bool {
    let Some(p) = AZF_NAT_PENDING.get_ptr_mut(key) else { return false };
    if dir < 2 {
        // SAFETY: a live, 8-byte aligned map value (not preallocated: freed only after RCU).
        unsafe {
            atomic_add(&raw mut (*p).bytes[dir], bytes);
            atomic_add(&raw mut (*p).packets[dir], packets);
        }
    }
    true
}

#[inline(always)]
pub fn stat(which: NatStat, n: u64) {
    if let Some(cell) = AZF_NAT_STATS.get_ptr_mut(which as u32) {
        // SAFETY: valid, aligned per-CPU array cell.
        unsafe { atomic_add(cell, n) };
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
