//! The auth state: what authentication keeps and learns while it runs, as opposed to what the
//! configuration says (`super::policy`). Per issuer its keys ([`IssuerKeys`]: shared secrets
//! read from files or the environment, and the published key set with its refresh schedule),
//! the verified-token cache, the API-key store, and the HTTP client key sets are fetched with.
//!
//! [`AuthState::build`] makes it for a new policy, optionally *carrying* parts of the state
//! the previous configuration used, so that a reload neither refetches key sets nor forgets
//! what it verified when nothing that matters changed. The rules, and why each is safe:
//!
//! - **A published key set** (its last good set, generation and schedule — next refresh,
//!   back-off, unknown-`kid` cooldown) is carried when the new configuration has an issuer
//!   with the same `issuer`, the same source (`jwks_file` path, `jwks_url`, or discovery) and
//!   the same `jwks_refresh` and `refetch_cooldown`. The same source at the same pace yields
//!   the same keys; the set keeps refreshing on its own schedule, so nothing stale is frozen.
//!   Any difference starts an empty set (a file is read at once, anything else is fetched by
//!   the background refresh or the first token): a key set is never moved to another issuer
//!   or source.
//! - **Shared secrets** (`hmac_keys`) are read again on every build — they are cheap, and a
//!   secret replaced in its file takes effect with the reload.
//! - **The token cache** is carried only when (a) every issuer of the previous policy is in
//!   the new one with equal verification rules ([`AuthPolicy::verifies_like`]: audiences,
//!   algorithms, token types, leeway, required claims, ID-token refusal, role and tenant
//!   claims, `tenants`) and the claim headers
//!   are equal, (b) each of those issuers has the same keys — its key set carried (the same
//!   object) and its shared secrets byte for byte the same (compared by a SHA-256
//!   fingerprint), and (c) `token_cache_size` and `token_cache_ttl` are equal. A cached entry
//!   is an identity made from a token under the rules and keys of its issuer; under (a)–(c)
//!   verifying that token again would make the same identity, so serving it from the cache
//!   changes nothing. An issuer added by the reload has no entries; an issuer removed or
//!   changed could have entries the new configuration would refuse (a removed key, a tighter
//!   audience, another role claim), so then the whole cache starts empty. Entries never
//!   outlive `min(exp, ttl)` either way.
//! - **The API-key store** is carried when the inline `[[auth.api_keys]]` and `api_keys_file`
//!   are equal; the file is then checked for changes at once (as the background reload would),
//!   and a file that no longer reads or checks fails the build like a fresh start would.
//! - **The HTTP client** is always carried (it holds no configuration).
//!
//! Carried parts are shared (`Arc`) with the previous runtime while it drains; every
//! operation on them is safe from both (fetches of one key set never overlap).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::auth::{AuthConfig, JwtProviderConfig};
use crate::config::Problems;

use super::apikey::ApiKeyStore;
use super::cache::TokenCache;
use super::jwks::fetch::{http_client, HttpClient};
use super::jwks::{IssuerKeySet, KeySetMetrics, KeySetSettings};
use super::keys::{KeySet, VerifyKey};
use super::policy::AuthPolicy;

/// One issuer's keys.
#[derive(Debug)]
pub struct IssuerKeys {
    /// Shared secrets from configuration (HS256/384/512): never from a key set.
    pub hmac: KeySet,
    /// SHA-256 over every secret's `kid` and bytes: tells whether they changed.
    hmac_fingerprint: [u8; 32],
    /// The issuer's published key set (asymmetric keys only), when it has one.
    pub published: Option<Arc<IssuerKeySet>>,
}

impl IssuerKeys {
    /// Reads the shared secrets of `config` (problems under `at`) and takes `published`.
    fn load(
        config: &JwtProviderConfig,
        at: &str,
        published: Option<Arc<IssuerKeySet>>,
    ) -> Result<IssuerKeys, Problems> {
        let mut problems = Problems::default();
        let mut keys = Vec::with_capacity(config.hmac_keys.len());
        let mut fingerprint = Sha256::new();
        for (j, key) in config.hmac_keys.iter().enumerate() {
            let loaded = key.load_secret().and_then(|secret| {
                let kid = key.kid.as_deref().unwrap_or("");
                fingerprint.update((kid.len() as u64).to_be_bytes());
                fingerprint.update(kid.as_bytes());
                fingerprint.update((secret.len() as u64).to_be_bytes());
                fingerprint.update(&secret);
                VerifyKey::hmac(key.kid.clone(), &secret)
            });
            match loaded {
                Ok(key) => keys.push(key),
                Err(reason) => problems.push(format!("{at}.hmac_keys[{j}]"), reason),
            }
        }
        problems.into_result(IssuerKeys {
            hmac: KeySet::from_keys(keys),
            hmac_fingerprint: fingerprint.finalize().into(),
            published,
        })
    }

