//! `azflow bench-baseline` (hidden): the benchmark's "empty program" arm — same loader, same
//! cgroup, a program that only returns.

use std::path::Path;

use tokio::signal::unix::SignalKind;

use super::run::RunError;
use crate::{config::Limits, ebpf};

pub async fn run(cgroup: &Path) -> Result<(), RunError> {
    let sizes = ebpf::map_sizes(&Limits { max_subnets: 16, unmapped_entries: 16, nat_entries: 16, nat_pending: 16, workload_indices: 2, workload_cgroups: 16, workload_rtt: agent_common::workload_rtt::Mode::Off });
    let mut ebpf = ebpf::load(&sizes, None)?;
    let attached = ebpf::attach_bench_baseline(&mut ebpf, cgroup)?;
    tracing::info!(cgroup = %attached.cgroup, "baseline program attached");
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|e| RunError::Runtime(format!("installing the SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(ebpf);
    Ok(())
}
