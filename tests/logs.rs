//! Logs, end to end through the release binary (Runtime API harness): the
//! one line every request writes (with metrics on, both its log record and
//! its EMF metric), and that a line written during an invocation names that
//! invocation and no other: one invocation at a time, and eight at once in
//! one process (Lambda Managed Instances), in JSON and in text. An event
//! the runtime loop cannot read is reported to Lambda with its error line
//! under its own ids, and the process serves on.
//!
//! The harness hands each invocation its own request id and X-Ray trace id
//! (`testkit::harness::trace_id`), and each request with a key a Lambda
//! tenant id of its own (as under tenant isolation mode; requests without
//! a key get none), so a line can be checked against the invocation whose
//! response it describes: same request id, trace id and tenant id, same
//! status, same key.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use testkit::harness::{
    function_env as env, order_event as order, release_binary, trace_id, Harness, Outcome,
};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;
const TWO_TEAS: &str = r#"{"product":"Tea","quantity":2}"#;
const JSON_AT_INFO: [(&str, &str); 3] = [
    ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ("RUST_LOG", "info"),
];
const CONCURRENCY: usize = 8;

/// `key`'s order event, or one without an `Idempotency-Key` for `None`.
fn event(key: Option<&str>, body: &str) -> Value {
    let mut event = order(key.unwrap_or("-"), body);
    if key.is_none() {
        event["headers"]
            .as_object_mut()
            .unwrap()
            .remove("idempotency-key");
    }
    event
}

/// One invocation as the harness saw it.
struct Invocation {
    key: Option<String>,
    tenant: Option<String>,
    request_id: String,
    status: u16,
}

/// The Lambda tenant a request with `key` is sent in: one per key (so the
/// same key still meets its earlier requests), none without a key. Upper
/// case, so that a line naming it does not look like one quoting the key.
fn tenant_of(key: Option<&str>) -> Option<String> {
    key.map(|key| format!("TENANT-{}", key.to_ascii_uppercase()))
}

/// Runs `events` through one process started with `vars`, one at a time
/// or, with `AWS_LAMBDA_MAX_CONCURRENCY` in `vars`, all at once; returns
/// what it wrote once every line has been flushed, and the invocations.
async fn run(events: Vec<Value>, vars: &[(&str, &str)]) -> (String, Vec<Invocation>) {
    let redis = RedisServer::start();
    let concurrency = vars
        .iter()
        .find(|(name, _)| *name == "AWS_LAMBDA_MAX_CONCURRENCY")
        .map_or(1, |(_, v)| v.parse().unwrap());
    let lambda = Harness::start(
        &release_binary("idempotent-orders"),
        vec![env(&redis.url(), vars)],
    )
    .await;
    lambda.wait_parked(0, concurrency).await;
    let keys: Vec<Option<String>> = events
        .iter()
        .map(|e| e["headers"]["idempotency-key"].as_str().map(str::to_owned))
        .collect();
    let outcomes = if concurrency == 1 {
        let mut outcomes = Vec::new();
        for (event, key) in events.iter().zip(&keys) {
            outcomes.push(match tenant_of(key.as_deref()) {
                Some(tenant) => lambda.invoke_in_tenant(0, event, DEADLINE, &tenant).await,
                None => lambda.invoke(0, event, DEADLINE).await,
            });
        }
        outcomes
    } else {
        let all = events
            .into_iter()
            .zip(&keys)
            .map(|(e, key)| (0, e, tenant_of(key.as_deref())))
            .collect();
        lambda.invoke_many_in_tenants(all, DEADLINE).await
    };
    let invocations = keys
        .into_iter()
        .zip(outcomes)
        .map(|(key, outcome)| Invocation {
            tenant: tenant_of(key.as_deref()),
            key,
            request_id: outcome.request_id().expect("an answer").to_owned(),
            status: outcome.response().status,
        })
        .collect();
    // Each line is written after its response; a worker asks for the next
    // event only after that.
    lambda.wait_parked(0, concurrency).await;
    (lambda.logs(0), invocations)
}

