//! `pipeline-gateway demo`: the stand-in manager and the gateway on loopback, with
//! ready-to-paste curl commands.
//!
//! The stand-in listens on the first endpoint of the configuration's first upstream (so
//! `config/demo.toml` says where everything is), seeded with pipelines in Standby; the
//! gateway listens on `server.listen`. Both stop on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};
use pipeline_gateway::config::Config;
use pipeline_gateway::Gateway;

/// Starts the demo and returns the running parts.
pub async fn start(config: Config) -> anyhow::Result<(Gateway, Standin)> {
    let endpoint = config
        .upstreams
        .first()
        .and_then(|u| u.endpoints.first())
        .context("the demo configuration needs an upstream with an endpoint")?;
    let standin_addr: SocketAddr = endpoint
        .authority
        .as_str()
        .parse()
        .with_context(|| format!("the demo's upstream {endpoint} must be an IP:port"))?;
    let seed = [
        ("orders", SeedStatus::Standby),
        ("billing", SeedStatus::Standby),
        ("live", SeedStatus::Running),
    ]
    .into_iter()
    .map(|(name, status)| SeedPipeline {
        name: name.into(),
        status,
    })
    .collect();
    let standin = Standin::bind(
        standin_addr,
        StandinOptions {
            seed,
            lifecycle_delay: Duration::from_secs(1),
            instance: "demo".into(),
            egress_interval: Duration::from_millis(500),
            egress_chunk_bytes: 128,
            ..StandinOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot start the stand-in manager on {standin_addr}"))?;
    let gateway = Gateway::start(config).await?;
    Ok((gateway, standin))
}

/// What the demo prints: where things are and what to try.
pub fn instructions(gateway: &Gateway, standin: &Standin) -> String {
    let gw = gateway.url();
    let admin = gateway
        .admin_addr()
        .map(|a| format!("  admin (metrics, readiness): http://{a}/metrics\n"))
        .unwrap_or_default();
    format!(
        "pipeline-gateway demo
  gateway:                  {gw}
  stand-in manager:         {standin}
{admin}
Try these (the gateway answers every error in Feldera's schema):

  # Activate the standby pipeline `orders` (202), then poll until it is Running:
  curl -i -X POST '{gw}/v0/pipelines/orders/activate?initial=running'
  curl -s '{gw}/v0/pipelines/orders?selector=status' | grep -o '\"deployment_status\":\"[A-Za-z]*\"'

  # The spec's PascalCase spelling is repaired at the edge (the manager alone would answer
  # a text/plain 400):
  curl -i -X POST '{gw}/v0/pipelines/billing/activate?initial=Paused'

  # A bad pipeline name never reaches the manager (400 NameDoesNotMatchPattern):
  curl -i -X POST '{gw}/v0/pipelines/-bad-/activate'

  # A bad `initial` (400 InvalidActivateStatus):
  curl -i -X POST '{gw}/v0/pipelines/orders/activate?initial=standby'

  # An encoded path trick (400 InvalidPath):
  curl -i -X POST '{gw}/v0/pipelines/orders/%61ctivate'

  # An endless egress stream, passed through unbuffered (Ctrl-C to stop):
  curl -N -X POST '{gw}/v0/pipelines/live/egress/v'

Ctrl-C stops the demo.
",
        standin = standin.url(),
    )
}
