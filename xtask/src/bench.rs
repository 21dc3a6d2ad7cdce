//! `cargo xtask bench`: the cost of counting, as ratios against a baseline measured in the same
//! run. Arms — no agent, an empty cgroup_skb program, azflow at 1k and at 100k prefixes, azflow
//! with every feature on, and a peer (a bpftrace script a user might deploy instead) — are
//! interleaved within each repetition so drift on the machine hits every arm alike; each figure is
//! reported as median, min–max and coefficient of variation over the repetitions. Nothing here
//! asserts: the targets are printed beside the figures. The method is in docs/performance.md.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    bench_stats::Summary,
    toolchain::{capture, run},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Repetitions of every arm.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4)]
    pub seconds: u32,
    /// Where the JSON and markdown reports go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Another azflow binary (e.g. the previous release) measured as one more arm with the 1k
    /// topology, for before/after figures from the same run.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Measure this azflow binary as the agent instead of building the workspace's (e.g. an
    /// older commit's release build, to isolate one change against `--compare`).
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Arm {
    NoAgent,
    EmptyProgram,
    Azflow1k,
    Azflow100k,
    /// 1k prefixes with every feature on: RTT on every ack, NAT resolution armed (conntrack
    /// tracking in the bench namespace), per-subnet series.
    AzflowAll,
    /// bpftrace counting TCP bytes per destination /24 from a tracepoint.
    PeerBpftrace,
    /// `--compare`'s binary with the 1k topology.
    Compare1k,
}

impl Arm {
    const ALL: [Arm; 7] = [Arm::NoAgent, Arm::EmptyProgram, Arm::Azflow1k, Arm::Azflow100k, Arm::AzflowAll, Arm::PeerBpftrace, Arm::Compare1k];
    fn name(self) -> &'static str {
        match self {
            Arm::NoAgent => "no_agent",
            Arm::EmptyProgram => "empty_program",
            Arm::Azflow1k => "azflow_1k_prefixes",
            Arm::Azflow100k => "azflow_100k_prefixes",
            Arm::AzflowAll => "azflow_all_features",
            Arm::PeerBpftrace => "peer_bpftrace",
            Arm::Compare1k => "compare_1k_prefixes",
        }
    }
    fn prefixes(self) -> Option<u32> {
        match self {
            Arm::Azflow1k | Arm::AzflowAll | Arm::Compare1k => Some(1_000),
            Arm::Azflow100k => Some(100_000),
            _ => None,
        }
    }
}

/// The fixed offered rate of the per-packet stress arm (iperf3 `-b`).
const STRESS_RATE: &str = "1G";

/// One arm's figures from one repetition.
#[derive(Debug, Default, Clone)]
struct Sample {
    bulk_gbps: f64,
    /// CPU nanoseconds per packet at the fixed stress rate.
    stress_cpu_ns: f64,
    rr_msgs_per_s: f64,
    ns_per_run: Option<f64>,
    sockops_ns: Option<f64>,
    rss_mib: Option<f64>,
    cpu_percent: Option<f64>,
}

/// The bench's own namespaces and cgroup, removed on drop.
struct Stage {
    bulk_ns: String,
    stress_ns: String,
    cgroup: PathBuf,
    dir: PathBuf,
}

