//! Crediting the bytes the kernel held for NAT-pending connections, once per drain.
//!
//! A held connection's growth is credited to its real remote end as soon as the NAT map names it,
//! or to its pre-NAT destination (and the unresolved counters) once it has waited longer than the
//! timeout; then the kernel is told to stop holding it. An entry leaves the map only after it is
//! settled and has not grown for a whole drain, so a packet in flight is never lost. Pure over
//! [`PendingMaps`], so tests drive it with plain values.

use std::collections::HashMap;

use agent_common::{
    Counter, Direction,
    nat::{NatKey, NatTarget, PendingValue, target},
};

/// The kernel side of the sweep.
pub trait PendingMaps {
    fn pending(&self) -> Vec<(NatKey, PendingValue)>;
    fn nat(&self, key: &NatKey) -> Option<NatTarget>;
    /// Tells the kernel to count this connection under its pre-NAT destination from now on.
    fn give_up(&mut self, key: &NatKey);
    /// Drops the pending entry, and its mapping when `settled` (the socket resolved in its own
    /// cache and needs the mapping no more). A socket that sent nothing since its mapping came
    /// still needs it for its next packet.
    fn forget(&mut self, key: &NatKey, settled: bool);
    /// The counter slot of an address (the kernel's own longest-prefix match).
    fn slot_of(&self, family: u8, addr: [u8; 16]) -> Option<u32>;
}

/// Bytes to credit to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    pub slot: u32,
    pub direction: Direction,
    pub counter: Counter,
    /// Credited under the pre-NAT destination because no mapping came.
    pub unresolved: bool,
    /// The socket's workload index, so held bytes reach the workload totals too.
    pub workload: u16,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Bytes still held (not yet in any total).
    pub held_bytes: u64,
    pub held_connections: u64,
    /// Connections given up on in this sweep.
    pub gave_up: u64,
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    Slot(u32),
    Unresolved(u32),
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    credited: PendingValue,
    verdict: Option<Verdict>,
    /// Sweeps in a row without growth after the verdict.
    quiet: u32,
}

#[derive(Debug)]
pub struct PendingSweep {
    timeout_ns: u64,
    tracked: HashMap<NatKey, Tracked>,
}

