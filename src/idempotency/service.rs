//! [`Idempotency`]: the service that runs a request at most once per key.
//!
//! Per request: validate the key, derive the record key and fingerprint,
//! claim (one round trip), [`decide`], then either answer from the record or
//! run the inner handler and complete (store) or release (forget) the claim.
//! The handler's own response always reaches the client, even when the
//! store fails afterwards; the store failing *before* the handler means
//! `503` and no execution (fail closed).

use std::fmt::Display;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::http::{header, StatusCode};
use lambda_http::tower::Service;
use lambda_http::{Body, BoxFuture, IntoResponse, Request, RequestExt, Response};

use super::config::IdempotencyConfig;
use super::decision::{decide, NextAction};
use super::error::{IdempotencyError, StoreError};
use super::fingerprint::Fingerprint;
use super::key::{IdempotencyKey, KeyError, StoreKey};
use super::metrics;
use super::record::{OwnerToken, StoredResponse};
use super::store::IdempotencyStore;
use crate::apigw;

/// Attempts at writing the completed record before giving up.
const COMPLETE_ATTEMPTS: u32 = 3;

/// Time kept back from the deadline so a `503` still gets out in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// A claim whose reply took longer than its lease minus this is not trusted.
const LEASE_SAFETY: Duration = Duration::from_millis(100);

/// The idempotency middleware around an inner `lambda_http` service `S`.
pub struct Idempotency<S, St> {
    inner: S,
    store: Arc<St>,
    config: Arc<IdempotencyConfig>,
}

impl<S, St> Idempotency<S, St> {
    /// Wraps `inner`; usually built through [`super::IdempotencyLayer`].
    pub fn new(inner: S, store: Arc<St>, config: Arc<IdempotencyConfig>) -> Self {
        Self {
            inner,
            store,
            config,
        }
    }
}

impl<S: Clone, St> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.config),
        )
    }
}

impl<S, St> Service<Request> for Idempotency<S, St>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    type Response = Response<Body>;
    type Error = lambda_http::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, lambda_http::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| lambda_http::Error::from(e.to_string()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Take the service that was polled ready, leave a clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let store = Arc::clone(&self.store);
        let config = Arc::clone(&self.config);
        Box::pin(async move { Ok(process(inner, &*store, &config, req).await) })
    }
}

/// How a request ended, for the one log event per request.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Executed,
    Replayed,
    InProgress,
    Mismatch,
    MissingKey,
    InvalidKey,
    StoreError,
    Unprotected,
    Passthrough,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::Replayed => "replayed",
            Self::InProgress => "in_progress",
            Self::Mismatch => "mismatch",
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::StoreError => "store_error",
            Self::Unprotected => "unprotected",
            Self::Passthrough => "passthrough",
        }
    }
}

/// Per-request bookkeeping for the one log line and the metrics line.
struct Tally<'a> {
    config: &'a IdempotencyConfig,
    started: Instant,
    /// Time spent inside the wrapped handler (not the layer's overhead).
    handler: Duration,
}

impl Tally<'_> {
    fn finish(
        &self,
        outcome: Outcome,
        key: Option<&StoreKey>,
        response: Response<Body>,
    ) -> Response<Body> {
        let total = self.started.elapsed();
        tracing::info!(
            outcome = outcome.as_str(),
            key_hash = key.map_or("-", StoreKey::hash),
            status = response.status().as_u16(),
            duration_ms = total.as_secs_f64() * 1000.0,
            "idempotency"
        );
        if let Some(namespace) = &self.config.metrics_namespace {
            let overhead = total.saturating_sub(self.handler);
            metrics::emit(namespace, outcome.as_str(), overhead);
        }
        response
    }

    fn reject(
        &self,
        error: IdempotencyError,
        outcome: Outcome,
        key: Option<&StoreKey>,
    ) -> Response<Body> {
        self.finish(outcome, key, error.to_problem().into_response())
    }
}

/// Runs the handler, adding its duration to the tally.
async fn timed<F: Future>(tally: &mut Tally<'_>, future: F) -> F::Output {
    let started = Instant::now();
    let output = future.await;
    tally.handler += started.elapsed();
    output
}

