//! Exactly once under load and faults (issue 3's scenarios): the release
//! binary run as Lambda runs it, several instances through the Runtime API
//! harness (`testkit::harness`), against a real `redis-server` that the
//! tests slow down (`testkit::proxy`), stop, fill up or flood with garbage.
//!
//! Each scenario is bounded (a few seconds) so the suite stays within CI's
//! time; the README's "Exactly once under faults" section explains each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::harness::{
    function_env as env, order_event as order, release_binary, start_function as instances,
    Harness, Outcome,
};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

/// A small deterministic generator, so load plans repeat run to run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_of_eight_instances_over_a_hundred_rounds_executes_each_key_once() {
    let redis = RedisServer::start();
    let lambda = instances("idempotent-orders", 8, &redis.url()).await;
    for round in 0..100 {
        let outcomes = lambda
            .invoke_all(&order(&format!("race-{round}"), TEA), DEADLINE)
            .await;
        let executed: Vec<_> = outcomes
            .iter()
            .map(Outcome::response)
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(executed.len(), 1, "round {round}: exactly one execution");
        for response in outcomes.iter().map(Outcome::response) {
            match response.status {
                201 => assert_eq!(response.body, executed[0].body, "round {round}"),
                409 => assert!(response.header("retry-after").is_some()),
                other => panic!("round {round}: unexpected {other}: {:?}", response.raw),
            }
        }
    }
    assert_eq!(redis.orders(), 100);
}

