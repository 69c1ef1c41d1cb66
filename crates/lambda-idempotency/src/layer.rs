//! [`IdempotencyLayer`] and its builder: the tower `Layer` that wraps any
//! `lambda_http` service in [`Idempotency`] (split the tower-http way:
//! layer and builder here, the service in `service.rs`).

use std::sync::Arc;

use lambda_http::tower::Layer;

use crate::cache::LocalCache;
use crate::giveback::GiveBacks;
use crate::metrics::{DeferredLines, Emf};
use crate::pointer::JsonPointer;
use crate::rules::{DefaultStoreRule, StoreRule};
use crate::scope::CallerScope;
use crate::service::Idempotency;
use crate::settings::Settings;
use lambda_http::http::HeaderName;

/// Everything the services of one layer share.
pub(crate) struct Shared<St> {
    pub(crate) store: St,
    pub(crate) settings: Settings,
    pub(crate) scope: Box<dyn CallerScope>,
    pub(crate) rule: Box<dyn StoreRule>,
    /// The per-request log-and-metric line, when metrics are on.
    pub(crate) emf: Option<Emf>,
    /// Claims a failure may have left behind, to give back.
    pub(crate) give_backs: Arc<GiveBacks>,
    /// Completed records kept in memory, when the settings ask for it.
    pub(crate) cache: Option<LocalCache>,
}

/// Wraps services in [`Idempotency`], sharing one store and its settings.
///
/// Built with [`IdempotencyLayer::builder`]; see the crate docs for a
/// complete function.
pub struct IdempotencyLayer<St> {
    shared: Arc<Shared<St>>,
}

/// The settings (the store, scope and rules are shown by name only).
impl<St> std::fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl<St> std::fmt::Debug for Shared<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &std::any::type_name::<St>())
            .field("settings", &self.settings)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl<St> IdempotencyLayer<St> {
    /// A builder over `store`, with the default settings (and so the
    /// default scope, [`ApiGatewayScope::default`](crate::ApiGatewayScope::default)) and store rule
    /// ([`DefaultStoreRule`]).
    pub fn builder(store: St) -> IdempotencyLayerBuilder<St> {
        IdempotencyLayerBuilder {
            store,
            settings: Settings::default(),
            scope: None,
            rule: Box::new(DefaultStoreRule),
            deferred: None,
        }
    }
}

// Manual impl: the store itself need not be `Clone`, only the `Arc`.
impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures an [`IdempotencyLayer`].
pub struct IdempotencyLayerBuilder<St> {
    store: St,
    settings: Settings,
    /// A scope of the caller's own, instead of [`Settings::scope`].
    scope: Option<Box<dyn CallerScope>>,
    rule: Box<dyn StoreRule>,
    deferred: Option<DeferredLines>,
}

impl<St> std::fmt::Debug for IdempotencyLayerBuilder<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("store", &std::any::type_name::<St>())
            .field("settings", &self.settings)
            .field("own_scope", &self.scope.is_some())
            .finish_non_exhaustive()
    }
}

impl<St> IdempotencyLayerBuilder<St> {
    /// Replaces the settings (default: [`Settings::default`]).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Replaces the caller scope (default: [`Settings::scope`], read from
    /// `IDEMPOTENCY_SCOPE` by [`Settings::from_env`]; without it
    /// [`ApiGatewayScope::default`](crate::ApiGatewayScope::default), which refuses callers without an
    /// identity), whatever the settings say.
    pub fn scope(mut self, scope: impl CallerScope) -> Self {
        self.scope = Some(Box::new(scope));
        self
    }

    /// Takes the key from `header` instead of `Idempotency-Key`
    /// ([`Settings::key_header`]).
    pub fn key_header(mut self, header: HeaderName) -> Self {
        self.settings.key_header = header;
        self
    }

    /// Leaves these members of a JSON body out of the fingerprint
    /// ([`Settings::fingerprint_ignore`]): a client timestamp, a trace id.
    ///
    /// ```
    /// use lambda_idempotency::{IdempotencyLayer, JsonPointer, MemoryStore};
    ///
    /// let ignored: Vec<JsonPointer> = ["/client_ts", "/meta/trace_id"]
    ///     .iter()
    ///     .map(|p| p.parse())
    ///     .collect::<Result<_, _>>()?;
    /// let layer = IdempotencyLayer::builder(MemoryStore::new())
    ///     .fingerprint_ignore(ignored)
    ///     .build();
    /// # let _ = layer;
    /// # Ok::<(), lambda_idempotency::PointerParseError>(())
    /// ```
    pub fn fingerprint_ignore(mut self, pointers: impl IntoIterator<Item = JsonPointer>) -> Self {
        self.settings.fingerprint_ignore = pointers.into_iter().collect();
        self
    }

    /// Keeps up to `bytes` of completed records in this process's memory
    /// ([`Settings::local_cache_bytes`]); `0` turns the cache off.
    pub fn local_cache_bytes(mut self, bytes: usize) -> Self {
        self.settings.local_cache_bytes = bytes;
        self
    }

    /// Replaces the rule deciding which responses are stored (default:
    /// [`DefaultStoreRule`]).
    pub fn store_rule(mut self, rule: impl StoreRule) -> Self {
        self.rule = Box::new(rule);
        self
    }

    /// Holds the per-request log-and-metric line in `lines` until the
    /// caller flushes it after the response was sent (default: each line
    /// is written before its response leaves). Applies when metrics are
    /// on ([`Settings::metrics_namespace`]).
    pub fn defer_lines(mut self, lines: DeferredLines) -> Self {
        self.deferred = Some(lines);
        self
    }

    /// The layer.
    pub fn build(self) -> IdempotencyLayer<St> {
        // The function's name, for the metric dimension, read once.
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
        let emf = self
            .settings
            .metrics_namespace
            .as_deref()
            .map(|namespace| Emf::new(namespace, &function, self.deferred));
        let scope = self
            .scope
            .unwrap_or_else(|| Box::new(self.settings.scope.clone()));
        let cache = (self.settings.local_cache_bytes > 0)
            .then(|| LocalCache::new(self.settings.local_cache_bytes));
        IdempotencyLayer {
            shared: Arc::new(Shared {
                store: self.store,
                settings: self.settings,
                scope,
                rule: self.rule,
                emf,
                give_backs: Arc::default(),
                cache,
            }),
        }
    }
}
