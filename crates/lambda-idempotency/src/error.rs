//! Everything the layer answers on its own, as one `thiserror` enum; the
//! list of the problems it can answer with ([`PROBLEMS`]); and the one
//! mapping from the first into the second. Details are fixed sentences or
//! the key error's own message: no body carries client input beyond a
//! length, nor a store error, a URL or a secret.

use std::time::Duration;

use lambda_http::http::StatusCode;
use problem_details::{Problem, ProblemType};
use thiserror::Error;

use crate::key::KeyError;
use crate::store::StoreError;

/// `400`: no `Idempotency-Key` header.
const KEY_MISSING: ProblemType = ProblemType {
    status: StatusCode::BAD_REQUEST,
    slug: "idempotency-key-missing",
    title: "Idempotency-Key header required",
};
/// `400`: the header is empty, too long, not visible ASCII, badly quoted,
/// repeated or a list.
const KEY_INVALID: ProblemType = ProblemType {
    status: StatusCode::BAD_REQUEST,
    slug: "idempotency-key-invalid",
    title: "Invalid Idempotency-Key header",
};
/// `403`: no caller identity while anonymous callers are not allowed.
const CALLER_UNIDENTIFIED: ProblemType = ProblemType {
    status: StatusCode::FORBIDDEN,
    slug: "caller-unidentified",
    title: "Caller not identified",
};
/// `413`: the body is over the configured limit.
const REQUEST_TOO_LARGE: ProblemType = ProblemType {
    status: StatusCode::PAYLOAD_TOO_LARGE,
    slug: "request-too-large",
    title: "Request body too large",
};
/// `422`: the key was first used with a different request.
const KEY_REUSED: ProblemType = ProblemType {
    status: StatusCode::UNPROCESSABLE_ENTITY,
    slug: "idempotency-key-reused",
    title: "Idempotency-Key reused with a different request",
};
/// `409` with `Retry-After`: the first request with this key still runs.
const REQUEST_IN_PROGRESS: ProblemType = ProblemType {
    status: StatusCode::CONFLICT,
    slug: "request-in-progress",
    title: "Request already in progress",
};
/// `503` with `Retry-After`: the store could not be used; nothing ran.
const STORE_UNAVAILABLE: ProblemType = ProblemType {
    status: StatusCode::SERVICE_UNAVAILABLE,
    slug: "idempotency-store-unavailable",
    title: "Service temporarily unavailable",
};
/// `500`: the handler failed or panicked; the key was released.
const HANDLER_FAILED: ProblemType = ProblemType {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    slug: "handler-failed",
    title: "Internal error",
};

/// Every problem the layer can answer with on its own, whatever handler it
/// wraps: a function that documents its errors (an OpenAPI description,
/// pages behind the `type` URIs) can check its documents against this list.
pub const PROBLEMS: &[ProblemType] = &[
    KEY_MISSING,
    KEY_INVALID,
    CALLER_UNIDENTIFIED,
    REQUEST_TOO_LARGE,
    KEY_REUSED,
    REQUEST_IN_PROGRESS,
    STORE_UNAVAILABLE,
    HANDLER_FAILED,
];

/// A failure of the store as the layer sees it (the store's own errors,
/// plus the time limits the layer enforces around it).
#[derive(Debug, Error)]
pub(crate) enum StoreFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no answer before the invocation deadline")]
    Deadline,
    #[error("the claim was answered after {0:?}, too late to trust its lease")]
    LateClaim(Duration),
}

/// A request the layer answers itself.
#[derive(Debug, Error)]
pub(crate) enum IdempotencyError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the request carries no caller identity this function accepts")]
    Unidentified,
    #[error("the request body is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the Idempotency-Key was already used with a different request")]
    Mismatch,
    #[error("a request with this Idempotency-Key is still being processed")]
    InProgress { retry_after_secs: u64 },
    #[error("the idempotency store is unavailable")]
    StoreUnavailable {
        retry_after_secs: u64,
        #[source]
        source: StoreFailure,
    },
    /// The handler failed or panicked; `keyed`: under an idempotency key
    /// (its claim released), rather than unprotected or passed through.
    #[error("the request handler failed")]
    Handler { keyed: bool },
}

impl IdempotencyError {
    /// The kind of problem this error is answered with: one of [`PROBLEMS`].
    pub(crate) fn problem_type(&self) -> ProblemType {
        match self {
            Self::Key(KeyError::Missing) => KEY_MISSING,
            Self::Key(_) => KEY_INVALID,
            Self::Unidentified => CALLER_UNIDENTIFIED,
            Self::TooLarge { .. } => REQUEST_TOO_LARGE,
            Self::Mismatch => KEY_REUSED,
            Self::InProgress { .. } => REQUEST_IN_PROGRESS,
            Self::StoreUnavailable { .. } => STORE_UNAVAILABLE,
            Self::Handler { .. } => HANDLER_FAILED,
        }
    }

