//! The queue alone: which claims a round tries, and which it keeps.

use std::sync::Mutex;
use std::time::Duration;

use super::GiveBacks;
use crate::key::IdempotencyKey;
use crate::{OwnerToken, StoreKey};

fn claim(n: usize) -> (StoreKey, OwnerToken) {
    let key = IdempotencyKey::try_from(format!("k{n}").as_str()).expect("key");
    (
        StoreKey::derive("test", "anonymous", "POST", "/orders", &key),
        OwnerToken::generate(),
    )
}

/// The claims a background round tries when each give-back is answered
/// `answer`, and whether any are left.
async fn background(queue: &GiveBacks, answer: Result<bool, ()>) -> (Vec<StoreKey>, bool) {
    let tried = Mutex::new(Vec::new());
    let left = queue
        .round(
            |_| true,
            |key, _| {
                tried.lock().unwrap().push(key);
                async move { answer }
            },
        )
        .await;
    (tried.into_inner().unwrap(), left)
}

/// The claims a request for `key` gives back first, each answered `answer`.
async fn request(queue: &GiveBacks, key: &StoreKey, answer: Result<bool, ()>) -> Vec<StoreKey> {
    let tried = Mutex::new(Vec::new());
    queue
        .before_claim(key, |key, _| {
            tried.lock().unwrap().push(key);
            async move { answer }
        })
        .await;
    tried.into_inner().unwrap()
}

#[tokio::test]
async fn a_claim_given_back_leaves_the_queue_and_a_failed_one_stays() {
    let queue = GiveBacks::default();
    let (key, owner) = claim(1);
    queue.push(&key, &owner, Duration::from_secs(3));
    assert_eq!(background(&queue, Err(())).await, (vec![key.clone()], true));
    assert_eq!(request(&queue, &key, Err(())).await, vec![key.clone()]);
    assert_eq!(
        background(&queue, Ok(true)).await,
        (vec![key.clone()], false)
    );
    assert!(request(&queue, &key, Ok(true)).await.is_empty());
}

#[tokio::test]
async fn a_request_gives_back_only_its_own_key_and_only_until_the_store_answered() {
    let queue = GiveBacks::default();
    let (mine, owner) = claim(2);
    let (other, other_owner) = claim(3);
    queue.push(&mine, &owner, Duration::from_secs(3));
    queue.push(&other, &other_owner, Duration::from_secs(3));
    assert_eq!(request(&queue, &mine, Ok(false)).await, vec![mine.clone()]);
    // Answered: the claim was not there (yet). Only the background asks
    // again, in case it lands late.
    assert!(request(&queue, &mine, Ok(false)).await.is_empty());
    assert_eq!(
        background(&queue, Ok(false)).await,
        (vec![mine, other], true)
    );
}

#[tokio::test(start_paused = true)]
async fn a_claim_is_dropped_two_leases_after_it_was_sent() {
    let queue = GiveBacks::default();
    let (key, owner) = claim(4);
    queue.push(&key, &owner, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1990)).await;
    assert_eq!(background(&queue, Err(())).await, (vec![key], true));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(background(&queue, Err(())).await, (vec![], false));
}
