//! `azflow run`: resolve the topology, load, attach, drain, serve; on SIGINT/SIGTERM drain once
//! more, detach and return within the shutdown budget.

use std::{io::IsTerminal as _, path::PathBuf, sync::Arc, time::Duration};

use tokio::{signal::unix::SignalKind, sync::watch};

use crate::{
    cgroup,
    collector::Collector,
    config::{ConsoleMode, RunConfig},
    console,
    ebpf::{self, KernelMaps},
    export::http,
    self_metrics::SelfMetrics,
    snapshot::{HostLabels, Snapshot},
    topology::{self, SlotAllocator, ZoneTable},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input: exit 78, nothing attached.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Load(#[from] ebpf::LoadError),
    #[error(transparent)]
    Attach(#[from] ebpf::AttachError),
    #[error(transparent)]
    Maps(#[from] ebpf::MapsError),
    #[error("{0}")]
    Runtime(String),
}

/// Everything that can be decided before touching the kernel, so bad input attaches nothing.
struct Plan {
    cgroup: PathBuf,
    topology: topology::Topology,
    table: topology::KernelTable,
    sizes: ebpf::MapSizes,
}

fn plan(cfg: &RunConfig) -> Result<Plan, RunError> {
    let topology = topology::load(cfg.topology.as_deref()).map_err(|e| {
        if e.is_config_error() { RunError::Config(e.to_string()) } else { RunError::Runtime(e.to_string()) }
    })?;
    let sizes = ebpf::map_sizes(&cfg.limits);
    let mut slots = SlotAllocator::new(sizes.slots);
    let mut zones = ZoneTable::new();
    let table = topology::build_kernel_table(&topology, &mut slots, &mut zones)
        .and_then(|t| t.check_capacity(sizes.lpm_prefixes).map(|()| t))
        .map_err(|e| RunError::Config(format!("--max-subnets: {e}; raise --max-subnets")))?;
    let cgroup = match &cfg.cgroup {
        Some(p) => p.clone(),
        None => cgroup::default_cgroup().map_err(|e| RunError::Config(e.to_string()))?,
    };
    if !cgroup::is_cgroup2_dir(&cgroup) {
        return Err(RunError::Config(format!(
            "--cgroup: {} is not a cgroup v2 directory (no cgroup.procs); pass a directory under the cgroup2 mount",
            cgroup.display()
        )));
    }
    Ok(Plan { cgroup, topology, table, sizes })
}

pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    let plan = plan(&cfg)?;
    let listener = match cfg.prometheus {
        Some(addr) => Some(http::bind(addr).await.map_err(|e| {
            RunError::Config(format!("--prometheus: cannot listen on {addr}: {e}; choose a free address or \"off\""))
        })?),
        None => None,
    };

    let mut ebpf = ebpf::load(&plan.sizes)?;
    let maps = KernelMaps::take(&mut ebpf)?;
    let host = HostLabels {
        zone: plan.topology.host().zone.clone(),
        zone_id: plan.topology.host().zone_id.clone(),
        region: plan.topology.host().region.clone().unwrap_or_default(),
        account_id: plan.topology.host().account_id.clone(),
        instance_id: plan.topology.host().instance_id.clone(),
    };
    let self_metrics = SelfMetrics::new();
    // The table is in the kernel before the programs see a packet.
    let subnets = plan.topology.subnets().len();
    drop(plan.topology);
    let mut collector = Collector::new(maps, plan.table, host, cfg.unmapped_top, self_metrics.clone())?;
    let attached = ebpf::attach(&mut ebpf, &plan.cgroup)?;
    release_startup_memory();

    let first = collector.drain();
    let (snap_tx, snap_rx) = watch::channel(first);
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        cgroup = %attached.cgroup,
        subnets,
        prometheus = %local.map_or_else(|| "off".to_string(), |a| a.to_string()),
        "azflow attached and counting"
    );
    let server = listener.map(|l| tokio::spawn(http::serve(l, snap_rx.clone(), stop_rx.clone())));
    let show_console = match cfg.console {
        ConsoleMode::Always => true,
        ConsoleMode::Never => false,
        ConsoleMode::Auto => std::io::stdout().is_terminal(),
    };
    let console_task = show_console.then(|| tokio::spawn(console_loop(snap_rx.clone(), stop_rx.clone(), attached.cgroup.clone())));

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|e| RunError::Runtime(format!("installing the SIGTERM handler: {e}")))?;
    let mut ticker = tokio::time::interval(cfg.drain_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => { snap_tx.send_replace(collector.drain()); }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Shutdown, in reverse start order, within a 5 s budget.
    let last = collector.drain();
    snap_tx.send_replace(last.clone());
    let _ = stop_tx.send(true);
    let budget = Duration::from_secs(3);
    for task in [server, console_task].into_iter().flatten() {
        let _ = tokio::time::timeout(budget, task).await;
    }
    drop(collector);
    drop(ebpf); // detaches the programs: links are owned by the loaded programs
    tracing::info!(drains = last.drains, "azflow detached");
    Ok(())
}

async fn console_loop(snaps: watch::Receiver<Arc<Snapshot>>, mut stop: watch::Receiver<bool>, cgroup: String) {
    let mut previous: Option<(Arc<Snapshot>, std::time::Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = snaps.borrow().clone();
        let elapsed = previous.as_ref().map_or(Duration::from_secs(1), |(_, t)| t.elapsed());
        let text = console::render(&now, previous.as_ref().map(|(s, _)| s.as_ref()), elapsed, &cgroup);
        // Clear and home, so the table refreshes in place.
        print!("\x1b[H\x1b[2J{text}");
        if previous.as_ref().is_none_or(|(s, _)| s.drains != now.drains) {
            previous = Some((now, std::time::Instant::now()));
        }
    }
}

/// Parsing a large topology file peaks far above the steady state; hand the freed heap back so
/// the agent's RSS reflects what it keeps.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
