//! `Settings` from the environment and their defaults.

use super::*;
use std::collections::HashMap;

fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn an_empty_environment_gives_the_defaults() {
    let s = from(&[]).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.key_header, "idempotency-key");
    assert!(s.fingerprint_ignore.is_empty());
    assert_eq!(s.local_cache_bytes, 0);
    assert!(!s.scope.allows_anonymous());
}

#[test]
fn every_variable_is_read() {
    let s = from(&[
        ("IDEMPOTENCY_KEY_PREFIX", "idem"),
        ("IDEMPOTENCY_RETENTION_SECS", "3600"),
        ("IDEMPOTENCY_LEASE_SECS", "10"),
        ("IDEMPOTENCY_KEY_REQUIRED", "false"),
        ("IDEMPOTENCY_METHODS", "post, put"),
        ("IDEMPOTENCY_MAX_REQUEST_BYTES", "100"),
        ("IDEMPOTENCY_MAX_RECORD_BYTES", "200"),
        ("METRICS_NAMESPACE", "Shop/Orders"),
        ("PROBLEM_TYPE_BASE", "https://x.example/problems/"),
        ("IDEMPOTENCY_KEY_HEADER", "X-Request-Key"),
        (
            "IDEMPOTENCY_FINGERPRINT_IGNORE",
            "/client_ts, /meta/trace_id",
        ),
        ("IDEMPOTENCY_LOCAL_CACHE_BYTES", "1048576"),
        ("IDEMPOTENCY_SCOPE", "jwt,anonymous"),
    ])
    .unwrap();
    assert_eq!(s.key_prefix, "idem");
    assert_eq!(s.retention, Duration::from_secs(3600));
    assert_eq!(s.lease, Duration::from_secs(10));
    assert!(!s.key_required);
    assert_eq!(s.methods, vec![Method::POST, Method::PUT]);
    assert_eq!((s.max_request_bytes, s.max_record_bytes), (100, 200));
    assert_eq!(s.metrics_namespace.as_deref(), Some("Shop/Orders"));
    assert_eq!(s.problem_type_base, "https://x.example/problems/");
    assert_eq!(s.key_header, "x-request-key");
    let ignored: Vec<String> = s.fingerprint_ignore.iter().map(|p| p.to_string()).collect();
    assert_eq!(ignored, vec!["/client_ts", "/meta/trace_id"]);
    assert_eq!(s.local_cache_bytes, 1 << 20);
    assert_eq!(s.scope.to_string(), "jwt,anonymous");
}

#[test]
fn bad_values_name_the_variable() {
    for (var, value) in [
        ("IDEMPOTENCY_RETENTION_SECS", "0"),
        ("IDEMPOTENCY_LEASE_SECS", "-5"),
        ("IDEMPOTENCY_KEY_REQUIRED", "maybe"),
        ("IDEMPOTENCY_METHODS", "PO ST"),
        ("IDEMPOTENCY_KEY_PREFIX", "has space"),
        ("IDEMPOTENCY_MAX_REQUEST_BYTES", "lots"),
        ("IDEMPOTENCY_RETENTION_SECS", "99999999999999"),
        ("IDEMPOTENCY_LEASE_SECS", "901"),
        ("IDEMPOTENCY_LEASE_SECS", "0"),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", "client_ts"),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", "/a,/b~2"),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", ","),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", ", ,"),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", "/a,"),
        ("IDEMPOTENCY_FINGERPRINT_IGNORE", "/a,,/b"),
        ("IDEMPOTENCY_KEY_HEADER", ""),
        ("IDEMPOTENCY_KEY_HEADER", "  "),
        ("IDEMPOTENCY_KEY_HEADER", "Idempotency Key"),
        ("IDEMPOTENCY_KEY_HEADER", "Idempotency-Key:"),
        ("IDEMPOTENCY_LOCAL_CACHE_BYTES", "lots"),
        ("IDEMPOTENCY_LOCAL_CACHE_BYTES", "-1"),
        ("IDEMPOTENCY_SCOPE", "jwt,cookie"),
    ] {
        let err = from(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
        assert!(err.to_string().contains(var));
    }
}

#[test]
fn an_empty_or_blank_pointer_list_means_no_pointers() {
    for value in ["", "  "] {
        let s = from(&[("IDEMPOTENCY_FINGERPRINT_IGNORE", value)]).unwrap();
        assert!(s.fingerprint_ignore.is_empty(), "{value:?}");
    }
}

#[test]
fn the_lease_is_three_seconds_whatever_the_deadline() {
    assert_eq!(Settings::default().claim_lease(), Duration::from_secs(3));
    let zero = Settings {
        lease: Duration::ZERO,
        ..Settings::default()
    };
    assert_eq!(zero.claim_lease(), Duration::from_millis(1), "never PX 0");
}

#[test]
fn retired_lease_variables_are_ignored_not_refused() {
    let s = from(&[
        ("IDEMPOTENCY_LEASE_CAP_SECS", "900"),
        ("IDEMPOTENCY_DEFAULT_LEASE_SECS", "60"),
    ])
    .unwrap();
    assert_eq!(s.lease, Duration::from_secs(3));
}

#[test]
fn post_and_patch_are_covered_by_default() {
    let s = Settings::default();
    assert!(s.covers(&Method::POST) && s.covers(&Method::PATCH));
    assert!(!s.covers(&Method::GET));
}
