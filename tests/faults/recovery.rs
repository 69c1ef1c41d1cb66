//! Time to recovery at deployed scale: the release binary with its default
//! settings (`REDIS_TIMEOUT_MS=500`, so a 3 s lease), a 60 s function
//! timeout (so a lease tied to the deadline would show as a minute), two
//! instances on one `redis-server`. After one fault on instance 0, a client
//! retries on instance 1 every 0.25 s; its `201` must come within 5 s of
//! the fault's end, and within the lease plus 1 s.
//!
//! Run alone, with the times printed:
//! `cargo test -p idempotent-orders --test faults recovery -- --nocapture --test-threads=1`

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::fault_proxy::{At, FaultProxy};
use testkit::harness::{function_env, order_event, release_binary, Harness, Outcome};
use testkit::proxy::socket_addr;
use testkit::RedisServer;

/// The invocation's deadline: a 60 s function timeout.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The lease the defaults give: six times `REDIS_TIMEOUT_MS`.
const LEASE: Duration = Duration::from_secs(3);
/// How often the client retries.
const EVERY: Duration = Duration::from_millis(250);
/// How long Redis stalls.
const STALL: Duration = Duration::from_secs(1);

/// Two instances: 0 on `first_url`, 1 straight on `redis`.
async fn instances(redis: &RedisServer, first_url: &str) -> Harness {
    Harness::start(
        &release_binary("idempotent-orders"),
        vec![
            function_env(first_url, &[]),
            function_env(&redis.url(), &[]),
        ],
    )
    .await
}

fn status(outcome: &Outcome) -> Option<u16> {
    match outcome {
        Outcome::Died => None,
        other => other.status(),
    }
}

/// Retries `event` on instance `i` every [`EVERY`] until a `201`; returns
/// how long after `fault_end` it came, and every status seen.
async fn retry_until_created(
    harness: &Harness,
    i: usize,
    event: &Value,
    fault_end: Instant,
) -> (Duration, Vec<Option<u16>>) {
    let mut seen = Vec::new();
    loop {
        let sent = Instant::now();
        let outcome = harness.invoke(i, event, TIMEOUT).await;
        seen.push(status(&outcome));
        if status(&outcome) == Some(201) {
            return (fault_end.elapsed(), seen);
        }
        assert!(
            fault_end.elapsed() < Duration::from_secs(20),
            "no 201 in 20 s: {seen:?}\n{}",
            harness.logs(i)
        );
        tokio::time::sleep(EVERY.saturating_sub(sent.elapsed())).await;
    }
}

fn assert_recovered(schedule: &str, took: Duration, seen: &[Option<u16>], redis: &RedisServer) {
    println!("{schedule}: 201 {took:.2?} after the fault ended; retries got {seen:?}");
    assert!(
        took <= Duration::from_secs(5) && took <= LEASE + Duration::from_secs(1),
        "{schedule}: the 201 came {took:?} after the fault ended ({seen:?})"
    );
    assert_eq!(redis.orders(), 1, "{schedule}: one order");
}

/// Stalls Redis for [`STALL`] while instance 0 handles `event`, and, if
/// `freeze`, freezes instance 0 once it asks for the next event (as Lambda
/// freezes a sandbox). Returns when the stall ended, after checking that
/// instance 0 answered `503`.
async fn stall_during_a_request(
    harness: &Harness,
    redis: &RedisServer,
    event: &Value,
    freeze: bool,
) -> Instant {
    redis.pause();
    let stalled = Instant::now();
    let answer = harness.invoke(0, event, TIMEOUT).await;
    if freeze {
        harness.wait_parked(0, 1).await;
        harness.pause(0);
    }
    tokio::time::sleep(STALL.saturating_sub(stalled.elapsed())).await;
    redis.resume();
    let ended = Instant::now();
    assert_eq!(status(&answer), Some(503), "{}", harness.logs(0));
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_stall_a_retry_elsewhere_runs_within_seconds_while_the_first_instance_is_up()
{
    let redis = RedisServer::start();
    let harness = instances(&redis, &redis.url()).await;
    let event = order_event("recovery-up", r#"{"product":"Tea","quantity":1}"#);
    let fault_end = stall_during_a_request(&harness, &redis, &event, false).await;
    let (took, seen) = retry_until_created(&harness, 1, &event, fault_end).await;
    assert_recovered("stall, instance up", took, &seen, &redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_stall_a_retry_elsewhere_runs_within_the_lease_while_the_first_instance_is_frozen(
) {
    let redis = RedisServer::start();
    let harness = instances(&redis, &redis.url()).await;
    let event = order_event("recovery-frozen", r#"{"product":"Tea","quantity":1}"#);
    let fault_end = stall_during_a_request(&harness, &redis, &event, true).await;
    let (took, seen) = retry_until_created(&harness, 1, &event, fault_end).await;
    harness.resume(0);
    assert_recovered("stall, instance frozen", took, &seen, &redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_gives_its_claim_back_first_when_the_retry_thaws_it() {
    let redis = RedisServer::start();
    let harness = instances(&redis, &redis.url()).await;
    let event = order_event("recovery-thawed", r#"{"product":"Tea","quantity":1}"#);
    stall_during_a_request(&harness, &redis, &event, true).await;
    // The claim landed when Redis woke up; the client's retry after its
    // Retry-After thaws the same sandbox, which gives the claim back
    // before claiming again: a 201 at once, not a 409 for the lease.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(redis.count("idempotency:*"), 1, "the late claim landed");
    harness.resume(0);
    let retry = harness.invoke(0, &event, TIMEOUT).await;
    assert_eq!(status(&retry), Some(201), "{}", harness.logs(0));
    assert_eq!(redis.orders(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_instance_dies_between_its_claim_and_its_completion_a_retry_runs_within_the_lease()
{
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let harness = instances(&redis, &proxy.url()).await;
    let event = order_event("recovery-died", r#"{"product":"Tea","quantity":1}"#);
    let mut write = proxy.hold_at(At::matching(|c| {
        c.name() == "SET" && c.key().is_some_and(|k| k.starts_with("orders:"))
    }));
    let first = {
        let event = event.clone();
        let harness = &harness;
        async move { harness.invoke(0, &event, TIMEOUT).await }
    };
    let (died, fault_end) = tokio::join!(first, async {
        write
            .wait(Duration::from_secs(10))
            .await
            .expect("the order write");
        harness.kill(0).await;
        Instant::now()
    });
    assert!(matches!(died, Outcome::Died), "{died:?}");
    proxy.kill_connections();
    assert_eq!(redis.count("idempotency:*"), 1, "the claim landed");
    assert_eq!(redis.orders(), 0, "the order write never did");
    let (took, seen) = retry_until_created(&harness, 1, &event, fault_end).await;
    assert_recovered("instance died", took, &seen, &redis);
}
