//! The layer over [`RedisStore`] against a real `redis-server`, through
//! the public API only: what only a real Redis shows (outages, restarts,
//! AUTH, slow answers, takeovers across two layers sharing one Redis, the
//! local cache watched with `MONITOR`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer, Service, ServiceExt};
use lambda_http::{Body, Error, Request, RequestExt, Response};
use lambda_idempotency::{
    ApiGatewayScope, IdempotencyLayer, IdempotencyStore, OwnerToken, RedisOptions, RedisStore,
    Settings, StoreError, StoreKey, StoredRecord,
};
use testkit::fixtures::{
    assert_problem, body, context_with_deadline_in, event, replayed, with_header,
};
use testkit::RedisServer;

fn ok(call: usize) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Body::Text(format!(r#"{{"call":{call}}}"#)))?)
}

fn redis_store(redis: &RedisServer) -> RedisStore {
    RedisStore::open(&redis.url(), RedisOptions::default()).expect("store")
}

fn anonymous() -> ApiGatewayScope {
    "anonymous".parse().expect("scope")
}

/// The layer over `store` around a handler that counts its calls, runs
/// `during`, sleeps `delay`, then answers `ok(call)`.
fn counted<St: IdempotencyStore>(
    store: St,
    settings: Settings,
    delay: Duration,
    during: impl Fn() + Clone + Send + Sync + 'static,
) -> (
    impl Service<Request, Response = Response<Body>, Error = Error, Future: Send>
        + Clone
        + Send
        + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler = service_fn(move |_req: Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        during();
        async move {
            tokio::time::sleep(delay).await;
            ok(n)
        }
    });
    let layer = IdempotencyLayer::builder(store)
        .settings(settings)
        .scope(anonymous())
        .build();
    (layer.layer(handler), calls)
}

async fn send<S>(svc: &S, req: Request) -> Response<Body>
where
    S: Service<Request, Response = Response<Body>, Error = Error> + Clone,
{
    svc.clone()
        .oneshot(req)
        .await
        .expect("the layer never fails")
}

/// A request without a Lambda deadline, so the default lease applies.
fn request(key: &str) -> Request {
    let mut req = event("post_order.json");
    req.extensions_mut().remove::<lambda_http::Context>();
    with_header(req, "idempotency-key", key)
}

fn short_leases(lease: Duration) -> Settings {
    let mut settings = Settings::default();
    settings.lease = lease;
    settings
}

