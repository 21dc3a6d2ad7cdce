//! `/readyz`: ready while the kernel still runs our programs and the drain keeps up. `/healthz`
//! stays a liveness check (the process answers), so a detached or stalled agent is taken out of
//! rotation and alerted on, not restarted in a loop.

use std::time::{Duration, SystemTime};

use crate::{ebpf::attachment::AttachmentCheck, snapshot::Snapshot};

/// A drain may be late by this many intervals before the agent stops being ready: one missed
/// tick is scheduling noise, three is a stalled or failing drain.
pub const STALE_INTERVALS: u32 = 3;

#[derive(Debug, Clone)]
pub struct Readiness {
    pub drain_interval: Duration,
    /// `None` only where nothing is attached on purpose (tests of the HTTP surface).
    pub attachment: Option<AttachmentCheck>,
}

impl Readiness {
    /// `Err` says why the agent is not ready, in one line.
    pub fn check(&self, snap: &Snapshot, now: SystemTime) -> Result<(), String> {
        drain_is_fresh(snap.taken_at, now, self.drain_interval)?;
        match &self.attachment {
            Some(a) => a.verify(),
            None => Ok(()),
        }
    }
}

/// The last successful drain (`taken_at`; a failed drain keeps the previous snapshot and so its
/// time) is at most [`STALE_INTERVALS`] drain intervals old.
pub fn drain_is_fresh(
    taken_at: Option<SystemTime>,
    now: SystemTime,
    interval: Duration,
) -> Result<(), String> {
    let Some(taken) = taken_at else {
        return Err("no successful drain yet".into());
    };
    // A clock stepped backwards makes the drain look as if from the future: fresh.
    let age = now.duration_since(taken).unwrap_or_default();
    let limit = interval * STALE_INTERVALS;
    if age > limit {
        return Err(format!(
            "last successful drain {:.1}s ago, over {STALE_INTERVALS} drain intervals ({:.1}s)",
            age.as_secs_f64(),
            limit.as_secs_f64()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(ms: u64) -> SystemTime {
        T0 + Duration::from_millis(ms)
    }

    #[test]
    fn fresh_up_to_three_intervals_then_stale() {
        let i = Duration::from_secs(5);
        assert!(drain_is_fresh(Some(at(0)), at(0), i).is_ok());
        assert!(drain_is_fresh(Some(at(0)), at(15_000), i).is_ok());
        let e = drain_is_fresh(Some(at(0)), at(15_001), i).expect_err("15.001 s > 3 × 5 s");
        assert_eq!(
            e,
            "last successful drain 15.0s ago, over 3 drain intervals (15.0s)"
        );
        assert!(drain_is_fresh(Some(at(100_000)), at(160_000), Duration::from_secs(30)).is_ok());
        assert!(drain_is_fresh(Some(at(100_000)), at(190_001), Duration::from_secs(30)).is_err());
    }

    #[test]
    fn no_drain_yet_is_not_ready_and_a_clock_step_back_is_not_stale() {
        assert_eq!(
            drain_is_fresh(None, at(1), Duration::from_secs(5)),
            Err("no successful drain yet".into())
        );
        assert!(drain_is_fresh(Some(at(10_000)), at(0), Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn readiness_follows_the_snapshot_time() {
        let r = Readiness {
            drain_interval: Duration::from_millis(500),
            attachment: None,
        };
        let snap = Snapshot {
            taken_at: Some(at(1_000)),
            ..Snapshot::default()
        };
        assert!(r.check(&snap, at(2_500)).is_ok());
        assert!(r.check(&snap, at(2_501)).is_err());
        assert!(r.check(&Snapshot::default(), at(0)).is_err());
    }
}
