//! The agent's operational surface, on a real agent process: `/readyz` turns 503 once the kernel
//! no longer runs one of its programs on the cgroup (detached independently with bpftool) while
//! `/healthz` stays 200; logs written to a pipe carry no escape codes; `--log-format json` writes
//! one JSON object per line; a bad format exits 78 naming the flag.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use azflow_tests::TestBed;
use common::Agent;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Program ids attached to `cgroup`, as the kernel reports them to bpftool.
fn cgroup_prog_ids(cgroup: &std::path::Path) -> Vec<u64> {
    bpftool_json(&["cgroup", "show", cgroup.to_str().expect("utf-8")])
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn ebpf_readyz_fails_when_a_program_is_detached_and_healthz_stays_live() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let agent = Agent::start(bed.cgroup_path(), &[]);
    let progs = cgroup_prog_ids(bed.cgroup_path());
    assert_eq!(
        progs.len(),
        3,
        "egress, ingress and sock_ops attached: {progs:?}"
    );
    assert_eq!(get(agent.metrics, "/readyz"), (200, "ready\n".to_string()));

    // Detach the egress program's link behind the agent's back, as an operator or another tool
    // could; the agent keeps running and keeps draining.
    let links = bpftool_json(&["link", "show"]);
    let link = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["prog_id"].as_u64() == Some(progs[0]))
        .and_then(|l| l["id"].as_u64())
        .unwrap_or_else(|| panic!("no link of program {} in {links}", progs[0]));
    let out = Command::new("bpftool")
        .args(["link", "detach", "id", &link.to_string()])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool link detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cgroup_prog_ids(bed.cgroup_path()).len(),
        2,
        "the kernel lists one program fewer"
    );

    // Readiness is computed per request, so the next answer already says so.
    let (status, body) = get(agent.metrics, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("is detached from the cgroup"), "{body}");
    assert_eq!(get(agent.metrics, "/healthz"), (200, "ok\n".to_string()));
    // Drains go on: the agent is alive, only not counting everything.
    agent.wait_for_drains(2);
    assert_eq!(get(agent.metrics, "/readyz").0, 503);
}

/// Runs `azflow run` on the bed with stderr on a pipe until it is attached, stops it with
/// SIGTERM, and returns every log line.
fn agent_log_lines(bed: &TestBed, extra: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azflow"))
        .args(["run", "--cgroup"])
        .arg(bed.cgroup_path())
        .args([
            "--prometheus",
            "127.0.0.1:0",
            "--console",
            "never",
            "--drain-interval",
            "300ms",
        ])
        .args(extra)
        .env("AZFLOW_AWS", "off")
        .env("AZFLOW_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting azflow");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .iter()
        .any(|l: &String| l.contains("attached and counting"))
    {
        assert!(
            Instant::now() < deadline,
            "not attached within 30 s:\n{}",
            log.join("\n")
        );
        match lines.next() {
            Some(Ok(line)) => log.push(line),
            _ => panic!("azflow ended before attaching:\n{}", log.join("\n")),
        }
    }
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    log.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "azflow exited with {status}:\n{}",
        log.join("\n")
    );
    log
}

#[test]
fn ebpf_logs_to_a_pipe_have_no_escape_codes_and_json_lines_parse() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    let text = agent_log_lines(&bed, &[]);
    assert!(text.len() >= 2, "{text:?}");
    for line in &text {
        assert!(
            !line.contains('\x1b'),
            "an escape code in a log line to a pipe: {line:?}"
        );
    }
    assert!(
        text.iter()
            .any(|l| l.contains(" INFO ") && l.contains("azflow detached")),
        "{text:?}"
    );

    let json = agent_log_lines(&bed, &["--log-format", "json"]);
    let events: Vec<serde_json::Value> = json
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l:?}"))
        })
        .collect();
    let attached = events
        .iter()
        .find(|e| e["message"] == "azflow attached and counting")
        .unwrap_or_else(|| panic!("no attach event in {json:?}"));
    assert_eq!(attached["level"], "INFO");
    assert_eq!(attached["cgroup"], bed.cgroup_path().display().to_string());
    assert!(attached["timestamp"].is_string(), "{attached}");
    assert!(
        events.iter().any(|e| e["message"] == "azflow detached"),
        "{json:?}"
    );
}

#[test]
fn a_bad_log_format_exits_78_with_one_line_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_azflow"))
        .args([
            "--log-format",
            "xml",
            "uninstall",
            "--pin-path",
            "/nonexistent/azflow-never",
        ])
        .output()
        .expect("azflow");
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "azflow: --log-format: \"xml\" is not a log format; write text or json\n"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
