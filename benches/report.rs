//! The benchmark's figures: percentiles, the tables it prints, the targets
//! it checks against the floors, and `target/bench/results.json`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::{cache, Bench, PER_PATH};

#[derive(Clone, Copy)]
pub struct Percentiles {
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Median, p90 and p99 in µs.
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    Percentiles {
        median: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
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

/// The binary's size, and its size stripped (if `strip` is installed).
pub fn binary_sizes(binary: &Path) -> (u64, Option<u64>) {
    let size = std::fs::metadata(binary).expect("binary").len();
    let stripped_path = std::env::temp_dir().join("idempotent-orders.stripped");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(binary)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped_path).ok())
        .map(|m| m.len());
    (size, stripped)
}

pub struct Concurrency {
    pub concurrency: usize,
    pub per_second: f64,
    pub latency: Percentiles,
    pub rss_kib: u64,
    /// CPU µs per invocation: the function, redis-server, the harness.
    pub cpu_us: [f64; 3],
    /// µs per invocation that the same three spent runnable but waiting
    /// for a core (the kernel's run delay, `/proc/<pid>/task/*/schedstat`).
    pub wait_us: [f64; 3],
}

/// Time all of a process's live threads have spent runnable but waiting
/// for a core so far (the second field of each thread's `schedstat`; a
/// thread that has exited is no longer counted, unlike in `cpu_time`).
/// Zero when the kernel keeps no scheduler statistics.
pub fn run_delay(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime, stime
    // are the 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // Linux reports CPU time in clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

pub struct Cold {
    pub name: &'static str,
    pub init: Percentiles,
    pub first: Percentiles,
}

pub struct Size {
    pub label: &'static str,
    pub new: Percentiles,
    pub replay: Percentiles,
    pub memory: u64,
}

pub struct Results {
    pub durations: Vec<Percentiles>,
    pub round_trips: Vec<(f64, String)>,
    pub throughput: Vec<(usize, f64)>,
    pub managed: Vec<Concurrency>,
    pub cache_managed: Vec<cache::Managed>,
    pub cold: Vec<Cold>,
    pub rss: Vec<(usize, (u64, u64))>,
    pub cache_memory: Vec<cache::Memory>,
    pub binary: (u64, Option<u64>),
    pub sizes: Vec<Size>,
    pub million: (Percentiles, Percentiles),
}

/// `(target, measured, limit, a floor rather than a ceiling)`.
type Target = (String, f64, f64, bool);

fn machine() -> (String, usize) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    (
        cpu,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

/// The latency table alone (`-- latency`): median, p90, p99 and the
/// extra over `floor-echo` in RTTs, the floors being paths 0 and 1.
pub fn print_latency(paths: &[Bench], durations: &[Percentiles]) {
    let echo = durations[0].median;
    let rtt = durations[1].median - echo;
    println!(
        "\n| path | median | p90 | p99 | extra | extra / RTT |\n|---|---:|---:|---:|---:|---:|"
    );
    for (path, d) in paths.iter().zip(durations) {
        let extra = d.median - echo;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {extra:.0} | {:.2} |",
            path.name,
            d.median,
            d.p90,
            d.p99,
            extra / rtt
        );
    }
    println!("\nRTT = floor-one-rtt − floor-echo = {rtt:.0} µs");
}

/// The Managed Instances table: one process at each concurrency.
pub fn print_managed(managed: &[Concurrency]) {
    println!("\nManaged Instances: one process, AWS_LAMBDA_MAX_CONCURRENCY = clients\n");
    println!("| concurrency | new orders/s | × one slot | p50 | p99 | peak RSS KiB | CPU µs per order: function / redis-server / harness | waiting for a core, µs per order: function / redis-server / harness |\n|---:|---:|---:|---:|---:|---:|---|---|");
    let Some(single) = managed.first() else {
        return;
    };
    for row in managed {
        let [function, redis, harness] = row.cpu_us;
        let [f_wait, r_wait, h_wait] = row.wait_us;
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {function:.0} / {redis:.0} / {harness:.0} | {f_wait:.0} / {r_wait:.0} / {h_wait:.0} |",
            row.concurrency,
            row.per_second,
            row.per_second / single.per_second,
            row.latency.median,
            row.latency.p99,
            row.rss_kib
        );
    }
}

