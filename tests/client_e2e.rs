//! `examples/client.py`, a real client that retries one order under one
//! `Idempotency-Key`, against the real `cargo lambda watch` while the test
//! makes Redis slow (a TCP proxy between the function and Redis) or takes
//! it down and brings it back a moment later. Whatever the client went
//! through (timeouts, `409`s, `503`s), the run ends with exactly one order,
//! and every successful try, including a later retry by hand, answered the
//! same bytes.
//!
//! The headers the client is told to send (`--bearer`, `--header`), which
//! nothing under `cargo lambda watch` answers differently, are checked
//! against a small HTTP listener that records every request it receives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread::JoinHandle;
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

/// An HTTP listener on a free port that answers each connection with the
/// next of its scripted responses and records the request's headers
/// (names in lower case).
struct Recorder {
    addr: SocketAddr,
    served: JoinHandle<Vec<Vec<(String, String)>>>,
}

impl Recorder {
    fn start(responses: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let served = std::thread::spawn(move || {
            responses
                .into_iter()
                .map(|response| {
                    let (mut stream, _) = listener.accept().expect("a request");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("a read timeout");
                    let headers = read_request(&mut stream);
                    stream.write_all(response.as_bytes()).expect("the answer");
                    headers
                })
                .collect()
        });
        Self { addr, served }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The headers of each request, once every scripted response was sent.
    fn requests(self) -> Vec<Vec<(String, String)>> {
        self.served.join().expect("the listener")
    }
}

/// Reads one request (head and `Content-Length` body); returns its headers.
fn read_request(stream: &mut impl Read) -> Vec<(String, String)> {
    let mut bytes = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).expect("the request");
        assert!(n > 0, "the connection closed inside the request head");
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(bytes[..head_end].to_vec()).expect("an ASCII head");
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("a length"));
    while bytes.len() < head_end + 4 + length {
        let n = stream.read(&mut chunk).expect("the body");
        assert!(n > 0, "the connection closed inside the body");
        bytes.extend_from_slice(&chunk[..n]);
    }
    headers
}

fn answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn the_client_sends_its_bearer_token_and_headers_with_every_try() {
    let recorder = Recorder::start(vec![
        answer(
            "503 Service Unavailable",
            "Content-Type: application/problem+json\r\nRetry-After: 0\r\n",
            r#"{"status":503}"#,
        ),
        answer(
            "201 Created",
            "Content-Type: application/json\r\n",
            r#"{"message":"Order created"}"#,
        ),
    ]);
    let run = client_with(
        &recorder.base_url(),
        "client-headers",
        &[
            "--bearer",
            "token-123",
            "--header",
            "X-Tenant: acme",
            "--header",
            "X-Note:  a: b ",
        ],
    );
    assert_eq!(run.exit, Some(0), "{}", run.stderr);
    assert_eq!(run.statuses(), [Some(503), Some(201)], "{}", run.stderr);
    let requests = recorder.requests();
    assert_eq!(requests.len(), 2);
    for headers in &requests {
        let value = |name: &str| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(values.len(), 1, "{name} once: {headers:?}");
            values[0]
        };
        assert_eq!(value("authorization"), "Bearer token-123");
        assert_eq!(value("x-tenant"), "acme");
        assert_eq!(value("x-note"), "a: b");
        assert_eq!(value("idempotency-key"), "client-headers");
        assert_eq!(value("content-type"), "application/json");
    }
}

#[test]
fn the_client_refuses_headers_it_sets_itself_or_cannot_send_before_any_try() {
    for bad in [
        &["--header", "Idempotency-Key: other"][..],
        &["--header", "content-type: text/plain"],
        &["--header", "no colon"],
        &["--header", "X-Line: a\nb"],
        &["--bearer", "a", "--header", "Authorization: Basic x"],
        &["--header", "X-A: 1", "--header", "x-a: 2"],
    ] {
        // Nothing listens there: a try would be a connection error.
        let run = client_with("http://127.0.0.1:9", "client-refused", bad);
        assert_eq!(run.exit, Some(2), "{bad:?}: {}", run.stderr);
        assert!(run.tries.is_empty(), "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains("error:"), "{bad:?}: {}", run.stderr);
    }
}
