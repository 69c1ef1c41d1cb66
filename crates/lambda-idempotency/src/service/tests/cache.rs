//! The local cache in the request flow: replays and `422`s of completed
//! records cost no store call; in-progress, unconfirmed and undated
//! records never come from it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer};
use lambda_http::{Body, Error, Request, Response};

use super::flaky::Flaky;
use super::{anonymous, created, keyed, replayed, request, send, store};
use crate::{IdempotencyLayer, Settings};

/// An instance: the layer over `store`, with a cache of `cache_bytes`,
/// around a handler that sleeps `delay` and counts its calls.
fn instance(
    store: &Arc<Flaky>,
    cache_bytes: usize,
    retention: Duration,
    delay: Duration,
) -> (
    impl lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error, Future: Send>
        + Clone
        + Send
        + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = service_fn(move |_: Request| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(delay).await;
            Ok::<_, Error>(created(n))
        }
    });
    let settings = Settings {
        retention,
        ..Settings::default()
    };
    let layer = IdempotencyLayer::builder(Arc::clone(store))
        .settings(settings)
        .local_cache_bytes(cache_bytes)
        .scope(anonymous())
        .build();
    (layer.layer(handler), calls)
}

const DAY: Duration = Duration::from_secs(86_400);

fn claims(store: &Flaky) -> usize {
    Flaky::count(&store.claims)
}

#[tokio::test]
async fn a_replay_and_a_422_from_the_cache_cost_no_store_call() {
    let store = Flaky::over(&store());
    let (svc, calls) = instance(&store, 64 * 1024, DAY, Duration::ZERO);
    let first = send(&svc, keyed("k")).await;
    assert_eq!(claims(&store), 1);
    let replay = send(&svc, keyed("k")).await;
    assert!(replayed(&replay));
    assert_eq!(replay.body(), first.body());
    let changed = send(&svc, request(Some("k"), r#"{"a":2}"#)).await;
    assert_eq!(changed.status(), 422);
    assert_eq!(claims(&store), 1, "both answered from the cache");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_record_another_instance_completed_is_cached_once_read() {
    let shared = store();
    let (a, b) = (Flaky::over(&shared), Flaky::over(&shared));
    let (writer, _) = instance(&a, 64 * 1024, DAY, Duration::ZERO);
    let (reader, _) = instance(&b, 64 * 1024, DAY, Duration::ZERO);
    send(&writer, keyed("k")).await;
    for _ in 0..3 {
        assert!(replayed(&send(&reader, keyed("k")).await));
    }
    assert_eq!(claims(&b), 1, "read once, then answered from the cache");
}

#[tokio::test]
async fn a_record_without_its_expiry_is_never_cached() {
    // Written by a layer without a cache: no expiry in the record, so a
    // reader cannot know how long a copy would stay true.
    let shared = store();
    let (a, b) = (Flaky::over(&shared), Flaky::over(&shared));
    let (writer, _) = instance(&a, 0, DAY, Duration::ZERO);
    let (reader, _) = instance(&b, 64 * 1024, DAY, Duration::ZERO);
    send(&writer, keyed("k")).await;
    for _ in 0..3 {
        assert!(replayed(&send(&reader, keyed("k")).await));
    }
    assert_eq!(claims(&b), 3);
}

#[tokio::test]
async fn a_request_in_progress_is_never_answered_from_the_cache() {
    let store = Flaky::over(&store());
    let (svc, calls) = instance(&store, 64 * 1024, DAY, Duration::from_millis(300));
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, keyed("k")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(send(&svc, keyed("k")).await.status(), 409);
    assert_eq!(claims(&store), 2, "the 409 came from the store");
    assert_eq!(first.await.unwrap().status(), 201);
    assert!(replayed(&send(&svc, keyed("k")).await));
    assert_eq!(claims(&store), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_completion_the_store_did_not_take_is_not_cached() {
    let store = Flaky::over(&store());
    store.failing_completions.store(true, Ordering::SeqCst);
    let (svc, _) = instance(&store, 64 * 1024, DAY, Duration::ZERO);
    assert_eq!(send(&svc, keyed("k")).await.status(), 201);
    let retry = send(&svc, keyed("k")).await;
    assert!(!replayed(&retry));
    assert_eq!(claims(&store), 2, "the retry went to the store");
}

#[tokio::test]
async fn a_cached_record_expires_with_the_stored_one() {
    let store = Flaky::over(&store());
    let (svc, calls) = instance(&store, 64 * 1024, Duration::from_secs(1), Duration::ZERO);
    send(&svc, keyed("k")).await;
    assert!(replayed(&send(&svc, keyed("k")).await));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = send(&svc, keyed("k")).await;
    assert!(!replayed(&after), "expired here as in the store");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
