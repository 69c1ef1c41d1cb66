//! An in-memory [`IdempotencyStore`] with the same semantics as the Redis
//! one (atomic claim, owner fencing, expiry), for unit tests of the layer's
//! logic without I/O. Not for production: it is per-process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::StoreError;
use super::fingerprint::Fingerprint;
use super::key::StoreKey;
use super::record::{OwnerToken, Record, RecordState, StoredResponse};
use super::store::IdempotencyStore;

/// Records in a mutex-guarded map, expiring like Redis keys.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<String, (Record, Instant)>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_live<T>(
        &self,
        key: &StoreKey,
        f: impl FnOnce(&mut HashMap<String, (Record, Instant)>) -> T,
    ) -> T {
        // A poisoned lock only means another test thread panicked; the map
        // itself is still consistent (every update is a single insert).
        let mut map = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.get(key.as_str()).is_some_and(|(_, exp)| *exp <= now) {
            map.remove(key.as_str());
        }
        f(&mut map)
    }
}

impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        owner: &OwnerToken,
        lease: Duration,
    ) -> Result<Option<Record>, StoreError> {
        Ok(self.with_live(key, |map| {
            let now = Instant::now();
            if let Some((record, expires)) = map.get(key.as_str()) {
                let mut found = record.clone();
                found.ttl_ms = expires.saturating_duration_since(now).as_millis() as u64;
                return Some(found);
            }
            let record = Record {
                fingerprint: *fingerprint,
                owner: owner.clone(),
                state: RecordState::InProgress,
                ttl_ms: lease.as_millis() as u64,
            };
            map.insert(key.as_str().to_owned(), (record, now + lease));
            None
        }))
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.with_live(key, |map| match map.get_mut(key.as_str()) {
            Some((record, expires)) if record.owner == *owner => {
                record.state = RecordState::Completed(response.clone());
                *expires = Instant::now() + retention;
                true
            }
            _ => false,
        }))
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        Ok(self.with_live(key, |map| {
            let ours = map.get(key.as_str()).is_some_and(|(record, _)| {
                record.owner == *owner && record.state == RecordState::InProgress
            });
            if ours {
                map.remove(key.as_str());
            }
            ours
        }))
    }
}
