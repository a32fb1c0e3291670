//! `[auth]`: how clients prove who they are, and what each role may call.
//!
//! These are the file's serde types (unknown keys rejected everywhere) and [`AuthConfig::check`],
//! which reports every problem between values with its key path (`auth.jwt[0].algorithms[1]:
//! HS256 needs a shared secret …`). Values are typed when the file is read (roles, algorithms,
//! methods, globs, header names, key hashes, URLs): a value that does not parse is refused
//! then, with its key path and line. The check does no I/O: files and environment variables
//! (`api_keys_file`, `jwks_file`, shared secrets) are read when the runtime is built, which
//! reports their problems the same way (`check-config` builds it too). The runtime form is
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
//! tenants = ["acme", "beta-*"]     # the tenants it may name; default: any
//! token_types = ["at+jwt", "JWT"]  # the JOSE typ header; default: any
//! reject_id_tokens = true          # nonce, or token_use != "access"; default: discovery
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
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::values::{FetchUrl, HeaderName, HttpMethod, JwsAlgorithm, KeyHash, NameGlob, PathGlob};
use super::Problems;
use crate::catalog::Role;

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub claim_headers: BTreeMap<String, HeaderName>,
    /// Forward the client's `Cookie` header on API routes (removed by default: the gateway
    /// verifies no cookie, so none should speak for the client upstream).
    pub forward_cookies: bool,
    /// With `mode = "off"`, believe the client's `Feldera-Tenant` (forward it, route by it).
    /// Off by default: without a verified principal the header is removed.
    pub trust_tenant_header: bool,
    /// Verified tokens remembered (0 turns the cache off).
    pub token_cache_size: usize,
    /// Longest a verified token is remembered (never past its `exp`).
    #[serde(with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// Verified TLS client certificates that speak for a principal (with
    /// `[server.tls.client_auth]`).
    pub client_certs: Vec<super::tls::ClientCertConfig>,
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
            forward_cookies: false,
            trust_tenant_header: false,
            token_cache_size: 10_000,
            token_cache_ttl: Duration::from_secs(300),
            client_certs: Vec::new(),
        }
    }
}

/// The manager's own unauthenticated paths.
pub const DEFAULT_PUBLIC_PATHS: [&str; 3] = ["/healthz", "/config/authentication", "/robots.txt"];

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request except public paths needs a valid credential.
    #[default]
    On,
    /// No authentication: every request is forwarded as an anonymous principal.
    Off,
}

/// `[[auth.api_keys]]`, and each `[[api_keys]]` of `api_keys_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Names the key in logs and rate limits (`key:<name>`).
    pub name: String,
    /// Base64 (standard, padded) of SHA-256 of the full key string, `apikey:` included: the
    /// manager's stored form.
    pub sha256: KeyHash,
    /// `read`, `write`, `admin` or `owner`.
    pub role: Role,
    /// The one tenant the key acts in.
    #[serde(default)]
    pub tenant: Option<String>,
    /// RFC 3339 time after which the key is refused (as `invalid_api_key`; logged as expired).
    #[serde(default, with = "humantime_serde")]
    pub expires: Option<SystemTime>,
}

/// The layout of `api_keys_file`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
}

/// `[[auth.jwt]]`: one identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Compared exactly with the token's `iss` (a trailing slash matters).
    pub issuer: String,
    /// The token's `aud` (string or array) must contain one of these.
    pub audiences: Vec<String>,
    /// Allowed `alg` values: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub algorithms: Vec<JwsAlgorithm>,
    /// A JWKS document on disk (re-read on refresh and on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document over HTTPS.
    #[serde(default)]
    pub jwks_url: Option<FetchUrl>,
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
    pub default_role: Role,
    /// Claim holding the tenant (a string, or an array of tenants the subject belongs to).
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// The tenants this issuer may speak for: exact names and/or globs (`"beta-*"`). A token
    /// naming any other tenant in `tenant_claim` is refused (403 `NotATenantMember`). `None`:
    /// any tenant — with several issuers, one could then name another's tenants.
    #[serde(default)]
    pub tenants: Option<Vec<NameGlob>>,
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
    /// Accepted JOSE `typ` headers (`at+jwt`, `JWT`, …), compared case-insensitively with any
    /// `application/` prefix ignored (RFC 8725 §3.11, RFC 9068); a token without `typ` is then
    /// refused. `None`: any `typ`, or none.
    #[serde(default)]
    pub token_types: Option<Vec<TokenType>>,
    /// Refuse OpenID ID tokens: a `nonce` claim, or a `token_use` other than `access`.
    /// `None`: on for `discovery = true` issuers (an ID token is not an access token), off
    /// otherwise.
    #[serde(default)]
    pub reject_id_tokens: Option<bool>,
}