impl Stage {
    fn new(out: &Path) -> Result<Stage> {
        let pid = std::process::id();
        let cg_root = cgroup2_root()?;
        let stage = Stage {
            bulk_ns: format!("azfb-{pid}-b"),
            stress_ns: format!("azfb-{pid}-s"),
            cgroup: cg_root.join(format!("azfb-{pid}")),
            dir: out.join("work"),
        };
        std::fs::create_dir_all(&stage.dir)?;
        std::fs::create_dir_all(&stage.cgroup).context("creating the bench cgroup")?;
        for ns in [&stage.bulk_ns, &stage.stress_ns] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        // A NAT table in the namespaces makes conntrack track their connections, as on a
        // Kubernetes node: the all-features arm then has NAT resolution armed.
        for ns in [&stage.bulk_ns, &stage.stress_ns] {
            run(Command::new("ip").args(["netns", "exec", ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.1/32", "-p", "tcp", "-j", "DNAT", "--to-destination", "127.0.0.1"]))?;
        }
        // Per-packet stress: MTU-size packets, no segmentation offload, so every packet runs the
        // programs once.
        run(Command::new("ip").args(["-n", &stage.stress_ns, "link", "set", "lo", "mtu", "1500"]))?;
        run(Command::new("ip").args(["netns", "exec", &stage.stress_ns, "ethtool", "-K", "lo", "tso", "off", "gso", "off", "gro", "off"]))?;
        Ok(stage)
    }

    /// A command inside `ns` and the bench cgroup, optionally pinned to CPU 0.
    fn cmd(&self, ns: &str, pin: bool, argv: &[&str]) -> Command {
        let mut c = Command::new("sh");
        let script = format!("echo $$ > '{}/cgroup.procs' && exec \"$@\"", self.cgroup.display());
        c.args(["-c", &script, "sh"]);
        if pin {
            c.args(["taskset", "-c", "0"]);
        }
        c.args(["ip", "netns", "exec", ns]).args(argv);
        c
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        for ns in [&self.bulk_ns, &self.stress_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Ok(procs) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn cgroup2_root() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            if post.split_whitespace().next()? == "cgroup2" { pre.split_whitespace().nth(4).map(PathBuf::from) } else { None }
        })
        .context("no cgroup2 mount")
}

pub fn bench(args: &BenchArgs, agent: &Path) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let stage = Stage::new(&args.out)?;
    let mut topologies = BTreeMap::new();
    for arm in Arm::ALL {
        if let Some(n) = arm.prefixes() {
            let path = stage.dir.join(format!("topology-{n}.toml"));
            std::fs::write(&path, topology_with(n))?;
            topologies.insert(arm, path);
        }
    }
    let stats_before = capture(Command::new("sysctl").args(["-n", "kernel.bpf_stats_enabled"]))?;
    run(Command::new("sysctl").args(["-q", "-w", "kernel.bpf_stats_enabled=1"]))?;
    let mut samples: BTreeMap<Arm, Vec<Sample>> = BTreeMap::new();
    let result = (|| -> Result<()> {
        let arms: Vec<Arm> = Arm::ALL.into_iter().filter(|a| *a != Arm::Compare1k || args.compare.is_some()).collect();
        for rep in 0..args.reps {
            // Rotate the order so no arm always runs first (caches, frequency ramps).
            for i in 0..arms.len() {
                let arm = arms[(i + rep) % arms.len()];
                println!("bench: rep {}/{} arm {}", rep + 1, args.reps, arm.name());
                let binary = if arm == Arm::Compare1k { args.compare.as_deref().unwrap_or(agent) } else { agent };
                let s = measure_arm(&stage, arm, binary, topologies.get(&arm), args.seconds)?;
                samples.entry(arm).or_default().push(s);
            }
        }
        Ok(())
    })();
    let _ = Command::new("sysctl").args(["-q", "-w", &format!("kernel.bpf_stats_enabled={}", stats_before.trim())]).status();
    result?;
    report(&samples, args)
}

fn measure_arm(stage: &Stage, arm: Arm, agent: &Path, topology: Option<&PathBuf>, secs: u32) -> Result<Sample> {
    let cgroup = stage.cgroup.display().to_string();
    let netns_path = format!("/run/netns/{}", stage.bulk_ns);
    let mut agent_proc = match arm {
        Arm::NoAgent => None,
        Arm::EmptyProgram => Some(start_agent(agent, &["bench-baseline", "--cgroup", &cgroup], "baseline program attached")?),
        Arm::PeerBpftrace => Some(crate::bench_load::start_bpftrace()?),
        Arm::Azflow1k | Arm::Azflow100k | Arm::AzflowAll | Arm::Compare1k => {
            let topo = topology.context("topology")?.display().to_string();
            // --aws off: the bench runs on a test machine, never probing the link-local IMDS address.
            let mut argv = vec!["run", "--cgroup", &cgroup, "--topology", &topo, "--max-subnets", "110000", "--prometheus", "off", "--console", "never", "--aws", "off"];
            if arm == Arm::AzflowAll {
                argv.extend(["--rtt-sample-interval", "0", "--dst-subnet-series", "100", "--nat-netns", &netns_path]);
            }
            Some(start_agent(agent, &argv, "attached and counting")?)
        }
    };
    let pid = agent_proc.as_ref().map(Child::id);
    let stats = |pid: u32| -> Result<ProgStats> {
        if arm == Arm::PeerBpftrace {
            Ok(ProgStats { skb: crate::bench_load::prog_stats_of_pid(pid)?, sockops: (0, 0) })
        } else {
            prog_stats(&stage.cgroup)
        }
    };
    let cpu_before = pid.and_then(cpu_ticks);
    let stats_before = pid.map(stats).transpose()?;
    let started = Instant::now();

    let bulk_gbps = iperf(stage, &stage.bulk_ns, secs)?;
    let wrap = |argv: &[&str]| stage.cmd(&stage.stress_ns, false, argv);
    let stress_cpu_ns = crate::bench_load::cpu_ns_per_packet(&wrap, &stage.stress_ns, secs, STRESS_RATE)?;
    let rr_msgs_per_s = sockperf(stage, secs)?;

    let wall = started.elapsed().as_secs_f64();
    let per_run = |a: (u64, u64), b: (u64, u64)| {
        let (t, n) = (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1));
        (n > 0).then(|| t as f64 / n as f64)
    };
    let (ns_per_run, sockops_ns) = match (pid, stats_before) {
        (Some(pid), Some(before)) => {
            let after = stats(pid)?;
            (per_run(after.skb, before.skb), per_run(after.sockops, before.sockops))
        }
        _ => (None, None),
    };
    let cpu_percent = match (pid.and_then(cpu_ticks), cpu_before) {
        (Some(a), Some(b)) => Some((a - b) as f64 / 100.0 / wall * 100.0),
        _ => None,
    };
    let rss_mib = pid.and_then(rss_kib).map(|k| k as f64 / 1024.0);
    if let Some(child) = agent_proc.as_mut() {
        stop(child)?;
    }
    Ok(Sample { bulk_gbps, stress_cpu_ns, rr_msgs_per_s, ns_per_run, sockops_ns, rss_mib, cpu_percent })
}

fn start_agent(agent: &Path, argv: &[&str], ready: &str) -> Result<Child> {
    let mut child = Command::new(agent)
        .args(argv)
        .env("AZFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(ready) => return Ok(child),
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    bail!("agent exited with {status} before it was ready:\n{}", seen.join("\n"));
                }
            }
            Err(_) => bail!("agent closed stderr before it was ready:\n{}", seen.join("\n")),
        }
    }
    let _ = child.kill();
    bail!("agent not ready within 60 s:\n{}", seen.join("\n"))
}

