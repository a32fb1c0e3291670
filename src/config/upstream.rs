//! The sub-sections of `[[upstreams]]` that keep a manager healthy and the gateway fair to it:
//! active health checks, outlier ejection, retries, and the connection and concurrency caps.
//!
//! ```toml
//! [[upstreams]]
//! name = "primary"
//! endpoints = ["http://manager-0:8080", "http://manager-1:8080"]
//! max_connections = 256        # per endpoint
//! max_pending = 1024           # requests waiting for a connection, per endpoint
//! pending_timeout = "5s"
//! pipeline_concurrency = 90    # requests open at once per pipeline (0: no quota)
//! per_principal_min = 4        # a principal may always hold this many of them
//! [upstreams.health]           # optional: active checks
//! path = "/healthz"
//! interval = "5s"
//! timeout = "1s"
//! unhealthy_after = 2
//! healthy_after = 2
//! [upstreams.outlier]          # passive: ejection on errors of the endpoint itself
//! consecutive_5xx = 5
//! consecutive_connect_failures = 1
//! base_ejection = "2s"         # doubles with each repeated ejection, up to max_ejection
//! max_ejection = "5m"
//! max_ejected_percent = 50
//! [upstreams.retry]
//! budget_percent = 20          # retries are at most this share of requests over 10 s …
//! min_per_second = 3           # … but always at least this many per second
//! buffer_bytes = 65536         # a request body up to this size is kept to be sent again
//! try_timeout = "5s"           # optional: one endpoint's time for one try of such a request
//! [upstreams.tls]              # optional: how https:// endpoints are verified (docs/tls-upstream.md)
//! ca = "/etc/gw/managers-ca.pem"
//! webpki_roots = true          # the public roots too (false: only `ca`)
//! client_cert = "/etc/gw/gateway.pem"   # mTLS toward the manager, with client_key
//! client_key = "/etc/gw/gateway-key.pem"
//! server_name = "manager.feldera.svc"   # SNI and the name verified, when not the endpoint's host
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;

/// `[upstreams.health]`: active checks of every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path asked with `GET`; a 2xx answer is healthy.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    #[serde(default = "defaults::interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks that take an endpoint out of rotation.
    #[serde(default = "defaults::two")]
    pub unhealthy_after: u32,
    /// Consecutive passed checks that bring it back.
    #[serde(default = "defaults::two")]
    pub healthy_after: u32,
}

/// `[upstreams.outlier]`: ejection on the endpoint's own errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive 502/503/504 from the endpoint itself (not the manager's typed errors
    /// about a pipeline) that eject it; 0 turns this off.
    #[serde(default = "defaults::five")]
    pub consecutive_5xx: u32,
    /// Consecutive failed connections (refused, timed out, TLS) that eject it.
    #[serde(default = "defaults::one")]
    pub consecutive_connect_failures: u32,
    /// The first ejection's length; each repeated ejection doubles it.
    #[serde(default = "defaults::base_ejection", with = "humantime_serde")]
    pub base_ejection: Duration,
    #[serde(default = "defaults::max_ejection", with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Never eject more than this share of the endpoints (at least one may always be).
    #[serde(default = "defaults::fifty")]
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: defaults::five(),
            consecutive_connect_failures: defaults::one(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
            max_ejected_percent: defaults::fifty(),
        }
    }
}

/// `[upstreams.retry]`: how many retries the gateway may add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries at most this percentage of the requests of the last 10 s …
    #[serde(default = "defaults::twenty")]
    pub budget_percent: u32,
    /// … but always at least this many per second.
    #[serde(default = "defaults::three")]
    pub min_per_second: u32,
    /// Largest request body kept so that an idempotent request can be sent again.
    #[serde(default = "defaults::buffer_bytes")]
    pub buffer_bytes: usize,
    /// Time one endpoint gets to answer one try of a request that may be sent again; past
    /// it the try counts as the endpoint's failure and the request goes to another endpoint
    /// (within the budget and the request's own timeout). `None`: a try gets the request's
    /// whole timeout.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub try_timeout: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            budget_percent: defaults::twenty(),
            min_per_second: defaults::three(),
            buffer_bytes: defaults::buffer_bytes(),
            try_timeout: None,
        }
    }
}

