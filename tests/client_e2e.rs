//! `examples/client.py`, a real client that retries one order under one
//! `Idempotency-Key`, against the real `cargo lambda watch` while the test
//! makes Redis slow (a TCP proxy between the function and Redis) or takes
//! it down and brings it back a moment later. Whatever the client went
//! through (timeouts, `409`s, `503`s), the run ends with exactly one order,
//! and every successful try, including a later retry by hand, answered the
//! same bytes.

use std::process::Command;
use std::time::Duration;

use idempotent_orders::{App, Config};
use lambda_http::RequestExt;
use serde_json::Value;
use testkit::fault_proxy::{At, FaultProxy, Freezer};
use testkit::fixtures::context_with_deadline_in;
use testkit::harness::{function_env, lookup, v2_event, TEST_SCOPE};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::watch::Watch;
use testkit::RedisServer;

/// What one run of the client did.
struct Run {
    exit: Option<i32>,
    stdout: String,
    /// One JSON object per try (`--log`).
    tries: Vec<Value>,
    stderr: String,
}

impl Run {
    fn statuses(&self) -> Vec<Option<u64>> {
        self.tries.iter().map(|t| t["status"].as_u64()).collect()
    }

    /// The bodies of the tries answered 201.
    fn created_bodies(&self) -> Vec<&str> {
        self.tries
            .iter()
            .filter(|t| t["status"] == 201)
            .map(|t| t["body"].as_str().expect("body"))
            .collect()
    }
}

/// Runs the client to completion: one order under `key`, `timeout`
/// seconds per try, at most `tries` tries.
fn client(base_url: &str, key: &str, timeout: f64, tries: u32) -> Run {
    client_with(
        base_url,
        key,
        &[
            "--timeout",
            &timeout.to_string(),
            "--tries",
            &tries.to_string(),
            "--max-wait",
            "3",
        ],
    )
}

/// Runs the client to completion: one order under `key`, with `options`.
fn client_with(base_url: &str, key: &str, options: &[&str]) -> Run {
    let output = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/client.py"))
        .args(["--url", base_url, "--key", key, "--log"])
        .args(["--product", "Espresso beans 1kg", "--quantity", "2"])
        .args(options)
        .output()
        .expect("python3 is required by this test");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let tries = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a try is a JSON line"))
        .collect();
    // Shown with --nocapture, or when the test fails.
    eprintln!("client.py --key {key} {options:?}:\n{stderr}");
    Run {
        exit: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        tries,
        stderr,
    }
}

async fn client_async(base_url: String, key: &'static str, timeout: f64, tries: u32) -> Run {
    tokio::task::spawn_blocking(move || client(&base_url, key, timeout, tries))
        .await
        .expect("client thread")
}

