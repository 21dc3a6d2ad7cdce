//! The IMDSv2 client against a local server that enforces the token protocol (401 without a live
//! token): tokens asked with a TTL, renewed before expiry and once on 401, retries on 5xx, the
//! identity read from the document, placement and every interface.

mod common;

use std::time::Duration;

use azflow::topology::aws::{
    http::HttpClient,
    imds::{ImdsClient, ImdsError},
};
use common::aws::{Imds, Instance, http_get};

fn instance() -> Instance {
    Instance {
        region: "us-test-1".into(),
        zone: "us-test-1a".into(),
        zone_id: "tst1-az1".into(),
        instance_id: "i-0123456789abcdef0".into(),
        account_id: "210987654321".into(),
        mac: "0e:aa:00:00:00:01".into(),
        vpc_id: "vpc-0aaa".into(),
        subnet_id: "subnet-0aaa".into(),
        subnet_v4: "10.0.1.0/24".into(),
        subnet_v6: Some("fd00:0:0:1::/64".into()),
        vpc_v4: vec!["10.0.0.0/16".into(), "10.1.0.0/16".into()],
        vpc_v6: vec!["fd00::/48".into()],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn aws_imds_server_refuses_reads_without_a_token() {
    let imds = Imds::start(instance().values(true), None);
    let (status, _) = http_get(imds.server.addr, "/latest/meta-data/mac");
    assert_eq!(status, 401);
}

#[test]
fn aws_imds_identity_comes_from_the_document_placement_and_interfaces() {
    let imds = Imds::start(instance().values(true), None);
    let second = "0e:aa:00:00:00:02";
    imds.set(
        "meta-data/network/interfaces/macs/",
        format!("{second}/\n0e:aa:00:00:00:01/"),
    );
    let p = format!("meta-data/network/interfaces/macs/{second}");
    imds.set(&format!("{p}/vpc-id"), "vpc-0bbb");
    imds.set(&format!("{p}/subnet-ipv4-cidr-block"), "10.9.4.0/24");
    imds.set(&format!("{p}/vpc-ipv4-cidr-blocks"), "10.9.0.0/16");
    let client = ImdsClient::new(imds.url(), HttpClient::new());
    let id = runtime()
        .block_on(client.identity())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (id.region.as_str(), id.zone.as_str(), id.zone_id.as_str()),
        ("us-test-1", "us-test-1a", "tst1-az1")
    );
    assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(id.account_id.as_deref(), Some("210987654321"));
    assert_eq!(id.interfaces.len(), 2);
    let primary = &id.interfaces[0];
    assert_eq!(
        primary.mac, "0e:aa:00:00:00:01",
        "the primary (meta-data/mac) comes first"
    );
    assert_eq!(
        primary.subnet_v4.map(|n| n.to_string()).as_deref(),
        Some("10.0.1.0/24")
    );
    assert_eq!(
        primary
            .subnets_v6
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["fd00:0:0:1::/64"]
    );
    assert_eq!(id.vpc_ids(), ["vpc-0aaa", "vpc-0bbb"]);
    let cidrs: Vec<String> = id.vpc_cidrs().iter().map(ToString::to_string).collect();
    assert_eq!(
        cidrs,
        ["10.0.0.0/16", "10.1.0.0/16", "10.9.0.0/16", "fd00::/48"]
    );
    let st = imds.state.lock().expect("state");
    assert_eq!(
        (st.token_puts, st.unauthorized),
        (1, 0),
        "one token for every read"
    );
}

#[test]
fn aws_imds_token_is_renewed_before_it_expires_and_once_on_401() {
    let imds = Imds::start(instance().values(true), None);
    // A 4 s token is renewed at 3.6 s: before the server would refuse it.
    let client = ImdsClient::with_token_ttl(imds.url(), HttpClient::new(), Duration::from_secs(4));
    let rt = runtime();
    let get = |path: &str| {
        rt.block_on(client.get(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(
        get("/latest/meta-data/mac").as_deref(),
        Some("0e:aa:00:00:00:01")
    );
    std::thread::sleep(Duration::from_millis(3750));
    assert!(get("/latest/meta-data/instance-id").is_some());
    {
        let st = imds.state.lock().expect("state");
        assert_eq!(
            (st.token_puts, st.unauthorized),
            (2, 0),
            "renewed before expiry, never refused"
        );
    }
    // IMDS forgets its tokens (a restart): one 401, one new token, the read succeeds.
    imds.revoke_tokens();
    assert!(get("/latest/meta-data/instance-id").is_some());
    {
        let st = imds.state.lock().expect("state");
        assert_eq!((st.token_puts, st.unauthorized), (3, 1));
    }
    assert_eq!(
        get("/latest/meta-data/no-such-path"),
        None,
        "404 is absent, not an error"
    );
}

#[test]
fn aws_imds_retries_5xx_and_reports_malformed_json() {
    let imds = Imds::start(instance().values(true), None);
    let client = ImdsClient::new(imds.url(), HttpClient::new());
    let rt = runtime();
    imds.state.lock().expect("state").fail_next = 2;
    assert!(
        rt.block_on(client.get("/latest/meta-data/mac"))
            .is_ok_and(|v| v.is_some()),
        "third attempt succeeds"
    );
    imds.state.lock().expect("state").fail_next = 3;
    let e = rt
        .block_on(client.get("/latest/meta-data/mac"))
        .expect_err("three 500s");
    assert!(matches!(e, ImdsError::Status { status: 500, .. }), "{e}");
    assert_eq!(e.kind(), "imds_status");

    imds.set(
        "dynamic/instance-identity/document",
        "{\"accountId\": \"1\", \"region\": ",
    );
    let e = rt.block_on(client.identity()).expect_err("malformed");
    assert_eq!(e.kind(), "malformed_json");
    assert!(
        e.to_string()
            .starts_with("IMDS /latest/dynamic/instance-identity/document: malformed JSON"),
        "{e}"
    );
}

#[test]
fn aws_imds_that_refuses_tokens_says_how_to_fix_it() {
    // An IMDSv1-only or hop-limited endpoint answers the PUT with 403.
    let server = common::aws::HttpServer::start(|_| common::aws::Reply::status(403, ""));
    let client = ImdsClient::new(server.url(), HttpClient::new());
    let e = runtime().block_on(client.probe()).expect_err("refused");
    assert_eq!(e.kind(), "imds_token_refused");
    assert!(
        e.to_string().contains("--http-put-response-hop-limit 2"),
        "{e}"
    );
}
