//! Completions that fail: which failures the layer tries again, and which
//! end the request at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer};
use lambda_http::{Body, Error, Request, Response};

use super::{anonymous, created, keyed, send, store, SharedStore};
use crate::{IdempotencyLayer, StoreError};

/// One new request through the layer over a store whose completions fail
/// with `error()`: the answer, the completions tried, and the (paused)
/// time the request took.
async fn answer_with_completions_failing(
    error: fn() -> StoreError,
) -> (Response<Body>, usize, Duration) {
    let completes = Arc::new(AtomicUsize::new(0));
    let store = SharedStore {
        inner: store(),
        failing_completion: Some((error, Arc::clone(&completes))),
    };
    let layer = IdempotencyLayer::builder(store).scope(anonymous()).build();
    let svc = layer.layer(service_fn(|_: Request| async {
        Ok::<_, Error>(created(1))
    }));
    let started = tokio::time::Instant::now();
    let response = send(&svc, keyed("k")).await;
    (
        response,
        completes.load(Ordering::SeqCst),
        started.elapsed(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_completion_the_replicas_did_not_acknowledge_gets_503_at_once_without_another_attempt() {
    let (response, completes, took) =
        answer_with_completions_failing(|| StoreError::NotReplicated {
            acked: 0,
            wanted: 1,
        })
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(completes, 1);
    assert!(took < Duration::from_millis(25), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_completion_that_failed_in_the_backend_is_tried_three_times_and_the_answer_still_sent() {
    let (response, completes, took) =
        answer_with_completions_failing(|| StoreError::backend(std::io::Error::other("reset")))
            .await;
    assert_eq!(response.status(), 201);
    assert_eq!(completes, 3);
    // Two pauses between the three attempts: 25 ms, then 50 ms.
    assert!(took >= Duration::from_millis(75), "{took:?}");
}
