//! Cluster mode, as ElastiCache Serverless and cluster-mode-enabled
//! replication groups require: a real 3-master Redis Cluster started by the
//! test, the function using the redis crate's cluster client
//! (`REDIS_CLUSTER=true`), keys spread over every master, and a slot
//! migrated while requests run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use idempotent_orders::{App, Config};
use testkit::fixtures::{body, event, replayed, with_header};
use testkit::harness::{function_env, lookup};
use testkit::{RedisCluster, RedisServer};

fn app(cluster: &RedisCluster) -> App {
    let env = function_env(&cluster.seed_url(), &[("REDIS_CLUSTER", "true")]);
    let config = Config::from_lookup(lookup(env)).expect("config");
    App::from_config(&config).expect("cluster client")
}

fn keyed(key: &str) -> lambda_http::Request {
    with_header(event("post_order.json"), "idempotency-key", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_flow_and_a_race_run_on_a_three_master_cluster_with_keys_on_every_master() {
    let cluster = RedisCluster::start();
    let app = app(&cluster);

    let first = app.handle(keyed("cluster-1")).await;
    let retry = app.handle(keyed("cluster-1")).await;
    let changed = app
        .handle(with_header(
            event("post_order_changed_body.json"),
            "idempotency-key",
            "cluster-1",
        ))
        .await;
    assert_eq!(first.status(), 201, "{:?}", first.body());
    assert!(replayed(&retry));
    assert_eq!(body(&first), body(&retry));
    assert_eq!(changed.status(), 422);

    // 20 instances (one cluster connection each) race on one key.
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, barrier) = (self::app(&cluster), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.handle(keyed("cluster-race")).await
        }));
    }
    let mut executed = 0;
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            201 if !replayed(&response) => executed += 1,
            201 | 409 => {}
            other => panic!("unexpected {other}: {:?}", response.body()),
        }
    }
    assert_eq!(executed, 1);

    for n in 0..60 {
        assert_eq!(
            app.handle(keyed(&format!("spread-{n}"))).await.status(),
            201
        );
    }
    assert_eq!(cluster.count("orders:*"), 62);
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert!(
            node.count("idempotency:*") > 0,
            "master {i} holds no idempotency record"
        );
        assert!(node.count("orders:*") > 0, "master {i} holds no order");
    }
}

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.conn())
        .expect("CLUSTER MYID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_migrated_while_requests_run_causes_no_error_and_no_double_execution() {
    let cluster = RedisCluster::start();
    let app = app(&cluster);
    let created = app.handle(keyed("migrating")).await;
    assert_eq!(created.status(), 201);

    // The slot of that key's record (the only record so far), its owner
    // and another master.
    let owner = cluster
        .nodes
        .iter()
        .position(|n| n.count("idempotency:*") == 1)
        .expect("owner");
    let records: Vec<String> = redis::cmd("KEYS")
        .arg("idempotency:*")
        .query(&mut cluster.nodes[owner].conn())
        .unwrap();
    let record = records[0].clone();
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&record)
        .query(&mut cluster.nodes[0].conn())
        .unwrap();
    let target = (owner + 1) % 3;
    let (source, destination) = (&cluster.nodes[owner], &cluster.nodes[target]);

    // Replays of the key, and new orders, keep running during the move.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (app, stop, original) = (app.clone(), Arc::clone(&stop), body(&created));
        async move {
            let mut answers = 0;
            while !stop.load(Ordering::Relaxed) {
                let replay = app.handle(keyed("migrating")).await;
                assert_eq!(replay.status(), 201, "{:?}", replay.body());
                assert!(replayed(&replay));
                assert_eq!(body(&replay), original);
                let new = app.handle(keyed(&format!("during-{answers}"))).await;
                assert_eq!(new.status(), 201, "{:?}", new.body());
                answers += 1;
            }
            answers
        }
    });

    let (source_id, destination_id) = (node_id(source), node_id(destination));
    let setslot = |node: &RedisServer, how: &str, id: &str| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(id)
            .query(&mut node.conn())
            .expect("SETSLOT");
    };
    setslot(destination, "IMPORTING", &source_id);
    setslot(source, "MIGRATING", &destination_id);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query(&mut source.conn())
        .unwrap();
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(destination.port())
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&keys)
        .query(&mut source.conn())
        .expect("MIGRATE");
    for node in &cluster.nodes {
        setslot(node, "NODE", &destination_id);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.expect("no error during the migration");
    assert!(answers > 0);

    // The record now lives on the destination and still replays (MOVED).
    assert_eq!(destination.count(&record), 1);
    let after = app.handle(keyed("migrating")).await;
    assert!(replayed(&after));
    assert_eq!(
        cluster.count("orders:*"),
        1 + answers,
        "no double execution"
    );
}
