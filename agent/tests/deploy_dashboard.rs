//! The Grafana dashboard, statically: its variables, a unit and the datasource variable on every
//! panel, `$__rate_interval` (or `$__range`) in every rate, only metrics the agent exports, a panel
//! for everything it promises, no overlapping panels; and every query parses in a real Prometheus
//! (the Debian `prometheus` binary, no targets). `ebpf_dashboards.rs` runs the same queries against
//! the agent in the test bed and checks they return data.

mod deploy_support;

use std::collections::{BTreeMap, BTreeSet};

use deploy_support::{
    agent_exports, agent_source, dashboard, metric_names, panels, prometheus::Prometheus, queries,
    substitute, tool,
};
use serde_json::Value;

fn variable<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no dashboard variable {name}"))
}

#[test]
fn variables_are_datasource_cluster_region_az_and_price() {
    let d = dashboard();
    let ds = variable(&d, "datasource");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    for (name, label) in [("cluster", "cluster"), ("region", "region"), ("az", "zone")] {
        let v = variable(&d, name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "{name} queries the chosen datasource"
        );
        let q = v["query"]["query"].as_str().unwrap_or_default();
        assert!(
            q.starts_with("label_values(azflow_build_info") && q.ends_with(&format!(", {label})")),
            "{name}: {q}"
        );
        assert_eq!(v["includeAll"], true, "{name} offers All");
    }
    // The AZ list follows the region choice, and "All" means the listed zones (no catch-all).
    assert!(
        variable(&d, "az")["query"]["query"]
            .as_str()
            .unwrap_or_default()
            .contains("region=~\"$region\"")
    );
    assert!(variable(&d, "az").get("allValue").is_none());
    let price = variable(&d, "price_per_gb");
    assert_eq!(price["query"], "0.01");
    assert_eq!(price["current"]["value"], "0.01");
}

#[test]
fn every_panel_has_a_unit_the_datasource_variable_and_queries() {
    let d = dashboard();
    let all = panels(&d);
    assert!(all.len() >= 20, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: duplicate id"
        );
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "{title}: no unit");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: panel datasource"
        );
        let qs = queries(p);
        assert!(!qs.is_empty(), "{title}: no query");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: target datasource"
            );
        }
        if unit == "currencyUSD" {
            // Dollars are either the agent's own (its price table, every billing path) or the
            // simple override: bytes ÷ 2^30 × $price_per_gb.
            for q in &qs {
                let agent_priced = q.expr.contains("azflow_cost_usd_total") && !q.expr.contains("$price_per_gb");
                let overridden = q.expr.contains("$price_per_gb") && q.expr.contains("/ 2^30");
                assert!(
                    agent_priced || overridden,
                    "{title}: dollars are azflow_cost_usd_total, or bytes ÷ 2^30 × $price_per_gb: {}",
                    q.expr
                );
            }
        }
        assert!(
            p["description"].as_str().is_some_and(|s| s.len() > 20),
            "{title}: says what it shows"
        );
    }
}

/// Range selectors are `[$__rate_interval]` in rates over time and `[$__range]` in totals of the
/// selected range; never a fixed window.
#[test]
fn every_range_is_rate_interval_or_range_and_every_query_filters_by_cluster() {
    let d = dashboard();
    for p in panels(&d) {
        for q in queries(&p) {
            let mut rest = q.expr.as_str();
            let mut ranges = 0;
            while let Some(open) = rest.find('[') {
                let close = rest[open..].find(']').expect("closing bracket") + open;
                let window = &rest[open + 1..close];
                assert!(
                    window == "$__rate_interval" || window == "$__range",
                    "{}/{}: window [{window}] in {}",
                    q.panel,
                    q.ref_id,
                    q.expr
                );
                if p["type"] == "timeseries" {
                    assert_eq!(
                        window, "$__rate_interval",
                        "{}: a time series rate uses $__rate_interval",
                        q.panel
                    );
                }
                ranges += 1;
                rest = &rest[close..];
            }
            for f in ["rate(", "increase("] {
                if q.expr.contains(f) {
                    assert!(ranges > 0, "{}: {f} without a range", q.panel);
                }
            }
            assert!(
                q.expr.contains("cluster=~\"$cluster\""),
                "{}/{}: not filtered by $cluster: {}",
                q.panel,
                q.ref_id,
                q.expr
            );
        }
    }
}

