//! [`Settings`]: how the layer behaves, with documented defaults, built in
//! code or read from the environment by one call ([`Settings::from_env`]).
//!
//! Environment parsing goes through a lookup function so that every rule is
//! unit-tested without touching the process environment; a bad value is a
//! [`ConfigError`] naming the variable.

use std::time::Duration;

use lambda_http::http::Method;

/// How the idempotency layer behaves. [`Default`] gives the documented
/// defaults; fields can be changed one by one:
///
/// ```
/// use std::time::Duration;
/// use lambda_idempotency::Settings;
///
/// let mut settings = Settings::default();
/// settings.retention = Duration::from_secs(3600);
/// settings.problem_type_base = "https://api.example.com/problems/".to_owned();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Prefix of every record key: `<prefix>:<sha256 hex>`. Stable (not
    /// derived from the function name), so a renamed function keeps its
    /// records. Default `idempotency`. Env `IDEMPOTENCY_KEY_PREFIX`.
    pub key_prefix: String,
    /// How long a completed response is replayed. Default 24 h. Env
    /// `IDEMPOTENCY_RETENTION_SECS`.
    pub retention: Duration,
    /// How long a claim holds its key without being renewed. While the
    /// handler runs, the lease is renewed every third of its length, so a
    /// live handler keeps its key however long it runs; an invocation that
    /// died, froze or lost the store frees the key within one lease,
    /// whatever the function's timeout. Keep it at least six times the
    /// store's own call timeout, so that one failed renewal and the next
    /// one fit in it. Default 3 s. Env `IDEMPOTENCY_LEASE_SECS`.
    pub lease: Duration,
    /// When false, a request without `Idempotency-Key` runs unprotected (a
    /// log line says so) instead of getting `400`. Default true. Env
    /// `IDEMPOTENCY_KEY_REQUIRED`.
    pub key_required: bool,
    /// Methods the layer protects; others pass straight through. Default
    /// `POST, PATCH`. Env `IDEMPOTENCY_METHODS` (comma-separated).
    pub methods: Vec<Method>,
    /// `Retry-After` of a `409` for a request still in progress, capped by
    /// the time left on its lease. Default 1 s.
    pub in_progress_retry_after: Duration,
    /// `Retry-After` of a `503` when the store is unavailable. Default 1 s.
    pub unavailable_retry_after: Duration,
    /// Largest request body the layer accepts, checked before any store
    /// call; larger bodies get `413`. Default 64 KiB. Env
    /// `IDEMPOTENCY_MAX_REQUEST_BYTES`.
    pub max_request_bytes: usize,
    /// Largest record (response status, headers and body, encoded) the
    /// layer stores. A larger response still reaches the client, but it is
    /// not stored: the key is released and an `ERROR` line is logged.
    /// Default 64 KiB. Env `IDEMPOTENCY_MAX_RECORD_BYTES`.
    pub max_record_bytes: usize,
    /// CloudWatch namespace of the EMF metric line written per request, or
    /// `None` for no metric lines. Default `None`. Env `METRICS_NAMESPACE`.
    pub metrics_namespace: Option<String>,
    /// Prefix of the `type` URI of every problem the layer answers with;
    /// the problem's slug (e.g. `request-in-progress`) follows it. Point it
    /// at documentation of each problem. Default
    /// `urn:lambda-idempotency:problem:`. Env `PROBLEM_TYPE_BASE`.
    pub problem_type_base: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            key_prefix: "idempotency".to_owned(),
            retention: Duration::from_secs(24 * 60 * 60),
            lease: DEFAULT_LEASE,
            key_required: true,
            methods: vec![Method::POST, Method::PATCH],
            in_progress_retry_after: Duration::from_secs(1),
            unavailable_retry_after: Duration::from_secs(1),
            max_request_bytes: 64 * 1024,
            max_record_bytes: 64 * 1024,
            metrics_namespace: None,
            problem_type_base: "urn:lambda-idempotency:problem:".to_owned(),
        }
    }
}