    /// The problem for this error.
    pub(crate) fn to_problem(&self) -> Problem {
        let kind = self.problem_type();
        match self {
            Self::Key(_) | Self::TooLarge { .. } => Problem::new(kind, self.to_string()),
            Self::Unidentified => Problem::new(
                kind,
                "Idempotency keys are kept per caller, and this request carries no caller \
                 identity (JWT, authorizer, IAM or API key) that this function accepts.",
            ),
            Self::Mismatch => Problem::new(
                kind,
                "This key was first used with a different method, path, query or body. \
                 Use a new key for a new request.",
            ),
            Self::InProgress { retry_after_secs } => Problem::new(
                kind,
                "A request with this Idempotency-Key is still being processed. \
                 Retry after the Retry-After delay to get its result.",
            )
            .with_retry_after(*retry_after_secs),
            Self::StoreUnavailable {
                retry_after_secs, ..
            } => Problem::new(
                kind,
                "The request's outcome could not be recorded safely. \
                 Retry it with the same Idempotency-Key to get its result.",
            )
            .with_retry_after(*retry_after_secs),
            Self::Handler { keyed: true } => Problem::new(
                kind,
                "The request failed and was not recorded. Retry it with the same Idempotency-Key.",
            ),
            // No key: nothing to retry under, and nothing was recorded.
            Self::Handler { keyed: false } => {
                Problem::new(kind, "The request failed. Nothing was recorded for it.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// One error of every variant, and of every key error. The matches
    /// have no wildcard arm: a new variant does not compile until it is
    /// added here, and so checked against the list.
    fn every_error() -> Vec<IdempotencyError> {
        let keys = vec![
            KeyError::Missing,
            KeyError::Empty,
            KeyError::TooLong(300),
            KeyError::InvalidCharacter,
            KeyError::Multiple,
            KeyError::BadQuoting,
        ];
        for key in &keys {
            match key {
                KeyError::Missing
                | KeyError::Empty
                | KeyError::TooLong(_)
                | KeyError::InvalidCharacter
                | KeyError::Multiple
                | KeyError::BadQuoting => {}
            }
        }
        let mut errors: Vec<_> = keys.into_iter().map(IdempotencyError::Key).collect();
        errors.extend([
            IdempotencyError::Unidentified,
            IdempotencyError::TooLarge { size: 9, limit: 1 },
            IdempotencyError::Mismatch,
            IdempotencyError::InProgress {
                retry_after_secs: 1,
            },
            IdempotencyError::StoreUnavailable {
                retry_after_secs: 1,
                source: StoreFailure::Store(StoreError::Timeout(Duration::from_millis(5))),
            },
            IdempotencyError::Handler { keyed: true },
            IdempotencyError::Handler { keyed: false },
        ]);
        for error in &errors {
            match error {
                IdempotencyError::Key(_)
                | IdempotencyError::Unidentified
                | IdempotencyError::TooLarge { .. }
                | IdempotencyError::Mismatch
                | IdempotencyError::InProgress { .. }
                | IdempotencyError::StoreUnavailable { .. }
                | IdempotencyError::Handler { .. } => {}
            }
        }
        errors
    }

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (IdempotencyError::Key(KeyError::Missing), 400),
            (IdempotencyError::Key(KeyError::TooLong(300)), 400),
            (IdempotencyError::Unidentified, 403),
            (IdempotencyError::TooLarge { size: 9, limit: 1 }, 413),
            (IdempotencyError::Mismatch, 422),
            (
                IdempotencyError::InProgress {
                    retry_after_secs: 1,
                },
                409,
            ),
            (
                IdempotencyError::StoreUnavailable {
                    retry_after_secs: 1,
                    source: StoreFailure::Store(StoreError::Timeout(Duration::from_millis(5))),
                },
                503,
            ),
            (IdempotencyError::Handler { keyed: true }, 500),
            (IdempotencyError::Handler { keyed: false }, 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.to_problem().status().as_u16(), status, "{error}");
        }
    }

    #[test]
    fn every_error_maps_into_the_list_and_every_listed_problem_is_answered() {
        let mut answered = HashSet::new();
        for error in every_error() {
            let kind = error.problem_type();
            assert!(PROBLEMS.contains(&kind), "{error}: {kind:?} is not listed");
            assert_eq!(error.to_problem().kind(), kind, "{error}");
            answered.insert(kind.slug);
        }
        for kind in PROBLEMS {
            assert!(
                answered.contains(kind.slug),
                "{} is never answered",
                kind.slug
            );
        }
        let slugs: HashSet<_> = PROBLEMS.iter().map(|kind| kind.slug).collect();
        assert_eq!(slugs.len(), PROBLEMS.len(), "slugs are unique");
    }

    #[test]
    fn store_failure_details_stay_out_of_the_body() {
        let error = IdempotencyError::StoreUnavailable {
            retry_after_secs: 1,
            source: StoreFailure::Store(StoreError::Corrupt("redis://:hunter2@cache".to_owned())),
        };
        let response = error.to_problem().into_response("urn:x:");
        let body = std::str::from_utf8(response.body()).unwrap().to_owned();
        assert!(!body.contains("hunter2"));
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
