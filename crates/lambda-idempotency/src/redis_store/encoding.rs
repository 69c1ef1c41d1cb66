//! The record as Redis holds it: one string, `p` or `c` (the phase), the
//! owner token, a newline, then the layer's payload. One string lets the
//! claim be one plain `SET … NX … GET`, and lets the Lua scripts fence on a
//! prefix of the value.

use redis::Value;

use crate::store::{Phase, StoreError, StoredRecord};
use crate::OwnerToken;

/// `p` or `c`, the owner, a newline, the payload.
pub(super) fn encode(phase: Phase, owner: &OwnerToken, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(2 + owner.as_str().len() + payload.len());
    value.push(match phase {
        Phase::InProgress => b'p',
        Phase::Completed => b'c',
    });
    value.extend_from_slice(owner.as_str().as_bytes());
    value.push(b'\n');
    value.extend_from_slice(payload);
    value
}

/// The fence prefix of an in-progress record owned by `owner`.
pub(super) fn in_progress_prefix(owner: &OwnerToken) -> Vec<u8> {
    encode(Phase::InProgress, owner, &[])
}

pub(super) fn decode(value: Value) -> Result<Option<StoredRecord>, StoreError> {
    let bytes = match value {
        Value::Nil => return Ok(None),
        Value::BulkString(bytes) => bytes,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected claim reply of kind {}",
                kind(&other)
            )))
        }
    };
    let phase = match bytes.first() {
        Some(b'p') => Phase::InProgress,
        Some(b'c') => Phase::Completed,
        _ => return Err(StoreError::Corrupt("unknown record phase".to_owned())),
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| StoreError::Corrupt("record without owner".to_owned()))?;
    let owner = String::from_utf8_lossy(&bytes[1..newline]).into_owned();
    let mut payload = bytes;
    payload.drain(..=newline);
    Ok(Some(StoredRecord {
        phase,
        owner: OwnerToken::from(owner),
        payload,
    }))
}

/// The kind of a reply, for error messages (never its content).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Int(_) => "integer",
        Value::Array(_) => "array",
        Value::SimpleString(_) | Value::Okay => "status",
        _ => "other",
    }
}
