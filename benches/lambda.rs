//! The benchmark: what idempotency costs per invocation, measured the way
//! Lambda runs the function. Run it with `cargo bench --bench lambda`.
//!
//! It builds the release binaries, starts its own `redis-server`, and
//! drives every binary as separate processes through the Lambda Runtime API
//! (the harness in `crates/testkit`). Durations are taken on the Runtime API
//! side, from handing an event out to receiving the response. Every figure
//! is read against two floors measured in the same run: `floor-echo` (a
//! no-op `lambda_http` function) and `floor-one-rtt` (one Redis GET).
//!
//! The function runs **as deployed**: JSON logs at INFO and the per-request
//! metric line on, as `template.yaml` sets them. The same binary with both
//! off is measured too, so the cost of observability is a line of its own.
//!
//! Steps, each a function below or in `processes.rs`: build; latency by
//! path (interleaved rounds); round trips by path (Redis `MONITOR`);
//! throughput over 1, 2 and 4 instances; one process at Managed Instances
//! concurrency 1, 8 and 32; cold start (init and the first invocation,
//! connecting at init or on the first request); memory; stored-body size
//! and a large keyspace. The local cache has a latency path, a share of the
//! memory step and a Managed Instances mix of its own (`cache.rs`). It prints
//! tables, writes `target/bench/results.json`, and draws
//! `target/bench/latency.png` with `benches/plot.py` when matplotlib is
//! installed. Durations are figures to read, never assertions.

mod cache;
mod instructions;
mod key_mix;
mod processes;
mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use testkit::harness::{order_event as order, v2_event, Harness};
use testkit::RedisServer;

use processes::{
    body_sizes, cold_start, instances_throughput, large_keyspace, managed_instances, memory,
};
use report::{percentiles, Percentiles, Results};

const DEADLINE: Duration = Duration::from_secs(10);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;
/// Invocations per path (in rounds of `ROUND`, interleaved between paths
/// so that drift in the machine's speed hits every path alike).
const PER_PATH: usize = 2_000;
const ROUND: usize = 200;
/// Processes per configuration, taking a path's rounds in turn: the
/// scheduler places each process on this machine's cores its own way, and
/// one path's figure should not hang on one process's placement. (Turns
/// per invocation instead would measure processes that had just gone idle,
/// every time.)
const PROCESSES: usize = 3;

/// How the function's output is configured.
const DEPLOYED: &[(&str, &str)] = &[
    ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ("RUST_LOG", "info"),
    ("METRICS_NAMESPACE", "IdempotentOrders"),
];
const QUIET: &[(&str, &str)] = &[("RUST_LOG", "error"), ("METRICS_NAMESPACE", "")];

/// Extra environment variables of one instance.
type Env = &'static [(&'static str, &'static str)];

/// The harness of the function with the local cache on (`cache::CACHED`).
const CACHED_HARNESS: usize = 4;

/// A new order's event without its `Idempotency-Key`.
fn missing_key() -> Value {
    let mut event = order("x", TEA);
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    event
}

fn get(path: &str) -> Value {
    v2_event("GET", path, &[], None)
}

fn build() -> PathBuf {
    testkit::harness::build_release(&[
        "--bin",
        "idempotent-orders",
        "--example",
        "floor-echo",
        "--example",
        "floor-one-rtt",
        "--example",
        "layer-echo",
    ])
}

async fn start(
    binary: &Path,
    instances: usize,
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> Harness {
    let env = testkit::harness::function_env(&redis.url(), extra);
    Harness::start(binary, vec![env; instances]).await
}

/// One measured path: which process, how to build its i-th event, and the
/// status it must answer (checked on every invocation).
pub struct Bench {
    pub name: &'static str,
    harness: usize,
    event: Box<dyn Fn(usize) -> Value>,
    status: u16,
}

async fn invoke_checked(harness: &Harness, path: &Bench, process: usize, i: usize) -> Duration {
    let outcome = harness.invoke(process, &(path.event)(i), DEADLINE).await;
    let response = outcome.response();
    assert_eq!(
        response.status, path.status,
        "{}: {:?}",
        path.name, response.raw
    );
    outcome.elapsed().expect("a response has a duration")
}

/// The idempotency records in Redis.
fn records(redis: &RedisServer) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("idempotency:*")
        .query(&mut redis.conn())
        .expect("KEYS")
}

/// Turns the completed record `key` into one in progress for another
/// owner, lasting an hour, so every request on it is a `409`. The value is
/// `p<owner>\n` then the layer's payload: version 1, the 32-byte
/// fingerprint (kept from the completed record), the lease end.
fn hold_in_progress(redis: &RedisServer, key: &str) {
    let mut conn = redis.conn();
    let completed: Vec<u8> = redis::cmd("GET").arg(key).query(&mut conn).expect("GET");
    let newline = completed.iter().position(|&b| b == b'\n').expect("owner");
    let fingerprint = &completed[newline + 2..newline + 34];
    let lease_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    let mut value = b"pother\n\x01".to_vec();
    value.extend_from_slice(fingerprint);
    value.extend_from_slice(&lease_end.to_be_bytes());
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(3_600_000)
        .query(&mut conn)
        .expect("SET");
}

