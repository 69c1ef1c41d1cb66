//! Many claimants on one key at once: exactly one wins, and every other
//! one gets the winner's record, on a free key and on a key whose lease
//! just ran out (the takeover is a race too).

use std::time::Duration;

use futures_util::future::join_all;

use crate::{IdempotencyStore, OwnerToken, Phase, StoreKey};

use super::{fresh_key, ok, owner, past, payload, LONG};

/// Claimants in each race.
const CLAIMANTS: usize = 32;

/// Races 32 claimants on a free key, then on a key whose lease
/// (`lease`) ran out, spread over `clients` (independent clients of one
/// backend, or one store). Each claimant has its own owner token and
/// payload; all start together.
///
/// # Panics
///
/// When a race has no winner or more than one, a loser does not get the
/// winner's record intact, or a call fails; also when `clients` is empty.
pub async fn race<St: IdempotencyStore>(clients: &[St], lease: Duration) {
    assert!(!clients.is_empty(), "race: give at least one client");
    one_winner(clients, lease).await;
}

pub(super) async fn one_winner<St: IdempotencyStore>(clients: &[St], lease: Duration) {
    let free = fresh_key();
    run(clients, &free, None).await;

    let expired = fresh_key();
    let first = owner();
    let claimed = clients[0]
        .claim(&expired, &first, &payload("first"), lease)
        .await;
    ok("race after expiry", "first claim", claimed);
    tokio::time::sleep(past(lease)).await;
    run(clients, &expired, Some(&first)).await;
}

/// One race on `key`; `expired_owner` held it before its lease ran out.
async fn run<St: IdempotencyStore>(
    clients: &[St],
    key: &StoreKey,
    expired_owner: Option<&OwnerToken>,
) {
    let check = if expired_owner.is_some() {
        "race after expiry"
    } else {
        "race"
    };
    let claimants: Vec<(OwnerToken, Vec<u8>)> = (0..CLAIMANTS)
        .map(|i| (owner(), payload(&format!("claimant {i}"))))
        .collect();
    let results = join_all(
        claimants
            .iter()
            .enumerate()
            .map(|(i, (who, body))| clients[i % clients.len()].claim(key, who, body, LONG)),
    )
    .await;

    let mut winners = Vec::new();
    let mut found = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match ok(check, "claim", result) {
            None => winners.push(i),
            Some(record) => found.push((i, record)),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "contract ({check}): {} of {CLAIMANTS} claimants won, claimants {winners:?}",
        winners.len()
    );
    let (winner, body) = &claimants[winners[0]];
    for (i, record) in found {
        assert!(
            record.phase == Phase::InProgress && record.owner == *winner && record.payload == *body,
            "contract ({check}): claimant {i} lost but got {:?}'s record ({:?}), not the winner's",
            record.owner,
            record.phase
        );
    }
}
