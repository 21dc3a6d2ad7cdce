//! `azflow top` against a real agent on the three-AZ bed, in a real terminal (tmux).
//!
//! Three workloads below the bed's cgroup, as in `ebpf_workloads.rs`: two systemd-style units
//! (`system.slice/web.service`, `system.slice/batch.service`) and a CRI pod in namespace `shop`
//! named like a Deployment's (`cart-7d9f8b6c5d-x2k4q`) in a containerd started by the test. Each
//! sends paced streams from the bed's monitored host a1 (the traffic tool joined to the
//! workload's cgroup) at known payload rates to hosts of other AZs and of its own:
//!
//! | workload      | cross-AZ         | same-AZ (a2)  | affinity |
//! |---------------|------------------|---------------|----------|
//! | web.service   | 2.0 MB/s to b1   | —             | 0 %      |
//! | shop/cart     | 0.6 MB/s to c1   | 1.8 MB/s      | 75 %     |
//! | batch.service | 0.15 MB/s to b1  | 0.15 MB/s     | 50 %     |
//!
//! Asserted: `--once` lists the three by cross-AZ bytes/s with rates near the payload rates
//! (wire bytes: headers and ACKs on top; the agent drains every 300 ms, so a window holds
//! ±1 drain) and their affinities; in tmux the default sort, `s` to $/day (same order), to
//! affinity (web, batch, cart) and to name (alphabetical), the filter on a name and on a kind,
//! and `q` quits. Columns are read by meaning (see `top_support`), not position.
//!
//! Root only; without root or the tools (containerd, tmux) it prints SKIPPED, and with
//! `AZFLOW_REQUIRE_EBPF=1` fails.

mod common;
mod containerd_support;
mod top_support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use azflow_tests::{Family, TestBed, TrafficServer, process::Proc};
use common::{Agent, write_topology};
use containerd_support::{
    Containerd,
    cri::{self, PodSpec, unified_cgroup},
    missing_tool,
};
use top_support::{Row, Tmux, names, ours, table};

const WEB: &str = "web.service";
const CART: &str = "shop/cart";
const BATCH: &str = "batch.service";
/// (workload, destination host, payload bytes/s); a1 is in AZ a.
const FLOWS: [(&str, &str, u64); 5] = [
    (WEB, "b1", 2_000_000),
    (CART, "c1", 600_000),
    (CART, "a2", 1_800_000),
    (BATCH, "b1", 150_000),
    (BATCH, "a2", 150_000),
];
/// (workload, cross-AZ payload bytes/s, affinity), in the order of the default sort.
const EXPECTED: [(&str, f64, f64); 3] = [
    (WEB, 2_000_000.0, 0.0),
    (CART, 600_000.0, 0.75),
    (BATCH, 150_000.0, 0.5),
];
/// Shown rate / payload rate: headers (~3.5 %) and ACKs (~2 %) on top, and a 3 s window that
/// may hold one 300 ms drain more or less than its length.
const RATE_BAND: (f64, f64) = (0.85, 1.35);
/// Affinity is a ratio of bytes counted in the same drains: only the ACKs' share differs.
const AFFINITY_TOLERANCE: f64 = 0.03;

fn skip_or_fail(reason: &str) {
    if std::env::var(azflow_tests::REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("cannot run the live top test: {reason}");
    }
    eprintln!("SKIPPED: top_live: {reason}");
}

/// A paced stream from a1, by a sender in `cgroup`, to a server in `dst`; both end on drop.
fn stream(bed: &TestBed, cgroup: &Path, dst: &str, rate: u64) -> (TrafficServer, Proc) {
    let server = bed
        .host(dst)
        .start_tcp_server(Family::V4, 1)
        .expect("server");
    let mut cmd = bed.monitored().traffic_command();
    azflow_tests::cgroup::join_on_spawn(&mut cmd, cgroup).expect("joining the workload's cgroup");
    // Ten minutes' worth: longer than the test, which kills it.
    cmd.args(["bulk", "--to", &server.addr().to_string()])
        .args(["--bytes", &(rate * 600).to_string()])
        .args(["--rate", &rate.to_string(), "--chunk", "16k"]);
    (server, Proc::spawn(cmd, None).expect("sender"))
}

