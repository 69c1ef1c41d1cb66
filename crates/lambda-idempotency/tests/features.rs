//! What each feature set makes a user compile: `cargo tree` of this crate
//! (normal dependencies only) per feature set, so that a store client or
//! a second TLS stack that creeps back into a set where it does not belong
//! fails the build rather than a user's cold start or cross-compile.

use std::collections::BTreeSet;
use std::process::Command;

/// The crate names in this crate's normal dependency tree with `args`
/// (feature flags) added to `cargo tree`.
fn crates(args: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-p",
            "lambda-idempotency",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_absent(tree: &BTreeSet<String>, set: &str, names: &[&str]) {
    let found: Vec<_> = names.iter().filter(|n| tree.contains(**n)).collect();
    assert!(found.is_empty(), "{set} pulls in {found:?}");
}

fn assert_present(tree: &BTreeSet<String>, set: &str, names: &[&str]) {
    let missing: Vec<_> = names.iter().filter(|n| !tree.contains(**n)).collect();
    assert!(missing.is_empty(), "{set} lacks {missing:?}");
}

/// Crates only a store brings: clients, TLS stacks, crypto providers.
const STORE_ONLY: &[&str] = &[
    "redis",
    "rustls",
    "ring",
    "aws-lc-rs",
    "aws-lc-sys",
    "tokio-rustls",
    "webpki-roots",
    "rustls-native-certs",
];

#[test]
fn the_core_without_default_features_has_no_store_client_tls_or_crypto() {
    let tree = crates(&["--no-default-features"]);
    assert_present(&tree, "the core", &["lambda_http", "tokio", "sha2"]);
    assert_absent(&tree, "the core", STORE_ONLY);
}

#[test]
fn the_redis_feature_brings_redis_with_ring_as_the_only_crypto_provider() {
    let tree = crates(&["--no-default-features", "--features", "redis"]);
    assert_present(&tree, "redis", &["redis", "rustls", "ring", "webpki-roots"]);
    assert_absent(&tree, "redis", &["aws-lc-rs", "aws-lc-sys", "cmake"]);
}

#[test]
fn the_dynamodb_feature_brings_the_sdk_on_ring_without_aws_lc_or_redis() {
    let tree = crates(&["--no-default-features", "--features", "dynamodb"]);
    assert_present(&tree, "dynamodb", &["aws-sdk-dynamodb", "rustls", "ring"]);
    assert_absent(
        &tree,
        "dynamodb",
        &["redis", "aws-lc-rs", "aws-lc-sys", "cmake"],
    );
}

#[test]
fn both_stores_together_have_ring_as_their_one_crypto_provider() {
    let tree = crates(&["--all-features"]);
    assert_present(
        &tree,
        "all features",
        &["redis", "aws-sdk-dynamodb", "ring"],
    );
    assert_absent(&tree, "all features", &["aws-lc-rs", "aws-lc-sys", "cmake"]);
}
