//! [`RedisConnection`]: the one Redis connection of a Lambda instance.
//!
//! Made once per cold start and shared by every invocation (and by the
//! function's own commands, through [`crate::RedisStore::connection`]):
//! - standalone Redis: one multiplexed connection, opened by the first
//!   command that needs it;
//! - cluster mode (ElastiCache Serverless, cluster mode enabled): the redis
//!   crate's async cluster connection, also made on first use, which
//!   follows `MOVED`/`ASK` redirects.
//!
//! Creating a `RedisConnection` never fails because Redis is down: the
//! function still starts, and answers `503` until Redis is back. A
//! connection that fails, or is open but useless (its replies stopped
//! coming, or it reached a read-only replica after a failover), is given
//! up, and the next command opens a fresh one ([`super::useless`]), so a
//! warm instance recovers with no cold start. A connect that fails is
//! tried again by the next command: every call is bounded by a timeout, so
//! a request fails fast instead of waiting for Redis.
//!
//! That timeout is this type's own: one timer per command, around the whole
//! command (a wait for a connect included). The store's own copy has none:
//! the store bounds each of its calls (which may be several commands) by one
//! timer of its own. The standalone connection sets no response timeout of
//! the redis crate's on top: tokio wakes its driver (an `eventfd` write,
//! and one more `epoll_wait`) for every timer started while no other timer
//! is pending, so each redundant timer costs two system calls per command.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};
use tokio::sync::OnceCell;

use super::iam::{self, Rotating};
use super::setup::{ca_bundle, connection_info, ConnectError};
use super::slot::Slot;
use super::useless::{any_read_only, is_read_only, verdict, Cluster, Inner, Single, Useless};
use super::RedisOptions;

/// A shared, self-reconnecting Redis connection, standalone or cluster.
///
/// Cheap to clone; every clone multiplexes over the same socket. Commands
/// time out after [`RedisOptions::timeout`] (an I/O error of kind
/// `TimedOut`: `RedisError::is_timeout` is true).
#[derive(Clone)]
pub struct RedisConnection {
    inner: Inner,
    /// `None` only on the store's own copy.
    timeout: Option<Duration>,
    /// Send only on this connection, fail otherwise.
    pinned: Option<u64>,
}

/// Its timeout and pinning only: never the URL (it may hold a password).
impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("timeout", &self.timeout)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A connection to `url` (`redis://`, `rediss://` for TLS, with
    /// `user:password@` for AUTH, or IAM authentication through
    /// [`RedisOptions::iam`]), made lazily on first use.
    pub fn open(url: &str, options: &RedisOptions) -> Result<Self, ConnectError> {
        let credentials = options.iam.as_ref().map(iam::credentials);
        Self::open_with(url, options, credentials)
    }

    /// [`RedisConnection::open`] with passwords from `credentials`.
    pub(crate) fn open_with(
        url: &str,
        options: &RedisOptions,
        credentials: Option<Rotating>,
    ) -> Result<Self, ConnectError> {
        // rustls needs one process-wide crypto provider; ring is the only
        // one compiled in. Installing twice is harmless (the second errs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let info = connection_info(url)?;
        let certs = match &options.ca_file {
            None => None,
            Some(path) => Some(ca_bundle(path, &info)?),
        };
        let timeout = options.timeout;
        if options.cluster {
            let mut builder = ClusterClient::builder([info])
                .connection_timeout(timeout)
                // The cluster client retries a command on another node;
                // this bounds each attempt, the outer bound the whole.
                .response_timeout(timeout)
                .retries(2);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            if let Some(credentials) = credentials {
                builder = builder.set_credentials_provider(credentials);
            }
            let client = builder.build().map_err(ConnectError::Client)?;
            let inner = Inner::Cluster(Arc::new(Cluster {
                client,
                slot: Slot::new(Arc::new(OnceCell::new())),
                timeout,
            }));
            return Ok(Self::over(inner, timeout));
        }
        let client = match certs {
            None => redis::Client::open(info),
            Some(certs) => redis::Client::build_with_tls(info, certs),
        }
        .map_err(ConnectError::Client)?;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        if let Some(credentials) = credentials {
            config = config.set_credentials_provider(credentials);
        }
        let inner = Inner::Single(Arc::new(Single {
            client,
            config,
            slot: Slot::new(Arc::new(OnceCell::new())),
            timeout,
        }));
        Ok(Self::over(inner, timeout))
    }

    fn over(inner: Inner, timeout: Duration) -> Self {
        Self {
            inner,
            timeout: Some(timeout),
            pinned: None,
        }
    }
}

