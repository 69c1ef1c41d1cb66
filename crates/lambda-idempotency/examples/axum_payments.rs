//! The layer on one route of an axum `Router` that `lambda_http::run`
//! serves: `POST /payments` takes a payment once per `Idempotency-Key`
//! (as `examples/payments.rs` does without axum), and `GET /health` is not
//! covered: `route_layer` wraps only the routes added before it.
//!
//! The handler reads the request's `ExecutionId`, the Lambda context and
//! API Gateway's request context from the request extensions, which
//! `lambda_http` fills and axum keeps; it answers with both request ids
//! (`x-lambda-request-id`, `x-api-request-id`), so a replay shows the
//! first invocation's.
//!
//! `tests/example_axum.rs` builds it and runs it the way Lambda does.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lambda_http::request::RequestContext;
use lambda_http::{Error, RequestExt};
use lambda_idempotency::{ExecutionId, IdempotencyLayer, RedisConnection, RedisStore, Settings};
use redis::AsyncCommands;

async fn take_payment(State(conn): State<RedisConnection>, req: Request) -> Response {
    // Always there: the layer requires a key on this route.
    let Some(id) = req
        .extensions()
        .get::<ExecutionId>()
        .map(ToString::to_string)
    else {
        return (StatusCode::BAD_REQUEST, "send an Idempotency-Key").into_response();
    };
    let lambda_request_id = req
        .lambda_context_ref()
        .map(|ctx| ctx.request_id.clone())
        .unwrap_or_default();
    let api_request_id = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024).await;
    let amount = body.map(|b| String::from_utf8_lossy(&b).into_owned());
    match (amount, write_once(conn, &id).await) {
        (Ok(amount), Ok(stored)) => (
            StatusCode::CREATED,
            [
                ("content-type", "application/json"),
                ("x-lambda-request-id", lambda_request_id.as_str()),
                ("x-api-request-id", api_request_id.as_str()),
            ],
            format!(r#"{{"payment":"{id}","amount":{amount:?},"stored":{stored:?}}}"#),
        )
            .into_response(),
        // Not stored by the layer (5xx): the retry runs again.
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Writes the payment once under its execution id; a re-run reads it.
async fn write_once(mut conn: RedisConnection, id: &str) -> redis::RedisResult<String> {
    let key = format!("payments:{id}");
    let _: bool = conn.set_nx(&key, "taken").await?;
    conn.get(&key).await
}

async fn health() -> &'static str {
    "ok"
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let store = RedisStore::from_env()?;
    store.warm_up().await;
    let conn = store.connection();
    let layer = IdempotencyLayer::builder(store)
        .settings(Settings::from_env()?)
        .build();
    let app = Router::new()
        .route("/payments", post(take_payment))
        .route_layer(layer)
        .route("/health", get(health))
        .with_state(conn);
    lambda_http::run(app).await
}
