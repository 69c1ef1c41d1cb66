//! Which handler responses become the stored, replayed answer for a key.
//!
//! The default follows Stripe: a result is stored once the endpoint *began
//! executing*, so a request refused by validation, or a transient failure,
//! stores nothing and the client can fix and resend it under the same key.
//! - `2xx` and final `4xx` are stored;
//! - `1xx`, `3xx`, `5xx` and the retryable `408`, `409`, `425`, `429` are
//!   not (the claim is released and a retry runs again);
//! - a response carrying [`NotExecuted`] in its extensions is not stored:
//!   the handler says it refused the request before doing anything.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

/// Response extension by which a handler says "I refused this request
/// before doing anything": the layer releases the key instead of storing
/// the response, so a corrected retry with the same key runs.
///
/// ```
/// use lambda_http::{Body, Response};
/// use lambda_idempotency::NotExecuted;
///
/// let mut refused = Response::builder().status(415).body(Body::Empty).unwrap();
/// refused.extensions_mut().insert(NotExecuted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotExecuted;

/// Decides whether a handler's response is stored and replayed.
///
/// Implemented for closures, so a custom rule can wrap the default:
///
/// ```
/// use lambda_http::{Body, Response};
/// use lambda_idempotency::{DefaultStoreRule, StoreRule};
///
/// // Also store 503s from a downstream that fails permanently.
/// let rule = |response: &Response<Body>| {
///     DefaultStoreRule.should_store(response) || response.status() == 503
/// };
/// # let _ = rule;
/// ```
pub trait StoreRule: Send + Sync + 'static {
    /// Whether `response` is the final answer for its key.
    fn should_store(&self, response: &Response<Body>) -> bool;
}

impl<F> StoreRule for F
where
    F: Fn(&Response<Body>) -> bool + Send + Sync + 'static,
{
    fn should_store(&self, response: &Response<Body>) -> bool {
        self(response)
    }
}

/// The default rule (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultStoreRule;

impl StoreRule for DefaultStoreRule {
    fn should_store(&self, response: &Response<Body>) -> bool {
        is_final(response.status()) && response.extensions().get::<NotExecuted>().is_none()
    }
}

/// `2xx`, and `4xx` except the retryable ones.
fn is_final(status: StatusCode) -> bool {
    status.is_success()
        || (status.is_client_error() && !matches!(status.as_u16(), 408 | 409 | 425 | 429))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16) -> Response<Body> {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
    }

    #[test]
    fn successes_and_final_client_errors_are_stored() {
        for status in [200, 201, 204, 400, 404, 422] {
            assert!(DefaultStoreRule.should_store(&response(status)), "{status}");
        }
    }

    #[test]
    fn server_errors_redirects_and_retryable_client_errors_are_not() {
        for status in [101, 302, 408, 409, 425, 429, 500, 502, 503] {
            assert!(
                !DefaultStoreRule.should_store(&response(status)),
                "{status}"
            );
        }
    }

    #[test]
    fn a_response_marked_not_executed_is_not_stored() {
        let mut refused = response(422);
        refused.extensions_mut().insert(NotExecuted);
        assert!(!DefaultStoreRule.should_store(&refused));
    }
}
