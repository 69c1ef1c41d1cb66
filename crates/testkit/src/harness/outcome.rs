//! What an invocation came to ([`Outcome`]) and the function's API Gateway
//! response read back into status, headers and body bytes ([`ApiResponse`]),
//! so tests assert on what a client would see rather than on JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::runtime_api::Finished;

/// How one invocation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The function posted a response.
    Response {
        /// The response, parsed.
        response: ApiResponse,
        /// The invocation's request id, as handed out on `/next`.
        request_id: String,
        /// From handing the event out on `/next` to receiving the response.
        elapsed: Duration,
    },
    /// The function posted to `/error` (the runtime's error report).
    FunctionError {
        /// The error body as posted (JSON with `errorType`/`errorMessage`).
        body: String,
        /// The invocation's request id, as handed out on `/next`.
        request_id: String,
        /// From handing the event out on `/next` to receiving the error.
        elapsed: Duration,
    },
    /// The process died (or was killed) before answering.
    Died,
}

impl Outcome {
    pub(super) fn from_finished(finished: Finished) -> Self {
        let Finished {
            request_id,
            is_error,
            body,
            elapsed,
        } = finished;
        if is_error {
            let body = String::from_utf8_lossy(&body).into_owned();
            return Self::FunctionError {
                body,
                request_id,
                elapsed,
            };
        }
        let raw: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "the function posted a response that is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        Self::Response {
            response: ApiResponse::from_json(raw),
            request_id,
            elapsed,
        }
    }

    /// The request id the invocation was handed out with, `None` for a
    /// death.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Response { request_id, .. } | Self::FunctionError { request_id, .. } => {
                Some(request_id)
            }
            Self::Died => None,
        }
    }

    /// The response, or a panic naming what happened instead.
    pub fn response(&self) -> &ApiResponse {
        match self {
            Self::Response { response, .. } => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// The status of a response, `None` for an error or a death.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Response { response, .. } => Some(response.status),
            _ => None,
        }
    }

    /// Runtime-API-side duration, `None` for a death.
    pub fn elapsed(&self) -> Option<Duration> {
        match self {
            Self::Response { elapsed, .. } | Self::FunctionError { elapsed, .. } => Some(*elapsed),
            Self::Died => None,
        }
    }
}

/// An API Gateway (v2 or v1) proxy response as the function returned it.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// `statusCode` (0 if the function returned no status).
    pub status: u16,
    /// `headers` merged with `multiValueHeaders` (values joined by `, `),
    /// names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// `cookies` (v2 puts `set-cookie` values here).
    pub cookies: Vec<String>,
    /// The body, base64-decoded when `isBase64Encoded` is true.
    pub body: Vec<u8>,
    /// The response JSON as posted.
    pub raw: Value,
}

impl ApiResponse {
    /// Reads an API Gateway proxy response.
    pub fn from_json(raw: Value) -> Self {
        let status = raw["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0);
        let mut headers = BTreeMap::new();
        if let Some(map) = raw["headers"].as_object() {
            for (name, value) in map {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                headers.insert(name.to_ascii_lowercase(), value);
            }
        }
        if let Some(map) = raw["multiValueHeaders"].as_object() {
            for (name, values) in map {
                let values: Vec<&str> = values
                    .as_array()
                    .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !values.is_empty() {
                    headers.insert(name.to_ascii_lowercase(), values.join(", "));
                }
            }
        }
        let cookies = raw["cookies"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let text = raw["body"].as_str().unwrap_or("");
        let body = if raw["isBase64Encoded"].as_bool() == Some(true) {
            base64_decode(text).unwrap_or_else(|| {
                panic!("the function flagged its body base64 but it is not: {text:?}")
            })
        } else {
            text.as_bytes().to_vec()
        };
        Self {
            status,
            headers,
            cookies,
            body,
            raw,
        }
    }

    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Whether the response carries `idempotent-replayed: true`.
    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("response body is not JSON")
    }
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let data = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="));
    let data = data.unwrap_or(&clean);
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for group in data.chunks(4) {
        let mut acc = 0u32;
        for &c in group {
            acc = (acc << 6) | sextet(c)?;
        }
        acc <<= 6 * (4 - group.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}
