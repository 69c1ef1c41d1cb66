//! Processes that stop between their claim and their completion: one
//! killed (as a Lambda timeout kills it), one frozen (`SIGSTOP`) that wakes
//! after another process took its keys over. A process takes every
//! invocation it is running with it: one in classic mode, 8 in concurrent
//! mode, each under its own key, and each key's retries are checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::harness::Outcome;
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;
use tokio::task::JoinHandle;

use crate::{
    executed, keys, orders, wait_for_claims, wait_until_leases_end, warm_up, Lambda, Mode, DEADLINE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_killed_process_wait_for_the_lease_then_execute_once_in_classic_mode() {
    killed_after_its_claims(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_killed_process_wait_for_the_lease_then_execute_once_in_concurrent_mode() {
    killed_after_its_claims(Mode::Concurrent).await;
}

/// Two processes: process 0 reaches Redis through a proxy that can hold
/// its replies back (with a 1 s command timeout, so replies held 400 ms do
/// not fail its calls; its lease is then 6 s, six timeouts), process 1
/// directly. Process 0 has connected and loaded its scripts.
async fn behind_a_proxy(mode: Mode) -> (RedisServer, TcpProxy, Arc<Lambda>) {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let envs = vec![
        mode.env(&proxy.url(), &[("REDIS_TIMEOUT_MS", "1000")]),
        mode.env(&redis.url(), &[]),
    ];
    let lambda = Arc::new(Lambda::start(mode, envs).await);
    warm_up(&lambda, 0).await;
    (redis, proxy, lambda)
}

/// `events` released together to process 0, with a 1 s deadline, while
/// the test goes on.
fn in_background(lambda: &Arc<Lambda>, events: &[Value]) -> JoinHandle<Vec<Outcome>> {
    let (lambda, events) = (Arc::clone(lambda), events.to_vec());
    tokio::spawn(async move { lambda.burst(0, &events, Duration::from_secs(1)).await })
}

async fn killed_after_its_claims(mode: Mode) {
    let (redis, proxy, lambda) = behind_a_proxy(mode).await;
    let events = orders(&keys("crash", mode));
    // The victim's Redis replies are held back, so it is certain to be
    // between its claims and their completions when it dies.
    proxy.set_delay(Duration::from_secs(2));
    let victims = in_background(&lambda, &events);
    wait_for_claims(&redis, events.len(), Duration::from_secs(2)).await;
    lambda.kill(0).await;
    let victims = victims.await.unwrap();
    assert_eq!(victims.len(), events.len());
    for victim in &victims {
        assert!(matches!(victim, Outcome::Died), "{victim:?}");
    }

    for during in lambda.burst(1, &events, DEADLINE).await {
        let during = during.response();
        assert_eq!(during.status, 409, "{:?}", during.raw);
        let retry_after: u64 = during.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=3).contains(&retry_after),
            "a short hint, never past the 6 s lease"
        );
    }

    wait_until_leases_end(&redis, Duration::from_secs(8)).await;
    let after = lambda.burst(1, &events, DEADLINE).await;
    executed(&after, "a retry after the lease");
    assert_eq!(
        redis.orders(),
        1 + events.len(),
        "the warm-up's and the retries': the killed invocations never reached their handler"
    );
    let replays = lambda.burst(1, &events, DEADLINE).await;
    for (replay, first) in replays.iter().zip(&after) {
        assert!(replay.response().replayed());
        assert_eq!(replay.response().body, first.response().body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_process_waking_after_a_takeover_creates_no_second_order_in_classic_mode() {
    stalled_then_taken_over(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_process_waking_after_a_takeover_creates_no_second_order_in_concurrent_mode() {
    stalled_then_taken_over(Mode::Concurrent).await;
}

async fn stalled_then_taken_over(mode: Mode) {
    let (redis, proxy, lambda) = behind_a_proxy(mode).await;
    let orders_before = redis.orders();
    let events = orders(&keys("stall", mode));
    // Every Redis reply to the stalling process takes 400 ms: its order
    // writes land 400 ms before their completions are even sent.
    proxy.set_delay(Duration::from_millis(400));
    let stalled = in_background(&lambda, &events);
    let started = Instant::now();
    while redis.orders() < orders_before + events.len() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the order writes never landed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lambda.pause(0); // frozen between its order writes and its completions
    wait_until_leases_end(&redis, Duration::from_secs(8)).await;

    let takeovers = lambda.burst(1, &events, DEADLINE).await;
    let takeovers = executed(&takeovers, "the expired lease lets the retry run again");

    proxy.set_delay(Duration::ZERO);
    lambda.resume(0);
    let late = stalled.await.unwrap();
    let mut answered = 0;
    for (late, takeover) in late.iter().zip(&takeovers) {
        let late = late.response();
        // Frozen for longer than its lease, so for more than six command
        // timeouts: a reply still on its way when it froze may be timed
        // out on waking (503, and its retry replays), or read (201). The
        // retry ran again, found the order the stalled attempt wrote under
        // the same execution id, and answered with it: one order, one
        // answer.
        match late.status {
            201 => {
                assert_eq!(&late.body, takeover);
                answered += 1;
            }
            status => assert_eq!(status, 503, "{:?}\n{}", late.raw, lambda.logs(0)),
        }
    }
    let fenced = lambda
        .logs(0)
        .matches("taken over before completion")
        .count();
    assert_eq!(
        fenced,
        answered,
        "every fenced completion is logged: {}",
        lambda.logs(0)
    );
    let replays = lambda.burst(1, &events, DEADLINE).await;
    for (replay, takeover) in replays.iter().zip(&takeovers) {
        assert!(replay.response().replayed());
        assert_eq!(
            &replay.response().body,
            takeover,
            "the new owner's record stands"
        );
    }
    assert_eq!(redis.orders(), orders_before + events.len());
}
