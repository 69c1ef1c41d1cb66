//! When [`super::RedisConnection`] gives up a connection that is open but
//! useless, and makes the next command open a fresh one.
//!
//! The redis crate reconnects only when a socket fails. Two kinds of
//! connection never fail and never work:
//! - one whose replies stopped coming (a black-holed or half-open socket, a
//!   node gone without a reset): every later reply would queue behind the
//!   missing one, so every command times out;
//! - one that reached a read-only replica: after a failover the old primary
//!   may stay up, demoted, refusing every write (`READONLY`), while DNS
//!   already names the new one.
//!
//! Either would answer `503` until the socket died, minutes later. Instead
//! the request that met it gets `503` (and `Retry-After`), and the next
//! command gets a fresh connection, made lazily, resolving the endpoint
//! again. A timeout alone does not give a connection up while other
//! replies keep coming on it within the timeout: it is slow (say, queued
//! behind a blocking `WAIT`), not useless. (With one invocation at a time
//! nothing else is in flight, so a server slower than the timeout costs a
//! reconnect per timeout.) A socket that failed is replaced the same way:
//! the redis crate's own reconnecting manager is not used, so only the
//! [`Slot`] opens sockets, and a connection's number names exactly one
//! socket; a caller can then require that a command go where an earlier
//! one went.
//!
//! Commands in flight on a retired connection finish or time out there;
//! the socket closes when the last of them is done. A command applied late
//! on it is fenced by the records' owner tokens, as a reply lost with its
//! connection is.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisResult, ServerErrorKind, Value};
use tokio::sync::OnceCell;

use super::slot::Slot;

#[derive(Clone)]
pub(super) enum Inner {
    Single(Arc<Single>),
    Cluster(Arc<Cluster>),
}

/// A standalone client, and its connection made on first use. Only the
/// slot ever opens a socket (no reconnect behind its back), so a
/// connection's number names exactly one socket.
pub(super) struct Single {
    pub(super) client: redis::Client,
    pub(super) config: redis::AsyncConnectionConfig,
    pub(super) slot: Slot<Arc<OnceCell<MultiplexedConnection>>>,
    /// How long a connection may stay silent before a timeout retires it.
    pub(super) timeout: Duration,
}

/// A cluster client, and its connection made on first use.
pub(super) struct Cluster {
    pub(super) client: ClusterClient,
    pub(super) slot: Slot<Arc<OnceCell<ClusterConnection>>>,
    pub(super) timeout: Duration,
}

/// Why a connection is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Useless {
    /// A command timed out, and nothing came back for a whole timeout.
    Silent,
    /// It reached a read-only replica.
    ReadOnly,
    /// Its socket failed (or could not be opened).
    Failed,
}

impl Inner {
    pub(super) fn generation(&self) -> u64 {
        match self {
            Self::Single(single) => single.slot.generation(),
            Self::Cluster(cluster) => cluster.slot.generation(),
        }
    }

    /// Notes that a reply came back on connection `generation`.
    pub(super) fn heard(&self, generation: u64) {
        match self {
            Self::Single(single) => single.slot.heard(generation),
            Self::Cluster(cluster) => cluster.slot.heard(generation),
        }
    }

    /// Replaces connection `generation` by a fresh one, made lazily.
    pub(super) fn retire(&self, generation: u64, why: Useless) {
        let replaced = match self {
            Self::Single(single) => {
                let quiet = (why == Useless::Silent).then_some(single.timeout);
                single.slot.replace(generation, quiet, fresh)
            }
            // The cluster client replaces a failed node connection itself.
            Self::Cluster(_) if why == Useless::Failed => false,
            Self::Cluster(cluster) => {
                let quiet = (why == Useless::Silent).then_some(cluster.timeout);
                cluster.slot.replace(generation, quiet, fresh)
            }
        };
        if replaced && why != Useless::Failed {
            tracing::warn!(
                reason = ?why,
                "Redis connection retired; the next command opens a new one"
            );
        }
    }
}

/// A connection not opened yet: the next command that needs it opens it.
fn fresh<C>() -> Option<Arc<OnceCell<C>>> {
    Some(Arc::new(OnceCell::new()))
}

/// What `result` says of the connection it came from: `None` when it
/// answered and is of use.
pub(super) fn verdict<T>(
    result: &RedisResult<T>,
    reached_replica: fn(&T) -> bool,
) -> Option<Useless> {
    match result {
        Ok(value) if reached_replica(value) => Some(Useless::ReadOnly),
        Ok(_) => None,
        Err(e) if e.is_timeout() => Some(Useless::Silent),
        Err(e) if is_read_only_error(e) => Some(Useless::ReadOnly),
        Err(e) if e.is_io_error() || e.is_unrecoverable_error() => Some(Useless::Failed),
        Err(_) => None,
    }
}

/// `READONLY`, alone, or raised inside a script (before Redis 7 it comes
/// back wrapped in a script error).
fn is_read_only_error(error: &RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(ServerErrorKind::ReadOnly)
        || error.to_string().contains("READONLY")
}

/// Whether `value` is Redis refusing a write because it is a replica.
pub(super) fn is_read_only(value: &Value) -> bool {
    match value {
        Value::ServerError(e) => {
            e.kind() == Some(ServerErrorKind::ReadOnly)
                || e.details().is_some_and(|d| d.contains("READONLY"))
        }
        _ => false,
    }
}

/// Whether any reply of a pipeline is a replica's refusal.
#[allow(clippy::ptr_arg)] // a `fn(&T) -> bool` with `T = Vec<Value>`
pub(super) fn any_read_only(values: &Vec<Value>) -> bool {
    values.iter().any(is_read_only)
}
