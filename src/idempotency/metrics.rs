//! CloudWatch Embedded Metric Format (EMF): one JSON line per request on
//! stdout, which CloudWatch Logs turns into metrics with no SDK call and no
//! extra latency.
//!
//! Each line counts the request's outcome (`executed`, `replayed`,
//! `in_progress`, `mismatch`, `store_error`, …) and the layer's own
//! overhead in milliseconds (the request's time minus the handler's).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// Name of the overhead metric.
pub const OVERHEAD_METRIC: &str = "IdempotencyOverhead";

/// The EMF line for one request.
pub fn emf_line(namespace: &str, outcome: &str, overhead: Duration, timestamp_ms: u64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": [
                    { "Name": outcome, "Unit": "Count" },
                    { "Name": OVERHEAD_METRIC, "Unit": "Milliseconds" }
                ]
            }]
        },
        outcome: 1,
        OVERHEAD_METRIC: overhead.as_secs_f64() * 1000.0,
    })
    .to_string()
}

/// Writes the EMF line for one request to stdout (one `write` call, so the
/// line is never interleaved with a log line).
pub fn emit(namespace: &str, outcome: &str, overhead: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut line = emf_line(namespace, outcome, overhead, now);
    line.push('\n');
    // Metrics are best effort: a closed stdout must not fail the request.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_the_outcome_count_and_overhead() {
        let line = emf_line("Orders", "replayed", Duration::from_micros(1500), 42);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &json["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(json["_aws"]["Timestamp"], 42);
        assert_eq!(directive["Namespace"], "Orders");
        assert_eq!(directive["Metrics"][0]["Name"], "replayed");
        assert_eq!(directive["Metrics"][0]["Unit"], "Count");
        assert_eq!(directive["Metrics"][1]["Name"], OVERHEAD_METRIC);
        assert_eq!(json["replayed"], 1);
        assert_eq!(json[OVERHEAD_METRIC], 1.5);
        assert!(!line.contains('\n'));
    }
}
