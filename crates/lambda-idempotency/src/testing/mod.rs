//! The store contract as a test suite (feature `testing`): any
//! [`IdempotencyStore`], this crate's or your own, proves with a few lines
//! that it keeps every promise the layer relies on.
//!
//! Modelled on `object_store`'s integration suite for custom stores: each
//! public function drives a live store through one part of the contract
//! and panics, naming the broken promise, when the store breaks it.
//!
//! - [`contract`]: claim, replay (the existing record returned), in
//!   progress, mismatch (the payload returned intact), fenced completion,
//!   release and renewal, a repeated call after a lost reply, takeover after
//!   expiry, renewal past the first lease, expiry of completed records, and
//!   races of many claimants on one key;
//! - [`race`]: the races alone, over several independent clients of one
//!   backend (one winner, whichever client each claimant used);
//! - [`unreachable()`] and [`outage`]: what a store returns when its backend
//!   fails (a timeout or a backend error, within its own time bound) and
//!   that it works again once the backend is back.
//!
//! The suite waits in real time (leases of tens of milliseconds, see
//! [`DEFAULT_LEASE`]), so it runs against any backend, local or remote.
//! Every check uses fresh random keys under the prefix `contract`, and
//! every record it writes expires within seconds: it can run again and
//! again against a shared table or database, and deletes nothing else.
//! Like `object_store`'s suite, it is for tests only.
//!
//! # Your own store
//!
//! ```
//! use lambda_idempotency::{testing, MemoryStore};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let store = MemoryStore::new(); // your store, on its real backend
//!     testing::contract(&store).await;
//! }
//! ```
//!
//! In your crate, with
//!
//! ```toml
//! [dev-dependencies]
//! lambda-idempotency = { version = "0.1", features = ["testing"] }
//! ```
//!
//! a `#[tokio::test]` that builds your store on a backend the test
//! started and awaits `testing::contract(&store)` gives the same proof; add
//! [`outage`] with a closure that stops and restarts that backend.

mod checks;
mod failure;
mod races;

use std::time::Duration;

use crate::key::IdempotencyKey;
use crate::{IdempotencyStore, OwnerToken, StoreKey};

pub use failure::{outage, unreachable, Backend};
pub use races::race;

/// The short lease [`contract`] gives the records it lets expire.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(80);

/// A lease no check outlives: records that must stay live for a whole
/// check get it.
const LONG: Duration = Duration::from_secs(10);

/// Runs the whole contract on `store` with [`DEFAULT_LEASE`].
///
/// # Panics
///
/// When the store breaks a promise (the message names it), or fails a call
/// its backend should have answered.
pub async fn contract<St: IdempotencyStore>(store: &St) {
    contract_with_lease(store, DEFAULT_LEASE).await;
}

/// [`contract`] with `lease` for the records it lets expire: longer for a
/// backend whose round trips take more than a few milliseconds. The suite
/// waits about twice `lease` for each expiry.
///
/// # Panics
///
/// As [`contract`]; also when `lease` is zero.
pub async fn contract_with_lease<St: IdempotencyStore>(store: &St, lease: Duration) {
    assert!(!lease.is_zero(), "contract: the lease must not be zero");
    checks::claim_replay_and_mismatch(store).await;
    checks::only_the_owner_acts(store).await;
    checks::a_repeated_call_changes_nothing_more(store).await;
    checks::a_released_key_is_free_at_once(store).await;
    checks::an_expired_lease_is_taken_over(store, lease).await;
    checks::a_completion_after_expiry_lands_while_nobody_claimed(store, lease).await;
    checks::a_renewal_outlives_the_first_lease(store, lease).await;
    checks::completed_records_expire(store, lease).await;
    races::one_winner(std::slice::from_ref(store), lease).await;
}

/// A fresh random record key under the prefix `contract`, for checks of
/// your own beside the suite's.
pub fn fresh_key() -> StoreKey {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    let key = IdempotencyKey::try_from(raw.as_str()).expect("a uuid is a valid key");
    StoreKey::derive("contract", "anonymous", "POST", "/contract", &key)
}

/// A payload the store must give back byte for byte: every byte value
/// (NUL and newline included), then `tag`.
fn payload(tag: &str) -> Vec<u8> {
    (0..=255u8).chain(tag.bytes()).collect()
}

/// How long the suite waits for a record of `lease` to expire: twice the
/// lease, and at least 20 ms more (clock steps, rounding to milliseconds).
fn past(lease: Duration) -> Duration {
    lease * 2 + Duration::from_millis(20)
}

/// A call's result, or a panic naming the check and the call that failed.
fn ok<T>(check: &str, call: &str, result: Result<T, crate::StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("contract ({check}): {call} failed: {e}"))
}

fn owner() -> OwnerToken {
    OwnerToken::generate()
}

#[cfg(test)]
mod tests;