fn stop(child: &mut Child) -> Result<()> {
    // SAFETY: kill with a pid we spawned and still own.
    unsafe { libc_kill(child.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    bail!("agent did not stop within 10 s of SIGTERM")
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn iperf(stage: &Stage, ns: &str, secs: u32) -> Result<f64> {
    let mut server = stage.cmd(ns, false, &["iperf3", "-s", "-1", "-p", "5201"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = capture(&mut stage.cmd(ns, false, &["iperf3", "-c", "127.0.0.1", "-p", "5201", "-t", &secs.to_string(), "-J"]));
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_str(&out?).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9).context("iperf3: no end.sum_received")
}

fn sockperf(stage: &Stage, secs: u32) -> Result<f64> {
    let ns = &stage.bulk_ns;
    let mut server = stage.cmd(ns, true, &["sockperf", "sr", "--tcp", "-i", "127.0.0.1", "-p", "11111"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let out = stage.cmd(ns, true, &["sockperf", "pp", "--tcp", "-i", "127.0.0.1", "-p", "11111", "-m", "64", "-t", &secs.to_string()]).output();
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // "[Valid Duration] RunTime=0.550 sec; SentMessages=7138; ReceivedMessages=7138"
    let line = text.lines().find(|l| l.contains("[Valid Duration]")).with_context(|| format!("sockperf output:\n{text}"))?;
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
    };
    match (field("RunTime="), field("ReceivedMessages=")) {
        (Some(t), Some(n)) if t > 0.0 => Ok(n / t),
        _ => bail!("sockperf: cannot parse {line:?}"),
    }
}

/// Kernel bpf_stats of the programs attached to the bench cgroup (the agent holds them through
/// links, not fds, so `pids` cannot find them): (run_time_ns, run_cnt) for the per-packet
/// cgroup_skb programs and for sock_ops.
#[derive(Debug, Clone, Copy, Default)]
struct ProgStats {
    skb: (u64, u64),
    sockops: (u64, u64),
}

fn prog_stats(cgroup: &Path) -> Result<ProgStats> {
    let attached = capture(Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(cgroup))?;
    let attached: Vec<Value> = if attached.trim().is_empty() { Vec::new() } else { serde_json::from_str(&attached).context("bpftool cgroup JSON")? };
    let ids: Vec<u64> = attached.iter().filter_map(|p| p["id"].as_u64()).collect();
    let out = capture(Command::new("bpftool").args(["-j", "prog", "show"]))?;
    let progs: Vec<Value> = serde_json::from_str(&out).context("bpftool JSON")?;
    let mut s = ProgStats::default();
    for p in progs.iter().filter(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id))) {
        let cell = if p["type"] == "sock_ops" { &mut s.sockops } else { &mut s.skb };
        cell.0 += p["run_time_ns"].as_u64().unwrap_or(0);
        cell.1 += p["run_cnt"].as_u64().unwrap_or(0);
    }
    Ok(s)
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// A topology with `n` subnets: the bench's loopback traffic falls in a real subnet of another
/// AZ (so the counted path is the full one), the rest pad the tries.
fn topology_with(n: u32) -> String {
    let mut s = String::from("[host]\nregion = \"us-east-1\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\n");
    s.push_str("[[subnet]]\ncidr = \"127.0.0.0/24\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\nname = \"bench-target\"\n\n");
    for i in 1..n {
        let (a, b, c) = ((i >> 12) & 0xff, (i >> 4) & 0xff, (i & 0xf) << 4);
        let (zone, id) = [("us-east-1a", "use1-az1"), ("us-east-1b", "use1-az2"), ("us-east-1c", "use1-az3")][(i % 3) as usize];
        let _ = writeln!(s, "[[subnet]]\ncidr = \"10.{a}.{b}.{c}/28\"\nzone = \"{zone}\"\nzone_id = \"{id}\"\n");
    }
    s
}

fn report(samples: &BTreeMap<Arm, Vec<Sample>>, args: &BenchArgs) -> Result<()> {
    let sum = |arm: Arm, f: &dyn Fn(&Sample) -> Option<f64>| Summary::of(samples.get(&arm).map(|v| v.iter().filter_map(f).collect::<Vec<_>>()).unwrap_or_default());
    // Ratios per repetition (each arm against no_agent of the same repetition), then summarised:
    // > 1 is faster with the arm than without; for CPU per packet the ratio is base / arm, so
    // below 1 means the arm costs CPU.
    let ratio = |arm: Arm, f: &dyn Fn(&Sample) -> f64, inverse: bool| {
        let (a, b) = (samples.get(&arm)?, samples.get(&Arm::NoAgent)?);
        Summary::of(a.iter().zip(b).map(|(x, base)| if inverse { f(base) / f(x) } else { f(x) / f(base) }))
    };
    let mut arms = serde_json::Map::new();
    let mut md = String::from("| arm | ns/packet (BPF program) | ns/sock_ops callback | request/response ratio | per-packet stress ratio (CPU/packet) | stress CPU ns/packet | bulk ratio | RSS MiB | agent CPU % |\n|---|---|---|---|---|---|---|---|---|\n");
    let cell = |s: Option<Summary>, p: usize| s.map_or("–".to_string(), |s| s.cell(p));
    let js = |s: Option<Summary>| s.map_or(Value::Null, |s| s.json());
    for arm in Arm::ALL.into_iter().filter(|a| samples.contains_key(a)) {
        let ns = sum(arm, &|s| s.ns_per_run);
        let sockops = sum(arm, &|s| s.sockops_ns);
        let rr = ratio(arm, &|s| s.rr_msgs_per_s, false);
        let stress = ratio(arm, &|s| s.stress_cpu_ns, true);
        let stress_ns = sum(arm, &|s| Some(s.stress_cpu_ns));
        let bulk = ratio(arm, &|s| s.bulk_gbps, false);
        let rss = sum(arm, &|s| s.rss_mib);
        let cpu = sum(arm, &|s| s.cpu_percent);
        arms.insert(arm.name().into(), json!({
            "ns_per_packet": js(ns), "ns_per_sockops_callback": js(sockops),
            "rr_msgs_per_s": js(sum(arm, &|s| Some(s.rr_msgs_per_s))), "rr_ratio": js(rr),
            "stress_cpu_ns_per_packet": js(stress_ns), "stress_ratio": js(stress),
            "bulk_gbps": js(sum(arm, &|s| Some(s.bulk_gbps))), "bulk_ratio": js(bulk),
            "rss_mib": js(rss), "cpu_percent": js(cpu),
        }));
        let _ = writeln!(md, "| {} | {} | {} | {} | {} | {} | {} | {} | {} |", arm.name(), cell(ns, 1), cell(sockops, 1), cell(rr, 3), cell(stress, 3), cell(stress_ns, 0), cell(bulk, 3), cell(rss, 1), cell(cpu, 1));
    }
    md.push_str("\nEach cell: median (min–max, coefficient of variation) over the repetitions. Targets: ≤ 60 ns per packet; ≤ 80 ns per sock_ops callback; request/response ≥ 0.95× and per-packet stress ≥ 0.95× of no agent with bytes and RTT on; RSS ≤ 32 MiB.\n");
    let _ = writeln!(md, "Reps: {}, {} s per measurement; ratios are per repetition against `no_agent` of the same repetition; ns/packet is kernel bpf_stats (run_time_ns / run_cnt) of the programs (cgroup_skb for azflow, the tracepoint program for the peer); stress is CPU time of both CPUs per loopback packet at a fixed {STRESS_RATE}bit/s with sender and receiver pinned.", args.reps, args.seconds);
    let doc = json!({ "reps": args.reps, "seconds": args.seconds, "stress_rate": STRESS_RATE, "arms": arms });
    std::fs::write(args.out.join("bench.json"), serde_json::to_string_pretty(&doc)?)?;
    std::fs::write(args.out.join("bench.md"), &md)?;
    println!("{md}");
    println!("wrote {} and {}", args.out.join("bench.json").display(), args.out.join("bench.md").display());
    Ok(())
}
