//! `cargo xtask demo`: the three-AZ test bed, traffic between its hosts, and the agent on the
//! monitored host showing its live table.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use azflow_tests::{Family, TestBed};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long the traffic runs.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Where the agent serves Prometheus meanwhile.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub prometheus: String,
}

pub fn demo(args: &DemoArgs, agent: &Path, traffic: &Path) -> Result<()> {
    if azflow_tests::require_root_or_skip().is_none() {
        bail!("the demo builds network namespaces and loads eBPF: run it as root");
    }
    let bed = TestBed::builder().traffic_binary(traffic).build().context("building the test bed")?;
    let topology = std::env::temp_dir().join(format!("{}-topology.toml", bed.id()));
    std::fs::write(&topology, bed.topology_toml())?;
    println!("demo: test bed {} ready; topology {}", bed.id(), topology.display());
    let mut child = Command::new(agent)
        .arg("run")
        .arg("--cgroup")
        .arg(bed.cgroup_path())
        .arg("--topology")
        .arg(&topology)
        // The demo's topology is the bed's file: no IMDS probe from a test machine.
        .args(["--console", "always", "--drain-interval", "1s", "--prometheus", &args.prometheus, "--aws", "off"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", agent.display()))?;
    std::thread::sleep(Duration::from_secs(1));

    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut round = 0u64;
    let result = (|| -> Result<()> {
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            if let Some(status) = child.try_wait()? {
                bail!("the agent exited early: {status}");
            }
            let family = if round.is_multiple_of(2) { Family::V4 } else { Family::V6 };
            bed.run_bulk("a1", "b1", 20_000_000, family)?; // cross-AZ bulk
            bed.run_rr("a1", "c1", 2_000, 200, family)?; // cross-AZ chatter
            bed.run_bulk("a1", "a2", 5_000_000, family)?; // same AZ
            bed.run_bulk("a1", "x1", 1_000_000, family)?; // a subnet the topology misses
            round += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    })();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait()?;
    result?;
    println!("\ndemo: {round} rounds of traffic; agent exited with {status}");
    drop(bed);
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