enum Slot {
    New(String, String),
    Later(usize),
    Changed(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_of_five_thousand_requests_keeps_one_order_per_key() {
    let redis = RedisServer::start();
    let lambda = instances("idempotent-orders", 4, &redis.url()).await;
    mixed_load(&redis, &lambda, 4, |slot| slot).await;
}

/// Managed Instances: one process serving 8 invocations at once, so
/// simultaneous twins race inside one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_in_one_process_at_concurrency_eight_keeps_one_order_per_key() {
    let redis = RedisServer::start();
    let lambda = concurrent(1, &redis).await;
    mixed_load(&redis, &lambda, 8, |_| 0).await;
}

/// `n` processes, each serving 8 invocations at once, with all 8 `/next`
/// calls parked.
async fn concurrent(n: usize, redis: &RedisServer) -> Harness {
    let lambda = Harness::start(
        &release_binary("idempotent-orders"),
        (0..n)
            .map(|_| env(&redis.url(), &[("AWS_LAMBDA_MAX_CONCURRENCY", "8")]))
            .collect(),
    )
    .await;
    for i in 0..n {
        lambda.wait_parked(i, 8).await;
    }
    lambda
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_races_inside_and_across_processes_at_concurrency_eight_execute_once() {
    let redis = RedisServer::start();
    let lambda = concurrent(2, &redis).await;
    for round in 0..50 {
        for i in 0..2 {
            lambda.wait_parked(i, 8).await;
        }
        let event = order(&format!("lmi-race-{round}"), TEA);
        // 16 copies: 8 inside each process, released together.
        let assignments = (0..16).map(|n| (n % 2, event.clone())).collect();
        let outcomes = lambda.invoke_many(assignments, DEADLINE).await;
        let executed: Vec<_> = outcomes
            .iter()
            .map(Outcome::response)
            .filter(|r| r.status == 201 && !r.replayed())
            .collect();
        assert_eq!(executed.len(), 1, "round {round}: exactly one execution");
        for response in outcomes.iter().map(Outcome::response) {
            match response.status {
                201 => assert_eq!(response.body, executed[0].body, "round {round}"),
                409 => assert!(response.header("retry-after").is_some()),
                other => panic!("round {round}: unexpected {other}: {:?}", response.raw),
            }
        }
    }
    assert_eq!(redis.orders(), 50);
}

/// About 5,000 requests in rounds of `per_round` released together, slot
/// `s` of a round going to instance `instance_of(s)`: new keys, simultaneous
/// twins, later retries and changed bodies.
async fn mixed_load(
    redis: &RedisServer,
    lambda: &Harness,
    per_round: usize,
    instance_of: impl Fn(usize) -> usize,
) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    // (key, body, the executed response's body)
    let mut done: Vec<(String, String, Vec<u8>)> = Vec::new();
    let (mut sent, mut replays, mut mismatches, mut in_progress) = (0usize, 0usize, 0usize, 0usize);
    while sent < 5_000 {
        let mut slots: Vec<Slot> = Vec::with_capacity(per_round);
        while slots.len() < per_round {
            let fresh = |rng: &mut Rng, n: usize| {
                let body = format!(r#"{{"product":"P{n}","quantity":{}}}"#, 1 + rng.below(999));
                (format!("mixed-{n}"), body)
            };
            let n = sent + slots.len();
            match rng.below(12) {
                7 | 8 if !done.is_empty() => slots.push(Slot::Later(rng.below(done.len()))),
                9 if !done.is_empty() => slots.push(Slot::Changed(rng.below(done.len()))),
                10 | 11 if slots.len() + 2 <= per_round => {
                    // The same new request twice, released at the same instant.
                    let (key, body) = fresh(&mut rng, n);
                    slots.push(Slot::New(key.clone(), body.clone()));
                    slots.push(Slot::New(key, body));
                }
                _ => {
                    let (key, body) = fresh(&mut rng, n);
                    slots.push(Slot::New(key, body));
                }
            }
        }
        let events = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let event = match slot {
                    Slot::New(key, body) => order(key, body),
                    Slot::Later(d) => order(&done[*d].0, &done[*d].1),
                    Slot::Changed(d) => order(
                        &done[*d].0,
                        &done[*d].1.replace("quantity\":", "quantity\":1"),
                    ),
                };
                (instance_of(i), event)
            })
            .collect();
        let outcomes = lambda.invoke_many(events, DEADLINE).await;
        sent += slots.len();

        let mut executed: HashMap<&str, (&str, Vec<u8>)> = HashMap::new();
        for (slot, outcome) in slots.iter().zip(&outcomes) {
            let response = outcome.response();
            match slot {
                Slot::New(key, body) => match response.status {
                    201 if !response.replayed() => {
                        let previous = executed.insert(key, (body, response.body.clone()));
                        assert!(previous.is_none(), "{key} executed twice");
                    }
                    201 | 409 => in_progress += 1,
                    other => panic!("{key}: unexpected {other}: {:?}", response.raw),
                },
                Slot::Later(d) => {
                    assert_eq!(response.status, 201, "{:?}", response.raw);
                    assert!(response.replayed());
                    assert_eq!(response.body, done[*d].2, "a replay is byte-identical");
                    replays += 1;
                }
                Slot::Changed(_) => {
                    assert_eq!(response.status, 422, "{:?}", response.raw);
                    mismatches += 1;
                }
            }
        }
        // Replays of a simultaneous twin must match the twin that executed.
        for (slot, outcome) in slots.iter().zip(&outcomes) {
            if let (Slot::New(key, _), 201) = (slot, outcome.response().status) {
                assert_eq!(outcome.response().body, executed[key.as_str()].1);
            }
        }
        for (key, (body, response)) in executed {
            done.push((key.to_owned(), body.to_owned(), response));
        }
    }
    println!(
        "mixed load: {sent} requests, {} orders, {replays} later replays, {mismatches} mismatches, {in_progress} simultaneous twins answered 409 or replay",
        done.len()
    );
    assert!(replays > 500 && mismatches > 200 && in_progress > 200);
    assert_eq!(
        redis.orders(),
        done.len(),
        "one order per distinct (key, first body)"
    );
}

/// One request with Redis at full speed, so the instance has connected and
/// loaded its scripts before a test slows Redis down.
async fn warm_up(lambda: &Harness, i: usize) {
    let event = order(&format!("warm-up-{i}"), TEA);
    assert_eq!(
        lambda.invoke(i, &event, DEADLINE).await.response().status,
        201
    );
}

