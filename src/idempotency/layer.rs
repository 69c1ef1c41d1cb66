//! [`IdempotencyLayer`]: the tower `Layer` that wraps any `lambda_http`
//! service in [`Idempotency`] (split the tower-http way: layer here, service
//! in `service.rs`).

use std::sync::Arc;

use lambda_http::tower::Layer;

use super::config::IdempotencyConfig;
use super::service::Idempotency;

/// Wraps services in [`Idempotency`], sharing one store and config.
pub struct IdempotencyLayer<St> {
    store: Arc<St>,
    config: Arc<IdempotencyConfig>,
}

impl<St> IdempotencyLayer<St> {
    /// A layer over `store` with `config`.
    pub fn new(store: St, config: IdempotencyConfig) -> Self {
        Self::from_shared(Arc::new(store), Arc::new(config))
    }

    /// A layer over an already shared store and config.
    pub fn from_shared(store: Arc<St>, config: Arc<IdempotencyConfig>) -> Self {
        Self { store, config }
    }
}

// Manual impl: the store itself need not be `Clone`, only the `Arc`.
impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::clone(&self.store), Arc::clone(&self.config))
    }
}
