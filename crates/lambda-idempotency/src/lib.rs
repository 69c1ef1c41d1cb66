//! Idempotency-Key middleware for AWS Lambda HTTP functions.
//!
//! A client that retries `POST /orders` (a double click on "Pay", a dropped
//! network, a gateway timeout) must never create a second order. It sends
//! an `Idempotency-Key` header; this layer claims the key in a store
//! (Redis, DynamoDB, or one of your own) before the handler runs, and:
//! - runs the first request once and stores its response;
//! - answers a retry with the same key and request with the stored
//!   response (same status, headers and bytes, plus
//!   `Idempotent-Replayed: true`);
//! - refuses the same key with a different request (`422`), and tells a
//!   retry that arrives while the first still runs to come back (`409`
//!   with a short `Retry-After`);
//! - answers `503` without running anything when it cannot reach the store.
//!
//! It is a tower [`Layer`](lambda_http::tower::Layer) over any
//! `lambda_http` service, or, with the `axum` feature, over the routes of
//! an axum `Router` (`route_layer`) that `lambda_http::run` serves: the
//! service accepts any [`RequestBody`].
//!
//! # Quick start
//!
//! ```no_run
//! # #[cfg(feature = "redis")] mod quick_start {
//! use lambda_http::tower::Layer;
//! use lambda_http::{service_fn, Body, Error, Request, Response};
//! use lambda_idempotency::{ExecutionId, IdempotencyLayer, RedisStore, Settings};
//!
//! async fn create_payment(req: Request) -> Result<Response<Body>, Error> {
//!     // Stable across every attempt at this key: name side effects after it.
//!     let id = req.extensions().get::<ExecutionId>().map(ToString::to_string);
//!     Ok(Response::builder()
//!         .status(201)
//!         .header("content-type", "application/json")
//!         .body(Body::from(format!(r#"{{"payment":"{}"}}"#, id.unwrap_or_default())))?)
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Error> {
//!     lambda_http::tracing::init_default_subscriber();
//!     // REDIS_URL, REDIS_TIMEOUT_MS, …; IDEMPOTENCY_*, PROBLEM_TYPE_BASE, …
//!     let store = RedisStore::from_env()?;
//!     let layer = IdempotencyLayer::builder(store)
//!         .settings(Settings::from_env()?)
//!         .build();
//!     lambda_http::run(layer.layer(service_fn(create_payment))).await
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! # Features
//!
//! The core (the layer, the [`IdempotencyStore`] trait, [`MemoryStore`])
//! depends on no store client. Each store, the test suite and axum support
//! is a feature:
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `redis` | yes | `RedisStore` and its options (the `redis` crate, rustls with ring) |
//! | `dynamodb` | no | `DynamoDbStore` (the AWS SDK, rustls with ring) |
//! | `testing` | no | `testing`: the store contract as a test suite for any store |
//! | `axum` | no | the layer on the routes of an axum `Router` (`route_layer`), over axum's request body (`axum-core`) |
//!
//! `default-features = false` builds the core alone, for a store of your
//! own.
//!
//! # What is guaranteed
//!
//! For each record key (caller scope, within the Lambda tenant if any;
//! method, route, `Idempotency-Key`), the
//! handler is *started* again only when the previous attempt's outcome is
//! unknown to the store: its process died or froze past its lease (3 s by
//! default, whatever the function's timeout: [`Settings::lease`]), or the
//! store lost its completion. Every such attempt sees the same
//! [`ExecutionId`] in its request extensions; a handler that names its side
//! effects after it and writes them only if absent (`SET … NX`, a
//! conditional put, a payment provider's own idempotency key) is
//! exactly-once. A live handler keeps its lease while the store answers its
//! renewals: they are sent every third of the lease while the handler
//! runs, past the invocation's deadline too (a handler that blocks its
//! runtime thread for a whole lease stops them: block in
//! `spawn_blocking`). Records can still
//! be lost by the store itself (a failover without replica acknowledgement,
//! a restart without persistence, eviction); `RedisOptions::min_replicas`
//! closes the failover case on Redis with replicas that support `WAIT`.
//!
//! # Layout
//!
//! Split the way Powertools splits its idempotency package:
//! - settings: [`Settings`] (`settings.rs`);
//! - the request's identity: the key header and the record key
//!   ([`StoreKey`], `key.rs`), the fingerprint (`fingerprint.rs`), the
//!   caller ([`CallerScope`], [`ApiGatewayScope`], `scope.rs`), the routed
//!   path ([`route_path`], `apigw.rs`), the execution ([`ExecutionId`]);
//! - the record and its encoding (`record.rs`) and the pure decision
//!   (`decision.rs`);
//! - persistence: the [`IdempotencyStore`] trait (`store.rs`),
//!   `RedisStore` (`redis_store/`, feature `redis`), `DynamoDbStore`
//!   (`dynamodb_store/`, feature `dynamodb`) and [`MemoryStore`];
//!   the store contract as a public test suite (`testing/`, feature
//!   `testing`);
//! - the middleware: [`IdempotencyLayer`] (`layer.rs`), [`Idempotency`]
//!   (`service.rs`), running the handler under a renewed lease (`run.rs`),
//!   which responses are stored ([`StoreRule`], [`NotExecuted`]);
//! - answers: errors and their single mapping to RFC 9457 problems
//!   (`error.rs`; rendered by the `problem-details` crate), the list of
//!   those problems ([`PROBLEMS`], each a [`ProblemType`]), one log line
//!   and one CloudWatch EMF line per request (`outcome.rs`, `metrics.rs`).
#![deny(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's Rust examples, compiled as doctests so that the quick
/// start a new user copies cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod apigw;
mod body;
mod cache;
mod decision;
#[cfg(feature = "dynamodb")]
mod dynamodb_store;
mod error;
mod execution;
mod fingerprint;
#[cfg(test)]
mod fuzz_tests;
mod giveback;
mod key;
mod layer;
mod memory_store;
mod metrics;
mod outcome;
mod pointer;
mod record;
#[cfg(feature = "redis")]
mod redis_store;
mod rules;
mod run;
mod scope;
mod service;
// `Env`'s readers of counts and durations serve the stores' options only.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod settings;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use apigw::route_path;
pub use body::RequestBody;
#[cfg(feature = "dynamodb")]
pub use dynamodb_store::DynamoDbStore;
pub use error::PROBLEMS;
pub use execution::ExecutionId;
pub use key::StoreKey;
pub use layer::{IdempotencyLayer, IdempotencyLayerBuilder};
pub use memory_store::MemoryStore;
pub use metrics::{DeferredLines, InvocationIds};
pub use pointer::{JsonPointer, PointerParseError};
pub use problem_details::ProblemType;
#[cfg(feature = "redis")]
pub use redis_store::{
    ConnectError, IamAuth, RedisConnection, RedisOptions, RedisStore, DEFAULT_REDIS_URL,
};
pub use rules::{DefaultStoreRule, NotExecuted, StoreRule};
pub use scope::{caller_scope, ApiGatewayScope, CallerScope, ScopeParseError, ScopeSource};
pub use service::Idempotency;
pub use settings::{ConfigError, Settings};
pub use store::{IdempotencyStore, OwnerToken, Phase, StoreError, StoredRecord};
