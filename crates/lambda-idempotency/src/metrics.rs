//! One line per request that is both the log record and a CloudWatch
//! Embedded Metric Format (EMF) metric: CloudWatch Logs keeps the line and
//! turns its `_aws` directive into metrics, with no SDK call and no extra
//! latency. One line rather than a log line plus a metric line halves what
//! every request writes to stdout, which the benchmark showed costs a
//! quarter of a Redis round trip per line.
//!
//! The metric `Requests` counts one request under the dimensions
//! `FunctionName` and `Outcome` (`executed`, `replayed`, `in_progress`,
//! `store_error`, `completion_failed`, …), so an alarm can watch, say,
//! `Outcome=store_error` of one function; `IdempotencyOverhead` is the
//! layer's own time in milliseconds (the request's time minus the
//! handler's). The log fields (`outcome`, `key_hash`, `status`,
//! `duration_ms`) and the invocation's ids (`requestId`, and `xrayTraceId`
//! and `tenantId` when Lambda passed them, named as in Lambda's own JSON
//! log format) ride along as plain properties.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::Context;

/// Name of the request-count metric.
pub(crate) const REQUESTS_METRIC: &str = "Requests";
/// Name of the overhead metric.
pub(crate) const OVERHEAD_METRIC: &str = "IdempotencyOverhead";

/// What one request's line says besides the metric.
pub(crate) struct Line<'a> {
    pub(crate) outcome: &'static str,
    pub(crate) key_hash: &'a str,
    pub(crate) status: u16,
    pub(crate) duration: Duration,
    pub(crate) overhead: Duration,
    pub(crate) ids: &'a InvocationIds,
}

/// The ids Lambda names an invocation by (request id, X-Ray trace id,
/// tenant id), as the lines written for it carry them: the JSON properties
/// `requestId`, `xrayTraceId` and `tenantId` of Lambda's own JSON log
/// format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvocationIds {
    request_id: String,
    xray_trace_id: Option<String>,
    tenant_id: Option<String>,
}

