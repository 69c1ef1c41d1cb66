//! The Lambda entry point, kept thin: tracing, configuration and the Redis
//! connection are set up once per cold start and shared by every invocation.

use idempotent_orders::{redis_conn, App, Config};
use lambda_http::{service_fn, Error, Request};

// One invocation at a time per instance, so a current-thread runtime loses
// nothing and saves thread wake-ups on every invocation.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // JSON when AWS_LAMBDA_LOG_FORMAT=JSON; level from AWS_LAMBDA_LOG_LEVEL or RUST_LOG.
    lambda_http::tracing::init_default_subscriber();

    // A bad variable stops start-up here, naming the variable.
    let config = Config::from_env()?;
    // Lazy: start-up succeeds while Redis is down; requests get 503 until it is back.
    let conn = redis_conn::connect(&config)?;
    let app = App::new(conn, &config);

    lambda_http::run(service_fn(|req: Request| {
        let app = app.clone();
        async move { Ok::<_, Error>(app.handle(req).await) }
    }))
    .await
}
