//! Per-packet accounting. The hot path is one socket-cache read, two comparisons and four atomic
//! adds (the host's slot counter, then the socket's workload counter); sockets seen for the first
//! time, after a topology change, or waiting for their NAT mapping take the slow path
//! (`slow_socket`), and sockets whose workload generation is stale resolve their cgroup again
//! (`workload::of_socket`).

use agent_common::{
    Direction, KernelError, SUBNET_FLAG_NAT_CANDIDATE, SUBNET_FLAG_UNMAPPED, SockState, SubnetInfo,
    UnmappedValue, counter_index, hist,
    nat::{self as natabi, NatStat, Refresh, state},
    wire_bytes, wire_packets,
    workload as wlabi,
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, __sk_buff},
    helpers::generated::bpf_sk_fullsock,
    programs::SkBuffContext,
};

use crate::{
    classify::{self, IPPROTO_TCP, IpInfo},
    maps::{AZF_COUNTERS, AZF_ERRORS, AZF_NAT, AZF_SLOT_SEEN, AZF_UNMAPPED, AZF_WL_COUNTERS},
    nat, sockcache, srtt, workload,
};

const TCP_LISTEN: u32 = 10;
const TCP_NEW_SYN_RECV: u32 = 12;
const SOCK_STREAM: u32 = 1;

/// One packet's length fields, read once from the context, and the workload index its bytes
/// count under.
#[derive(Clone, Copy)]
struct Packet {
    len: u32,
    gso_segs: u32,
    workload: u32,
}

#[inline(always)]
pub fn on_packet(ctx: &SkBuffContext, dir: Direction) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context pointer is the kernel's __sk_buff for the whole program run; the
    // verifier rewrites these field reads into safe loads.
    let (len, gso_segs, sk) = unsafe { ((*skb).len, (*skb).gso_segs, (*skb).__bindgen_anon_2.sk) };
    let mut l = Packet { len, gso_segs, workload: wlabi::OTHER_INDEX };

    // SAFETY: bpf_sk_fullsock accepts any socket pointer taken from the skb.
    let full = if sk.is_null() { sk } else { unsafe { bpf_sk_fullsock(sk) } };
    if full.is_null() {
        // Request and time-wait sockets (SYN-ACK, last ACKs): no cache, classify this packet.
        // SAFETY: `sk` is non-NULL here (a NULL one is returned as is); `state` is a common
        // field every socket kind has.
        let passive = !sk.is_null() && unsafe { (*sk).state } == TCP_NEW_SYN_RECV;
        l.workload = workload::of_skb(ctx);
        return uncached(ctx, dir, l, passive);
    }
    // SAFETY: `full` is a non-NULL full socket returned by the helper.
    let (protocol, sock_type, sk_state) = unsafe { ((*full).protocol, (*full).type_, (*full).state) };
    if protocol != u32::from(IPPROTO_TCP) || sock_type != SOCK_STREAM {
        return;
    }
    let published = sockcache::published();
    let generation = published.generation;
    // A listener's packets (SYN-ACKs) belong to many peers: never cache on it. Generation 0
    // means user space has not written a topology yet.
    if sk_state == TCP_LISTEN || generation == 0 {
        l.workload = workload::of_skb(ctx);
        return uncached(ctx, dir, l, sk_state == TCP_LISTEN);
    }
    // SAFETY: `full` is a full socket from bpf_sk_fullsock.
    let cache = unsafe { sockcache::storage(full) };
    if cache.is_null() {
        count_error(KernelError::SockStorage);
        l.workload = workload::of_skb(ctx);
        return uncached(ctx, dir, l, false);
    }
    // SAFETY: `full` and `cache` as above.
    l.workload = unsafe { workload::of_socket(full, cache, &published) };
    // SAFETY: non-NULL socket storage of our value type, valid for this program run.
    let (cached, nat_state) = unsafe { ((*cache).generation, (*cache).nat) };
    if cached == generation && nat_state <= state::RESOLVED {
        // SAFETY: as above.
        let (info, ops) = unsafe { ((*cache).info, (*cache).ops_callbacks) };
        count(ctx, dir, l, info, None);
        // The one extra branch for sockets with callbacks; older sockets read their srtt here.
        if ops == 0 {
            // SAFETY: `full` and `cache` as above.
            unsafe { srtt::poll(full, cache, info.zone_idx, info.class) };
        }
        return;
    }
    // SAFETY: as above.
    unsafe { slow_socket(ctx, dir, l, cache, generation) };
}

