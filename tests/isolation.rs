//! No one replays what is not theirs, and every event shape means the same
//! thing: caller identities of every kind API Gateway delivers, the
//! anonymous default, repeated and padded `Idempotency-Key` headers on REST
//! (v1), HTTP API (v2) and function URL events, and stages named like a
//! route. Raw events go through the real entry point, in process, against a
//! real `redis-server`.

use idempotent_orders::{entry, App, Config};
use serde_json::{json, Value};
use testkit::fixtures::{context_with_deadline_in, event_json};
use testkit::harness::{function_env, lookup};
use testkit::RedisServer;

fn app_with(redis: &RedisServer, extra: &[(&str, &str)]) -> App {
    let quiet = [&[("METRICS_NAMESPACE", "")], extra].concat();
    let config = Config::from_lookup(lookup(function_env(&redis.url(), &quiet))).expect("config");
    App::from_config(&config).expect("app")
}

/// The v2 order fixture with `key` and `authorizer` (if any).
fn v2(key: &str, authorizer: Option<Value>) -> Value {
    let mut event = event_json("post_order.json");
    event["headers"]["idempotency-key"] = key.into();
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    event
}

/// The same request as a function URL sends it (a v2 payload).
fn function_url(key: &str) -> Value {
    let mut event = v2(key, None);
    event["requestContext"]["domainName"] = "a1b2c3.lambda-url.eu-west-1.on.aws".into();
    event["requestContext"]["domainPrefix"] = "a1b2c3".into();
    event
}

/// The REST (v1) order fixture with these `Idempotency-Key` values: the
/// last in `headers` (as API Gateway sends it), all in `multiValueHeaders`.
fn v1(header_name: &str, keys: &[&str]) -> Value {
    let mut event = event_json("rest_v1_post_order_prod_stage.json");
    for field in ["headers", "multiValueHeaders"] {
        event[field]
            .as_object_mut()
            .unwrap()
            .remove("Idempotency-Key");
    }
    event["headers"][header_name] = (*keys.last().unwrap()).into();
    event["multiValueHeaders"][header_name] = json!(keys);
    event
}

async fn invoke(app: &App, event: &Value) -> (u16, Value) {
    let raw = serde_json::value::RawValue::from_string(event.to_string()).expect("raw");
    let ctx = context_with_deadline_in(std::time::Duration::from_secs(3));
    let reply = entry::handle_event(app, lambda_http::LambdaEvent::new(raw, ctx))
        .await
        .expect("the entry point never fails on client input");
    let response = serde_json::to_value(reply).expect("the reply serialises");
    let status = response["statusCode"].as_u64().expect("status") as u16;
    let body =
        serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    // v1 answers carry their headers in `multiValueHeaders`.
    let replayed = response["headers"]["idempotent-replayed"] == "true"
        || response["multiValueHeaders"]["idempotent-replayed"][0] == "true";
    (status, json!({ "body": body, "replayed": replayed }))
}

fn order_id(answer: &Value) -> String {
    answer["body"]["order"]["id"]
        .as_str()
        .expect("an order id")
        .to_owned()
}

fn problem(answer: &Value) -> String {
    answer["body"]["type"]
        .as_str()
        .unwrap_or("")
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn http_api_lambda_authorizer_users_never_share_a_key() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let alice = v2("k-shared", Some(json!({ "lambda": { "userId": "alice" } })));
    let bob = v2("k-shared", Some(json!({ "lambda": { "userId": "bob" } })));

    let (a, first) = invoke(&app, &alice).await;
    let (b, other) = invoke(&app, &bob).await;
    let (_, again) = invoke(&app, &alice).await;

    assert_eq!((a, b), (201, 201));
    assert!(
        !other["replayed"].as_bool().unwrap(),
        "bob got alice's order"
    );
    assert_ne!(order_id(&first), order_id(&other));
    assert!(again["replayed"].as_bool().unwrap());
    assert_eq!(redis.orders(), 2);
}

#[tokio::test]
async fn the_same_subject_from_two_issuers_is_two_callers_and_an_empty_subject_is_refused() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let jwt = |iss: &str, sub: &str| json!({ "jwt": { "claims": { "iss": iss, "sub": sub }, "scopes": [] } });

    let (_, a) = invoke(&app, &v2("k-jwt", Some(jwt("https://a.example", "u1")))).await;
    let (_, b) = invoke(&app, &v2("k-jwt", Some(jwt("https://b.example", "u1")))).await;
    assert_ne!(order_id(&a), order_id(&b));
    assert!(!b["replayed"].as_bool().unwrap());

    let (status, refused) = invoke(&app, &v2("k-jwt", Some(jwt("https://a.example", "")))).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(problem(&refused), "caller-unidentified");
    assert_eq!(redis.orders(), 2);
}