/// The whole per-request flow; never fails (errors become responses).
async fn process<S, St>(
    inner: S,
    store: &St,
    config: &IdempotencyConfig,
    req: Request,
) -> Response<Body>
where
    S: Service<Request> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    let mut tally = Tally {
        config,
        started: Instant::now(),
        handler: Duration::ZERO,
    };
    if !config.covers(req.method()) {
        let response = timed(&mut tally, run_handler(inner, req))
            .await
            .unwrap_or_else(handler_failed);
        return tally.finish(Outcome::Passthrough, None, response);
    }
    let key = match IdempotencyKey::from_headers(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) if !config.key_required => {
            tracing::warn!(
                "no Idempotency-Key header: running the request without idempotency protection"
            );
            let response = timed(&mut tally, run_handler(inner, req))
                .await
                .unwrap_or_else(handler_failed);
            return tally.finish(Outcome::Unprotected, None, response);
        }
        Ok(None) => return tally.reject(KeyError::Missing.into(), Outcome::MissingKey, None),
        Err(e) => return tally.reject(e.into(), Outcome::InvalidKey, None),
    };

    let method = req.method().as_str();
    let path = apigw::route_path(&req);
    let store_key = StoreKey::derive(
        &config.key_prefix,
        &apigw::caller_scope(&req),
        method,
        path,
        &key,
    );
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fingerprint = Fingerprint::compute(
        method,
        path,
        req.uri().query(),
        content_type,
        req.body().as_ref(),
    );
    let deadline = invocation_deadline(&req);
    let lease = config.lease_for(time_left(deadline));
    let owner = OwnerToken::generate();

    // Bounded by the deadline too: the function must answer before Lambda
    // kills it, whatever the store's own timeout says.
    let claim_started = Instant::now();
    let claim = store.claim(&store_key, &fingerprint, &owner, lease);
    let claimed = match time_left(deadline).map(|left| left.saturating_sub(DEADLINE_MARGIN)) {
        Some(budget) => tokio::time::timeout(budget, claim)
            .await
            .unwrap_or(Err(StoreError::Deadline)),
        None => claim.await,
    };
    let unavailable = |source: StoreError| {
        tracing::error!(key_hash = store_key.hash(), error = %source, "idempotency claim failed; refusing to run the handler");
        let retry_after_secs = config.unavailable_retry_after.as_secs().max(1);
        IdempotencyError::StoreUnavailable {
            retry_after_secs,
            source,
        }
    };
    let existing = match claimed {
        Ok(existing) => existing,
        Err(source) => {
            return tally.reject(unavailable(source), Outcome::StoreError, Some(&store_key))
        }
    };
    let action = decide(existing, &fingerprint, &owner);
    let claim_took = claim_started.elapsed();
    if action == NextAction::Execute && claim_took + LEASE_SAFETY >= lease {
        // The claim's reply came back after our lease (nearly) ran out:
        // another invocation may already own the key, so running the
        // handler could execute the request twice.
        release(store, &store_key, &owner).await;
        let error = unavailable(StoreError::LeaseExpired(claim_took));
        return tally.reject(error, Outcome::StoreError, Some(&store_key));
    }
    match action {
        NextAction::Replay(stored) => {
            tally.finish(Outcome::Replayed, Some(&store_key), stored.replay())
        }
        NextAction::InProgress { retry_after_secs } => tally.reject(
            IdempotencyError::InProgress { retry_after_secs },
            Outcome::InProgress,
            Some(&store_key),
        ),
        NextAction::Mismatch => tally.reject(
            IdempotencyError::Mismatch,
            Outcome::Mismatch,
            Some(&store_key),
        ),
        NextAction::Execute => {
            let response = match timed(&mut tally, run_handler(inner, req)).await {
                Ok(response) if is_storable(response.status()) => {
                    let stored = StoredResponse::capture(&response);
                    complete(store, config, &store_key, &owner, &stored, deadline).await;
                    response
                }
                Ok(response) => {
                    release(store, &store_key, &owner).await;
                    response
                }
                Err(failure) => {
                    release(store, &store_key, &owner).await;
                    handler_failed(failure)
                }
            };
            tally.finish(Outcome::Executed, Some(&store_key), response)
        }
    }
}

/// Whether a response is final for its key: 2xx, and 4xx except the
/// retryable ones (408 timeout, 409 conflict, 425 too early, 429 rate
/// limit). 1xx/3xx/5xx are not stored: the client may retry them.
pub fn is_storable(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 425 | 429))
}

fn handler_failed(failure: String) -> Response<Body> {
    tracing::error!(error = %failure, "handler failed; answering 500");
    IdempotencyError::Handler.to_problem().into_response()
}

/// The invocation's deadline; `None` when absent or zero (tests, some
/// emulators). A deadline in the past is returned as is.
fn invocation_deadline(req: &Request) -> Option<SystemTime> {
    let ms = req.lambda_context_ref()?.deadline;
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

fn time_left(deadline: Option<SystemTime>) -> Option<Duration> {
    deadline?.duration_since(SystemTime::now()).ok()
}

async fn complete<St: IdempotencyStore>(
    store: &St,
    config: &IdempotencyConfig,
    key: &StoreKey,
    owner: &OwnerToken,
    stored: &StoredResponse,
    deadline: Option<SystemTime>,
) {
    let mut last_error = None;
    for attempt in 1..=COMPLETE_ATTEMPTS {
        match store.complete(key, owner, stored, config.retention).await {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(
                    key_hash = key.hash(),
                    "idempotency lease was lost (expired and taken over) before completion; the record was not overwritten"
                );
                return;
            }
            Err(e) => last_error = Some(e),
        }
        let pause = Duration::from_millis(25 * u64::from(attempt));
        // Keep a margin so the response itself still gets out in time.
        let room = time_left(deadline).is_none_or(|left| left > pause + Duration::from_millis(250));
        if attempt == COMPLETE_ATTEMPTS || !room {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    tracing::error!(
        key_hash = key.hash(),
        status = stored.status,
        error = %last_error.map_or_else(|| "no time left".to_owned(), |e| e.to_string()),
        "IDEMPOTENCY RECORD NOT COMPLETED: the response was sent but not stored; \
         a retry after the lease expires will execute again"
    );
}

async fn release<St: IdempotencyStore>(store: &St, key: &StoreKey, owner: &OwnerToken) {
    match store.release(key, owner).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(
            key_hash = key.hash(),
            error = %e,
            "could not release the idempotency claim; it frees itself when the lease expires"
        ),
    }
}

/// Runs the inner service, turning an error or a panic into `Err(message)`.
async fn run_handler<S>(mut inner: S, req: Request) -> Result<Response<Body>, String>
where
    S: Service<Request> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
{
    poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let future =
        std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))).map_err(panic_message)?;
    let response = CatchUnwind(Box::pin(future))
        .await
        .map_err(panic_message)?
        .map_err(|e| e.to_string())?;
    CatchUnwind(response.into_response())
        .await
        .map_err(panic_message)
}

/// Polls a future, turning a panic into `Err` (where panics unwind; under
/// `panic = "abort"` the process dies and the lease frees the key).
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = Pin::new(&mut self.0);
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("handler panicked: {text}")
}
