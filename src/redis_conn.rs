//! The one Redis connection of a Lambda instance.
//!
//! Made once per cold start and shared by every invocation. It is a lazy
//! `ConnectionManager`: creating it never fails because Redis is down (the
//! function still starts, and answers `503` until Redis is back), and it
//! reconnects by itself, so a warm instance recovers with no cold start.
//! Reconnect retries are few and short because every call is also bounded
//! by `tokio::time::timeout`: a request must fail fast, not hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Builds the instance's connection manager for `url`, bounding connects
/// and responses by `timeout`.
pub fn connect(url: &str, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// A Redis call that failed, or did not answer in time.
#[derive(Debug, thiserror::Error)]
pub enum RedisCallError {
    /// No answer within the command timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("redis call failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Runs one Redis call bounded by `timeout`, retrying once when the
/// connection was dropped (the `ConnectionManager` reconnects underneath;
/// over RESP2 a dead connection is only noticed when used, so the first call
/// after an outage would otherwise fail). Only for calls that are safe to
/// repeat: every caller here is fenced or writes the same value again.
pub async fn call<T, F, Fut>(timeout: Duration, mut op: F) -> Result<T, RedisCallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut retried = false;
    loop {
        match tokio::time::timeout(timeout, op()).await {
            Err(_) => return Err(RedisCallError::Timeout(timeout)),
            Ok(Err(e)) if !retried && (e.is_connection_dropped() || e.is_io_error()) => {
                tracing::debug!(error = %e, "redis connection dropped; retrying once");
                retried = true;
            }
            Ok(result) => return result.map_err(RedisCallError::from),
        }
    }
}
