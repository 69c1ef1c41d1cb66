//! The function's configuration, read once from the environment at cold
//! start into a typed [`Config`].
//!
//! Most variables belong to the idempotency layer and are read by its own
//! calls ([`Settings::from_lookup`], [`RedisOptions::from_lookup`]); this
//! file adds the function's defaults and the rules that need both. A bad
//! value is a [`ConfigError`] naming the variable; `main` refuses to start
//! with it, which Lambda reports as an init error.

use lambda_http::http::Method;
use lambda_idempotency::{ApiGatewayScope, ConfigError, RedisOptions, Settings, DEFAULT_REDIS_URL};

/// Default CloudWatch namespace of the EMF metric lines.
pub const DEFAULT_METRICS_NAMESPACE: &str = "IdempotentOrders";

/// Prefix of problem `type` URIs when `PROBLEM_TYPE_BASE` is unset.
pub const DEFAULT_PROBLEM_TYPE_BASE: &str = "urn:idempotent-orders:problem:";

/// Largest order request accepted by default (an order is under 300 bytes).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Everything the function needs, typed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `REDIS_URL`. May hold a password, so it is never logged or echoed.
    pub redis_url: String,
    /// `REDIS_*`: how to reach Redis.
    pub redis: RedisOptions,
    /// `IDEMPOTENCY_*`, `METRICS_NAMESPACE`, `PROBLEM_TYPE_BASE`.
    pub settings: Settings,
    /// `IDEMPOTENCY_SCOPE`: whose keys are whose.
    pub scope: ApiGatewayScope,
    /// `REDIS_CONNECT_AT_INIT` (default true): connect and load the scripts
    /// during Lambda's init phase rather than on the first request.
    pub connect_at_init: bool,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let redis_url = set("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        let redis = RedisOptions::from_lookup(&lookup)?;
        // Checked here so a typo fails at start-up, not on the first request.
        // The value itself is not echoed: it may carry a password.
        redis.validate_url(&redis_url)?;
        if redis.min_replicas > 0 && redis.cluster {
            // The completion's WAIT runs on the record's shard; the order
            // may live on another, which it would not cover.
            return Err(error(
                "REDIS_MIN_REPLICAS",
                "is not supported with REDIS_CLUSTER: an order may live on another shard than its record",
            ));
        }
        let mut settings = Settings::from_lookup(&lookup)?;
        if !settings.methods.contains(&Method::POST) {
            return Err(error(
                "IDEMPOTENCY_METHODS",
                "must include POST, or POST /orders would run without idempotency",
            ));
        }
        // Unset: the function's namespace; set but empty: no metric lines.
        settings.metrics_namespace = match lookup("METRICS_NAMESPACE") {
            None => Some(DEFAULT_METRICS_NAMESPACE.to_owned()),
            Some(ns) if ns.trim().is_empty() => None,
            Some(ns) => Some(ns.trim().to_owned()),
        };
        if set("PROBLEM_TYPE_BASE").is_none() {
            settings.problem_type_base = DEFAULT_PROBLEM_TYPE_BASE.to_owned();
        }
        if set("IDEMPOTENCY_MAX_REQUEST_BYTES").is_none() {
            settings.max_request_bytes = DEFAULT_MAX_REQUEST_BYTES;
        }
        // Read by Settings::from_lookup, as any function using the layer
        // reads it; kept here too for the order owner (src/app.rs).
        let scope = settings.scope.clone();
        let connect_at_init = match set("REDIS_CONNECT_AT_INIT")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(_) => return Err(error("REDIS_CONNECT_AT_INIT", "expected true or false")),
        };
        let mut config = Self {
            redis_url,
            redis,
            settings,
            scope,
            connect_at_init,
        };
        config.fit_lease(set("IDEMPOTENCY_LEASE_SECS").is_some())?;
        Ok(config)
    }

    /// A lease is renewed every third of its length, each renewal bounded
    /// by `REDIS_TIMEOUT_MS`: a lease of six timeouts still outlasts one
    /// renewal that fails after a whole timeout, and the next one. The
    /// default lease grows to that floor with a longer timeout; a lease set
    /// below it is refused.
    fn fit_lease(&mut self, set: bool) -> Result<(), ConfigError> {
        let floor = self.redis.timeout * 6;
        if !set {
            self.settings.lease = self.settings.lease.max(floor);
        } else if self.settings.lease < floor {
            return Err(error(
                "IDEMPOTENCY_LEASE_SECS",
                format!("a lease must last at least six times REDIS_TIMEOUT_MS ({floor:?})"),
            ));
        }
        Ok(())
    }
}

