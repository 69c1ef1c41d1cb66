//! The local door, end to end: the real `cargo lambda watch` serving the
//! function, real HTTP requests with curl to its function-URL path, and
//! `cargo lambda invoke --data-file` for every fixture event, against a real
//! `redis-server`. The watch process tree is stopped at the end and checked
//! for orphans.

use std::process::Command;

use testkit::fixtures::expected_statuses;
use testkit::harness::TEST_SCOPE;
use testkit::watch::{Watch, HINT};
use testkit::RedisServer;

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request with curl; `-i` output parsed into status, headers, body.
fn curl(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "120", "-X", method, url]);
    for header in headers {
        cmd.args(["-H", header]);
    }
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    let output = cmd
        .output()
        .expect("curl is required (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from {url}: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn post(watch: &Watch, key: Option<&str>, body: &str) -> Answer {
    let key_header = key.map(|k| format!("Idempotency-Key: {k}"));
    let mut headers = vec!["Content-Type: application/json"];
    headers.extend(key_header.as_deref());
    curl("POST", &watch.url("/orders"), &headers, Some(body))
}

#[test]
fn cargo_lambda_watch_serves_the_function_end_to_end() {
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("IDEMPOTENCY_SCOPE", TEST_SCOPE),
    ];
    let mut watch = Watch::start(&env, 2);
    let tea = r#"{"product":"Tea","quantity":1}"#;

    // The first request also waits for watch to build and start the function.
    let first = post(&watch, Some("e2e-1"), tea);
    assert_eq!(first.status, 201, "{}\n{}", first.body, watch.logs());
    let replay = post(
        &watch,
        Some("e2e-1"),
        r#"{ "quantity": 1, "product": "Tea" }"#,
    );
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body, "byte-identical replay");
    assert_eq!(
        post(&watch, Some("e2e-1"), r#"{"product":"Tea","quantity":2}"#).status,
        422
    );
    let missing = post(&watch, None, tea);
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );

    // A concurrent pair on one new key (watch runs up to 2 instances).
    let pair: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| post(&watch, Some("e2e-pair"), tea)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("curl thread"))
            .collect()
    });
    let executed = pair
        .iter()
        .filter(|a| a.status == 201 && a.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(executed, 1, "one execution for the pair");
    assert!(pair.iter().all(|a| a.status == 201 || a.status == 409));

    let location = first.header("location").expect("location").to_owned();
    let fetched = curl("GET", &watch.url(&location), &[], None);
    assert_eq!(fetched.status, 200);
    let order: serde_json::Value = serde_json::from_str(&fetched.body).unwrap();
    let created: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(order, created["order"]);
    assert_eq!(redis.orders(), 2);

    // Every fixture event through `cargo lambda invoke --data-file`.
    for expected in expected_statuses() {
        let output = Command::new("cargo")
            .args(["lambda", "invoke", "idempotent-orders", "-o", "json"])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &watch.port().to_string(),
            ])
            .args(["--data-file", &format!("events/{}", expected.file)])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect(HINT);
        let text = String::from_utf8_lossy(&output.stdout);
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {text}{}",
                expected.file,
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert_eq!(
            answer["statusCode"], expected.status,
            "{}: {answer}",
            expected.file
        );
    }

    watch.stop();
    assert!(
        !watch.group_alive(),
        "processes of cargo lambda watch were left behind"
    );
}
