//! The persistence boundary of the layer: the three operations it needs,
//! each fenced by the caller's [`OwnerToken`].
//!
//! Implementations: [`super::RedisStore`] (production, one round trip per
//! call) and [`super::MemoryStore`] (unit tests of the layer's logic).

use std::future::Future;
use std::time::Duration;

use super::error::StoreError;
use super::fingerprint::Fingerprint;
use super::key::StoreKey;
use super::record::{OwnerToken, Record, StoredResponse};

/// Where idempotency records live.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Atomically creates an in-progress record for `owner` that expires
    /// after `lease`, unless a record exists; returns the existing record
    /// (`None` when this call created it).
    fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        owner: &OwnerToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Marks the record completed with `response`, kept for `retention`,
    /// only if `owner` still holds it. Returns whether it was written.
    /// Repeating a successful call is harmless (it writes the same data).
    fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        response: &StoredResponse,
        retention: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes the record only if `owner` holds it and it is still in
    /// progress, so the client can retry at once. Returns whether it did.
    fn release(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
