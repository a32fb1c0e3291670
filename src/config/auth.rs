//! `[auth]`: how clients prove who they are, and what each role may call.
//!
//! These are the file's serde types (unknown keys rejected everywhere) and [`AuthConfig::check`],
//! which reports every problem with its key path (`auth.jwt[0].algorithms[1]: unknown
//! algorithm "XS256"`). Values that need checking beyond their type (roles, algorithms,
//! methods, globs, header names, key hashes) are kept as strings here and parsed by `check`,
//! so a typo is reported with its path instead of failing the whole parse. The runtime form is
//! built by `crate::auth` from a checked configuration.
//!
//! ```toml
//! [auth]
//! mode = "on"                      # "off": everyone is an anonymous owner (demo only)
//! public_paths = ["/healthz", "/config/authentication", "/robots.txt"]
//! api_keys_file = "config/api_keys.toml"   # [[api_keys]] entries, re-read when it changes
//! claim_headers = { sub = "x-feldera-user" }
//!
//! [[auth.api_keys]]
//! name = "ci"
//! sha256 = "base64 of SHA-256 of the full key"
//! role = "write"
//! tenant = "acme"
//! expires = "2030-01-01T00:00:00Z"
//!
//! [[auth.jwt]]
//! issuer = "https://idp.example.com/"
//! audiences = ["feldera-api"]
//! algorithms = ["RS256", "ES256"]
//! jwks_file = "config/jwks.json"   # or jwks_url = "https://…", or discovery = true
//! role_claim = "feldera_role"
//! tenant_claim = "tenant"
//!
//! [[auth.routes]]                  # /v0 paths missing from the manager's role table
//! path = "/v0/foo/*"
//! methods = ["GET"]
//! role = "read"
//! ```
//!
//! Edge cases: `alg = "none"` is never accepted, in any casing. Exactly one of `jwks_file`,
//! `jwks_url` and `discovery = true` must be given per provider. Plain `http://` key-set URLs
//! (and discovery for an `http://` issuer) are accepted only for loopback hosts, so tests can
//! use a local server and nothing else can be fetched without TLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;

use super::Problems;
use crate::auth::Role;

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Exact paths that need no credential. Paths outside `/v0` that the catalog does not
    /// know stay 404 whatever this says.
    pub public_paths: Vec<String>,
    /// Keys given inline.
    pub api_keys: Vec<ApiKeyConfig>,
    /// A TOML file of `[[api_keys]]` entries (same fields), re-read when it changes.
    pub api_keys_file: Option<PathBuf>,
    /// How often `api_keys_file` is checked for changes.
    #[serde(with = "humantime_serde")]
    pub api_keys_reload: Duration,
    /// JWT issuers.
    pub jwt: Vec<JwtProviderConfig>,
    /// Minimum roles for `/v0` paths missing from the manager's table; any other such path is
    /// denied with 403.
    pub routes: Vec<AuthRouteConfig>,
    /// Verified claims forwarded as request headers: claim name → header name. Client-sent
    /// copies of these headers are always removed.
    pub claim_headers: BTreeMap<String, String>,
    /// Verified tokens remembered (0 turns the cache off).
    pub token_cache_size: usize,
    /// Longest a verified token is remembered (never past its `exp`).
    #[serde(with = "humantime_serde")]
    pub token_cache_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::On,
            public_paths: DEFAULT_PUBLIC_PATHS.iter().map(|p| p.to_string()).collect(),
            api_keys: Vec::new(),
            api_keys_file: None,
            api_keys_reload: Duration::from_secs(5),
            jwt: Vec::new(),
            routes: Vec::new(),
            claim_headers: BTreeMap::new(),
            token_cache_size: 10_000,
            token_cache_ttl: Duration::from_secs(300),
        }
    }
}

/// The manager's own unauthenticated paths.
pub const DEFAULT_PUBLIC_PATHS: [&str; 3] = ["/healthz", "/config/authentication", "/robots.txt"];

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request except public paths needs a valid credential.
    #[default]
    On,
    /// No authentication: every request is forwarded as an anonymous principal.
    Off,
}

/// `[[auth.api_keys]]`, and each `[[api_keys]]` of `api_keys_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Names the key in logs and rate limits (`key:<name>`).
    pub name: String,
    /// Base64 (standard, padded) of SHA-256 of the full key string, `apikey:` included: the
    /// manager's stored form.
    pub sha256: String,
    /// `read`, `write`, `admin` or `owner`.
    pub role: String,
    /// The one tenant the key acts in.
    #[serde(default)]
    pub tenant: Option<String>,
    /// RFC 3339 time after which the key is refused (`expired_api_key`).
    #[serde(default, with = "humantime_serde")]
    pub expires: Option<SystemTime>,
}