#[tokio::test]
async fn two_people_behind_one_iam_role_never_share_a_key_unless_iam_role_is_chosen() {
    let redis = RedisServer::start();
    let session = |name: &str| json!({ "iam": { "userArn": format!("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Buyers/{name}") } });
    let app = app_with(&redis, &[]);
    let (first, alice) = invoke(&app, &v2("k-iam", Some(session("alice@example.com")))).await;
    let (_, bob) = invoke(&app, &v2("k-iam", Some(session("bob@example.com")))).await;
    let (_, alice_again) = invoke(&app, &v2("k-iam", Some(session("alice@example.com")))).await;
    assert_eq!(first, 201);
    assert!(!bob["replayed"].as_bool().unwrap(), "bob got alice's order");
    assert_ne!(order_id(&alice), order_id(&bob));
    assert!(alice_again["replayed"].as_bool().unwrap());

    // Opting in to the role alone: a new session name is the same caller.
    let by_role = app_with(&redis, &[("IDEMPOTENCY_SCOPE", "iam-role")]);
    let (_, one) = invoke(&by_role, &v2("k-role", Some(session("i-1")))).await;
    let (_, two) = invoke(&by_role, &v2("k-role", Some(session("i-2")))).await;
    assert!(two["replayed"].as_bool().unwrap());
    assert_eq!(order_id(&one), order_id(&two));
    assert_eq!(redis.orders(), 3);
}

#[tokio::test]
async fn rest_api_keys_are_scopes() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let keyed = |api_key: &str| {
        let mut event = v1("Idempotency-Key", &["k-apikey"]);
        event["requestContext"]["identity"]["apiKeyId"] = api_key.into();
        event
    };
    let (_, one) = invoke(&app, &keyed("key-1")).await;
    let (_, two) = invoke(&app, &keyed("key-2")).await;
    assert_ne!(order_id(&one), order_id(&two));
}

#[tokio::test]
async fn without_an_explicit_anonymous_mode_a_caller_without_identity_is_refused() {
    let redis = RedisServer::start();
    let strict = app_with(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    );
    let (status, refused) = invoke(&strict, &v2("k-anon", None)).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(problem(&refused), "caller-unidentified");
    let (status, _) = invoke(&strict, &function_url("k-anon")).await;
    assert_eq!(status, 403);
    assert_eq!((redis.orders(), redis.count("idempotency:*")), (0, 0));

    let jwt = json!({ "jwt": { "claims": { "iss": "i", "sub": "u" }, "scopes": [] } });
    let (status, _) = invoke(&strict, &v2("k-anon", Some(jwt))).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn two_different_keys_in_a_rest_event_are_refused_not_merged() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    for keys in [&["k-a", "k-b"][..], &["k-a", "k-a"][..]] {
        let (status, answer) = invoke(&app, &v1("Idempotency-Key", keys)).await;
        assert_eq!(status, 400, "{keys:?}: {answer}");
        assert_eq!(problem(&answer), "idempotency-key-invalid");
    }
    assert_eq!(redis.orders(), 0);
}

#[tokio::test]
async fn a_repeated_key_is_refused_in_http_api_and_function_url_events_too() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    // API Gateway v2 and function URLs join repeated headers with a comma.
    for event in [v2("k-a,k-b", None), function_url("k-a,k-b")] {
        let (status, answer) = invoke(&app, &event).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(problem(&answer), "idempotency-key-invalid");
    }
}

#[tokio::test]
async fn surrounding_whitespace_and_header_name_case_do_not_change_the_key_in_any_event_shape() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let (status, first) = invoke(&app, &v2("k-pad", None)).await;
    assert_eq!(status, 201);
    for retry in [v2("  k-pad\t", None), function_url(" k-pad ")] {
        let (status, answer) = invoke(&app, &retry).await;
        assert_eq!(status, 201);
        assert!(answer["replayed"].as_bool().unwrap(), "{answer}");
        assert_eq!(order_id(&answer), order_id(&first));
    }
    let (_, rest) = invoke(&app, &v1("Idempotency-Key", &["k-rest"])).await;
    for name in ["idempotency-key", "IDEMPOTENCY-KEY"] {
        let (_, answer) = invoke(&app, &v1(name, &[" k-rest "])).await;
        assert!(answer["replayed"].as_bool().unwrap(), "{name}: {answer}");
        assert_eq!(order_id(&answer), order_id(&rest));
    }
}

