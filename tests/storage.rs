//! What one order costs in Redis, measured: the record and the order the
//! largest valid order leaves behind (`MEMORY USAGE`, and the values' own
//! lengths), against the numbers docs/guarantees.md states ("Bounded storage and
//! bounded answers").

use idempotent_orders::{App, Config};
use lambda_http::RequestExt;
use testkit::fixtures::{context_with_deadline_in, event_json};
use testkit::harness::{function_env, lookup};
use testkit::RedisServer;

fn app(redis: &RedisServer) -> App {
    let vars = function_env(&redis.url(), &[("METRICS_NAMESPACE", "")]);
    let config = Config::from_lookup(lookup(vars)).expect("config");
    App::from_config(&config).expect("app")
}

/// `(MEMORY USAGE, STRLEN)` of the one key matching `pattern`.
fn sizes(redis: &RedisServer, pattern: &str) -> (u64, u64) {
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
    assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
    let memory = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query(&mut conn)
        .unwrap();
    let length = redis::cmd("STRLEN").arg(&keys[0]).query(&mut conn).unwrap();
    (memory, length)
}

/// Creates one order for `body` in an empty Redis; the sizes of its
/// record and of its order.
async fn stored(body: &str) -> ((u64, u64), (u64, u64)) {
    let redis = RedisServer::start();
    let mut event = event_json("post_order.json");
    event["body"] = body.into();
    event["headers"]["content-length"] = body.len().to_string().into();
    let req = lambda_http::request::from_str(&event.to_string())
        .expect("event")
        .with_lambda_context(context_with_deadline_in(std::time::Duration::from_secs(3)));
    let response = app(&redis).handle(req).await;
    assert_eq!(response.status(), 201, "{body}: {:?}", response.body());
    (sizes(&redis, "idempotency:*"), sizes(&redis, "orders:*"))
}

/// What docs/guarantees.md states: `(MEMORY USAGE, value length)` in bytes of the
/// record and of the order, for the typical order of its examples and for
/// the largest valid one (redis-server 7.0.15, jemalloc).
const TYPICAL: ((u64, u64), (u64, u64)) = ((504, 331), (312, 204));
const LARGEST: ((u64, u64), (u64, u64)) = ((1_400, 1_116), (1_112, 989));

#[tokio::test]
async fn the_largest_valid_order_stores_the_record_and_order_sizes_the_readme_states() {
    let typical = r#"{"product":"Espresso beans 1kg","quantity":2}"#;
    assert_stated(stored(typical).await, TYPICAL, "typical");
    // A product is at most 200 characters, none a control character: in
    // the order's JSON (stored as it is in both) each costs at most 4 bytes
    // (a character outside the BMP; `"` and `\` cost 2). A quantity is at
    // most 1000.
    let order = |product: String| serde_json::json!({"product": product, "quantity": 1000});
    let largest = stored(&order("😀".repeat(200)).to_string()).await;
    assert_stated(largest, LARGEST, "largest");
    for (name, product) in [
        ("ascii", "a".repeat(200)),
        ("quotes", "\"".repeat(200)),
        ("backslashes", "\\".repeat(200)),
        ("3-byte", "€".repeat(200)),
        ("mixed", "😀\"".repeat(100)),
    ] {
        let ((record, _), (stored_order, _)) = stored(&order(product).to_string()).await;
        assert!(record <= LARGEST.0 .0, "{name}: record {record}");
        assert!(stored_order <= LARGEST.1 .0, "{name}: order {stored_order}");
    }
}

/// The value lengths exactly (they are the function's own encoding), and
/// `MEMORY USAGE` at most as stated but within 10 % of it (it depends on
/// the Redis build's allocator).
fn assert_stated(measured: ((u64, u64), (u64, u64)), stated: ((u64, u64), (u64, u64)), name: &str) {
    for (what, (memory, length), (stated_memory, stated_length)) in [
        ("record", measured.0, stated.0),
        ("order", measured.1, stated.1),
    ] {
        assert_eq!(length, stated_length, "{name} {what}: value length");
        assert!(
            memory <= stated_memory && memory * 10 >= stated_memory * 9,
            "{name} {what}: MEMORY USAGE {memory}, stated {stated_memory}"
        );
    }
}
