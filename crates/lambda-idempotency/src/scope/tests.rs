use super::*;

fn v2(authorizer: &str) -> Request {
    let event = format!(
        r#"{{"version":"2.0","routeKey":"$default","rawPath":"/o","rawQueryString":"",
        "headers":{{}},"requestContext":{{"accountId":"1","apiId":"a","domainName":"d",
        "domainPrefix":"d","http":{{"method":"POST","path":"/o","protocol":"HTTP/1.1",
        "sourceIp":"1.2.3.4","userAgent":"t"}},"requestId":"r","routeKey":"$default",
        "stage":"$default","time":"t","timeEpoch":0{authorizer}}},"isBase64Encoded":false}}"#
    );
    lambda_http::request::from_str(&event).expect("test event parses")
}

fn v1(authorizer: &str, identity: &str) -> Request {
    let event = format!(
        r#"{{"resource":"/o","path":"/o","httpMethod":"POST","headers":{{}},
        "multiValueHeaders":{{}},"queryStringParameters":null,"multiValueQueryStringParameters":null,
        "pathParameters":null,"stageVariables":null,"requestContext":{{"accountId":"1",
        "resourceId":"r","stage":"prod","requestId":"q","identity":{{{identity}}},
        "resourcePath":"/o","httpMethod":"POST","apiId":"a","path":"/prod/o"{authorizer}}},
        "body":null,"isBase64Encoded":false}}"#
    );
    lambda_http::request::from_str(&event).expect("test event parses")
}

fn scope(req: &Request) -> Option<String> {
    ApiGatewayScope::default().scope(req)
}

fn with(list: &str, req: &Request) -> Option<String> {
    list.parse::<ApiGatewayScope>().unwrap().scope(req)
}

#[test]
fn http_api_lambda_authorizer_contexts_of_two_users_are_two_scopes() {
    let alice = v2(r#","authorizer":{"lambda":{"userId":"alice"}}"#);
    let bob = v2(r#","authorizer":{"lambda":{"userId":"bob"}}"#);
    let (a, b) = (scope(&alice), scope(&bob));
    assert!(a.is_some() && b.is_some());
    assert_ne!(a, b);
}

#[test]
fn a_named_authorizer_field_pins_the_scope_to_that_field() {
    let first = v2(r#","authorizer":{"lambda":{"userId":"alice","issuedAt":1}}"#);
    let later = v2(r#","authorizer":{"lambda":{"userId":"alice","issuedAt":2}}"#);
    assert_ne!(scope(&first), scope(&later), "whole context by default");
    assert_eq!(
        with("authorizer:userId", &first),
        with("authorizer:userId", &later)
    );
    let empty = v2(r#","authorizer":{"lambda":{"userId":""}}"#);
    assert_eq!(with("authorizer:userId,anonymous", &empty), None);
}

#[test]
fn rest_lambda_authorizer_principal_is_the_scope() {
    let req = v1(
        r#","authorizer":{"principalId":"user-9","integrationLatency":12}"#,
        "",
    );
    assert_eq!(scope(&req).as_deref(), Some("lambda:user-9"));
}

#[test]
fn jwt_scope_includes_the_issuer() {
    let a = v2(
        r#","authorizer":{"jwt":{"claims":{"sub":"u1","iss":"https://a.example"},"scopes":[]}}"#,
    );
    let b = v2(
        r#","authorizer":{"jwt":{"claims":{"sub":"u1","iss":"https://b.example"},"scopes":[]}}"#,
    );
    assert!(scope(&a).is_some());
    assert_ne!(scope(&a), scope(&b));
}

#[test]
fn a_jwt_without_a_subject_is_refused_even_when_anonymous_is_allowed() {
    let req = v2(r#","authorizer":{"jwt":{"claims":{"sub":"","iss":"i"},"scopes":[]}}"#);
    assert_eq!(scope(&req), None);
    assert_eq!(with("jwt,anonymous", &req), None);
    let missing = v2(r#","authorizer":{"jwt":{"claims":{"iss":"i"},"scopes":[]}}"#);
    assert_eq!(with("jwt,anonymous", &missing), None);
}

#[test]
fn rest_cognito_claims_are_read_as_a_jwt() {
    let req = v1(
        r#","authorizer":{"claims":{"sub":"u1","iss":"https://cognito"}}"#,
        "",
    );
    assert_eq!(scope(&req).as_deref(), Some("jwt:15:https://cognitou1"));
}

#[test]
fn an_assumed_role_keeps_its_scope_across_session_names() {
    let one =
        v2(r#","authorizer":{"iam":{"userArn":"arn:aws:sts::1:assumed-role/Orders/session-1"}}"#);
    let two =
        v2(r#","authorizer":{"iam":{"userArn":"arn:aws:sts::1:assumed-role/Orders/session-2"}}"#);
    let other =
        v2(r#","authorizer":{"iam":{"userArn":"arn:aws:sts::1:assumed-role/Billing/session-1"}}"#);
    assert_eq!(
        scope(&one).as_deref(),
        Some("iam:arn:aws:sts::1:assumed-role/Orders")
    );
    assert_eq!(scope(&one), scope(&two));
    assert_ne!(scope(&one), scope(&other));
    let user = v1("", r#""userArn":"arn:aws:iam::1:user/x""#);
    assert_eq!(scope(&user).as_deref(), Some("iam:arn:aws:iam::1:user/x"));
}

#[test]
fn a_rest_api_key_is_a_scope() {
    let req = v1("", r#""apiKeyId":"k-1""#);
    assert_eq!(scope(&req).as_deref(), Some("apikey:k-1"));
}

#[test]
fn no_identity_is_refused_unless_anonymous_is_listed() {
    let req = v2("");
    assert_eq!(scope(&req), None);
    assert_eq!(with("jwt,anonymous", &req).as_deref(), Some("anonymous"));
    assert!(!ApiGatewayScope::default().allows_anonymous());
}

#[test]
fn scope_lists_parse_print_and_refuse_unknown_sources() {
    let parsed: ApiGatewayScope = "jwt, authorizer:userId ,iam,api-key,anonymous"
        .parse()
        .unwrap();
    assert_eq!(
        parsed.to_string(),
        "jwt,authorizer:userId,iam,api-key,anonymous"
    );
    assert!(parsed.allows_anonymous());
    for bad in ["", "cookie", "authorizer:", "jwt,,x"] {
        assert!(bad.parse::<ApiGatewayScope>().is_err(), "{bad:?}");
    }
}