impl PendingSweep {
    pub fn new(timeout: std::time::Duration) -> Self {
        Self { timeout_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX), tracked: HashMap::new() }
    }

    /// One sweep at monotonic time `now_ns` (the clock of `bpf_ktime_get_ns`).
    pub fn sweep(&mut self, maps: &mut impl PendingMaps, now_ns: u64, credits: &mut Vec<Credit>) -> SweepOutcome {
        let mut out = SweepOutcome::default();
        let entries = maps.pending();
        let mut present = std::collections::HashSet::with_capacity(entries.len());
        for (key, value) in entries {
            present.insert(key);
            let t = self.tracked.entry(key).or_insert(Tracked { credited: PendingValue::default(), verdict: None, quiet: 0 });
            // A value smaller than what was credited is a new entry under a reused key.
            if value.bytes[0] < t.credited.bytes[0] || value.bytes[1] < t.credited.bytes[1] {
                *t = Tracked { credited: PendingValue::default(), verdict: None, quiet: 0 };
            }
            if t.verdict.is_none() {
                t.verdict = match maps.nat(&key) {
                    Some(n) if n.state == target::RESOLVED => Some(maps.slot_of(n.family, n.remote).map_or(Verdict::Unresolved(value.pre_slot), Verdict::Slot)),
                    Some(_) => Some(Verdict::Unresolved(value.pre_slot)),
                    None if now_ns.saturating_sub(value.first_ns) >= self.timeout_ns => {
                        maps.give_up(&key);
                        out.gave_up += 1;
                        Some(Verdict::Unresolved(value.pre_slot))
                    }
                    None => None,
                };
            }
            let Some(verdict) = t.verdict else {
                out.held_bytes += value.bytes[0] + value.bytes[1];
                out.held_connections += 1;
                continue;
            };
            let (slot, unresolved) = match verdict {
                Verdict::Slot(s) => (s, false),
                Verdict::Unresolved(s) => (s, true),
            };
            let mut grew = false;
            for dir in Direction::ALL {
                let d = dir as usize;
                let counter = Counter { bytes: value.bytes[d] - t.credited.bytes[d], packets: value.packets[d].saturating_sub(t.credited.packets[d]) };
                if counter != Counter::default() {
                    grew = true;
                    credits.push(Credit { slot, direction: dir, counter, unresolved, workload: value.workload });
                }
            }
            t.credited = value;
            t.quiet = if grew { 0 } else { t.quiet + 1 };
            // Settled and quiet for a whole drain: no packet can still be on its way into it.
            if t.quiet >= 1 && (value.done != 0 || t.quiet >= 2) {
                maps.forget(&key, value.done != 0);
                self.tracked.remove(&key);
            }
        }
        self.tracked.retain(|k, _| present.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Fake {
        pending: HashMap<NatKey, PendingValue>,
        nat: HashMap<NatKey, NatTarget>,
        given_up: Vec<NatKey>,
    }

    impl PendingMaps for Fake {
        fn pending(&self) -> Vec<(NatKey, PendingValue)> {
            self.pending.iter().map(|(k, v)| (*k, *v)).collect()
        }
        fn nat(&self, key: &NatKey) -> Option<NatTarget> {
            self.nat.get(key).copied()
        }
        fn give_up(&mut self, key: &NatKey) {
            self.given_up.push(*key);
            self.nat.insert(*key, NatTarget { state: target::UNRESOLVED, ..NatTarget::default() });
        }
        fn forget(&mut self, key: &NatKey, settled: bool) {
            self.pending.remove(key);
            if settled {
                self.nat.remove(key);
            }
        }
        fn slot_of(&self, _family: u8, addr: [u8; 16]) -> Option<u32> {
            Some(u32::from(addr[2]) * 100)
        }
    }

    fn key(port: u16) -> NatKey {
        NatKey { family: 4, local_port: port, remote_port: 80, ..NatKey::default() }
    }

    fn held(tx: u64, rx: u64) -> PendingValue {
        PendingValue { bytes: [tx, rx], packets: [tx / 100, rx / 100], pre_slot: 3, done: 0, workload: 0, first_ns: 1_000 }
    }

    fn total(credits: &[Credit], slot: u32) -> u64 {
        credits.iter().filter(|c| c.slot == slot).map(|c| c.counter.bytes).sum()
    }

    #[test]
    fn held_bytes_go_to_the_backend_once_named_and_exactly_once() {
        let mut maps = Fake::default();
        let mut sweep = PendingSweep::new(std::time::Duration::from_secs(10));
        let mut credits = Vec::new();
        maps.pending.insert(key(1), held(600, 0));
        let o = sweep.sweep(&mut maps, 2_000, &mut credits);
        assert_eq!((o.held_bytes, o.held_connections), (600, 1));
        assert!(credits.is_empty());
        // conntrack named the backend (10.0.2.x → slot 200); more bytes were held meanwhile.
        maps.nat.insert(key(1), NatTarget { remote: [10, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], family: 4, state: target::RESOLVED, _pad: [0; 2] });
        maps.pending.insert(key(1), held(900, 300));
        sweep.sweep(&mut maps, 3_000, &mut credits);
        assert_eq!(total(&credits, 200), 1200);
        // The socket resolved and stopped adding: one quiet sweep later the entry goes.
        maps.pending.get_mut(&key(1)).expect("entry").done = 1;
        sweep.sweep(&mut maps, 4_000, &mut credits);
        assert!(maps.pending.is_empty());
        assert_eq!(total(&credits, 200), 1200);
        assert!(credits.iter().all(|c| !c.unresolved));
    }

    #[test]
    fn no_mapping_within_the_timeout_is_unresolved_under_the_pre_nat_slot() {
        let mut maps = Fake::default();
        let mut sweep = PendingSweep::new(std::time::Duration::from_nanos(5_000));
        let mut credits = Vec::new();
        maps.pending.insert(key(2), held(500, 100));
        sweep.sweep(&mut maps, 3_000, &mut credits);
        assert!(credits.is_empty());
        sweep.sweep(&mut maps, 7_000, &mut credits);
        assert_eq!(maps.given_up, vec![key(2)]);
        assert_eq!(total(&credits, 3), 600);
        assert!(credits.iter().all(|c| c.unresolved));
        // A closed socket (never done): forgotten after two quiet sweeps.
        sweep.sweep(&mut maps, 8_000, &mut credits);
        assert_eq!(maps.pending.len(), 1);
        sweep.sweep(&mut maps, 9_000, &mut credits);
        assert!(maps.pending.is_empty());
        assert_eq!(total(&credits, 3), 600);
    }

    #[test]
    fn a_quiet_socket_that_never_saw_its_mapping_keeps_it() {
        let mut maps = Fake::default();
        let mut sweep = PendingSweep::new(std::time::Duration::from_secs(10));
        let mut credits = Vec::new();
        let resolved = NatTarget { remote: [10, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], family: 4, state: target::RESOLVED, _pad: [0; 2] };
        maps.nat.insert(key(4), resolved);
        maps.pending.insert(key(4), held(700, 70));
        for now in [2_000, 3_000, 4_000] {
            sweep.sweep(&mut maps, now, &mut credits);
        }
        // Credited once and dropped from the pending map, but the socket (idle, still pending in
        // the kernel) must find its mapping on its next packet.
        assert!(maps.pending.is_empty());
        assert_eq!(maps.nat.get(&key(4)), Some(&resolved));
        assert_eq!(total(&credits, 200), 770);
    }

    #[test]
    fn a_reused_key_starts_from_zero() {
        let mut maps = Fake::default();
        let mut sweep = PendingSweep::new(std::time::Duration::from_secs(10));
        let mut credits = Vec::new();
        maps.nat.insert(key(3), NatTarget { remote: [10, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], family: 4, state: target::RESOLVED, _pad: [0; 2] });
        maps.pending.insert(key(3), held(1000, 0));
        sweep.sweep(&mut maps, 2_000, &mut credits);
        maps.pending.insert(key(3), held(200, 0));
        sweep.sweep(&mut maps, 3_000, &mut credits);
        assert_eq!(total(&credits, 100), 1200);
    }
}