/// The standalone connection in `conn`, opened on first use.
async fn single(
    single: &Single,
    conn: &OnceCell<MultiplexedConnection>,
) -> RedisResult<MultiplexedConnection> {
    if let Some(open) = conn.get() {
        return Ok(open.clone());
    }
    // Boxed: the connect future is large, and every command's future would
    // otherwise carry (and move) its space.
    let connect = || {
        Box::pin(
            single
                .client
                .get_multiplexed_async_connection_with_config(&single.config),
        )
    };
    let open = conn.get_or_try_init(connect).await?;
    Ok(open.clone())
}

/// The cluster connection in `conn`, opened on first use.
async fn cluster(
    client: &ClusterClient,
    conn: &OnceCell<ClusterConnection>,
) -> RedisResult<ClusterConnection> {
    let conn = conn
        .get_or_try_init(|| client.get_async_connection())
        .await?;
    Ok(conn.clone())
}

impl RedisConnection {
    /// The same connection without the per-command timeout, for a caller
    /// that bounds its calls itself.
    pub(crate) fn unbounded(self) -> Self {
        Self {
            timeout: None,
            ..self
        }
    }

    /// The same connection, each command bounded by `timeout`.
    pub(crate) fn bounded(&self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// Which connection the next command goes to (a number that names one
    /// socket), for [`Self::retire`] and [`Self::pinned_to`].
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// Retires connection `generation` when a caller bounding its own calls
    /// gave up waiting for a reply on it, unless other replies came back on
    /// it within the timeout.
    pub(crate) fn retire(&self, generation: u64) {
        self.inner.retire(generation, Useless::Silent);
    }

    /// The same connection, whose commands go to connection `generation`
    /// or fail without being sent ([`is_moved`]): for a command that must
    /// reach the server an earlier one reached.
    pub(crate) fn pinned_to(&self, generation: u64) -> Self {
        Self {
            pinned: Some(generation),
            ..self.clone()
        }
    }

    /// Sends `request` (made on connection `generation`), bounded by the
    /// timeout; gives the connection up when the result says it is useless.
    fn send<'a, T: Send + 'a>(
        &'a self,
        generation: u64,
        request: impl std::future::Future<Output = RedisResult<T>> + Send + 'a,
        reached_replica: fn(&T) -> bool,
    ) -> RedisFuture<'a, T> {
        if self.pinned.is_some_and(|pinned| pinned != generation) {
            return Box::pin(std::future::ready(Err(moved())));
        }
        let (inner, timeout) = (&self.inner, self.timeout);
        Box::pin(async move {
            let result = bounded(timeout, request).await;
            match verdict(&result, reached_replica) {
                Some(why) => inner.retire(generation, why),
                None => inner.heard(generation),
            }
            result
        })
    }
}

const MOVED: &str = "the connection was replaced since the earlier command";

fn moved() -> RedisError {
    RedisError::from((ErrorKind::Client, MOVED))
}

/// Whether `error` is a pinned command refused because its connection was
/// replaced ([`RedisConnection::pinned_to`]); it was not sent.
pub(crate) fn is_moved(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Client && error.to_string().contains(MOVED)
}

/// `request` bounded by `timeout`, if any.
async fn bounded<T>(
    timeout: Option<Duration>,
    request: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    let Some(timeout) = timeout else {
        return request.await;
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from Redis within the command timeout",
        )
        .into()),
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &self.inner {
            Inner::Single(shared) => {
                let (generation, conn) = shared.slot.get();
                let request = async move {
                    let mut conn = single(shared, &conn).await?;
                    conn.req_packed_command(cmd).await
                };
                self.send(generation, request, is_read_only)
            }
            Inner::Cluster(shared) => {
                let (generation, conn) = shared.slot.get();
                let request = async move {
                    let mut conn = cluster(&shared.client, &conn).await?;
                    conn.req_packed_command(cmd).await
                };
                self.send(generation, request, is_read_only)
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &self.inner {
            Inner::Single(shared) => {
                let (generation, conn) = shared.slot.get();
                let request = async move {
                    let mut conn = single(shared, &conn).await?;
                    conn.req_packed_commands(pipeline, offset, count).await
                };
                self.send(generation, request, any_read_only)
            }
            Inner::Cluster(shared) => {
                let (generation, conn) = shared.slot.get();
                let request = async move {
                    let mut conn = cluster(&shared.client, &conn).await?;
                    conn.req_packed_commands(pipeline, offset, count).await
                };
                self.send(generation, request, any_read_only)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(single) => single.client.get_connection_info().redis_settings().db(),
            Inner::Cluster(_) => 0,
        }
    }
}
