//! Every failure mode of the AWS topology source, against the real agent on a test bed: a local
//! IMDSv2 and a scripted EC2 answer well at startup, then misbehave. Each test asserts the
//! message (logged once per kind), the `azflow_topology_refresh_failures_total{kind}` counter,
//! and that counting goes on with the last good topology: bytes to subnet b are still credited to
//! its AZ, within 0.5 % of the wire.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use azflow_tests::{Family, TestBed, Zone};
use common::{
    Agent, Metrics,
    aws::{
        HttpReq, HttpServer, Imds, Instance, Reply, aws_env, credentials_json, ec2_error,
        empty_reply, signing_key, subnets_page,
    },
    rel_err, zone_labels,
};

const TOLERANCE: f64 = 0.005;
const ROLE: &str = "azflow-node";

/// What the scripted EC2 does.
#[derive(Debug, Clone)]
enum Mode {
    /// Every bed subnet, one page.
    Good,
    /// Only these zones' subnets.
    Only(Vec<Zone>),
    /// This answer to every request.
    Fail(Reply),
    /// Good pages that always point to the same next page.
    PageLoop,
    /// Good, but only for requests signed with this key; others get ExpiredToken.
    OnlyKey(String),
}

fn bed_page(next: Option<&str>) -> String {
    zones_page(&Zone::MAPPED, next)
}

fn zones_page(zones: &[Zone], next: Option<&str>) -> String {
    let mut rows = Vec::new();
    for &z in zones {
        let (zone, id) = zone_labels(z);
        rows.push((
            format!("subnet-{}", z.name()),
            z.subnet_v4().to_string(),
            z.subnet_v6().to_string(),
            zone,
            id,
        ));
    }
    let rows: Vec<(&str, &str, Option<&str>, &str, &str)> = rows
        .iter()
        .map(|(s, v4, v6, zone, id)| (s.as_str(), v4.as_str(), Some(v6.as_str()), *zone, *id))
        .collect();
    subnets_page(&rows, next)
}

fn fake_ec2(mode: Arc<Mutex<Mode>>) -> HttpServer {
    HttpServer::start(
        move |req: &HttpReq| match mode.lock().expect("mode").clone() {
            // The billing-path calls answer empty here; aws_routing.rs tests their failures.
            _ if req.form("Action").is_some_and(|a| a != "DescribeSubnets") => {
                Reply::ok(empty_reply(&req.form("Action").unwrap_or_default()))
            }
            Mode::Good => Reply::ok(bed_page(None)),
            Mode::Only(zones) => Reply::ok(zones_page(&zones, None)),
            Mode::Fail(r) => r,
            Mode::PageLoop => Reply::ok(bed_page(Some("page-2"))),
            Mode::OnlyKey(k) if signing_key(req).as_deref() == Some(k.as_str()) => {
                Reply::ok(bed_page(None))
            }
            Mode::OnlyKey(_) => Reply::status(
                400,
                ec2_error(
                    "ExpiredToken",
                    "The security token included in the request is expired",
                ),
            ),
        },
    )
}

/// The monitored host a1 as IMDS describes it: zone a, the bed's VPC, instance credentials.
fn bed_imds() -> Imds {
    let (zone, zone_id) = zone_labels(Zone::A);
    let instance = Instance {
        region: "us-test-1".into(),
        zone: zone.into(),
        zone_id: zone_id.into(),
        instance_id: "i-0bed".into(),
        account_id: "111122223333".into(),
        mac: "0e:be:d0:00:00:01".into(),
        vpc_id: "vpc-test".into(),
        subnet_id: "subnet-a".into(),
        subnet_v4: Zone::A.subnet_v4().to_string(),
        subnet_v6: Some(Zone::A.subnet_v6().to_string()),
        vpc_v4: vec![azflow_tests::addressing::vpc_v4().to_string()],
        vpc_v6: vec![azflow_tests::addressing::vpc_v6().to_string()],
    };
    let mut values = instance.values(true);
    values.insert("meta-data/iam/security-credentials/".into(), ROLE.into());
    values.insert(
        format!("meta-data/iam/security-credentials/{ROLE}"),
        credentials_json("AKIDFIRST"),
    );
    Imds::start(values, None)
}