#[tokio::test]
async fn a_stage_named_like_the_route_still_routes_to_the_route() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    // Stage `orders`: API Gateway puts it in rawPath (`/orders/orders`);
    // a custom-domain request on that stage can show `/orders`.
    for (raw_path, key) in [("/orders/orders", "k-stage-1"), ("/orders", "k-stage-2")] {
        let mut event = v2(key, None);
        event["rawPath"] = raw_path.into();
        event["routeKey"] = "POST /orders".into();
        event["requestContext"]["routeKey"] = "POST /orders".into();
        event["requestContext"]["stage"] = "orders".into();
        event["requestContext"]["http"]["path"] = raw_path.into();
        let (status, answer) = invoke(&app, &event).await;
        assert_eq!(status, 201, "{raw_path}: {answer}");
    }
    assert_eq!(redis.orders(), 2);
}

/// `GET /orders/{id}` as a v2 event, from the caller `authorizer` names
/// (none for `None`).
fn read(id: &str, authorizer: Option<Value>) -> Value {
    let mut event = event_json("get_order_unknown.json");
    let path = format!("/orders/{id}");
    event["rawPath"] = path.clone().into();
    event["requestContext"]["http"]["path"] = path.into();
    if let Some(authorizer) = authorizer {
        event["requestContext"]["authorizer"] = authorizer;
    }
    event
}

fn jwt(sub: &str) -> Value {
    json!({ "jwt": { "claims": { "iss": "https://i.example", "sub": sub }, "scopes": [] } })
}

#[tokio::test]
async fn an_order_is_shown_only_to_the_caller_who_created_it() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let (status, created) = invoke(&app, &v2("k-owner", Some(jwt("alice")))).await;
    assert_eq!(status, 201);
    let id = order_id(&created);
    let (mine, order) = invoke(&app, &read(&id, Some(jwt("alice")))).await;
    assert_eq!(mine, 200);
    assert_eq!(order["body"], created["body"]["order"]);
    let (theirs, refused) = invoke(&app, &read(&id, Some(jwt("bob")))).await;
    assert_eq!(theirs, 404, "another caller is told nothing: {refused}");
    let (anonymous, _) = invoke(&app, &read(&id, None)).await;
    assert_eq!(anonymous, 404);
}

/// The v2 order fixture without an `Idempotency-Key`, from `authorizer`.
fn unkeyed(authorizer: Option<Value>) -> Value {
    let mut event = v2("-", authorizer);
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    event
}

#[tokio::test]
async fn without_a_required_key_a_caller_without_identity_is_still_refused() {
    let redis = RedisServer::start();
    let strict = [
        ("IDEMPOTENCY_KEY_REQUIRED", "false"),
        ("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key"),
    ];
    let app = app_with(&redis, &strict);
    for event in [unkeyed(None), function_url_unkeyed()] {
        let (status, refused) = invoke(&app, &event).await;
        assert_eq!(status, 403, "{refused}");
        assert_eq!(problem(&refused), "caller-unidentified");
    }
    assert_eq!((redis.orders(), redis.count("idempotency:*")), (0, 0));

    // A caller with an identity runs unprotected, and owns its order.
    let (status, created) = invoke(&app, &unkeyed(Some(jwt("alice")))).await;
    assert_eq!(status, 201, "{created}");
    let id = order_id(&created);
    assert_eq!(invoke(&app, &read(&id, Some(jwt("alice")))).await.0, 200);
    assert_eq!(invoke(&app, &read(&id, Some(jwt("bob")))).await.0, 404);
    assert_eq!(invoke(&app, &read(&id, None)).await.0, 404);
}

fn function_url_unkeyed() -> Value {
    let mut event = unkeyed(None);
    event["requestContext"]["domainName"] = "a1b2c3.lambda-url.eu-west-1.on.aws".into();
    event
}

#[tokio::test]
async fn without_a_required_key_anonymous_callers_share_one_scope_only_when_it_is_listed() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[("IDEMPOTENCY_KEY_REQUIRED", "false")]);
    let (status, created) = invoke(&app, &unkeyed(None)).await;
    assert_eq!(status, 201, "{created}");
    let id = order_id(&created);
    // The shared anonymous scope, as for a keyed request.
    assert_eq!(invoke(&app, &read(&id, None)).await.0, 200);
    assert_eq!(invoke(&app, &read(&id, Some(jwt("bob")))).await.0, 404);
}

