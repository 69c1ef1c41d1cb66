//! Orders in Redis: one JSON string per order at `orders:<id>`, no TTL.

use std::time::Duration;

use redis::AsyncCommands;
use thiserror::Error;

use super::model::Order;
use crate::redis_conn::{self, RedisCallError, RedisConn};

/// A failure reading or writing orders.
#[derive(Debug, Error)]
pub enum RepoError {
    /// Redis failed or did not answer in time.
    #[error("order store: {0}")]
    Redis(#[from] RedisCallError),
    /// A stored order could not be read back.
    #[error("stored order is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Reads and writes orders over the instance's shared connection.
#[derive(Clone)]
pub struct OrderRepo {
    conn: RedisConn,
    timeout: Duration,
}

/// The Redis key of an order.
pub fn order_key(id: &str) -> String {
    format!("orders:{id}")
}

impl OrderRepo {
    /// A repository over `conn`; every call is bounded by `timeout`.
    pub fn new(conn: RedisConn, timeout: Duration) -> Self {
        Self { conn, timeout }
    }

    /// Stores `order` (one `SET`). Retried once on a dropped connection:
    /// setting the same id to the same value twice is harmless.
    pub async fn insert(&self, order: &Order) -> Result<(), RepoError> {
        let json = serde_json::to_string(order)?;
        let key = order_key(&order.id);
        redis_conn::call(self.timeout, || {
            let mut conn = self.conn.clone();
            let (key, json) = (&key, &json);
            async move { conn.set::<_, _, ()>(key, json).await }
        })
        .await?;
        Ok(())
    }

    /// Loads the order with `id`, if any (one `GET`).
    pub async fn get(&self, id: &str) -> Result<Option<Order>, RepoError> {
        let key = order_key(id);
        let json: Option<String> = redis_conn::call(self.timeout, || {
            let mut conn = self.conn.clone();
            let key = &key;
            async move { conn.get(key).await }
        })
        .await?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }
}
