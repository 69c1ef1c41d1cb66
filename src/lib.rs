//! idempotent-orders: an AWS Lambda function (Rust, `lambda_http`) whose
//! `POST /orders` endpoint is safe to retry, thanks to a Redis-backed
//! `Idempotency-Key` layer.
//!
//! The crate is a library with a thin binary (`src/main.rs`) so that the
//! integration tests and benchmarks drive exactly the code that ships.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration read once from the environment at
//!   cold start; a bad value stops start-up with the variable's name.
//! - [`redis_conn`]: builds the one Redis connection an instance reuses for
//!   every invocation (lazy, self-reconnecting, bounded timeouts).
//! - [`problem`]: RFC 9457 `application/problem+json` error responses.
//! - [`apigw`]: what the API Gateway event tells us beyond plain HTTP: the
//!   route path without the stage, and the caller's identity (scope).
//! - [`idempotency`]: the generic layer. It knows nothing about orders: it
//!   wraps any `lambda_http` service (`IdempotencyLayer` + `Idempotency<S>`).
//! - [`orders`]: the order domain: validated payload, Redis repository and the
//!   two handlers. It knows nothing about idempotency.
//! - [`entry`]: the Lambda entry point: takes the raw event so that events
//!   `lambda_http` cannot convert (control characters in headers, invalid
//!   base64 bodies) still get a clean `400`, then hands over to [`app`].
//! - [`app`]: the router that puts the two together: `POST /orders` behind
//!   the layer, `GET /orders/{id}`, 404 and 405 for everything else.

pub mod apigw;
pub mod app;
pub mod config;
pub mod entry;
pub mod idempotency;
pub mod orders;
pub mod problem;
pub mod redis_conn;

pub use app::App;
pub use config::Config;
