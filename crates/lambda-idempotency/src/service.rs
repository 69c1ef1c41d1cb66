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

use lambda_http::http::header;
use lambda_http::tower::Service;
use lambda_http::{Body, BoxFuture, IntoResponse, Request, RequestExt, Response};

use crate::apigw::route_identity;
use crate::decision::{decide, NextAction};
use crate::error::{IdempotencyError, StoreFailure};
use crate::fingerprint::Fingerprint;
use crate::key::{IdempotencyKey, KeyError};
use crate::layer::Shared;
use crate::outcome::{Outcome, Tally};
use crate::record::{in_progress_payload, Record, StoredResponse};
use crate::run::{millis, now_ms, run_handler, time_left, Lease};
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
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(process(inner, &shared, req).await) })
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
async fn process<S, St>(inner: S, shared: &Arc<Shared<St>>, req: Request) -> Response<Body>
where
    S: Service<Request> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    let settings = &shared.settings;
    let request_id = match (&shared.emf, req.lambda_context_ref()) {
        (Some(_), Some(context)) => context.request_id.clone(),
        _ => String::new(),
    };
    let mut tally = Tally::new(shared, request_id);
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
    let key = match IdempotencyKey::from_headers(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) if !settings.key_required => {
            tracing::warn!("no Idempotency-Key header: running the request without protection");
            let response = tally.time(run_handler(inner, req)).await;
            return tally.finish_handled(Outcome::Unprotected, None, response);
        }
        Ok(None) => return tally.reject(KeyError::Missing.into(), Outcome::MissingKey, None),
        Err(e) => return tally.reject(e.into(), Outcome::InvalidKey, None),
    };
    let Some(scope) = shared.scope.scope(&req) else {
        return tally.reject(IdempotencyError::Unidentified, Outcome::Unidentified, None);
    };
    let claimant = claimant(&req, &settings.key_prefix, &scope, &key);
    claim_and_run(inner, shared, tally, req, claimant).await
}

fn claimant(req: &Request, prefix: &str, scope: &str, key: &IdempotencyKey) -> Claimant {
    let method = req.method().as_str();
    let path = route_identity(req);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let query = req.uri().query();
    Claimant {
        key: StoreKey::derive(prefix, scope, method, &path, key),
        fingerprint: Fingerprint::compute(method, &path, query, content_type, req.body()),
        owner: OwnerToken::generate(),
        deadline: invocation_deadline(req),
    }
}

async fn claim_and_run<S, St>(
    inner: S,
    shared: &Arc<Shared<St>>,
    mut tally: Tally<'_, St>,
    mut req: Request,
    c: Claimant,
) -> Response<Body>
where
    S: Service<Request> + Send,
    S::Future: Send,
    S::Response: IntoResponse,
    S::Error: Display,
    St: IdempotencyStore,
{
    let settings = &shared.settings;
    let store = &shared.store;
    let lease = settings.lease_for(time_left(c.deadline));
    let started = Instant::now();
    let payload = in_progress_payload(&c.fingerprint, now_ms() + millis(lease));
    let claimed = bounded(
        store,
        c.deadline,
        store.claim(&c.key, &c.owner, &payload, lease),
    )
    .await;
    if let Err(StoreFailure::Deadline | StoreFailure::Store(StoreError::Timeout(_))) = &claimed {
        // The claim may have been applied after all: give it back, so the
        // client's retry is not held off for the whole lease.
        release_later(shared, &c);
    }
    let existing = claimed.and_then(|found| {
        found
            .map(Record::decode)
            .transpose()
            .map_err(StoreFailure::from)
    });
    let existing = match existing {
        Ok(existing) => existing,
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
        release(store, &c.key, &c.owner, c.deadline).await;
        let error = unavailable(settings, &c.key, StoreFailure::LateClaim(took));
        return tally.reject(error, Outcome::StoreError, Some(&c.key));
    }
    match action {
        NextAction::Replay(stored) => {
            tally.finish(Outcome::Replayed, Some(&c.key), stored.replay())
        }
        NextAction::InProgress { retry_after_secs } => tally.reject(
            IdempotencyError::InProgress { retry_after_secs },
            Outcome::InProgress,
            Some(&c.key),
        ),
        NextAction::Mismatch => {
            tally.reject(IdempotencyError::Mismatch, Outcome::Mismatch, Some(&c.key))
        }
        NextAction::Execute => {
            req.extensions_mut().insert(c.key.execution_id());
            let held = Lease {
                store,
                settings,
                key: &c.key,
                owner: &c.owner,
                fingerprint: &c.fingerprint,
                deadline: c.deadline,
            };
            // Boxed: the handler's future is large, and a replay or a
            // rejection, which never runs it, should not carry (and move)
            // its space.
            Box::pin(async {
                let response = tally.time(held.hold(run_handler(inner, req))).await;
                settle(shared, tally, &c, response).await
            })
            .await
        }
    }
}

