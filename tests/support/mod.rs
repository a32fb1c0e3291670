//! What the black-box tests share: the stand-in manager (in this process, or as a child
//! process a test can kill, or behind TLS with certificates made at test time) and one small
//! test upstream (an echo) to put behind a gateway, gateways in this process or as child
//! processes, a real `redis-server` (alone, as a cluster, or watched by Sentinels), clients
//! that read whole replies and check the gateway's error schema, load that tallies every
//! answer (for the fault tests), content codings, test signing keys, and the external
//! programs (`fda`, Chromium) some tests drive.
//!
//! Every test crate includes this module whole, as `pub mod support;` (`#[path]` from a
//! nested crate): each crate uses a different part of it, and a `pub` module at the crate root
//! tells the compiler that its public items are an interface, not dead code — without an
//! `allow(dead_code)` that would also hide unused private code. The helpers most tests use are
//! re-exported here (`use support::*;`); the rest are reached through their module.
//!
//! Nothing here sleeps to wait for time: waits poll with a deadline ([`eventually`]).

pub mod browser;
mod client;
mod coding;
mod gateway;
pub mod keys;
pub mod load;
pub mod manager_tls;
pub mod pki;
mod process;
mod redis_cluster;
pub mod redis_sentinel;
mod redis_server;
mod standin;
mod standin_process;
pub mod tools;
mod upstream;

use std::time::{Duration, Instant};

pub use self::client::{get, parse_raw, post, raw, send, Reply};
pub use self::coding::{decode, encode};
pub use self::gateway::{config_for, gateway, metric, pair};
pub use self::process::GatewayProcess;
pub use self::redis_cluster::RedisCluster;
pub use self::redis_sentinel::RedisSentinels;
pub use self::redis_server::RedisServer;
pub use self::standin::{seeded, standin, standin_with};
pub use self::standin_process::StandinProcess;
pub use self::upstream::{closed_port, echo_upstream, serve};

/// Polls `condition` until it holds or `deadline` passes; whether it held.
pub async fn eventually(deadline: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