/// Everything but the hot path for a socket with storage.
///
/// # Safety
/// `cache` is this socket's non-NULL storage.
#[inline(always)]
unsafe fn slow_socket(ctx: &SkBuffContext, dir: Direction, l: Packet, cache: *mut SockState, generation: u32) {
    let Some(ip) = classify::parse_ip(ctx, dir) else {
        count_error(KernelError::HeaderLoad);
        return;
    };
    if ip.protocol != IPPROTO_TCP {
        return;
    }
    // SAFETY: per the contract (every access below).
    let (cached, nat_state) = unsafe { ((*cache).generation, (*cache).nat) };
    match natabi::refresh(cached, nat_state, generation) {
        Refresh::UseCached => {
            let info = unsafe { (*cache).info };
            count(ctx, dir, l, info, Some(&ip));
            if nat_state == state::UNRESOLVED {
                count_unresolved(ctx, dir, l, &ip);
            }
        }
        Refresh::ReclassifyResolved => {
            let info = unsafe { classify::lookup_addr((*cache).nat_family, (*cache).nat_remote) };
            unsafe {
                (*cache).info = info;
                (*cache).generation = generation;
            }
            count(ctx, dir, l, info, Some(&ip));
        }
        Refresh::ClassifyPacket { first } => {
            let info = classify::lookup(&ip);
            unsafe {
                (*cache).info = info;
                (*cache).generation = generation;
            }
            if first && info.flags & SUBNET_FLAG_NAT_CANDIDATE != 0 {
                unsafe { (*cache).nat = state::PENDING };
                nat::stat(NatStat::Pending, 1);
                unsafe { pending(ctx, dir, l, cache, generation, &ip) };
                return;
            }
            count(ctx, dir, l, info, Some(&ip));
            if nat_state == state::UNRESOLVED {
                count_unresolved(ctx, dir, l, &ip);
            }
        }
        Refresh::TryResolve => unsafe { pending(ctx, dir, l, cache, generation, &ip) },
    }
}

/// A pending socket's packet: resolved now, given up on, or held.
#[inline(always)]
unsafe fn pending(ctx: &SkBuffContext, dir: Direction, l: Packet, cache: *mut SockState, generation: u32, ip: &IpInfo) {
    let Some(key) = classify::nat_key(ctx, dir, ip) else {
        count_error(KernelError::TcpHeaderLoad);
        return count(ctx, dir, l, classify::lookup(ip), Some(ip));
    };
    // SAFETY: the caller's contract (every access below).
    let answer = unsafe { nat::try_resolve(cache, &key, generation) };
    match answer.code {
        nat::ANSWER_RESOLVED => count(ctx, dir, l, answer.info, Some(ip)),
        nat::ANSWER_UNRESOLVED => {
            let pre = classify::lookup(ip);
            unsafe { nat::give_up(cache, &key, pre, generation) };
            count(ctx, dir, l, pre, Some(ip));
            count_unresolved(ctx, dir, l, ip);
        }
        _ => {
            let pre = unsafe { if (*cache).generation == generation { (*cache).info } else { classify::lookup(ip) } };
            let (bytes, packets) = wire(ctx, dir, l, Some(ip));
            if !nat::hold(&key, pre.slot, l.workload, dir as usize, bytes, packets) {
                nat::stat(NatStat::PendingFull, 1);
                unsafe { nat::give_up(cache, &key, pre, generation) };
                count(ctx, dir, l, pre, Some(ip));
                count_unresolved(ctx, dir, l, ip);
            }
        }
    }
}