#[test]
fn every_query_uses_only_metrics_the_agent_exports() {
    let source = agent_source();
    for p in panels(&dashboard()) {
        for q in queries(&p) {
            for name in metric_names(&q.expr) {
                assert!(
                    agent_exports(&source, &name),
                    "{}: {name} is not a metric the agent exports",
                    q.panel
                );
            }
        }
    }
}

#[test]
fn dashboard_has_a_panel_for_everything_it_promises() {
    let d = dashboard();
    let all = panels(&d);
    let find = |needle: &str| -> Value {
        all.iter()
            .find(|p| p["title"].as_str().is_some_and(|t| t.contains(needle)))
            .cloned()
            .unwrap_or_else(|| panic!("no panel titled …{needle}…"))
    };
    for (needle, unit) in [
        ("AZ → AZ bytes", "bytes"),
        ("AZ → AZ $", "currencyUSD"),
        ("Cross-AZ $/day", "currencyUSD"),
        ("Projected $/month", "currencyUSD"),
        ("Top destination subnets", "bytes"),
        ("Unmapped destinations", "bytes"),
        ("Same-AZ share (AZ-affinity score)", "percentunit"),
        ("RTT p50 / p99", "s"),
        ("Workload RTT p50 / p99 to each AZ", "s"),
        ("Connect time", "s"),
        ("Retransmits", "cps"),
        ("Export and drain failures", "cps"),
        ("Drain duration", "s"),
        ("Topology age", "s"),
    ] {
        let p = find(needle);
        assert_eq!(p["fieldConfig"]["defaults"]["unit"], unit, "{needle}");
    }
    // The two matrices: source zone rows, destination zone columns.
    for needle in ["AZ → AZ bytes", "AZ → AZ $"] {
        let p = find(needle);
        let m = p["transformations"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == "groupingToMatrix"))
            .cloned()
            .expect("groupingToMatrix");
        assert_eq!(
            (
                m["options"]["rowField"].as_str(),
                m["options"]["columnField"].as_str()
            ),
            (Some("src_zone"), Some("dst_zone")),
            "{needle}"
        );
        assert!(
            queries(&p).iter().all(|q| q.instant),
            "{needle}: one value per cell"
        );
    }
    for (needle, q) in [
        ("RTT p50 / p99", ["0.5", "0.99"]),
        ("Workload RTT p50 / p99 to each AZ", ["0.5", "0.99"]),
        ("Connect time", ["0.5", "0.99"]),
    ] {
        let exprs: Vec<String> = queries(&find(needle)).into_iter().map(|q| q.expr).collect();
        for quantile in q {
            assert!(
                exprs
                    .iter()
                    .any(|e| e.starts_with(&format!("histogram_quantile({quantile},"))),
                "{needle}: no {quantile} quantile"
            );
        }
    }
}

#[test]
fn panels_do_not_overlap() {
    let d = dashboard();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in d["panels"].as_array().expect("panels") {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24, "{}: wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) =
                    cells.insert((cx, cy), p["title"].as_str().unwrap_or("?").to_string())
                {
                    panic!("{} overlaps {other} at ({cx}, {cy})", p["title"]);
                }
            }
        }
    }
}

/// Every query, its variables substituted, is valid PromQL for a real Prometheus.
#[test]
fn every_query_parses_in_prometheus() {
    let Some(binary) = tool("prometheus", "Debian prometheus") else {
        return;
    };
    let prom = Prometheus::start(&binary, &[], "none");
    let vars: BTreeMap<&str, String> = [
        ("cluster", "prod"),
        ("region", "us-east-1"),
        ("az", "(us-east-1a|us-east-1b)"),
        ("price_per_gb", "0.01"),
        ("__rate_interval", "1m"),
        ("__range", "1h"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    let now = deploy_support::prometheus::unix_now();
    let mut n = 0;
    for p in panels(&dashboard()) {
        for q in queries(&p) {
            let expr = substitute(&q.expr, &vars);
            assert!(
                !expr.contains('$'),
                "{}: unsubstituted variable in {expr}",
                q.panel
            );
            prom.query(&expr, now);
            n += 1;
        }
    }
    println!("{n} queries parsed");
}
