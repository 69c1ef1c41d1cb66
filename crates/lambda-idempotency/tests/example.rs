//! The crate's example function (`examples/payments.rs`), built in release
//! and run the way Lambda runs it, against a real `redis-server`: a new
//! payment, its replay, a caller without identity, and the payment written
//! once under the request's execution id.

use testkit::harness::{build_release, Harness};
use testkit::payments::assert_taken_once_and_replayed;
use testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_takes_a_payment_once_and_replays_it() {
    let binary = build_release(&["-p", "lambda-idempotency", "--example", "payments"])
        .join("examples/payments");
    let redis = RedisServer::start();
    let env = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    let lambda = Harness::start(&binary, vec![env]).await;
    assert_taken_once_and_replayed(&lambda).await;
    assert_eq!(redis.count("payments:*"), 1);
}
