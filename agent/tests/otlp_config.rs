//! OTLP misconfiguration: one clear error naming the flag or variable, exit 78, nothing attached.

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Runs `azflow run` with a clean environment; returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azflow"))
        .args(["run", "--prometheus", "off", "--console", "never"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AZFLOW_AWS", "off")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting azflow");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("azflow accepted {args:?} {env:?} and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("stderr");
    (status.code(), stderr)
}

fn expect_config_error(args: &[&str], env: &[(&str, &str)], names: &str, says: &str) {
    let (code, stderr) = run(args, env);
    println!("{args:?} {env:?} -> {code:?}: {}", stderr.trim());
    assert_eq!(code, Some(78), "{args:?} {env:?}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("azflow: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].starts_with(&format!("azflow: {names}: ")), "names {names}: {stderr}");
    assert!(errors[0].contains(says), "says {says:?}: {stderr}");
    assert!(!stderr.contains("attached and counting"), "nothing was attached");
}

#[test]
fn otlp_bad_endpoint_url() {
    expect_config_error(&["--otlp-endpoint", "not a url"], &[], "--otlp-endpoint", "is not a URL");
    expect_config_error(&["--otlp-endpoint", "collector:4317"], &[], "--otlp-endpoint", "no scheme");
    expect_config_error(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:21")],
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "is not http or https",
    );
}

#[test]
fn otlp_unknown_protocol() {
    expect_config_error(
        &["--otlp-endpoint", "http://127.0.0.1:4317", "--otlp-protocol", "carrier-pigeon"],
        &[],
        "--otlp-protocol",
        "unknown protocol \"carrier-pigeon\"",
    );
    expect_config_error(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "not supported",
    );
}

#[test]
fn otlp_unreadable_ca_file() {
    expect_config_error(
        &["--otlp-endpoint", "https://127.0.0.1:4317", "--otlp-protocol", "grpc", "--otlp-ca-file", "/nonexistent/ca.pem"],
        &[],
        "--otlp-ca-file",
        "cannot read the CA file /nonexistent/ca.pem",
    );
    let not_pem = std::env::temp_dir().join(format!("azflow-otlp-not-a-ca-{}.txt", std::process::id()));
    std::fs::write(&not_pem, "just text\n").expect("write");
    expect_config_error(
        &["--otlp-endpoint", "https://127.0.0.1:4318"],
        &[("OTEL_EXPORTER_OTLP_CERTIFICATE", not_pem.to_str().expect("utf-8"))],
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "holds no certificate",
    );
    let _ = std::fs::remove_file(&not_pem);
}
