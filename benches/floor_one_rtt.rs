//! Benchmark floor `floor-one-rtt`: a `lambda_http` function that makes
//! exactly one Redis `GET` per invocation over a connection made once at
//! cold start, as the real function does. `floor-one-rtt - floor-echo` is
//! what one Redis round trip adds to an invocation.
//! A dev-only example: never part of the deployed artifact.

use lambda_http::{service_fn, Body, Error, Request, Response};
use redis::AsyncCommands;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = idempotent_orders::Config::from_env()?;
    let conn = lambda_idempotency::RedisConnection::open(&config.redis_url, &config.redis)?;
    lambda_http::run(service_fn(move |_req: Request| {
        let mut conn = conn.clone();
        async move {
            let value: Option<String> = conn.get("floor:key").await?;
            Ok::<_, Error>(Response::new(Body::Text(value.unwrap_or_default())))
        }
    }))
    .await
}
