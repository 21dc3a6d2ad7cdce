//! Turning the kernel's per-slot cumulative counters into per-label cumulative totals.
//!
//! Totals grow by the *delta* of each slot since the previous drain, credited to the slot's
//! labels at drain time. So a slot that changes meaning (a subnet re-homed by a topology refresh)
//! never moves bytes already counted, and a kernel counter that goes backwards (maps recreated)
//! restarts cleanly instead of producing a huge wrap-around.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agent_common::{Counter, Direction, TrafficClass};

use crate::{
    ebpf::maps::SlotCounters,
    ledger::state::{AccState, SubnetKey, SubnetState, TotalKey},
    snapshot::{DstSubnet, FlowKey},
};

/// What a slot means for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMeaning {
    pub dst_zone: String,
    pub dst_zone_id: String,
    pub class: TrafficClass,
    /// The subnet's CIDR; `None` for catch-alls.
    pub subnet: Option<ipnet::IpNet>,
    pub billing: crate::topology::Billing,
}

#[derive(Debug, Default)]
pub struct Accumulator {
    last: HashMap<u32, SlotCounters>,
    totals: BTreeMap<FlowKey, Counter>,
    /// Opt-in per-subnet totals (`dst.subnet`).
    subnets: Option<SubnetTotals>,
}

/// The same growth as `totals`, split by subnet, with at most `cap` subnet series: a new subnet
/// series beyond the cap is credited to [`DstSubnet::Overflow`] under the same zone labels, so
/// every zone still adds up.
#[derive(Debug, Default)]
struct SubnetTotals {
    cap: usize,
    series: usize,
    totals: BTreeMap<(FlowKey, DstSubnet), Counter>,
    /// Distinct (subnet, direction) refused by the cap; bounded by the slots.
    refused: BTreeSet<(ipnet::IpNet, Direction)>,
}

impl SubnetTotals {
    fn credit(&mut self, key: &FlowKey, subnet: Option<ipnet::IpNet>, delta: Counter) {
        let mut sub = subnet.map_or(DstSubnet::None, DstSubnet::Cidr);
        if let Some(net) = subnet
            && !self.totals.contains_key(&(key.clone(), sub))
        {
            if self.series >= self.cap {
                self.refused.insert((net, key.direction));
                sub = DstSubnet::Overflow;
            } else {
                self.series += 1;
            }
        }
        let t = self.totals.entry((key.clone(), sub)).or_default();
        t.bytes = t.bytes.saturating_add(delta.bytes);
        t.packets = t.packets.saturating_add(delta.packets);
    }
}

impl Accumulator {
    /// Credits each slot's growth since the previous call to its current meaning. A slot with no
    /// meaning (not in the table any more) is remembered but credited to nobody; `meaning` is
    /// consulted only for slots that grew (a host with 100k subnets has a few busy ones, and
    /// building a meaning clones its labels).
    pub fn absorb(
        &mut self,
        reads: &[(u32, SlotCounters)],
        meaning: impl Fn(u32) -> Option<SlotMeaning>,
    ) {
        for (slot, now) in reads {
            let before = match self.last.get_mut(slot) {
                Some(last) if last == now => continue,
                Some(last) => std::mem::replace(last, *now),
                None if *now == SlotCounters::default() => continue,
                None => {
                    self.last.insert(*slot, *now);
                    SlotCounters::default()
                }
            };
            let Some(m) = meaning(*slot) else { continue };
            for dir in Direction::ALL {
                let d = dir as usize;
                let delta = Counter {
                    bytes: delta(before[d].bytes, now[d].bytes),
                    packets: delta(before[d].packets, now[d].packets),
                };
                self.credit(&m, dir, delta);
            }
        }
    }

    /// Whether `slot` reads `now` after having read something else (or nothing but zero) at the
    /// previous drain.
    pub fn grew(&self, slot: u32, now: &SlotCounters) -> bool {
        match self.last.get(&slot) {
            Some(last) => last != now,
            None => *now != SlotCounters::default(),
        }
    }

    /// Adds `delta` to the totals of `m` (NAT-held bytes are credited this way once known).
    pub fn credit(&mut self, m: &SlotMeaning, dir: Direction, delta: Counter) {
        if delta == Counter::default() {
            return;
        }
        let key = FlowKey {
            direction: dir,
            dst_zone: m.dst_zone.clone(),
            dst_zone_id: m.dst_zone_id.clone(),
            class: m.class,
            billing: m.billing.clone(),
        };
        if let Some(subnets) = &mut self.subnets {
            subnets.credit(&key, m.subnet, delta);
        }
        let t = self.totals.entry(key).or_default();
        t.bytes = t.bytes.saturating_add(delta.bytes);
        t.packets = t.packets.saturating_add(delta.packets);
    }

    pub fn totals(&self) -> &BTreeMap<FlowKey, Counter> {
        &self.totals
    }

