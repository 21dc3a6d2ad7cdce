//! Per-workload series, named once for both exporters: one label builder gives each label's
//! Prometheus name and OTLP attribute name, and the self-metrics list the caps and what was
//! folded into `other`.
//!
//! | OTLP | Prometheus |
//! |---|---|
//! | `azflow.workload.tcp.bytes` (By) | `azflow_workload_tcp_bytes_total` |
//! | `azflow.workload.tcp.rtt` (s, histogram) | `azflow_workload_tcp_rtt_seconds` |
//! | `azflow.workload.X` | `azflow_workload_X` / `azflow_workload_X_total` |
//!
//! Labels: `workload`/`azflow.workload.name`, `workload_kind`/`azflow.workload.kind`,
//! `namespace`/`k8s.namespace.name`, and with `--workload-pod-labels` `pod`/`k8s.pod.name`,
//! `container`/`container.name`; then direction (bytes only), source and destination zone,
//! traffic class.

use crate::snapshot::{HostLabels, WorkloadFlowKey, WorkloadLabels, WorkloadStats, ZoneKey};

/// One label: (Prometheus name, OTLP attribute, value).
pub type Label<'a> = (&'static str, &'static str, &'a str);

/// Labels of a per-workload byte series.
pub fn flow_labels<'a>(host: &'a HostLabels, k: &'a WorkloadFlowKey) -> Vec<Label<'a>> {
    let mut out = workload_labels(&k.workload);
    out.push(("direction", "network.io.direction", k.direction.as_str()));
    out.extend(zone_labels(host, &k.dst));
    out
}

/// Labels of a per-workload RTT histogram: the byte series' labels without the direction.
pub fn row_labels<'a>(host: &'a HostLabels, w: &'a WorkloadLabels, dst: &'a ZoneKey) -> Vec<Label<'a>> {
    let mut out = workload_labels(w);
    out.extend(zone_labels(host, dst));
    out
}

fn workload_labels(w: &WorkloadLabels) -> Vec<Label<'_>> {
    let mut out = vec![
        ("workload", "azflow.workload.name", w.name.as_str()),
        ("workload_kind", "azflow.workload.kind", w.kind.as_str()),
        ("namespace", "k8s.namespace.name", w.namespace.as_str()),
    ];
    if let Some(p) = &w.pod {
        out.push(("pod", "k8s.pod.name", p.as_str()));
    }
    if let Some(c) = &w.container {
        out.push(("container", "container.name", c.as_str()));
    }
    out
}

fn zone_labels<'a>(host: &'a HostLabels, dst: &'a ZoneKey) -> [Label<'a>; 5] {
    [
        ("src_zone", "src.zone", host.zone.as_str()),
        ("dst_zone", "dst.zone", dst.dst_zone.as_str()),
        ("src_zone_id", "src.zone_id", host.zone_id.as_str()),
        ("dst_zone_id", "dst.zone_id", dst.dst_zone_id.as_str()),
        ("traffic_class", "azflow.traffic.class", dst.class.as_str()),
    ]
}

pub enum Kind {
    Counter,
    Gauge,
}

pub struct Series {
    /// Without prefix or suffix: Prometheus `azflow_workload_<name>[_total]`, OTLP
    /// `azflow.workload.<name>`.
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub help: &'static str,
    pub points: Vec<(Option<(&'static str, &'static str)>, u64)>,
}

/// Self-metrics of workload attribution (empty while it is off).
pub fn stats_series(s: &WorkloadStats) -> Vec<Series> {
    if !s.enabled {
        return Vec::new();
    }
    vec![
        Series {
            name: "caps",
            kind: Kind::Gauge,
            unit: "1",
            help: "Workload limits: kernel indices (host and other included), cgroups the kernel maps, (workload, destination) RTT histograms the kernel keeps (0: --workload-rtt off), exported workload series.",
            points: vec![
                (Some(("cap", "kernel_indices")), u64::from(s.index_capacity)),
                (
                    Some(("cap", "kernel_cgroups")),
                    u64::from(s.cgroup_capacity),
                ),
                (Some(("cap", "kernel_rtt_histograms")), u64::from(s.rtt_entries)),
                (Some(("cap", "series")), s.series_cap),
            ],
        },
        Series {
            name: "count",
            kind: Kind::Gauge,
            unit: "1",
            help: "Live cgroups, cgroups counted as other (beyond the kernel index cap), workloads holding an index, workloads exported with series of their own.",
            points: vec![
                (Some(("of", "cgroups")), s.cgroups),
                (Some(("of", "other_cgroups")), s.other_cgroups),
                (Some(("of", "indexed_workloads")), s.workloads),
                (Some(("of", "series_workloads")), s.series_workloads),
            ],
        },
        Series {
            name: "folded",
            kind: Kind::Counter,
            unit: "1",
            help: "What went to workload=\"other\", by reason: index_cap (cgroups beyond --max-workloads), series_cap (workloads beyond --workload-series), map_full (cgroups beyond --workload-max-cgroups), unknown_socket (sockets whose cgroup was not named yet), unknown_gone (of those, cgroups gone before they could be named).",
            points: vec![
                (Some(("reason", "index_cap")), s.index_overflow_total),
                (Some(("reason", "series_cap")), s.series_folded_total),
                (Some(("reason", "map_full")), s.map_full_total),
                (Some(("reason", "unknown_socket")), s.unknown_total),
                (Some(("reason", "unknown_gone")), s.unknown_gone_total),
            ],
        },
        Series {
            name: "events",
            kind: Kind::Counter,
            unit: "{event}",
            help: "Workload attribution events: kernel cgroup resolutions, unknown cgroup ids read, cgroup walks, walk and runtime-state errors, indices released.",
            points: vec![
                (Some(("kind", "resolved")), s.resolved_total),
                (Some(("kind", "unknown_read")), s.unknown_read_total),
                (Some(("kind", "walks")), s.walks_total),
                (Some(("kind", "walk_errors")), s.walk_errors_total),
                (Some(("kind", "runtime_errors")), s.runtime_errors_total),
                (Some(("kind", "released")), s.released_total),
            ],
        },
    ]
}
