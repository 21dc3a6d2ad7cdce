//! azflow's kernel side: count every TCP byte per destination subnet.
//!
//! ```text
//!  packet ─► cgroup_skb egress/ingress ─► socket cache (generation ok?) ─┬─► COUNTERS[slot][dir] += wire bytes
//!                                              │ miss                    ├─► WL_COUNTERS[workload][row][dir] += the same
//!                                              │                         └─► UNMAPPED[/24|/48] (catch-all ranges)
//!                                              ├─► SUBNETS_V4/V6 (LPM) ─► {slot, zone, class}
//!                                              └─► (workload generation stale) WORKLOAD_IDX[cgroup id] ─► index,
//!                                                  unknown ids ─► WL_UNKNOWN (user space names them)
//!  ack ─► sock_ops RTT sample ─► RTT_HIST[row] ─► WL_RTT[workload][row] (cross-AZ rows by default)
//! ```
//! Entry points stay thin: every failure becomes a per-CPU error counter and the packet is
//! always allowed — the meter must never drop traffic.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features, reason = "atomic_xadd: the BPF target has no CAS, so core offers no fetch_add")]

mod account;
mod classify;
mod maps;
mod nat;
mod rtt;
mod srtt;
mod sockcache;
mod workload;
mod workload_rtt;

use agent_common::Direction;
use aya_ebpf::{
    macros::{cgroup_skb, sock_ops},
    programs::{SkBuffContext, SockOpsContext},
};

/// cgroup_skb verdict: let the packet through.
const ALLOW: i32 = 1;

#[cgroup_skb(egress)]
pub fn azflow_egress(ctx: SkBuffContext) -> i32 {
    account::on_packet(&ctx, Direction::Transmit);
    ALLOW
}

#[cgroup_skb(ingress)]
pub fn azflow_ingress(ctx: SkBuffContext) -> i32 {
    account::on_packet(&ctx, Direction::Receive);
    ALLOW
}

/// RTT samples, connect durations and retransmissions per destination zone.
#[sock_ops]
pub fn azflow_sockops(ctx: SockOpsContext) -> u32 {
    rtt::on_sock_op(&ctx);
    1
}

/// Baseline for `cargo xtask bench`: the cost of running any cgroup_skb program at all.
#[cgroup_skb]
pub fn azflow_bench_empty(_ctx: SkBuffContext) -> i32 {
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
