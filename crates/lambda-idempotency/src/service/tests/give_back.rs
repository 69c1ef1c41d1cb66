//! Claims a failure left behind are given back: by the background task
//! once the store answers, and by the next request first when that task
//! could not run (a frozen sandbox). Without give-backs each of these
//! retries would get `409` until the 3 s lease ran out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer};
use lambda_http::{Body, Error, Request, Response};

use super::flaky::Flaky;
use super::{anonymous, created, keyed, send, store};
use crate::IdempotencyLayer;

fn flaky() -> Arc<Flaky> {
    Flaky::over(&store())
}

/// The layer over `flaky` around a handler that answers `status`, counting
/// its calls.
fn layered(
    flaky: &Arc<Flaky>,
    status: u16,
) -> (
    impl lambda_http::tower::Service<Request, Response = Response<Body>, Error = Error> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = service_fn(move |_: Request| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut response = created(n);
            *response.status_mut() = status.try_into().expect("a status");
            Ok::<_, Error>(response)
        }
    });
    let layer = IdempotencyLayer::builder(Arc::clone(flaky))
        .scope(anonymous())
        .build();
    (layer.layer(handler), calls)
}

#[tokio::test(start_paused = true)]
async fn a_claim_whose_reply_was_lost_is_given_back_in_the_background() {
    let flaky = flaky();
    flaky.lost_claims.store(1, Ordering::SeqCst);
    let (svc, calls) = layered(&flaky, 201);
    assert_eq!(send(&svc, keyed("k")).await.status(), 503);
    assert_eq!(flaky.inner.len(), 1, "the claim was applied");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(flaky.inner.is_empty(), "given back at once");
    assert_eq!(send(&svc, keyed("k")).await.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_next_request_gives_back_first_when_the_background_could_not() {
    let flaky = flaky();
    flaky.lost_claims.store(1, Ordering::SeqCst);
    // The background task's first give-back fails, as in a sandbox frozen
    // while the store was away; it would try again only 250 ms later.
    flaky.failed_releases.store(1, Ordering::SeqCst);
    let (svc, calls) = layered(&flaky, 201);
    assert_eq!(send(&svc, keyed("k")).await.status(), 503);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(flaky.inner.len(), 1, "still claimed");
    let retry = send(&svc, keyed("k")).await;
    assert_eq!(retry.status(), 201, "the retry gave the claim back first");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_release_that_failed_is_given_back_when_the_store_answers() {
    let flaky = flaky();
    // Two failures: the release after the 500 and the background's first
    // try. The second round, 250 ms later, gives the claim back.
    flaky.failed_releases.store(2, Ordering::SeqCst);
    let (svc, calls) = layered(&flaky, 500);
    assert_eq!(send(&svc, keyed("k")).await.status(), 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(flaky.inner.is_empty(), "given back by the second round");
    assert_eq!(send(&svc, keyed("k")).await.status(), 500);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the retry ran at once");
}

#[tokio::test(start_paused = true)]
async fn a_claim_that_never_landed_costs_requests_no_give_back_and_stops_after_two_leases() {
    let flaky = flaky();
    flaky.refused_claims.store(1, Ordering::SeqCst);
    let (svc, _) = layered(&flaky, 201);
    assert_eq!(send(&svc, keyed("k")).await.status(), 503);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let answered = flaky.releases.load(Ordering::SeqCst);
    assert_eq!(answered, 1, "one background give-back, answered: no claim");
    for n in 0..5 {
        send(&svc, keyed(&format!("other-{n}"))).await;
    }
    assert_eq!(flaky.releases.load(Ordering::SeqCst), answered);
    // The claim could still land from a socket the store let go of: the
    // background task goes on asking for two leases (6 s), then stops.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let stopped = flaky.releases.load(Ordering::SeqCst);
    assert!((20..=26).contains(&stopped), "{stopped} give-backs");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(flaky.releases.load(Ordering::SeqCst), stopped);
}
