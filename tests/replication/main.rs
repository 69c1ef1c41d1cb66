//! `REDIS_MIN_REPLICAS` against a real primary and a real replica.
//!
//! With `REDIS_MIN_REPLICAS=1` the claim and the completion are each
//! pipelined with `WAIT 1 <timeout/4>` and not acted on unless the replica
//! acknowledged them (the completion's `WAIT` also covers the order written
//! before it on the same connection). In cluster mode the redis crate
//! routes that pipeline to the key's primary, so `WAIT` counts that
//! primary's replicas.
//!
//! - A held replication link (the replica frozen) gives `503`, and nothing
//!   runs or stays claimed, even when the claim's first reply was lost.
//! - An instance whose completion finds the key taken over, or cannot be
//!   confirmed in time, does not answer a `201` that no replica
//!   acknowledged; nor does a retry replay such a record.
//! - A failover after an acknowledged `201` keeps the replay byte for byte.
//! - With `REDIS_MIN_REPLICAS=0` a failover onto a lagging replica loses
//!   what it never received: the limit, shown exactly.
//! - A connection left useless, on a primary that a failover demoted (every
//!   write refused) or with its replies stuck, costs one `503`: the next
//!   request goes to a fresh connection, and the order is still made once.
//!
//! The instance reaches Redis through a [`FaultProxy`], which is pointed at
//! the promoted replica for a failover. `REDIS_TIMEOUT_MS` is 500 ms here:
//! Redis checks `WAIT` timeouts on its 100 ms clock (`hz 10`), so a 100 ms
//! command timeout would cut `WAIT` off before it answers.

mod connections;

use std::time::Duration;

use idempotent_orders::{App, Config};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use testkit::fault_proxy::{At, Fault, FaultProxy, Freezer, Rule};
use testkit::fixtures::context_with_deadline_in;
use testkit::harness::{function_env, lookup, order_event};
use testkit::proxy::{socket_addr, TcpProxy};
use testkit::RedisServer;

const TEA: &str = r#"{"product":"Tea","quantity":1}"#;

fn app(url: &str, min_replicas: &str, tweak: impl FnOnce(&mut Config)) -> App {
    let vars = function_env(
        url,
        &[
            ("REDIS_TIMEOUT_MS", "500"),
            ("REDIS_MIN_REPLICAS", min_replicas),
            ("METRICS_NAMESPACE", ""),
        ],
    );
    let mut config = Config::from_lookup(lookup(vars)).expect("config");
    tweak(&mut config);
    App::from_config(&config).expect("app")
}

fn order(key: &str) -> Request {
    let event = order_event(key, TEA).to_string();
    lambda_http::request::from_str(&event)
        .expect("event")
        .with_lambda_context(context_with_deadline_in(Duration::from_secs(3)))
}

fn problem(response: &Response<Body>) -> String {
    serde_json::from_slice::<Value>(response.body())
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .and_then(|t| t.rsplit(':').next().map(str::to_owned))
        .unwrap_or_default()
}

fn replayed(response: &Response<Body>) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

fn created_at(response: &Response<Body>) -> String {
    let body: Value = serde_json::from_slice(response.body()).expect("JSON");
    body["order"]["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned()
}

/// `(headers, body)` of a response, without the replay marker.
fn replayable(response: &Response<Body>) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str() != "idempotent-replayed")
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    headers.sort();
    (headers, response.body().to_vec())
}

fn is_order_write(command: &testkit::fault_proxy::Command) -> bool {
    command.name() == "SET" && command.key().is_some_and(|key| key.starts_with("orders:"))
}

/// `key`'s order, with the replication `link` held for good once the
/// claim was acknowledged (when the order write reaches the `proxy`).
async fn order_with_the_replica_cut_off_after_the_claim(
    app: &App,
    proxy: &FaultProxy,
    link: &TcpProxy,
    key: &str,
) -> Response<Body> {
    let mut writes = proxy.hold_at(At::matching(is_order_write));
    let run = tokio::spawn({
        let app = app.clone();
        let key = key.to_owned();
        async move { app.handle(order(&key)).await }
    });
    writes
        .wait(Duration::from_secs(3))
        .await
        .expect("the order write");
    link.set_delay(Duration::MAX);
    proxy.release();
    run.await.expect("the request")
}

