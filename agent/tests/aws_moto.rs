//! The AWS topology against `moto_server` as the real EC2 API and IMDS (placement, instance
//! credentials), with a local IMDSv2 server in front for what moto does not serve (the identity
//! document, `network/interfaces/macs/…`). No root needed: `azflow topology` and `azflow check`.

mod common;

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::aws::{Imds, Instance, Moto, aws_env};
use serde_json::Value;

/// moto's own instance metadata: us-east-1a, use1-az1, i-fake, this MAC.
const MOTO_MAC: &str = "00:de:ad:be:ef:00";

fn azflow(args: &[&str], imds: &str, ec2: Option<&str>) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azflow"));
    cmd.args(args)
        .env("AZFLOW_LOG", "info")
        .env("NO_COLOR", "1");
    aws_env(&mut cmd, imds, ec2);
    let t = Instant::now();
    let out = cmd.output().expect("running azflow");
    (out, t.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A VPC with one dual-stack subnet in each of three AZs, and the IMDS of an instance in it.
struct World {
    moto: Moto,
    imds: Imds,
    vpc: String,
    /// (subnet id, v4, v6, zone, zone id)
    subnets: Vec<[String; 5]>,
}

fn world() -> World {
    let moto = Moto::start();
    let (vpc, subnets) = moto.create_vpc(
        "10.20.0.0/16",
        &[
            ("us-east-1a", "10.20.1.0/24", Some("2600:1f18:20:1::/64")),
            ("us-east-1b", "10.20.2.0/24", Some("2600:1f18:20:2::/64")),
            ("us-east-1c", "10.20.3.0/24", Some("2600:1f18:20:3::/64")),
        ],
    );
    let instance = Instance {
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        zone_id: "unused: moto serves placement".into(),
        instance_id: "i-fake".into(),
        account_id: "123456789012".into(),
        mac: MOTO_MAC.into(),
        vpc_id: vpc.clone(),
        subnet_id: subnets[0][0].clone(),
        subnet_v4: "10.20.1.0/24".into(),
        subnet_v6: Some("2600:1f18:20:1::/64".into()),
        vpc_v4: vec!["10.20.0.0/16".into()],
        vpc_v6: vec!["2600:1f18:20::/56".into()],
    };
    // Placement, instance id, MAC and credentials come from moto through the local server.
    let imds = Imds::start(instance.values(false), Some(moto.addr));
    World {
        moto,
        imds,
        vpc,
        subnets,
    }
}

#[test]
fn aws_moto_vpc_in_three_azs_resolves_to_exactly_that_table() {
    let w = world();
    let (out, took) = azflow(&["topology", "--json"], &w.imds.url(), Some(&w.moto.url()));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "azflow topology failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(&out.stdout)));
    println!("resolved in {took:?}");

    // The host: moto's placement and credentials, our identity document and interfaces.
    let host = &v["host"];
    assert_eq!(host["zone"], "us-east-1a");
    assert_eq!(
        host["zone_id"], "use1-az1",
        "placement/availability-zone-id comes from moto"
    );
    assert_eq!(host["region"], "us-east-1");
    assert_eq!(host["instance_id"], "i-fake");
    assert_eq!(host["account_id"], "123456789012");
    assert_eq!(
        host["vpc_cidrs"],
        serde_json::json!(["10.20.0.0/16", "2600:1f18:20::/56"])
    );

    // Exactly the subnets created, each CIDR with its AZ name, AZ ID and subnet id, from AWS.
    let got: BTreeSet<(String, String, String, String, String)> = v["prefixes"]
        .as_array()
        .expect("prefixes")
        .iter()
        .filter(|p| p["kind"] == "subnet")
        .map(|p| {
            assert_eq!(p["source"], "aws", "{p}");
            assert_eq!(p["vpc_id"].as_str(), Some(w.vpc.as_str()), "{p}");
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (
                s("prefix"),
                s("zone"),
                s("zone_id"),
                s("subnet_id"),
                s("class"),
            )
        })
        .collect();
    let mut want = BTreeSet::new();
    for [id, v4, v6, zone, zone_id] in &w.subnets {
        let class = if zone_id == "use1-az1" {
            "same_az"
        } else {
            "cross_az"
        };
        for cidr in [v4, v6] {
            want.insert((
                cidr.clone(),
                zone.clone(),
                zone_id.clone(),
                id.clone(),
                class.to_string(),
            ));
        }
    }
    assert_eq!(got, want, "stderr:\n{stderr}");
    let zones: BTreeSet<&str> = w.subnets.iter().map(|s| s[4].as_str()).collect();
    assert_eq!(zones.len(), 3, "three AZs: {zones:?}");
    // The VPC's CIDRs are known, so other private space is cross_vpc, not unknown.
    let private = v["prefixes"]
        .as_array()
        .expect("prefixes")
        .iter()
        .find(|p| p["prefix"] == "172.16.0.0/12")
        .cloned();
    assert_eq!(
        private.map(|p| p["class"].clone()),
        Some(Value::from("cross_vpc"))
    );
    let sources = v["sources"].as_array().expect("sources");
    assert!(
        sources
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.contains("DescribeSubnets"))),
        "{sources:?}"
    );
    // The instance credentials came through the token-guarded IMDS.
    let st = w.imds.state.lock().expect("state");
    assert!(st.token_puts >= 1, "IMDSv2 tokens were used");
}

