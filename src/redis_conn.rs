//! The one Redis connection of a Lambda instance.
//!
//! Made once per cold start and shared by every invocation:
//! - standalone Redis: a lazy `ConnectionManager`. Creating it never fails
//!   because Redis is down (the function still starts, and answers `503`
//!   until Redis is back), and it reconnects by itself, so a warm instance
//!   recovers with no cold start;
//! - cluster mode (`REDIS_CLUSTER=true`, e.g. ElastiCache Serverless): the
//!   redis crate's async cluster connection, made on first use (and retried
//!   on the next request if that fails), which follows `MOVED`/`ASK`
//!   redirects and reconnects by itself.
//!
//! Both sit behind [`RedisConn`], so the stores do not care which it is.
//! Every key the function uses is a single key per command or script, so
//! nothing needs hash tags to stay in one slot.
//! Reconnect retries are few and short because every call is also bounded
//! by `tokio::time::timeout`: a request must fail fast, not hang.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, TlsCertificates, Value};
use tokio::sync::OnceCell;

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

/// The instance's Redis connection, standalone or cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// A standalone (or replicated, cluster-mode-disabled) Redis.
    Single(ConnectionManager),
    /// A cluster-mode Redis, connected on first use.
    Cluster(LazyCluster),
}

/// A cluster connection made on first use and shared afterwards.
#[derive(Clone)]
pub struct LazyCluster(Arc<(ClusterClient, OnceCell<ClusterConnection>)>);

impl LazyCluster {
    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let (client, conn) = &*self.0;
        let conn = conn
            .get_or_try_init(|| client.get_async_connection())
            .await?;
        Ok(conn.clone())
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(lazy) => {
                Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                lazy.get()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

/// Builds the instance's connection from `config`: `REDIS_URL` (standalone,
/// or a cluster seed node when `REDIS_CLUSTER` is set), optionally trusting
/// `REDIS_CA_FILE` for TLS, with connects and responses bounded by
/// `REDIS_TIMEOUT_MS`.
pub fn connect(config: &Config) -> Result<RedisConn, ConnectError> {
    // rustls needs one process-wide crypto provider; ring is the only one
    // compiled in. Installing twice is harmless (the second call errs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = match &config.redis_ca_file {
        None => None,
        Some(path) => Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(path).map_err(|source| ConnectError::CaFile {
                path: path.display().to_string(),
                source,
            })?),
        }),
    };
    let url = config.redis_url.as_str();
    let timeout = config.redis_timeout;
    if config.redis_cluster {
        let mut builder = ClusterClient::builder([url])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        if let Some(certs) = certs {
            builder = builder.certs(certs);
        }
        let client = builder.build().map_err(ConnectError::Client)?;
        return Ok(RedisConn::Cluster(LazyCluster(Arc::new((
            client,
            OnceCell::new(),
        )))));
    }
    let client = match certs {
        None => redis::Client::open(url),
        Some(certs) => redis::Client::build_with_tls(url, certs),
    }
    .map_err(ConnectError::Client)?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(100));
    ConnectionManager::new_lazy_with_config(client, manager_config)
        .map(RedisConn::Single)
        .map_err(ConnectError::Client)
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
