//! The request fingerprint: what makes a retry "the same request".
//!
//! SHA-256 over the method, the route path, the sorted query string and the
//! body. A JSON body (`application/json` or `*/*+json`) is canonicalised
//! first (object members sorted, no insignificant whitespace) so that a
//! client re-serialising the same object in another member order is
//! recognised as the same request; its media type (without parameters) is
//! hashed with it.
//!
//! Canonicalisation is conservative on purpose: whenever it could make two
//! *different* requests look equal, it is skipped and the raw bytes are
//! hashed instead. That happens for
//! - a non-integer number (a float parse would merge
//!   `0.1000000000000000055` and `0.1`),
//! - a duplicate object member (`{"a":1,"a":2}`: parsers disagree on which
//!   one wins, so the handler may read another document than a
//!   last-one-wins canonical form would describe),
//! - JSON that does not parse (including nesting deeper than 128 levels).
//!
//! The worst case is then a `422` for a reordered body, never a wrong replay.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

/// A request fingerprint (SHA-256), compared between a retry and the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprints a request from its parts.
    pub(crate) fn compute(
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
        let json_media = content_type.and_then(json_media_type);
        match json_media.as_ref().and_then(|_| canonical_json(body)) {
            Some(canonical) => {
                field(b"json");
                field(json_media.as_deref().unwrap_or("").as_bytes());
                field(&canonical);
            }
            None => {
                field(b"bytes");
                field(&canonical_media_type(content_type).into_bytes());
                field(body);
            }
        }
        Self(hasher.finalize().into())
    }

    /// The 32 digest bytes.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The inverse of [`Fingerprint::as_bytes`].
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Lower-case hex of `bytes` by table lookup (sha2 0.11 digests no longer
/// implement `LowerHex`, and `write!("{:02x}")` per byte showed up in the
/// benchmark's profile).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The media type of a `Content-Type` value, lower-cased, without
/// parameters; empty when absent.
fn canonical_media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `Some(())` when a `Content-Type` names JSON.
pub(crate) fn is_json(content_type: &str) -> Option<()> {
    json_media_type(content_type).map(|_| ())
}

/// The canonical media type when it names JSON (`application/json`,
/// `*/*+json`).
fn json_media_type(content_type: &str) -> Option<String> {
    let media = canonical_media_type(Some(content_type));
    (media == "application/json" || (media.len() > 5 && media.ends_with("+json"))).then_some(media)
}

/// The query with its parameters sorted by name; the values of a repeated
/// name keep their order (`?tag=a&tag=b` may mean something else than
/// `?tag=b&tag=a`).
fn sorted_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|pair| pair.split('=').next().unwrap_or(""));
    pairs.join("&")
}

/// Canonical bytes of a JSON document, or `None` when canonicalising could
/// merge distinct documents (see the module docs).
pub(crate) fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let node: Node = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    node.write(&mut out);
    Some(out)
}

/// A JSON value as far as canonical form needs it: scalars are kept as their
/// canonical text, objects sorted by member name.
enum Node {
    Scalar(String),
    Array(Vec<Node>),
    Object(BTreeMap<String, Node>),
}

impl Node {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Scalar(text) => out.extend_from_slice(text.as_bytes()),
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::Object(members) => {
                out.push(b'{');
                for (i, (name, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(quoted(name).as_bytes());
                    out.push(b':');
                    item.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn quoted(text: &str) -> String {
    // Serialising a string cannot fail; the fallback is never used.
    serde_json::to_string(text).unwrap_or_default()
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value without floats or duplicate members")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Err(E::custom("a non-integer number has no safe canonical form"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(quoted(v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar("null".to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value()?;
            if members.insert(name, value).is_some() {
                return Err(de::Error::custom("duplicate member"));
            }
        }
        Ok(Node::Object(members))
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
    fn json_content_type_parameters_and_case_do_not_matter() {
        assert_eq!(
            fp(
                None,
                Some("Application/JSON; charset=utf-8"),
                r#"{"a":1,"b":2}"#
            ),
            fp(None, JSON, r#"{"b":2,"a":1}"#)
        );
    }

    #[test]
    fn the_json_media_type_is_part_of_the_fingerprint() {
        assert_ne!(
            fp(None, JSON, r#"{"a":1}"#),
            fp(None, Some("application/merge-patch+json"), r#"{"a":1}"#)
        );
    }

    #[test]
    fn different_values_have_different_fingerprints() {
        assert_ne!(fp(None, JSON, r#"{"a":1}"#), fp(None, JSON, r#"{"a":2}"#));
    }

    #[test]
    fn duplicate_members_are_hashed_as_raw_bytes() {
        assert_eq!(canonical_json(br#"{"a":1,"a":2}"#), None);
        assert_eq!(canonical_json(br#"{"x":{"a":1,"a":1}}"#), None);
        // A duplicate-member body never shares a fingerprint with the
        // document a last-one-wins parser would read.
        assert_ne!(
            fp(None, JSON, r#"{"product":"a","product":"b","quantity":1}"#),
            fp(None, JSON, r#"{"product":"b","quantity":1}"#)
        );
        assert_ne!(
            fp(None, JSON, r#"{"product":"b","product":"b","quantity":1}"#),
            fp(None, JSON, r#"{"product":"b","quantity":1}"#)
        );
    }

    #[test]
    fn a_raw_json_body_never_collides_with_a_text_body_of_the_same_bytes() {
        let body = r#"{"a":1,"a":2}"#;
        assert_ne!(fp(None, JSON, body), fp(None, Some("text/plain"), body));
        assert_ne!(fp(None, JSON, body), fp(None, None, body));
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes_with_their_media_type() {
        let text = Some("text/plain");
        assert_ne!(
            fp(None, text, r#"{"a":1,"b":2}"#),
            fp(None, text, r#"{"b":2,"a":1}"#)
        );
        assert_eq!(fp(None, text, "hello"), fp(None, text, "hello"));
        assert_ne!(fp(None, text, "hello"), fp(None, Some("text/csv"), "hello"));
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
    fn escapes_are_canonicalised_to_the_same_string() {
        assert_eq!(
            canonical_json(br#"{"k":"\u0041\n"}"#),
            canonical_json(br#"{"k":"A\n"}"#)
        );
    }

    #[test]
    fn query_order_does_not_matter_but_values_and_their_order_do() {
        assert_eq!(fp(Some("a=1&b=2"), None, ""), fp(Some("b=2&a=1"), None, ""));
        assert_ne!(fp(Some("a=1"), None, ""), fp(Some("a=2"), None, ""));
        assert_ne!(
            fp(Some("tag=a&tag=b"), None, ""),
            fp(Some("tag=b&tag=a"), None, "")
        );
        assert_eq!(
            fp(Some("tag=a&x=1&tag=b"), None, ""),
            fp(Some("x=1&tag=a&tag=b"), None, "")
        );
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
    }
}
