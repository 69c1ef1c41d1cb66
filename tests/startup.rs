//! Start-up, through the release binary: every bad value that stops the
//! function stops it with exit status 1 and a message that names the
//! variable, never a panic, and never a secret from `REDIS_URL`. Each case
//! is one process, started as Lambda starts it (its variables only) with a
//! Runtime API address where nothing listens: a configuration that passes
//! gets as far as that, and fails there instead.

use std::path::PathBuf;
use std::process::Command;

use testkit::harness::release_binary;

/// What Lambda always sets.
const LAMBDA: [(&str, &str); 4] = [
    ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
    ("AWS_LAMBDA_FUNCTION_NAME", "f"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
];

/// A password no message may repeat.
const SECRET: &str = "s3cr3t-pw";

/// As a value in `vars`: the variable is removed instead. No environment
/// value can hold a NUL byte, so no real value is mistaken for it.
const UNSET: &str = "\0";

/// Runs the function with Lambda's variables, a Redis URL where nothing
/// listens, and `vars` (which win, [`UNSET`] removing one); returns its
/// exit code and what it wrote.
fn start_up(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(release_binary("idempotent-orders"));
    command
        .env_clear()
        .envs(LAMBDA)
        .env("REDIS_URL", "redis://127.0.0.1:9")
        .env("REDIS_CONNECT_AT_INIT", "false");
    for (name, value) in vars {
        match *value {
            UNSET => command.env_remove(name),
            value => command.env(name, value),
        };
    }
    let output = command.output().expect("run the function");
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    (output.status.code(), text)
}

/// A file in the test's own temporary directory holding `contents`.
fn file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a temporary file");
    path
}

fn assert_stops_naming(var: &str, vars: &[(&str, &str)]) {
    let (code, text) = start_up(vars);
    assert_eq!(code, Some(1), "{vars:?}: {text}");
    assert!(text.contains(var), "{vars:?} should name {var}: {text}");
    assert!(!text.contains("panicked"), "{vars:?}: {text}");
    assert!(
        !text.contains(SECRET),
        "{vars:?} echoes the password: {text}"
    );
}

