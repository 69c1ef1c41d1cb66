//! The Lambda entry point, kept thin: tracing, configuration and the Redis
//! connection are set up once per cold start and shared by every invocation.
//!
//! One binary serves both ways Lambda runs it:
//! - classic Lambda sends one invocation at a time, so a current-thread
//!   runtime loses nothing and saves thread wake-ups on every invocation;
//! - Lambda Managed Instances set `AWS_LAMBDA_MAX_CONCURRENCY` above 1 and
//!   send that many at once: a multi-thread runtime then runs that many
//!   `/next` loops, all sharing the one multiplexed Redis connection.

use idempotent_orders::{runtime, App, Config};
use lambda_http::Error;
use lambda_idempotency::DeferredLines;

fn main() -> Result<(), Error> {
    let concurrency = concurrency()?;
    let runtime = if concurrency > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(concurrency))
}

/// `AWS_LAMBDA_MAX_CONCURRENCY`, which Lambda Managed Instances set: the
/// invocations to serve at once (unset, empty or 0: one). Anything but a
/// whole number stops start-up, as any bad value does.
fn concurrency() -> Result<usize, Error> {
    match std::env::var("AWS_LAMBDA_MAX_CONCURRENCY") {
        Ok(value) if !value.trim().is_empty() => match value.trim().parse::<usize>() {
            Ok(n) => Ok(n.max(1)),
            Err(_) => Err("AWS_LAMBDA_MAX_CONCURRENCY is not a whole number".into()),
        },
        _ => Ok(1),
    }
}

async fn serve(concurrency: usize) -> Result<(), Error> {
    // JSON when AWS_LAMBDA_LOG_FORMAT=JSON; level from AWS_LAMBDA_LOG_LEVEL or RUST_LOG.
    idempotent_orders::logging::init();

    // A bad variable stops start-up here, naming the variable.
    let config = Config::from_env()?;
    if config.scope.allows_anonymous() {
        tracing::warn!(
            scope = %config.scope,
            "IDEMPOTENCY_SCOPE allows anonymous callers: every caller without an identity \
             shares one key space, so a guessed Idempotency-Key replays another caller's response"
        );
    }
    // Start-up succeeds while Redis is down; requests get 503 until it is back.
    // Each request's log-and-metric line is written after its response.
    let lines = DeferredLines::new();
    let app = App::with_deferred_lines(&config, lines.clone())?;
    if config.connect_at_init {
        app.warm_up().await;
    }

    runtime::run(app, lines, concurrency).await
}
