//! Black-box tests of the gateway core: a real gateway on 127.0.0.1:0 in front of real
//! stand-in managers, driven over real sockets.

#[path = "../support/mod.rs"]
pub mod support;

mod browser;
mod encoded_errors;
mod errors;
mod forwarding;
mod hardening;
mod lifecycle;
mod slow_clients;
mod streaming;
mod upgrades;
mod upstreams;
mod validation;
