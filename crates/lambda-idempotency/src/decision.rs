//! The pure decision at the heart of the layer: given what the claim found
//! in the store, what happens to this request. No I/O and no clock (the
//! time is passed in), so every branch is unit-tested directly.

use std::time::Duration;

use crate::fingerprint::Fingerprint;
use crate::record::{Record, RecordState, StoredResponse};
use crate::OwnerToken;

/// What the layer does with a request after its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextAction {
    /// The claim is ours: run the handler.
    Execute,
    /// The same request already completed: send its stored response.
    Replay(StoredResponse),
    /// The same request is still running elsewhere: `409` + `Retry-After`.
    InProgress { retry_after_secs: u64 },
    /// The key was used for a different request: `422`.
    Mismatch,
}

/// Decides from the record the claim returned (`None`: the claim created a
/// fresh in-progress record for `owner`).
///
/// An in-progress record holding our own token means our claim was applied
/// but its reply was lost (a dropped connection, retried once): the claim is
/// ours, so we execute.
///
/// A different request (another fingerprint) is refused with `422` only
/// once the record is completed. While the record is in progress the key
/// is not bound yet: that attempt may still be refused and released, or die
/// and let its lease run out, and then the other request runs. Until then
/// it gets `409` like any request that finds the key busy.
///
/// `Retry-After` for a request in progress is a short hint, `retry_hint`,
/// never past the lease's end: the first request usually takes
/// milliseconds, and a client that obeys a whole lease would wait seconds
/// for nothing. Under a second of lease left it is `0`.
pub(crate) fn decide(
    existing: Option<Record>,
    fingerprint: &Fingerprint,
    owner: &OwnerToken,
    now_ms: u64,
    retry_hint: Duration,
) -> NextAction {
    let Some(record) = existing else {
        return NextAction::Execute;
    };
    let same = record.fingerprint == *fingerprint;
    // By value: a replay moves the stored body instead of copying it.
    match record.state {
        RecordState::Completed(response) if same => NextAction::Replay(response),
        RecordState::Completed(_) => NextAction::Mismatch,
        RecordState::InProgress { .. } if same && record.owner == *owner => NextAction::Execute,
        RecordState::InProgress { lease_end_ms } => {
            let left_secs = lease_end_ms.saturating_sub(now_ms) / 1000;
            NextAction::InProgress {
                retry_after_secs: retry_hint.as_secs().min(left_secs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BodyKind;

    const NOW: u64 = 1_000_000;
    const HINT: Duration = Duration::from_secs(1);

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/orders", None, None, body.as_bytes())
    }

    fn record(body: &str, owner: &str, state: RecordState) -> Record {
        Record {
            expires_ms: None,
            fingerprint: fp(body),
            owner: OwnerToken::from(owner.to_owned()),
            state,
        }
    }

    fn in_progress(left_ms: u64) -> RecordState {
        RecordState::InProgress {
            lease_end_ms: NOW + left_ms,
        }
    }

    fn stored() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![],
            body_kind: BodyKind::Text,
            body: b"{}".to_vec(),
        }
    }

    fn me() -> OwnerToken {
        OwnerToken::from("me".to_owned())
    }

    fn decide_now(existing: Option<Record>, body: &str) -> NextAction {
        decide(existing, &fp(body), &me(), NOW, HINT)
    }

    #[test]
    fn no_existing_record_means_execute() {
        assert_eq!(decide_now(None, "a"), NextAction::Execute);
    }

    #[test]
    fn completed_record_with_same_fingerprint_is_replayed() {
        let r = record("a", "other", RecordState::Completed(stored()));
        assert_eq!(decide_now(Some(r), "a"), NextAction::Replay(stored()));
    }

    #[test]
    fn in_progress_record_of_another_owner_gets_a_short_retry_hint() {
        let r = record("a", "other", in_progress(11_500));
        assert_eq!(
            decide_now(Some(r), "a"),
            NextAction::InProgress {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn retry_after_never_points_past_the_lease() {
        let r = record("a", "other", in_progress(900));
        assert_eq!(
            decide_now(Some(r), "a"),
            NextAction::InProgress {
                retry_after_secs: 0
            }
        );
        let long_hint = decide(
            Some(record("a", "other", in_progress(3_200))),
            &fp("a"),
            &me(),
            NOW,
            Duration::from_secs(10),
        );
        assert_eq!(
            long_hint,
            NextAction::InProgress {
                retry_after_secs: 3
            }
        );
    }

    #[test]
    fn a_lease_end_in_the_past_gives_zero_not_an_underflow() {
        let r = record(
            "a",
            "other",
            RecordState::InProgress {
                lease_end_ms: NOW - 5,
            },
        );
        assert_eq!(
            decide_now(Some(r), "a"),
            NextAction::InProgress {
                retry_after_secs: 0
            }
        );
    }

    #[test]
    fn in_progress_record_holding_our_token_means_execute() {
        let r = record("a", "me", in_progress(5_000));
        assert_eq!(decide_now(Some(r), "a"), NextAction::Execute);
    }

    #[test]
    fn different_fingerprint_is_a_mismatch_once_completed() {
        let completed = record("a", "other", RecordState::Completed(stored()));
        assert_eq!(decide_now(Some(completed), "b"), NextAction::Mismatch);
    }

    #[test]
    fn different_fingerprint_waits_while_the_record_is_in_progress() {
        // That attempt may still be refused and released: not final yet.
        let running = record("a", "other", in_progress(5_000));
        let busy = NextAction::InProgress {
            retry_after_secs: 1,
        };
        assert_eq!(decide_now(Some(running), "b"), busy);
        let ours = record("a", "me", in_progress(5_000));
        assert_eq!(decide_now(Some(ours), "b"), busy);
    }
}
