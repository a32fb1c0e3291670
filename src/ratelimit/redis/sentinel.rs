//! A connection to the master that Redis Sentinels name, found again after a failover.
//!
//! The `redis` crate finds a master through Sentinels ([`SentinelClient`]: ask each Sentinel
//! for the master named `master_name`, skip one it marks down, and check with `ROLE` that the
//! server really is a master), but it hands out plain connections that never look again. This
//! module keeps one multiplexed connection to the master and replaces it:
//!
//! - **Lazily**: nothing connects before the first decision (the gateway starts with every
//!   Sentinel down). That decision, and those behind it, wait for the first lookup within their
//!   `timeout`.
//! - **When it fails**: an I/O error, a dropped connection, `READONLY` (the server was demoted
//!   to a replica) or `MASTERDOWN` drops the connection and starts a lookup in the background.
//!   So does silence: decisions on it timing out, with no answer in between, for
//!   `max(patience, 1 s)` (a master cut off without a reset).
//! - **In the background, with back-off**: one lookup at a time (50 ms, doubling, at most 1 s
//!   apart), until a Sentinel names a master that answers `ROLE` as one. While a lookup
//!   after a failure is running or waiting, decisions fail at once ([`StoreError::NoMaster`])
//!   so `on_error` applies without waiting out the timeout.
//!
//! After a failover (the master dies; after `down-after-milliseconds` the Sentinels agree it
//! is down and promote a replica) the next lookup finds the new master and decisions go to it.
//! Budgets written to the old master but not yet replicated when it died are lost (Redis
//! replicates asynchronously): a few requests more than the quota may pass right after a
//! failover, never fewer. The task holds only a weak reference, so a store dropped by a
//! reload stops looking.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ErrorKind, FromRedisValue, RedisError, ScriptInvocation, ServerErrorKind,
};
use tokio::sync::{watch, Mutex};

use super::{StoreError, RETRY_MAX, RETRY_MIN};

/// Shortest time decisions must have been timing out (no answer in between) before their
/// connection is replaced.
const LONGEST_SILENCE: Duration = Duration::from_secs(1);

/// The master of `master_name`, as the Sentinels say; cheap to clone (one shared state).
#[derive(Clone)]
pub struct SentinelMaster(Arc<Inner>);

struct Inner {
    /// Used by the lookup task only (one at a time); it keeps connections to the Sentinels.
    sentinels: Mutex<SentinelClient>,
    state: watch::Sender<State>,
    /// Connect and response timeout of one lookup's connections.
    patience: Duration,
    generations: AtomicU64,
    /// Since when decisions time out with no answer in between (milliseconds since
    /// `started`, at least 1); 0: the last one was answered.
    timing_out_since_ms: AtomicU64,
    started: Instant,
}

#[derive(Clone)]
enum State {
    /// No decision asked yet: nothing connected.
    Idle,
    /// The first lookup (at the start, or after a working connection failed) is running;
    /// decisions wait for it.
    LookingUp,
    /// A connection to the master; `generation` tells it from the ones before it.
    Connected {
        generation: u64,
        connection: MultiplexedConnection,
    },
    /// The last lookup failed (why); another follows after a back-off. Decisions fail at once.
    Lost { reason: Arc<str> },
}

impl SentinelMaster {
    /// Prepares the lookup without connecting; `patience` bounds each connection attempt and
    /// each answer. Fails only on addresses that do not parse.
    pub fn new(
        sentinels: &[String],
        master_name: &str,
        patience: Duration,
    ) -> Result<SentinelMaster, RedisError> {
        let client = SentinelClient::build(
            sentinels.to_vec(),
            master_name.to_owned(),
            None,
            SentinelServerType::Master,
        )?;
        Ok(SentinelMaster(Arc::new(Inner {
            sentinels: Mutex::new(client),
            state: watch::Sender::new(State::Idle),
            patience,
            generations: AtomicU64::new(0),
            timing_out_since_ms: AtomicU64::new(0),
            started: Instant::now(),
        })))
    }

    /// Runs `invocation` on the master within `timeout` (waiting for a connection included).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (generation, mut connection) = tokio::time::timeout_at(deadline, self.0.connection())
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        match tokio::time::timeout_at(deadline, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(reply)) => {
                self.0.answered();
                Ok(reply)
            }
            Ok(Err(error)) => {
                if ends_the_connection(&error) {
                    self.0.replace(generation);
                }
                Err(error.into())
            }
            Err(_) => {
                if self.0.timing_out_for() >= self.0.patience.max(LONGEST_SILENCE) {
                    self.0.replace(generation);
                }
                Err(StoreError::Timeout(timeout))
            }
        }
    }
}

