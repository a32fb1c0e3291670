//! The auth slot of the stack: [`Authenticator`] turns the request's credential into a
//! [`Principal`] and checks it against the endpoint; [`AuthLayer`] puts it in the stack.
//!
//! Per request, in order:
//! 1. Client-sent copies of every `[auth] claim_headers` header are removed (always, in every
//!    mode, on every path).
//! 2. `[auth] mode = "off"`: the anonymous principal with the `owner` role and the tenant the
//!    client names in `Feldera-Tenant`; unclassified paths pass. Nothing else happens.
//! 3. Public paths pass without reading any credential.
//! 4. The credential (`Authorization: Bearer …`, or the WebSocket subprotocol) is required
//!    (`missing_credentials`); `apikey:…` goes to the key store, anything else is a JWT: the
//!    verified-token cache first, then full verification. An unknown `kid` (or no key set
//!    yet) waits for one shared, rate-limited refetch and is verified once more; only that path
//!    is asynchronous — every other request is decided without awaiting.
//! 5. The requested tenant must be the principal's (403 `NotATenantMember`), then the role
//!    must reach the endpoint's minimum (403 `InsufficientPermissions`).
//! 6. The principal goes into the request extensions (and the access log), and the verified
//!    claim headers into the request.
//!
//! Every failure is an [`AuthError`], rendered by its one conversion in `error.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::FutureExt as _;
use http::HeaderName;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::body::{Request, Response, ResponseFuture};
use crate::clock::Clock;
use crate::config::auth::{AuthConfig, AuthMode};
use crate::config::Problems;
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::wire::FELDERA_TENANT;

use super::apikey::{self, ApiKeyStore};
use super::authorize::{authorize, select_tenant, Requirement, RoutePolicy};
use super::cache::{token_key, TokenCache};
use super::credential;
use super::jwks::{IssuerKeySet, KeySetMetrics};
use super::jwt::{JwtVerifier, Outcome, MAX_TOKEN_BYTES};
use super::{AuthError, Credential, Identity, Principal, Reason, Role};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// Authenticates and authorizes requests.
#[derive(Debug)]
pub struct Authenticator {
    mode: AuthMode,
    policy: RoutePolicy,
    api_keys: ApiKeyStore,
    api_keys_reload: Duration,
    jwt: JwtVerifier,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    claim_header_names: Vec<HeaderName>,
    trust_tenant_header: bool,
    metrics: AuthMetrics,
}

/// Authentication's metrics, made once per process and shared by every runtime snapshot.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    verifications: Counter,
    failures: Family<FailureLabels, Counter>,
    key_sets: KeySetMetrics,
}

impl AuthMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "auth_signature_verifications",
            "JWT signature verifications performed (cache hits and early rejections excluded)",
            self.verifications.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused with 401, by reason",
            self.failures.clone(),
        );
        self.key_sets.register(registry);
    }
}

/// How far the synchronous part of authentication got.
enum Step {
    Ready(Arc<Identity>),
    /// A JWT's key set must be refetched first.
    NeedKeys {
        provider: usize,
        generation: u64,
    },
}

/// What the layer does with a request after the synchronous part.
enum Begin {
    /// Forward (the request carries its principal, if any).
    Pass,
    Fail(AuthError),
    /// The stack is out of order (no context or classification): a 500.
    Internal(GatewayError),
    /// Refetch the key set, then finish.
    Refetch {
        provider: usize,
        generation: u64,
        token: String,
        requirement: Requirement,
        tenants: Vec<String>,
    },
}

/// The id of every principal while authentication is off (made once, not per request).
static ANONYMOUS: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("anonymous"));

impl Authenticator {
    /// Builds the authenticator from a checked configuration (its key path `at`, for
    /// problems): reads `api_keys_file`, every `jwks_file` and every shared secret.
    pub fn new(
        config: &AuthConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        metrics: &AuthMetrics,
    ) -> Result<Authenticator, Problems> {
        let mut problems = Problems::default();
        let jwt = JwtVerifier::new(
            config,
            at,
            clock.clone(),
            metrics.verifications.clone(),
            &metrics.key_sets,
        );
        let api_keys = ApiKeyStore::new(config, at);
        let (jwt, api_keys) = match (jwt, api_keys) {
            (Ok(jwt), Ok(api_keys)) => (jwt, api_keys),
            (jwt, api_keys) => {
                if let Err(more) = jwt {
                    problems.extend(more);
                }
                if let Err(more) = api_keys {
                    problems.extend(more);
                }
                return Err(problems);
            }
        };
        let authenticator = Authenticator {
            mode: config.mode,
            policy: RoutePolicy::new(config),
            api_keys,
            api_keys_reload: config.api_keys_reload,
            jwt,
            cache: TokenCache::new(config.token_cache_size, config.token_cache_ttl),
            clock,
            claim_header_names: config.claim_headers.values().map(|h| h.0.clone()).collect(),
            trust_tenant_header: config.trust_tenant_header,
            metrics: metrics.clone(),
        };
        if authenticator.mode == AuthMode::On
            && authenticator.api_keys.is_empty()
            && config.api_keys_file.is_none()
            && config.jwt.is_empty()
        {
            tracing::warn!("[auth] is on but has no API keys and no JWT issuers: every non-public request will get 401");
        }
        Ok(authenticator)
    }