/// Waits until the agent has an index for each of the `n` workloads.
fn wait_named(agent: &Agent, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .scrape()
        .value("azflow_workload_count", &[("of", "indexed_workloads")])
        < n as f64
    {
        assert!(
            Instant::now() < deadline,
            "the agent did not name the workloads within 20 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.workload == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

/// `--once`: the three first, by cross-AZ bytes/s, with their rates and affinities.
fn check_once(url: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_azflow"))
        .args(["top", "--once", "--interval", "3s", "--url", url])
        .output()
        .expect("azflow top --once");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("azflow top --once:\n{}", text.trim_end());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = table(&text);
    let want: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    assert_eq!(names(&rows)[..3.min(rows.len())], want[..], "{text}");
    for (name, rate, affinity) in EXPECTED {
        let r = find(&rows, name);
        let shown = r
            .cross_rate
            .unwrap_or_else(|| panic!("{name}: no rate in {text}"));
        let ratio = shown / rate;
        let aff = r
            .affinity
            .unwrap_or_else(|| panic!("{name}: no affinity in {text}"));
        println!(
            "{name:<14} {:<8} cross-AZ {shown:>10.0} B/s = {ratio:.3} × payload {rate:.0} B/s; affinity {:.1}% (want {:.0}%)",
            r.kind,
            aff * 100.0,
            affinity * 100.0
        );
        assert!(
            (RATE_BAND.0..=RATE_BAND.1).contains(&ratio),
            "{name}: {shown} B/s for a payload of {rate} B/s\n{text}"
        );
        assert!(
            (aff - affinity).abs() <= AFFINITY_TOLERANCE,
            "{name}: affinity {aff}, want {affinity}\n{text}"
        );
    }
    assert_eq!(find(&rows, CART).kind, "pod");
    assert_eq!(find(&rows, WEB).kind, "systemd");
}

/// The live view in tmux: sort keys, filters, quit.
fn check_terminal(url: &str) {
    let all = [WEB, CART, BATCH];
    let cmd = format!(
        "{} top --url {url} --interval 2s",
        env!("CARGO_BIN_EXE_azflow")
    );
    let tmux = Tmux::start("top-live", &cmd, 200, 50);

    let by =
        |sort: &'static str| move |s: &str| s.contains(sort) && ours(&table(s), &all).len() == 3;
    let s = tmux.wait_for(
        "the three workloads by cross-AZ bytes/s",
        by("sort: cross-AZ"),
    );
    let rows = table(&s);
    println!("tmux, default sort:\n{}", s.trim_end());
    // host and other send nothing across AZs: ours lead.
    assert_eq!(names(&rows)[..3], [WEB, CART, BATCH], "{s}");

    tmux.keys(&["s"]);
    let s = tmux.wait_for("sort by $/day", by("sort: $/day"));
    assert_eq!(names(&table(&s))[..3], [WEB, CART, BATCH], "{s}");

    tmux.keys(&["s"]);
    let s = tmux.wait_for("sort by affinity", by("sort: affinity"));
    println!("tmux, by affinity:\n{}", s.trim_end());
    assert_eq!(
        ours(&table(&s), &all),
        [WEB, BATCH, CART],
        "lowest same-AZ share first:\n{s}"
    );

    tmux.keys(&["s"]);
    let s = tmux.wait_for("sort by name", by("sort: name"));
    let rows = table(&s);
    let mut sorted = names(&rows);
    sorted.sort_unstable();
    assert_eq!(names(&rows), sorted, "alphabetical:\n{s}");
    assert_eq!(ours(&rows, &all), [BATCH, CART, WEB], "{s}");

    tmux.keys(&["/", "c", "a", "r", "t", "Enter"]);
    let s = tmux.wait_for("the filter on a name", |s| {
        s.contains("filter: cart") && table(s).len() == 1
    });
    assert_eq!(names(&table(&s)), [CART], "{s}");

    // The filter matches kinds too; `/` starts a new one.
    tmux.keys(&["/", "s", "y", "s", "t", "e", "m", "d", "Enter"]);
    let s = tmux.wait_for("the filter on a kind", |s| {
        s.contains("filter: systemd") && table(s).len() == 2
    });
    println!("tmux, filter systemd:\n{}", s.trim_end());
    assert_eq!(names(&table(&s)), [BATCH, WEB], "{s}");

    tmux.keys(&["q"]);
    assert!(
        tmux.wait_gone(Duration::from_secs(10)),
        "q did not quit:\n{}",
        tmux.screen()
    );
}

#[test]
fn top_shows_a_live_agents_workloads_sorted_and_filtered() {
    let Some(bed) = TestBed::new_or_skip() else {
        return;
    };
    if let Some(reason) = missing_tool() {
        return skip_or_fail(&reason);
    }
    if azflow_tests::find_tool("tmux").is_none() {
        return skip_or_fail("`tmux` is not installed (Debian tmux)");
    }
    let root = azflow::cgroup::default_cgroup().unwrap_or_else(|e| panic!("{e}"));
    let bed_cg = bed.cgroup_path().to_path_buf();
    let rel = bed_cg
        .strip_prefix(&root)
        .expect("the bed's cgroup is below the cgroup2 root")
        .to_string_lossy()
        .into_owned();
    let uid = format!("5d1e7a2c-3b4f-4c6d-8e9f-{:012x}", std::process::id());
    let units: Vec<PathBuf> = [WEB, BATCH]
        .iter()
        .map(|u| bed_cg.join("system.slice").join(u))
        .collect();
    for u in &units {
        std::fs::create_dir_all(u).unwrap_or_else(|e| panic!("creating {}: {e}", u.display()));
    }

    let mut ctrd = Containerd::start("top-live");
    ctrd.cgroups_to_remove = vec![
        format!("{rel}/kubepods/besteffort/pod{uid}"),
        format!("{rel}/kubepods/besteffort"),
        format!("{rel}/kubepods"),
        format!("{rel}/system.slice/{WEB}"),
        format!("{rel}/system.slice/{BATCH}"),
        format!("{rel}/system.slice"),
    ];
    ctrd.import_image(&["k8s.io"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio: {e}"));
    let mut client = rt.block_on(cri::client(&ctrd.socket()));
    let spec = PodSpec {
        namespace: "shop",
        name: "cart-7d9f8b6c5d-x2k4q",
        uid: &uid,
        template_hash: "7d9f8b6c5d",
        cgroup_parent: format!("/{rel}/kubepods/besteffort/pod{uid}"),
        container: "app",
    };
    let (_, pod_container) = rt.block_on(cri::run_pod(&mut client, &spec));
    let pod_cg =
        root.join(unified_cgroup(ctrd.task_pid("k8s.io", &pod_container)).trim_start_matches('/'));
    assert!(
        pod_cg.starts_with(&bed_cg),
        "the pod runs below the bed: {}",
        pod_cg.display()
    );

    let dir = std::env::temp_dir().join(format!("azflow-toplive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let topo = write_topology(&bed, &dir);
    let state = ctrd.state();
    let agent = Agent::start(
        &bed_cg,
        &[
            "--topology",
            topo.to_str().expect("utf-8"),
            "--containerd-state",
            state.to_str().expect("utf-8"),
            "--workload-refresh",
            "300ms",
        ],
    );
    // Named before the first byte, so no stream starts under `other`.
    wait_named(&agent, 3);

    let cgroup_of = |w: &str| match w {
        CART => pod_cg.clone(),
        WEB => units[0].clone(),
        _ => units[1].clone(),
    };
    let _streams: Vec<_> = FLOWS
        .iter()
        .map(|(w, dst, rate)| stream(&bed, &cgroup_of(w), dst, *rate))
        .collect();
    // Past the slow start of every stream.
    std::thread::sleep(Duration::from_secs(2));

    let url = format!("http://{}", agent.metrics);
    check_once(&url);
    check_terminal(&url);

    let (status, _) = agent.stop();
    assert!(status.success(), "azflow exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
