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

use crate::config::Config;

/// Why the connection could not be set up (at start-up, so fatal).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `REDIS_CA_FILE` could not be read.
    #[error("invalid configuration: REDIS_CA_FILE: cannot read {path}: {source}")]
    CaFile {
        /// The file named by the variable.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The client could not be built from `REDIS_URL` (the URL itself is
    /// not repeated: it may hold a password).
    #[error("invalid configuration: REDIS_URL: {0}")]
    Client(#[source] redis::RedisError),
}

/// Builds the instance's connection manager from `config`: `REDIS_URL`,
/// optionally trusting `REDIS_CA_FILE` for TLS, with connects and responses
/// bounded by `REDIS_TIMEOUT_MS`.
pub fn connect(config: &Config) -> Result<ConnectionManager, ConnectError> {
    // rustls needs one process-wide crypto provider; ring is the only one
    // compiled in. Installing twice is harmless (the second call errs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match &config.redis_ca_file {
        None => redis::Client::open(config.redis_url.as_str()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(config.redis_url.as_str(), certs)
        }
    }
    .map_err(ConnectError::Client)?;
    let timeout = config.redis_timeout;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, manager_config).map_err(ConnectError::Client)
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
            // A response timeout is not retried: the server may be slow, not gone.
            Ok(Err(e))
                if !retried
                    && !e.is_timeout()
                    && (e.is_connection_dropped() || e.is_io_error()) =>
            {
                tracing::debug!(error = %e, "redis connection dropped; retrying once");
                retried = true;
            }
            Ok(result) => return result.map_err(RedisCallError::from),
        }
    }
}
