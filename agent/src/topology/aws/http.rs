//! The one HTTP client of the AWS source: IMDS (plain HTTP on a link-local address) and EC2
//! (HTTPS, rustls with ring, the system's roots). Every call has a deadline over the whole
//! exchange, body included, and a bound on the body's size.

use std::time::Duration;

use aws_smithy_http_client::{
    Connector,
    tls::{Provider, rustls_provider::CryptoMode},
};
use aws_smithy_runtime_api::client::{
    http::{HttpConnector, SharedHttpClient},
    orchestrator::HttpRequest,
};
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt as _;

/// Largest body read: a DescribeSubnets page of 1000 subnets is well under 2 MiB.
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the response body was cut short: {0}")]
    Truncated(String),
    #[error("the response body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("{0}")]
    Other(String),
}

/// A request: method, absolute URL, headers, body, deadline.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

impl Request {
    pub fn new(method: http::Method, url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Cheap to share: one connection pool for every call.
#[derive(Debug, Clone)]
pub struct HttpClient {
    connector: std::sync::Arc<Connector>,
}

impl HttpClient {
    pub fn new() -> Self {
        let connector = Connector::builder()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build();
        Self {
            connector: std::sync::Arc::new(connector),
        }
    }

    /// The same TLS setup for aws-config's credential providers (STS, SSO-less web identity,
    /// container and instance credentials).
    pub fn for_aws_config() -> SharedHttpClient {
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https()
    }

    /// Sends `req` and reads the whole body, all within `req.timeout`.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        let timeout = req.timeout;
        match tokio::time::timeout(timeout, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }

    async fn exchange(&self, req: Request) -> Result<Response, HttpError> {
        let mut builder = http::Request::builder().method(req.method).uri(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(SdkBody::from(req.body))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let request =
            HttpRequest::try_from(request).map_err(|e| HttpError::Request(e.to_string()))?;
        let response = self.connector.call(request).await.map_err(|e| {
            let text = chain(&e);
            if e.is_io() || e.is_timeout() {
                HttpError::Connect(text)
            } else {
                HttpError::Other(text)
            }
        })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError::Truncated(chain(e.as_ref())))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_BODY {
                    return Err(HttpError::TooLarge(MAX_BODY));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Response {
            status,
            body: bytes,
        })
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Percent-encodes `s` as RFC 3986 wants for query values (unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_only_unreserved() {
        assert_eq!(encode("vpc-0a1B_~."), "vpc-0a1B_~.");
        assert_eq!(encode("a b/c+=&"), "a%20b%2Fc%2B%3D%26");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn chains_name_each_distinct_source() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(chain(&outer), "refused");
    }
}
