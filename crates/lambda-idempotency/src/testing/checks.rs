//! The contract's checks on one key at a time: each names the promise it
//! tests in its panics. Records that must stay live get a lease no check
//! outlives; only the record a check lets expire gets the short one.

use crate::{IdempotencyStore, Phase, StoredRecord};

use super::{fresh_key, ok, owner, past, payload, LONG};

/// A claim creates the record once; a second claim (same or different
/// payload) returns it in progress, its owner and payload intact; after
/// completion a claim returns the completed record (a replay).
pub(super) async fn claim_replay_and_mismatch<St: IdempotencyStore>(store: &St) {
    const CHECK: &str = "claim, in progress, mismatch, replay";
    let (key, a, b) = (fresh_key(), owner(), owner());
    let first = payload("first");
    let created = ok(CHECK, "claim", store.claim(&key, &a, &first, LONG).await);
    assert_eq!(
        created, None,
        "contract ({CHECK}): a claim of a free key must create it"
    );

    let in_progress = StoredRecord {
        phase: Phase::InProgress,
        owner: a.clone(),
        payload: first.clone(),
    };
    for other in [first.clone(), payload("a different request")] {
        let found = ok(
            CHECK,
            "second claim",
            store.claim(&key, &b, &other, LONG).await,
        );
        assert_eq!(
            found.as_ref(),
            Some(&in_progress),
            "contract ({CHECK}): a claim of a live key must return its record intact, not write"
        );
    }

    // A large payload as well: stored responses run to tens of KiB.
    let response: Vec<u8> = payload("done").repeat(200);
    let completed = ok(
        CHECK,
        "complete",
        store.complete(&key, &a, &response, LONG).await,
    );
    assert!(
        completed,
        "contract ({CHECK}): the owner's completion must land"
    );
    let replay = ok(
        CHECK,
        "claim after completion",
        store.claim(&key, &b, &first, LONG).await,
    );
    let expected = StoredRecord {
        phase: Phase::Completed,
        owner: a,
        payload: response,
    };
    assert_eq!(
        replay.as_ref(),
        Some(&expected),
        "contract ({CHECK}): a claim of a completed key must return the completed record"
    );
}

/// Complete, release and renew act only for the record's owner; a
/// completed record is never released or renewed, even by its owner.
pub(super) async fn only_the_owner_acts<St: IdempotencyStore>(store: &St) {
    const CHECK: &str = "fencing";
    let (key, a, b) = (fresh_key(), owner(), owner());
    ok(
        CHECK,
        "claim",
        store.claim(&key, &a, &payload("a"), LONG).await,
    );

    let other = payload("b");
    assert!(
        !ok(
            CHECK,
            "complete",
            store.complete(&key, &b, &other, LONG).await
        ),
        "contract ({CHECK}): another owner's completion must not land"
    );
    assert!(
        !ok(CHECK, "release", store.release(&key, &b).await),
        "contract ({CHECK}): another owner's release must not land"
    );
    assert!(
        !ok(CHECK, "renew", store.renew(&key, &b, &other, LONG).await),
        "contract ({CHECK}): another owner's renewal must not land"
    );
    let renewed = payload("a renewed");
    assert!(
        ok(CHECK, "renew", store.renew(&key, &a, &renewed, LONG).await),
        "contract ({CHECK}): the owner's renewal must land"
    );
    let found = ok(CHECK, "claim", store.claim(&key, &b, &other, LONG).await);
    assert_eq!(
        found.map(|r| (r.phase, r.owner, r.payload)),
        Some((Phase::InProgress, a.clone(), renewed)),
        "contract ({CHECK}): a renewal must replace the payload and keep the owner"
    );

    ok(
        CHECK,
        "complete",
        store.complete(&key, &a, &payload("done"), LONG).await,
    );
    assert!(
        !ok(CHECK, "release", store.release(&key, &a).await),
        "contract ({CHECK}): a completed record must not be released"
    );
    assert!(
        !ok(CHECK, "renew", store.renew(&key, &a, &other, LONG).await),
        "contract ({CHECK}): a completed record must not be renewed"
    );
    let found = ok(CHECK, "claim", store.claim(&key, &b, &other, LONG).await);
    assert_eq!(
        found.map(|r| (r.phase, r.payload)),
        Some((Phase::Completed, payload("done"))),
        "contract ({CHECK}): the completed record must be left as it was"
    );
}

