//! The auth slot of the stack: [`Authenticator`] turns the request's credential into a
//! [`Principal`] and checks it against the endpoint; [`AuthLayer`] puts it in the stack.
//!
//! Per request, in order:
//! 1. Client-sent copies of every `[auth] claim_headers` header are removed (always, in every
//!    mode, on every path).
//! 2. `[auth] mode = "off"`: the anonymous principal with the `owner` role, and the tenant
//!    the client names in `Feldera-Tenant` only with `trust_tenant_header`; unclassified paths
//!    pass. Nothing else happens.
//! 3. Public paths pass without reading any credential.
//! 4. The credential (`Authorization: Bearer …`, or the WebSocket subprotocol) is required
//!    (`missing_credentials`) — unless the connection has a verified TLS client certificate
//!    and the request carries no bearer credential: then `[[auth.client_certs]]` maps the
//!    certificate to the principal (`client_cert`), or refuses it with 403. A bearer
//!    credential always decides when present, certificate or not; `apikey:…` goes to the key store, anything else is a JWT: the
//!    verified-token cache first, then full verification. An unknown `kid` (or no key set
//!    yet) waits for one shared, rate-limited refetch and is verified once more; only that path
//!    is asynchronous — every other request is decided without awaiting.
//! 5. Every tenant the token names must be one its issuer may speak for, and the requested
//!    tenant must be the principal's (403 `NotATenantMember`); then the role must reach the
//!    endpoint's minimum (403 `InsufficientPermissions`).
//! 6. The principal goes into the request extensions (and the access log), and the verified
//!    claim headers into the request.
//!
//! Every failure is an [`AuthError`], rendered by its one conversion in `error.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use futures_util::FutureExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::{Request, Response, ResponseFuture};
use crate::clock::Clock;
use crate::config::auth::{AuthConfig, AuthMode};
use crate::config::Problems;
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::spans;
use crate::telemetry::metrics::Series;
use crate::wire::FELDERA_TENANT;

use super::apikey;
use super::authorize::{authorize, select_tenant, Requirement};
use super::cache::token_key;
use super::client_cert::ClientCertMap;
use super::credential;
use super::jwks::{IssuerKeySet, KeySetMetrics};
use super::jwt::{Outcome, Verifier, MAX_TOKEN_BYTES};
use super::policy::AuthPolicy;
use super::state::{AuthState, Previous};
use super::{AuthError, Credential, Identity, Principal, Reason, Role};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: &'static str,
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

/// The credential a request presented (`auth_outcomes_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// None, or one that could not be read.
    None,
    ApiKey,
    Jwt,
    ClientCert,
}

impl Kind {
    fn of(token: &str) -> Kind {
        if token.starts_with(apikey::PREFIX) {
            Kind::ApiKey
        } else {
            Kind::Jwt
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::ApiKey => "api_key",
            Kind::Jwt => "jwt",
            Kind::ClientCert => "client_cert",
        }
    }
}

/// `(outcome, reason)` labels of a refusal: the 401 reasons are the fixed set of `error.rs`.
fn outcome_of(error: &AuthError) -> (&'static str, &'static str) {
    match error {
        AuthError::Failed(_) | AuthError::ExpiredApiKey { .. } => (
            "unauthenticated",
            error.reason().map_or("unknown", Reason::as_str),
        ),
        AuthError::Unavailable { .. } => ("unavailable", "no_key_set"),
        AuthError::InsufficientRole { .. } => ("forbidden", "insufficient_permissions"),
        AuthError::UnclassifiedEndpoint { .. } => ("forbidden", "unclassified_endpoint"),
        AuthError::NotATenantMember { .. } => ("forbidden", "not_a_tenant_member"),
        AuthError::UnmappedClientCertificate { .. } => {
            ("forbidden", "client_certificate_not_mapped")
        }
        AuthError::Internal(_) => ("error", "internal"),
    }
}

/// Authenticates and authorizes requests: the policy of one configuration over state that
/// may outlive it.
#[derive(Debug)]
pub struct Authenticator {
    policy: AuthPolicy,
    state: AuthState,
    client_certs: ClientCertMap,
    clock: Arc<dyn Clock>,
    metrics: AuthMetrics,
}