/// The layout of `api_keys_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// `[[auth.jwt]]`: one identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Compared exactly with the token's `iss` (a trailing slash matters).
    pub issuer: String,
    /// The token's `aud` (string or array) must contain one of these.
    pub audiences: Vec<String>,
    /// Allowed `alg` values: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub algorithms: Vec<String>,
    /// A JWKS document on disk (re-read on refresh and on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document over HTTPS.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find `jwks_uri` at `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Claim holding the role (a string, or an array whose highest known role counts).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// Role when `role_claim` is unset, absent, or names no known role.
    #[serde(default = "defaults::default_role")]
    pub default_role: String,
    /// Claim holding the tenant (a string, or an array of tenants the subject belongs to).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// Claims that must be present (`exp` and `sub` always are).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Key-set refresh interval without `Cache-Control: max-age`, and the upper bound of it.
    #[serde(default = "defaults::jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Least time between two refetches caused by unknown `kid`s.
    #[serde(default = "defaults::refetch_cooldown", with = "humantime_serde")]
    pub refetch_cooldown: Duration,
    /// Shared secrets for HS256/384/512, from files or the environment: the only place a
    /// symmetric key comes from (a key set that publishes one is never used for it).
    #[serde(default)]
    pub hmac_keys: Vec<HmacKeyConfig>,
}

/// `[[auth.jwt.hmac_keys]]`: one shared secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacKeyConfig {
    /// The `kid` tokens name; may be left out only when it is the issuer's one key.
    #[serde(default)]
    pub kid: Option<String>,
    /// A file holding the secret (one trailing newline is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// How the secret is written: `text` (its bytes as they are), `base64`, `base64url`.
    #[serde(default)]
    pub encoding: SecretEncoding,
}

/// `hmac_keys[].encoding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    #[default]
    Text,
    Base64,
    Base64url,
}

/// Shortest shared secret accepted: the output size of SHA-256 (RFC 7518 §3.2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

impl HmacKeyConfig {
    /// Reads and decodes the secret (file or environment).
    pub fn load_secret(&self) -> Result<Vec<u8>, String> {
        let text = match (&self.secret_file, &self.secret_env) {
            (Some(path), None) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes.ends_with(b"\r\n") {
                    bytes.truncate(bytes.len() - 2);
                } else if bytes.ends_with(b"\n") {
                    bytes.truncate(bytes.len() - 1);
                }
                bytes
            }
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set"))?
                .into_bytes(),
            _ => return Err("give exactly one of secret_file, secret_env".into()),
        };
        let secret = match self.encoding {
            SecretEncoding::Text => text,
            SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text.trim_ascii())
                .map_err(|_| "the secret is not standard base64".to_string())?,
            SecretEncoding::Base64url => {
                let trimmed = text.trim_ascii();
                let unpadded = trimmed
                    .iter()
                    .rposition(|b| *b != b'=')
                    .map_or(&trimmed[..0], |last| &trimmed[..=last]);
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(unpadded)
                    .map_err(|_| "the secret is not base64url".to_string())?
            }
        };
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(format!(
                "the secret has {} bytes; at least {MIN_HMAC_SECRET_BYTES} are needed",
                secret.len()
            ));
        }
        Ok(secret)
    }
}

/// `[[auth.routes]]`: a minimum role for `/v0` paths the manager's table does not list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRouteConfig {
    /// Glob on the path; `*` matches within one segment, `**` across segments.
    pub path: String,
    /// Methods it applies to; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
    pub role: String,
}

mod defaults {
    use std::time::Duration;
    pub fn leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub fn default_role() -> String {
        "read".into()
    }
    pub fn jwks_refresh() -> Duration {
        Duration::from_secs(300)
    }
    pub fn refetch_cooldown() -> Duration {
        Duration::from_secs(30)
    }
}

/// The JWS algorithms the gateway can verify, by their `alg` spelling.
pub const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Methods `[[auth.routes]] methods` may name.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers a claim may not be forwarded as: the gateway owns them.
const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "host",
    "feldera-tenant",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "keep-alive",
    "sec-websocket-protocol",
    "x-forwarded-for",
];

fn role_problem(at: &str, role: &str, problems: &mut Problems) {
    if Role::parse(role).is_none() {
        problems.push(
            at,
            format!("unknown role \"{role}\" (read, write, admin, owner)"),
        );
    }
}

