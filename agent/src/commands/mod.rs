//! The subcommands.

pub mod check;
pub mod run;
pub mod topology;
pub mod bench_baseline;