    /// Keeps per-subnet totals from now on, at most `cap` subnet series (0: none kept).
    /// Totals restored from a ledger are kept (under the new cap for new series).
    pub fn track_subnets(&mut self, cap: usize) {
        match &mut self.subnets {
            _ if cap == 0 => self.subnets = None,
            Some(s) => s.cap = cap,
            None => self.subnets = Some(SubnetTotals { cap, ..SubnetTotals::default() }),
        }
    }

    /// Per-subnet totals and the number of subnet series the cap folded into the overflow.
    pub fn subnet_totals(&self) -> (BTreeMap<(FlowKey, DstSubnet), Counter>, u64) {
        self.subnets.as_ref().map_or_else(Default::default, |s| (s.totals.clone(), s.refused.len() as u64))
    }
}

impl Accumulator {
    /// What the next agent needs to continue these totals (see `ledger`).
    pub fn to_state(&self) -> AccState {
        let key = |k: &FlowKey| TotalKey {
            direction: k.direction as u8,
            dst_zone: k.dst_zone.clone(),
            dst_zone_id: k.dst_zone_id.clone(),
            class: k.class as u8,
            billing: k.billing.clone(),
        };
        let pair = |c: &Counter| [c.bytes, c.packets];
        let mut last: Vec<(u32, [u64; 4])> = self
            .last
            .iter()
            .filter(|(_, c)| **c != SlotCounters::default())
            .map(|(s, c)| (*s, [c[0].bytes, c[0].packets, c[1].bytes, c[1].packets]))
            .collect();
        last.sort_unstable_by_key(|(s, _)| *s);
        AccState {
            last,
            totals: self.totals.iter().map(|(k, c)| (key(k), pair(c))).collect(),
            subnets: self.subnets.as_ref().map(|s| SubnetState {
                cap: s.cap as u64,
                series: s.series as u64,
                totals: s
                    .totals
                    .iter()
                    .map(|((k, sub), c)| {
                        let sub = match sub {
                            DstSubnet::None => SubnetKey::None,
                            DstSubnet::Cidr(n) => SubnetKey::Cidr(*n),
                            DstSubnet::Overflow => SubnetKey::Overflow,
                        };
                        (key(k), sub, pair(c))
                    })
                    .collect(),
                refused: s.refused.iter().map(|(n, d)| (*n, *d as u8)).collect(),
            }),
            ..AccState::default()
        }
    }

    /// The accumulator an earlier agent left (see `ledger`).
    pub fn from_state(state: &AccState) -> Self {
        let key = |k: &TotalKey| FlowKey {
            direction: if k.direction == 0 { Direction::Transmit } else { Direction::Receive },
            dst_zone: k.dst_zone.clone(),
            dst_zone_id: k.dst_zone_id.clone(),
            class: TrafficClass::from_u8(k.class),
            billing: k.billing.clone(),
        };
        let counter = |c: &[u64; 2]| Counter { bytes: c[0], packets: c[1] };
        Self {
            last: state
                .last
                .iter()
                .map(|(s, c)| (*s, [Counter { bytes: c[0], packets: c[1] }, Counter { bytes: c[2], packets: c[3] }]))
                .collect(),
            totals: state.totals.iter().map(|(k, c)| (key(k), counter(c))).collect(),
            subnets: state.subnets.as_ref().map(|s| SubnetTotals {
                cap: usize::try_from(s.cap).unwrap_or(usize::MAX),
                series: usize::try_from(s.series).unwrap_or(usize::MAX),
                totals: s
                    .totals
                    .iter()
                    .map(|(k, sub, c)| {
                        let sub = match sub {
                            SubnetKey::None => DstSubnet::None,
                            SubnetKey::Cidr(n) => DstSubnet::Cidr(*n),
                            SubnetKey::Overflow => DstSubnet::Overflow,
                        };
                        ((key(k), sub), counter(c))
                    })
                    .collect(),
                refused: s.refused.iter().map(|(n, d)| (*n, if *d == 0 { Direction::Transmit } else { Direction::Receive })).collect(),
            }),
        }
    }

    /// Whether per-subnet totals are kept, and up to how many series.
    pub fn subnet_cap(&self) -> Option<usize> {
        self.subnets.as_ref().map(|s| s.cap)
    }
}