struct Setup {
    bed: TestBed,
    imds: Imds,
    ec2: HttpServer,
    mode: Arc<Mutex<Mode>>,
    agent: Agent,
}

fn setup(start: Mode) -> Option<Setup> {
    let bed = TestBed::new_or_skip()?;
    let imds = bed_imds();
    let mode = Arc::new(Mutex::new(start));
    let ec2 = fake_ec2(mode.clone());
    let (imds_url, ec2_url) = (imds.url(), ec2.url());
    let agent = Agent::start_with(
        bed.cgroup_path(),
        &["--refresh-interval", "1s", "--aws-timeout", "1s"],
        |cmd| {
            aws_env(cmd, &imds_url, Some(&ec2_url));
            cmd.env("AZFLOW_AWS", "auto");
        },
    );
    Some(Setup {
        bed,
        imds,
        ec2,
        mode,
        agent,
    })
}

fn failures(m: &Metrics, kind: &str) -> f64 {
    m.value("azflow_topology_refresh_failures_total", &[("kind", kind)])
}

impl Setup {
    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Waits until `kind` failed at least `n` times.
    fn wait_failures(&self, kind: &str, n: f64, within: Duration) -> Metrics {
        let deadline = Instant::now() + within;
        loop {
            let m = self.agent.scrape();
            if failures(&m, kind) >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} {kind} failures within {within:?}:\n{}",
                self.agent.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Bytes a1 sends to `dst` are credited to `dst`'s AZ (`want_zone_id`) within 0.5 % of the
    /// wire, in class `want_class`.
    fn assert_counting(&self, dst: &str, want_zone_id: &str, want_class: &str) {
        let m0 = self.agent.settled();
        let before = self.bed.host(dst).link_counters().expect("counters");
        self.bed
            .run_bulk("a1", dst, 5_000_000, Family::V4)
            .expect("bulk transfer");
        let wire =
            (self.bed.host(dst).link_counters().expect("counters") - before).l3_rx_bytes() as f64;
        let m1 = self.agent.settled();
        let labels = [
            ("direction", "transmit"),
            ("dst_zone_id", want_zone_id),
            ("traffic_class", want_class),
        ];
        let counted = m1.value("azflow_tcp_bytes_total", &labels)
            - m0.value("azflow_tcp_bytes_total", &labels);
        let err = rel_err(counted, wire);
        println!(
            "a1->{dst}: {counted} B as {want_zone_id}/{want_class}, wire {wire} B, error {:.4}%",
            err * 100.0
        );
        assert!(
            err <= TOLERANCE,
            "a1->{dst}: {counted} B counted as {want_zone_id}/{want_class}, wire {wire} B\n{}",
            self.agent.log()
        );
    }

    /// Exactly one warning line for `kind`, containing `needle`.
    fn assert_logged_once(&self, kind: &str, needle: &str) {
        let log = self.agent.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("AWS topology refresh failed") && l.contains(&format!("kind=\"{kind}\""))
            })
            .collect();
        assert_eq!(lines.len(), 1, "one line for {kind}:\n{log}");
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from: {}",
            lines[0]
        );
        assert!(
            lines[0].contains("keeping the last good topology"),
            "{}",
            lines[0]
        );
    }

    fn stop(self) {
        let (status, _) = self.agent.stop();
        assert!(status.success(), "azflow exited with {status}");
    }
}