#[test]
fn a_bad_redis_url_stops_start_up_naming_redis_url() {
    let with_password = format!("redis://:{SECRET}@h:6379");
    for url in [
        // What the URL parser accepts and the Redis client then refuses.
        "redis://h:6379/x".to_owned(),
        "redis://h:6379/?protocol=bogus".to_owned(),
        format!("{with_password}/not-a-number"),
        format!("{with_password}/?protocol=4"),
        "rediss://h:6380/#not-insecure".to_owned(),
        format!("redis://:{SECRET}@0.0.0.0:6379"),
        // What the URL parser refuses.
        format!("http://:{SECRET}@h:6379"),
        "not a url".to_owned(),
    ] {
        assert_stops_naming("REDIS_URL", &[("REDIS_URL", &url)]);
    }
    // Cluster mode cannot follow a Unix socket.
    assert_stops_naming(
        "REDIS_URL",
        &[
            ("REDIS_URL", "redis+unix:///tmp/redis.sock"),
            ("REDIS_CLUSTER", "true"),
        ],
    );
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_start_up_naming_redis_ca_file() {
    let missing = std::env::temp_dir().join("startup-no-such-dir/ca.pem");
    let garbage = file("garbage.pem", "not a certificate\n");
    let broken = file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let tls = format!("rediss://:{SECRET}@h:6380");
    for path in [&missing, &garbage, &broken] {
        let ca = path.to_str().unwrap();
        assert_stops_naming(
            "REDIS_CA_FILE",
            &[("REDIS_URL", &tls), ("REDIS_CA_FILE", ca)],
        );
        let cluster = [
            ("REDIS_URL", &*tls),
            ("REDIS_CA_FILE", ca),
            ("REDIS_CLUSTER", "true"),
        ];
        assert_stops_naming("REDIS_CA_FILE", &cluster);
    }
    // A CA bundle is for TLS: with redis:// it would be ignored.
    let ca = garbage.to_str().unwrap();
    assert_stops_naming("REDIS_CA_FILE", &[("REDIS_CA_FILE", ca)]);
}

#[test]
fn every_other_bad_value_stops_start_up_naming_its_variable() {
    for (var, vars) in [
        (
            "AWS_LAMBDA_RUNTIME_API",
            vec![("AWS_LAMBDA_RUNTIME_API", "not a host:port")],
        ),
        (
            "AWS_LAMBDA_MAX_CONCURRENCY",
            vec![("AWS_LAMBDA_MAX_CONCURRENCY", "eight")],
        ),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            vec![("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots")],
        ),
        ("REDIS_TIMEOUT_MS", vec![("REDIS_TIMEOUT_MS", "soon")]),
        (
            "REDIS_MIN_REPLICAS",
            vec![("REDIS_MIN_REPLICAS", "1"), ("REDIS_CLUSTER", "true")],
        ),
        (
            "REDIS_IAM_CACHE_NAME",
            vec![("REDIS_IAM_USER", "app"), ("AWS_REGION", "eu-west-1")],
        ),
        (
            "REDIS_IAM_USER",
            vec![
                ("REDIS_IAM_USER", "app"),
                ("REDIS_IAM_CACHE_NAME", "cache"),
                ("AWS_REGION", "eu-west-1"),
            ],
        ),
        (
            "REDIS_CONNECT_AT_INIT",
            vec![("REDIS_CONNECT_AT_INIT", "later")],
        ),
        (
            "IDEMPOTENCY_SCOPE",
            vec![("IDEMPOTENCY_SCOPE", "jwt,cookie")],
        ),
        (
            "IDEMPOTENCY_METHODS",
            vec![("IDEMPOTENCY_METHODS", "PATCH")],
        ),
        (
            "IDEMPOTENCY_LEASE_SECS",
            vec![("IDEMPOTENCY_LEASE_SECS", "2")],
        ),
        (
            "IDEMPOTENCY_FINGERPRINT_IGNORE",
            vec![("IDEMPOTENCY_FINGERPRINT_IGNORE", "/client_ts,meta")],
        ),
        (
            "IDEMPOTENCY_KEY_HEADER",
            vec![("IDEMPOTENCY_KEY_HEADER", "")],
        ),
        (
            "IDEMPOTENCY_KEY_HEADER",
            vec![("IDEMPOTENCY_KEY_HEADER", "Idempotency Key")],
        ),
        (
            "IDEMPOTENCY_LOCAL_CACHE_BYTES",
            vec![("IDEMPOTENCY_LOCAL_CACHE_BYTES", "64k")],
        ),
        ("REDIS_CLUSTER", vec![("REDIS_CLUSTER", "maybe")]),
        (
            "REDIS_IAM_SERVERLESS",
            vec![
                ("REDIS_URL", "rediss://h:6380"),
                ("REDIS_IAM_USER", "app"),
                ("REDIS_IAM_CACHE_NAME", "cache"),
                ("AWS_REGION", "eu-west-1"),
                ("REDIS_IAM_SERVERLESS", "perhaps"),
            ],
        ),
        // Read whether IAM authentication is on or not: a typo here must
        // not wait for the day it is switched on.
        (
            "REDIS_IAM_SERVERLESS",
            vec![("REDIS_IAM_SERVERLESS", "perhaps")],
        ),
        (
            "AWS_REGION",
            vec![
                ("REDIS_URL", "rediss://h:6380"),
                ("REDIS_IAM_USER", "app"),
                ("REDIS_IAM_CACHE_NAME", "cache"),
            ],
        ),
        (
            "IDEMPOTENCY_MAX_RECORD_BYTES",
            vec![("IDEMPOTENCY_MAX_RECORD_BYTES", "64KiB")],
        ),
        (
            "IDEMPOTENCY_MAX_RECORD_BYTES",
            vec![("IDEMPOTENCY_MAX_RECORD_BYTES", "0")],
        ),
        (
            "IDEMPOTENCY_MAX_REQUEST_BYTES",
            vec![("IDEMPOTENCY_MAX_REQUEST_BYTES", "big")],
        ),
        (
            "IDEMPOTENCY_RETENTION_SECS",
            vec![("IDEMPOTENCY_RETENTION_SECS", "1d")],
        ),
        (
            "IDEMPOTENCY_LEASE_SECS",
            vec![("IDEMPOTENCY_LEASE_SECS", "86400")],
        ),
        (
            "IDEMPOTENCY_KEY_REQUIRED",
            vec![("IDEMPOTENCY_KEY_REQUIRED", "sometimes")],
        ),
        (
            "IDEMPOTENCY_KEY_PREFIX",
            vec![("IDEMPOTENCY_KEY_PREFIX", "orders prod")],
        ),
        // What Lambda always sets, missing: the function reads each at
        // start-up.
        (
            "AWS_LAMBDA_RUNTIME_API",
            vec![("AWS_LAMBDA_RUNTIME_API", UNSET)],
        ),
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            vec![("AWS_LAMBDA_FUNCTION_NAME", UNSET)],
        ),
        (
            "AWS_LAMBDA_FUNCTION_VERSION",
            vec![("AWS_LAMBDA_FUNCTION_VERSION", UNSET)],
        ),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            vec![("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", UNSET)],
        ),
    ] {
        assert_stops_naming(var, &vars);
    }
}

#[test]
fn a_retired_lease_variable_is_named_in_a_warning_and_does_not_stop_start_up() {
    let (code, text) = start_up(&[("IDEMPOTENCY_LEASE_CAP_SECS", "2")]);
    assert!(
        text.contains("IDEMPOTENCY_LEASE_CAP_SECS is no longer read"),
        "{text}"
    );
    assert!(!text.contains("invalid configuration"), "{text}");
    let (good, control) = start_up(&[]);
    assert_eq!(
        code, good,
        "stops where a good configuration stops: {text}\n{control}"
    );
}

#[test]
fn a_good_configuration_gets_past_configuration() {
    // The control for the tests above: it fails too, at the Runtime API,
    // where nothing listens, and names no configuration variable.
    let (code, text) = start_up(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("invalid configuration"), "{text}");
    assert!(!text.contains("REDIS_"), "{text}");
    // So a case above that names one of these names it because it is at
    // fault, not because every start-up here ends naming it.
    for (var, _) in LAMBDA {
        assert!(!text.contains(var), "{var}: {text}");
    }
}
