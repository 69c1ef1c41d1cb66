//! What the layer keeps in a record's opaque payload, and how it is
//! encoded: the request's fingerprint, and either the lease's end (in
//! progress) or the response replayed byte for byte (completed).
//!
//! The encoding is a small binary format, so a replay parses a few length
//! fields and moves the body out without copying or escaping it:
//!
//! ```text
//! in progress: 0x01 | fingerprint (32) | lease end, epoch ms (u64 BE)
//! completed:   0x01 | fingerprint (32) | response
//!          or  0x02 | fingerprint (32) | expiry, epoch ms (u64 BE) | response
//! response:    status (u16 BE) | body kind (1) | header count (u16 BE)
//!              | { name len (u16 BE) | name | value len (u32 BE) | value }*
//!              | body (the rest)
//! ```
//!
//! A completed record carries its expiry (version 2) only when the layer
//! keeps a local cache, which needs it to know how long a record it read is
//! valid. Version 1 stays the default so that an earlier version of the
//! layer, still running during a deploy, can read every record written.

use lambda_http::http::{HeaderName, HeaderValue, StatusCode};
use lambda_http::{Body, Response};

use crate::fingerprint::Fingerprint;
use crate::store::{Phase, StoreError, StoredRecord};
use crate::OwnerToken;

/// Header added to every replayed response.
pub(crate) const REPLAYED_HEADER: &str = "idempotent-replayed";

const VERSION: u8 = 1;
/// A completed record that carries its expiry.
const VERSION_WITH_EXPIRY: u8 = 2;

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

/// A record as the layer understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) owner: OwnerToken,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) state: RecordState,
    /// A completed record's expiry (epoch ms), when it carries one.
    pub(crate) expires_ms: Option<u64>,
}

/// The phase-specific part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordState {
    /// Claimed; the lease ends at this epoch millisecond.
    InProgress { lease_end_ms: u64 },
    /// Finished with this response.
    Completed(StoredResponse),
}

impl Record {
    /// Decodes a record a store returned.
    pub(crate) fn decode(stored: StoredRecord) -> Result<Self, StoreError> {
        let mut reader = Reader::new(&stored.payload);
        let version = reader.u8()?;
        let fingerprint = Fingerprint::from_bytes(reader.array()?);
        let mut expires_ms = None;
        let state = match (stored.phase, version) {
            (Phase::InProgress, VERSION) => RecordState::InProgress {
                lease_end_ms: reader.u64()?,
            },
            (Phase::Completed, VERSION | VERSION_WITH_EXPIRY) => {
                if version == VERSION_WITH_EXPIRY {
                    expires_ms = Some(reader.u64()?);
                }
                RecordState::Completed(StoredResponse::decode(reader)?)
            }
            _ => return Err(corrupt("unknown record version")),
        };
        Ok(Self {
            owner: stored.owner,
            fingerprint,
            state,
            expires_ms,
        })
    }

    /// Bytes the record holds: its response's headers and body.
    pub(crate) fn size(&self) -> usize {
        match &self.state {
            RecordState::InProgress { .. } => 0,
            RecordState::Completed(response) => response.size(),
        }
    }
}

/// The payload of an in-progress record.
pub(crate) fn in_progress_payload(fingerprint: &Fingerprint, lease_end_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(41);
    out.push(VERSION);
    out.extend_from_slice(fingerprint.as_bytes());
    out.extend_from_slice(&lease_end_ms.to_be_bytes());
    out
}

/// How the body was represented, so a replay rebuilds the same variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Empty,
    Text,
    Binary,
}

/// A response as stored for replay: status, replayable headers, exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body_kind: BodyKind,
    pub(crate) body: Vec<u8>,
}

impl StoredResponse {
    /// Captures a handler response, dropping per-request headers.
    pub(crate) fn capture(response: &Response<Body>) -> Self {
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

    /// Bytes of its headers and body.
    pub(crate) fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        headers + self.body.len()
    }

