//! Key sets (JWKS) per identity provider: parsing, the last good set, background refresh, and
//! the rate-limited refetch on an unknown `kid`.
//!
//! A [`KeySet`] keeps only keys usable for signatures (`use` absent or `sig`, `key_ops` absent
//! or containing `verify`), each with the key type, curve and optional `alg` that
//! [`VerifyKey::fits`] matches against a token's `alg` (RFC 8725 §3.1: no HS256 with an RSA
//! public key; HMAC secrets shorter than the hash are refused). A published document never
//! provides a symmetric key: `kty: oct` entries are dropped (counted and logged) — a secret
//! anyone can read is a key anyone can sign with; shared secrets come only from configuration
//! ([`VerifyKey::hmac`]). A document with two keys of one `kid`, or without any usable key, is
//! refused ([`KeySetError`]), and a refusal never replaces the last good set.
//!
//! [`JwksCache`] fetches from a file, a URL, or the URL that OpenID discovery names (whose
//! `issuer` must equal the configured one). Refresh: in the background every
//! `Cache-Control: max-age`, bounded to `[min(30s, jwks_refresh), jwks_refresh]`
//! (`jwks_refresh` without the header); after a failure, again in 30 s (2 s while no set was
//! ever loaded). An unknown `kid` calls [`JwksCache::refetch`]: at most one fetch per
//! `refetch_cooldown`, shared by all concurrent callers — they wait on one lock, and whoever
//! finds the set changed since it looked (or the cooldown running) does not fetch again.
//! Fetches time out after 5 s and read at most 1 MiB.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::config::auth::JwtProviderConfig;
use crate::config::values::FetchUrl;

use crate::clock::Clock;

/// Largest key-set (or discovery) document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest background refresh interval (unless `jwks_refresh` is shorter).
const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Retry after a failed refresh while a set is loaded, and while none ever was.
const RETRY_LOADED: Duration = Duration::from_secs(30);
const RETRY_EMPTY: Duration = Duration::from_secs(2);

/// The family (and curve) of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An HMAC secret of this many bytes.
    Oct(usize),
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One key usable for verifying signatures.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Option<Algorithm>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The JWS algorithm spelled `alg`, exactly (case matters; `none` is not one).
pub fn algorithm(alg: &str) -> Option<Algorithm> {
    crate::config::values::JwsAlgorithm::parse(alg)
        .ok()
        .map(|a| a.0)
}

impl VerifyKey {
    /// Whether this key may verify a token whose header says `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        use Algorithm as A;
        match (self.kind, alg) {
            (KeyKind::Oct(len), A::HS256) => len >= 32,
            (KeyKind::Oct(len), A::HS384) => len >= 48,
            (KeyKind::Oct(len), A::HS512) => len >= 64,
            (KeyKind::Rsa, A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512) => true,
            (KeyKind::EcP256, A::ES256) | (KeyKind::EcP384, A::ES384) => true,
            (KeyKind::Ed25519, A::EdDSA) => true,
            _ => false,
        }
    }

    fn parse(value: &Value) -> Result<Option<VerifyKey>, String> {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        if value.get("use").is_some() && text("use") != Some("sig") {
            return Ok(None);
        }
        if let Some(ops) = value.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Ok(None);
            }
        }
        let alg = match value.get("alg") {
            None => None,
            Some(alg) => match alg.as_str().and_then(algorithm) {
                Some(alg) => Some(alg),
                // An encryption key or an algorithm we do not verify: not ours.
                None => return Ok(None),
            },
        };
        let kid = match value.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err("a key's kid is not a string".into()),
        };
        let kind = match (text("kty"), text("crv")) {
            // A secret in a published key set is a secret anyone can read: never used.
            (Some("oct"), _) => return Ok(None),
            (Some("RSA"), _) => KeyKind::Rsa,
            (Some("EC"), Some("P-256")) => KeyKind::EcP256,
            (Some("EC"), Some("P-384")) => KeyKind::EcP384,
            (Some("OKP"), Some("Ed25519")) => KeyKind::Ed25519,
            _ => return Ok(None),
        };
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| format!("a key does not parse: {e}"))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("a key is unusable: {e}"))?;
        Ok(Some(VerifyKey {
            kid,
            alg,
            kind,
            key,
        }))
    }

    /// A shared secret from configuration (never from a key set), for HS256/384/512.
    pub fn hmac(kid: Option<String>, secret: &[u8]) -> Result<VerifyKey, String> {
        Ok(VerifyKey {
            kid,
            alg: None,
            kind: KeyKind::Oct(secret.len()),
            key: DecodingKey::from_secret(secret)
                .map_err(|e| format!("a shared secret is unusable: {e}"))?,
        })
    }
}

