//! The request path as API Gateway routed it, without stage or base-path
//! prefixes: what the layer hashes into the record key and the fingerprint,
//! and what a router should match on.
//!
//! The raw path is not enough. A REST (v1) event carries the stage in
//! `uri().path()`. An HTTP API (v2) event on a named stage carries the
//! stage at the start of `rawPath`, through the `execute-api` endpoint and
//! through a custom domain alike (where the API mapping's own base path is
//! dropped instead). A stage named like the first route segment (stage
//! `orders`, path `/orders`) makes stripping by name ambiguous.
//!
//! So, in order:
//! 1. when API Gateway matched a concrete route (v2 `routeKey` such as
//!    `POST /orders/{id}`, v1 `resourcePath` such as `/orders/{id}`), the
//!    route's template with its path parameters filled in: exactly what
//!    API Gateway routed, whatever the stage, domain or mapping;
//! 2. otherwise (a `$default` or `/{proxy+}`-less catch-all route, function
//!    URLs, `cargo lambda watch`): v1's path without the stage
//!    (`raw_http_path`), or v2's `rawPath` without a leading `/<stage>` on
//!    a named stage.

use std::borrow::Cow;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// The request path without any API Gateway stage or base-path prefix.
pub fn route_path(req: &Request) -> Cow<'_, str> {
    match route_template(req).and_then(|t| fill(t, req)) {
        Some(path) => Cow::Owned(path),
        None => Cow::Borrowed(raw_path(req)),
    }
}

/// What names the operation in a record key: the route template and each
/// path parameter, length-prefixed, when API Gateway matched a concrete
/// route, else the path. Unlike [`route_path`], it keeps apart routes whose
/// filled-in paths coincide (`/files/{name}` with `a/b` and
/// `/files/{dir}/{name}` with `a` and `b`).
pub(crate) fn route_identity(req: &Request) -> String {
    let Some(template) = route_template(req) else {
        return route_path(req).into_owned();
    };
    let mut out = String::with_capacity(template.len() + 32);
    out.push_str(template);
    let params = req.path_parameters_ref();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let name = rest[open + 1..close].trim_end_matches('+');
        let value = params.and_then(|p| p.first(name)).unwrap_or("");
        out.push_str(&format!("\0{}:{value}", value.len()));
        rest = &rest[close + 1..];
    }
    out
}

/// The route API Gateway matched (`/orders/{id}`), if it is a path.
fn route_template(req: &Request) -> Option<&str> {
    let template = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .route_key
            .as_deref()
            .and_then(|key| key.split_once(' ').map(|(_, path)| path)),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.resource_path.as_deref(),
        _ => None,
    };
    template.filter(|t| t.starts_with('/'))
}

/// A route template (`/orders/{id}`, `/{proxy+}`) with the request's path
/// parameters filled in; `None` if one is missing.
fn fill(template: &str, req: &Request) -> Option<String> {
    if !template.contains('{') {
        return Some(template.to_owned());
    }
    let params = req.path_parameters_ref();
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        out.push_str(&rest[..open]);
        let name = rest[open + 1..close].trim_end_matches('+');
        out.push_str(params?.first(name)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn raw_path(req: &Request) -> &str {
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => match ctx.stage.as_deref() {
            Some(stage) if !stage.is_empty() && stage != "$default" => strip_stage(path, stage),
            _ => path,
        },
        _ => path,
    }
}

fn strip_stage<'a>(path: &'a str, stage: &str) -> &'a str {
    match path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(route_key: &str, stage: &str, domain: &str, raw_path: &str, params: &str) -> Request {
        let event = format!(
            r#"{{"version":"2.0","routeKey":"{route_key}","rawPath":"{raw_path}","rawQueryString":"",
            "headers":{{}},"pathParameters":{{{params}}},"requestContext":{{"accountId":"1","apiId":"a",
            "domainName":"{domain}","domainPrefix":"d","http":{{"method":"POST","path":"{raw_path}",
            "protocol":"HTTP/1.1","sourceIp":"1.2.3.4","userAgent":"t"}},"requestId":"r",
            "routeKey":"{route_key}","stage":"{stage}","time":"t","timeEpoch":0}},"isBase64Encoded":false}}"#
        );
        lambda_http::request::from_str(&event).expect("test event parses")
    }

    const EXECUTE_API: &str = "a1.execute-api.eu-west-1.amazonaws.com";

    #[test]
    fn default_stage_path_is_kept() {
        let req = v2("$default", "$default", EXECUTE_API, "/orders", "");
        assert_eq!(route_path(&req), "/orders");
    }

    #[test]
    fn a_named_stage_is_stripped_from_a_catch_all_route() {
        let req = v2("$default", "prod", EXECUTE_API, "/prod/orders", "");
        assert_eq!(route_path(&req), "/orders");
        let root = v2("$default", "prod", EXECUTE_API, "/prod", "");
        assert_eq!(route_path(&root), "/");
        let other = v2("$default", "prod", EXECUTE_API, "/production/x", "");
        assert_eq!(route_path(&other), "/production/x");
    }

    #[test]
    fn a_stage_named_like_the_route_is_resolved_by_the_route_key() {
        // Stage `orders`: API Gateway puts the stage in rawPath.
        let routed = v2(
            "POST /orders",
            "orders",
            "api.example.com",
            "/orders/orders",
            "",
        );
        assert_eq!(route_path(&routed), "/orders");
        // Without a concrete route, `/orders` on stage `orders` is the root.
        let catch_all = v2("$default", "orders", "api.example.com", "/orders", "");
        assert_eq!(route_path(&catch_all), "/");
    }

    #[test]
    fn a_concrete_route_key_gives_the_routed_path_whatever_the_stage() {
        let req = v2("POST /orders", "orders", EXECUTE_API, "/orders/orders", "");
        assert_eq!(route_path(&req), "/orders");
        let mapped = v2(
            "POST /orders",
            "orders",
            "api.example.com",
            "/v1/orders",
            "",
        );
        assert_eq!(route_path(&mapped), "/orders");
    }

    #[test]
    fn route_parameters_are_filled_in() {
        let req = v2(
            "GET /orders/{id}",
            "prod",
            EXECUTE_API,
            "/prod/orders/42",
            r#""id":"42""#,
        );
        assert_eq!(route_path(&req), "/orders/42");
        let greedy = v2(
            "ANY /{proxy+}",
            "prod",
            EXECUTE_API,
            "/prod/a/b",
            r#""proxy":"a/b""#,
        );
        assert_eq!(route_path(&greedy), "/a/b");
    }

    #[test]
    fn routes_whose_filled_paths_coincide_keep_distinct_identities() {
        let one = v2(
            "POST /files/{name}",
            "$default",
            EXECUTE_API,
            "/files/a%2Fb",
            r#""name":"a/b""#,
        );
        let two = v2(
            "POST /files/{dir}/{name}",
            "$default",
            EXECUTE_API,
            "/files/a/b",
            r#""dir":"a","name":"b""#,
        );
        assert_eq!(route_path(&one), route_path(&two));
        assert_ne!(route_identity(&one), route_identity(&two));
        let plain = v2("$default", "$default", EXECUTE_API, "/orders", "");
        assert_eq!(route_identity(&plain), "/orders");
    }

    #[test]
    fn a_template_with_a_missing_parameter_falls_back_to_the_raw_path() {
        let req = v2(
            "GET /orders/{id}",
            "$default",
            EXECUTE_API,
            "/orders/42",
            "",
        );
        assert_eq!(route_path(&req), "/orders/42");
    }
}
