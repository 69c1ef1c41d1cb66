//! The pure decision at the heart of the layer: given what the claim found
//! in the store, what happens to this request. No I/O, so every branch is
//! unit-tested directly.

use super::fingerprint::Fingerprint;
use super::record::{OwnerToken, Record, RecordState, StoredResponse};

/// What the layer does with a request after its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextAction {
    /// The claim is ours: run the handler.
    Execute,
    /// The same request already completed: send its stored response.
    Replay(StoredResponse),
    /// The same request is still running elsewhere: `409` + `Retry-After`.
    InProgress {
        /// Seconds until its lease runs out (at least 1).
        retry_after_secs: u64,
    },
    /// The key was used for a different request: `422`.
    Mismatch,
}

/// Decides from the record the claim returned (`None`: the claim created a
/// fresh in-progress record for `owner`).
///
/// An in-progress record holding our own token means our claim was applied
/// but its reply was lost (a dropped connection, retried once): the claim is
/// ours, so we execute.
pub fn decide(
    existing: Option<Record>,
    fingerprint: &Fingerprint,
    owner: &OwnerToken,
) -> NextAction {
    let Some(record) = existing else {
        return NextAction::Execute;
    };
    if record.fingerprint != *fingerprint {
        return NextAction::Mismatch;
    }
    // By value: a replay moves the stored body instead of copying it.
    match record.state {
        RecordState::Completed(response) => NextAction::Replay(response),
        RecordState::InProgress if record.owner == *owner => NextAction::Execute,
        RecordState::InProgress => NextAction::InProgress {
            retry_after_secs: record.ttl_ms.div_ceil(1000).max(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::record::BodyKind;

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::compute("POST", "/orders", None, None, body.as_bytes())
    }

    fn record(body: &str, owner: &str, state: RecordState, ttl_ms: u64) -> Record {
        Record {
            fingerprint: fp(body),
            owner: OwnerToken::from(owner.to_owned()),
            state,
            ttl_ms,
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

    #[test]
    fn no_existing_record_means_execute() {
        assert_eq!(decide(None, &fp("a"), &me()), NextAction::Execute);
    }

    #[test]
    fn completed_record_with_same_fingerprint_is_replayed() {
        let r = record("a", "other", RecordState::Completed(stored()), 1000);
        assert_eq!(
            decide(Some(r.clone()), &fp("a"), &me()),
            NextAction::Replay(stored())
        );
    }

    #[test]
    fn in_progress_record_of_another_owner_is_in_progress_with_seconds_left() {
        let r = record("a", "other", RecordState::InProgress, 2_001);
        assert_eq!(
            decide(Some(r.clone()), &fp("a"), &me()),
            NextAction::InProgress {
                retry_after_secs: 3
            }
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let r = record("a", "other", RecordState::InProgress, 0);
        assert_eq!(
            decide(Some(r.clone()), &fp("a"), &me()),
            NextAction::InProgress {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn in_progress_record_holding_our_token_means_execute() {
        let r = record("a", "me", RecordState::InProgress, 5_000);
        assert_eq!(
            decide(Some(r.clone()), &fp("a"), &me()),
            NextAction::Execute
        );
    }

    #[test]
    fn different_fingerprint_is_a_mismatch_whatever_the_state() {
        let in_progress = record("a", "other", RecordState::InProgress, 5_000);
        let completed = record("a", "other", RecordState::Completed(stored()), 5_000);
        assert_eq!(
            decide(Some(in_progress.clone()), &fp("b"), &me()),
            NextAction::Mismatch
        );
        assert_eq!(
            decide(Some(completed.clone()), &fp("b"), &me()),
            NextAction::Mismatch
        );
    }
}
