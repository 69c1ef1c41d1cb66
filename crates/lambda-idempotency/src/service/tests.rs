//! The request state machine, fast: the layer over [`MemoryStore`] with
//! tokio's clock paused, around handlers that count their calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer, ServiceExt};
use lambda_http::{Body, Error, Request, Response};

use crate::{ApiGatewayScope, ExecutionId, IdempotencyLayer, MemoryStore, NotExecuted, Settings};

/// A v2 event for `POST /orders` with `key` (if any) and `body`.
fn request(key: Option<&str>, body: &str) -> Request {
    let key = key.map_or(String::new(), |k| format!(r#","idempotency-key":"{k}""#));
    let event = format!(
        r#"{{"version":"2.0","routeKey":"$default","rawPath":"/orders","rawQueryString":"",
        "headers":{{"content-type":"application/json"{key}}},"requestContext":{{"accountId":"1",
        "apiId":"a","domainName":"d","domainPrefix":"d","http":{{"method":"POST","path":"/orders",
        "protocol":"HTTP/1.1","sourceIp":"1.2.3.4","userAgent":"t"}},"requestId":"r",
        "routeKey":"$default","stage":"$default","time":"t","timeEpoch":0}},
        "isBase64Encoded":false,"body":{}}}"#,
        serde_json::to_string(body).unwrap()
    );
    lambda_http::request::from_str(&event).expect("test event parses")
}

