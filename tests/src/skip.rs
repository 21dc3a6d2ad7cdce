//! Deciding whether this machine can run beds, and skipping loudly when it cannot.

use std::{
    env, fs,
    io::Write,
    path::{Path, PathBuf},
};

/// With this environment variable set to `1`, a machine that cannot run beds fails the test
/// instead of skipping it (CI sets it, so a misconfigured runner cannot pass by skipping).
pub const REQUIRE_ENV: &str = "AZFLOW_REQUIRE_EBPF";

/// Proof that [`require_root_or_skip`] found the machine able to run beds.
#[derive(Debug, Clone, Copy)]
pub struct Privileged(());

/// Capabilities the bed needs: CAP_NET_ADMIN (namespaces' links), CAP_NET_RAW (ping),
/// CAP_SYS_ADMIN (mounting network namespaces, cgroups).
const NEEDED_CAPS: &[(u32, &str)] = &[
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (21, "CAP_SYS_ADMIN"),
];

/// Tools the bed runs.
const NEEDED_TOOLS: &[&str] = &["ip", "bridge", "ethtool"];

/// Why this machine cannot run beds, or `Ok(())` if it can.
pub fn check_environment() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("not running as root (euid {euid})"));
    }
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff line in /proc/self/status")?;
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| cap_eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing capabilities {}", missing.join(", ")));
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("the kernel has no network namespaces".into());
    }
    crate::cgroup::cgroup2_root().map_err(|e| format!("{e:#}"))?;
    for tool in NEEDED_TOOLS {
        if find_in_path(tool).is_none() {
            return Err(format!("`{tool}` is not installed (not on PATH)"));
        }
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Returns a [`Privileged`] token if the machine can run beds. Otherwise: with
/// `AZFLOW_REQUIRE_EBPF=1` panics with the reason; without it prints `SKIPPED: <test>: <reason>`
/// straight to stderr (past the test harness's output capture, so it shows in `cargo test`
/// output) and returns None, and the test should return.
///
/// ```no_run
/// # fn t() {
/// let Some(_root) = azflow_tests::require_root_or_skip() else { return };
/// # }
/// ```
pub fn require_root_or_skip() -> Option<Privileged> {
    let reason = match check_environment() {
        Ok(()) => return Some(Privileged(())),
        Err(reason) => reason,
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{test}: cannot run network-namespace tests: {reason} ({REQUIRE_ENV}=1 forbids skipping)"
        );
    }
    // One write, so parallel tests' lines do not interleave.
    let line = format!("SKIPPED: {test}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}
