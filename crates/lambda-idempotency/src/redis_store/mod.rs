//! [`RedisStore`]: idempotency records in Redis (standalone, replicated or
//! cluster; ElastiCache, Valkey or a local `redis-server`).
//!
//! A record is one string value: `p` or `c` (the phase), the owner token, a
//! newline, then the layer's payload. One string means the claim is one
//! plain command on the common path, `SET key value NX PX <lease> GET`: it
//! creates the record, or returns the existing one, atomically. Replays,
//! `409`s and `422`s therefore cost one round trip and no Lua. (Redis before
//! 7.0 refuses `NX` with `GET`; the store then switches to an equivalent
//! Lua claim for good.) Completing, releasing and renewing are Lua scripts
//! that compare the owner token inside the value before writing.
//!
//! Every call is bounded by the command timeout, and retried once when the
//! connection was dropped (over RESP2 a dead connection is noticed only when
//! used, so the first call after an outage would otherwise fail). The retry
//! is safe: a repeated claim finds our own token, and the scripts are fenced.
//!
//! With [`RedisOptions::min_replicas`] above zero, the claim and the
//! completion are each pipelined with `WAIT <n> <timeout>` in the same round
//! trip, and are not acted on unless that many replicas acknowledged them.
//! The claim is then a script that writes back a record it finds, so that
//! `WAIT` also covers a record this instance only read (a replay).
//!
//! # Layout
//!
//! - `options.rs`: [`RedisOptions`], from the environment or in code;
//! - `encoding.rs`: the record as one string;
//! - `scripts.rs`: the fenced Lua scripts;
//! - `conn.rs`: [`RedisConnection`], the shared connection that bounds each
//!   command and replaces a useless socket (`useless.rs` says which;
//!   `slot.rs` numbers the sockets and notes when each last answered);
//! - `claimed.rs`: with replicas required, the socket each live claim went
//!   to;
//! - `setup.rs`: what can stop a connection from being set up
//!   ([`ConnectError`]: the URL, the CA bundle), and the variable each
//!   failure names;
//! - `iam.rs`: ElastiCache IAM tokens.

mod claimed;
mod conn;
mod encoding;
mod iam;
mod options;
mod scripts;
mod setup;
mod slot;
mod useless;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, Script, Value};

use claimed::ClaimedOn;
pub use conn::RedisConnection;
use encoding::{decode, encode, in_progress_prefix};
pub use iam::IamAuth;
pub use options::{RedisOptions, DEFAULT_REDIS_URL};
use scripts::{CLAIM_CONFIRMED_LUA, CLAIM_LUA, COMPLETE, RELEASE, RENEW};
pub use setup::ConnectError;

use crate::settings::ConfigError;
use crate::store::{IdempotencyStore, Phase, StoreError, StoredRecord};
use crate::{OwnerToken, StoreKey};

/// Idempotency records in Redis. Cheap to clone (the connection is shared).
/// Its `Debug` shows the options, never the URL (it may hold a password).
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    options: Arc<RedisOptions>,
    scripts: Arc<Scripts>,
    /// With `min_replicas`: the connection each live claim went to.
    claimed: Arc<ClaimedOn>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    renew: Script,
    /// Set once the server refused `SET … NX … GET` (Redis before 7.0).
    lua_claim: AtomicBool,
}