/// The requests of the one-at-a-time checks, and the outcome each must log.
fn logged_requests() -> (Vec<Value>, [&'static str; 4]) {
    let events = vec![
        event(Some("emf-1"), TEA),
        event(Some("emf-1"), TEA),
        event(Some("emf-1"), TWO_TEAS),
        event(None, TEA),
    ];
    (events, ["executed", "replayed", "mismatch", "missing_key"])
}

/// Twelve keys, each sent three times (twice the same body, once another),
/// and four requests without a key, interleaved: at concurrency 8 their
/// outcomes (executed, replayed, in progress, mismatch, missing key)
/// depend on timing, their lines must not.
fn concurrent_requests() -> Vec<Value> {
    let mut events = Vec::new();
    for round in 0..3 {
        for k in 0..12 {
            let body = if round == 2 { TWO_TEAS } else { TEA };
            events.push(event(Some(&format!("mix-{k}")), body));
        }
        if round < 2 {
            events.push(event(None, TEA));
            events.push(event(None, TWO_TEAS));
        }
    }
    events
}

/// What a line says about the invocation it was written in.
#[derive(Debug, Default)]
struct Logged {
    request_id: Option<String>,
    trace_id: Option<String>,
    tenant_id: Option<String>,
    /// The request's outcome line: outcome, status and key hash.
    outcome: Option<(String, u16, String)>,
}

fn parse_json(line: &str) -> Logged {
    let json: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let text = |v: &Value| v.as_str().map(str::to_owned);
    // The metric line has the outcome at the top; a log line in `fields`.
    let fields = if json["_aws"].is_object() {
        &json
    } else {
        &json["fields"]
    };
    let outcome = text(&fields["outcome"]).map(|outcome| {
        let status = fields["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("{line}"));
        let hash = text(&fields["key_hash"]).unwrap_or_else(|| panic!("{line}"));
        (outcome, u16::try_from(status).unwrap(), hash)
    });
    Logged {
        request_id: text(&json["requestId"]),
        trace_id: text(&json["xrayTraceId"]),
        tenant_id: text(&json["tenantId"]),
        outcome,
    }
}

/// A text line: `<request id> INFO idempotency outcome="…" key_hash="…"
/// status=201 …` inside an invocation, colour codes (if any) stripped.
fn parse_text(line: &str, ids: &HashMap<&str, &Invocation>) -> Logged {
    let plain = strip_ansi(line);
    let first = plain.split_whitespace().next().unwrap_or("");
    let field = |name: &str| {
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let outcome = field("outcome").map(|outcome| {
        let status = field("status").and_then(|s| s.parse().ok());
        let hash = field("key_hash");
        (outcome, status.expect(line), hash.expect(line))
    });
    Logged {
        request_id: ids.contains_key(first).then(|| first.to_owned()),
        trace_id: None,
        tenant_id: None,
        outcome,
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks that every invocation wrote exactly one outcome line, under its
/// own request id, with its own status, and with a key hash that is the
/// same for the same key and different for different keys; that every line
/// naming a request id names one of them; and that JSON log lines carry
/// that invocation's trace id. Returns the outcomes, in invocation order.
fn check_lines_name_their_invocations(
    logs: &str,
    invocations: &[Invocation],
    json: bool,
) -> Vec<String> {
    let by_id: HashMap<&str, &Invocation> = invocations
        .iter()
        .map(|inv| (inv.request_id.as_str(), inv))
        .collect();
    assert_eq!(by_id.len(), invocations.len(), "one request id each");
    let mut outcomes: HashMap<&str, String> = HashMap::new();
    let mut hashes: HashMap<Option<&str>, String> = HashMap::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let logged = if json {
            parse_json(line)
        } else {
            parse_text(line, &by_id)
        };
        let Some(id) = logged.request_id.as_deref() else {
            assert!(logged.outcome.is_none(), "nameless outcome line: {line}");
            continue;
        };
        let inv = by_id
            .get(id)
            .unwrap_or_else(|| panic!("names no invocation: {line}"));
        if json {
            assert_eq!(logged.trace_id, Some(trace_id(id)), "{line}");
            assert_eq!(logged.tenant_id, inv.tenant, "{line}");
        }
        let Some((outcome, status, hash)) = logged.outcome else {
            continue;
        };
        assert_eq!(status, inv.status, "another invocation's status: {line}");
        assert!(
            !line.contains("mix-") && !line.contains("emf-1"),
            "raw key: {line}"
        );
        let previous = outcomes.insert(&inv.request_id, outcome);
        assert!(previous.is_none(), "two outcome lines for {id}:\n{logs}");
        let same_key = hashes.entry(inv.key.as_deref()).or_insert(hash.clone());
        assert_eq!(*same_key, hash, "another key's hash: {line}");
    }
    let mut distinct: Vec<&String> = hashes.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), hashes.len(), "one hash per key: {hashes:?}");
    invocations
        .iter()
        .map(|inv| {
            outcomes
                .remove(inv.request_id.as_str())
                .unwrap_or_else(|| panic!("no outcome line for {}:\n{logs}", inv.request_id))
        })
        .collect()
}

/// `base`'s variables, then `more`'s.
fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_writes_one_json_line_that_is_both_its_log_record_and_its_metric() {
    let vars = with(&JSON_AT_INFO, &[("METRICS_NAMESPACE", "Test/Orders")]);
    let (logs, invocations) = run(logged_requests().0, &vars).await;
    for line in logs.lines().filter(|l| l.contains("CloudWatchMetrics")) {
        let json: Value = serde_json::from_str(line).unwrap();
        let directive = &json["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Test/Orders");
        assert_eq!(directive["Metrics"][0]["Name"], "Requests");
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["FunctionName", "Outcome"])
        );
        assert_eq!(json["Requests"], 1);
        assert_eq!(json["FunctionName"], "idempotent-orders");
        assert!(json["IdempotencyOverhead"].as_f64().unwrap() >= 0.0);
        assert_eq!(json["outcome"], json["Outcome"]);
    }
    assert!(
        !logs.contains(r#""fields":{"message":"idempotency""#),
        "no separate log line when the metric line carries it:\n{logs}"
    );
    let outcomes = check_lines_name_their_invocations(&logs, &invocations, true);
    assert_eq!(outcomes, logged_requests().1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_every_request_logs_one_json_line_with_its_outcome_and_request_id() {
    let vars = with(&JSON_AT_INFO, &[("METRICS_NAMESPACE", "")]);
    let (logs, invocations) = run(logged_requests().0, &vars).await;
    assert!(
        !logs.contains("CloudWatchMetrics"),
        "no metric line:\n{logs}"
    );
    let outcomes = check_lines_name_their_invocations(&logs, &invocations, true);
    assert_eq!(outcomes, logged_requests().1, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_invocations_at_once_in_one_process_each_write_their_metric_line_under_their_own_request_id(
) {
    let vars = with(&JSON_AT_INFO, &[("METRICS_NAMESPACE", "Test/Orders")]);
    check_at_concurrency_8(&vars, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_invocations_at_once_in_one_process_each_log_under_their_own_request_and_trace_id() {
    let vars = with(&JSON_AT_INFO, &[("METRICS_NAMESPACE", "")]);
    check_at_concurrency_8(&vars, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_lines_start_with_their_own_invocations_request_id_at_concurrency_8() {
    let vars = [
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("RUST_LOG", "info"),
        ("METRICS_NAMESPACE", ""),
    ];
    check_at_concurrency_8(&vars, false).await;
}

/// Runs [`concurrent_requests`] through one process at concurrency 8 with
/// `vars`, and checks its lines (`json`, or text).
async fn check_at_concurrency_8(vars: &[(&str, &str)], json: bool) {
    let level = CONCURRENCY.to_string();
    let vars = with(vars, &[("AWS_LAMBDA_MAX_CONCURRENCY", &level)]);
    let (logs, invocations) = run(concurrent_requests(), &vars).await;
    assert_eq!(
        logs.contains("{\""),
        json,
        "JSON or text, as asked:\n{logs}"
    );
    let outcomes = check_lines_name_their_invocations(&logs, &invocations, json);
    assert_mixed(&outcomes);
}

/// Each key ran once, and the other outcomes are there too.
fn assert_mixed(outcomes: &[String]) {
    let count = |name: &str| outcomes.iter().filter(|o| *o == name).count();
    assert_eq!(count("executed"), 12, "{outcomes:?}");
    assert_eq!(count("missing_key"), 4, "{outcomes:?}");
    assert_eq!(
        count("replayed") + count("in_progress") + count("mismatch"),
        24,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_is_not_json_is_reported_as_an_error_logged_under_its_ids_and_the_process_serves_on(
) {
    let redis = RedisServer::start();
    let lambda = Harness::start(
        &release_binary("idempotent-orders"),
        vec![env(&redis.url(), &JSON_AT_INFO)],
    )
    .await;
    let broken = lambda.invoke_bytes(0, b"{not json", DEADLINE).await;
    let Outcome::FunctionError {
        body, request_id, ..
    } = &broken
    else {
        panic!("expected an error report, got {broken:?}");
    };
    let report: Value = serde_json::from_str(body).unwrap();
    assert!(
        report["errorMessage"]
            .as_str()
            .unwrap()
            .contains("key must be a string"),
        "{body}"
    );
    let next = lambda
        .invoke(0, &event(Some("after-the-broken-one"), TEA), DEADLINE)
        .await;
    assert_eq!(next.response().status, 201);

    let logs = lambda.logs(0);
    let error = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line:\n{logs}"));
    assert_eq!(error["requestId"], request_id.as_str(), "{error}");
    assert_eq!(
        error["xrayTraceId"],
        trace_id(request_id).as_str(),
        "{error}"
    );
}