/// Startup works, then every refresh fails with `reply`: counted, logged once, nothing lost.
fn fails_later(reply: Mode, kind: &str, needle: &str) {
    let Some(s) = setup(Mode::Good) else { return };
    let (_, b_id) = zone_labels(Zone::B);
    s.assert_counting("b1", b_id, "cross_az");
    s.set(reply);
    let m = s.wait_failures(kind, 2.0, Duration::from_secs(60));
    assert!(m.value("azflow_drains_total", &[]) > 0.0);
    s.assert_logged_once(kind, needle);
    s.assert_counting("b1", b_id, "cross_az");
    let (_, c_id) = zone_labels(Zone::C);
    s.assert_counting("c1", c_id, "cross_az");
    s.stop();
}

#[test]
fn aws_access_denied_names_the_action_and_the_policy() {
    let denied = ec2_error(
        "UnauthorizedOperation",
        "You are not authorized to perform this operation.",
    );
    fails_later(
        Mode::Fail(Reply::status(403, denied)),
        "access_denied",
        r#"EC2 denied ec2:DescribeSubnets (UnauthorizedOperation: You are not authorized to perform this operation.); allow it in the agent's IAM role with this policy: {"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:DescribeSubnets","ec2:DescribeRouteTables","ec2:DescribeNatGateways","ec2:DescribeVpcEndpoints","ec2:DescribeVpcPeeringConnections"],"Resource":"*"}]}"#,
    );
}

