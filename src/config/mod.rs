//! Configuration: the TOML file's serde types, loading, and the check that lists every problem.
//! Plain data: this module imports nothing of the runtime (only the ground-floor catalog).
//!
//! Loading has two steps. Parsing types every value once ([`values`]): a value that does not
//! parse stops loading with its key path and line (`auth.jwt[0].algorithms[1]: unknown
//! algorithm "XS256" (line 12, column 27)`); unknown keys are errors everywhere. Then
//! [`Config::check`] lists every problem between values (a route naming an unknown upstream,
//! two defaults, …), each with its key path; it does no I/O. Files and environment variables
//! named by the configuration are read when the runtime is built (`runtime::Runtime::build`),
//! which reports their problems the same way; `check-config` does both, so the command and the
//! server cannot disagree. Every key is documented in `config/gateway.toml`.

pub mod auth;
pub mod browser;
pub mod ratelimit;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::auth::AuthConfig;
pub use self::browser::{ConsoleConfig, CorsConfig};
pub use self::ratelimit::RateLimitConfig;
pub use self::telemetry::{AccessField, LogConfig, LogFormat, OtlpProtocol, TracingConfig};
pub use self::tls::{ClientCertConfig, RedirectConfig, TlsConfig};
pub use self::upstream::{HealthConfig, OutlierConfig, RetryConfig, UpstreamTlsConfig};
pub use self::values::{EndpointUrl, NameGlob, PathGlob};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// `[tracing]`: OpenTelemetry traces; off without it.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// `[log]`: the log's format and the access-log line's fields.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[server]`: the client-facing listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Total bytes of request header names and values (plus 4 per line); over it: 431.
    pub max_header_bytes: usize,
    /// Bytes of the request target (path and query); over it: 414.
    pub max_uri_bytes: usize,
    /// Bytes of one header line (name and value); over it: 431. (Above the 8 KiB a token may
    /// have, so an oversized token is still told apart as `credentials_too_large`.)
    pub max_header_line_bytes: usize,
    /// Header lines in one request; over it: 431.
    pub max_header_count: usize,
    /// A request body that sends nothing for this long is cut off: 408, the upstream request
    /// aborted.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Request body limit on every route but ingress; over it: 413.
    pub max_body_bytes: u64,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time a client gets to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Requests in the gateway at once (until their response headers); over it: 503.
    pub max_in_flight: usize,
    /// Reload the whole configuration when this file changes (checked every second), as on
    /// `SIGHUP` or `POST /reload`.
    pub watch_config: bool,
    /// `[server.tls]`: TLS termination on `listen` (clear text without it).
    pub tls: Option<TlsConfig>,
    /// `[[server.redirect]]`: plain-HTTP listeners that only redirect to https.
    pub redirect: Vec<RedirectConfig>,
    /// A client connection with no request in progress is closed after this long: a
    /// keep-alive connection between requests, an HTTP/2 connection with no stream open, and
    /// a connection that never sends a byte. A request or stream in progress is never cut by
    /// it (see `server::conn`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Client connections open at once; beyond it a new connection is answered 503
    /// `TooManyConnections` and closed.
    pub max_connections: usize,
    /// A response that the client takes nothing of for this long (the socket accepts no byte,
    /// or an HTTP/2 stream's flow-control window stays shut) closes the connection.
    #[serde(with = "humantime_serde")]
    pub write_idle_timeout: Duration,
    /// `[server.http2]`: HTTP/2 limits.
    pub http2: Http2Config,
}

/// `[server.http2]`: the limits of one HTTP/2 client connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams a client may have open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Largest frame payload the gateway accepts (`SETTINGS_MAX_FRAME_SIZE`, 16 KiB to 16 MiB).
    pub max_frame_size: u32,
    /// Streams the client opened and reset before the gateway took them; one more and the
    /// connection is closed with `GOAWAY ENHANCE_YOUR_CALM` (the rapid-reset attack).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the gateway had to reset for the client's protocol errors; one more and the
    /// connection is closed with `GOAWAY ENHANCE_YOUR_CALM`.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 100,
            max_frame_size: 16 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_line_bytes: 16 * 1024,
            max_header_count: 100,
            body_idle_timeout: Duration::from_secs(30),
            max_body_bytes: 2 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_in_flight: 10_000,
            watch_config: false,
            tls: None,
            redirect: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            write_idle_timeout: Duration::from_secs(60),
            http2: Http2Config::default(),
        }
    }
}

