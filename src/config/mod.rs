//! Configuration: the TOML file's serde types, loading, and the check that lists every problem.
//!
//! Owns the file format (unknown keys are errors everywhere) and the cross-checks between
//! sections (a route naming an unknown upstream, …). Sections that belong to one concern
//! (`auth`, `rate_limit`) keep their types beside this file; the runtime forms are built by
//! the modules that use them, and a module's own `check` is what `check-config` runs, so the
//! command and the server cannot disagree. Every key is documented in `config/gateway.toml`.

pub mod auth;
pub mod ratelimit;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use self::auth::AuthConfig;
pub use self::ratelimit::RateLimitConfig;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
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
}

/// `[server]`: the client-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Total bytes of request header names and values (plus 4 per line); over it: 431.
    pub max_header_bytes: usize,
    /// Bytes of the request target (path and query); over it: 414.
    pub max_uri_bytes: usize,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 2 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_in_flight: 10_000,
        }
    }
}

/// `[admin]`: a separate listener for `/livez`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// How the client's `Authorization` travels to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<String>,
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
    /// An endpoint that refused a connection is skipped for this long.
    #[serde(default = "defaults::unhealthy_cooldown", with = "humantime_serde")]
    pub unhealthy_cooldown: Duration,
    #[serde(default)]
    pub credentials: CredentialsMode,
    /// With `credentials = "replace"`: the environment variable holding the gateway's key.
    #[serde(default)]
    pub bearer_env: Option<String>,
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
    pub fn unhealthy_cooldown() -> Duration {
        Duration::from_secs(2)
    }
}

/// `[[routes]]`: which upstream serves a request. Tried in order; every criterion given must
/// match. A request that names no pipeline goes to the `default` route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Globs on the pipeline name.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Tenants (from the verified principal) this route serves.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Globs on the request path.
    #[serde(default)]
    pub paths: Vec<String>,
    pub upstream: String,
    #[serde(default)]
    pub default: bool,
}

/// One problem found in a configuration, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
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
    Parse(String),
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
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
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
        crate::routing::RouteTable::check(self, &mut problems);
        self.auth.check("auth", &mut problems);
        if let Some(rate_limit) = &self.rate_limit {
            rate_limit.check("rate_limit", &mut problems);
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
            for (j, endpoint) in upstream.endpoints.iter().enumerate() {
                if let Err(reason) = crate::proxy::parse_endpoint(endpoint) {
                    problems.push(format!("{at}.endpoints[{j}]"), reason);
                }
            }
            for (key, value) in [
                ("connect_timeout", upstream.connect_timeout),
                ("request_timeout", upstream.request_timeout),
            ] {
                if value.is_zero() {
                    problems.push(format!("{at}.{key}"), "must be more than zero");
                }
            }
            match (upstream.credentials, &upstream.bearer_env) {
                (CredentialsMode::Replace, None) => problems.push(
                    format!("{at}.bearer_env"),
                    "credentials = \"replace\" needs bearer_env (the variable holding the key)",
                ),
                (CredentialsMode::Replace, Some(var)) if std::env::var_os(var).is_none() => {
                    problems.push(
                        format!("{at}.bearer_env"),
                        format!("environment variable {var} is not set"),
                    )
                }
                (CredentialsMode::Pass | CredentialsMode::Strip, Some(_)) => problems.push(
                    format!("{at}.bearer_env"),
                    "only used with credentials = \"replace\"",
                ),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let text = r#"
            [[upstreams]]
            name = "primary"
            endpoints = ["ftp://x", "http://127.0.0.1:1"]
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
                .any(|l| l.starts_with("upstreams[0].endpoints[0]:")),
            "{lines:?}"
        );
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
