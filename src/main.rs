//! The Lambda entry point, kept thin: tracing, configuration and the Redis
//! connection are set up once per cold start and shared by every invocation.

use idempotent_orders::{entry, App, Config};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::{service_fn, Error};
use serde_json::value::RawValue;

// One invocation at a time per instance, so a current-thread runtime loses
// nothing and saves thread wake-ups on every invocation.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // JSON when AWS_LAMBDA_LOG_FORMAT=JSON; level from AWS_LAMBDA_LOG_LEVEL or RUST_LOG.
    lambda_http::tracing::init_default_subscriber();

    // A bad variable stops start-up here, naming the variable.
    let config = Config::from_env()?;
    if config.scope.allows_anonymous() {
        tracing::warn!(
            scope = %config.scope,
            "IDEMPOTENCY_SCOPE allows anonymous callers: every caller without an identity \
             shares one key space, so a guessed Idempotency-Key replays another caller's response"
        );
    }
    // Lazy: start-up succeeds while Redis is down; requests get 503 until it is back.
    let app = App::from_config(&config)?;

    // The raw event, so that events lambda_http cannot convert still get a 400.
    lambda_runtime::run(service_fn(|event: LambdaEvent<Box<RawValue>>| {
        let app = app.clone();
        async move { entry::handle_event(&app, event).await }
    }))
    .await
}