/// A packet without socket storage: classified on its own. A NAT candidate's mapping is used
/// when known (the last ACKs of a resolved connection come from a time-wait socket). A passive
/// open's handshake (listener, request socket) carries the client's own address, and conntrack
/// has not said anything about it yet: not counted as unresolved.
#[inline(always)]
fn uncached(ctx: &SkBuffContext, dir: Direction, l: Packet, passive: bool) {
    let Some(ip) = classify::parse_ip(ctx, dir) else {
        count_error(KernelError::HeaderLoad);
        return;
    };
    if ip.protocol != IPPROTO_TCP {
        return;
    }
    let info = classify::lookup(&ip);
    if info.flags & SUBNET_FLAG_NAT_CANDIDATE == 0 {
        return count(ctx, dir, l, info, Some(&ip));
    }
    if let Some(key) = classify::nat_key(ctx, dir, &ip)
        // SAFETY: a copy out of the map value.
        && let Some(t) = unsafe { AZF_NAT.get(&key).copied() }
        && t.state == natabi::target::RESOLVED
    {
        return count(ctx, dir, l, classify::lookup_addr(t.family, t.remote), Some(&ip));
    }
    // A candidate nobody resolved: under the address it carries, and said to be unresolved.
    count(ctx, dir, l, info, Some(&ip));
    if !passive {
        count_unresolved(ctx, dir, l, &ip);
    }
}

/// Wire bytes and packets of this packet: a GSO super-packet repeats the IP and TCP headers once
/// per extra segment.
#[inline(always)]
fn wire(ctx: &SkBuffContext, dir: Direction, l: Packet, parsed: Option<&IpInfo>) -> (u64, u64) {
    let segs = wire_packets(l.gso_segs);
    if segs <= 1 {
        return (u64::from(l.len), segs);
    }
    (gso_wire_bytes(ctx, dir, l.len, l.gso_segs, parsed), segs)
}

/// `parsed` is `None` only on the hot path, whose cached slot was flagged seen when the socket was
/// classified; every other caller classified this packet, so it flags the slot.
#[inline(always)]
fn count(ctx: &SkBuffContext, dir: Direction, l: Packet, info: SubnetInfo, parsed: Option<&IpInfo>) {
    let (bytes, segs) = wire(ctx, dir, l, parsed);
    if parsed.is_some() {
        mark_seen(info.slot);
    }
    add_counter(counter_index(info.slot, dir), bytes, segs);
    add_workload(l.workload, info, dir, bytes, segs);
    if info.flags & SUBNET_FLAG_UNMAPPED != 0 {
        note_unmapped(ctx, dir, bytes, segs, parsed);
    }
}

#[inline(always)]
fn count_unresolved(ctx: &SkBuffContext, dir: Direction, l: Packet, ip: &IpInfo) {
    let (bytes, segs) = wire(ctx, dir, l, Some(ip));
    nat::stat(NatStat::unresolved_bytes(dir), bytes);
    nat::stat(NatStat::unresolved_packets(dir), segs);
}

/// Wire bytes of a GSO super-packet: each extra segment repeats the IP and TCP headers.
#[inline(always)]
fn gso_wire_bytes(ctx: &SkBuffContext, dir: Direction, len: u32, gso_segs: u32, parsed: Option<&IpInfo>) -> u64 {
    let header_len = match parsed {
        Some(ip) => ip.header_len,
        None => match classify::parse_ip(ctx, dir) {
            Some(ip) => ip.header_len,
            None => {
                count_error(KernelError::TcpHeaderLoad);
                return u64::from(len);
            }
        },
    };
    // Data offset: the high nibble of byte 12 of the TCP header, in 32-bit words.
    let Ok(doff) = ctx.load::<u8>(header_len as usize + 12) else {
        count_error(KernelError::TcpHeaderLoad);
        return u64::from(len);
    };
    wire_bytes(len, gso_segs, header_len + u32::from(doff >> 4) * 4)
}