#[test]
fn aws_access_denied_from_the_start_runs_on_what_imds_says() {
    let denied = ec2_error(
        "AccessDenied",
        "User is not authorized to perform: ec2:DescribeSubnets",
    );
    let Some(s) = setup(Mode::Fail(Reply::status(403, denied))) else {
        return;
    };
    let log = s.agent.log();
    assert!(
        log.contains("ec2:DescribeSubnets") && log.contains(r#""Action":["ec2:DescribeSubnets""#),
        "{log}"
    );
    // IMDS alone: the host's own subnet is its AZ, the rest of the VPC is known but unmapped.
    let (_, a_id) = zone_labels(Zone::A);
    s.assert_counting("a2", a_id, "same_az");
    s.assert_counting("b1", "unknown", "unknown");
    s.stop();
}

#[test]
fn aws_throttling_backs_off_exponentially() {
    let Some(s) = setup(Mode::Good) else { return };
    let throttled = ec2_error("RequestLimitExceeded", "Request limit exceeded.");
    let switched = Instant::now();
    s.set(Mode::Fail(Reply::status(503, throttled)));
    s.wait_failures("throttled", 3.0, Duration::from_secs(60));
    s.assert_logged_once(
        "throttled",
        "EC2 is throttling DescribeSubnets (RequestLimitExceeded)",
    );
    // The waits between passes are the gaps over 1.5 s (retries within a pass are closer).
    let times: Vec<Instant> = s
        .ec2
        .requests()
        .iter()
        .map(|r| r.at)
        .filter(|t| *t > switched)
        .collect();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .filter(|g| *g > 1.5)
        .collect();
    println!(
        "waits between throttled passes (s): {gaps:.2?}; {} requests",
        times.len()
    );
    assert!(gaps.len() >= 2, "{gaps:?}");
    assert!(gaps[1] > gaps[0] * 1.5, "the wait doubles: {gaps:?}");
    let (_, b_id) = zone_labels(Zone::B);
    s.assert_counting("b1", b_id, "cross_az");
    s.stop();
}

#[test]
fn aws_server_errors_are_counted_and_survived() {
    fails_later(
        Mode::Fail(Reply::status(
            500,
            ec2_error("InternalError", "An internal error has occurred"),
        )),
        "server_error",
        "EC2 answered HTTP 500 (InternalError)",
    );
}

#[test]
fn aws_timeouts_are_counted_and_survived() {
    fails_later(
        Mode::Fail(Reply::Hang),
        "timeout",
        "no complete answer within 1s",
    );
}

#[test]
fn aws_malformed_xml_is_counted_and_survived() {
    let page = bed_page(None);
    fails_later(
        Mode::Fail(Reply::ok(&page[..page.len() / 2])),
        "malformed_xml",
        "malformed XML: not XML",
    );
}

#[test]
fn aws_truncated_bodies_are_counted_and_survived() {
    let page = bed_page(None);
    let cut = page[..page.len() / 2].to_string();
    fails_later(
        Mode::Fail(Reply::Truncated {
            declared: page.len(),
            body: cut,
        }),
        "truncated",
        "the response body was cut short",
    );
}

#[test]
fn aws_page_loops_are_cut() {
    fails_later(
        Mode::PageLoop,
        "page_loop",
        r#"returned page token "page-2" twice"#,
    );
}

#[test]
fn aws_malformed_imds_json_is_counted_and_survived() {
    let Some(s) = setup(Mode::Good) else { return };
    s.imds.set(
        "dynamic/instance-identity/document",
        "{\"region\": \"us-test-1\", \"availabilityZone\": ",
    );
    s.wait_failures("malformed_json", 2.0, Duration::from_secs(30));
    s.assert_logged_once(
        "malformed_json",
        "IMDS /latest/dynamic/instance-identity/document: malformed JSON",
    );
    let (_, b_id) = zone_labels(Zone::B);
    s.assert_counting("b1", b_id, "cross_az");
    s.stop();
}

#[test]
fn aws_expired_credentials_are_refreshed_without_a_restart() {
    let Some(s) = setup(Mode::OnlyKey("AKIDFIRST".into())) else {
        return;
    };
    let ok_before = s
        .agent
        .scrape()
        .value("azflow_topology_refreshes_total", &[]);
    // The role's credentials rotate; EC2 now calls the old ones expired.
    s.imds.set(
        &format!("meta-data/iam/security-credentials/{ROLE}"),
        credentials_json("AKIDSECOND"),
    );
    let rotated = Instant::now();
    s.set(Mode::OnlyKey("AKIDSECOND".into()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let used_new = s
            .ec2
            .requests()
            .iter()
            .any(|r| r.at > rotated && signing_key(r).as_deref() == Some("AKIDSECOND"));
        let ok = s
            .agent
            .scrape()
            .value("azflow_topology_refreshes_total", &[]);
        if used_new && ok >= ok_before + 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh with the new credentials:\n{}",
            s.agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = s.agent.log();
    assert!(
        log.contains("EC2 rejected the cached AWS credentials; fetched fresh ones"),
        "{log}"
    );
    assert_eq!(
        failures(&s.agent.scrape(), "expired_credentials"),
        0.0,
        "the retry with fresh credentials succeeded"
    );
    let (_, b_id) = zone_labels(Zone::B);
    s.assert_counting("b1", b_id, "cross_az");
    s.stop();
}

#[test]
fn aws_refresh_swaps_in_new_subnets_while_counting() {
    let Some(s) = setup(Mode::Only(vec![Zone::A, Zone::B])) else {
        return;
    };
    let gen0 = s.agent.scrape().value("azflow_topology_generation", &[]);
    // c is in the VPC but not described yet: unknown.
    s.assert_counting("c1", "unknown", "unknown");
    let (_, b_id) = zone_labels(Zone::B);
    s.assert_counting("b1", b_id, "cross_az");
    s.set(Mode::Good);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.agent.scrape().value("azflow_topology_generation", &[]) <= gen0 {
        assert!(
            Instant::now() < deadline,
            "no new table:\n{}",
            s.agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        s.agent.log().contains("kernel subnet table replaced"),
        "{}",
        s.agent.log()
    );
    let (_, c_id) = zone_labels(Zone::C);
    s.assert_counting("c1", c_id, "cross_az");
    s.assert_counting("b1", b_id, "cross_az");
    assert!(
        s.agent
            .scrape()
            .value("azflow_topology_refreshes_total", &[("kind", "changed")])
            >= 1.0
    );
    s.stop();
}