impl RedisStore {
    /// A store over a new lazy connection to `url`.
    ///
    /// With [`RedisOptions::min_replicas`], `url` must be a standalone
    /// Redis: in cluster mode a record and the handler's writes may live on
    /// different shards, which one `WAIT` does not cover.
    pub fn open(url: &str, options: RedisOptions) -> Result<Self, ConnectError> {
        if options.min_replicas > 0 && options.cluster {
            return Err(ConnectError::ReplicasInCluster);
        }
        // Unbounded: `call` bounds each call, reconnects and script
        // reloads included, by one timer.
        let conn = RedisConnection::open(url, &options)?.unbounded();
        Ok(Self {
            conn,
            options: Arc::new(options),
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM_LUA),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
                lua_claim: AtomicBool::new(false),
            }),
            claimed: Arc::default(),
        })
    }

    /// A store for `REDIS_URL` (default [`DEFAULT_REDIS_URL`]) with
    /// [`RedisOptions::from_env`]. The URL is checked here, so a typo fails
    /// at start-up; it is never echoed (it may carry a password).
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        let options = RedisOptions::from_env()?;
        options.validate_url(&url)?;
        Ok(Self::open(&url, options)?)
    }

    /// Connects and loads the store's scripts, so that the first request
    /// after a cold start pays neither (call it during Lambda's init
    /// phase). Bounded by the timeout; a failure is only logged: start-up
    /// must succeed while Redis is down, and requests then get `503` until
    /// it is back.
    pub async fn warm_up(&self) {
        let scripts = [COMPLETE, RELEASE, RENEW];
        let result = self
            .call(|mut conn| async move {
                if self.options.cluster {
                    // Scripts are per node and a node may change: connect only;
                    // EVALSHA loads a script where it is missing.
                    return redis::cmd("PING").query_async::<()>(&mut conn).await;
                }
                let mut pipe = redis::pipe();
                for source in scripts {
                    pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not reach Redis at start-up; requests will retry");
        }
    }

    /// The store's connection, for the function's own commands: one
    /// connection per instance, and with [`RedisOptions::min_replicas`] a
    /// completion's `WAIT` also covers the writes sent on it before.
    pub fn connection(&self) -> RedisConnection {
        self.conn.bounded(self.options.timeout)
    }

    /// Runs one call bounded by the timeout, retrying once when the
    /// connection was dropped before an answer. A response timeout is not
    /// retried (the server may be slow, not gone), but it retires the
    /// connection: the next call gets a fresh one.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_on(&self.conn, op).await
    }

    /// [`Self::call`] on `conn` (the store's, or a copy of it pinned to one
    /// socket).
    async fn call_on<T, F, Fut>(&self, conn: &RedisConnection, op: F) -> Result<T, StoreError>
    where
        F: Fn(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.options.timeout;
        let mut retried = false;
        loop {
            let generation = conn.generation();
            match tokio::time::timeout(timeout, op(conn.clone())).await {
                Err(_) => {
                    conn.retire(generation);
                    return Err(StoreError::Timeout(timeout));
                }
                Ok(Err(e))
                    if !retried
                        && !e.is_timeout()
                        && (e.is_connection_dropped() || e.is_io_error()) =>
                {
                    tracing::debug!(error = %e, "redis connection dropped; retrying once");
                    retried = true;
                }
                Ok(Err(e)) if e.is_timeout() => return Err(StoreError::Timeout(timeout)),
                Ok(result) => return result.map_err(StoreError::backend),
            }
        }
    }

    /// Runs `cmd` alone, or pipelined with `WAIT` when replicas must
    /// acknowledge it; returns its reply and the replicas that did.
    async fn with_wait(&self, cmd: redis::Cmd) -> Result<(Value, u32), StoreError> {
        self.with_wait_on(&self.conn, cmd).await
    }

    /// [`Self::with_wait`] on `conn`.
    async fn with_wait_on(
        &self,
        conn: &RedisConnection,
        cmd: redis::Cmd,
    ) -> Result<(Value, u32), StoreError> {
        let wanted = self.options.min_replicas;
        if wanted == 0 {
            let value = self
                .call_on(conn, |mut conn| {
                    let cmd = &cmd;
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .await?;
            return Ok((value, 0));
        }
        // Redis checks WAIT timeouts about every 100 ms (hz 10): leave room
        // for that inside the command timeout.
        let wait_ms = millis(self.options.timeout / 4);
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).cmd("WAIT").arg(wanted).arg(wait_ms);
        let (value, acked): (Value, i64) = self
            .call_on(conn, |mut conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok((value, u32::try_from(acked).unwrap_or(0)))
    }

    /// `EVAL` rather than `EVALSHA` inside a pipeline: no `NOSCRIPT` to
    /// recover from mid-pipeline.
    fn eval(source: &str, key: &StoreKey, args: &[&[u8]]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(source).arg(1).arg(key.as_str());
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &StoreKey,
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        self.call(|mut conn| async move {
            let mut invocation = script.key(key.as_str());
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    fn check_replicas(&self, acked: u32) -> Result<(), StoreError> {
        let wanted = self.options.min_replicas;
        if acked < wanted {
            return Err(not_replicated(acked, wanted));
        }
        Ok(())
    }

    async fn claim_value(
        &self,
        key: &StoreKey,
        value: &[u8],
        lease: u64,
    ) -> Result<(Value, u32), StoreError> {
        let lease_arg = lease.to_string();
        if self.options.min_replicas > 0 {
            let args: [&[u8]; 2] = [value, lease_arg.as_bytes()];
            return self
                .with_wait(Self::eval(CLAIM_CONFIRMED_LUA, key, &args))
                .await;
        }
        if !self.scripts.lua_claim.load(Ordering::Relaxed) {
            let mut set = redis::cmd("SET");
            set.arg(key.as_str())
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(lease)
                .arg("GET");
            match self.with_wait(set).await {
                Err(StoreError::Backend(e)) if is_syntax_error(&*e) => {
                    tracing::warn!(
                        "this Redis refuses SET NX GET (before 7.0); claiming with Lua from now on"
                    );
                    self.scripts.lua_claim.store(true, Ordering::Relaxed);
                }
                Err(StoreError::Backend(e)) if is_out_of_memory(&*e) => {
                    return self.read_when_full(key, e).await;
                }
                other => return other,
            }
        }
        let args: [&[u8]; 2] = [value, lease_arg.as_bytes()];
        let value = self.script(&self.scripts.claim, key, &args).await?;
        Ok((value, 0))
    }
}

impl RedisStore {
    /// A completion that cannot be confirmed (`why`): the socket of the
    /// claim was replaced, so the handler's writes may be on a server the
    /// store no longer reaches, where no `WAIT` of ours can cover them; or
    /// the completion's own `WAIT` failed. Nothing more is completed, and
    /// the claim is given back (a completion that did land is kept: the
    /// release is fenced to our claim in progress), so a retry runs at once
    /// and finds the handler's write where it survived, or makes it again;
    /// this request gets `503`.
    async fn refuse_completion(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        why: &str,
    ) -> Result<bool, StoreError> {
        tracing::warn!(
            key_hash = key.hash(),
            "{why} before the completion was confirmed: not completed, the claim given back"
        );
        // Before the `503`, so that the client's retry finds the key free.
        // Should the deadline cut this short, the answer is a `503` all the
        // same (the store confirms writes) and the lease frees the key.
        let _ = self.release(key, owner).await;
        Err(not_replicated(0, self.options.min_replicas))
    }

    /// A full Redis (`noeviction`) refuses `SET` even when `NX` would not
    /// write. Reading the record still answers replays, `409`s and `422`s;
    /// only a new claim fails (`503`), as it must.
    async fn read_when_full(
        &self,
        key: &StoreKey,
        oom: Box<dyn std::error::Error + Send + Sync>,
    ) -> Result<(Value, u32), StoreError> {
        let value = self
            .call(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key.as_str())
                    .query_async::<Value>(&mut conn)
                    .await
            })
            .await?;
        match value {
            Value::Nil => Err(StoreError::Backend(oom)),
            found => Ok((found, 0)),
        }
    }
}

/// A write fewer replicas acknowledged than required: applied, not yet
/// durable.
fn not_replicated(acked: u32, wanted: u32) -> StoreError {
    StoreError::NotDurable {
        reason: format!("acknowledged by {acked} of the {wanted} replicas required"),
    }
}

/// A pinned command refused because its connection was replaced.
fn is_moved(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    error
        .downcast_ref::<redis::RedisError>()
        .is_some_and(conn::is_moved)
}

fn is_syntax_error(error: &(dyn std::error::Error + Send + Sync)) -> bool {
    error
        .to_string()
        .to_ascii_lowercase()
        .contains("syntax error")
}

fn is_out_of_memory(error: &(dyn std::error::Error + Send + Sync)) -> bool {
    error.to_string().contains("OOM")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let value = encode(Phase::InProgress, owner, payload);
        let (reply, acked) = self.claim_value(key, &value, millis(lease)).await?;
        // The socket from now on (the handler's writes come after this);
        // looked up only when completions are pinned to it.
        let generation = (self.options.min_replicas > 0).then(|| self.conn.generation());
        let existing = decode(reply)?;
        let ours = existing
            .as_ref()
            .is_none_or(|r| r.phase == Phase::InProgress && r.owner == *owner);
        // Whatever the claim found or made, nothing is acted on unless the
        // replicas acknowledged it. Our own claim comes back when the first
        // reply was lost and the call retried: it is given back too.
        if let Err(not_replicated) = self.check_replicas(acked) {
            if ours {
                let _ = self.release(key, owner).await;
            }
            return Err(not_replicated);
        }
        if let Some(generation) = generation.filter(|_| ours) {
            self.claimed.insert(owner, generation);
        }
        Ok(existing)
    }

    async fn complete(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        retention: Duration,
    ) -> Result<bool, StoreError> {
        let value = encode(Phase::Completed, owner, payload);
        let retention = millis(retention).to_string();
        let args: [&[u8]; 3] = [owner.as_str().as_bytes(), &value, retention.as_bytes()];
        if self.options.min_replicas == 0 {
            return Ok(self
                .script::<i64>(&self.scripts.complete, key, &args)
                .await?
                == 1);
        }
        // Only on the socket the handler's writes went to since the claim.
        let Some(generation) = self.claimed.get(owner) else {
            // Refused, completed or given back before: nothing more to do.
            return Err(not_replicated(0, self.options.min_replicas));
        };
        let pinned = self.conn.pinned_to(generation);
        let (reply, acked) = match self
            .with_wait_on(&pinned, Self::eval(COMPLETE, key, &args))
            .await
        {
            Ok(answer) => answer,
            Err(StoreError::Backend(e)) if is_moved(&*e) => {
                return self
                    .refuse_completion(key, owner, "the connection of the claim was replaced")
                    .await;
            }
            // Not confirmed is not acknowledged: the handler's writes may be
            // on the primary only, so the layer must not answer with them.
            // The layer does not try a refused completion again, so the
            // claim is given back: the client's retry runs at once rather
            // than after the lease.
            Err(e) => {
                tracing::warn!(error = %e, "the completion could not be confirmed by WAIT");
                return self.refuse_completion(key, owner, "its WAIT failed").await;
            }
        };
        self.claimed.forget(owner);
        let written = i64::from_redis_value(reply).map_err(StoreError::backend)? == 1;
        // Taken over: this instance's own writes (the handler's) may still
        // be on the primary only, and WAIT on a connection that wrote
        // nothing since a reconnect proves nothing. Confirm nothing, so no
        // answer is sent that a failover could undo; a retry replays the
        // new owner's.
        self.check_replicas(if written { acked } else { 0 })?;
        Ok(written)
    }

    async fn release(&self, key: &StoreKey, owner: &OwnerToken) -> Result<bool, StoreError> {
        if self.options.min_replicas > 0 {
            self.claimed.forget(owner);
        }
        let prefix = in_progress_prefix(owner);
        let args: [&[u8]; 1] = [&prefix];
        Ok(self
            .script::<i64>(&self.scripts.release, key, &args)
            .await?
            == 1)
    }

    /// Each method makes at most two calls to Redis (a claim may fall back
    /// to Lua, or to a read when Redis is full), each of at most two
    /// attempts (a dropped connection is retried once), each attempt
    /// bounded by the timeout.
    fn max_call_time(&self) -> Option<Duration> {
        Some(self.options.timeout * 4)
    }

    /// With [`RedisOptions::min_replicas`]: a completion counts once that
    /// many replicas acknowledged it.
    fn confirms_writes(&self) -> bool {
        self.options.min_replicas > 0
    }

    async fn renew(
        &self,
        key: &StoreKey,
        owner: &OwnerToken,
        payload: &[u8],
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let prefix = in_progress_prefix(owner);
        let value = encode(Phase::InProgress, owner, payload);
        let lease = millis(lease).to_string();
        let args: [&[u8]; 3] = [&prefix, &value, lease.as_bytes()];
        Ok(self.script::<i64>(&self.scripts.renew, key, &args).await? == 1)
    }
}

#[cfg(test)]
mod tests;
