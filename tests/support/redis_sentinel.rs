//! A real Sentinel setup: one master, one replica of it, and `n` Sentinels (`redis-server
//! <generated config> --sentinel`) monitoring the master as [`MASTER_NAME`] with a quorum of a
//! majority, every process on free ports, killed on drop.
//!
//! Failure detection is quick for tests: `down-after-milliseconds 1000` and
//! `failover-timeout 1000` (a failover that cannot complete is tried again 2 s later). The
//! replica may be started *held back* (`replica-priority 0`: no Sentinel promotes it) and
//! released later ([`RedisSentinels::release_replica`]), so a test can hold a master outage
//! open for as long as its assertions take, and then let the Sentinels fail over by themselves
//! — no guess about how long a failover takes.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use super::redis_server::{free_port, RedisServer};

/// The name the Sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";
/// How long the setup may take to be ready (replica in sync, Sentinels aware of it and of
/// each other).
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A master, its replica and the Sentinels watching them.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    /// Starts the master, its replica (promotable, or held back with `replica-priority 0`)
    /// and `sentinels` Sentinels; returns once the replica is in sync and every Sentinel
    /// knows the replica (with that priority) and the other Sentinels.
    pub fn start(sentinels: usize, replica_promotable: bool) -> RedisSentinels {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Every process works in the temporary directory: a replica writes the master's
        // snapshot to disk while it syncs, whatever `--save` says.
        let workdir = dir.path().to_str().expect("UTF-8 temporary path");
        let master = RedisServer::start_with(&["--dir", workdir]);
        let priority = if replica_promotable { "100" } else { "0" };
        let replica = RedisServer::start_with(&[
            "--dir",
            workdir,
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
            "--replica-priority",
            priority,
        ]);
        let quorum = sentinels / 2 + 1;
        let monitors = (0..sentinels)
            .map(|i| {
                (0..5)
                    .find_map(|_| {
                        let port = free_port();
                        let config = dir.path().join(format!("sentinel-{i}-{port}.conf"));
                        std::fs::write(
                            &config,
                            format!(
                                "sentinel monitor {MASTER_NAME} 127.0.0.1 {} {quorum}\n\
                                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                                 sentinel failover-timeout {MASTER_NAME} 1000\n",
                                master.port
                            ),
                        )
                        .expect("write the Sentinel's configuration");
                        RedisServer::launch(
                            port,
                            &[OsString::from(&config)],
                            &["--sentinel", "--dir", workdir],
                        )
                    })
                    .expect("could not start a Sentinel on a free port after 5 tries")
            })
            .collect();
        let setup = RedisSentinels {
            master,
            replica,
            sentinels: monitors,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_DEADLINE;
        while !setup.is_ready(priority) {
            assert!(
                Instant::now() < deadline,
                "the Sentinel setup was not ready within {READY_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        setup
    }

    /// Replica in sync; every Sentinel sees it up with `priority`, and sees the others.
    fn is_ready(&self, priority: &str) -> bool {
        let in_sync = self
            .replica
            .query::<String>(redis::cmd("INFO").arg("replication"))
            .is_ok_and(|info| info.contains("master_link_status:up"));
        in_sync
            && self.sentinels.iter().all(|sentinel| {
                let replicas: Vec<std::collections::HashMap<String, String>> = sentinel
                    .query(redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME))
                    .unwrap_or_default();
                let others: Vec<redis::Value> = sentinel
                    .query(redis::cmd("SENTINEL").arg("SENTINELS").arg(MASTER_NAME))
                    .unwrap_or_default();
                replicas.iter().any(|r| {
                    r.get("port") == Some(&self.replica.port.to_string())
                        && r.get("master-link-status").map(String::as_str) == Some("ok")
                        && r.get("slave-priority").map(String::as_str) == Some(priority)
                        && r.get("flags").is_some_and(|f| !f.contains("down"))
                }) && others.len() + 1 == self.sentinels.len()
            })
    }

    /// The Sentinel list for `[rate_limit.redis] sentinel`, as TOML: `["redis://…", …]`.
    pub fn sentinels_toml(&self) -> String {
        let urls: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Waits until the replica has acknowledged every write made so far (`WAIT 1`).
    pub fn wait_replicated(&self) {
        let acknowledged: i64 = self
            .master
            .query(redis::cmd("WAIT").arg(1).arg(5000))
            .expect("WAIT");
        assert_eq!(
            acknowledged, 1,
            "the replica did not acknowledge within 5 s"
        );
    }

    /// Makes the replica promotable (`replica-priority 100`): the Sentinels may fail over to
    /// it from their next attempt on.
    pub fn release_replica(&self) {
        let _: String = self
            .replica
            .query(
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("replica-priority")
                    .arg(100),
            )
            .expect("CONFIG SET replica-priority");
    }

    /// The master's port as the first Sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let (_ip, port): (String, String) = self.sentinels[0]
            .query(
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME),
            )
            .ok()?;
        port.parse().ok()
    }
}
