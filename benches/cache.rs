//! The local cache (`IDEMPOTENCY_LOCAL_CACHE_BYTES`) in the benchmark:
//! its latency paths and the check that they never reach Redis, its memory
//! after many distinct orders, and its hit rate in one Managed Instances
//! process over a mix of new orders and retries (`key_mix.rs`).
//! `cargo bench --bench lambda -- cache` runs these alone.
//!
//! A cached answer sends nothing to Redis, so a path that silently missed
//! the cache would still pass every status check and measure the uncached
//! path. Everything here that depends on the cache being used counts the
//! commands clients sent (`MONITOR`) rather than assuming it.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use testkit::harness::Harness;
use testkit::RedisServer;

use super::key_mix::{self, MixRun};
use super::report::{self, percentiles, Percentiles};
use super::{
    invoke_checked, latency, order, start, Bench, CACHED_HARNESS, DEADLINE, DEPLOYED, PROCESSES,
    TEA,
};

/// The cache bound of the latency paths and of the memory step: 8 MiB.
pub const BYTES: usize = 8 << 20;
const BYTES_TEXT: &str = "8388608";

/// The function as deployed plus the 8 MiB cache.
pub static CACHED: LazyLock<Vec<(&str, &str)>> =
    LazyLock::new(|| [DEPLOYED, &[("IDEMPOTENCY_LOCAL_CACHE_BYTES", BYTES_TEXT)]].concat());

/// Orders fed to each process of the memory step, and where RSS is read.
const MEMORY_ORDERS: usize = 50_000;
const MEMORY_READ_AT: [usize; 2] = [10_000, 50_000];

