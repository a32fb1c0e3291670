//! pipeline-gateway: an edge gateway for Feldera pipeline managers.
//!
//! [`Gateway::start`] is the one entry point the binary and the tests share: it builds the
//! runtime from a checked [`config::Config`], binds the listeners and serves until
//! [`Gateway::shutdown`] (or the binary's signal handler) asks it to drain. The request path
//! itself is laid out in [`stack`].
//!
//! Floors (a module imports only from floors below it; see the README's layout section):
//!
//! 1. `body`, `errors`, `catalog`, `principal`, `context`, `clock`, `check`, `wire`, `spans`
//!    — the vocabulary
//! 2. `config` — plain data and its checks
//! 3. `validate`, `routing`, `auth`, `ratelimit`, `proxy`, `limits`, `telemetry`, `outbound`,
//!    `cors`, `console`, `tls`
//! 4. `runtime` — everything of floor 3, built from one configuration
//! 5. `stack`, `server` — the request path and the listeners over a runtime
//! 6. `gateway`, `workers` and this file — the running gateway: listeners, per-core runtimes,
//!    the current snapshot, reloads

pub mod auth;
pub mod body;
pub mod catalog;
pub mod check;
pub mod clock;
pub mod config;
pub mod console;
pub mod context;
pub mod cors;
pub mod errors;
pub mod gateway;
pub mod limits;
pub mod outbound;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod spans;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod validate;
pub mod wire;
pub mod workers;

pub use gateway::Gateway;

use crate::config::Config;
use crate::runtime::{Process, Runtime};

/// Loads a configuration file and builds its runtime without serving it: every problem of
/// the file and of what it names (key files, secrets, environment variables). What
/// `check-config` runs; the server runs the same two steps.
pub fn check_config(path: &std::path::Path) -> Result<Config, config::ConfigError> {
    let config = Config::load(path)?;
    Runtime::build(config.clone(), &Process::new())?;
    Ok(config)
}

/// What `check-config` warns about without refusing the configuration: certificates with
/// less than 14 days left (each line names the key path and the date).
pub fn config_warnings(config: &Config) -> Vec<String> {
    match &config.server.tls {
        Some(tls) => tls::warnings(tls, "server.tls", std::time::SystemTime::now()),
        None => Vec::new(),
    }
}
