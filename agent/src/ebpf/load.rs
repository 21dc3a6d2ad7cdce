//! Loading the embedded eBPF object with maps sized from config.

use agent_common::map_names;
use aya::{Ebpf, EbpfLoader};

use super::{MapSizes, pin::PinDir};

/// Built by `agent/build.rs` on the pinned nightly.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/azflow"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this azflow binary was built with AYA_BUILD_SKIP=1 and carries no eBPF programs; rebuild without it")]
    NoObject,
    #[error("loading the eBPF object: {0} (needs root or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN, and a kernel ≥ 5.8 with BTF)")]
    Load(#[from] aya::EbpfError),
    #[error("pinned maps: {0}")]
    Pins(String),
}

/// Loads the object; with `pins`, every map is reused from (or created and pinned at) the pin
/// directory. Pinned maps that no longer fit the configured sizes are replaced by fresh ones
/// (their counts restart), never reinterpreted.
pub fn load(sizes: &MapSizes, pins: Option<&PinDir>) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    raise_memlock_limit();
    let attempt = || {
        let paths: Vec<(&str, std::path::PathBuf)> =
            pins.map(|p| map_names::ALL.iter().map(|n| (*n, p.map_path(n))).collect()).unwrap_or_default();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::SUBNETS_V4, sizes.lpm_prefixes)
            .map_max_entries(map_names::SUBNETS_V6, sizes.lpm_prefixes)
            .map_max_entries(map_names::COUNTERS, sizes.counter_cells)
            .map_max_entries(map_names::SLOT_SEEN, sizes.seen_elements)
            .map_max_entries(map_names::UNMAPPED, sizes.unmapped_entries)
            .map_max_entries(map_names::NAT, sizes.nat_entries)
            .map_max_entries(map_names::NAT_PENDING, sizes.nat_pending)
            .map_max_entries(map_names::WL_COUNTERS, sizes.workload_cells)
            .map_max_entries(map_names::WL_RTT, sizes.workload_rtt_entries)
            .map_max_entries(map_names::WORKLOAD_IDX, sizes.workload_cgroups);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader.load(EBPF_OBJECT)
    };
    match (attempt(), pins) {
        (Ok(ebpf), _) => Ok(ebpf),
        (Err(e), Some(p)) => {
            tracing::warn!("the pinned maps do not fit this configuration ({e}); starting them afresh");
            p.remove_maps(&map_names::ALL).map_err(|e| LoadError::Pins(e.to_string()))?;
            Ok(attempt()?)
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on kernels ≥ 5.11)");
    }
}
