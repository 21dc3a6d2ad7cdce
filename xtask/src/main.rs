//! Developer tasks: `cargo xtask setup | build | image | run | test | fuzz | bench | demo`.

mod bench;
mod bench_load;
mod bench_stats;
mod demo;
mod fuzz;
mod image;
mod pyenv;
mod test_run;
mod toolchain;

use std::{os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned toolchains, bpf-linker and the test tools (idempotent).
    Setup,
    /// Build the agent (release), setting up first when a piece is missing.
    Build,
    /// Build the agent's OCI image (release binary, deploy/container/Dockerfile's contents) as an
    /// OCI image-layout tar, with no container daemon.
    Image {
        /// Where to write the tar.
        #[arg(long, default_value_os_t = image::default_output())]
        output: PathBuf,
    },
    /// Build and run the agent on this host with embedded defaults (needs root).
    Run {
        /// Arguments passed to `azflow run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test and print how many ran (as root, or with AZFLOW_REQUIRE_EBPF=1, a skip is a
    /// failure).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run each cargo-fuzz target for a fixed time (a crash fails).
    Fuzz(fuzz::FuzzArgs),
    /// Measure the cost of counting against no agent and an empty program (root).
    Bench(bench::BenchArgs),
    /// Three-AZ test bed, traffic between its hosts, the agent's live table (root).
    Demo(demo::DemoArgs),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => toolchain::setup(),
        Task::Build => build(),
        Task::Image { output } => build_image(&output).map(drop),
        Task::Run { args } => {
            build()?;
            let bin = workspace_root().join("target/release/azflow");
            let err = std::process::Command::new(&bin).arg("run").args(&args).exec();
            bail!("starting {}: {err}", bin.display())
        }
        Task::Test { args } => test_run::test(&args),
        Task::Fuzz(args) => fuzz::fuzz(&args),
        Task::Bench(args) => {
            let agent = match &args.agent {
                Some(a) => a.clone(),
                None => {
                    build()?;
                    workspace_root().join("target/release/azflow")
                }
            };
            bench::bench(&args, &agent)
        }
        Task::Demo(args) => {
            build()?;
            let release = workspace_root().join("target/release");
            demo::demo(&args, &release.join("azflow"), &release.join("azflow-traffic"))
        }
    }
}

fn ensure_setup() -> Result<()> {
    if !toolchain::build_ready() {
        println!("xtask: a build prerequisite is missing; running `cargo xtask setup` first");
        toolchain::setup()?;
    }
    Ok(())
}

fn build() -> Result<()> {
    ensure_setup()?;
    toolchain::run(toolchain::cargo().current_dir(workspace_root()).args(["build", "--release", "-p", "azflow", "-p", "azflow-tests", "--bins"]))
}

/// Builds the release binary, then its image into `output`; returns `output`.
fn build_image(output: &std::path::Path) -> Result<PathBuf> {
    build()?;
    let summary = image::build(&workspace_root().join("target/release/azflow"), output)?;
    println!("xtask image: {summary}");
    Ok(output.to_path_buf())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
