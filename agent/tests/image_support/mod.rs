//! The agent's image run as the DaemonSet runs it: the manifest read as the kubelet reads it
//! ([`daemonset`]), the CRI requests it becomes ([`cri`]) and sends ([`pod`]), and what the test
//! inspects from outside the container: HTTP on loopback, /proc of its process, bpffs.

#![allow(dead_code, reason = "each suite uses a different part")]

pub mod cri;
pub mod daemonset;
pub mod pod;
pub mod runtimes;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::Duration,
};

/// `cargo xtask test` builds the image and names it here (xtask's `image::TAR_ENV`).
pub const TAR_ENV: &str = "AZFLOW_IMAGE_TAR";

/// The image tar: `$AZFLOW_IMAGE_TAR`, else what `cargo xtask image` writes.
pub fn image_tar() -> Result<PathBuf, String> {
    let path = std::env::var_os(TAR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/azflow-oci.tar"
            ))
        });
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no image at {} (build it with `cargo xtask image`; `cargo xtask test` does)",
            path.display()
        ))
    }
}

/// A port free on loopback now (the agent binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// GET `path`; the status code and body, or the error.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// The host's bpffs at /sys/fs/bpf, mounted shared. Nodes mount it at boot, shared (systemd
/// makes every mount shared); containerd refuses `mountPropagation: HostToContainer` from a
/// private mount, and this machine mounts nothing there at boot.
pub fn ensure_shared_bpffs() {
    let fstype = Command::new("stat")
        .args(["-f", "-c", "%T", "/sys/fs/bpf"])
        .output()
        .expect("stat");
    if String::from_utf8_lossy(&fstype.stdout).trim() != "bpf_fs" {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .expect("mount");
        assert!(st.success(), "mounting bpffs at /sys/fs/bpf failed");
    }
    let st = Command::new("mount")
        .args(["--make-shared", "/sys/fs/bpf"])
        .status()
        .expect("mount");
    assert!(st.success(), "mount --make-shared /sys/fs/bpf failed");
}

/// A line of /proc/<pid>/status, e.g. "CapEff".
pub fn status_field(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Capability names by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability mask as /proc prints it ("000000c000001000") → sorted names ("BPF", …).
pub fn decode_caps(hex: &str) -> Vec<String> {
    let mask = u64::from_str_radix(hex.trim(), 16)
        .unwrap_or_else(|e| panic!("capability mask {hex:?}: {e}"));
    let mut names: Vec<String> = (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            CAP_NAMES
                .get(bit)
                .map_or_else(|| format!("cap{bit}"), |n| (*n).to_owned())
        })
        .collect();
    names.sort();
    names
}

/// `bpftool -j ARGS` as JSON (Null when it prints nothing).
pub fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}
