//! A Redis out of memory: under `noeviction` (the setting docs/deploy.md recommends) a new
//! claim is refused, so nothing runs and replays still work, except with
//! `REDIS_MIN_REPLICAS`, where a replay must write its record back for
//! `WAIT` to cover it and so gets `503` too; under `allkeys-lru` records
//! are evicted and completed keys run again, which is why docs/guarantees.md says
//! `noeviction`. One process; every step sends one request per slot at
//! once.

use testkit::RedisServer;

use crate::{executed, keys, orders, Lambda, Mode, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_under_noeviction_refuses_with_503_and_runs_nothing_in_classic_mode() {
    full_under_noeviction(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_under_noeviction_refuses_with_503_and_runs_nothing_in_concurrent_mode() {
    full_under_noeviction(Mode::Concurrent).await;
}

/// Writes junk until Redis refuses a write; returns how many were taken.
/// Big values first, then small ones: a refused big write's own query
/// buffer counts as used memory, and is freed once refused.
fn fill_until_refused(redis: &RedisServer, max: usize) -> usize {
    let mut conn = redis.conn();
    let mut written = 0;
    for size in [64 * 1024, 64] {
        let chunk = "x".repeat(size);
        while written < max {
            let key = format!("junk:{written}");
            let result: redis::RedisResult<()> =
                redis::cmd("SET").arg(key).arg(&chunk).query(&mut conn);
            if result.is_err() {
                break;
            }
            written += 1;
        }
    }
    written
}

fn set_maxmemory(redis: &RedisServer, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(value)
        .query(&mut redis.conn())
        .unwrap();
}

async fn full_under_noeviction(mode: Mode) {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let lambda = Lambda::start_n(mode, 1, &redis).await;
    let completed = orders(&keys("full-done", mode));
    let bodies = executed(
        &lambda.burst(0, &completed, DEADLINE).await,
        "before Redis is full",
    );

    let written = fill_until_refused(&redis, 100_000);
    assert!(written < 100_000, "maxmemory was never reached");
    // Closing the filling connection frees its buffers and can bring Redis
    // back just under the limit; a lower limit keeps it full for the test.
    set_maxmemory(&redis, "1mb");
    let new = orders(&keys("full-new", mode));
    for refused in lambda.burst(0, &new, DEADLINE).await {
        let refused = refused.response();
        assert_eq!(refused.status, 503, "{:?}", refused.raw);
        assert!(refused.header("retry-after").is_some());
    }
    // Reads still work: the completed keys still replay.
    let replays = lambda.burst(0, &completed, DEADLINE).await;
    for (replay, body) in replays.iter().zip(&bodies) {
        assert!(replay.response().replayed(), "{:?}", replay.response().raw);
        assert_eq!(&replay.response().body, body);
    }
    assert_eq!(redis.orders(), completed.len());

    let _: () = redis::cmd("FLUSHDB").query(&mut redis.conn()).unwrap();
    set_maxmemory(&redis, "0");
    executed(
        &lambda.burst(0, &new, DEADLINE).await,
        "once Redis has room again",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_required_a_full_primary_answers_503_to_replays_too() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let _replica = RedisServer::replica_of(&redis);
    let mode = Mode::Classic;
    let env = mode.env(&redis.url(), &[("REDIS_MIN_REPLICAS", "1")]);
    let lambda = Lambda::start(mode, vec![env]).await;
    let completed = orders(&keys("full-replicated", mode));
    let bodies = executed(
        &lambda.burst(0, &completed, DEADLINE).await,
        "before Redis is full",
    );

    assert!(fill_until_refused(&redis, 100_000) < 100_000);
    set_maxmemory(&redis, "1mb");
    // The claim writes the record it finds back, so that the replica's
    // acknowledgement covers it: on a full primary that write is refused.
    for refused in lambda.burst(0, &completed, DEADLINE).await {
        let refused = refused.response();
        assert_eq!(refused.status, 503, "{:?}", refused.raw);
        assert!(refused.header("retry-after").is_some());
        assert!(!refused.replayed());
    }
    set_maxmemory(&redis, "0");
    let replays = lambda.burst(0, &completed, DEADLINE).await;
    for (replay, body) in replays.iter().zip(&bodies) {
        assert!(replay.response().replayed(), "{:?}", replay.response().raw);
        assert_eq!(&replay.response().body, body);
    }
    assert_eq!(redis.orders(), completed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_lru_eviction_can_drop_a_record_and_let_a_retry_run_again_in_classic_mode() {
    evicted_under_allkeys_lru(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_lru_eviction_can_drop_a_record_and_let_a_retry_run_again_in_concurrent_mode() {
    evicted_under_allkeys_lru(Mode::Concurrent).await;
}

async fn evicted_under_allkeys_lru(mode: Mode) {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let lambda = Lambda::start_n(mode, 1, &redis).await;
    let events = orders(&keys("lru", mode));
    executed(&lambda.burst(0, &events, DEADLINE).await, "the first time");

    let mut conn = redis.conn();
    let chunk = "x".repeat(64 * 1024);
    let mut i = 0;
    while redis.count("idempotency:*") > 0 {
        assert!(i < 10_000, "the records were never evicted");
        let _: () = redis::cmd("SET")
            .arg(format!("junk:{i}"))
            .arg(&chunk)
            .query(&mut conn)
            .unwrap();
        i += 1;
    }
    executed(
        &lambda.burst(0, &events, DEADLINE).await,
        "the evicted record no longer protects the key",
    );
}