impl InvocationIds {
    /// The ids of the invocation `context` describes.
    pub fn of(context: &Context) -> Self {
        Self {
            request_id: context.request_id.clone(),
            xray_trace_id: context.xray_trace_id.clone(),
            tenant_id: context.tenant_id.clone(),
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The JSON properties, in order; the ids Lambda did not pass left
    /// out.
    pub fn properties(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("requestId", Some(self.request_id.as_str())),
            ("xrayTraceId", self.xray_trace_id.as_deref()),
            ("tenantId", self.tenant_id.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// The part of every line that never changes for a layer: made once.
pub(crate) struct Emf {
    /// `,"CloudWatchMetrics":[…]},"FunctionName":"…"`
    tail: Arc<str>,
    /// Where lines wait for the response to be sent, if they do.
    deferred: Option<DeferredLines>,
}

/// `{"_aws":{"Timestamp":`, the start of every line.
const HEAD: &str = r#"{"_aws":{"Timestamp":"#;

/// Per-request lines held back until the response has been sent.
///
/// Writing the line costs the request a `write` to stdout before its
/// response can leave, and formatting it a few thousand instructions.
/// Given to
/// [`IdempotencyLayerBuilder::defer_lines`](crate::IdempotencyLayerBuilder::defer_lines),
/// the layer keeps each line's values here instead, and whoever runs the
/// function calls [`DeferredLines::flush`] once the response is out: with
/// `lambda_runtime`, a `Runtime::layer` service that flushes after its
/// inner service (which posts the response) finished. Lambda freezes the
/// process only when it asks for the next event, so a line flushed before
/// that is never lost to a freeze.
#[derive(Clone, Default)]
pub struct DeferredLines(Arc<Mutex<Vec<Held>>>);

/// How many lines wait for the flush.
impl std::fmt::Debug for DeferredLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map_or(0, |lines| lines.len());
        f.debug_struct("DeferredLines")
            .field("held", &held)
            .finish()
    }
}

/// A line's values, as kept until the flush formats them.
struct Held {
    tail: Arc<str>,
    timestamp_ms: u64,
    outcome: &'static str,
    key_hash: String,
    status: u16,
    duration: Duration,
    overhead: Duration,
    ids: InvocationIds,
}

impl DeferredLines {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Formats every line held so far and writes them to stdout in one
    /// `write` call.
    pub fn flush(&self) {
        let lines = self.take_formatted();
        if !lines.is_empty() {
            // Best effort, as for a line written at once. Formatted before
            // stdout is locked, so that other writers do not wait on it.
            let _ = std::io::stdout().lock().write_all(lines.as_bytes());
        }
    }

    /// Every line held so far, formatted; they are no longer held.
    fn take_formatted(&self) -> String {
        let held = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        let mut out = String::with_capacity(held.len() * 512);
        for h in &held {
            let line = Line {
                outcome: h.outcome,
                key_hash: &h.key_hash,
                status: h.status,
                duration: h.duration,
                overhead: h.overhead,
                ids: &h.ids,
            };
            write_line(&mut out, &h.tail, &line, h.timestamp_ms);
        }
        out
    }

    fn hold(&self, held: Held) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(held);
    }
}

impl Emf {
    /// Lines for `namespace`, counted under `function`.
    pub(crate) fn new(namespace: &str, function: &str, deferred: Option<DeferredLines>) -> Self {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let tail = format!(
            r#","CloudWatchMetrics":[{{"Namespace":{},"Dimensions":[["FunctionName","Outcome"]],"Metrics":[{{"Name":"{REQUESTS_METRIC}","Unit":"Count"}},{{"Name":"{OVERHEAD_METRIC}","Unit":"Milliseconds"}}]}}]}},"FunctionName":{}"#,
            quote(namespace),
            quote(function)
        );
        Self {
            tail: tail.into(),
            deferred,
        }
    }

    /// The line for one request, at `timestamp_ms`, ending in a newline.
    #[cfg(test)]
    pub(crate) fn line(&self, line: &Line<'_>, timestamp_ms: u64) -> String {
        let mut out = String::new();
        write_line(&mut out, &self.tail, line, timestamp_ms);
        out
    }

    /// Writes the line for one request to stdout in one `write` call, so
    /// it is never interleaved with another line; or holds its values
    /// back, when lines are deferred.
    pub(crate) fn emit(&self, line: &Line<'_>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match &self.deferred {
            Some(deferred) => deferred.hold(Held {
                tail: Arc::clone(&self.tail),
                timestamp_ms: now,
                outcome: line.outcome,
                key_hash: line.key_hash.to_owned(),
                status: line.status,
                duration: line.duration,
                overhead: line.overhead,
                ids: line.ids.clone(),
            }),
            None => {
                let mut out = String::new();
                write_line(&mut out, &self.tail, line, now);
                // Metrics are best effort: a closed stdout must not fail the request.
                let _ = std::io::stdout().lock().write_all(out.as_bytes());
            }
        }
    }
}

/// Appends one request's line, ending in a newline, to `out`.
fn write_line(out: &mut String, tail: &str, line: &Line<'_>, timestamp_ms: u64) {
    out.reserve(tail.len() + 320);
    out.push_str(HEAD);
    let _ = write!(out, "{timestamp_ms}");
    out.push_str(tail);
    let outcome = line.outcome;
    let _ = write!(
        out,
        r#","Outcome":"{outcome}","{REQUESTS_METRIC}":1,"{OVERHEAD_METRIC}":{},"level":"INFO","message":"idempotency","outcome":"{outcome}","key_hash":"{}","status":{},"duration_ms":{}"#,
        round_ms(line.overhead),
        line.key_hash,
        line.status,
        round_ms(line.duration),
    );
    for (name, value) in line.ids.properties() {
        // The ids come from Lambda; quote them anyway.
        let quoted = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned());
        let _ = write!(out, r#","{name}":{quoted}"#);
    }
    out.push_str("}\n");
}

/// Milliseconds with microsecond precision, for logs and metrics.
pub(crate) fn round_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> &'static InvocationIds {
        static IDS: std::sync::OnceLock<InvocationIds> = std::sync::OnceLock::new();
        IDS.get_or_init(|| InvocationIds {
            request_id: "req-\"1\"".to_owned(),
            xray_trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793".to_owned()),
            tenant_id: Some("tenant-\\1".to_owned()),
        })
    }

    fn line() -> Line<'static> {
        Line {
            outcome: "replayed",
            key_hash: "ab12",
            status: 201,
            duration: Duration::from_micros(2500),
            overhead: Duration::from_micros(1500),
            ids: ids(),
        }
    }

    #[test]
    fn one_line_is_both_the_metric_and_the_log_record() {
        let text = Emf::new("Orders", "fn-1", None).line(&line(), 42);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let directive = &json["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(json["_aws"]["Timestamp"], 42);
        assert_eq!(directive["Namespace"], "Orders");
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["FunctionName", "Outcome"])
        );
        assert_eq!(directive["Metrics"][0]["Name"], REQUESTS_METRIC);
        assert_eq!(directive["Metrics"][0]["Unit"], "Count");
        assert_eq!(directive["Metrics"][1]["Name"], OVERHEAD_METRIC);
        assert_eq!(json["FunctionName"], "fn-1");
        assert_eq!(json["Outcome"], "replayed");
        assert_eq!(json[REQUESTS_METRIC], 1);
        assert_eq!(json[OVERHEAD_METRIC], 1.5);
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["outcome"], "replayed");
        assert_eq!(json["key_hash"], "ab12");
        assert_eq!(json["status"], 201);
        assert_eq!(json["duration_ms"], 2.5);
        assert_eq!(json["requestId"], "req-\"1\"");
        assert_eq!(
            json["xrayTraceId"],
            "Root=1-5759e988-bd862e3fe1be46a994272793"
        );
        assert_eq!(json["tenantId"], "tenant-\\1");
    }

    #[test]
    fn ids_lambda_did_not_pass_are_left_out() {
        let ids = InvocationIds {
            request_id: "r".to_owned(),
            ..InvocationIds::default()
        };
        let text = Emf::new("Orders", "fn-1", None).line(
            &Line {
                ids: &ids,
                ..line()
            },
            1,
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["requestId"], "r");
        let object = json.as_object().unwrap();
        assert!(!object.contains_key("xrayTraceId") && !object.contains_key("tenantId"));
    }

    #[test]
    fn the_ids_are_read_from_the_lambda_context() {
        let mut headers = lambda_http::http::HeaderMap::new();
        for (name, value) in [
            ("lambda-runtime-aws-request-id", "r-1"),
            ("lambda-runtime-deadline-ms", "1"),
            ("lambda-runtime-trace-id", "Root=1-a"),
            ("lambda-runtime-aws-tenant-id", "t-1"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        let context = Context::new("r-1", Default::default(), &headers).unwrap();
        let ids = InvocationIds::of(&context);
        assert_eq!(ids.request_id, "r-1");
        assert_eq!(ids.xray_trace_id.as_deref(), Some("Root=1-a"));
        assert_eq!(ids.tenant_id.as_deref(), Some("t-1"));
    }

    #[test]
    fn names_that_need_escaping_stay_valid_json() {
        let text = Emf::new("Ns\"x", "f\\n", None).line(&line(), 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Ns\"x");
        assert_eq!(json["FunctionName"], "f\\n");
    }

    #[test]
    fn deferred_lines_wait_for_the_flush() {
        let deferred = DeferredLines::new();
        let emf = Emf::new("Orders", "fn-1", Some(deferred.clone()));
        emf.emit(&line());
        emf.emit(&line());
        assert_eq!(deferred.0.lock().unwrap().len(), 2);
        let written = deferred.take_formatted();
        assert_eq!(written.lines().count(), 2, "{written}");
        let expected = emf.line(&line(), 42);
        for text in written.lines() {
            let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(json["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
            json["_aws"]["Timestamp"] = 42.into();
            assert_eq!(
                json,
                serde_json::from_str::<serde_json::Value>(&expected).unwrap()
            );
        }
        assert!(
            deferred.0.lock().unwrap().is_empty(),
            "flushed lines are gone"
        );
    }

    #[test]
    fn milliseconds_are_rounded_to_microseconds() {
        assert_eq!(round_ms(Duration::from_nanos(1_234_567)), 1.235);
    }
}
