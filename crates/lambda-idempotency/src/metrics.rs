//! CloudWatch Embedded Metric Format (EMF): one JSON line per request on
//! stdout, which CloudWatch Logs turns into metrics with no SDK call and no
//! extra latency.
//!
//! Each line counts one request (`Requests`) under the dimensions
//! `FunctionName` and `Outcome` (`executed`, `replayed`, `in_progress`,
//! `store_error`, `completion_failed`, …), and records the layer's own
//! overhead in milliseconds (the request's time minus the handler's), so
//! an alarm can watch, say, `Outcome=store_error` of one function.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// Name of the request-count metric.
pub(crate) const REQUESTS_METRIC: &str = "Requests";
/// Name of the overhead metric.
pub(crate) const OVERHEAD_METRIC: &str = "IdempotencyOverhead";

/// The EMF line for one request.
pub(crate) fn emf_line(
    namespace: &str,
    function: &str,
    outcome: &str,
    overhead: Duration,
    timestamp_ms: u64,
) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName", "Outcome"]],
                "Metrics": [
                    { "Name": REQUESTS_METRIC, "Unit": "Count" },
                    { "Name": OVERHEAD_METRIC, "Unit": "Milliseconds" }
                ]
            }]
        },
        "FunctionName": function,
        "Outcome": outcome,
        REQUESTS_METRIC: 1,
        OVERHEAD_METRIC: round_ms(overhead),
    })
    .to_string()
}

/// Milliseconds with microsecond precision, for logs and metrics.
pub(crate) fn round_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Writes the EMF line for one request to stdout, in one `write` call so
/// the line is never interleaved with a log line.
pub(crate) fn emit(namespace: &str, function: &str, outcome: &str, overhead: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut line = emf_line(namespace, function, outcome, overhead, now);
    line.push('\n');
    // Metrics are best effort: a closed stdout must not fail the request.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emf_line_counts_the_request_under_function_and_outcome() {
        let line = emf_line(
            "Orders",
            "fn-1",
            "replayed",
            Duration::from_micros(1500),
            42,
        );
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &json["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(json["_aws"]["Timestamp"], 42);
        assert_eq!(directive["Namespace"], "Orders");
        assert_eq!(directive["Dimensions"][0][0], "FunctionName");
        assert_eq!(directive["Dimensions"][0][1], "Outcome");
        assert_eq!(directive["Metrics"][0]["Name"], REQUESTS_METRIC);
        assert_eq!(directive["Metrics"][0]["Unit"], "Count");
        assert_eq!(directive["Metrics"][1]["Name"], OVERHEAD_METRIC);
        assert_eq!(json["FunctionName"], "fn-1");
        assert_eq!(json["Outcome"], "replayed");
        assert_eq!(json[REQUESTS_METRIC], 1);
        assert_eq!(json[OVERHEAD_METRIC], 1.5);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn milliseconds_are_rounded_to_microseconds() {
        assert_eq!(round_ms(Duration::from_nanos(1_234_567)), 1.235);
    }
}
