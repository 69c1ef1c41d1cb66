//! [`RedisConnection`]: the one Redis connection of a Lambda instance.
//!
//! Made once per cold start and shared by every invocation (and by the
//! function's own commands, through [`crate::RedisStore::connection`]):
//! - standalone Redis: a lazy `ConnectionManager`. Creating it never fails
//!   because Redis is down (the function still starts, and answers `503`
//!   until Redis is back), and it reconnects by itself, so a warm instance
//!   recovers with no cold start;
//! - cluster mode (ElastiCache Serverless, cluster mode enabled): the redis
//!   crate's async cluster connection, made on first use (and retried on
//!   the next call if that fails), which follows `MOVED`/`ASK` redirects.
//!
//! Reconnect retries are few and short because every call is also bounded
//! by a timeout: a request must fail fast, not hang.
//!
//! A connection that is open but useless is **retired**: one that let a
//! command time out (a black-holed or half-open socket, a node gone without
//! a reset: every later reply would queue behind the missing one), or one
//! that reached a read-only replica (after a failover, the old primary is
//! demoted but still answers, and DNS now names another node). The redis
//! crate reconnects only when the socket fails, so either would otherwise
//! answer `503` until the socket died, minutes later. The command that saw
//! it still fails (the request gets `503` and `Retry-After`); the next one
//! gets a fresh connection, made lazily, resolving the endpoint again.
//! Commands already in flight on the retired connection finish on it, and
//! it closes once they have (or its socket fails). A retired command may
//! still be applied late; the records' owner tokens fence that, as they
//! fence a reply lost with its connection.
//!
//! That timeout is this type's own: one timer per command, around the whole
//! command (a wait for a reconnect included). The store's own copy has none:
//! the store bounds each of its calls (which may be several commands) by one
//! timer of its own. The standalone connection sets no response timeout of
//! the redis crate's on top: tokio wakes its driver (an `eventfd` write,
//! and one more `epoll_wait`) for every timer started while no other timer
//! is pending, so each redundant timer costs two system calls per command.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, Value,
};
use tokio::sync::OnceCell;

use super::iam::{self, Rotating};
use super::RedisOptions;

/// Why a Redis connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The CA bundle could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The client could not be built from the URL (the URL itself is not
    /// repeated: it may hold a password).
    #[error("invalid Redis URL or options: {0}")]
    Client(#[source] redis::RedisError),
}

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
}

#[derive(Clone)]
enum Inner {
    Single(Arc<Single>),
    Cluster(Arc<Cluster>),
}

/// A standalone connection, and what it takes to make a fresh one.
struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    slot: Slot<ConnectionManager>,
}

/// A cluster client, and its connection made on first use.
struct Cluster {
    client: ClusterClient,
    slot: Slot<Arc<OnceCell<ClusterConnection>>>,
}

/// The connection in use, numbered so that the commands that saw one
/// connection fail retire it once, not once each.
struct Slot<T>(RwLock<(u64, T)>);

impl<T: Clone> Slot<T> {
    fn new(conn: T) -> Self {
        Self(RwLock::new((0, conn)))
    }

    fn get(&self) -> (u64, T) {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `fresh()` in place of connection `generation`, unless it was
    /// already replaced.
    fn replace(&self, generation: u64, fresh: impl FnOnce() -> Option<T>) -> bool {
        let mut current = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if current.0 != generation {
            return false;
        }
        let Some(conn) = fresh() else { return false };
        *current = (generation + 1, conn);
        true
    }
}

impl Inner {
    fn generation(&self) -> u64 {
        match self {
            Self::Single(single) => single.slot.get().0,
            Self::Cluster(cluster) => cluster.slot.get().0,
        }
    }

    /// Replaces connection `generation` by a fresh one, made lazily.
    fn retire(&self, generation: u64, why: &str) {
        let replaced = match self {
            Self::Single(single) => single.slot.replace(generation, || {
                let (client, config) = (single.client.clone(), single.config.clone());
                ConnectionManager::new_lazy_with_config(client, config).ok()
            }),
            Self::Cluster(cluster) => cluster
                .slot
                .replace(generation, || Some(Arc::new(OnceCell::new()))),
        };
        if replaced {
            tracing::warn!("Redis connection retired ({why}); the next command opens a new one");
        }
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
        let certs = match &options.ca_file {
            None => None,
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|source| ConnectError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?),
            }),
        };
        let timeout = options.timeout;
        if options.cluster {
            let mut builder = ClusterClient::builder([url])
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
            }));
            return Ok(Self {
                inner,
                timeout: Some(timeout),
            });
        }
        let client = match certs {
            None => redis::Client::open(url),
            Some(certs) => redis::Client::build_with_tls(url, certs),
        }
        .map_err(ConnectError::Client)?;
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        if let Some(credentials) = credentials {
            config = config.set_credentials_provider(credentials);
        }
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(ConnectError::Client)?;
        let inner = Inner::Single(Arc::new(Single {
            client,
            config,
            slot: Slot::new(manager),
        }));
        Ok(Self {
            inner,
            timeout: Some(timeout),
        })
    }
}

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
            inner: self.inner.clone(),
            timeout: Some(timeout),
        }
    }

    /// Which connection the next command goes to, for [`Self::retire`].
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// Retires connection `generation` (see the module docs) when a caller
    /// bounding its own calls gave up waiting for a reply on it.
    pub(crate) fn retire(&self, generation: u64) {
        self.inner.retire(generation, "no reply within the timeout");
    }

    /// Sends `request` (made on connection `generation`), bounded by the
    /// timeout; retires the connection when the result says it is useless.
    fn send<'a, T: Send + 'a>(
        &'a self,
        generation: u64,
        request: impl std::future::Future<Output = RedisResult<T>> + Send + 'a,
        reached_replica: fn(&T) -> bool,
    ) -> RedisFuture<'a, T> {
        let (inner, timeout) = (&self.inner, self.timeout);
        Box::pin(async move {
            let result = bounded(timeout, request).await;
            match &result {
                Err(e) if e.is_timeout() => inner.retire(generation, "no reply within the timeout"),
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) => {
                    inner.retire(generation, "it reached a read-only replica")
                }
                Ok(value) if reached_replica(value) => {
                    inner.retire(generation, "it reached a read-only replica")
                }
                _ => {}
            }
            result
        })
    }
}

/// Whether `value` is Redis refusing a write because it is a replica.
fn is_read_only(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::ReadOnly))
}

#[allow(clippy::ptr_arg)] // a `fn(&T) -> bool` with `T = Vec<Value>`
fn any_read_only(values: &Vec<Value>) -> bool {
    values.iter().any(is_read_only)
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
            Inner::Single(single) => {
                let (generation, mut conn) = single.slot.get();
                let request = async move { conn.req_packed_command(cmd).await };
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
            Inner::Single(single) => {
                let (generation, mut conn) = single.slot.get();
                let request =
                    async move { conn.req_packed_commands(pipeline, offset, count).await };
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
            Inner::Single(single) => single.slot.get().1.get_db(),
            Inner::Cluster(_) => 0,
        }
    }
}
