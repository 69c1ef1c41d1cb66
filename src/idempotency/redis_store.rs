//! The Redis implementation of [`IdempotencyStore`]: one round trip per
//! operation, each a Lua script so that check-and-write is atomic.
//!
//! A record is a hash at the [`StoreKey`]:
//! `s` state (`p` in progress, `c` completed), `fp` fingerprint, `o` owner
//! token, and once completed `st` status, `h` headers, `bk` body kind and
//! `b` body. The key's TTL is the lease while in progress and the retention
//! once completed.
//!
//! Every call is bounded by the command timeout, and retried once when the
//! connection was dropped: the `ConnectionManager` reconnects underneath,
//! and the retry is safe because every script is fenced by the owner token
//! (a repeated claim that finds our own token is treated as ours).

use std::time::Duration;

use redis::{FromRedisValue, Script, ScriptInvocation, Value};

use super::error::StoreError;
use super::fingerprint::Fingerprint;
use super::key::StoreKey;
use super::record::{BodyKind, OwnerToken, Record, RecordState, StoredResponse};
use super::store::IdempotencyStore;
use crate::redis_conn::{self, RedisConn};

/// Creates the in-progress record, or returns the existing one's fields in
/// a fixed order (no field names: a smaller reply to parse) and its TTL.
const CLAIM: &str = r"
local found = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'st', 'h', 'bk', 'b')
if not found[1] then
  redis.call('HSET', KEYS[1], 's', 'p', 'fp', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return false
end
found[8] = redis.call('PTTL', KEYS[1])
return found
";

/// Stores the response if the caller still owns the record.
const COMPLETE: &str = r"
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'c', 'st', ARGV[2], 'h', ARGV[3], 'bk', ARGV[4], 'b', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
";

/// Deletes the record if the caller owns it and it is still in progress.
const RELEASE: &str = r"
local r = redis.call('HMGET', KEYS[1], 'o', 's')
if r[1] == ARGV[1] and r[2] == 'p' then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Idempotency records in Redis (standalone; ElastiCache or local).
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConn,
    timeout: Duration,
    claim: Script,
    complete: Script,
    release: Script,
}

impl RedisStore {
    /// A store over a shared connection; every call is bounded by `timeout`.
    pub fn new(conn: RedisConn, timeout: Duration) -> Self {
        Self {
            conn,
            timeout,
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
        }
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let result = redis_conn::call(self.timeout, || {
            let mut conn = self.conn.clone();
            async move { call.invoke_async(&mut conn).await }
        })
        .await;
        Ok(result?)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Parses the claim script's reply: nil, or the hash's fields plus `ttl`.
fn parse_claim(value: Value) -> Result<Option<Record>, StoreError> {
    let items = match value {
        Value::Nil => return Ok(None),
        Value::Array(items) if items.len() == 8 => items,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected claim reply {other:?}"
            )))
        }
    };
    let mut fields = items.into_iter();
    let mut next = |name: &str| match fields.next() {
        Some(Value::BulkString(b)) => Ok(b),
        _ => Err(StoreError::Corrupt(format!("record lacks field {name}"))),
    };
    let state = next("s")?;
    let fingerprint = Fingerprint::from_hex(&next("fp")?)
        .ok_or_else(|| StoreError::Corrupt("bad fingerprint".to_owned()))?;
    let owner = OwnerToken::from(String::from_utf8_lossy(&next("o")?).into_owned());
    let state = match state.as_slice() {
        b"p" => RecordState::InProgress,
        b"c" => {
            let status = std::str::from_utf8(&next("st")?)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| StoreError::Corrupt("bad status".to_owned()))?;
            RecordState::Completed(StoredResponse {
                status,
                headers: StoredResponse::decode_headers(&next("h")?),
                body_kind: BodyKind::from_code(&next("bk")?),
                body: next("b")?,
            })
        }
        other => return Err(StoreError::Corrupt(format!("unknown state {other:?}"))),
    };
    // PTTL is -1 (no TTL) or -2 (gone) only in races; treat both as "now".
    let ttl_ms = match fields.nth(if matches!(state, RecordState::InProgress) {
        4
    } else {
        0
    }) {
        Some(Value::Int(ms)) => u64::try_from(ms).unwrap_or(0),
        _ => 0,
    };
    Ok(Some(Record {
        fingerprint,
        owner,
        state,
        ttl_ms,
    }))
}

impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        owner: &OwnerToken,
        lease: Duration,
    ) -> Result<Option<Record>, StoreError> {
        let mut call = self.claim.key(key.as_str());
        call.arg(fingerprint.to_hex())
            .arg(owner.as_str())
            .arg(millis(lease));
        parse_claim(self.invoke(&call).await?)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let mut call = self.complete.key(key.as_str());
        call.arg(owner.as_str())
            .arg(response.status)
            .arg(response.encode_headers())
            .arg(response.body_kind.code())
            .arg(response.body.as_slice())
            .arg(millis(retention));
        Ok(self.invoke::<i64>(&call).await? == 1)
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        let mut call = self.release.key(key.as_str());
        call.arg(owner.as_str());
        Ok(self.invoke::<i64>(&call).await? == 1)
    }
}
