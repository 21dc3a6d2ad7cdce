//! The ledger: what a pinned agent must hand to the next one so totals continue exactly across a
//! restart, even when subnets came and went in between.
//!
//! Pinned counters alone are not enough. They are per slot and cumulative, but what a slot *means*
//! lives in user space: a slot given up by a removed subnet and handed to a new one carries the old
//! subnet's history, and the bytes counted since the last drain belong to whoever owned the slot
//! then. So beside the pins the agent keeps, in a pinned BPF map (it lives and dies with the
//! counters: a reboot or `azflow uninstall` drops both), two records:
//!
//! - the **table** — the slot allocator, the zone indexes and every slot's labels — written each
//!   time the kernel table changes;
//! - the **accumulator** — each slot's counter as last read, and the per-label totals exported so
//!   far — written after every drain.
//!
//! A new agent credits each slot's growth since that last read to the slot's recorded labels, then
//! carries on from the recorded totals with the recorded allocator, so unchanged subnets keep their
//! slots and a freed slot is reused only as it would have been in one long-lived process. Even
//! after a SIGKILL nothing is lost: the growth since the last drain is still in the counters.

pub mod state;
pub mod store;

pub use state::{AccState, Ledger, TableState};
pub use store::LedgerStore;

/// The ledger's file in the pin directory, beside the maps.
pub const PIN_NAME: &str = "ledger";

/// `TrafficClass` as its kernel id (it lives in the no_std ABI crate, which has no serde).
pub mod class_id {
    use agent_common::TrafficClass;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &TrafficClass, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*c as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrafficClass, D::Error> {
        Ok(TrafficClass::from_u8(u8::deserialize(d)?))
    }
}
