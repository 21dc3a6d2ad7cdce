//! The AWS source's flags, shared by `run`, `topology` and `check`, and their validation.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AwsMode {
    /// Use AWS when IMDS answers; otherwise run on the static file or the host's interfaces.
    Auto,
    /// IMDS must answer: not being on EC2 is an error.
    On,
    /// Never call IMDS or EC2.
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Learn the VPC topology from IMDS and EC2 DescribeSubnets: auto, on or off.
    #[arg(long, value_enum, env = "AZFLOW_AWS", default_value_t = AwsMode::Auto)]
    pub aws: AwsMode,
    /// How often the AWS topology is refreshed (±10 % jitter), e.g. "5m".
    #[arg(long, env = "AZFLOW_REFRESH_INTERVAL", default_value = "5m")]
    pub refresh_interval: String,
    /// More VPCs whose subnets to learn (e.g. peered VPCs), comma-separated vpc-… ids.
    #[arg(long, env = "AZFLOW_EXTRA_VPC_IDS", value_delimiter = ',')]
    pub extra_vpc_ids: Vec<String>,
    /// Deadline of one EC2 API call, e.g. "10s".
    #[arg(long, env = "AZFLOW_AWS_TIMEOUT", default_value = "10s")]
    pub aws_timeout: String,
    /// AWS's ip-ranges.json (a local copy; never downloaded): the region and service of public
    /// addresses, and the ranges behind gateway endpoints.
    #[arg(long, env = "AZFLOW_AWS_IP_RANGES")]
    pub aws_ip_ranges: Option<std::path::PathBuf>,
}

/// Validated [`AwsArgs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    pub mode: AwsMode,
    pub refresh_interval: Duration,
    pub extra_vpc_ids: Vec<String>,
    pub timeout: Duration,
    /// `--aws-ip-ranges`; read (and checked) by `resolve`.
    pub ip_ranges: Option<std::path::PathBuf>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            mode: AwsMode::Auto,
            refresh_interval: Duration::from_secs(300),
            extra_vpc_ids: Vec::new(),
            timeout: Duration::from_secs(10),
            ip_ranges: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {problem}; {fix}")]
pub struct AwsArgsError {
    pub flag: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

impl AwsArgs {
    pub fn validate(&self) -> Result<AwsSettings, AwsArgsError> {
        let refresh_interval = duration(
            "refresh-interval",
            &self.refresh_interval,
            Duration::from_secs(1)..=Duration::from_secs(86_400),
            "choose between 1s and 24h, e.g. 5m",
        )?;
        let timeout = duration(
            "aws-timeout",
            &self.aws_timeout,
            Duration::from_millis(100)..=Duration::from_secs(120),
            "choose between 100ms and 2m",
        )?;
        let mut extra_vpc_ids = Vec::new();
        for raw in &self.extra_vpc_ids {
            let id = raw.trim();
            if id.is_empty() {
                continue;
            }
            let valid = id.strip_prefix("vpc-").is_some_and(|hex| {
                !hex.is_empty() && hex.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if !valid {
                return Err(AwsArgsError {
                    flag: "extra-vpc-ids",
                    problem: format!("{id:?} is not a VPC id"),
                    fix: "write vpc- ids separated by commas, e.g. vpc-0123456789abcdef0,vpc-0fedcba9876543210",
                });
            }
            if !extra_vpc_ids.iter().any(|v| v == id) {
                extra_vpc_ids.push(id.to_owned());
            }
        }
        Ok(AwsSettings {
            mode: self.aws,
            refresh_interval,
            extra_vpc_ids,
            timeout,
            ip_ranges: self.aws_ip_ranges.clone(),
        })
    }
}

fn duration(
    flag: &'static str,
    s: &str,
    range: std::ops::RangeInclusive<Duration>,
    fix: &'static str,
) -> Result<Duration, AwsArgsError> {
    let d = parse_duration(s).ok_or_else(|| AwsArgsError {
        flag,
        problem: format!("{s:?} is not a duration"),
        fix: "write a number with a unit, e.g. 30s, 5m or 1h",
    })?;
    if !range.contains(&d) {
        return Err(AwsArgsError {
            flag,
            problem: format!("{d:?} is out of range"),
            fix,
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        aws: AwsArgs,
    }

    fn parse(args: &[&str]) -> Result<AwsSettings, AwsArgsError> {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .aws
            .validate()
    }

    #[test]
    fn defaults_are_auto_every_five_minutes() {
        let s = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, AwsMode::Auto);
        assert_eq!(s.refresh_interval, Duration::from_secs(300));
        assert!(s.extra_vpc_ids.is_empty());
    }

    #[test]
    fn flags_are_checked_and_name_themselves() {
        let s = parse(&[
            "--aws",
            "off",
            "--refresh-interval",
            "30s",
            "--extra-vpc-ids",
            "vpc-1a,vpc-2b,vpc-1a",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.mode, s.refresh_interval),
            (AwsMode::Off, Duration::from_secs(30))
        );
        assert_eq!(s.extra_vpc_ids, ["vpc-1a", "vpc-2b"]);
        let e = parse(&["--refresh-interval", "0s"]).expect_err("too short");
        assert!(
            e.to_string()
                .starts_with("--refresh-interval: 0ns is out of range"),
            "{e}"
        );
        let e = parse(&["--extra-vpc-ids", "subnet-1"]).expect_err("not a vpc");
        assert_eq!(e.flag, "extra-vpc-ids");
        assert_eq!(
            parse(&["--aws-timeout", "x"]).map_err(|e| e.flag),
            Err("aws-timeout")
        );
    }
}