/// A provider's keys usable for signatures.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// Why a JWKS document was refused (the previous set, if any, stays in use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Not JSON, no `keys` array, or a key that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// Two keys share a `kid`: which one a token means is ambiguous, so neither is trusted.
    #[error("two keys have the kid \"{0}\"")]
    DuplicateKid(String),
    /// Nothing left to verify with (symmetric keys are never taken from a key set).
    #[error("the key set has no key usable for signatures")]
    NoUsableKey,
}

impl KeySetError {
    /// The `reason` label of the refusal metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeySetError::Malformed(_) => "malformed",
            KeySetError::DuplicateKid(_) => "duplicate_kid",
            KeySetError::NoUsableKey => "no_usable_key",
        }
    }
}

/// A parsed JWKS document: the usable keys, and how many symmetric (`oct`) keys it published
/// that will never be used.
#[derive(Debug)]
pub struct ParsedKeySet {
    pub keys: KeySet,
    pub symmetric_refused: usize,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping only asymmetric signature keys.
    /// Refused: two keys with the same `kid` (among all listed keys, used or not), or a
    /// document with no usable key.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, KeySetError> {
        Self::parse_document(bytes).map(|parsed| parsed.keys)
    }

    /// [`KeySet::parse`], also counting the symmetric keys that were refused.
    pub fn parse_document(bytes: &[u8]) -> Result<ParsedKeySet, KeySetError> {
        let document: Value = serde_json::from_slice(bytes)
            .map_err(|e| KeySetError::Malformed(format!("not a JWKS document: {e}")))?;
        let listed = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                KeySetError::Malformed("not a JWKS document: no \"keys\" array".into())
            })?;
        let mut kids: Vec<&str> = Vec::new();
        for value in listed {
            if let Some(kid) = value.get("kid").and_then(Value::as_str) {
                if kids.contains(&kid) {
                    return Err(KeySetError::DuplicateKid(kid.to_owned()));
                }
                kids.push(kid);
            }
        }
        let mut keys = Vec::new();
        let mut symmetric_refused = 0;
        for value in listed {
            if value.get("kty").and_then(Value::as_str) == Some("oct") {
                symmetric_refused += 1;
                continue;
            }
            if let Some(key) = VerifyKey::parse(value).map_err(KeySetError::Malformed)? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(ParsedKeySet {
            keys: KeySet { keys },
            symmetric_refused,
        })
    }

    /// A set made of the given keys (shared secrets from configuration).
    pub fn from_keys(keys: Vec<VerifyKey>) -> KeySet {
        KeySet { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys with this `kid` (every key when the token names none; the verifier allows that
    /// only while the issuer has exactly one key).
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> {
        self.keys
            .iter()
            .filter(move |key| kid.is_none() || key.kid.as_deref() == kid)
    }
}

/// Where a provider's key set comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    File(PathBuf),
    Url(Uri),
    /// `{issuer}/.well-known/openid-configuration` names `jwks_uri`.
    Discovery {
        issuer: String,
    },
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// What key sets did that an operator must hear about: documents refused (the previous set
/// stays) and keys in them that were never used. Shared by every issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySetMetrics {
    refusals: Family<RefusalLabels, Counter>,
}

impl KeySetMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "auth_jwks_refusals",
            "Key-set documents refused (reason: malformed, duplicate_kid, no_usable_key) or \
             symmetric keys in them ignored (reason: symmetric_key)",
            self.refusals.clone(),
        );
    }

    fn refused(&self, reason: &'static str, by: u64) {
        self.refusals
            .get_or_create(&RefusalLabels { reason })
            .inc_by(by);
    }

    /// Refusals counted so far for `reason` (tests).
    pub fn count(&self, reason: &'static str) -> u64 {
        self.refusals.get_or_create(&RefusalLabels { reason }).get()
    }
}

/// A provider's key set, kept fresh.
pub struct JwksCache {
    issuer: Arc<str>,
    source: KeySource,
    client: Option<HttpClient>,
    clock: Arc<dyn Clock>,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Bumped on every successful load: callers that saw an older one need not fetch.
    generation: AtomicU64,
    /// When the last unknown-`kid` refetch started.
    gate: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    refresh: Duration,
    fetches: AtomicU64,
    metrics: KeySetMetrics,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("issuer", &self.issuer)
            .field("source", &self.source)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// Builds the cache; a `jwks_file` is loaded at once (an error if it cannot be).
    pub fn new(
        config: &JwtProviderConfig,
        clock: Arc<dyn Clock>,
        metrics: KeySetMetrics,
    ) -> Result<JwksCache, String> {
        let source = if let Some(path) = &config.jwks_file {
            KeySource::File(path.clone())
        } else if let Some(url) = &config.jwks_url {
            KeySource::Url(url.0.clone())
        } else {
            KeySource::Discovery {
                issuer: config.issuer.clone(),
            }
        };
        let client = match source {
            KeySource::File(_) => None,
            _ => Some(http_client()),
        };
        let cache = JwksCache {
            issuer: config.issuer.as_str().into(),
            source,
            client,
            clock,
            keys: RwLock::new(None),
            generation: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(None),
            cooldown: config.refetch_cooldown,
            refresh: config.jwks_refresh,
            fetches: AtomicU64::new(0),
            metrics,
        };
        if let KeySource::File(path) = &cache.source {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            cache.install(&bytes)?;
        }
        Ok(cache)
    }