/// How many idempotency records are in progress (their value starts with
/// `p`, the phase byte).
fn in_progress_records(redis: &RedisServer) -> usize {
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("idempotency:*")
        .query(&mut conn)
        .expect("KEYS");
    keys.iter()
        .filter(|key| {
            let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut conn).expect("GET");
            value.is_some_and(|v| v.first() == Some(&b'p'))
        })
        .count()
}

/// Waits until a claim is in progress (an instance is between its claim
/// and its completion).
fn wait_for_claim(redis: &RedisServer, within: Duration) {
    let started = Instant::now();
    while in_progress_records(redis) == 0 {
        assert!(started.elapsed() < within, "no claim appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until no claim is in progress any more (its lease ran out).
async fn wait_until_leases_end(redis: &RedisServer, within: Duration) {
    let started = Instant::now();
    while in_progress_records(redis) > 0 {
        assert!(started.elapsed() < within, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_after_its_claim_blocks_retries_until_the_lease_ends_then_one_executes()
{
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let lambda = Harness::start(
        &release_binary("idempotent-orders"),
        vec![
            // The victim's Redis replies are held back, so it is certain to
            // be between its claim and its completion when it dies.
            env(&proxy.url(), &[("REDIS_TIMEOUT_MS", "5000")]),
            env(&redis.url(), &[]),
        ],
    )
    .await;
    let lambda = Arc::new(lambda);
    warm_up(&lambda, 0).await;
    proxy.set_delay(Duration::from_secs(2));
    let victim = tokio::spawn({
        let lambda = Arc::clone(&lambda);
        async move {
            lambda
                .invoke(0, &order("crash-1", TEA), Duration::from_secs(1))
                .await
        }
    });
    wait_for_claim(&redis, Duration::from_secs(2));
    lambda.kill(0).await;
    assert!(matches!(victim.await.unwrap(), Outcome::Died));

    let during = lambda.invoke(1, &order("crash-1", TEA), DEADLINE).await;
    let during = during.response();
    assert_eq!(during.status, 409, "{:?}", during.raw);
    let retry_after: u64 = during.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=3).contains(&retry_after),
        "lease = 1 s deadline + 2 s grace"
    );

    wait_until_leases_end(&redis, Duration::from_secs(4)).await;
    let after = lambda.invoke(1, &order("crash-1", TEA), DEADLINE).await;
    assert_eq!(after.response().status, 201);
    assert!(!after.response().replayed());
    assert_eq!(
        redis.orders(),
        2,
        "the warm-up's and the retry's: the killed invocation never reached its handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_instance_that_wakes_after_a_takeover_creates_no_second_order() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let lambda = Arc::new(
        Harness::start(
            &release_binary("idempotent-orders"),
            vec![
                env(
                    &proxy.url(),
                    &[("REDIS_TIMEOUT_MS", "5000"), ("RUST_LOG", "warn")],
                ),
                env(&redis.url(), &[]),
            ],
        )
        .await,
    );
    warm_up(&lambda, 0).await;
    let orders_before = redis.orders();
    // Every Redis reply to the stalling instance takes 400 ms: its order
    // write lands 400 ms before its completion is even sent.
    proxy.set_delay(Duration::from_millis(400));
    let stalled = tokio::spawn({
        let lambda = Arc::clone(&lambda);
        async move {
            lambda
                .invoke(0, &order("stall-1", TEA), Duration::from_secs(1))
                .await
        }
    });
    let started = Instant::now();
    while redis.orders() == orders_before {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the order write never landed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    lambda.pause(0); // frozen between its order write and its completion
    wait_until_leases_end(&redis, Duration::from_secs(5)).await;

    let takeover = lambda.invoke(1, &order("stall-1", TEA), DEADLINE).await;
    let takeover = takeover.response().clone();
    assert_eq!(takeover.status, 201);
    assert!(
        !takeover.replayed(),
        "the expired lease lets the retry run again"
    );

    proxy.set_delay(Duration::ZERO);
    lambda.resume(0);
    let late = stalled.await.unwrap();
    assert_eq!(
        late.response().status,
        201,
        "the stalled client still gets its answer: {:?}\n{}",
        late.response().raw,
        lambda.logs(0)
    );
    assert!(
        lambda.logs(0).contains("taken over before completion"),
        "the fenced completion is logged: {}",
        lambda.logs(0)
    );
    let replay = lambda.invoke(1, &order("stall-1", TEA), DEADLINE).await;
    assert!(replay.response().replayed());
    assert_eq!(
        replay.response().body,
        takeover.body,
        "the new owner's record stands"
    );
    // The retry ran again, found the order the stalled attempt wrote under
    // the same execution id, and answered with it: one order, one answer.
    assert_eq!(late.response().body, takeover.body);
    assert_eq!(redis.orders(), orders_before + 1);
}

struct Sent {
    worker: usize,
    key: String,
    started: Instant,
    finished: Instant,
    outcome: Outcome,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_second_redis_outage_under_load_gives_503s_then_recovers_without_wrong_answers() {
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
    let lambda = Arc::new(instances("idempotent-orders", 4, &redis.url()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (lambda, stop) = (Arc::clone(&lambda), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Every fourth request retries the previous key.
                let key = format!("outage-{worker}-{}", if n % 4 == 3 { n - 1 } else { n });
                let started = Instant::now();
                let outcome = lambda.invoke(worker, &order(&key, TEA), DEADLINE).await;
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
    for worker in workers {
        all.extend(worker.await.unwrap());
    }

    for i in 0..4 {
        assert!(
            lambda.is_alive(i),
            "instance {i} crashed: {}",
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
        during >= 8,
        "the load kept going through the outage ({during} requests)"
    );
    for worker in 0..4 {
        let recovered = all.iter().find(|s| {
            s.worker == worker && s.started >= restarted && s.outcome.status() == Some(201)
        });
        let recovered = recovered.unwrap_or_else(|| panic!("instance {worker} never recovered"));
        assert!(
            recovered.finished - restarted < Duration::from_secs(1),
            "instance {worker} took {:?} to recover",
            recovered.finished - restarted
        );
    }

    // Every key that was answered 201 now replays that same answer, or
    // (if its completion was lost with Redis) executes once after its lease.
    let (mut replayed, mut re_executed) = (0, 0);
    for (key, body) in &first_body {
        let mut retry = lambda.invoke(0, &order(key, TEA), DEADLINE).await;
        if retry.status() == Some(409) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            retry = lambda.invoke(0, &order(key, TEA), DEADLINE).await;
        }
        let response = retry.response();
        assert_eq!(response.status, 201, "{key}: {:?}", response.raw);
        if response.replayed() {
            assert_eq!(
                &response.body, body,
                "{key}: replay differs from the first answer"
            );
            replayed += 1;
        } else {
            re_executed += 1;
        }
    }
    println!("outage: {} requests, {during} during the outage, {replayed} keys replayed, {re_executed} re-executed after their lease", all.len());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_fails_closed_with_503_within_the_deadline_and_never_executes_twice() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(socket_addr(&redis.url()));
    let lambda = Harness::start(
        &release_binary("idempotent-orders"),
        vec![
            env(&proxy.url(), &[]), // REDIS_TIMEOUT_MS = 500 (default)
            env(&proxy.url(), &[("REDIS_TIMEOUT_MS", "5000")]),
        ],
    )
    .await;

    proxy.set_delay(Duration::from_millis(100));
    let slow_but_fine = lambda.invoke(0, &order("slow-ok", TEA), DEADLINE).await;
    assert_eq!(slow_but_fine.response().status, 201);
    assert!(
        slow_but_fine.elapsed().unwrap() >= Duration::from_millis(300),
        "3 delayed round trips"
    );

    proxy.set_delay(Duration::from_secs(1));
    for n in 0..5 {
        let outcome = lambda
            .invoke(0, &order(&format!("slow-{n}"), TEA), Duration::from_secs(1))
            .await;
        assert_eq!(
            outcome.response().status,
            503,
            "{:?}",
            outcome.response().raw
        );
        assert!(outcome.response().header("retry-after").is_some());
        assert!(
            outcome.elapsed().unwrap() < Duration::from_millis(900),
            "{:?}",
            outcome.elapsed()
        );
    }
    // A command timeout longer than the time left: the deadline wins.
    let outcome = lambda
        .invoke(1, &order("slow-deadline", TEA), Duration::from_millis(600))
        .await;
    assert_eq!(outcome.response().status, 503);
    assert!(
        outcome.elapsed().unwrap() < Duration::from_millis(600),
        "{:?}",
        outcome.elapsed()
    );

    // Back to normal: each key executes at most once, after its lease.
    proxy.set_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in 0..5 {
        let key = format!("slow-{n}");
        let first = lambda.invoke(0, &order(&key, TEA), DEADLINE).await;
        assert_eq!(first.response().status, 201, "{key}");
        let second = lambda.invoke(0, &order(&key, TEA), DEADLINE).await;
        assert!(second.response().replayed());
    }
    assert_eq!(redis.orders(), 1 + 5, "no key executed twice");
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_under_noeviction_refuses_with_503_and_runs_nothing() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let lambda = instances("idempotent-orders", 1, &redis.url()).await;
    assert_eq!(
        lambda
            .invoke(0, &order("full-0", TEA), DEADLINE)
            .await
            .response()
            .status,
        201
    );

    let written = fill_until_refused(&redis, 100_000);
    assert!(written < 100_000, "maxmemory was never reached");
    // Closing the filling connection frees its buffers and can bring Redis
    // back just under the limit; a lower limit keeps it full for the test.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query(&mut redis.conn())
        .unwrap();
    let refused = lambda.invoke(0, &order("full-1", TEA), DEADLINE).await;
    assert_eq!(
        refused.response().status,
        503,
        "{:?}",
        refused.response().raw
    );
    // Reads still work: the completed key still replays.
    let replay = lambda.invoke(0, &order("full-0", TEA), DEADLINE).await;
    assert!(replay.response().replayed());
    assert_eq!(redis.orders(), 1);

    let _: () = redis::cmd("FLUSHDB").query(&mut redis.conn()).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(
        lambda
            .invoke(0, &order("full-1", TEA), DEADLINE)
            .await
            .response()
            .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_lru_eviction_can_drop_a_record_and_let_a_retry_run_again() {
    // Why the README says noeviction: this test shows the hazard.
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let lambda = instances("idempotent-orders", 1, &redis.url()).await;
    let first = lambda.invoke(0, &order("lru-0", TEA), DEADLINE).await;
    assert_eq!(first.response().status, 201);

    let mut conn = redis.conn();
    let chunk = "x".repeat(64 * 1024);
    let mut i = 0;
    while redis.count("idempotency:*") > 0 {
        assert!(i < 10_000, "the record was never evicted");
        let _: () = redis::cmd("SET")
            .arg(format!("junk:{i}"))
            .arg(&chunk)
            .query(&mut conn)
            .unwrap();
        i += 1;
    }
    let retry = lambda.invoke(0, &order("lru-0", TEA), DEADLINE).await;
    assert_eq!(retry.response().status, 201);
    assert!(
        !retry.response().replayed(),
        "the evicted record no longer protects the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_keeps_one_redis_connection_across_all_its_invocations() {
    let redis = RedisServer::start();
    let lambda = instances("idempotent-orders", 4, &redis.url()).await;
    for round in 0..50 {
        let events = (0..4)
            .map(|i| (i, order(&format!("reuse-{i}-{}", round % 10), TEA)))
            .collect();
        for outcome in lambda.invoke_many(events, DEADLINE).await {
            assert!(matches!(outcome.status(), Some(201) | Some(409)));
        }
    }
    // CLIENT LIST from a fresh connection: one line per client, ours included.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.conn())
        .unwrap();
    let count = clients.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        count - 1,
        4,
        "one connection per instance after 200 invocations:\n{clients}"
    );
}
