//! The function's configuration, read once from the environment at cold
//! start into a typed [`Config`].
//!
//! Parsing goes through a lookup function rather than `std::env` directly so
//! that every rule is unit-tested without touching the process environment.
//! A bad value is a [`ConfigError`] naming the variable; `main` refuses to
//! start with it, which Lambda reports as an init error.

use std::path::PathBuf;
use std::time::Duration;

use lambda_http::http::Method;
use thiserror::Error;

use crate::idempotency::IdempotencyConfig;

/// Default Redis endpoint: a local `redis-server`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Default CloudWatch namespace of the EMF metric lines.
pub const DEFAULT_METRICS_NAMESPACE: &str = "IdempotentOrders";

/// Everything the function needs, typed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `REDIS_URL`: `redis://` or `rediss://` (TLS). May hold a password, so
    /// it is never logged or echoed in an error.
    pub redis_url: String,
    /// `REDIS_TIMEOUT_MS`: bound on every Redis command and connect.
    pub redis_timeout: Duration,
    /// `REDIS_CLUSTER`: `REDIS_URL` is a cluster-mode endpoint (seed node).
    pub redis_cluster: bool,
    /// `REDIS_CA_FILE`: a PEM CA bundle to trust for `rediss://` instead of
    /// the public (webpki) roots, e.g. for a local TLS Redis.
    pub redis_ca_file: Option<PathBuf>,
    /// The idempotency layer's settings (`IDEMPOTENCY_*`).
    pub idempotency: IdempotencyConfig,
}

/// A configuration variable with a value the function cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// Why its value was refused.
    pub reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.trim().is_empty());
        let defaults = IdempotencyConfig::default();

        let redis_url = get("REDIS_URL").unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        // Checked here so a typo fails at start-up, not on the first request.
        // The value itself is not echoed: it may carry a password.
        redis::parse_redis_url(&redis_url).ok_or_else(|| ConfigError {
            var: "REDIS_URL",
            reason: "not a valid redis:// or rediss:// URL".to_owned(),
        })?;

        let redis_timeout = millis(get, "REDIS_TIMEOUT_MS", Duration::from_millis(500))?;
        let redis_ca_file = get("REDIS_CA_FILE").map(PathBuf::from);
        let redis_cluster = boolean(get, "REDIS_CLUSTER", false)?;
        let key_prefix = match get("IDEMPOTENCY_KEY_PREFIX") {
            None => defaults.key_prefix.clone(),
            Some(prefix) if prefix.bytes().all(|b| b.is_ascii_graphic()) => prefix,
            Some(_) => {
                return Err(ConfigError {
                    var: "IDEMPOTENCY_KEY_PREFIX",
                    reason: "must be visible ASCII without spaces".to_owned(),
                })
            }
        };
        let idempotency = IdempotencyConfig {
            key_prefix,
            retention: secs(get, "IDEMPOTENCY_RETENTION_SECS", defaults.retention)?,
            lease_cap: secs(get, "IDEMPOTENCY_LEASE_CAP_SECS", defaults.lease_cap)?,
            default_lease: secs(
                get,
                "IDEMPOTENCY_DEFAULT_LEASE_SECS",
                defaults.default_lease,
            )?,
            key_required: boolean(get, "IDEMPOTENCY_KEY_REQUIRED", defaults.key_required)?,
            methods: methods(get, "IDEMPOTENCY_METHODS", defaults.methods.clone())?,
            // Unset: the default namespace; set but empty: no metric lines.
            metrics_namespace: match lookup("METRICS_NAMESPACE") {
                None => Some(DEFAULT_METRICS_NAMESPACE.to_owned()),
                Some(ns) if ns.trim().is_empty() => None,
                Some(ns) => Some(ns.trim().to_owned()),
            },
            ..defaults
        };
        Ok(Self {
            redis_url,
            redis_timeout,
            redis_cluster,
            redis_ca_file,
            idempotency,
        })
    }
}

fn positive(
    get: impl Fn(&'static str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(None);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(ConfigError {
            var,
            reason: format!("expected a positive whole number, got {raw:?}"),
        }),
    }
}

fn secs(
    get: impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    Ok(positive(get, var)?.map_or(default, Duration::from_secs))
}

fn millis(
    get: impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    Ok(positive(get, var)?.map_or(default, Duration::from_millis))
}

fn boolean(
    get: impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError {
            var,
            reason: format!("expected true or false, got {other:?}"),
        }),
    }
}

fn methods(
    get: impl Fn(&'static str) -> Option<String>,
    var: &'static str,
    default: Vec<Method>,
) -> Result<Vec<Method>, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    let parsed = raw
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| ConfigError {
                var,
                reason: format!("{m:?} is not an HTTP method"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err(ConfigError {
            var,
            reason: "lists no method".to_owned(),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn empty_environment_gives_documented_defaults() {
        let config = from(&[]).unwrap();
        assert_eq!(config.redis_url, DEFAULT_REDIS_URL);
        assert_eq!(config.redis_timeout, Duration::from_millis(500));
        assert_eq!(config.redis_ca_file, None);
        assert!(!config.redis_cluster);
        let expected = IdempotencyConfig {
            metrics_namespace: Some(DEFAULT_METRICS_NAMESPACE.to_owned()),
            ..IdempotencyConfig::default()
        };
        assert_eq!(config.idempotency, expected);
    }

    #[test]
    fn every_variable_is_read() {
        let config = from(&[
            ("REDIS_URL", "rediss://user:pw@cache.example:6380"),
            ("REDIS_TIMEOUT_MS", "250"),
            ("REDIS_CA_FILE", "/etc/ca.pem"),
            ("REDIS_CLUSTER", "true"),
            ("IDEMPOTENCY_KEY_PREFIX", "idem"),
            ("IDEMPOTENCY_RETENTION_SECS", "3600"),
            ("IDEMPOTENCY_LEASE_CAP_SECS", "30"),
            ("IDEMPOTENCY_DEFAULT_LEASE_SECS", "10"),
            ("IDEMPOTENCY_KEY_REQUIRED", "false"),
            ("IDEMPOTENCY_METHODS", "post, put"),
            ("METRICS_NAMESPACE", "Shop/Orders"),
        ])
        .unwrap();
        assert_eq!(config.redis_timeout, Duration::from_millis(250));
        assert_eq!(config.redis_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(config.redis_cluster);
        let idem = &config.idempotency;
        assert_eq!(idem.key_prefix, "idem");
        assert_eq!(idem.retention, Duration::from_secs(3600));
        assert_eq!(idem.lease_cap, Duration::from_secs(30));
        assert_eq!(idem.default_lease, Duration::from_secs(10));
        assert!(!idem.key_required);
        assert_eq!(idem.methods, vec![Method::POST, Method::PUT]);
        assert_eq!(idem.metrics_namespace.as_deref(), Some("Shop/Orders"));
        let off = from(&[("METRICS_NAMESPACE", "")]).unwrap();
        assert_eq!(off.idempotency.metrics_namespace, None);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("REDIS_TIMEOUT_MS", "soon"),
            ("IDEMPOTENCY_RETENTION_SECS", "0"),
            ("IDEMPOTENCY_LEASE_CAP_SECS", "-5"),
            ("IDEMPOTENCY_KEY_REQUIRED", "maybe"),
            ("IDEMPOTENCY_METHODS", "PO ST"),
            ("IDEMPOTENCY_KEY_PREFIX", "has space"),
        ];
        for (var, value) in cases {
            let err = from(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_echoing_it() {
        let err = from(&[("REDIS_URL", "http://user:secret@host")]).unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
        assert!(!err.to_string().contains("secret"));
    }
}