impl JwtProviderConfig {
    /// Whether ID tokens are refused (`reject_id_tokens`, by default for discovery issuers).
    pub fn rejects_id_tokens(&self) -> bool {
        self.reject_id_tokens.unwrap_or(self.discovery)
    }
}

/// A JOSE `typ` value as written in `token_types`; compared by [`TokenType::normalized`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenType {
    text: String,
    normalized: String,
}

impl TokenType {
    pub fn parse(text: &str) -> Result<TokenType, String> {
        let normalized = normalize_media_type(text);
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'"'))
        };
        if !valid(&normalized) {
            return Err(format!(
                "\"{text}\" is not a token type (a media type such as \"at+jwt\" or \"JWT\")"
            ));
        }
        Ok(TokenType {
            text: text.to_owned(),
            normalized,
        })
    }

    /// Lowercase, without an `application/` prefix: what a token's `typ` is compared with.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

/// A media type as RFC 8725 §3.11 compares it: case-insensitive, `application/` optional.
pub fn normalize_media_type(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for TokenType {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        TokenType::parse(&text)
    }
}

impl From<TokenType> for String {
    fn from(value: TokenType) -> String {
        value.text
    }
}

/// `[[auth.jwt.hmac_keys]]`: one shared secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRouteConfig {
    /// Glob on the path; `*` matches within one segment, `**` across segments.
    pub path: PathGlob,
    /// Methods it applies to; empty means all.
    #[serde(default)]
    pub methods: Vec<HttpMethod>,
    pub role: Role,
}

mod defaults {
    use std::time::Duration;
    pub fn leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub fn default_role() -> crate::catalog::Role {
        crate::catalog::Role::Read
    }
    pub fn jwks_refresh() -> Duration {
        Duration::from_secs(300)
    }
    pub fn refetch_cooldown() -> Duration {
        Duration::from_secs(30)
    }
}

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
        if keys[..i].iter().any(|k| k.sha256 == key.sha256) {
            problems.push(format!("{at}.sha256"), "the same key is listed twice");
        }
        if key.tenant.as_deref() == Some("") {
            problems.push(format!("{at}.tenant"), "must not be empty");
        }
    }
}

