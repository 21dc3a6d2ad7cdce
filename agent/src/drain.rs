//! Turning the kernel's per-slot cumulative counters into per-label cumulative totals.
//!
//! Totals grow by the *delta* of each slot since the previous drain, credited to the slot's
//! labels at drain time. So a slot that changes meaning (a subnet re-homed by a topology refresh)
//! never moves bytes already counted, and a kernel counter that goes backwards (maps recreated)
//! restarts cleanly instead of producing a huge wrap-around.

use std::collections::{BTreeMap, HashMap};

use agent_common::{Counter, Direction, TrafficClass};

use crate::{ebpf::maps::SlotCounters, snapshot::FlowKey};

/// What a slot means for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMeaning {
    pub dst_zone: String,
    pub dst_zone_id: String,
    pub class: TrafficClass,
}

#[derive(Debug, Default)]
pub struct Accumulator {
    last: HashMap<u32, SlotCounters>,
    totals: BTreeMap<FlowKey, Counter>,
}

impl Accumulator {
    /// Credits each slot's growth since the previous call to its current meaning. A slot with no
    /// meaning (not in the table any more) is remembered but credited to nobody; `meaning` is
    /// consulted once per slot.
    pub fn absorb(
        &mut self,
        reads: &[(u32, SlotCounters)],
        meaning: impl Fn(u32) -> Option<SlotMeaning>,
    ) {
        for (slot, now) in reads {
            let before = self.last.insert(*slot, *now).unwrap_or_default();
            let Some(m) = meaning(*slot) else { continue };
            for dir in Direction::ALL {
                let d = dir as usize;
                let delta = Counter {
                    bytes: delta(before[d].bytes, now[d].bytes),
                    packets: delta(before[d].packets, now[d].packets),
                };
                if delta == Counter::default() {
                    continue;
                }
                let key = FlowKey {
                    direction: dir,
                    dst_zone: m.dst_zone.clone(),
                    dst_zone_id: m.dst_zone_id.clone(),
                    class: m.class,
                };
                let t = self.totals.entry(key).or_default();
                t.bytes = t.bytes.saturating_add(delta.bytes);
                t.packets = t.packets.saturating_add(delta.packets);
            }
        }
    }

    pub fn totals(&self) -> &BTreeMap<FlowKey, Counter> {
        &self.totals
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
        SlotMeaning { dst_zone: zone.into(), dst_zone_id: format!("{zone}-id"), class }
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
    fn unlabelled_slots_are_tracked_but_not_credited() {
        let mut acc = Accumulator::default();
        acc.absorb(&[(9, cells(1000, 0))], |_| None);
        acc.absorb(&[(9, cells(1500, 0))], |_| Some(meaning("b", TrafficClass::CrossAz)));
        assert_eq!(bytes(&acc, "b", Direction::Transmit), 500);
    }
}
