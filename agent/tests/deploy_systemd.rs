//! The systemd unit: `systemd-analyze security --offline=true` exposure at most 3.0, a clean
//! `systemd-analyze verify`, the promised settings, and an environment file the agent understands.
//! Needs `systemd-analyze` (Debian systemd); without it the tests skip, and with
//! `AZFLOW_REQUIRE_EBPF=1` (CI) they fail.

mod deploy_support;

use std::process::Command;

use deploy_support::{agent_source, repo, run_ok, tool};

const UNIT: &str = "deploy/systemd/azflow.service";
const ENV: &str = "deploy/systemd/azflow.env";
const MAX_EXPOSURE: f64 = 3.0;

/// `Key=Value` settings of the unit, in order (comments and sections left out).
fn settings() -> Vec<(String, String)> {
    std::fs::read_to_string(repo().join(UNIT))
        .expect("unit")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn values(key: &str) -> Vec<String> {
    settings()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn unit_exposure_is_at_most_3_by_systemd_analyze_security() {
    let Some(analyze) = tool("systemd-analyze", "Debian systemd") else {
        return;
    };
    let out = run_ok(
        Command::new(analyze).args(["security", "--offline=true", "--no-pager", UNIT]),
        "systemd-analyze security",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for azflow.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure line in:\n{text}"));
    println!("exposure {score} (at most {MAX_EXPOSURE})");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
}

/// `systemd-analyze verify` on a copy whose ExecStart is the binary just built (verify wants it to
/// exist): no unknown keys, no bad values, nothing printed.
#[test]
fn unit_verifies_without_warnings() {
    let Some(analyze) = tool("systemd-analyze", "Debian systemd") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("azflow-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unit = std::fs::read_to_string(repo().join(UNIT))
        .expect("unit")
        .replace("/usr/local/bin/azflow", env!("CARGO_BIN_EXE_azflow"))
        .replace(
            "/etc/azflow/azflow.env",
            &repo().join(ENV).display().to_string(),
        );
    let path = dir.join("azflow.service");
    std::fs::write(&path, unit).expect("write unit copy");
    let out = run_ok(
        Command::new(analyze).arg("verify").arg(&path),
        "systemd-analyze verify",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = said.lines().filter(|l| l.contains("azflow")).collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unit_keeps_three_capabilities_pins_and_restarts_on_failure() {
    assert_eq!(
        values("CapabilityBoundingSet"),
        ["CAP_BPF CAP_PERFMON CAP_NET_ADMIN"]
    );
    for key in [
        "AmbientCapabilities",
        "User",
        "DynamicUser",
        "PrivateNetwork",
        "PrivateUsers",
    ] {
        assert!(
            values(key).is_empty(),
            "{key}= would change what the agent can reach: {:?}",
            values(key)
        );
    }
    assert_eq!(values("Restart"), ["on-failure"]);
    let exec = values("ExecStart");
    assert!(
        exec.len() == 1 && exec[0].ends_with("azflow run --pin"),
        "ExecStart {exec:?}"
    );
    assert_eq!(values("NoNewPrivileges"), ["yes"]);
    assert_eq!(
        values("ReadWritePaths"),
        ["/sys/fs/bpf"],
        "pins need bpffs writable, nothing else"
    );
    assert_eq!(
        values("LimitMEMLOCK"),
        ["infinity"],
        "kernels before 5.11 charge maps to RLIMIT_MEMLOCK"
    );
    // bpf(2) is in @privileged: an allow-list that later removes @privileged must add bpf back.
    let filters = values("SystemCallFilter");
    let removes_privileged = filters
        .iter()
        .position(|f| f.starts_with('~') && f.contains("@privileged"));
    let adds_bpf = filters
        .iter()
        .rposition(|f| !f.starts_with('~') && f.split_whitespace().any(|w| w == "bpf"));
    if let Some(removed) = removes_privileged {
        assert!(
            adds_bpf.is_some_and(|a| a > removed),
            "bpf is filtered out: {filters:?}"
        );
    }
    assert!(
        values("EnvironmentFile")
            .iter()
            .any(|v| v.ends_with("/etc/azflow/azflow.env"))
    );
}

#[test]
fn environment_file_sets_only_what_the_agent_reads() {
    let source = agent_source();
    let text = std::fs::read_to_string(repo().join(ENV)).expect("env file");
    let mut names = 0;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty()
            || (t.starts_with('#') && !t[1..].starts_with(|c: char| c.is_ascii_uppercase()))
        {
            continue;
        }
        let (name, value) = t
            .trim_start_matches('#')
            .split_once('=')
            .unwrap_or_else(|| panic!("{ENV}: not NAME=VALUE: {line}"));
        assert!(
            !value.starts_with(' ') && !name.contains(' '),
            "{ENV}: systemd wants NAME=VALUE: {line}"
        );
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{ENV}: {name} is not read by the agent"
        );
        names += 1;
    }
    assert!(names >= 10, "only {names} settings: the scan is broken");
}
