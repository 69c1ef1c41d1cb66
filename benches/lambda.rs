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
//! Steps, each a function below: build; latency by path (interleaved
//! rounds); round trips by path (Redis `MONITOR`); throughput over 1, 2 and 4
//! instances; one process at Managed Instances concurrency 1, 8 and 32;
//! cold start (init and the first invocation, connecting at init or on the
//! first request); memory; stored-body size and a large keyspace. It prints
//! tables, writes `target/bench/results.json`, and draws
//! `target/bench/latency.png` with `benches/plot.py` when matplotlib is
//! installed. Durations are figures to read, never assertions.

mod instructions;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::harness::{order_event as order, v2_event, Harness};
use testkit::RedisServer;

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

/// A new order's event without its `Idempotency-Key`.
fn missing_key() -> Value {
    let mut event = order("x", TEA);
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    event
}

/// The REST API (1.0) fixture event, under `key`.
fn rest_order(key: &str) -> Value {
    let mut event = testkit::fixtures::event_json("rest_v1_post_order_prod_stage.json");
    event["headers"]["Idempotency-Key"] = json!(key);
    event["multiValueHeaders"]["Idempotency-Key"] = json!([key]);
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
/// as deployed, 3 the function with logs and metrics off.
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
    let rest = rest_order("bench-replay-rest");
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
    if harnesses.len() > 4 {
        paths.extend(baseline_paths(&baseline_location));
    }
    paths
}