#[tokio::test]
async fn a_late_completion_after_a_takeover_does_not_overwrite_the_new_owners_record() {
    let redis = RedisServer::start();
    // The first attempt freezes (no heartbeat can run in a frozen process):
    // modelled by a store whose renewals never land.
    let settings = short_leases(Duration::from_millis(200));
    let (slow, calls) = counted(
        NoRenewals(redis_store(&redis)),
        settings.clone(),
        Duration::from_millis(600),
        || {},
    );
    let (quick, _) = counted(redis_store(&redis), settings, Duration::ZERO, || {});

    let stalled = tokio::spawn({
        let slow = slow.clone();
        async move { send(&slow, request("k-takeover")).await }
    });
    tokio::time::sleep(Duration::from_millis(350)).await;
    let takeover = send(&quick, request("k-takeover")).await;
    assert_eq!(takeover.status(), 201);
    assert!(
        !replayed(&takeover),
        "the expired lease lets the retry execute"
    );

    let late = stalled.await.unwrap();
    assert_eq!(
        late.status(),
        201,
        "the stalled invocation still answers its own client"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let replay = send(&quick, request("k-takeover")).await;
    assert!(replayed(&replay));
    assert_eq!(
        body(&replay),
        body(&takeover),
        "the new owner's record stands"
    );
}

#[tokio::test]
async fn a_live_slow_handler_is_not_taken_over_by_a_retry() {
    let redis = RedisServer::start();
    let settings = short_leases(Duration::from_millis(300));
    let (slow, calls) = counted(
        redis_store(&redis),
        settings.clone(),
        Duration::from_millis(1500),
        || {},
    );
    let (quick, _) = counted(redis_store(&redis), settings, Duration::ZERO, || {});
    let first = tokio::spawn({
        let slow = slow.clone();
        async move { send(&slow, request("k-slow")).await }
    });
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_problem(&send(&quick, request("k-slow")).await, 409);
    }
    assert_eq!(first.await.unwrap().status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(replayed(&send(&quick, request("k-slow")).await));
}

#[tokio::test]
async fn redis_stopped_gives_503_without_running_the_handler_and_recovers_after_restart() {
    let mut redis = RedisServer::start();
    let (busy, calls) = counted(
        redis_store(&redis),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    let (idle, idle_calls) = counted(
        redis_store(&redis),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    // Both instances are warm: their connections are open.
    assert_eq!(send(&busy, request("k-before")).await.status(), 201);
    assert_eq!(send(&idle, request("k-before-idle")).await.status(), 201);

    redis.stop();
    for key in ["k-outage-1", "k-outage-2"] {
        let response = send(&busy, request(key)).await;
        assert_problem(&response, 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler did not run during the outage"
    );

    redis.restart();
    let after = send(&busy, request("k-after")).await;
    assert_eq!(after.status(), 201, "{:?}", after.body());
    // The idle instance never saw the outage; its first request still works.
    let idle_after = send(&idle, request("k-after-idle")).await;
    assert_eq!(idle_after.status(), 201, "{:?}", idle_after.body());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(idle_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn redis_failing_during_completion_still_returns_the_real_response() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let store = redis_store(&redis.lock().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = service_fn({
        let (redis, calls) = (Arc::clone(&redis), Arc::clone(&calls));
        move |_req: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Redis dies while the handler runs: the claim succeeded, the
            // completion cannot.
            redis.lock().unwrap().stop();
            async { ok(1) }
        }
    });
    let svc = IdempotencyLayer::builder(store)
        .scope(anonymous())
        .build()
        .layer(handler);
    let logs = Logs::capture();

    let response = send(&svc, request("k-complete-fails")).await;

    assert_eq!(
        response.status(),
        201,
        "the client gets the handler's real answer"
    );
    assert_eq!(body(&response), br#"{"call":1}"#);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let text = logs.text();
    assert!(text.contains("IDEMPOTENCY RECORD NOT COMPLETED"), "{text}");
    assert!(text.contains("outcome=\"completion_failed\""), "{text}");
    assert!(
        !text.contains("k-complete-fails"),
        "the raw key never reaches the logs"
    );
}

#[tokio::test]
async fn a_claim_answered_after_its_lease_expired_does_not_run_the_handler() {
    let redis = RedisServer::start();
    let store = SlowClaims(redis_store(&redis), Duration::from_millis(400));
    let (svc, calls) = counted(
        store,
        short_leases(Duration::from_millis(300)),
        Duration::ZERO,
        || {},
    );

    let response = send(&svc, request("k-stalled")).await;

    assert_problem(&response, 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler must not run on a lost lease"
    );
}

#[tokio::test]
async fn a_slow_store_never_holds_the_function_past_its_deadline() {
    let redis = RedisServer::start();
    let store = SlowClaims(redis_store(&redis), Duration::from_secs(3));
    let (svc, calls) = counted(store, Settings::default(), Duration::ZERO, || {});
    let req = with_header(event("post_order.json"), "idempotency-key", "k-deadline")
        .with_lambda_context(context_with_deadline_in(Duration::from_millis(400)));

    let started = std::time::Instant::now();
    let response = send(&svc, req).await;

    assert_problem(&response, 503);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_password_in_the_url_works_and_a_wrong_one_gives_503_without_leaking_it() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let store = |password: &str| {
        let url = format!("redis://:{password}@127.0.0.1:{}", redis.port());
        RedisStore::open(&url, RedisOptions::default()).expect("store")
    };
    let (good, _) = counted(
        store("s3cret-pw"),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    let (bad, _) = counted(
        store("wrong-pw"),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    let logs = Logs::capture();

    assert_eq!(send(&good, request("k-auth")).await.status(), 201);
    assert!(replayed(&send(&good, request("k-auth")).await));
    let refused = send(&bad, request("k-auth-2")).await;

    assert_problem(&refused, 503);
    let text = logs.text();
    assert!(text.contains("idempotency store failed"), "{text}");
    for secret in ["s3cret-pw", "wrong-pw"] {
        assert!(
            !text.contains(secret),
            "a password reached the logs: {text}"
        );
        assert!(!String::from_utf8_lossy(&body(&refused)).contains(secret));
    }
}

#[tokio::test]
async fn a_tls_redis_with_a_custom_ca_works_and_an_untrusted_one_fails_fast_with_503() {
    let redis = RedisServer::start_tls();
    let mut trusted = RedisOptions::default();
    trusted.ca_file = redis.ca_file();
    let (svc, _) = counted(
        RedisStore::open(&redis.url(), trusted).expect("store"),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    assert_eq!(send(&svc, request("k-tls")).await.status(), 201);
    assert!(replayed(&send(&svc, request("k-tls")).await));

    let (untrusted, calls) = counted(
        redis_store(&redis),
        Settings::default(),
        Duration::ZERO,
        || {},
    );
    let started = std::time::Instant::now();
    assert_problem(&send(&untrusted, request("k-tls-2")).await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Captures this test's log output (the test runtime is single-threaded,
/// so a thread-local default subscriber sees every event).
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: lambda_http::tracing::dispatcher::DefaultGuard,
}

impl Logs {
    fn capture() -> Self {
        use lambda_http::tracing::subscriber::util::SubscriberInitExt;
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(Arc::clone(&buffer));
        let guard = lambda_http::tracing::subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .set_default();
        Self {
            buffer,
            _guard: guard,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A store whose claims land at once but whose answers come back late, as
/// over a stalled network.
struct SlowClaims(RedisStore, Duration);

/// A store whose renewals never land, as for a frozen process.
struct NoRenewals(RedisStore);

macro_rules! delegate_except {
    ($store:ty, |$this:ident| $inner:expr, claim: $claim:expr, renew: $renew:expr) => {
        impl IdempotencyStore for $store {
            async fn claim(
                &self,
                key: &StoreKey,
                owner: &OwnerToken,
                payload: &[u8],
                lease: Duration,
            ) -> Result<Option<StoredRecord>, StoreError> {
                let $this = self;
                let result = $inner.claim(key, owner, payload, lease).await;
                $claim($this).await;
                result
            }

            async fn complete(
                &self,
                key: &StoreKey,
                owner: &OwnerToken,
                payload: &[u8],
                retention: Duration,
            ) -> Result<bool, StoreError> {
                let $this = self;
                $inner.complete(key, owner, payload, retention).await
            }

            async fn release(
                &self,
                key: &StoreKey,
                owner: &OwnerToken,
            ) -> Result<bool, StoreError> {
                let $this = self;
                $inner.release(key, owner).await
            }

            async fn renew(
                &self,
                key: &StoreKey,
                owner: &OwnerToken,
                payload: &[u8],
                lease: Duration,
            ) -> Result<bool, StoreError> {
                let $this = self;
                if $renew {
                    $inner.renew(key, owner, payload, lease).await
                } else {
                    Ok(true)
                }
            }
        }
    };
}

delegate_except!(SlowClaims, |this| this.0,
    claim: |this: &SlowClaims| tokio::time::sleep(this.1),
    renew: true);
delegate_except!(NoRenewals, |this| this.0,
    claim: |_: &NoRenewals| std::future::ready(()),
    renew: false);

// The local cache (`IDEMPOTENCY_LOCAL_CACHE_BYTES`), watched with
// `MONITOR`: what it spares Redis, and what it must not keep.

const CACHE_BYTES: usize = 1 << 20;

fn with_body(mut req: Request, text: &str) -> Request {
    *req.body_mut() = Body::Text(text.to_owned());
    req
}

/// A `RedisStore` on `url` requiring `min_replicas`, and settings with
/// the cache on.
fn cached(url: &str, min_replicas: u32) -> (RedisStore, Settings) {
    let mut options = RedisOptions::default();
    options.min_replicas = min_replicas;
    let mut settings = Settings::default();
    settings.local_cache_bytes = CACHE_BYTES;
    (RedisStore::open(url, options).expect("store"), settings)
}

#[tokio::test]
async fn after_a_first_execution_replays_and_422s_of_its_key_send_redis_no_command() {
    let redis = RedisServer::start();
    let (store, settings) = cached(&redis.url(), 0);
    let (svc, calls) = counted(store, settings, Duration::ZERO, || {});
    let monitor = redis.monitor();

    let first = send(&svc, request("k-cached")).await;
    assert_eq!(first.status(), 201);
    let sent = monitor.take_commands();
    assert!(
        sent.iter().any(|(name, _)| name == "set"),
        "the first execution claims in Redis: {sent:?}"
    );

    for _ in 0..3 {
        let replay = send(&svc, request("k-cached")).await;
        assert_eq!(replay.status(), 201);
        assert!(replayed(&replay));
        assert_eq!(body(&replay), body(&first));
        let mismatch = send(&svc, with_body(request("k-cached"), r#"{"sku":"other"}"#)).await;
        assert_problem(&mismatch, 422);
    }
    assert_eq!(
        monitor.take_commands(),
        Vec::<(String, String)>::new(),
        "replays and 422s answered from the cache"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_completion_no_replica_acknowledged_is_not_cached_and_the_retry_asks_redis() {
    let primary = RedisServer::start();
    let replica = Arc::new(RedisServer::replica_of(&primary));
    // The claim is acknowledged; then the replica freezes while the
    // handler runs, so the completion's WAIT counts no replica.
    let frozen = Arc::clone(&replica);
    let (store, settings) = cached(&primary.url(), 1);
    let (svc, calls) = counted(store, settings, Duration::ZERO, move || frozen.pause());

    let first = send(&svc, request("k-unacknowledged")).await;
    replica.resume();
    assert_eq!(
        first.status(),
        503,
        "an unacknowledged completion is answered 503"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    primary.wait_for_a_replica();

    let monitor = primary.monitor();
    let retry = send(&svc, request("k-unacknowledged")).await;
    let sent = monitor.take_commands();
    // With replicas required, the claim is a script followed by WAIT.
    assert!(
        sent.iter().any(|(name, _)| name == "wait"),
        "the retry claims in Redis, not from the cache: {sent:?}"
    );
    assert_eq!(retry.status(), 201, "{:?}", body(&retry));
    assert!(replayed(&retry), "the record reached Redis and is replayed");
}
