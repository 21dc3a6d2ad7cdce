//! Kubernetes manifests and the Helm chart. The checks that read YAML live in
//! `deploy/tests/check_manifests.py` (PyYAML; Helm cannot be installed here, so
//! `deploy/tests/helm_lite.py` renders the chart's templates — a small, strict subset of Go
//! templates — and the objects are compared as parsed data); each test here runs one of them.
//! Tools: python3 with pyyaml, yamllint and kubernetes-validate (PyPI); without them the tests skip,
//! and with `AZFLOW_REQUIRE_EBPF=1` (CI) they fail.

mod deploy_support;

use std::process::Command;

use deploy_support::{agent_source, python_with_yaml, repo, run_ok, tool};

fn check(step: &str) {
    let Some(python) = python_with_yaml() else {
        return;
    };
    run_ok(
        Command::new(python)
            .arg("deploy/tests/check_manifests.py")
            .arg(step),
        &format!("check_manifests.py {step}"),
    );
}

#[test]
fn helm_chart_default_values_render_the_plain_manifests() {
    check("equal");
}

#[test]
fn helm_chart_values_switch_what_they_name_and_nothing_else() {
    check("variants");
}

#[test]
fn daemonset_is_unprivileged_with_three_capabilities_probes_and_pins() {
    check("policy");
}

#[test]
fn manifests_and_rendered_chart_pass_yamllint() {
    if tool("yamllint", "PyPI yamllint").is_none() {
        return;
    }
    check("lint");
}

#[test]
fn manifests_and_rendered_chart_pass_kubernetes_validate() {
    if tool("kubernetes-validate", "PyPI kubernetes-validate").is_none() {
        return;
    }
    check("validate");
}

/// Every setting the manifests and the chart pass to the agent is one it reads: a misspelt
/// variable would be ignored silently.
#[test]
fn every_environment_variable_in_the_manifests_is_read_by_the_agent() {
    let source = agent_source();
    let mut checked = 0;
    for file in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/daemonset.yaml",
        "deploy/helm/azflow/templates/configmap.yaml",
        "deploy/helm/azflow/templates/daemonset.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).expect("manifest");
        for line in text.lines() {
            let t = line.trim().trim_start_matches('#').trim();
            // ConfigMap keys (`  AZFLOW_X: value`, commented ones too) and `- name: AZFLOW_X`.
            let name = t
                .strip_prefix("- name: ")
                .unwrap_or(t)
                .split(':')
                .next()
                .unwrap_or("");
            let is_setting = (name.starts_with("AZFLOW_")
                || name.starts_with("OTEL_")
                || name == "K8S_NODE_NAME")
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_setting {
                assert!(
                    source.contains(&format!("\"{name}\"")),
                    "{file}: {name} is not read by the agent (no \"{name}\" in agent/src)"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} settings found: the scan is broken"
    );
}
