//! The record as a DynamoDB item, and the conditions every write carries.
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `pk` | S | the record key (the table's partition key) |
//! | `phase` | S | `in_progress` or `completed` |
//! | `owner` | S | the owner token |
//! | `payload` | B | the layer's opaque payload, byte for byte |
//! | `expiry` | N | when the record ends, in epoch milliseconds: the conditions compare it |
//! | `ttl` | N | the same instant in epoch seconds (rounded up), for DynamoDB's TTL |
//!
//! DynamoDB's TTL deletes expired items late (within days), so no decision
//! relies on it: a write treats an item whose `expiry` passed as absent,
//! and `:now` is the writer's clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::{Phase, StoreError, StoredRecord};
use crate::{OwnerToken, StoreKey};

/// The partition key's attribute name: the table must be keyed on it (S).
pub(super) const PARTITION_KEY: &str = "pk";
/// The TTL attribute to enable on the table.
pub(super) const TTL: &str = "ttl";

/// Every attribute name goes through a placeholder (`owner` and `ttl` are
/// reserved words in expressions).
const NAMES: [(&str, &str); 4] = [
    ("#pk", PARTITION_KEY),
    ("#phase", "phase"),
    ("#owner", "owner"),
    ("#expiry", "expiry"),
];

/// The placeholders `condition` uses, and only those: DynamoDB refuses a
/// request that defines a name its expressions do not use.
pub(super) fn names(condition: &str) -> HashMap<String, String> {
    NAMES
        .iter()
        .filter(|(placeholder, _)| condition.contains(placeholder))
        .map(|(placeholder, name)| ((*placeholder).to_owned(), (*name).to_owned()))
        .collect()
}

/// A claim: the key is free, or its record expired.
pub(super) const FREE: &str = "attribute_not_exists(#pk) OR #expiry < :now";
/// A completion: free as above, or ours (in either phase).
pub(super) const FREE_OR_OURS: &str =
    "attribute_not_exists(#pk) OR #expiry < :now OR #owner = :owner";
/// A release or a renewal: our live claim in progress.
pub(super) const OURS_IN_PROGRESS: &str =
    "#owner = :owner AND #phase = :in_progress AND #expiry >= :now";

const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

/// Epoch milliseconds on this machine's clock.
pub(super) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::InProgress => IN_PROGRESS,
        Phase::Completed => COMPLETED,
    }
}

/// The item `(phase, owner, payload)` under `key`, ending `lifetime` after
/// `now` (epoch ms).
pub(super) fn item(
    key: &StoreKey,
    phase: Phase,
    owner: &OwnerToken,
    payload: &[u8],
    now: u64,
    lifetime: Duration,
) -> HashMap<String, AttributeValue> {
    let lifetime = u64::try_from(lifetime.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let expiry = now.saturating_add(lifetime);
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(key.as_str().to_owned()),
        ),
        (
            "phase".to_owned(),
            AttributeValue::S(phase_name(phase).to_owned()),
        ),
        (
            "owner".to_owned(),
            AttributeValue::S(owner.as_str().to_owned()),
        ),
        ("payload".to_owned(), AttributeValue::B(Blob::new(payload))),
        ("expiry".to_owned(), number(expiry)),
        (TTL.to_owned(), number(expiry.div_ceil(1000))),
    ])
}

/// The values a condition refers to: `:now` always, `:owner` and
/// `:in_progress` when given.
pub(super) fn values(now: u64, owner: Option<&OwnerToken>) -> HashMap<String, AttributeValue> {
    let mut values = HashMap::from([(":now".to_owned(), number(now))]);
    if let Some(owner) = owner {
        values.insert(
            ":owner".to_owned(),
            AttributeValue::S(owner.as_str().to_owned()),
        );
    }
    values
}

/// [`values`] for [`OURS_IN_PROGRESS`].
pub(super) fn ours_in_progress(now: u64, owner: &OwnerToken) -> HashMap<String, AttributeValue> {
    let mut values = values(now, Some(owner));
    values.insert(
        ":in_progress".to_owned(),
        AttributeValue::S(IN_PROGRESS.to_owned()),
    );
    values
}

/// Reads back an item this store wrote.
pub(super) fn record(item: &HashMap<String, AttributeValue>) -> Result<StoredRecord, StoreError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(StoreError::Corrupt(format!(
            "the item has no string attribute {name:?}"
        ))),
    };
    let phase = match text("phase")?.as_str() {
        IN_PROGRESS => Phase::InProgress,
        COMPLETED => Phase::Completed,
        other => return Err(StoreError::Corrupt(format!("unknown phase {other:?}"))),
    };
    let payload = match item.get("payload") {
        Some(AttributeValue::B(blob)) => blob.clone().into_inner(),
        _ => {
            return Err(StoreError::Corrupt(
                "the item has no binary payload".to_owned(),
            ))
        }
    };
    Ok(StoredRecord {
        phase,
        owner: OwnerToken::from(text("owner")?),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;

    fn key() -> StoreKey {
        let raw = IdempotencyKey::try_from("k").expect("key");
        StoreKey::derive("test", "anonymous", "POST", "/orders", &raw)
    }

    #[test]
    fn an_item_reads_back_as_the_record_it_was_written_from() {
        let owner = OwnerToken::from("a-1".to_owned());
        let payload: Vec<u8> = (0..=255u8).collect();
        for phase in [Phase::InProgress, Phase::Completed] {
            let written = item(
                &key(),
                phase,
                &owner,
                &payload,
                1_000,
                Duration::from_millis(1),
            );
            let read = record(&written).expect("readable");
            assert_eq!(
                (read.phase, read.owner, read.payload),
                (phase, owner.clone(), payload.clone())
            );
        }
    }

    #[test]
    fn the_ttl_is_the_expiry_rounded_up_to_whole_seconds() {
        let written = item(
            &key(),
            Phase::Completed,
            &OwnerToken::from("a".to_owned()),
            b"",
            1_500,
            Duration::from_millis(600),
        );
        assert_eq!(written["expiry"], AttributeValue::N("2100".to_owned()));
        assert_eq!(written["ttl"], AttributeValue::N("3".to_owned()));
    }

    #[test]
    fn an_item_without_an_owner_or_with_an_unknown_phase_is_corrupt() {
        let owner = OwnerToken::from("a".to_owned());
        let mut written = item(
            &key(),
            Phase::Completed,
            &owner,
            b"",
            0,
            Duration::from_secs(1),
        );
        written.insert("phase".to_owned(), AttributeValue::S("done".to_owned()));
        assert!(matches!(record(&written), Err(StoreError::Corrupt(_))));
        written.remove("owner");
        assert!(matches!(record(&written), Err(StoreError::Corrupt(_))));
    }
}
