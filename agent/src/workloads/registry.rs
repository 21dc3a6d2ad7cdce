//! cgroup id → small workload index, for the kernel's per-workload counters.
//!
//! Index 0 is `host` (the host's own processes), 1 is `other` (everything beyond the cap), and
//! 2.. are workloads, one index per identity — (kind, namespace, name), finer with
//! [`Granularity`] — so every cgroup of a workload (all containers of all pods of a Deployment)
//! shares one index and one set of counters.
//!
//! Each [`WorkloadRegistry::refresh`] takes a walk of the tree and returns an [`Update`]: the
//! (cgroup id → index) pairs to write into the kernel's hash map and the ids to delete. An index
//! whose workload has had no cgroup for `reuse_after` is released and may go to a new workload;
//! until then a returning workload (a restarted pod of the same Deployment) gets its index back.
//! Apply an update in its field order: fold the `released` indices' counters into the export
//! (a workload that exits keeps its final counts), delete `remove`, then write `upsert`.
//!
//! When every index is taken, a new workload's cgroups map to `other` and are counted; they are
//! offered an index again on each refresh, as indices come free.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{
    identity::{ContainerRef, RuntimeInfo, Workload, container_ref, identify},
    runtime::RuntimeSource,
    walk::{CgroupEntry, CgroupTree, WalkError},
};

pub const HOST_INDEX: u16 = 0;
pub const OTHER_INDEX: u16 = 1;
pub const FIRST_WORKLOAD_INDEX: u16 = 2;

/// What makes two cgroups one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Granularity {
    /// (kind, namespace, name): all pods of a Deployment are one workload.
    #[default]
    Workload,
    /// One index per pod (needed for a per-pod `k8s.pod.name`).
    Pod,
    /// One index per container.
    Container,
}

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Most distinct workloads with an index of their own (indices 2..2+max).
    pub max_workloads: u16,
    /// How long an index stays with a workload that has no cgroup left.
    pub reuse_after: Duration,
    /// Components kept of a path no other rule names.
    pub depth: usize,
    pub granularity: Granularity,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_workloads: super::DEFAULT_MAX_WORKLOADS,
            reuse_after: Duration::from_secs(300),
            depth: 2,
            granularity: Granularity::Workload,
        }
    }
}

/// Changes for the kernel, in the order to apply them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Indices whose workload is gone for good: fold their counters, then they may be reused.
    pub released: Vec<(u16, Workload)>,
    /// cgroup ids gone from the tree.
    pub remove: Vec<u64>,
    /// New or changed cgroup id → index pairs.
    pub upsert: Vec<(u64, u16)>,
    /// Indices given to a workload in this refresh (new, or re-given after a release).
    pub assigned: Vec<(u16, Workload)>,
}

/// Counters for self-metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// cgroups known now, and how many of those map to `other`.
    pub cgroups: usize,
    pub other_cgroups: usize,
    /// Workloads holding an index now (live or within `reuse_after`).
    pub workloads: usize,
    /// cgroups mapped to `other` because every index was taken, since start.
    pub overflow_total: u64,
    pub released_total: u64,
    /// Runtime state files that could not be read or parsed, since start.
    pub runtime_errors_total: u64,
    pub walk_errors_total: u64,
    pub refreshes_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: super::WorkloadKind,
    namespace: Option<String>,
    name: String,
    pod: Option<String>,
    container: Option<String>,
}

struct Tracked {
    index: u16,
    workload: Workload,
    /// The path it was named from: an id seen again under another path (a reused inode in a
    /// test tree; the kernel's cgroup ids are not reused) is named afresh.
    path: String,
    /// Lookups left for a container whose runtime state was not there (yet) or unreadable.
    retries: u8,
}

struct Slot {
    workload: Workload,
    key: Key,
    cgroups: u32,
    gone_since: Option<Instant>,
}

/// Retries of a container lookup that found no state: a runtime may write it just after the
/// cgroup appears.
const LOOKUP_RETRIES: u8 = 3;
/// Distinct bad files remembered so each is warned about once.
const WARNED_CAP: usize = 4096;

pub struct WorkloadRegistry<R> {
    config: RegistryConfig,
    runtime: R,
    host: Workload,
    cgroups: HashMap<u64, Tracked>,
    by_key: HashMap<Key, u16>,
    slots: Vec<Option<Slot>>,
    /// Released indices, oldest first.
    free: VecDeque<u16>,
    warned: HashSet<String>,
    stats: RegistryStats,
}

