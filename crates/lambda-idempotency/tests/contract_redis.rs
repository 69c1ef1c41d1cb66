//! `RedisStore` through the public store contract suite, against a real
//! `redis-server` on a free port: the contract, a race over independent
//! clients, an outage (the server stopped and restarted on its port) and
//! a Redis that is not there at all.

use std::time::Duration;

use lambda_idempotency::testing::{self, Backend};
use lambda_idempotency::{RedisOptions, RedisStore};
use testkit::RedisServer;

fn store(url: &str) -> RedisStore {
    let mut options = RedisOptions::default();
    options.timeout = Duration::from_millis(300);
    RedisStore::open(url, options).expect("store")
}

#[tokio::test]
async fn the_redis_store_keeps_the_store_contract() {
    let redis = RedisServer::start();
    testing::contract(&store(&redis.url())).await;
}

#[tokio::test]
async fn one_claimant_wins_across_independent_redis_clients() {
    let redis = RedisServer::start();
    let clients: Vec<_> = (0..4).map(|_| store(&redis.url())).collect();
    testing::race(&clients, testing::DEFAULT_LEASE).await;
}

#[tokio::test]
async fn a_redis_outage_fails_every_call_in_time_and_the_store_recovers() {
    let mut redis = RedisServer::start();
    let store = store(&redis.url());
    testing::outage(&store, async |state| match state {
        Backend::Down => redis.stop(),
        Backend::Up => redis.restart(),
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_is_not_there_fails_every_call_in_time() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    testing::unreachable(&store(&format!("redis://127.0.0.1:{port}"))).await;
}
