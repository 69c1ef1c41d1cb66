//! The cache alone: its byte bound, expiry and eviction order.

use super::*;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::record::{BodyKind, RecordState, StoredResponse};
use crate::OwnerToken;

fn key(n: usize) -> StoreKey {
    let key = IdempotencyKey::try_from(format!("k{n}").as_str()).unwrap();
    StoreKey::derive("test", "anonymous", "POST", "/orders", &key)
}

fn record(body_bytes: usize) -> Record {
    Record {
        owner: OwnerToken::from("o".to_owned()),
        fingerprint: Fingerprint::from_bytes([7; 32]),
        state: RecordState::Completed(StoredResponse {
            status: 201,
            headers: vec![],
            body_kind: BodyKind::Text,
            body: vec![b'x'; body_bytes],
        }),
        expires_ms: None,
    }
}

fn later(ms: u64) -> u64 {
    now_ms() + ms
}

#[test]
fn a_record_is_found_until_it_expires() {
    let cache = LocalCache::new(10_000);
    cache.put(&key(1), record(10), later(60_000));
    assert!(cache.get(&key(1)).is_some());
    assert!(cache.get(&key(2)).is_none());
    cache.put(&key(3), record(10), now_ms().saturating_sub(1));
    assert!(cache.get(&key(3)).is_none(), "expired: never kept");
}

#[test]
fn an_expired_record_leaves_at_lookup_and_frees_its_bytes() {
    let cache = LocalCache::new(10_000);
    cache.put(&key(1), record(10), later(30));
    assert!(cache.bytes() > 0);
    std::thread::sleep(std::time::Duration::from_millis(40));
    assert!(cache.get(&key(1)).is_none());
    assert_eq!(cache.bytes(), 0);
}

#[test]
fn the_oldest_records_leave_first_and_the_bound_holds() {
    let one = footprint(key(0).as_str(), &record(100));
    let cache = LocalCache::new(3 * one);
    for n in 0..5 {
        cache.put(&key(n), record(100), later(60_000));
        assert!(cache.bytes() <= 3 * one);
    }
    let kept: Vec<usize> = (0..5).filter(|&n| cache.get(&key(n)).is_some()).collect();
    assert_eq!(kept, vec![2, 3, 4]);
}

#[test]
fn a_record_larger_than_the_cache_is_not_kept_and_evicts_nothing() {
    let cache = LocalCache::new(1_000);
    cache.put(&key(1), record(10), later(60_000));
    cache.put(&key(2), record(2_000), later(60_000));
    assert!(cache.get(&key(2)).is_none());
    assert!(cache.get(&key(1)).is_some());
}

#[test]
fn stale_lines_of_records_gone_early_do_not_pile_up() {
    let cache = LocalCache::new(1_000_000);
    for n in 0..1_000 {
        cache.put(&key(n), record(1), later(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    for n in 0..1_000 {
        assert!(cache.get(&key(n)).is_none());
    }
    assert!(
        cache.lock().order.len() <= 64 + 1,
        "{}",
        cache.lock().order.len()
    );
}
