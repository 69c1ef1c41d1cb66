//! A connection that is open but useless is replaced, over a real
//! `redis-server` behind a fault proxy: one whose replies stop coming (a
//! black-holed or half-open socket), and one left on a primary that a
//! failover demoted to a read-only replica. The redis crate reconnects only
//! when its socket fails; without the store's own check, every request of
//! a warm instance would get `503` until the socket died. A connection that
//! is only slow, its replies still coming, is kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambda_http::tower::{service_fn, Layer, Service, ServiceExt};
use lambda_http::{Body, Error, Request, Response};
use lambda_idempotency::{ApiGatewayScope, IdempotencyLayer, RedisOptions, RedisStore};
use testkit::fault_proxy::{At, Fault, FaultProxy};
use testkit::fixtures::{assert_problem, event, replayed, with_header};
use testkit::proxy::socket_addr;
use testkit::RedisServer;

/// A store reaching Redis through `proxy`, with `timeout` on every call.
fn store(proxy: &FaultProxy, timeout: Duration) -> RedisStore {
    let mut options = RedisOptions::default();
    options.timeout = timeout;
    RedisStore::open(&proxy.url(), options).expect("store")
}

/// The layer over a store reaching Redis through `proxy`, around a handler
/// that counts its calls.
fn service(
    proxy: &FaultProxy,
) -> (
    impl Service<Request, Response = Response<Body>, Error = Error> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handler = service_fn(move |_req: Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Error>(Response::new(Body::Text(format!(r#"{{"call":{n}}}"#)))) }
    });
    let scope: ApiGatewayScope = "anonymous".parse().expect("scope");
    let store = store(proxy, Duration::from_millis(300));
    let layer = IdempotencyLayer::builder(store).scope(scope).build();
    (layer.layer(handler), calls)
}

async fn send<S>(svc: &S, key: &str) -> Response<Body>
where
    S: Service<Request, Response = Response<Body>, Error = Error> + Clone,
{
    let mut req = event("post_order.json");
    req.extensions_mut().remove::<lambda_http::Context>();
    let req = with_header(req, "idempotency-key", key);
    svc.clone()
        .oneshot(req)
        .await
        .expect("the layer never fails")
}

#[tokio::test]
async fn a_connection_whose_replies_stop_coming_is_replaced_for_the_next_request() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let (svc, calls) = service(&proxy);
    assert_eq!(send(&svc, "k-warm").await.status(), 200);

    // From the next command on, this connection's replies arrive a minute
    // late: the socket stays open and nothing ever fails on it.
    proxy.inject(At::next(), Fault::DelayReply(Duration::from_secs(60)));
    let stuck = send(&svc, "k-stuck").await;
    assert_problem(&stuck, 503);

    let next = send(&svc, "k-next").await;
    assert_eq!(next.status(), 200, "{:?}", next.body());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "k-stuck never ran");
    assert!(replayed(&send(&svc, "k-next").await));
    assert_eq!(proxy.connections_used(), [1, 2], "one fresh connection");
}

#[tokio::test]
async fn a_connection_left_on_a_primary_demoted_by_a_failover_is_replaced_for_the_next_request() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let (svc, calls) = service(&proxy);
    assert_eq!(send(&svc, "k-before").await.status(), 200);

    // A failover that leaves the old primary up, as a replica of the new
    // one, and the endpoint naming the new one: the open connection still
    // reaches the old primary, which refuses every write (READONLY).
    replica.promote();
    primary.demote_to_replica_of(&replica);
    proxy.retarget(socket_addr(&replica.url()));

    let refused = send(&svc, "k-after").await;
    assert_problem(&refused, 503);
    let retry = send(&svc, "k-after").await;
    assert_eq!(retry.status(), 200, "{:?}", retry.body());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        replica.count("idempotency:*"),
        2,
        "both records on the new primary"
    );
    assert_eq!(proxy.connections_used(), [1, 2], "one fresh connection");
}

#[tokio::test]
async fn a_connection_whose_replies_keep_coming_is_kept_when_a_command_queued_behind_them_times_out(
) {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let conn = store(&proxy, Duration::from_millis(500)).connection();
    let ping = |mut conn: lambda_idempotency::RedisConnection| async move {
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    assert_eq!(ping(conn.clone()).await.expect("PING"), "PONG");

    // Eight `WAIT 1 100`s (no replica: each takes its 100-200 ms) hold the
    // connection for about a second; a `GET` sent behind them times out
    // after 500 ms while their replies keep coming.
    let waits: Vec<_> = (0..8)
        .map(|_| {
            let mut conn = conn.clone();
            tokio::spawn(async move {
                redis::cmd("WAIT")
                    .arg(1)
                    .arg(100)
                    .query_async::<i64>(&mut conn)
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut get_conn = conn.clone();
    let get = redis::cmd("GET")
        .arg("k")
        .query_async::<Option<String>>(&mut get_conn)
        .await;
    assert!(get.as_ref().is_err_and(|e| e.is_timeout()), "{get:?}");
    for wait in waits {
        let _ = wait.await.expect("task");
    }

    // Once the server has worked through the queue, the same socket answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ping(conn).await.expect("PING"), "PONG");
    assert_eq!(proxy.connections_used(), [1], "slow, not useless: kept");
}
