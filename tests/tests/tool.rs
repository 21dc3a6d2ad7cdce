//! The traffic tool on loopback (no root, no bed): what the suites rely on beyond "bytes arrive".

use std::{process::Command, time::Duration};

use azflow_tests::{
    process::Proc,
    protocol::{Listening, Report},
    traffic_bin,
};

/// `bulk --rate` paces: a live view (`azflow top`) reads known, steady rates from it.
#[test]
fn paced_bulk_takes_as_long_as_its_rate_says() {
    let mut server = Proc::spawn(
        {
            let mut c = Command::new(traffic_bin!());
            c.args(["serve", "--bind", "127.0.0.1:0", "--timeout-secs", "30"]);
            c
        },
        None,
    )
    .expect("server");
    let line = server
        .next_line(Duration::from_secs(10))
        .expect("listening line");
    let Ok(Report::Listening(Listening { addr, .. })) = serde_json::from_str(&line) else {
        panic!("not a listening report: {line}");
    };
    // 1.5 MiB at 1 MiB/s in 16 KiB chunks: 1.5 s, the last chunk's slot at 1.484 s.
    let done = Proc::spawn(
        {
            let mut c = Command::new(traffic_bin!());
            c.args(["bulk", "--to", &addr.to_string(), "--bytes", "1536k"])
                .args(["--chunk", "16k", "--rate", "1M"]);
            c
        },
        None,
    )
    .expect("client")
    .wait_ok(Duration::from_secs(30))
    .expect("paced bulk");
    let Ok(Report::Bulk(r)) = serde_json::from_str(done.stdout.trim()) else {
        panic!("not a bulk report: {}", done.stdout);
    };
    println!("paced: {} B in {:.3} s", r.confirmed_bytes, r.elapsed_secs);
    assert_eq!(r.confirmed_bytes, 1536 << 10);
    assert!(
        (1.45..3.0).contains(&r.elapsed_secs),
        "1.5 MiB at 1 MiB/s took {:.3} s",
        r.elapsed_secs
    );
    // A rate of 0 is refused, not a division by zero.
    let out = Command::new(traffic_bin!())
        .args([
            "bulk",
            "--to",
            &addr.to_string(),
            "--bytes",
            "1",
            "--rate",
            "0",
        ])
        .output()
        .expect("bulk --rate 0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}