/// Whether an error means this connection (or this server as the master) is done.
fn ends_the_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

impl Inner {
    /// The current connection, starting the first lookup or waiting for a running one.
    async fn connection(self: &Arc<Self>) -> Result<(u64, MultiplexedConnection), StoreError> {
        let mut state = self.state.subscribe();
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                State::Connected {
                    generation,
                    connection,
                } => return Ok((generation, connection)),
                State::Lost { reason } => return Err(StoreError::NoMaster(reason.to_string())),
                State::Idle => self.look_up_if(|state| matches!(state, State::Idle)),
                State::LookingUp => {}
            }
            if state.changed().await.is_err() {
                // The sender lives in `self`: it cannot be gone while we hold `self`.
                return Err(StoreError::NoMaster("the lookup stopped".into()));
            }
        }
    }

    /// Drops the connection `generation` (when it is still the current one) and looks up the
    /// master again.
    fn replace(self: &Arc<Self>, generation: u64) {
        self.look_up_if(
            |state| matches!(state, State::Connected { generation: g, .. } if *g == generation),
        );
    }

    /// Moves to `LookingUp` and starts the lookup task, when `from` holds of the state (so
    /// exactly one caller starts it).
    fn look_up_if(self: &Arc<Self>, from: impl FnOnce(&State) -> bool) {
        let start = self.state.send_if_modified(|state| {
            if from(state) {
                *state = State::LookingUp;
                true
            } else {
                false
            }
        });
        if start {
            tokio::spawn(look_up(Arc::downgrade(self)));
        }
    }

    fn answered(&self) {
        self.timing_out_since_ms.store(0, Ordering::Relaxed);
    }

    /// How long decisions have been timing out with no answer in between (zero at the first).
    fn timing_out_for(&self) -> Duration {
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let since = match self.timing_out_since_ms.compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => now,
            Err(since) => since,
        };
        Duration::from_millis(now.saturating_sub(since))
    }

    /// One lookup: the master's address from the Sentinels, then a connection to it.
    async fn find_master(&self) -> Result<MultiplexedConnection, RedisError> {
        let client = self.sentinels.lock().await.async_get_client().await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.patience))
            .set_response_timeout(Some(self.patience));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// Looks the master up until one answers, with back-off; stops when the store is dropped.
async fn look_up(inner: Weak<Inner>) {
    let mut delay = RETRY_MIN;
    loop {
        let Some(this) = inner.upgrade() else {
            return;
        };
        // A Sentinel or a master that accepts and never answers must not stall the lookup.
        let bound = this.patience * 4;
        let reason = match tokio::time::timeout(bound, this.find_master()).await {
            Ok(Ok(connection)) => {
                let generation = this.generations.fetch_add(1, Ordering::Relaxed) + 1;
                this.answered();
                this.state.send_replace(State::Connected {
                    generation,
                    connection,
                });
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("looking up the master took longer than {bound:?}"),
        };
        this.state.send_replace(State::Lost {
            reason: reason.into(),
        });
        drop(this);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::redis::MIN_PATIENCE;
    use redis::Script;

    /// A loopback address where nothing listens.
    fn nothing_listens() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("redis://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn with_every_sentinel_down_decisions_fail_at_once_instead_of_waiting_out_the_timeout() {
        let sentinels = [nothing_listens(), nothing_listens()];
        let master = SentinelMaster::new(&sentinels, "mymaster", MIN_PATIENCE).unwrap();
        let script = Script::new("return 1");
        let invocation = script.key("k");
        // A timeout far longer than the test: a decision that waited it out would be a Timeout.
        let patient = Duration::from_secs(3600);
        // The first decision waits for the first lookup, which finds no Sentinel…
        let first = master.invoke::<i64>(&invocation, patient).await;
        assert!(matches!(first, Err(StoreError::NoMaster(_))), "{first:?}");
        // …and the next ones fail at once while the lookup is retried in the background.
        let second = master.invoke::<i64>(&invocation, patient).await;
        let Err(StoreError::NoMaster(reason)) = second else {
            panic!("{second:?}")
        };
        assert!(!reason.is_empty());
    }
}
