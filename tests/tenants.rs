//! Lambda tenant isolation, through the release binary: under tenant
//! isolation mode Lambda hands each invocation its tenant's id
//! (`Lambda-Runtime-Aws-Tenant-Id`, which the Runtime API harness sends
//! when asked), and no tenant may replay, or read, what another tenant's
//! caller made, whatever the caller scope (the anonymous one included) and
//! whichever identity source names the caller.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::harness::{
    as_rest_event, function_env, order_event, release_binary, v2_event, Harness, Outcome,
};
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

/// A caller named by one identity source of the default scope.
struct Caller {
    /// The source, and the payload it is read from.
    source: &'static str,
    /// Sent through a REST API (payload 1.0) rather than an HTTP API (2.0).
    rest: bool,
    /// Names the caller on an event of that payload.
    identify: fn(&mut Value),
}

impl Caller {
    /// `event`, an HTTP API event, as this caller sends it.
    fn sends(&self, event: &Value) -> Value {
        let mut event = match self.rest {
            true => as_rest_event(event).expect("an HTTP API event"),
            false => event.clone(),
        };
        (self.identify)(&mut event);
        event
    }
}

const ALICE_JWT: Caller = Caller {
    source: "jwt",
    rest: false,
    identify: |event| {
        event["requestContext"]["authorizer"] = json!({ "jwt": { "claims": { "iss": "https://i.example", "sub": "alice" }, "scopes": [] } });
    },
};

const ALICE_ARN: &str = "arn:aws:iam::123456789012:user/alice";

/// The sources besides `jwt`, each in every payload it is read from.
const OTHER_CALLERS: [Caller; 5] = [
    Caller {
        source: "iam, HTTP API",
        rest: false,
        identify: |event| {
            event["requestContext"]["authorizer"] = json!({ "iam": { "userArn": ALICE_ARN } });
        },
    },
    Caller {
        source: "iam, REST",
        rest: true,
        identify: |event| event["requestContext"]["identity"]["userArn"] = ALICE_ARN.into(),
    },
    Caller {
        source: "authorizer, HTTP API Lambda authorizer",
        rest: false,
        identify: |event| {
            event["requestContext"]["authorizer"] = json!({ "lambda": { "userId": "alice" } });
        },
    },
    Caller {
        source: "authorizer, REST Lambda authorizer",
        rest: true,
        identify: |event| {
            event["requestContext"]["authorizer"] = json!({ "principalId": "alice" });
        },
    },
    Caller {
        source: "api-key, REST",
        rest: true,
        identify: |event| event["requestContext"]["identity"]["apiKeyId"] = "key-alice".into(),
    },
];

/// The status of `GET /orders/{id}` by `caller` (an anonymous one for
/// `None`), in `tenant`.
async fn read(lambda: &Harness, id: &str, caller: Option<&Caller>, tenant: Option<&str>) -> u16 {
    let mut event = v2_event("GET", &format!("/orders/{id}"), &[], None);
    if let Some(caller) = caller {
        event = caller.sends(&event);
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
    let alice = Some(&ALICE_JWT);
    let keyed = ALICE_JWT.sends(&order_event("k-alice", TEA));
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
        assert_eq!(read(&lambda, id, alice, Some("tenant-a")).await, 200);
        assert_eq!(read(&lambda, id, alice, Some("tenant-b")).await, 404);
    }
    assert_eq!(read(&lambda, &in_b, alice, Some("tenant-b")).await, 200);
    assert_eq!(redis.orders(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_of_every_other_identity_source_in_two_tenants_is_two_callers() {
    let redis = RedisServer::start();
    // The default scope: no anonymous callers, so a request whose caller
    // went unread would be refused, not served under a shared scope.
    let lambda = function(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    )
    .await;
    for (n, caller) in OTHER_CALLERS.iter().enumerate() {
        let who = caller.source;
        let event = caller.sends(&order_event(&format!("k-caller-{n}"), TEA));
        let (in_a, a_replayed) = create(&lambda, &event, Some("tenant-a")).await;
        let (in_b, b_replayed) = create(&lambda, &event, Some("tenant-b")).await;
        let (again, again_replayed) = create(&lambda, &event, Some("tenant-a")).await;
        assert!(!a_replayed && !b_replayed, "{who}: each tenant's runs");
        assert_ne!(in_a, in_b, "{who}: two tenants, two orders");
        assert!(again_replayed && again == in_a, "{who}: one tenant replays");

        for (id, owner, other) in [
            (&in_a, "tenant-a", "tenant-b"),
            (&in_b, "tenant-b", "tenant-a"),
        ] {
            assert_eq!(
                read(&lambda, id, Some(caller), Some(owner)).await,
                200,
                "{who}"
            );
            assert_eq!(
                read(&lambda, id, Some(caller), Some(other)).await,
                404,
                "{who}"
            );
        }
    }
    assert_eq!(redis.orders(), 2 * OTHER_CALLERS.len());
}