/// Every call is safe to repeat after a lost reply: a repeated claim
/// returns the record the first created (ours), a repeated completion or
/// renewal by the same owner lands again and changes nothing more.
pub(super) async fn a_repeated_call_changes_nothing_more<St: IdempotencyStore>(store: &St) {
    const CHECK: &str = "repeated calls";
    let (key, a) = (fresh_key(), owner());
    let p = payload("p");
    ok(CHECK, "claim", store.claim(&key, &a, &p, LONG).await);
    let again = ok(
        CHECK,
        "repeated claim",
        store.claim(&key, &a, &p, LONG).await,
    );
    assert_eq!(
        again.map(|r| (r.phase, r.owner)),
        Some((Phase::InProgress, a.clone())),
        "contract ({CHECK}): a repeated claim must return the record the first call created"
    );
    for _ in 0..2 {
        assert!(
            ok(CHECK, "renew", store.renew(&key, &a, &p, LONG).await),
            "contract ({CHECK}): a repeated renewal must land"
        );
    }
    let done = payload("done");
    for _ in 0..2 {
        assert!(
            ok(
                CHECK,
                "complete",
                store.complete(&key, &a, &done, LONG).await
            ),
            "contract ({CHECK}): a repeated completion must land"
        );
    }
    let found = ok(CHECK, "claim", store.claim(&key, &owner(), &p, LONG).await);
    assert_eq!(
        found.map(|r| (r.phase, r.owner, r.payload)),
        Some((Phase::Completed, a, done)),
        "contract ({CHECK}): repeated completions must leave one completed record"
    );
}

/// A released key can be claimed again at once; a second release does
/// nothing.
pub(super) async fn a_released_key_is_free_at_once<St: IdempotencyStore>(store: &St) {
    const CHECK: &str = "release";
    let (key, a, b) = (fresh_key(), owner(), owner());
    ok(
        CHECK,
        "claim",
        store.claim(&key, &a, &payload("a"), LONG).await,
    );
    assert!(
        ok(CHECK, "release", store.release(&key, &a).await),
        "contract ({CHECK}): the owner's release must land"
    );
    assert!(
        !ok(CHECK, "repeated release", store.release(&key, &a).await),
        "contract ({CHECK}): releasing a released key must report that nothing was done"
    );
    let claimed = ok(
        CHECK,
        "claim",
        store.claim(&key, &b, &payload("b"), LONG).await,
    );
    assert_eq!(
        claimed, None,
        "contract ({CHECK}): a released key must be free at once"
    );
}

/// Once a lease ran out, the next claim takes the key over, and the
/// previous owner can neither complete, release nor renew it any more.
pub(super) async fn an_expired_lease_is_taken_over<St: IdempotencyStore>(
    store: &St,
    lease: std::time::Duration,
) {
    const CHECK: &str = "takeover after expiry";
    let (key, a, b) = (fresh_key(), owner(), owner());
    let late = payload("late");
    ok(
        CHECK,
        "claim",
        store.claim(&key, &a, &payload("a"), lease).await,
    );
    tokio::time::sleep(past(lease)).await;
    let taken = ok(
        CHECK,
        "claim after expiry",
        store.claim(&key, &b, &payload("b"), LONG).await,
    );
    assert_eq!(
        taken, None,
        "contract ({CHECK}): a claim after the lease ran out must take the key over"
    );
    assert!(!ok(CHECK, "late complete", store.complete(&key, &a, &late, LONG).await), "contract ({CHECK}): the previous owner's completion must not overwrite the new owner's record");
    assert!(
        !ok(CHECK, "late release", store.release(&key, &a).await),
        "contract ({CHECK}): the previous owner's release must not delete the new owner's record"
    );
    assert!(
        !ok(
            CHECK,
            "late renew",
            store.renew(&key, &a, &late, LONG).await
        ),
        "contract ({CHECK}): the previous owner's renewal must not land"
    );
    let found = ok(
        CHECK,
        "claim",
        store.claim(&key, &owner(), &late, LONG).await,
    );
    assert_eq!(
        found.map(|r| (r.phase, r.owner, r.payload)),
        Some((Phase::InProgress, b, payload("b"))),
        "contract ({CHECK}): the new owner's record must stand"
    );
}

