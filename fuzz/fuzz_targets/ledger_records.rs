//! Restart-ledger records as a new agent reads them back from the pinned map: any bytes decode to
//! a record or an error, never a panic, and a decoded record builds an accumulator and an
//! allocator (or is refused for the map size) without one.

#![no_main]

use azflow::{
    drain::Accumulator,
    ledger::{AccState, TableState, state::decode},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(acc) = decode::<AccState>(data) {
        let acc = Accumulator::from_state(&acc);
        let _ = acc.to_state();
    }
    if let Ok(table) = decode::<TableState>(data) {
        let _ = table.slots.restored(1 << 16);
        let _ = table.zones.get(0);
    }
});
