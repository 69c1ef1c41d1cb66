//! Test support for the workspace's integration tests and benchmark: real
//! parts only.
//!
//! # Layout
//! - [`server`]: a `redis-server` per test, on a free port (plain or TLS),
//!   that can be stopped, restarted, frozen and made a replica.
//! - [`engine`]: which server software runs (`REDIS_SERVER_BIN`: Redis,
//!   or Valkey for the Valkey pass), checked on every server started.
//! - [`cluster`]: a local three-master Redis Cluster.
//! - [`dynamodb`]: a DynamoDB emulator (moto) per test, on a free port,
//!   that can be stopped and restarted.
//! - [`proxy`]: a TCP proxy that delays or freezes Redis traffic.
//! - [`fault_proxy`]: a RESP-aware proxy that numbers Redis commands and
//!   drops, loses the reply to, delays or holds a chosen one, notifies the
//!   test when it arrives, and can be pointed at another server.
//! - [`http_fault`]: an HTTP proxy in front of the DynamoDB emulator that
//!   throttles a request, loses its reply or delivers it late.
//! - [`fuzz`]: a deterministic property fuzzer and JSON generators.
//! - [`fixtures`]: the repository's `events/*.json` as requests, and
//!   assertions on responses.
//! - [`harness`]: a Lambda Runtime API per instance, driving N processes of
//!   a release binary the way Lambda runs them.
//! - [`payments`]: the requests and checks both payments examples pass.
//! - [`watch`]: the real `cargo lambda watch` serving the function over
//!   HTTP, stopped with everything it started.
//!
//! No helper mocks Redis or DynamoDB, and none skips a test when
//! `redis-server` or `moto_server` is missing: that is a failure that says
//! how to install it.

pub mod cluster;
pub mod dynamodb;
pub mod engine;
pub mod fault_proxy;
pub mod fixtures;
pub mod fuzz;
pub mod harness;
pub mod http_fault;
pub mod payments;
pub mod proxy;
pub mod server;
mod tls;
pub mod watch;

pub use cluster::RedisCluster;
pub use dynamodb::DynamoDbServer;
pub use engine::Engine;
pub use server::RedisServer;
