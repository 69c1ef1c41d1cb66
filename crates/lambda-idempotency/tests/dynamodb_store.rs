//! `DynamoDbStore` against the DynamoDB emulator (moto, started by the
//! test on a free port): the public store contract suite, races of
//! independent SDK clients (also from tasks on several threads), an
//! outage, the item's TTL attribute, an unreadable item; and, through the
//! layer, the requests a new key and a replay cost, and the faults of a
//! real network (`testkit::http_fault`): a throttled claim, a lost reply, a
//! late reply.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use lambda_http::tower::{service_fn, Layer, ServiceExt};
use lambda_http::{Body, Error, Request, Response};
use lambda_idempotency::testing::{self, Backend};
use lambda_idempotency::{
    DynamoDbStore, IdempotencyLayer, IdempotencyStore, OwnerToken, StoreError,
};
use serde_json::json;
use testkit::fixtures::{assert_problem, event, replayed, with_header};
use testkit::http_fault::{HttpFault, HttpFaultProxy};
use testkit::proxy::socket_addr;
use testkit::DynamoDbServer;

const TABLE: &str = "idempotency";
/// Per attempt; three attempts per call, as `DynamoDbStore::from_env`.
const ATTEMPT: Duration = Duration::from_millis(500);

fn emulator() -> DynamoDbServer {
    let mut server = DynamoDbServer::start();
    server.create_table(TABLE);
    server
}

/// A store with its own SDK client on `endpoint`, configured as
/// `DynamoDbStore::from_env` configures one.
fn store(endpoint: &str) -> DynamoDbStore {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .http_client(DynamoDbStore::http_client())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(20))
                .with_max_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT)
                .operation_timeout(ATTEMPT * 3)
                .build(),
        )
        .build();
    DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(config), TABLE)
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_store_contract_and_gives_every_item_a_ttl() {
    let dynamodb = emulator();
    testing::contract(&store(&dynamodb.url())).await;

    let items = dynamodb.items(TABLE);
    assert!(!items.is_empty());
    for item in items {
        let number = |name: &str| item[name]["N"].as_str().and_then(|n| n.parse::<u64>().ok());
        let (expiry, ttl) = (number("expiry"), number("ttl"));
        assert!(
            expiry.is_some() && ttl == expiry.map(|ms| ms.div_ceil(1000)),
            "{item}"
        );
    }
}

