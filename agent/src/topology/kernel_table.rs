//! From a [`Topology`] to the kernel's LPM tables: counter slots, zone indexes, and the prefix
//! lists per address family. Pure: the map writes live in `ebpf::maps`.
//!
//! Slots are stable across refreshes for an unchanged key (a subnet's CIDR, or a catch-all
//! bucket), so a counter keeps counting the same thing. A slot a refresh gives up is reused
//! only from the refresh after, when no prefix in the kernel can point at it any more.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use agent_common::{SLOT_NO_MATCH, SUBNET_FLAG_NAT_CANDIDATE, SUBNET_FLAG_UNMAPPED, SubnetInfo, TrafficClass, ZONE_NONE};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    model::Topology,
    paths::{Billing, Destination, PathPrice, RangeGroup, decide, route_for},
    ranges::{CatchAll, catch_all_ranges},
};
use crate::pricing::PriceTable;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelTableError {
    #[error(
        "the topology needs {needed} counter slots but only {usable} fit ({cooling} are held back \
         for one refresh after their subnet went away); raise --max-subnets"
    )]
    SlotsExhausted {
        needed: usize,
        usable: u32,
        cooling: usize,
    },
    #[error("the topology has more than {max} distinct zone IDs; check the topology source")]
    ZonesExhausted { max: usize },
    #[error(
        "the topology has {prefixes} IPv{family} prefixes but the kernel table holds {capacity}; \
         raise --max-subnets"
    )]
    TooManyPrefixes {
        family: u8,
        prefixes: usize,
        capacity: u32,
    },
}

/// What a slot is allocated for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum SlotKey {
    /// Catch-alls sort first, so they take the lowest slots.
    CatchAll(CatchAll),
    /// Prefixes that are no subnet and whose labels differ from their catch-all's (a route's
    /// destination, AWS ranges, a routed catch-all): one slot per distinct label set, so
    /// thousands of AWS ranges cost a handful of slots.
    /// Boxed: few slots are shared, but every key pays the largest variant's size.
    Shared(Box<SharedKey>),
    Subnet(IpNet),
}

/// The labels a [`SlotKey::Shared`] slot stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SharedKey {
    pub dst_zone: String,
    pub dst_zone_id: String,
    #[serde(with = "crate::ledger::class_id")]
    pub class: TrafficClass,
    pub billing: Billing,
}

/// Hands out counter slots `1..max_slots` (0 is [`SLOT_NO_MATCH`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlotAllocator {
    max_slots: u32,
    assigned: BTreeMap<SlotKey, u32>,
    /// Given up by the last refresh; reusable from the next one.
    cooling: BTreeSet<u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl SlotAllocator {
    /// `max_slots` is the highest usable slot + 1, i.e. `ebpf::MapSizes::slots`.
    pub fn new(max_slots: u32) -> Self {
        Self {
            max_slots,
            assigned: BTreeMap::new(),
            cooling: BTreeSet::new(),
            free: BTreeSet::new(),
            next: SLOT_NO_MATCH + 1,
        }
    }

    /// One refresh: `keys` are everything the new table needs. Unchanged keys keep their slot,
    /// new keys take the lowest reusable slot, gone keys give theirs up (reusable next refresh).
    /// On error nothing changes.
    pub fn refresh(
        &mut self,
        keys: impl IntoIterator<Item = SlotKey>,
    ) -> Result<BTreeMap<SlotKey, u32>, KernelTableError> {
        let wanted: BTreeSet<SlotKey> = keys.into_iter().collect();
        let mut next = self.clone();
        next.free.append(&mut next.cooling);
        let gone: Vec<SlotKey> = next
            .assigned
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(slot) = next.assigned.remove(&key) {
                next.cooling.insert(slot);
            }
        }
        for key in &wanted {
            if next.assigned.contains_key(key) {
                continue;
            }
            let slot = match next.free.pop_first() {
                Some(slot) => slot,
                None if next.next < next.max_slots => {
                    next.next += 1;
                    next.next - 1
                }
                None => {
                    return Err(KernelTableError::SlotsExhausted {
                        needed: wanted.len(),
                        usable: self.max_slots.saturating_sub(1),
                        cooling: next.cooling.len(),
                    });
                }
            };
            next.assigned.insert(key.clone(), slot);
        }
        *self = next;
        Ok(self.assigned.clone())
    }

    /// An allocator restored from a ledger, for a kernel table of `max_slots` slots; `None` when
    /// it hands out slots that do not fit (the maps were sized differently).
    pub fn restored(mut self, max_slots: u32) -> Option<Self> {
        let highest = self.assigned.values().chain(&self.cooling).chain(&self.free).copied().max().unwrap_or(0);
        if highest >= max_slots || self.next > max_slots {
            return None;
        }
        self.max_slots = max_slots;
        Some(self)
    }

    pub fn slot(&self, key: &SlotKey) -> Option<u32> {
        self.assigned.get(key).copied()
    }
}

