//! Benchmark helper `layer-echo`: the idempotency layer (Redis store, same
//! config as the function) around a handler that answers `size` bytes
//! (`?size=N`), so the benchmark can measure new requests and replays with
//! stored bodies of 100 B, 10 KB and 1 MB. The orders handler's answers are
//! all about 200 B. A dev-only example: never part of the deployed artifact.

use idempotent_orders::Config;
use lambda_http::tower::Layer;
use lambda_http::{service_fn, Body, Error, Request, RequestExt, Response};
use lambda_idempotency::{IdempotencyLayer, RedisStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    let store = RedisStore::open(&config.redis_url, config.redis.clone())?;
    let handler = service_fn(|req: Request| async move {
        let size = req
            .query_string_parameters_ref()
            .and_then(|q| q.first("size"))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(100);
        Response::builder()
            .status(201)
            .header("content-type", "text/plain")
            .body(Body::Text("x".repeat(size)))
            .map_err(Error::from)
    });
    let layer = IdempotencyLayer::builder(store)
        .settings(config.settings)
        .scope(config.scope)
        .build();
    lambda_http::run(layer.layer(handler)).await
}
