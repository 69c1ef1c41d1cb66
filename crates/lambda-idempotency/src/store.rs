//! The persistence boundary: the four operations the layer needs from a
//! store, each fenced by the caller's [`OwnerToken`].
//!
//! A store keeps, per [`StoreKey`], one record: a [`Phase`], the owner
//! token of the invocation that claimed it, and an opaque payload that only
//! the layer reads (fingerprint, lease end, stored response). A store never
//! looks inside the payload; it only has to make each operation atomic and
//! expire records after the given time. That is what makes other backends
//! (DynamoDB conditional writes, a SQL row with a version) straightforward.
//!
//! Implementations here: `RedisStore` (feature `redis`) and
//! `DynamoDbStore` (feature `dynamodb`), one round trip per call on the
//! common path, and [`crate::MemoryStore`] (single process, for unit
//! tests). The `testing` feature's `lambda_idempotency::testing::contract`
//! checks any implementation against everything below, on its real
//! backend.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::key::StoreKey;

/// Where idempotency records live.
///
/// Every method must be atomic with respect to the others on the same key,
/// and safe to repeat after a lost reply (the layer may retry a call once
/// when a connection drops): a repeated `claim` returns the record the first
/// call created, and a repeated `complete`, `release` or `renew` by the
/// same owner changes nothing more.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Creates the record `(InProgress, owner, payload)`, expiring after
    /// `lease`, unless a record exists. Returns the existing record, or
    /// `None` when this call created it.
    fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> impl Future<Output = Result<Option<StoredRecord>, StoreError>> + Send;

    /// If the record is absent (its lease ran out and nobody claimed it
    /// since) or its owner is `owner` (in either phase), writes
    /// `(Completed, owner, payload)` expiring after `retention`. Returns
    /// whether it did. A record of another owner is never touched.
    fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// If the record is `InProgress` and owned by `owner`, deletes it so a
    /// retry can run at once. Returns whether it did.
    fn release(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// If the record is `InProgress` and owned by `owner`, replaces its
    /// payload and makes it expire after `lease` from now (a heartbeat while
    /// a slow handler runs). Returns whether it did.
    fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The longest any one call of this store can take, when the store
    /// bounds its calls itself. The layer bounds each call by the
    /// invocation's deadline too, and starts a timer for that only when
    /// less time than this is left. `None` (the default): every call gets
    /// that timer.
    fn max_call_time(&self) -> Option<Duration> {
        None
    }

    /// Whether a completion counts only once the store has confirmed it
    /// (replicas acknowledged it, say). Then a completion that fails for
    /// any reason, the invocation's deadline included, is answered `503`,
    /// never with the handler's response, which a failover could still
    /// undo. `false` (the default): a failed completion is logged and the
    /// handler's response is sent all the same.
    fn confirms_writes(&self) -> bool {
        false
    }
}

/// Whether a record is still being worked on or holds a final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Claimed; its owner is running the handler (or died, and the lease runs).
    InProgress,
    /// Finished; its payload holds the response replayed to retries.
    Completed,
}

/// A record as a store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// In progress or completed.
    pub phase: Phase,
    /// The token of the invocation that claimed the record.
    pub owner: OwnerToken,
    /// The layer's opaque payload, exactly as it was written.
    pub payload: Vec<u8>,
}

/// A token naming the invocation that holds a claim.
///
/// `complete`, `release` and `renew` act only when the record still carries
/// the caller's token, so an invocation whose lease expired can never
/// overwrite or delete its successor's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerToken(String);

impl OwnerToken {
    /// A fresh token, unique across instances and invocations: a random
    /// per-process prefix and a per-process counter (one random draw per
    /// process rather than a `getrandom` system call per request).
    pub(crate) fn generate() -> Self {
        static PROCESS: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("{prefix}-{n}"))
    }

    /// The token as stored. It never contains a newline or a NUL byte.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for OwnerToken {
    /// A token read back from a store.
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// A store operation that failed. The layer answers `503` when this happens
/// before the handler ran (the handler does not run), and logs it when it
/// happens after.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the store's own timeout.
    #[error("the idempotency store did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend failed (connection refused, error reply, …).
    #[error("the idempotency store failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The write was applied but the store cannot confirm it is durable
    /// yet: something the store relies on to keep it (replicas, a quorum)
    /// did not acknowledge it in time, so a failover could still undo it.
    /// The layer answers `503` and does not try the write again: the store
    /// has waited for that acknowledgement already.
    #[error("the write was applied but is not yet durable: {reason}")]
    NotDurable {
        /// What did not confirm it, in the store's words.
        reason: String,
    },
    /// The store holds something this version cannot read.
    #[error("the idempotency store returned an unreadable record: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tokens_are_unique_and_have_no_separators() {
        let tokens: std::collections::HashSet<_> =
            (0..1000).map(|_| OwnerToken::generate()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens
            .iter()
            .all(|t| !t.as_str().contains('\n') && !t.as_str().contains('\0')));
    }
}
