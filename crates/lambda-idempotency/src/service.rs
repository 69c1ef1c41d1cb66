//! [`Idempotency`]: the service that runs a request at most once per key.
//!
//! Per request: check the size, validate the key, find the caller's scope,
//! derive the record key and the fingerprint, claim (one round trip),
//! [`decide`], then either answer from the record or run the inner handler
//! (renewing the lease while it runs) and complete (store) or release
//! (forget) the claim. The handler's own response reaches the client even
//! when storing it fails afterwards; the store failing *before* the
//! handler means `503` and no execution (fail closed).

use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::http::{self, header};
use lambda_http::tower::Service;
use lambda_http::{Body, BoxFuture, IntoResponse, Request, RequestExt, Response};

use crate::apigw::route_identity;
use crate::body::RequestBody;
use crate::cache::LocalCache;
use crate::decision::{decide, NextAction};
use crate::error::{IdempotencyError, StoreFailure};
use crate::fingerprint::{is_json, Fingerprint};
use crate::key::{IdempotencyKey, KeyError};
use crate::layer::Shared;
use crate::outcome::{Outcome, Tally};
use crate::pointer;
use crate::record::{in_progress_payload, Record, RecordState, StoredResponse};
use crate::run::{millis, now_ms, run_handler, time_left, Lease};
use crate::scope::caller_scope;
use crate::settings::Settings;
use crate::store::{IdempotencyStore, StoreError};
use crate::{OwnerToken, StoreKey};

/// Attempts at writing the completed record before giving up.
const COMPLETE_ATTEMPTS: u32 = 3;

/// Time kept back from the deadline so a `503` still gets out in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// A claim whose reply took longer than its lease minus this is not trusted.
const LEASE_SAFETY: Duration = Duration::from_millis(100);

/// The idempotency middleware around an inner `lambda_http` service `S`,
/// over the store `St`. Built by [`crate::IdempotencyLayer`].
pub struct Idempotency<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: std::fmt::Debug, St> std::fmt::Debug for Idempotency<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("layer", &*self.shared)
            .finish()
    }
}

impl<S, St> Idempotency<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }
}

impl<S: Clone, St> Clone for Idempotency<S, St> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), Arc::clone(&self.shared))
    }
}

/// Over any [`RequestBody`]: `lambda_http`'s, or axum's in a `Router`.
/// It never fails a request itself (every failure is a response); its
/// errors are the wrapped service's readiness errors.
impl<S, St, B> Service<http::Request<B>> for Idempotency<S, St>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display + Send + 'static,
    St: IdempotencyStore,
    B: RequestBody,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Take the service that was polled ready, leave a clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            match body.read().await {
                Ok(body) => Ok(process(inner, &shared, Request::from_parts(parts, body)).await),
                // Never under lambda_http, whose bodies are in memory.
                Err(error) => {
                    tracing::error!(error = %error, "the request body could not be read");
                    let req = Request::from_parts(parts, Body::Empty);
                    let tally = Tally::new(&shared, &req);
                    Ok(tally.reject(
                        IdempotencyError::Handler { keyed: false },
                        Outcome::HandlerFailed,
                        None,
                    ))
                }
            }
        })
    }
}

/// The request's identity for the store, once the key and caller are known.
struct Claimant {
    key: StoreKey,
    fingerprint: Fingerprint,
    owner: OwnerToken,
    deadline: Option<SystemTime>,
}

/// The whole per-request flow; never fails (errors become responses).
async fn process<S, St, B>(inner: S, shared: &Arc<Shared<St>>, req: Request) -> Response<Body>
where
    B: RequestBody,
    S: Service<http::Request<B>> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    let settings = &shared.settings;
    let mut tally = Tally::new(shared, &req);
    if !settings.covers(req.method()) {
        let response = tally.time(run_handler(inner, req)).await;
        return tally.finish_handled(Outcome::Passthrough, None, response);
    }
    let size = req.body().len();
    if size > settings.max_request_bytes {
        let limit = settings.max_request_bytes;
        return tally.reject(
            IdempotencyError::TooLarge { size, limit },
            Outcome::TooLarge,
            None,
        );
    }
    let key = match IdempotencyKey::from_headers(req.headers(), &settings.key_header) {
        Ok(None) if settings.key_required => {
            return tally.reject(KeyError::Missing.into(), Outcome::MissingKey, None)
        }
        Ok(key) => key,
        Err(e) => return tally.reject(e.into(), Outcome::InvalidKey, None),
    };
    // Before any handler runs, with a key or without: an unidentified
    // caller is refused on every path.
    let Some(scope) = caller_scope(&*shared.scope, &req) else {
        return tally.reject(IdempotencyError::Unidentified, Outcome::Unidentified, None);
    };
    let Some(key) = key else {
        tracing::warn!(
            header = settings.key_header_label(),
            "no idempotency key header: running the request without protection"
        );
        let response = tally.time(run_handler(inner, req)).await;
        return tally.finish_handled(Outcome::Unprotected, None, response);
    };
    let claimant = claimant(&req, settings, &scope, &key);
    claim_and_run(inner, shared, tally, req, claimant).await
}

