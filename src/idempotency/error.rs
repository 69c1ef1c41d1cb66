//! Errors of the idempotency layer and their single mapping to HTTP.
//!
//! Everything the layer can answer on its own (as opposed to passing the
//! handler's response through) is an [`IdempotencyError`]; `to_problem` is
//! the one `match` from error to status and problem+json body.

use lambda_http::http::StatusCode;
use thiserror::Error;

use super::key::KeyError;
use crate::problem::Problem;
use crate::redis_conn::RedisCallError;

/// A failure talking to the idempotency store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Redis failed or did not answer within the command timeout.
    #[error("idempotency store: {0}")]
    Redis(#[from] RedisCallError),
    /// The invocation's deadline came before the store's answer.
    #[error("no answer before the invocation deadline")]
    Deadline,
    /// The claim's answer arrived after its lease had (nearly) expired.
    #[error("claim answered after {0:?}, too late to trust its lease")]
    LeaseExpired(std::time::Duration),
    /// The store answered something this version cannot read.
    #[error("store returned an unreadable record: {0}")]
    Corrupt(String),
}

/// A request the layer answers itself.
#[derive(Debug, Error)]
pub enum IdempotencyError {
    /// The key header is missing or invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key was already used with a different request.
    #[error("the Idempotency-Key was already used with a different request")]
    Mismatch,
    /// The first request with this key is still running.
    #[error("a request with this Idempotency-Key is still being processed")]
    InProgress {
        /// Seconds until the lease runs out.
        retry_after_secs: u64,
    },
    /// The store could not be reached before the handler ran.
    #[error("the idempotency store is unavailable")]
    StoreUnavailable {
        /// Seconds the client should wait.
        retry_after_secs: u64,
        /// The underlying failure (logged, never sent to the client).
        #[source]
        source: StoreError,
    },
    /// The handler failed or panicked; the key was released.
    #[error("the request handler failed")]
    Handler,
}

impl IdempotencyError {
    /// The problem+json response for this error.
    pub fn to_problem(&self) -> Problem {
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
                format!(
                    "A request with this Idempotency-Key is still being processed. \
                     Retry after {retry_after_secs} s to get its result."
                ),
            )
            .with_retry_after(*retry_after_secs),
            Self::StoreUnavailable {
                retry_after_secs, ..
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency-store-unavailable",
                "Service temporarily unavailable",
                "The request was not processed. Retry it with the same Idempotency-Key.",
            )
            .with_retry_after(*retry_after_secs),
            Self::Handler => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal error",
                "The request failed and was not recorded. Retry it with the same Idempotency-Key.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (IdempotencyError::Key(KeyError::Missing), 400),
            (IdempotencyError::Key(KeyError::TooLong(300)), 400),
            (IdempotencyError::Mismatch, 422),
            (
                IdempotencyError::InProgress {
                    retry_after_secs: 4,
                },
                409,
            ),
            (
                IdempotencyError::StoreUnavailable {
                    retry_after_secs: 1,
                    source: StoreError::Redis(RedisCallError::Timeout(Duration::from_millis(5))),
                },
                503,
            ),
            (IdempotencyError::Handler, 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.to_problem().status().as_u16(), status, "{error}");
        }
    }

    #[test]
    fn store_failure_details_stay_out_of_the_body() {
        let error = IdempotencyError::StoreUnavailable {
            retry_after_secs: 1,
            source: StoreError::Corrupt("redis://:hunter2@cache".to_owned()),
        };
        let response = error.to_problem().into_response();
        let body = std::str::from_utf8(response.body()).unwrap().to_owned();
        assert!(!body.contains("hunter2"));
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
