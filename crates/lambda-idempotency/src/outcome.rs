//! How each request ended, for the one line written per request: the
//! log-and-metric line of `metrics.rs` when metrics are on, a `tracing`
//! event otherwise.

use std::future::Future;
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, RequestExt, Response};

use crate::error::IdempotencyError;
use crate::layer::Shared;
use crate::metrics::{self, InvocationIds, Line};
use crate::StoreKey;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Ran, and its response was stored.
    Executed,
    /// Ran, and its response was not stored (not final, marked not
    /// executed, or too large): the key was released.
    Released,
    /// Ran, but the completed record could not be stored.
    CompletionFailed,
    /// The handler failed or panicked: `500`, key released.
    HandlerFailed,
    Replayed,
    InProgress,
    Mismatch,
    MissingKey,
    InvalidKey,
    Unidentified,
    TooLarge,
    /// The store failed before the handler: `503`, nothing ran.
    StoreError,
    Unprotected,
    Passthrough,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::Released => "released",
            Self::CompletionFailed => "completion_failed",
            Self::HandlerFailed => "handler_failed",
            Self::Replayed => "replayed",
            Self::InProgress => "in_progress",
            Self::Mismatch => "mismatch",
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::Unidentified => "unidentified",
            Self::TooLarge => "too_large",
            Self::StoreError => "store_error",
            Self::Unprotected => "unprotected",
            Self::Passthrough => "passthrough",
        }
    }
}

/// Per-request bookkeeping for the request's line.
pub(crate) struct Tally<'a, St> {
    shared: &'a Shared<St>,
    started: Instant,
    /// Time spent inside the wrapped handler (not the layer's overhead).
    handler: Duration,
    /// The invocation's ids, for the metric line (the `tracing` event
    /// gets them from whatever the runtime adds to log lines); read only
    /// when metrics are on.
    ids: InvocationIds,
}

impl<'a, St> Tally<'a, St> {
    /// The tally of `req`, starting now.
    pub(crate) fn new(shared: &'a Shared<St>, req: &Request) -> Self {
        let ids = match (&shared.emf, req.lambda_context_ref()) {
            (Some(_), Some(context)) => InvocationIds::of(context),
            _ => InvocationIds::default(),
        };
        Self {
            shared,
            started: Instant::now(),
            handler: Duration::ZERO,
            ids,
        }
    }

    /// Runs the handler, adding its duration to the tally.
    pub(crate) async fn time<F: Future>(&mut self, future: F) -> F::Output {
        let started = Instant::now();
        let output = future.await;
        self.handler += started.elapsed();
        output
    }

    pub(crate) fn finish(
        &self,
        outcome: Outcome,
        key: Option<&StoreKey>,
        response: Response<Body>,
    ) -> Response<Body> {
        let total = self.started.elapsed();
        let key_hash = key.map_or("-", StoreKey::hash);
        let status = response.status().as_u16();
        match &self.shared.emf {
            Some(emf) => emf.emit(&Line {
                outcome: outcome.as_str(),
                key_hash,
                status,
                duration: total,
                overhead: total.saturating_sub(self.handler),
                ids: &self.ids,
            }),
            None => tracing::info!(
                outcome = outcome.as_str(),
                key_hash,
                status,
                duration_ms = metrics::round_ms(total),
                "idempotency"
            ),
        }
        response
    }

    /// [`Tally::finish`] for a handler result: an error becomes a `500`.
    pub(crate) fn finish_handled(
        &self,
        outcome: Outcome,
        key: Option<&StoreKey>,
        response: Result<Response<Body>, String>,
    ) -> Response<Body> {
        match response {
            Ok(response) => self.finish(outcome, key, response),
            Err(failure) => {
                tracing::error!(error = %failure, "handler failed; answering 500");
                let keyed = key.is_some();
                self.reject(
                    IdempotencyError::Handler { keyed },
                    Outcome::HandlerFailed,
                    key,
                )
            }
        }
    }

    pub(crate) fn reject(
        &self,
        error: IdempotencyError,
        outcome: Outcome,
        key: Option<&StoreKey>,
    ) -> Response<Body> {
        let settings = &self.shared.settings;
        let mut problem = error.to_problem();
        let header = settings.key_header_label();
        if header != "Idempotency-Key" {
            // Details name the default header: name the one configured.
            let detail = problem.detail().replace("Idempotency-Key", header);
            problem = problem.with_detail(detail);
        }
        self.finish(
            outcome,
            key,
            problem.into_response(&settings.problem_type_base),
        )
    }
}