#[test]
fn aws_moto_table_view_shows_sources_and_the_static_file_wins() {
    let w = world();
    let dir = std::env::temp_dir().join(format!("azflow-aws-moto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file: PathBuf = dir.join("override.toml");
    // The file moves subnet b to another AZ and names the host's zone.
    std::fs::write(
        &file,
        "[host]\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\n[[subnet]]\ncidr = \"10.20.2.0/24\"\nzone = \"us-east-1d\"\nzone_id = \"use1-az4\"\nname = \"pinned\"\n",
    )
    .expect("write file");
    let (out, _) = azflow(
        &["topology", "--topology", file.to_str().expect("utf-8")],
        &w.imds.url(),
        Some(&w.moto.url()),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b_id = &w.subnets[1][0];
    assert!(
        stdout.contains(&format!(
            "override  10.20.2.0/24: file says use1-az4, AWS said {} ({b_id})",
            w.subnets[1][4]
        )),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("aws       IMDS ") && l.contains("i-fake")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("file      ")),
        "{stdout}"
    );
    let row = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{stdout}"))
            .to_string()
    };
    let b = row("10.20.2.0/24");
    assert!(
        b.contains(" use1-az4 ") && b.contains(" pinned ") && b.contains(" file "),
        "{b}"
    );
    let c = row("10.20.3.0/24");
    assert!(c.contains(" aws ") && c.contains(" cross_az "), "{c}");
    // moto's placement (use1-az1) is AZ b's ID in moto's EC2: subnet a is another AZ.
    let a = row("10.20.1.0/24");
    assert!(
        a.contains(" aws ") && a.contains(&format!(" {} ", w.subnets[0][4])),
        "{a}"
    );
}

#[test]
fn aws_moto_check_passes_with_a_dry_run() {
    let w = world();
    let (out, _) = azflow(&["check"], &w.imds.url(), Some(&w.moto.url()));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "check failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ok    IMDS: ") && lines[0].contains(&w.vpc),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("ok    credentials: from IMDSv2"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("ok    ec2:DescribeSubnets: allowed (DryRun"),
        "{stdout}"
    );
}

#[test]
fn aws_not_on_ec2_is_one_line_within_3s_and_falls_back() {
    // Refused: a port nobody listens on. Silent: a listener that never accepts.
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        drop(l);
        format!("http://{a}")
    };
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    for (what, url) in [
        ("refused", refused.as_str()),
        ("silent", silent_url.as_str()),
    ] {
        let (out, took) = azflow(&["topology"], url, None);
        let stderr = text(&out.stderr);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{what}: {stderr}");
        assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("not on EC2"))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: one line:\n{stderr}");
        assert!(
            lines[0].contains(url) && lines[0].contains("using this host's interface subnets"),
            "{what}: {stderr}"
        );
        assert!(
            stdout.contains("host      zone local (local)"),
            "{what}: falls back to the interfaces:\n{stdout}"
        );
        println!("{what}: fell back in {took:?}: {}", lines[0]);
    }
    // With a static file, that file.
    let dir = std::env::temp_dir().join(format!("azflow-aws-noec2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("t.toml");
    std::fs::write(
        &file,
        "[host]\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n",
    )
    .expect("write");
    let (out, took) = azflow(
        &["topology", "--topology", file.to_str().expect("utf-8")],
        &silent_url,
        None,
    );
    assert!(
        out.status.success() && took < Duration::from_secs(3),
        "{took:?} {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(&format!("using the static file {}", file.display())),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("host      zone us-east-1a (use1-az1)"));
    // --aws on makes it an error that says what to do.
    let (out, took) = azflow(&["topology", "--aws", "on"], &refused, None);
    assert!(!out.status.success() && took < Duration::from_secs(3));
    assert!(
        text(&out.stderr).contains("--aws on, but this host is not on EC2"),
        "{}",
        text(&out.stderr)
    );
    // And check says so with a fix.
    let (out, _) = azflow(&["check"], &refused, None);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.starts_with("FAIL  IMDS: IMDS at ")
            && stdout.contains("      fix: run on EC2 with IMDSv2"),
        "{stdout}"
    );
    drop(silent);
}
