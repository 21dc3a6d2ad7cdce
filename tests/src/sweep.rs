//! Removing beds left behind by crashed runs, without touching beds of running tests.

use std::{fs, io::ErrorKind, path::PathBuf, time::Duration};

use anyhow::{Context, Result};

use crate::{
    cgroup,
    names::{BedId, PREFIX},
    netns,
};

/// What [`sweep_stale_beds`] did.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    /// Network namespaces of beds whose owner is gone, now deleted (by this sweep, or by a
    /// concurrent one in another test).
    pub removed_netns: Vec<String>,
    /// Cgroup directories of such beds, now removed (likewise).
    pub removed_cgroups: Vec<PathBuf>,
    /// Names of beds whose owning process still runs (left alone).
    pub live: Vec<String>,
    /// Names with the bed prefix that are not bed names (left alone).
    pub unrecognized: Vec<String>,
    /// Removals that failed.
    pub errors: Vec<String>,
}

impl SweepReport {
    pub fn removed_anything(&self) -> bool {
        !self.removed_netns.is_empty() || !self.removed_cgroups.is_empty()
    }
}

/// Removes every network namespace and cgroup directory named `azft-<pid>-<start>-…` whose
/// owner (that pid with that start time) no longer runs, killing processes left in them first.
/// Beds of live processes, this one included, are never touched, so tests running concurrently
/// in other threads or processes may call this at any time (also several at once).
pub fn sweep_stale_beds() -> Result<SweepReport> {
    let mut report = SweepReport::default();
    for name in netns::list()? {
        if !name.starts_with(PREFIX) {
            continue;
        }
        match stale(&name)? {
            Some(true) => {
                let result = netns::kill_all(&name).and_then(|_| netns::delete(&name));
                match result {
                    Ok(()) => report.removed_netns.push(name),
                    // Another sweeper (a concurrent test) got there first.
                    Err(_) if !netns::path(&name).exists() => report.removed_netns.push(name),
                    Err(e) => report.errors.push(format!("netns {name}: {e:#}")),
                }
            }
            Some(false) => report.live.push(name),
            None => report.unrecognized.push(name),
        }
    }
    let root = cgroup::cgroup2_root()?;
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || !entry.path().is_dir() {
            continue;
        }
        match stale(&name)? {
            Some(true) => match cgroup::remove(&entry.path(), Duration::from_secs(10)) {
                Ok(()) => report.removed_cgroups.push(entry.path()),
                Err(e) => report.errors.push(format!("{e:#}")),
            },
            Some(false) => report.live.push(name),
            None => report.unrecognized.push(name),
        }
    }
    Ok(report)
}

/// Some(true) if `name` belongs to a bed whose owner is gone, Some(false) if the owner runs,
/// None if it is not a bed name.
fn stale(name: &str) -> Result<Option<bool>> {
    let Some((id, _)) = BedId::parse(name) else {
        return Ok(None);
    };
    Ok(Some(!id.owner_alive()?))
}
