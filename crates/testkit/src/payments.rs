//! What the crate's two payments examples (`payments`, on Redis, and
//! `payments_dynamodb`) must both do when run the way Lambda runs them:
//! one set of requests and checks, so that the two stay the same story.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{v2_event, Harness};

/// `POST /payments` of `42` with `key`, as the JWT subject `sub` (or
/// without identity).
pub fn payment_event(key: &str, sub: Option<&str>) -> Value {
    let mut event = v2_event(
        "POST",
        "/payments",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        Some("42"),
    );
    if let Some(sub) = sub {
        event["requestContext"]["authorizer"] = json!({ "jwt": { "claims": { "iss": "https://issuer.example", "sub": sub }, "scopes": [] } });
    }
    event
}

/// On instance 0: a payment, the same payment again, and the same key
/// without identity. The first is taken (201), the second is its replay
/// (same body, `Idempotent-Replayed`), the third is refused (403: the
/// examples accept no anonymous callers by default).
pub async fn assert_taken_once_and_replayed(lambda: &Harness) {
    let deadline = Duration::from_secs(5);
    let first = lambda
        .invoke(0, &payment_event("pay-1", Some("alice")), deadline)
        .await;
    let again = lambda
        .invoke(0, &payment_event("pay-1", Some("alice")), deadline)
        .await;
    let stranger = lambda
        .invoke(0, &payment_event("pay-1", None), deadline)
        .await;

    assert_eq!(first.response().status, 201, "{:?}", first.response().raw);
    assert!(!first.response().replayed());
    assert!(again.response().replayed());
    assert_eq!(again.response().body, first.response().body);
    assert_eq!(
        stranger.response().status,
        403,
        "no identity, no anonymous mode"
    );
}
