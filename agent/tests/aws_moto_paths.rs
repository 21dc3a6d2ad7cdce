//! Billing paths from moto_server as the real EC2 API: a VPC with the host in AZ a, a NAT gateway
//! in AZ b, a peering to a VPC in us-west-2, an S3 gateway endpoint and a transit gateway
//! attachment. `azflow topology --json` must show each prefix's path, hop AZ and price.
//!
//! What moto does not serve, and how it is covered instead:
//! - AWS's ip-ranges.json (no AWS API serves it; the agent reads a local file): a small file in
//!   that format is written here.
//! - A consistent placement: moto's IMDS says us-east-1a is use1-az1 while its DescribeSubnets
//!   says use1-az6, so the local IMDS serves placement (credentials still come from moto).
//! - Failures of the four calls (AccessDenied, throttling, malformed pages) and EC2's documented
//!   XML: agent/tests/aws_routing.rs and the fixtures under src/topology/aws/routing_xml/.
//! - DryRun: moto answers these four actions' DryRun with data; `azflow check` takes both as
//!   allowed.

mod common;

use std::process::Command;

use common::aws::{Imds, Instance, Moto, aws_env};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SCRIPT: &str = r#"
w2 = boto3.client('ec2', endpoint_url=ec2.meta.endpoint_url, region_name='us-west-2',
                  aws_access_key_id='testing', aws_secret_access_key='testing')
vpc = ec2.create_vpc(CidrBlock='10.30.0.0/16')['Vpc']['VpcId']
a = ec2.create_subnet(VpcId=vpc, CidrBlock='10.30.1.0/24', AvailabilityZone='us-east-1a')['Subnet']
b = ec2.create_subnet(VpcId=vpc, CidrBlock='10.30.2.0/24', AvailabilityZone='us-east-1b')['Subnet']
igw = ec2.create_internet_gateway()['InternetGateway']['InternetGatewayId']
ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
eip = ec2.allocate_address(Domain='vpc')['AllocationId']
nat = ec2.create_nat_gateway(SubnetId=b['SubnetId'], AllocationId=eip)['NatGateway']['NatGatewayId']
rt = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']
ec2.associate_route_table(RouteTableId=rt, SubnetId=a['SubnetId'])
ec2.create_route(RouteTableId=rt, DestinationCidrBlock='0.0.0.0/0', NatGatewayId=nat)
peer_vpc = w2.create_vpc(CidrBlock='10.40.0.0/16')['Vpc']['VpcId']
pcx = ec2.create_vpc_peering_connection(VpcId=vpc, PeerVpcId=peer_vpc, PeerRegion='us-west-2')['VpcPeeringConnection']['VpcPeeringConnectionId']
w2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx)
ec2.create_route(RouteTableId=rt, DestinationCidrBlock='10.40.0.0/16', VpcPeeringConnectionId=pcx)
tgw = ec2.create_transit_gateway()['TransitGateway']['TransitGatewayId']
ec2.create_transit_gateway_vpc_attachment(TransitGatewayId=tgw, VpcId=vpc, SubnetIds=[a['SubnetId']])
ec2.create_route(RouteTableId=rt, DestinationCidrBlock='10.100.0.0/14', TransitGatewayId=tgw)
vpce = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName='com.amazonaws.us-east-1.s3', VpcEndpointType='Gateway', RouteTableIds=[rt])['VpcEndpoint']['VpcEndpointId']
print(json.dumps({'vpc': vpc, 'a': a['SubnetId'], 'a_zone_id': a['AvailabilityZoneId'],
                  'b_zone_id': b['AvailabilityZoneId'], 'nat': nat, 'pcx': pcx, 'tgw': tgw, 'vpce': vpce}))
"#;

