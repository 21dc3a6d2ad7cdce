//! `azflow topology --topology FILE`: every malformed file exits 78 (EX_CONFIG) naming
//! `file:line:column: field:`, and the example file prints every subnet.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const EX_CONFIG: i32 = 78;

const HOST: &str =
    "[host]\nregion = \"us-east-1\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topology.toml")
}

/// A fresh directory for this test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("azflow-topology-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn azflow_topology(file: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_azflow"))
        .arg("topology")
        .arg("--topology")
        .arg(file)
        .args(extra)
        .env_remove("AZFLOW_TOPOLOGY")
        .env("AZFLOW_AWS", "off") // never a real metadata address from a test
        .output()
        .unwrap_or_else(|e| panic!("running azflow: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `content` to `<dir>/<name>.toml`, runs the command on it, and checks exit code 78 and
/// that stderr holds `<file>:<where>` (where = "LINE:COL: FIELD:").
fn assert_rejected(dir: &Path, name: &str, content: &str, expected: &str) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, content).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = azflow_topology(&file, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EX_CONFIG),
        "{name}: stderr:\n{stderr}"
    );
    let needle = format!("{}:{expected}", file.display());
    assert!(
        stderr.contains(&needle),
        "{name}: expected {needle:?} in stderr:\n{stderr}"
    );
}

