//! The subcommands.

pub mod run;
pub mod topology;
pub mod bench_baseline;