    /// Whether these are the same keys as `other`'s: the same published set and secrets.
    fn same_as(&self, other: &IssuerKeys) -> bool {
        self.hmac_fingerprint == other.hmac_fingerprint
            && match (&self.published, &other.published) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// The state of one authenticator; see the module doc for what a rebuild carries.
#[derive(Debug)]
pub struct AuthState {
    /// In the order of the policy's issuers.
    pub issuers: Vec<IssuerKeys>,
    pub token_cache: Arc<TokenCache>,
    pub api_keys: Arc<ApiKeyStore>,
    /// For remote key sets; made when the first one needs it.
    http: Option<HttpClient>,
}

/// What a rebuild may carry from: the previous policy and its state.
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    pub policy: &'a AuthPolicy,
    pub state: &'a AuthState,
}

impl AuthState {
    /// Builds the state for `policy` (made from `config`; problems under `at`), carrying what
    /// is safe to carry from `previous`. Reads `api_keys_file`, every `jwks_file` not carried,
    /// and every shared secret.
    pub fn build(
        config: &AuthConfig,
        at: &str,
        policy: &AuthPolicy,
        clock: &Arc<dyn Clock>,
        metrics: &KeySetMetrics,
        previous: Option<Previous<'_>>,
    ) -> Result<AuthState, Problems> {
        let mut problems = Problems::default();
        let mut http = previous.and_then(|p| p.state.http.clone());
        let mut issuers = Vec::with_capacity(config.jwt.len());
        for (i, provider) in config.jwt.iter().enumerate() {
            let at = format!("{at}.jwt[{i}]");
            let published = match KeySetSettings::of(provider) {
                None => None,
                Some(settings) => {
                    let carried = previous.and_then(|p| p.state.key_set_with(&settings));
                    match carried {
                        Some(set) => Some(set),
                        None => {
                            let client = settings
                                .source
                                .is_remote()
                                .then(|| http.get_or_insert_with(http_client).clone());
                            match IssuerKeySet::new(
                                settings,
                                client,
                                clock.clone(),
                                metrics.clone(),
                            ) {
                                Ok(set) => Some(Arc::new(set)),
                                Err(reason) => {
                                    problems.push(format!("{at}.jwks_file"), reason);
                                    None
                                }
                            }
                        }
                    }
                }
            };
            match IssuerKeys::load(provider, &at, published) {
                Ok(keys) => issuers.push(keys),
                Err(more) => problems.extend(more),
            }
        }
        let api_keys = match previous.map(|p| &p.state.api_keys) {
            Some(store) if store.has_keys_of(config) => store
                .reload(&format!("{at}.api_keys_file"))
                .map(|_| store.clone()),
            _ => ApiKeyStore::new(config, at).map(Arc::new),
        };
        let api_keys = match api_keys {
            Ok(store) => Some(store),
            Err(more) => {
                problems.extend(more);
                None
            }
        };
        let (Some(api_keys), true) = (api_keys, problems.is_empty()) else {
            return Err(problems);
        };
        let cache_settings = (config.token_cache_size, config.token_cache_ttl);
        let token_cache = match previous {
            Some(previous)
                if previous.state.token_cache.settings() == cache_settings
                    && policy.verifies_like(previous.policy)
                    && previous
                        .policy
                        .issuers
                        .iter()
                        .zip(&previous.state.issuers)
                        .all(|(old, old_keys)| {
                            policy.issuer(&old.issuer).is_some_and(|(i, _)| {
                                issuers.get(i).is_some_and(|new| new.same_as(old_keys))
                            })
                        }) =>
            {
                previous.state.token_cache.clone()
            }
            _ => Arc::new(TokenCache::new(cache_settings.0, cache_settings.1)),
        };
        Ok(AuthState {
            issuers,
            token_cache,
            api_keys,
            http,
        })
    }

    /// The published key set with exactly these settings, if this state has one.
    fn key_set_with(&self, settings: &KeySetSettings) -> Option<Arc<IssuerKeySet>> {
        self.issuers
            .iter()
            .filter_map(|keys| keys.published.as_ref())
            .find(|set| set.settings() == settings)
            .cloned()
    }

