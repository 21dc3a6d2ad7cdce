//! `azflow check`: does IMDS answer, are there AWS credentials, may they call each EC2 action
//! the topology needs (`ec2:DescribeSubnets`, `DescribeRouteTables`, `DescribeNatGateways`,
//! `DescribeVpcEndpoints`, `DescribeVpcPeeringConnections`; DryRun calls)? One line per check,
//! and a one-line fix for each failure.

use std::{fmt, time::SystemTime};

use crate::{
    config::CheckArgs,
    topology::aws::{
        AwsSettings,
        credentials::{self, CredentialsCache},
        ec2::{Ec2Client, Ec2Error, MINIMAL_POLICY},
        http::{HttpClient, HttpError},
        imds::{ENDPOINT_ENV, ImdsClient, InstanceIdentity},
        resolve::NOT_ON_EC2_BUDGET,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Bad flags: exit 78.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Skipped,
}

/// One checked thing.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do about a failure, one line.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub checks: Vec<Check>,
}

impl CheckReport {
    pub fn all_ok(&self) -> bool {
        self.checks.iter().all(|c| c.outcome == Outcome::Ok)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let tag = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Skipped => "skip",
            };
            writeln!(f, "{tag}  {}: {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        Ok(())
    }
}

pub fn run(args: &CheckArgs) -> Result<CheckReport, CheckError> {
    let settings = args
        .aws
        .validate()
        .map_err(|e| CheckError::Config(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CheckError::Runtime(format!("starting the runtime: {e}")))?;
    Ok(runtime.block_on(check(&settings)))
}

fn ok(name: &'static str, detail: String) -> Check {
    Check {
        name,
        outcome: Outcome::Ok,
        detail,
        fix: None,
    }
}

fn fail(name: &'static str, detail: String, fix: String) -> Check {
    Check {
        name,
        outcome: Outcome::Fail,
        detail,
        fix: Some(fix),
    }
}

fn skipped(name: &'static str, detail: String, fix: String) -> Check {
    Check {
        name,
        outcome: Outcome::Skipped,
        detail,
        fix: Some(fix),
    }
}

pub async fn check(settings: &AwsSettings) -> CheckReport {
    let mut report = CheckReport::default();
    let http = HttpClient::new();
    let identity = check_imds(&http, &mut report).await;
    let region = identity.as_ref().map(|i| i.region.clone()).or_else(|| {
        ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    });
    let creds = CredentialsCache::default_chain(region.as_deref().unwrap_or("us-east-1")).await;
    let have_credentials = match creds.get().await {
        Ok(c) => {
            let key = c.access_key_id();
            let tail = &key[key.len().saturating_sub(4)..];
            let expires = c
                .expiry()
                .and_then(|e| e.duration_since(SystemTime::now()).ok())
                .map(|left| format!(", expires in {} min", left.as_secs() / 60))
                .unwrap_or_default();
            report.checks.push(ok(
                "credentials",
                format!(
                    "from {} (key …{tail}{expires})",
                    credentials::provider_name(&c)
                ),
            ));
            true
        }
        Err(e) => {
            report.checks.push(fail(
                "credentials",
                e.to_string(),
                "attach an IAM role (instance profile, IRSA or EKS Pod Identity) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            ));
            false
        }
    };
    const DESCRIBE: &str = "ec2:DescribeSubnets";
    let Some(region) = region else {
        for name in std::iter::once(DESCRIBE).chain(ROUTING_ACTIONS.iter().map(|a| a.0)) {
            report.checks.push(skipped(
                name,
                "no region: IMDS did not answer and AWS_REGION is unset".into(),
                "set AWS_REGION".into(),
            ));
        }
        return report;
    };
    if !have_credentials {
        for name in std::iter::once(DESCRIBE).chain(ROUTING_ACTIONS.iter().map(|a| a.0)) {
            report.checks.push(skipped(
                name,
                "no credentials to sign with".into(),
                "fix the credentials first".into(),
            ));
        }
        return report;
    }
    let endpoint = Ec2Client::endpoint_from_env(&region);
    let ec2 = Ec2Client::new(endpoint.clone(), region, http, creds, settings.timeout);
    let mut vpcs = identity
        .as_ref()
        .map(InstanceIdentity::vpc_ids)
        .unwrap_or_default();
    vpcs.extend(settings.extra_vpc_ids.iter().cloned());
    let check = match ec2.dry_run(&vpcs).await {
        Ok(()) => ok(DESCRIBE, format!("allowed (DryRun at {endpoint})")),
        Err(e) => fail(DESCRIBE, e.to_string(), fix_for(&e, &endpoint)),
    };
    report.checks.push(check);
    for (name, action) in ROUTING_ACTIONS {
        let check = match ec2.dry_run_action(action).await {
            Ok(()) => ok(name, format!("allowed (DryRun at {endpoint})")),
            Err(e) => fail(name, e.to_string(), fix_for(&e, &endpoint)),
        };
        report.checks.push(check);
    }
    report
}

/// The billing-path actions after DescribeSubnets: (IAM action, API action), one line each.
const ROUTING_ACTIONS: [(&str, &str); 4] = [
    ("ec2:DescribeRouteTables", "DescribeRouteTables"),
    ("ec2:DescribeNatGateways", "DescribeNatGateways"),
    ("ec2:DescribeVpcEndpoints", "DescribeVpcEndpoints"),
    (
        "ec2:DescribeVpcPeeringConnections",
        "DescribeVpcPeeringConnections",
    ),
];

async fn check_imds(http: &HttpClient, report: &mut CheckReport) -> Option<InstanceIdentity> {
    let imds = ImdsClient::from_env(http.clone());
    let fix = format!(
        "run on EC2 with IMDSv2 reachable (in containers: `aws ec2 modify-instance-metadata-options \
         --http-put-response-hop-limit 2`), or point {ENDPOINT_ENV} at it"
    );
    let probe = match tokio::time::timeout(NOT_ON_EC2_BUDGET, imds.probe()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "IMDS at {} did not answer within {NOT_ON_EC2_BUDGET:?}",
            imds.base()
        )),
    };
    if let Err(why) = probe {
        report.checks.push(fail("IMDS", why, fix));
        return None;
    }
    match imds.identity().await {
        Ok(i) => {
            let cidrs: Vec<String> = i.vpc_cidrs().iter().map(ToString::to_string).collect();
            report.checks.push(ok(
                "IMDS",
                format!(
                    "{}: instance {} in {} ({}), region {}, VPC {} ({})",
                    imds.base(),
                    i.instance_id.as_deref().unwrap_or("-"),
                    i.zone,
                    i.zone_id,
                    i.region,
                    i.vpc_ids().join(", "),
                    cidrs.join(", ")
                ),
            ));
            Some(i)
        }
        Err(e) => {
            report.checks.push(fail("IMDS", e.to_string(), fix));
            None
        }
    }
}

fn fix_for(e: &Ec2Error, endpoint: &str) -> String {
    match e {
        Ec2Error::AccessDenied { .. } => {
            format!("attach this policy to the agent's IAM role: {MINIMAL_POLICY}")
        }
        Ec2Error::Throttled { .. } => {
            "the account is over its EC2 API rate; try again in a minute".into()
        }
        Ec2Error::CredentialsExpired { .. } => {
            "the credentials were rejected: refresh them or fix the role's trust policy".into()
        }
        Ec2Error::Http {
            source: HttpError::Timeout(_) | HttpError::Connect(_),
            ..
        } => {
            format!(
                "check the network path to {endpoint} (security groups, proxy, VPC endpoint, AWS_ENDPOINT_URL_EC2)"
            )
        }
        _ => format!(
            "check {endpoint} and AWS_ENDPOINT_URL_EC2; the error above says what EC2 answered"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::aws::ec2::ACTIONS;

    #[test]
    fn check_tries_every_action_the_topology_calls() {
        let api: Vec<&str> = std::iter::once("DescribeSubnets")
            .chain(ROUTING_ACTIONS.iter().map(|a| a.1))
            .collect();
        assert_eq!(api, ACTIONS);
        for (iam, action) in ROUTING_ACTIONS {
            assert_eq!(iam, format!("ec2:{action}"));
            assert!(MINIMAL_POLICY.contains(iam), "{iam}");
        }
    }
}