/// The baseline binary's (`BENCH_BASELINE`) paths: harness 4, deployed
/// configuration, on the records the function made (same record format).
fn baseline_paths(location: &str) -> Vec<Bench> {
    let location = location.to_owned();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let missing = missing_key();
    vec![
        Bench {
            name: "baseline: new order",
            harness: 4,
            event: Box::new(move |i| order(&format!("bench-base-{run}-{i}"), TEA)),
            status: 201,
        },
        Bench {
            name: "baseline: replay",
            harness: 4,
            event: Box::new(|_| order("bench-replay", TEA)),
            status: 201,
        },
        Bench {
            name: "baseline: in progress (409)",
            harness: 4,
            event: Box::new(|_| order("bench-busy", TEA)),
            status: 409,
        },
        Bench {
            name: "baseline: missing key (400)",
            harness: 4,
            event: Box::new(move |_| missing.clone()),
            status: 400,
        },
        Bench {
            name: "baseline: GET /orders/{id}",
            harness: 4,
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

/// New orders per second with 1, 2 and 4 instances (closed loop).
async fn instances_throughput(function: &Path, redis: &RedisServer) -> Vec<(usize, f64)> {
    let mut throughput = Vec::new();
    for instances in [1usize, 2, 4] {
        let lambda = Arc::new(start(function, instances, redis, DEPLOYED).await);
        let until = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for i in 0..instances {
            let lambda = Arc::clone(&lambda);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    let event = order(&format!("tput-{instances}-{i}-{n}"), TEA);
                    assert_eq!(lambda.invoke(i, &event, DEADLINE).await.status(), Some(201));
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("throughput task");
        }
        throughput.push((instances, total as f64 / 3.0));
    }
    throughput
}

/// One process at `AWS_LAMBDA_MAX_CONCURRENCY` 1, 8 and 32, kept busy by
/// as many clients: new orders per second, latency, RSS, CPU per order.
/// The three processes run in turns (rounds of one-second windows, after a
/// warm-up), so that the ratios between them are taken under the same
/// drift of this shared machine, as the latency table's paths are.
async fn managed_instances(function: &Path, redis: &RedisServer) -> Vec<report::Concurrency> {
    const LEVELS: [usize; 3] = [1, 8, 32];
    const ROUNDS: u32 = 5;
    const WINDOW: Duration = Duration::from_secs(1);
    let mut lambdas = Vec::new();
    for concurrency in LEVELS {
        let value = concurrency.to_string();
        let mut env = DEPLOYED.to_vec();
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY", &value));
        let lambda = Arc::new(start(function, 1, redis, &env).await);
        lambda.wait_parked(0, concurrency).await;
        window(&lambda, concurrency, "warm", Duration::from_millis(300)).await;
        lambdas.push(lambda);
    }
    let mut samples = vec![Vec::new(); LEVELS.len()];
    let mut cpu = vec![[Duration::ZERO; 3]; LEVELS.len()];
    let mut wait = vec![[Duration::ZERO; 3]; LEVELS.len()];
    for round in 0..ROUNDS {
        for (i, concurrency) in LEVELS.into_iter().enumerate() {
            let pids = [
                lambdas[i].pid(0).to_string(),
                redis.pid().map_or_else(String::new, |p| p.to_string()),
                "self".to_owned(),
            ];
            let before = pids.clone().map(|p| report::cpu_time(&p));
            let waited = pids.clone().map(|p| report::run_delay(&p));
            let tag = format!("r{round}");
            samples[i].extend(window(&lambdas[i], concurrency, &tag, WINDOW).await);
            for (k, pid) in pids.iter().enumerate() {
                cpu[i][k] += report::cpu_time(pid).saturating_sub(before[k]);
                wait[i][k] += report::run_delay(pid).saturating_sub(waited[k]);
            }
        }
    }
    let mut rows = Vec::new();
    for (i, concurrency) in LEVELS.into_iter().enumerate() {
        let count = samples[i].len() as f64;
        rows.push(report::Concurrency {
            concurrency,
            per_second: count / (WINDOW * ROUNDS).as_secs_f64(),
            latency: percentiles(&mut samples[i]),
            rss_kib: report::rss_kib(lambdas[i].pid(0)).1,
            cpu_us: cpu[i].map(|used| used.as_secs_f64() * 1e6 / count),
            wait_us: wait[i].map(|waited| waited.as_secs_f64() * 1e6 / count),
        });
    }
    rows
}

/// `concurrency` clients sending new orders to `lambda` for `length`:
/// the invocations' durations.
async fn window(
    lambda: &Arc<Harness>,
    concurrency: usize,
    tag: &str,
    length: Duration,
) -> Vec<Duration> {
    let until = Instant::now() + length;
    let mut tasks = Vec::new();
    for client in 0..concurrency {
        let lambda = Arc::clone(lambda);
        let prefix = format!("lmi-{concurrency}-{tag}-{client}");
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0;
            while Instant::now() < until {
                let event = order(&format!("{prefix}-{n}"), TEA);
                let outcome = lambda.invoke(0, &event, DEADLINE).await;
                assert_eq!(outcome.status(), Some(201));
                samples.push(outcome.elapsed().expect("elapsed"));
                n += 1;
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("client"));
    }
    samples
}

/// Init (process start → first `/next`) and the first invocation after it,
/// over 20 cold starts each.
async fn cold_start(release: &Path, redis: &RedisServer) -> Vec<report::Cold> {
    let function = release.join("idempotent-orders");
    let variants: [(&str, PathBuf, Env); 4] = [
        ("floor-echo", release.join("examples/floor-echo"), &[]),
        ("floor-one-rtt", release.join("examples/floor-one-rtt"), &[]),
        (
            "function, connecting at init",
            function.clone(),
            &[("REDIS_CONNECT_AT_INIT", "true")],
        ),
        (
            "function, connecting on the first request",
            function,
            &[("REDIS_CONNECT_AT_INIT", "false")],
        ),
    ];
    let mut rows = Vec::new();
    for (name, binary, extra) in variants {
        let env = [DEPLOYED, extra].concat();
        let (mut init, mut first) = (Vec::new(), Vec::new());
        for n in 0..20 {
            let lambda = start(&binary, 1, redis, &env).await;
            init.push(lambda.init_duration(0));
            let outcome = lambda
                .invoke(0, &order(&format!("cold-{name}-{n}"), TEA), DEADLINE)
                .await;
            first.push(outcome.elapsed().expect("elapsed"));
        }
        rows.push(report::Cold {
            name,
            init: percentiles(&mut init),
            first: percentiles(&mut first),
        });
    }
    rows
}

/// RSS after 10,000 and 50,000 invocations (new orders and replays).
async fn memory(function: &Path, redis: &RedisServer) -> Vec<(usize, (u64, u64))> {
    let lambda = start(function, 1, redis, DEPLOYED).await;
    let pid = lambda.pid(0);
    let mut rss = Vec::new();
    for n in 0..50_000usize {
        let event = if n % 2 == 0 {
            order(&format!("rss-{n}"), TEA)
        } else {
            order("bench-replay", TEA)
        };
        lambda.invoke(0, &event, DEADLINE).await.response();
        if n + 1 == 10_000 || n + 1 == 50_000 {
            rss.push((n + 1, report::rss_kib(pid)));
        }
    }
    rss
}

/// New requests and replays with stored bodies of 100 B, 10 KB and 60 KB
/// (under the 64 KiB record cap), and Redis's memory per record.
async fn body_sizes(release: &Path, redis: &RedisServer) -> Vec<report::Size> {
    let echo = start(&release.join("examples/layer-echo"), 1, redis, QUIET).await;
    let mut rows = Vec::new();
    for (label, size) in [
        ("100 B", 100usize),
        ("10 KB", 10 * 1024),
        ("60 KB", 60 * 1024),
    ] {
        let event = |key: &str| {
            let mut e = v2_event(
                "POST",
                "/echo",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                Some(TEA),
            );
            e["rawQueryString"] = format!("size={size}").into();
            e["queryStringParameters"] = json!({ "size": size.to_string() });
            e
        };
        let (mut new, mut replay) = (Vec::new(), Vec::new());
        for i in 0..500 {
            new.push(
                echo.invoke(0, &event(&format!("echo-{size}-{i}")), DEADLINE)
                    .await
                    .elapsed()
                    .unwrap(),
            );
            replay.push(
                echo.invoke(0, &event(&format!("echo-{size}-0")), DEADLINE)
                    .await
                    .elapsed()
                    .unwrap(),
            );
        }
        // Every record of this size holds the same body.
        let key = records(redis).pop().expect("a record");
        let memory: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query(&mut redis.conn())
            .unwrap_or(0);
        rows.push(report::Size {
            label,
            new: percentiles(&mut new),
            replay: percentiles(&mut replay),
            memory,
        });
        redis::cmd("FLUSHDB")
            .query::<()>(&mut redis.conn())
            .expect("FLUSHDB");
    }
    rows
}

/// New orders and replays with a million other keys in Redis.
async fn large_keyspace(function: &Path, redis: &RedisServer) -> (Percentiles, Percentiles) {
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .arg("idempotency:filler")
        .arg(120)
        .query::<()>(&mut redis.conn())
        .expect("DEBUG POPULATE");
    let lambda = start(function, 1, redis, DEPLOYED).await;
    lambda
        .invoke(0, &order("big-replay", TEA), DEADLINE)
        .await
        .response();
    let (mut new, mut replay) = (Vec::new(), Vec::new());
    for i in 0..1_000 {
        new.push(
            lambda
                .invoke(0, &order(&format!("big-{i}"), TEA), DEADLINE)
                .await
                .elapsed()
                .unwrap(),
        );
        replay.push(
            lambda
                .invoke(0, &order("big-replay", TEA), DEADLINE)
                .await
                .elapsed()
                .unwrap(),
        );
    }
    (percentiles(&mut new), percentiles(&mut replay))
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
        return;
    }
    let mut processes: Vec<(PathBuf, Env)> = vec![
        (release.join("examples/floor-echo"), QUIET),
        (release.join("examples/floor-one-rtt"), QUIET),
        (function.clone(), DEPLOYED),
        (function.clone(), QUIET),
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
    // `-- managed`: only the Managed Instances table.
    if std::env::args().any(|a| a == "managed") {
        drop(harnesses);
        report::print_managed(&managed_instances(&function, &redis).await);
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
            report::print_latency(&paths, &durations);
            return;
        }
        drop(harnesses);
        let counts = instructions::count(&paths, &processes, &redis).await;
        instructions::print_and_save(&paths, &counts, &function);
        return;
    }
    let durations = latency(&paths, &harnesses).await;
    let trips = round_trips(&paths, &harnesses, &redis).await;
    drop(harnesses);
    let results = Results {
        durations,
        round_trips: trips,
        throughput: instances_throughput(&function, &redis).await,
        managed: managed_instances(&function, &redis).await,
        cold: cold_start(&release, &redis).await,
        rss: memory(&function, &redis).await,
        binary: report::binary_sizes(&function),
        sizes: body_sizes(&release, &redis).await,
        million: large_keyspace(&function, &redis).await,
    };
    report::print_and_save(&paths, &results);
}
