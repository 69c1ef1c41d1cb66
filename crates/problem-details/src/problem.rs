//! Problem types and their occurrences, and the one renderer of an
//! occurrence into an HTTP response.
//!
//! One constructor with a fixed title and a detail its caller writes is
//! what keeps error bodies free of stack traces, URLs and secrets: nothing
//! else gets in.

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
    /// The stable name at the end of its `type` URI, e.g. `request-in-progress`.
    pub slug: &'static str,
    /// Its short, fixed title.
    pub title: &'static str,
}

/// One occurrence of a [`ProblemType`], ready to be turned into an HTTP
/// response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ProblemType,
    detail: String,
    retry_after_secs: Option<u64>,
    allow: Option<&'static str>,
}

/// The body, members in the order they are written.
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
            kind,
            detail: detail.into(),
            retry_after_secs: None,
            allow: None,
        }
    }

    /// Adds a `Retry-After` header (seconds), for a problem that goes away
    /// by waiting (`409`, `503`).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds an `Allow` header (the methods a route accepts), for `405`.
    pub fn with_allow(mut self, methods: &'static str) -> Self {
        self.allow = Some(methods);
        self
    }

    /// The same problem with another detail (its headers kept).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The kind of problem this is an occurrence of.
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// The HTTP status of this problem.
    pub fn status(&self) -> StatusCode {
        self.kind.status
    }

    /// The slug: the last part of the `type` URI, naming the problem.
    pub fn slug(&self) -> &'static str {
        self.kind.slug
    }

    /// What happened in this occurrence, for a person to read.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Renders the problem as an `application/problem+json` response whose
    /// `type` is `type_base` followed by the slug.
    pub fn into_response(self, type_base: &str) -> Response<Body> {
        let body = ProblemBody {
            kind: format!("{type_base}{}", self.kind.slug),
            title: self.kind.title,
            status: self.kind.status.as_u16(),
            detail: &self.detail,
        };
        // Serialising strings and a number cannot fail; the fallback keeps
        // this path panic-free all the same.
        let json = serde_json::to_string(&body).unwrap_or_default();
        let mut response = Response::new(Body::Text(json));
        *response.status_mut() = self.kind.status;
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

    const BUSY: ProblemType = ProblemType {
        status: StatusCode::CONFLICT,
        slug: "in-progress",
        title: "Busy",
    };

    fn text(response: &Response<Body>) -> &str {
        std::str::from_utf8(response.body()).unwrap()
    }

    #[test]
    fn a_problem_renders_its_four_members_in_order_and_only_them() {
        let response = Problem::new(BUSY, "try \"later\"").into_response("urn:test:");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(
            text(&response),
            r#"{"type":"urn:test:in-progress","title":"Busy","status":409,"detail":"try \"later\""}"#
        );
        let names: Vec<_> = response.headers().keys().map(|h| h.as_str()).collect();
        assert_eq!(names, ["content-type"]);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn retry_after_and_allow_are_set_only_when_asked_for() {
        let response = Problem::new(BUSY, "d")
            .with_retry_after(7)
            .with_allow("GET")
            .into_response("urn:test:");
        let headers: Vec<_> = response
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type", PROBLEM_JSON),
                ("retry-after", "7"),
                ("allow", "GET")
            ]
        );
    }

    #[test]
    fn another_detail_keeps_the_kind_and_the_headers() {
        let problem = Problem::new(BUSY, "first").with_retry_after(2);
        let changed = problem.clone().with_detail("second");
        assert_eq!(changed.kind(), BUSY);
        assert_eq!((changed.status(), changed.slug()), (BUSY.status, BUSY.slug));
        assert_eq!(changed.detail(), "second");
        let response = changed.into_response("");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert!(text(&response).ends_with(r#""detail":"second"}"#));
    }
}