/// `[admin]`: a separate listener for `/livez`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `[admin.tls]`: the admin listener over TLS (the same keys as `[server.tls]`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// How the client's `Authorization` travels to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsMode {
    /// Forward the client's `Authorization` unchanged.
    #[default]
    Pass,
    /// Remove it.
    Strip,
    /// Replace it with `Bearer <the value of bearer_env>`.
    Replace,
}

/// `[[upstreams]]`: one pipeline manager, possibly several replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<EndpointUrl>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per endpoint.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// The former name of `outlier.base_ejection`; when given, it is used as that.
    #[serde(default, with = "humantime_serde")]
    pub unhealthy_cooldown: Option<Duration>,
    #[serde(default)]
    pub credentials: CredentialsMode,
    /// With `credentials = "replace"`: the environment variable holding the gateway's key.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// Connections open at once to each endpoint.
    #[serde(default = "upstream::defaults::max_connections")]
    pub max_connections: usize,
    /// Requests waiting for a connection to each endpoint; beyond: 503 `UpstreamOverloaded`.
    #[serde(default = "upstream::defaults::max_pending")]
    pub max_pending: usize,
    /// Longest wait for a connection; beyond: 503 `UpstreamOverloaded`.
    #[serde(
        default = "upstream::defaults::pending_timeout",
        with = "humantime_serde"
    )]
    pub pending_timeout: Duration,
    /// Requests open at once per pipeline on this upstream (streams while they last); 0: no
    /// quota. The manager itself refuses a pipeline's 101st connection.
    #[serde(default = "upstream::defaults::pipeline_concurrency")]
    pub pipeline_concurrency: usize,
    /// A principal may always hold this many of a pipeline's quota, however many share it.
    #[serde(default = "upstream::defaults::per_principal_min")]
    pub per_principal_min: usize,
    /// Active health checks; none without this section.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    #[serde(default)]
    pub outlier: OutlierConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// How `https://` endpoints are verified; the public roots without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

impl UpstreamConfig {
    /// The first ejection's length (`outlier.base_ejection`, or `unhealthy_cooldown`).
    pub fn base_ejection(&self) -> Duration {
        self.unhealthy_cooldown
            .unwrap_or(self.outlier.base_ejection)
    }
}

mod defaults {
    use std::time::Duration;
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn pool_max_idle() -> usize {
        256
    }
}

/// `[[routes]]`: which upstream serves a request. Tried in order; every criterion given must
/// match. A request that names no pipeline goes to the `default` route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Globs on the pipeline name.
    #[serde(default)]
    pub pipelines: Vec<NameGlob>,
    /// Tenants (from the verified principal) this route serves.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Globs on the request path (`*` within a segment, `**` across).
    #[serde(default)]
    pub paths: Vec<PathGlob>,
    pub upstream: String,
    #[serde(default)]
    pub default: bool,
    /// The credentials this route serves: `[[auth.jwt]]` issuers, and `"apikey"` for API keys.
    /// Not a criterion: a request the route takes with a credential from elsewhere is refused
    /// (403), never passed on to the next route. Empty: any.
    #[serde(default)]
    pub issuers: Vec<String>,
}

/// What `[[routes]] issuers` calls the gateway's own API keys.
pub const API_KEYS_ISSUER: &str = "apikey";

/// What `[[routes]] issuers` calls verified client certificates (`[[auth.client_certs]]`).
pub const CLIENT_CERTS_ISSUER: &str = "client_cert";

/// One problem found in a configuration, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects problems; a check never stops at the first.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }

    /// The problems, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when there are no problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s):", self.0.len())?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl From<Problems> for ConfigError {
    fn from(problems: Problems) -> ConfigError {
        ConfigError::Invalid(problems.into_vec())
    }
}

