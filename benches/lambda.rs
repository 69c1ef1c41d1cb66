//! The benchmark: what idempotency costs per invocation, measured the way
//! Lambda runs the function. Run it with `cargo bench --bench lambda`.
//!
//! It builds the release binaries, starts its own `redis-server`, and
//! drives every binary as separate processes through the Lambda Runtime
//! API (the harness in `crates/testkit`). Durations are taken
//! on the Runtime API side, from handing an event out to receiving the
//! response. Every figure is read against two floors measured in the same
//! run: `floor-echo` (a no-op `lambda_http` function) and `floor-one-rtt`
//! (one Redis GET). It prints a table, writes `target/bench/results.json`,
//! and draws `target/bench/latency.png` with `benches/plot.py` when
//! matplotlib is installed.
//!
//! Durations are figures to read, never assertions: machines are noisy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::harness::{order_event as order, v2_event, Harness};
use testkit::RedisServer;

const DEADLINE: Duration = Duration::from_secs(10);
const TEA: &str = r#"{"product":"Tea","quantity":1}"#;
/// Invocations per path (in rounds of `ROUND`, interleaved between paths
/// so that drift in the machine's speed hits every path alike).
const PER_PATH: usize = 2_000;
const ROUND: usize = 200;

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

async fn start(binary: &Path, instances: usize, redis: &RedisServer) -> Harness {
    let env = testkit::harness::function_env(
        &redis.url(),
        &[("RUST_LOG", "error"), ("METRICS_NAMESPACE", "")],
    );
    Harness::start(binary, vec![env; instances]).await
}

#[derive(Clone, Copy)]
struct Percentiles {
    median: f64,
    p90: f64,
    p99: f64,
}

fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Percentiles {
        median: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

/// One measured path: which instance set, how to build its i-th event, and
/// the status it must answer (checked on every invocation).
struct Path_ {
    name: &'static str,
    harness: usize,
    event: Box<dyn Fn(usize) -> Value>,
    status: u16,
}

async fn invoke_checked(harness: &Harness, path: &Path_, i: usize) -> Duration {
    let outcome = harness.invoke(0, &(path.event)(i), DEADLINE).await;
    let response = outcome.response();
    assert_eq!(
        response.status, path.status,
        "{}: {:?}",
        path.name, response.raw
    );
    outcome.elapsed().expect("a response has a duration")
}

fn commandstats(redis: &RedisServer) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .expect("INFO");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_owned(), rest.split(',').next()?.parse().ok()?))
        })
        .filter(|(name, _)| name != "config|resetstat")
        .collect()
}