fn claimant(req: &Request, settings: &Settings, scope: &str, key: &IdempotencyKey) -> Claimant {
    let method = req.method().as_str();
    let path = route_identity(req);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let query = req.uri().query();
    // Members the settings leave out of the fingerprint: their values
    // blanked (JSON bodies only; anything else is fingerprinted as sent).
    let ignored = match &settings.fingerprint_ignore[..] {
        [] => None,
        pointers => content_type
            .and_then(is_json)
            .and_then(|()| pointer::without(req.body(), pointers)),
    };
    let body = ignored.as_deref().unwrap_or(req.body());
    Claimant {
        key: StoreKey::derive(&settings.key_prefix, scope, method, &path, key),
        fingerprint: Fingerprint::compute(method, &path, query, content_type, body),
        owner: OwnerToken::generate(),
        deadline: invocation_deadline(req),
    }
}

async fn claim_and_run<S, St, B>(
    inner: S,
    shared: &Arc<Shared<St>>,
    mut tally: Tally<'_, St>,
    mut req: Request,
    c: Claimant,
) -> Response<Body>
where
    B: RequestBody,
    S: Service<http::Request<B>> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    let settings = &shared.settings;
    let store = &shared.store;
    let cached = shared.cache.as_ref().and_then(|cache| cache.get(&c.key));
    if let Some(record) = cached {
        let retry_after = settings.in_progress_retry_after;
        match decide(
            Some(record),
            &c.fingerprint,
            &c.owner,
            now_ms(),
            retry_after,
        ) {
            // A completed record never asks for an execution.
            NextAction::Execute => {}
            action => return answer(tally, &c.key, action),
        }
    }
    // A claim on this key an earlier invocation could not give back (its
    // sandbox was frozen, or the store was away): before our own claim,
    // which would find it and answer 409.
    let first = |key, owner| release_once(store, key, owner, c.deadline);
    shared.give_backs.before_claim(&c.key, first).await;
    let lease = settings.claim_lease();
    let started = Instant::now();
    let payload = in_progress_payload(&c.fingerprint, now_ms() + millis(lease));
    let claimed = bounded(
        store,
        c.deadline,
        store.claim(&c.key, &c.owner, &payload, lease),
    )
    .await;
    if claimed.is_err() {
        // The claim may have been applied all the same (a lost or late
        // reply, a retry that failed after the first attempt landed), or
        // may land yet: give it back, so the client's retry is not held
        // off for the lease.
        give_back(shared, &c.key, &c.owner);
    }
    let existing = claimed.and_then(|found| {
        found
            .map(Record::decode)
            .transpose()
            .map_err(StoreFailure::from)
    });
    let existing = match existing {
        Ok(existing) => {
            if let (Some(cache), Some(record)) = (&shared.cache, &existing) {
                remember(cache, &c.key, record.clone());
            }
            existing
        }
        Err(source) => {
            return tally.reject(
                unavailable(settings, &c.key, source),
                Outcome::StoreError,
                Some(&c.key),
            )
        }
    };
    let action = decide(
        existing,
        &c.fingerprint,
        &c.owner,
        now_ms(),
        settings.in_progress_retry_after,
    );
    let took = started.elapsed();
    if action == NextAction::Execute && took + LEASE_SAFETY >= lease {
        // The claim's reply came back after our lease (nearly) ran out:
        // another invocation may already own the key.
        release(shared, &c.key, &c.owner, c.deadline).await;
        let error = unavailable(settings, &c.key, StoreFailure::LateClaim(took));
        return tally.reject(error, Outcome::StoreError, Some(&c.key));
    }
    if action != NextAction::Execute {
        return answer(tally, &c.key, action);
    }
    req.extensions_mut().insert(c.key.execution_id());
    let held = Lease {
        store,
        settings,
        key: &c.key,
        owner: &c.owner,
        fingerprint: &c.fingerprint,
    };
    // Boxed: the handler's future is large, and a replay or a rejection,
    // which never runs it, should not carry (and move) its space.
    Box::pin(async {
        let response = tally.time(held.hold(run_handler(inner, req))).await;
        settle(shared, tally, &c, response).await
    })
    .await
}

