//! Problem types: the ones the function answers with itself (its router and
//! its entry point, [`PROBLEMS`]), and the documents behind every problem's
//! `type` URI.
//!
//! `docs/problems.md` has one `## <slug>` section per problem type, of this
//! function and of both crates (`lambda_idempotency::PROBLEMS`,
//! `orders::PROBLEMS`). It is compiled into the binary, and
//! `GET /problems/{slug}` answers that section as Markdown, so a deployment
//! whose `PROBLEM_TYPE_BASE` ends in `/problems/` has `type` URIs that
//! resolve. `tests/openapi.rs` checks the document and the lists against
//! each other.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use problem_details::{Problem, ProblemType};

/// The problem documents, one `## <slug>` section each.
pub const DOCUMENT: &str = include_str!("../docs/problems.md");

/// Media type of a problem document.
pub const MARKDOWN: &str = "text/markdown; charset=utf-8";

/// `400`: the event could not be turned into a request (bad headers, an
/// invalid base64 body, a path that is not a URL path).
pub(crate) const INVALID_REQUEST: ProblemType = ProblemType {
    status: StatusCode::BAD_REQUEST,
    slug: "invalid-request",
    title: "Invalid request",
};
/// `404`: no route has this path.
pub(crate) const ROUTE_NOT_FOUND: ProblemType = ProblemType {
    status: StatusCode::NOT_FOUND,
    slug: "route-not-found",
    title: "Not found",
};
/// `405` with `Allow`: a route, but not for this method.
pub(crate) const METHOD_NOT_ALLOWED: ProblemType = ProblemType {
    status: StatusCode::METHOD_NOT_ALLOWED,
    slug: "method-not-allowed",
    title: "Method not allowed",
};
/// `500`: the idempotency layer failed instead of answering.
pub(crate) const INTERNAL_ERROR: ProblemType = ProblemType {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    slug: "internal-error",
    title: "Internal error",
};
/// `404`: `GET /problems/{slug}` with a slug no problem type has.
pub(crate) const PROBLEM_NOT_FOUND: ProblemType = ProblemType {
    status: StatusCode::NOT_FOUND,
    slug: "problem-not-found",
    title: "Problem type not found",
};

/// Every problem the function's router and entry point answer with; the
/// handlers and the idempotency layer answer with `orders::PROBLEMS` and
/// `lambda_idempotency::PROBLEMS`.
pub const PROBLEMS: &[ProblemType] = &[
    INVALID_REQUEST,
    ROUTE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    INTERNAL_ERROR,
    PROBLEM_NOT_FOUND,
];

/// The section of [`DOCUMENT`] about `slug`: from its `## <slug>` heading
/// up to the next `## ` heading. `None` for any other text, including
/// the document's title.
pub fn section(slug: &str) -> Option<&'static str> {
    let mut start = None;
    let mut offset = 0;
    for line in DOCUMENT.split_inclusive('\n') {
        if let Some(heading) = line.strip_prefix("## ") {
            if let Some(start) = start {
                return Some(&DOCUMENT[start..offset]);
            }
            if heading.trim_end() == slug {
                start = Some(offset);
            }
        }
        offset += line.len();
    }
    start.map(|start| &DOCUMENT[start..])
}

/// Every slug with a section, in the document's order.
pub fn documented_slugs() -> impl Iterator<Item = &'static str> {
    DOCUMENT
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(str::trim_end)
}

/// Answers `GET /problems/{slug}`: `200` with the section as Markdown, or
/// a `404` problem.
pub fn answer(slug: &str, type_base: &str) -> Response<Body> {
    let Some(text) = section(slug) else {
        return Problem::new(
            PROBLEM_NOT_FOUND,
            "No problem type has this name. Every error's type URI ends with one that has.",
        )
        .into_response(type_base);
    };
    let mut response = Response::new(Body::Text(text.trim_end().to_owned() + "\n"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MARKDOWN));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: &Response<Body>) -> &str {
        std::str::from_utf8(response.body()).unwrap()
    }

    #[test]
    fn a_known_slug_answers_its_section_alone_as_markdown() {
        let response = answer("request-in-progress", "urn:t:");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], MARKDOWN);
        let body = text(&response);
        assert!(body.starts_with("## request-in-progress\n"), "{body}");
        assert!(body.contains("Status: `409 Conflict`"), "{body}");
        assert_eq!(body.matches("\n## ").count(), 0, "one section: {body}");
    }

    #[test]
    fn the_last_section_runs_to_the_end_of_the_document() {
        let last = documented_slugs().last().unwrap();
        let body = section(last).unwrap();
        assert!(DOCUMENT.ends_with(body));
    }

    #[test]
    fn unknown_slugs_and_partial_names_are_a_404_problem() {
        for slug in [
            "nope",
            "",
            "request",
            "Problem types",
            "request-in-progress/x",
        ] {
            let response = answer(slug, "https://api.example/problems/");
            assert_eq!(response.status(), 404, "{slug:?}");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                problem_details::PROBLEM_JSON
            );
            let json: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(
                json["type"],
                "https://api.example/problems/problem-not-found"
            );
        }
    }

    #[test]
    fn the_function_lists_each_of_its_problems_once() {
        let slugs: std::collections::HashSet<_> = PROBLEMS.iter().map(|p| p.slug).collect();
        assert_eq!(slugs.len(), PROBLEMS.len());
    }
}
