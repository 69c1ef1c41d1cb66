//! [`LocalCache`]: completed records kept in this process's memory, so
//! that a replay or a `422` of a key this process stored or read costs no
//! store round trip (Powertools' `use_local_cache`).
//!
//! Only completed records enter it, and only once the store confirmed
//! them: the layer's own completion that the store accepted, or a
//! completed record a claim returned (with replicas required, the claim
//! itself waited for them). A completed record never changes again, so a
//! copy cannot go stale; it is kept until the record's own expiry, which
//! completed records carry for this (`record.rs`). The cache is bounded in
//! bytes, each entry counted at what it takes of the process's memory (its
//! allocations and its share of the map), not only at its record's size:
//! the oldest entries leave first.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::record::{Record, RecordState};
use crate::run::now_ms;
use crate::StoreKey;

/// The allocator's own share of each allocation: its header and the
/// rounding of the size (glibc: 8 bytes, then up to 16), about 16 on
/// average.
const PER_ALLOCATION: usize = 16;

/// Bytes of memory an entry for `record` under `key` takes: the key twice
/// (the map's and the queue's copy), the owner, the response's headers and
/// body, the header list, the allocator's share of each of these
/// allocations, and the entry's map bucket and queue line, counted twice
/// (a table that just grew is half empty). `cargo bench --bench lambda --
/// cache` compares the bound with the process's resident memory.
fn footprint(key: &str, record: &Record) -> usize {
    let headers = match &record.state {
        RecordState::Completed(response) => response.headers.len(),
        RecordState::InProgress { .. } => 0,
    };
    // Collected from a filtered iterator: room for 4, then doubling.
    let header_list = match headers {
        0 => 0,
        n => n.next_power_of_two().max(4) * size_of::<(String, Vec<u8>)>(),
    };
    let allocations = 5 + 2 * headers;
    2 * key.len()
        + record.owner.as_str().len()
        + record.size()
        + header_list
        + allocations * PER_ALLOCATION
        + 2 * (size_of::<(String, Entry)>() + 1 + size_of::<(String, u64)>())
}

/// Completed records by record key, bounded in bytes.
pub(crate) struct LocalCache {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Keys in the order they came in; an entry that left early leaves a
    /// stale line here, recognised by its number.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next: u64,
}

struct Entry {
    record: Record,
    expires_ms: u64,
    size: usize,
    number: u64,
}

impl LocalCache {
    /// A cache of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            state: Mutex::default(),
        }
    }

    /// The record under `key`, if cached and not expired.
    pub(crate) fn get(&self, key: &StoreKey) -> Option<Record> {
        let mut state = self.lock();
        let entry = state.entries.get(key.as_str())?;
        if entry.expires_ms > now_ms() {
            return Some(entry.record.clone());
        }
        state.remove(key.as_str());
        None
    }

    /// Keeps a completed `record` until `expires_ms` (epoch ms), making
    /// room by dropping the oldest entries. A record larger than the whole
    /// cache is not kept.
    pub(crate) fn put(&self, key: &StoreKey, record: Record, expires_ms: u64) {
        let size = footprint(key.as_str(), &record);
        if size > self.limit || expires_ms <= now_ms() {
            return;
        }
        let mut state = self.lock();
        if state.entries.contains_key(key.as_str()) {
            return;
        }
        while state.bytes + size > self.limit {
            let Some((oldest, number)) = state.order.pop_front() else {
                break;
            };
            if state
                .entries
                .get(&oldest)
                .is_some_and(|e| e.number == number)
            {
                state.remove(&oldest);
            }
        }
        let number = state.next;
        state.next += 1;
        state.bytes += size;
        state.order.push_back((key.as_str().to_owned(), number));
        state.entries.insert(
            key.as_str().to_owned(),
            Entry {
                record,
                expires_ms,
                size,
                number,
            },
        );
    }

    /// Bytes counted for the entries now cached.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.size;
        }
        // Stale lines in `order` for it are skipped when they come up;
        // without evictions they would pile up, so drop them now and then.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, n)| entries.get(k).is_some_and(|e| e.number == *n));
        }
    }
}

#[cfg(test)]
mod tests;
