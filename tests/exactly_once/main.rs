//! Exactly once under load and faults: the release binary run as Lambda
//! runs it, several processes through the Runtime API harness
//! (`testkit::harness`), against a real `redis-server` that the tests slow
//! down (`testkit::proxy`), stop, fill up or flood with garbage.
//!
//! Every scenario runs in both of the binary's modes ([`Mode`]): classic
//! Lambda, one invocation per process at a time, and Lambda Managed
//! Instances, each process serving 8 invocations at once over its one
//! Redis connection. A scenario is one function of the mode, called by two
//! thin tests named after it.
//!
//! This file owns the modes, the processes ([`Lambda`]) and the helpers
//! every scenario uses; the scenarios live in
//! - `load`: races for one key, the mixed load, one connection per process;
//! - `crashes`: a process killed after its claims, a frozen one waking late;
//! - `redis_faults`: Redis down for 2 s under load, a slow Redis;
//! - `memory`: a full Redis under `noeviction` (with and without replicas
//!   required), eviction under `allkeys-lru`.
//!
//! Each scenario is bounded (a few seconds) so the suite stays within CI's
//! time; docs/guarantees.md's "Exactly once under load and faults" section
//! explains each.

mod crashes;
mod load;
mod memory;
mod redis_faults;

use std::collections::BTreeSet;
use std::ops::Deref;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::harness::{function_env, order_event, release_binary, Harness, Outcome};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(3);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

/// How the binary is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Classic Lambda: each process serves one invocation at a time
    /// (`AWS_LAMBDA_MAX_CONCURRENCY` unset).
    Classic,
    /// Lambda Managed Instances: each process serves 8 invocations at once
    /// (`AWS_LAMBDA_MAX_CONCURRENCY=8`), all over its one Redis connection.
    Concurrent,
}

impl Mode {
    /// Invocations one process serves at once.
    fn slots(self) -> usize {
        match self {
            Mode::Classic => 1,
            Mode::Concurrent => 8,
        }
    }

    /// The environment of one process in this mode pointed at
    /// `redis_url`, plus `extra` variables.
    fn env(self, redis_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = extra.to_vec();
        let concurrency = self.slots().to_string();
        if self == Mode::Concurrent {
            vars.push(("AWS_LAMBDA_MAX_CONCURRENCY", &concurrency));
        }
        function_env(redis_url, &vars)
    }
}

/// Processes of the function, all in one mode.
struct Lambda {
    harness: Harness,
    mode: Mode,
}

impl Deref for Lambda {
    type Target = Harness;

    fn deref(&self) -> &Harness {
        &self.harness
    }
}

impl Lambda {
    /// One process per element of `envs` (from [`Mode::env`]), returned
    /// once every slot of every process is waiting for an invocation.
    async fn start(mode: Mode, envs: Vec<Vec<(String, String)>>) -> Self {
        let harness = Harness::start(&release_binary("idempotent-orders"), envs).await;
        for i in 0..harness.len() {
            harness.wait_parked(i, mode.slots()).await;
        }
        Self { harness, mode }
    }

    /// `n` processes pointed at `redis`.
    async fn start_n(mode: Mode, n: usize, redis: &RedisServer) -> Self {
        let envs = (0..n).map(|_| mode.env(&redis.url(), &[])).collect();
        Self::start(mode, envs).await
    }

    /// Releases the `(process, event)` pairs together, once every slot of
    /// every process named is waiting; outcomes come back in order. A
    /// process named more often than it has slots runs the rest as slots
    /// free up.
    async fn together(&self, assignments: Vec<(usize, Value)>, deadline: Duration) -> Vec<Outcome> {
        let named: BTreeSet<usize> = assignments.iter().map(|(i, _)| *i).collect();
        for i in named {
            self.wait_parked(i, self.mode.slots()).await;
        }
        self.invoke_many(assignments, deadline).await
    }

    /// `events` released together to process `i`.
    async fn burst(&self, i: usize, events: &[Value], deadline: Duration) -> Vec<Outcome> {
        let assignments = events.iter().map(|e| (i, e.clone())).collect();
        self.together(assignments, deadline).await
    }
}

/// An order of tea under each key.
fn orders(keys: &[String]) -> Vec<Value> {
    keys.iter().map(|key| order_event(key, TEA)).collect()
}

/// One key per slot of a process: `<prefix>-0`, `<prefix>-1`, …
fn keys(prefix: &str, mode: Mode) -> Vec<String> {
    (0..mode.slots()).map(|n| format!("{prefix}-{n}")).collect()
}

/// One request with Redis at full speed, so the process has connected and
/// loaded its scripts before a test slows Redis down.
async fn warm_up(lambda: &Lambda, i: usize) {
    let event = order_event(&format!("warm-up-{i}"), TEA);
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

/// Waits until `n` claims are in progress (that many invocations are
/// between their claim and their completion).
async fn wait_for_claims(redis: &RedisServer, n: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let claims = in_progress_records(redis);
        if claims >= n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{claims} of {n} claims appeared"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until no claim is in progress any more (their leases ran out).
async fn wait_until_leases_end(redis: &RedisServer, within: Duration) {
    let started = Instant::now();
    while in_progress_records(redis) > 0 {
        assert!(started.elapsed() < within, "the lease never ran out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that every outcome is a `201` that executed (not a replay) and
/// returns their bodies.
fn executed(outcomes: &[Outcome], what: &str) -> Vec<Vec<u8>> {
    outcomes
        .iter()
        .map(|outcome| {
            let response = outcome.response();
            assert_eq!(response.status, 201, "{what}: {:?}", response.raw);
            assert!(!response.replayed(), "{what}: executed, not replayed");
            response.body.clone()
        })
        .collect()
}