/// A `u16` index per distinct zone ID, stable for the life of the agent (RTT histograms are
/// indexed by it). [`ZONE_NONE`] is never handed out.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ZoneTable {
    by_id: BTreeMap<String, u16>,
    /// (zone ID, latest zone name), indexed by zone index.
    zones: Vec<(String, String)>,
}

impl ZoneTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `zone_id`, allocating one on first sight; remembers `zone` as its name.
    pub fn index(&mut self, zone_id: &str, zone: &str) -> Result<u16, KernelTableError> {
        if let Some(&idx) = self.by_id.get(zone_id) {
            if let Some(entry) = self.zones.get_mut(usize::from(idx)) {
                zone.clone_into(&mut entry.1);
            }
            return Ok(idx);
        }
        let idx = u16::try_from(self.zones.len())
            .ok()
            .filter(|&i| i != ZONE_NONE)
            .ok_or(KernelTableError::ZonesExhausted {
                max: usize::from(ZONE_NONE),
            })?;
        self.by_id.insert(zone_id.to_owned(), idx);
        self.zones.push((zone_id.to_owned(), zone.to_owned()));
        Ok(idx)
    }

    /// `(zone_id, zone)` of an index.
    pub fn get(&self, idx: u16) -> Option<(&str, &str)> {
        self.zones
            .get(usize::from(idx))
            .map(|(id, name)| (id.as_str(), name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum SlotKind {
    Subnet,
    CatchAll,
    /// A [`SlotKey::Shared`] slot.
    Routed,
}

/// What user space attaches to a slot's counters: the labels (shared by every slot with the same
/// ones — a host with 100k subnets has a handful of label sets), its subnet and kind. Reads as a
/// [`LabelSet`] too (`labels.dst_zone`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotLabels {
    pub set: std::sync::Arc<LabelSet>,
    /// `None` for catch-alls.
    pub subnet: Option<IpNet>,
    pub kind: SlotKind,
}

impl std::ops::Deref for SlotLabels {
    type Target = LabelSet;
    fn deref(&self) -> &LabelSet {
        &self.set
    }
}

/// The labels of a slot's bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct LabelSet {
    /// The AZ name; for catch-alls the bucket's label ("internet", "unknown", "cross_vpc",
    /// "local").
    pub dst_zone: String,
    /// The AZ ID; for catch-alls the same label as `dst_zone`.
    pub dst_zone_id: String,
    #[serde(with = "crate::ledger::class_id")]
    pub class: TrafficClass,
    /// The billing path, the AZ of its hop, and its price.
    pub billing: Billing,
}

/// Hands out one shared [`LabelSet`] per distinct value.
#[derive(Default)]
struct Interner(std::collections::BTreeMap<LabelSet, std::sync::Arc<LabelSet>>);

impl Interner {
    fn get(&mut self, set: LabelSet) -> std::sync::Arc<LabelSet> {
        self.0.entry(set).or_insert_with_key(|k| std::sync::Arc::new(k.clone())).clone()
    }
}

/// The LPM tables to write, sorted by prefix, plus the labels of every slot they use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTable {
    pub v4: Vec<(Ipv4Net, SubnetInfo)>,
    pub v6: Vec<(Ipv6Net, SubnetInfo)>,
    pub slots: BTreeMap<u32, SlotLabels>,
}

impl KernelTable {
    /// Flags every catch-all range that is remembered as unmapped (private ranges outside the
    /// known subnets, where Service VIPs live, and public addresses) as a NAT candidate: a socket
    /// that dials one waits for the node's conntrack to name its real remote end. Known subnets
    /// and loopback never wait.
    pub fn with_nat_candidates(mut self) -> Self {
        let infos = self.v4.iter_mut().map(|(_, i)| i).chain(self.v6.iter_mut().map(|(_, i)| i));
        for info in infos {
            if info.flags & SUBNET_FLAG_UNMAPPED != 0 {
                info.flags |= SUBNET_FLAG_NAT_CANDIDATE;
            }
        }
        self
    }

