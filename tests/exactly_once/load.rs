//! Load without faults: many copies of one key released at the same
//! instant, about 5,000 mixed requests (new keys, simultaneous twins, later
//! retries, changed bodies), and the one Redis connection each process
//! keeps across all its invocations.

use std::collections::HashMap;

use testkit::fuzz::Rng;
use testkit::harness::{order_event as order, Outcome};
use testkit::RedisServer;

use crate::{Lambda, Mode, DEADLINE, TEA};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_races_execute_each_key_once_in_classic_mode() {
    same_key_races(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_races_execute_each_key_once_in_concurrent_mode() {
    same_key_races(Mode::Concurrent).await;
}

/// Rounds of one new key released to every slot at once: 8 processes ×
/// 100 rounds in classic mode; 2 processes × 50 rounds in concurrent mode,
/// so 16 copies race, 8 inside each process and across the two.
async fn same_key_races(mode: Mode) {
    let (processes, rounds) = match mode {
        Mode::Classic => (8, 100),
        Mode::Concurrent => (2, 50),
    };
    let redis = RedisServer::start();
    let lambda = Lambda::start_n(mode, processes, &redis).await;
    for round in 0..rounds {
        let event = order(&format!("race-{round}"), TEA);
        let copies = (0..processes * mode.slots())
            .map(|n| (n % processes, event.clone()))
            .collect();
        let outcomes = lambda.together(copies, DEADLINE).await;
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
    assert_eq!(redis.orders(), rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_of_five_thousand_requests_keeps_one_order_per_key_in_classic_mode() {
    mixed_load(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_of_five_thousand_requests_keeps_one_order_per_key_in_concurrent_mode() {
    mixed_load(Mode::Concurrent).await;
}

enum Slot {
    New(String, String),
    Later(usize),
    Changed(usize),
}

/// About 5,000 requests in rounds released together: new keys,
/// simultaneous twins, later retries and changed bodies. Classic mode: 4
/// processes, one request each per round. Concurrent mode: one process, 8
/// requests per round, so simultaneous twins race inside one process.
async fn mixed_load(mode: Mode) {
    let processes = match mode {
        Mode::Classic => 4,
        Mode::Concurrent => 1,
    };
    let per_round = processes * mode.slots();
    let redis = RedisServer::start();
    let lambda = Lambda::start_n(mode, processes, &redis).await;
    // A fixed seed, so the load plan repeats run to run.
    let mut rng = Rng::seeded(0x5eed_1234_abcd_ef01);
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
                (i % processes, event)
            })
            .collect();
        let outcomes = lambda.together(events, DEADLINE).await;
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
        "mixed load ({mode:?}): {sent} requests, {} orders, {replays} later replays, {mismatches} mismatches, {in_progress} simultaneous twins answered 409 or replay",
        done.len()
    );
    assert!(replays > 500 && mismatches > 200 && in_progress > 200);
    assert_eq!(
        redis.orders(),
        done.len(),
        "one order per distinct (key, first body)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_keeps_one_redis_connection_across_all_its_invocations_in_classic_mode() {
    one_connection_per_process(Mode::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_process_keeps_one_redis_connection_across_all_its_invocations_in_concurrent_mode() {
    one_connection_per_process(Mode::Concurrent).await;
}

/// `INFO stats`' count of connections the server has accepted so far.
fn connections_received(redis: &RedisServer) -> usize {
    let stats = redis.info("stats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

/// 4 processes, 50 rounds in which every slot of every process runs an
/// invocation at once (8 in flight per process in concurrent mode), half
/// of them replays: each process keeps the one connection it opened.
async fn one_connection_per_process(mode: Mode) {
    let processes = 4;
    let redis = RedisServer::start();
    // Each call opens one connection of the test's own, this one included.
    let before = connections_received(&redis);
    let lambda = Lambda::start_n(mode, processes, &redis).await;
    let mut invocations = 0;
    for round in 0..50 {
        let events = (0..processes)
            .flat_map(|i| {
                (0..mode.slots())
                    .map(move |s| (i, order(&format!("reuse-{i}-{s}-{}", round % 10), TEA)))
            })
            .collect();
        for outcome in lambda.together(events, DEADLINE).await {
            assert_eq!(outcome.status(), Some(201), "{outcome:?}");
            invocations += 1;
        }
    }
    assert_eq!(invocations, 50 * processes * mode.slots());
    // CLIENT LIST from a fresh connection: one line per client, ours included.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.conn())
        .unwrap();
    let count = clients.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        count - 1,
        processes,
        "one connection per process after {invocations} invocations:\n{clients}"
    );
    // Never another one since start-up: neither a second connection for
    // simultaneous invocations nor a reconnection.
    let opened = connections_received(&redis) - before;
    assert_eq!(
        opened,
        processes + 2,
        "connections accepted: one per process, plus CLIENT LIST's and this INFO's"
    );
}
