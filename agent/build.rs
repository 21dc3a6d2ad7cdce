//! Builds the eBPF object on the pinned nightly and leaves it in OUT_DIR for the agent to embed.
//! Tool installation is `cargo xtask setup`'s job, never this script's.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, Result, bail};

/// Kept in step with `xtask/src/toolchain.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-30";

fn main() -> Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ebpf_dir = root.join("agent-ebpf");
    println!(
        "cargo::rerun-if-changed={}",
        root.join("agent-common/src").display()
    );
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");

    // AYA_BUILD_SKIP=1 builds user space only (clippy, docs, pure unit tests); the agent then
    // refuses to load with a message that says so.
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        fs::write(out_dir.join("azflow"), []).context("writing the empty eBPF placeholder")?;
        return Ok(());
    }
    if which_bpf_linker().is_none() {
        bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs the pinned toolchains and bpf-linker)"
        );
    }
    let root_dir = ebpf_dir.to_str().context("agent-ebpf path is not UTF-8")?;
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
        .with_context(|| format!("building the eBPF object with {EBPF_TOOLCHAIN} (run `cargo xtask setup` if a piece is missing)"))
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
