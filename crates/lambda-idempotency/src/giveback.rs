//! Give-backs: fenced releases of claims that a failure may have left
//! behind, sent again until the store has them.
//!
//! A claim whose reply was lost, late or refused may have been applied all
//! the same, or may yet be: its command can still sit in a socket the
//! store has let go of. A release that failed leaves its claim in place
//! too. Either way the key would stay blocked for the rest of the lease, so
//! the claim is queued here and given back:
//! - by a background task, every [`PAUSE`], until the store says it
//!   deleted the claim or the claim is surely gone (two leases after it
//!   was sent: it expires one lease after it lands);
//! - and first thing in a request for the same key, while no give-back of
//!   that claim has reached the store. Lambda freezes a sandbox between
//!   invocations, so the background task cannot run before the next
//!   invocation does; when that invocation is the client's retry of the
//!   same key, it gives the claim back before it claims (or it would find
//!   the claim and answer `409` for the rest of the lease). Requests for
//!   other keys never wait for a give-back: with the store slow or down,
//!   each would cost them one more timeout.
//!
//! Every give-back is fenced (the store deletes the record only while it is
//! ours and in progress), so sending one twice, or after a completion,
//! changes nothing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::{OwnerToken, StoreKey};

/// Pause between two rounds of the background task.
pub(crate) const PAUSE: Duration = Duration::from_millis(250);

/// A claim to give back.
struct Pending {
    key: StoreKey,
    owner: OwnerToken,
    /// After this the claim has expired wherever it landed.
    until: Instant,
    /// The store answered a give-back (it found no claim of ours): the
    /// claim was never applied, or is still on its way. Only the
    /// background task tries again; requests do not wait for it.
    answered: bool,
}

/// The queue of one layer, and whether its background task runs.
#[derive(Default)]
pub(crate) struct GiveBacks {
    queue: Mutex<Vec<Pending>>,
    /// Claims in the queue no give-back reached the store with: a
    /// request's check costs one atomic load when there are none.
    unanswered: AtomicUsize,
    running: AtomicBool,
}

impl GiveBacks {
    /// Queues the claim of `owner` on `key`, sent with `lease`.
    pub(crate) fn push(&self, key: &StoreKey, owner: &OwnerToken, lease: Duration) {
        let mut queue = self.lock();
        queue.push(Pending {
            key: key.clone(),
            owner: owner.clone(),
            until: Instant::now() + lease * 2,
            answered: false,
        });
        self.count(&queue);
    }

    /// Gives back, through `release`, the claims on `key` that no
    /// give-back has reached the store with yet: what a request for `key`
    /// does before its own claim. One atomic load when there are none.
    pub(crate) async fn before_claim<F, Fut, E>(&self, key: &StoreKey, release: F)
    where
        F: Fn(StoreKey, OwnerToken) -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        if self.unanswered.load(Ordering::Acquire) > 0 {
            self.round(|p| !p.answered && p.key == *key, release).await;
        }
    }

    /// One round: gives every queued claim that `due` selects back once
    /// through `release`, and drops what is done or expired. Returns
    /// whether claims are left.
    async fn round<F, Fut, E>(&self, due: impl Fn(&Pending) -> bool, release: F) -> bool
    where
        F: Fn(StoreKey, OwnerToken) -> Fut,
        Fut: Future<Output = Result<bool, E>>,
    {
        let now = Instant::now();
        let due: Vec<(StoreKey, OwnerToken)> = {
            let mut queue = self.lock();
            queue.retain(|p| p.until > now);
            self.count(&queue);
            queue
                .iter()
                .filter(|p| due(p))
                .map(|p| (p.key.clone(), p.owner.clone()))
                .collect()
        };
        for (key, owner) in due {
            let result = release(key.clone(), owner.clone()).await;
            let mut queue = self.lock();
            let found = queue.iter().position(|p| p.key == key && p.owner == owner);
            if let Some(at) = found {
                match result {
                    Ok(true) => {
                        tracing::info!(key_hash = key.hash(), "an uncertain claim was given back");
                        queue.swap_remove(at);
                    }
                    Ok(false) => queue[at].answered = true,
                    Err(_) => {}
                }
            }
            self.count(&queue);
        }
        !self.lock().is_empty()
    }

    /// Starts the background task unless it runs already; it gives claims
    /// back through `release` and ends when the queue is empty.
    pub(crate) fn spawn<F, Fut, E>(self: &Arc<Self>, release: F)
    where
        F: Fn(StoreKey, OwnerToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bool, E>> + Send,
    {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let left = this.round(|_| true, &release).await;
                if !left {
                    this.running.store(false, Ordering::Release);
                    // A claim queued between the round and the flag: its
                    // push saw the task still running, so go on for it.
                    if this.lock().is_empty() || this.running.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
                tokio::time::sleep(PAUSE).await;
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A panic while holding the lock leaves a consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, queue: &[Pending]) {
        let unanswered = queue.iter().filter(|p| !p.answered).count();
        self.unanswered.store(unanswered, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
