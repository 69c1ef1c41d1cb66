//! Options in the request flow: the key header, the members left out of
//! the fingerprint, and the scope taken from the settings.

use lambda_http::http::HeaderName;
use lambda_http::tower::{service_fn, Layer};
use lambda_http::{Error, Request};

use super::{created, problem_type, replayed, request, send};
use crate::{ApiGatewayScope, IdempotencyLayer, JsonPointer, MemoryStore, Settings};

fn handler() -> impl lambda_http::tower::Service<
    Request,
    Response = lambda_http::Response<lambda_http::Body>,
    Error = Error,
    Future: Send,
> + Clone {
    service_fn(|_: Request| async { Ok::<_, Error>(created(1)) })
}

fn json_request(key: &str, body: &str) -> Request {
    request(Some(key), body)
}

#[tokio::test]
async fn bodies_that_differ_only_in_ignored_members_replay_and_any_other_difference_gets_422() {
    let ignored: Vec<JsonPointer> = ["/client_ts", "/meta/trace_id"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let svc = IdempotencyLayer::builder(MemoryStore::new())
        .scope(super::anonymous())
        .fingerprint_ignore(ignored)
        .build()
        .layer(handler());
    let body = |ts: u64, trace: &str, qty: u32| {
        format!(r#"{{"client_ts":{ts},"meta":{{"trace_id":"{trace}"}},"qty":{qty},"price":9.90}}"#)
    };
    assert_eq!(
        send(&svc, json_request("k", &body(1, "a", 2)))
            .await
            .status(),
        201
    );
    let retry = send(&svc, json_request("k", &body(2, "b", 2))).await;
    assert!(replayed(&retry), "only ignored members differ");
    let other = send(&svc, json_request("k", &body(3, "c", 3))).await;
    assert_eq!(other.status(), 422);
    assert!(problem_type(&other).ends_with("idempotency-key-reused"));
    let missing = send(
        &svc,
        json_request("k", r#"{"meta":{"trace_id":"x"},"qty":2,"price":9.90}"#),
    )
    .await;
    assert_eq!(
        missing.status(),
        422,
        "a member left out is still a difference"
    );
}

#[tokio::test]
async fn the_key_comes_from_the_configured_header_and_its_problems_name_it() {
    let header = HeaderName::from_static("x-request-key");
    let svc = IdempotencyLayer::builder(MemoryStore::new())
        .scope(super::anonymous())
        .key_header(header.clone())
        .build()
        .layer(handler());
    let mut keyed = request(None, r#"{"a":1}"#);
    keyed.headers_mut().insert(&header, "k".parse().unwrap());
    assert_eq!(send(&svc, keyed).await.status(), 201);
    let mut again = request(None, r#"{"a":1}"#);
    again.headers_mut().insert(&header, "k".parse().unwrap());
    assert!(replayed(&send(&svc, again).await));
    // The default header is just another header now.
    let default_only = send(&svc, request(Some("k"), r#"{"a":1}"#)).await;
    assert_eq!(default_only.status(), 400);
    let detail: serde_json::Value = serde_json::from_slice(default_only.body()).unwrap();
    let detail = detail["detail"].as_str().unwrap();
    assert!(
        detail.contains("x-request-key") && !detail.contains("Idempotency-Key"),
        "{detail}"
    );
    let mut bad = request(None, r#"{"a":1}"#);
    bad.headers_mut().insert(&header, "a,b".parse().unwrap());
    assert_eq!(send(&svc, bad).await.status(), 400, "the same rules");
}

#[tokio::test]
async fn the_scope_comes_from_the_settings_unless_the_builder_sets_its_own() {
    let mut settings = Settings::default();
    let refused = IdempotencyLayer::builder(MemoryStore::new())
        .settings(settings.clone())
        .build()
        .layer(handler());
    assert_eq!(send(&refused, request(Some("k"), "{}")).await.status(), 403);
    settings.scope = "jwt,anonymous".parse::<ApiGatewayScope>().unwrap();
    let accepted = IdempotencyLayer::builder(MemoryStore::new())
        .settings(settings.clone())
        .build()
        .layer(handler());
    assert_eq!(
        send(&accepted, request(Some("k"), "{}")).await.status(),
        201
    );
    let own = IdempotencyLayer::builder(MemoryStore::new())
        .settings(settings)
        .scope(|_: &Request| None::<String>)
        .build()
        .layer(handler());
    assert_eq!(send(&own, request(Some("k"), "{}")).await.status(), 403);
}
