//! EC2 `DescribeSubnets` over the Query API (POST, form body, SigV4), filtered by VPC, every
//! page followed. The endpoint is the standard `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`),
//! else the region's public one.
//!
//! Each request gets a deadline and up to three attempts when throttled, on 5xx, timeouts and
//! refused connections (exponential backoff with jitter); expired credentials are dropped and
//! fetched once more. A page token seen twice, or more than [`MAX_PAGES`] pages, ends the
//! listing with an error instead of looping.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use aws_smithy_runtime_api::client::identity::Identity;

use super::{
    credentials::{CredentialsCache, CredentialsError},
    http::{HttpClient, HttpError, Request, encode},
    routing_xml::{Page, RoutingXmlError},
    xml::{self, AwsSubnet, XmlError},
};

pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_EC2";
pub const GLOBAL_ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL";
const API_VERSION: &str = "2016-11-15";
pub const MAX_PAGES: usize = 1000;
const PAGE_SIZE: u32 = 1000;
const ATTEMPTS: u32 = 3;

/// Every EC2 action the AWS topology calls, one IAM action each.
pub const ACTIONS: [&str; 5] = [
    "DescribeSubnets",
    "DescribeRouteTables",
    "DescribeNatGateways",
    "DescribeVpcEndpoints",
    "DescribeVpcPeeringConnections",
];

/// The least a role needs for the AWS topology (all of [`ACTIONS`], read-only).
pub const MINIMAL_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:DescribeSubnets","ec2:DescribeRouteTables","ec2:DescribeNatGateways","ec2:DescribeVpcEndpoints","ec2:DescribeVpcPeeringConnections"],"Resource":"*"}]}"#;

#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error(
        "EC2 denied ec2:{action} ({code}: {message}); allow it in the agent's IAM role with \
         this policy: {MINIMAL_POLICY}"
    )]
    AccessDenied {
        action: &'static str,
        code: String,
        message: String,
    },
    #[error("EC2 is throttling {action} ({code}); backing off")]
    Throttled { action: &'static str, code: String },
    #[error("EC2 answered HTTP {status}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Server { status: u16, code: Option<String> },
    #[error(
        "EC2 rejected the credentials ({code}: {message}); they are fetched again on the next attempt"
    )]
    CredentialsExpired { code: String, message: String },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("EC2 at {endpoint}: {source}")]
    Http { endpoint: String, source: HttpError },
    #[error("EC2 DescribeSubnets page {page}: malformed XML: {source}")]
    MalformedXml { page: usize, source: XmlError },
    #[error("EC2 {action} page {page}: malformed XML: {source}")]
    MalformedReply {
        action: &'static str,
        page: usize,
        source: RoutingXmlError,
    },
    #[error(
        "EC2 DescribeSubnets returned page token {token:?} twice (page {page}); stopped following it"
    )]
    PageLoop { token: String, page: usize },
    #[error("EC2 DescribeSubnets had more than {MAX_PAGES} pages; stopped")]
    TooManyPages,
    #[error("EC2 answered HTTP {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("signing the request: {0}")]
    Sign(String),
}

impl Ec2Error {
    /// Metric kind (`topology_refresh_failures{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AccessDenied { .. } => "access_denied",
            Self::Throttled { .. } => "throttled",
            Self::Server { .. } => "server_error",
            Self::CredentialsExpired { .. } => "expired_credentials",
            Self::Credentials(_) => "no_credentials",
            Self::Http { source, .. } => super::http_kind(source),
            Self::MalformedXml { .. } | Self::MalformedReply { .. } => "malformed_xml",
            Self::PageLoop { .. } | Self::TooManyPages => "page_loop",
            Self::Api { .. } => "api_error",
            Self::Sign(_) => "sign",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Throttled { .. } | Self::Server { .. } => true,
            Self::Http { source, .. } => {
                matches!(source, HttpError::Timeout(_) | HttpError::Connect(_))
            }
            _ => false,
        }
    }
}

/// Classifies a non-2xx answer to `DescribeSubnets`.
pub fn classify(status: u16, body: &str) -> Ec2Error {
    classify_for("DescribeSubnets", status, body)
}

