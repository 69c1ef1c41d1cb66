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

fn iam_caller(arn: &str, cognito: Option<&str>) -> Request {
    let identity = cognito.map_or(String::new(), |id| {
        format!(r#","cognitoIdentity":{{"amr":[],"identityId":"{id}","identityPoolId":"p"}}"#)
    });
    v2(&format!(
        r#","authorizer":{{"iam":{{"userArn":"{arn}"{identity}}}}}"#
    ))
}

#[test]
fn two_people_behind_one_role_are_two_callers() {
    // IAM Identity Center: one permission set, the user's name as session.
    let alice = iam_caller(
        "arn:aws:sts::1:assumed-role/AWSReservedSSO_Buyers/alice@example.com",
        None,
    );
    let bob = iam_caller(
        "arn:aws:sts::1:assumed-role/AWSReservedSSO_Buyers/bob@example.com",
        None,
    );
    assert_ne!(scope(&alice), scope(&bob));
    // Cognito identity pool: one role, one session name, two identities.
    let role = "arn:aws:sts::1:assumed-role/Cognito_AuthRole/CognitoIdentityCredentials";
    assert_ne!(
        scope(&iam_caller(role, Some("eu-west-1:aaa"))),
        scope(&iam_caller(role, Some("eu-west-1:bbb")))
    );
    // The same person again (same session name) is the same caller.
    assert_eq!(
        scope(&alice),
        scope(&iam_caller(
            "arn:aws:sts::1:assumed-role/AWSReservedSSO_Buyers/alice@example.com",
            None
        ))
    );
}

#[test]
fn iam_role_is_an_opt_in_that_ignores_the_session_name() {
    let one = iam_caller("arn:aws:sts::1:assumed-role/Orders/session-1", None);
    let two = iam_caller("arn:aws:sts::1:assumed-role/Orders/session-2", None);
    let other = iam_caller("arn:aws:sts::1:assumed-role/Billing/session-1", None);
    assert_ne!(scope(&one), scope(&two), "iam keeps the session name");
    assert_eq!(
        with("iam-role", &one).as_deref(),
        Some("iam-role:arn:aws:sts::1:assumed-role/Orders")
    );
    assert_eq!(with("iam-role", &one), with("iam-role", &two));
    assert_ne!(with("iam-role", &one), with("iam-role", &other));
    let user = v1("", r#""userArn":"arn:aws:iam::1:user/x""#);
    assert_eq!(
        scope(&user).as_deref(),
        Some("iam:21:arn:aws:iam::1:user/x")
    );
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
    let parsed: ApiGatewayScope = "jwt, authorizer:userId ,iam,iam-role,api-key,anonymous"
        .parse()
        .unwrap();
    assert_eq!(
        parsed.to_string(),
        "jwt,authorizer:userId,iam,iam-role,api-key,anonymous"
    );
    assert!(parsed.allows_anonymous());
    for bad in ["", "cookie", "authorizer:", "jwt,,x"] {
        assert!(bad.parse::<ApiGatewayScope>().is_err(), "{bad:?}");
    }
}