fn is_claim(command: &testkit::fault_proxy::Command) -> bool {
    command.name() == "SET"
        && command
            .key()
            .is_some_and(|key| key.starts_with("idempotency:"))
}

/// Fails over from `primary` to `replica`: the primary dies, the replica
/// is promoted and gets a replica of its own (as a managed service adds
/// one), and the instance's proxy reconnects to it. Returns the new replica.
fn fail_over(primary: &mut RedisServer, replica: &RedisServer, proxy: &FaultProxy) -> RedisServer {
    primary.stop();
    replica.promote();
    let standby = RedisServer::replica_of(replica);
    proxy.retarget(socket_addr(&replica.url()));
    proxy.kill_connections();
    standby
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_held_replication_link_gives_503_and_runs_nothing() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let app = app(&primary.url(), "1", |_| {});

    replica.pause();
    let held = app.handle(order("k-held")).await;
    replica.resume();

    assert_eq!(held.status(), 503, "{:?}", held.body());
    assert_eq!(problem(&held), "idempotency-store-unavailable");
    assert_eq!(primary.orders(), 0, "the handler ran");
    assert_eq!(primary.count("idempotency:*"), 0, "a claim was left behind");

    let retry = app.handle(order("k-held")).await;
    assert_eq!(retry.status(), 201, "{:?}", retry.body());
    assert_eq!(replica.orders(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_claim_whose_reply_was_lost_still_waits_for_the_replica() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});

    // The claim is applied, its reply lost; the retry on a new connection
    // finds our own claim, which the replica still has not acknowledged.
    replica.pause();
    proxy.inject(At::matching(is_claim), Fault::LoseReply);
    let held = app.handle(order("k-lost")).await;
    replica.resume();

    assert_eq!(held.status(), 503, "{:?}", held.body());
    assert_eq!(
        primary.orders(),
        0,
        "the handler ran on an unacknowledged claim"
    );
    assert_eq!(primary.count("idempotency:*"), 0, "a claim was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_failover_after_a_201_keeps_the_replay_byte_identical() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});

    let first = app.handle(order("k-failover")).await;
    assert_eq!(first.status(), 201, "{:?}", first.body());
    let _standby = fail_over(&mut primary, &replica, &proxy);
    let replay = app.handle(order("k-failover")).await;

    assert_eq!(replay.status(), 201, "{:?}", replay.body());
    assert!(replayed(&replay), "the record survived the failover");
    assert_eq!(replayable(&replay), replayable(&first));
    assert_eq!(replica.orders(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replicas_required_a_failover_onto_a_lagging_replica_loses_an_answered_order() {
    let mut primary = RedisServer::start();
    // The replica reads the primary through a proxy that can hold the
    // replication stream: its link stays up, it just falls behind.
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let replica = RedisServer::replica_of_port(link.port());
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "0", |_| {});

    link.set_delay(Duration::MAX);
    let first = app.handle(order("k-lag")).await;
    assert_eq!(first.status(), 201, "{:?}", first.body());
    drop(link);
    let _standby = fail_over(&mut primary, &replica, &proxy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = app.handle(order("k-lag")).await;

    // The limit: the record and the order never reached the replica, so the
    // retry runs again and creates the order again. Same id (it comes from
    // the key), a different created_at: the client holds two different 201s.
    assert_eq!(again.status(), 201, "{:?}", again.body());
    assert!(!replayed(&again));
    let id = |r: &Response<Body>| r.headers()["location"].clone();
    assert_eq!(id(&again), id(&first));
    assert_ne!(created_at(&again), created_at(&first));
    assert_eq!(replica.orders(), 1, "one order on the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_an_instance_fenced_out_at_completion_never_answers_an_unacknowledged_201(
) {
    let mut primary = RedisServer::start();
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let replica = RedisServer::replica_of_port(link.port());
    // A 1 s lease (twice REDIS_TIMEOUT_MS), so a takeover comes quickly.
    let short = |config: &mut Config| config.settings.lease = Duration::from_secs(1);
    let a = Frozen::start(&primary, short, "k-fenced");
    // A freezes just before writing the order, and stays frozen past its
    // lease; B takes the key over (acknowledged), and freezes there too.
    a.wait_until_held().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = Frozen::start(&primary, short, "k-fenced");
    b.wait_until_held().await;
    // The replica falls behind. A thaws first: its order is written (on the
    // primary only), then its completion finds B's claim.
    link.set_delay(Duration::MAX);
    let a_answer = a.thaw().await;
    let b_answer = b.thaw().await;

    assert_eq!(primary.orders(), 1);
    assert_ne!(a_answer.status(), 201, "A answered an order no replica has");
    assert_ne!(b_answer.status(), 201, "B answered an order no replica has");
    drop(link);
    primary.stop();
    replica.promote();
    assert_eq!(
        replica.orders(),
        0,
        "what a failover loses was never answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_completion_that_times_out_never_answers_an_unacknowledged_201()
{
    let mut primary = RedisServer::start();
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let replica = RedisServer::replica_of_port(link.port());
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});
    let is_completion = |c: &testkit::fault_proxy::Command| {
        c.name() == "EVAL" && c.arg(5).is_some_and(|v| v.starts_with(b"c"))
    };
    // The claim is acknowledged; then the replica falls behind before the
    // order is written, and every completion's answer comes too late.
    proxy.inject(
        At::matching(is_completion),
        Fault::DelayReply(Duration::from_secs(3)),
    );
    let answer =
        order_with_the_replica_cut_off_after_the_claim(&app, &proxy, &link, "k-late").await;

    assert_ne!(answer.status(), 201, "a 201 no replica has");
    drop(link);
    let _standby = fail_over(&mut primary, &replica, &proxy);
    assert_eq!(
        replica.orders(),
        0,
        "what the failover lost was never answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_required_a_record_no_replica_acknowledged_is_not_replayed() {
    let mut primary = RedisServer::start();
    let link = TcpProxy::start(socket_addr(&primary.url()));
    let replica = RedisServer::replica_of_port(link.port());
    let proxy = FaultProxy::start(socket_addr(&primary.url()));
    let app = app(&proxy.url(), "1", |_| {});
    // The replica falls behind after the claim: the order and the completed
    // record stay on the primary, and the first answer is 503.
    let first =
        order_with_the_replica_cut_off_after_the_claim(&app, &proxy, &link, "k-unacked").await;
    assert_eq!(first.status(), 503, "{:?}", first.body());
    assert_eq!(
        primary.count("idempotency:*"),
        1,
        "the record is on the primary"
    );

    // The retry finds that record: replaying it would answer what a
    // failover is about to undo.
    let retry = app.handle(order("k-unacked")).await;
    assert_ne!(retry.status(), 201, "a replay no replica has");
    drop(link);
    let _standby = fail_over(&mut primary, &replica, &proxy);
    // The replica had the claim, not what followed: 409 until the lease
    // ends, then the request runs again.
    let after = loop {
        let answer = app.handle(order("k-unacked")).await;
        if answer.status() != 409 {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.status(), 201, "{:?}", after.body());
    assert!(!replayed(&after), "the record was lost with the primary");
}

/// An instance of the function, run to the moment it sends its order write,
/// where it freezes (the proxy holds the command, the request is not
/// polled).
struct Frozen {
    proxy: FaultProxy,
    freezer: Freezer,
    held: tokio::sync::Mutex<testkit::fault_proxy::Arrivals>,
    run: tokio::task::JoinHandle<Response<Body>>,
}

impl Frozen {
    fn start(primary: &RedisServer, tweak: impl FnOnce(&mut Config), key: &str) -> Self {
        let proxy = FaultProxy::start(socket_addr(&primary.url()));
        let app = app(&proxy.url(), "1", tweak);
        let (rule, held) = Rule::at(At::matching(is_order_write)).hold().notify();
        proxy.add(rule);
        let freezer = Freezer::default();
        let request = order(key);
        let run = tokio::spawn(freezer.wrap(async move { app.handle(request).await }));
        Self {
            proxy,
            freezer,
            held: tokio::sync::Mutex::new(held),
            run,
        }
    }

    async fn wait_until_held(&self) {
        let held = self.held.lock().await.wait(Duration::from_secs(3)).await;
        assert!(held.is_some(), "the order write never came");
        self.freezer.freeze();
    }

    /// Lets the held write through, gives its reply time to arrive, then
    /// thaws the request and returns its answer.
    async fn thaw(self) -> Response<Body> {
        self.proxy.release();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.freezer.thaw();
        self.run.await.expect("the request")
    }
}