#[test]
fn malformed_files_exit_78_and_name_file_line_column_and_field() {
    let dir = temp_dir("malformed");
    let cases: &[(&str, String, &str)] = &[
        (
            "bad_cidr",
            format!(
                "{HOST}[[subnet]]\ncidr = \"10.0.1.0/33\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
            ),
            "6:8: subnet[0].cidr: \"10.0.1.0/33\" is not a valid CIDR (prefix length 33 > 32)",
        ),
        (
            "host_bits",
            format!(
                "{HOST}[[subnet]]\ncidr = \"10.0.1.5/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
            ),
            "6:8: subnet[0].cidr: \"10.0.1.5/24\" has host bits set; write the network address: 10.0.1.0/24",
        ),
        (
            "unknown_field",
            format!(
                "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\nzoneid = \"x\"\n"
            ),
            "9:1: subnet[0].zoneid: unknown field \"zoneid\"",
        ),
        (
            "unknown_top_level_field",
            format!("{HOST}\n[defaults]\nzone = \"us-east-1a\"\n"),
            "6:2: defaults: unknown field \"defaults\"",
        ),
        (
            "missing_zone_id",
            format!("{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\n"),
            "5:1: subnet[0].zone_id: missing",
        ),
        (
            "missing_zone",
            format!("{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone_id = \"use1-az1\"\n"),
            "5:1: subnet[0].zone: missing",
        ),
        (
            "missing_host_zone_id",
            "[host]\nzone = \"us-east-1a\"\n".to_owned(),
            "1:1: host.zone_id: missing",
        ),
        (
            "missing_host",
            "[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
                .to_owned(),
            "1:1: host: missing",
        ),
        (
            "duplicate_cidr",
            format!(
                "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\
                 [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
            ),
            "10:8: subnet[1].cidr: 10.0.1.0/24 is listed twice: here (line 10) and in subnet[0] (line 6)",
        ),
        (
            "conflicting_az",
            format!(
                "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\
                 [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\n"
            ),
            "10:8: subnet[1].cidr: 10.0.1.0/24 is in use1-az2 here (line 10) but in use1-az1 in subnet[0] (line 6)",
        ),
        (
            "wrong_type",
            format!("{HOST}[[subnet]]\ncidr = 10\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"),
            "6:8: subnet[0].cidr: expected a string, found an integer",
        ),
        (
            "subnet_as_table",
            format!("{HOST}[subnet]\ncidr = \"10.0.1.0/24\"\n"),
            "5:1: subnet: expected an array of tables, found a table",
        ),
        (
            "empty_zone_id",
            "[host]\nzone = \"us-east-1a\"\nzone_id = \"  \"\n".to_owned(),
            "3:11: host.zone_id: AZ ID is empty",
        ),
        (
            "syntax_unquoted_cidr",
            format!(
                "{HOST}[[subnet]]\ncidr = 10.0.1.0/24\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
            ),
            "6:12: subnet[0].cidr: TOML syntax error:",
        ),
        (
            "syntax_unterminated_string",
            "[host]\nzone = \"us-east-1a\nzone_id = \"use1-az1\"\n".to_owned(),
            "2:19: host.zone: TOML syntax error:",
        ),
    ];
    for (name, content, expected) in cases {
        assert_rejected(&dir, name, content, expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let dir = temp_dir("every");
    let file = dir.join("many.toml");
    let content = "[host]\nzone = \"us-east-1a\"\nzone_id = \"\"\ncolour = \"blue\"\n\n\
                   [[subnet]]\ncidr = \"10.0.1.0/33\"\nzone_id = \"use1-az2\"\n";
    std::fs::write(&file, content).unwrap_or_else(|e| panic!("{e}"));
    let out = azflow_topology(&file, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    for at in [
        "3:11: host.zone_id:",
        "4:1: host.colour:",
        "6:1: subnet[0].zone:",
        "7:8: subnet[0].cidr:",
    ] {
        let needle = format!("{}:{at}", file.display());
        assert!(
            stderr.contains(&needle),
            "expected {needle:?} in:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_file_exits_78() {
    let file = temp_dir("unreadable").join("does-not-exist.toml");
    let out = azflow_topology(&file, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

/// The `cidr = "…"` values of the example file.
fn example_cidrs() -> Vec<String> {
    let content = std::fs::read_to_string(example()).unwrap_or_else(|e| panic!("{e}"));
    let cidrs: Vec<String> = content
        .lines()
        .filter_map(|l| l.trim().strip_prefix("cidr = \""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(
        cidrs.len() >= 6,
        "the example should list subnets: {cidrs:?}"
    );
    cidrs
}

#[test]
fn the_example_file_lists_every_subnet() {
    let out = azflow_topology(&example(), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    assert!(stdout.contains("use1-az1"), "{stdout}");
    for cidr in example_cidrs() {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(cidr.as_str())),
            "{cidr} missing from:\n{stdout}"
        );
    }
}

#[test]
fn the_example_file_as_json_lists_every_subnet() {
    let out = azflow_topology(&example(), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)));
    assert_eq!(v["host"]["zone_id"], "use1-az1");
    let prefixes = v["prefixes"]
        .as_array()
        .unwrap_or_else(|| panic!("no prefixes: {v}"));
    for cidr in example_cidrs() {
        let row = prefixes.iter().find(|p| p["prefix"] == cidr.as_str());
        let row = row.unwrap_or_else(|| panic!("{cidr} missing from JSON"));
        assert_eq!(row["source"], "file", "{row}");
    }
}

#[test]
fn ebpf_run_with_a_bad_file_exits_78_and_attaches_nothing() {
    if azflow_tests::require_root_or_skip().is_none() {
        return;
    }
    let dir = temp_dir("run");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[host]\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n[[subnet]]\ncidr = \"10.0.1.0/33\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n")
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    struct Cgroup(PathBuf);
    impl Drop for Cgroup {
        fn drop(&mut self) {
            let _ = azflow_tests::cgroup::remove(&self.0, std::time::Duration::from_secs(5));
        }
    }
    let root = azflow_tests::cgroup::cgroup2_root().unwrap_or_else(|e| panic!("cgroup2 root: {e:#}"));
    let cgroup = Cgroup(root.join(format!("azft-run78-{}", std::process::id())));
    std::fs::create_dir_all(&cgroup.0).unwrap_or_else(|e| panic!("creating {}: {e}", cgroup.0.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_azflow"))
        .args(["run", "--prometheus", "off", "--console", "never", "--cgroup"])
        .arg(&cgroup.0)
        .arg("--topology")
        .arg(&file)
        .env("AZFLOW_AWS", "off")
        .output()
        .unwrap_or_else(|e| panic!("running azflow: {e}"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "stderr:\n{stderr}");
    assert!(stderr.contains(&format!("{}:5:8: subnet[0].cidr:", file.display())), "stderr:\n{stderr}");
    // Independent check with bpftool: no program of any kind on the cgroup.
    let shown = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&cgroup.0)
        .output()
        .unwrap_or_else(|e| panic!("running bpftool: {e}"));
    let listing = text(&shown.stdout);
    assert!(shown.status.success() && !listing.contains("azflow"), "bpftool cgroup show: {listing}");
}

#[test]
fn a_bad_price_table_exits_78_with_one_line_per_problem() {
    let dir = temp_dir("prices");
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "[charges]\ncross_az = { transmit = -0.01 }\n[region.eu-west-1]\nnat_gatway = { transmit = 0.05 }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = azflow_topology(&example(), &["--prices", &prices.display().to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let file = prices.display().to_string();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("azflow: {file}:2:25: charges.cross_az.transmit: ")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("azflow: {file}:4:1: region.eu-west-1.nat_gatway: ")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_files_price_every_prefix_by_its_path() {
    let prices = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prices.toml");
    let out = azflow_topology(&example(), &["--json", "--prices", &prices.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let row = |p: &str| {
        v["prefixes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["prefix"] == p))
            .cloned()
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    // The example routes the internet through a NAT gateway in use1-az2 (the host is in use1-az1).
    let nat = row("0.0.0.0/0");
    assert_eq!(nat["path"], "nat_gateway_cross_az");
    assert_eq!(nat["hop_zone_id"], "use1-az2");
    // nat_gateway 0.045 + internet 0.09 + cross_az 0.01 out; 0.045 + 0.01 in.
    assert_eq!(nat["usd_per_gb"]["transmit"], 0.145);
    assert_eq!(nat["usd_per_gb"]["receive"], 0.055);
    assert_eq!(row("10.2.0.0/16")["path"], "cross_region");
    assert_eq!(row("10.100.0.0/14")["path"], "transit_gateway");
    assert_eq!(row("52.216.0.0/15")["path"], "vpc_endpoint_gateway");
    assert_eq!(row("10.0.16.20/32")["path"], "vpc_endpoint_interface_cross_az");
    assert_eq!(row("10.1.16.0/20")["path"], "peering_cross_az");
    assert_eq!(row("10.0.0.0/20")["path"], "same_az");
    assert_eq!(row("::/0")["path"], "internet");
}
