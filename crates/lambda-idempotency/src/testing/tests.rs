//! The suite catches what it promises to: each test runs a part of it on
//! a store that breaks one promise and expects the panic naming it. The
//! broken store is the naive design (read, then write; plain writes and
//! deletes; nothing expires).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::{Phase, StoreError, StoredRecord};

#[derive(Default)]
struct Naive {
    records: Mutex<HashMap<String, StoredRecord>>,
    /// Every call fails with this, when set.
    fail: Option<fn() -> StoreError>,
}

impl Naive {
    fn put(&self, key: &StoreKey, phase: Phase, owner: &OwnerToken, payload: &[u8]) {
        let record = StoredRecord {
            phase,
            owner: owner.clone(),
            payload: payload.to_vec(),
        };
        let mut records = self.records.lock().unwrap();
        records.insert(key.as_str().to_owned(), record);
    }

    fn check(&self) -> Result<(), StoreError> {
        self.fail.map_or(Ok(()), |fail| Err(fail()))
    }
}

impl IdempotencyStore for Naive {
    async fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        _lease: Duration,
    ) -> Result<Option<StoredRecord>, StoreError> {
        self.check()?;
        let existing = self.records.lock().unwrap().get(key.as_str()).cloned();
        // The read and the write are two steps: others run in between.
        tokio::task::yield_now().await;
        if existing.is_none() {
            self.put(key, Phase::InProgress, owner, payload);
        }
        Ok(existing)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        _retention: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.put(key, Phase::Completed, owner, payload);
        Ok(true)
    }

    async fn release(&self, key: &StoreKey, _owner: &OwnerToken) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self.records.lock().unwrap().remove(key.as_str()).is_some())
    }

    async fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        _lease: Duration,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.put(key, Phase::InProgress, owner, payload);
        Ok(true)
    }
}

#[tokio::test]
#[should_panic(expected = "another owner's completion must not land")]
async fn the_contract_catches_an_unfenced_completion() {
    contract(&Naive::default()).await;
}

#[tokio::test]
#[should_panic(expected = "claimants won")]
async fn the_race_catches_a_claim_that_reads_then_writes() {
    race(&[Naive::default()], Duration::from_millis(10)).await;
}

#[tokio::test]
#[should_panic(expected = "must take the key over")]
async fn the_contract_catches_a_lease_that_never_runs_out() {
    checks::an_expired_lease_is_taken_over(&Naive::default(), Duration::from_millis(10)).await;
}

#[tokio::test]
#[should_panic(expected = "must fail with Timeout or Backend")]
async fn the_failure_check_catches_a_down_backend_reported_as_another_error() {
    let store = Naive {
        fail: Some(|| StoreError::Corrupt("down".to_owned())),
        ..Naive::default()
    };
    unreachable(&store).await;
}

#[tokio::test]
#[should_panic(expected = "succeeded")]
async fn the_failure_check_catches_a_store_that_answers_without_its_backend() {
    unreachable(&Naive::default()).await;
}

#[tokio::test]
async fn the_failure_check_accepts_backend_errors() {
    let store = Naive {
        fail: Some(|| StoreError::backend(std::io::Error::other("refused"))),
        ..Naive::default()
    };
    unreachable(&store).await;
}
