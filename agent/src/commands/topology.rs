//! `azflow topology`: the resolved subnet → AZ table and this host's identity.

use crate::{
    config::TopologyArgs,
    ebpf,
    topology::{self, SlotAllocator, ZoneTable},
};

#[derive(Debug, thiserror::Error)]
pub enum TopologyCmdError {
    /// Bad input: exit 78.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

pub fn run(args: &TopologyArgs) -> Result<String, TopologyCmdError> {
    let topo = topology::load(args.topology.as_deref()).map_err(|e| {
        if e.is_config_error() { TopologyCmdError::Config(e.to_string()) } else { TopologyCmdError::Runtime(e.to_string()) }
    })?;
    let sizes = ebpf::map_sizes(&crate::config::Limits { max_subnets: crate::config::MAX_SUBNETS_LIMIT, unmapped_entries: 1 });
    let table = topology::build_kernel_table(&topo, &mut SlotAllocator::new(sizes.slots), &mut ZoneTable::new())
        .map_err(|e| TopologyCmdError::Runtime(e.to_string()))?;
    Ok(if args.json {
        let mut s = serde_json::to_string_pretty(&topology::to_json(&topo, &table)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        topology::render_table(&topo, &table)
    })
}
