//! The crate's example function (`examples/payments.rs`), built in release
//! and run the way Lambda runs it, against a real `redis-server`: a new
//! payment, its replay, a caller without identity, and the payment written
//! once under the request's execution id.

use std::time::Duration;

use serde_json::json;
use testkit::harness::{build_release, v2_event, Harness};
use testkit::RedisServer;

fn payment(key: &str, sub: Option<&str>) -> serde_json::Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_takes_a_payment_once_and_replays_it() {
    let binary = build_release(&["-p", "lambda-idempotency", "--example", "payments"])
        .join("examples/payments");
    let redis = RedisServer::start();
    let env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    let lambda = Harness::start(&binary, vec![env]).await;
    let deadline = Duration::from_secs(3);

    let first = lambda
        .invoke(0, &payment("pay-1", Some("alice")), deadline)
        .await;
    let again = lambda
        .invoke(0, &payment("pay-1", Some("alice")), deadline)
        .await;
    let stranger = lambda.invoke(0, &payment("pay-1", None), deadline).await;

    assert_eq!(first.response().status, 201, "{:?}", first.response().raw);
    assert!(!first.response().replayed());
    assert!(again.response().replayed());
    assert_eq!(again.response().body, first.response().body);
    assert_eq!(
        stranger.response().status,
        403,
        "no identity, no anonymous mode"
    );
    assert_eq!(redis.count("payments:*"), 1);
}
