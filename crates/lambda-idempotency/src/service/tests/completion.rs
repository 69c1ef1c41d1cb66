//! Completions that fail: which failures the layer tries again, and which
//! end the request at once; and when the handler's response is still sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::tower::{service_fn, Layer};
use lambda_http::{Body, Error, Request, Response};

use super::{anonymous, created, keyed, send, store, Failing, SharedStore};
use crate::{IdempotencyLayer, StoreError};

/// One new request, with a deadline 3 s away, through the layer over a
/// store whose completions fail as `failing` says (and which confirms its
/// writes or not): the answer, the completions tried, and the (paused)
/// time the request took.
async fn answer_with_completions(
    failing: Failing,
    confirms_writes: bool,
) -> (Response<Body>, usize, Duration) {
    let completes = Arc::new(AtomicUsize::new(0));
    let store = SharedStore {
        inner: store(),
        failing_completion: Some((failing, Arc::clone(&completes))),
        confirms_writes,
    };
    let layer = IdempotencyLayer::builder(store).scope(anonymous()).build();
    let svc = layer.layer(service_fn(|_: Request| async {
        Ok::<_, Error>(created(1))
    }));
    let mut request = keyed("k");
    let mut context = lambda_http::Context::default();
    let deadline = SystemTime::now() + Duration::from_secs(3);
    context.deadline = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    request.extensions_mut().insert(context);
    let started = tokio::time::Instant::now();
    let response = send(&svc, request).await;
    (
        response,
        completes.load(Ordering::SeqCst),
        started.elapsed(),
    )
}

fn not_replicated() -> StoreError {
    StoreError::NotDurable {
        reason: "acknowledged by 0 of the 1 replicas required".to_owned(),
    }
}

fn reset() -> StoreError {
    StoreError::backend(std::io::Error::other("reset"))
}

#[tokio::test(start_paused = true)]
async fn a_completion_the_replicas_did_not_acknowledge_gets_503_at_once_without_another_attempt() {
    let (response, completes, took) =
        answer_with_completions(Failing::With(not_replicated), true).await;
    assert_eq!(response.status(), 503);
    assert_eq!(completes, 1);
    assert!(took < Duration::from_millis(25), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_completion_that_failed_in_the_backend_is_tried_three_times_and_the_answer_still_sent() {
    let (response, completes, took) = answer_with_completions(Failing::With(reset), false).await;
    assert_eq!(response.status(), 201);
    assert_eq!(completes, 3);
    // Two pauses between the three attempts: 25 ms, then 50 ms.
    assert!(took >= Duration::from_millis(75), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_completion_cut_off_by_the_deadline_gets_503_from_a_store_that_confirms_writes() {
    let (response, completes, _) = answer_with_completions(Failing::Hanging, true).await;
    assert_eq!(response.status(), 503);
    assert_eq!(completes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_completion_cut_off_by_the_deadline_still_sends_the_answer_when_the_store_confirms_nothing(
) {
    let (response, completes, _) = answer_with_completions(Failing::Hanging, false).await;
    assert_eq!(response.status(), 201);
    assert_eq!(completes, 1);
}

#[tokio::test(start_paused = true)]
async fn any_failed_completion_gets_503_from_a_store_that_confirms_writes() {
    let (response, completes, _) = answer_with_completions(Failing::With(reset), true).await;
    assert_eq!(response.status(), 503);
    assert_eq!(completes, 3);
}
