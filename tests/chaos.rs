//! The release binary run as AWS Lambda runs it: several instances, each a
//! process polling its own Runtime API (`testkit::harness`), against a real
//! `redis-server`, sometimes through a proxy that slows Redis down
//! (`testkit::proxy`). The scenarios here are what only many real processes
//! show: races between instances, processes dying, Redis going slow.
//!
//! The first tests are smoke tests of the harness itself.

use std::time::Duration;

use serde_json::Value;
use testkit::fixtures::rest_order_event;
use testkit::harness::{
    base64_decode, clf_time, function_env, release_binary, v2_event, Harness, Outcome,
};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The deadline each invocation gets, as a 3 s Lambda timeout would give.
const DEADLINE: Duration = Duration::from_secs(3);

/// Per-instance environment pointing the function at `redis_url`.
fn redis_env(redis_url: &str, instances: usize) -> Vec<Vec<(String, String)>> {
    vec![function_env(redis_url, &[]); instances]
}

/// A `POST /orders` for one Tea under `key`.
fn order(key: &str) -> Value {
    v2_event(
        "POST",
        "/orders",
        &[
            ("idempotency-key", key),
            ("content-type", "application/json"),
        ],
        Some(r#"{"product":"Tea","quantity":1}"#),
    )
}

fn new_key() -> String {
    format!("chaos-{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn harness_runs_the_release_binary_through_the_runtime_api() {
    let redis = RedisServer::start();
    let harness = Harness::start(
        &release_binary("idempotent-orders"),
        redis_env(&redis.url(), 2),
    )
    .await;
    let event = order(&new_key());

    let first = harness.invoke(0, &event, DEADLINE).await;
    let second = harness.invoke(1, &event, DEADLINE).await;

    let (first, second) = (first.response(), second.response());
    assert_eq!(first.status, 201, "{:?}\n{}", first.raw, harness.logs(0));
    assert!(!first.replayed());
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(second.status, 201, "{:?}\n{}", second.raw, harness.logs(1));
    assert!(
        second.replayed(),
        "instance 1 must replay: {:?}",
        second.headers
    );
    assert_eq!(first.body, second.body, "a replay is byte-identical");
    assert_eq!(first.json()["order"]["product"], "Tea");
    assert_eq!(redis.orders(), 1);
    for i in 0..harness.len() {
        assert!(harness.is_alive(i));
        assert!(harness.init_duration(i) > Duration::ZERO);
        assert!(harness.init_duration(i) < Duration::from_secs(10));
    }
}

#[tokio::test]
async fn a_rest_api_event_is_answered_in_its_shape_and_replayed_by_another_instance() {
    let redis = RedisServer::start();
    let harness = Harness::start(
        &release_binary("idempotent-orders"),
        redis_env(&redis.url(), 2),
    )
    .await;
    let event = rest_order_event(&new_key());

    let first = harness.invoke(0, &event, DEADLINE).await;
    let second = harness.invoke(1, &event, DEADLINE).await;

    let (first, second) = (first.response(), second.response());
    assert_eq!(first.status, 201, "{:?}\n{}", first.raw, harness.logs(0));
    // REST responses carry their headers as lists.
    assert!(
        first.raw["multiValueHeaders"].is_object(),
        "{:?}",
        first.raw
    );
    assert!(!first.replayed());
    assert!(second.replayed(), "{:?}", second.raw);
    assert_eq!(first.body, second.body);
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn invoke_all_releases_one_event_to_every_instance_at_once() {
    let redis = RedisServer::start();
    let harness = Harness::start(
        &release_binary("idempotent-orders"),
        redis_env(&redis.url(), 4),
    )
    .await;

    let outcomes = harness.invoke_all(&order(&new_key()), DEADLINE).await;

    assert_eq!(outcomes.len(), 4);
    let responses: Vec<_> = outcomes.iter().map(Outcome::response).collect();
    let fresh = responses
        .iter()
        .filter(|r| r.status == 201 && !r.replayed())
        .count();
    assert_eq!(
        fresh, 1,
        "exactly one instance runs the order: {responses:#?}"
    );
    // With exactly one fresh 201, the others are 409s or replayed 201s.
    for r in &responses {
        assert!(r.status == 201 || r.status == 409, "unexpected: {r:#?}");
    }
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn a_killed_instance_reports_died_and_the_others_keep_serving() {
    let redis = RedisServer::start();
    let harness = Harness::start(
        &release_binary("idempotent-orders"),
        redis_env(&redis.url(), 2),
    )
    .await;

    harness.kill(0).await;
    assert!(!harness.is_alive(0));
    assert!(
        harness
            .exit_status(0)
            .is_some_and(|s| s.contains("SIGKILL")),
        "{:?}",
        harness.exit_status(0)
    );
    let dead = tokio::time::timeout(
        Duration::from_secs(1),
        harness.invoke(0, &order(&new_key()), DEADLINE),
    )
    .await
    .expect("an invocation of a dead instance must not hang");
    assert!(matches!(dead, Outcome::Died), "{dead:?}");

    let alive = harness.invoke(1, &order(&new_key()), DEADLINE).await;
    assert_eq!(alive.status(), Some(201), "{alive:?}\n{}", harness.logs(1));
}

#[tokio::test]
async fn the_proxy_delays_redis_replies() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let harness = Harness::start(
        &release_binary("idempotent-orders"),
        redis_env(&proxy.url(), 1),
    )
    .await;

    let fast = harness.invoke(0, &order(&new_key()), DEADLINE).await;
    assert_eq!(fast.status(), Some(201), "{fast:?}\n{}", harness.logs(0));
    assert!(
        proxy.connections() >= 1,
        "the function connects through the proxy"
    );

    // Longer than the function's REDIS_TIMEOUT_MS (500 ms by default).
    proxy.set_delay(Duration::from_secs(2));
    let slow = harness.invoke(0, &order(&new_key()), DEADLINE).await;

    let Outcome::Response {
        response, elapsed, ..
    } = &slow
    else {
        panic!("expected a response, got {slow:?}\n{}", harness.logs(0));
    };
    assert_eq!(response.status, 503, "{response:#?}\n{}", harness.logs(0));
    assert!(response.header("retry-after").is_some(), "{response:#?}");
    assert!(
        *elapsed < Duration::from_millis(1500),
        "a slow Redis must be cut off by the timeout, took {elapsed:?}"
    );
}

#[tokio::test]
async fn the_runtime_api_answers_unknown_paths_404_and_reads_chunked_bodies() {
    // No Redis needed: the function connects lazily.
    let harness = Harness::start(&release_binary("idempotent-orders"), vec![vec![]]).await;
    let mut api = TcpStream::connect(harness.runtime_api_addr(0))
        .await
        .expect("connect to the Runtime API");

    // Two pipelined requests on one connection, the second one chunked
    // (with a chunk extension), as a client other than hyper might send.
    let requests = "GET /2018-06-01/runtime/nope HTTP/1.1\r\nhost: x\r\n\r\n\
        POST /2018-06-01/runtime/init/error HTTP/1.1\r\nhost: x\r\n\
        transfer-encoding: chunked\r\n\r\n3\r\nboo\r\n1;x=y\r\nm\r\n0\r\n\r\n";
    api.write_all(requests.as_bytes()).await.expect("send");
    let mut answers = Vec::new();
    let done = |a: &[u8]| a.ends_with(br#"{"status":"OK"}"#);
    while !done(&answers) {
        let read = tokio::time::timeout(Duration::from_secs(5), api.read_buf(&mut answers));
        let n = read.await.expect("answers within 5 s").expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answers));
    }
    let answers = String::from_utf8_lossy(&answers);
    assert!(answers.starts_with("HTTP/1.1 404 "), "{answers}");
    assert!(answers.contains("HTTP/1.1 202 "), "{answers}");
    assert_eq!(harness.init_error(0).as_deref(), Some("boom"));
    assert!(harness.is_alive(0));
}

#[test]
fn a_missing_lambda_variable_stops_start_up_with_its_name_not_a_panic() {
    let binary = release_binary("idempotent-orders");
    let lambda = [
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
        ("AWS_LAMBDA_FUNCTION_NAME", "f"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
    ];
    for missing in lambda.map(|(name, _)| name) {
        let output = std::process::Command::new(&binary)
            .env_clear()
            // The function connects to Redis lazily: nothing listens here.
            .env("REDIS_URL", "redis://127.0.0.1:9")
            .envs(lambda.iter().filter(|(name, _)| *name != missing).copied())
            .output()
            .expect("run the function");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{missing}: {stderr}");
        assert!(stderr.contains(missing), "{missing}: {stderr}");
        assert!(!stderr.contains("panicked"), "{missing}: {stderr}");
    }
}

#[test]
fn the_harness_decodes_base64_and_formats_api_gateway_times() {
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(base64_decode("Zg==").as_deref(), Some(&b"f"[..]));
    assert_eq!(base64_decode("Zm8=").as_deref(), Some(&b"fo"[..]));
    assert_eq!(base64_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
    assert_eq!(base64_decode("Zm9vYg").as_deref(), Some(&b"foob"[..]));
    assert_eq!(base64_decode("Zm9v!"), None);
    // requestContext.timeEpoch and .time of events/post_order.json
    assert_eq!(clf_time(1_732_838_401), "29/Nov/2024:00:00:01 +0000");
    assert_eq!(clf_time(951_782_400), "29/Feb/2000:00:00:00 +0000");
}
