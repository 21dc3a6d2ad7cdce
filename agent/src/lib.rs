//! azflow: which TCP bytes cross Availability Zones, measured in the kernel.
//!
//! The binary (`main.rs`) only parses the command line; everything else lives here so the
//! integration tests can drive the same code.

pub mod cgroup;
pub mod collector;
pub mod commands;
pub mod config;
pub mod console;
pub mod drain;
pub mod ebpf;
pub mod export;
pub mod ledger;
pub mod logging;
pub mod nat;
pub mod pricing;
pub mod self_metrics;
pub mod snapshot;
pub mod topology;
pub mod workloads;

/// sysexits' EX_CONFIG: the configuration is wrong, nothing was attached.
pub const EXIT_CONFIG: u8 = 78;
