//! The idempotency layer's contract around handlers other than orders
//! (failing, panicking, slow, counting), against a real `redis-server`.
//! These show the layer is generic and pin the cases the orders handler
//! cannot produce on demand.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use idempotent_orders::idempotency::{
    Fingerprint, IdempotencyConfig, IdempotencyKey, IdempotencyLayer, IdempotencyStore, OwnerToken,
    RedisStore, StoreKey,
};
use lambda_http::tower::{service_fn, Layer, Service, ServiceExt};
use lambda_http::{Body, Error, Request, Response};
use support::*;

/// What the test handler does on its n-th call (1-based).
type Script = fn(usize) -> Result<Response<Body>, Error>;

fn ok(call: usize) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Body::Text(format!(r#"{{"call":{call}}}"#)))?)
}

/// A store over `redis` as the function builds it.
fn redis_store(redis: &RedisServer) -> RedisStore {
    let base = support::config(redis);
    RedisStore::new(connection(&base), base.redis_timeout)
}

/// The layer over `store` around a handler that counts its calls and
/// follows `script`, optionally sleeping first.
fn counted<St: IdempotencyStore>(
    store: St,
    config: IdempotencyConfig,
    delay: Duration,
    script: Script,
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
        async move {
            tokio::time::sleep(delay).await;
            script(n)
        }
    });
    (IdempotencyLayer::new(store, config).layer(handler), calls)
}

