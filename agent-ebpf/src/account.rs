//! Per-packet accounting: one socket-cache read and two atomic adds on the hot path.

use agent_common::{
    Direction, KernelError, SUBNET_FLAG_UNMAPPED, SubnetInfo, UnmappedValue,
    counter_index, wire_bytes, wire_packets,
};
use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, __sk_buff, bpf_sock},
    helpers::generated::bpf_sk_fullsock,
    programs::SkBuffContext,
};

use crate::{
    classify::{self, IPPROTO_TCP},
    maps::{AZF_COUNTERS, AZF_ERRORS, AZF_UNMAPPED},
    sockcache,
};

const TCP_LISTEN: u32 = 10;
const SOCK_STREAM: u32 = 1;

#[inline(always)]
pub fn on_packet(ctx: &SkBuffContext, dir: Direction) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context pointer is the kernel's __sk_buff for the whole program run; the
    // verifier rewrites these field reads into safe loads.
    let (len, gso_segs, sk) = unsafe { ((*skb).len, (*skb).gso_segs, (*skb).__bindgen_anon_2.sk) };

    let Some(info) = classify_packet(ctx, dir, sk) else { return };

    let segs = wire_packets(gso_segs);
    let bytes = if segs > 1 { gso_wire_bytes(ctx, dir, len, gso_segs) } else { u64::from(len) };
    add_counter(counter_index(info.slot, dir), bytes, segs);

    if info.flags & SUBNET_FLAG_UNMAPPED != 0 {
        note_unmapped(ctx, dir, bytes, segs);
    }
}

/// The subnet of this packet's remote end: from the socket's cache when it is current,
/// otherwise by LPM lookup (then cached for the socket's later packets). `None`: not TCP.
#[inline(always)]
fn classify_packet(ctx: &SkBuffContext, dir: Direction, sk: *mut bpf_sock) -> Option<SubnetInfo> {
    // SAFETY: bpf_sk_fullsock accepts any socket pointer taken from the skb.
    let full = if sk.is_null() { sk } else { unsafe { bpf_sk_fullsock(sk) } };
    if full.is_null() {
        // Request and time-wait sockets (SYN-ACK, last ACKs): no cache, classify this packet.
        return classify_uncached(ctx, dir);
    }
    // SAFETY: `full` is a non-NULL full socket returned by the helper.
    let (protocol, sock_type, state) = unsafe { ((*full).protocol, (*full).type_, (*full).state) };
    if protocol != u32::from(IPPROTO_TCP) || sock_type != SOCK_STREAM {
        return None;
    }
    let generation = sockcache::generation();
    // A listener's packets (SYN-ACKs) belong to many peers: never cache on it. Generation 0
    // means user space has not written a topology yet.
    if state == TCP_LISTEN || generation == 0 {
        return classify_uncached(ctx, dir);
    }
    // SAFETY: `full` is a full socket from bpf_sk_fullsock.
    let cache = unsafe { sockcache::storage(full) };
    if cache.is_null() {
        count_error(KernelError::SockStorage);
        return classify_uncached(ctx, dir);
    }
    // SAFETY: non-NULL socket storage of our value type, valid for this program run.
    unsafe {
        if (*cache).generation == generation {
            return Some((*cache).info);
        }
    }
    let info = classify_uncached(ctx, dir)?;
    // SAFETY: as above; a concurrent writer on another CPU writes the same value.
    unsafe {
        (*cache).info = info;
        (*cache).generation = generation;
    }
    Some(info)
}

#[inline(always)]
fn classify_uncached(ctx: &SkBuffContext, dir: Direction) -> Option<SubnetInfo> {
    let Some(ip) = classify::parse_ip(ctx, dir) else {
        count_error(KernelError::HeaderLoad);
        return None;
    };
    if ip.protocol != IPPROTO_TCP {
        return None;
    }
    Some(classify::lookup(&ip))
}

/// Wire bytes of a GSO super-packet: each extra segment repeats the IP and TCP headers. The
/// header is read again here; at one read per super-packet that is cheaper than carrying it.
#[inline(always)]
fn gso_wire_bytes(ctx: &SkBuffContext, dir: Direction, len: u32, gso_segs: u32) -> u64 {
    let Some(ip) = classify::parse_ip(ctx, dir) else {
        count_error(KernelError::TcpHeaderLoad);
        return u64::from(len);
    };
    // Data offset: the high nibble of byte 12 of the TCP header, in 32-bit words.
    let Ok(doff) = ctx.load::<u8>(ip.header_len as usize + 12) else {
        count_error(KernelError::TcpHeaderLoad);
        return u64::from(len);
    };
    wire_bytes(len, gso_segs, ip.header_len + u32::from(doff >> 4) * 4)
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

#[inline(always)]
fn note_unmapped(ctx: &SkBuffContext, dir: Direction, bytes: u64, packets: u64) {
    let Some(ip) = classify::parse_ip(ctx, dir) else {
        count_error(KernelError::HeaderLoad);
        return;
    };
    let key = ip.unmapped_key();
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
