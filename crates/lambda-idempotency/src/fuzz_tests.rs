//! Property fuzzing of key parsing and fingerprinting (see
//! `testkit::fuzz`). A longer run with a fresh seed:
//! `FUZZ_SECONDS=20 cargo test --release -p lambda-idempotency fuzz -- --nocapture`.

use serde_json::{Map, Value};
use testkit::fuzz::{fuzz, key_like, random_value, scramble};

use crate::fingerprint::{canonical_json, Fingerprint};
use crate::key::{IdempotencyKey, KeyError};
use crate::StoreKey;

fn quote(key: &str) -> String {
    format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
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
fn fuzz_key_parsing_never_panics_and_accepts_only_valid_keys() {
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
                // Only the prefix and the hash: no client input in the store key.
                assert_eq!(derived.as_str(), format!("p:{}", derived.hash()));
                assert!(
                    derived.hash().len() == 64
                        && derived.hash().bytes().all(|b| b.is_ascii_hexdigit())
                );
            }
            Err(KeyError::Missing) => panic!("a present header is never Missing: {raw:?}"),
            Err(_) => {}
        }
    });
}

#[test]
fn fuzz_json_fingerprints_ignore_member_order_and_whitespace_but_not_values() {
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
fn fuzz_a_duplicate_member_never_shares_a_fingerprint_with_a_document_without_it() {
    fuzz("duplicate members", |rng| {
        let Value::Object(map) = random_value(rng, 3) else {
            return;
        };
        let Some((name, _)) = map.iter().next() else {
            return;
        };
        let mut text = String::new();
        scramble(&Value::Object(map.clone()), rng, &mut text);
        // Repeat one member inside the same object, with any value.
        let mut extra = String::new();
        scramble(&random_value(rng, 3), rng, &mut extra);
        let duplicated = format!("{{{}:{extra},{}", quote(name), &text.trim_start()[1..]);
        assert_eq!(canonical_json(duplicated.as_bytes()), None, "{duplicated}");
        let mut last_wins = map.clone();
        if let Ok(v) = serde_json::from_str::<Value>(&duplicated) {
            last_wins = v.as_object().cloned().unwrap_or(last_wins);
        }
        assert_ne!(
            fingerprint(&duplicated),
            fingerprint(&Value::Object(last_wins).to_string())
        );
    });
}

#[test]
fn fuzz_arbitrary_bodies_never_panic_the_fingerprint() {
    fuzz("bodies", |rng| {
        let body: Vec<u8> = match rng.below(3) {
            0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
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
    });
}
