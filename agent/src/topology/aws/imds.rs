//! IMDSv2: the host's identity (region, AZ name and ID, instance, account) and, per attached
//! interface, its VPC, subnet and the VPC's CIDR blocks.
//!
//! Every read carries a session token from `PUT /latest/api/token` (TTL 6 h), renewed a minute
//! before it expires and once more when IMDS answers 401. Each call gets 1 s and up to three
//! attempts (connection errors, timeouts, 5xx). The base URL is the standard
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::http::{HttpClient, HttpError, Request};

pub const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(21_600);
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("IMDS at {base} did not answer ({source})")]
    Unreachable { base: String, source: HttpError },
    #[error(
        "IMDS at {base} refused a session token (HTTP {status}): IMDSv2 is off or, in a container, the \
         hop limit is 1; run `aws ec2 modify-instance-metadata-options --http-tokens required \
         --http-put-response-hop-limit 2`"
    )]
    TokenRefused { base: String, status: u16 },
    #[error("IMDS {path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("IMDS {path}: {source}")]
    Http { path: String, source: HttpError },
    #[error("IMDS {path}: malformed JSON ({why})")]
    MalformedJson { path: String, why: String },
    #[error("IMDS {path}: {why}")]
    Malformed { path: String, why: String },
}

impl ImdsError {
    /// Metric kind (`topology_refresh_failures{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable {
                source: HttpError::Timeout(_),
                ..
            } => "imds_timeout",
            Self::Unreachable { .. } => "imds_unreachable",
            Self::TokenRefused { .. } => "imds_token_refused",
            Self::Status { .. } => "imds_status",
            Self::Http { source, .. } => super::http_kind(source),
            Self::MalformedJson { .. } => "malformed_json",
            Self::Malformed { .. } => "imds_malformed",
        }
    }
}

/// One attached network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub mac: String,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub subnet_v4: Option<Ipv4Net>,
    pub subnets_v6: Vec<Ipv6Net>,
    pub vpc_cidrs: Vec<IpNet>,
}

/// What IMDS says about this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    pub region: String,
    pub zone: String,
    pub zone_id: String,
    pub instance_id: Option<String>,
    pub account_id: Option<String>,
    /// The primary interface first.
    pub interfaces: Vec<Interface>,
}

