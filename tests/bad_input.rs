//! Bad input, end to end: malformed requests through the release binary
//! (Runtime API harness), each with the exact 4xx problem+json it must get,
//! every answer small whatever the input, nothing stored. Each request is
//! sent in every event shape it can be written in: HTTP API (payload 2.0),
//! REST API (payload 1.0) and function URL.
//!
//! "Small" is measured where it is largest: with the longest
//! `PROBLEM_TYPE_BASE` the template can set, and with input that grows
//! most when the one excerpt an answer quotes (an unknown member's name) is
//! escaped: characters Rust escapes as `\u{10ffff}`, control characters,
//! quotes, 4-byte characters.

use std::time::Duration;

use serde_json::Value;
use testkit::harness::{
    as_function_url_event, as_rest_event, function_env, order_event as order, release_binary,
    v2_event, Harness, Outcome,
};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

/// The longest problem `type` base the template sets: its
/// `https://<api id>.execute-api.<region>.amazonaws.com/problems/` in the
/// region with the longest name.
const LONGEST_BASE: &str = "https://abcdefghij.execute-api.ap-southeast-3.amazonaws.com/problems/";

/// Every answer is under this many bytes (its body; the README says so).
const MAX_ANSWER_BYTES: usize = 512;

/// An order whose unknown member is named by `name` (JSON text).
fn unknown_member(name: &str) -> String {
    format!(r#"{{"{name}":1,"product":"x","quantity":1}}"#)
}

/// A valid order event with one thing changed by `edit`.
fn storm_event(i: usize, edit: impl FnOnce(&mut Value)) -> Value {
    let mut event = order(&format!("storm-{i}"), TEA);
    edit(&mut event);
    event
}

fn with_key(key: &str) -> impl FnOnce(&mut Value) + '_ {
    move |e| e["headers"]["idempotency-key"] = key.into()
}

fn with_body(body: String) -> impl FnOnce(&mut Value) {
    move |e| e["body"] = body.into()
}

fn path_event(method: &str, path: &str) -> Value {
    v2_event(
        method,
        path,
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "storm-path"),
        ],
        Some(TEA),
    )
}