/// Reads, parses and checks `api_keys_file` (its problems under `at:api_keys[i]…`).
pub fn read_api_keys_file(path: &Path, at: &str) -> Result<ApiKeysFile, Problems> {
    let mut problems = Problems::default();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(at, format!("cannot read {}: {e}", path.display()));
            return Err(problems);
        }
    };
    match super::parse_toml::<ApiKeysFile>(&text) {
        Ok(file) => {
            check_api_keys(&format!("{at}:api_keys"), &file.api_keys, &mut problems);
            if problems.is_empty() {
                Ok(file)
            } else {
                Err(problems)
            }
        }
        Err(problem) => {
            problems.push(
                format!("{at}:{}", problem.path),
                format!("{} ({})", problem.message, path.display()),
            );
            Err(problems)
        }
    }
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
            if !route.path.to_string().starts_with("/v0/") {
                problems.push(format!("{at}.routes[{i}].path"), "must start with /v0/");
            }
        }
        for (i, entry) in self.client_certs.iter().enumerate() {
            entry.check(&format!("{at}.client_certs[{i}]"), problems);
        }
        for (claim, header) in &self.claim_headers {
            if RESERVED_HEADERS.contains(&header.0.as_str()) {
                problems.push(
                    format!("{at}.claim_headers.{claim}"),
                    format!("\"{header}\" is set by the gateway and cannot carry a claim"),
                );
            }
        }
        if self.trust_tenant_header && self.mode == AuthMode::On {
            problems.push(
                format!("{at}.trust_tenant_header"),
                "only with mode = \"off\": with authentication on, the tenant comes from the \
                 verified principal",
            );
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
        if self.issuer == super::API_KEYS_ISSUER {
            problems.push(
                format!("{at}.issuer"),
                format!(
                    "\"{}\" names the API keys in [[routes]] issuers",
                    super::API_KEYS_ISSUER
                ),
            );
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
            if !alg.is_symmetric() {
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
            if usize::from(key.secret_file.is_some()) + usize::from(key.secret_env.is_some()) != 1 {
                problems.push(
                    key_at.clone(),
                    "give exactly one of secret_file, secret_env",
                );
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
        if self.discovery {
            if let Err(reason) = FetchUrl::parse(&self.issuer) {
                problems.push(format!("{at}.discovery"), format!("issuer {reason}"));
            }
        }
        if self.leeway > Duration::from_secs(300) {
            problems.push(format!("{at}.leeway"), "must be at most 5m");
        }
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
        match &self.tenants {
            Some(tenants) if tenants.is_empty() => problems.push(
                format!("{at}.tenants"),
                "must not be empty (leave it out to let the issuer name any tenant)",
            ),
            Some(_) if self.tenant_claim.is_none() => problems.push(
                format!("{at}.tenants"),
                "needs tenant_claim: without it no token names a tenant",
            ),
            _ => {}
        }
        if self.token_types.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                format!("{at}.token_types"),
                "must not be empty (leave it out to accept any typ)",
            );
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
    fn unknown_algorithm_and_none_are_refused_with_their_paths() {
        for (alg, expected) in [
            (
                "XS256",
                "auth.jwt[0].algorithms[1]: unknown algorithm \"XS256\"",
            ),
            (
                "NONE",
                "auth.jwt[0].algorithms[1]: \"none\" is never allowed",
            ),
        ] {
            let lines = problems(&format!(
                "[[auth.jwt]]\nissuer = \"https://idp/\"\naudiences = [\"feldera-api\"]\n\
                 algorithms = [\"RS256\", \"{alg}\"]\njwks_url = \"https://idp/jwks\"\n"
            ));
            assert!(
                lines.len() == 1 && lines[0].starts_with(expected),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn values_that_do_not_parse_are_refused_with_key_path_and_line() {
        for (section, expected) in [
            (
                "[[auth.api_keys]]\nname = \"a\"\nsha256 = \"not base64!\"\nrole = \"read\"",
                "auth.api_keys[0].sha256: not standard base64",
            ),
            (
                "[[auth.api_keys]]\nname = \"a\"\nsha256 = \"AAAA\"\nrole = \"read\"",
                "auth.api_keys[0].sha256: decodes to 3 bytes",
            ),
            (
                "[[auth.api_keys]]\nname = \"a\"\nsha256 = \"AAAA\"\nrole = \"super\"",
                "auth.api_keys[0].role: unknown variant `super`",
            ),
            (
                "[[auth.routes]]\npath = \"/v0/x\"\nmethods = [\"get\"]\nrole = \"read\"",
                "auth.routes[0].methods[0]: unknown method \"get\"",
            ),
            (
                "[auth.claim_headers]\nsub = \"not a header\"",
                "auth.claim_headers.sub: \"not a header\" is not a header name",
            ),
            (
                "[[auth.jwt]]\nissuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\n\
                 jwks_url = \"http://idp.example.com/jwks\"",
                "auth.jwt[0].jwks_url: \"http://idp.example.com/jwks\" is plain http",
            ),
        ] {
            let lines = problems(section);
            assert!(
                lines.len() == 1 && lines[0].starts_with(expected) && lines[0].contains("(line "),
                "expected {expected:?}, got {lines:?}"
            );
        }
    }

    #[test]
    fn problems_between_values_are_all_listed() {
        let lines = problems(
            r#"
            [[auth.api_keys]]
            name = "a"
            sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            role = "read"
            [[auth.api_keys]]
            name = "a"
            sha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            role = "read"
            [[auth.jwt]]
            issuer = "http://idp.example.com/"
            audiences = []
            algorithms = ["RS256"]
            discovery = true
            jwks_url = "https://idp.example.com/jwks"
            [[auth.routes]]
            path = "/other"
            role = "read"
            [auth.claim_headers]
            sub = "authorization"
            "#,
        );
        for expected in [
            "auth.api_keys[1].name: duplicate key name \"a\"",
            "auth.api_keys[1].sha256: the same key is listed twice",
            "auth.jwt[0].audiences:",
            "auth.jwt[0]: give exactly one of",
            "auth.jwt[0].discovery: issuer",
            "auth.routes[0].path: must start with /v0/",
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
        let lines = problems(
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
            jwks_file = "/etc/jwks.json"
            [[auth.jwt]]
            issuer = "https://c/"
            audiences = ["feldera-api"]
            algorithms = ["RS256"]
            jwks_file = "/etc/jwks.json"
            hmac_keys = [{ kid = "x", secret_file = "/etc/x.key" }]
            [[auth.jwt]]
            issuer = "https://d/"
            audiences = ["feldera-api"]
            algorithms = ["HS256"]
            hmac_keys = [{ secret_file = "/etc/a.key" }, { kid = "b", secret_env = "B", secret_file = "/etc/b.key" }]
            "#,
        );
        for expected in [
            "auth.jwt[0].algorithms[1]: HS256 needs a shared secret, and secrets never come from a fetched key set",
            "auth.jwt[1].algorithms[0]: HS384 needs hmac_keys",
            "auth.jwt[2].hmac_keys: given, but algorithms lists no HS256",
            "auth.jwt[3].hmac_keys[0].kid: required when the issuer has more than one shared secret",
            "auth.jwt[3].hmac_keys[1]: give exactly one of secret_file, secret_env",
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "missing {expected:?} in {lines:?}"
            );
        }
        // An issuer with only shared secrets needs no key set.
        let lines = problems(
            "[[auth.jwt]]\nissuer = \"https://e/\"\naudiences = [\"x\"]\nalgorithms = [\"HS256\"]\n\
             hmac_keys = [{ kid = \"k\", secret_file = \"/etc/k.key\" }]\n",
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn token_types_compare_without_case_or_application_prefix() {
        let t = super::TokenType::parse("application/AT+JWT").unwrap();
        assert_eq!(t.normalized(), "at+jwt");
        assert_eq!(t.to_string(), "application/AT+JWT");
        assert_eq!(super::normalize_media_type("JWT"), "jwt");
        for bad in ["", "at jwt", "application/", "a,b"] {
            assert!(super::TokenType::parse(bad).is_err(), "{bad:?}");
        }
        let base = "[[auth.jwt]]\nissuer = \"https://i/\"\naudiences = [\"a\"]\n\
                    algorithms = [\"RS256\"]\njwks_url = \"https://i/jwks\"\n";
        let lines = problems(&format!("{base}token_types = []\n"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("auth.jwt[0].token_types: must not be empty")),
            "{lines:?}"
        );
        let lines = problems(&format!("{base}token_types = [\"at jwt\"]\n"));
        assert!(
            lines.len() == 1 && lines[0].starts_with("auth.jwt[0].token_types[0]:"),
            "{lines:?}"
        );
        // ID tokens are refused by default only where discovery says it is OpenID.
        let config: super::JwtProviderConfig = toml::from_str(
            "issuer = \"https://i/\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\ndiscovery = true\n",
        )
        .unwrap();
        assert!(config.rejects_id_tokens());
        let config = super::JwtProviderConfig {
            discovery: false,
            ..config
        };
        assert!(!config.rejects_id_tokens());
        let config = super::JwtProviderConfig {
            reject_id_tokens: Some(true),
            ..config
        };
        assert!(config.rejects_id_tokens());
    }

    #[test]
    fn an_issuers_tenants_need_a_tenant_claim_and_at_least_one_entry() {
        let base = "[[auth.jwt]]\nissuer = \"https://i/\"\naudiences = [\"a\"]\n\
                    algorithms = [\"RS256\"]\njwks_url = \"https://i/jwks\"\n";
        for (extra, expected) in [
            (
                "tenants = [\"acme\"]\n",
                "auth.jwt[0].tenants: needs tenant_claim",
            ),
            (
                "tenant_claim = \"t\"\ntenants = []\n",
                "auth.jwt[0].tenants: must not be empty",
            ),
            (
                "tenant_claim = \"t\"\ntenants = [\"[\"]\n",
                "auth.jwt[0].tenants[0]: invalid glob",
            ),
        ] {
            let lines = problems(&format!("{base}{extra}"));
            assert!(
                lines.len() == 1 && lines[0].starts_with(expected),
                "{expected}: {lines:?}"
            );
        }
        let good = problems(&format!(
            "{base}tenant_claim = \"t\"\ntenants = [\"acme\", \"beta-*\"]\n"
        ));
        assert!(good.is_empty(), "{good:?}");
    }

    #[test]
    fn trusting_the_tenant_header_is_only_for_auth_off() {
        let lines = problems("[auth]\ntrust_tenant_header = true\n");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("auth.trust_tenant_header: only with mode = \"off\"")),
            "{lines:?}"
        );
        assert!(problems("[auth]\nmode = \"off\"\ntrust_tenant_header = true\n").is_empty());
    }

    #[test]
    fn unknown_auth_keys_are_rejected() {
        let lines = problems("[auth]\nmode = \"on\"\nbogus = 1\n");
        assert!(lines.iter().any(|l| l.contains("bogus")), "{lines:?}");
    }
}