fn keyed(key: &str) -> Request {
    request(Some(key), r#"{"a":1}"#)
}

type Reply = fn(usize) -> Response<Body>;

fn created(call: usize) -> Response<Body> {
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Body::Text(format!(r#"{{"call":{call}}}"#)))
        .unwrap()
}

/// What the handler saw: calls and the execution ids it was handed.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    ids: Mutex<Vec<Option<ExecutionId>>>,
}

fn anonymous() -> ApiGatewayScope {
    "anonymous".parse().unwrap()
}

/// The layer (anonymous scope, `settings`) around a handler that sleeps
/// `delay`, then answers `reply(call number)`.
fn layered(
    store: Arc<MemoryStore>,
    settings: Settings,
    delay: Duration,
    reply: Reply,
) -> (
    impl lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error, Future: Send>
        + Clone,
    Arc<Seen>,
) {
    let seen = Arc::new(Seen::default());
    let witness = Arc::clone(&seen);
    let handler = service_fn(move |req: Request| {
        let n = witness.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let id = req.extensions().get::<ExecutionId>().copied();
        witness.ids.lock().unwrap().push(id);
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Error>(reply(n))
        }
    });
    let layer = IdempotencyLayer::builder(SharedStore::new(store))
        .settings(settings)
        .scope(anonymous())
        .build();
    (layer.layer(handler), seen)
}

/// Lets a test keep a handle on the store the layer owns, or make every
/// completion fail.
struct SharedStore {
    inner: Arc<MemoryStore>,
    /// When set, every completion fails so, and is counted.
    failing_completion: Option<(Failing, Arc<AtomicUsize>)>,
    /// What [`crate::IdempotencyStore::confirms_writes`] answers.
    confirms_writes: bool,
}

/// How a completion fails.
#[derive(Clone, Copy)]
enum Failing {
    /// At once, with this error.
    With(fn() -> crate::StoreError),
    /// Never answering.
    Hanging,
}

impl SharedStore {
    fn new(inner: Arc<MemoryStore>) -> Self {
        Self {
            inner,
            failing_completion: None,
            confirms_writes: false,
        }
    }
}

impl crate::IdempotencyStore for SharedStore {
    async fn claim(
        &self,
        key: &crate::StoreKey,
        owner: &crate::OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<Option<crate::StoredRecord>, crate::StoreError> {
        self.inner.claim(key, owner, payload, lease).await
    }

    async fn complete(
        &self,
        key: &crate::StoreKey,
        owner: &crate::OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> Result<bool, crate::StoreError> {
        if let Some((failing, count)) = &self.failing_completion {
            count.fetch_add(1, Ordering::SeqCst);
            return match failing {
                Failing::With(error) => Err(error()),
                Failing::Hanging => std::future::pending().await,
            };
        }
        self.inner.complete(key, owner, payload, retention).await
    }

    async fn release(
        &self,
        key: &crate::StoreKey,
        owner: &crate::OwnerToken,
    ) -> Result<bool, crate::StoreError> {
        self.inner.release(key, owner).await
    }

    async fn renew(
        &self,
        key: &crate::StoreKey,
        owner: &crate::OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<bool, crate::StoreError> {
        self.inner.renew(key, owner, payload, lease).await
    }

    fn confirms_writes(&self) -> bool {
        self.confirms_writes
    }
}

async fn send<S>(svc: &S, req: Request) -> Response<Body>
where
    S: lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error> + Clone,
{
    svc.clone()
        .oneshot(req)
        .await
        .expect("the layer never fails")
}

fn replayed(response: &Response<Body>) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

fn problem_type(response: &Response<Body>) -> String {
    let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    json["type"].as_str().unwrap().to_owned()
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

#[tokio::test(start_paused = true)]
async fn a_retry_with_the_same_key_and_body_replays_the_first_answer_byte_for_byte() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, created);
    let first = send(&svc, keyed("k")).await;
    let retry = send(&svc, keyed("k")).await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first) && replayed(&retry));
    assert_eq!(first.body(), retry.body());
    assert_eq!(retry.headers()["content-type"], "application/json");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_with_same_key_execute_once_and_the_others_get_409_with_a_short_hint() {
    let (svc, seen) = layered(
        store(),
        Settings::default(),
        Duration::from_secs(5),
        created,
    );
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, keyed("k")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let duplicate = send(&svc, keyed("k")).await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(duplicate.headers()["retry-after"], "1");
    assert!(problem_type(&duplicate).ends_with("request-in-progress"));
    assert_eq!(first.await.unwrap().status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_with_a_different_body_is_refused_with_422() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, created);
    send(&svc, keyed("k")).await;
    let changed = send(&svc, request(Some("k"), r#"{"a":2}"#)).await;
    assert_eq!(changed.status(), 422);
    assert!(problem_type(&changed).ends_with("idempotency-key-reused"));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_live_handler_keeps_its_lease_past_the_lease_length() {
    let settings = Settings {
        lease: Duration::from_secs(1),
        ..Settings::default()
    };
    let memory = store();
    let (svc, seen) = layered(
        Arc::clone(&memory),
        settings,
        Duration::from_secs(10),
        created,
    );
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, keyed("slow")).await }
    });
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let retry = send(&svc, keyed("slow")).await;
        assert_eq!(
            retry.status(),
            409,
            "the lease lapsed while the handler ran"
        );
    }
    assert_eq!(first.await.unwrap().status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert!(replayed(&send(&svc, keyed("slow")).await));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_at_one_key_gets_the_same_execution_id_and_other_keys_another() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, |n| {
        let status = if n < 3 { 503 } else { 201 };
        Response::builder()
            .status(status)
            .body(Body::Empty)
            .unwrap()
    });
    send(&svc, keyed("k")).await;
    send(&svc, keyed("k")).await;
    send(&svc, keyed("k")).await;
    send(&svc, keyed("other")).await;
    let ids = seen.ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(Option::is_some));
    assert!(ids[0] == ids[1] && ids[1] == ids[2]);
    assert_ne!(ids[2], ids[3]);
}