/// Parses TOML into `T`, typing every value; the first value that does not parse is the
/// problem, with its key path and its line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Problem> {
    let located = |error: &toml::de::Error| match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "{} (line {line}, column {column})",
                error.message().trim_end()
            )
        }
        None => error.message().trim_end().to_owned(),
    };
    let deserializer = toml::de::Deserializer::parse(text).map_err(|error| Problem {
        path: String::new(),
        message: located(&error),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        Problem {
            path: if path == "." { String::new() } else { path },
            message: located(error.inner()),
        }
    })
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(Problem),
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses and checks configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text).map_err(ConfigError::Parse)?;
        let problems = config.check();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem in the configuration, each with its key path.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Problems::default();
        self.check_server(&mut problems);
        self.check_upstreams(&mut problems);
        self.check_routes(&mut problems);
        self.check_browser(&mut problems);
        self.auth.check("auth", &mut problems);
        if let Some(rate_limit) = &self.rate_limit {
            rate_limit.check("rate_limit", &mut problems);
        }
        if let Some(tracing) = &self.tracing {
            tracing.check("tracing", &mut problems);
        }
        problems.into_vec()
    }

    fn check_server(&self, problems: &mut Problems) {
        let s = &self.server;
        if !(1024..=256 * 1024).contains(&s.max_header_bytes) {
            problems.push(
                "server.max_header_bytes",
                format!("{} is outside 1024..=262144", s.max_header_bytes),
            );
        }
        // A line limit above the head limit is harmless: the head limit is reached first.
        if !(256..=256 * 1024).contains(&s.max_header_line_bytes) {
            problems.push(
                "server.max_header_line_bytes",
                format!("{} is outside 256..=262144", s.max_header_line_bytes),
            );
        }
        if !(8..=500).contains(&s.max_header_count) {
            problems.push(
                "server.max_header_count",
                format!("{} is outside 8..=500", s.max_header_count),
            );
        }
        if s.body_idle_timeout.is_zero() {
            problems.push("server.body_idle_timeout", "must be more than zero");
        }
        if !(256..=64 * 1024).contains(&s.max_uri_bytes) {
            problems.push(
                "server.max_uri_bytes",
                format!("{} is outside 256..=65536", s.max_uri_bytes),
            );
        }
        if s.header_read_timeout.is_zero() {
            problems.push("server.header_read_timeout", "must be more than zero");
        }
        if s.max_in_flight == 0 {
            problems.push("server.max_in_flight", "must be at least 1");
        }
        if let Some(tls) = &s.tls {
            tls.check("server.tls", problems);
        }
        if let Some(tls) = self.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            tls.check("admin.tls", problems);
            if !tls.sni.is_empty() || tls.client_auth.is_some() {
                problems.push(
                    "admin.tls",
                    "the admin listener takes cert, key, min_version, alpn and timeouts only \
                     (no sni, no client_auth)",
                );
            }
        }
        for (i, redirect) in s.redirect.iter().enumerate() {
            if s.tls.is_none() {
                problems.push(
                    format!("server.redirect[{i}]"),
                    "redirects to https need [server.tls]",
                );
            }
            if redirect.listen == s.listen && s.listen.port() != 0 {
                problems.push(
                    format!("server.redirect[{i}].listen"),
                    "is server.listen itself",
                );
            }
        }
        let client_auth = s.tls.as_ref().is_some_and(|t| t.client_auth.is_some());
        if !self.auth.client_certs.is_empty() && !client_auth {
            problems.push(
                "auth.client_certs",
                "client certificates need [server.tls.client_auth] (nothing would verify them)",
            );
        }
        if s.idle_timeout.is_zero() {
            problems.push("server.idle_timeout", "must be more than zero");
        }
        if s.write_idle_timeout.is_zero() {
            problems.push("server.write_idle_timeout", "must be more than zero");
        }
        if s.max_connections == 0 {
            problems.push("server.max_connections", "must be at least 1");
        }
        if s.http2.max_concurrent_streams == 0 {
            problems.push("server.http2.max_concurrent_streams", "must be at least 1");
        }
        if !(16_384..=16_777_215).contains(&s.http2.max_frame_size) {
            problems.push(
                "server.http2.max_frame_size",
                "must be between 16384 and 16777215 (RFC 9113 §6.5.2)",
            );
        }
    }

    fn check_upstreams(&self, problems: &mut Problems) {
        if self.upstreams.is_empty() {
            problems.push("upstreams", "at least one upstream is required");
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if upstream.name.is_empty() {
                problems.push(format!("{at}.name"), "must not be empty");
            }
            if self.upstreams[..i].iter().any(|u| u.name == upstream.name) {
                problems.push(
                    format!("{at}.name"),
                    format!("duplicate upstream name \"{}\"", upstream.name),
                );
            }
            if upstream.endpoints.is_empty() {
                problems.push(
                    format!("{at}.endpoints"),
                    "at least one endpoint is required",
                );
            }
            for (key, value) in [
                ("connect_timeout", upstream.connect_timeout),
                ("request_timeout", upstream.request_timeout),
                ("pending_timeout", upstream.pending_timeout),
            ] {
                if value.is_zero() {
                    problems.push(format!("{at}.{key}"), "must be more than zero");
                }
            }
            if upstream.max_connections == 0 {
                problems.push(format!("{at}.max_connections"), "must be at least 1");
            }
            if upstream.endpoints.len() > 64 {
                problems.push(format!("{at}.endpoints"), "at most 64 endpoints");
            }
            if let Some(health) = &upstream.health {
                health.check(&format!("{at}.health"), problems);
            }
            upstream.outlier.check(&format!("{at}.outlier"), problems);
            upstream.retry.check(&format!("{at}.retry"), problems);
            if let Some(tls) = &upstream.tls {
                tls.check(&format!("{at}.tls"), &upstream.endpoints, problems);
            }
            match (upstream.credentials, &upstream.bearer_env) {
                (CredentialsMode::Replace, None) => problems.push(
                    format!("{at}.bearer_env"),
                    "credentials = \"replace\" needs bearer_env (the variable holding the key)",
                ),
                (CredentialsMode::Pass | CredentialsMode::Strip, Some(_)) => problems.push(
                    format!("{at}.bearer_env"),
                    "only used with credentials = \"replace\"",
                ),
                _ => {}
            }
        }
    }
}

