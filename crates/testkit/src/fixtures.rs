//! Fixture events from the repository's `events/` folder, read as
//! `lambda_http` requests, and assertions on responses.

use std::time::Duration;

use lambda_http::http::HeaderValue;
use lambda_http::{Body, Context, Request, RequestExt, Response};

/// The repository's `events/` folder.
pub fn events_dir() -> String {
    format!("{}/../../events", env!("CARGO_MANIFEST_DIR"))
}

/// Loads `events/<name>` as a request, with a Lambda context whose deadline
/// is 3 s away (as Lambda would send).
pub fn event(name: &str) -> Request {
    let path = format!("{}/{name}", events_dir());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    req.with_lambda_context(context_with_deadline_in(Duration::from_secs(3)))
}

/// Loads `events/<name>` as the raw JSON event.
pub fn event_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&event_bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The REST API (1.0) fixture order (`rest_v1_post_order_prod_stage.json`)
/// under `key`, in both of its header maps.
pub fn rest_order_event(key: &str) -> serde_json::Value {
    let mut event = event_json("rest_v1_post_order_prod_stage.json");
    event["headers"]["Idempotency-Key"] = key.into();
    event["multiValueHeaders"]["Idempotency-Key"] = serde_json::json!([key]);
    event
}

/// The bytes of `events/<name>`, as stored.
pub fn event_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/{name}", events_dir());
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A Lambda context whose deadline is `left` from now.
pub fn context_with_deadline_in(left: Duration) -> Context {
    let mut ctx = Context::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ctx.deadline = (now + left).as_millis() as u64;
    ctx.request_id = format!("test-{}", uuid::Uuid::new_v4());
    ctx
}

/// Sets (replacing) a header on a request.
pub fn with_header(mut req: Request, name: &'static str, value: &str) -> Request {
    let value = HeaderValue::from_str(value).expect("test header value");
    req.headers_mut().insert(name, value);
    req
}

/// The body bytes of a response.
pub fn body(response: &Response<Body>) -> Vec<u8> {
    response.body().to_vec()
}

/// The body parsed as JSON.
pub fn json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body()).expect("JSON body")
}

/// Whether the response is a replay.
pub fn replayed(response: &Response<Body>) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Asserts a problem+json response with `status`.
pub fn assert_problem(response: &Response<Body>, status: u16) {
    assert_eq!(response.status().as_u16(), status, "{:?}", response.body());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json(response);
    assert_eq!(problem["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(
            problem[field].is_string(),
            "problem lacks {field}: {problem}"
        );
    }
}

/// One line of `events/expected_status.txt`.
pub struct ExpectedStatus {
    /// The event file in `events/`.
    pub file: String,
    /// The status it must get.
    pub status: u16,
    /// Whether that answer is a replay.
    pub replay: bool,
}

/// `events/expected_status.txt`, checked to list every event file once.
pub fn expected_statuses() -> Vec<ExpectedStatus> {
    let dir = events_dir();
    let table =
        std::fs::read_to_string(format!("{dir}/expected_status.txt")).expect("expected_status.txt");
    let expected: Vec<ExpectedStatus> = table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let file = parts.next().expect("file").to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).expect("status");
            ExpectedStatus {
                file,
                status,
                replay: parts.next() == Some("replay"),
            }
        })
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("events/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let listed: Vec<String> = expected.iter().map(|e| e.file.clone()).collect();
    assert_eq!(
        listed, files,
        "events/expected_status.txt must list every event, in order"
    );
    expected
}
