//! Network-namespace test bed for azflow's integration tests.
//!
//! A [`TestBed`] is a router namespace with one bridge per subnet and one namespace per host:
//! zones `a`, `b`, `c` (availability zones) and `x` (a VPC subnet to leave out of the topology),
//! dual stack (see [`addressing`]). The router's ports have TSO/GSO off and the hosts' GRO off,
//! so a receiving host's interface counters are the wire truth ([`IfCounters::l3_rx_bytes`]).
//! The monitored host (`a1` by default) runs its commands in the bed's own cgroup v2 directory
//! ([`TestBed::cgroup_path`]), where an agent attaches. Everything is removed on drop.
//!
//! ```no_run
//! use azflow_tests::{Family, TestBed};
//!
//! let Some(bed) = TestBed::new_or_skip() else { return Ok(()) };
//! let before = bed.host("b1").link_counters()?;
//! let run = bed.run_bulk("a1", "b1", 50 << 20, Family::V4)?;
//! let wire = bed.host("b1").link_counters()? - before;
//! println!("{} payload bytes took {} L3 bytes", run.client.payload_bytes, wire.l3_rx_bytes());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Traffic comes from the `azflow-traffic` binary of this package ([`tool`]), which each host
//! runs; [`protocol`] describes what it sends and prints.

pub mod addressing;
mod bed;
pub mod cgroup;
pub mod counters;
mod delay;
mod host;
pub mod names;
pub mod netns;
pub mod process;
pub mod protocol;
mod skip;
mod sweep;
pub mod tool;
mod tools;
mod topology;
mod traffic;

pub use addressing::{Family, Zone};
pub use bed::{DEFAULT_HOSTS, DEFAULT_MONITORED, TestBed, TestBedBuilder};
pub use counters::{ETHERNET_HEADER_LEN, IfCounters, TcpCounters};
pub use host::{HOST_IFACE, Host};
pub use skip::{Privileged, REQUIRE_ENV, check_environment, require_root_or_skip};
pub use sweep::{SweepReport, sweep_stale_beds};
pub use delay::{DELAYLINE_BIN_ENV, DelayLine, DelayStats, locate_delayline};
pub use tools::{find_tool, pyenv_bin};
pub use topology::zone_labels;
pub use traffic::{BulkRun, RrRun, TRAFFIC_BIN_ENV, TrafficServer, UdpRun, locate_binary};

/// MTU of every link in the bed.
pub const LINK_MTU: u64 = 1500;