#[tokio::test]
async fn an_order_stored_without_an_owner_is_shown_to_no_one() {
    let redis = RedisServer::start();
    let id = "0190a6d2-7b7e-7c3a-9f1e-2d3c4b5a6978";
    let ownerless = json!({
        "id": id, "product": "Tea", "quantity": 1, "created_at": "2026-01-01T00:00:00.000Z"
    });
    let _: () = redis::cmd("SET")
        .arg(format!("orders:{id}"))
        .arg(ownerless.to_string())
        .query(&mut redis.conn())
        .unwrap();
    let strict = app_with(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    );
    let anonymous = app_with(&redis, &[]);
    for (app, who) in [
        (&strict, None),
        (&strict, Some(jwt("alice"))),
        (&anonymous, None),
    ] {
        let (status, answer) = invoke(app, &read(id, who.clone())).await;
        assert_eq!(status, 404, "{who:?}: {answer}");
    }
}

#[tokio::test]
async fn http_api_payload_1_0_events_identify_their_callers_as_rest_events_do() {
    let redis = RedisServer::start();
    let anonymous = app_with(&redis, &[]);
    let strict = app_with(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    );
    // AWS's documented 1.0 event for a route without an authorizer:
    // `"authorizer": {"claims": null, "scopes": null}`.
    let documented = event_json("http_api_1_0_post_order.json");
    let (status, first) = invoke(&anonymous, &documented).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = invoke(&anonymous, &documented).await;
    assert_eq!(status, 201);
    assert!(again["replayed"].as_bool().unwrap(), "{again}");
    let (status, refused) = invoke(&strict, &documented).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(problem(&refused), "caller-unidentified");

    // An IAM caller in that shape.
    let mut iam = documented.clone();
    iam["requestContext"]["identity"]["userArn"] = "arn:aws:iam::123456789012:user/alice".into();
    let (status, by_iam) = invoke(&strict, &iam).await;
    assert_eq!(status, 201, "{by_iam}");
    // A JWT authorizer in payload 1.0: the claims beside null scopes.
    let jwt = |sub: &str| {
        let mut event = documented.clone();
        event["requestContext"]["authorizer"]["claims"] =
            json!({ "iss": "https://i.example", "sub": sub });
        event
    };
    let (_, alice) = invoke(&strict, &jwt("alice")).await;
    let (_, bob) = invoke(&strict, &jwt("bob")).await;
    let ids = [&first, &by_iam, &alice, &bob].map(order_id);
    let mut distinct = ids.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "four callers, four orders: {ids:?}");
    assert_eq!(redis.orders(), 4);
}

#[tokio::test]
async fn null_or_empty_authorizers_in_http_api_and_function_url_events_are_no_identity() {
    let redis = RedisServer::start();
    let anonymous = app_with(&redis, &[]);
    let strict = app_with(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    );
    let authorizers = [
        json!(null),
        json!({}),
        json!({ "jwt": null }),
        json!({ "jwt": { "claims": null, "scopes": null } }),
        json!({ "jwt": { "claims": {}, "scopes": [] } }),
        json!({ "lambda": null }),
        json!({ "lambda": {} }),
        json!({ "iam": null }),
        json!({ "iam": { "userArn": null } }),
    ];
    for (n, authorizer) in authorizers.into_iter().enumerate() {
        let key = format!("k-null-{n}");
        let mut url = function_url(&key);
        url["requestContext"]["authorizer"] = authorizer.clone();
        for event in [v2(&key, Some(authorizer.clone())), url] {
            let (status, answer) = invoke(&anonymous, &event).await;
            assert_eq!(status, 201, "{authorizer}: {answer}");
            let (status, answer) = invoke(&strict, &event).await;
            assert_eq!(status, 403, "{authorizer}: {answer}");
        }
    }
}

