//! The fleet recording rules (`dashboards/recording/`): `promtool check rules`, `promtool test
//! rules` (cost per zone pair, affinity and per-workload figures computed by hand from the input
//! series), metric names the agent really exports, yamllint, and a dashboard that reads the rules
//! where they exist and the raw counters where they do not.
//! Tools: promtool (Debian prometheus), yamllint (the project venv); without them the tests skip,
//! and with `AZFLOW_REQUIRE_EBPF=1` (CI, or `cargo xtask test` as root) they fail.

mod deploy_support;

use std::process::Command;

use deploy_support::{
    agent_exports, agent_source, dashboard, metric_names, panels, queries, recorded_names, repo,
    run_ok, tool,
};

const RULES: &str = "dashboards/recording/azflow.recording.yaml";

/// `record:` names in the rules file.
fn recorded() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(RULES)).expect("rules");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn recording_rules_pass_promtool_check_and_tests() {
    let Some(promtool) = tool("promtool", "Debian prometheus") else {
        return;
    };
    let out = run_ok(
        Command::new(&promtool).args(["check", "rules", RULES]),
        "promtool check rules",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", recorded().len())),
        "{text}"
    );
    run_ok(
        Command::new(&promtool).args([
            "test",
            "rules",
            "dashboards/recording/tests/fleet.test.yaml",
        ]),
        "promtool test rules",
    );
}

#[test]
fn every_recording_rule_is_tested_and_reads_only_agent_metrics() {
    let names = recorded();
    assert!(names.len() >= 6, "{names:?}");
    let tests = std::fs::read_to_string(repo().join("dashboards/recording/tests/fleet.test.yaml"))
        .expect("tests");
    for name in &names {
        assert!(
            tests.contains(&format!("- expr: {name}"))
                || tests.contains(&format!("expr: count({name})")),
            "{name} has no promql_expr_test"
        );
    }
    let source = agent_source();
    let text = std::fs::read_to_string(repo().join(RULES)).expect("rules");
    let metrics = metric_names(&text);
    assert!(!metrics.is_empty());
    for m in metrics {
        assert!(
            agent_exports(&source, &m),
            "{RULES}: {m} is not a metric the agent exports"
        );
    }
}

#[test]
fn dashboard_reads_recording_rules_with_a_raw_fallback() {
    let names = recorded();
    let mut uses = 0;
    for p in panels(&dashboard()) {
        for q in queries(&p) {
            let used = recorded_names(&q.expr);
            for name in &used {
                assert!(
                    names.contains(name),
                    "{}: {name} is not recorded in {RULES}",
                    q.panel
                );
                // Without the rules (a single Prometheus that does not load them), the raw
                // counters answer instead.
                assert!(
                    q.expr.contains(" or ") && q.expr.contains("azflow_tcp_bytes_total"),
                    "{}: reads {name} with no fallback: {}",
                    q.panel,
                    q.expr
                );
                uses += 1;
            }
        }
    }
    assert!(
        uses >= 3,
        "the dashboard reads the recording rules {uses} times"
    );
}

#[test]
fn recording_rules_pass_yamllint() {
    let Some(yamllint) = tool("yamllint", "PyPI yamllint") else {
        return;
    };
    run_ok(
        Command::new(yamllint).args(["-c", "deploy/yamllint.yaml", "dashboards/recording"]),
        "yamllint dashboards/recording",
    );
}
