//! [`Flaky`]: a store for the request-flow tests that fails on purpose
//! and counts its calls, over a [`MemoryStore`] that several instances can
//! share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{IdempotencyStore, MemoryStore, OwnerToken, StoreError, StoreKey, StoredRecord};

/// A store that fails on purpose: the next `lost_claims` claims are
/// applied but answered with a timeout (a lost reply), the next
/// `refused_claims` fail before being applied, the next `failed_releases`
/// releases fail, and every completion fails while `failing_completions`.
/// Counts claims and releases.
#[derive(Default)]
pub(super) struct Flaky {
    pub(super) inner: Arc<MemoryStore>,
    pub(super) lost_claims: AtomicUsize,
    pub(super) refused_claims: AtomicUsize,
    pub(super) failed_releases: AtomicUsize,
    pub(super) failing_completions: AtomicBool,
    pub(super) claims: AtomicUsize,
    pub(super) releases: AtomicUsize,
}

impl Flaky {
    /// A store over `inner`, failing nothing yet.
    pub(super) fn over(inner: &Arc<MemoryStore>) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::clone(inner),
            ..Self::default()
        })
    }

    pub(super) fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn timeout() -> StoreError {
    StoreError::Timeout(Duration::from_millis(500))
}

impl IdempotencyStore for Arc<Flaky> {
    async fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<Option<StoredRecord>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        if take(&self.refused_claims) {
            return Err(timeout());
        }
        let found = self.inner.claim(key, owner, payload, lease).await;
        if take(&self.lost_claims) {
            return Err(timeout());
        }
        found
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> Result<bool, StoreError> {
        if self.failing_completions.load(Ordering::SeqCst) {
            return Err(timeout());
        }
        self.inner.complete(key, owner, payload, retention).await
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        if take(&self.failed_releases) {
            return Err(timeout());
        }
        self.inner.release(key, owner).await
    }

    async fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew(key, owner, payload, lease).await
    }
}
