//! A real local Redis Cluster: `masters` × `redis-server --cluster-enabled yes` on free ports
//! (each with its own free cluster-bus port and `nodes-<port>.conf` in a temporary directory),
//! joined by `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, returned once
//! every node says `cluster_state:ok`. Every node is killed on drop (each is a
//! [`RedisServer`]).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::{free_port, RedisServer};

/// How long the nodes may take to agree on the slots once created.
const CLUSTER_OK_DEADLINE: Duration = Duration::from_secs(30);

/// A running cluster of masters without replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, as `redis-cli --cluster create` demands) and joins
    /// them, the 16384 slots split evenly.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                (0..5)
                    .find_map(|_| {
                        let port = free_port();
                        let bus = std::iter::repeat_with(free_port)
                            .find(|bus| *bus != port)
                            .expect("a second free port");
                        let config_file = format!("nodes-{port}.conf");
                        RedisServer::launch(
                            port,
                            &[],
                            &[
                                "--cluster-enabled",
                                "yes",
                                "--cluster-port",
                                &bus.to_string(),
                                "--cluster-config-file",
                                &config_file,
                                "--cluster-node-timeout",
                                "2000",
                                "--dir",
                                dir.path().to_str().expect("UTF-8 temporary path"),
                            ],
                        )
                    })
                    .expect("could not start a cluster node on a free port after 5 tries")
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli is required for the cluster tests: {e}"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        let deadline = Instant::now() + CLUSTER_OK_DEADLINE;
        while !cluster.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the cluster was not ok within {CLUSTER_OK_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Whether every node says `cluster_state:ok`.
    fn is_ok(&self) -> bool {
        self.nodes.iter().all(|node| {
            node.query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// The seed list for `[rate_limit.redis] cluster`, as TOML: `["redis://…", …]`.
    pub fn seeds_toml(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("\"{}\"", node.url()))
            .collect();
        format!("[{}]", seeds.join(", "))
    }

    /// How many keys each node holds, in node order.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| node.query(&redis::cmd("DBSIZE")).expect("DBSIZE"))
            .collect()
    }
}
