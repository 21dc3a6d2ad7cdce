//! OTLP over TLS with a custom CA (`--otlp-ca-file`), gRPC and HTTP/protobuf: exports arrive when
//! the CA vouches for the receiver, and none do without it (verification is on).

mod common;
mod otlp_receiver;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use azflow_tests::TestBed;
use common::{Agent, write_topology};
use otlp_receiver::{Protocol, Receiver, ServerTls};

/// A throw-away CA (written to `dir`) and a certificate it signed for 127.0.0.1.
fn make_certificates(dir: &Path) -> (PathBuf, ServerTls) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(rcgen::DnType::CommonName, "azflow test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    let cert = server.signed_by(&key, &ca).expect("server certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("CA file");
    (ca_file, ServerTls { cert_pem: cert.pem().into_bytes(), key_pem: key.serialize_pem().into_bytes() })
}

fn check(protocol: Protocol) {
    let Some(bed) = TestBed::new_or_skip() else { return };
    let dir = std::env::temp_dir().join(format!("azflow-otlp-tls-{}-{protocol:?}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let (ca, server) = make_certificates(&dir);
    let rx = Receiver::start_tls(protocol, "127.0.0.1:0".parse().expect("addr"), server);
    let endpoint = rx.endpoint();
    let base = [
        "--topology",
        topo.to_str().expect("utf-8"),
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        protocol.flag(),
        "--otlp-interval",
        "300ms",
        "--otlp-timeout",
        "2s",
        "--otlp-compression",
        "gzip",
    ];

    let mut args = base.to_vec();
    args.extend(["--otlp-ca-file", ca.to_str().expect("utf-8")]);
    let agent = Agent::start(bed.cgroup_path(), &args);
    let e = rx.wait_for(Duration::from_secs(15), "over TLS", |_| true);
    assert!(e.drains() > 0.0);
    let (status, _) = agent.stop();
    assert!(status.success());

    // Without the CA the receiver is a stranger: nothing is sent, failures are counted.
    let sent = rx.count();
    let agent = Agent::start(bed.cgroup_path(), &base);
    let deadline = Instant::now() + Duration::from_secs(15);
    let failures = loop {
        let f = agent.scrape().value("azflow_export_failures_total", &[]);
        if f >= 2.0 {
            break f;
        }
        assert!(Instant::now() < deadline, "exports to an unknown CA did not fail:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rx.count(), sent, "an export went through without the CA");
    println!("{protocol:?} over TLS: {sent} exports with the CA file, {failures} failures without it");
    let (status, _) = agent.stop();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn otlp_grpc_over_tls_with_a_custom_ca() {
    check(Protocol::Grpc);
}

#[test]
fn otlp_http_over_tls_with_a_custom_ca() {
    check(Protocol::Http);
}