impl Config {
    /// The configuration as JSON with nothing secret in it (for `GET /config`): API key
    /// hashes, shared-secret sources and passwords in URLs are replaced by `"[redacted]"`.
    pub fn redacted(&self) -> serde_json::Value {
        const REDACTED: &str = "[redacted]";
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(keys) = value
            .pointer_mut("/auth/api_keys")
            .and_then(|k| k.as_array_mut())
        {
            for key in keys {
                key["sha256"] = REDACTED.into();
            }
        }
        if let Some(providers) = value
            .pointer_mut("/auth/jwt")
            .and_then(|p| p.as_array_mut())
        {
            for provider in providers {
                if let Some(keys) = provider.get_mut("hmac_keys").and_then(|k| k.as_array_mut()) {
                    for key in keys {
                        for field in ["secret_file", "secret_env"] {
                            if key.get(field).is_some_and(|v| !v.is_null()) {
                                key[field] = REDACTED.into();
                            }
                        }
                    }
                }
            }
        }
        // Every Redis address: the server's URL, a cluster's seeds, the Sentinels.
        for key in ["url", "cluster", "sentinel"] {
            let Some(found) = value.pointer_mut(&format!("/rate_limit/redis/{key}")) else {
                continue;
            };
            let urls = match found {
                serde_json::Value::Array(list) => list.iter_mut().collect(),
                single => vec![single],
            };
            for url in urls {
                if let Some(text) = url.as_str() {
                    *url = redact_password(text).into();
                }
            }
        }
        value
    }

    /// A short hash of the configuration (the first 16 hex digits of SHA-256 of its JSON).
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(json);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    fn check_routes(&self, problems: &mut Problems) {
        if self.routes.is_empty() {
            problems.push("routes", "at least one route is required");
        }
        let mut default = false;
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !self.upstreams.iter().any(|u| u.name == route.upstream) {
                problems.push(
                    format!("{at}.upstream"),
                    format!("unknown upstream \"{}\"", route.upstream),
                );
            }
            if route.default {
                if default {
                    problems.push(format!("{at}.default"), "only one route can be the default");
                }
                default = true;
            } else if route.pipelines.is_empty()
                && route.paths.is_empty()
                && route.tenants.is_empty()
            {
                problems.push(
                    at.clone(),
                    "a route needs pipelines, paths or tenants, or default = true",
                );
            }
            if !route.issuers.is_empty() && self.auth.mode == self::auth::AuthMode::Off {
                problems.push(
                    format!("{at}.issuers"),
                    "with [auth] mode = \"off\" nobody is verified, so the route would refuse \
                     every request",
                );
            }
            for (j, issuer) in route.issuers.iter().enumerate() {
                let known = issuer == API_KEYS_ISSUER
                    || issuer == CLIENT_CERTS_ISSUER
                    || self.auth.jwt.iter().any(|jwt| jwt.issuer == *issuer);
                if !known {
                    problems.push(
                        format!("{at}.issuers[{j}]"),
                        format!(
                            "no [[auth.jwt]] has issuer \"{issuer}\" (\"{API_KEYS_ISSUER}\" names \
                             the API keys)"
                        ),
                    );
                }
            }
        }
    }

    /// The index of the default route's upstream (in `upstreams`), when there is one.
    pub fn default_upstream(&self) -> Option<usize> {
        let route = self.routes.iter().find(|r| r.default)?;
        self.upstreams.iter().position(|u| u.name == route.upstream)
    }
}

