//! Named network namespaces (the `ip netns` kind, bind-mounted under /run/netns).
//!
//! Small reads and writes inside a namespace (sysctls, /proc/net files) are done from a short-lived
//! thread that `setns`es into it, instead of spawning a process: /proc/sys/net and
//! /proc/thread-self/net follow the calling *thread's* network namespace.

use std::{
    fs,
    io::ErrorKind,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    counters::{IfCounters, TcpCounters},
    process,
};

/// Where `ip netns add` bind-mounts namespaces.
pub const NETNS_DIR: &str = "/run/netns";

const IP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the named namespace (`ip netns add`).
pub fn add(name: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "add", name]);
    process::run(cmd, IP_TIMEOUT)?;
    Ok(())
}

/// Removes the name of a namespace (`ip netns delete`). The namespace itself goes away once no
/// process runs in it any more, taking its interfaces with it.
pub fn delete(name: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "delete", name]);
    process::run(cmd, IP_TIMEOUT)?;
    Ok(())
}

/// The names under /run/netns (empty if the directory does not exist yet).
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {NETNS_DIR}")),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {NETNS_DIR}"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Processes (thread-group leaders, like `ip netns pids`) whose network namespace is `name`,
/// never including the calling process itself.
pub fn pids(name: &str) -> Result<Vec<u32>> {
    let ns_path = path(name);
    let ns = fs::metadata(&ns_path).with_context(|| format!("stat {}", ns_path.display()))?;
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes exit concurrently; a vanished one is simply not in the namespace.
        let Ok(meta) = fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if meta.dev() == ns.dev() && meta.ino() == ns.ino() {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Sends SIGKILL to every process in the namespace; returns how many were signalled.
pub fn kill_all(name: &str) -> Result<usize> {
    let pids = pids(name)?;
    for &pid in &pids {
        kill(pid);
    }
    Ok(pids.len())
}

/// SIGKILL to one process; a process that already exited is fine.
pub(crate) fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Runs `f` on a fresh thread that has joined the named network namespace.
pub fn with_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns_path = path(name);
    let file =
        fs::File::open(&ns_path).with_context(|| format!("opening {}", ns_path.display()))?;
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn_scoped(scope, move || {
                // SAFETY: setns(2) on a valid namespace fd; it only affects this thread, which
                // ends when `f` returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns into {}", ns_path.display()));
                }
                f()
            })
            .context("spawning a thread")?;
        worker
            .join()
            .map_err(|_| anyhow!("the thread working in netns {name} panicked"))?
    })
    .with_context(|| format!("in netns {name}"))
}

/// Writes sysctls (`("net/ipv4/ip_forward", "1")`, paths relative to /proc/sys) in the namespace.
pub fn write_sysctls(name: &str, settings: &[(&str, &str)]) -> Result<()> {
    with_netns(name, || {
        for (key, value) in settings {
            let path = Path::new("/proc/sys").join(key);
            fs::write(&path, value)
                .with_context(|| format!("writing {value:?} to {}", path.display()))?;
        }
        Ok(())
    })
}

/// Reads one sysctl in the namespace (trimmed).
pub fn read_sysctl(name: &str, key: &str) -> Result<String> {
    with_netns(name, || {
        let path = Path::new("/proc/sys").join(key);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.trim().to_owned())
    })
}

/// Counters of `iface` in the namespace, from /proc/net/dev.
pub fn if_counters(name: &str, iface: &str) -> Result<IfCounters> {
    with_netns(name, || {
        let text = fs::read_to_string("/proc/thread-self/net/dev")
            .context("reading /proc/thread-self/net/dev")?;
        IfCounters::parse_proc_net_dev(&text, iface)
    })
}

/// TCP segment counters of the namespace, from /proc/net/snmp.
pub fn tcp_counters(name: &str) -> Result<TcpCounters> {
    with_netns(name, || {
        let text = fs::read_to_string("/proc/thread-self/net/snmp")
            .context("reading /proc/thread-self/net/snmp")?;
        TcpCounters::parse_proc_net_snmp(&text)
    })
}

/// IPv6 addresses in the namespace that are still tentative (DAD not done), as text.
pub fn tentative_ipv6(name: &str) -> Result<Vec<String>> {
    const IFA_F_TENTATIVE: u32 = 0x40;
    with_netns(name, || {
        let text = match fs::read_to_string("/proc/thread-self/net/if_inet6") {
            Ok(text) => text,
            // IPv6 disabled: nothing can be tentative.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context("reading /proc/thread-self/net/if_inet6"),
        };
        let mut tentative = Vec::new();
        for line in text.lines() {
            // address ifindex prefixlen scope flags name
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [addr, _, _, _, flags, dev] = fields[..] else {
                bail!("unexpected line in if_inet6: {line:?}");
            };
            let flags = u32::from_str_radix(flags, 16)
                .with_context(|| format!("flags in if_inet6 line {line:?}"))?;
            if flags & IFA_F_TENTATIVE != 0 {
                tentative.push(format!("{addr} on {dev}"));
            }
        }
        Ok(tentative)
    })
}

/// A command that runs `program` inside the namespace (`ip netns exec`, which also mounts a
/// matching /sys).
pub fn exec_command(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", name]).arg(program);
    cmd
}

/// Runs an `ip` batch (one command per line) against the namespace, failing on the first error.
pub fn ip_batch(name: &str, batch: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", name, "-batch", "-"]);
    process::run_with_stdin(cmd, batch, IP_TIMEOUT)
        .with_context(|| format!("ip batch in netns {name}:\n{batch}"))?;
    Ok(())
}