impl InstanceIdentity {
    /// The VPCs of the attached interfaces, the primary's first, no duplicates.
    pub fn vpc_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for id in self.interfaces.iter().filter_map(|i| i.vpc_id.clone()) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// Every VPC CIDR block of every interface, no duplicates.
    pub fn vpc_cidrs(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .interfaces
            .iter()
            .flat_map(|i| i.vpc_cidrs.iter().copied())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    account_id: Option<String>,
    region: Option<String>,
    availability_zone: Option<String>,
    instance_id: Option<String>,
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct ImdsClient {
    base: String,
    http: HttpClient,
    ttl: Duration,
    token: Mutex<Option<Token>>,
}

impl ImdsClient {
    pub fn new(base: impl Into<String>, http: HttpClient) -> Self {
        Self::with_token_ttl(base, http, DEFAULT_TOKEN_TTL)
    }

    /// `ttl` is what the token is asked for; tests ask for seconds to see it renewed.
    pub fn with_token_ttl(base: impl Into<String>, http: HttpClient, ttl: Duration) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        Self {
            base,
            http,
            ttl: ttl.max(Duration::from_secs(1)),
            token: Mutex::new(None),
        }
    }

    /// The base URL from `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the link-local address.
    pub fn from_env(http: HttpClient) -> Self {
        let base = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty());
        Self::new(base.unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()), http)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A valid token, fetching one when there is none, it is close to expiry, or `force`.
    async fn token(&self, force: bool) -> Result<String, ImdsError> {
        if !force
            && let Ok(guard) = self.token.lock()
            && let Some(t) = guard.as_ref().filter(|t| Instant::now() < t.renew_at)
        {
            return Ok(t.value.clone());
        }
        let url = format!("{}/latest/api/token", self.base);
        let asked = Instant::now();
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            let req = Request::new(http::Method::PUT, &url, CALL_TIMEOUT)
                .header(TOKEN_TTL_HEADER, self.ttl.as_secs().to_string());
            match self.http.send(req).await {
                Ok(r) if r.status == 200 => {
                    let value = r.text().trim().to_owned();
                    if value.is_empty() {
                        return Err(ImdsError::Malformed {
                            path: "/latest/api/token".into(),
                            why: "empty token".into(),
                        });
                    }
                    // Renew a minute early, or at 90 % of a short TTL.
                    let early = Duration::from_secs(60).min(self.ttl / 10);
                    let renew_at = asked + self.ttl.saturating_sub(early);
                    if let Ok(mut guard) = self.token.lock() {
                        *guard = Some(Token {
                            value: value.clone(),
                            renew_at,
                        });
                    }
                    return Ok(value);
                }
                Ok(r) if r.status >= 500 => {
                    last = Some(ImdsError::Status {
                        path: "/latest/api/token".into(),
                        status: r.status,
                    })
                }
                Ok(r) => {
                    return Err(ImdsError::TokenRefused {
                        base: self.base.clone(),
                        status: r.status,
                    });
                }
                Err(source) => {
                    last = Some(ImdsError::Unreachable {
                        base: self.base.clone(),
                        source,
                    })
                }
            }
            backoff(attempt).await;
        }
        Err(last.unwrap_or_else(|| ImdsError::Status {
            path: "/latest/api/token".into(),
            status: 0,
        }))
    }

    /// Checks that IMDS answers with a token: the "are we on EC2" probe.
    pub async fn probe(&self) -> Result<(), ImdsError> {
        self.token(false).await.map(drop)
    }

    /// GET `path` (from `/latest/...`): `Ok(None)` on 404.
    pub async fn get(&self, path: &str) -> Result<Option<String>, ImdsError> {
        let url = format!("{}{path}", self.base);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            let token = self.token(false).await?;
            let req =
                Request::new(http::Method::GET, &url, CALL_TIMEOUT).header(TOKEN_HEADER, token);
            let err = match self.http.send(req).await {
                Ok(r) if r.status == 200 => return Ok(Some(r.text())),
                Ok(r) if r.status == 404 => return Ok(None),
                Ok(r) if r.status == 401 && !renewed => {
                    // The token expired or IMDS restarted: one fresh token, then give up.
                    renewed = true;
                    self.token(true).await?;
                    continue;
                }
                Ok(r) if r.status >= 500 => ImdsError::Status {
                    path: path.into(),
                    status: r.status,
                },
                Ok(r) => {
                    return Err(ImdsError::Status {
                        path: path.into(),
                        status: r.status,
                    });
                }
                Err(source @ HttpError::Truncated(_)) => {
                    return Err(ImdsError::Http {
                        path: path.into(),
                        source,
                    });
                }
                Err(source) => ImdsError::Http {
                    path: path.into(),
                    source,
                },
            };
            attempt += 1;
            if attempt >= ATTEMPTS {
                return Err(err);
            }
            backoff(attempt - 1).await;
        }
    }

    async fn required(&self, path: &str) -> Result<String, ImdsError> {
        match self.get(path).await? {
            Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            Some(_) => Err(ImdsError::Malformed {
                path: path.into(),
                why: "empty".into(),
            }),
            None => Err(ImdsError::Status {
                path: path.into(),
                status: 404,
            }),
        }
    }

    async fn optional(&self, path: &str) -> Result<Option<String>, ImdsError> {
        Ok(self
            .get(path)
            .await?
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    }

    /// The identity document, placement and every interface.
    pub async fn identity(&self) -> Result<InstanceIdentity, ImdsError> {
        const DOC: &str = "/latest/dynamic/instance-identity/document";
        let doc =
            match self.get(DOC).await? {
                Some(text) => Some(serde_json::from_str::<IdentityDocument>(&text).map_err(
                    |e| ImdsError::MalformedJson {
                        path: DOC.into(),
                        why: e.to_string(),
                    },
                )?),
                None => None,
            };
        let doc = doc.unwrap_or(IdentityDocument {
            account_id: None,
            region: None,
            availability_zone: None,
            instance_id: None,
        });
        let zone = match doc.availability_zone {
            Some(z) => z,
            None => {
                self.required("/latest/meta-data/placement/availability-zone")
                    .await?
            }
        };
        let region = match doc.region {
            Some(r) => r,
            None => match self.optional("/latest/meta-data/placement/region").await? {
                Some(r) => r,
                None => zone
                    .trim_end_matches(|c: char| c.is_ascii_lowercase())
                    .to_owned(),
            },
        };
        let zone_id = self
            .required("/latest/meta-data/placement/availability-zone-id")
            .await?;
        let instance_id = match doc.instance_id {
            Some(i) => Some(i),
            None => self.optional("/latest/meta-data/instance-id").await?,
        };
        let primary = self.optional("/latest/meta-data/mac").await?;
        let macs_text = self
            .optional("/latest/meta-data/network/interfaces/macs/")
            .await?
            .unwrap_or_default();
        let mut macs: Vec<String> = macs_text
            .lines()
            .map(|l| l.trim().trim_end_matches('/').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if let Some(p) = &primary {
            macs.retain(|m| m != p);
            macs.insert(0, p.clone());
        }
        let mut interfaces = Vec::new();
        for mac in macs {
            interfaces.push(self.interface(&mac).await?);
        }
        Ok(InstanceIdentity {
            region,
            zone,
            zone_id,
            instance_id,
            account_id: doc.account_id,
            interfaces,
        })
    }

    async fn interface(&self, mac: &str) -> Result<Interface, ImdsError> {
        let p = format!("/latest/meta-data/network/interfaces/macs/{mac}");
        let subnet_v4 = match self
            .optional(&format!("{p}/subnet-ipv4-cidr-block"))
            .await?
        {
            Some(s) => Some(parse_net::<Ipv4Net>(&s, &p)?),
            None => None,
        };
        let subnets_v6 = lines(
            self.optional(&format!("{p}/subnet-ipv6-cidr-blocks"))
                .await?,
        )
        .map(|s| parse_net::<Ipv6Net>(&s, &p))
        .collect::<Result<Vec<_>, _>>()?;
        let mut vpc_cidrs = Vec::new();
        let v4 = match self.optional(&format!("{p}/vpc-ipv4-cidr-blocks")).await? {
            Some(list) => Some(list),
            None => self.optional(&format!("{p}/vpc-ipv4-cidr-block")).await?,
        };
        for s in lines(v4) {
            vpc_cidrs.push(IpNet::V4(parse_net::<Ipv4Net>(&s, &p)?));
        }
        for s in lines(self.optional(&format!("{p}/vpc-ipv6-cidr-blocks")).await?) {
            vpc_cidrs.push(IpNet::V6(parse_net::<Ipv6Net>(&s, &p)?));
        }
        Ok(Interface {
            mac: mac.to_owned(),
            vpc_id: self.optional(&format!("{p}/vpc-id")).await?,
            subnet_id: self.optional(&format!("{p}/subnet-id")).await?,
            subnet_v4,
            subnets_v6,
            vpc_cidrs,
        })
    }
}

fn lines(text: Option<String>) -> impl Iterator<Item = String> {
    text.unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

fn parse_net<T: std::str::FromStr>(s: &str, path: &str) -> Result<T, ImdsError> {
    s.parse().map_err(|_| ImdsError::Malformed {
        path: path.into(),
        why: format!("{s:?} is not a CIDR"),
    })
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_helpers_dedup_and_keep_the_primary_first() {
        let iface = |mac: &str, vpc: &str, cidrs: &[&str]| Interface {
            mac: mac.into(),
            vpc_id: Some(vpc.into()),
            subnet_id: None,
            subnet_v4: None,
            subnets_v6: Vec::new(),
            vpc_cidrs: cidrs
                .iter()
                .map(|c| c.parse().unwrap_or_else(|e| panic!("{c}: {e}")))
                .collect(),
        };
        let id = InstanceIdentity {
            region: "us-east-1".into(),
            zone: "us-east-1a".into(),
            zone_id: "use1-az6".into(),
            instance_id: None,
            account_id: None,
            interfaces: vec![
                iface("m2", "vpc-b", &["10.1.0.0/16"]),
                iface("m1", "vpc-a", &["10.0.0.0/16", "fd00::/56"]),
                iface("m3", "vpc-b", &["10.1.0.0/16"]),
            ],
        };
        assert_eq!(id.vpc_ids(), ["vpc-b", "vpc-a"]);
        let cidrs: Vec<String> = id.vpc_cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(cidrs, ["10.0.0.0/16", "10.1.0.0/16", "fd00::/56"]);
    }

    #[test]
    fn the_base_url_loses_its_trailing_slash() {
        let c = ImdsClient::new("http://127.0.0.1:1/", HttpClient::new());
        assert_eq!(c.base(), "http://127.0.0.1:1");
    }
}