    /// Every published key set.
    pub fn key_sets(&self) -> impl Iterator<Item = &Arc<IssuerKeySet>> {
        self.issuers
            .iter()
            .filter_map(|keys| keys.published.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use serde_json::{json, Value};

    use crate::auth::test_keys::{jwks, key_sources, TestKey};
    use crate::auth::{AuthMetrics, Authenticator, Reason};
    use crate::config::auth::AuthConfig;
    use crate::config::Problems;

    const ISS: &str = "https://idp.example.com/";

    /// A key-set server on 127.0.0.1:0 counting the documents it served.
    struct KeyServer {
        addr: SocketAddr,
        fetches: Arc<AtomicUsize>,
    }

    impl KeyServer {
        async fn start(keys: &[&TestKey]) -> KeyServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let document = Arc::new(Mutex::new(jwks(keys).to_string()));
            let fetches = Arc::new(AtomicUsize::new(0));
            let (d, f) = (document.clone(), fetches.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (d, f) = (d.clone(), f.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_request| {
                            f.fetch_add(1, Ordering::SeqCst);
                            let body = d.lock().unwrap().clone();
                            async move {
                                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            KeyServer { addr, fetches }
        }

        fn url(&self) -> String {
            format!("http://{}/jwks.json", self.addr)
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }
    }

    fn config(text: &str) -> AuthConfig {
        let config: AuthConfig = toml::from_str(text).unwrap();
        let mut problems = Problems::default();
        config.check("auth", &mut problems);
        assert!(problems.is_empty(), "{problems}");
        config
    }

    fn issuer(sources: &str, extra: &str) -> String {
        let algorithms = if sources.contains("hmac_keys") {
            "[\"ES256\", \"HS256\"]"
        } else {
            "[\"ES256\"]"
        };
        format!(
            "[[jwt]]\nissuer = \"{ISS}\"\naudiences = [\"feldera-api\"]\n\
             algorithms = {algorithms}\n{sources}\n{extra}\n"
        )
    }

    fn claims(sub: &str) -> Value {
        let now = crate::clock::system().unix_seconds();
        json!({ "iss": ISS, "sub": sub, "aud": "feldera-api", "exp": now + 600.0 })
    }

    fn build(config: &AuthConfig, previous: Option<&Authenticator>) -> Authenticator {
        let clock = crate::clock::system();
        let metrics = AuthMetrics::default();
        match previous {
            None => Authenticator::new(config, "auth", clock, &metrics),
            Some(previous) => Authenticator::new_reusing(config, "auth", clock, &metrics, previous),
        }
        .unwrap()
    }

    fn same_key_set(a: &Authenticator, b: &Authenticator) -> bool {
        match (a.state().key_sets().next(), b.state().key_sets().next()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn same_cache(a: &Authenticator, b: &Authenticator) -> bool {
        Arc::ptr_eq(&a.state().token_cache, &b.state().token_cache)
    }

    #[tokio::test]
    async fn a_key_set_fetched_once_is_not_fetched_again_after_an_unchanged_reload() {
        let key = TestKey::es256("k1");
        let idp = KeyServer::start(&[&key]).await;
        let text = issuer(&format!("jwks_url = \"{}\"", idp.url()), "");
        let first = build(&config(&text), None);
        assert!(first.readiness().is_err(), "nothing fetched yet");
        let token = key.token(&claims("alice"));
        assert!(first.verify_bearer(&token).await.is_ok());
        assert_eq!(idp.fetches(), 1);
        let due = first.state().key_sets().next().unwrap().next_refresh();

        let second = build(&config(&text), Some(&first));
        assert!(second.readiness().is_ok(), "the loaded set came along");
        assert!(same_key_set(&first, &second));
        assert_eq!(
            second.state().key_sets().next().unwrap().next_refresh(),
            due,
            "and its schedule"
        );
        assert!(same_cache(&first, &second));
        let other = key.token(&claims("bob"));
        assert!(second.verify_bearer(&token).await.is_ok());
        assert!(second.verify_bearer(&other).await.is_ok());
        assert_eq!(idp.fetches(), 1, "no fetch after an unchanged reload");

        // Another refresh setting is another key set: it starts empty and fetches again,
        // and identities verified with the old set are not served from the cache.
        let slower = issuer(
            &format!("jwks_url = \"{}\"", idp.url()),
            "jwks_refresh = \"10m\"",
        );
        let third = build(&config(&slower), Some(&second));
        assert!(!same_key_set(&second, &third));
        assert!(!same_cache(&second, &third));
        assert!(third.readiness().is_err());
        assert!(third.verify_bearer(&token).await.is_ok());
        assert_eq!(idp.fetches(), 2);
        // The previous runtime still has its own set while it drains.
        assert!(second.readiness().is_ok());
    }

    #[tokio::test]
    async fn a_cached_identity_does_not_survive_a_rule_or_key_change() {
        let dir = tempfile::tempdir().unwrap();
        let (ec, hs) = (TestKey::es256("ec"), TestKey::hs256("hs"));
        let sources = key_sources(&[&ec, &hs], dir.path());
        let base = issuer(&sources, "");
        let first = build(&config(&base), None);
        let token = ec.token(&claims("alice"));
        assert!(first.verify_bearer(&token).await.is_ok());
        let verified = first.verifications();

        // Unchanged: the token is served from the carried cache.
        let same = build(&config(&base), Some(&first));
        assert!(same_cache(&first, &same) && same_key_set(&first, &same));
        assert!(same.verify_bearer(&token).await.is_ok());
        assert_eq!(first.verifications(), verified, "a cache hit");

        // An issuer added: nothing was verified under it, the cache stays.
        let added = format!(
            "{base}[[jwt]]\nissuer = \"https://other/\"\naudiences = [\"x\"]\n\
             algorithms = [\"ES256\"]\njwks_url = \"https://other/jwks\"\n"
        );
        assert!(same_cache(&first, &build(&config(&added), Some(&first))));

        // A tighter audience: the cached identity would now be refused, so it must go.
        let tighter = base.replace("[\"feldera-api\"]", "[\"other-api\"]");
        let tight = build(&config(&tighter), Some(&first));
        assert!(!same_cache(&first, &tight));
        assert!(
            same_key_set(&first, &tight),
            "the key source did not change"
        );
        let refused = tight.verify_bearer(&token).await.unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::InvalidAudience));

        // A shared secret replaced in its file, the configuration unchanged.
        let hs_token = hs.token(&claims("carol"));
        assert!(first.verify_bearer(&hs_token).await.is_ok());
        let other_secret = TestKey::hs256("hs");
        key_sources(&[&ec, &other_secret], dir.path());
        let rotated = build(&config(&base), Some(&first));
        assert!(!same_cache(&first, &rotated));
        let refused = rotated.verify_bearer(&hs_token).await.unwrap_err();
        assert_eq!(refused.reason(), Some(Reason::InvalidSignature));

        // A removed issuer, or another cache size: a fresh cache.
        let without = config("");
        assert!(!same_cache(&first, &build(&without, Some(&first))));
        let smaller = format!("token_cache_size = 5\n{base}");
        assert!(!same_cache(&first, &build(&config(&smaller), Some(&first))));
    }

    #[tokio::test]
    async fn the_api_key_store_is_kept_while_its_keys_and_file_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let (inline, listed) = (
            crate::auth::apikey::generate(),
            crate::auth::apikey::generate(),
        );
        let entry = |name: &str, key: &str, role: &str| {
            format!(
                "name = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
                crate::auth::apikey::hash(key)
            )
        };
        std::fs::write(
            &path,
            format!("[[api_keys]]\n{}", entry("f", &listed, "read")),
        )
        .unwrap();
        let text = |role: &str| {
            format!(
                "api_keys_file = \"{}\"\n[[api_keys]]\n{}",
                path.display(),
                entry("i", &inline, role)
            )
        };
        let first = build(&config(&text("read")), None);
        let same = build(&config(&text("read")), Some(&first));
        assert!(Arc::ptr_eq(&first.state().api_keys, &same.state().api_keys));
        let changed = build(&config(&text("write")), Some(&first));
        assert!(!Arc::ptr_eq(
            &first.state().api_keys,
            &changed.state().api_keys
        ));
        // A carried store re-reads a changed file at once; a broken one fails the build.
        let newer = crate::auth::apikey::generate();
        std::fs::write(
            &path,
            format!("[[api_keys]]\n{}", entry("file-two", &newer, "read")),
        )
        .unwrap();
        let reread = build(&config(&text("read")), Some(&same));
        assert!(reread.verify_bearer(&newer).await.is_ok());
        std::fs::write(&path, "[[api_keys]]\nname = 1\n").unwrap();
        let clock = crate::clock::system();
        let broken = Authenticator::new_reusing(
            &config(&text("read")),
            "auth",
            clock,
            &AuthMetrics::default(),
            &reread,
        );
        let problems = broken.unwrap_err().to_string();
        assert!(problems.contains("auth.api_keys_file"), "{problems}");
        assert!(
            reread.verify_bearer(&newer).await.is_ok(),
            "the old keys stay"
        );
    }
}
