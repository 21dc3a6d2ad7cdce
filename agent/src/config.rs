//! Command line and its single validation pass. Nothing here touches the system.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "azflow", version, about = "Which TCP bytes cross Availability Zones, measured in the kernel")]
pub struct Cli {
    /// Log lines as human text or as one JSON object per line: "text" or "json".
    #[arg(long, global = true, env = "AZFLOW_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a cgroup, count, and serve the results (console table and Prometheus).
    Run(Box<RunArgs>),
    /// Print the resolved subnet → AZ table and this host's identity, then exit.
    Topology(TopologyArgs),
    /// Live view of a running agent's workloads (cross-AZ bytes/s, $/day, affinity, RTT per AZ),
    /// read from its Prometheus endpoint.
    Top(crate::commands::top::TopArgs),
    /// Check that IMDS, AWS credentials and ec2:DescribeSubnets work; one line each, with a fix.
    Check(CheckArgs),
    /// Remove every pinned map and link (detaching the programs) left by `run --pin`.
    Uninstall {
        /// Where `run --pin` pinned them.
        #[arg(long, env = "AZFLOW_PIN_PATH", default_value = crate::ebpf::pin::DEFAULT_ROOT)]
        pin_path: PathBuf,
    },
    /// Benchmark baseline: attach a cgroup_skb program that does nothing, until SIGINT/SIGTERM.
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long)]
        cgroup: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Static topology file (TOML); without it the host's own interface subnets form its AZ.
    #[arg(long, env = "AZFLOW_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Price table (TOML) over the built-in us-east-1 prices; see examples/prices.toml.
    #[arg(long, env = "AZFLOW_PRICES")]
    pub prices: Option<PathBuf>,
    #[command(flatten)]
    pub aws: crate::topology::aws::AwsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub aws: crate::topology::aws::AwsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// cgroup v2 directory to attach to (default: the root of the cgroup v2 hierarchy).
    #[arg(long, env = "AZFLOW_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// Static topology file (TOML); without it the host's own interface subnets form its AZ.
    #[arg(long, env = "AZFLOW_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Price table (TOML) over the built-in us-east-1 prices; see examples/prices.toml.
    #[arg(long, env = "AZFLOW_PRICES")]
    pub prices: Option<PathBuf>,
    /// Prometheus listen address, or "off".
    #[arg(long, env = "AZFLOW_PROMETHEUS", default_value = "127.0.0.1:9464")]
    pub prometheus: String,
    /// Classic histogram boundaries (`le`) in seconds, comma-separated, each snapped to the
    /// nearest kernel bucket boundary so counts stay exact; "all" for every kernel boundary.
    /// Native histograms (protobuf scrapes) always carry every bucket.
    #[arg(long, env = "AZFLOW_PROMETHEUS_BUCKETS", default_value = crate::export::classic_buckets::DEFAULT)]
    pub prometheus_buckets: String,
    /// How often the kernel counters are drained, e.g. "5s" or "500ms".
    #[arg(long, env = "AZFLOW_DRAIN_INTERVAL", default_value = "5s")]
    pub drain_interval: String,
    /// Most subnets the kernel table holds (sizes the maps).
    #[arg(long, env = "AZFLOW_MAX_SUBNETS", default_value_t = 4096)]
    pub max_subnets: u32,
    /// Distinct unmapped /24 (v4) or /48 (v6) destinations remembered in the kernel.
    #[arg(long, env = "AZFLOW_UNMAPPED_ENTRIES", default_value_t = 1024)]
    pub unmapped_entries: u32,
    /// Unmapped destinations exported as series (the busiest first).
    #[arg(long, env = "AZFLOW_UNMAPPED_TOP", default_value_t = 10)]
    pub unmapped_top: usize,
    /// At most one RTT sample per socket per this interval ("0" takes every sample).
    #[arg(long, env = "AZFLOW_RTT_SAMPLE_INTERVAL", default_value = "10ms")]
    pub rtt_sample_interval: String,
    /// Per-destination-subnet byte series (Prometheus `dst_subnet`, OTLP `dst.subnet`), the first
    /// N subnets seen; the rest are summed as "other". 0 turns them off.
    #[arg(long = "dst-subnet-series", env = "AZFLOW_DST_SUBNET_SERIES", default_value_t = 0)]
    pub subnet_series: usize,
    /// Pin maps and links under --pin-path so a restarted agent continues counting (zero gap).
    #[arg(long, env = "AZFLOW_PIN")]
    pub pin: bool,
    /// BPF filesystem directory for --pin (a v<SCHEMA> subdirectory is used).
    #[arg(long, env = "AZFLOW_PIN_PATH", default_value = crate::ebpf::pin::DEFAULT_ROOT)]
    pub pin_path: PathBuf,
    /// See through NAT on this node (Kubernetes Service VIPs, DNAT): "auto" follows the node's
    /// conntrack and counts a connection under its real remote end; "off" counts the address the
    /// socket dialed. Needs CAP_NET_ADMIN.
    #[arg(long, env = "AZFLOW_NAT", value_enum, default_value_t = NatMode::Auto)]
    pub nat: NatMode,
    /// Read conntrack from this network namespace (a path such as /run/netns/node) instead of
    /// the agent's own: for an agent that does not run in the node's network namespace.
    #[arg(long, env = "AZFLOW_NAT_NETNS")]
    pub nat_netns: Option<PathBuf>,
    /// Connections whose NAT mapping the kernel remembers (an LRU).
    #[arg(long, env = "AZFLOW_NAT_MAX_CONNECTIONS", default_value_t = 65536)]
    pub nat_max_connections: u32,
    /// Connections whose bytes can be held at once while their real remote end is unknown; a
    /// connection beyond it is counted under the address it dialed (and as unresolved).
    #[arg(long, env = "AZFLOW_NAT_MAX_PENDING", default_value_t = 16384)]
    pub nat_max_pending: u32,
    /// How long a connection's bytes wait for its NAT mapping before they are counted under the
    /// address it dialed, as unresolved.
    #[arg(long, env = "AZFLOW_NAT_PENDING_TIMEOUT", default_value = "10s")]
    pub nat_pending_timeout: String,
    /// Live console table: auto shows it when stdout is a terminal.
    #[arg(long, value_enum, default_value_t = ConsoleMode::Auto)]
    pub console: ConsoleMode,
    #[command(flatten)]
    pub aws: crate::topology::aws::AwsArgs,
    #[command(flatten)]
    pub otlp: Box<crate::export::otlp::OtlpArgs>,
    #[command(flatten)]
    pub workloads: crate::workloads::WorkloadArgs,
    /// Workloads exported with series of their own, busiest first; the rest are summed as
    /// workload="other" (the kernel counts up to --max-workloads).
    #[arg(long, env = "AZFLOW_WORKLOAD_SERIES", default_value_t = 200)]
    pub workload_series: usize,
    /// RTT histograms per workload and destination zone: "cross-az" (destinations of class
    /// cross_az), "all" destinations, or "off". Sizes a kernel map of (--max-workloads + 2) × 37
    /// histograms of 424 bytes (3.0 MiB at the default), shared by all CPUs.
    #[arg(long, env = "AZFLOW_WORKLOAD_RTT", value_enum, default_value_t = WorkloadRttMode::CrossAz)]
    pub workload_rtt: WorkloadRttMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadRttMode {
    CrossAz,
    All,
    Off,
}