impl<R: RuntimeSource> WorkloadRegistry<R> {
    pub fn new(config: RegistryConfig, runtime: R) -> Self {
        WorkloadRegistry {
            config,
            runtime,
            host: Workload::host(),
            cgroups: HashMap::new(),
            by_key: HashMap::new(),
            slots: Vec::new(),
            free: VecDeque::new(),
            warned: HashSet::new(),
            stats: RegistryStats::default(),
        }
    }

    /// One past the highest index ever handed out: cells above it have never counted.
    pub fn index_bound(&self) -> u32 {
        u32::from(FIRST_WORKLOAD_INDEX) + self.slots.len() as u32
    }

    /// Walks `tree` and refreshes from it.
    pub fn refresh_from(
        &mut self,
        tree: &impl CgroupTree,
        now: Instant,
    ) -> Result<Update, WalkError> {
        let scan = tree.scan()?;
        self.stats.walk_errors_total += scan.errors;
        Ok(self.refresh(&scan.entries, now))
    }

    /// Brings the registry to the cgroups of one walk.
    pub fn refresh(&mut self, entries: &[CgroupEntry], now: Instant) -> Update {
        let mut update = Update::default();
        self.stats.refreshes_total += 1;
        let live: HashSet<u64> = entries.iter().map(|e| e.id).collect();
        let gone: Vec<u64> = self
            .cgroups
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(t) = self.cgroups.remove(&id) {
                self.detach(t.index, now);
                update.remove.push(id);
            }
        }
        self.release_expired(now, &mut update);
        let mut lookups: HashMap<ContainerRef, RuntimeInfo> = HashMap::new();
        for e in entries {
            let (workload, retries) = match self.cgroups.get_mut(&e.id) {
                None => self.identify(&e.path, &mut lookups),
                Some(t) if t.path != e.path => self.identify(&e.path, &mut lookups),
                Some(t) if t.retries > 0 => {
                    t.retries -= 1;
                    let left = t.retries;
                    (self.identify(&e.path, &mut lookups).0, left)
                }
                // Overflowed: offered an index again below.
                Some(t) if t.index == OTHER_INDEX => (t.workload.clone(), 0),
                Some(_) => continue,
            };
            let old = self.cgroups.get(&e.id).map(|t| t.index);
            if old.is_some_and(|i| i != OTHER_INDEX)
                && self
                    .cgroups
                    .get(&e.id)
                    .is_some_and(|t| t.workload == workload)
            {
                if let Some(t) = self.cgroups.get_mut(&e.id) {
                    t.retries = retries;
                    t.path.clone_from(&e.path);
                }
                continue;
            }
            if let Some(i) = old {
                self.detach(i, now);
            }
            let index = self.attach(&workload, &mut update).unwrap_or(OTHER_INDEX);
            if index == OTHER_INDEX && old != Some(OTHER_INDEX) {
                self.stats.overflow_total += 1;
            }
            self.cgroups.insert(
                e.id,
                Tracked {
                    index,
                    workload,
                    path: e.path.clone(),
                    retries,
                },
            );
            if old != Some(index) {
                update.upsert.push((e.id, index));
            }
        }
        self.stats.cgroups = self.cgroups.len();
        self.stats.other_cgroups = self
            .cgroups
            .values()
            .filter(|t| t.index == OTHER_INDEX)
            .count();
        self.stats.workloads = self.slots.iter().flatten().count();
        update
    }

    /// The workload behind an index: `host` for 0, None for `other` and unused indices. With the
    /// default granularity its `pod` and `container` are None: the index covers all of them.
    pub fn workload(&self, index: u16) -> Option<&Workload> {
        match index {
            HOST_INDEX => Some(&self.host),
            OTHER_INDEX => None,
            i => self.slot(i).map(|s| &s.workload),
        }
    }

    /// The index a cgroup id maps to now.
    pub fn index_of(&self, cgroup_id: u64) -> Option<u16> {
        self.cgroups.get(&cgroup_id).map(|t| t.index)
    }

    /// One cgroup's own identity, pod and container included (an index's [`Self::workload`]
    /// keeps them only as fine as the granularity).
    pub fn cgroup_workload(&self, cgroup_id: u64) -> Option<&Workload> {
        self.cgroups.get(&cgroup_id).map(|t| &t.workload)
    }

    /// Every workload holding an index, with whether it has a cgroup now.
    pub fn workloads(&self) -> impl Iterator<Item = (u16, &Workload, bool)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let s = s.as_ref()?;
            Some((FIRST_WORKLOAD_INDEX + i as u16, &s.workload, s.cgroups > 0))
        })
    }

    pub fn stats(&self) -> &RegistryStats {
        &self.stats
    }

    /// The most indices the kernel's counters need: host, other and the workloads.
    pub fn index_capacity(&self) -> u32 {
        u32::from(FIRST_WORKLOAD_INDEX) + u32::from(self.config.max_workloads)
    }

    fn identify(
        &mut self,
        path: &str,
        lookups: &mut HashMap<ContainerRef, RuntimeInfo>,
    ) -> (Workload, u8) {
        let Some(c) = container_ref(path) else {
            return (identify(path, &RuntimeInfo::NotFound, self.config.depth), 0);
        };
        let info = match lookups.get(&c) {
            Some(info) => info.clone(),
            None => {
                let info = match self.runtime.lookup(&c) {
                    Ok(Some(meta)) => RuntimeInfo::Found(meta),
                    Ok(None) => RuntimeInfo::NotFound,
                    Err(e) => {
                        self.warn_once(&c.id, &e);
                        RuntimeInfo::Unreadable
                    }
                };
                lookups.insert(c.clone(), info.clone());
                info
            }
        };
        let retries = if matches!(info, RuntimeInfo::Found(_)) {
            0
        } else {
            LOOKUP_RETRIES
        };
        (identify(path, &info, self.config.depth), retries)
    }

    fn warn_once(&mut self, id: &str, e: &super::runtime::RuntimeError) {
        if self.warned.len() >= WARNED_CAP {
            self.warned.clear();
        }
        if self.warned.insert(id.to_string()) {
            self.stats.runtime_errors_total += 1;
            tracing::warn!("workload of container {id}: {e}");
        }
    }

    fn key(&self, w: &Workload) -> Key {
        let fine =
            |g| self.config.granularity == g || self.config.granularity == Granularity::Container;
        Key {
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            pod: w.pod.clone().filter(|_| fine(Granularity::Pod)),
            container: w
                .container
                .clone()
                .filter(|_| self.config.granularity == Granularity::Container),
        }
    }

    /// The index for a cgroup of `w`, counting the cgroup on it; None when every index is taken.
    fn attach(&mut self, w: &Workload, update: &mut Update) -> Option<u16> {
        if *w == self.host {
            return Some(HOST_INDEX);
        }
        let key = self.key(w);
        if let Some(&i) = self.by_key.get(&key) {
            if let Some(s) = self.slot_mut(i) {
                s.cgroups += 1;
                s.gone_since = None;
            }
            return Some(i);
        }
        let index = match self.free.pop_front() {
            Some(i) => i,
            None if self.slots.len() < usize::from(self.config.max_workloads) => {
                self.slots.push(None);
                FIRST_WORKLOAD_INDEX + (self.slots.len() - 1) as u16
            }
            None => return None,
        };
        // What the index stands for: pod and container only as fine as the granularity, so
        // the labels of a shared index never depend on which cgroup happened to come first.
        let shared = Workload {
            pod: key.pod.clone(),
            container: key.container.clone(),
            ..w.clone()
        };
        let slot = Slot {
            workload: shared.clone(),
            key: key.clone(),
            cgroups: 1,
            gone_since: None,
        };
        if let Some(s) = self
            .slots
            .get_mut(usize::from(index - FIRST_WORKLOAD_INDEX))
        {
            *s = Some(slot);
        }
        self.by_key.insert(key, index);
        update.assigned.push((index, shared));
        Some(index)
    }

    fn detach(&mut self, index: u16, now: Instant) {
        if let Some(s) = self.slot_mut(index) {
            s.cgroups = s.cgroups.saturating_sub(1);
            if s.cgroups == 0 {
                s.gone_since = Some(now);
            }
        }
    }

    fn release_expired(&mut self, now: Instant, update: &mut Update) {
        let after = self.config.reuse_after;
        for (i, entry) in self.slots.iter_mut().enumerate() {
            let expired = entry
                .as_ref()
                .and_then(|s| s.gone_since)
                .is_some_and(|t| now.saturating_duration_since(t) >= after);
            if let Some(s) = entry.take_if(|_| expired) {
                let index = FIRST_WORKLOAD_INDEX + i as u16;
                self.by_key.remove(&s.key);
                self.free.push_back(index);
                self.stats.released_total += 1;
                update.released.push((index, s.workload));
            }
        }
    }

    fn slot(&self, index: u16) -> Option<&Slot> {
        self.slots
            .get(usize::from(index.checked_sub(FIRST_WORKLOAD_INDEX)?))?
            .as_ref()
    }

    fn slot_mut(&mut self, index: u16) -> Option<&mut Slot> {
        self.slots
            .get_mut(usize::from(index.checked_sub(FIRST_WORKLOAD_INDEX)?))?
            .as_mut()
    }
}

#[cfg(test)]
mod tests;
