//! The function end to end, in process: fixture events from `events/` go
//! through the same `App` that `main` runs, against a real `redis-server`
//! started by each test.

use std::sync::Arc;

use idempotent_orders::{App, Config};
use lambda_http::RequestExt;
use testkit::fixtures::*;
use testkit::harness::{function_env, lookup};
use testkit::RedisServer;
use tokio::sync::Barrier;

/// The function as `main` builds it, against `redis`, with `extra`
/// environment variables.
fn app_with(redis: &RedisServer, extra: &[(&str, &str)]) -> App {
    let quiet = [&[("METRICS_NAMESPACE", "")], extra].concat();
    let config = Config::from_lookup(lookup(function_env(&redis.url(), &quiet))).expect("config");
    App::from_config(&config).expect("app")
}

fn app(redis: &RedisServer) -> App {
    app_with(redis, &[])
}

#[tokio::test]
async fn same_key_and_body_twice_creates_one_order_and_replays_identical_bytes() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let first = app.handle(event("post_order.json")).await;
    let second = app.handle(event("post_order.json")).await;

    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    assert_eq!(second.status(), 201);
    assert!(
        replayed(&second),
        "second answer must carry Idempotent-Replayed: true"
    );
    assert_eq!(body(&first), body(&second), "replay must be byte-identical");
    assert_eq!(first.headers()["location"], second.headers()["location"]);
    assert_eq!(
        first.headers()["content-type"],
        second.headers()["content-type"]
    );
    let order = json(&first);
    assert_eq!(order["message"], "Order created");
    assert_eq!(order["order"]["product"], "Espresso beans 1kg");
    assert_eq!(order["order"]["quantity"], 2);
    assert_eq!(
        first.headers()["location"],
        format!("/orders/{}", order["order"]["id"].as_str().unwrap()).as_str()
    );
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn reordered_json_body_with_the_same_key_is_a_replay() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let first = app.handle(event("post_order.json")).await;
    let reordered = app.handle(event("post_order_reordered.json")).await;
    let as_base64 = app.handle(event("post_order_base64.json")).await;
    let quoted_key = app.handle(event("post_order_quoted_key.json")).await;

    assert_eq!(first.status(), 201);
    for retry in [&reordered, &as_base64, &quoted_key] {
        assert!(replayed(retry));
        assert_eq!(body(retry), body(&first));
    }
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn different_body_with_the_same_key_is_refused_with_422_and_creates_nothing() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let first = app.handle(event("post_order.json")).await;
    let changed = app.handle(event("post_order_changed_body.json")).await;

    assert_eq!(first.status(), 201);
    assert_problem(&changed, 422);
    assert_eq!(
        json(&changed)["type"],
        "urn:idempotent-orders:problem:idempotency-key-reused"
    );
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn rest_v1_event_from_a_named_stage_routes_and_replays_like_v2() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let first = app
        .handle(event("rest_v1_post_order_prod_stage.json"))
        .await;
    let retry = app
        .handle(event("rest_v1_post_order_prod_stage.json"))
        .await;
    assert_eq!(first.status(), 201, "{:?}", first.body());
    assert!(replayed(&retry));
    assert_eq!(body(&first), body(&retry));

    let v2_first = app.handle(event("post_order_stage_v2.json")).await;
    let v2_retry = app.handle(event("post_order_stage_v2.json")).await;
    assert_eq!(v2_first.status(), 201, "{:?}", v2_first.body());
    assert!(replayed(&v2_retry));
    assert_eq!(redis.orders(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_with_one_key_execute_once() {
    let redis = RedisServer::start();
    let barrier = Arc::new(Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        // One App (and connection) per task: 50 Lambda instances.
        let app = app(&redis);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let req = event("post_order.json");
            barrier.wait().await;
            app.handle(req).await
        }));
    }
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("task"));
    }

    let executed: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == 201 && !replayed(r))
        .collect();
    assert_eq!(executed.len(), 1, "exactly one execution");
    let original = body(executed[0]);
    for response in &responses {
        match response.status().as_u16() {
            201 => assert_eq!(body(response), original),
            409 => {
                assert_problem(response, 409);
                let secs: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(secs >= 1);
            }
            other => panic!("unexpected status {other}: {:?}", response.body()),
        }
    }
    assert_eq!(redis.orders(), 1, "exactly one order in Redis");
}

