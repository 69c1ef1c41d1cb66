//! Connections left useless, end to end through the function: on a primary
//! that a failover demoted (every write refused), or with their replies
//! stuck. Each costs one `503`; the next request goes to a fresh
//! connection, and the order is made once. With `REDIS_MIN_REPLICAS`, a
//! completion never goes to another socket than its claim's: the handler's
//! order went there, and a `WAIT` elsewhere would not cover it.

use std::time::Duration;

use idempotent_orders::App;
use lambda_http::{Body, Request, RequestExt, Response};
use testkit::fault_proxy::{At, Fault, FaultProxy, Rule};
use testkit::fixtures::context_with_deadline_in;
use testkit::harness::order_event;
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;

use crate::{app, is_order_write, order, replayable, replayed, TEA};

/// Sends `key`'s order until it gets something other than `503` (at most
/// 20 times, 100 ms apart); returns that and the `503`s before it.
async fn until_not_503(app: &App, key: &str) -> (Response<Body>, usize) {
    for refused in 0..20 {
        let response = app.handle(order(key)).await;
        if response.status() != 503 {
            return (response, refused);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{key}: 503 twenty times");
}

/// A failover that leaves `primary` up, as the new primary's replica, and
/// the endpoint (`proxy`) naming the new one, `replica`. Connections open
/// through the proxy still reach the old primary, which refuses every
/// write (`READONLY`) but stays connected: the redis crate alone never
/// reconnects them.
fn fail_over_keeping_the_old_primary(
    primary: &RedisServer,
    replica: &RedisServer,
    proxy: &FaultProxy,
) {
    replica.promote();
    primary.demote_to_replica_of(replica);
    proxy.retarget(socket_addr(&replica.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_connection_left_on_the_demoted_primary_costs_one_503() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});
    assert_eq!(app.handle(order("k-before")).await.status(), 201);

    fail_over_keeping_the_old_primary(&primary, &replica, &proxy);
    // The new primary has a replica to acknowledge its writes.
    tokio::task::block_in_place(|| replica.wait_for_a_replica());

    let (served, refused) = until_not_503(&app, "k-after").await;
    assert_eq!(refused, 1, "one 503, on the old connection");
    assert_eq!(served.status(), 201, "{:?}", served.body());
    assert_eq!(proxy.connections_used(), [1, 2], "one fresh connection");
    assert_eq!(replica.orders(), 2, "k-before (replicated) and k-after");
    let replay = app.handle(order("k-after")).await;
    assert!(replayed(&replay));
    assert_eq!(replayable(&replay), replayable(&served));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_failover_that_demotes_the_primary_between_the_order_write_and_the_completion_answers_no_201_for_a_lost_order(
) {
    failover_between_the_order_write_and_the_completion(Old::Demoted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_failover_that_kills_the_primary_between_the_order_write_and_the_completion_answers_no_201_for_a_lost_order(
) {
    failover_between_the_order_write_and_the_completion(Old::Killed).await;
}

/// What becomes of the old primary in a failover.
#[derive(Clone, Copy)]
enum Old {
    /// It stays up, as the new primary's replica.
    Demoted,
    /// It dies; a new replica joins the new primary.
    Killed,
}

/// The order reaches the primary only; then a failover promotes the
/// lagging replica (it has the acknowledged claim, not the order), which
/// has a replica of its own by the time the completion comes, so that a
/// completion there would be acknowledged. The client must not get a
/// `201` for the order the failover lost; its retry gets one for an order
/// that exists.
async fn failover_between_the_order_write_and_the_completion(old: Old) {
    let mut primary = RedisServer::start();
    // The replica reads the primary through a proxy that can hold the
    // replication stream: it falls behind without its link going down.
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let replica = RedisServer::replica_of_port(link.port());
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |c| {
        c.redis.timeout = Duration::from_secs(8)
    });
    assert_eq!(app.handle(order("k-warm")).await.status(), 201);

    // The order write is held; the replica stops hearing from the primary;
    // the write goes on, reaching the primary only, and its reply (and all
    // after it on that connection) arrives 5 s late: time for the failover.
    let (rule, mut writes) = Rule::at(At::matching(is_order_write))
        .hold()
        .fault(Fault::DelayReply(Duration::from_secs(5)))
        .notify();
    proxy.add(rule);
    let request: Request = lambda_http::request::from_str(&order_event("k-lost", TEA).to_string())
        .expect("event")
        .with_lambda_context(context_with_deadline_in(Duration::from_secs(20)));
    let run = tokio::spawn({
        let app = app.clone();
        async move { app.handle(request).await }
    });
    writes
        .wait(Duration::from_secs(3))
        .await
        .expect("the order write");
    link.set_delay(Duration::MAX);
    proxy.release();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let _standby = tokio::task::block_in_place(|| {
        let standby = match old {
            Old::Demoted => {
                fail_over_keeping_the_old_primary(&primary, &replica, &proxy);
                None
            }
            Old::Killed => {
                primary.stop();
                replica.promote();
                proxy.retarget(socket_addr(&replica.url()));
                Some(RedisServer::replica_of(&replica))
            }
        };
        replica.wait_for_a_replica();
        standby
    });
    assert!(!run.is_finished(), "the failover came after the answer");
    let answer = run.await.expect("the request");
    drop(link);

    assert_eq!(answer.status(), 503, "{:?}", answer.body());
    let (served, _) = until_not_503(&app, "k-lost").await;
    assert_eq!(served.status(), 201, "{:?}", served.body());
    let location = served.headers()["location"].to_str().expect("location");
    let id = location.rsplit('/').next().expect("an id");
    assert_eq!(
        replica.count(&format!("orders:{id}")),
        1,
        "the order exists"
    );
    assert_eq!(replica.orders(), 2, "k-warm and k-lost, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_the_first_request_after_a_dropped_connection_is_answered_once() {
    let primary = RedisServer::start();
    let _replica = RedisServer::replica_of(&primary);
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});
    assert_eq!(app.handle(order("k-warm")).await.status(), 201);

    // An idle connection dropped (a restart, a NAT timeout): the claim
    // finds the socket dead and is retried on a fresh one; the handler's
    // order and the completion follow it there.
    proxy.kill_connections();
    let first = app.handle(order("k-after-drop")).await;
    assert_eq!(first.status(), 201, "{:?}", first.body());
    assert!(!replayed(&first));
    assert_eq!(primary.orders(), 2, "k-warm and k-after-drop, once each");
    assert_eq!(proxy.connections_used(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_write_whose_reply_never_comes_costs_one_503_and_the_retry_answers_that_order() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(socket_addr(&redis.url()));
    let app = app(&proxy.url(), "0", |_| {});
    assert_eq!(app.handle(order("k-warm")).await.status(), 201);

    // The order write is applied, but from it on every reply on this
    // connection arrives a minute late: the socket stays open and nothing
    // on it ever fails.
    proxy.inject(
        At::matching(is_order_write),
        Fault::DelayReply(Duration::from_secs(60)),
    );
    let stuck = app.handle(order("k-stuck")).await;
    assert_eq!(stuck.status(), 503, "{:?}", stuck.body());

    let (retry, refused) = until_not_503(&app, "k-stuck").await;
    assert_eq!(refused, 0, "the retry already goes to a fresh connection");
    assert_eq!(retry.status(), 201, "{:?}", retry.body());
    assert!(!replayed(&retry), "the stuck attempt never completed");
    assert_eq!(redis.orders(), 2, "k-warm, and k-stuck once");
    assert_eq!(proxy.connections_used(), [1, 2]);
}
