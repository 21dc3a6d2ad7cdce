use super::*;

const HOST: &str =
    "[host]\nregion = \"us-east-1\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n";

fn parse(text: &str) -> Result<Topology, TopologyFileError> {
    parse_str(text, Path::new("t.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(t) => panic!("expected problems, parsed {t:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The only problem of `text`, as `(line, column, field)` plus its message.
fn only(text: &str) -> ((usize, usize, String), String) {
    let p = problems(text);
    assert_eq!(p.len(), 1, "expected one problem: {p:#?}");
    let p = &p[0];
    ((p.line, p.column, p.field.clone()), p.message.clone())
}

fn at(line: usize, column: usize, field: &str) -> (usize, usize, String) {
    (line, column, field.to_owned())
}

#[test]
fn a_valid_file_builds_a_static_topology() {
    let text = format!(
        "{HOST}vpc_cidrs = [\"10.0.0.0/16\", \"fd00:0:0::/48\"]\ninstance_id = \"i-0abc\"\n\n\
         [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\nname = \"private-a\"\n\n\
         [[subnet]]\ncidr = \"fd00:0:0:2::/64\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\n\
         subnet_id = \"subnet-2\"\nvpc_id = \"vpc-1\"\nregion = \"us-east-1\"\n"
    );
    let t = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let h = t.host();
    assert_eq!(
        (h.zone.as_str(), h.zone_id.as_str()),
        ("us-east-1a", "use1-az1")
    );
    assert_eq!(h.region.as_deref(), Some("us-east-1"));
    assert_eq!(h.instance_id.as_deref(), Some("i-0abc"));
    assert_eq!(h.vpc_cidrs.len(), 2);
    assert_eq!(t.subnets().len(), 2);
    assert!(t.subnets().iter().all(|s| s.source == Source::StaticFile));
    assert_eq!(t.subnets()[0].name.as_deref(), Some("private-a"));
    assert_eq!(t.subnets()[1].vpc_id.as_deref(), Some("vpc-1"));
}

#[test]
fn the_example_file_parses() {
    let text = include_str!("../../../../examples/topology.toml");
    let t = parse(text).unwrap_or_else(|e| panic!("examples/topology.toml:\n{e}"));
    assert_eq!(t.host().zone_id, "use1-az1");
    let zones: std::collections::BTreeSet<&str> =
        t.subnets().iter().map(|s| s.zone_id.as_str()).collect();
    assert!(zones.len() >= 3, "{zones:?}");
    assert!(t.subnets().iter().any(|s| s.cidr.addr().is_ipv6()));
    assert!(
        t.subnets()
            .iter()
            .any(|s| s.vpc_id.is_some() && s.region.is_some())
    );
}

#[test]
fn overlapping_prefixes_and_no_subnets_are_legal() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.0.0/16\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\n\
         [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
    );
    assert_eq!(parse(&text).map(|t| t.subnets().len()).ok(), Some(2));
    assert_eq!(parse(HOST).map(|t| t.subnets().len()).ok(), Some(0));
}

#[test]
fn bad_cidr_names_line_column_and_field() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.0.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\
         [[subnet]]\ncidr = \"10.0.1.0/33\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
    );
    let err = parse(&text).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "t.toml:10:8: subnet[1].cidr: \"10.0.1.0/33\" is not a valid CIDR (prefix length 33 > 32); \
         write it as ADDRESS/PREFIX, e.g. 10.0.1.0/24"
    );
}

#[test]
fn host_bits_suggest_the_network_address() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.1.5/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
    );
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(6, 8, "subnet[0].cidr"));
    assert!(
        msg.contains("host bits set; write the network address: 10.0.1.0/24"),
        "{msg}"
    );
}

#[test]
fn bad_vpc_cidrs_name_the_element() {
    let text = format!("{HOST}vpc_cidrs = [\"10.0.0.0/16\", \"10.1.0.0/8\"]\n");
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(5, 29, "host.vpc_cidrs[1]"));
    assert!(msg.contains("10.0.0.0/8"), "{msg}");
}

