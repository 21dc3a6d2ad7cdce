//! A per-AZ-pair delay line in the router namespace (the kernel here has no netem): traffic
//! between the configured zones is policy-routed through a TUN device into
//! `azflow-delayline`, which writes it back after the one-way delay. Removed on drop.

use std::{
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{Family, TestBed, Zone, process::Proc};

pub const DELAYLINE_BIN_ENV: &str = "AZFLOW_DELAYLINE_BIN";
const TUN: &str = "dl0";
const TABLE: &str = "100";

/// Finds `azflow-delayline`: `$AZFLOW_DELAYLINE_BIN`, else beside the running executable or one
/// directory up (as for `azflow-traffic`).
pub fn locate_delayline() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(DELAYLINE_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("azflow-delayline"))
        .find(|p| p.is_file())
        .context("azflow-delayline not found; build it with `cargo build -p azflow-tests --bins` or set AZFLOW_DELAYLINE_BIN")
}

/// A running delay line; statistics are read when it stops.
pub struct DelayLine<'a> {
    bed: &'a TestBed,
    proc: Option<Proc>,
}

/// What the delay line reports when it stops.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DelayStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub delayed: u64,
    pub late_mean_us: f64,
    pub late_max_us: f64,
}

impl TestBed {
    /// Routes traffic between each listed pair of zones (both directions, v4 and v6) through a
    /// delay line that holds every packet for the pair's one-way delay. Traffic between zones
    /// not listed is not touched.
    pub fn delay_line(&self, pairs: &[(Zone, Zone, Duration)]) -> Result<DelayLine<'_>> {
        let ip = |args: &str| -> Result<()> {
            let out = self.router_command("ip").args(args.split_whitespace()).output().context("running ip")?;
            ensure!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        };
        ip(&format!("tuntap add dev {TUN} mode tun"))?;
        ip(&format!("link set {TUN} up"))?;
        for key in [format!("net.ipv4.conf.{TUN}.rp_filter=0"), "net.ipv4.conf.all.rp_filter=0".into(), format!("net.ipv6.conf.{TUN}.forwarding=1")] {
            let out = self.router_command("sysctl").args(["-q", "-w", &key]).output().context("sysctl")?;
            ensure!(out.status.success(), "sysctl {key}: {}", String::from_utf8_lossy(&out.stderr));
        }
        ip(&format!("route add default dev {TUN} table {TABLE}"))?;
        ip(&format!("-6 route add default dev {TUN} table {TABLE}"))?;
        let mut cmd: Command = self.router_command(locate_delayline()?);
        cmd.args(["--tun", TUN]);
        for &(x, y, delay) in pairs {
            for (from, to) in [(x, y), (y, x)] {
                for family in [Family::V4, Family::V6] {
                    let (src, dst) = (from.subnet(family), to.subnet(family));
                    let v6 = if family == Family::V6 { "-6 " } else { "" };
                    ip(&format!("{v6}rule add iif {} to {dst} table {TABLE} priority 100", from.bridge()))?;
                    cmd.args(["--rule", &src.to_string(), &dst.to_string(), &delay.as_micros().to_string()]);
                }
            }
        }
        let mut proc = Proc::spawn(cmd, None)?;
        let ready = proc.next_line(Duration::from_secs(10))?;
        if !ready.contains("\"ready\":true") {
            bail!("azflow-delayline did not start: {ready}");
        }
        Ok(DelayLine { bed: self, proc: Some(proc) })
    }
}

impl DelayLine<'_> {
    /// Stops the delay line (traffic between the pairs then has no route through it) and
    /// returns its statistics.
    pub fn stop(mut self) -> Result<DelayStats> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<DelayStats> {
        let proc = self.proc.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(proc.pid() as i32, libc::SIGTERM) };
        let done = proc.wait(Duration::from_secs(5))?;
        let _ = self.bed.router_command("ip").args(["link", "del", TUN]).output();
        let line = done.last_line().context("azflow-delayline printed no statistics")?;
        serde_json::from_str(line).with_context(|| format!("azflow-delayline statistics: {line}"))
    }
}

impl Drop for DelayLine<'_> {
    fn drop(&mut self) {
        if self.proc.is_some() {
            let _ = self.stop_inner();
        }
    }
}