#[tokio::test]
async fn missing_key_is_refused_with_400() {
    let redis = RedisServer::start();
    let response = app(&redis)
        .handle(event("post_order_missing_key.json"))
        .await;
    assert_problem(&response, 400);
    assert_eq!(
        json(&response)["type"],
        "urn:idempotent-orders:problem:idempotency-key-missing"
    );
    assert_eq!(redis.orders(), 0);
}

#[tokio::test]
async fn invalid_keys_are_refused_with_400() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let too_long = app.handle(event("post_order_key_too_long.json")).await;
    assert_problem(&too_long, 400);

    let invalid = [
        "",
        "\"\"",
        "tab\tinside",
        "two,keys",
        "\"unterminated",
        "\"bad\\escape\"",
    ];
    for key in invalid {
        let req = with_header(event("post_order.json"), "idempotency-key", key);
        assert_problem(&app.handle(req).await, 400);
    }
    let mut non_ascii = event("post_order.json");
    non_ascii.headers_mut().insert(
        "idempotency-key",
        lambda_http::http::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    );
    assert_problem(&app.handle(non_ascii).await, 400);

    let mut two_headers = event("post_order.json");
    two_headers
        .headers_mut()
        .append("idempotency-key", "second".parse().unwrap());
    assert_problem(&app.handle(two_headers).await, 400);
    assert_eq!(redis.orders(), 0);
}

#[tokio::test]
async fn the_same_key_from_two_principals_creates_two_orders() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let alice = app.handle(event("post_order_jwt_alice.json")).await;
    let bob = app.handle(event("post_order_jwt_bob.json")).await;
    let alice_again = app.handle(event("post_order_jwt_alice.json")).await;

    assert_eq!(alice.status(), 201);
    assert_eq!(bob.status(), 201);
    assert!(!replayed(&bob), "bob must not get alice's order");
    assert_ne!(json(&alice)["order"]["id"], json(&bob)["order"]["id"]);
    assert!(replayed(&alice_again));
    assert_eq!(redis.orders(), 2);
}

#[tokio::test]
async fn a_refused_order_is_not_stored_so_the_corrected_request_with_the_same_key_runs() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let invalid = app.handle(event("post_order_invalid_quantity.json")).await;
    let again = app.handle(event("post_order_invalid_quantity.json")).await;
    assert_problem(&invalid, 422);
    assert!(
        !replayed(&again),
        "a refusal before execution is not stored"
    );
    assert_eq!(redis.count("idempotency:*"), 0);

    let key = "order-7f3c9a1e-0002";
    let fixed = with_header(event("post_order.json"), "idempotency-key", key);
    let wrong_type = with_header(
        fixed_body_as_text(event("post_order.json")),
        "idempotency-key",
        key,
    );
    assert_problem(&app.handle(wrong_type).await, 415);
    let corrected = app.handle(fixed).await;
    assert_eq!(corrected.status(), 201, "{:?}", corrected.body());
    assert_eq!(redis.orders(), 1);
}

fn fixed_body_as_text(mut req: lambda_http::Request) -> lambda_http::Request {
    req.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    req
}

#[tokio::test]
async fn get_returns_the_created_order_and_unknown_ids_give_404() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let created = app.handle(event("post_order.json")).await;
    let order = json(&created)["order"].clone();
    let location = created.headers()["location"].to_str().unwrap().to_owned();

    let mut get = event("get_order_unknown.json");
    *get.uri_mut() = location.parse().unwrap();
    let get = get.with_raw_http_path(&location);
    let fetched = app.handle(get).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(json(&fetched), order);

    let unknown = app.handle(event("get_order_unknown.json")).await;
    assert_problem(&unknown, 404);
    let not_a_uuid = event("get_order_unknown.json").with_raw_http_path("/orders/not-a-uuid");
    assert_problem(&app.handle(not_a_uuid).await, 404);
}

