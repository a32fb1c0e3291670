//! A gateway in this process: its configuration text ([`config_for`]), starting it on
//! 127.0.0.1:0 ([`gateway`]), a gateway and a stand-in together ([`pair`]), and reading a
//! sample from its admin `/metrics` text ([`metric`]).
//!
//! Gateways as separate processes are in `process`.

use feldera_standin::Standin;
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;
use tokio::net::TcpListener;

use super::standin::standin;

/// A one-upstream configuration in front of `url` (every pipeline, and the default route),
/// auth off, plus `extra` TOML appended after `mode = "off"`: its first keys (before a table
/// header) belong to `[auth]`.
pub fn config_for(url: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "primary"
endpoints = ["{url}"]
connect_timeout = "1s"
request_timeout = "5s"

[[routes]]
pipelines = ["*"]
upstream = "primary"
default = true

[auth]
mode = "off"
{extra}
"#
    )
}

/// A gateway with this configuration text, listening on 127.0.0.1:0.
pub async fn gateway(toml: &str) -> Gateway {
    let config = Config::from_toml(toml).expect("test configuration is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Gateway::start_on(listener, config)
        .await
        .expect("gateway starts")
}

/// A gateway in front of a fresh seeded stand-in.
pub async fn pair() -> (Gateway, Standin) {
    let upstream = standin("a").await;
    let gw = gateway(&config_for(&upstream.url(), "")).await;
    (gw, upstream)
}

/// The sum of the samples in a Prometheus text whose line starts with `prefix` (a metric
/// name, or a name with its first labels: `name{policy="client_ip"`).
pub fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