    /// Every prefix of both families, IPv4 first.
    pub fn entries(&self) -> impl Iterator<Item = (IpNet, SubnetInfo)> + '_ {
        let v4 = self.v4.iter().map(|(n, i)| (IpNet::V4(*n), *i));
        v4.chain(self.v6.iter().map(|(n, i)| (IpNet::V6(*n), *i)))
    }

    /// Prices every slot's path from `prices` (the host region's table).
    pub fn apply_prices(&mut self, prices: &PriceTable) {
        let mut interner = Interner::default();
        for label in self.slots.values_mut() {
            let mut set = (*label.set).clone();
            set.billing.price = prices.price(set.billing.path);
            label.set = interner.get(set);
        }
    }

    /// Fails when a family has more prefixes than its trie holds (`ebpf::MapSizes::lpm_prefixes`).
    pub fn check_capacity(&self, lpm_prefixes: u32) -> Result<(), KernelTableError> {
        for (family, prefixes) in [(4, self.v4.len()), (6, self.v6.len())] {
            if prefixes > lpm_prefixes as usize {
                return Err(KernelTableError::TooManyPrefixes {
                    family,
                    prefixes,
                    capacity: lpm_prefixes,
                });
            }
        }
        Ok(())
    }
}

/// Where a prefix of the kernel table comes from; for one prefix a later source wins:
/// catch-all < AWS range < route < subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    CatchAll(CatchAll),
    Range(RangeGroup),
    Route,
    Subnet,
}

/// What a prefix inherits from its subnet or catch-all: labels, kernel class, zone, flags.
#[derive(Debug, Clone)]
struct Base<'t> {
    dst_zone: String,
    dst_zone_id: String,
    class: TrafficClass,
    /// (zone ID, zone name) when the prefix is in a subnet.
    zone: Option<(&'t str, &'t str)>,
    region: Option<&'t str>,
    subnet: Option<IpNet>,
    flags: u8,
}

fn base_of_subnet<'t>(topology: &'t Topology, s: &'t super::model::Subnet) -> Base<'t> {
    Base {
        dst_zone: s.zone.clone(),
        dst_zone_id: s.zone_id.clone(),
        class: topology.class_of_subnet(s),
        zone: Some((&s.zone_id, &s.zone)),
        region: s.region.as_deref(),
        subnet: Some(s.cidr),
        flags: 0,
    }
}

fn base_of_catch_all<'t>(c: CatchAll) -> Base<'t> {
    Base {
        dst_zone: c.label().to_owned(),
        dst_zone_id: c.label().to_owned(),
        class: c.class(),
        zone: None,
        region: None,
        subnet: None,
        flags: c.flags(),
    }
}

/// Builds the kernel table of `topology`: its subnets, its routes' destinations and AWS ranges
/// over the catch-all ranges, each labelled with its billing path (prices are set later by
/// [`KernelTable::apply_prices`]). Subnets have a slot each; other prefixes share one slot per
/// distinct label set. One refresh of `slots`; on error neither `slots` nor `zones` change.
pub fn build_kernel_table(
    topology: &Topology,
    slots: &mut SlotAllocator,
    zones: &mut ZoneTable,
) -> Result<KernelTable, KernelTableError> {
    let host = topology.host();
    let routing = topology.routing();
    let routes = routing.effective_routes(&host.vpc_cidrs);
    let mut by_net: BTreeMap<IpNet, Origin> = catch_all_ranges(host)
        .into_iter()
        .map(|r| (r.net, Origin::CatchAll(r.catch_all)))
        .collect();
    for (net, group) in &routing.public_ranges {
        by_net.insert(net.trunc(), Origin::Range(*group));
    }
    for r in &routes {
        by_net.entry(r.dest).or_insert(Origin::Route);
    }
    for s in topology.subnets() {
        by_net.insert(s.cidr, Origin::Subnet);
    }
    // Routes and ranges take their labels from the most specific subnet or catch-all around them.
    let containers: Vec<(IpNet, Origin)> = by_net
        .iter()
        .filter(|(_, o)| matches!(o, Origin::Subnet | Origin::CatchAll(_)))
        .map(|(n, o)| (*n, *o))
        .collect();
    fn base_of<'t>(topology: &'t Topology, net: &IpNet, origin: Origin) -> Option<Base<'t>> {
        match origin {
            Origin::Subnet => topology.subnet(net).map(|s| base_of_subnet(topology, s)),
            Origin::CatchAll(c) => Some(base_of_catch_all(c)),
            Origin::Range(_) | Origin::Route => None,
        }
    }

    let mut prefixes: Vec<(IpNet, SlotKey, Base<'_>, Billing)> = Vec::with_capacity(by_net.len());
    for (net, origin) in &by_net {
        let base = match base_of(topology, net, *origin) {
            Some(b) => b,
            None => {
                let container = containers
                    .iter()
                    .filter(|(c, _)| {
                        c.prefix_len() < net.prefix_len() && c.contains(&net.network())
                    })
                    .max_by_key(|(c, _)| c.prefix_len());
                match container.and_then(|(c, o)| base_of(topology, c, *o)) {
                    Some(mut b) => {
                        b.subnet = None;
                        b
                    }
                    // Every address has a catch-all; none only if the defaults were removed.
                    None => base_of_catch_all(CatchAll::Unknown),
                }
            }
        };
        let dest = Destination {
            class: base.class,
            zone_id: base.zone.map(|z| z.0),
            region: base.region,
            range: match origin {
                Origin::Range(g) => Some(*g),
                _ => None,
            },
        };
        let region = host.region.as_deref();
        // Loopback and link-local never reach the VPC router.
        let route = match origin {
            Origin::CatchAll(CatchAll::Local) => None,
            _ => route_for(&routes, net),
        };
        let decided = decide(routing, &host.zone_id, region, &dest, route);
        let unrouted = decide(routing, &host.zone_id, region, &dest, None);
        let billing = Billing {
            path: decided.path,
            hop_zone_id: decided.hop_zone_id.clone(),
            price: PathPrice::default(),
        };
        let key = match origin {
            Origin::Subnet => SlotKey::Subnet(*net),
            Origin::CatchAll(c) if decided == unrouted => SlotKey::CatchAll(*c),
            _ => SlotKey::Shared(Box::new(SharedKey {
                dst_zone: base.dst_zone.clone(),
                dst_zone_id: base.dst_zone_id.clone(),
                class: base.class,
                billing: billing.clone(),
            })),
        };
        prefixes.push((*net, key, base, billing));
    }

    let mut new_slots = slots.clone();
    let mut new_zones = zones.clone();
    let assigned = new_slots.refresh(prefixes.iter().map(|p| p.1.clone()))?;
    let mut table = KernelTable::default();
    let mut interner = Interner::default();
    for (net, key, base, billing) in prefixes {
        let Some(&slot) = assigned.get(&key) else {
            continue;
        };
        let zone_idx = match base.zone {
            Some((id, name)) => new_zones.index(id, name)?,
            None => ZONE_NONE,
        };
        let info = SubnetInfo {
            slot,
            zone_idx,
            class: base.class as u8,
            flags: base.flags,
        };
        let kind = match key {
            SlotKey::Subnet(_) => SlotKind::Subnet,
            SlotKey::CatchAll(_) => SlotKind::CatchAll,
            SlotKey::Shared(_) => SlotKind::Routed,
        };
        table.slots.entry(slot).or_insert_with(|| SlotLabels {
            set: interner.get(LabelSet { dst_zone: base.dst_zone, dst_zone_id: base.dst_zone_id, class: base.class, billing }),
            subnet: base.subnet,
            kind,
        });
        match net {
            IpNet::V4(n) => table.v4.push((n, info)),
            IpNet::V6(n) => table.v6.push((n, info)),
        }
    }
    *slots = new_slots;
    *zones = new_zones;
    Ok(table)
}