#[test]
fn unknown_fields_anywhere_list_the_allowed_ones() {
    let (pos, msg) = only(&format!("title = \"x\"\n{HOST}"));
    assert_eq!(pos, at(1, 1, "title"));
    assert!(
        msg.contains(
            "allowed fields in the top level are host, subnet, route, nat_gateway, peering, endpoint"
        ),
        "{msg}"
    );

    let (pos, msg) = only(&format!("{HOST}zone_name = \"us-east-1a\"\n"));
    assert_eq!(pos, at(5, 1, "host.zone_name"));
    assert!(
        msg.contains("region, zone, zone_id, vpc_cidrs, instance_id, account_id"),
        "{msg}"
    );

    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\nzoneid = \"x\"\n"
    );
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(9, 1, "subnet[0].zoneid"));
    assert!(msg.starts_with("unknown field \"zoneid\"; did you mean zone_id? allowed fields in subnet[0] are cidr, zone, zone_id, name, subnet_id, vpc_id, region"), "{msg}");
}

#[test]
fn missing_az_fields_point_at_the_section() {
    let text = format!("{HOST}\n[[subnet]]\ncidr = \"10.0.1.0/24\"\n");
    let p = problems(&text);
    let fields: Vec<(usize, usize, &str)> = p
        .iter()
        .map(|p| (p.line, p.column, p.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [(6, 1, "subnet[0].zone"), (6, 1, "subnet[0].zone_id")]
    );
    assert_eq!(p[1].message, "missing; add zone_id = \"use1-az1\"");

    let text = format!("{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone_id = \"use1-az2\"\n");
    assert_eq!(only(&text).0, at(5, 1, "subnet[0].zone"));

    let (pos, msg) = only("[host]\nzone = \"us-east-1a\"\n");
    assert_eq!(
        (pos, msg.as_str()),
        (
            at(1, 1, "host.zone_id"),
            "missing; add zone_id = \"use1-az1\""
        )
    );

    let (pos, msg) =
        only("[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n");
    assert_eq!(pos, at(1, 1, "host"));
    assert!(msg.contains("add a [host] section"), "{msg}");
}

#[test]
fn bad_zone_values_are_reported_at_the_value() {
    let text = "[host]\nzone = \"\"\nzone_id = \"us-east-1a\"\n";
    let p = problems(text);
    assert_eq!(
        (p[0].line, p[0].column, p[0].field.as_str()),
        (2, 8, "host.zone")
    );
    assert!(p[0].message.contains("empty"), "{}", p[0].message);
    assert_eq!(
        (p[1].line, p[1].column, p[1].field.as_str()),
        (3, 11, "host.zone_id")
    );
    assert!(
        p[1].message.contains("is an AZ name, not an AZ ID"),
        "{}",
        p[1].message
    );
    assert_eq!(p.len(), 2);
    // Local and test IDs are fine.
    assert!(parse("[host]\nzone = \"test-a\"\nzone_id = \"test-az1\"\n").is_ok());
}

#[test]
fn duplicate_cidr_names_both_lines() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\
         [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
    );
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(10, 8, "subnet[1].cidr"));
    assert_eq!(
        msg,
        "10.0.1.0/24 is listed twice: here (line 10) and in subnet[0] (line 6); remove one of them"
    );
}

#[test]
fn conflicting_az_for_one_cidr_names_both_lines() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n\
         [[subnet]]\ncidr = \"10.0.1.0/24\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\n"
    );
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(10, 8, "subnet[1].cidr"));
    assert_eq!(
        msg,
        "10.0.1.0/24 is in use1-az2 here (line 10) but in use1-az1 in subnet[0] (line 6); \
         a subnet lives in exactly one AZ: fix the zone_id of one of them"
    );
}

