//! Redis failing under the function: stopped for 2 s while every slot of
//! every process keeps sending, and slowed down (by a proxy) past the
//! command timeout and past the invocation's deadline. The function must
//! fail closed (`503`, nothing run), answer within the deadline, and
//! recover by itself without a wrong answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::harness::{order_event as order, Outcome};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;

use crate::{executed, keys, orders, wait_until_leases_end, Lambda, Mode, DEADLINE, TEA};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_two_seconds_under_load_gives_503s_and_no_wrong_answer_in_classic_mode() {
    outage_under_load(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_two_seconds_under_load_gives_503s_and_no_wrong_answer_in_concurrent_mode() {
    outage_under_load(Mode::Concurrent).await;
}

struct Sent {
    worker: usize,
    key: String,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
}

/// One client per slot, each sending one request after another: 4
/// processes of one slot in classic mode, 2 processes of 8 in concurrent
/// mode.
async fn outage_under_load(mode: Mode) {
    let processes = match mode {
        Mode::Classic => 4,
        Mode::Concurrent => 2,
    };
    let workers = processes * mode.slots();
    // Append-only file with fsync on every write: Redis comes back with
    // the data it had (as a replica failover would), so answers can be
    // checked against it afterwards.
    let dir = std::env::temp_dir().join(format!("idem-aof-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.display().to_string();
    let mut redis = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]);
    let lambda = Arc::new(Lambda::start_n(mode, processes, &redis).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for worker in 0..workers {
        let (lambda, stop) = (Arc::clone(&lambda), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Every fourth request retries the previous key.
                let key = format!("outage-{worker}-{}", if n % 4 == 3 { n - 1 } else { n });
                let started = Instant::now();
                let outcome = lambda
                    .invoke(worker % processes, &order(&key, TEA), DEADLINE)
                    .await;
                sent.push(Sent {
                    worker,
                    key,
                    started,
                    finished: Instant::now(),
                    outcome,
                });
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped = Instant::now();
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Redis answers again from some moment inside restart(): the outage
    // window ends when restart() begins, recovery is timed from its end.
    let restarting = Instant::now();
    redis.restart();
    let restarted = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.unwrap());
    }

    for i in 0..processes {
        assert!(
            lambda.is_alive(i),
            "process {i} crashed: {}",
            lambda.logs(i)
        );
    }
    let mut first_body: HashMap<String, Vec<u8>> = HashMap::new();
    for sent in &all {
        let response = match &sent.outcome {
            Outcome::Response { response, .. } => response,
            other => panic!("{}: not an HTTP answer: {other:?}", sent.key),
        };
        match response.status {
            201 => {
                let body = first_body
                    .entry(sent.key.clone())
                    .or_insert(response.body.clone());
                assert_eq!(*body, response.body, "{}: two different answers", sent.key);
            }
            409 => {}
            503 => assert!(response.header("retry-after").is_some()),
            other => panic!("{}: unexpected {other}: {:?}", sent.key, response.raw),
        }
        if sent.started > stopped + Duration::from_millis(100) && sent.finished < restarting {
            assert_eq!(response.status, 503, "{} during the outage", sent.key);
        }
    }
    let during = all
        .iter()
        .filter(|s| s.started > stopped && s.finished < restarting)
        .count();
    assert!(
        during >= 2 * workers,
        "the load kept going through the outage ({during} requests)"
    );
    for worker in 0..workers {
        let recovered = all.iter().find(|s| {
            s.worker == worker && s.started >= restarted && s.outcome.status() == Some(201)
        });
        let recovered = recovered.unwrap_or_else(|| panic!("client {worker} never recovered"));
        assert!(
            recovered.finished - restarted < Duration::from_secs(1),
            "client {worker} (process {}) took {:?} to recover",
            worker % processes,
            recovered.finished - restarted
        );
    }

    // Every key that was answered 201 now replays that same answer, or (if
    // its completion was lost with Redis) runs again once its lease is
    // over, finds the order it wrote, and answers the same bytes.
    wait_until_leases_end(&redis, Duration::from_secs(10)).await;
    let (mut replayed, mut re_executed) = (0, 0);
    let answered: Vec<(&String, &Vec<u8>)> = first_body.iter().collect();
    for batch in answered.chunks(workers) {
        let retries = batch
            .iter()
            .enumerate()
            .map(|(n, (key, _))| (n % processes, order(key, TEA)))
            .collect();
        let outcomes = lambda.together(retries, DEADLINE).await;
        for ((key, body), retry) in batch.iter().zip(&outcomes) {
            let response = retry.response();
            assert_eq!(response.status, 201, "{key}: {:?}", response.raw);
            assert_eq!(
                &response.body, *body,
                "{key}: the retry differs from the first answer"
            );
            if response.replayed() {
                replayed += 1;
            } else {
                re_executed += 1;
            }
        }
    }
    println!(
        "outage ({mode:?}): {} requests, {during} during the outage, {replayed} keys replayed, {re_executed} re-executed after their lease",
        all.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_fails_closed_within_the_deadline_and_never_executes_twice_in_classic_mode() {
    slow_redis(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_fails_closed_within_the_deadline_and_never_executes_twice_in_concurrent_mode() {
    slow_redis(Mode::Concurrent).await;
}

/// Every step sends one request per slot at once: 1 in classic mode, 8
/// sharing one connection in concurrent mode.
async fn slow_redis(mode: Mode) {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let lambda = Lambda::start(
        mode,
        vec![
            mode.env(&proxy.url(), &[]), // REDIS_TIMEOUT_MS = 500 (default)
            mode.env(&proxy.url(), &[("REDIS_TIMEOUT_MS", "5000")]),
        ],
    )
    .await;

    proxy.set_delay(Duration::from_millis(100));
    let fine = lambda
        .burst(0, &orders(&keys("slow-ok", mode)), DEADLINE)
        .await;
    executed(&fine, "a slow but working Redis");
    for outcome in &fine {
        assert!(
            outcome.elapsed().unwrap() >= Duration::from_millis(300),
            "3 delayed round trips"
        );
    }

    proxy.set_delay(Duration::from_secs(1));
    let mut refused = Vec::new();
    for round in 0..5 {
        let round_keys = keys(&format!("slow-{round}"), mode);
        let outcomes = lambda
            .burst(0, &orders(&round_keys), Duration::from_secs(1))
            .await;
        for outcome in outcomes {
            let response = outcome.response();
            assert_eq!(response.status, 503, "{:?}", response.raw);
            assert!(response.header("retry-after").is_some());
            assert!(
                outcome.elapsed().unwrap() < Duration::from_millis(900),
                "{:?}",
                outcome.elapsed()
            );
        }
        refused.extend(round_keys);
    }
    // A command timeout longer than the time left: the deadline wins.
    let outcomes = lambda
        .burst(
            1,
            &orders(&keys("slow-deadline", mode)),
            Duration::from_millis(600),
        )
        .await;
    for outcome in outcomes {
        assert_eq!(outcome.response().status, 503);
        assert!(
            outcome.elapsed().unwrap() < Duration::from_millis(600),
            "{:?}",
            outcome.elapsed()
        );
    }

    // Back to normal: each key executes at most once, after its lease.
    proxy.set_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for batch in refused.chunks(mode.slots()) {
        let events = orders(batch);
        let first = lambda.burst(0, &events, DEADLINE).await;
        for (key, outcome) in batch.iter().zip(&first) {
            assert_eq!(outcome.response().status, 201, "{key}");
        }
        for second in lambda.burst(0, &events, DEADLINE).await {
            assert!(second.response().replayed());
        }
    }
    assert_eq!(
        redis.orders(),
        mode.slots() + refused.len(),
        "no key executed twice"
    );
}
