//! Who sent a byte, in the kernel: each socket's cgroup v2 id is resolved once (per workload
//! generation) to a small index that user space assigns, and every counted byte is also added to
//! `AZF_WL_COUNTERS[cell(index, row, direction)]`, where `row` is the destination's latency row
//! (`hist::row`: its zone, or its class for catch-all ranges).
//!
//! ```text
//!  socket cache: workload_generation current? ─yes─► cached index
//!      │ no
//!      └─► bpf_sk_cgroup_id ─► AZF_WORKLOAD_IDX[cgroup id]? ─┬─ index (< capacity) ─► cached
//!                                                            └─ none ─► OTHER, cached; the id goes
//!                                                               to AZF_WL_UNKNOWN for user space
//! ```
//!
//! The host totals (`AZF_COUNTERS`) are unchanged: every byte is added there exactly as before,
//! and once more under its workload, so the sum over workloads equals the host total by
//! construction. User space bumps `State::workload_generation` after writing new ids, and every
//! socket resolves again on its next packet — a socket counted under `other` because its cgroup
//! was not known yet moves to its workload from then on.

use crate::{Direction, hist};

/// The host's own processes (cgroups no other rule names).
pub const HOST_INDEX: u32 = 0;
/// cgroups without an index: not known yet, gone before user space saw them, or beyond the cap.
pub const OTHER_INDEX: u32 = 1;

/// Destination rows per workload: the latency rows (zones, then one per class).
pub const ROWS: u32 = hist::ROWS;

/// Cells of `AZF_WL_COUNTERS` for `indices` workload indices (host and other included).
pub const fn cells(indices: u32) -> u32 {
    indices.saturating_mul(ROWS).saturating_mul(2)
}

/// Cell of a workload's counter for one destination row and direction.
#[inline(always)]
pub const fn cell(index: u32, row: u32, dir: Direction) -> u32 {
    index
        .wrapping_mul(ROWS)
        .wrapping_add(row)
        .wrapping_mul(2)
        .wrapping_add(dir as u32)
}

/// The index a socket counts under, from what `AZF_WORKLOAD_IDX` said about its cgroup. An
/// index user space never hands out (beyond the map's capacity) counts as `other`, so a cell
/// index can never leave the array.
#[inline(always)]
pub const fn resolve(found: Option<u32>, capacity: u32) -> Resolved {
    match found {
        Some(i) if i < capacity => Resolved {
            index: i,
            unknown: false,
        },
        Some(_) => Resolved {
            index: OTHER_INDEX,
            unknown: false,
        },
        None => Resolved {
            index: OTHER_INDEX,
            unknown: true,
        },
    }
}

/// Outcome of [`resolve`]: `unknown` cgroups are recorded for user space to name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub index: u32,
    pub unknown: bool,
}

/// Cells of the per-CPU `AZF_WL_STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadStat {
    /// Socket resolutions (first packet, or after a workload generation bump).
    Resolved = 0,
    /// Resolutions whose cgroup had no index yet: counted under `other`.
    Unknown = 1,
    /// Packets without a full socket (handshake, time-wait) whose cgroup was looked up per packet.
    Uncached = 2,
}

impl WorkloadStat {
    pub const COUNT: u32 = 3;
    pub const ALL: [Self; 3] = [Self::Resolved, Self::Unknown, Self::Uncached];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Unknown => "unknown",
            Self::Uncached => "uncached",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_do_not_overlap_and_fit() {
        let n = 5;
        let mut seen = [false; cells(5) as usize];
        for i in 0..n {
            for r in 0..ROWS {
                for d in Direction::ALL {
                    let c = cell(i, r, d) as usize;
                    assert!(c < seen.len());
                    assert!(!seen[c], "cell {c} twice");
                    seen[c] = true;
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn unknown_and_out_of_range_count_as_other() {
        assert_eq!(
            resolve(Some(7), 202),
            Resolved {
                index: 7,
                unknown: false
            }
        );
        assert_eq!(
            resolve(Some(0), 202),
            Resolved {
                index: HOST_INDEX,
                unknown: false
            }
        );
        assert_eq!(
            resolve(Some(202), 202),
            Resolved {
                index: OTHER_INDEX,
                unknown: false
            }
        );
        assert_eq!(
            resolve(None, 202),
            Resolved {
                index: OTHER_INDEX,
                unknown: true
            }
        );
    }
}