#[tokio::test(start_paused = true)]
async fn a_response_marked_not_executed_is_not_stored_so_a_fixed_retry_runs() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, |n| {
        if n == 1 {
            let mut refused = Response::builder().status(415).body(Body::Empty).unwrap();
            refused.extensions_mut().insert(NotExecuted);
            refused
        } else {
            created(n)
        }
    });
    assert_eq!(send(&svc, keyed("k")).await.status(), 415);
    let fixed = send(&svc, request(Some("k"), r#"{"a":"fixed"}"#)).await;
    assert_eq!(fixed.status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_refused_with_413_before_anything_runs_or_is_stored() {
    let memory = store();
    let settings = Settings {
        max_request_bytes: 10,
        ..Settings::default()
    };
    let (svc, seen) = layered(Arc::clone(&memory), settings, Duration::ZERO, created);
    let big = send(&svc, request(Some("k"), &"x".repeat(11))).await;
    assert_eq!(big.status(), 413);
    assert!(big.body().len() < 400);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_response_over_the_record_cap_reaches_the_client_but_is_not_stored() {
    let memory = store();
    let settings = Settings {
        max_record_bytes: 1024,
        ..Settings::default()
    };
    let (svc, seen) = layered(Arc::clone(&memory), settings, Duration::ZERO, |_| {
        Response::builder()
            .status(201)
            .body(Body::Text("y".repeat(2000)))
            .unwrap()
    });
    let first = send(&svc, keyed("k")).await;
    assert_eq!((first.status().as_u16(), first.body().len()), (201, 2000));
    assert!(memory.is_empty(), "released, not stored");
    send(&svc, keyed("k")).await;
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_without_identity_is_refused_with_403_unless_anonymous_is_allowed() {
    let memory = store();
    let layer = IdempotencyLayer::builder(SharedStore::new(Arc::clone(&memory))).build();
    let strict = layer.layer(service_fn(|_req: Request| async {
        Ok::<_, Error>(created(1))
    }));
    let refused = send(&strict, keyed("k")).await;
    assert_eq!(refused.status(), 403);
    assert!(problem_type(&refused).ends_with("caller-unidentified"));
    assert!(memory.is_empty());
    let (anonymous, _) = layered(memory, Settings::default(), Duration::ZERO, created);
    assert_eq!(send(&anonymous, keyed("k")).await.status(), 201);
}

#[tokio::test(start_paused = true)]
async fn a_missing_or_invalid_key_is_400_and_runs_nothing() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, created);
    let missing = send(&svc, request(None, "{}")).await;
    let invalid = send(&svc, keyed("a,b")).await;
    assert!(problem_type(&missing).ends_with("idempotency-key-missing"));
    assert!(problem_type(&invalid).ends_with("idempotency-key-invalid"));
    assert_eq!(
        (missing.status().as_u16(), invalid.status().as_u16()),
        (400, 400)
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn problem_types_start_with_the_configured_base() {
    let settings = Settings {
        problem_type_base: "https://api.example.com/problems/".to_owned(),
        ..Settings::default()
    };
    let (svc, _) = layered(store(), settings, Duration::ZERO, created);
    let missing = send(&svc, request(None, "{}")).await;
    assert_eq!(
        problem_type(&missing),
        "https://api.example.com/problems/idempotency-key-missing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_panics_gets_500_and_frees_the_key() {
    let (svc, seen) = layered(store(), Settings::default(), Duration::ZERO, |n| {
        if n == 1 {
            panic!("handler bug")
        }
        created(n)
    });
    let failed = send(&svc, keyed("k")).await;
    assert_eq!(failed.status(), 500);
    assert!(problem_type(&failed).ends_with("handler-failed"));
    assert_eq!(send(&svc, keyed("k")).await.status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_optional_key_lets_keyless_requests_run_unprotected_and_records_nothing() {
    let memory = store();
    let settings = Settings {
        key_required: false,
        ..Settings::default()
    };
    let (svc, seen) = layered(Arc::clone(&memory), settings, Duration::ZERO, created);
    assert_eq!(send(&svc, request(None, "{}")).await.status(), 201);
    assert_eq!(send(&svc, request(None, "{}")).await.status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
    assert_eq!(seen.ids.lock().unwrap().clone(), vec![None, None]);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_optional_key_does_not_let_a_caller_without_identity_run_the_handler() {
    let memory = store();
    let settings = Settings {
        key_required: false,
        ..Settings::default()
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let strict = IdempotencyLayer::builder(SharedStore::new(Arc::clone(&memory)))
        .settings(settings)
        .build()
        .layer(service_fn(move |_req: Request| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Error>(created(1)) }
        }));
    for req in [request(None, "{}"), keyed("k")] {
        let refused = send(&strict, req).await;
        assert_eq!(refused.status(), 403);
        assert!(problem_type(&refused).ends_with("caller-unidentified"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_custom_scope_is_kept_within_each_lambda_tenant() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let svc = IdempotencyLayer::builder(SharedStore::new(store()))
        .scope(|_: &Request| Some("everyone".to_owned()))
        .build()
        .layer(service_fn(move |_req: Request| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, Error>(created(n)) }
        }));
    let in_tenant = |tenant: &str| {
        let mut context = lambda_http::Context::default();
        context.tenant_id = Some(tenant.to_owned());
        lambda_http::RequestExt::with_lambda_context(keyed("k"), context)
    };
    let a = send(&svc, in_tenant("a")).await;
    let b = send(&svc, in_tenant("b")).await;
    let a_again = send(&svc, in_tenant("a")).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    assert!(!replayed(&b), "another tenant's key is not replayed");
    assert!(replayed(&a_again));
    assert_eq!(a_again.body(), a.body());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_request_without_a_key_is_not_told_to_retry_with_its_key() {
    let settings = Settings {
        key_required: false,
        ..Settings::default()
    };
    let (svc, _) = layered(store(), settings, Duration::ZERO, |_| panic!("handler bug"));
    let detail = |response: &Response<Body>| {
        let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        json["detail"].as_str().unwrap().to_owned()
    };
    let unkeyed = send(&svc, request(None, "{}")).await;
    assert_eq!(unkeyed.status(), 500);
    assert!(problem_type(&unkeyed).ends_with("handler-failed"));
    assert!(
        !detail(&unkeyed).contains("Idempotency-Key"),
        "{}",
        detail(&unkeyed)
    );
    let keyed = send(&svc, keyed("k")).await;
    assert!(
        detail(&keyed).contains("same Idempotency-Key"),
        "{}",
        detail(&keyed)
    );
}

#[tokio::test(start_paused = true)]
async fn methods_outside_the_configured_set_pass_straight_through() {
    let memory = store();
    let (svc, seen) = layered(
        Arc::clone(&memory),
        Settings::default(),
        Duration::ZERO,
        created,
    );
    for _ in 0..2 {
        let mut get = keyed("k");
        *get.method_mut() = lambda_http::http::Method::GET;
        let response = send(&svc, get).await;
        assert!(!replayed(&response));
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
    assert!(memory.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_handler_still_running_past_its_deadline_keeps_its_lease() {
    // Lambda Managed Instances do not stop an invocation at its deadline.
    let (svc, seen) = layered(
        store(),
        Settings::default(),
        Duration::from_secs(20),
        created,
    );
    let with_deadline = |mut req: Request| {
        let mut context = lambda_http::Context::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        context.deadline = (now + Duration::from_secs(1)).as_millis() as u64;
        req.extensions_mut().insert(context);
        req
    };
    let first = tokio::spawn({
        let svc = svc.clone();
        let req = with_deadline(keyed("late"));
        async move { send(&svc, req).await }
    });
    // Paused time moves tokio's clock only; the deadline's wall clock stays
    // put, so the lease is "deadline + grace" = 3 s on each renewal.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(send(&svc, keyed("late")).await.status(), 409);
    }
    assert_eq!(first.await.unwrap().status(), 201);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

/// A store call that answers after `delay` (tokio's clock).
async fn answers_after(delay: Duration) -> Result<(), crate::StoreError> {
    tokio::time::sleep(delay).await;
    Ok(())
}

fn in_one_second() -> Option<std::time::SystemTime> {
    Some(std::time::SystemTime::now() + Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn a_store_call_is_cut_at_the_deadline_when_the_store_sets_no_bound_of_its_own() {
    // `SharedStore` declares no bound: the layer's deadline timer is the
    // only thing between a hung store and Lambda stopping the function.
    let store = SharedStore::new(store());
    let outcome = super::bounded(
        &store,
        in_one_second(),
        answers_after(Duration::from_secs(60)),
    );
    assert!(matches!(
        outcome.await,
        Err(crate::error::StoreFailure::Deadline)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_store_whose_own_bound_ends_before_the_deadline_gets_no_deadline_timer() {
    // `MemoryStore` declares that its calls never wait, so the layer trusts
    // it and starts no timer: a call that (against that promise) takes 60 s
    // is not cut at the deadline 1 s away.
    let store = MemoryStore::new();
    let outcome = super::bounded(
        &store,
        in_one_second(),
        answers_after(Duration::from_secs(60)),
    );
    assert!(outcome.await.is_ok());
}

mod cache;
mod completion;
mod flaky;
mod give_back;
mod options;
