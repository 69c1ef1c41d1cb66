//! The request fingerprint: what makes a retry "the same request".
//!
//! SHA-256 over the method, the route path, the sorted query string and the
//! body. A JSON body is canonicalised first (object keys sorted, no
//! insignificant whitespace) so that a client re-serialising the same object
//! in another key order is recognised as the same request.
//!
//! Canonicalisation is conservative on purpose: when it could make two
//! *different* requests look equal, it is skipped and the raw bytes are
//! hashed instead. That happens for JSON with non-integer numbers (a float
//! parse would merge `0.1000000000000000055` and `0.1`) and for JSON that
//! does not parse (including nesting deeper than serde_json's 128 levels).
//! The worst case is then a `422` for a reordered float body, never a wrong
//! replay.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A request fingerprint (SHA-256), compared between a retry and the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprints a request from its parts.
    pub fn compute(
        method: &str,
        path: &str,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Self {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(method.as_bytes());
        field(path.as_bytes());
        field(sorted_query(query.unwrap_or("")).as_bytes());
        match content_type
            .filter(|ct| is_json(ct))
            .and_then(|_| canonical_json(body))
        {
            Some(canonical) => {
                field(b"json");
                field(&canonical);
            }
            None => {
                field(b"bytes");
                field(body);
            }
        }
        Self(hasher.finalize().into())
    }

    /// Lower-case hex, as stored in Redis.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Inverse of [`Fingerprint::to_hex`]; `None` if not 64 hex digits.
    pub fn from_hex(text: &[u8]) -> Option<Self> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

/// Lower-case hex of `bytes` (sha2 0.11 digests no longer implement
/// `LowerHex`). A table lookup: `write!("{:02x}")` per byte showed up in the
/// benchmark's profile at ~10k instructions per request.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Whether a `Content-Type` value names JSON (`application/json`, `*/*+json`).
pub fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// Canonical bytes of a JSON document, or `None` when canonicalising could
/// merge distinct documents (see the module docs).
pub fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    write_canonical(&value, &mut out).then_some(out)
}

/// Writes `value` with sorted keys and no whitespace; false on a float.
fn write_canonical(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, value).is_ok()
        }
        Value::Number(n) if n.is_i64() || n.is_u64() => serde_json::to_writer(&mut *out, n).is_ok(),
        Value::Number(_) => false,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_canonical(item, out) {
                    return false;
                }
            }
            out.push(b']');
            true
        }
        Value::Object(map) => {
            // Sorted here rather than relying on serde_json's map type, which
            // keeps insertion order if any crate enables `preserve_order`.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if serde_json::to_writer(&mut *out, key).is_err() {
                    return false;
                }
                out.push(b':');
                if !write_canonical(item, out) {
                    return false;
                }
            }
            out.push(b'}');
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    fn fp(query: Option<&str>, ct: Option<&str>, body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/orders", query, ct, body.as_bytes())
    }

    #[test]
    fn reordered_json_with_whitespace_has_the_same_fingerprint() {
        assert_eq!(
            fp(None, JSON, r#"{"a":1,"b":[true,null,"x"]}"#),
            fp(None, JSON, "{ \"b\" : [ true, null, \"x\" ],\n \"a\": 1 }")
        );
    }

    #[test]
    fn json_content_type_parameters_and_suffixes_count_as_json() {
        assert_eq!(
            fp(
                None,
                Some("Application/JSON; charset=utf-8"),
                r#"{"a":1,"b":2}"#
            ),
            fp(
                None,
                Some("application/merge-patch+json"),
                r#"{"b":2,"a":1}"#
            )
        );
    }

    #[test]
    fn different_values_have_different_fingerprints() {
        assert_ne!(fp(None, JSON, r#"{"a":1}"#), fp(None, JSON, r#"{"a":2}"#));
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        let text = Some("text/plain");
        assert_ne!(
            fp(None, text, r#"{"a":1,"b":2}"#),
            fp(None, text, r#"{"b":2,"a":1}"#)
        );
        assert_eq!(fp(None, text, "hello"), fp(None, text, "hello"));
    }

    #[test]
    fn floats_fall_back_to_raw_bytes() {
        assert_eq!(canonical_json(br#"{"a":0.5}"#), None);
        assert_ne!(
            fp(None, JSON, r#"{"a":0.5,"b":1}"#),
            fp(None, JSON, r#"{"b":1,"a":0.5}"#)
        );
    }

    #[test]
    fn invalid_json_falls_back_to_raw_bytes() {
        assert_eq!(canonical_json(b"{\"a\":"), None);
        assert_ne!(fp(None, JSON, "{\"a\":"), fp(None, JSON, "{\"a\": "));
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        assert_eq!(fp(Some("a=1&b=2"), None, ""), fp(Some("b=2&a=1"), None, ""));
        assert_ne!(fp(Some("a=1"), None, ""), fp(Some("a=2"), None, ""));
    }

    #[test]
    fn method_and_path_are_part_of_the_fingerprint() {
        let a = Fingerprint::compute("POST", "/a", None, None, b"x");
        assert_ne!(a, Fingerprint::compute("PATCH", "/a", None, None, b"x"));
        assert_ne!(a, Fingerprint::compute("POST", "/b", None, None, b"x"));
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(fp(None, None, "").to_hex().len(), 64);
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let f = fp(None, None, "x");
        assert_eq!(Fingerprint::from_hex(f.to_hex().as_bytes()), Some(f));
        assert_eq!(Fingerprint::from_hex(b"zz"), None);
        assert_eq!(Fingerprint::from_hex(&[b'g'; 64]), None);
    }
}
