//! What an API Gateway (or Function URL) event tells us beyond plain HTTP.
//!
//! Two things need the event's context rather than the `http::Request`
//! alone, and both the router and the idempotency layer need them the same
//! way, so they live here:
//! - [`route_path`]: the path as the application sees it, without the stage.
//!   REST (v1) events carry the stage in `uri().path()` but not in
//!   `raw_http_path()`; HTTP API (v2) events on a named stage carry it in
//!   `rawPath` too, so it is stripped here.
//! - [`caller_scope`]: who is calling, so one caller's idempotency key can
//!   never replay another caller's response.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

/// Scope used when the request carries no caller identity.
pub const ANONYMOUS_SCOPE: &str = "anonymous";

/// The request path without any API Gateway stage prefix.
pub fn route_path(req: &Request) -> &str {
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

/// The caller's identity, tagged with where it came from, or
/// [`ANONYMOUS_SCOPE`].
///
/// In order: the JWT `sub` claim (HTTP API JWT authorizer, or a REST
/// Cognito authorizer's `claims.sub`), a Lambda authorizer's `principalId`,
/// the IAM caller ARN, then the REST API key id. The tag (`jwt:`, `lambda:`,
/// `iam:`, `apikey:`) keeps an API key id from ever colliding with a user id.
pub fn caller_scope(req: &Request) -> String {
    let Some(ctx) = req.request_context_ref() else {
        return ANONYMOUS_SCOPE.to_owned();
    };
    let non_empty = |s: Option<&str>| s.filter(|v| !v.is_empty()).map(str::to_owned);

    if let Some(auth) = ctx.authorizer() {
        let jwt_sub = auth
            .jwt
            .as_ref()
            .and_then(|jwt| non_empty(jwt.claims.get("sub").map(String::as_str)))
            .or_else(|| {
                let claims = auth.fields.get("claims")?;
                non_empty(claims.get("sub")?.as_str())
            });
        if let Some(sub) = jwt_sub {
            return format!("jwt:{sub}");
        }
        let principal = auth.fields.get("principalId").and_then(|p| p.as_str());
        if let Some(principal) = non_empty(principal) {
            return format!("lambda:{principal}");
        }
        let iam_arn = auth.iam.as_ref().and_then(|iam| iam.user_arn.as_deref());
        if let Some(arn) = non_empty(iam_arn) {
            return format!("iam:{arn}");
        }
    }
    if let RequestContext::ApiGatewayV1(v1) = ctx {
        if let Some(arn) = non_empty(v1.identity.user_arn.as_deref()) {
            return format!("iam:{arn}");
        }
        if let Some(key_id) = non_empty(v1.identity.api_key_id.as_deref()) {
            return format!("apikey:{key_id}");
        }
    }
    ANONYMOUS_SCOPE.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(stage: &str, raw_path: &str, authorizer: &str) -> Request {
        let event = format!(
            r#"{{"version":"2.0","routeKey":"$default","rawPath":"{raw_path}","rawQueryString":"",
            "headers":{{}},"requestContext":{{"accountId":"1","apiId":"a","domainName":"d",
            "domainPrefix":"d","http":{{"method":"POST","path":"{raw_path}","protocol":"HTTP/1.1",
            "sourceIp":"1.2.3.4","userAgent":"t"}},"requestId":"r","routeKey":"$default",
            "stage":"{stage}","time":"t","timeEpoch":0{authorizer}}},"isBase64Encoded":false}}"#
        );
        lambda_http::request::from_str(&event).expect("test event parses")
    }

    #[test]
    fn default_stage_path_is_kept() {
        assert_eq!(route_path(&v2("$default", "/orders", "")), "/orders");
    }

    #[test]
    fn named_v2_stage_is_stripped_from_the_path() {
        assert_eq!(route_path(&v2("prod", "/prod/orders", "")), "/orders");
        assert_eq!(route_path(&v2("prod", "/prod", "")), "/");
        assert_eq!(
            route_path(&v2("prod", "/production/x", "")),
            "/production/x"
        );
    }

    #[test]
    fn jwt_sub_is_the_scope() {
        let auth = r#","authorizer":{"jwt":{"claims":{"sub":"alice"},"scopes":[]}}"#;
        assert_eq!(caller_scope(&v2("$default", "/o", auth)), "jwt:alice");
    }

    #[test]
    fn lambda_authorizer_principal_is_the_scope() {
        let auth = r#","authorizer":{"lambda":{"principalId":"user-9"}}"#;
        assert_eq!(caller_scope(&v2("$default", "/o", auth)), "lambda:user-9");
    }

    #[test]
    fn iam_caller_arn_is_the_scope() {
        let auth = r#","authorizer":{"iam":{"userArn":"arn:aws:iam::1:user/x"}}"#;
        assert_eq!(
            caller_scope(&v2("$default", "/o", auth)),
            "iam:arn:aws:iam::1:user/x"
        );
    }

    #[test]
    fn no_identity_is_anonymous() {
        assert_eq!(caller_scope(&v2("$default", "/o", "")), ANONYMOUS_SCOPE);
    }
}