    pub fn issuer(&self) -> &Arc<str> {
        &self.issuer
    }

    /// The last good key set, if one was ever loaded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes with every successful load.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// `jwks_refresh`: the interval without `Cache-Control: max-age`.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    /// Fetches attempted so far (background, refetch and initial).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Parses a fetched document and, unless it is refused, makes it the current set.
    fn install(&self, bytes: &[u8]) -> Result<(), String> {
        match KeySet::parse_document(bytes) {
            Ok(parsed) => {
                if parsed.symmetric_refused > 0 {
                    tracing::warn!(
                        issuer = %self.issuer,
                        keys = parsed.symmetric_refused,
                        "the key set publishes symmetric (oct) keys: a published secret is \
                         readable by anyone, so they are never used"
                    );
                    self.metrics
                        .refused("symmetric_key", parsed.symmetric_refused as u64);
                }
                self.store(parsed.keys);
                Ok(())
            }
            Err(error) => {
                self.metrics.refused(error.as_str(), 1);
                Err(format!("key set refused: {error}"))
            }
        }
    }

    fn store(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Refetches because a token named a `kid` missing from the set of generation
    /// `seen_generation`. At most one fetch per cooldown, whoever asks and however often.
    pub async fn refetch(&self, seen_generation: u64) {
        let mut last = self.gate.lock().await;
        if self.generation() != seen_generation {
            return;
        }
        let now = self.clock.instant();
        if last.is_some_and(|at| now < at + self.cooldown) {
            return;
        }
        *last = Some(now);
        if let Err(reason) = self.load().await {
            tracing::warn!(issuer = %self.issuer, %reason, "key set refetch failed");
        }
    }

    /// One background refresh; returns the time until the next.
    pub async fn refresh(&self) -> Duration {
        let floor = MIN_REFRESH.min(self.refresh);
        match self.load().await {
            Ok(max_age) => max_age.map_or(self.refresh, |age| age.clamp(floor, self.refresh)),
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer, %reason, "key set refresh failed; keeping the last good set");
                if self.keys().is_some() {
                    RETRY_LOADED.min(self.refresh)
                } else {
                    RETRY_EMPTY
                }
            }
        }
    }

    /// Fetches and, if it parses, installs the set; returns its `max-age`.
    async fn load(&self) -> Result<Option<Duration>, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (bytes, max_age) = match &self.source {
            KeySource::File(path) => (
                Bytes::from(
                    std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                ),
                None,
            ),
            KeySource::Url(uri) => self.get(uri.clone()).await?,
            KeySource::Discovery { issuer } => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let (document, _) = self.get(FetchUrl::parse(&url)?.0).await?;
                let document: Value = serde_json::from_slice(&document)
                    .map_err(|e| format!("discovery document: {e}"))?;
                if document.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err("the discovery document names another issuer".into());
                }
                let jwks_uri = document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("the discovery document has no jwks_uri")?;
                self.get(FetchUrl::parse(jwks_uri)?.0).await?
            }
        };
        self.install(&bytes)?;
        Ok(max_age)
    }

    async fn get(&self, uri: Uri) -> Result<(Bytes, Option<Duration>), String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let request = http::Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let work = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if response.status() != http::StatusCode::OK {
                return Err(format!("answered {}", response.status()));
            }
            let max_age = response
                .headers()
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .and_then(max_age);
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok((body, max_age))
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

