//! A minimal Lambda function behind the layer, using only the public API:
//! `POST /payments` takes a payment once per `Idempotency-Key`.
//!
//! The handler names its side effect after the request's `ExecutionId` and
//! writes it only if absent (`SET … NX`), the pattern that makes the
//! function exactly-once even when an attempt dies after its write: a
//! re-run finds the payment and answers with it. It shares the store's one
//! Redis connection.
//!
//! `tests/example.rs` builds it and runs it the way Lambda does.

use lambda_http::tower::Layer;
use lambda_http::{service_fn, Body, Error, Request, Response};
use lambda_idempotency::{
    ExecutionId, IdempotencyLayer, NotExecuted, RedisConnection, RedisStore, Settings,
};
use redis::AsyncCommands;

async fn take_payment(conn: RedisConnection, req: Request) -> Result<Response<Body>, Error> {
    let Some(id) = req
        .extensions()
        .get::<ExecutionId>()
        .map(ToString::to_string)
    else {
        // Only reached without a key when `key_required` is off.
        let mut refused = Response::builder()
            .status(400)
            .body(Body::from("send an Idempotency-Key"))?;
        refused.extensions_mut().insert(NotExecuted);
        return Ok(refused);
    };
    let amount = String::from_utf8_lossy(req.body()).into_owned();
    let mut conn = conn;
    let key = format!("payments:{id}");
    // Written once; a re-run of the same request reads what the first wrote.
    let _: bool = conn.set_nx(&key, &amount).await?;
    let stored: String = conn.get(&key).await?;
    Ok(Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"payment":"{id}","amount":{stored:?}}}"#
        )))?)
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
    let handler = service_fn(move |req| take_payment(conn.clone(), req));
    lambda_http::run(layer.layer(handler)).await
}