/// Authentication's metrics, made once per process and shared by every runtime snapshot.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    verifications: Counter,
    failures: Family<FailureLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    key_sets: KeySetMetrics,
    /// The series nearly every request counts in: `auth_outcomes_total{kind, outcome="ok"}`
    /// per kind, and the token cache's hits and misses.
    ok: [Series<Counter>; 4],
    cache_hit: Series<Counter>,
    cache_miss: Series<Counter>,
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
        registry.register(
            "auth_outcomes",
            "Authentication decisions on requests that needed a credential, by credential \
             kind (none, api_key, jwt), outcome (ok, unauthenticated, forbidden, unavailable) \
             and reason (the 401 reasons; insufficient_permissions, not_a_tenant_member, \
             unclassified_endpoint for 403; no_key_set for 503; empty when ok)",
            self.outcomes.clone(),
        );
        registry.register(
            "auth_token_cache_lookups",
            "Verified-token cache lookups for JWTs, by result (hit, miss)",
            self.cache.clone(),
        );
        self.key_sets.register(registry);
    }
}

/// How far the synchronous part of authentication got.
enum Step {
    Ready(Arc<Identity>),
    /// A JWT's key set must be refetched first.
    NeedKeys {
        issuer: usize,
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
        issuer: usize,
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
        Authenticator::build(config, at, clock, metrics, None)
    }

    /// Builds the authenticator of a new configuration, carrying the state of `previous`
    /// where that is safe: key sets (with their schedules) of issuers whose issuer, key source
    /// and refresh settings did not change, the token cache when no issuer's verification
    /// rules or keys changed, the API-key store when its keys and file did not change. The
    /// rules, and why they are safe, are in `super::state`.
    pub fn new_reusing(
        config: &AuthConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        metrics: &AuthMetrics,
        previous: &Authenticator,
    ) -> Result<Authenticator, Problems> {
        Authenticator::build(config, at, clock, metrics, Some(previous))
    }

    fn build(
        config: &AuthConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        metrics: &AuthMetrics,
        previous: Option<&Authenticator>,
    ) -> Result<Authenticator, Problems> {
        let policy = AuthPolicy::new(config);
        let previous = previous.map(|p| Previous {
            policy: &p.policy,
            state: &p.state,
        });
        let state = AuthState::build(config, at, &policy, &clock, &metrics.key_sets, previous)?;
        if policy.mode == AuthMode::On
            && state.api_keys.is_empty()
            && config.api_keys_file.is_none()
            && config.jwt.is_empty()
        {
            tracing::warn!("[auth] is on but has no API keys and no JWT issuers: every non-public request will get 401");
        }
        let naming: Vec<&str> = config
            .jwt
            .iter()
            .filter(|jwt| jwt.tenant_claim.is_some())
            .map(|jwt| jwt.issuer.as_str())
            .collect();
        let unbound: Vec<&str> = config
            .jwt
            .iter()
            .filter(|jwt| jwt.tenant_claim.is_some() && jwt.tenants.is_none())
            .map(|jwt| jwt.issuer.as_str())
            .collect();
        if policy.mode == AuthMode::On && naming.len() > 1 && !unbound.is_empty() {
            tracing::warn!(
                issuers = ?unbound,
                "several [[auth.jwt]] issuers name tenants, and these may name any tenant: \
                 one issuer's tokens can act in another's tenants; bind each with `tenants`"
            );
        }
        Ok(Authenticator {
            policy,
            state,
            client_certs: ClientCertMap::new(&config.client_certs),
            clock,
            metrics: metrics.clone(),
        })
    }

    /// The policy (what the configuration says).
    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// The state (what is kept and learnt while running).
    pub fn state(&self) -> &AuthState {
        &self.state
    }

