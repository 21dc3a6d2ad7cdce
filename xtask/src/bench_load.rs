//! The bench's load generators and the peer it compares against.
//!
//! - Per-packet stress at a fixed offered rate: the sender pinned to CPU 0, the receiver to
//!   CPU 1, MTU-size segments over a loopback with no offloads, so every segment runs the
//!   programs once on the way out and once on the way in. The figure is CPU time per packet
//!   (busy time of both CPUs from /proc/stat over the run, over the packets the loopback
//!   carried): a cost per packet, not a throughput that other work on the machine can inflate.
//! - The peer: what a user might deploy instead — a bpftrace script counting TCP bytes per
//!   destination /24 from the `net:net_dev_queue` tracepoint.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The peer's script: bytes per destination /24 of every transmitted TCP/IPv4 packet.
pub const BPFTRACE_PEER: &str = r#"
tracepoint:net:net_dev_queue {
  $skb = (struct sk_buff *)args->skbaddr;
  $iph = (struct iphdr *)($skb->head + $skb->network_header);
  if ($iph->version == 4 && $iph->protocol == 6) {
    @bytes[$iph->daddr & 0xffffff] = sum($skb->len);
  }
}
"#;

/// Starts the bpftrace peer and waits until its probes are attached. Tracepoints are found
/// through tracefs, which not every machine mounts.
pub fn start_bpftrace() -> Result<Child> {
    if !std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        crate::toolchain::run(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))?;
    }
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_PEER])
        .env("BPFTRACE_NO_CPP_DEMANGLE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bpftrace (install it with `cargo xtask setup`)")?;
    let stdout = child.stdout.take().context("bpftrace stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.starts_with("Attaching") => return Ok(child),
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    bail!("bpftrace exited with {status}: {err}");
                }
            }
            Err(_) => bail!("bpftrace closed stdout before attaching"),
        }
    }
    let _ = child.kill();
    bail!("bpftrace did not attach within 60 s")
}

/// (run_time_ns, run_cnt) of the BPF programs a process holds (bpftool's `pids`).
pub fn prog_stats_of_pid(pid: u32) -> Result<(u64, u64)> {
    let out = crate::toolchain::capture(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let progs: Vec<serde_json::Value> = serde_json::from_str(&out).context("bpftool JSON")?;
    let mut s = (0, 0);
    for p in &progs {
        let held = p["pids"].as_array().is_some_and(|a| a.iter().any(|x| x["pid"].as_u64() == Some(u64::from(pid))));
        if held {
            s.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            s.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(s)
}

/// Busy and total jiffies of CPUs 0 and 1.
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let (mut busy, mut total) = (0, 0);
    for line in stat.lines().filter(|l| l.starts_with("cpu0 ") || l.starts_with("cpu1 ")) {
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        if f.len() >= 8 {
            busy += f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
            total += f[..8].iter().sum::<u64>();
        }
    }
    Ok((busy, total))
}

fn lo_packets(ns: &str) -> Result<u64> {
    let out = crate::toolchain::capture(Command::new("ip").args(["netns", "exec", ns, "cat", "/sys/class/net/lo/statistics/tx_packets"]))?;
    out.trim().parse().context("lo tx_packets")
}

/// CPU nanoseconds per loopback packet at `rate` (iperf3 `-b`) for `secs`, with `wrap` putting a
/// command into the bench's cgroup and `ns`.
pub fn cpu_ns_per_packet(wrap: &dyn Fn(&[&str]) -> Command, ns: &str, secs: u32, rate: &str) -> Result<f64> {
    let mut server = wrap(&["iperf3", "-s", "-1", "-p", "5202", "-A", "1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let p0 = lo_packets(ns)?;
    let (b0, _) = cpu_jiffies()?;
    let status = wrap(&["iperf3", "-c", "127.0.0.1", "-p", "5202", "-t", &secs.to_string(), "-b", rate, "-A", "0", "-M", "1448"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let (b1, _) = cpu_jiffies()?;
    let p1 = lo_packets(ns)?;
    let _ = server.kill();
    let _ = server.wait();
    if !status?.success() {
        bail!("iperf3 at a fixed rate failed");
    }
    let packets = p1.saturating_sub(p0);
    if packets == 0 {
        bail!("no packets crossed the stress loopback");
    }
    // USER_HZ is 100 on Linux: one jiffy is 10 ms.
    Ok((b1 - b0) as f64 * 1e7 / packets as f64)
}