/// Prefixes a refresh writes (new or changed), per family. Write these first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upserts {
    pub v4: Vec<(Ipv4Net, SubnetInfo)>,
    pub v6: Vec<(Ipv6Net, SubnetInfo)>,
}

/// Prefixes a refresh removes, per family. Delete these after the [`Upserts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletes {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

impl Upserts {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl Deletes {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// What turns the kernel's `old` table into `new`: apply the upserts, then the deletes, so no
/// address is ever without a prefix in between.
pub fn diff(old: &KernelTable, new: &KernelTable) -> (Upserts, Deletes) {
    let (v4_up, v4_del) = diff_family(&old.v4, &new.v4);
    let (v6_up, v6_del) = diff_family(&old.v6, &new.v6);
    (
        Upserts {
            v4: v4_up,
            v6: v6_up,
        },
        Deletes {
            v4: v4_del,
            v6: v6_del,
        },
    )
}

type FamilyDiff<N> = (Vec<(N, SubnetInfo)>, Vec<N>);

fn diff_family<N: Ord + Copy>(old: &[(N, SubnetInfo)], new: &[(N, SubnetInfo)]) -> FamilyDiff<N> {
    let old_map: BTreeMap<N, SubnetInfo> = old.iter().copied().collect();
    let new_map: BTreeMap<N, SubnetInfo> = new.iter().copied().collect();
    let upserts = new_map
        .iter()
        .filter(|(net, info)| old_map.get(net) != Some(info))
        .map(|(net, info)| (*net, *info))
        .collect();
    let deletes = old_map
        .keys()
        .filter(|net| !new_map.contains_key(net))
        .copied()
        .collect();
    (upserts, deletes)
}

/// User-space longest-prefix match, as the kernel's LPM trie does it. `None` only when no
/// prefix of the address's family matches (no catch-alls loaded).
pub fn classify(table: &KernelTable, addr: IpAddr) -> Option<(IpNet, SubnetInfo)> {
    match addr {
        IpAddr::V4(a) => table
            .v4
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(n, i)| (IpNet::V4(*n), *i)),
        IpAddr::V6(a) => table
            .v6
            .iter()
            .filter(|(n, _)| n.contains(&a))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(n, i)| (IpNet::V6(*n), *i)),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod billing_tests;
