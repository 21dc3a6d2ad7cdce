//! `cargo xtask setup`: the pinned toolchains, bpf-linker against the nightly's LLVM, and the
//! Debian packages the tests use. Idempotent: each step checks before it acts and says what it
//! does.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// User space builds on this.
pub const STABLE: &str = "1.99.1";
/// The eBPF crate builds on this (kept in step with `agent/build.rs`).
pub const NIGHTLY: &str = "nightly-2026-10-30";
/// Debian packages the tests, the benchmark and CI drive (a binary or file that proves the
/// package is there, the package). A missing one is installed as root; a skipped test is a
/// failure in CI, so every tool a test looks for is here.
pub const SYSTEM_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("iperf3", "iperf3"),
    ("sockperf", "sockperf"),
    ("bpftool", "bpftool"),
    ("ss", "iproute2"),
    // promtool (rule tests) and the server (dashboard queries against a real Prometheus).
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    // The systemd unit's `systemd-analyze security` score.
    ("systemd-analyze", "systemd"),
    // NAT and workload beds: kube-proxy-shaped DNAT, conntrack events, a real containerd.
    ("iptables", "iptables"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    // Debian's Python, for the project-local venv of the PyPI tools (see `pyenv`).
    ("/usr/bin/python3", "python3"),
    ("ctr", "containerd"),
    // `azflow top` driven as a person drives it (send-keys, capture-pane).
    ("tmux", "tmux"),
    // k8s-cri (the workloads test's CRI client) runs protoc in its build.
    ("protoc", "protobuf-compiler"),
    // The bench's peer arm.
    ("bpftrace", "bpftrace"),
    // `cargo xtask image`: the binary's libraries as the loader resolves them, and the CA
    // bundle the image carries (distroless ships the same file).
    ("ldd", "libc-bin"),
    ("/etc/ssl/certs/ca-certificates.crt", "ca-certificates"),
];

pub fn setup() -> Result<()> {
    ensure_toolchain(STABLE, &["--component", "clippy,rustfmt"])?;
    ensure_toolchain(NIGHTLY, &["--component", "rust-src"])?;
    ensure_bpf_linker()?;
    ensure_system_tools()?;
    crate::pyenv::ensure()?;
    crate::fuzz::ensure_cargo_fuzz()?;
    println!("xtask setup: everything is in place");
    Ok(())
}

/// True when everything `build` needs is present (cheap: no installs, no network).
pub fn build_ready() -> bool {
    toolchain_installed(STABLE).unwrap_or(false)
        && toolchain_installed(NIGHTLY).unwrap_or(false)
        && linker_stamp_ok()
}

fn toolchain_installed(name: &str) -> Result<bool> {
    let out = Command::new("rustup").args(["toolchain", "list"]).output().context("running rustup")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with(name)))
}

fn ensure_toolchain(name: &str, extra: &[&str]) -> Result<()> {
    if toolchain_installed(name)? {
        return Ok(());
    }
    println!("xtask setup: installing Rust toolchain {name} (auto-install is off, so it is done explicitly)");
    let mut cmd = Command::new("rustup");
    cmd.args(["toolchain", "install", name, "--profile", "minimal"]).args(extra);
    run(&mut cmd)
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("azflow")
}

pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// bpf-linker must link against the same LLVM as the nightly that emits the bitcode; a stamp
/// records which nightly the installed linker was built for.
fn linker_stamp() -> PathBuf {
    cache_dir().join("bpf-linker.stamp")
}

fn linker_stamp_ok() -> bool {
    cargo_bin().join("bpf-linker").is_file()
        && std::fs::read_to_string(linker_stamp()).is_ok_and(|s| s.trim() == NIGHTLY)
}

fn ensure_bpf_linker() -> Result<()> {
    if linker_stamp_ok() {
        return Ok(());
    }
    let sysroot = capture(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.NN* in {}", lib.display()))?;
    let major: u32 = llvm
        .trim_start_matches("libLLVM.so.")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {llvm}"))?;
    let prefix = cache_dir().join(format!("llvm-{NIGHTLY}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&llvm), &link)
        .with_context(|| format!("linking {} to {llvm}", link.display()))?;
    println!("xtask setup: building bpf-linker against {NIGHTLY}'s LLVM {major} ({llvm})");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", STABLE, "cargo", "install", "bpf-linker", "--locked", "--force"]).env("LLVM_PREFIX", &prefix);
    if major != 23 {
        cmd.args(["--no-default-features", "--features", &format!("llvm-{major}")]);
    }
    run(&mut cmd)?;
    std::fs::create_dir_all(cache_dir())?;
    std::fs::write(linker_stamp(), NIGHTLY)?;
    Ok(())
}

fn ensure_system_tools() -> Result<()> {
    let mut missing: Vec<&str> = SYSTEM_TOOLS
        .iter()
        .filter(|(bin, _)| !tool_present(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if !venv_module_works() {
        missing.push("python3-venv");
    }
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing tools; install them with: sudo apt-get install -y {}", missing.join(" "));
    }
    println!("xtask setup: installing Debian packages {}", missing.join(" "));
    // Another apt (unattended upgrades, a second setup) may hold the lock for a while: wait.
    run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update", "-q"]))?;
    run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A program on PATH, or an absolute path that exists.
fn tool_present(what: &str) -> bool {
    if what.starts_with('/') { Path::new(what).exists() } else { which(what).is_some() }
}

/// Debian's python3 can make a venv with pip only with python3-venv installed.
fn venv_module_works() -> bool {
    Command::new(crate::pyenv::SYSTEM_PYTHON)
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` on the pinned stable, free of the outer cargo's environment.
pub fn cargo() -> Command {
    cargo_on(STABLE)
}

/// `cargo` on `toolchain`, free of the outer cargo's environment.
pub fn cargo_on(toolchain: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, "cargo"]);
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    cmd
}