impl WorkloadRttMode {
    pub const fn kernel(self) -> agent_common::workload_rtt::Mode {
        use agent_common::workload_rtt::Mode;
        match self {
            Self::CrossAz => Mode::CrossAz,
            Self::All => Mode::All,
            Self::Off => Mode::Off,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NatMode {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleMode {
    Auto,
    Always,
    Never,
}

/// Validated settings of `azflow run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub aws: crate::topology::aws::AwsSettings,
    pub cgroup: Option<PathBuf>,
    pub topology: Option<PathBuf>,
    /// Price table file; read (and checked) before anything is attached.
    pub prices: Option<PathBuf>,
    pub prometheus: Option<SocketAddr>,
    pub prometheus_buckets: crate::export::classic_buckets::ClassicBuckets,
    pub drain_interval: Duration,
    pub limits: Limits,
    pub unmapped_top: usize,
    pub console: ConsoleMode,
    pub rtt_sample_interval: Duration,
    /// Pin directory root when `--pin` is on.
    pub pin: Option<PathBuf>,
    /// Per-destination-subnet series cap (0: off).
    pub subnet_series: usize,
    /// `None`: no OTLP export.
    pub otlp: Option<crate::export::otlp::OtlpConfig>,
    pub nat: NatMode,
    pub nat_pending_timeout: Duration,
    pub nat_netns: Option<PathBuf>,
    pub workloads: crate::workloads::WorkloadsConfig,
    /// Workloads exported with series of their own (busiest first); the rest sum as `other`.
    pub workload_series: usize,
}

/// What sizes the kernel maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_subnets: u32,
    pub unmapped_entries: u32,
    pub nat_entries: u32,
    pub nat_pending: u32,
    /// Workload indices with kernel counters: `--max-workloads` + host + other.
    pub workload_indices: u32,
    /// Live cgroups the kernel maps to a workload index.
    pub workload_cgroups: u32,
    /// Which destination rows get per-workload RTT histograms (sizes their map).
    pub workload_rtt: agent_common::workload_rtt::Mode,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}{flag}: {problem}; {fix}", dashes(.flag))]
pub struct ConfigError {
    /// A flag without its dashes, or an environment variable (OTEL_…) as it is.
    pub flag: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

/// Flags are written `--name`, environment variables as they are.
fn dashes(flag: &str) -> &'static str {
    if flag.starts_with(|c: char| c.is_ascii_uppercase()) { "" } else { "--" }
}

pub const MAX_SUBNETS_LIMIT: u32 = 1 << 20;
pub const UNMAPPED_LIMIT: u32 = 1 << 20;

impl RunArgs {
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        let prometheus = match self.prometheus.as_str() {
            "off" | "" => None,
            s => Some(s.parse().map_err(|e| ConfigError {
                flag: "prometheus",
                problem: format!("{s:?} is not a socket address ({e})"),
                fix: "write HOST:PORT, e.g. 127.0.0.1:9464 or [::]:9464, or \"off\"",
            })?),
        };
        let prometheus_buckets = crate::export::classic_buckets::ClassicBuckets::parse(&self.prometheus_buckets)
            .map_err(|problem| ConfigError {
                flag: "prometheus-buckets",
                problem,
                fix: "write up to 64 boundaries in seconds between 0.000001 and 30, e.g. 0.0001,0.001,0.01, or \"all\"",
            })?;
        let drain_interval = parse_duration(&self.drain_interval).ok_or_else(|| ConfigError {
            flag: "drain-interval",
            problem: format!("{:?} is not a duration", self.drain_interval),
            fix: "write a number with a unit, e.g. 5s, 500ms or 1m",
        })?;
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&drain_interval) {
            return Err(ConfigError {
                flag: "drain-interval",
                problem: format!("{drain_interval:?} is out of range"),
                fix: "choose between 100ms and 1h",
            });
        }
        check_range("max-subnets", self.max_subnets, MAX_SUBNETS_LIMIT)?;
        check_range("unmapped-entries", self.unmapped_entries, UNMAPPED_LIMIT)?;
        check_range("nat-max-connections", self.nat_max_connections, UNMAPPED_LIMIT)?;
        check_range("nat-max-pending", self.nat_max_pending, UNMAPPED_LIMIT)?;
        let nat_pending_timeout = parse_duration(&self.nat_pending_timeout)
            .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(600)).contains(d))
            .ok_or_else(|| ConfigError {
                flag: "nat-pending-timeout",
                problem: format!("{:?} is not a duration between 100ms and 10m", self.nat_pending_timeout),
                fix: "write e.g. 10s or 2s",
            })?;
        if self.unmapped_top > 1000 {
            return Err(ConfigError {
                flag: "unmapped-top",
                problem: format!("{} series is too many", self.unmapped_top),
                fix: "choose at most 1000 (each is a Prometheus series)",
            });
        }
        if self.subnet_series > 10_000 {
            return Err(ConfigError {
                flag: "dst-subnet-series",
                problem: format!("{} series is too many", self.subnet_series),
                fix: "choose at most 10000 (each is a series per direction)",
            });
        }
        let rtt_sample_interval = parse_duration(&self.rtt_sample_interval)
            .filter(|d| *d <= Duration::from_secs(60))
            .ok_or_else(|| ConfigError {
                flag: "rtt-sample-interval",
                problem: format!("{:?} is not a duration up to 60s", self.rtt_sample_interval),
                fix: "write e.g. 10ms, 1s, or 0 for every sample",
            })?;
        let otlp = self.otlp.validate(&|name| std::env::var(name).ok()).map_err(|e| match e {
            crate::export::otlp::OtlpError::Config { setting, problem, fix } => ConfigError { flag: setting, problem, fix },
            other => ConfigError { flag: "otlp-endpoint", problem: other.to_string(), fix: "check the OTLP settings" },
        })?;
        let aws = self.aws.validate().map_err(|e| ConfigError { flag: e.flag, problem: e.problem, fix: e.fix })?;
        let workloads = self.workloads.validate()?;
        if self.workload_series == 0 || self.workload_series > 10_000 {
            return Err(ConfigError {
                flag: "workload-series",
                problem: format!("{} is out of range", self.workload_series),
                fix: "choose between 1 and 10000 (workloads beyond it are summed as \"other\")",
            });
        }
        Ok(RunConfig {
            aws,
            cgroup: self.cgroup.clone(),
            topology: self.topology.clone(),
            prices: self.prices.clone(),
            prometheus,
            prometheus_buckets,
            drain_interval,
            limits: Limits {
                max_subnets: self.max_subnets,
                unmapped_entries: self.unmapped_entries,
                nat_entries: self.nat_max_connections,
                nat_pending: self.nat_max_pending,
                workload_indices: u32::from(workloads.registry.max_workloads) + u32::from(crate::workloads::FIRST_WORKLOAD_INDEX),
                workload_cgroups: workloads.max_cgroups,
                workload_rtt: self.workload_rtt.kernel(),
            },
            workloads,
            workload_series: self.workload_series,
            unmapped_top: self.unmapped_top,
            console: self.console,
            rtt_sample_interval,
            pin: self.pin.then(|| self.pin_path.clone()),
            subnet_series: self.subnet_series,
            otlp,
            nat: self.nat,
            nat_pending_timeout,
            nat_netns: self.nat_netns.clone(),
        })
    }
}

