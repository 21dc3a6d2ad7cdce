//! The subcommands.

pub mod check;
pub mod run;
pub mod top;
pub mod top_view;
pub mod topology;
pub mod bench_baseline;
