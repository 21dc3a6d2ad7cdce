//! Loading the embedded eBPF object with maps sized from config.

use agent_common::map_names;
use aya::{Ebpf, EbpfLoader};

use super::MapSizes;

/// Built by `agent/build.rs` on the pinned nightly.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/azflow"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this azflow binary was built with AYA_BUILD_SKIP=1 and carries no eBPF programs; rebuild without it")]
    NoObject,
    #[error("loading the eBPF object: {0} (needs root or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN, and a kernel ≥ 5.8 with BTF)")]
    Load(#[from] aya::EbpfError),
}

pub fn load(sizes: &MapSizes) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    raise_memlock_limit();
    let ebpf = EbpfLoader::new()
        .map_max_entries(map_names::SUBNETS_V4, sizes.lpm_prefixes)
        .map_max_entries(map_names::SUBNETS_V6, sizes.lpm_prefixes)
        .map_max_entries(map_names::COUNTERS, sizes.counter_cells)
        .map_max_entries(map_names::UNMAPPED, sizes.unmapped_entries)
        .load(EBPF_OBJECT)?;
    Ok(ebpf)
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
