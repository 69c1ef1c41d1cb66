//! The axum example (`examples/axum_payments.rs`), built in release and run
//! the way Lambda runs it, against a real `redis-server`: the layer covers
//! `POST /payments` inside the `Router` (a payment, its replay, a caller
//! without identity, duplicates racing on two instances), its handler reads
//! the Lambda context and the request context through the layer, and
//! `GET /health` is left alone.

use std::time::Duration;

use testkit::harness::{build_release, v2_event, Harness};
use testkit::payments::{assert_taken_once_and_replayed, payment_event};
use testkit::RedisServer;

async fn start(redis: &RedisServer, instances: usize) -> Harness {
    let binary = build_release(&[
        "-p",
        "lambda-idempotency",
        "--features",
        "axum",
        "--example",
        "axum_payments",
    ])
    .join("examples/axum_payments");
    let env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    Harness::start(&binary, vec![env; instances]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_on_an_axum_route_takes_a_payment_once_and_replays_it() {
    let redis = RedisServer::start();
    let lambda = start(&redis, 1).await;
    assert_taken_once_and_replayed(&lambda).await;
    assert_eq!(redis.count("payments:*"), 1);
    // The payment's record is the layer's, under the route it covers.
    assert_eq!(redis.count("idempotency:*"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_behind_the_layer_reads_the_lambda_context_and_the_request_context() {
    let redis = RedisServer::start();
    let lambda = start(&redis, 1).await;
    let deadline = Duration::from_secs(5);
    let event = payment_event("ctx-1", Some("alice"));
    let first = lambda.invoke(0, &event, deadline).await;
    let response = first.response();
    assert_eq!(response.status, 201, "{:?}", response.raw);
    assert!(first.request_id().is_some_and(|id| !id.is_empty()));
    assert_eq!(response.header("x-lambda-request-id"), first.request_id());
    assert_eq!(
        response.header("x-api-request-id"),
        event["requestContext"]["requestId"].as_str()
    );

    // The replay is the first invocation's response, its ids included.
    let again = lambda
        .invoke(0, &payment_event("ctx-1", Some("alice")), deadline)
        .await;
    assert!(again.response().replayed());
    assert_ne!(again.request_id(), first.request_id());
    assert_eq!(
        again.response().header("x-lambda-request-id"),
        first.request_id()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_racing_on_two_instances_take_one_payment() {
    let redis = RedisServer::start();
    let lambda = start(&redis, 2).await;
    for round in 0..20 {
        let event = payment_event(&format!("race-{round}"), Some("alice"));
        let answers = lambda.invoke_all(&event, Duration::from_secs(5)).await;
        let statuses: Vec<_> = answers.iter().map(|a| a.response().status).collect();
        let fresh = answers
            .iter()
            .filter(|a| a.response().status == 201 && !a.response().replayed())
            .count();
        assert_eq!(fresh, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 409),
            "round {round}: {statuses:?}"
        );
    }
    assert_eq!(redis.count("payments:*"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_after_the_layer_is_not_covered() {
    let redis = RedisServer::start();
    let lambda = start(&redis, 1).await;
    // No key and no identity: the layer would answer 400 or 403.
    let health = v2_event("GET", "/health", &[], None);
    let answer = lambda.invoke(0, &health, Duration::from_secs(5)).await;
    assert_eq!(answer.response().status, 200, "{:?}", answer.response().raw);
    assert_eq!(answer.response().body, b"ok");
    let unkeyed = v2_event(
        "POST",
        "/payments",
        &[("content-type", "application/json")],
        Some("42"),
    );
    let answer = lambda.invoke(0, &unkeyed, Duration::from_secs(5)).await;
    assert_eq!(
        answer.response().status,
        400,
        "the covered route needs a key"
    );
    assert_eq!(redis.count("idempotency:*"), 0);
}