/// The cached paths, on the function with `CACHED`: a replay and a `422`
/// of a record that harness's own process 0 wrote with the cache on (only
/// such records carry the expiry the cache needs; processes 1 and 2 cache
/// it on their first read during the warm-up).
pub async fn paths(harnesses: &[Harness]) -> Vec<Bench> {
    let harness = CACHED_HARNESS;
    let created = harnesses[harness]
        .invoke(0, &order("bench-replay-cached", TEA), DEADLINE)
        .await;
    assert_eq!(created.response().status, 201, "{created:?}");
    vec![
        Bench {
            name: "replay, local cache",
            harness,
            event: Box::new(|_| order("bench-replay-cached", TEA)),
            status: 201,
        },
        Bench {
            name: "mismatch (422), local cache",
            harness,
            event: Box::new(|_| order("bench-replay-cached", r#"{"product":"Tea","quantity":2}"#)),
            status: 422,
        },
    ]
}

/// Panics unless every process of every path on the cached harness
/// answers without sending Redis a single command (20 invocations each,
/// after the latency step's): otherwise the latency table would show the
/// uncached path under the cached path's name.
pub async fn assert_no_redis(paths: &[Bench], harnesses: &[Harness], redis: &RedisServer) {
    let harness = CACHED_HARNESS;
    for path in paths.iter().filter(|p| p.harness == harness) {
        for process in 0..PROCESSES {
            let monitor = redis.monitor();
            for i in 0..20 {
                invoke_checked(&harnesses[harness], path, process, 3_000_000 + i).await;
            }
            let sent = monitor.take_commands();
            assert!(
                sent.is_empty(),
                "{} (process {process}) sent Redis {sent:?}: not answered from the cache",
                path.name
            );
        }
        println!(
            "{}: 0 Redis commands in 20 invocations on each of {PROCESSES} processes",
            path.name
        );
    }
}

/// `-- cache`: the cached paths' latency beside the floors and the
/// uncached replay and `422`, the check that they reach no Redis, the
/// memory rows and the Managed Instances mix.
pub async fn only(
    paths: Vec<Bench>,
    harnesses: Vec<Harness>,
    function: &Path,
    redis: &RedisServer,
) {
    let paths: Vec<Bench> = paths
        .into_iter()
        .filter(|p| {
            p.harness < 2
                || p.harness == CACHED_HARNESS
                || matches!(p.name, "replay" | "mismatch (422)")
        })
        .collect();
    let durations = latency(&paths, &harnesses).await;
    assert_no_redis(&paths, &harnesses, redis).await;
    report::print_latency(&paths, &durations);
    drop(harnesses);
    print_memory(&memory(function, redis).await);
    print_managed(&managed(function, redis).await);
}

/// One process's RSS over the memory step.
pub struct Memory {
    pub label: &'static str,
    /// `(orders, VmRSS KiB, VmHWM KiB)`.
    pub rss: Vec<(usize, u64, u64)>,
    /// Records the cache held at the end (the newest ones), if it is on.
    pub held: Option<usize>,
}

/// RSS after 10,000 and 50,000 new orders (each its own key, so each a
/// record the cache keeps until the bound evicts it), with the cache off
/// and with the 8 MiB cache; the two processes are fed side by side.
pub async fn memory(function: &Path, redis: &RedisServer) -> Vec<Memory> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let off = fill(function, redis, DEPLOYED, "off", &run);
    let on = fill(function, redis, &CACHED, "on", &run);
    let ((off, _), (mut on, lambda)) = tokio::join!(off, on);
    on.held = Some(held(&lambda, redis, &format!("mem-on-{run}")).await);
    vec![off, on]
}

async fn fill(
    function: &Path,
    redis: &RedisServer,
    env: &[(&str, &str)],
    tag: &'static str,
    run: &str,
) -> (Memory, Harness) {
    let lambda = start(function, 1, redis, env).await;
    let mut rss = Vec::new();
    for n in 0..MEMORY_ORDERS {
        let event = order(&format!("mem-{tag}-{run}-{n}"), TEA);
        // Retried, as a client would, until it is stored: a stall of
        // this shared machine can outlast REDIS_TIMEOUT_MS (503), and then
        // hold the key for its lease (409).
        loop {
            let outcome = lambda.invoke(0, &event, DEADLINE).await;
            match outcome.status() {
                Some(201) => break,
                Some(409 | 503) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => panic!("{outcome:?}"),
            }
        }
        if MEMORY_READ_AT.contains(&(n + 1)) {
            let (now, peak) = report::rss_kib(lambda.pid(0));
            rss.push((n + 1, now, peak));
        }
    }
    let label = if tag == "on" {
        "8 MiB cache"
    } else {
        "no cache"
    };
    let memory = Memory {
        label,
        rss,
        held: None,
    };
    (memory, lambda)
}

/// How many of the newest orders the cache still holds: replays from the
/// newest back, every `STEP`th, until one sends Redis a command. The cache
/// evicts the oldest first, so what it holds is a run of the newest: it
/// holds at least the answer and fewer than `STEP` more. Replays that hit
/// change nothing.
async fn held(lambda: &Harness, redis: &RedisServer, prefix: &str) -> usize {
    const STEP: usize = 100;
    let monitor = redis.monitor();
    let mut back = 1;
    while back <= MEMORY_ORDERS {
        let key = format!("{prefix}-{}", MEMORY_ORDERS - back);
        let outcome = lambda.invoke(0, &order(&key, TEA), DEADLINE).await;
        assert!(outcome.response().replayed(), "{outcome:?}");
        if !monitor.take_commands().is_empty() {
            // The previous probe hit: at least that many are held.
            return back.saturating_sub(STEP);
        }
        back += STEP;
    }
    MEMORY_ORDERS
}

/// Prints the memory rows and what the bound costs.
pub fn print_memory(rows: &[Memory]) {
    println!("\n| local cache | RSS KiB after 10,000 new orders | after 50,000 | peak | records held at the end |\n|---|---:|---:|---:|---:|");
    for row in rows {
        let at = |n: usize| row.rss.iter().find(|r| r.0 == n).map_or(0, |r| r.1);
        let peak = row.rss.last().map_or(0, |r| r.2);
        let held = row.held.map_or("—".to_owned(), |h| format!("≥ {h}"));
        println!(
            "| {} | {} | {} | {peak} | {held} |",
            row.label,
            at(MEMORY_READ_AT[0]),
            at(MEMORY_READ_AT[1])
        );
    }
    if let [off, on] = rows {
        let last = MEMORY_READ_AT.len() - 1;
        let cost = (on.rss[last].1 as f64 - off.rss[last].1 as f64) * 1024.0;
        let held = on.held.unwrap_or(0).max(1) as f64;
        println!(
            "the {} MiB bound cost {:.1} MiB of RSS after {} orders, {:.2} × the bound; it held at least {} records, {:.0} B of RSS each",
            BYTES >> 20,
            cost / (1 << 20) as f64,
            MEMORY_READ_AT[last],
            cost / BYTES as f64,
            held,
            cost / held,
        );
    }
}

/// One configuration of the Managed Instances mix.
pub struct Managed {
    pub label: &'static str,
    pub requests: usize,
    pub retries: usize,
    pub per_second: f64,
    /// Durations of the `201`s: all, those that ran the handler, replays.
    pub all: Percentiles,
    pub executed: Percentiles,
    pub replayed: Percentiles,
    /// Over both passes: `409`s, `503`s, and requests a later one of the
    /// same order overtook (`key_mix::MixRun`).
    pub anomalies: [usize; 3],
    /// CPU µs per request: the function, redis-server.
    pub cpu_us: [f64; 2],
    pub rss_kib: u64,
    /// From the counted pass: claims (`SET` on an `idempotency:` key) and
    /// all commands clients sent, and the requests of that pass.
    pub claims: usize,
    pub commands: usize,
    pub counted_requests: usize,
    pub counted_retries: usize,
}

/// One process at concurrency 8 per configuration (no cache, 1 MiB and
/// 8 MiB), over the same key mix: timed in interleaved rounds, then the
/// whole mix once more under `MONITOR` (new keys) for the hit rate, which
/// `MONITOR` would distort if it ran during the timed rounds (Redis
/// formats every command for it, and the harness reads them).
pub async fn managed(function: &Path, redis: &RedisServer) -> Vec<Managed> {
    const CONFIGS: [(&str, &str); 3] = [
        ("no cache", "0"),
        ("1 MiB cache", "1048576"),
        ("8 MiB cache", BYTES_TEXT),
    ];
    let mix = Arc::new(key_mix::generate());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut lambdas = Vec::new();
    for (i, (_, bytes)) in CONFIGS.iter().enumerate() {
        let mut env = DEPLOYED.to_vec();
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY", "8"));
        env.push(("IDEMPOTENCY_LOCAL_CACHE_BYTES", bytes));
        let lambda = Arc::new(start(function, 1, redis, &env).await);
        lambda.wait_parked(0, key_mix::CONCURRENCY).await;
        let warm = format!("warm-{i}-{run}");
        key_mix::run(&lambda, &mix, 0..2_000, &warm).await;
        lambdas.push(lambda);
    }
    let mut timed: Vec<MixRun> = (0..CONFIGS.len()).map(|_| MixRun::default()).collect();
    let mut cpu = vec![[Duration::ZERO; 2]; CONFIGS.len()];
    let rounds = key_mix::ROUNDS;
    for round in 0..rounds {
        let slice = mix.len() * round / rounds..mix.len() * (round + 1) / rounds;
        for (i, lambda) in lambdas.iter().enumerate() {
            let pids = [
                lambda.pid(0).to_string(),
                redis.pid().map_or_else(String::new, |p| p.to_string()),
            ];
            let before = pids.clone().map(|p| report::cpu_time(&p));
            let prefix = format!("mix-{i}-{run}");
            timed[i].add(key_mix::run(lambda, &mix, slice.clone(), &prefix).await);
            for (k, pid) in pids.iter().enumerate() {
                cpu[i][k] += report::cpu_time(pid).saturating_sub(before[k]);
            }
        }
    }
    let mut rows = Vec::new();
    for (i, lambda) in lambdas.iter().enumerate() {
        let monitor = redis.monitor();
        let counted = key_mix::run(lambda, &mix, 0..mix.len(), &format!("count-{i}-{run}")).await;
        let sent = monitor.take_commands();
        let claims = sent
            .iter()
            .filter(|(name, key)| name == "set" && key.starts_with("idempotency:"))
            .count();
        let t = &mut timed[i];
        let requests = t.requests();
        let mut all: Vec<Duration> = t.executed.iter().chain(&t.replayed).copied().collect();
        rows.push(Managed {
            label: CONFIGS[i].0,
            requests,
            retries: t.retries(),
            per_second: requests as f64 / t.wall.as_secs_f64(),
            all: percentiles(&mut all),
            executed: percentiles(&mut t.executed),
            replayed: percentiles(&mut t.replayed),
            anomalies: [
                t.conflicts + counted.conflicts,
                t.unavailable + counted.unavailable,
                t.overtaken + counted.overtaken,
            ],
            cpu_us: cpu[i].map(|c| c.as_secs_f64() * 1e6 / requests as f64),
            rss_kib: report::rss_kib(lambda.pid(0)).1,
            claims,
            commands: sent.len(),
            counted_requests: counted.requests(),
            counted_retries: counted.retries(),
        });
    }
    rows
}

/// Prints the Managed Instances mix table.
pub fn print_managed(rows: &[Managed]) {
    let Some(first) = rows.first() else {
        return;
    };
    println!(
        "\nManaged Instances, one process at concurrency {}: {} requests ({} retries) in {} interleaved rounds; hit rate from a second pass under MONITOR\n",
        key_mix::CONCURRENCY,
        first.requests,
        first.retries,
        key_mix::ROUNDS
    );
    println!("| local cache | requests/s | × no cache | p50 | p99 | executed p50 | replay p50 | replay p99 | 409s / 503s / overtaken | CPU µs per request: function / redis-server | peak RSS KiB | Redis commands per request | retries answered without Redis |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|");
    for row in rows {
        let hits = row.counted_requests.saturating_sub(row.claims);
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} / {:.0} | {} | {:.2} | {:.1} % ({hits} of {}) |",
            row.label,
            row.per_second,
            row.per_second / first.per_second,
            row.all.median,
            row.all.p99,
            row.executed.median,
            row.replayed.median,
            row.replayed.p99,
            row.anomalies.map(|n| n.to_string()).join(" / "),
            row.cpu_us[0],
            row.cpu_us[1],
            row.rss_kib,
            row.commands as f64 / row.counted_requests as f64,
            hits as f64 * 100.0 / row.counted_retries as f64,
            row.counted_retries,
        );
    }
}

