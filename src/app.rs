//! The router: the only place that knows both the orders handlers and the
//! idempotency layer. It answers the routes of [`crate::routes::ROUTES`]:
//! `POST /orders` goes through the layer; `GET /orders/{id}` does not need
//! it (reads are naturally idempotent), nor does `GET /problems/{slug}`
//! (the problem documents, [`crate::problems`]).
//!
//! Two small adapters join the walls between them: the layer's
//! [`ExecutionId`] becomes the order's [`OrderId`] (every attempt at one
//! request names the same order), and an order refusal marked
//! [`Rejected`] is not stored, so the corrected request can be sent again
//! under the same key.

use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_http::tower::{Layer, Service, ServiceExt};
use lambda_http::{Body, Request, Response};
use lambda_idempotency::{caller_scope, ApiGatewayScope};
use lambda_idempotency::{
    route_path, ConfigError, DefaultStoreRule, DeferredLines, ExecutionId, Idempotency,
    IdempotencyLayer, RedisConnection, RedisStore, StoreRule,
};
use orders::{get_order, CreateOrder, OrderId, OrderRepo, Owner, Rejected};
use problem_details::Problem;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::problems::{self, INTERNAL_ERROR, METHOD_NOT_ALLOWED, ROUTE_NOT_FOUND};
use crate::routes::{self, Endpoint, Match};

/// The create handler as the layer sees it.
type Create = Attach<CreateOrder<RedisConnection>>;

/// The whole function: routes requests to the handlers.
#[derive(Clone)]
pub struct App {
    create: Idempotency<Create, RedisStore>,
    repo: OrderRepo<RedisConnection>,
    store: RedisStore,
    scope: Arc<ApiGatewayScope>,
    problem_base: Arc<str>,
}

/// Hands the orders handler what it needs from outside: the layer's
/// execution identity as its order id, and the caller as the order's owner.
/// It runs only when the layer executes the handler, so a replay, a `409` or
/// a `422` never pays for the owner's hash.
#[derive(Clone)]
struct Attach<S> {
    inner: S,
    scope: Arc<ApiGatewayScope>,
}

impl<S: Service<Request>> Service<Request> for Attach<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(execution) = req.extensions().get::<ExecutionId>().copied() {
            req.extensions_mut()
                .insert(OrderId::from_bytes(*execution.as_bytes()));
        }
        if let Some(owner) = owner(&self.scope, &req) {
            req.extensions_mut().insert(owner);
        }
        self.inner.call(req)
    }
}

/// Whose orders a request may create and read: the caller's scope, within
/// its Lambda tenant if any (the one its idempotency keys live under, by
/// the layer's own rule), hashed so that no identity is stored with the
/// order.
fn owner(scope: &ApiGatewayScope, req: &Request) -> Option<Owner> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(caller_scope(scope, req)?.as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    Some(Owner::new(hex))
}

/// The default rule, except that an order refused before anything was
/// written is not stored.
fn store_rule(response: &Response<Body>) -> bool {
    DefaultStoreRule.should_store(response) && response.extensions().get::<Rejected>().is_none()
}

impl App {
    /// The function over `store` (whose connection the orders share: one
    /// Redis connection per instance). Each request's log-and-metric line is
    /// written before its response leaves, or, given `deferred`, held there
    /// until the runtime flushes it after the response.
    pub fn new(store: RedisStore, config: &Config, deferred: Option<DeferredLines>) -> Self {
        // The connection bounds each command by the timeout itself, and a
        // command that times out there retires a useless connection; the
        // repository's own bound, on a whole call (a retry after a dropped
        // connection included), is a backstop that must not fire first.
        let repo = OrderRepo::new(store.connection(), config.redis.timeout * 2);
        let problem_base = config.settings.problem_type_base.as_str();
        let mut layer = IdempotencyLayer::builder(store.clone())
            .settings(config.settings.clone())
            .scope(config.scope.clone())
            .store_rule(store_rule);
        if let Some(deferred) = deferred {
            layer = layer.defer_lines(deferred);
        }
        let layer = layer.build();
        let scope = Arc::new(config.scope.clone());
        let create = Attach {
            inner: CreateOrder::new(repo.clone(), problem_base),
            scope: Arc::clone(&scope),
        };
        Self {
            create: layer.layer(create),
            repo,
            store,
            scope,
            problem_base: Arc::from(problem_base),
        }
    }

    /// The function from `config`: a lazy Redis connection (start-up
    /// succeeds while Redis is down) and the layer, writing each line at
    /// once. A URL or CA bundle the client cannot use is an error naming
    /// its variable.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Self::open(config, None)
    }

    /// [`App::from_config`], holding the lines in `lines` until the
    /// runtime flushes them after each response: how `main` builds it.
    pub fn with_deferred_lines(config: &Config, lines: DeferredLines) -> Result<Self, ConfigError> {
        Self::open(config, Some(lines))
    }

    fn open(config: &Config, deferred: Option<DeferredLines>) -> Result<Self, ConfigError> {
        let store = RedisStore::open(&config.redis_url, config.redis.clone())?;
        Ok(Self::new(store, config, deferred))
    }

    /// Connects to Redis and loads the scripts now (bounded by
    /// `REDIS_TIMEOUT_MS`; a failure is logged, not fatal), so the first
    /// request after a cold start pays neither.
    pub async fn warm_up(&self) {
        self.store.warm_up().await;
    }

    /// The prefix of every problem `type` URI (`PROBLEM_TYPE_BASE`).
    pub fn problem_base(&self) -> &str {
        &self.problem_base
    }

    /// Answers one request. Never fails: every error is a problem+json.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let base = &*self.problem_base;
        // The path borrows the request; only a route's parameter (an
        // order id, a slug) is copied out of it.
        let (endpoint, param) = match routes::find(req.method().as_str(), &route_path(&req)) {
            Match::Found(endpoint, param) => (endpoint, param.map(str::to_owned)),
            Match::WrongMethod(allow) => return method_not_allowed(allow, base),
            Match::NotFound => {
                return Problem::new(ROUTE_NOT_FOUND, routes::not_found_detail())
                    .into_response(base)
            }
        };
        let param = param.unwrap_or_default();
        match endpoint {
            Endpoint::CreateOrder => match self.create.clone().oneshot(req).await {
                Ok(response) => response,
                // The layer turns every failure into a response; this
                // arm exists only because its error type allows it.
                Err(e) => {
                    tracing::error!(error = %e, "idempotency layer failed");
                    internal_error(base)
                }
            },
            Endpoint::GetOrder => {
                get_order(&self.repo, &param, owner(&self.scope, &req).as_ref(), base).await
            }
            Endpoint::ProblemType => problems::answer(&param, base),
        }
    }
}

fn method_not_allowed(allow: &'static str, base: &str) -> Response<Body> {
    Problem::new(
        METHOD_NOT_ALLOWED,
        format!("This route accepts {allow} only."),
    )
    .with_allow(allow)
    .into_response(base)
}

fn internal_error(base: &str) -> Response<Body> {
    Problem::new(
        INTERNAL_ERROR,
        "The request failed. Retry it with the same Idempotency-Key.",
    )
    .into_response(base)
}