/// [`counted`] over the Redis store of `redis`.
fn layered(
    redis: &RedisServer,
    config: IdempotencyConfig,
    delay: Duration,
    script: Script,
) -> (
    impl Service<Request, Response = Response<Body>, Error = Error, Future: Send>
        + Clone
        + Send
        + 'static,
    Arc<AtomicUsize>,
) {
    counted(redis_store(redis), config, delay, script)
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

/// A request without a Lambda deadline, so the configured default lease applies.
fn request(key: &str) -> Request {
    let mut req = event("post_order.json");
    req.extensions_mut().remove::<lambda_http::Context>();
    with_header(req, "idempotency-key", key)
}

#[tokio::test]
async fn a_handler_500_is_not_cached_and_a_retry_executes_again() {
    let redis = RedisServer::start();
    let (svc, calls) = layered(&redis, Default::default(), Duration::ZERO, |n| {
        if n == 1 {
            Ok(Response::builder()
                .status(500)
                .body(Body::Text("boom".into()))?)
        } else {
            ok(n)
        }
    });

    let first = send(&svc, request("k-500")).await;
    let retry = send(&svc, request("k-500")).await;

    assert_eq!(first.status(), 500);
    assert_eq!(retry.status(), 201);
    assert!(!replayed(&retry));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retryable_4xx_responses_are_not_cached() {
    let redis = RedisServer::start();
    let (svc, calls) = layered(&redis, Default::default(), Duration::ZERO, |n| {
        let status = [429, 408, 409, 425].get(n - 1).copied().unwrap_or(201);
        Ok(Response::builder().status(status).body(Body::Empty)?)
    });
    for expected in [429, 408, 409, 425, 201] {
        assert_eq!(send(&svc, request("k-retryable")).await.status(), expected);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_handler_error_or_panic_is_a_500_problem_and_frees_the_key() {
    let redis = RedisServer::start();
    let (svc, calls) = layered(&redis, Default::default(), Duration::ZERO, |n| match n {
        1 => Err("database exploded".into()),
        2 => panic!("handler bug"),
        n => ok(n),
    });

    let error = send(&svc, request("k-err")).await;
    assert_problem(&error, 500);
    assert!(!String::from_utf8_lossy(&body(&error)).contains("exploded"));
    let panic = send(&svc, request("k-err")).await;
    assert_problem(&panic, 500);
    let retry = send(&svc, request("k-err")).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_expired_lease_lets_a_retry_execute() {
    let redis = RedisServer::start();
    let (svc, calls) = layered(&redis, Default::default(), Duration::ZERO, ok);
    // Another instance claimed the key and died: its lease is 300 ms.
    let store = redis_store(&redis);
    let req = request("k-crashed");
    let fingerprint = Fingerprint::compute(
        "POST",
        "/orders",
        None,
        Some("application/json"),
        req.body().as_ref(),
    );
    let key = StoreKey::derive(
        "idempotency",
        "anonymous",
        "POST",
        "/orders",
        &IdempotencyKey::try_from("k-crashed").unwrap(),
    );
    let crashed = OwnerToken::generate();
    let claimed = store
        .claim(&key, &fingerprint, &crashed, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(claimed.is_none());

    let during = send(&svc, req).await;
    assert_problem(&during, 409);
    assert_eq!(during.headers()["retry-after"], "1");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = send(&svc, request("k-crashed")).await;
    assert_eq!(after.status(), 201);
    assert!(!replayed(&after));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The dead owner's completion would now be refused.
    let stored = idempotent_orders::idempotency::StoredResponse::capture(&after);
    assert!(!store
        .complete(&key, &crashed, &stored, Duration::from_secs(60))
        .await
        .unwrap());
}

#[tokio::test]
async fn a_late_completion_after_a_takeover_does_not_overwrite_the_new_owners_record() {
    let redis = RedisServer::start();
    let config = IdempotencyConfig {
        default_lease: Duration::from_millis(200),
        ..Default::default()
    };
    // Call 1 is slow (outlives its 200 ms lease); call 2 is quick.
    let (slow, calls) = layered(&redis, config.clone(), Duration::from_millis(600), ok);
    let (quick, _) = layered(&redis, config, Duration::ZERO, |_| ok(2));

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
    assert_ne!(body(&replay), body(&late));
}

#[tokio::test]
async fn redis_stopped_gives_503_without_running_the_handler_and_recovers_after_restart() {
    let mut redis = RedisServer::start();
    let (busy, calls) = layered(&redis, Default::default(), Duration::ZERO, ok);
    let (idle, idle_calls) = layered(&redis, Default::default(), Duration::ZERO, ok);
    // Both instances are warm: their connections are open.
    assert_eq!(send(&busy, request("k-before")).await.status(), 201);
    assert_eq!(send(&idle, request("k-before-idle")).await.status(), 201);

    redis.stop();
    for key in ["k-outage-1", "k-outage-2"] {
        let response = send(&busy, request(key)).await;
        assert_problem(&response, 503);
        assert!(response.headers().contains_key("retry-after"));
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
async fn an_optional_key_lets_keyless_requests_run_unprotected() {
    let redis = RedisServer::start();
    let config = IdempotencyConfig {
        key_required: false,
        ..Default::default()
    };
    let (svc, calls) = layered(&redis, config, Duration::ZERO, ok);
    let mut keyless = event("post_order_missing_key.json");
    keyless.extensions_mut().remove::<lambda_http::Context>();
    assert_eq!(send(&svc, keyless).await.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        redis.count("idempotency:*"),
        0,
        "nothing recorded without a key"
    );
}

#[tokio::test]
async fn methods_outside_the_configured_set_pass_straight_through() {
    let redis = RedisServer::start();
    let (svc, calls) = layered(&redis, Default::default(), Duration::ZERO, ok);
    for _ in 0..2 {
        let req = event("get_order_unknown.json");
        let response = send(&svc, req).await;
        assert_eq!(response.status(), 201);
        assert!(!replayed(&response));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(redis.count("idempotency:*"), 0);
}

#[tokio::test]
async fn redis_failing_during_completion_still_returns_the_real_response() {
    let redis = Arc::new(std::sync::Mutex::new(RedisServer::start()));
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
    let svc = IdempotencyLayer::new(store, IdempotencyConfig::default()).layer(handler);
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
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        !text.contains("k-complete-fails"),
        "the raw key never reaches the logs"
    );
}

/// Captures this test's log output (the test runtime is single-threaded,
/// so a thread-local default subscriber sees every event).
struct Logs {
    buffer: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: lambda_http::tracing::dispatcher::DefaultGuard,
}

impl Logs {
    fn capture() -> Self {
        use lambda_http::tracing::subscriber::util::SubscriberInitExt;
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
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
struct Writer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A store that answers claims late, as a slow or stalled network would.
struct SlowClaims {
    inner: RedisStore,
    delay: Duration,
}

impl IdempotencyStore for SlowClaims {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        owner: &OwnerToken,
        lease: Duration,
    ) -> Result<
        Option<idempotent_orders::idempotency::Record>,
        idempotent_orders::idempotency::StoreError,
    > {
        // The claim lands at once; its answer is what comes back late.
        let result = self.inner.claim(key, fingerprint, owner, lease).await;
        tokio::time::sleep(self.delay).await;
        result
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        response: &idempotent_orders::idempotency::StoredResponse,
        retention: Duration,
    ) -> Result<bool, idempotent_orders::idempotency::StoreError> {
        self.inner.complete(key, owner, response, retention).await
    }

    async fn release(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
    ) -> Result<bool, idempotent_orders::idempotency::StoreError> {
        self.inner.release(key, owner).await
    }
}

fn slow_claims(
    redis: &RedisServer,
    delay: Duration,
    config: IdempotencyConfig,
) -> (
    impl Service<Request, Response = Response<Body>, Error = Error, Future: Send> + Clone,
    Arc<AtomicUsize>,
) {
    let store = SlowClaims {
        inner: redis_store(redis),
        delay,
    };
    counted(store, config, Duration::ZERO, ok)
}

#[tokio::test]
async fn a_claim_answered_after_its_lease_expired_does_not_run_the_handler() {
    let redis = RedisServer::start();
    let config = IdempotencyConfig {
        default_lease: Duration::from_millis(300),
        ..Default::default()
    };
    let (svc, calls) = slow_claims(&redis, Duration::from_millis(400), config);

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
    let (svc, calls) = slow_claims(&redis, Duration::from_secs(3), IdempotencyConfig::default());
    let req = with_header(event("post_order.json"), "idempotency-key", "k-deadline");
    let req = lambda_http::RequestExt::with_lambda_context(
        req,
        context_with_deadline_in(Duration::from_millis(400)),
    );

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
    let with_password = |password: &str| {
        let mut config = support::config(&redis);
        config.redis_url = format!("redis://:{password}@127.0.0.1:{}", redis.port());
        config
    };
    let (good, bad) = (with_password("s3cret-pw"), with_password("wrong-pw"));
    let handler = || service_fn(|_req: Request| async { ok(1) });
    let store = |config: &idempotent_orders::Config| {
        RedisStore::new(connection(config), config.redis_timeout)
    };
    let good_svc =
        IdempotencyLayer::new(store(&good), IdempotencyConfig::default()).layer(handler());
    let bad_svc = IdempotencyLayer::new(store(&bad), IdempotencyConfig::default()).layer(handler());
    let logs = Logs::capture();

    assert_eq!(send(&good_svc, request("k-auth")).await.status(), 201);
    assert!(replayed(&send(&good_svc, request("k-auth")).await));
    let refused = send(&bad_svc, request("k-auth-2")).await;

    assert_problem(&refused, 503);
    let text = logs.text();
    assert!(text.contains("idempotency claim failed"), "{text}");
    for secret in ["s3cret-pw", "wrong-pw"] {
        assert!(
            !text.contains(secret),
            "a password reached the logs: {text}"
        );
        assert!(!String::from_utf8_lossy(&body(&refused)).contains(secret));
    }
}