/// The run succeeded with a 201, and every 201 (this run's, `earlier`'s)
/// carried the same body, which is what the client printed.
fn assert_one_answer(run: &Run, earlier: &[&str], watch: &Watch) {
    assert_eq!(
        run.exit,
        Some(0),
        "client failed: {}\n{}",
        run.stderr,
        watch.logs()
    );
    let bodies = run.created_bodies();
    assert!(!bodies.is_empty(), "no 201: {}", run.stderr);
    let first = bodies[0];
    for body in bodies.iter().chain(earlier) {
        assert_eq!(*body, first, "one order, one answer: {}", run.stderr);
    }
    assert_eq!(run.stdout.trim_end(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrying_client_ends_with_one_order_through_slow_and_restarted_redis() {
    let mut redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let watch = Watch::start(
        &[
            ("REDIS_URL", &proxy.url()),
            ("IDEMPOTENCY_SCOPE", TEST_SCOPE),
            ("REDIS_TIMEOUT_MS", "1000"),
            ("METRICS_NAMESPACE", ""),
        ],
        2,
    );
    watch.wait_until_serving(Duration::from_secs(600));
    let base = watch.base_url();

    // Slow Redis: every reply 300 ms late, so one order takes about a
    // second and the client, which waits 0.6 s, times out. Its retries
    // with the same key meet the running first attempt (409) or its
    // stored answer (a replay), never a second execution.
    proxy.set_delay(Duration::from_millis(300));
    let slow = client_async(base.clone(), "client-e2e-slow", 0.6, 10).await;
    proxy.set_delay(Duration::ZERO);
    assert!(
        slow.statuses().iter().any(|s| *s != Some(201)),
        "the client never had to retry: {}",
        slow.stderr
    );
    assert_one_answer(&slow, &[], &watch);
    assert_eq!(redis.orders(), 1, "{}", slow.stderr);
    // Retrying the whole run by hand with the key gets the same answer.
    let again = client_async(base.clone(), "client-e2e-slow", 5.0, 3).await;
    assert_eq!(again.tries.len(), 1);
    assert_eq!(again.tries[0]["replayed"], true);
    assert_one_answer(&again, &slow.created_bodies(), &watch);
    assert_eq!(redis.orders(), 1);

    // Redis down, back 1.5 s later (empty: nothing is saved): the client
    // meets 503s, waits their Retry-After, and gets its order once Redis
    // is back.
    redis.stop();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        redis.restart();
        redis
    });
    let outage = client_async(base.clone(), "client-e2e-outage", 2.0, 10).await;
    let redis = restarter.join().expect("restart thread");
    assert!(
        outage.statuses().contains(&Some(503)),
        "the client never met the outage: {}",
        outage.stderr
    );
    assert!(
        outage
            .tries
            .iter()
            .all(|t| t["status"] != 503 || t["wait"].as_f64() >= Some(1.0)),
        "a 503's Retry-After (1 s) was not honoured: {}",
        outage.stderr
    );
    assert_one_answer(&outage, &[], &watch);
    assert_eq!(redis.orders(), 1, "{}", outage.stderr);
    let again = client_async(base, "client-e2e-outage", 5.0, 3).await;
    assert_one_answer(&again, &outage.created_bodies(), &watch);
    assert_eq!(redis.orders(), 1);

    let mut watch = watch;
    watch.stop();
    assert!(
        !watch.group_alive(),
        "processes of cargo lambda watch were left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_default_retries_outlast_a_key_left_claimed_by_a_frozen_instance() {
    let redis = RedisServer::start();
    let watch = Watch::start(
        &[
            ("REDIS_URL", &redis.url()),
            ("IDEMPOTENCY_SCOPE", TEST_SCOPE),
            ("METRICS_NAMESPACE", ""),
        ],
        1,
    );
    watch.wait_until_serving(Duration::from_secs(600));
    let key = "client-e2e-frozen";
    // Another instance of the function (in process, through a proxy) took
    // the client's first try: it claimed the key and froze as it wrote
    // the order, as when Lambda stops an instance mid-request. Only the
    // lease (3 s, as deployed) frees the key.
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let vars = function_env(&proxy.url(), &[("METRICS_NAMESPACE", "")]);
    let app = App::from_config(&Config::from_lookup(lookup(vars)).expect("config")).expect("app");
    let event = v2_event(
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        Some(r#"{"product":"Espresso beans 1kg","quantity":2}"#),
    );
    let request = lambda_http::request::from_str(&event.to_string())
        .expect("an event")
        .with_lambda_context(context_with_deadline_in(Duration::from_secs(60)));
    let mut write = proxy.hold_at(At::matching(|c| {
        c.name() == "SET" && c.key().is_some_and(|k| k.starts_with("orders:"))
    }));
    let frozen = Freezer::default();
    let first = tokio::spawn(frozen.wrap(async move { app.handle(request).await }));
    write
        .wait(Duration::from_secs(10))
        .await
        .expect("the first try's order write");
    frozen.freeze();

    // The client, with its default tries and waits, meets 409s until the
    // lease ends, then gets its order from cargo lambda watch.
    let retried = tokio::task::spawn_blocking({
        let base = watch.base_url();
        move || client_with(&base, key, &[])
    })
    .await
    .expect("client thread");
    assert!(
        retried.statuses().contains(&Some(409)),
        "the key was never held: {}",
        retried.stderr
    );
    assert_one_answer(&retried, &[], &watch);
    // The frozen try thaws: its order write lands on the order its
    // successor wrote under the same execution identity, and it answers
    // that order, or 503 when its timers ran out while it was frozen. Never
    // another order.
    proxy.release();
    frozen.thaw();
    let first = first.await.expect("the first try");
    match first.status().as_u16() {
        201 => assert_eq!(
            first.body().as_ref(),
            retried.created_bodies()[0].as_bytes()
        ),
        status => assert_eq!(status, 503, "{:?}", first.body()),
    }
    assert_eq!(redis.orders(), 1);
}
