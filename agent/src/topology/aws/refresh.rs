//! Keeps the AWS topology fresh: one pass every interval (±10 % jitter), sooner after an outage,
//! much later while EC2 throttles. A failed pass is counted in
//! `topology_refresh_failures{kind}`, logged once per kind until a pass succeeds again, and
//! changes nothing: the last good topology stays in the kernel.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{AwsError, Discovery, imds::InstanceIdentity, merge_static, topology_from};
use crate::{self_metrics::Shared as SharedSelfMetrics, topology::Topology};

/// After a failure other than throttling, the next pass comes after this, doubling, up to the
/// interval.
pub const RETRY_SOON: Duration = Duration::from_secs(15);
/// Longest wait while throttled.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
pub const JITTER: f64 = 0.1;

/// When the next pass starts, given how many passes in a row failed and whether the last one was
/// throttled; `unit_random` in [0, 1] places it within ±[`JITTER`].
pub fn next_delay(
    interval: Duration,
    failures: u32,
    throttled: bool,
    unit_random: f64,
) -> Duration {
    let base = if failures == 0 {
        interval
    } else if throttled {
        interval
            .saturating_mul(1 << failures.min(10))
            .min(MAX_BACKOFF.max(interval))
    } else {
        RETRY_SOON
            .saturating_mul(1 << (failures - 1).min(10))
            .min(interval)
    };
    base.mul_f64(1.0 + JITTER * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0))
}

/// Which failure kinds were logged since the last success.
#[derive(Debug, Default)]
pub struct LogOnce {
    seen: BTreeSet<&'static str>,
}

impl LogOnce {
    /// True the first time `kind` is seen since the last [`LogOnce::reset`].
    pub fn first(&mut self, kind: &'static str) -> bool {
        self.seen.insert(kind)
    }

    pub fn reset(&mut self) {
        self.seen.clear();
    }
}

pub struct Refresher {
    discovery: Discovery,
    identity: InstanceIdentity,
    static_file: Option<Topology>,
    interval: Duration,
    /// The last good topology, merged with the static file; and AWS's part of it alone.
    last: Topology,
    last_aws: Topology,
    /// The last good routing: kept when only the routing calls fail.
    last_routing: crate::topology::Routing,
    last_success: Option<Instant>,
    failures: u32,
    throttled: bool,
    log: LogOnce,
    metrics: SharedSelfMetrics,
}

impl Refresher {
    /// Starts from `identity` alone (IMDS answered, EC2 not asked yet).
    pub fn new(
        discovery: Discovery,
        identity: InstanceIdentity,
        static_file: Option<Topology>,
        interval: Duration,
        metrics: SharedSelfMetrics,
    ) -> Self {
        let last_routing = discovery.ranges_only(&identity);
        let last_aws = topology_from(&identity, &[]).with_routing(last_routing.clone());
        let last = merge_static(last_aws.clone(), static_file.as_ref());
        Self {
            discovery,
            identity,
            static_file,
            interval,
            last,
            last_aws,
            last_routing,
            last_success: None,
            failures: 0,
            throttled: false,
            log: LogOnce::default(),
            metrics,
        }
    }

    /// The last good topology (merged with the static file).
    pub fn topology(&self) -> &Topology {
        &self.last
    }

    /// What AWS alone says (before the static file is layered on).
    pub fn aws_topology(&self) -> &Topology {
        &self.last_aws
    }

