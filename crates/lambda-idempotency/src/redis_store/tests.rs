//! The store's contract against a real `redis-server`: atomic claims,
//! fencing by owner token, expiry, the pre-7.0 Lua claim, and replica
//! acknowledgement.

use std::time::Duration;

use testkit::RedisServer;

use super::*;
use crate::key::IdempotencyKey;

fn store(redis: &RedisServer, options: RedisOptions) -> RedisStore {
    RedisStore::open(&redis.url(), options).expect("store")
}

fn key(name: &str) -> StoreKey {
    let key = IdempotencyKey::try_from(name).expect("key");
    StoreKey::derive("test", "anonymous", "POST", "/orders", &key)
}

fn owner(name: &str) -> OwnerToken {
    OwnerToken::from(name.to_owned())
}

const LEASE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_claim_creates_the_record_once_and_then_returns_it() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k1");

    assert_eq!(
        store.claim(&k, &owner("a"), b"first", LEASE).await.unwrap(),
        None
    );
    let found = store
        .claim(&k, &owner("b"), b"second", LEASE)
        .await
        .unwrap();
    assert_eq!(
        found,
        Some(StoredRecord {
            phase: Phase::InProgress,
            owner: owner("a"),
            payload: b"first".to_vec(),
        })
    );
}

#[tokio::test]
async fn payloads_with_newlines_and_binary_bytes_survive_intact() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k-bin");
    let payload: Vec<u8> = (0..=255u8).chain(b"\n\nend".iter().copied()).collect();
    store.claim(&k, &owner("a"), &payload, LEASE).await.unwrap();
    store
        .complete(&k, &owner("a"), &payload, LEASE)
        .await
        .unwrap();
    let found = store
        .claim(&k, &owner("b"), b"", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.phase, Phase::Completed);
    assert_eq!(found.payload, payload);
}

#[tokio::test]
async fn only_the_owner_completes_releases_or_renews() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k2");
    store.claim(&k, &owner("a"), b"p", LEASE).await.unwrap();

    assert!(!store.complete(&k, &owner("b"), b"x", LEASE).await.unwrap());
    assert!(!store.release(&k, &owner("b")).await.unwrap());
    assert!(!store.renew(&k, &owner("b"), b"x", LEASE).await.unwrap());
    assert!(store
        .renew(&k, &owner("a"), b"renewed", LEASE)
        .await
        .unwrap());
    assert!(store
        .complete(&k, &owner("a"), b"done", LEASE)
        .await
        .unwrap());
    // Repeating a completion (a lost reply, retried) changes nothing more.
    assert!(store
        .complete(&k, &owner("a"), b"done", LEASE)
        .await
        .unwrap());
    // A completed record is never released or renewed, even by its owner.
    assert!(!store.release(&k, &owner("a")).await.unwrap());
    assert!(!store.renew(&k, &owner("a"), b"x", LEASE).await.unwrap());
    let found = store
        .claim(&k, &owner("c"), b"", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.phase, found.payload),
        (Phase::Completed, b"done".to_vec())
    );
}

#[tokio::test]
async fn a_released_key_can_be_claimed_again_at_once() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k3");
    store.claim(&k, &owner("a"), b"p", LEASE).await.unwrap();
    assert!(store.release(&k, &owner("a")).await.unwrap());
    assert_eq!(
        store.claim(&k, &owner("b"), b"p", LEASE).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn leases_expire_and_a_late_owner_may_still_complete_an_unclaimed_key() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k4");
    store
        .claim(&k, &owner("a"), b"p", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    // Nobody took it over: storing the late result is safe and saves a rerun.
    assert!(store
        .complete(&k, &owner("a"), b"late", LEASE)
        .await
        .unwrap());

    let taken = key("k5");
    store
        .claim(&taken, &owner("a"), b"p", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store.claim(&taken, &owner("b"), b"p", LEASE).await.unwrap(),
        None
    );
    // Taken over: the late owner's completion is refused.
    assert!(!store
        .complete(&taken, &owner("a"), b"late", LEASE)
        .await
        .unwrap());
}

#[tokio::test]
async fn the_lua_claim_for_servers_before_7_behaves_like_set_nx_get() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    store.scripts.lua_claim.store(true, Ordering::Relaxed);
    let k = key("k6");
    assert_eq!(
        store.claim(&k, &owner("a"), b"one", LEASE).await.unwrap(),
        None
    );
    let found = store
        .claim(&k, &owner("b"), b"two", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.owner, found.payload), (owner("a"), b"one".to_vec()));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(k.as_str())
        .query(&mut redis.conn())
        .unwrap();
    assert!(ttl > 0 && ttl <= 10_000, "{ttl}");
}

#[tokio::test]
async fn a_foreign_value_at_the_key_is_an_error_not_a_panic() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    let k = key("k7");
    let _: () = redis::cmd("HSET")
        .arg(k.as_str())
        .arg("s")
        .arg("p")
        .query(&mut redis.conn())
        .unwrap();
    assert!(store.claim(&k, &owner("a"), b"p", LEASE).await.is_err());
    let other = key("k8");
    let _: () = redis::cmd("SET")
        .arg(other.as_str())
        .arg("garbage")
        .query(&mut redis.conn())
        .unwrap();
    assert!(matches!(
        store.claim(&other, &owner("a"), b"p", LEASE).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn without_enough_replicas_a_claim_is_given_back_and_refused() {
    let redis = RedisServer::start();
    let options = RedisOptions {
        min_replicas: 1,
        ..RedisOptions::default()
    };
    let store = store(&redis, options);
    let k = key("k9");
    let result = store.claim(&k, &owner("a"), b"p", LEASE).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::NotDurable { reason })
                if reason == "acknowledged by 0 of the 1 replicas required"
        ),
        "{result:?}"
    );
    assert_eq!(
        redis.count("test:*"),
        0,
        "the unacknowledged claim was released"
    );
}

