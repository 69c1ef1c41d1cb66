//! idempotent-orders: an AWS Lambda function (Rust, `lambda_http`) whose
//! `POST /orders` endpoint is safe to retry, thanks to the
//! `lambda-idempotency` layer over Redis.
//!
//! The function is a library with a thin binary (`src/main.rs`) so that the
//! integration tests and benchmarks drive exactly the code that ships.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration read once from the environment at
//!   cold start; a bad value stops start-up with the variable's name.
//! - [`entry`]: the Lambda entry point: takes the raw event so that events
//!   `lambda_http` cannot convert (control characters in headers, invalid
//!   base64 bodies) still get a clean `400`, then hands over to [`app`].
//! - [`app`]: the router that puts the two crates together: `POST /orders`
//!   behind the idempotency layer, `GET /orders/{id}`, `GET
//!   /problems/{slug}`, 404 and 405.
//! - [`routes`]: the table of those routes, which the router matches
//!   against and the tests compare with `template.yaml` and `openapi.yaml`.
//! - [`runtime`]: the Lambda runtime around [`entry`], which writes each
//!   request's log-and-metric line after its response is out.
//! - [`logging`]: the log subscriber, whose lines name the invocation they
//!   were written in.
//! - [`problems`]: the function's own problem types and the documents
//!   behind every problem's `type` URI (`docs/problems.md`).
//!
//! The idempotency layer (`crates/lambda-idempotency`) knows nothing of
//! orders, and the orders (`crates/orders`) know nothing of the layer: each
//! is its own crate, so the compiler keeps it that way.

pub mod app;
pub mod config;
pub mod entry;
pub mod logging;
pub mod problems;
pub mod routes;
pub mod runtime;

pub use app::App;
pub use config::Config;