const IP_RANGES: &str = r#"{"syncToken": "1", "createDate": "2026-12-01-00-00-00", "prefixes": [
 {"ip_prefix": "52.216.0.0/15", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
 {"ip_prefix": "52.216.0.0/15", "region": "us-east-1", "service": "S3", "network_border_group": "us-east-1"},
 {"ip_prefix": "3.80.0.0/12", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
 {"ip_prefix": "35.80.0.0/12", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"}],
 "ipv6_prefixes": []}"#;

#[test]
fn aws_moto_nat_peering_endpoint_and_tgw_paths() {
    let moto = Moto::start();
    let ids: Value = serde_json::from_str(moto.boto3(SCRIPT).trim()).expect("ids");
    let id = |k: &str| {
        ids[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} in {ids}"))
            .to_owned()
    };
    assert_ne!(
        id("a_zone_id"),
        id("b_zone_id"),
        "moto gives the two AZs different IDs"
    );
    let instance = Instance {
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        zone_id: id("a_zone_id"),
        instance_id: "i-0host".into(),
        account_id: "123456789012".into(),
        mac: "0e:00:00:00:00:a1".into(),
        vpc_id: id("vpc"),
        subnet_id: id("a"),
        subnet_v4: "10.30.1.0/24".into(),
        subnet_v6: None,
        vpc_v4: vec!["10.30.0.0/16".into()],
        vpc_v6: vec![],
    };
    let imds = Imds::start(instance.values(true), Some(moto.addr));
    let dir = std::env::temp_dir().join(format!("azflow-moto-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ranges = dir.join("ip-ranges.json");
    std::fs::write(&ranges, IP_RANGES).expect("ranges file");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azflow"));
    cmd.args(["topology", "--json", "--aws-ip-ranges"])
        .arg(&ranges);
    cmd.env("AZFLOW_LOG", "info").env("NO_COLOR", "1");
    aws_env(&mut cmd, &imds.url(), Some(&moto.url()));
    let out = cmd.output().expect("running azflow");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "azflow topology failed:\n{stderr}");
    assert!(
        !stderr.contains("refresh failed"),
        "no call may fail:\n{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON: {e}\n{}", text(&out.stdout)));
    let prefixes = v["prefixes"].as_array().expect("prefixes");
    let row = |p: &str| {
        prefixes
            .iter()
            .find(|r| r["prefix"] == p)
            .unwrap_or_else(|| {
                panic!(
                    "{p} missing:\n{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                )
            })
            .clone()
    };
    let check = |p: &str, route: &str, path: &str, hop: Option<&str>, usd: (f64, f64)| {
        let r = row(p);
        assert_eq!(r["route"].as_str(), Some(route), "{p}: {r}");
        assert_eq!(r["path"].as_str(), Some(path), "{p}: {r}");
        assert_eq!(r["hop_zone_id"].as_str(), hop, "{p}: {r}");
        assert_eq!(
            (
                r["usd_per_gb"]["transmit"].as_f64(),
                r["usd_per_gb"]["receive"].as_f64()
            ),
            (Some(usd.0), Some(usd.1)),
            "{p}: {r}"
        );
    };
    let b_zone = id("b_zone_id");
    // Internet through the NAT gateway in AZ b: NAT processing + internet out + cross-AZ.
    check(
        "0.0.0.0/0",
        &id("nat"),
        "nat_gateway_cross_az",
        Some(&b_zone),
        (0.145, 0.055),
    );
    // AWS ranges behind the NAT are NAT-processed too, whatever their region.
    check(
        "3.80.0.0/12",
        &id("nat"),
        "nat_gateway_cross_az",
        Some(&b_zone),
        (0.145, 0.055),
    );
    check(
        "35.80.0.0/12",
        &id("nat"),
        "nat_gateway_cross_az",
        Some(&b_zone),
        (0.145, 0.055),
    );
    // The peer VPC is in us-west-2: inter-region transfer.
    check(
        "10.40.0.0/16",
        &id("pcx"),
        "cross_region",
        None,
        (0.02, 0.0),
    );
    check(
        "10.100.0.0/14",
        &id("tgw"),
        "transit_gateway",
        None,
        (0.02, 0.0),
    );
    // The S3 prefix list, expanded from the ranges file, is free through the gateway endpoint.
    check(
        "52.216.0.0/15",
        &id("vpce"),
        "vpc_endpoint_gateway",
        None,
        (0.0, 0.0),
    );
    // Inside the VPC: local routes, today's classes.
    check("10.30.1.0/24", "local", "same_az", None, (0.0, 0.0));
    check("10.30.2.0/24", "local", "cross_az", None, (0.01, 0.01));
}
