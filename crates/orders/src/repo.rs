//! Orders in Redis: one JSON string per order at `orders:<id>`, no TTL.
//!
//! An order is written only if its key is free (`SET … NX`), so writing
//! the same order id twice never replaces the first: a second attempt at
//! one request finds the order the first attempt wrote, and answers with
//! it instead of creating another.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::AsyncCommands;
use thiserror::Error;

use serde::{Deserialize, Serialize};

use crate::model::Order;

/// An order as stored: what clients see, plus whose it is (never shown).
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    order: Order,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// A failure reading or writing orders.
#[derive(Debug, Error)]
pub enum RepoError {
    /// Redis failed.
    #[error("order store: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("order store: no answer within {0:?}")]
    Timeout(Duration),
    /// An order id was taken, then gone when read back (Redis lost data).
    #[error("order store: an order vanished between two commands")]
    Vanished,
    /// A stored order could not be read back.
    #[error("stored order is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Reads and writes orders over a shared Redis connection `C`.
#[derive(Clone, Debug)]
pub struct OrderRepo<C> {
    conn: C,
    timeout: Duration,
}

/// The Redis key of an order.
pub fn order_key(id: &str) -> String {
    format!("orders:{id}")
}

impl<C> OrderRepo<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A repository over `conn`; every call is bounded by `timeout`.
    pub fn new(conn: C, timeout: Duration) -> Self {
        Self { conn, timeout }
    }

    /// Runs `call` bounded by the timeout, once more when the connection
    /// was dropped before an answer (a dead connection is noticed only when
    /// used). Safe for both commands here: a repeated `SET … NX` whose
    /// first copy was applied finds that same order, and `GET` only reads.
    async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, RepoError>
    where
        F: Fn(C) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
                Err(_) => return Err(RepoError::Timeout(self.timeout)),
                Ok(Err(e))
                    if !retried
                        && !e.is_timeout()
                        && (e.is_connection_dropped() || e.is_io_error()) =>
                {
                    retried = true;
                }
                Ok(result) => return Ok(result?),
            }
        }
    }

    /// Stores `order`, belonging to `owner`, unless an order with its id
    /// exists; returns that existing order, or `None` when `order` was
    /// written. One `SET … NX` round trip, plus a `GET` when the id was
    /// taken (also when a retried write finds the copy its lost first reply
    /// had written).
    pub async fn insert_once(
        &self,
        order: &Order,
        owner: Option<&str>,
    ) -> Result<Option<Order>, RepoError> {
        let json = serde_json::to_string(&Stored {
            order: order.clone(),
            owner: owner.map(str::to_owned),
        })?;
        let key = order_key(&order.id);
        let written: Option<String> = self
            .bounded(|mut conn| {
                let (key, json) = (&key, &json);
                let nx = redis::SetOptions::default().conditional_set(redis::ExistenceCheck::NX);
                async move { conn.set_options(key, json, nx).await }
            })
            .await?;
        if written.is_some() {
            return Ok(None);
        }
        // Taken, by an earlier attempt at this request.
        match self.get(&order.id).await? {
            Some((existing, _)) => Ok(Some(existing)),
            None => Err(RepoError::Vanished),
        }
    }

    /// Loads the order with `id` and its owner, if any (one `GET`).
    pub async fn get(&self, id: &str) -> Result<Option<(Order, Option<String>)>, RepoError> {
        let key = order_key(id);
        let json: Option<String> = self
            .bounded(|mut conn| {
                let key = &key;
                async move { conn.get(key).await }
            })
            .await?;
        let stored: Option<Stored> = json.map(|j| serde_json::from_str(&j)).transpose()?;
        Ok(stored.map(|s| (s.order, s.owner)))
    }
}