    pub fn identity(&self) -> &InstanceIdentity {
        &self.identity
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// When the next pass is due.
    pub fn next_delay(&self) -> Duration {
        next_delay(
            self.interval,
            self.failures,
            self.throttled,
            fastrand::f64(),
        )
    }

    /// One pass within `deadline`: `Some(topology)` when it changed. Failures are counted and
    /// logged here; the last good topology stays. When only the routing calls fail, the
    /// subnets are updated and the last good routing stays (counted and logged the same way).
    pub async fn refresh(&mut self, deadline: Duration) -> Option<Topology> {
        let started = Instant::now();
        let mut routing_failed = false;
        let result = match tokio::time::timeout(deadline, self.discovery.discover()).await {
            Ok(r) => r,
            Err(_) => Err(AwsError::Deadline(deadline)),
        };
        let result = match result {
            Ok((identity, subnets)) => {
                let left = deadline.saturating_sub(started.elapsed());
                let routing = match tokio::time::timeout(
                    left,
                    self.discovery.discover_routing(&identity, &subnets),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(AwsError::Deadline(deadline)),
                };
                let routing = match routing {
                    Ok(r) => r,
                    Err(e) => {
                        routing_failed = true;
                        self.failed(
                            &e,
                            "keeping the last good routes, NAT gateways, endpoints and peerings",
                        );
                        self.last_routing.clone()
                    }
                };
                Ok((identity, subnets, routing))
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((identity, subnets, routing)) => {
                self.last_routing = routing.clone();
                let aws = topology_from(&identity, &subnets).with_routing(routing);
                let topology = merge_static(aws.clone(), self.static_file.as_ref());
                self.last_aws = aws;
                if !routing_failed {
                    if self.failures > 0 {
                        tracing::info!(
                            failures = self.failures,
                            "AWS topology refresh works again"
                        );
                    }
                    self.failures = 0;
                    self.throttled = false;
                    self.log.reset();
                }
                self.last_success = Some(Instant::now());
                self.identity = identity;
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.metrics
                    .set_gauge("topology_aws_last_success_timestamp_seconds", unix);
                let changed = topology != self.last;
                self.metrics.incr(
                    "topology_refreshes",
                    if changed { "changed" } else { "unchanged" },
                );
                if !changed {
                    return None;
                }
                tracing::info!(
                    subnets = subnets.len(),
                    prefixes = topology.subnets().len(),
                    "AWS topology loaded"
                );
                self.last = topology.clone();
                Some(topology)
            }
            Err(e) => {
                let kept = match self.last_success {
                    Some(t) => format!(
                        "keeping the last good topology ({} prefixes, {}s old)",
                        self.last.subnets().len(),
                        t.elapsed().as_secs()
                    ),
                    None => format!(
                        "keeping the topology from IMDS and the static file ({} prefixes)",
                        self.last.subnets().len()
                    ),
                };
                self.failed(&e, &kept);
                None
            }
        }
    }

    /// Counts and logs (once per kind until a success) a failed pass or routing pass.
    fn failed(&mut self, e: &AwsError, kept: &str) {
        let kind = e.kind();
        self.failures = self.failures.saturating_add(1);
        self.throttled = e.is_throttling();
        self.metrics.incr("topology_refresh_failures", kind);
        if self.log.first(kind) {
            tracing::warn!(kind, "AWS topology refresh failed: {e}; {kept}");
        } else {
            tracing::debug!(kind, "AWS topology refresh failed again: {e}; {kept}");
        }
    }

    /// Runs passes until `stop`; each changed topology goes to `updates`.
    pub fn spawn(
        mut self,
        updates: mpsc::Sender<Topology>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let deadline = self.pass_deadline();
            loop {
                let delay = self.next_delay();
                tracing::debug!(
                    delay_ms = delay.as_millis() as u64,
                    "next AWS topology refresh"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                let changed = tokio::select! {
                    t = self.refresh(deadline) => t,
                    _ = stop.changed() => return,
                };
                if let Some(t) = changed
                    && updates.send(t).await.is_err()
                {
                    return;
                }
            }
        })
    }

    /// The most one pass may take: every page's attempts are bounded separately, this bounds
    /// the whole.
    fn pass_deadline(&self) -> Duration {
        Duration::from_secs(300).max(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn success_waits_one_interval_with_ten_percent_jitter() {
        let i = 5 * MIN;
        assert_eq!(next_delay(i, 0, false, 0.5), i);
        assert_eq!(next_delay(i, 0, false, 0.0), i.mul_f64(0.9));
        assert_eq!(next_delay(i, 0, false, 1.0), i.mul_f64(1.1));
    }

    #[test]
    fn throttling_doubles_the_wait_up_to_an_hour() {
        let i = 5 * MIN;
        let d: Vec<Duration> = (1..=5).map(|n| next_delay(i, n, true, 0.5)).collect();
        assert_eq!(d, [10 * MIN, 20 * MIN, 40 * MIN, 60 * MIN, 60 * MIN]);
        let short = Duration::from_secs(1);
        assert_eq!(next_delay(short, 1, true, 0.5), Duration::from_secs(2));
        assert_eq!(next_delay(short, 3, true, 0.5), Duration::from_secs(8));
    }

    #[test]
    fn other_failures_retry_sooner_but_never_later_than_the_interval() {
        let i = 5 * MIN;
        let d: Vec<Duration> = (1..=6).map(|n| next_delay(i, n, false, 0.5)).collect();
        let secs: Vec<u64> = d.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [15, 30, 60, 120, 240, 300]);
        assert_eq!(
            next_delay(Duration::from_secs(2), 1, false, 0.5),
            Duration::from_secs(2)
        );
        assert_eq!(next_delay(i, u32::MAX, true, 0.5), MAX_BACKOFF);
    }

    #[test]
    fn each_kind_is_logged_once_until_a_success() {
        let mut l = LogOnce::default();
        assert!(l.first("throttled"));
        assert!(!l.first("throttled"));
        assert!(l.first("timeout"));
        l.reset();
        assert!(l.first("throttled"));
    }
}
