//! One issuer's published key set (JWKS), kept fresh: [`IssuerKeySet`] ties the three parts
//! that do the work.
//!
//! - [`store`]: the last good set and its generation (`ArcSwapOption`, read lock-free on
//!   every verification);
//! - [`fetch`]: reading the document from a file, a URL or OpenID discovery, within 5 s and
//!   1 MiB;
//! - [`schedule`]: when to fetch — background refresh from `max-age`, exponential back-off
//!   after failures, and the unknown-`kid` refetch at most once per `refetch_cooldown`.
//!
//! A fetched document is parsed by `super::keys`; a refused one (malformed, duplicate `kid`,
//! nothing usable) is counted in `auth_jwks_refusals{reason}`, logged, and never replaces the
//! last good set. Symmetric keys in it are dropped and counted (`symmetric_key`).
//!
//! Fetches of one set are serialized: the background refresh and every unknown-`kid` refetch
//! take the same async gate, and whoever finds the set changed since it looked (or the
//! cooldown running, or the refresh not due any more) does not fetch again. So concurrent
//! callers share one fetch, and two runtimes sharing the set during a reload do not fetch twice.
//!
//! An `IssuerKeySet` outlives a configuration: it is shared (`Arc`) by every runtime whose
//! issuer has the same [`KeySetSettings`], with its set and schedule (see
//! `Authenticator::new_reusing`).

pub mod fetch;
pub mod schedule;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::config::auth::JwtProviderConfig;

use super::keys::KeySet;
use fetch::{Fetcher, HttpClient, KeySource};
use schedule::RefreshSchedule;
use store::KeySetStore;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    issuer: String,
    result: &'static str,
}

/// What key sets did that an operator must hear about: documents refused (the previous set
/// stays) and keys in them that were never used. Shared by every issuer.
#[derive(Debug, Clone, Default)]
pub struct KeySetMetrics {
    refusals: Family<RefusalLabels, Counter>,
    fetches: Family<RefreshLabels, Counter>,
}