/// Growth of a cumulative kernel counter; a smaller value means the counter restarted from zero.
fn delta(before: u64, now: u64) -> u64 {
    if now >= before { now - before } else { now }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(tx: u64, rx: u64) -> SlotCounters {
        [Counter { bytes: tx, packets: tx / 100 }, Counter { bytes: rx, packets: rx / 100 }]
    }

    fn meaning(zone: &str, class: TrafficClass) -> SlotMeaning {
        SlotMeaning { dst_zone: zone.into(), dst_zone_id: format!("{zone}-id"), class, subnet: None, billing: Default::default() }
    }

    fn bytes(acc: &Accumulator, zone: &str, dir: Direction) -> u64 {
        acc.totals()
            .iter()
            .filter(|(k, _)| k.dst_zone == zone && k.direction == dir)
            .map(|(_, c)| c.bytes)
            .sum()
    }

    #[test]
    fn slots_of_one_zone_add_up() {
        let mut acc = Accumulator::default();
        let m = |s| Some(meaning(if s < 3 { "b" } else { "c" }, TrafficClass::CrossAz));
        acc.absorb(&[(1, cells(1000, 200)), (2, cells(500, 0)), (3, cells(7, 7))], m);
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 1500);
        assert_eq!(bytes(&acc, "b", Direction::Receive), 200);
        acc.absorb(&[(1, cells(1100, 200)), (2, cells(500, 0)), (3, cells(7, 7))], m);
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 1600);
        assert_eq!(bytes(&acc, "c", Direction::Receive), 7);
    }

    #[test]
    fn relabelled_slot_keeps_old_bytes_where_they_were() {
        let mut acc = Accumulator::default();
        acc.absorb(&[(5, cells(1000, 0))], |_| Some(meaning("b", TrafficClass::CrossAz)));
        acc.absorb(&[(5, cells(1300, 0))], |_| Some(meaning("a", TrafficClass::SameAz)));
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 1000);
        assert_eq!(bytes(&acc, "a", Direction::Transmit), 300);
    }

    #[test]
    fn counter_restart_is_not_a_wraparound() {
        let mut acc = Accumulator::default();
        let m = |_| Some(meaning("b", TrafficClass::CrossAz));
        acc.absorb(&[(1, cells(1000, 0))], m);
        acc.absorb(&[(1, cells(40, 0))], m);
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 1040);
    }

    #[test]
    fn subnet_totals_are_capped_and_still_add_up() {
        let mut acc = Accumulator::default();
        acc.track_subnets(2);
        let net = |s: u32| -> Option<ipnet::IpNet> { format!("10.0.{s}.0/24").parse().ok() };
        let m = |s: u32| Some(SlotMeaning { subnet: if s == 9 { None } else { net(s) }, ..meaning("b", TrafficClass::CrossAz) });
        // Slot 1 takes both directions (two series); slot 2 no longer fits; slot 9 is a catch-all.
        acc.absorb(&[(1, cells(1000, 10)), (2, cells(500, 0)), (9, cells(7, 0))], m);
        acc.absorb(&[(1, cells(1100, 10)), (2, cells(600, 0)), (9, cells(7, 0))], m);
        let (subnets, overflow) = acc.subnet_totals();
        let b = |sub: DstSubnet, dir: Direction| {
            subnets.iter().filter(|((k, s), _)| *s == sub && k.direction == dir).map(|(_, c)| c.bytes).sum::<u64>()
        };
        assert_eq!(b(DstSubnet::Cidr(net(1).expect("net")), Direction::Transmit), 1100);
        assert_eq!(b(DstSubnet::Cidr(net(1).expect("net")), Direction::Receive), 10);
        assert_eq!(b(DstSubnet::Overflow, Direction::Transmit), 600);
        assert_eq!(b(DstSubnet::None, Direction::Transmit), 7);
        assert_eq!(overflow, 1);
        let sum: u64 = subnets.values().map(|c| c.bytes).sum();
        let total: u64 = acc.totals().values().map(|c| c.bytes).sum();
        assert_eq!(sum, total);
        assert_eq!(Accumulator::default().subnet_totals().0.len(), 0);
    }

    #[test]
    fn state_round_trip_continues_the_totals() {
        let mut acc = Accumulator::default();
        acc.track_subnets(1);
        let net = |s: u32| -> Option<ipnet::IpNet> { format!("10.0.{s}.0/24").parse().ok() };
        let m = |s: u32| Some(SlotMeaning { subnet: net(s), ..meaning("b", TrafficClass::CrossAz) });
        acc.absorb(&[(1, cells(1000, 10)), (2, cells(500, 0)), (3, cells(0, 0))], m);
        let state = acc.to_state();
        assert_eq!(state.last.len(), 2, "slots that never counted are left out");
        let mut next = Accumulator::from_state(&state);
        // The new agent reads the same counters grown by 50: exactly 50 more, nothing re-credited.
        next.absorb(&[(1, cells(1050, 10)), (2, cells(500, 0)), (3, cells(0, 0))], m);
        acc.absorb(&[(1, cells(1050, 10)), (2, cells(500, 0)), (3, cells(0, 0))], m);
        assert_eq!(next.totals(), acc.totals());
        assert_eq!(next.subnet_totals(), acc.subnet_totals());
        assert_eq!(next.to_state(), acc.to_state());
    }

    #[test]
    fn unlabelled_slots_are_tracked_but_not_credited() {
        let mut acc = Accumulator::default();
        acc.absorb(&[(9, cells(1000, 0))], |_| None);
        acc.absorb(&[(9, cells(1500, 0))], |_| Some(meaning("b", TrafficClass::CrossAz)));
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 500);
    }
}
