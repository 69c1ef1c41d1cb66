//! Everything the layer answers on its own, as one `thiserror` enum, and
//! the one mapping from it to a status and a problem+json body.

use std::time::Duration;

use lambda_http::http::StatusCode;
use thiserror::Error;

use crate::key::KeyError;
use crate::problem::Problem;
use crate::store::StoreError;

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
    #[error("the request handler failed")]
    Handler,
}

impl IdempotencyError {
    /// The problem for this error.
    pub(crate) fn to_problem(&self) -> Problem {
        match self {
            Self::Key(KeyError::Missing) => Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key header required",
                self.to_string(),
            ),
            Self::Key(_) => Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-invalid",
                "Invalid Idempotency-Key header",
                self.to_string(),
            ),
            Self::Unidentified => Problem::new(
                StatusCode::FORBIDDEN,
                "caller-unidentified",
                "Caller not identified",
                "Idempotency keys are kept per caller, and this request carries no caller \
                 identity (JWT, authorizer, IAM or API key) that this function accepts.",
            ),
            Self::TooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                "Request body too large",
                self.to_string(),
            ),
            Self::Mismatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
                "This key was first used with a different method, path, query or body. \
                 Use a new key for a new request.",
            ),
            Self::InProgress { retry_after_secs } => Problem::new(
                StatusCode::CONFLICT,
                "request-in-progress",
                "Request already in progress",
                "A request with this Idempotency-Key is still being processed. \
                 Retry after the Retry-After delay to get its result.",
            )
            .with_retry_after(*retry_after_secs),
            Self::StoreUnavailable {
                retry_after_secs, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency-store-unavailable",
                "Service temporarily unavailable",
                "The request's outcome could not be recorded safely. \
                 Retry it with the same Idempotency-Key to get its result.",
            )
            .with_retry_after(*retry_after_secs),
            Self::Handler => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "handler-failed",
                "Internal error",
                "The request failed and was not recorded. Retry it with the same Idempotency-Key.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (IdempotencyError::Handler, 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.to_problem().status.as_u16(), status, "{error}");
        }
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