/// At least 60 malformed requests, each with the 4xx problem it must get.
fn bad_inputs() -> Vec<(&'static str, Value, u16)> {
    let nested =
        |open: &str, close: &str| format!("{}{}", open.repeat(10_000), close.repeat(10_000));
    let b64 = |text: &str| -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        out
    };
    let uuid = "01890a5d-ac96-774b-bcce-b302099a8057";
    let mut i = 0;
    let mut next = || {
        i += 1;
        i
    };
    let body = |json: &str| with_body(json.to_owned());
    vec![
        // The Idempotency-Key header.
        ("empty key", storm_event(next(), with_key("")), 400),
        ("blank key", storm_event(next(), with_key("   ")), 400),
        (
            "256-character key",
            storm_event(next(), with_key(&"k".repeat(256))),
            400,
        ),
        (
            "1000-character key",
            storm_event(next(), with_key(&"k".repeat(1000))),
            400,
        ),
        ("non-ASCII key", storm_event(next(), with_key("café")), 400),
        ("emoji key", storm_event(next(), with_key("\"😀\"")), 400),
        (
            "control character in key",
            storm_event(next(), with_key("a\u{1}b")),
            400,
        ),
        ("NUL in key", storm_event(next(), with_key("a\u{0}b")), 400),
        ("DEL in key", storm_event(next(), with_key("a\u{7f}b")), 400),
        ("newline in key", storm_event(next(), with_key("a\nb")), 400),
        ("tab in key", storm_event(next(), with_key("a\tb")), 400),
        ("space in key", storm_event(next(), with_key("a b")), 400),
        (
            "two keys joined by API Gateway",
            storm_event(next(), with_key("a,b")),
            400,
        ),
        (
            "quoted key with a bad escape",
            storm_event(next(), with_key("\"a\\qb\"")),
            400,
        ),
        (
            "quoted key without its closing quote",
            storm_event(next(), with_key("\"abc")),
            400,
        ),
        (
            "two quoted keys",
            storm_event(next(), with_key("\"a\", \"b\"")),
            400,
        ),
        (
            "empty quoted key",
            storm_event(next(), with_key("\"\"")),
            400,
        ),
        (
            "missing key",
            storm_event(next(), |e| {
                drop(
                    e["headers"]
                        .as_object_mut()
                        .unwrap()
                        .remove("idempotency-key"),
                )
            }),
            400,
        ),
        // Other headers.
        (
            "control character in another header",
            storm_event(next(), |e| e["headers"]["x-note"] = "bell\u{7}".into()),
            400,
        ),
        (
            "header name with a space",
            storm_event(next(), |e| e["headers"]["bad name"] = "x".into()),
            400,
        ),
        (
            "control character in content-type",
            storm_event(next(), |e| {
                e["headers"]["content-type"] = "application/json\u{1}".into()
            }),
            400,
        ),
        // Bodies.
        ("not JSON", storm_event(next(), body("not json")), 400),
        (
            "truncated JSON",
            storm_event(next(), body(r#"{"product":"Tea","quantity":"#)),
            400,
        ),
        ("empty body", storm_event(next(), body("")), 400),
        (
            "no body",
            storm_event(next(), |e| drop(e.as_object_mut().unwrap().remove("body"))),
            400,
        ),
        (
            "1 MB of garbage",
            storm_event(next(), with_body("x".repeat(1 << 20))),
            413,
        ),
        (
            "1 MB product name",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"product":"{}","quantity":1}}"#,
                    "p".repeat(1 << 20)
                )),
            ),
            413,
        ),
        (
            "15 KB product name",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"product":"{}","quantity":1}}"#,
                    "p".repeat(15_000)
                )),
            ),
            422,
        ),
        (
            "15 KB of escaped quotes as the quantity",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"product":"x","quantity":"{}"}}"#,
                    "\\\"".repeat(7_000)
                )),
            ),
            422,
        ),
        (
            "15 KB unknown member name",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"{}":1,"product":"x","quantity":1}}"#,
                    "k".repeat(15_000)
                )),
            ),
            422,
        ),
        (
            "unknown member of characters escaped as \\u{10ffff}",
            storm_event(next(), with_body(unknown_member(&"\u{10ffff}".repeat(100)))),
            422,
        ),
        (
            "unknown member of control characters",
            storm_event(next(), with_body(unknown_member(&"\\u0001".repeat(100)))),
            422,
        ),
        (
            "unknown member of quotes and backslashes",
            storm_event(next(), with_body(unknown_member(&"\\\"\\\\".repeat(50)))),
            422,
        ),
        (
            "unknown member of 4-byte characters",
            storm_event(next(), with_body(unknown_member(&"😀".repeat(100)))),
            422,
        ),
        (
            "15 KB number as the quantity",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"product":"x","quantity":{}}}"#,
                    "9".repeat(15_000)
                )),
            ),
            422,
        ),
        (
            "a duplicate product member",
            storm_event(
                next(),
                body(r#"{"product":"Tea","product":"Coffee","quantity":1}"#),
            ),
            422,
        ),
        (
            "a gzip content encoding",
            storm_event(next(), |e| {
                e["headers"]["content-encoding"] = "gzip".into();
            }),
            415,
        ),
        (
            "5,000 nested arrays (under the size limit)",
            storm_event(
                next(),
                with_body(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000))),
            ),
            422,
        ),
        (
            "2,000 nested objects (under the size limit)",
            storm_event(
                next(),
                with_body(format!("{}{}", "{\"a\":".repeat(2_000), "}".repeat(2_000))),
            ),
            400,
        ),
        (
            "10,000 nested arrays",
            storm_event(next(), with_body(nested("[", "]"))),
            413,
        ),
        (
            "10,000 nested objects",
            storm_event(next(), with_body(nested("{\"a\":", "}"))),
            413,
        ),
        (
            "quantity 0",
            storm_event(next(), body(r#"{"product":"Tea","quantity":0}"#)),
            422,
        ),
        (
            "quantity 1001",
            storm_event(next(), body(r#"{"product":"Tea","quantity":1001}"#)),
            422,
        ),
        (
            "negative quantity",
            storm_event(next(), body(r#"{"product":"Tea","quantity":-5}"#)),
            422,
        ),
        (
            "quantity 1e30",
            storm_event(next(), body(r#"{"product":"Tea","quantity":1e30}"#)),
            422,
        ),
        (
            "quantity beyond u64",
            storm_event(
                next(),
                body(r#"{"product":"Tea","quantity":99999999999999999999}"#),
            ),
            422,
        ),
        (
            "fractional quantity",
            storm_event(next(), body(r#"{"product":"Tea","quantity":2.5}"#)),
            422,
        ),
        (
            "quantity as a string",
            storm_event(next(), body(r#"{"product":"Tea","quantity":"2"}"#)),
            422,
        ),
        (
            "product as a number",
            storm_event(next(), body(r#"{"product":5,"quantity":1}"#)),
            422,
        ),
        (
            "null product",
            storm_event(next(), body(r#"{"product":null,"quantity":1}"#)),
            422,
        ),
        ("array body", storm_event(next(), body("[]")), 422),
        (
            "order as an array",
            storm_event(next(), body(r#"["Tea",1]"#)),
            422,
        ),
        ("string body", storm_event(next(), body("\"order\"")), 422),
        ("number body", storm_event(next(), body("5")), 422),
        ("null body", storm_event(next(), body("null")), 422),
        (
            "extra field",
            storm_event(next(), body(r#"{"product":"Tea","quantity":1,"price":0}"#)),
            422,
        ),
        (
            "missing quantity",
            storm_event(next(), body(r#"{"product":"Tea"}"#)),
            422,
        ),
        (
            "missing product",
            storm_event(next(), body(r#"{"quantity":1}"#)),
            422,
        ),
        (
            "blank product",
            storm_event(next(), body(r#"{"product":"  ","quantity":1}"#)),
            422,
        ),
        (
            "201-character product",
            storm_event(
                next(),
                with_body(format!(
                    r#"{{"product":"{}","quantity":1}}"#,
                    "p".repeat(201)
                )),
            ),
            422,
        ),
        (
            "NUL in product",
            storm_event(next(), body(r#"{"product":"T\u0000ea","quantity":1}"#)),
            422,
        ),
        (
            "duplicate field",
            storm_event(
                next(),
                body(r#"{"product":"a","product":"b","quantity":1}"#),
            ),
            422,
        ),
        (
            "base64 flag on invalid base64",
            storm_event(next(), |e| {
                e["isBase64Encoded"] = true.into();
                e["body"] = "%%%not base64%%%".into()
            }),
            400,
        ),
        (
            "base64 of non-JSON",
            storm_event(next(), |e| {
                e["isBase64Encoded"] = true.into();
                e["body"] = b64("not json").into()
            }),
            400,
        ),
        (
            "base64 JSON sent as text/plain",
            storm_event(next(), |e| {
                e["isBase64Encoded"] = true.into();
                e["body"] = b64(TEA).into();
                e["headers"]["content-type"] = "text/plain".into()
            }),
            415,
        ),
        // Content types.
        (
            "text/plain",
            storm_event(next(), |e| {
                e["headers"]["content-type"] = "text/plain".into()
            }),
            415,
        ),
        (
            "no content-type",
            storm_event(next(), |e| {
                drop(e["headers"].as_object_mut().unwrap().remove("content-type"))
            }),
            415,
        ),
        (
            "application/xml",
            storm_event(next(), |e| {
                e["headers"]["content-type"] = "application/xml".into()
            }),
            415,
        ),
        (
            "multipart form data",
            storm_event(next(), |e| {
                e["headers"]["content-type"] = "multipart/form-data".into()
            }),
            415,
        ),
        // Methods and paths.
        ("unknown route", path_event("GET", "/nope"), 404),
        ("DELETE /orders", path_event("DELETE", "/orders"), 405),
        ("PATCH /orders", path_event("PATCH", "/orders"), 405),
        (
            "PUT /orders/{id}",
            path_event("PUT", &format!("/orders/{uuid}")),
            405,
        ),
        (
            "POST /orders/{id}",
            path_event("POST", &format!("/orders/{uuid}")),
            405,
        ),
        (
            "id that is not a UUID",
            path_event("GET", "/orders/not-a-uuid"),
            404,
        ),
        ("trailing slash", path_event("GET", "/orders/"), 404),
        ("upper-case route", path_event("GET", "/ORDERS"), 404),
        (
            "path below an order",
            path_event("GET", &format!("/orders/{uuid}/items")),
            404,
        ),
        (
            "percent-encoded NUL id",
            path_event("GET", "/orders/%00"),
            404,
        ),
        (
            "path with a space",
            path_event("GET", "/orders with space"),
            404,
        ),
        // Events that are not what API Gateway sends.
        ("not an HTTP event", serde_json::json!({"not": "http"}), 400),
        ("an array", serde_json::json!([1, 2, 3]), 400),
        ("null", Value::Null, 400),
        ("a string", serde_json::json!("GET /orders"), 400),
        (
            "no requestContext",
            storm_event(next(), |e| {
                drop(e.as_object_mut().unwrap().remove("requestContext"))
            }),
            400,
        ),
        (
            "body that is a number",
            storm_event(next(), |e| e["body"] = 5.into()),
            400,
        ),
        (
            "headers that are a list",
            storm_event(next(), |e| e["headers"] = serde_json::json!(["a"])),
            400,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_malformed_requests_gets_clean_4xx_problems_and_creates_nothing() {
    let redis = RedisServer::start();
    let env = function_env(&redis.url(), &[("PROBLEM_TYPE_BASE", LONGEST_BASE)]);
    let lambda = Harness::start(&release_binary("idempotent-orders"), vec![env]).await;
    let cases = bad_inputs();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut sent = 0;
    let mut largest = (0, String::new());
    for (name, v2, expected) in &cases {
        let shapes = [
            ("HTTP API", Some(v2.clone())),
            ("REST", as_rest_event(v2)),
            ("function URL", as_function_url_event(v2)),
        ];
        for (shape, event) in shapes {
            let Some(event) = event else { continue };
            sent += 1;
            let name = format!("{name} ({shape})");
            check(
                &lambda,
                &name,
                &event,
                *expected,
                &mut failures,
                &mut largest,
            )
            .await;
        }
    }
    println!(
        "{} cases, {sent} requests; the largest answer: {} bytes ({})",
        cases.len(),
        largest.0,
        largest.1
    );
    assert!(sent > 2 * cases.len(), "{sent} requests");
    assert!(lambda.is_alive(0), "{}", lambda.logs(0));
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(redis.orders(), 0, "no malformed request created an order");
    assert_eq!(
        redis.count("idempotency:*"),
        0,
        "no refusal is stored: a corrected request may reuse its key"
    );
}

/// Sends `event` and notes in `failures` how its answer differs from a
/// small, well-formed `expected` problem; keeps the largest answer seen.
async fn check(
    lambda: &Harness,
    name: &str,
    event: &Value,
    expected: u16,
    failures: &mut Vec<String>,
    largest: &mut (usize, String),
) {
    {
        let outcome = lambda.invoke(0, event, DEADLINE).await;
        let Outcome::Response { response, .. } = &outcome else {
            failures.push(format!("{name}: {outcome:?}"));
            return;
        };
        let problem = response.json();
        let well_formed = response.header("content-type") == Some("application/problem+json")
            && problem["status"] == expected
            && ["type", "title", "detail"]
                .iter()
                .all(|f| problem[f].is_string());
        // Small whatever the input: the detail never echoes more than a
        // short excerpt of it.
        let small = response.body.len() < MAX_ANSWER_BYTES;
        if response.body.len() > largest.0 {
            *largest = (response.body.len(), name.to_owned());
        }
        if response.status != expected || !well_formed || !small {
            failures.push(format!(
                "{name}: expected {expected}, got {} ({} bytes) {}",
                response.status,
                response.body.len(),
                String::from_utf8_lossy(&response.body)
            ));
        }
    }
}
