use super::*;
use std::time::Duration;

fn parse(body: &str) -> Result<NewOrder, OrderInputError> {
    NewOrder::try_from(body.as_bytes())
}

fn message(body: &str) -> String {
    parse(body).unwrap_err().to_string()
}

#[test]
fn a_valid_order_parses() {
    let order = parse(r#"{"product":"Tea","quantity":1000}"#).unwrap();
    assert_eq!(order.product(), "Tea");
    assert_eq!(order.quantity(), 1000);
}

#[test]
fn a_whole_quantity_is_valid_in_any_json_notation() {
    // JSON does not tell 2 from 2.0, and JSON Schema's `integer` (what
    // openapi.yaml says) accepts both: clients that write numbers as
    // floats must not be refused.
    for (text, quantity) in [
        ("2", 2),
        ("2.0", 2),
        ("2.000", 2),
        ("377.0", 377),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e+3", 1000),
        ("0.2e1", 2),
        ("2.50e1", 25),
        ("1000.0", 1000),
        ("10000e-1", 1000),
    ] {
        let body = format!(r#"{{"product":"Tea","quantity":{text}}}"#);
        let parsed = parse(&body).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed.quantity(), quantity, "{text}");
    }
}

#[test]
fn a_number_of_any_length_is_valid_json_and_a_wrong_quantity() {
    let body = format!(r#"{{"product":"x","quantity":{}}}"#, "9".repeat(15_000));
    assert!(matches!(parse(&body), Err(OrderInputError::Invalid(_))));
}

#[test]
fn broken_json_is_malformed() {
    for body in [
        "",
        "{",
        r#"{"product":"Tea","#,
        "nope",
        r#"{"product":tru}"#,
    ] {
        assert!(
            matches!(parse(body), Err(OrderInputError::Malformed(_))),
            "{body:?}"
        );
    }
}

#[test]
fn wrong_values_types_and_members_are_invalid() {
    for body in [
        r#"{"product":"Tea","quantity":0}"#,
        r#"{"product":"Tea","quantity":1001}"#,
        r#"{"product":"Tea","quantity":-1}"#,
        r#"{"product":"Tea","quantity":99999999999999999999}"#,
        r#"{"product":"Tea","quantity":1.5}"#,
        r#"{"product":"Tea","quantity":1000.5}"#,
        r#"{"product":"Tea","quantity":0.0}"#,
        r#"{"product":"Tea","quantity":-0}"#,
        r#"{"product":"Tea","quantity":-2.0}"#,
        r#"{"product":"Tea","quantity":1.0e4}"#,
        r#"{"product":"Tea","quantity":15e-1}"#,
        r#"{"product":"Tea","quantity":5e-1}"#,
        r#"{"product":"Tea","quantity":1e99999999999999999999}"#,
        r#"{"product":"Tea","quantity":0e99999999999999999999}"#,
        r#"{"product":"Tea","quantity":true}"#,
        r#"{"product":"Tea","quantity":null}"#,
        r#"{"product":"Tea","quantity":"2e0"}"#,
        r#"{"product":"Tea","quantity":"2"}"#,
        r#"{"product":"   ","quantity":1}"#,
        r#"{"product":"","quantity":1}"#,
        r#"{"product":"a\u0000b","quantity":1}"#,
        r#"{"product":"\u200b","quantity":1}"#,
        r#"{"product":"Tea\u202egnp.exe","quantity":1}"#,
        r#"{"product":"\ufeffTea","quantity":1}"#,
        r#"{"product":7,"quantity":1}"#,
        r#"{"product":"Tea"}"#,
        r#"{"quantity":1}"#,
        r#"{"product":"Tea","quantity":1,"price":3}"#,
        r#"[1,2]"#,
        r#"["Tea",1]"#,
        r#""Tea""#,
    ] {
        assert!(
            matches!(parse(body), Err(OrderInputError::Invalid(_))),
            "{body:?}"
        );
    }
    let long = format!(r#"{{"product":"{}","quantity":1}}"#, "é".repeat(201));
    assert!(matches!(parse(&long), Err(OrderInputError::Invalid(_))));
    let max = format!(r#"{{"product":"{}","quantity":1}}"#, "é".repeat(200));
    assert!(parse(&max).is_ok());
}

#[test]
fn duplicate_members_are_refused_whatever_their_values() {
    for body in [
        r#"{"product":"a","product":"b","quantity":1}"#,
        r#"{"product":"b","product":"b","quantity":1}"#,
        r#"{"product":"b","quantity":1,"quantity":1}"#,
    ] {
        assert!(message(body).contains("more than once"), "{body}");
    }
}

#[test]
fn error_messages_never_echo_more_than_a_short_excerpt_of_the_input() {
    let huge = "\"".repeat(100_000);
    let escaped_quantity = format!(
        r#"{{"product":"x","quantity":"{}"}}"#,
        "\\\"".repeat(100_000)
    );
    let unknown = format!(
        r#"{{"{}":1,"product":"x","quantity":1}}"#,
        "k".repeat(2_000_000)
    );
    let long_product = format!(r#"{{"product":"{}","quantity":1}}"#, "p".repeat(1_000_000));
    let big_number = format!(r#"{{"product":"x","quantity":{}}}"#, "9".repeat(100_000));
    for body in [
        escaped_quantity,
        unknown,
        long_product,
        big_number,
        format!("{{\"product\":{huge}"),
        format!("[{}]", "1,".repeat(100_000)),
    ] {
        let text = message(&body);
        assert!(text.len() < 300, "{} bytes: {}", text.len(), &text[..300]);
    }
}

#[test]
fn an_unknown_member_is_named_by_an_escaped_excerpt() {
    let text = message(r#"{"pri\nce":1,"product":"x","quantity":1}"#);
    assert!(text.contains(r#""pri\nce""#), "{text}");
    let long = message(&format!(r#"{{"{}":1}}"#, "k".repeat(500)));
    assert!(long.contains(&format!("\"{}…\"", "k".repeat(40))), "{long}");
    let exact = message(&format!(r#"{{"{}":1}}"#, "k".repeat(40)));
    assert!(
        exact.contains(&format!("\"{}\";", "k".repeat(40))),
        "{exact}"
    );
}

#[test]
fn an_unknown_member_s_excerpt_is_at_most_40_characters_once_escaped() {
    // Each escapes to 10, 5, 2 and 1 character(s).
    for (one, escaped) in [
        ('\u{10ffff}', r"\u{10ffff}"),
        ('\u{1}', r"\u{1}"),
        ('"', r#"\""#),
        ('😀', "😀"),
    ] {
        let name = serde_json::to_string(&one.to_string().repeat(100)).unwrap();
        let text = message(&format!("{{{name}:1}}"));
        let fits = 40 / escaped.chars().count();
        let shown = format!("\"{}…\"", escaped.repeat(fits));
        assert!(text.contains(&shown), "{one:?}: {text}");
    }
    assert!(message(r#"{"it's":1}"#).contains(r#""it's""#));
}

#[test]
fn a_stored_order_matches_only_the_same_request() {
    let new = parse(r#"{"product":"Tea","quantity":2}"#).unwrap();
    let order = Order::new("id".to_owned(), new.clone());
    assert!(order.matches(&new));
    assert!(!order.matches(&parse(r#"{"product":"Tea","quantity":3}"#).unwrap()));
}

#[test]
fn rfc3339_formats_known_instants() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
    assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
}

/// `FUZZ_SECONDS=20 cargo test --release -p orders fuzz -- --nocapture`
/// for a longer run with a fresh seed.
#[test]
fn fuzz_arbitrary_bodies_never_panic_the_order_parser_and_errors_stay_small() {
    use testkit::fuzz::{fuzz, random_value, scramble};
    fuzz("order bodies", |rng| {
        let body: Vec<u8> = match rng.below(3) {
            0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
            1 => {
                let depth = rng.below(300);
                format!(
                    "{}{}",
                    "{\"a\":[".repeat(depth),
                    "]".repeat(rng.below(depth + 1))
                )
                .into_bytes()
            }
            _ => {
                let mut text = String::new();
                scramble(&random_value(rng, 0), rng, &mut text);
                let cut = rng.below(text.len() + 1);
                text.as_bytes()[..cut].to_vec()
            }
        };
        if let Err(e) = NewOrder::try_from(body.as_slice()) {
            assert!(e.to_string().len() < 300, "{e}");
        }
    });
}