#[test]
fn wrong_types_say_what_was_found() {
    let text =
        format!("{HOST}[[subnet]]\ncidr = 10\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n");
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(6, 8, "subnet[0].cidr"));
    assert_eq!(
        msg,
        "expected a string, found an integer; write it in quotes, e.g. cidr = \"10.0.1.0/24\""
    );

    let (pos, msg) = only(&format!("{HOST}vpc_cidrs = \"10.0.0.0/16\"\n"));
    assert_eq!(pos, at(5, 13, "host.vpc_cidrs"));
    assert!(
        msg.starts_with("expected an array of strings, found a string"),
        "{msg}"
    );

    let (pos, _) = only(&format!("{HOST}vpc_cidrs = [16]\n"));
    assert_eq!(pos, at(5, 14, "host.vpc_cidrs[0]"));

    let text = format!("{HOST}[subnet]\ncidr = \"10.0.1.0/24\"\n");
    let (pos, msg) = only(&text);
    assert_eq!(pos, at(5, 1, "subnet"));
    assert!(msg.contains("[[subnet]]"), "{msg}");

    let (pos, msg) = only("host = \"us-east-1a\"\n");
    assert_eq!(pos, at(1, 8, "host"));
    assert!(msg.starts_with("expected a table, found a string"), "{msg}");

    let (pos, msg) =
        only("[host]\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\naccount_id = 123456789012\n");
    assert_eq!(pos, at(4, 14, "host.account_id"));
    assert!(msg.contains("write it in quotes"), "{msg}");
}

#[test]
fn syntax_errors_name_the_field_and_suggest_a_fix() {
    let text = format!(
        "{HOST}[[subnet]]\ncidr = 10.0.1.0/24\nzone = \"us-east-1a\"\nzone_id = \"use1-az1\"\n"
    );
    let p = problems(&text);
    assert_eq!((p[0].line, p[0].field.as_str()), (6, "subnet[0].cidr"));
    assert!(
        p[0].message.starts_with("TOML syntax error: "),
        "{}",
        p[0].message
    );
    assert!(
        p[0].message.ends_with("write cidr = \"10.0.1.0/24\""),
        "{}",
        p[0].message
    );

    let (pos, msg) = only("[host]\nzone = \"us-east-1a\nzone_id = \"use1-az1\"\n");
    assert_eq!(pos, at(2, 19, "host.zone"));
    assert!(msg.contains("invalid basic string"), "{msg}");

    let (pos, msg) = only(&format!("{HOST}zone = \"us-east-1b\"\n"));
    assert_eq!(pos, at(5, 1, "host.zone"));
    assert!(
        msg.contains("duplicate key") && msg.contains("keep one"),
        "{msg}"
    );

    let text =
        format!("{HOST}[[subnet]]\ncidr = \"10.0.1.0/24\"\n[[subnet]]\ncidr = \"10.0.2.0/24\" x\n");
    let p = problems(&text);
    assert_eq!((p[0].line, p[0].field.as_str()), (8, "subnet[1].cidr"));
}

#[test]
fn one_pass_reports_every_problem_in_file_order() {
    let text = "[host]\nzone = \"us-east-1a\"\nzone_id = \"\"\ncolour = \"blue\"\n\n\
                [[subnet]]\ncidr = \"10.0.1.0/33\"\nzone_id = \"use1-az2\"\n\n\
                [[subnet]]\ncidr = \"10.0.2.1/24\"\nzone = \"us-east-1b\"\nzone_id = \"use1-az2\"\n";
    let err = parse(text).expect_err("invalid");
    let lines: Vec<String> = err
        .to_string()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(5, ':');
            let head: Vec<&str> = parts.by_ref().take(4).collect();
            head.join(":")
        })
        .collect();
    assert_eq!(
        lines,
        [
            "t.toml:3:11: host.zone_id",
            "t.toml:4:1: host.colour",
            "t.toml:6:1: subnet[0].zone",
            "t.toml:7:8: subnet[0].cidr",
            "t.toml:11:8: subnet[1].cidr",
        ]
    );
}

#[test]
fn an_unreadable_file_names_the_path() {
    let e = load_file(Path::new("/nonexistent/azflow/topology.toml")).expect_err("missing");
    assert!(matches!(e, TopologyFileError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/azflow/topology.toml: cannot read"),
        "{e}"
    );
    assert!(e.problems().is_empty());
}

#[test]
fn positions_count_characters_not_bytes() {
    assert_eq!(position("ab\ncd", &line_starts("ab\ncd"), 4), (2, 2));
    assert_eq!(position("é = 1", &line_starts("é = 1"), 3), (1, 3));
    assert_eq!(position("", &line_starts(""), 10), (1, 1));
    assert_eq!(closest("zoneid", SUBNET_FIELDS), Some("zone_id"));
    assert_eq!(closest("colour", SUBNET_FIELDS), None);
}