#[inline(always)]
fn add_counter(index: u32, bytes: u64, packets: u64) {
    let Some(cell) = AZF_COUNTERS.get_ptr_mut(index) else {
        count_error(KernelError::CounterIndex);
        return;
    };
    // Atomic even though per-CPU: a softirq (ACKs sent from receive processing) can interrupt a
    // process-context update of the same cell on the same CPU.
    // SAFETY: the array cell is valid, 8-byte aligned memory for the program run.
    unsafe {
        atomic_add(&raw mut (*cell).bytes, bytes);
        atomic_add(&raw mut (*cell).packets, packets);
    }
}

/// Flags `slot` for the drain (see `AZF_SLOT_SEEN`). Read before writing: once set, the cache
/// line stays shared between CPUs instead of bouncing on every classification.
#[inline(always)]
fn mark_seen(slot: u32) {
    let (element, byte) = agent_common::seen_position(slot);
    let Some(flags) = AZF_SLOT_SEEN.get_ptr_mut(element) else {
        // Past the map: the counter add below fails the same way and is counted there.
        return;
    };
    // SAFETY: a valid map value of SEEN_PER_ELEMENT bytes for the program run; `byte` is below it.
    unsafe {
        if let Some(flag) = (*flags).get_mut(byte as usize)
            && *flag == 0
        {
            *flag = 1;
        }
    }
}

/// The same bytes once more, under the socket's workload and the destination's latency row: the
/// sum over workloads is the host total by construction.
#[inline(always)]
fn add_workload(index: u32, info: SubnetInfo, dir: Direction, bytes: u64, packets: u64) {
    let cell = wlabi::cell(index, hist::row(info.zone_idx, info.class), dir);
    let Some(c) = AZF_WL_COUNTERS.get_ptr_mut(cell) else {
        count_error(KernelError::WorkloadIndex);
        return;
    };
    // SAFETY: as `add_counter`.
    unsafe {
        atomic_add(&raw mut (*c).bytes, bytes);
        atomic_add(&raw mut (*c).packets, packets);
    }
}

#[inline(always)]
fn note_unmapped(ctx: &SkBuffContext, dir: Direction, bytes: u64, packets: u64, parsed: Option<&IpInfo>) {
    let key = match parsed {
        Some(ip) => ip.unmapped_key(),
        None => match classify::parse_ip(ctx, dir) {
            Some(ip) => ip.unmapped_key(),
            None => {
                count_error(KernelError::HeaderLoad);
                return;
            }
        },
    };
    let d = dir as usize;
    if let Some(v) = AZF_UNMAPPED.get_ptr_mut(&key) {
        // SAFETY: per-CPU LRU value of our type; d < 2.
        unsafe {
            atomic_add(&raw mut (*v).bytes[d], bytes);
            atomic_add(&raw mut (*v).packets[d], packets);
        }
        return;
    }
    let mut value = UnmappedValue::default();
    value.bytes[d] = bytes;
    value.packets[d] = packets;
    match AZF_UNMAPPED.insert(&key, &value, BPF_NOEXIST.into()) {
        Ok(()) => count_error(KernelError::UnmappedNew),
        Err(_) => count_error(KernelError::UnmappedInsert),
    }
}

#[inline(always)]
pub fn count_error(kind: KernelError) {
    if let Some(cell) = AZF_ERRORS.get_ptr_mut(kind as u32) {
        // SAFETY: valid, aligned per-CPU array cell.
        unsafe { atomic_add(cell, 1) };
    }
}

/// `lock xadd` on a u64: the BPF target has no CAS, so `AtomicU64::fetch_add` is not offered,
/// but the instruction itself (BPF_ATOMIC | BPF_ADD) exists on every kernel we support.
#[inline(always)]
pub unsafe fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: callers pass valid, aligned map memory.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(dst, v) };
}
