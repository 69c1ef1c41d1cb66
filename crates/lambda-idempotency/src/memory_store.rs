//! [`MemoryStore`]: an in-memory [`IdempotencyStore`] with the same
//! semantics as the real stores (atomic claim, owner fencing, expiry).
//!
//! For unit tests of your own handlers behind the layer, and of this
//! crate's request state machine, without a Redis server. It is per
//! process, so it cannot deduplicate across Lambda instances: never use it
//! in a deployed function.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{IdempotencyStore, Phase, StoreError, StoredRecord};
use crate::{OwnerToken, StoreKey};

/// Records in a mutex-guarded map, expiring like Redis keys (on tokio's
/// clock, so tests with paused time can expire leases instantly).
///
/// ```
/// use lambda_http::{service_fn, tower::Layer, Body, Request, Response};
/// use lambda_idempotency::{IdempotencyLayer, MemoryStore};
///
/// let layer = IdempotencyLayer::builder(MemoryStore::new()).build();
/// let service = layer.layer(service_fn(|_req: Request| async {
///     Ok::<_, lambda_http::Error>(Response::new(Body::from("created")))
/// }));
/// # let _ = service;
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, (StoredRecord, Instant)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live records (for tests' assertions).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|(_, exp)| *exp > now).count()
    }

    /// Whether no record is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (StoredRecord, Instant)>> {
        // A poisoned lock only means another test thread panicked; the map
        // itself is still consistent (every update is a single insert).
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the key's live record (expired ones are removed first).
    fn with_live<T>(&self, key: &StoreKey, f: impl FnOnce(&mut Entry<'_>) -> T) -> T {
        let mut map = self.lock();
        let now = Instant::now();
        if map.get(key.as_str()).is_some_and(|(_, exp)| *exp <= now) {
            map.remove(key.as_str());
        }
        f(&mut Entry {
            map: &mut map,
            key: key.as_str(),
            now,
        })
    }
}

struct Entry<'a> {
    map: &'a mut HashMap<String, (StoredRecord, Instant)>,
    key: &'a str,
    now: Instant,
}

impl Entry<'_> {
    fn get(&self) -> Option<&StoredRecord> {
        self.map.get(self.key).map(|(record, _)| record)
    }

    fn owned_in_progress(&self, owner: &OwnerToken) -> bool {
        self.get()
            .is_some_and(|r| r.owner == *owner && r.phase == Phase::InProgress)
    }

    fn put(&mut self, phase: Phase, owner: &OwnerToken, payload: &[u8], ttl: Duration) {
        let record = StoredRecord {
            phase,
            owner: owner.clone(),
            payload: payload.to_vec(),
        };
        self.map
            .insert(self.key.to_owned(), (record, self.now + ttl));
    }
}

impl IdempotencyStore for MemoryStore {
    /// Calls never wait.
    fn max_call_time(&self) -> Option<Duration> {
        Some(Duration::ZERO)
    }

    async fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<Option<StoredRecord>, StoreError> {
        Ok(self.with_live(key, |entry| {
            if let Some(existing) = entry.get() {
                return Some(existing.clone());
            }
            entry.put(Phase::InProgress, owner, payload, lease);
            None
        }))
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with_live(key, |entry| {
            if entry.get().is_some_and(|r| r.owner != *owner) {
                return false;
            }
            entry.put(Phase::Completed, owner, payload, retention);
            true
        }))
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        Ok(self.with_live(key, |entry| {
            let ours = entry.owned_in_progress(owner);
            if ours {
                entry.map.remove(entry.key);
            }
            ours
        }))
    }

    async fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with_live(key, |entry| {
            let ours = entry.owned_in_progress(owner);
            if ours {
                entry.put(Phase::InProgress, owner, payload, lease);
            }
            ours
        }))
    }
}