/// Classifies a non-2xx answer to `action` by its error code, else by its status.
pub fn classify_for(action: &'static str, status: u16, body: &str) -> Ec2Error {
    let Some(e) = xml::parse_error(body) else {
        return match status {
            429 => Ec2Error::Throttled {
                action,
                code: "HTTP 429".into(),
            },
            s if s >= 500 => Ec2Error::Server {
                status: s,
                code: None,
            },
            403 => Ec2Error::AccessDenied {
                action,
                code: "HTTP 403".into(),
                message: "no error document".into(),
            },
            s => Ec2Error::Api {
                status: s,
                code: "unknown".into(),
                message: body.chars().take(200).collect(),
            },
        };
    };
    let (code, message) = (e.code, e.message);
    match code.as_str() {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            Ec2Error::AccessDenied {
                action,
                code,
                message,
            }
        }
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown"
        | "RequestThrottled"
        | "RequestThrottledException" => Ec2Error::Throttled { action, code },
        "ExpiredToken"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch" => Ec2Error::CredentialsExpired { code, message },
        _ if status >= 500 => Ec2Error::Server {
            status,
            code: Some(code),
        },
        _ => Ec2Error::Api {
            status,
            code,
            message,
        },
    }
}

pub struct Ec2Client {
    endpoint: String,
    region: String,
    http: HttpClient,
    credentials: CredentialsCache,
    timeout: Duration,
}

