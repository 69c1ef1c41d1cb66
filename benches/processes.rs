//! The benchmark's whole-process measurements, each a closed loop of
//! clients against fresh processes of the function: throughput over 1, 2
//! and 4 instances; one process at Managed Instances concurrency 1, 8 and
//! 32; cold start; memory over many invocations; stored-body sizes; a
//! large keyspace. The per-path latency table, which needs the floors
//! beside it, stays in `lambda.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::harness::{v2_event, Harness};
use testkit::RedisServer;

use super::report::{self, percentiles, Percentiles};
use super::{order, records, start, Env, DEADLINE, DEPLOYED, QUIET, TEA};

/// New orders per second with 1, 2 and 4 instances (closed loop).
pub async fn instances_throughput(function: &Path, redis: &RedisServer) -> Vec<(usize, f64)> {
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
pub async fn managed_instances(function: &Path, redis: &RedisServer) -> Vec<report::Concurrency> {
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
pub async fn window(
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
pub async fn cold_start(release: &Path, redis: &RedisServer) -> Vec<report::Cold> {
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
pub async fn memory(function: &Path, redis: &RedisServer) -> Vec<(usize, (u64, u64))> {
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
pub async fn body_sizes(release: &Path, redis: &RedisServer) -> Vec<report::Size> {
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
pub async fn large_keyspace(function: &Path, redis: &RedisServer) -> (Percentiles, Percentiles) {
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
