//! [`RedisOptions`]: how the store connects (timeout, cluster mode, TLS
//! roots, IAM) and how much it insists on durability (replicas that must
//! acknowledge), read from the environment or built in code. Kept apart
//! from the store so that the environment's names and defaults are in one
//! place.

use std::time::Duration;

use super::IamAuth;
use crate::settings::{ConfigError, Env};

/// How [`RedisStore`](super::RedisStore) connects and how much it insists on durability.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Bound on every connect and command. Default 500 ms. Env
    /// `REDIS_TIMEOUT_MS`.
    pub timeout: Duration,
    /// The URL is a cluster-mode endpoint (ElastiCache Serverless, cluster
    /// mode enabled). Default false. Env `REDIS_CLUSTER`.
    pub cluster: bool,
    /// A PEM CA bundle to trust for `rediss://` instead of the public
    /// (webpki) roots. Default none. Env `REDIS_CA_FILE`. Read and checked
    /// when the store is opened: it must hold at least one certificate,
    /// and the URL must be `rediss://`.
    pub ca_file: Option<std::path::PathBuf>,
    /// Replicas that must acknowledge a claim and a completion (`WAIT`)
    /// before they are acted on. Default 0. Env `REDIS_MIN_REPLICAS`.
    /// ElastiCache Serverless does not support `WAIT`: keep it at 0 there.
    /// The completion's `WAIT` also covers the writes the handler sent on
    /// [`RedisStore::connection`](super::RedisStore::connection) since the claim: a completion goes only
    /// to the socket its claim went to. Not in cluster mode.
    pub min_replicas: u32,
    /// ElastiCache IAM authentication (a presigned token, renewed every 10
    /// minutes, as the password). Default none. Env `REDIS_IAM_USER`,
    /// `REDIS_IAM_CACHE_NAME`, `REDIS_IAM_SERVERLESS`, and `AWS_REGION`.
    pub iam: Option<IamAuth>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            cluster: false,
            ca_file: None,
            min_replicas: 0,
            iam: None,
        }
    }
}

/// The URL used when `REDIS_URL` is unset: a local `redis-server`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl RedisOptions {
    /// The defaults, overridden by `REDIS_TIMEOUT_MS`, `REDIS_CLUSTER`,
    /// `REDIS_CA_FILE`, `REDIS_MIN_REPLICAS` and the `REDIS_IAM_*` variables
    /// when set.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`RedisOptions::from_env`] through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let defaults = Self::default();
        Ok(Self {
            timeout: env.millis("REDIS_TIMEOUT_MS", defaults.timeout)?,
            cluster: env.boolean("REDIS_CLUSTER", defaults.cluster)?,
            ca_file: env.get("REDIS_CA_FILE").map(Into::into),
            min_replicas: env.count("REDIS_MIN_REPLICAS", defaults.min_replicas)?,
            iam: iam_from(&env)?,
        })
    }
}

impl RedisOptions {
    /// Checks `url` against these options: a `redis://` or `rediss://`
    /// URL, and TLS when IAM authentication is on (ElastiCache accepts IAM
    /// tokens only over TLS). The URL is never echoed: it may hold a
    /// password.
    pub fn validate_url(&self, url: &str) -> Result<(), ConfigError> {
        let bad = |var: &'static str, reason: &str| ConfigError {
            var,
            reason: reason.to_owned(),
        };
        if redis::parse_redis_url(url).is_none() {
            return Err(bad("REDIS_URL", "not a valid redis:// or rediss:// URL"));
        }
        if self.iam.is_some() && !url.starts_with("rediss://") {
            return Err(bad(
                "REDIS_IAM_USER",
                "IAM authentication needs TLS: REDIS_URL must start with rediss://",
            ));
        }
        Ok(())
    }
}

/// `REDIS_IAM_USER` set: IAM authentication, which also needs the cache
/// name and the region.
fn iam_from(env: &Env<'_>) -> Result<Option<IamAuth>, ConfigError> {
    // Read before knowing whether IAM is on, so a typo stops start-up now
    // rather than on the day `REDIS_IAM_USER` is set.
    let serverless = env.boolean("REDIS_IAM_SERVERLESS", false)?;
    let Some(user) = env.get("REDIS_IAM_USER") else {
        return Ok(None);
    };
    let required = |var: &'static str| {
        env.get(var)
            .ok_or_else(|| env.error(var, "is required when REDIS_IAM_USER is set"))
    };
    Ok(Some(IamAuth {
        user,
        cache_name: required("REDIS_IAM_CACHE_NAME")?,
        serverless,
        region: required("AWS_REGION")?,
    }))
}