impl Ec2Client {
    pub fn new(
        endpoint: String,
        region: String,
        http: HttpClient,
        credentials: CredentialsCache,
        timeout: Duration,
    ) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region,
            http,
            credentials,
            timeout,
        }
    }

    /// `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, else `https://ec2.REGION.amazonaws.com`.
    pub fn endpoint_from_env(region: &str) -> String {
        [ENDPOINT_ENV, GLOBAL_ENDPOINT_ENV]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| {
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                format!("https://ec2.{region}.{suffix}")
            })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn credentials(&self) -> &CredentialsCache {
        &self.credentials
    }

    /// Every subnet of `vpc_ids`, all pages.
    pub async fn describe_subnets(&self, vpc_ids: &[String]) -> Result<Vec<AwsSubnet>, Ec2Error> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut body = base_body(vpc_ids);
            body.push_str(&format!("&MaxResults={PAGE_SIZE}"));
            if let Some(t) = &token {
                body.push_str(&format!("&NextToken={}", encode(t)));
            }
            let text = self.call("DescribeSubnets", body).await?;
            let parsed = xml::parse_describe_subnets(&text)
                .map_err(|source| Ec2Error::MalformedXml { page, source })?;
            out.extend(parsed.subnets);
            match parsed.next_token {
                None => return Ok(out),
                Some(t) => {
                    if !seen.insert(t.clone()) {
                        return Err(Ec2Error::PageLoop { token: t, page });
                    }
                    token = Some(t);
                }
            }
        }
        Err(Ec2Error::TooManyPages)
    }

    /// Every item of every page of `action`, with `filters` (name, values); `parse` reads a page.
    pub async fn describe<T>(
        &self,
        action: &'static str,
        filters: &[(&str, &[String])],
        parse: fn(&str) -> Result<Page<T>, RoutingXmlError>,
    ) -> Result<Vec<T>, Ec2Error> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        for page in 1..=MAX_PAGES {
            let mut body = action_body(action, filters);
            // DescribeVpcPeeringConnections and DescribeVpcEndpoints cap pages lower than 1000.
            body.push_str("&MaxResults=100");
            if let Some(t) = &token {
                body.push_str(&format!("&NextToken={}", encode(t)));
            }
            let text = self.call(action, body).await?;
            let parsed = parse(&text).map_err(|source| Ec2Error::MalformedReply {
                action,
                page,
                source,
            })?;
            out.extend(parsed.items);
            match parsed.next_token {
                None => return Ok(out),
                Some(t) => {
                    if !seen.insert(t.clone()) {
                        return Err(Ec2Error::PageLoop { token: t, page });
                    }
                    token = Some(t);
                }
            }
        }
        Err(Ec2Error::TooManyPages)
    }

    /// `action` with `DryRun=true`: `Ok` when EC2 answers `DryRunOperation` (allowed).
    pub async fn dry_run_action(&self, action: &'static str) -> Result<(), Ec2Error> {
        let body = format!("{}&DryRun=true", action_body(action, &[]));
        match self.call(action, body).await {
            Ok(_) => Ok(()),
            Err(Ec2Error::Api { code, .. }) if code == "DryRunOperation" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `DescribeSubnets` with `DryRun=true`: `Ok` when EC2 answers `DryRunOperation` (allowed).
    pub async fn dry_run(&self, vpc_ids: &[String]) -> Result<(), Ec2Error> {
        let body = format!("{}&DryRun=true", base_body(vpc_ids));
        match self.call("DescribeSubnets", body).await {
            Ok(_) => Ok(()),
            Err(Ec2Error::Api { code, .. }) if code == "DryRunOperation" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One signed POST with retries; the body of a 2xx answer.
    async fn call(&self, action: &'static str, body: String) -> Result<String, Ec2Error> {
        let mut refreshed_credentials = false;
        let mut attempt = 0;
        loop {
            let err = match self.attempt(action, &body).await {
                Ok(text) => return Ok(text),
                Err(Ec2Error::CredentialsExpired { .. }) if !refreshed_credentials => {
                    refreshed_credentials = true;
                    self.credentials.invalidate();
                    tracing::info!("EC2 rejected the cached AWS credentials; fetched fresh ones");
                    continue;
                }
                Err(e) => e,
            };
            attempt += 1;
            if !err.retryable() || attempt >= ATTEMPTS {
                return Err(err);
            }
            tokio::time::sleep(retry_delay(attempt, fastrand::f64())).await;
        }
    }

    async fn attempt(&self, action: &'static str, body: &str) -> Result<String, Ec2Error> {
        let creds = self.credentials.get().await?;
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let identity: Identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Ec2Error::Sign(e.to_string()))?
            .into();
        let headers = [("content-type", content_type)];
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.into_iter(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| Ec2Error::Sign(e.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| Ec2Error::Sign(e.to_string()))?
            .into_parts();
        let mut req = Request::new(http::Method::POST, &url, self.timeout)
            .header("content-type", content_type);
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        req.body = body.as_bytes().to_vec();
        let resp = self.http.send(req).await.map_err(|source| Ec2Error::Http {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        let text = resp.text();
        if (200..300).contains(&resp.status) {
            Ok(text)
        } else {
            Err(classify_for(action, resp.status, &text))
        }
    }
}

/// `Action=…&Version=…` and `Filter.N.Name` / `Filter.N.Value.M` for each filter with values.
fn action_body(action: &str, filters: &[(&str, &[String])]) -> String {
    let mut body = format!("Action={action}&Version={API_VERSION}");
    let used = filters.iter().filter(|(_, values)| !values.is_empty());
    for (n, (name, values)) in used.enumerate() {
        body.push_str(&format!("&Filter.{}.Name={}", n + 1, encode(name)));
        for (i, v) in values.iter().enumerate() {
            body.push_str(&format!("&Filter.{}.Value.{}={}", n + 1, i + 1, encode(v)));
        }
    }
    body
}

fn base_body(vpc_ids: &[String]) -> String {
    let mut body = format!("Action=DescribeSubnets&Version={API_VERSION}");
    if !vpc_ids.is_empty() {
        body.push_str("&Filter.1.Name=vpc-id");
        for (i, id) in vpc_ids.iter().enumerate() {
            body.push_str(&format!("&Filter.1.Value.{}={}", i + 1, encode(id)));
        }
    }
    body
}

/// Delay before attempt `attempt + 1` of one request: 250 ms · 2^(attempt−1), ±50 % jitter.
pub fn retry_delay(attempt: u32, unit_random: f64) -> Duration {
    let base = 0.25 * f64::from(1u32 << attempt.saturating_sub(1).min(6));
    Duration::from_secs_f64(base * (0.5 + unit_random.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_kinds() {
        let doc = |code: &str| {
            format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors></Response>"
            )
        };
        assert_eq!(
            classify(403, &doc("UnauthorizedOperation")).kind(),
            "access_denied"
        );
        assert_eq!(classify(400, &doc("AccessDenied")).kind(), "access_denied");
        assert_eq!(
            classify(503, &doc("RequestLimitExceeded")).kind(),
            "throttled"
        );
        assert_eq!(classify(400, &doc("Throttling")).kind(), "throttled");
        assert_eq!(
            classify(400, &doc("ExpiredToken")).kind(),
            "expired_credentials"
        );
        assert_eq!(
            classify(401, &doc("AuthFailure")).kind(),
            "expired_credentials"
        );
        assert_eq!(classify(500, &doc("InternalError")).kind(), "server_error");
        assert_eq!(
            classify(400, &doc("InvalidVpcID.NotFound")).kind(),
            "api_error"
        );
        assert_eq!(
            classify(503, "<html>Service Unavailable</html>").kind(),
            "server_error"
        );
        assert_eq!(classify(429, "").kind(), "throttled");
    }

    #[test]
    fn access_denied_names_the_action_and_the_policy() {
        let e = classify(
            403,
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors></Response>",
        );
        let text = e.to_string();
        assert!(text.contains("ec2:DescribeSubnets"), "{text}");
        assert!(text.contains(MINIMAL_POLICY), "{text}");
        let e = classify_for(
            "DescribeNatGateways",
            400,
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>no</Message></Error></Errors></Response>",
        );
        assert!(
            e.to_string()
                .starts_with("EC2 denied ec2:DescribeNatGateways (UnauthorizedOperation: no)"),
            "{e}"
        );
        let e = classify_for("DescribeRouteTables", 429, "");
        assert_eq!(
            e.to_string(),
            "EC2 is throttling DescribeRouteTables (HTTP 429); backing off"
        );
    }

    #[test]
    fn the_policy_allows_every_action_called() {
        let v: serde_json::Value =
            serde_json::from_str(MINIMAL_POLICY).unwrap_or_else(|e| panic!("{e}"));
        let allowed: Vec<&str> = v["Statement"][0]["Action"]
            .as_array()
            .unwrap_or_else(|| panic!("actions"))
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        let wanted: Vec<String> = ACTIONS.iter().map(|a| format!("ec2:{a}")).collect();
        assert_eq!(allowed, wanted);
    }

    #[test]
    fn action_bodies_carry_every_filter() {
        let subnets = ["subnet-a".to_owned()];
        let vpcs = ["vpc-1".to_owned(), "vpc-2".to_owned()];
        assert_eq!(
            action_body(
                "DescribeRouteTables",
                &[
                    ("vpc-id", vpcs.as_slice()),
                    ("unused", &[][..]),
                    ("association.subnet-id", subnets.as_slice())
                ]
            ),
            "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-1&Filter.1.Value.2=vpc-2\
             &Filter.2.Name=association.subnet-id&Filter.2.Value.1=subnet-a"
        );
    }

    #[test]
    fn the_body_filters_by_every_vpc() {
        let b = base_body(&["vpc-1".into(), "vpc 2".into()]);
        assert_eq!(
            b,
            "Action=DescribeSubnets&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-1&Filter.1.Value.2=vpc%202"
        );
        assert_eq!(base_body(&[]), "Action=DescribeSubnets&Version=2016-11-15");
    }

    #[test]
    fn retry_delays_grow_with_jitter() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_millis(250));
        assert_eq!(retry_delay(2, 0.5), Duration::from_millis(500));
        assert_eq!(retry_delay(2, 0.0), Duration::from_millis(250));
        assert_eq!(retry_delay(2, 1.0), Duration::from_millis(750));
        assert!(retry_delay(40, 1.0) <= Duration::from_secs(24));
    }

    #[test]
    fn default_endpoints() {
        // Only meaningful when the override is unset in the test environment.
        if std::env::var_os(ENDPOINT_ENV).is_none()
            && std::env::var_os(GLOBAL_ENDPOINT_ENV).is_none()
        {
            assert_eq!(
                Ec2Client::endpoint_from_env("eu-west-1"),
                "https://ec2.eu-west-1.amazonaws.com"
            );
            assert_eq!(
                Ec2Client::endpoint_from_env("cn-north-1"),
                "https://ec2.cn-north-1.amazonaws.com.cn"
            );
        }
    }
}
