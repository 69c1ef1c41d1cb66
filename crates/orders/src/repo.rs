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
#[derive(Clone)]
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

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RepoError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RepoError::Timeout(self.timeout)),
        }
    }

    /// Stores `order`, belonging to `owner`, unless an order with its id
    /// exists; returns that existing order, or `None` when `order` was
    /// written. One `SET … NX` round trip, plus a `GET` when the id was
    /// taken.
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
        let mut conn = self.conn.clone();
        let options = redis::SetOptions::default().conditional_set(redis::ExistenceCheck::NX);
        let written: Option<String> = self.bounded(conn.set_options(&key, &json, options)).await?;
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
        let mut conn = self.conn.clone();
        let json: Option<String> = self.bounded(conn.get(order_key(id))).await?;
        let stored: Option<Stored> = json.map(|j| serde_json::from_str(&j)).transpose()?;
        Ok(stored.map(|s| (s.order, s.owner)))
    }
}