/// `scheme://user:password@host…` with the password replaced.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:[redacted]{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redacted_config_shows_no_key_hash_secret_source_or_password() {
        let config = Config::from_toml(
            r#"
            [[upstreams]]
            name = "m"
            endpoints = ["http://127.0.0.1:1"]
            [[routes]]
            upstream = "m"
            default = true
            [[auth.api_keys]]
            name = "ci"
            sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            role = "read"
            [[auth.jwt]]
            issuer = "https://i/"
            audiences = ["a"]
            algorithms = ["HS256"]
            hmac_keys = [{ kid = "k", secret_env = "GW_SECRET" }]
            [rate_limit.redis]
            url = "redis://gw:s3cret@redis.internal:6379/0"
            "#,
        )
        .unwrap();
        let text = config.redacted().to_string();
        for secret in ["47DEQpj8", "GW_SECRET", "s3cret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("redis://gw:[redacted]@redis.internal:6379/0"),
            "{text}"
        );
        // A cluster's seeds and the Sentinels are redacted alike.
        for (kind, extra) in [("cluster", ""), ("sentinel", "master_name = \"m\"\n")] {
            let config = Config::from_toml(&format!(
                "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                 [[routes]]\nupstream = \"m\"\ndefault = true\n[rate_limit.redis]\n{extra}\
                 {kind} = [\"redis://a:1\", \"redis://:s3cret@b:1\"]\n"
            ))
            .unwrap();
            let text = config.redacted().to_string();
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("\"redis://:[redacted]@b:1\""), "{text}");
        }
        assert!(text.contains("\"name\":\"ci\""), "{text}");
        assert_eq!(config.hash().len(), 16);
        assert_eq!(config.hash(), config.clone().hash());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_key_path_and_line() {
        let text = "[[upstreams]]\nname = \"primary\"\nendpoints = [\"http://127.0.0.1:1\", \"ftp://x\"]\n";
        let Err(ConfigError::Parse(problem)) = Config::from_toml(text) else {
            panic!("expected a parse error")
        };
        assert_eq!(problem.path, "upstreams[0].endpoints[1]");
        assert!(
            problem
                .message
                .starts_with("\"ftp://x\": the scheme must be http or https"),
            "{problem}"
        );
        assert!(problem.message.contains("(line 3, column "), "{problem}");
        let Err(ConfigError::Parse(problem)) =
            Config::from_toml("[[routes]]\npipelines = [\"[\"]\nupstream = \"a\"\n")
        else {
            panic!("expected a parse error")
        };
        assert_eq!(problem.path, "routes[0].pipelines[0]");
        assert!(problem.message.starts_with("invalid glob"), "{problem}");
    }

    #[test]
    fn route_issuers_must_be_configured_issuers_or_apikey_with_auth_on() {
        let base = "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                    [[routes]]\nupstream = \"m\"\ndefault = true\n\
                    issuers = [\"https://idp-a/\", \"apikey\", \"https://idp-z/\"]\n";
        let jwt = "[[auth.jwt]]\nissuer = \"https://idp-a/\"\naudiences = [\"a\"]\n\
                   algorithms = [\"RS256\"]\njwks_url = \"https://idp-a/jwks\"\n";
        let Err(ConfigError::Invalid(problems)) = Config::from_toml(&format!("{base}{jwt}")) else {
            panic!("expected problems")
        };
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            lines,
            ["routes[0].issuers[2]: no [[auth.jwt]] has issuer \"https://idp-z/\" (\"apikey\" names the API keys)"]
        );
        let Err(ConfigError::Invalid(problems)) =
            Config::from_toml(&format!("{base}[auth]\nmode = \"off\"\n"))
        else {
            panic!("expected problems")
        };
        assert!(
            problems.iter().any(|p| p.path == "routes[0].issuers"),
            "{problems:?}"
        );
        let fine = base.replace(", \"https://idp-z/\"", "");
        assert!(Config::from_toml(&format!("{fine}{jwt}")).is_ok());
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let text = r#"
            [[upstreams]]
            name = "primary"
            endpoints = ["http://127.0.0.1:2", "http://127.0.0.1:1"]
            [[upstreams]]
            name = "primary"
            endpoints = []
            [[routes]]
            pipelines = ["*"]
            upstream = "eu"
        "#;
        let Err(ConfigError::Invalid(problems)) = Config::from_toml(text) else {
            panic!("expected problems")
        };
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            lines
                .iter()
                .any(|l| l == "upstreams[1].name: duplicate upstream name \"primary\""),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("upstreams[1].endpoints:")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "routes[0].upstream: unknown upstream \"eu\""),
            "{lines:?}"
        );
    }
}
