//! The key-set fetcher: reads one issuer's JWKS document from where the configuration says,
//! within bounds, and nothing else.
//!
//! Sources ([`KeySource`]): a file (`jwks_file`, re-read on every fetch), a URL (`jwks_url`),
//! or OpenID discovery (`discovery = true`): `{issuer}/.well-known/openid-configuration`,
//! whose `issuer` must equal the configured one exactly, names `jwks_uri` — re-read on every
//! fetch, so a provider may move its key set. URLs are `https`, or `http` on loopback only
//! (checked when the configuration is read, and again for a discovered `jwks_uri`).
//!
//! Bounds: one fetch (discovery and key set together) takes at most 5 s and reads at most
//! 1 MiB per document; anything but `200` is a failure. `Cache-Control: max-age` of the key-set
//! answer is returned for the scheduler (`no-cache`/`no-store` count as zero). The fetcher
//! does not parse the key set, keep it, or decide when to fetch: see `store` and `schedule`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::auth::JwtProviderConfig;
use crate::config::values::FetchUrl;

/// Largest key-set (or discovery) document read.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Time allowed for one fetch, discovery included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an issuer's key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Url(Uri),
    /// `{issuer}/.well-known/openid-configuration` names `jwks_uri`.
    Discovery {
        issuer: String,
    },
}

impl KeySource {
    /// The source an `[[auth.jwt]]` entry names; `None` for an issuer with shared secrets only.
    pub fn of(config: &JwtProviderConfig) -> Option<KeySource> {
        if let Some(path) = &config.jwks_file {
            Some(KeySource::File(path.clone()))
        } else if let Some(url) = &config.jwks_url {
            Some(KeySource::Url(url.0.clone()))
        } else if config.discovery {
            Some(KeySource::Discovery {
                issuer: config.issuer.clone(),
            })
        } else {
            None
        }
    }

    /// Whether fetching it needs an HTTP client.
    pub fn is_remote(&self) -> bool {
        !matches!(self, KeySource::File(_))
    }
}

/// The client key sets are fetched with (HTTPS through the gateway's one connector).
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for key-set fetches; cheap to clone, one is shared by every issuer.
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(crate::outbound::https_connector(FETCH_TIMEOUT))
}

/// One fetched document.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Bytes,
    /// `Cache-Control: max-age` of the answer (never for a file).
    pub max_age: Option<Duration>,
}

/// Fetches one source.
#[derive(Debug, Clone)]
pub struct Fetcher {
    source: KeySource,
    client: Option<HttpClient>,
}

impl Fetcher {
    /// A fetcher for `source`; a remote source needs `client`.
    pub fn new(source: KeySource, client: Option<HttpClient>) -> Fetcher {
        Fetcher { source, client }
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Reads a file source at once (at start, where nothing may wait); `None` for others.
    pub fn read_file(&self) -> Option<Result<Bytes, String>> {
        match &self.source {
            KeySource::File(path) => Some(read(path)),
            _ => None,
        }
    }

    /// Fetches the document, within the time and size bounds.
    pub async fn fetch(&self) -> Result<Fetched, String> {
        match &self.source {
            KeySource::File(path) => read(path).map(|bytes| Fetched {
                bytes,
                max_age: None,
            }),
            KeySource::Url(uri) => self.within_bounds(self.get(uri.clone())).await,
            KeySource::Discovery { issuer } => {
                self.within_bounds(self.discover_and_get(issuer)).await
            }
        }
    }

    async fn within_bounds(
        &self,
        work: impl std::future::Future<Output = Result<Fetched, String>>,
    ) -> Result<Fetched, String> {
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))?
    }

    async fn discover_and_get(&self, issuer: &str) -> Result<Fetched, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let document = self.get(FetchUrl::parse(&url)?.0).await?;
        let document: Value = serde_json::from_slice(&document.bytes)
            .map_err(|e| format!("discovery document: {e}"))?;
        if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err("the discovery document names another issuer".into());
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the discovery document has no jwks_uri")?;
        self.get(FetchUrl::parse(jwks_uri)?.0).await
    }

    async fn get(&self, uri: Uri) -> Result<Fetched, String> {
        let client = self.client.as_ref().ok_or("no HTTP client")?;
        let request = http::Request::get(uri)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
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
        let bytes = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(Fetched { bytes, max_age })
    }
}

fn read(path: &std::path::Path) -> Result<Bytes, String> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `max-age` of a `Cache-Control` value (`no-cache`/`no-store` count as zero).
pub fn max_age(value: &str) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[tokio::test]
    async fn a_file_source_is_read_on_every_fetch_and_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let fetcher = Fetcher::new(KeySource::File(path.clone()), None);
        assert!(fetcher.fetch().await.unwrap_err().contains("cannot read"));
        std::fs::write(&path, "{}").unwrap();
        let fetched = fetcher.fetch().await.unwrap();
        assert_eq!(&fetched.bytes[..], b"{}");
        assert_eq!(fetched.max_age, None);
        assert!(fetcher.read_file().unwrap().is_ok());
    }
}
