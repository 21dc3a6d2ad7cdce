//! Shared by the deployment suites (`deploy_*.rs`) and `ebpf_dashboards.rs`: the repository's
//! paths, the outside tools they drive (found on PATH, or skipped loudly), the dashboard's panels and
//! queries with Grafana's variables substituted, and the names of the metrics the agent exports.

#![allow(dead_code, reason = "each suite uses a different part")]

pub mod prometheus;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// The workspace root (this crate is `agent/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// `program` from the project's venv or PATH (`azflow_tests::find_tool`). Missing: with `AZFLOW_REQUIRE_EBPF=1` (as in CI, which installs the tools)
/// the test fails, naming the package; otherwise it prints `SKIPPED` and returns None.
pub fn tool(program: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = azflow_tests::find_tool(program) {
        return Some(p);
    }
    skip_or_fail(&format!("`{program}` is not installed ({package})"));
    None
}

/// `python3` that can `import yaml`, or skipped/failed as [`tool`].
pub fn python_with_yaml() -> Option<PathBuf> {
    let python = tool("python3", "Debian python3")?;
    let ok = Command::new(&python)
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    skip_or_fail("python3 cannot import yaml (PyPI pyyaml)");
    None
}

fn skip_or_fail(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_owned();
    if std::env::var(azflow_tests::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {reason} ({}=1 forbids skipping)",
            azflow_tests::REQUIRE_ENV
        );
    }
    // Straight to stderr, past the harness's capture (as azflow_tests::require_root_or_skip does).
    let line = format!(
        "SKIPPED: {test}: {reason} (set {}=1 to make this a failure)\n",
        azflow_tests::REQUIRE_ENV
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// Runs `cmd` in the repository root; panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    println!("{what}:\n{text}");
    out
}

/// Every `.rs` file of `agent/src`, concatenated: what the metric and setting names are checked
/// against (a name the agent never writes is a typo in a rule, a panel or a manifest).
pub fn agent_source() -> String {
    let mut out = String::new();
    let mut stack = vec![repo().join("agent/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("agent/src is readable") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("source is UTF-8"));
            }
        }
    }
    out
}

/// Whether the agent exports `name` (a Prometheus series name): written out in full, or a
/// histogram's `_bucket`/`_count`/`_sum`, or a self-metric built from its stem
/// (`azflow_{stem}_total` / `azflow_{stem}` from `"stem"`).
pub fn agent_exports(source: &str, name: &str) -> bool {
    let base = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    if source.contains(&format!("\"{base}\"")) || source.contains(&format!("\"{name}\"")) {
        return true;
    }
    let Some(stem) = base.strip_prefix("azflow_") else {
        return false;
    };
    let stem = stem.strip_suffix("_total").unwrap_or(stem);
    source.contains(&format!("\"{stem}\""))
}

/// `azflow_…` names and `up` in a PromQL expression (not those inside recording rules' names).
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("azflow_") {
        let start = i + pos;
        // A name inside a recording rule's name (`level:azflow_x:ops`) is not an agent metric.
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || matches!(bytes[start - 1], b'_' | b':'));
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.push(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The dashboard JSON.
pub fn dashboard() -> Value {
    let path = repo().join("dashboards/grafana/azflow-cross-az.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every panel that shows data (rows' nested panels included, rows themselves not).
pub fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct Query {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
    /// Grafana asks for one instant value (stats, tables) instead of a range.
    pub instant: bool,
}

pub fn queries(panel: &Value) -> Vec<Query> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Query {
            panel: panel["title"].as_str().unwrap_or("?").to_string(),
            ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
            expr: t["expr"].as_str().unwrap_or_default().to_string(),
            instant: t["instant"] == true && t["range"] != true,
        })
        .collect()
}

/// Grafana's substitution of `$name` / `${name}` in a query, for single values (as the bed has):
/// longest names first, so `$__range` is not taken for a prefix of `$__rate_interval`.
pub fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut names: Vec<&&str> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = expr.to_string();
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &vars[*name])
            .replace(&format!("${name}"), &vars[*name]);
    }
    out
}

/// Recording rules' names (`level:metric:operations`) in a PromQL expression.
pub fn recorded_names(expr: &str) -> Vec<String> {
    // Label values ("n1:9464") are not names: drop every quoted string first.
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.contains(':') && w.starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(str::to_owned)
        .collect()
}
