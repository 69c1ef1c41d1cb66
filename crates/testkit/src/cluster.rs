//! [`RedisCluster`]: a local Redis Cluster of three masters, each a
//! [`RedisServer`] on a free port.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::server::{RedisServer, INSTALL_HINT};

/// A local Redis Cluster of three masters (no replicas), each a
/// `redis-server` on a free port, joined with `redis-cli --cluster create`.
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
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli is required ({e}); {INSTALL_HINT}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
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

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