#[tokio::test]
async fn one_claimant_wins_across_independent_sdk_clients() {
    let dynamodb = emulator();
    let clients: Vec<_> = (0..4).map(|_| store(&dynamodb.url())).collect();
    testing::race(&clients, testing::DEFAULT_LEASE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_claimant_wins_among_tasks_on_several_threads_each_with_its_own_client() {
    let dynamodb = emulator();
    for round in 0..5 {
        let key = testing::fresh_key();
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, start) = (store(&dynamodb.url()), Arc::clone(&start));
                let key = key.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    store
                        .claim(&key, &owner(), b"p", Duration::from_secs(10))
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if task.await.expect("task").expect("claim").is_none() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

#[tokio::test]
async fn an_emulator_outage_fails_every_call_in_time_and_the_store_recovers() {
    let mut dynamodb = emulator();
    let store = store(&dynamodb.url());
    testing::outage(&store, async |state| match state {
        Backend::Down => dynamodb.stop(),
        Backend::Up => dynamodb.restart(),
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_fails_every_call_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    testing::unreachable(&store(&format!("http://127.0.0.1:{port}"))).await;
}

#[tokio::test]
async fn an_item_the_store_cannot_read_is_reported_corrupt() {
    let dynamodb = emulator();
    let key = testing::fresh_key();
    let item = json!({"pk": {"S": key.as_str()}, "phase": {"S": "in_progress"}, "expiry": {"N": "99999999999999"}});
    dynamodb.put_raw(TABLE, item);
    let claimed = store(&dynamodb.url())
        .claim(&key, &owner(), b"p", Duration::from_secs(1))
        .await;
    assert!(
        matches!(claimed, Err(StoreError::Corrupt(_))),
        "{claimed:?}"
    );
}

#[tokio::test]
async fn a_replay_costs_one_request_and_a_new_key_two() {
    let dynamodb = emulator();
    let proxy = HttpFaultProxy::start(socket_addr(&dynamodb.url()));
    let (svc, calls) = counted(store(&proxy.url()));

    assert_eq!(send(&svc, "k-count").await.status(), 201);
    assert_eq!(proxy.requests(), 2, "the claim and the completion");
    assert!(replayed(&send(&svc, "k-count").await));
    assert_eq!(proxy.requests(), 3, "the replay is the claim alone");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_throttled_claim_is_tried_again_and_the_handler_runs_once() {
    let dynamodb = emulator();
    let proxy = HttpFaultProxy::start(socket_addr(&dynamodb.url()));
    proxy.inject(HttpFault::throttling());
    proxy.inject(HttpFault::throttling());
    let (svc, calls) = counted(store(&proxy.url()));

    let response = send(&svc, "k-throttled").await;

    assert_eq!(response.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        proxy.requests(),
        4,
        "two throttled attempts, the claim, the completion"
    );
}

#[tokio::test]
async fn a_claim_throttled_past_its_attempts_gets_503_without_running_the_handler() {
    let dynamodb = emulator();
    let proxy = HttpFaultProxy::start(socket_addr(&dynamodb.url()));
    let store = store(&proxy.url());
    for _ in 0..3 {
        proxy.inject(HttpFault::throttling());
    }
    let claimed = store
        .claim(
            &testing::fresh_key(),
            &owner(),
            b"p",
            Duration::from_secs(1),
        )
        .await;
    assert!(
        matches!(&claimed, Err(StoreError::Backend(e)) if e.to_string().contains("ThrottlingException")),
        "{claimed:?}"
    );

    for _ in 0..3 {
        proxy.inject(HttpFault::throttling());
    }
    let (svc, calls) = counted(store);
    assert_problem(&send(&svc, "k-throttled-out").await, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(
        dynamodb.items(TABLE).is_empty(),
        "no throttled write reached the table"
    );
}

#[tokio::test]
async fn a_lost_claim_reply_is_tried_again_and_the_handler_runs_once() {
    let dynamodb = emulator();
    let proxy = HttpFaultProxy::start(socket_addr(&dynamodb.url()));
    proxy.inject(HttpFault::LoseReply);
    let (svc, calls) = counted(store(&proxy.url()));

    let first = send(&svc, "k-lost").await;
    let again = send(&svc, "k-lost").await;

    assert_eq!(first.status(), 201);
    assert!(replayed(&again));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_claim_answered_too_late_gets_503_and_is_given_back_for_the_retry() {
    let dynamodb = emulator();
    let proxy = HttpFaultProxy::start(socket_addr(&dynamodb.url()));
    for _ in 0..3 {
        proxy.inject(HttpFault::Delay(ATTEMPT * 4));
    }
    let (svc, calls) = counted(store(&proxy.url()));

    assert_problem(&send(&svc, "k-late").await, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The late claim landed; the layer gives it back in the background.
    let mut retry = send(&svc, "k-late").await;
    for _ in 0..20 {
        if retry.status() == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        retry = send(&svc, "k-late").await;
    }
    assert_eq!(
        retry.status(),
        201,
        "the retry runs once the claim is given back"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn owner() -> OwnerToken {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    OwnerToken::from(format!("test-{}", N.fetch_add(1, Ordering::SeqCst)))
}

/// The layer over `store` (anonymous callers) around a handler that counts
/// its calls and answers `201`.
fn counted(
    store: DynamoDbStore,
) -> (
    impl lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error, Future: Send>
        + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler = service_fn(move |_req: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, Error>(
                Response::builder()
                    .status(201)
                    .body(Body::from("created"))?,
            )
        }
    });
    let scope = "anonymous"
        .parse::<lambda_idempotency::ApiGatewayScope>()
        .expect("scope");
    let layer = IdempotencyLayer::builder(store).scope(scope).build();
    (layer.layer(handler), calls)
}

/// A `POST /orders` with `key` and no Lambda deadline (the default lease).
async fn send<S>(svc: &S, key: &str) -> Response<Body>
where
    S: lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error> + Clone,
{
    let mut req = event("post_order.json");
    req.extensions_mut().remove::<lambda_http::Context>();
    svc.clone()
        .oneshot(with_header(req, "idempotency-key", key))
        .await
        .expect("the layer never fails")
}
