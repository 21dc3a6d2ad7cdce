//! Loading, attaching and talking to the kernel side.

pub mod attach;
pub mod attachment;
mod batch;
pub mod load;
pub mod maps;
pub mod pin;
pub mod sizes;
pub mod workload_maps;

pub use attach::{AttachError, Attached, attach, attach_bench_baseline};
pub use load::{LoadError, load};
pub use maps::{KernelMaps, MapsError};
pub use sizes::{MapSizes, map_sizes};
pub use workload_maps::{WorkloadCell, WorkloadMaps, WorkloadRttCell};
