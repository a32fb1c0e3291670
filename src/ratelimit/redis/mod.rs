//! Cluster-wide GCRA in Redis: one atomic Lua script per decision, shared by every instance.
//!
//! The script ([`GCRA_SCRIPT`]) keeps one key per budget holding its theoretical arrival time
//! (TAT, microseconds on Redis's own clock, so instances need not agree on time). It reads
//! the TAT, decides, writes the new TAT with an expiry equal to the time until the budget is
//! full again (so idle keys disappear by themselves, and Redis needs no sweep), and returns
//! `{allowed, remaining, retry_after_us, reset_us}` — one round trip, atomic, exact across
//! instances. The arithmetic is the same as `governor`'s: a fresh key admits `burst`
//! requests at once and then one per interval. Each call touches exactly **one** key
//! (`KEYS[1]`, never a second), so the script runs on a Redis Cluster too: the key's hash slot
//! picks the node, and no call spans two slots.
//!
//! Where the key lives is the only thing the three kinds of `[rate_limit.redis]` change:
//!
//! - `url`: one server through a `redis` [`ConnectionManager`], created lazily (the gateway
//!   starts even when Redis is down) and reconnecting by itself after I/O errors.
//! - `cluster`: a `redis` [`ClusterConnection`] built from the seed nodes, connecting in the
//!   background at once; it learns the slot map, sends each call to the node owning the key's
//!   slot, follows `MOVED`/`ASK`, and rebuilds the map and its connections after a node fails
//!   or a replica is promoted. A call may be retried inside the client (a redirect, a dropped
//!   connection); a retry after a connection dropped mid-call can spend one extra unit of the
//!   budget — erring towards refusing, never towards admitting more.
//! - `sentinel`: a connection to the master the Sentinels name ([`sentinel::SentinelMaster`]),
//!   found again through the Sentinels after the connection fails (a failover).
//!
//! On every kind each decision waits at most `timeout` (connecting included); a timeout or
//! any error is returned as [`StoreError`] and the caller applies `on_error`. `EVALSHA` is
//! used, with a transparent `SCRIPT LOAD` after a Redis restart or on a node that has not
//! seen the script yet (`NOSCRIPT`).

pub mod sentinel;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, ErrorKind, RedisError, Script};

use self::sentinel::SentinelMaster;
use super::local::Decision;
use crate::config::ratelimit::{RedisConfig, RedisTarget};

/// `KEYS[1]`: the budget; `ARGV[1]`: interval (µs); `ARGV[2]`: burst.
pub const GCRA_SCRIPT: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((interval * burst - (new_tat - now)) / interval)
return {1, remaining, 0, new_tat - now}
"#;

/// Shortest connect and response timeout given to the clients: a `timeout` of a few
/// milliseconds bounds each decision, not the connection attempts behind it, which go on in
/// the background.
const MIN_PATIENCE: Duration = Duration::from_millis(250);
/// Reconnection back-off: first retry, and the longest wait between retries.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Why Redis did not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] RedisError),
    #[error("no Redis master: {0}")]
    NoMaster(String),
    #[error("the rate-limit script returned an unexpected reply")]
    Reply,
}

/// How decisions reach Redis.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelMaster),
}

/// The shared store.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    script: Script,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares the connection (a cluster starts connecting in the background); needs a
    /// Tokio runtime. Fails only on a configuration that did not pass its check.
    pub fn connect(config: &RedisConfig) -> Result<RedisStore, RedisError> {
        let patience = config.timeout.max(MIN_PATIENCE);
        let connection = match config.target() {
            Some(RedisTarget::Single(url)) => {
                let client = Client::open(url)?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(patience))
                    .set_response_timeout(Some(patience))
                    .set_min_delay(RETRY_MIN)
                    .set_max_delay(RETRY_MAX)
                    .set_number_of_retries(usize::MAX);
                Connection::Single(ConnectionManager::new_lazy_with_config(
                    client,
                    manager_config,
                )?)
            }
            Some(RedisTarget::Cluster(seeds)) => {
                let client = ClusterClientBuilder::new(seeds.to_vec())
                    .min_retry_wait(u64::try_from(RETRY_MIN.as_millis()).unwrap_or(50))
                    .max_retry_wait(u64::try_from(RETRY_MAX.as_millis()).unwrap_or(1000))
                    .build()?;
                let cluster_config = ClusterConfig::new()
                    .set_connection_timeout(patience)
                    .set_response_timeout(patience);
                Connection::Cluster(client.get_pending_async_connection_with_config(cluster_config))
            }
            Some(RedisTarget::Sentinel {
                sentinels,
                master_name,
            }) => Connection::Sentinel(SentinelMaster::new(sentinels, master_name, patience)?),
            None => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "[rate_limit.redis] needs exactly one of url, cluster or sentinel \
                     (with master_name)",
                )))
            }
        };
        Ok(RedisStore {
            connection,
            script: Script::new(GCRA_SCRIPT),
            timeout: config.timeout,
        })
    }

    /// Decides one request against the budget `key`.
    pub async fn decide(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Decision, StoreError> {
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(interval_us).arg(burst.max(1));
        let timed_out = |_| StoreError::Timeout(self.timeout);
        let reply: Vec<i64> = match &self.connection {
            Connection::Single(manager) => {
                let mut connection = manager.clone();
                tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                    .await
                    .map_err(timed_out)??
            }
            Connection::Cluster(cluster) => {
                let mut connection = cluster.clone();
                tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                    .await
                    .map_err(timed_out)??
            }
            Connection::Sentinel(master) => master.invoke(&invocation, self.timeout).await?,
        };
        let &[allowed, remaining, retry_after_us, reset_us] = reply.as_slice() else {
            return Err(StoreError::Reply);
        };
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0).min(burst),
            retry_after: micros(retry_after_us),
            reset: micros(reset_us),
        })
    }
}
