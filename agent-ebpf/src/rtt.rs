//! sock_ops: the kernel's own RTT samples, active-open durations and retransmissions, into
//! per-CPU histograms and counters per destination row, and each RTT sample once more under the
//! socket's workload (`workload_rtt`). No per-sample event leaves the kernel.

use agent_common::{
    SockState, SubnetInfo,
    hist::{self, ROW_STRIDE, SUM_CELL, TcpEvent},
    nat::{NatKey, NatStat, Refresh},
};
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RETRANS_CB,
        BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_RTT_CB,
        BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock,
    },
    helpers::bpf_ktime_get_ns,
    programs::SockOpsContext,
    btf_maps::PerCpuArray,
};
use agent_common::KernelError;

use crate::{
    account::{atomic_add, count_error},
    classify::{self, IPPROTO_TCP, IpInfo},
    maps::{AZF_CONNECT_HIST, AZF_RTT_HIST, AZF_TCP_EVENTS},
    nat, sockcache, workload_rtt,
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[inline(always)]
pub fn on_sock_op(ctx: &SockOpsContext) {
    let op = ctx.op();
    // SAFETY: reading the context's socket pointer; NULL-checked below.
    let sk: *mut bpf_sock = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    match op {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            // SAFETY: sock_ops hands full sockets to this callback.
            let s = unsafe { sockcache::storage(sk) };
            if !s.is_null() {
                // SAFETY: non-NULL storage of our value type.
                unsafe { (*s).connect_start_ns = now_ns() };
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            enable_callbacks(ctx);
            // SAFETY: sock_ops hands full sockets to this callback.
            let s = unsafe { sockcache::storage(sk) };
            if s.is_null() {
                return;
            }
            // SAFETY: non-NULL storage of our value type.
            unsafe { (*s).ops_callbacks = 1 };
            // SAFETY: non-NULL storage of our value type.
            let start = unsafe { (*s).connect_start_ns };
            if start == 0 {
                return;
            }
            let us = now_ns().saturating_sub(start) / 1000;
            // SAFETY: as above.
            unsafe { (*s).connect_start_ns = 0 };
            match classify_socket(ctx, sk) {
                Some((row, _, _)) => add_sample(&AZF_CONNECT_HIST, row, us),
                // Still NAT-pending: held until the real destination is known.
                // SAFETY: as above.
                None => unsafe { (*s).held_connect_us = us.max(1) },
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            enable_callbacks(ctx);
            mark_callbacks(sk);
        }
        BPF_SOCK_OPS_RTT_CB => on_rtt(ctx, sk),
        BPF_SOCK_OPS_RETRANS_CB => {
            // args: seq, segments, error (0 when the retransmission went out).
            if ctx.arg(2) == 0 {
                if let Some((row, _, _)) = classify_socket(ctx, sk) {
                    add_event(row, TcpEvent::RetransmitSegments, u64::from(ctx.arg(1)).max(1));
                }
            }
        }
        BPF_SOCK_OPS_RTO_CB => {
            if let Some((row, _, _)) = classify_socket(ctx, sk) {
                add_event(row, TcpEvent::Rto, 1);
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn enable_callbacks(ctx: &SockOpsContext) {
    let flags = ctx.cb_flags() | BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG;
    let _ = ctx.set_cb_flags(flags as i32);
}

/// Callbacks run for this socket: the byte path stops reading its smoothed RTT.
#[inline(always)]
fn mark_callbacks(sk: *mut bpf_sock) {
    // SAFETY: sock_ops hands full sockets to the callbacks used here.
    let s = unsafe { sockcache::storage(sk) };
    if !s.is_null() {
        // SAFETY: non-NULL storage of our value type.
        unsafe { (*s).ops_callbacks = 1 };
    }
}

#[inline(always)]
fn on_rtt(ctx: &SockOpsContext, sk: *mut bpf_sock) {
    let Some((row, class, s)) = classify_socket(ctx, sk) else { return };
    let now = now_ns();
    if !s.is_null() {
        // An earlier agent switched the callbacks on (a restart without --pin): say so once.
        // SAFETY: non-NULL storage of our value type.
        unsafe {
            if (*s).ops_callbacks == 0 {
                (*s).ops_callbacks = 1;
            }
        }
        let interval = sockcache::rtt_interval_ns();
        // SAFETY: non-NULL storage of our value type.
        let last = unsafe { (*s).rtt_sampled_ns };
        if interval != 0 && last != 0 && now.saturating_sub(last) < interval {
            add_event(row, TcpEvent::RttSkipped, 1);
            return;
        }
        // SAFETY: as above.
        unsafe { (*s).rtt_sampled_ns = now };
    }
    // The measured sample (args[0], µs) where the kernel passes it; the smoothed RTT otherwise.
    let mrtt = u64::from(ctx.arg(0));
    // SAFETY: reading a context field.
    let srtt = u64::from(unsafe { (*ctx.ops).srtt_us }) >> 3;
    let us = if mrtt != 0 && mrtt < u64::from(u32::MAX >> 1) { mrtt } else { srtt };
    add_sample(&AZF_RTT_HIST, row, us);
    add_event(row, TcpEvent::RttSamples, 1);
    // SAFETY: `s` is NULL or this socket's storage.
    unsafe { workload_rtt::record(s, class, row, us) };
}

/// The histogram row and class of this socket's remote end and its storage (NULL when unavailable), read
/// from the classification the byte path cached. sock_ops never classifies by the socket's own
/// remote address when the byte path has: that address may be a VIP the packets no longer carry
/// (OUTPUT DNAT). `None` while the socket waits for its NAT mapping.
#[inline(always)]
fn classify_socket(ctx: &SockOpsContext, sk: *mut bpf_sock) -> Option<(u32, u8, *mut SockState)> {
    // SAFETY: sock_ops callbacks used here run on full sockets.
    let s = unsafe { sockcache::storage(sk) };
    if s.is_null() {
        count_error(KernelError::SockStorage);
        let info = lookup_remote(ctx)?;
        return Some((hist::row(info.zone_idx, info.class), info.class, s));
    }
    let generation = sockcache::generation();
    // SAFETY: non-NULL storage of our value type (every access below).
    let (cached, nat_state) = unsafe { ((*s).generation, (*s).nat) };
    let info = match agent_common::nat::refresh(cached, nat_state, generation) {
        Refresh::UseCached => unsafe { (*s).info },
        Refresh::ReclassifyResolved => {
            let info = unsafe { classify::lookup_addr((*s).nat_family, (*s).nat_remote) };
            unsafe {
                (*s).info = info;
                (*s).generation = generation;
            }
            info
        }
        // The byte path refreshes the cache from the packet before this ack reaches sock_ops;
        // until it has, its last answer stands.
        Refresh::ClassifyPacket { .. } if cached != 0 => unsafe { (*s).info },
        Refresh::ClassifyPacket { .. } => lookup_remote(ctx)?,
        Refresh::TryResolve => {
            let Some(key) = socket_key(ctx) else {
                nat::stat(NatStat::CallbacksWhilePending, 1);
                return None;
            };
            let answer = unsafe { nat::try_resolve(s, &key, generation) };
            match answer.code {
                nat::ANSWER_RESOLVED => answer.info,
                nat::ANSWER_UNRESOLVED => {
                    let pre = lookup_remote(ctx)?;
                    unsafe { nat::give_up(s, &key, pre, generation) };
                    pre
                }
                _ => {
                    nat::stat(NatStat::CallbacksWhilePending, 1);
                    return None;
                }
            }
        }
    };
    Some((hist::row(info.zone_idx, info.class), info.class, s))
}

/// The socket's pre-NAT tuple, as the byte path builds it from packets.
#[inline(always)]
fn socket_key(ctx: &SockOpsContext) -> Option<NatKey> {
    let (family, local, remote) = socket_addrs(ctx)?;
    // local_port is host order; remote_port holds the network-order port in its low 16 bits.
    let local_port = ctx.local_port() as u16;
    let remote_port = u16::from_be(ctx.remote_port() as u16);
    Some(NatKey { family, _pad: [0; 3], local_port, remote_port, local, remote })
}

/// (family, local, remote) of the socket; an IPv4-mapped peer on a dual-stack socket is IPv4,
/// as its packets are.
#[inline(always)]
fn socket_addrs(ctx: &SockOpsContext) -> Option<(u8, [u8; 16], [u8; 16])> {
    let mut local = [0u8; 16];
    let mut remote = [0u8; 16];
    match ctx.family() {
        AF_INET => {
            remote[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
            local[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
            Some((4, local, remote))
        }
        AF_INET6 => {
            let (r, l) = (ctx.remote_ip6(), ctx.local_ip6());
            let mut i = 0;
            while i < 4 {
                remote[i * 4..i * 4 + 4].copy_from_slice(&r[i].to_ne_bytes());
                local[i * 4..i * 4 + 4].copy_from_slice(&l[i].to_ne_bytes());
                i += 1;
            }
            let mapped = remote[..10].iter().all(|b| *b == 0) && remote[10] == 0xff && remote[11] == 0xff;
            if mapped {
                let (r4, l4) = ([remote[12], remote[13], remote[14], remote[15]], [local[12], local[13], local[14], local[15]]);
                remote = [0u8; 16];
                local = [0u8; 16];
                remote[..4].copy_from_slice(&r4);
                local[..4].copy_from_slice(&l4);
                Some((4, local, remote))
            } else {
                Some((6, local, remote))
            }
        }
        _ => None,
    }
}

#[inline(always)]
fn lookup_remote(ctx: &SockOpsContext) -> Option<SubnetInfo> {
    let (version, _, remote) = socket_addrs(ctx)?;
    Some(classify::lookup(&IpInfo { protocol: IPPROTO_TCP, version, header_len: 0, remote }))
}

#[inline(always)]
pub fn add_sample<const N: usize, const F: usize>(map: &PerCpuArray<u64, N, F>, row: u32, us: u64) {
    let base = row * ROW_STRIDE;
    if let Some(cell) = map.get_ptr_mut(base + hist::bucket(us)) {
        // SAFETY: valid, aligned per-CPU array cell.
        unsafe { atomic_add(cell, 1) };
    }
    if let Some(cell) = map.get_ptr_mut(base + SUM_CELL) {
        // SAFETY: as above.
        unsafe { atomic_add(cell, us) };
    }
}

#[inline(always)]
pub fn add_event(row: u32, event: TcpEvent, n: u64) {
    if let Some(cell) = AZF_TCP_EVENTS.get_ptr_mut(row * TcpEvent::COUNT + event as u32) {
        // SAFETY: valid, aligned per-CPU array cell.
        unsafe { atomic_add(cell, n) };
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}
