//! Credentials for signing: aws-config's default chain (environment, profile, web identity /
//! IRSA, EKS Pod Identity and ECS container credentials, instance role), cached here until five
//! minutes before they expire, and dropped at once when EC2 says they have expired — so rotated
//! credentials are picked up without a restart.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime},
};

use aws_config::{
    Region, default_provider::credentials::DefaultCredentialsChain, provider_config::ProviderConfig,
};
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider},
};

use super::http::HttpClient;

/// Credentials this close to expiry are fetched again.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// How long one attempt of the chain may take (IMDS, STS, the container endpoint).
const PROVIDE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no AWS credentials ({0}); give the agent an instance profile, an IRSA or EKS Pod Identity \
         role, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    Unavailable(String),
    #[error(
        "no AWS credentials within {0:?}; check the instance role, IRSA token file or container credentials endpoint"
    )]
    Timeout(Duration),
}

#[derive(Debug)]
pub struct CredentialsCache {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialsCache {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
        }
    }

    /// The default chain, its HTTP calls on our rustls client, STS in `region`.
    pub async fn default_chain(region: &str) -> Self {
        let region = Region::new(region.to_owned());
        let conf = ProviderConfig::default()
            .with_http_client(HttpClient::for_aws_config())
            .with_region(Some(region.clone()));
        let chain = DefaultCredentialsChain::builder()
            .configure(conf)
            .region(region)
            .build()
            .await;
        Self::new(SharedCredentialsProvider::new(chain))
    }

    /// Cached credentials, or fresh ones when there are none or they are about to expire.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self
            .cached
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .filter(|c| fresh(c, SystemTime::now()))
        {
            return Ok(c);
        }
        let fetched = tokio::time::timeout(PROVIDE_TIMEOUT, self.provider.provide_credentials())
            .await
            .map_err(|_| CredentialsError::Timeout(PROVIDE_TIMEOUT))?
            .map_err(|e| CredentialsError::Unavailable(super::http::chain(&e)))?;
        if let Ok(mut g) = self.cached.lock() {
            *g = Some(fetched.clone());
        }
        Ok(fetched)
    }

    /// Forgets the cached credentials: EC2 said they expired or are invalid.
    pub fn invalidate(&self) {
        if let Ok(mut g) = self.cached.lock() {
            *g = None;
        }
    }
}

/// True while `c` is usable for more than [`REFRESH_BEFORE_EXPIRY`].
pub fn fresh(c: &Credentials, now: SystemTime) -> bool {
    c.expiry().is_none_or(|exp| {
        exp.duration_since(now)
            .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
    })
}

/// Which provider of the chain gave `c` (e.g. "Environment", "IMDSv2", "WebIdentityToken").
pub fn provider_name(c: &Credentials) -> String {
    let debug = format!("{c:?}");
    debug
        .split("provider_name: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out key N on the N-th call, valid for `life`.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        life: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let expiry = SystemTime::now() + self.life;
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "s",
                None,
                Some(expiry),
                "test",
            )))
        }
    }

    fn cache(life: Duration) -> (CredentialsCache, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let p = Counting {
            calls: calls.clone(),
            life,
        };
        (
            CredentialsCache::new(SharedCredentialsProvider::new(p)),
            calls,
        )
    }

    #[tokio::test]
    async fn long_lived_credentials_are_cached_until_invalidated() {
        let (c, calls) = cache(Duration::from_secs(3600));
        assert_eq!(
            c.get().await.map(|k| k.access_key_id().to_owned()).ok(),
            Some("AKID1".into())
        );
        assert_eq!(
            c.get().await.map(|k| k.access_key_id().to_owned()).ok(),
            Some("AKID1".into())
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        c.invalidate();
        assert_eq!(
            c.get().await.map(|k| k.access_key_id().to_owned()).ok(),
            Some("AKID2".into())
        );
    }

    #[tokio::test]
    async fn credentials_about_to_expire_are_fetched_again() {
        let (c, calls) = cache(Duration::from_secs(120));
        let _ = c.get().await;
        let second = c.get().await.map(|k| k.access_key_id().to_owned()).ok();
        assert_eq!(second, Some("AKID2".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn freshness_and_provider_names() {
        let now = SystemTime::now();
        let c = |secs| {
            Credentials::new(
                "a",
                "s",
                None,
                Some(now + Duration::from_secs(secs)),
                "Environment",
            )
        };
        assert!(fresh(&c(3600), now));
        assert!(!fresh(&c(60), now));
        assert!(!fresh(
            &Credentials::new("a", "s", None, Some(now - Duration::from_secs(1)), "x"),
            now
        ));
        assert!(fresh(&Credentials::new("a", "s", None, None, "x"), now));
        assert_eq!(provider_name(&c(1)), "Environment");
    }
}
