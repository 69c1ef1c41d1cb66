//! RFC 9457 `application/problem+json` answers: every response the layer
//! writes itself (as opposed to passing the handler's through) leaves here.
//!
//! One constructor, fixed titles and human-written details: no error body
//! ever carries client input beyond a length, a store error, a URL or a
//! secret.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use serde::Serialize;

/// Media type of RFC 9457 error bodies.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of problem: what every occurrence of it shares. The `type`
/// URI of an occurrence is the configured base followed by `slug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemType {
    /// The HTTP status it is answered with.
    pub status: StatusCode,
    /// The stable name at the end of its `type` URI, e.g. `request-in-progress`.
    pub slug: &'static str,
    /// Its short, fixed title.
    pub title: &'static str,
}

/// A problem the layer answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) slug: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    pub(crate) retry_after_secs: Option<u64>,
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
    /// An occurrence of `kind`, with a detail for this occurrence.
    pub(crate) fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            status: kind.status,
            slug: kind.slug,
            title: kind.title,
            detail: detail.into(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Renders the problem; its `type` is `type_base` followed by the slug.
    pub(crate) fn into_response(self, type_base: &str) -> Response<Body> {
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
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_renders_rfc9457_members_and_retry_after() {
        let busy = ProblemType {
            status: StatusCode::CONFLICT,
            slug: "busy",
            title: "Busy",
        };
        let response = Problem::new(busy, "try later")
            .with_retry_after(1)
            .into_response("https://example.com/problems/");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(json["type"], "https://example.com/problems/busy");
        assert_eq!(json["title"], "Busy");
        assert_eq!(json["status"], 409);
        assert_eq!(json["detail"], "try later");
    }
}
