//! The billing-path EC2 calls (DescribeRouteTables, DescribeNatGateways, DescribeVpcEndpoints,
//! DescribeVpcPeeringConnections) against a scripted EC2 that answers in EC2's documented XML
//! (the fixtures under agent/src/topology/aws/routing_xml/fixtures) and a local IMDS. For each
//! call, access denied, throttling and malformed replies keep the last good routing, are counted
//! by kind, and name the IAM action. No root needed.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use azflow::{
    self_metrics::SelfMetrics,
    topology::{
        Routing,
        aws::{
            Discovery, Refresher,
            credentials::CredentialsCache,
            ec2::{Ec2Client, MINIMAL_POLICY},
            http::HttpClient,
            imds::ImdsClient,
        },
    },
};
use common::aws::{HttpReq, HttpServer, Imds, Instance, Reply, ec2_error, subnets_page};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/topology/aws/routing_xml/fixtures"
);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The host subnet (subnet-0a11…, use1-az1) and the NAT's (subnet-0b11…, use1-az2).
fn subnets() -> String {
    subnets_page(
        &[
            (
                "subnet-0a11a11a11a11a11a",
                "10.0.0.0/20",
                None,
                "us-east-1a",
                "use1-az1",
            ),
            (
                "subnet-0b11b11b11b11b11b",
                "10.0.16.0/20",
                None,
                "us-east-1b",
                "use1-az2",
            ),
        ],
        None,
    )
    .replace("vpc-test", "vpc-0a0a0a0a0a0a0a0a0")
}

/// Per action: the good reply, or what to answer instead.
type Script = Arc<Mutex<BTreeMap<String, Reply>>>;

fn fake_ec2(script: Script) -> HttpServer {
    HttpServer::start(move |req: &HttpReq| {
        let action = req.form("Action").unwrap_or_default();
        if let Some(r) = script.lock().expect("script").get(&action) {
            return r.clone();
        }
        let body = match action.as_str() {
            "DescribeSubnets" => subnets(),
            // The fixture's first page says there is a next one; this EC2 has one page.
            "DescribeRouteTables" => fixture("describe_route_tables.xml")
                .replace("<nextToken>eyJ2IjoiMiJ9</nextToken>", ""),
            "DescribeNatGateways" => fixture("describe_nat_gateways.xml"),
            "DescribeVpcEndpoints" => fixture("describe_vpc_endpoints.xml"),
            "DescribeVpcPeeringConnections" => fixture("describe_vpc_peering_connections.xml"),
            other => ec2_error("InvalidAction", &format!("no {other}")),
        };
        Reply::ok(body)
    })
}

fn imds() -> Imds {
    let i = Instance {
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        zone_id: "use1-az1".into(),
        instance_id: "i-0route".into(),
        account_id: "111122223333".into(),
        mac: "0e:00:00:00:00:11".into(),
        vpc_id: "vpc-0a0a0a0a0a0a0a0a0".into(),
        subnet_id: "subnet-0a11a11a11a11a11a".into(),
        subnet_v4: "10.0.0.0/20".into(),
        subnet_v6: None,
        vpc_v4: vec!["10.0.0.0/16".into()],
        vpc_v6: vec![],
    };
    Imds::start(i.values(true), None)
}

struct World {
    _imds: Imds,
    _ec2: HttpServer,
    script: Script,
    refresher: Refresher,
    metrics: azflow::self_metrics::Shared,
}

async fn world() -> World {
    let imds = imds();
    let script: Script = Arc::default();
    let ec2 = fake_ec2(script.clone());
    let http = HttpClient::new();
    let creds =
        SharedCredentialsProvider::new(Credentials::new("AKIDTEST", "secret", None, None, "test"));
    let discovery = Discovery {
        imds: ImdsClient::new(imds.url(), http.clone()),
        ec2: Ec2Client::new(
            ec2.url(),
            "us-east-1".into(),
            http,
            CredentialsCache::new(creds),
            Duration::from_secs(2),
        ),
        extra_vpc_ids: vec![],
        ip_ranges: None,
    };
    let identity = discovery
        .imds
        .identity()
        .await
        .unwrap_or_else(|e| panic!("IMDS: {e}"));
    let metrics = SelfMetrics::new();
    let refresher = Refresher::new(
        discovery,
        identity,
        None,
        Duration::from_secs(60),
        metrics.clone(),
    );
    World {
        _imds: imds,
        _ec2: ec2,
        script,
        refresher,
        metrics,
    }
}

