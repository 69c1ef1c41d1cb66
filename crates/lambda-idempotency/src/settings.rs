//! [`Settings`]: how the layer behaves, with documented defaults, built in
//! code or read from the environment by one call ([`Settings::from_env`]).
//!
//! Environment parsing goes through a lookup function so that every rule is
//! unit-tested without touching the process environment; a bad value is a
//! [`ConfigError`] naming the variable (`env.rs` reads each kind of value).

mod env;

use std::time::Duration;

use lambda_http::http::{HeaderName, Method};

pub(crate) use env::Env;

use crate::pointer::JsonPointer;
use crate::scope::ApiGatewayScope;

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
    /// The header that carries the key, validated the same way whatever
    /// its name. Default `Idempotency-Key`. Env `IDEMPOTENCY_KEY_HEADER`.
    pub key_header: HeaderName,
    /// Members of a JSON body left out of the fingerprint (RFC 6901 JSON
    /// Pointers such as `/client_ts`): bodies that differ only in their
    /// values replay; any other difference is still refused with `422`.
    /// Default none. Env `IDEMPOTENCY_FINGERPRINT_IGNORE` (comma-separated;
    /// unset or empty: none; an empty entry such as `/a,` is refused).
    pub fingerprint_ignore: Vec<JsonPointer>,
    /// Bytes of completed records this process keeps in memory, each until
    /// its record expires, so that a replay or a `422` of one costs no
    /// store round trip. `0` (the default) turns the cache off. Env
    /// `IDEMPOTENCY_LOCAL_CACHE_BYTES`.
    pub local_cache_bytes: usize,
    /// Where a caller's identity comes from, when the layer is built
    /// without its own [`CallerScope`](crate::CallerScope). Default
    /// [`ApiGatewayScope::default`] (no anonymous callers). Env
    /// `IDEMPOTENCY_SCOPE`, such as `jwt,iam,anonymous`.
    pub scope: ApiGatewayScope,
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
            key_header: HeaderName::from_static(DEFAULT_KEY_HEADER),
            fingerprint_ignore: Vec::new(),
            local_cache_bytes: 0,
            scope: ApiGatewayScope::default(),
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

/// The header that carries the key unless configured otherwise.
pub(crate) const DEFAULT_KEY_HEADER: &str = "idempotency-key";

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
            key_header: env.header("IDEMPOTENCY_KEY_HEADER", defaults.key_header.clone())?,
            fingerprint_ignore: env.pointers("IDEMPOTENCY_FINGERPRINT_IGNORE")?,
            local_cache_bytes: env.bytes("IDEMPOTENCY_LOCAL_CACHE_BYTES")?,
            scope: env.scope("IDEMPOTENCY_SCOPE")?,
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

    /// The key header's name as messages show it: `Idempotency-Key` by
    /// default, or as configured (lower case).
    pub(crate) fn key_header_label(&self) -> &str {
        match self.key_header.as_str() {
            DEFAULT_KEY_HEADER => "Idempotency-Key",
            other => other,
        }
    }

    /// Whether requests with this method go through the layer.
    pub(crate) fn covers(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

#[cfg(test)]
mod tests;