    /// Key-set refusals counted so far for `reason` (tests).
    pub fn key_set_refusals(&self, reason: &'static str) -> u64 {
        self.metrics.key_sets.count(reason)
    }

    /// Signature verifications actually performed so far.
    pub fn verifications(&self) -> u64 {
        self.metrics.verifications.get()
    }

    /// `Err` while some issuer has never had a key set loaded.
    pub fn readiness(&self) -> Result<(), String> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let missing: Vec<String> = self
            .jwt
            .providers()
            .iter()
            .filter_map(|p| p.jwks.as_ref())
            .filter(|jwks| jwks.keys().is_none())
            .map(|jwks| format!("auth: no key set loaded yet for issuer {}", jwks.issuer()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("\n"))
        }
    }

    /// Verifies a bearer token (a JWT or `apikey:…`), refetching keys if needed.
    pub async fn verify_bearer(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        let result = match self.step(token, true) {
            Ok(Step::Ready(identity)) => Ok(identity),
            Ok(Step::NeedKeys {
                provider,
                generation,
            }) => self.after_refetch(provider, generation, token).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            self.record(error);
        }
        result
    }

    async fn after_refetch(
        &self,
        provider: usize,
        generation: u64,
        token: &str,
    ) -> Result<Arc<Identity>, AuthError> {
        if let Some(jwks) = self
            .jwt
            .providers()
            .get(provider)
            .and_then(|p| p.jwks.as_ref())
        {
            jwks.refetch(generation).await;
        }
        match self.step(token, false)? {
            Step::Ready(identity) => Ok(identity),
            Step::NeedKeys { .. } => Err(Reason::UnknownKey.into()),
        }
    }

    /// The synchronous part of verifying a bearer token.
    fn step(&self, token: &str, may_refetch: bool) -> Result<Step, AuthError> {
        if token.starts_with(apikey::PREFIX) {
            let identity = self.api_keys.verify(token, self.clock.now())?;
            return Ok(Step::Ready(Arc::new(identity)));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Reason::CredentialsTooLarge.into());
        }
        let key = token_key(token);
        let now = self.clock.unix_seconds();
        if let Some(identity) = self.cache.get(&key, now) {
            return Ok(Step::Ready(identity));
        }
        match self.jwt.verify(token, now, may_refetch)? {
            Outcome::Verified { identity, exp } => {
                let identity = Arc::new(identity);
                self.cache.insert(key, identity.clone(), exp, now);
                Ok(Step::Ready(identity))
            }
            Outcome::NeedKeys {
                provider,
                generation,
            } => Ok(Step::NeedKeys {
                provider,
                generation,
            }),
        }
    }

    fn record(&self, error: &AuthError) {
        if let Some(reason) = error.reason() {
            self.metrics
                .failures
                .get_or_create(&FailureLabels {
                    reason: reason.as_str(),
                })
                .inc();
        }
    }

    /// Everything that can be decided without awaiting.
    fn begin(&self, request: &mut Request) -> Begin {
        for name in &self.claim_header_names {
            request.headers_mut().remove(name);
        }
        let access = match RequestContext::of(request).and_then(|c| c.classified()) {
            Ok(classified) => classified.endpoint.access,
            Err(error) => return Begin::Internal(error),
        };
        if self.mode == AuthMode::Off {
            // Nobody is verified: the client's tenant is believed only when the operator
            // said so (`trust_tenant_header`); otherwise there is none, and the header goes.
            let tenant = if self.trust_tenant_header {
                request
                    .headers()
                    .get(FELDERA_TENANT)
                    .and_then(|v| v.to_str().ok())
                    .map(Arc::from)
            } else {
                None
            };
            let principal = Principal {
                id: ANONYMOUS.clone(),
                credential: Credential::Anonymous,
                role: Role::Owner,
                tenant,
            };
            return match insert_principal(request, principal) {
                Ok(()) => Begin::Pass,
                Err(error) => Begin::Internal(error),
            };
        }
        let requirement = self
            .policy
            .requirement(request.method(), request.uri().path(), access);
        if requirement == Requirement::Public {
            return Begin::Pass;
        }
        let presented = match credential::bearer(request.headers()) {
            Ok(Some(presented)) => presented,
            Ok(None) => return self.fail(Reason::MissingCredentials.into()),
            Err(reason) => return self.fail(reason.into()),
        };
        let tenants = match credential::requested_tenants(request.headers()) {
            Ok(tenants) => tenants,
            Err(reason) => return self.fail(reason.into()),
        };
        match self.step(&presented.token, true) {
            Ok(Step::Ready(identity)) => {
                match self.finish(request, &identity, requirement, &tenants) {
                    Ok(()) => Begin::Pass,
                    Err(error) => Begin::Fail(error),
                }
            }
            Ok(Step::NeedKeys {
                provider,
                generation,
            }) => Begin::Refetch {
                provider,
                generation,
                token: presented.token,
                requirement,
                tenants,
            },
            Err(error) => self.fail(error),
        }
    }

    fn fail(&self, error: AuthError) -> Begin {
        self.record(&error);
        Begin::Fail(error)
    }

    /// Tenant, role, and what the request carries on.
    fn finish(
        &self,
        request: &mut Request,
        identity: &Identity,
        requirement: Requirement,
        tenants: &[String],
    ) -> Result<(), AuthError> {
        let requested: Vec<&str> = tenants.iter().map(String::as_str).collect();
        let principal = select_tenant(identity, &requested)?;
        authorize(&principal, requirement)?;
        for (name, value) in &identity.claim_headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        insert_principal(request, principal).map_err(AuthError::Internal)
    }

    /// Background work until `shutdown`: key-set refreshes (per issuer, at its own pace, as
    /// its schedule says) and re-reading `api_keys_file` when it changes.
    pub async fn run_background(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        if self.mode == AuthMode::Off {
            return;
        }
        let key_sets: Vec<&IssuerKeySet> = self
            .jwt
            .providers()
            .iter()
            .filter_map(|p| p.jwks.as_ref())
            .collect();
        tokio::pin!(shutdown);
        let mut keys_due = self.clock.instant() + self.api_keys_reload;
        loop {
            let next = key_sets
                .iter()
                .map(|jwks| jwks.next_refresh())
                .fold(keys_due, std::cmp::min);
            let wait = next.saturating_duration_since(self.clock.instant());
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
            for jwks in &key_sets {
                if jwks.next_refresh() <= self.clock.instant() {
                    tokio::select! {
                        () = &mut shutdown => return,
                        _ = jwks.refresh_if_due() => {}
                    }
                }
            }
            if keys_due <= self.clock.instant() {
                match self.api_keys.reload_if_changed() {
                    Ok(true) => tracing::info!(keys = self.api_keys.len(), "API keys reloaded"),
                    Ok(false) => {}
                    Err(reason) => {
                        tracing::warn!(%reason, "API keys file not reloaded; keeping the previous keys")
                    }
                }
                keys_due = self.clock.instant() + self.api_keys_reload;
            }
        }
    }
}