/// Commands that only ever run inside the Lua scripts: they cost no round trip.
const IN_SCRIPT: &[&str] = &["hgetall", "hset", "pexpire", "pttl", "hget", "hmget", "del"];

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let release = build();
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let function = release.join("idempotent-orders");
    let harnesses = [
        start(&release.join("examples/floor-echo"), 1, &redis).await,
        start(&release.join("examples/floor-one-rtt"), 1, &redis).await,
        start(&function, 1, &redis).await,
    ];
    let fun = &harnesses[2];
    // Fixtures: a completed key to replay, an order to read, a key in progress.
    let created = fun.invoke(0, &order("bench-replay", TEA), DEADLINE).await;
    let location = created
        .response()
        .header("location")
        .expect("location")
        .to_owned();
    let before = records(&redis);
    fun.invoke(0, &order("bench-busy", TEA), DEADLINE).await;
    let busy = records(&redis)
        .into_iter()
        .find(|k| !before.contains(k))
        .expect("the bench-busy record");
    hold_in_progress(&redis, &busy);
    let mut missing = order("x", TEA);
    missing["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    let run = uuid::Uuid::new_v4().simple().to_string();

    let paths: Vec<Path_> = vec![
        // The floors get the same event as a new request, so that parsing
        // and moving the event cost them what it costs the function.
        Path_ {
            name: "floor-echo",
            harness: 0,
            event: Box::new(|i| order(&format!("floor-{i}"), TEA)),
            status: 200,
        },
        Path_ {
            name: "floor-one-rtt",
            harness: 1,
            event: Box::new(|i| order(&format!("floor-{i}"), TEA)),
            status: 200,
        },
        Path_ {
            name: "new request",
            harness: 2,
            event: Box::new(move |i| order(&format!("bench-new-{run}-{i}"), TEA)),
            status: 201,
        },
        Path_ {
            name: "replay",
            harness: 2,
            event: Box::new(|_| order("bench-replay", TEA)),
            status: 201,
        },
        Path_ {
            name: "in progress (409)",
            harness: 2,
            event: Box::new(|_| order("bench-busy", TEA)),
            status: 409,
        },
        Path_ {
            name: "mismatch (422)",
            harness: 2,
            event: Box::new(|_| order("bench-replay", r#"{"product":"Tea","quantity":2}"#)),
            status: 422,
        },
        Path_ {
            name: "missing key (400)",
            harness: 2,
            event: Box::new(move |_| missing.clone()),
            status: 400,
        },
        Path_ {
            name: "GET /orders/{id}",
            harness: 2,
            event: Box::new(move |_| get(&location)),
            status: 200,
        },
        Path_ {
            name: "unknown route (404)",
            harness: 2,
            event: Box::new(|_| get("/nope")),
            status: 404,
        },
    ];

    // Warm every path, then measure in interleaved rounds.
    for path in &paths {
        for i in 0..50 {
            invoke_checked(&harnesses[path.harness], path, 1_000_000 + i).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); paths.len()];
    for round in 0..PER_PATH / ROUND {
        for (p, path) in paths.iter().enumerate() {
            for i in 0..ROUND {
                samples[p]
                    .push(invoke_checked(&harnesses[path.harness], path, round * ROUND + i).await);
            }
        }
    }
    let durations: Vec<Percentiles> = samples.iter_mut().map(|s| percentiles(s)).collect();

    // Redis commands and round trips per request, from INFO commandstats.
    let mut redis_use = Vec::new();
    for path in &paths {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query::<()>(&mut redis.conn())
            .expect("RESETSTAT");
        for i in 0..ROUND {
            invoke_checked(&harnesses[path.harness], path, 2_000_000 + i).await;
        }
        let stats = commandstats(&redis);
        let per = |names: &mut dyn Iterator<Item = (&String, &u64)>| {
            names.map(|(_, n)| *n).sum::<u64>() as f64 / ROUND as f64
        };
        let round_trips = per(&mut stats
            .iter()
            .filter(|(n, _)| !IN_SCRIPT.contains(&n.as_str())));
        let commands = per(&mut stats.iter());
        let detail = stats
            .iter()
            .map(|(n, c)| format!("{n}×{}", *c as f64 / ROUND as f64))
            .collect::<Vec<_>>()
            .join(" ");
        redis_use.push((round_trips, commands, detail));
    }
    drop(harnesses);

    // Throughput with 1, 2 and 4 instances (new requests, closed loop).
    let mut throughput = Vec::new();
    for instances in [1usize, 2, 4] {
        let lambda = std::sync::Arc::new(start(&function, instances, &redis).await);
        let until = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for i in 0..instances {
            let lambda = std::sync::Arc::clone(&lambda);
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

    // Init: process start to the first /next, over 20 cold starts each.
    let mut init = Vec::new();
    for binary in [release.join("examples/floor-echo"), function.clone()] {
        let mut starts = Vec::new();
        for _ in 0..20 {
            starts.push(start(&binary, 1, &redis).await.init_duration(0));
        }
        init.push(percentiles(&mut starts));
    }

    // Peak RSS after 10,000 and 50,000 invocations (new requests and replays).
    let lambda = start(&function, 1, &redis).await;
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
            rss.push((n + 1, rss_kib(pid)));
        }
    }
    drop(lambda);
    let size = std::fs::metadata(&function).expect("binary").len();
    let stripped_path = std::env::temp_dir().join("idempotent-orders.stripped");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(&function)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped_path).ok())
        .map(|m| m.len());

    // Scaling: stored body size, and a keyspace of 1 million keys.
    let echo = start(&release.join("examples/layer-echo"), 1, &redis).await;
    let mut scaling = Vec::new();
    for (label, size) in [
        ("100 B", 100usize),
        ("10 KB", 10 * 1024),
        ("1 MB", 1024 * 1024),
    ] {
        let runs = if size > 100_000 { 50 } else { 500 };
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
        for i in 0..runs {
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
        let key = records(&redis).pop().expect("a record");
        let memory: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query(&mut redis.conn())
            .unwrap_or(0);
        scaling.push((
            label,
            percentiles(&mut new),
            percentiles(&mut replay),
            memory,
        ));
        redis::cmd("FLUSHDB")
            .query::<()>(&mut redis.conn())
            .expect("FLUSHDB");
    }
    drop(echo);
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .arg("idempotency:filler")
        .arg(120)
        .query::<()>(&mut redis.conn())
        .expect("DEBUG POPULATE");
    let lambda = start(&function, 1, &redis).await;
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
    let million = (percentiles(&mut new), percentiles(&mut replay));
    drop(lambda);

    report(
        &paths,
        &durations,
        &redis_use,
        &throughput,
        &init,
        &rss,
        size,
        stripped,
        &scaling,
        million,
    );
}

#[allow(clippy::too_many_arguments)]
fn report(
    paths: &[Path_],
    durations: &[Percentiles],
    redis_use: &[(f64, f64, String)],
    throughput: &[(usize, f64)],
    init: &[Percentiles],
    rss: &[(usize, (u64, u64))],
    size: u64,
    stripped: Option<u64>,
    scaling: &[(&str, Percentiles, Percentiles, u64)],
    million: (Percentiles, Percentiles),
) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\nmachine: {cpu}, {cores} cores; {PER_PATH} invocations per path; durations in µs (Runtime API side)\n");
    let echo = durations[0].median;
    let rtt = durations[1].median - echo;
    println!("| path | median | p90 | p99 | extra vs floor-echo | extra / RTT | Redis round trips | Redis commands | commands per request |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for ((path, d), (trips, commands, detail)) in paths.iter().zip(durations).zip(redis_use) {
        let extra = d.median - echo;
        println!("| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {trips:.2} | {commands:.2} | {detail} |", path.name, d.median, d.p90, d.p99, extra, extra / rtt);
    }
    let ratio = |name: &str| {
        paths
            .iter()
            .position(|p| p.name == name)
            .map(|i| (durations[i].median - echo) / rtt)
            .unwrap_or(f64::NAN)
    };
    let mut targets = vec![
        ("replay extra ≤ 1.25 × RTT", ratio("replay"), 1.25),
        ("new request extra ≤ 3.5 × RTT", ratio("new request"), 3.5),
        ("409 extra ≤ 1.25 × RTT", ratio("in progress (409)"), 1.25),
        ("422 extra ≤ 1.25 × RTT", ratio("mismatch (422)"), 1.25),
        ("400 extra ≤ 0.25 × RTT", ratio("missing key (400)"), 0.25),
    ];
    println!("\nRTT = floor-one-rtt − floor-echo = {rtt:.0} µs\n");
    println!("| instances | invocations/s (new requests) |\n|---:|---:|");
    for (n, rate) in throughput {
        println!("| {n} | {rate:.0} |");
    }
    let scale = throughput[2].1 / throughput[0].1;
    targets.push(("throughput 4 instances ≥ 1.6 × 1", scale, 1.6));
    println!("\ninit (process start → first /next), 20 cold starts: floor-echo median {:.0} µs (p90 {:.0}); function median {:.0} µs (p90 {:.0}), incl. the lazy Redis connection set-up", init[0].median, init[0].p90, init[1].median, init[1].p90);
    targets.push((
        "init ≤ 1.5 × floor init",
        init[1].median / init[0].median,
        1.5,
    ));
    for (n, (now, peak)) in rss {
        println!("RSS after {n} invocations: {now} KiB (peak {peak} KiB)");
    }
    let peak_mib = rss.iter().map(|(_, (_, p))| *p).max().unwrap_or(0) as f64 / 1024.0;
    targets.push(("peak RSS ≤ 16 MiB", peak_mib / 16.0, 1.0));
    println!(
        "binary: {size} bytes, stripped {}",
        stripped.map_or("n/a (no strip)".to_owned(), |s| format!("{s} bytes"))
    );
    println!("\n| stored body | new median | new p99 | replay median | replay p99 | Redis MEMORY USAGE per record |\n|---|---:|---:|---:|---:|---:|");
    for (label, new, replay, memory) in scaling {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {memory} B |",
            new.median, new.p99, replay.median, replay.p99
        );
    }
    println!("\nwith 1,000,000 other keys in Redis: new request median {:.0} µs (p99 {:.0}), replay median {:.0} µs (p99 {:.0})", million.0.median, million.0.p99, million.1.median, million.1.p99);
    println!("\n| target | measured | limit | met |\n|---|---:|---:|---|");
    for (name, value, limit) in &targets {
        // Throughput is a floor; every other target is a ceiling.
        let met = if name.starts_with("throughput") {
            value >= limit
        } else {
            value <= limit
        };
        println!(
            "| {name} | {value:.2} | {limit} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }

    let json = json!({
        "machine": { "cpu": cpu, "cores": cores },
        "paths": paths.iter().zip(durations).zip(redis_use).map(|((p, d), (trips, commands, detail))| json!({
            "path": p.name, "median_us": d.median, "p90_us": d.p90, "p99_us": d.p99,
            "redis_round_trips": trips, "redis_commands": commands, "commands": detail })).collect::<Vec<_>>(),
        "rtt_us": rtt,
        "throughput": throughput.iter().map(|(n, r)| json!({"instances": n, "per_second": r})).collect::<Vec<_>>(),
        "init_us": { "floor_echo": init[0].median, "function": init[1].median },
        "rss_kib": rss.iter().map(|(n, (now, peak))| json!({"invocations": n, "rss": now, "peak": peak})).collect::<Vec<_>>(),
        "binary_bytes": size, "stripped_bytes": stripped,
        "scaling": scaling.iter().map(|(l, n, r, m)| json!({"body": l, "new_median_us": n.median, "replay_median_us": r.median, "memory_usage_bytes": m})).collect::<Vec<_>>(),
        "million_keys": { "new_median_us": million.0.median, "replay_median_us": million.1.median },
        "targets": targets.iter().map(|(n, v, l)| json!({"target": n, "measured": v, "limit": l})).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write results.json");
    println!("\nwrote {}", out.join("results.json").display());
    let plot = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/plot.py"))
        .arg(out.join("results.json"))
        .arg(out.join("latency.png"))
        .status();
    match plot {
        Ok(s) if s.success() => println!("wrote {}", out.join("latency.png").display()),
        _ => println!(
            "no plot: benches/plot.py needs python3 with matplotlib (pip install matplotlib)"
        ),
    }
}