/// Decodes an API key hash as stored by the manager (base64 of 32 bytes).
pub fn decode_key_hash(sha256: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sha256)
        .map_err(|_| "not standard base64".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, not the 32 of SHA-256", bytes.len()))
}

/// Whether `url` may be fetched: https anywhere, plain http only on loopback.
pub fn fetchable_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("not a URL: \"{url}\""))?;
    let host = uri.host().ok_or_else(|| format!("no host in \"{url}\""))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1") => Ok(uri),
        Some("http") => Err(format!(
            "\"{url}\" is plain http; key sets are fetched over https (http only on loopback)"
        )),
        _ => Err(format!("\"{url}\" is not an http(s) URL")),
    }
}

/// Checks API key entries (inline or from the file) under `at`.
pub fn check_api_keys(at: &str, keys: &[ApiKeyConfig], problems: &mut Problems) {
    for (i, key) in keys.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if key.name.is_empty() {
            problems.push(format!("{at}.name"), "must not be empty");
        }
        if keys[..i].iter().any(|k| k.name == key.name) {
            problems.push(
                format!("{at}.name"),
                format!("duplicate key name \"{}\"", key.name),
            );
        }
        match decode_key_hash(&key.sha256) {
            Ok(_) if keys[..i].iter().any(|k| k.sha256 == key.sha256) => {
                problems.push(format!("{at}.sha256"), "the same key is listed twice")
            }
            Ok(_) => {}
            Err(reason) => problems.push(format!("{at}.sha256"), reason),
        }
        role_problem(&format!("{at}.role"), &key.role, problems);
        if key.tenant.as_deref() == Some("") {
            problems.push(format!("{at}.tenant"), "must not be empty");
        }
    }
}

/// Reads and parses `api_keys_file`.
pub fn read_api_keys_file(path: &Path) -> Result<ApiKeysFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl AuthConfig {
    /// Every problem of `[auth]`, each with its key path under `at`.
    pub fn check(&self, at: &str, problems: &mut Problems) {
        for (i, path) in self.public_paths.iter().enumerate() {
            if !path.starts_with('/') {
                problems.push(
                    format!("{at}.public_paths[{i}]"),
                    format!("\"{path}\" does not start with /"),
                );
            }
        }
        check_api_keys(&format!("{at}.api_keys"), &self.api_keys, problems);
        if let Some(path) = &self.api_keys_file {
            let file_at = format!("{at}.api_keys_file");
            match read_api_keys_file(path) {
                Ok(file) => {
                    check_api_keys(&format!("{file_at}:api_keys"), &file.api_keys, problems)
                }
                Err(reason) => problems.push(file_at, reason),
            }
        }
        if self.api_keys_reload < Duration::from_millis(100) {
            problems.push(format!("{at}.api_keys_reload"), "must be at least 100ms");
        }
        for (i, provider) in self.jwt.iter().enumerate() {
            let at = format!("{at}.jwt[{i}]");
            if self.jwt[..i].iter().any(|p| p.issuer == provider.issuer) {
                problems.push(
                    format!("{at}.issuer"),
                    format!("duplicate issuer \"{}\"", provider.issuer),
                );
            }
            provider.check(&at, problems);
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            if !route.path.starts_with("/v0/") {
                problems.push(format!("{at}.path"), "must start with /v0/");
            }
            if let Err(e) = globset::Glob::new(&route.path) {
                problems.push(format!("{at}.path"), format!("bad glob: {e}"));
            }
            for (j, method) in route.methods.iter().enumerate() {
                if !METHODS.contains(&method.as_str()) {
                    problems.push(
                        format!("{at}.methods[{j}]"),
                        format!("unknown method \"{method}\" (uppercase: GET, POST, …)"),
                    );
                }
            }
            role_problem(&format!("{at}.role"), &route.role, problems);
        }
        for (claim, header) in &self.claim_headers {
            let key = format!("{at}.claim_headers.{claim}");
            match http::HeaderName::try_from(header.as_str()) {
                Err(_) => problems.push(key, format!("\"{header}\" is not a header name")),
                Ok(name) if RESERVED_HEADERS.contains(&name.as_str()) => problems.push(
                    key,
                    format!("\"{header}\" is set by the gateway and cannot carry a claim"),
                ),
                Ok(_) => {}
            }
        }
        if self.token_cache_size > 0 && self.token_cache_ttl.is_zero() {
            problems.push(
                format!("{at}.token_cache_ttl"),
                "must be more than zero (or set token_cache_size = 0)",
            );
        }
    }
}