#[tokio::test]
async fn problem_type_uris_resolve_to_their_markdown_section() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[("PROBLEM_TYPE_BASE", "/problems/")]);

    let missing_key = app.handle(event("post_order_missing_key.json")).await;
    let type_uri = json(&missing_key)["type"].as_str().unwrap().to_owned();
    assert_eq!(type_uri, "/problems/idempotency-key-missing");
    let page = app
        .handle(event("get_order_unknown.json").with_raw_http_path(&type_uri))
        .await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let text = String::from_utf8(body(&page)).unwrap();
    assert!(text.starts_with("## idempotency-key-missing\n"), "{text}");
    assert!(text.contains("Status: `400 Bad Request`"), "{text}");

    let unknown = event("get_order_unknown.json").with_raw_http_path("/problems/no-such-thing");
    let unknown = app.handle(unknown).await;
    assert_problem(&unknown, 404);
    assert_eq!(json(&unknown)["type"], "/problems/problem-not-found");

    let mut post = event("get_order_unknown.json").with_raw_http_path(&type_uri);
    *post.method_mut() = lambda_http::http::Method::POST;
    let post = app.handle(post).await;
    assert_problem(&post, 405);
    assert_eq!(post.headers()["allow"], "GET");
}

#[tokio::test]
async fn every_fixture_event_gets_its_documented_status() {
    // events/expected_status.txt, in its order, against one empty Redis.
    let redis = RedisServer::start();
    let app = app(&redis);
    for expected in expected_statuses() {
        let response = app.handle(event(&expected.file)).await;
        let status = response.status().as_u16();
        assert_eq!(
            status,
            expected.status,
            "{}: {:?}",
            expected.file,
            response.body()
        );
        assert_eq!(replayed(&response), expected.replay, "{}", expected.file);
        if status >= 400 {
            assert_problem(&response, status);
        }
        if status == 405 {
            assert_eq!(response.headers()["allow"], "POST");
        }
    }
}

#[tokio::test]
async fn a_replay_costs_one_round_trip_and_a_new_request_two_plus_the_order_write() {
    let redis = RedisServer::start();
    let app = app(&redis);
    // Warm up: the first script call of a connection loads the scripts.
    app.handle(with_header(
        event("post_order.json"),
        "idempotency-key",
        "warm-up",
    ))
    .await;

    let monitor = redis.monitor();
    let created = app.handle(event("post_order.json")).await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        monitor.take(),
        ["set", "set", "evalsha"],
        "claim (SET NX GET), order (SET NX), completion (script)"
    );

    let replay = app.handle(event("post_order.json")).await;
    assert!(replayed(&replay));
    assert_eq!(
        monitor.take(),
        ["set"],
        "one claim, which returns the record"
    );

    let mismatch = app.handle(event("post_order_changed_body.json")).await;
    assert_problem(&mismatch, 422);
    assert_eq!(monitor.take(), ["set"]);
}

#[tokio::test]
async fn the_whole_flow_works_over_tls_with_a_custom_ca() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let ca = redis.ca_file().expect("CA").display().to_string();
    let app = app_with(&redis, &[("REDIS_CA_FILE", &ca)]);

    let first = app.handle(event("post_order.json")).await;
    let retry = app.handle(event("post_order.json")).await;
    let changed = app.handle(event("post_order_changed_body.json")).await;

    assert_eq!(first.status(), 201, "{:?}", first.body());
    assert!(replayed(&retry));
    assert_eq!(body(&first), body(&retry));
    assert_problem(&changed, 422);
    assert_eq!(redis.orders(), 1);
}

#[tokio::test]
async fn an_untrusted_tls_certificate_fails_fast_with_503_not_a_hang() {
    let redis = RedisServer::start_tls();
    // Public roots only: the test CA is not trusted.
    let app = app(&redis);

    let started = std::time::Instant::now();
    let response = app.handle(event("post_order.json")).await;

    assert_problem(&response, 503);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(redis.orders(), 0);
}

