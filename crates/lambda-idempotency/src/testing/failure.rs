//! What a store answers when its backend fails: a timeout or a backend
//! error, within the store's own time bound, so that the layer answers
//! `503` before running anything; and a working store again once the
//! backend is back, without a call lost to a stale connection.

use std::time::{Duration, Instant};

use crate::{IdempotencyStore, StoreError};

use super::{fresh_key, owner, payload, LONG};

/// What [`outage`] asks of the caller's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Take the backend down (stop the server, close the port).
    Down,
    /// Bring it back, on the same address.
    Up,
}

/// Slack over a store's `max_call_time` for a loaded test machine.
const SLACK: Duration = Duration::from_millis(250);

/// How long a call of a store that bounds nothing may take before the
/// suite calls it hung (the layer would have cut it at the deadline).
const HUNG: Duration = Duration::from_secs(30);

/// Checks that every call on `store`, whose backend cannot be reached (a
/// stopped server, a closed port), fails with [`StoreError::Timeout`] or
/// [`StoreError::Backend`]: never a record, never another error, and
/// within the store's [`IdempotencyStore::max_call_time`] (plus 250 ms)
/// when it bounds its calls.
///
/// # Panics
///
/// When a call succeeds, fails otherwise, or takes longer.
pub async fn unreachable<St: IdempotencyStore>(store: &St) {
    let (key, a) = (fresh_key(), owner());
    let p = payload("unreachable");
    expect_failure(store, "claim", store.claim(&key, &a, &p, LONG)).await;
    expect_failure(store, "complete", store.complete(&key, &a, &p, LONG)).await;
    expect_failure(store, "release", store.release(&key, &a)).await;
    expect_failure(store, "renew", store.renew(&key, &a, &p, LONG)).await;
}

/// A whole outage: a claim on the live backend (so the store holds a
/// connection), `switch(Backend::Down)`, [`unreachable()`],
/// `switch(Backend::Up)`, then a claim on a fresh key must succeed at once.
///
/// ```
/// # async fn doc(store: lambda_idempotency::MemoryStore) {
/// use lambda_idempotency::testing::{outage, Backend};
/// outage(&store, async |state| match state {
///     Backend::Down => { /* stop the server */ }
///     Backend::Up => { /* start it again on the same port */ }
/// })
/// .await;
/// # }
/// ```
///
/// # Panics
///
/// As [`unreachable()`], and when a claim fails before the outage or right
/// after it.
pub async fn outage<St, F>(store: &St, mut switch: F)
where
    St: IdempotencyStore,
    F: AsyncFnMut(Backend),
{
    let p = payload("outage");
    let before = store.claim(&fresh_key(), &owner(), &p, LONG).await;
    assert!(
        matches!(before, Ok(None)),
        "contract (outage): a claim before the outage failed: {before:?}"
    );
    switch(Backend::Down).await;
    unreachable(store).await;
    switch(Backend::Up).await;
    let after = store.claim(&fresh_key(), &owner(), &p, LONG).await;
    assert!(
        matches!(after, Ok(None)),
        "contract (outage): the first claim after the backend came back failed: {after:?}"
    );
}

async fn expect_failure<St, T>(
    store: &St,
    call: &str,
    future: impl std::future::Future<Output = Result<T, StoreError>>,
) where
    St: IdempotencyStore,
    T: std::fmt::Debug,
{
    let bound = store.max_call_time().map_or(HUNG, |t| t + SLACK);
    let started = Instant::now();
    let result = tokio::time::timeout(bound, future).await;
    let took = started.elapsed();
    match result {
        Err(_) => panic!("contract (backend down): {call} took over {bound:?}"),
        Ok(Err(StoreError::Timeout(_) | StoreError::Backend(_))) => {}
        Ok(Err(other)) => panic!(
            "contract (backend down): {call} must fail with Timeout or Backend, not {other:?}"
        ),
        Ok(Ok(value)) => {
            panic!("contract (backend down): {call} succeeded ({value:?}) after {took:?}")
        }
    }
}
