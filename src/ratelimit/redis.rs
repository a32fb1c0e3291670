//! Cluster-wide GCRA in Redis: one atomic Lua script per decision, shared by every instance.
//!
//! The script ([`GCRA_SCRIPT`]) keeps one key per budget holding its theoretical arrival time
//! (TAT, microseconds on Redis's own clock, so instances need not agree on time). It reads
//! the TAT, decides, writes the new TAT with an expiry equal to the time until the budget is
//! full again (so idle keys disappear by themselves, and Redis needs no sweep), and returns
//! `{allowed, remaining, retry_after_us, reset_us}` — one round trip, atomic, exact across
//! instances. The arithmetic is the same as `governor`'s: a fresh key admits `burst`
//! requests at once and then one per interval.
//!
//! The connection is a `redis` [`ConnectionManager`], created lazily (the gateway starts
//! even when Redis is down) and reconnecting by itself after I/O errors. Each decision waits
//! at most `timeout`; a timeout or any error is returned as [`StoreError`] and the caller
//! applies `on_error`. `EVALSHA` is used, with a transparent `SCRIPT LOAD` after a Redis
//! restart (`NOSCRIPT`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};

use super::local::Decision;
use crate::config::ratelimit::RedisConfig;

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

/// Why Redis did not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] RedisError),
    #[error("the rate-limit script returned an unexpected reply")]
    Reply,
}

/// The shared store.
#[derive(Clone)]
pub struct RedisStore {
    manager: ConnectionManager,
    script: Script,
    timeout: Duration,
}

impl RedisStore {
    /// Prepares the connection without connecting; needs a Tokio runtime.
    pub fn connect(config: &RedisConfig) -> Result<RedisStore, RedisError> {
        let client = Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(250))))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(usize::MAX);
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        Ok(RedisStore {
            manager,
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
        let mut connection = self.manager.clone();
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(interval_us).arg(burst.max(1));
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))??;
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