fn check_range(flag: &'static str, v: u32, max: u32) -> Result<(), ConfigError> {
    if v == 0 || v > max {
        return Err(ConfigError {
            flag,
            problem: format!("{v} is out of range"),
            fix: "choose between 1 and 1048576",
        });
    }
    Ok(())
}

/// "5s", "500ms", "2m", "1h"; a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["azflow", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(a) => *a,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing argument ids (flattened groups) before a user does.
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn defaults_validate() {
        let c = args(&[]).validate().expect("defaults are valid");
        assert_eq!(c.prometheus, Some("127.0.0.1:9464".parse().expect("addr")));
        assert_eq!(c.drain_interval, Duration::from_secs(5));
        assert_eq!(c.limits.max_subnets, 4096);
        assert_eq!(c.prometheus_buckets, crate::export::classic_buckets::ClassicBuckets::default());
        assert_eq!(c.limits.workload_rtt, agent_common::workload_rtt::Mode::CrossAz);
        let all = args(&["--workload-rtt", "all"]).validate().expect("all");
        assert_eq!(all.limits.workload_rtt, agent_common::workload_rtt::Mode::All);
        assert_eq!(args(&["--workload-rtt", "off"]).validate().expect("off").limits.workload_rtt, agent_common::workload_rtt::Mode::Off);
        let bad = Cli::try_parse_from(["azflow", "run", "--workload-rtt", "same-az"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad.contains("--workload-rtt"), "{bad}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = args(&["--prometheus", "nope"]).validate().expect_err("bad addr");
        assert_eq!(e.flag, "prometheus");
        let e = args(&["--drain-interval", "5 parsecs"]).validate().expect_err("bad unit");
        assert_eq!(e.flag, "drain-interval");
        let e = args(&["--drain-interval", "1ms"]).validate().expect_err("too fast");
        assert_eq!(e.flag, "drain-interval");
        let e = args(&["--max-subnets", "0"]).validate().expect_err("zero");
        assert!(e.to_string().starts_with("--max-subnets: 0 is out of range"), "{e}");
        assert_eq!(args(&["--prometheus", "off"]).validate().expect("off").prometheus, None);
        let e = args(&["--nat-pending-timeout", "1ms"]).validate().expect_err("too short");
        assert!(e.to_string().starts_with("--nat-pending-timeout: "), "{e}");
        let e = args(&["--prometheus-buckets", "0.001,1ms"]).validate().expect_err("unit");
        assert_eq!(e.to_string(), "--prometheus-buckets: \"1ms\" is not a number of seconds; write up to 64 boundaries in seconds between 0.000001 and 30, e.g. 0.0001,0.001,0.01, or \"all\"");
        assert_eq!(args(&["--prometheus-buckets", "all"]).validate().expect("all").prometheus_buckets, crate::export::classic_buckets::ClassicBuckets::all());
        let e = args(&["--nat-max-pending", "0"]).validate().expect_err("zero");
        assert_eq!(e.flag, "nat-max-pending");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