/// A completion whose lease ran out still lands while nobody claimed the
/// key since (the handler's answer is kept), but a renewal cannot bring an
/// expired lease back.
pub(super) async fn a_completion_after_expiry_lands_while_nobody_claimed<St: IdempotencyStore>(
    store: &St,
    lease: std::time::Duration,
) {
    const CHECK: &str = "completion after expiry";
    let (key, a) = (fresh_key(), owner());
    let p = payload("a");
    ok(CHECK, "claim", store.claim(&key, &a, &p, lease).await);
    tokio::time::sleep(past(lease)).await;
    assert!(
        !ok(
            CHECK,
            "renew after expiry",
            store.renew(&key, &a, &p, LONG).await
        ),
        "contract ({CHECK}): a renewal must not bring an expired lease back"
    );
    let done = payload("done");
    assert!(ok(CHECK, "complete after expiry", store.complete(&key, &a, &done, LONG).await), "contract ({CHECK}): a completion must land when the record expired and nobody claimed since");
    let found = ok(CHECK, "claim", store.claim(&key, &owner(), &p, LONG).await);
    assert_eq!(
        found.map(|r| (r.phase, r.owner, r.payload)),
        Some((Phase::Completed, a, done)),
        "contract ({CHECK}): the late completion must be what a retry finds"
    );
}

/// A renewal moves the expiry to `lease` from the renewal: a record
/// renewed with a long lease is still live well past its first one.
pub(super) async fn a_renewal_outlives_the_first_lease<St: IdempotencyStore>(
    store: &St,
    lease: std::time::Duration,
) {
    const CHECK: &str = "renewal";
    let (key, a) = (fresh_key(), owner());
    let p = payload("a");
    ok(CHECK, "claim", store.claim(&key, &a, &p, lease).await);
    assert!(
        ok(CHECK, "renew", store.renew(&key, &a, &p, LONG).await),
        "contract ({CHECK}): the owner's renewal within the lease must land"
    );
    tokio::time::sleep(past(lease)).await;
    let found = ok(CHECK, "claim", store.claim(&key, &owner(), &p, LONG).await);
    assert_eq!(
        found.map(|r| (r.phase, r.owner)),
        Some((Phase::InProgress, a.clone())),
        "contract ({CHECK}): a renewed record must outlive its first lease"
    );
    assert!(
        ok(CHECK, "renew", store.renew(&key, &a, &p, lease).await),
        "contract ({CHECK}): a renewal must land while the renewed lease runs"
    );
    tokio::time::sleep(past(lease)).await;
    let taken = ok(CHECK, "claim", store.claim(&key, &owner(), &p, LONG).await);
    assert_eq!(
        taken, None,
        "contract ({CHECK}): a renewal with a short lease must let the record expire after it"
    );
}

/// A completed record lives for its retention, then the key is free.
pub(super) async fn completed_records_expire<St: IdempotencyStore>(
    store: &St,
    retention: std::time::Duration,
) {
    const CHECK: &str = "retention";
    let (key, a) = (fresh_key(), owner());
    let p = payload("a");
    ok(CHECK, "claim", store.claim(&key, &a, &p, LONG).await);
    ok(
        CHECK,
        "complete",
        store.complete(&key, &a, &payload("done"), retention).await,
    );
    tokio::time::sleep(past(retention)).await;
    let claimed = ok(CHECK, "claim", store.claim(&key, &owner(), &p, LONG).await);
    assert_eq!(
        claimed, None,
        "contract ({CHECK}): a completed record must expire after its retention"
    );
}
