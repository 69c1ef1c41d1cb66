//! Instructions per invocation, counted by callgrind: the repeatable
//! counterpart of the latency medians. Run it with
//! `cargo bench --bench lambda -- instructions` (needs `valgrind`); name
//! paths after it (`-- instructions replay "new order"`) to count only
//! those and the floors.
//!
//! Each path's process runs under `valgrind --tool=callgrind` through the
//! same Runtime API harness as the timed steps. Start-up and the first
//! invocations are not per-invocation costs, so every path runs twice, with
//! `SHORT` and `LONG` measured invocations after the same warm-up, and the
//! per-invocation count is the difference divided by `LONG - SHORT`. The
//! same difference, function by function, gives a profile of one
//! invocation. Counts cover the function's process only: the Runtime API,
//! Redis and the network are outside it, as they are for Lambda's billing.
//!
//! `BENCH_FUNCTION=<path>` counts another build of the function (a past
//! commit's release binary, say) against the same floors and events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::harness::{function_env, Harness};
use testkit::RedisServer;

use crate::{invoke_checked, Bench, Env};

const WARM_UP: usize = 20;
const SHORT: usize = 50;
const LONG: usize = 250;
/// Functions shown per profiled path.
const TOP: usize = 12;

/// One path's count per invocation, and where it goes.
pub struct Count {
    pub instructions: f64,
    /// Exclusive instructions per invocation, by function.
    by_function: HashMap<String, f64>,
}