#[tokio::test]
async fn with_a_live_replica_claims_and_completions_are_acknowledged() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let options = RedisOptions {
        min_replicas: 1,
        ..RedisOptions::default()
    };
    let store = store(&primary, options);
    let k = key("k10");
    assert_eq!(
        store.claim(&k, &owner("a"), b"p", LEASE).await.unwrap(),
        None
    );
    assert!(store
        .complete(&k, &owner("a"), b"done", LEASE)
        .await
        .unwrap());
    let on_replica: Option<Vec<u8>> = redis::cmd("GET")
        .arg(k.as_str())
        .query(&mut replica.conn())
        .unwrap();
    assert!(on_replica.is_some_and(|v| v.ends_with(b"done")));
}

fn options(vars: &[(&str, &str)]) -> Result<RedisOptions, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RedisOptions::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
}

#[test]
fn iam_authentication_is_read_from_the_environment_and_needs_its_cache_and_region() {
    assert_eq!(options(&[]).unwrap().iam, None);
    let full = options(&[
        ("REDIS_IAM_USER", "orders-app"),
        ("REDIS_IAM_CACHE_NAME", "orders"),
        ("REDIS_IAM_SERVERLESS", "true"),
        ("AWS_REGION", "eu-west-1"),
    ])
    .unwrap();
    assert_eq!(
        full.iam,
        Some(IamAuth {
            user: "orders-app".into(),
            cache_name: "orders".into(),
            serverless: true,
            region: "eu-west-1".into(),
        })
    );
    let no_cache = options(&[("REDIS_IAM_USER", "u"), ("AWS_REGION", "r")]).unwrap_err();
    assert_eq!(no_cache.var, "REDIS_IAM_CACHE_NAME");
    let no_region = options(&[("REDIS_IAM_USER", "u"), ("REDIS_IAM_CACHE_NAME", "c")]).unwrap_err();
    assert_eq!(no_region.var, "AWS_REGION");
}

#[tokio::test]
async fn warming_up_loads_every_script_so_the_first_completion_needs_no_script_load() {
    let redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    store.warm_up().await;
    let loaded: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(Script::new(COMPLETE).get_hash())
        .arg(Script::new(RELEASE).get_hash())
        .arg(Script::new(RENEW).get_hash())
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(loaded, [true, true, true]);
}

#[tokio::test]
async fn warming_up_while_redis_is_down_returns_quickly_without_failing() {
    let mut redis = RedisServer::start();
    let store = store(&redis, RedisOptions::default());
    redis.stop();
    let started = std::time::Instant::now();
    store.warm_up().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn urls_are_checked_and_iam_needs_tls() {
    let plain = RedisOptions::default();
    assert!(plain.validate_url("redis://127.0.0.1:6379").is_ok());
    assert_eq!(
        plain.validate_url("http://x:secret@y").unwrap_err().var,
        "REDIS_URL"
    );
    assert!(!plain
        .validate_url("http://x:secret@y")
        .unwrap_err()
        .to_string()
        .contains("secret"));
    let iam = options(&[
        ("REDIS_IAM_USER", "u"),
        ("REDIS_IAM_CACHE_NAME", "c"),
        ("AWS_REGION", "r"),
    ])
    .unwrap();
    assert_eq!(
        iam.validate_url("redis://cache:6379").unwrap_err().var,
        "REDIS_IAM_USER"
    );
    assert!(iam.validate_url("rediss://cache:6379").is_ok());
}

#[test]
fn replicas_required_refuse_cluster_mode() {
    let replicated = options(&[("REDIS_MIN_REPLICAS", "1")]).unwrap();
    let mut cluster = replicated.clone();
    cluster.cluster = true;
    assert!(RedisStore::open("redis://cache:6379", cluster).is_err());
    assert!(RedisStore::open("redis://cache:6379", replicated).is_ok());
}

#[tokio::test]
async fn against_a_frozen_redis_every_command_and_every_store_call_times_out_in_its_bound() {
    // The connection bounds each command itself (one timer, no response
    // timeout of the redis crate's); the store's own copy is unbounded and
    // each store call is bounded by the store instead. Both must still end.
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let store = store(
        &redis,
        RedisOptions {
            timeout,
            ..RedisOptions::default()
        },
    );
    let mut conn = store.connection();
    let _: () = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    redis.pause();

    let started = std::time::Instant::now();
    let get = guard(redis::cmd("GET").arg("k").query_async::<Value>(&mut conn)).await;
    let waited = started.elapsed();
    assert!(get.as_ref().is_err_and(|e| e.is_timeout()), "{get:?}");
    assert!(waited >= timeout && waited < timeout * 3, "{waited:?}");

    let started = std::time::Instant::now();
    let claim = guard(store.claim(&key("frozen"), &owner("a"), b"p", LEASE)).await;
    let waited = started.elapsed();
    assert!(
        matches!(claim, Err(StoreError::Timeout(t)) if t == timeout),
        "{claim:?}"
    );
    let bound = store.max_call_time().expect("a bound");
    assert!(waited >= timeout && waited < bound, "{waited:?}");
    redis.resume();
}

/// `call`'s output, or a failed test (not a hung one) after 5 s.
async fn guard<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("unbounded: still waiting after 5 s")
}

#[tokio::test]
async fn a_store_confirms_its_writes_only_when_replicas_must_acknowledge_them() {
    let redis = RedisServer::start();
    assert!(!store(&redis, RedisOptions::default()).confirms_writes());
    let replicated = RedisOptions {
        min_replicas: 1,
        ..RedisOptions::default()
    };
    assert!(store(&redis, replicated).confirms_writes());
}
