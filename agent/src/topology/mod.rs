//! Subnet → Availability Zone: where this host runs, which subnet lives in which AZ, and the
//! kernel table that turns a destination address into a counter slot and a traffic class.
//!
//! ```text
//!  static TOML file ─┐  (overrides the others per CIDR)
//!  AWS (later) ──────┼─► Topology ─► build_kernel_table ─► KernelTable {v4, v6, slot labels}
//!  host interfaces ──┘  (immutable)  (SlotAllocator and          │ diff(old, new):
//!  (the default)                      ZoneTable keep ids stable)  ▼ upsert first, then delete
//!                                                          ebpf::maps (LPM tries)
//! ```

pub mod aws;
pub mod host_interfaces;
pub mod ip_ranges;
pub mod kernel_table;
pub mod model;
pub mod paths;
pub mod ranges;
pub mod render;
pub mod static_file;
mod values;

use std::path::Path;

pub use host_interfaces::HostInterfacesError;
pub use kernel_table::{
    Deletes, KernelTable, KernelTableError, LabelSet, SlotAllocator, SlotKey, SlotKind, SlotLabels, Upserts,
    ZoneTable, build_kernel_table, classify, diff,
};
pub use model::{HostIdentity, Source, Subnet, Topology};
pub use paths::{Billing, BillingPath, Routing};
pub use ranges::{CatchAll, CatchAllRange, RangeKind, catch_all_ranges};
pub use render::{render_table, to_json};
pub use static_file::{Problem, TopologyFileError};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The static file is unreadable or invalid: a configuration error (exit 78).
    #[error(transparent)]
    File(#[from] TopologyFileError),
    #[error(transparent)]
    HostInterfaces(#[from] HostInterfacesError),
    #[error(transparent)]
    KernelTable(#[from] KernelTableError),
}

impl TopologyError {
    /// True when the user's configuration is at fault (the caller exits with EX_CONFIG).
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::File(_))
    }
}

/// The configured topology: the static file when given, else the host's own interface subnets
/// as its AZ ("local").
pub fn load(static_file: Option<&Path>) -> Result<Topology, TopologyError> {
    match static_file {
        Some(path) => Ok(static_file::load_file(path)?),
        None => Ok(host_interfaces::load()?),
    }
}
