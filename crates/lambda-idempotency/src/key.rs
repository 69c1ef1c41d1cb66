//! The `Idempotency-Key` header, validated at the edge into
//! [`IdempotencyKey`], and the record key derived from it ([`StoreKey`]).
//!
//! The IETF draft (`draft-ietf-httpapi-idempotency-key-header`) defines the
//! header as a structured-field string (`"abc"`); most clients (Stripe's
//! SDKs, curl users) send the bare token (`abc`). Both are accepted and mean
//! the same key.

use lambda_http::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ExecutionId;

/// Longest key accepted, in characters (Stripe's limit).
pub(crate) const MAX_LEN: usize = 255;

/// Why a key header was refused. Each maps to `400`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// No `Idempotency-Key` header.
    #[error("the Idempotency-Key header is required for this request")]
    Missing,
    /// The header is present but empty (or `""`).
    #[error("the Idempotency-Key header is empty")]
    Empty,
    /// More than [`MAX_LEN`] characters.
    #[error("the Idempotency-Key is {0} characters long; the limit is 255")]
    TooLong(usize),
    /// A character outside visible ASCII (controls, spaces, non-ASCII).
    #[error("the Idempotency-Key may only contain visible ASCII characters")]
    InvalidCharacter,
    /// Two headers, or a comma-joined list (how API Gateway v2 merges them).
    #[error("send exactly one Idempotency-Key header with one value")]
    Multiple,
    /// A quoted key with a bad escape or a missing closing quote.
    #[error("the quoted Idempotency-Key is not a valid structured-field string")]
    BadQuoting,
}

/// A validated idempotency key, as the client meant it (quotes removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the key from the request's `header`: `Ok(None)` when absent.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        header: &HeaderName,
    ) -> Result<Option<Self>, KeyError> {
        let mut values = headers.get_all(header).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(KeyError::Multiple);
        }
        let text = first.to_str().map_err(|_| KeyError::InvalidCharacter)?;
        Self::try_from(text).map(Some)
    }

    /// The key as a string slice.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for IdempotencyKey {
    type Error = KeyError;

    fn try_from(raw: &str) -> Result<Self, KeyError> {
        // HTTP ignores whitespace around a field value.
        let raw = raw.trim_matches(|c| c == ' ' || c == '\t');
        let key = if raw.starts_with('"') {
            unquote(raw)?
        } else {
            if raw.contains(',') {
                // API Gateway v2 joins repeated headers with a comma.
                return Err(KeyError::Multiple);
            }
            raw.to_owned()
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::InvalidCharacter);
        }
        let len = key.chars().count();
        if len > MAX_LEN {
            return Err(KeyError::TooLong(len));
        }
        Ok(Self(key))
    }
}

/// Parses an RFC 8941 sf-string: `"` chars `"`, where only `\"` and `\\` are
/// escapes and nothing may follow the closing quote.
fn unquote(raw: &str) -> Result<String, KeyError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw[1..].chars();
    loop {
        match chars.next() {
            None => return Err(KeyError::BadQuoting),
            Some('"') => break,
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => out.push(c),
                _ => return Err(KeyError::BadQuoting),
            },
            Some(c) if c == ' ' || c.is_ascii_graphic() => out.push(c),
            Some(_) => return Err(KeyError::InvalidCharacter),
        }
    }
    if chars.next().is_some() {
        // `"a","b"`: a list of keys, or junk after the string.
        return Err(KeyError::Multiple);
    }
    Ok(out)
}

/// The store key of an idempotency record: `<prefix>:<hex sha256>`.
///
/// The hash covers the caller's scope, the method, the path and the key, so
/// one caller can never reach another's record, one route's key never
/// collides with another route's, and no raw client input reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreKey {
    redis_key: String,
    hash_start: usize,
}