/// `[upstreams.tls]`: how the gateway verifies (and authenticates itself to) the upstream's
/// `https://` endpoints. Without it, `https://` endpoints are verified against the public
/// (webpki) roots with no client certificate. The files are read when the configuration is
/// built (`check-config` reads them too) and again on every reload; with
/// `server.watch_config` also when they change. Hostname verification is always on: there
/// is deliberately no key to turn it off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of CA certificates that sign the managers' certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Whether the public (webpki) roots are trusted too; `false` needs `ca`.
    #[serde(default = "defaults::yes")]
    pub webpki_roots: bool,
    /// PEM chain (leaf first) the gateway presents when a manager asks for a client
    /// certificate; with `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// The name sent as SNI and verified in the manager's certificate, when it is not the
    /// endpoint's host (a DNS name or an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl UpstreamTlsConfig {
    /// Checks between values; `endpoints` are the upstream's (every one must be `https://`,
    /// or the section would not apply to some of them).
    pub(super) fn check(
        &self,
        at: &str,
        endpoints: &[super::EndpointUrl],
        problems: &mut Problems,
    ) {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => problems.push(
                format!("{at}.client_key"),
                "client_cert needs client_key (the certificate's private key)",
            ),
            (None, Some(_)) => problems.push(
                format!("{at}.client_cert"),
                "client_key needs client_cert (the certificate it belongs to)",
            ),
            _ => {}
        }
        if !self.webpki_roots && self.ca.is_none() {
            problems.push(
                format!("{at}.webpki_roots"),
                "webpki_roots = false needs ca (otherwise no certificate could be trusted)",
            );
        }
        if let Some(name) = &self.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(
                    format!("{at}.server_name"),
                    format!("\"{name}\" is not a DNS name or an IP address"),
                );
            }
        }
        for endpoint in endpoints.iter().filter(|e| !e.is_https()) {
            problems.push(
                at.to_owned(),
                format!(
                    "{endpoint} is plain http: [upstreams.tls] applies to https:// endpoints \
                     only, so every endpoint of this upstream must be https://"
                ),
            );
        }
    }

    /// Every file this section names, with its key.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        [
            ("ca", &self.ca),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ]
        .into_iter()
        .filter_map(|(key, path)| Some((key, path.as_ref()?)))
    }
}

pub(super) mod defaults {
    use std::time::Duration;
    pub fn yes() -> bool {
        true
    }
    pub fn health_path() -> String {
        "/healthz".into()
    }
    pub fn interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn one() -> u32 {
        1
    }
    pub fn two() -> u32 {
        2
    }
    pub fn three() -> u32 {
        3
    }
    pub fn five() -> u32 {
        5
    }
    pub fn twenty() -> u32 {
        20
    }
    pub fn fifty() -> u32 {
        50
    }
    pub fn base_ejection() -> Duration {
        Duration::from_secs(2)
    }
    pub fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub fn buffer_bytes() -> usize {
        64 * 1024
    }
    pub fn max_connections() -> usize {
        256
    }
    pub fn max_pending() -> usize {
        1024
    }
    pub fn pending_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn pipeline_concurrency() -> usize {
        90
    }
    pub fn per_principal_min() -> usize {
        4
    }
}

impl HealthConfig {
    pub(super) fn check(&self, at: &str, problems: &mut Problems) {
        if !self.path.starts_with('/') {
            problems.push(format!("{at}.path"), "must start with /");
        }
        if self.interval < Duration::from_millis(100) {
            problems.push(format!("{at}.interval"), "must be at least 100ms");
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            problems.push(
                format!("{at}.timeout"),
                "must be more than zero and at most the interval",
            );
        }
        for (key, value) in [
            ("unhealthy_after", self.unhealthy_after),
            ("healthy_after", self.healthy_after),
        ] {
            if value == 0 {
                problems.push(format!("{at}.{key}"), "must be at least 1");
            }
        }
    }
}

impl OutlierConfig {
    pub(super) fn check(&self, at: &str, problems: &mut Problems) {
        if self.base_ejection.is_zero() {
            problems.push(format!("{at}.base_ejection"), "must be more than zero");
        }
        if self.max_ejection < self.base_ejection {
            problems.push(
                format!("{at}.max_ejection"),
                "must be at least base_ejection",
            );
        }
        if self.max_ejected_percent > 100 {
            problems.push(format!("{at}.max_ejected_percent"), "must be at most 100");
        }
    }
}

impl RetryConfig {
    pub(super) fn check(&self, at: &str, problems: &mut Problems) {
        if self.budget_percent > 100 {
            problems.push(format!("{at}.budget_percent"), "must be at most 100");
        }
        if self.buffer_bytes > 16 * 1024 * 1024 {
            problems.push(format!("{at}.buffer_bytes"), "must be at most 16 MiB");
        }
        if self.try_timeout.is_some_and(|t| t.is_zero()) {
            problems.push(format!("{at}.try_timeout"), "must be more than zero");
        }
    }
}
