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

/// Every source but `anonymous`, then `anonymous`: a request no source
/// identifies gets the shared scope, one a source refuses gets none.
const ALL_THEN_ANONYMOUS: &str = "jwt,authorizer,iam,api-key,anonymous";

/// Authorizers (v2 `requestContext` fragments) that carry no identity at
/// some level: missing, null or empty, down to the identity's own value.
const V2_NO_IDENTITY: &[&str] = &[
    "",
    r#","authorizer":null"#,
    r#","authorizer":{}"#,
    r#","authorizer":{"jwt":null}"#,
    r#","authorizer":{"jwt":{}}"#,
    r#","authorizer":{"jwt":{"claims":null,"scopes":null}}"#,
    r#","authorizer":{"jwt":{"claims":{},"scopes":[]}}"#,
    r#","authorizer":{"lambda":null}"#,
    r#","authorizer":{"lambda":{}}"#,
    r#","authorizer":{"lambda":{"userId":null}}"#,
    r#","authorizer":{"iam":null}"#,
    r#","authorizer":{"iam":{}}"#,
    r#","authorizer":{"iam":{"userArn":null,"cognitoIdentity":null}}"#,
    r#","authorizer":{"jwt":{"claims":null},"lambda":null,"iam":null}"#,
];

/// The same for REST and HTTP API payload 1.0 events: (authorizer,
/// identity) fragments. The second is AWS's documented 1.0 event for a
/// route without an authorizer.
const V1_NO_IDENTITY: &[(&str, &str)] = &[
    ("", ""),
    (r#","authorizer":null"#, ""),
    (r#","authorizer":{}"#, ""),
    (
        r#","authorizer":{"claims":null,"scopes":null}"#,
        r#""userArn":null"#,
    ),
    (r#","authorizer":{"claims":{},"scopes":null}"#, ""),
    (r#","authorizer":{"claims":{"sub":null}}"#, ""),
    (r#","authorizer":{"principalId":null}"#, ""),
    (r#","authorizer":{"principalId":null,"claims":null}"#, ""),
    (
        "",
        r#""userArn":null,"apiKeyId":null,"cognitoIdentityId":null"#,
    ),
];

/// Named requests: v2 ones with each `requestContext` fragment, then REST
/// (v1) ones with each (authorizer, identity) pair of fragments.
fn requests(v2s: &[&str], v1s: &[(&str, &str)]) -> Vec<(String, Request)> {
    let v2s = v2s.iter().map(|auth| (auth.to_string(), v2(auth)));
    let v1s = v1s
        .iter()
        .map(|(auth, id)| (format!("v1 {auth} {id}"), v1(auth, id)));
    v2s.chain(v1s).collect()
}

#[test]
fn a_missing_null_or_empty_identity_falls_through_to_the_next_source_in_every_shape() {
    for (name, req) in requests(V2_NO_IDENTITY, V1_NO_IDENTITY) {
        assert_eq!(scope(&req), None, "refused without anonymous: {name}");
        assert_eq!(
            with(ALL_THEN_ANONYMOUS, &req).as_deref(),
            Some("anonymous"),
            "{name}"
        );
        for list in ["authorizer:userId,anonymous", "iam-role,anonymous"] {
            assert_eq!(
                with(list, &req).as_deref(),
                Some("anonymous"),
                "{list}: {name}"
            );
        }
    }
}

#[test]
fn a_present_identity_without_a_usable_value_is_refused_in_every_shape() {
    let v2_refused = [
        r#","authorizer":{"jwt":{"claims":{"iss":"i"},"scopes":null}}"#,
        r#","authorizer":{"jwt":{"claims":{"sub":"","iss":"i"}}}"#,
        r#","authorizer":{"iam":{"userArn":""}}"#,
    ];
    let v1_refused = [
        (r#","authorizer":{"claims":{"iss":"i"},"scopes":null}"#, ""),
        (r#","authorizer":{"claims":{"sub":null,"iss":"i"}}"#, ""),
        (r#","authorizer":{"claims":{"sub":""},"scopes":null}"#, ""),
        (r#","authorizer":{"principalId":""}"#, ""),
        (
            r#","authorizer":{"claims":null,"scopes":null}"#,
            r#""userArn":"""#,
        ),
        ("", r#""apiKeyId":"""#),
    ];
    for (name, req) in requests(&v2_refused, &v1_refused) {
        assert_eq!(with(ALL_THEN_ANONYMOUS, &req), None, "{name}");
    }
}

#[test]
fn http_api_payload_1_0_callers_are_identified_like_rest_ones() {
    // The documented event's empty authorizer beside an IAM caller.
    let iam = v1(
        r#","authorizer":{"claims":null,"scopes":null}"#,
        r#""userArn":"arn:aws:iam::1:user/x""#,
    );
    assert_eq!(scope(&iam).as_deref(), Some("iam:21:arn:aws:iam::1:user/x"));
    // A JWT authorizer in payload 1.0: the claims beside null scopes.
    let jwt = v1(
        r#","authorizer":{"claims":{"sub":"u1","iss":"https://i"},"scopes":null}"#,
        "",
    );
    assert_eq!(scope(&jwt).as_deref(), Some("jwt:9:https://iu1"));
    // A REST Lambda authorizer's principal beside a null `claims`.
    let principal = v1(r#","authorizer":{"principalId":"p","claims":null}"#, "");
    assert_eq!(scope(&principal).as_deref(), Some("lambda:p"));
}

/// `req` as Lambda hands it over in `tenant` (none for `None`).
fn in_tenant(req: Request, tenant: Option<&str>) -> Request {
    let mut context = lambda_http::Context::default();
    context.tenant_id = tenant.map(str::to_owned);
    req.with_lambda_context(context)
}

#[test]
fn a_lambda_tenant_is_part_of_every_scope_a_custom_one_included() {
    let custom = |_: &Request| Some("everyone".to_owned());
    let anonymous: ApiGatewayScope = "anonymous".parse().unwrap();
    let default = ApiGatewayScope::default();
    let scopes: [(&str, &dyn CallerScope); 3] = [
        ("custom", &custom),
        ("anonymous", &anonymous),
        ("default", &default),
    ];
    let alice = r#","authorizer":{"jwt":{"claims":{"sub":"alice","iss":"i"}}}"#;
    for (name, scope) in scopes {
        let in_ = |tenant| caller_scope(scope, &in_tenant(v2(alice), tenant));
        let (a, b, none) = (in_(Some("a")), in_(Some("b")), in_(None));
        assert!(a.is_some() && b.is_some() && none.is_some(), "{name}");
        assert_ne!(a, b, "{name}: two tenants");
        assert_ne!(a, none, "{name}: a tenant and none");
        assert_eq!(a, in_(Some("a")), "{name}: one tenant");
        assert_eq!(
            none,
            scope.scope(&v2(alice)),
            "{name}: no tenant, no change"
        );
    }
    // A refused caller stays refused in a tenant.
    assert_eq!(caller_scope(&default, &in_tenant(v2(""), Some("a"))), None);
    // No tenant and caller pair imitates another.
    let c = |_: &Request| Some("c".to_owned());
    let bc = |_: &Request| Some("bc".to_owned());
    assert_ne!(
        caller_scope(&c, &in_tenant(v2(""), Some("ab"))),
        caller_scope(&bc, &in_tenant(v2(""), Some("a")))
    );
}