fn failures(m: &SelfMetrics, kind: &str) -> u64 {
    m.counters()
        .iter()
        .filter(|(n, k, _)| *n == "topology_refresh_failures" && k == kind)
        .map(|(_, _, v)| *v)
        .sum()
}

/// Routes, NAT gateways (id, AZ ID) and peerings, as text.
type Summary = (Vec<String>, Vec<(String, Option<String>)>, Vec<String>);

fn summary(r: &Routing) -> Summary {
    (
        r.routes
            .iter()
            .map(|x| format!("{} {}", x.dest, x.target.id()))
            .collect(),
        r.nat_gateways
            .iter()
            .map(|n| (n.id.clone(), n.zone_id.clone()))
            .collect(),
        r.peerings
            .iter()
            .map(|p| format!("{} {:?}", p.id, p.region))
            .collect(),
    )
}

#[tokio::test]
async fn aws_routing_from_documented_replies() {
    let mut w = world().await;
    let t = w
        .refresher
        .refresh(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("first pass changes the topology"));
    let (routes, nats, peers) = summary(t.routing());
    assert_eq!(
        routes,
        [
            "0.0.0.0/0 nat-0b1b1b1b1b1b1b1b1",
            "10.0.0.0/16 local",
            "10.2.0.0/16 pcx-0b0b0b0b0b0b0b0b0",
            "10.100.0.0/14 tgw-0d0d0d0d0d0d0d0d0",
            "::/0 eigw-0a0a0a0a0a0a0a0a0",
            "2600:1f18:4a1:e600::/56 local",
        ],
        "without --aws-ip-ranges the S3 prefix list cannot be expanded"
    );
    assert_eq!(
        nats,
        [(
            "nat-0b1b1b1b1b1b1b1b1".to_owned(),
            Some("use1-az2".to_owned())
        )]
    );
    assert_eq!(peers, ["pcx-0b0b0b0b0b0b0b0b0 Some(\"us-west-2\")"]);
    assert_eq!(
        failures(&w.metrics, "access_denied") + failures(&w.metrics, "malformed_xml"),
        0
    );
}

#[tokio::test]
async fn aws_routing_failures_keep_the_last_good_routing_and_name_the_action() {
    let mut w = world().await;
    let first = w
        .refresher
        .refresh(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("first pass"));
    let good = summary(first.routing());
    let denied = || {
        Reply::status(
            403,
            ec2_error(
                "UnauthorizedOperation",
                "You are not authorized to perform this operation.",
            ),
        )
    };
    let throttled = || {
        Reply::status(
            503,
            ec2_error("RequestLimitExceeded", "Request limit exceeded."),
        )
    };
    let malformed = || Reply::ok("<DescribeRouteTablesResponse><routeTableSet><item>");
    let actions = [
        "DescribeRouteTables",
        "DescribeNatGateways",
        "DescribeVpcEndpoints",
        "DescribeVpcPeeringConnections",
    ];
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for action in actions {
        for (kind, reply) in [
            ("access_denied", denied()),
            ("throttled", throttled()),
            ("malformed_xml", malformed()),
        ] {
            w.script
                .lock()
                .expect("script")
                .insert(action.to_owned(), reply);
            // The error names the IAM action (and, when denied, the policy to attach).
            let e = w
                .refresher
                .discovery()
                .discover_routing(w.refresher.identity(), &[])
                .await
                .expect_err("scripted failure");
            let text = e.to_string();
            assert_eq!(e.kind(), kind, "{action}: {text}");
            assert!(text.contains(action), "{action}/{kind}: {text}");
            if kind == "access_denied" {
                assert!(
                    text.contains(&format!("ec2:{action}")) && text.contains(MINIMAL_POLICY),
                    "{text}"
                );
            }
            // A pass keeps the last good routing and counts the failure.
            let changed = w.refresher.refresh(Duration::from_secs(20)).await;
            assert!(
                changed.is_none(),
                "{action}/{kind}: the topology must not change"
            );
            assert_eq!(
                summary(w.refresher.topology().routing()),
                good,
                "{action}/{kind}"
            );
            *expected.entry(kind).or_default() += 1;
            assert_eq!(
                failures(&w.metrics, kind),
                expected[kind],
                "{action}/{kind}"
            );
            w.script.lock().expect("script").clear();
        }
    }
    // Working again: same routing, no new failures.
    assert!(w.refresher.refresh(Duration::from_secs(20)).await.is_none());
    assert_eq!(failures(&w.metrics, "access_denied"), 4);
}
