//! Benchmark helper `layer-echo`: the idempotency layer (Redis store, same
//! config as the function) around a handler that answers `size` bytes
//! (`?size=N`), so the benchmark can measure new requests and replays with
//! stored bodies of 100 B, 10 KB and 1 MB. The orders handler's answers are
//! all about 200 B. A dev-only example: never part of the deployed artifact.

use idempotent_orders::idempotency::{IdempotencyLayer, RedisStore};
use idempotent_orders::{redis_conn, Config};
use lambda_http::tower::Layer;
use lambda_http::{service_fn, Body, Error, Request, RequestExt, Response};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    let store = RedisStore::new(redis_conn::connect(&config)?, config.redis_timeout);
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
    lambda_http::run(IdempotencyLayer::new(store, config.idempotency).layer(handler)).await
}