pub fn print_and_save(paths: &[Bench], r: &Results) {
    let (cpu, cores) = machine();
    println!("\nmachine: {cpu}, {cores} cores; {PER_PATH} invocations per path; µs on the Runtime API side\n");
    let echo = r.durations[0].median;
    let rtt = r.durations[1].median - echo;
    let extra = |name: &str| {
        paths
            .iter()
            .position(|p| p.name == name)
            .map(|i| (r.durations[i].median - echo) / rtt)
            .unwrap_or(f64::NAN)
    };
    println!("| path | median | p90 | p99 | extra | extra / RTT | round trips | commands sent per request |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for ((path, d), (trips, detail)) in paths.iter().zip(&r.durations).zip(&r.round_trips) {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {trips:.2} | {detail} |",
            path.name,
            d.median,
            d.p90,
            d.p99,
            d.median - echo,
            (d.median - echo) / rtt
        );
    }
    println!("\nRTT = floor-one-rtt − floor-echo = {rtt:.0} µs");
    println!(
        "observability (one log-and-metric line per request): new order {:+.2} RTT, replay {:+.2} RTT",
        extra("new order") - extra("new order, logs and metrics off"),
        extra("replay") - extra("replay, logs and metrics off")
    );
    let mut targets: Vec<Target> = vec![
        (
            "replay extra ≤ 1.10 × RTT".into(),
            extra("replay"),
            1.10,
            false,
        ),
        (
            "409 extra ≤ 1.10 × RTT".into(),
            extra("in progress (409)"),
            1.10,
            false,
        ),
        (
            "422 extra ≤ 1.10 × RTT".into(),
            extra("mismatch (422)"),
            1.10,
            false,
        ),
        (
            "new order extra ≤ 2.5 × RTT".into(),
            extra("new order"),
            2.5,
            false,
        ),
        (
            "replay from the local cache extra ≤ 0.2 × RTT".into(),
            extra("replay, local cache"),
            0.2,
            false,
        ),
    ];

    println!("\n| instances | new orders/s |\n|---:|---:|");
    for (n, rate) in &r.throughput {
        println!("| {n} | {rate:.0} |");
    }
    print_managed(&r.managed);
    cache::print_managed(&r.cache_managed);
    let eight = r.managed.iter().find(|m| m.concurrency == 8);
    if let (Some(single), Some(eight)) = (r.managed.first(), eight) {
        targets.push((
            "throughput at concurrency 8 ≥ 4 × one slot".into(),
            eight.per_second / single.per_second,
            4.0,
            true,
        ));
        targets.push((
            "p99 at concurrency 8 < 2 × one slot's".into(),
            eight.latency.p99 / single.latency.p99,
            2.0,
            false,
        ));
    }

    println!("\n| cold start (20 each) | init median | first invocation median | first invocation p90 |\n|---|---:|---:|---:|");
    for row in &r.cold {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            row.name, row.init.median, row.first.median, row.first.p90
        );
    }
    for (n, (now, peak)) in &r.rss {
        println!("RSS after {n} invocations: {now} KiB (peak {peak} KiB)");
    }
    cache::print_memory(&r.cache_memory);
    let (size, stripped) = r.binary;
    println!(
        "binary: {size} bytes, stripped {}",
        stripped.map_or("n/a (no strip)".to_owned(), |s| format!("{s} bytes"))
    );
    println!("\n| stored body | new median | new p99 | replay median | replay p99 | Redis MEMORY USAGE per record |\n|---|---:|---:|---:|---:|---:|");
    for s in &r.sizes {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} B |",
            s.label, s.new.median, s.new.p99, s.replay.median, s.replay.p99, s.memory
        );
    }
    let (new, replay) = r.million;
    println!(
        "\nwith 1,000,000 other keys in Redis: new order median {:.0} µs (p99 {:.0}), replay median {:.0} µs (p99 {:.0})",
        new.median, new.p99, replay.median, replay.p99
    );

    println!("\n| target | measured | limit | met |\n|---|---:|---:|---|");
    for (name, value, limit, floor) in &targets {
        let met = if *floor {
            value >= limit
        } else {
            value <= limit
        };
        println!(
            "| {name} | {value:.2} | {limit} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
    save(paths, r, rtt, &targets, (cpu, cores));
}

fn save(paths: &[Bench], r: &Results, rtt: f64, targets: &[Target], (cpu, cores): (String, usize)) {
    let json = json!({
        "machine": { "cpu": cpu, "cores": cores },
        "paths": paths.iter().zip(&r.durations).zip(&r.round_trips).map(|((p, d), (trips, detail))| json!({
            "path": p.name, "median_us": d.median, "p90_us": d.p90, "p99_us": d.p99,
            "redis_round_trips": trips, "commands": detail })).collect::<Vec<_>>(),
        "rtt_us": rtt,
        "throughput": r.throughput.iter().map(|(n, rate)| json!({"instances": n, "per_second": rate})).collect::<Vec<_>>(),
        "managed_instances": r.managed.iter().map(|m| json!({"concurrency": m.concurrency, "per_second": m.per_second,
            "p50_us": m.latency.median, "p99_us": m.latency.p99, "peak_rss_kib": m.rss_kib,
            "cpu_us_per_order": {"function": m.cpu_us[0], "redis": m.cpu_us[1], "harness": m.cpu_us[2]},
            "run_queue_wait_us_per_order": {"function": m.wait_us[0], "redis": m.wait_us[1], "harness": m.wait_us[2]}})).collect::<Vec<_>>(),
        "cold_start": r.cold.iter().map(|c| json!({"variant": c.name, "init_median_us": c.init.median,
            "first_invocation_median_us": c.first.median})).collect::<Vec<_>>(),
        "rss_kib": r.rss.iter().map(|(n, (now, peak))| json!({"invocations": n, "rss": now, "peak": peak})).collect::<Vec<_>>(),
        "local_cache": cache::to_json(&r.cache_memory, &r.cache_managed),
        "binary_bytes": r.binary.0, "stripped_bytes": r.binary.1,
        "body_sizes": r.sizes.iter().map(|s| json!({"body": s.label, "new_median_us": s.new.median,
            "replay_median_us": s.replay.median, "memory_usage_bytes": s.memory})).collect::<Vec<_>>(),
        "million_keys": { "new_median_us": r.million.0.median, "replay_median_us": r.million.1.median },
        "targets": targets.iter().map(|(n, v, l, _)| json!({"target": n, "measured": v, "limit": l})).collect::<Vec<_>>(),
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let results = out.join("results.json");
    std::fs::write(&results, serde_json::to_string_pretty(&json).expect("JSON"))
        .expect("write results.json");
    println!("\nwrote {}", results.display());
    let plot = Command::new("python3")
        .arg(root.join("benches/plot.py"))
        .arg(&results)
        .arg(out.join("latency.png"))
        .status();
    match plot {
        Ok(s) if s.success() => println!("wrote {}", out.join("latency.png").display()),
        _ => println!(
            "no plot: benches/plot.py needs python3 with matplotlib (pip install matplotlib)"
        ),
    }
}