impl StoreKey {
    /// Derives the record key for `key` sent by `scope` to `method path`.
    pub(crate) fn derive(
        prefix: &str,
        scope: &str,
        method: &str,
        path: &str,
        key: &IdempotencyKey,
    ) -> Self {
        let mut hasher = Sha256::new();
        for part in [scope, method, path, key.as_str()] {
            // Length-prefixed so ("ab","c") and ("a","bc") differ.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let hash = crate::fingerprint::hex(&hasher.finalize());
        Self {
            hash_start: prefix.len() + 1,
            redis_key: format!("{prefix}:{hash}"),
        }
    }

    /// The full key, as the store should name the record.
    pub fn as_str(&self) -> &str {
        &self.redis_key
    }

    /// The hash part alone: what logs show instead of the client's key.
    pub fn hash(&self) -> &str {
        &self.redis_key[self.hash_start..]
    }

    /// The identity of this key's execution, handed to the handler.
    pub(crate) fn execution_id(&self) -> ExecutionId {
        ExecutionId::derive(self.hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    fn parse(raw: &str) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::try_from(raw)
    }

    #[test]
    fn raw_and_quoted_forms_are_the_same_key() {
        assert_eq!(parse("abc-123").unwrap(), parse("\"abc-123\"").unwrap());
    }

    #[test]
    fn quoted_escapes_are_decoded() {
        assert_eq!(parse(r#""a\"b\\c""#).unwrap().as_str(), r#"a"b\c"#);
    }

    #[test]
    fn bad_quoting_is_refused() {
        assert_eq!(parse(r#""abc"#), Err(KeyError::BadQuoting));
        assert_eq!(parse(r#""a\nb""#), Err(KeyError::BadQuoting));
        assert_eq!(parse(r#""a","b""#), Err(KeyError::Multiple));
    }

    #[test]
    fn empty_keys_are_refused() {
        assert_eq!(parse(""), Err(KeyError::Empty));
        assert_eq!(parse("\"\""), Err(KeyError::Empty));
        assert_eq!(parse("   "), Err(KeyError::Empty));
    }

    #[test]
    fn keys_longer_than_255_characters_are_refused() {
        assert!(parse(&"k".repeat(255)).is_ok());
        assert_eq!(parse(&"k".repeat(256)), Err(KeyError::TooLong(256)));
    }

    #[test]
    fn keys_outside_visible_ascii_are_refused() {
        for bad in ["a b", "a\u{7f}", "caf\u{e9}", "a\u{1}b", "\"a b\""] {
            assert_eq!(parse(bad), Err(KeyError::InvalidCharacter), "{bad:?}");
        }
    }

    #[test]
    fn comma_joined_keys_are_refused_as_multiple() {
        assert_eq!(parse("a,b"), Err(KeyError::Multiple));
    }

    #[test]
    fn two_headers_are_refused_and_none_is_absent() {
        let header = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers, &header), Ok(None));
        headers.append(&header, HeaderValue::from_static("a"));
        assert!(IdempotencyKey::from_headers(&headers, &header)
            .unwrap()
            .is_some());
        headers.append(&header, HeaderValue::from_static("b"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers, &header),
            Err(KeyError::Multiple)
        );
    }

    #[test]
    fn the_key_is_read_from_the_header_named_whatever_its_case() {
        let mut headers = HeaderMap::new();
        headers.append("x-request-key", HeaderValue::from_static("a"));
        headers.append("idempotency-key", HeaderValue::from_static("b"));
        let header = HeaderName::from_bytes(b"X-Request-Key").unwrap();
        let key = IdempotencyKey::from_headers(&headers, &header).unwrap();
        assert_eq!(key.unwrap().as_str(), "a");
    }

    #[test]
    fn store_key_depends_on_scope_method_path_and_key() {
        let k = parse("k1").unwrap();
        let base = StoreKey::derive("p", "anonymous", "POST", "/orders", &k);
        assert!(base.as_str().starts_with("p:"));
        assert_eq!(base.hash().len(), 64);
        assert!(!base.as_str().contains("k1"));
        for other in [
            StoreKey::derive("p", "jwt:alice", "POST", "/orders", &k),
            StoreKey::derive("p", "anonymous", "PATCH", "/orders", &k),
            StoreKey::derive("p", "anonymous", "POST", "/other", &k),
            StoreKey::derive("p", "anonymous", "POST", "/orders", &parse("k2").unwrap()),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(
            base,
            StoreKey::derive("p", "anonymous", "POST", "/orders", &k)
        );
    }
}