/// The memory rows and the mix table for `results.json`.
pub fn to_json(memory: &[Memory], managed: &[Managed]) -> serde_json::Value {
    serde_json::json!({
        "bound_bytes": BYTES,
        "memory": memory.iter().map(|m| serde_json::json!({
            "cache": m.label, "held_at_least": m.held,
            "rss_kib": m.rss.iter().map(|(n, now, peak)| serde_json::json!({
                "orders": n, "rss": now, "peak": peak })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "managed_concurrency_8": managed.iter().map(|m| serde_json::json!({
            "cache": m.label, "requests": m.requests, "retries": m.retries,
            "per_second": m.per_second, "p50_us": m.all.median, "p99_us": m.all.p99,
            "executed_p50_us": m.executed.median, "replayed_p50_us": m.replayed.median,
            "replayed_p99_us": m.replayed.p99, "conflicts_409": m.anomalies[0],
            "unavailable_503": m.anomalies[1], "overtaken": m.anomalies[2],
            "cpu_us_per_request": {"function": m.cpu_us[0], "redis": m.cpu_us[1]},
            "peak_rss_kib": m.rss_kib,
            "counted": {"requests": m.counted_requests, "retries": m.counted_retries,
                "claims": m.claims, "commands": m.commands},
        })).collect::<Vec<_>>(),
    })
}