/// The answer to a request whose record decided it: a replay, `409` or
/// `422`. (An execution is [`claim_and_run`]'s own.)
fn answer<St: IdempotencyStore>(
    tally: Tally<'_, St>,
    key: &StoreKey,
    action: NextAction,
) -> Response<Body> {
    match action {
        NextAction::Replay(stored) => tally.finish(Outcome::Replayed, Some(key), stored.replay()),
        NextAction::InProgress { retry_after_secs } => tally.reject(
            IdempotencyError::InProgress { retry_after_secs },
            Outcome::InProgress,
            Some(key),
        ),
        NextAction::Mismatch | NextAction::Execute => {
            tally.reject(IdempotencyError::Mismatch, Outcome::Mismatch, Some(key))
        }
    }
}

/// Keeps a completed record that carries its expiry in the local cache.
fn remember(cache: &LocalCache, key: &StoreKey, record: Record) {
    if let (RecordState::Completed(_), Some(expires_ms)) = (&record.state, record.expires_ms) {
        cache.put(key, record, expires_ms);
    }
}

/// After the handler ran: store its response, or release the key.
async fn settle<St: IdempotencyStore>(
    shared: &Arc<Shared<St>>,
    tally: Tally<'_, St>,
    c: &Claimant,
    response: Result<Response<Body>, String>,
) -> Response<Body> {
    let response = match response {
        Ok(response) => response,
        Err(failure) => {
            release(shared, &c.key, &c.owner, c.deadline).await;
            return tally.finish_handled(Outcome::HandlerFailed, Some(&c.key), Err(failure));
        }
    };
    if !shared.rule.should_store(&response) {
        release(shared, &c.key, &c.owner, c.deadline).await;
        return tally.finish(Outcome::Released, Some(&c.key), response);
    }
    let captured = StoredResponse::capture(&response);
    // With a local cache, the record carries its expiry (see record.rs).
    let expires_ms = shared
        .cache
        .as_ref()
        .map(|_| now_ms() + millis(shared.settings.retention));
    let payload = captured.encode(&c.fingerprint, expires_ms);
    let limit = shared.settings.max_record_bytes;
    if payload.len() > limit {
        tracing::error!(
            key_hash = c.key.hash(),
            size = payload.len(),
            limit,
            "the response is larger than IDEMPOTENCY_MAX_RECORD_BYTES: it was sent but not \
             stored, and the key was released (a retry runs again)"
        );
        release(shared, &c.key, &c.owner, c.deadline).await;
        return tally.finish(Outcome::Released, Some(&c.key), response);
    }
    match complete(shared, c, &payload).await {
        Ok(written) => {
            if let (Some(cache), true) = (&shared.cache, written) {
                let record = Record {
                    owner: c.owner.clone(),
                    fingerprint: c.fingerprint,
                    state: RecordState::Completed(captured),
                    expires_ms,
                };
                remember(cache, &c.key, record);
            }
            tally.finish(Outcome::Executed, Some(&c.key), response)
        }
        // Not confirmed: the handler's writes may be on the primary only,
        // and could vanish in a failover. Answer nothing a failover could
        // contradict.
        Err(e) if unconfirmed(&shared.store, &e) => {
            let error = not_confirmed(&shared.settings, &c.key, e);
            tally.reject(error, Outcome::CompletionFailed, Some(&c.key))
        }
        Err(error) => {
            tracing::error!(
                key_hash = c.key.hash(),
                error = %error,
                "IDEMPOTENCY RECORD NOT COMPLETED: the response was sent but not stored; \
                 a retry after the lease ends runs the handler again"
            );
            tally.finish(Outcome::CompletionFailed, Some(&c.key), response)
        }
    }
}

/// Whether a failed completion leaves the handler's response unconfirmed
/// (so it must not be sent): always with a store that confirms writes, and
/// with any store that says its replicas did not acknowledge.
fn unconfirmed<St: IdempotencyStore>(store: &St, failure: &StoreFailure) -> bool {
    store.confirms_writes() || matches!(failure, StoreFailure::Store(StoreError::NotDurable { .. }))
}

/// The `503` when the store failed before the handler, which did not run.
fn unavailable(
    settings: &crate::Settings,
    key: &StoreKey,
    source: StoreFailure,
) -> IdempotencyError {
    const WHAT: &str =
        "the idempotency store failed before the handler: the handler did not run; answering 503";
    store_unavailable(settings, key, source, WHAT)
}

/// The `503` when the handler ran but its completion was not confirmed:
/// its response is not sent.
fn not_confirmed(
    settings: &crate::Settings,
    key: &StoreKey,
    source: StoreFailure,
) -> IdempotencyError {
    const WHAT: &str = "the handler ran, but its idempotency record could not be confirmed: its \
        response is not sent; answering 503 (a retry replays the record or runs the handler again)";
    store_unavailable(settings, key, source, WHAT)
}