/// Counts every path: `processes[path.harness]` is the binary and the
/// environment that path runs with.
pub async fn count(
    paths: &[Bench],
    processes: &[(PathBuf, Env)],
    redis: &RedisServer,
) -> Vec<Count> {
    let dir = std::env::temp_dir().join(format!("bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("callgrind directory");
    let mut counts = Vec::new();
    for (p, path) in paths.iter().enumerate() {
        let (binary, env) = &processes[path.harness];
        let mut runs = Vec::new();
        for (r, measured) in [SHORT, LONG].into_iter().enumerate() {
            let out = dir.join(format!("path{p}-run{r}.out"));
            let first = 5_000_000 + (p * 2 + r) * 10_000;
            run(binary, env, redis, path, first, measured, &out).await;
            runs.push(exclusive_by_function(&out));
        }
        counts.push(difference(&runs[0], &runs[1]));
        eprintln!(
            "instructions: {:<32} {:>9.0} per invocation",
            path.name, counts[p].instructions
        );
    }
    // `BENCH_KEEP_CALLGRIND=1` keeps the profiles, for callgrind_annotate.
    if std::env::var_os("BENCH_KEEP_CALLGRIND").is_some() {
        eprintln!("callgrind profiles kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    counts
}

/// One process under callgrind: warm-up, `measured` invocations, then
/// `SIGTERM`, on which valgrind writes `out`.
async fn run(
    binary: &Path,
    env: Env,
    redis: &RedisServer,
    path: &Bench,
    first: usize,
    measured: usize,
    out: &Path,
) {
    let wrapper = wrap(binary, out);
    let harness = Harness::start(&wrapper, vec![function_env(&redis.url(), env)]).await;
    for i in 0..WARM_UP + measured {
        invoke_checked(&harness, path, 0, first + i).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &harness.pid(0).to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "SIGTERM to the counted process");
    for _ in 0..600 {
        if !harness.is_alive(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !harness.is_alive(0),
        "{}: still running 30 s after SIGTERM",
        path.name
    );
    assert!(
        out.exists(),
        "callgrind wrote no {}; log:\n{}",
        out.display(),
        harness.logs(0)
    );
}

/// A script named like `binary` (the harness names the function after its
/// file) that runs it under callgrind, writing to `out`.
fn wrap(binary: &Path, out: &Path) -> PathBuf {
    let valgrind = which("valgrind")
        .unwrap_or_else(|| panic!("valgrind is not installed: sudo apt-get install -y valgrind"));
    let dir = out.with_extension("bin");
    std::fs::create_dir_all(&dir).expect("wrapper directory");
    let name = binary.file_name().expect("binary name");
    let script = dir.join(name);
    let text = format!(
        "#!/bin/sh\nexec {} --tool=callgrind --callgrind-out-file={} {} \"$@\"\n",
        valgrind.display(),
        out.display(),
        binary.display()
    );
    std::fs::write(&script, text).expect("write the wrapper");
    let chmod = Command::new("chmod").arg("+x").arg(&script).status();
    assert!(chmod.is_ok_and(|s| s.success()), "chmod +x the wrapper");
    script
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Exclusive instructions by function, from `callgrind_annotate`.
fn exclusive_by_function(out: &Path) -> HashMap<String, u64> {
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=no", "--threshold=100", "--auto=no"])
        .arg(out)
        .output()
        .expect("callgrind_annotate (part of valgrind)");
    assert!(annotated.status.success(), "callgrind_annotate failed");
    let text = String::from_utf8_lossy(&annotated.stdout);
    let mut by_function = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        // `N (x.y%)  PROGRAM TOTALS` or `N (x.y%)  file:function [object]`.
        let rest = rest.trim_start();
        let rest = rest.split_once(')').map_or(rest, |(_, r)| r).trim();
        let function = rest.split_once(':').map_or(rest, |(_, f)| f);
        let function = function.rsplit_once(" [").map_or(function, |(f, _)| f);
        *by_function.entry(function.to_owned()).or_insert(0) += count;
    }
    by_function
}

/// The per-invocation count and profile from a short and a long run.
fn difference(short: &HashMap<String, u64>, long: &HashMap<String, u64>) -> Count {
    let per = |name: &str| {
        let (s, l) = (short.get(name).copied(), long.get(name).copied());
        (l.unwrap_or(0) as f64 - s.unwrap_or(0) as f64) / (LONG - SHORT) as f64
    };
    Count {
        instructions: per("PROGRAM TOTALS"),
        by_function: long
            .keys()
            .filter(|name| *name != "PROGRAM TOTALS")
            .map(|name| (name.clone(), per(name)))
            .collect(),
    }
}

impl Count {
    /// The `TOP` functions this path spends more on than `floor` does.
    fn beyond(&self, floor: &Count) -> Vec<(String, f64)> {
        let mut extra: Vec<_> = self
            .by_function
            .iter()
            .map(|(name, n)| {
                let base = floor.by_function.get(name).copied().unwrap_or(0.0);
                (name.clone(), n - base)
            })
            .collect();
        extra.sort_by(|a, b| b.1.total_cmp(&a.1));
        extra.truncate(TOP);
        extra
    }
}

/// Prints the table (instructions beyond `floor-echo`, also in units of
/// the one-Redis-call floor's extra) and the profiles of the replay (from
/// Redis and from the local cache) and new-order paths; writes
/// `target/bench/instructions.json`.
pub fn print_and_save(paths: &[Bench], counts: &[Count], function: &Path) {
    println!("\nfunction: {}", function.display());
    println!("{SHORT} and {LONG} invocations after {WARM_UP}; instructions per invocation\n");
    let echo = counts[0].instructions;
    let one_call = counts[1].instructions - echo;
    println!("| path | instructions | beyond floor-echo | / one Redis call's |");
    println!("|---|---:|---:|---:|");
    for (path, count) in paths.iter().zip(counts) {
        let extra = count.instructions - echo;
        println!(
            "| {} | {:.0} | {extra:.0} | {:.2} |",
            path.name,
            count.instructions,
            extra / one_call
        );
    }
    for (path, count) in paths.iter().zip(counts) {
        if matches!(path.name, "replay" | "new order" | "replay, local cache") {
            println!(
                "\n{}: exclusive instructions per invocation beyond floor-echo, top {TOP}",
                path.name
            );
            for (function, n) in count.beyond(&counts[0]) {
                println!("{n:>9.0}  {function}");
            }
        }
    }
    let json = json!({
        "function": function.display().to_string(),
        "paths": paths.iter().zip(counts).map(|(path, count)| json!({
            "path": path.name,
            "instructions": count.instructions,
            "beyond_floor_echo": count.beyond(&counts[0]),
        })).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let file = out.join("instructions.json");
    std::fs::write(&file, serde_json::to_string_pretty(&json).expect("JSON"))
        .expect("write instructions.json");
    println!("\nwrote {}", file.display());
}
