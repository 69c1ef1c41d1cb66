//! Property fuzzing of the pure edges a client controls: key parsing,
//! canonical-JSON fingerprinting and order payload parsing.
//!
//! A small deterministic generator (xorshift) instead of a fuzzing crate:
//! cargo-fuzz needs a nightly toolchain, which this project's machines do
//! not have. In the default test run each property gets a fixed number of
//! cases from a fixed seed (repeatable). For a longer, time-bounded run with
//! a fresh seed:
//!
//! ```sh
//! FUZZ_SECONDS=60 cargo test --release --test fuzz -- --nocapture
//! ```

use std::time::{Duration, Instant};

use idempotent_orders::idempotency::fingerprint::canonical_json;
use idempotent_orders::idempotency::{Fingerprint, IdempotencyKey, KeyError, StoreKey};
use idempotent_orders::orders::NewOrder;
use serde_json::{Map, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Runs `property` for a fixed count, or for `FUZZ_SECONDS` when set.
fn fuzz(name: &str, mut property: impl FnMut(&mut Rng)) {
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
    let mut rng = Rng(seed | 1);
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
fn key_like(rng: &mut Rng) -> String {
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

fn quote(key: &str) -> String {
    format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn key_parsing_never_panics_and_accepts_only_valid_keys() {
    fuzz("key parsing", |rng| {
        let raw = key_like(rng);
        match IdempotencyKey::try_from(raw.as_str()) {
            Ok(key) => {
                let text = key.as_str();
                assert!(!text.is_empty() && text.chars().count() <= 255, "{raw:?}");
                assert!(text.bytes().all(|b| b.is_ascii_graphic()), "{raw:?}");
                // The quoted form of any valid key is the same key.
                let requoted = IdempotencyKey::try_from(quote(text).as_str());
                assert_eq!(requoted.as_ref(), Ok(&key), "{raw:?}");
                let derived = StoreKey::derive("p", "s", "POST", "/orders", &key);
                assert_eq!(derived.hash().len(), 64);
                // Only the prefix and the hash: no client input in the Redis key.
                assert_eq!(derived.as_str(), format!("p:{}", derived.hash()));
                assert!(derived.hash().bytes().all(|b| b.is_ascii_hexdigit()));
            }
            Err(KeyError::Missing) => panic!("a present header is never Missing: {raw:?}"),
            Err(_) => {}
        }
    });
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() as i64 >> rng.below(60)),
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
fn scramble(value: &Value, rng: &mut Rng, out: &mut String) {
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

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::compute(
        "POST",
        "/orders",
        None,
        Some("application/json"),
        body.as_bytes(),
    )
}

#[test]
fn json_fingerprints_ignore_key_order_and_whitespace_but_not_values() {
    fuzz("fingerprint", |rng| {
        let value = Value::Object(match random_value(rng, 0) {
            Value::Object(map) => map,
            other => Map::from_iter([("v".to_owned(), other)]),
        });
        let (mut a, mut b) = (String::new(), String::new());
        scramble(&value, rng, &mut a);
        scramble(&value, rng, &mut b);
        assert_eq!(fingerprint(&a), fingerprint(&b), "{a} vs {b}");
        let mut changed = value.clone();
        changed["__changed"] = Value::from(1);
        assert_ne!(fingerprint(&a), fingerprint(&changed.to_string()));
    });
}

#[test]
fn arbitrary_bodies_never_panic_the_fingerprint_or_the_order_parser() {
    fuzz("bodies", |rng| {
        let body: Vec<u8> = match rng.below(3) {
            0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            1 => {
                let depth = rng.below(300);
                format!("{}{}", "[".repeat(depth), "]".repeat(rng.below(depth + 1))).into_bytes()
            }
            _ => {
                let mut text = String::new();
                scramble(&random_value(rng, 0), rng, &mut text);
                let cut = rng.below(text.len() + 1);
                text.as_bytes()[..cut].to_vec()
            }
        };
        let _ = canonical_json(&body);
        let _ = Fingerprint::compute(
            "POST",
            "/o",
            Some("b=1&a=2"),
            Some("application/json"),
            &body,
        );
        let _ = NewOrder::try_from(body.as_slice());
    });
}