/// The `503` for a store failure, logged as `what` happened.
fn store_unavailable(
    settings: &crate::Settings,
    key: &StoreKey,
    source: StoreFailure,
    what: &str,
) -> IdempotencyError {
    tracing::error!(key_hash = key.hash(), error = %source, "{what}");
    IdempotencyError::StoreUnavailable {
        retry_after_secs: settings.unavailable_retry_after.as_secs().max(1),
        source,
    }
}

/// Runs a store call bounded by the deadline too (keeping a margin), so the
/// function answers before Lambda stops it, whatever the store's own
/// timeout says. No timer is started when the store's own bound
/// ([`IdempotencyStore::max_call_time`]) ends first: each timer started
/// while none is pending wakes tokio's driver (two system calls).
async fn bounded<T, St: IdempotencyStore>(
    store: &St,
    deadline: Option<SystemTime>,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreFailure> {
    let budget = time_left(deadline)
        .map(|left| left.saturating_sub(DEADLINE_MARGIN))
        .filter(|&budget| store.max_call_time().is_none_or(|max| max > budget));
    match budget {
        Some(budget) => match tokio::time::timeout(budget, call).await {
            Ok(result) => result.map_err(StoreFailure::from),
            Err(_) => Err(StoreFailure::Deadline),
        },
        None => call.await.map_err(StoreFailure::from),
    }
}

/// Queues our claim on `key` to be given back (see `giveback.rs`), and
/// starts the background task that sends it.
fn give_back<St: IdempotencyStore>(shared: &Arc<Shared<St>>, key: &StoreKey, owner: &OwnerToken) {
    shared
        .give_backs
        .push(key, owner, shared.settings.claim_lease());
    let task = Arc::clone(shared);
    shared.give_backs.spawn(move |key, owner| {
        let shared = Arc::clone(&task);
        async move { release_once(&shared.store, key, owner, None).await }
    });
}

/// The invocation's deadline; `None` when absent or zero (tests, some
/// emulators). A deadline in the past is returned as is.
fn invocation_deadline(req: &Request) -> Option<SystemTime> {
    let ms = req.lambda_context_ref()?.deadline;
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// Stores the completed record, retrying a failed attempt within the time
/// left. `Ok(false)`: another invocation had taken the key over.
async fn complete<St: IdempotencyStore>(
    shared: &Shared<St>,
    c: &Claimant,
    payload: &[u8],
) -> Result<bool, StoreFailure> {
    let retention = shared.settings.retention;
    let mut attempt = 1;
    let error = loop {
        let attempt_result = bounded(
            &shared.store,
            c.deadline,
            shared.store.complete(&c.key, &c.owner, payload, retention),
        )
        .await;
        match attempt_result {
            Ok(true) => return Ok(true),
            Ok(false) => {
                tracing::warn!(
                    key_hash = c.key.hash(),
                    "the idempotency lease was taken over before completion; the new owner's record was not overwritten"
                );
                return Ok(false);
            }
            Err(failure) => {
                let pause = Duration::from_millis(25 * u64::from(attempt));
                // Keep a margin so the response itself still gets out in time.
                let room = time_left(c.deadline)
                    .is_none_or(|left| left > pause + Duration::from_millis(250));
                // Not retried: a deadline reached, and a write the replicas
                // did not acknowledge (the store already waited for them,
                // or gave the claim back; the answer is a 503 either way,
                // and the client's retry replays the record or runs again).
                let last = matches!(
                    failure,
                    StoreFailure::Deadline | StoreFailure::Store(StoreError::NotDurable { .. })
                );
                if attempt == COMPLETE_ATTEMPTS || !room || last {
                    break failure;
                }
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    };
    Err(error)
}

/// A fenced release, bounded by `deadline` (if any) as well as by the
/// store's timeout. A failure is logged and the claim queued to be given
/// back (the lease frees the key in any case).
async fn release<St: IdempotencyStore>(
    shared: &Arc<Shared<St>>,
    key: &StoreKey,
    owner: &OwnerToken,
    deadline: Option<SystemTime>,
) {
    let store = &shared.store;
    if let Err(e) = bounded(store, deadline, store.release(key, owner)).await {
        tracing::warn!(
            key_hash = key.hash(),
            error = %e,
            "could not release the idempotency claim; it is given back when the store \
             answers, or frees itself when the lease ends"
        );
        give_back(shared, key, owner);
    }
}

/// One give-back attempt: a fenced release bounded by `deadline` (if any)
/// and the store's timeout.
async fn release_once<St: IdempotencyStore>(
    store: &St,
    key: StoreKey,
    owner: OwnerToken,
    deadline: Option<SystemTime>,
) -> Result<bool, StoreFailure> {
    bounded(store, deadline, store.release(&key, &owner)).await
}

#[cfg(test)]
mod tests;