    fn verifier(&self) -> Verifier<'_> {
        Verifier {
            issuers: &self.policy.issuers,
            keys: &self.state.issuers,
            claim_headers: &self.policy.claim_headers,
            verifications: &self.metrics.verifications,
        }
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
        if self.policy.mode == AuthMode::Off {
            return Ok(());
        }
        let missing: Vec<String> = self
            .state
            .key_sets()
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
            Ok(Step::NeedKeys { issuer, generation }) => {
                self.after_refetch(issuer, generation, token).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            self.record(error);
        }
        result
    }

    async fn after_refetch(
        &self,
        issuer: usize,
        generation: u64,
        token: &str,
    ) -> Result<Arc<Identity>, AuthError> {
        if let Some(jwks) = self
            .state
            .issuers
            .get(issuer)
            .and_then(|keys| keys.published.as_ref())
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
            let identity = self.state.api_keys.verify(token, self.clock.now())?;
            return Ok(Step::Ready(Arc::new(identity)));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Reason::CredentialsTooLarge.into());
        }
        let key = token_key(token);
        let now = self.clock.unix_seconds();
        let cache = &self.state.token_cache;
        let hit = cache.get(&key, now);
        let (series, result) = match hit {
            Some(_) => (&self.metrics.cache_hit, "hit"),
            None => (&self.metrics.cache_miss, "miss"),
        };
        series
            .get(|| {
                self.metrics
                    .cache
                    .get_or_create(&CacheLabels { result })
                    .clone()
            })
            .inc();
        if let Some(identity) = hit {
            spans::record_cache_hit(true);
            return Ok(Step::Ready(identity));
        }
        spans::record_cache_hit(false);
        match self.verifier().verify(token, now, may_refetch)? {
            Outcome::Verified { identity, exp } => {
                let identity = Arc::new(identity);
                cache.insert(key, identity.clone(), exp, now);
                Ok(Step::Ready(identity))
            }
            Outcome::NeedKeys { issuer, generation } => Ok(Step::NeedKeys { issuer, generation }),
        }
    }

    /// Counts a decision on a request that needed a credential.
    fn count(&self, kind: Kind, outcome: &'static str, reason: &'static str) {
        let labels = OutcomeLabels {
            kind: kind.as_str(),
            outcome,
            reason,
        };
        if outcome == "ok" && reason.is_empty() {
            self.metrics.ok[kind as usize]
                .get(|| self.metrics.outcomes.get_or_create(&labels).clone())
                .inc();
        } else {
            self.metrics.outcomes.get_or_create(&labels).inc();
        }
    }

    /// Counts a refusal: its outcome, and the 401 reason in `auth_failures`.
    fn refused(&self, kind: Kind, error: &AuthError) {
        let (outcome, reason) = outcome_of(error);
        self.count(kind, outcome, reason);
        self.record(error);
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
        for (_, name) in &self.policy.claim_headers {
            request.headers_mut().remove(name);
        }
        let access = match RequestContext::of(request).and_then(|c| c.classified()) {
            Ok(classified) => classified.endpoint.access,
            Err(error) => return Begin::Internal(error),
        };
        if self.policy.mode == AuthMode::Off {
            // Nobody is verified: the client's tenant is believed only when the operator
            // said so (`trust_tenant_header`); otherwise there is none, and the header goes.
            let tenant = if self.policy.trust_tenant_header {
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
        let requirement =
            self.policy
                .routes
                .requirement(request.method(), request.uri().path(), access);
        if requirement == Requirement::Public {
            return Begin::Pass;
        }
        let presented = match credential::bearer(request.headers()) {
            Ok(Some(presented)) => presented,
            Ok(None) => {
                let certificate = RequestContext::of(request)
                    .ok()
                    .and_then(|context| context.connection().client_certificate.clone());
                return match certificate {
                    Some(certificate) => self.begin_client_cert(request, &certificate, requirement),
                    None => self.fail(Kind::None, Reason::MissingCredentials.into()),
                };
            }
            Err(reason) => return self.fail(Kind::None, reason.into()),
        };
        let kind = Kind::of(&presented);
        let tenants = match credential::requested_tenants(request.headers()) {
            Ok(tenants) => tenants,
            Err(reason) => return self.fail(kind, reason.into()),
        };
        match self.step(&presented, true) {
            Ok(Step::Ready(identity)) => {
                match self.finish(request, &identity, requirement, &tenants) {
                    Ok(()) => {
                        self.count(kind, "ok", "");
                        Begin::Pass
                    }
                    Err(error) => {
                        let (outcome, reason) = outcome_of(&error);
                        self.count(kind, outcome, reason);
                        Begin::Fail(error)
                    }
                }
            }
            Ok(Step::NeedKeys { issuer, generation }) => Begin::Refetch {
                issuer,
                generation,
                token: presented,
                requirement,
                tenants,
            },
            Err(error) => self.fail(kind, error),
        }
    }

    /// A request without a bearer credential on a connection with a verified client
    /// certificate.
    fn begin_client_cert(
        &self,
        request: &mut Request,
        certificate: &crate::context::ClientCertificate,
        requirement: Requirement,
    ) -> Begin {
        let tenants = match credential::requested_tenants(request.headers()) {
            Ok(tenants) => tenants,
            Err(reason) => return self.fail(Kind::ClientCert, reason.into()),
        };
        let Some(identity) = self.client_certs.identify(certificate) else {
            return self.fail(
                Kind::ClientCert,
                AuthError::UnmappedClientCertificate {
                    subject: certificate.subject.clone(),
                },
            );
        };
        match self.finish(request, &identity, requirement, &tenants) {
            Ok(()) => {
                self.count(Kind::ClientCert, "ok", "");
                Begin::Pass
            }
            Err(error) => self.fail(Kind::ClientCert, error),
        }
    }

    fn fail(&self, kind: Kind, error: AuthError) -> Begin {
        self.refused(kind, &error);
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
        if self.policy.mode == AuthMode::Off {
            return;
        }
        let key_sets: Vec<&IssuerKeySet> = self.state.key_sets().map(Arc::as_ref).collect();
        let api_keys = &self.state.api_keys;
        let reload = self.policy.api_keys_reload;
        tokio::pin!(shutdown);
        let mut keys_due = self.clock.instant() + reload;
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
                match api_keys.reload_if_changed() {
                    Ok(true) => tracing::info!(keys = api_keys.len(), "API keys reloaded"),
                    Ok(false) => {}
                    Err(reason) => {
                        tracing::warn!(%reason, "API keys file not reloaded; keeping the previous keys")
                    }
                }
                keys_due = self.clock.instant() + reload;
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
        // The auth span covers the decision (and a key-set refetch), not the layers below.
        let span = spans::auth_span();
        let begun = span.in_scope(|| self.authenticator.begin(&mut request));
        match begun {
            Begin::Pass => Either::Right(Either::Left(self.inner.call(request))),
            Begin::Fail(error) => {
                let response = reject(error);
                spans::record_error(&span, &response, false);
                Either::Left(std::future::ready(Ok(response)))
            }
            Begin::Internal(error) => {
                let response = error.into_response();
                spans::record_error(&span, &response, true);
                Either::Left(std::future::ready(Ok(response)))
            }
            Begin::Refetch {
                issuer,
                generation,
                token,
                requirement,
                tenants,
            } => {
                let authenticator = self.authenticator.clone();
                // Every layer of the stack is always ready, so a clone may be called later.
                let mut inner = self.inner.clone();
                if !span.is_disabled() {
                    span.record("auth.jwks_fetch", true);
                }
                let recorded = span.clone();
                let authenticated = async move {
                    let outcome = authenticator
                        .after_refetch(issuer, generation, &token)
                        .await
                        .and_then(|identity| {
                            authenticator.finish(&mut request, &identity, requirement, &tenants)
                        });
                    match outcome {
                        Ok(()) => {
                            authenticator.count(Kind::Jwt, "ok", "");
                            Ok(request)
                        }
                        Err(error) => {
                            authenticator.refused(Kind::Jwt, &error);
                            let response = reject(error);
                            spans::record_error(&recorded, &response, false);
                            Err(response)
                        }
                    }
                }
                .instrument(span);
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
