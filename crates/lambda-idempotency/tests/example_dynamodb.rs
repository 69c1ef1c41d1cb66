//! The crate's DynamoDB example (`examples/payments_dynamodb.rs`), built
//! in release without the Redis store and run the way Lambda runs it,
//! against the DynamoDB emulator: configured from the environment alone
//! (`DynamoDbStore::from_env`, the endpoint from
//! `AWS_ENDPOINT_URL_DYNAMODB`), a new payment, its replay, a caller
//! without identity, and the payment written once under the request's
//! execution id.

use serde_json::Value;
use testkit::harness::{build_release, Harness};
use testkit::payments::assert_taken_once_and_replayed;
use testkit::DynamoDbServer;

const TABLE: &str = "idempotency";

fn items_starting(dynamodb: &DynamoDbServer, prefix: &str) -> Vec<Value> {
    dynamodb
        .items(TABLE)
        .into_iter()
        .filter(|item| {
            item["pk"]["S"]
                .as_str()
                .is_some_and(|pk| pk.starts_with(prefix))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_example_takes_a_payment_once_and_replays_it() {
    let binary = build_release(&[
        "-p",
        "lambda-idempotency",
        "--no-default-features",
        "--features",
        "dynamodb",
        "--example",
        "payments_dynamodb",
    ])
    .join("examples/payments_dynamodb");
    let mut dynamodb = DynamoDbServer::start();
    dynamodb.create_table(TABLE);
    let env = [
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.url()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("IDEMPOTENCY_TABLE", TABLE.to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let env = env.map(|(k, v)| (k.to_owned(), v)).to_vec();
    let lambda = Harness::start(&binary, vec![env]).await;
    assert_taken_once_and_replayed(&lambda).await;
    assert_eq!(items_starting(&dynamodb, "payments:").len(), 1);
    let records = items_starting(&dynamodb, "idempotency:");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["phase"]["S"], "completed");
    assert!(records[0]["ttl"]["N"].is_string(), "{records:?}");
}
