//! The `ERROR` line of a `503` from the idempotency store, through the
//! release binary: it says what happened on the path that wrote it. A
//! store that fails before the handler means the handler did not run; a
//! completion that could not be confirmed (`REDIS_MIN_REPLICAS`) means the
//! handler ran and its response was not sent.

use std::time::Duration;

use serde_json::Value;
use testkit::fault_proxy::{At, FaultProxy};
use testkit::harness::{function_env, order_event, release_binary, Harness};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

async fn function(redis_url: &str, extra: &[(&str, &str)]) -> Harness {
    let json = [("AWS_LAMBDA_LOG_FORMAT", "JSON"), ("METRICS_NAMESPACE", "")];
    let vars = [&json[..], extra].concat();
    Harness::start(
        &release_binary("idempotent-orders"),
        vec![function_env(redis_url, &vars)],
    )
    .await
}

/// The messages of the `ERROR` lines in `logs`.
fn errors(logs: &str) -> Vec<String> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "ERROR")
        .map(|line| line["fields"]["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_before_the_handler_logs_that_the_handler_did_not_run() {
    // Nothing listens there: the claim fails.
    let lambda = function("redis://127.0.0.1:9", &[]).await;
    let outcome = lambda
        .invoke(0, &order_event("k-down", TEA), DEADLINE)
        .await;
    assert_eq!(outcome.response().status, 503);
    let errors = errors(&lambda.logs(0));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("did not run"), "{errors:?}");
    assert!(!errors[0].contains("result"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_completion_logs_that_the_handler_ran_and_its_response_was_not_sent() {
    let primary = RedisServer::start();
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let _replica = RedisServer::replica_of_port(link.port());
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let lambda = function(
        &proxy.url(),
        &[("REDIS_MIN_REPLICAS", "1"), ("REDIS_TIMEOUT_MS", "500")],
    )
    .await;
    // The claim is acknowledged; the replica falls behind before the order
    // is written, so the completion's WAIT is never satisfied.
    let is_order_write = |c: &testkit::fault_proxy::Command| {
        c.name() == "SET" && c.key().is_some_and(|key| key.starts_with("orders:"))
    };
    let mut writes = proxy.hold_at(At::matching(is_order_write));
    let cut_off = async {
        writes.wait(DEADLINE).await.expect("the order write");
        link.set_delay(Duration::MAX);
        proxy.release();
    };
    let event = order_event("k-unconfirmed", TEA);
    let (outcome, ()) = tokio::join!(lambda.invoke(0, &event, DEADLINE), cut_off);
    assert_eq!(outcome.response().status, 503);
    assert_eq!(primary.orders(), 1, "the handler ran");
    let errors = errors(&lambda.logs(0));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("the handler ran"), "{errors:?}");
    assert!(errors[0].contains("not sent"), "{errors:?}");
}
