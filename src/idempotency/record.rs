//! What the store keeps for one idempotency key: the [`Record`] (state,
//! fingerprint, owner) and, once complete, the [`StoredResponse`] that is
//! replayed byte for byte.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use lambda_http::http::{HeaderName, HeaderValue, StatusCode};
use lambda_http::{Body, Response};

use super::fingerprint::Fingerprint;

/// Header added to every replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Headers never stored for replay: they belong to one request or one
/// client session, not to the outcome of the operation.
const PER_REQUEST_HEADERS: &[&str] = &[
    "set-cookie",
    "date",
    "x-request-id",
    "x-amzn-requestid",
    "x-amzn-trace-id",
    "x-amz-apigw-id",
    "apigw-requestid",
    REPLAYED_HEADER,
];

/// A random token naming the invocation that holds a claim. Complete and
/// release only act when the record still carries the caller's token, so
/// an invocation whose lease expired can never overwrite its successor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerToken(String);

impl OwnerToken {
    /// A fresh token, unique across instances and invocations: a random
    /// (v4) per-process prefix and a per-process counter. Only uniqueness
    /// matters here, and one random draw per process saves a `getrandom`
    /// system call per request.
    pub fn generate() -> Self {
        static PROCESS: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("{prefix}-{n}"))
    }

    /// The token as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for OwnerToken {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The state of an idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordState {
    /// Claimed; the owner is still executing (or died and the lease runs).
    InProgress,
    /// Finished; this response is replayed to retries.
    Completed(StoredResponse),
}

/// An idempotency record as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Fingerprint of the request that created the record.
    pub fingerprint: Fingerprint,
    /// Token of the invocation that claimed it.
    pub owner: OwnerToken,
    /// In progress, or completed with a response.
    pub state: RecordState,
    /// Milliseconds until the record expires (lease or retention).
    pub ttl_ms: u64,
}

/// How the body was represented, so a replay rebuilds the same variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl BodyKind {
    /// One-byte code used in the stored record.
    pub fn code(self) -> &'static str {
        match self {
            Self::Empty => "e",
            Self::Text => "t",
            Self::Binary => "b",
        }
    }

    /// Inverse of [`BodyKind::code`]; unknown codes read as binary.
    pub fn from_code(code: &[u8]) -> Self {
        match code {
            b"e" => Self::Empty,
            b"t" => Self::Text,
            _ => Self::Binary,
        }
    }
}

/// A response as stored for replay: status, replayable headers, exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Replayable headers, in order, as raw name/value bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body representation.
    pub body_kind: BodyKind,
    /// Exact body bytes.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// Captures a handler response, dropping per-request headers.
    pub fn capture(response: &Response<Body>) -> Self {
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| !PER_REQUEST_HEADERS.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let (body_kind, body) = match response.body() {
            Body::Empty => (BodyKind::Empty, Vec::new()),
            Body::Text(text) => (BodyKind::Text, text.as_bytes().to_vec()),
            other => (BodyKind::Binary, other.to_vec()),
        };
        Self {
            status: response.status().as_u16(),
            headers,
            body_kind,
            body,
        }
    }

    /// Rebuilds the response, marked with `Idempotent-Replayed: true`.
    /// Consumes the record's copy: the body bytes move, they are not copied.
    pub fn replay(self) -> Response<Body> {
        let body = match self.body_kind {
            BodyKind::Empty => Body::Empty,
            BodyKind::Text => match String::from_utf8(self.body) {
                Ok(text) => Body::Text(text),
                Err(bytes) => Body::Binary(bytes.into_bytes()),
            },
            BodyKind::Binary => Body::Binary(self.body),
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            // Stored from valid headers, so these only fail on a corrupted
            // record; such a header is dropped rather than failing the replay.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    }

    /// Headers encoded one per line as `name:value` for the store.
    pub fn encode_headers(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out
    }

    /// Inverse of [`StoredResponse::encode_headers`]. Header values cannot
    /// contain a newline and names cannot contain a colon, so this is exact.
    pub fn decode_headers(encoded: &[u8]) -> Vec<(String, Vec<u8>)> {
        encoded
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name.to_owned(), line[colon + 1..].to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> Response<Body> {
        Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("location", "/orders/1")
            .header("set-cookie", "session=abc")
            .header("x-request-id", "req-1")
            .header("x-custom", "a:b")
            .body(Body::Text(r#"{"ok":true}"#.to_owned()))
            .unwrap()
    }

    #[test]
    fn replay_restores_status_headers_and_exact_body() {
        let stored = StoredResponse::capture(&response());
        let replayed = stored.replay();
        assert_eq!(replayed.status(), 201);
        assert_eq!(replayed.headers()["location"], "/orders/1");
        assert_eq!(replayed.headers()["x-custom"], "a:b");
        assert_eq!(replayed.headers()[REPLAYED_HEADER], "true");
        assert_eq!(replayed.body(), &Body::Text(r#"{"ok":true}"#.to_owned()));
    }

    #[test]
    fn owner_tokens_are_unique() {
        let tokens: std::collections::HashSet<_> =
            (0..1000).map(|_| OwnerToken::generate()).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn cookies_and_request_ids_are_not_stored() {
        let stored = StoredResponse::capture(&response());
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"set-cookie"));
        assert!(!names.contains(&"x-request-id"));
        assert!(names.contains(&"content-type"));
    }

    #[test]
    fn header_encoding_round_trips() {
        let stored = StoredResponse::capture(&response());
        let decoded = StoredResponse::decode_headers(&stored.encode_headers());
        assert_eq!(decoded, stored.headers);
    }

    #[test]
    fn binary_and_empty_bodies_keep_their_kind() {
        let binary = Response::new(Body::Binary(vec![0, 159, 146, 150]));
        assert_eq!(
            StoredResponse::capture(&binary).replay().body(),
            binary.body()
        );
        let empty = Response::new(Body::Empty);
        assert_eq!(
            StoredResponse::capture(&empty).replay().body(),
            &Body::Empty
        );
    }
}
