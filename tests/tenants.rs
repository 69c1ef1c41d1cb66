//! Lambda tenant isolation, through the release binary: under tenant
//! isolation mode Lambda hands each invocation its tenant's id
//! (`Lambda-Runtime-Aws-Tenant-Id`, which the Runtime API harness sends
//! when asked), and no tenant may replay, or read, what another tenant's
//! caller made, whatever the caller scope (the anonymous one included).

use std::time::Duration;

use serde_json::{json, Value};
use testkit::harness::{function_env, order_event, release_binary, v2_event, Harness, Outcome};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

async fn function(redis: &RedisServer, extra: &[(&str, &str)]) -> Harness {
    let quiet = [&[("METRICS_NAMESPACE", "")], extra].concat();
    Harness::start(
        &release_binary("idempotent-orders"),
        vec![function_env(&redis.url(), &quiet)],
    )
    .await
}

/// `event` in `tenant`, or outside any tenant for `None`.
async fn send(lambda: &Harness, event: &Value, tenant: Option<&str>) -> Outcome {
    match tenant {
        Some(tenant) => lambda.invoke_in_tenant(0, event, DEADLINE, tenant).await,
        None => lambda.invoke(0, event, DEADLINE).await,
    }
}

/// The created order's id, and whether the answer was a replay.
async fn create(lambda: &Harness, event: &Value, tenant: Option<&str>) -> (String, bool) {
    let outcome = send(lambda, event, tenant).await;
    let response = outcome.response();
    assert_eq!(response.status, 201, "{tenant:?}: {:?}", response.raw);
    let id = response.json()["order"]["id"].as_str().unwrap().to_owned();
    (id, response.replayed())
}

/// The status of `GET /orders/{id}` by the caller `authorizer` names, in
/// `tenant`.
async fn read(lambda: &Harness, id: &str, authorizer: Option<&Value>, tenant: Option<&str>) -> u16 {
    let mut event = v2_event("GET", &format!("/orders/{id}"), &[], None);
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer.clone();
    }
    send(lambda, &event, tenant).await.response().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_in_two_tenants_runs_twice_and_each_tenant_reads_only_its_own_order() {
    let redis = RedisServer::start();
    // Anonymous callers allowed: all of them share one scope, but not
    // across tenants.
    let lambda = function(&redis, &[]).await;
    let event = order_event("k-tenants", TEA);

    let (a, a_replayed) = create(&lambda, &event, Some("tenant-a")).await;
    let (b, b_replayed) = create(&lambda, &event, Some("tenant-b")).await;
    let (a_again, a_again_replayed) = create(&lambda, &event, Some("tenant-a")).await;
    let (plain, _) = create(&lambda, &event, None).await;

    assert!(
        !a_replayed && !b_replayed,
        "each tenant's first request runs"
    );
    assert_ne!(a, b, "two tenants, two orders");
    assert!(a_again_replayed, "the same tenant replays");
    assert_eq!(a_again, a);
    assert!(plain != a && plain != b, "no tenant is a tenant of its own");
    assert_eq!(redis.orders(), 3);
    assert_eq!(redis.count("idempotency:*"), 3);

    for (id, owner) in [(&a, "tenant-a"), (&b, "tenant-b")] {
        assert_eq!(read(&lambda, id, None, Some(owner)).await, 200, "{owner}");
        for other in ["tenant-a", "tenant-b"].into_iter().filter(|t| *t != owner) {
            assert_eq!(read(&lambda, id, None, Some(other)).await, 404, "{other}");
        }
        assert_eq!(read(&lambda, id, None, None).await, 404, "no tenant");
    }
    assert_eq!(read(&lambda, &plain, None, Some("tenant-a")).await, 404);
    assert_eq!(read(&lambda, &plain, None, None).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identified_caller_in_two_tenants_is_two_callers_with_a_key_and_without() {
    let redis = RedisServer::start();
    let lambda = function(
        &redis,
        &[
            ("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key"),
            ("IDEMPOTENCY_KEY_REQUIRED", "false"),
        ],
    )
    .await;
    let alice = json!({ "jwt": { "claims": { "iss": "https://i.example", "sub": "alice" }, "scopes": [] } });
    let mut keyed = order_event("k-alice", TEA);
    keyed["requestContext"]["authorizer"] = alice.clone();
    let mut unkeyed = keyed.clone();
    unkeyed["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");

    let (in_a, _) = create(&lambda, &keyed, Some("tenant-a")).await;
    let (in_b, b_replayed) = create(&lambda, &keyed, Some("tenant-b")).await;
    assert!(!b_replayed);
    assert_ne!(in_a, in_b);
    let (unprotected, _) = create(&lambda, &unkeyed, Some("tenant-a")).await;
    for id in [&in_a, &unprotected] {
        assert_eq!(read(&lambda, id, Some(&alice), Some("tenant-a")).await, 200);
        assert_eq!(read(&lambda, id, Some(&alice), Some("tenant-b")).await, 404);
    }
    assert_eq!(
        read(&lambda, &in_b, Some(&alice), Some("tenant-b")).await,
        200
    );
    assert_eq!(redis.orders(), 3);
}