/// After the handler ran: store its response, or release the key.
async fn settle<St: IdempotencyStore>(
    shared: &Shared<St>,
    tally: Tally<'_, St>,
    c: &Claimant,
    response: Result<Response<Body>, String>,
) -> Response<Body> {
    let store = &shared.store;
    let response = match response {
        Ok(response) => response,
        Err(failure) => {
            release(store, &c.key, &c.owner, c.deadline).await;
            return tally.finish_handled(Outcome::HandlerFailed, Some(&c.key), Err(failure));
        }
    };
    if !shared.rule.should_store(&response) {
        release(store, &c.key, &c.owner, c.deadline).await;
        return tally.finish(Outcome::Released, Some(&c.key), response);
    }
    let payload = StoredResponse::capture(&response).encode(&c.fingerprint);
    let limit = shared.settings.max_record_bytes;
    if payload.len() > limit {
        tracing::error!(
            key_hash = c.key.hash(),
            size = payload.len(),
            limit,
            "the response is larger than IDEMPOTENCY_MAX_RECORD_BYTES: it was sent but not \
             stored, and the key was released (a retry runs again)"
        );
        release(store, &c.key, &c.owner, c.deadline).await;
        return tally.finish(Outcome::Released, Some(&c.key), response);
    }
    match complete(shared, c, &payload).await {
        Ok(()) => tally.finish(Outcome::Executed, Some(&c.key), response),
        // Not confirmed: the handler's writes may be on the primary only,
        // and could vanish in a failover. Answer nothing a failover could
        // contradict.
        Err(e) if unconfirmed(&shared.store, &e) => {
            let error = unavailable(&shared.settings, &c.key, e);
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

fn unavailable(
    settings: &crate::Settings,
    key: &StoreKey,
    source: StoreFailure,
) -> IdempotencyError {
    tracing::error!(key_hash = key.hash(), error = %source, "idempotency store failed; the handler's result is not relied on");
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

/// A fenced release in the background: it deletes the record only if it is
/// still our claim, in progress.
fn release_later<St: IdempotencyStore>(shared: &Arc<Shared<St>>, c: &Claimant) {
    let (shared, key, owner) = (Arc::clone(shared), c.key.clone(), c.owner.clone());
    tokio::spawn(async move { release(&shared.store, &key, &owner, None).await });
}

/// The invocation's deadline; `None` when absent or zero (tests, some
/// emulators). A deadline in the past is returned as is.
fn invocation_deadline(req: &Request) -> Option<SystemTime> {
    let ms = req.lambda_context_ref()?.deadline;
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// Stores the completed record, retrying a failed attempt within the time
/// left.
async fn complete<St: IdempotencyStore>(
    shared: &Shared<St>,
    c: &Claimant,
    payload: &[u8],
) -> Result<(), StoreFailure> {
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
            Ok(true) => return Ok(()),
            Ok(false) => {
                tracing::warn!(
                    key_hash = c.key.hash(),
                    "the idempotency lease was taken over before completion; the new owner's record was not overwritten"
                );
                return Ok(());
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
/// store's timeout; a failure is logged (the lease frees the key anyway).
async fn release<St: IdempotencyStore>(
    store: &St,
    key: &StoreKey,
    owner: &OwnerToken,
    deadline: Option<SystemTime>,
) {
    if let Err(e) = bounded(store, deadline, store.release(key, owner)).await {
        tracing::warn!(
            key_hash = key.hash(),
            error = %e,
            "could not release the idempotency claim; it frees itself when the lease ends"
        );
    }
}

#[cfg(test)]
mod tests;
