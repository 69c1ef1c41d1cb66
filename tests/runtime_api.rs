//! The runtime loop at the edges of the Runtime API, through the release
//! binary: the harness's Runtime API misbehaves once (`Fault`) and the
//! function must do what `lambda_runtime` does. A `204` on `/next` (as
//! `cargo lambda watch` answers when idle) is skipped; a `/next` call that
//! fails is asked again when several loops run, and ends a lone loop (and
//! so the process) with the error; a refused post is logged and the
//! process serves on; a post that fails ends the process, but only after
//! the invocation's log-and-metric line is written.

use std::time::Duration;

use serde_json::Value;
use testkit::harness::{
    function_env as env, order_event as order, release_binary, Fault, Harness, Outcome,
};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;
const JSON_AT_INFO: [(&str, &str); 3] = [
    ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ("RUST_LOG", "info"),
];

/// One process of the release binary, JSON logs at INFO, plus `vars`.
async fn start(redis: &RedisServer, vars: &[(&str, &str)]) -> Harness {
    let mut all = JSON_AT_INFO.to_vec();
    all.extend_from_slice(vars);
    Harness::start(
        &release_binary("idempotent-orders"),
        vec![env(&redis.url(), &all)],
    )
    .await
}

/// The JSON lines of `logs` logged under `request_id`.
fn lines_of(logs: &str, request_id: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["requestId"] == request_id)
        .collect()
}

/// Whether `logs` hold the outcome line of `request_id` with `status` (an
/// EMF line with metrics on, as here, has its fields at the top).
fn has_outcome_line(logs: &str, request_id: &str, status: u64) -> bool {
    lines_of(logs, request_id)
        .iter()
        .any(|line| line["outcome"].is_string() && line["status"] == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_content_answer_to_next_is_skipped_and_the_next_event_is_served() {
    let redis = RedisServer::start();
    let lambda = start(&redis, &[]).await;
    lambda.disturb(0, Fault::NextNoContent);

    let answered = lambda.invoke(0, &order("after-a-204", TEA), DEADLINE).await;

    assert_eq!(
        answered.status(),
        Some(201),
        "{answered:?}\n{}",
        lambda.logs(0)
    );
    assert!(lambda.is_alive(0), "{}", lambda.logs(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_loops_a_failed_next_call_is_asked_again_and_every_slot_serves_on() {
    let redis = RedisServer::start();
    let lambda = start(&redis, &[("AWS_LAMBDA_MAX_CONCURRENCY", "2")]).await;
    lambda.wait_parked(0, 2).await;
    let connections = lambda.api_connections(0);
    lambda.disturb(0, Fault::NextDropped);

    // The dropped call's loop asks again, on a new connection: both slots
    // are back in /next.
    let reconnected = async {
        while lambda.api_connections(0) == connections {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reconnected)
        .await
        .unwrap_or_else(|_| panic!("no new /next call after the drop:\n{}", lambda.logs(0)));
    lambda.wait_parked(0, 2).await;
    let events = ["slot-a", "slot-b"].map(|key| (0, order(key, TEA)));
    let answered = lambda.invoke_many(events.to_vec(), DEADLINE).await;

    for outcome in &answered {
        assert_eq!(
            outcome.status(),
            Some(201),
            "{outcome:?}\n{}",
            lambda.logs(0)
        );
    }
    let logs = lambda.logs(0);
    assert!(
        logs.contains("did not answer /next; asking again"),
        "{logs}"
    );
    assert!(lambda.is_alive(0), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_loop_whose_next_call_fails_ends_the_process_with_the_error() {
    let redis = RedisServer::start();
    let lambda = start(&redis, &[]).await;
    lambda.disturb(0, Fault::NextDropped);

    let status = lambda.wait_exit(0).await;

    let logs = lambda.logs(0);
    assert_eq!(status, "exit status: 1", "{logs}");
    // The error `main` returned, as Rust prints it, and no panic.
    assert!(
        logs.lines().any(|line| line.starts_with("Error: ")),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_answer_is_logged_with_its_status_and_the_process_serves_on() {
    let redis = RedisServer::start();
    let lambda = start(&redis, &[]).await;
    lambda.disturb(0, Fault::PostRefused(410));

    let refused = lambda.invoke(0, &order("refused", TEA), DEADLINE).await;
    let next = lambda
        .invoke(0, &order("after-refused", TEA), DEADLINE)
        .await;

    assert_eq!(next.status(), Some(201), "{next:?}\n{}", lambda.logs(0));
    let logs = lambda.logs(0);
    let id = refused
        .request_id()
        .expect("the refused answer was recorded");
    let refusal = lines_of(&logs, id)
        .into_iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line for {id}:\n{logs}"));
    assert_eq!(refusal["fields"]["status"], "410 Gone", "{refusal}");
    assert!(has_outcome_line(&logs, id, 201), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_answer_cannot_be_posted_its_line_is_written_before_the_process_ends() {
    let redis = RedisServer::start();
    let lambda = start(&redis, &[]).await;
    lambda.disturb(0, Fault::PostDropped);

    let lost = lambda
        .invoke(0, &order("post-dropped", TEA), DEADLINE)
        .await;
    let status = lambda.wait_exit(0).await;

    let logs = lambda.logs(0);
    let Outcome::Response { request_id, .. } = &lost else {
        panic!("the harness records the post before dropping it: {lost:?}\n{logs}");
    };
    assert_eq!(status, "exit status: 1", "{logs}");
    assert!(has_outcome_line(&logs, request_id, 201), "{logs}");
}
