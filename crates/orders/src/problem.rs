//! RFC 9457 problem details: every error the orders handlers and the
//! function's router produce leaves through [`Problem`].
//!
//! Keeping one constructor for error bodies is what guarantees they never
//! carry a stack trace, the Redis URL or any other secret: callers choose a
//! fixed title and a human-written detail, nothing else gets in.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

/// Media type of RFC 9457 error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of problem: what every occurrence of it shares. The `type`
/// URI of an occurrence is the configured base followed by `slug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemType {
    /// The HTTP status it is answered with.
    pub status: StatusCode,
    /// The stable name at the end of its `type` URI, e.g. `order-not-found`.
    pub slug: &'static str,
    /// Its short, fixed title.
    pub title: &'static str,
}

/// An RFC 9457 problem, ready to be turned into an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// An occurrence of `kind` (its status, slug and title), with a detail
    /// for this occurrence.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            status: kind.status,
            slug: kind.slug,
            title: kind.title,
            detail: detail.into(),
            retry_after_secs: None,
            allow: None,
        }
    }

    /// Adds a `Retry-After` header (seconds); used by 409 and 503.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds an `Allow` header; used by 405.
    pub fn with_allow(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }

    /// The HTTP status of this problem.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The slug: the last part of the `type` URI, naming the problem.
    pub fn slug(&self) -> &'static str {
        self.slug
    }

    /// Renders the problem as an `application/problem+json` response whose
    /// `type` is `type_base` followed by the slug.
    pub fn into_response(self, type_base: &str) -> Response<Body> {
        let body = ProblemBody {
            kind: format!("{type_base}{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        // Serialising strings and a number cannot fail; the fallback keeps
        // this path panic-free all the same.
        let json = serde_json::to_string(&body).unwrap_or_default();
        let mut response = Response::new(Body::Text(json));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_renders_rfc9457_fields_and_headers() {
        let busy = ProblemType {
            status: StatusCode::CONFLICT,
            slug: "in-progress",
            title: "Busy",
        };
        let response = Problem::new(busy, "try later")
            .with_retry_after(7)
            .into_response("urn:test:");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(json["type"], "urn:test:in-progress");
        assert_eq!(json["title"], "Busy");
        assert_eq!(json["status"], 409);
        assert_eq!(json["detail"], "try later");
    }

    #[test]
    fn allow_header_is_set_for_method_not_allowed() {
        let no = ProblemType {
            status: StatusCode::METHOD_NOT_ALLOWED,
            slug: "method",
            title: "No",
        };
        let response = Problem::new(no, "d")
            .with_allow("GET")
            .into_response("urn:test:");
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }
}
