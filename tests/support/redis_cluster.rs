//! A real local Redis Cluster: `masters` × `redis-server --cluster-enabled yes` on free ports
//! (each with its own free cluster-bus port and `nodes-<port>.conf` in a temporary directory),
//! joined by `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, returned once
//! every node says `cluster_state:ok`. Every node is killed on drop (each is a
//! [`RedisServer`]). A node can be killed and restarted as itself ([`RedisCluster::restart`]).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::{free_port, RedisServer};

/// How long the nodes may take to agree on the slots once created.
const CLUSTER_OK_DEADLINE: Duration = Duration::from_secs(30);

/// A running cluster of masters without replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Each node's cluster-bus port, to restart it as itself.
    buses: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, as `redis-cli --cluster create` demands) and joins
    /// them, the 16384 slots split evenly.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (nodes, buses): (Vec<RedisServer>, Vec<u16>) = (0..masters)
            .map(|_| {
                (0..5)
                    .find_map(|_| {
                        let port = free_port();
                        let bus = std::iter::repeat_with(free_port)
                            .find(|bus| *bus != port)
                            .expect("a second free port");
                        Some((launch_node(&dir, port, bus)?, bus))
                    })
                    .expect("could not start a cluster node on a free port after 5 tries")
            })
            .unzip();
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
        let cluster = RedisCluster { nodes, buses, dir };
        cluster.wait_until_ok();
        cluster
    }

    /// Restarts node `index` (killed before) as itself: same ports, same `nodes-<port>.conf`,
    /// so it takes its slots back (empty: nothing is persisted). Returns once it answers
    /// `PING`; the cluster takes a few seconds more to say `cluster_state:ok` again.
    pub fn restart(&mut self, index: usize) {
        let port = self.nodes[index].port;
        self.nodes[index] = launch_node(&self.dir, port, self.buses[index])
            .unwrap_or_else(|| panic!("could not restart the cluster node on port {port}"));
    }

    /// The index of the node that holds `key`.
    pub fn node_holding(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.query::<i64>(redis::cmd("EXISTS").arg(key))
                .is_ok_and(|n| n == 1)
        })
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_DEADLINE;
        while !self.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the cluster was not ok within {CLUSTER_OK_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// A cluster node on `port` (bus on `bus`) whose files live in `dir`; `None` when it does not
/// start (a port taken meanwhile).
fn launch_node(dir: &tempfile::TempDir, port: u16, bus: u16) -> Option<RedisServer> {
    RedisServer::launch(
        port,
        &[],
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "2000",
            "--dir",
            dir.path().to_str().expect("UTF-8 temporary path"),
        ],
    )
}
