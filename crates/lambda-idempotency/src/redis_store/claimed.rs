//! [`ClaimedOn`]: which connection each live claim was acknowledged on,
//! kept only while replicas must acknowledge writes
//! ([`super::RedisOptions::min_replicas`]).
//!
//! A completion's `WAIT` covers the writes sent before it on the same
//! connection: the handler's own (an order) included, because they share
//! the store's connection. It covers nothing sent on another socket, which
//! after a failover may have reached another server: a completion there
//! could be acknowledged while the handler's write is on a demoted or dead
//! primary only. So a completion goes to the connection its claim went to,
//! or nowhere (`RedisConnection::pinned_to`); its number is kept here from
//! the claim to the completion or release. An entry whose invocation never
//! got that far (cut off by its deadline, say) is swept once it is older
//! than any lease.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::OwnerToken;

/// Entries older than this are dropped: past any lease, their invocation
/// is long gone (a completion or release that never came).
const FORGOTTEN_AFTER: Duration = Duration::from_secs(20 * 60);
/// The map is swept for such entries only when it is at least this large.
const SWEEP_FROM: usize = 256;

#[derive(Default)]
pub(super) struct ClaimedOn(Mutex<HashMap<OwnerToken, (u64, Instant)>>);

impl ClaimedOn {
    /// Notes that `owner`'s claim was acknowledged on connection
    /// `generation`.
    pub(super) fn insert(&self, owner: &OwnerToken, generation: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= SWEEP_FROM {
            map.retain(|_, (_, at)| at.elapsed() < FORGOTTEN_AFTER);
        }
        map.insert(owner.clone(), (generation, Instant::now()));
    }

    /// The connection `owner`'s claim was acknowledged on.
    pub(super) fn get(&self, owner: &OwnerToken) -> Option<u64> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(owner).map(|(generation, _)| *generation)
    }

    /// Forgets `owner`'s claim (completed or released).
    pub(super) fn forget(&self, owner: &OwnerToken) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_remembered_until_forgotten() {
        let claimed = ClaimedOn::default();
        let owner = OwnerToken::generate();
        claimed.insert(&owner, 3);
        assert_eq!(claimed.get(&owner), Some(3));
        assert_eq!(claimed.get(&OwnerToken::generate()), None);
        claimed.forget(&owner);
        assert_eq!(claimed.get(&owner), None);
    }
}
