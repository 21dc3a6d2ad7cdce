//! AWS's published address ranges, from a file the user gives (`--aws-ip-ranges`, the format of
//! <https://ip-ranges.amazonaws.com/ip-ranges.json>). The agent never downloads it: fetch it
//! with the deployment and refresh it as AWS publishes changes.
//!
//! It tells the region and service of a public address: AWS prefixes of the host's region are
//! `public_ip_same_region` behind an internet gateway, those of other regions `cross_region`, and
//! a gateway endpoint's service (S3, DynamoDB) gives the CIDRs its prefix list routes.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::paths::RangeGroup;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsRange {
    pub net: IpNet,
    pub region: String,
    pub service: String,
}

/// Every prefix of the file, v4 and v6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges {
    pub ranges: Vec<AwsRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpRangesError {
    #[error(
        "{}: cannot read the AWS ip-ranges file ({source}); check --aws-ip-ranges and the file's permissions",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}:{line}:{column}: {field}: {problem}; give the file as AWS publishes it \
         (https://ip-ranges.amazonaws.com/ip-ranges.json)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        problem: String,
    },
}

#[derive(Deserialize)]
struct File {
    prefixes: Vec<V4>,
    #[serde(default)]
    ipv6_prefixes: Vec<V6>,
}

#[derive(Deserialize)]
struct V4 {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct V6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}

pub fn load(path: &Path) -> Result<IpRanges, IpRangesError> {
    let text = std::fs::read_to_string(path).map_err(|source| IpRangesError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path)
}

pub fn parse_str(text: &str, path: &Path) -> Result<IpRanges, IpRangesError> {
    let invalid = |line, column, field: String, problem: String| IpRangesError::Invalid {
        path: path.to_owned(),
        line,
        column,
        field,
        problem,
    };
    let file: File = serde_json::from_str(text)
        .map_err(|e| invalid(e.line(), e.column(), "(document)".into(), e.to_string()))?;
    let v4 = file.prefixes.into_iter().enumerate().map(|(i, p)| {
        (
            format!("prefixes[{i}].ip_prefix"),
            p.ip_prefix,
            p.region,
            p.service,
        )
    });
    let v6 = file.ipv6_prefixes.into_iter().enumerate().map(|(i, p)| {
        (
            format!("ipv6_prefixes[{i}].ipv6_prefix"),
            p.ipv6_prefix,
            p.region,
            p.service,
        )
    });
    let mut ranges = Vec::new();
    for (field, prefix, region, service) in v4.chain(v6) {
        let net: IpNet = prefix.parse().map_err(|_| {
            // serde_json keeps no positions past parsing: find the value's line in the text.
            let (line, column) = locate(text, &format!("\"{prefix}\""));
            invalid(
                line,
                column,
                field.clone(),
                format!("{prefix:?} is not a CIDR"),
            )
        })?;
        ranges.push(AwsRange {
            net: net.trunc(),
            region,
            service,
        });
    }
    Ok(IpRanges { ranges })
}

/// 1-based line and column of the first occurrence of `needle` (1:1 when absent).
fn locate(text: &str, needle: &str) -> (usize, usize) {
    let Some(at) = text.find(needle) else {
        return (1, 1);
    };
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl IpRanges {
    /// Each AWS prefix as this region's or another's, without prefixes a kept prefix of the same
    /// group already covers (the file lists one range under several services), and without
    /// `GLOBAL` ones (CloudFront edges: the internet, as far as billing goes).
    pub fn groups(&self, host_region: &str) -> Vec<(IpNet, RangeGroup)> {
        let mut all: Vec<(IpNet, RangeGroup)> = self
            .ranges
            .iter()
            .filter(|r| r.region != "GLOBAL")
            .map(|r| {
                let g = if r.region == host_region {
                    RangeGroup::SameRegion
                } else {
                    RangeGroup::OtherRegion
                };
                (r.net, g)
            })
            .collect();
        // Wider prefixes first, so a covered one finds its cover already kept.
        all.sort_by_key(|(n, g)| (n.prefix_len(), *n, *g));
        all.dedup();
        let mut kept: Vec<(IpNet, RangeGroup)> = Vec::with_capacity(all.len());
        for (net, g) in all {
            let covered = kept.iter().any(|(k, kg)| {
                *kg == g && k.prefix_len() <= net.prefix_len() && k.contains(&net.network())
            });
            if !covered {
                kept.push((net, g));
            }
        }
        kept.sort();
        kept
    }

    /// The prefixes of `service` (as in the file: `S3`, `DYNAMODB`) in `region`.
    pub fn service(&self, service: &str, region: &str) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self
            .ranges
            .iter()
            .filter(|r| r.region == region && r.service.eq_ignore_ascii_case(service))
            .map(|r| r.net)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
  "syncToken": "1733000000",
  "createDate": "2026-12-01-00-00-00",
  "prefixes": [
    {"ip_prefix": "3.5.0.0/19", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
    {"ip_prefix": "3.5.0.0/19", "region": "us-east-1", "service": "S3", "network_border_group": "us-east-1"},
    {"ip_prefix": "3.5.16.0/21", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
    {"ip_prefix": "52.94.0.0/22", "region": "us-east-1", "service": "DYNAMODB", "network_border_group": "us-east-1"},
    {"ip_prefix": "35.80.0.0/12", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
    {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
  ],
  "ipv6_prefixes": [
    {"ipv6_prefix": "2600:1f18::/33", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"}
  ]
}"#;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn groups_by_region_without_covered_or_global_prefixes() {
        let r = parse_str(FILE, Path::new("ip-ranges.json")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.ranges.len(), 7);
        assert_eq!(
            r.groups("us-east-1"),
            [
                (net("3.5.0.0/19"), RangeGroup::SameRegion),
                (net("35.80.0.0/12"), RangeGroup::OtherRegion),
                (net("52.94.0.0/22"), RangeGroup::SameRegion),
                (net("2600:1f18::/33"), RangeGroup::SameRegion),
            ]
        );
        assert_eq!(r.service("s3", "us-east-1"), [net("3.5.0.0/19")]);
        assert_eq!(r.service("DYNAMODB", "us-east-1"), [net("52.94.0.0/22")]);
        assert!(r.service("S3", "eu-west-1").is_empty());
    }

    #[test]
    fn bad_files_name_file_line_and_field() {
        let bad = FILE.replace("\"52.94.0.0/22\"", "\"52.94.0.0/33\"");
        let e = parse_str(&bad, Path::new("r.json")).expect_err("bad prefix");
        assert!(
            e.to_string()
                .starts_with("r.json:8:19: prefixes[3].ip_prefix: \"52.94.0.0/33\" is not a CIDR"),
            "{e}"
        );
        let e = parse_str("{\"prefixes\": 5}", Path::new("r.json")).expect_err("wrong type");
        assert!(e.to_string().starts_with("r.json:1:"), "{e}");
        assert!(e.to_string().contains("(document)"), "{e}");
    }
}