impl JwtProviderConfig {
    fn check(&self, at: &str, problems: &mut Problems) {
        if self.issuer.is_empty() {
            problems.push(format!("{at}.issuer"), "must not be empty");
        }
        if self.audiences.is_empty() {
            problems.push(
                format!("{at}.audiences"),
                "at least one audience is required (Feldera's is \"feldera-api\")",
            );
        }
        if self.algorithms.is_empty() {
            problems.push(
                format!("{at}.algorithms"),
                "at least one algorithm is required",
            );
        }
        for (j, alg) in self.algorithms.iter().enumerate() {
            if alg.eq_ignore_ascii_case("none") {
                problems.push(format!("{at}.algorithms[{j}]"), "\"none\" is never allowed");
            } else if !ALGORITHMS.contains(&alg.as_str()) {
                problems.push(
                    format!("{at}.algorithms[{j}]"),
                    format!("unknown algorithm \"{alg}\" ({})", ALGORITHMS.join(", ")),
                );
            }
        }
        let sources = usize::from(self.jwks_file.is_some())
            + usize::from(self.jwks_url.is_some())
            + usize::from(self.discovery);
        if sources > 1 || (sources == 0 && self.hmac_keys.is_empty()) {
            problems.push(
                at.to_string(),
                "give exactly one of jwks_file, jwks_url, discovery = true (or only hmac_keys)",
            );
        }
        let fetched = self.jwks_url.is_some() || self.discovery;
        let mut symmetric = false;
        for (j, alg) in self.algorithms.iter().enumerate() {
            if !alg.starts_with("HS") || !ALGORITHMS.contains(&alg.as_str()) {
                continue;
            }
            symmetric = true;
            if fetched {
                problems.push(
                    format!("{at}.algorithms[{j}]"),
                    format!(
                        "{alg} needs a shared secret, and secrets never come from a fetched key \
                         set: use hmac_keys on an issuer without jwks_url or discovery"
                    ),
                );
            } else if self.hmac_keys.is_empty() {
                problems.push(
                    format!("{at}.algorithms[{j}]"),
                    format!("{alg} needs hmac_keys (a key set's symmetric keys are never used)"),
                );
            }
        }
        if !self.hmac_keys.is_empty() && !symmetric {
            problems.push(
                format!("{at}.hmac_keys"),
                "given, but algorithms lists no HS256/HS384/HS512",
            );
        }
        for (j, key) in self.hmac_keys.iter().enumerate() {
            let key_at = format!("{at}.hmac_keys[{j}]");
            if let Err(reason) = key.load_secret() {
                problems.push(key_at.clone(), reason);
            }
            if key.kid.is_none() && self.hmac_keys.len() > 1 {
                problems.push(
                    format!("{key_at}.kid"),
                    "required when the issuer has more than one shared secret",
                );
            }
            if key.kid.is_some() && self.hmac_keys[..j].iter().any(|k| k.kid == key.kid) {
                problems.push(format!("{key_at}.kid"), "two shared secrets have this kid");
            }
        }
        if let Some(url) = &self.jwks_url {
            if let Err(reason) = fetchable_url(url) {
                problems.push(format!("{at}.jwks_url"), reason);
            }
        }
        if self.discovery {
            if let Err(reason) = fetchable_url(&self.issuer) {
                problems.push(format!("{at}.discovery"), format!("issuer {reason}"));
            }
        }
        if let Some(path) = &self.jwks_file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    if let Err(reason) = crate::auth::jwks::KeySet::parse(&bytes) {
                        problems.push(format!("{at}.jwks_file"), reason.to_string());
                    }
                }
                Err(e) => problems.push(
                    format!("{at}.jwks_file"),
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        if self.leeway > Duration::from_secs(300) {
            problems.push(format!("{at}.leeway"), "must be at most 5m");
        }
        role_problem(&format!("{at}.default_role"), &self.default_role, problems);
        for (key, value) in [
            ("role_claim", &self.role_claim),
            ("tenant_claim", &self.tenant_claim),
        ] {
            if value.as_deref() == Some("") {
                problems.push(format!("{at}.{key}"), "must not be empty");
            }
        }
        if self.jwks_refresh < Duration::from_secs(1) {
            problems.push(format!("{at}.jwks_refresh"), "must be at least 1s");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn problems(auth: &str) -> Vec<String> {
        let text = format!(
            "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes]]\nupstream = \"m\"\ndefault = true\n{auth}"
        );
        match Config::from_toml(&text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn defaults_are_valid_and_public_paths_are_the_managers() {
        let lines = problems("");
        assert!(lines.is_empty(), "{lines:?}");
        let config = super::AuthConfig::default();
        assert_eq!(config.public_paths, super::DEFAULT_PUBLIC_PATHS);
    }

    #[test]
    fn unknown_algorithm_and_none_are_reported_with_their_paths() {
        let lines = problems(
            r#"
            [[auth.jwt]]
            issuer = "https://idp/"
            audiences = ["feldera-api"]
            algorithms = ["RS256", "XS256", "NONE"]
            jwks_url = "https://idp/jwks"
            "#,
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("auth.jwt[0].algorithms[1]: unknown algorithm \"XS256\"")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "auth.jwt[0].algorithms[2]: \"none\" is never allowed"),
            "{lines:?}"
        );
    }

    #[test]
    fn key_problems_are_all_listed() {
        let lines = problems(
            r#"
            [[auth.api_keys]]
            name = "a"
            sha256 = "not base64!"
            role = "super"
            [[auth.api_keys]]
            name = "a"
            sha256 = "AAAA"
            role = "read"
            [[auth.jwt]]
            issuer = "http://idp.example.com/"
            audiences = []
            algorithms = ["RS256"]
            discovery = true
            jwks_url = "http://idp.example.com/jwks"
            [[auth.routes]]
            path = "/other"
            methods = ["get"]
            role = "read"
            [auth.claim_headers]
            sub = "authorization"
            "#,
        );
        for expected in [
            "auth.api_keys[0].sha256: not standard base64",
            "auth.api_keys[0].role: unknown role \"super\"",
            "auth.api_keys[1].name: duplicate key name \"a\"",
            "auth.api_keys[1].sha256: decodes to 3 bytes",
            "auth.jwt[0].audiences:",
            "auth.jwt[0]: give exactly one of",
            "auth.jwt[0].jwks_url: \"http://idp.example.com/jwks\" is plain http",
            "auth.jwt[0].discovery: issuer",
            "auth.routes[0].path: must start with /v0/",
            "auth.routes[0].methods[0]: unknown method \"get\"",
            "auth.claim_headers.sub:",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "missing {expected:?} in {lines:?}"
            );
        }
    }

    #[test]
    fn shared_secrets_come_only_from_hmac_keys_and_never_with_fetched_sets() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "too short\n").unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, "s".repeat(32) + "\n").unwrap();
        let lines = problems(&format!(
            r#"
            [[auth.jwt]]
            issuer = "https://a/"
            audiences = ["feldera-api"]
            algorithms = ["RS256", "HS256"]
            jwks_url = "https://a/jwks"
            [[auth.jwt]]
            issuer = "https://b/"
            audiences = ["feldera-api"]
            algorithms = ["HS384"]
            jwks_file = "{good}"
            [[auth.jwt]]
            issuer = "https://c/"
            audiences = ["feldera-api"]
            algorithms = ["RS256"]
            jwks_file = "{good}"
            hmac_keys = [{{ kid = "x", secret_file = "{good}" }}]
            [[auth.jwt]]
            issuer = "https://d/"
            audiences = ["feldera-api"]
            algorithms = ["HS256"]
            hmac_keys = [{{ secret_file = "{short}" }}, {{ kid = "b", secret_env = "PIPELINE_GATEWAY_TEST_UNSET_SECRET" }}]
            "#,
            good = good.display(),
            short = short.display()
        ));
        for expected in [
            "auth.jwt[0].algorithms[1]: HS256 needs a shared secret, and secrets never come from a fetched key set",
            "auth.jwt[1].algorithms[0]: HS384 needs hmac_keys",
            "auth.jwt[2].hmac_keys: given, but algorithms lists no HS256",
            "auth.jwt[3].hmac_keys[0]: the secret has 9 bytes; at least 32 are needed",
            "auth.jwt[3].hmac_keys[0].kid: required when the issuer has more than one shared secret",
            "auth.jwt[3].hmac_keys[1]: environment variable PIPELINE_GATEWAY_TEST_UNSET_SECRET is not set",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "missing {expected:?} in {lines:?}"
            );
        }
        // An issuer with only shared secrets needs no key set.
        let lines = problems(&format!(
            "[[auth.jwt]]\nissuer = \"https://e/\"\naudiences = [\"x\"]\nalgorithms = [\"HS256\"]\n\
             hmac_keys = [{{ kid = \"k\", secret_file = \"{}\" }}]\n",
            good.display()
        ));
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn unknown_auth_keys_are_rejected() {
        let lines = problems("[auth]\nmode = \"on\"\nbogus = 1\n");
        assert!(lines.iter().any(|l| l.contains("bogus")), "{lines:?}");
    }
}
