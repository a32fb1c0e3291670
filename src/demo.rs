//! `pipeline-gateway demo`: the stand-in manager and the gateway on loopback, with
//! ready-to-paste curl commands.
//!
//! The stand-in listens on the first endpoint of the configuration's first upstream (so
//! `config/demo.toml` says where everything is), seeded with pipelines in Standby; the
//! gateway listens on `server.listen`. Both stop on Ctrl-C or SIGTERM.
//!
//! With `--tls` ([`throwaway_tls`]) the gateway serves https: a throwaway CA and a
//! certificate for `localhost` and `127.0.0.1` (ECDSA P-256, valid for a week) are made at
//! start in a fresh temporary directory, and the curl lines trust that CA with `--cacert`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use feldera_standin::{SeedPipeline, SeedStatus, Standin, StandinOptions};
use pipeline_gateway::config::tls::{defaults, TlsConfig, TlsVersion};
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

/// Makes a throwaway CA and a server certificate for `localhost` and `127.0.0.1`, writes
/// them to a new temporary directory and puts `[server.tls]` into `config`; the CA file's
/// path (for `curl --cacert`).
pub fn throwaway_tls(config: &mut Config) -> anyhow::Result<PathBuf> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let week = time::Duration::days(7);
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pipeline-gateway demo CA (throwaway)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + week;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + week;
    let cert = leaf.signed_by(&key, &issuer)?;
    let dir = std::env::temp_dir().join(format!("pipeline-gateway-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, content: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    let ca_path = write("ca.pem", &ca_cert.pem())?;
    let cert_path = write("cert.pem", &cert.pem())?;
    let key_path = write("key.pem", &key.serialize_pem())?;
    config.server.tls = Some(TlsConfig {
        cert: cert_path,
        key: key_path,
        min_version: TlsVersion::Tls12,
        alpn: defaults::alpn(),
        handshake_timeout: defaults::handshake_timeout(),
        watch_interval: defaults::watch_interval(),
        sni: Vec::new(),
        client_auth: None,
    });
    Ok(ca_path)
}

/// What the demo prints: where things are and what to try (`ca`: the throwaway CA with
/// `--tls`).
pub fn instructions(gateway: &Gateway, standin: &Standin, ca: Option<&Path>) -> String {
    let gw = gateway.url();
    let curl = match ca {
        Some(ca) => format!("curl --cacert {}", ca.display()),
        None => "curl".to_owned(),
    };
    let tls = match ca {
        Some(ca) => format!(
            "  TLS: a throwaway CA made at start: {} (certificate for localhost, 127.0.0.1)\n",
            ca.display()
        ),
        None => String::new(),
    };
    let admin = gateway
        .admin_addr()
        .map(|a| format!("  admin (metrics, readiness): http://{a}/metrics\n"))
        .unwrap_or_default();
    format!(
        "pipeline-gateway demo
  gateway:                  {gw}
  stand-in manager:         {standin}
{admin}{tls}
Try these (the gateway answers every error in Feldera's schema):

  # Activate the standby pipeline `orders` (202), then poll until it is Running:
  {curl} -i -X POST '{gw}/v0/pipelines/orders/activate?initial=running'
  {curl} -s '{gw}/v0/pipelines/orders?selector=status' | grep -o '\"deployment_status\":\"[A-Za-z]*\"'

  # The spec's PascalCase spelling is repaired at the edge (the manager alone would answer
  # a text/plain 400):
  {curl} -i -X POST '{gw}/v0/pipelines/billing/activate?initial=Paused'

  # A bad pipeline name never reaches the manager (400 NameDoesNotMatchPattern):
  {curl} -i -X POST '{gw}/v0/pipelines/-bad-/activate'

  # A bad `initial` (400 InvalidActivateStatus):
  {curl} -i -X POST '{gw}/v0/pipelines/orders/activate?initial=standby'

  # An encoded path trick (400 InvalidPath):
  {curl} -i -X POST '{gw}/v0/pipelines/orders/%61ctivate'

  # An endless egress stream, passed through unbuffered (Ctrl-C to stop):
  {curl} -N -X POST '{gw}/v0/pipelines/live/egress/v'

Ctrl-C stops the demo.
",
        standin = standin.url(),
    )
}