fn insert_principal(request: &Request, principal: Principal) -> Result<(), GatewayError> {
    RequestContext::of(request)?.set_principal(principal);
    Ok(())
}

fn reject(error: AuthError) -> Response {
    GatewayError::from(error).into_response()
}

/// The auth slot.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        AuthLayer { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            authenticator: self.authenticator.clone(),
            inner,
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    authenticator: Arc<Authenticator>,
    inner: S,
}

impl<S> Service<Request> for Auth<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<std::future::Ready<Result<Response, Infallible>>, Either<S::Future, ResponseFuture>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.authenticator.begin(&mut request) {
            Begin::Pass => Either::Right(Either::Left(self.inner.call(request))),
            Begin::Fail(error) => Either::Left(std::future::ready(Ok(reject(error)))),
            Begin::Internal(error) => Either::Left(std::future::ready(Ok(error.into_response()))),
            Begin::Refetch {
                provider,
                generation,
                token,
                requirement,
                tenants,
            } => {
                let authenticator = self.authenticator.clone();
                // Every layer of the stack is always ready, so a clone may be called later.
                let mut inner = self.inner.clone();
                let authenticated = async move {
                    let outcome = authenticator
                        .after_refetch(provider, generation, &token)
                        .await
                        .and_then(|identity| {
                            authenticator.finish(&mut request, &identity, requirement, &tenants)
                        });
                    match outcome {
                        Ok(()) => Ok(request),
                        Err(error) => {
                            authenticator.record(&error);
                            Err(reject(error))
                        }
                    }
                };
                // A combinator rather than awaiting `inner` in the async block: rustc cannot
                // prove such a block `Send` for a generic `S::Future`.
                Either::Right(Either::Right(Box::pin(authenticated.then(
                    move |outcome| match outcome {
                        Ok(request) => Either::Left(inner.call(request)),
                        Err(response) => Either::Right(std::future::ready(Ok(response))),
                    },
                ))))
            }
        }
    }
}