    /// The payload of a completed record holding this response, carrying
    /// its expiry (epoch ms) if given.
    pub(crate) fn encode(&self, fingerprint: &Fingerprint, expires_ms: Option<u64>) -> Vec<u8> {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(46 + headers_len + self.body.len());
        match expires_ms {
            None => out.push(VERSION),
            Some(_) => out.push(VERSION_WITH_EXPIRY),
        }
        out.extend_from_slice(fingerprint.as_bytes());
        if let Some(expires_ms) = expires_ms {
            out.extend_from_slice(&expires_ms.to_be_bytes());
        }
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(match self.body_kind {
            BodyKind::Empty => b'e',
            BodyKind::Text => b't',
            BodyKind::Binary => b'b',
        });
        // Header names and values are far below these bounds (API Gateway
        // caps whole requests and responses well under 4 GiB).
        let count = u16::try_from(self.headers.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in self.headers.iter().take(usize::from(count)) {
            let name_len = u16::try_from(name.len()).unwrap_or(0);
            out.extend_from_slice(&name_len.to_be_bytes());
            out.extend_from_slice(&name.as_bytes()[..usize::from(name_len)]);
            let value_len = u32::try_from(value.len()).unwrap_or(0);
            out.extend_from_slice(&value_len.to_be_bytes());
            out.extend_from_slice(&value[..value_len as usize]);
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(mut reader: Reader<'_>) -> Result<Self, StoreError> {
        let status = u16::from_be_bytes(reader.array()?);
        let body_kind = match reader.u8()? {
            b'e' => BodyKind::Empty,
            b't' => BodyKind::Text,
            b'b' => BodyKind::Binary,
            _ => return Err(corrupt("unknown body kind")),
        };
        let count = u16::from_be_bytes(reader.array()?);
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let name_len = usize::from(u16::from_be_bytes(reader.array()?));
            let name = std::str::from_utf8(reader.take(name_len)?)
                .map_err(|_| corrupt("header name is not UTF-8"))?
                .to_owned();
            let value_len = u32::from_be_bytes(reader.array()?) as usize;
            headers.push((name, reader.take(value_len)?.to_vec()));
        }
        Ok(Self {
            status,
            headers,
            body_kind,
            body: reader.rest().to_vec(),
        })
    }

    /// Rebuilds the response, marked with `Idempotent-Replayed: true`.
    /// Consumes the record's copy: the body bytes move, they are not copied.
    pub(crate) fn replay(self) -> Response<Body> {
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
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(corrupt("truncated record"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
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
            .header("x-custom", HeaderValue::from_bytes(b"a:b\xe9").unwrap())
            .body(Body::Text(r#"{"ok":true}"#.to_owned()))
            .unwrap()
    }

    fn fp() -> Fingerprint {
        Fingerprint::compute("POST", "/o", None, None, b"x")
    }

    fn stored(phase: Phase, payload: Vec<u8>) -> StoredRecord {
        StoredRecord {
            phase,
            owner: OwnerToken::from("me".to_owned()),
            payload,
        }
    }

    #[test]
    fn a_completed_record_round_trips_status_headers_and_exact_body() {
        let captured = StoredResponse::capture(&response());
        let record =
            Record::decode(stored(Phase::Completed, captured.encode(&fp(), None))).unwrap();
        assert_eq!(record.fingerprint, fp());
        let RecordState::Completed(decoded) = record.state else {
            panic!("not completed")
        };
        assert_eq!(decoded, captured);
        let replayed = decoded.replay();
        assert_eq!(replayed.status(), 201);
        assert_eq!(replayed.headers()["location"], "/orders/1");
        assert_eq!(replayed.headers()["x-custom"].as_bytes(), b"a:b\xe9");
        assert_eq!(replayed.headers()[REPLAYED_HEADER], "true");
        assert_eq!(replayed.body(), &Body::Text(r#"{"ok":true}"#.to_owned()));
    }

    #[test]
    fn a_completed_record_carries_its_expiry_only_when_asked_and_both_forms_read() {
        let captured = StoredResponse::capture(&response());
        let plain = captured.encode(&fp(), None);
        let dated = captured.encode(&fp(), Some(1_796_000_000_000));
        assert_eq!(plain[0], VERSION, "what earlier versions read");
        assert_eq!(dated[0], VERSION_WITH_EXPIRY);
        assert_eq!(dated.len(), plain.len() + 8);
        let plain = Record::decode(stored(Phase::Completed, plain)).unwrap();
        let dated = Record::decode(stored(Phase::Completed, dated)).unwrap();
        assert_eq!(plain.expires_ms, None);
        assert_eq!(dated.expires_ms, Some(1_796_000_000_000));
        assert_eq!(plain.state, dated.state);
        // An in-progress record of the dated version is not one we wrote.
        let mut odd = in_progress_payload(&fp(), 42);
        odd[0] = VERSION_WITH_EXPIRY;
        assert!(Record::decode(stored(Phase::InProgress, odd)).is_err());
    }

    #[test]
    fn an_in_progress_record_round_trips_its_lease_end() {
        let record = Record::decode(stored(Phase::InProgress, in_progress_payload(&fp(), 42)));
        assert_eq!(
            record.unwrap().state,
            RecordState::InProgress { lease_end_ms: 42 }
        );
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

    #[test]
    fn truncated_or_foreign_payloads_are_corrupt_not_a_panic() {
        let full = StoredResponse::capture(&response()).encode(&fp(), None);
        for cut in 0..40 {
            let result = Record::decode(stored(Phase::Completed, full[..cut].to_vec()));
            assert!(matches!(result, Err(StoreError::Corrupt(_))), "cut {cut}");
        }
        let mut foreign = full.clone();
        foreign[0] = 9;
        assert!(Record::decode(stored(Phase::Completed, foreign)).is_err());
    }
}