/// The default lease: six times the Redis store's default timeout (500 ms).
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(3);

/// Variables earlier versions read, and what replaced them.
const RETIRED: [(&str, &str); 2] = [
    (
        "IDEMPOTENCY_LEASE_CAP_SECS",
        "the lease no longer follows the invocation's deadline",
    ),
    (
        "IDEMPOTENCY_DEFAULT_LEASE_SECS",
        "one lease applies whatever the deadline",
    ),
];

/// Longest retention accepted from the environment: a year.
const MAX_RETENTION: Duration = Duration::from_secs(366 * 24 * 60 * 60);
/// Longest lease accepted from the environment: fifteen minutes (a lease
/// is renewed while its handler runs; a long one only keeps a dead
/// invocation's key blocked longer).
const MAX_LEASE: Duration = Duration::from_secs(15 * 60);

/// A configuration variable with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// Why its value was refused (never the value itself when it may be a
    /// secret).
    pub reason: String,
}

impl Settings {
    /// The defaults, overridden by the `IDEMPOTENCY_*`, `METRICS_NAMESPACE`
    /// and `PROBLEM_TYPE_BASE` variables that are set (see each field).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        for (var, why) in RETIRED {
            if env.get(var).is_some() {
                tracing::warn!(
                    "{var} is no longer read ({why}): the lease is IDEMPOTENCY_LEASE_SECS \
                     (default 3 s), renewed while the handler runs"
                );
            }
        }
        let defaults = Self::default();
        let key_prefix = match env.get("IDEMPOTENCY_KEY_PREFIX") {
            None => defaults.key_prefix.clone(),
            Some(prefix) if prefix.bytes().all(|b| b.is_ascii_graphic()) => prefix,
            Some(_) => return Err(env.error("IDEMPOTENCY_KEY_PREFIX", "must be visible ASCII")),
        };
        Ok(Self {
            key_prefix,
            retention: env.secs(
                "IDEMPOTENCY_RETENTION_SECS",
                defaults.retention,
                MAX_RETENTION,
            )?,
            lease: env.secs("IDEMPOTENCY_LEASE_SECS", defaults.lease, MAX_LEASE)?,
            key_required: env.boolean("IDEMPOTENCY_KEY_REQUIRED", defaults.key_required)?,
            methods: env.methods("IDEMPOTENCY_METHODS", defaults.methods.clone())?,
            max_request_bytes: env
                .size("IDEMPOTENCY_MAX_REQUEST_BYTES", defaults.max_request_bytes)?,
            max_record_bytes: env
                .size("IDEMPOTENCY_MAX_RECORD_BYTES", defaults.max_record_bytes)?,
            metrics_namespace: env.get("METRICS_NAMESPACE").map(|ns| ns.trim().to_owned()),
            problem_type_base: env
                .get("PROBLEM_TYPE_BASE")
                .unwrap_or(defaults.problem_type_base.clone()),
            ..defaults
        })
    }

    /// The lease of a claim. Never zero (`PX 0` is an error in Redis).
    pub(crate) fn claim_lease(&self) -> Duration {
        self.lease.max(Duration::from_millis(1))
    }

    /// Whether requests with this method go through the layer.
    pub(crate) fn covers(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

/// Typed reads of environment variables; empty values count as unset.
pub(crate) struct Env<'a>(pub(crate) &'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    pub(crate) fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    pub(crate) fn error(&self, var: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            var,
            reason: reason.into(),
        }
    }

    fn whole(&self, var: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        raw.trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| self.error(var, format!("expected a whole number, got {raw:?}")))
    }

    pub(crate) fn positive(&self, var: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.whole(var)? {
            Some(0) => Err(self.error(var, "must be greater than zero")),
            other => Ok(other),
        }
    }

    pub(crate) fn count(&self, var: &'static str, default: u32) -> Result<u32, ConfigError> {
        match self.whole(var)? {
            None => Ok(default),
            Some(n) => u32::try_from(n).map_err(|_| self.error(var, "is too large")),
        }
    }

    fn secs(
        &self,
        var: &'static str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let value = self.positive(var)?.map_or(default, Duration::from_secs);
        if value > max {
            return Err(self.error(var, format!("must be at most {} seconds", max.as_secs())));
        }
        Ok(value)
    }

    pub(crate) fn millis(
        &self,
        var: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        Ok(self.positive(var)?.map_or(default, Duration::from_millis))
    }

    fn size(&self, var: &'static str, default: usize) -> Result<usize, ConfigError> {
        Ok(self
            .positive(var)?
            .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    pub(crate) fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .get(var)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(self.error(var, format!("expected true or false, got {other:?}"))),
        }
    }

    fn methods(&self, var: &'static str, default: Vec<Method>) -> Result<Vec<Method>, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let parsed = raw
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| self.error(var, format!("{m:?} is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(self.error(var, "lists no method"));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        assert_eq!(from(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn every_variable_is_read() {
        let s = from(&[
            ("IDEMPOTENCY_KEY_PREFIX", "idem"),
            ("IDEMPOTENCY_RETENTION_SECS", "3600"),
            ("IDEMPOTENCY_LEASE_SECS", "10"),
            ("IDEMPOTENCY_KEY_REQUIRED", "false"),
            ("IDEMPOTENCY_METHODS", "post, put"),
            ("IDEMPOTENCY_MAX_REQUEST_BYTES", "100"),
            ("IDEMPOTENCY_MAX_RECORD_BYTES", "200"),
            ("METRICS_NAMESPACE", "Shop/Orders"),
            ("PROBLEM_TYPE_BASE", "https://x.example/problems/"),
        ])
        .unwrap();
        assert_eq!(s.key_prefix, "idem");
        assert_eq!(s.retention, Duration::from_secs(3600));
        assert_eq!(s.lease, Duration::from_secs(10));
        assert!(!s.key_required);
        assert_eq!(s.methods, vec![Method::POST, Method::PUT]);
        assert_eq!((s.max_request_bytes, s.max_record_bytes), (100, 200));
        assert_eq!(s.metrics_namespace.as_deref(), Some("Shop/Orders"));
        assert_eq!(s.problem_type_base, "https://x.example/problems/");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("IDEMPOTENCY_RETENTION_SECS", "0"),
            ("IDEMPOTENCY_LEASE_SECS", "-5"),
            ("IDEMPOTENCY_KEY_REQUIRED", "maybe"),
            ("IDEMPOTENCY_METHODS", "PO ST"),
            ("IDEMPOTENCY_KEY_PREFIX", "has space"),
            ("IDEMPOTENCY_MAX_REQUEST_BYTES", "lots"),
            ("IDEMPOTENCY_RETENTION_SECS", "99999999999999"),
            ("IDEMPOTENCY_LEASE_SECS", "901"),
            ("IDEMPOTENCY_LEASE_SECS", "0"),
        ] {
            let err = from(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn the_lease_is_three_seconds_whatever_the_deadline() {
        assert_eq!(Settings::default().claim_lease(), Duration::from_secs(3));
        let zero = Settings {
            lease: Duration::ZERO,
            ..Settings::default()
        };
        assert_eq!(zero.claim_lease(), Duration::from_millis(1), "never PX 0");
    }

    #[test]
    fn retired_lease_variables_are_ignored_not_refused() {
        let s = from(&[
            ("IDEMPOTENCY_LEASE_CAP_SECS", "900"),
            ("IDEMPOTENCY_DEFAULT_LEASE_SECS", "60"),
        ])
        .unwrap();
        assert_eq!(s.lease, Duration::from_secs(3));
    }

    #[test]
    fn post_and_patch_are_covered_by_default() {
        let s = Settings::default();
        assert!(s.covers(&Method::POST) && s.covers(&Method::PATCH));
        assert!(!s.covers(&Method::GET));
    }
}
