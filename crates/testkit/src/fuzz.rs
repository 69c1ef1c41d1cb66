//! A small deterministic fuzzer (xorshift) for property tests of the pure
//! edges a client controls.
//!
//! Not a fuzzing crate: cargo-fuzz needs a nightly toolchain, which this
//! project's machines do not have. In the default test run each property
//! gets a fixed number of cases from a fixed seed (repeatable). With
//! `FUZZ_SECONDS=<n>` set, each property runs for that long from a fresh
//! seed, which it prints.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// A xorshift generator.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed` (made odd: xorshift never leaves 0).
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Runs `property` for a fixed count, or for `FUZZ_SECONDS` when set.
pub fn fuzz(name: &str, mut property: impl FnMut(&mut Rng)) {
    let budget = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let seed = match budget {
        Some(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
        }
        None => 0x2545_f491_4f6c_dd1d,
    };
    let mut rng = Rng::seeded(seed);
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        property(&mut rng);
        cases += 1;
        let done = match budget {
            Some(secs) => started.elapsed() >= Duration::from_secs(secs),
            None => cases >= 3_000,
        };
        if done {
            break;
        }
    }
    println!("{name}: {cases} cases, seed {seed:#x}, no failure");
}

/// A header-like string: printable ASCII heavy on quotes, backslashes and
/// commas, with some controls, spaces, non-ASCII and long runs.
pub fn key_like(rng: &mut Rng) -> String {
    const SPECIAL: &[char] = &[
        '"', '\\', ',', ' ', '\t', '\u{1}', '\u{7f}', 'é', '€', '=', ';',
    ];
    let len = match rng.below(10) {
        0 => 250 + rng.below(10),
        _ => rng.below(40),
    };
    (0..len)
        .map(|_| {
            if rng.below(4) == 0 {
                rng.pick(SPECIAL)
            } else {
                (0x21 + rng.below(94) as u8) as char
            }
        })
        .collect()
}

/// A random JSON value, nested at most a few levels.
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next_u64() as i64 >> rng.below(60)),
        3 => Value::String(key_like(rng)),
        4 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|i| {
                    (
                        format!("{}{i}", key_like(rng)),
                        random_value(rng, depth + 1),
                    )
                })
                .collect::<Map<_, _>>(),
        ),
    }
}

/// Serialises `value` with object keys in a random order and random
/// insignificant whitespace.
pub fn scramble(value: &Value, rng: &mut Rng, out: &mut String) {
    const SPACE: &[&str] = &["", " ", "\n", "\t", "  "];
    out.push_str(rng.pick(SPACE));
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                scramble(item, rng, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, rng.below(i + 1));
            }
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).expect("key"));
                out.push_str(rng.pick(SPACE));
                out.push(':');
                scramble(item, rng, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
    out.push_str(rng.pick(SPACE));
}