/// The REST (v1) and HTTP API payload 1.0 order fixtures under keys made
/// from `key`, one for each: the two carry the same order, which would
/// otherwise replay across them.
fn payload_1_0(key: &str) -> [(&'static str, Value); 2] {
    let rest = v1("Idempotency-Key", &[&format!("{key}-rest")]);
    let key = format!("{key}-http");
    let mut http_api = event_json("http_api_1_0_post_order.json");
    http_api["headers"]["Idempotency-Key"] = key.clone().into();
    http_api["multiValueHeaders"]["Idempotency-Key"] = json!([key]);
    [("REST", rest), ("HTTP API 1.0", http_api)]
}

/// A container at each level of saying nothing: `null`, empty, missing.
fn nothing() -> [(&'static str, Option<Value>); 3] {
    [
        ("null", Some(Value::Null)),
        ("empty", Some(json!({}))),
        ("missing", None),
    ]
}

/// Sets `context[name]` to `value`, or removes it for `None`.
fn put(context: &mut Value, name: &str, value: &Option<Value>) {
    let context = context.as_object_mut().expect("a request context");
    match value {
        Some(value) => context.insert(name.to_owned(), value.clone()),
        None => context.remove(name),
    };
}

#[tokio::test]
async fn a_null_empty_or_missing_identity_or_authorizer_in_payload_1_0_events_is_no_identity() {
    let redis = RedisServer::start();
    let anonymous = app_with(&redis, &[]);
    let strict = app_with(
        &redis,
        &[("IDEMPOTENCY_SCOPE", "jwt,authorizer,iam,api-key")],
    );
    let mut created = 0;
    for container in ["identity", "authorizer"] {
        for (level, value) in nothing() {
            for (shape, mut event) in payload_1_0(&format!("k-{container}-{level}")) {
                put(&mut event["requestContext"], container, &value);
                let case = format!("{shape}, {container} {level}");
                let (status, answer) = invoke(&anonymous, &event).await;
                assert_eq!(status, 201, "{case}: {answer}");
                created += 1;
                let (status, refused) = invoke(&strict, &event).await;
                assert_eq!(status, 403, "{case}: {refused}");
                assert_eq!(problem(&refused), "caller-unidentified", "{case}");
            }
        }
    }
    assert_eq!(redis.orders(), created);
}

#[tokio::test]
async fn an_identity_that_says_nothing_falls_through_to_the_next_source_as_one_caller() {
    let redis = RedisServer::start();
    // `iam` first: it finds nothing at every level, and the Lambda
    // authorizer's principal decides, the same caller each time.
    let app = app_with(&redis, &[("IDEMPOTENCY_SCOPE", "iam,authorizer")]);
    for which in 0..2 {
        let mut ids = Vec::new();
        for (n, (level, value)) in nothing().into_iter().enumerate() {
            let (shape, mut event) = payload_1_0("k-next")[which].clone();
            event["requestContext"]["authorizer"] = json!({ "principalId": "alice" });
            put(&mut event["requestContext"], "identity", &value);
            let (status, answer) = invoke(&app, &event).await;
            assert_eq!(status, 201, "{shape}, identity {level}: {answer}");
            assert_eq!(answer["replayed"], n > 0, "{shape}, identity {level}");
            ids.push(order_id(&answer));
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{which}: {ids:?}");
    }
    // HTTP API 2.0: an IAM caller's Cognito identity that says nothing is
    // the ARN alone.
    let arn = "arn:aws:iam::123456789012:user/alice";
    let cognito = [
        None,
        Some(Value::Null),
        Some(json!({})),
        Some(json!({ "amr": null, "identityId": null, "identityPoolId": null })),
    ];
    let mut ids = Vec::new();
    for (n, cognito) in cognito.iter().enumerate() {
        let mut iam = json!({ "iam": { "userArn": arn } });
        put(&mut iam["iam"], "cognitoIdentity", cognito);
        let (status, answer) = invoke(&app, &v2("k-next-v2", Some(iam))).await;
        assert_eq!(status, 201, "{cognito:?}: {answer}");
        assert_eq!(answer["replayed"], n > 0, "{cognito:?}");
        ids.push(order_id(&answer));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(redis.orders(), 3);
}

#[tokio::test]
async fn null_values_lambda_http_cannot_read_are_refused_with_400_and_store_nothing() {
    // API Gateway never sends these (claim values and `amr` are always
    // strings and a list): lambda_http refuses the whole event, and the
    // entry point answers 400 rather than failing. They are values, not
    // containers, so nothing is removed to make them readable.
    let redis = RedisServer::start();
    let app = app_with(&redis, &[]);
    let claim = v2(
        "k-null-claim",
        Some(json!({ "jwt": { "claims": { "sub": null }, "scopes": null } })),
    );
    let amr = v2(
        "k-null-amr",
        Some(json!({ "iam": {
            "userArn": "arn:aws:iam::1:user/x",
            "cognitoIdentity": { "amr": null, "identityId": "eu-west-1:1" }
        } })),
    );
    for event in [claim, amr] {
        let (status, answer) = invoke(&app, &event).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(problem(&answer), "invalid-request");
    }
    assert_eq!((redis.orders(), redis.count("idempotency:*")), (0, 0));
}