/// The paths to measure: harness 0 and 1 are the floors, 2 the function
/// as deployed, 3 the function with logs and metrics off, 4 the function
/// as deployed with the local cache on.
async fn paths(harnesses: &[Harness], redis: &RedisServer) -> Vec<Bench> {
    let deployed = &harnesses[2];
    let created = deployed
        .invoke(0, &order("bench-replay", TEA), DEADLINE)
        .await;
    let location = created
        .response()
        .header("location")
        .expect("location")
        .to_owned();
    let rest = testkit::fixtures::rest_order_event("bench-replay-rest");
    let created_rest = deployed.invoke(0, &rest, DEADLINE).await;
    assert_eq!(created_rest.response().status, 201, "{created_rest:?}");
    let before = records(redis);
    deployed
        .invoke(0, &order("bench-busy", TEA), DEADLINE)
        .await;
    let busy = records(redis)
        .into_iter()
        .find(|k| !before.contains(k))
        .expect("bench-busy");
    hold_in_progress(redis, &busy);
    let missing = missing_key();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let quiet_run = run.clone();
    let baseline_location = location.clone();
    let mut paths = vec![
        // The floors get the same event as a new request, so that parsing
        // and moving the event cost them what it costs the function.
        Bench {
            name: "floor-echo",
            harness: 0,
            event: Box::new(|i| order(&format!("floor-{i}"), TEA)),
            status: 200,
        },
        Bench {
            name: "floor-one-rtt",
            harness: 1,
            event: Box::new(|i| order(&format!("floor-{i}"), TEA)),
            status: 200,
        },
        Bench {
            name: "new order",
            harness: 2,
            event: Box::new(move |i| order(&format!("bench-new-{run}-{i}"), TEA)),
            status: 201,
        },
        Bench {
            name: "replay",
            harness: 2,
            event: Box::new(|_| order("bench-replay", TEA)),
            status: 201,
        },
        Bench {
            name: "replay, REST API event",
            harness: 2,
            event: Box::new(move |_| rest.clone()),
            status: 201,
        },
        Bench {
            name: "in progress (409)",
            harness: 2,
            event: Box::new(|_| order("bench-busy", TEA)),
            status: 409,
        },
        Bench {
            name: "mismatch (422)",
            harness: 2,
            event: Box::new(|_| order("bench-replay", r#"{"product":"Tea","quantity":2}"#)),
            status: 422,
        },
        Bench {
            name: "missing key (400)",
            harness: 2,
            event: Box::new(move |_| missing.clone()),
            status: 400,
        },
        Bench {
            name: "GET /orders/{id}",
            harness: 2,
            event: Box::new(move |_| get(&location)),
            status: 200,
        },
        Bench {
            name: "unknown route (404)",
            harness: 2,
            event: Box::new(|_| get("/nope")),
            status: 404,
        },
        Bench {
            name: "new order, logs and metrics off",
            harness: 3,
            event: Box::new(move |i| order(&format!("bench-quiet-{quiet_run}-{i}"), TEA)),
            status: 201,
        },
        Bench {
            name: "replay, logs and metrics off",
            harness: 3,
            event: Box::new(|_| order("bench-replay", TEA)),
            status: 201,
        },
    ];
    paths.extend(cache::paths(harnesses).await);
    if harnesses.len() > BASELINE_HARNESS {
        paths.extend(baseline_paths(&baseline_location));
    }
    paths
}

/// The harness of `BENCH_BASELINE`, when it is set.
const BASELINE_HARNESS: usize = 5;

/// The baseline binary's (`BENCH_BASELINE`) paths: harness 5, deployed
/// configuration, on the records the function made (same record format).
fn baseline_paths(location: &str) -> Vec<Bench> {
    let location = location.to_owned();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let missing = missing_key();
    vec![
        Bench {
            name: "baseline: new order",
            harness: BASELINE_HARNESS,
            event: Box::new(move |i| order(&format!("bench-base-{run}-{i}"), TEA)),
            status: 201,
        },
        Bench {
            name: "baseline: replay",
            harness: BASELINE_HARNESS,
            event: Box::new(|_| order("bench-replay", TEA)),
            status: 201,
        },
        Bench {
            name: "baseline: in progress (409)",
            harness: BASELINE_HARNESS,
            event: Box::new(|_| order("bench-busy", TEA)),
            status: 409,
        },
        Bench {
            name: "baseline: missing key (400)",
            harness: BASELINE_HARNESS,
            event: Box::new(move |_| missing.clone()),
            status: 400,
        },
        Bench {
            name: "baseline: GET /orders/{id}",
            harness: BASELINE_HARNESS,
            event: Box::new(move |_| get(&location)),
            status: 200,
        },
    ]
}

/// Latency of every path, in interleaved rounds after a warm-up.
async fn latency(paths: &[Bench], harnesses: &[Harness]) -> Vec<Percentiles> {
    for path in paths {
        for process in 0..PROCESSES {
            for i in 0..50 {
                let i = 1_000_000 + process * 50 + i;
                invoke_checked(&harnesses[path.harness], path, process, i).await;
            }
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    for round in 0..PER_PATH / ROUND {
        for (p, path) in paths.iter().enumerate() {
            // Each round to one process, in turn.
            let process = round % PROCESSES;
            for i in 0..ROUND {
                let harness = &harnesses[path.harness];
                samples[p].push(invoke_checked(harness, path, process, round * ROUND + i).await);
            }
        }
    }
    samples.iter_mut().map(|s| percentiles(s)).collect()
}

/// Commands clients send per request on each path, from `MONITOR`.
async fn round_trips(
    paths: &[Bench],
    harnesses: &[Harness],
    redis: &RedisServer,
) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for path in paths {
        let monitor = redis.monitor();
        for i in 0..50 {
            invoke_checked(&harnesses[path.harness], path, 0, 2_000_000 + i).await;
        }
        let seen = monitor.take();
        let mut counts = std::collections::BTreeMap::new();
        for name in &seen {
            *counts.entry(name.clone()).or_insert(0usize) += 1;
        }
        let detail = counts
            .iter()
            .map(|(name, n)| format!("{name}×{}", *n as f64 / 50.0))
            .collect::<Vec<_>>()
            .join(" ");
        out.push((seen.len() as f64 / 50.0, detail));
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let release = build();
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let function = std::env::var_os("BENCH_FUNCTION")
        .map_or_else(|| release.join("idempotent-orders"), PathBuf::from);
    // `-- memory`: only the RSS after 10,000 and 50,000 invocations (of
    // any release binary, with `BENCH_FUNCTION`).
    if std::env::args().any(|a| a == "memory") {
        for (n, (rss, peak)) in memory(&function, &redis).await {
            println!("RSS after {n} invocations: {rss} KiB (peak {peak} KiB)");
        }
        cache::print_memory(&cache::memory(&function, &redis).await);
        return;
    }
    let mut processes: Vec<(PathBuf, Env)> = vec![
        (release.join("examples/floor-echo"), QUIET),
        (release.join("examples/floor-one-rtt"), QUIET),
        (function.clone(), DEPLOYED),
        (function.clone(), QUIET),
        (function.clone(), &cache::CACHED),
    ];
    // `BENCH_BASELINE=<a release binary>`: an A/B comparison in one run;
    // its paths are named "baseline: …".
    if let Some(baseline) = std::env::var_os("BENCH_BASELINE") {
        processes.push((PathBuf::from(baseline), DEPLOYED));
    }
    let mut harnesses = Vec::new();
    for (binary, env) in &processes {
        harnesses.push(start(binary, PROCESSES, &redis, env).await);
    }
    let paths = paths(&harnesses, &redis).await;
    // `-- instructions [path name prefix …]`: count instructions instead,
    // of the floors and the named paths (all when none is named).
    // `-- latency [path name prefix …]`: only the latency table, of the
    // floors and the named paths.
    // `-- managed`: only the Managed Instances tables.
    if std::env::args().any(|a| a == "managed") {
        drop(harnesses);
        report::print_managed(&managed_instances(&function, &redis).await);
        cache::print_managed(&cache::managed(&function, &redis).await);
        return;
    }
    // `-- cache`: only the local cache's figures (`cache::only`).
    if std::env::args().any(|a| a == "cache") {
        cache::only(paths, harnesses, &function, &redis).await;
        return;
    }
    let mode = std::env::args().find(|a| a == "instructions" || a == "latency");
    if let Some(mode) = mode {
        let only: Vec<String> = std::env::args()
            .skip_while(|a| *a != mode)
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let paths: Vec<Bench> = paths
            .into_iter()
            .filter(|p| {
                p.harness < 2 || only.is_empty() || only.iter().any(|o| p.name.starts_with(o))
            })
            .collect();
        if mode == "latency" {
            let durations = latency(&paths, &harnesses).await;
            cache::assert_no_redis(&paths, &harnesses, &redis).await;
            report::print_latency(&paths, &durations);
            return;
        }
        drop(harnesses);
        let counts = instructions::count(&paths, &processes, &redis).await;
        instructions::print_and_save(&paths, &counts, &function);
        return;
    }
    let durations = latency(&paths, &harnesses).await;
    cache::assert_no_redis(&paths, &harnesses, &redis).await;
    let trips = round_trips(&paths, &harnesses, &redis).await;
    drop(harnesses);
    let results = Results {
        durations,
        round_trips: trips,
        throughput: instances_throughput(&function, &redis).await,
        managed: managed_instances(&function, &redis).await,
        cache_managed: cache::managed(&function, &redis).await,
        cold: cold_start(&release, &redis).await,
        rss: memory(&function, &redis).await,
        cache_memory: cache::memory(&function, &redis).await,
        binary: report::binary_sizes(&function),
        sizes: body_sizes(&release, &redis).await,
        million: large_keyspace(&function, &redis).await,
    };
    report::print_and_save(&paths, &results);
}
