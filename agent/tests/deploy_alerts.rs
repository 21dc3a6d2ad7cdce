//! The alert rules: `promtool check rules`, `promtool test rules` (every rule fires in one case and
//! stays silent in another, `dashboards/alerts/tests/check_rules.py` makes sure of it), runbooks
//! for every alert, metric names the agent really exports, yamllint.
//! Tools: promtool (Debian prometheus), python3 with pyyaml, yamllint; without them the tests
//! skip, and with `AZFLOW_REQUIRE_EBPF=1` (CI) they fail.

mod deploy_support;

use std::process::Command;

use deploy_support::{
    agent_exports, agent_source, metric_names, python_with_yaml, repo, run_ok, tool,
};

const RULES: &str = "dashboards/alerts/azflow.rules.yaml";

fn test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("dashboards/alerts/tests"))
        .expect("tests dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .map(|p| {
            p.strip_prefix(repo())
                .expect("in repo")
                .display()
                .to_string()
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "promtool test files: {files:?}");
    files
}

#[test]
fn rules_pass_promtool_check() {
    let Some(promtool) = tool("promtool", "Debian prometheus") else {
        return;
    };
    let out = run_ok(
        Command::new(promtool).args(["check", "rules", RULES]),
        "promtool check rules",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn every_rule_fires_and_stays_silent_where_promtool_tests_say() {
    let Some(promtool) = tool("promtool", "Debian prometheus") else {
        return;
    };
    run_ok(
        Command::new(promtool)
            .args(["test", "rules"])
            .args(test_files()),
        "promtool test rules",
    );
    let Some(python) = python_with_yaml() else {
        return;
    };
    run_ok(
        Command::new(python).arg("dashboards/alerts/tests/check_rules.py"),
        "check_rules.py",
    );
}

#[test]
fn rules_use_only_metrics_the_agent_exports() {
    let source = agent_source();
    let text = std::fs::read_to_string(repo().join(RULES)).expect("rules");
    let names = metric_names(&text);
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        assert!(
            agent_exports(&source, &name),
            "{RULES}: {name} is not a metric the agent exports"
        );
    }
}

#[test]
fn rules_and_tests_pass_yamllint() {
    let Some(yamllint) = tool("yamllint", "PyPI yamllint") else {
        return;
    };
    run_ok(
        Command::new(yamllint).args(["-c", "deploy/yamllint.yaml", "dashboards/alerts"]),
        "yamllint dashboards/alerts",
    );
}
