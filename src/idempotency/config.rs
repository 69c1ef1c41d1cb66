//! Settings of the idempotency layer, independent of where they come from
//! (the binary fills them from the environment, tests build them directly).

use std::time::Duration;

use lambda_http::http::Method;

/// How the idempotency layer behaves. [`Default`] gives the documented
/// defaults (see the README's configuration table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// Prefix of every Redis key the layer writes: `<prefix>:<sha256 hex>`.
    /// Stable by default (not derived from the function name) so that a
    /// renamed or redeployed function still sees its records.
    pub key_prefix: String,
    /// How long a completed response is kept for replay.
    pub retention: Duration,
    /// Upper bound of an in-progress lease, whatever the deadline says.
    pub lease_cap: Duration,
    /// Lease used when the invocation has no usable deadline (missing, or in
    /// the past as under `cargo lambda watch`).
    pub default_lease: Duration,
    /// Added to the invocation's remaining time so the lease outlives the
    /// invocation that holds it by a little (clock skew, response flush).
    pub lease_grace: Duration,
    /// When false, a request without `Idempotency-Key` runs unprotected
    /// (and a log line says so) instead of getting `400`.
    pub key_required: bool,
    /// Methods the layer protects; others pass straight through.
    pub methods: Vec<Method>,
    /// `Retry-After` sent with a `503` when the store is unavailable.
    pub unavailable_retry_after: Duration,
    /// CloudWatch namespace of the EMF metric lines written to stdout, or
    /// `None` for no metric lines (the library default, so tests stay quiet;
    /// the binary's default is `IdempotentOrders`).
    pub metrics_namespace: Option<String>,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            key_prefix: "idempotency".to_owned(),
            retention: Duration::from_secs(24 * 60 * 60),
            lease_cap: Duration::from_secs(900),
            default_lease: Duration::from_secs(60),
            lease_grace: Duration::from_secs(2),
            key_required: true,
            methods: vec![Method::POST, Method::PATCH],
            unavailable_retry_after: Duration::from_secs(1),
            metrics_namespace: None,
        }
    }
}

impl IdempotencyConfig {
    /// The lease for an invocation that has `remaining` time left, if known.
    ///
    /// Remaining time plus grace, capped; the default lease when there is no
    /// usable deadline. Never zero: `PX 0` is an error in Redis.
    pub fn lease_for(&self, remaining: Option<Duration>) -> Duration {
        let lease = match remaining {
            Some(left) if !left.is_zero() => (left + self.lease_grace).min(self.lease_cap),
            _ => self.default_lease.min(self.lease_cap),
        };
        lease.max(Duration::from_millis(1))
    }

    /// Whether requests with this method go through the layer.
    pub fn covers(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_remaining_time_plus_grace() {
        let config = IdempotencyConfig::default();
        assert_eq!(
            config.lease_for(Some(Duration::from_secs(10))),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn lease_is_capped() {
        let config = IdempotencyConfig {
            lease_cap: Duration::from_secs(5),
            ..Default::default()
        };
        assert_eq!(
            config.lease_for(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn missing_or_past_deadline_uses_default_lease() {
        let config = IdempotencyConfig::default();
        assert_eq!(config.lease_for(None), Duration::from_secs(60));
        assert_eq!(
            config.lease_for(Some(Duration::ZERO)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn post_and_patch_are_covered_by_default() {
        let config = IdempotencyConfig::default();
        assert!(config.covers(&Method::POST));
        assert!(config.covers(&Method::PATCH));
        assert!(!config.covers(&Method::GET));
    }
}