impl KeySetMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "auth_jwks_refusals",
            "Key-set documents refused (reason: malformed, duplicate_kid, no_usable_key) or \
             symmetric keys in them ignored (reason: symmetric_key)",
            self.refusals.clone(),
        );
        registry.register(
            "auth_jwks_fetches",
            "Key-set fetches (background refreshes and unknown-kid refetches), by issuer and \
             result (ok, failed)",
            self.fetches.clone(),
        );
    }

    /// Makes the issuer's series exist (at 0) before its first fetch.
    fn known(&self, issuer: &str) {
        for result in ["ok", "failed"] {
            let _ = self.fetches.get_or_create(&RefreshLabels {
                issuer: issuer.to_owned(),
                result,
            });
        }
    }

    fn fetched(&self, issuer: &str, ok: bool) {
        self.fetches
            .get_or_create(&RefreshLabels {
                issuer: issuer.to_owned(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
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

/// What decides whether a key set can be carried into a new configuration: the same issuer
/// with equal settings fetches the same document at the same pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetSettings {
    pub issuer: String,
    pub source: KeySource,
    /// `jwks_refresh`.
    pub refresh: Duration,
    /// `refetch_cooldown`.
    pub cooldown: Duration,
}

impl KeySetSettings {
    /// The settings of an `[[auth.jwt]]` entry; `None` without a published key set.
    pub fn of(config: &JwtProviderConfig) -> Option<KeySetSettings> {
        Some(KeySetSettings {
            issuer: config.issuer.clone(),
            source: KeySource::of(config)?,
            refresh: config.jwks_refresh,
            cooldown: config.refetch_cooldown,
        })
    }
}

/// One issuer's published key set, kept fresh.
pub struct IssuerKeySet {
    settings: KeySetSettings,
    store: KeySetStore,
    fetcher: Fetcher,
    schedule: Mutex<RefreshSchedule>,
    /// Held for the whole of a fetch: one at a time per set.
    fetching: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    metrics: KeySetMetrics,
    /// When a set was last installed (wall clock, for operators).
    loaded_at: Mutex<Option<std::time::SystemTime>>,
}

impl std::fmt::Debug for IssuerKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeySet")
            .field("settings", &self.settings)
            .field("generation", &self.store.generation())
            .finish_non_exhaustive()
    }
}

impl IssuerKeySet {
    /// A key set with these settings; a file is read at once (an error if it cannot be read
    /// or is refused), anything else is fetched by the first refresh or refetch. `client` is
    /// needed for a remote source.
    pub fn new(
        settings: KeySetSettings,
        client: Option<HttpClient>,
        clock: Arc<dyn Clock>,
        metrics: KeySetMetrics,
    ) -> Result<IssuerKeySet, String> {
        let fetcher = Fetcher::new(settings.source.clone(), client);
        metrics.known(&settings.issuer);
        let now = clock.instant();
        let set = IssuerKeySet {
            store: KeySetStore::new(),
            fetcher,
            schedule: Mutex::new(RefreshSchedule::new(
                now,
                false,
                settings.refresh,
                settings.cooldown,
            )),
            fetching: tokio::sync::Mutex::new(()),
            settings,
            clock,
            metrics,
            loaded_at: Mutex::new(None),
        };
        if let Some(read) = set.fetcher.read_file() {
            set.install(&read?)?;
            set.schedule().loaded(now, None);
        }
        Ok(set)
    }

    pub fn settings(&self) -> &KeySetSettings {
        &self.settings
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The last good key set, if one was ever loaded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.store.current()
    }

    /// Changes with every successful load.
    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// When the background refresh is next due (on the gateway's clock).
    pub fn next_refresh(&self) -> Instant {
        self.schedule().next_refresh()
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, RefreshSchedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parses a document and, unless it is refused, makes it the current set.
    fn install(&self, bytes: &[u8]) -> Result<(), String> {
        match KeySet::parse_document(bytes) {
            Ok(parsed) => {
                if parsed.symmetric_refused > 0 {
                    tracing::warn!(
                        issuer = %self.settings.issuer,
                        keys = parsed.symmetric_refused,
                        "the key set publishes symmetric (oct) keys: a published secret is \
                         readable by anyone, so they are never used"
                    );
                    self.metrics
                        .refused("symmetric_key", parsed.symmetric_refused as u64);
                }
                self.store.install(parsed.keys);
                *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(std::time::SystemTime::now());
                Ok(())
            }
            Err(error) => {
                self.metrics.refused(error.as_str(), 1);
                Err(format!("key set refused: {error}"))
            }
        }
    }

    /// When a set was last installed; `None` before the first.
    pub fn loaded_at(&self) -> Option<std::time::SystemTime> {
        *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches and installs; returns the answer's `max-age`.
    async fn load(&self) -> Result<Option<Duration>, String> {
        let loaded = async {
            let fetched = self.fetcher.fetch().await?;
            self.install(&fetched.bytes)?;
            Ok(fetched.max_age)
        }
        .await;
        self.metrics.fetched(&self.settings.issuer, loaded.is_ok());
        loaded
    }

    /// Refetches because a token named a `kid` missing from the set of generation
    /// `seen_generation`. At most one fetch per cooldown, whoever asks and however often.
    pub async fn refetch(&self, seen_generation: u64) {
        let _fetching = self.fetching.lock().await;
        if self.generation() != seen_generation {
            return;
        }
        if !self.schedule().may_refetch(self.clock.instant()) {
            return;
        }
        match self.load().await {
            Ok(max_age) => {
                self.schedule().loaded(self.clock.instant(), max_age);
            }
            Err(reason) => {
                tracing::warn!(issuer = %self.settings.issuer, %reason, "key set refetch failed")
            }
        }
    }

    /// The background refresh, if it is due; returns the time until the next one is.
    pub async fn refresh_if_due(&self) -> Duration {
        let _fetching = self.fetching.lock().await;
        let now = self.clock.instant();
        if !self.schedule().is_due(now) {
            return self.next_refresh().saturating_duration_since(now);
        }
        let outcome = self.load().await;
        let now = self.clock.instant();
        let mut schedule = self.schedule();
        match outcome {
            Ok(max_age) => schedule.loaded(now, max_age),
            Err(reason) => {
                let wait = schedule.failed(now);
                tracing::warn!(
                    issuer = %self.settings.issuer,
                    %reason,
                    failures = schedule.failures(),
                    retry_in = ?wait,
                    "key set refresh failed; keeping the last good set"
                );
                wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use serde_json::{json, Value};

    fn ed(kid: &str) -> Value {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x })
    }

    fn file_set(
        path: &std::path::Path,
        clock: Arc<FakeClock>,
        metrics: &KeySetMetrics,
    ) -> IssuerKeySet {
        let settings = KeySetSettings {
            issuer: "i".into(),
            source: KeySource::File(path.to_owned()),
            refresh: Duration::from_secs(300),
            cooldown: Duration::from_secs(30),
        };
        IssuerKeySet::new(settings, None, clock, metrics.clone()).unwrap()
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": [ed("a")] }).to_string()).unwrap();
        let clock = FakeClock::at(std::time::UNIX_EPOCH);
        let metrics = KeySetMetrics::default();
        let set = file_set(&path, clock.clone(), &metrics);
        assert_eq!(set.generation(), 1, "the file is read at start");
        std::fs::write(&path, json!({ "keys": [ed("a"), ed("b")] }).to_string()).unwrap();
        let seen = set.generation();
        set.refetch(seen).await;
        assert_eq!(set.generation(), 2);
        assert_eq!(set.keys().unwrap().len(), 2);
        // Same stale generation: someone already refetched.
        set.refetch(seen).await;
        // Current generation, but within the cooldown.
        std::fs::write(&path, json!({ "keys": [ed("c")] }).to_string()).unwrap();
        set.refetch(set.generation()).await;
        assert_eq!(set.generation(), 2);
        clock.advance(Duration::from_secs(31));
        set.refetch(set.generation()).await;
        assert_eq!(set.generation(), 3);
        // A broken file keeps the last good set, and is counted.
        std::fs::write(&path, "{").unwrap();
        clock.advance(Duration::from_secs(31));
        set.refetch(set.generation()).await;
        assert_eq!(set.generation(), 3);
        assert_eq!(metrics.count("malformed"), 1);
        assert!(set.keys().unwrap().candidates(Some("c")).next().is_some());
        // So does a set with a duplicated kid: neither key is trusted, the old set stays.
        std::fs::write(&path, json!({ "keys": [ed("d"), ed("d")] }).to_string()).unwrap();
        clock.advance(Duration::from_secs(31));
        set.refetch(set.generation()).await;
        assert_eq!(metrics.count("duplicate_kid"), 1);
        let keys = set.keys().unwrap();
        assert!(keys.candidates(Some("d")).next().is_none());
        assert!(keys.candidates(Some("c")).next().is_some());
    }

    #[tokio::test]
    async fn background_refresh_runs_when_due_and_backs_off_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": [ed("a")] }).to_string()).unwrap();
        let clock = FakeClock::at(std::time::UNIX_EPOCH);
        let set = file_set(&path, clock.clone(), &KeySetMetrics::default());
        // Loaded at start: nothing is due for jwks_refresh.
        assert_eq!(set.refresh_if_due().await, Duration::from_secs(300));
        assert_eq!(set.generation(), 1);
        std::fs::remove_file(&path).unwrap();
        clock.advance(Duration::from_secs(300));
        assert_eq!(set.refresh_if_due().await, Duration::from_secs(2));
        clock.advance(Duration::from_secs(2));
        assert_eq!(set.refresh_if_due().await, Duration::from_secs(4));
        assert!(set.keys().is_some(), "the last good set stays");
        std::fs::write(&path, json!({ "keys": [ed("b")] }).to_string()).unwrap();
        clock.advance(Duration::from_secs(4));
        assert_eq!(set.refresh_if_due().await, Duration::from_secs(300));
        assert_eq!(set.generation(), 2);
    }
}
