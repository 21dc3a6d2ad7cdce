//! A host of the bed: a network namespace with one interface, `eth0`, in one zone's subnet.

use std::{
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    addressing::{Family, Zone},
    cgroup,
    counters::{IfCounters, TcpCounters},
    netns, process,
};

/// The name of every host's interface.
pub const HOST_IFACE: &str = "eth0";

/// One host of a [`crate::TestBed`]. Cheap to clone; it does not own the namespace (the bed does).
#[derive(Debug, Clone)]
pub struct Host {
    pub(crate) name: String,
    pub(crate) netns: String,
    pub(crate) zone: Zone,
    pub(crate) index: u8,
    /// The bed's cgroup if this is the monitored host.
    pub(crate) cgroup: Option<PathBuf>,
    pub(crate) traffic_bin: PathBuf,
    pub(crate) timeout: Duration,
}

impl Host {
    /// The short name given to the bed, e.g. `a1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (for `ip netns exec`, `ip -n`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The host's interface (always `eth0`).
    pub fn interface(&self) -> &'static str {
        HOST_IFACE
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.zone.host_v4(self.index)
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        self.zone.host_v6(self.index)
    }

    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.ipv4().into(),
            Family::V6 => self.ipv6().into(),
        }
    }

    pub fn subnet_v4(&self) -> Ipv4Net {
        self.zone.subnet_v4()
    }

    pub fn subnet_v6(&self) -> Ipv6Net {
        self.zone.subnet_v6()
    }

    /// The default gateway (the router's address in this host's subnet).
    pub fn gateway(&self, family: Family) -> IpAddr {
        self.zone.router(family)
    }

    /// MAC address of the host's `eth0`.
    pub fn mac(&self) -> String {
        format!(
            "02:af:{:02x}:{:02x}:00:02",
            self.zone.number(),
            0x10 + self.index
        )
    }

    /// The router-namespace end of the host's veth pair (a port of the zone's bridge).
    pub fn router_port(&self) -> String {
        format!("v-{}", self.name)
    }

    pub(crate) fn router_port_mac(&self) -> String {
        format!(
            "02:af:{:02x}:{:02x}:00:03",
            self.zone.number(),
            0x10 + self.index
        )
    }

    /// Whether this is the monitored host, whose commands run in the bed's cgroup.
    pub fn is_monitored(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The bed's cgroup, for the monitored host.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// The default bound on commands the bed runs for this host (traffic runs, [`Host::run`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A command that runs `program` inside this host's namespace (`ip netns exec`, which also
    /// gives it a matching /sys), and, for the monitored host, inside the bed's cgroup (joined
    /// between fork and exec, so all its children are in it too).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = netns::exec_command(&self.netns, program);
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = cgroup::join_on_spawn(&mut cmd, cgroup)
        {
            panic!(
                "host {} cannot run commands in its cgroup (was the bed dropped?): {e:#}",
                self.name
            );
        }
        cmd
    }

    /// Runs `program args…` in the host to completion (bounded by [`Host::timeout`]) and returns
    /// its stdout; fails with the command line and stderr unless it exits 0.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        let done =
            process::run(cmd, self.timeout).with_context(|| format!("in host {}", self.name))?;
        Ok(done.stdout)
    }

    /// Counters of the host's `eth0`, read from the kernel (/proc/net/dev of its namespace).
    pub fn link_counters(&self) -> Result<IfCounters> {
        netns::if_counters(&self.netns, HOST_IFACE)
            .with_context(|| format!("reading counters of {HOST_IFACE} in host {}", self.name))
    }

    /// The host's TCP segment counters (all connections of its namespace), e.g. to see how many
    /// retransmissions a transfer needed.
    pub fn tcp_counters(&self) -> Result<TcpCounters> {
        netns::tcp_counters(&self.netns)
            .with_context(|| format!("reading TCP counters in host {}", self.name))
    }
}