/// `max-age` of a `Cache-Control` value (`no-cache`/`no-store` count as zero).
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(crate::outbound::https_connector(FETCH_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oct(kid: &str, bytes: usize) -> Value {
        use base64::Engine as _;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; bytes]);
        json!({ "kty": "oct", "kid": kid, "k": k })
    }

    fn ed(kid: &str) -> Value {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x })
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_cooldown() {
        use crate::clock::FakeClock;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": [ed("a")] }).to_string()).unwrap();
        let config: JwtProviderConfig = toml::from_str(&format!(
            "issuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"EdDSA\"]\n\
             jwks_file = \"{}\"\nrefetch_cooldown = \"30s\"\n",
            path.display()
        ))
        .unwrap();
        let clock = FakeClock::at(std::time::UNIX_EPOCH);
        let metrics = KeySetMetrics::default();
        let cache = JwksCache::new(&config, clock.clone(), metrics.clone()).unwrap();
        assert_eq!(
            cache.fetches(),
            0,
            "the file is read at start, outside the count"
        );
        std::fs::write(&path, json!({ "keys": [ed("a"), ed("b")] }).to_string()).unwrap();
        let seen = cache.generation();
        cache.refetch(seen).await;
        assert_eq!(cache.fetches(), 1);
        assert_eq!(cache.keys().unwrap().len(), 2);
        // Same stale generation: someone already refetched.
        cache.refetch(seen).await;
        // Current generation, but within the cooldown.
        cache.refetch(cache.generation()).await;
        assert_eq!(cache.fetches(), 1);
        clock.advance(Duration::from_secs(31));
        cache.refetch(cache.generation()).await;
        assert_eq!(cache.fetches(), 2);
        // A broken file keeps the last good set.
        std::fs::write(&path, "{").unwrap();
        clock.advance(Duration::from_secs(31));
        cache.refetch(cache.generation()).await;
        assert_eq!(cache.fetches(), 3);
        assert_eq!(cache.keys().unwrap().len(), 2);
        assert_eq!(metrics.count("malformed"), 1);
        // So does a set with a duplicated kid: neither key is trusted, the old set stays.
        std::fs::write(&path, json!({ "keys": [ed("c"), ed("c")] }).to_string()).unwrap();
        clock.advance(Duration::from_secs(31));
        cache.refetch(cache.generation()).await;
        assert_eq!(cache.fetches(), 4);
        let keys = cache.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.candidates(Some("c")).next().is_none());
        assert_eq!(metrics.count("duplicate_kid"), 1);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_is_an_error() {
        let doc = json!({ "keys": [
            { "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" },
            ed("e"),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        let empty = json!({ "keys": [{ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" }] });
        assert_eq!(
            KeySet::parse(empty.to_string().as_bytes()).unwrap_err(),
            KeySetError::NoUsableKey
        );
        assert!(matches!(
            KeySet::parse(b"[]").unwrap_err(),
            KeySetError::Malformed(_)
        ));
    }

    #[test]
    fn symmetric_keys_in_a_key_set_are_never_used() {
        let doc = json!({ "keys": [oct("h", 64), ed("e")] });
        let parsed = KeySet::parse_document(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.symmetric_refused, 1);
        assert_eq!(parsed.keys.len(), 1);
        assert!(parsed.keys.candidates(Some("h")).next().is_none());
        // A set of nothing but secrets is no key set at all.
        let only = json!({ "keys": [oct("h", 64)] });
        assert_eq!(
            KeySet::parse(only.to_string().as_bytes()).unwrap_err(),
            KeySetError::NoUsableKey
        );
    }

    #[test]
    fn two_keys_with_one_kid_refuse_the_set() {
        // Even when one of the two would be ignored anyway.
        for doc in [
            json!({ "keys": [ed("k"), ed("k")] }),
            json!({ "keys": [ed("k"), oct("k", 64)] }),
        ] {
            assert_eq!(
                KeySet::parse(doc.to_string().as_bytes()).unwrap_err(),
                KeySetError::DuplicateKid("k".into())
            );
        }
    }

    #[test]
    fn key_type_and_alg_must_fit_the_tokens_alg() {
        let short = VerifyKey::hmac(Some("short".into()), &[7; 16]).unwrap();
        let long = VerifyKey::hmac(Some("long".into()), &[7; 64]).unwrap();
        assert!(!short.fits(Algorithm::HS256));
        assert!(long.fits(Algorithm::HS512));
        assert!(!long.fits(Algorithm::RS256));
        let pinned =
            json!({ "keys": [{ "kty": "RSA", "alg": "RS384", "n": "AQAB", "e": "AQAB" }] });
        let set = KeySet::parse(pinned.to_string().as_bytes()).unwrap();
        let key = set.candidates(None).next().unwrap();
        assert!(key.fits(Algorithm::RS384));
        assert!(!key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::HS384));
    }

    #[test]
    fn algorithm_names_are_case_sensitive_and_none_is_not_one() {
        assert_eq!(algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(algorithm("rs256"), None);
        assert_eq!(algorithm("none"), None);
        assert_eq!(algorithm("EdDSA"), Some(Algorithm::EdDSA));
    }
}