/// Runs a raw event through the real entry point, as the binary does.
async fn invoke_raw(app: &idempotent_orders::App, raw: &str) -> serde_json::Value {
    let raw = serde_json::value::RawValue::from_string(raw.to_owned()).expect("raw JSON");
    let ctx = context_with_deadline_in(std::time::Duration::from_secs(3));
    let reply =
        idempotent_orders::entry::handle_event(app, lambda_http::LambdaEvent::new(raw, ctx))
            .await
            .expect("the entry point never fails on client input");
    serde_json::to_value(reply).expect("the reply serialises")
}

fn assert_raw_problem(response: &serde_json::Value, status: u16) {
    assert_eq!(response["statusCode"], status, "{response}");
    let body: serde_json::Value =
        serde_json::from_str(response["body"].as_str().expect("text body")).unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
}

#[tokio::test]
async fn events_lambda_http_cannot_convert_get_a_400_not_a_crash() {
    let redis = RedisServer::start();
    let app = app(&redis);

    let mut control_char = event_json("post_order.json");
    control_char["headers"]["idempotency-key"] = "order\u{1}bad".into();
    let response = invoke_raw(&app, &control_char.to_string()).await;
    assert_raw_problem(&response, 400);
    assert!(
        response["cookies"].is_array(),
        "answered in the v2 shape: {response}"
    );

    for fixture in [
        "post_order_base64.json",
        "rest_v1_post_order_prod_stage.json",
    ] {
        let mut bad_base64 = event_json(fixture);
        bad_base64["isBase64Encoded"] = true.into();
        bad_base64["body"] = "%%% not base64 %%%".into();
        assert_raw_problem(&invoke_raw(&app, &bad_base64.to_string()).await, 400);
    }

    let mut no_context = event_json("post_order.json");
    no_context.as_object_mut().unwrap().remove("requestContext");
    assert_raw_problem(&invoke_raw(&app, &no_context.to_string()).await, 400);
    assert_raw_problem(&invoke_raw(&app, r#"{"not":"http"}"#).await, 400);
    assert_raw_problem(&invoke_raw(&app, "[1,2,3]").await, 400);
    assert_eq!(redis.orders(), 0);

    // A good event goes through the same entry point untouched.
    let ok = invoke_raw(&app, &event_json("post_order.json").to_string()).await;
    assert_eq!(ok["statusCode"], 201, "{ok}");
    assert_eq!(redis.orders(), 1);
}

/// The detail of `response`, an `order-store-unavailable` problem with
/// `Retry-After`.
fn order_store_unavailable(response: &lambda_http::Response<lambda_http::Body>) -> String {
    assert_problem(response, 503);
    assert!(response.headers().contains_key("retry-after"));
    let problem = json(response);
    let kind = problem["type"].as_str().unwrap();
    assert!(kind.ends_with("order-store-unavailable"), "{problem}");
    problem["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_read_while_redis_stalls_is_told_the_order_could_not_be_read_not_that_it_was_not_saved() {
    let redis = RedisServer::start();
    let app = app(&redis);
    let created = app.handle(event("post_order.json")).await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let read = || event("get_order_unknown.json").with_raw_http_path(&location);
    assert_eq!(app.handle(read()).await.status(), 200);

    redis.pause();
    let stalled = app.handle(read()).await;
    redis.resume();
    let detail = order_store_unavailable(&stalled);
    // A GET saves nothing and carries no key.
    assert!(
        !detail.contains("saved") && !detail.contains("Idempotency-Key"),
        "{detail}"
    );
    assert!(detail.contains("could not be read"), "{detail}");
}

#[tokio::test]
async fn an_order_without_a_key_that_may_not_be_saved_is_not_told_to_retry_with_its_key() {
    let redis = RedisServer::start();
    let app = app_with(&redis, &[("IDEMPOTENCY_KEY_REQUIRED", "false")]);
    redis.pause();
    let stalled = app.handle(event("post_order_missing_key.json")).await;
    redis.resume();
    let detail = order_store_unavailable(&stalled);
    assert!(!detail.contains("same Idempotency-Key"), "{detail}");
    assert!(detail.contains("second"), "{detail}");
}
