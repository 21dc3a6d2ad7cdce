//! The agent's own health counters that are not kernel counters: failures by kind from the
//! topology sources, the exporters, the drain. Any task may count; the drain copies them into
//! each snapshot so every exporter shows the same numbers.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Names are metric stems: `counter("topology_refresh_failures", "throttled")` is exported as
/// `azflow_topology_refresh_failures_total{kind="throttled"}` and `azflow.agent.topology_refresh_failures`.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    gauges: Mutex<BTreeMap<&'static str, f64>>,
}

pub type Shared = Arc<SelfMetrics>;

/// Bounds label cardinality: kinds beyond this many per name are folded into "other".
pub const MAX_KINDS_PER_NAME: usize = 32;

impl SelfMetrics {
    pub fn new() -> Shared {
        Arc::new(Self::default())
    }

    pub fn incr(&self, name: &'static str, kind: &str) {
        self.add(name, kind, 1);
    }

    pub fn add(&self, name: &'static str, kind: &str, n: u64) {
        let Ok(mut map) = self.counters.lock() else { return };
        let key = (name, kind.to_string());
        if !map.contains_key(&key) && map.keys().filter(|(n, _)| *n == name).count() >= MAX_KINDS_PER_NAME {
            *map.entry((name, "other".to_string())).or_default() += n;
            return;
        }
        *map.entry(key).or_default() += n;
    }

    pub fn set_gauge(&self, name: &'static str, v: f64) {
        if let Ok(mut g) = self.gauges.lock() {
            g.insert(name, v);
        }
    }

    /// (name, kind, value), sorted.
    pub fn counters(&self) -> Vec<(&'static str, String, u64)> {
        self.counters
            .lock()
            .map(|m| m.iter().map(|((n, k), v)| (*n, k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn gauges(&self) -> Vec<(&'static str, f64)> {
        self.gauges.lock().map(|m| m.iter().map(|(n, v)| (*n, *v)).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name_and_kind_with_a_bound() {
        let m = SelfMetrics::new();
        m.incr("export_failures", "timeout");
        m.add("export_failures", "timeout", 2);
        for i in 0..40 {
            m.incr("x", &format!("k{i}"));
        }
        let c = m.counters();
        assert!(c.contains(&("export_failures", "timeout".to_string(), 3)));
        assert_eq!(c.iter().filter(|(n, _, _)| *n == "x").count(), MAX_KINDS_PER_NAME + 1);
        assert!(c.contains(&("x", "other".to_string(), 8)));
    }
}
