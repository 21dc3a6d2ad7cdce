//! `azflow run`: resolve the topology, load, attach, drain, serve; on SIGINT/SIGTERM drain once
//! more, detach and return within the shutdown budget.

use std::{io::IsTerminal as _, path::PathBuf, sync::Arc, time::Duration};

use tokio::{signal::unix::SignalKind, sync::watch};

use crate::{
    cgroup,
    collector::{Collector, NatSetup, Persist},
    config::{ConsoleMode, NatMode, RunConfig},
    pricing::{self, PriceBook, PriceTable},
    console,
    ebpf::{self, KernelMaps},
    export::{http, otlp, readiness::Readiness},
    ledger::{self, Ledger, LedgerStore, store::Record},
    nat,
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
    /// Kept for refreshes, so unchanged subnets keep their slots and zones their indexes.
    slots: SlotAllocator,
    zones: ZoneTable,
    /// The host region's prices, applied to every table built.
    prices: PriceTable,
}

/// `restored`: the previous pinned agent's ledger, whose allocators the table continues from (so
/// unchanged subnets keep their slots and zones their histogram rows).
fn plan(cfg: &RunConfig, topology: topology::Topology, book: &PriceBook, restored: Option<&Ledger>) -> Result<Plan, RunError> {
    let sizes = ebpf::map_sizes(&cfg.limits);
    let prices = book.for_region(topology.host().region.as_deref());
    let build = |mut slots: SlotAllocator, mut zones: ZoneTable| {
        topology::build_kernel_table(&topology, &mut slots, &mut zones)
            .and_then(|t| t.check_capacity(sizes.lpm_prefixes).map(|()| t))
            .map(|t| (t, slots, zones))
    };
    let seeded = restored.and_then(|l| Some((l.table.slots.clone().restored(sizes.slots)?, l.table.zones.clone())));
    let built = match seeded.map(|(s, z)| build(s, z)) {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => {
            tracing::warn!("the new topology does not fit beside the previous agent's slots ({e}); allocating afresh");
            build(SlotAllocator::new(sizes.slots), ZoneTable::new())
        }
        None => build(SlotAllocator::new(sizes.slots), ZoneTable::new()),
    };
    let (mut table, slots, zones) = built.map_err(|e| RunError::Config(format!("--max-subnets: {e}; raise --max-subnets")))?;
    table.apply_prices(&prices);
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
    Ok(Plan { cgroup, topology, table, sizes, slots, zones, prices })
}

pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    fix_mmap_threshold();
    let self_metrics = SelfMetrics::new();
    // A bad price table stops here, before AWS is asked or anything attached.
    let book = pricing::load(cfg.prices.as_deref()).map_err(|e| RunError::Config(e.to_string()))?;
    // AWS when on EC2 (within 3 s when not), under the static file; else the file or interfaces.
    let resolved = topology::aws::resolve(&cfg.aws, cfg.topology.as_deref(), &self_metrics).await.map_err(|e| {
        if e.is_config_error() { RunError::Config(e.to_string()) } else { RunError::Runtime(e.to_string()) }
    })?;
    let pins = match &cfg.pin {
        Some(root) => {
            let pins = ebpf::pin::PinDir::new(root);
            for old in pins.prepare().map_err(|e| RunError::Config(e.to_string()))? {
                tracing::warn!(dir = %old.display(), "removed pins of another schema version (never read)");
            }
            Some(pins)
        }
        None => None,
    };
    let (ledger_store, restored) = match &pins {
        Some(p) => open_ledger(&p.map_path(ledger::PIN_NAME)),
        None => (None, None),
    };
    let plan = plan(&cfg, resolved.topology, &book, restored.as_ref())?;
    let listener = match cfg.prometheus {
        Some(addr) => Some(http::bind(addr).await.map_err(|e| {
            RunError::Config(format!("--prometheus: cannot listen on {addr}: {e}; choose a free address or \"off\""))
        })?),
        None => None,
    };
    // OTLP settings are proven (CA file read, exporter built) before anything is attached.
    let otlp_transport =
        cfg.otlp.as_ref().map(otlp::Transport::prepare).transpose().map_err(|e| RunError::Config(e.to_string()))?;

    let mut ebpf = ebpf::load(&plan.sizes, pins.as_ref())?;
    let mut maps = KernelMaps::take(&mut ebpf, cfg.rtt_sample_interval.as_nanos().min(u128::from(u64::MAX)) as u64, cfg.limits.workload_rtt)?;
    tracing::info!(
        mode = cfg.limits.workload_rtt.as_str(),
        histograms = plan.sizes.workload_rtt_entries,
        bytes = plan.sizes.workload_rtt_bytes(),
        "per-workload RTT histograms (one map shared by all CPUs)"
    );
    // The conntrack reader starts before the table is written: if it cannot, catch-all ranges are
    // not NAT candidates and nothing waits for a mapping that would never come.
    let resolver_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let resolver_stats = Arc::new(nat::ResolverStats::default());
    let resolver_thread = match (cfg.nat, maps.take_resolver_handles()) {
        (NatMode::Auto, Some((nat_map, pending_map))) => {
            match nat::Resolver::new(nat_map, pending_map, resolver_stats.clone()).start(cfg.nat_netns.clone(), resolver_stop.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("cannot read the node's conntrack ({e}); Service/NAT traffic is counted under the address it dialed; grant CAP_NET_ADMIN or pass --nat off");
                    None
                }
            }
        }
        _ => None,
    };
    let host = HostLabels {
        zone: plan.topology.host().zone.clone(),
        zone_id: plan.topology.host().zone_id.clone(),
        region: plan.topology.host().region.clone().unwrap_or_default(),
        account_id: plan.topology.host().account_id.clone(),
        instance_id: plan.topology.host().instance_id.clone(),
    };
    let otlp_exporter = match otlp_transport {
        Some(t) => Some(
            otlp::OtlpExporter::new(t, &host, &otlp::resource::Machine::detect(), self_metrics.clone())
                .map_err(|e| RunError::Config(e.to_string()))?,
        ),
        None => None,
    };
    // The table is in the kernel before the programs see a packet.
    let subnets = plan.topology.subnets().len();
    drop(plan.topology);
    let nat_setup = NatSetup {
        candidates: resolver_thread.is_some(),
        pending_timeout: cfg.nat_pending_timeout,
        resolver: resolver_thread.as_ref().map(|_| resolver_stats.clone()),
    };
    let persist = ledger_store.map(|store| Persist { store, restored });
    let mut collector =
        Collector::new(maps, plan.table, (plan.slots, plan.zones), host, cfg.unmapped_top, self_metrics.clone(), nat_setup, persist)?;
    let prices = plan.prices;
    collector.track_subnets(cfg.subnet_series.max(cfg.otlp.as_ref().map_or(0, |o| o.dst_subnet_series)));
    // Workload paths are named relative to the attached cgroup (the cgroup2 root by default), so
    // a node whose kubelet and runtimes live below a sub-cgroup (nested nodes, test beds) reads
    // as a node of its own.
    collector.attribute_workloads(crate::workloads::attribution::Attribution::new(&cfg.workloads, plan.cgroup.clone(), cfg.workload_series))?;
    // Installed before attaching: a SIGTERM that arrives once we say we are attached must take the
    // orderly path (final drain, detach), not the default action.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())
        .map_err(|e| RunError::Runtime(format!("installing the SIGTERM handler: {e}")))?;
    let attached = ebpf::attach(&mut ebpf, &plan.cgroup, pins.as_ref())?;
    let attachment = ebpf::attachment::AttachmentCheck::new(&ebpf, &plan.cgroup)
        .map_err(|e| RunError::Runtime(format!("reading the attached programs' ids: {e}")))?;
    release_startup_memory();

    let (mut collector, first) = on_blocking_thread(collector, Collector::drain).await?;
    let (snap_tx, snap_rx) = watch::channel(first);
    let (stop_tx, stop_rx) = watch::channel(false);
    let local = listener.as_ref().and_then(|l| l.local_addr().ok());
    tracing::info!(
        cgroup = %attached.cgroup,
        subnets,
        prometheus = %local.map_or_else(|| "off".to_string(), |a| a.to_string()),
        otlp = %cfg.otlp.as_ref().map_or("off", |o| o.endpoint.as_str()),
        adopted_links = attached.adopted_links,
        pinned = %pins.as_ref().map_or_else(|| "no".to_string(), |p| p.dir().display().to_string()),
        "azflow attached and counting"
    );
    let readiness = Readiness { drain_interval: cfg.drain_interval, attachment: Some(attachment) };
    let server = listener.map(|l| tokio::spawn(http::serve(l, snap_rx.clone(), readiness, cfg.prometheus_buckets.clone(), stop_rx.clone())));
    let show_console = match cfg.console {
        ConsoleMode::Always => true,
        ConsoleMode::Never => false,
        ConsoleMode::Auto => std::io::stdout().is_terminal(),
    };
    let console_task = show_console.then(|| tokio::spawn(console_loop(snap_rx.clone(), stop_rx.clone(), attached.cgroup.clone())));
    // Exports until stopped, then once more from the final drain's snapshot.
    let otlp_task = otlp_exporter.map(|o| tokio::spawn(o.run(snap_rx.clone(), stop_rx.clone())));

    // Refreshed AWS topologies arrive here; the sender stays alive so the arm waits when there is
    // no refresher.
    let (topo_tx, mut topo_rx) = tokio::sync::mpsc::channel(1);
    let refresher_task = resolved.refresher.map(|r| r.spawn(topo_tx.clone(), stop_rx.clone()));

    let mut ticker = tokio::time::interval(cfg.drain_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut workload_ticker = tokio::time::interval(cfg.workloads.refresh);
    workload_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let snap;
                (collector, snap) = on_blocking_thread(collector, Collector::drain).await?;
                snap_tx.send_replace(snap);
            }
            _ = workload_ticker.tick() => {
                (collector, ()) = on_blocking_thread(collector, Collector::refresh_workloads).await?;
            }
            Some(t) = topo_rx.recv() => {
                let (lpm_prefixes, metrics, prices) = (plan.sizes.lpm_prefixes, self_metrics.clone(), prices.clone());
                let applied;
                (collector, applied) = on_blocking_thread(collector, move |c| {
                    apply_topology(&t, &prices, lpm_prefixes, c, &metrics)
                })
                .await?;
                if let Some(snap) = applied {
                    snap_tx.send_replace(snap);
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Shutdown, in reverse start order, within a 5 s budget.
    let (collector, last) = on_blocking_thread(collector, Collector::drain).await?;
    snap_tx.send_replace(last.clone());
    let _ = stop_tx.send(true);
    let budget = Duration::from_secs(3);
    drop(topo_tx);
    for task in [refresher_task, otlp_task, server, console_task].into_iter().flatten() {
        let _ = tokio::time::timeout(budget, task).await;
    }
    resolver_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = resolver_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    drop(collector);
    // Unpinned, this detaches the programs (the loaded object owns the links); pinned, the links
    // and maps stay for the next agent.
    drop(ebpf);
    tracing::info!(drains = last.drains, "azflow detached");
    Ok(())
}

/// Runs `f` on tokio's blocking pool, owning `state` meanwhile. A drain reads every map entry
/// with system calls; on a runtime worker it would stall the HTTP server and the OTLP exporter,
/// which share the runtime's two workers.
async fn on_blocking_thread<S: Send + 'static, T: Send + 'static>(
    mut state: S,
    f: impl FnOnce(&mut S) -> T + Send + 'static,
) -> Result<(S, T), RunError> {
    tokio::task::spawn_blocking(move || {
        let out = f(&mut state);
        (state, out)
    })
    .await
    .map_err(|e| RunError::Runtime(format!("the drain thread ended abnormally: {e}")))
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

/// Rebuilds the kernel table from a refreshed topology with the same allocators (unchanged
/// subnets keep their slots) and swaps it in (drain first, insert before delete). A table that
/// does not fit is refused and the current one stays.
fn apply_topology(
    t: &topology::Topology,
    prices: &PriceTable,
    lpm_prefixes: u32,
    collector: &mut Collector,
    metrics: &SelfMetrics,
) -> Option<Arc<Snapshot>> {
    let (mut new_slots, mut new_zones) = (collector.allocators().0.clone(), collector.allocators().1.clone());
    let built = topology::build_kernel_table(t, &mut new_slots, &mut new_zones)
        .and_then(|table| table.check_capacity(lpm_prefixes).map(|()| table));
    let table = match built {
        Ok(mut table) => {
            table.apply_prices(prices);
            table
        }
        Err(e) => {
            metrics.incr("topology_refresh_failures", "kernel_table");
            tracing::warn!("the refreshed topology does not fit the kernel table ({e}); keeping the current one; raise --max-subnets");
            return None;
        }
    };
    let prefixes = table.v4.len() + table.v6.len();
    match collector.replace_table(table, new_slots, new_zones) {
        Ok(snap) => {
            tracing::info!(subnets = t.subnets().len(), prefixes, "kernel subnet table replaced");
            Some(snap)
        }
        Err(e) => {
            metrics.incr("topology_refresh_failures", "kernel_sync");
            tracing::warn!("writing the refreshed table to the kernel failed: {e}");
            None
        }
    }
}

/// The pinned ledger and what it holds. Never fatal: without it a restart continues the totals
/// only when the table is unchanged, as before it existed.
fn open_ledger(path: &std::path::Path) -> (Option<LedgerStore>, Option<Ledger>) {
    let store = match LedgerStore::open_or_create(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot keep a restart ledger ({e}); a restart after a topology change will restart the totals");
            return (None, None);
        }
    };
    let read = |r| store.read(r).map_err(|e| e.to_string());
    let restored = match (read(Record::Table), read(Record::Acc)) {
        (Ok(Some(t)), Ok(Some(a))) => match (ledger::state::decode(&t), ledger::state::decode(&a)) {
            (Ok(table), Ok(acc)) => Some(Ledger { table, acc }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("the restart ledger is {e}; not used");
                None
            }
        },
        (Ok(_), Ok(_)) => None,
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("reading the restart ledger failed ({e}); not used");
            None
        }
    };
    (Some(store), restored)
}

/// Big temporaries (a full read of the counters at 100k subnets builds a few MB) are mapped and
/// unmapped on their own: glibc otherwise raises its mmap threshold to the size of the first one
/// freed, and later ones stay resident in a thread's arena (7.8 MiB of a 33 MiB RSS).
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; setting the threshold explicitly
    // turns its dynamic adjustment off.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
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