fn error(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let config = from(&[]).unwrap();
        assert_eq!(config.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(config.redis, RedisOptions::default());
        assert_eq!(
            config.settings.metrics_namespace.as_deref(),
            Some(DEFAULT_METRICS_NAMESPACE)
        );
        assert_eq!(config.settings.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(config.scope, ApiGatewayScope::default());
        assert!(!config.scope.allows_anonymous());
        assert!(config.connect_at_init);
    }

    #[test]
    fn every_variable_is_read() {
        let config = from(&[
            ("REDIS_URL", "rediss://user:pw@cache.example:6380"),
            ("REDIS_TIMEOUT_MS", "250"),
            ("REDIS_CA_FILE", "/etc/ca.pem"),
            ("REDIS_CLUSTER", "true"),
            ("IDEMPOTENCY_SCOPE", "jwt,anonymous"),
            ("IDEMPOTENCY_LEASE_SECS", "30"),
            ("IDEMPOTENCY_MAX_REQUEST_BYTES", "1000"),
            ("METRICS_NAMESPACE", ""),
            ("REDIS_CONNECT_AT_INIT", "false"),
        ])
        .unwrap();
        assert!(!config.connect_at_init);
        assert_eq!(config.redis.timeout, Duration::from_millis(250));
        assert_eq!(
            config.redis.ca_file.as_deref(),
            Some("/etc/ca.pem".as_ref())
        );
        assert!(config.redis.cluster);
        assert!(config.scope.allows_anonymous());
        assert_eq!(config.settings.lease, Duration::from_secs(30));
        assert_eq!(config.settings.max_request_bytes, 1000);
        assert_eq!(config.settings.metrics_namespace, None);
    }

    #[test]
    fn bad_values_name_the_variable_without_echoing_secrets() {
        let err = from(&[("REDIS_URL", "http://user:secret@host")]).unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        assert!(!err.to_string().contains("secret"));
        for (var, value) in [
            ("IDEMPOTENCY_SCOPE", "jwt,cookie"),
            ("REDIS_MIN_REPLICAS", "-1"),
            ("REDIS_TIMEOUT_MS", "soon"),
            ("REDIS_CONNECT_AT_INIT", "later"),
        ] {
            assert_eq!(from(&[(var, value)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn a_lease_shorter_than_six_redis_timeouts_is_refused_at_start_up() {
        let err =
            from(&[("IDEMPOTENCY_LEASE_SECS", "2"), ("REDIS_TIMEOUT_MS", "500")]).unwrap_err();
        assert_eq!(err.var, "IDEMPOTENCY_LEASE_SECS");
        assert!(from(&[("IDEMPOTENCY_LEASE_SECS", "3")]).is_ok());
    }

    #[test]
    fn the_default_lease_is_three_seconds_or_six_redis_timeouts() {
        let lease = |vars: &[(&str, &str)]| from(vars).unwrap().settings.lease;
        assert_eq!(lease(&[]), Duration::from_secs(3));
        assert_eq!(
            lease(&[("REDIS_TIMEOUT_MS", "100")]),
            Duration::from_secs(3)
        );
        assert_eq!(
            lease(&[("REDIS_TIMEOUT_MS", "1000")]),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn replicas_are_read_and_refused_with_cluster_mode() {
        assert_eq!(
            from(&[("REDIS_MIN_REPLICAS", "1")])
                .unwrap()
                .redis
                .min_replicas,
            1
        );
        let err = from(&[("REDIS_MIN_REPLICAS", "1"), ("REDIS_CLUSTER", "true")]).unwrap_err();
        assert_eq!(err.var, "REDIS_MIN_REPLICAS");
    }

    #[test]
    fn methods_without_post_and_iam_without_tls_are_refused() {
        let err = from(&[("IDEMPOTENCY_METHODS", "PATCH")]).unwrap_err();
        assert_eq!(err.var, "IDEMPOTENCY_METHODS");
        let err = from(&[
            ("REDIS_URL", "redis://cache:6379"),
            ("REDIS_IAM_USER", "app"),
            ("REDIS_IAM_CACHE_NAME", "cache"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "REDIS_IAM_USER");
    }
}
