//! `cargo xtask fuzz`: every cargo-fuzz target in `fuzz/fuzz_targets/` for a fixed time each, on
//! the pinned nightly. A crash, a leak or a timeout fails the task (libFuzzer exits non-zero and
//! leaves the input in `fuzz/artifacts/<target>/`).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::toolchain::{NIGHTLY, STABLE, cargo_bin, run};

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds per target (CI uses the default).
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Only this target (default: all).
    pub target: Option<String>,
}

pub fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_bin().join("cargo-fuzz").is_file() {
        return Ok(());
    }
    println!("xtask setup: installing cargo-fuzz");
    run(Command::new("rustup").args(["run", STABLE, "cargo", "install", "cargo-fuzz", "--locked"]))
}

fn fuzz_dir() -> PathBuf {
    crate::workspace_root().join("fuzz")
}

/// Target names: one per file in `fuzz/fuzz_targets/`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn nightly_cargo_fuzz() -> Command {
    let mut cmd = crate::toolchain::cargo_on(NIGHTLY);
    // The fuzz targets link the agent's user-space code only; its eBPF object is not needed.
    cmd.arg("fuzz")
        .current_dir(fuzz_dir())
        .env("AYA_BUILD_SKIP", "1");
    cmd
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    crate::toolchain::setup()?;
    let all = targets()?;
    let chosen: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t}; the targets are: {}", all.join(", ")),
        None => all,
    };
    run(nightly_cargo_fuzz().args(["build", "--release"]))?;
    for target in &chosen {
        // New inputs go to a scratch corpus under target/; the committed seeds are only read.
        let scratch = crate::workspace_root()
            .join("target/fuzz-corpus")
            .join(target);
        std::fs::create_dir_all(&scratch)?;
        println!("xtask fuzz: {target} for {} s", args.seconds);
        run(nightly_cargo_fuzz()
            .args(["run", "--release", target])
            .arg(&scratch)
            .arg(fuzz_dir().join("corpus").join(target))
            .args([
                "--",
                &format!("-max_total_time={}", args.seconds),
                "-timeout=10",
                "-rss_limit_mb=2048",
            ]))
        .with_context(|| {
            format!("fuzz target {target} failed; its input is in fuzz/artifacts/{target}/")
        })?;
    }
    println!(
        "xtask fuzz: {} targets, {} s each, no crash",
        chosen.len(),
        args.seconds
    );
    Ok(())
}
