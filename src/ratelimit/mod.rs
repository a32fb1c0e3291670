//! Rate limiting at the edge: by client IP before authentication, by verified principal after.
//!
//! Without `[rate_limit]` nothing is limited and no header is added (the layers pass
//! requests straight through). With it, [`RateLimits`] holds every policy:
//!
//! - `client_ip` (formerly `anonymous`): one budget per client IP (IPv6 per /64, see [`key`]), checked by the
//!   [`RateLimitLayer::client_ip`] layer **before** authentication, on *every* request — with
//!   or without credentials, because before verification no credential can be believed, and a
//!   flood of forged tokens must not reach signature checks. Size it as the ceiling of one
//!   address (a NAT with many users), not of one user.
//! - after authentication ([`RateLimitLayer::principal`]), one policy per request, the first
//!   that applies: an override naming the principal id or its verified tenant (and the
//!   endpoint, if the override lists routes), else the first rule naming the endpoint (by
//!   name or `class:<class>`), else `principal`. Each policy has its own budget per
//!   principal, so `activate` under a rule does not spend the principal's general budget.
//!   Requests without a principal (public endpoints with auth on) have no principal limit.
//!   With auth off everyone is the `anonymous` principal, so the key is the client IP and
//!   overrides by tenant never match (the tenant header is not verified).
//! - in the same layer, after the principal's policy allowed the request, the budget of its
//!   verified tenant ([`RateLimits::tenant_target`], `[[rate_limit.tenants]]`): one budget per
//!   tenant, shared by every principal acting in it, so five keys of one tenant do not get
//!   five budgets. A request must pass both; one refused by its principal's policy spends
//!   nothing of the tenant's, so a noisy principal stopped by its own limit does not drain
//!   its colleagues' share.
//!
//! Decisions are local (`governor`, [`local`]) or, with `[rate_limit.redis]`, made in Redis
//! and shared by all instances ([`redis`]); when Redis fails, `on_error` applies (`local`:
//! this instance's own budget for the same policy, `allow`, or `deny` with 503), with a
//! warning at most every 10 s and the counter
//! `pipeline_gateway_ratelimit_redis_fallbacks_total{on_error}`.
//!
//! Memory: local budgets are swept every `sweep_interval` by the task from
//! [`RateLimits::run_sweeper`] (and early when a policy hits `max_keys`).

pub mod error;
pub mod headers;
pub mod key;
pub mod layer;
pub mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::telemetry::metrics::{Name, Series};
use crate::telemetry::StatusBoard;
use tokio::sync::Notify;

use crate::catalog::Endpoint;
use globset::GlobMatcher;

use crate::config::ratelimit::{LimitConfig, OnError, Rate, RateLimitConfig};
use crate::config::values::EndpointRef;
use crate::principal::{Credential, Principal};

pub use self::error::RateLimitError;
pub use self::key::ClientIpResolver;
pub use self::layer::{RateLimitLayer, Stage};
pub use self::local::{Decision, LimiterClock, LocalLimiter};

/// A named limit: `burst` requests at once, refilled at `rate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Arc<str>,
    pub rate: Rate,
    pub burst: u32,
    /// `RateLimit-Policy` of this policy: constant, so made once, not per response.
    policy_header: http::HeaderValue,
    /// `ratelimit_decisions_total{policy, decision="allow"}`, counted on most requests.
    allowed: Series<Counter>,
}

impl Policy {
    pub fn new(name: &str, rate: Rate, burst: u32) -> Policy {
        let mut policy = Policy {
            name: name.into(),
            rate,
            burst: burst.max(1),
            policy_header: http::HeaderValue::from_static(""),
            allowed: Series::default(),
        };
        policy.policy_header = headers::policy_value(&policy);
        policy
    }

    /// The `RateLimit-Policy` header value.
    pub fn policy_header(&self) -> &http::HeaderValue {
        &self.policy_header
    }

    fn from_config(name: &str, rate: Rate, burst: Option<u32>) -> Policy {
        Policy::new(name, rate, burst.unwrap_or(rate.count))
    }

    /// Seconds the whole burst takes to refill, rounded up, at least 1.
    pub fn window_secs(&self) -> u64 {
        headers::ceil_secs(self.rate.interval() * self.burst).max(1)
    }
}

/// Which budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetKey {
    /// The client IP, aggregated ([`key::ip_key`]).
    Ip(IpAddr),
    /// A principal key ([`key::principal_key`]).
    Principal(Arc<str>),
    /// A verified tenant (a budget shared by its principals).
    Tenant(Arc<str>),
}

impl std::fmt::Display for BudgetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetKey::Ip(ip) => f.write_str(&key::ip_key_text(*ip)),
            BudgetKey::Principal(id) => f.write_str(id),
            BudgetKey::Tenant(tenant) => write!(f, "tenant:{tenant}"),
        }
    }
}

/// Which policy a request falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRef {
    ClientIp,
    Principal,
    Rule(usize),
    Override(usize),
    Tenant(usize),
}

/// A policy and key resolved for one request.
#[derive(Debug, Clone)]
pub struct Target {
    pub policy: PolicyRef,
    pub key: BudgetKey,
}

/// What the limiter concluded about one request.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A decision with its numbers (from Redis or local).
    Decided { policy: Policy, decision: Decision },
    /// Redis failed and `on_error = "allow"`: let through, numbers unknown.
    AllowedBlind { policy: Policy },
    /// Redis failed and `on_error = "deny"`.
    Unavailable { policy: Policy, reason: String },
}

impl Verdict {
    /// The error to answer with, when the request may not pass.
    pub fn rejection(&self) -> Option<RateLimitError> {
        match self {
            Verdict::Decided { policy, decision } if !decision.allowed => {
                Some(RateLimitError::Exceeded {
                    policy: policy.clone(),
                    decision: *decision,
                })
            }
            Verdict::Unavailable { policy, reason } => Some(RateLimitError::StoreUnavailable {
                policy: policy.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        }
    }

    /// Adds this outcome's headers to a response that is let through.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        match self {
            Verdict::Decided { policy, decision } => headers::apply(headers, policy, decision),
            Verdict::AllowedBlind { policy } => headers::apply_policy_only(headers, policy),
            Verdict::Unavailable { .. } => {}
        }
    }
}

fn route_matches(routes: &[EndpointRef], endpoint: Option<&Endpoint>) -> bool {
    let Some(endpoint) = endpoint else {
        return false;
    };
    routes.iter().any(|route| route.matches(endpoint))
}

struct Limited<K: std::hash::Hash + Eq + Clone> {
    policy: Policy,
    /// Shared with the next configuration's limits when the policy stays the same, so a
    /// reload keeps every budget.
    local: Arc<LocalLimiter<K>>,
    max_keys: usize,
}

struct Rule {
    routes: Vec<EndpointRef>,
    limited: Limited<Arc<str>>,
}

struct Override {
    principals: Vec<String>,
    tenants: Vec<String>,
    routes: Vec<EndpointRef>,
    limited: Limited<Arc<str>>,
}

struct TenantBudget {
    tenants: Vec<GlobMatcher>,
    routes: Vec<EndpointRef>,
    limited: Limited<Arc<str>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: Name,
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    on_error: &'static str,
}

/// The limiter's metrics (registered under `pipeline_gateway_ratelimit_*`), made once per
/// process and shared by every runtime snapshot.
#[derive(Clone)]
pub struct RateLimitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    keys: Family<PolicyLabels, Gauge>,
    overflowed: Family<PolicyLabels, Counter>,
    redis_durations: Histogram,
    /// Where refused keys are noted for the status page.
    board: Arc<StatusBoard>,
}

impl Default for RateLimitMetrics {
    fn default() -> Self {
        RateLimitMetrics::with_board(Arc::default())
    }
}

/// Redis decision latencies: 0.1 ms to its timeout's range.
const REDIS_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl RateLimitMetrics {
    /// Metrics whose refusals are noted on `board` (the status page's).
    pub fn with_board(board: Arc<StatusBoard>) -> RateLimitMetrics {
        RateLimitMetrics {
            decisions: Family::default(),
            fallbacks: Family::default(),
            keys: Family::default(),
            overflowed: Family::default(),
            redis_durations: Histogram::new(REDIS_BUCKETS),
            board,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("ratelimit");
        registry.register(
            "decisions",
            "Rate-limit decisions, by policy and outcome (allow, deny)",
            self.decisions.clone(),
        );
        registry.register(
            "redis_fallbacks",
            "Decisions Redis could not make (timeout or error), by the on_error applied",
            self.fallbacks.clone(),
        );
        registry.register(
            "keys",
            "Keys held in memory per policy, as of the last sweep",
            self.keys.clone(),
        );
        registry.register(
            "overflowed",
            "Decisions made against a policy's shared overflow budget because it held max_keys",
            self.overflowed.clone(),
        );
        registry.register(
            "redis_duration_seconds",
            "Time Redis took to decide (or to fail), per decision",
            self.redis_durations.clone(),
        );
    }
}

/// Redis with the settings the decisions need.
struct Shared {
    store: redis::RedisStore,
    config: crate::config::ratelimit::RedisConfig,
    on_error: OnError,
    prefix: String,
    last_warning: AtomicU64,
    started: Instant,
}

/// Every policy of `[rate_limit]`, ready to decide.
pub struct RateLimits {
    resolver: ClientIpResolver,
    client_ip: Option<Limited<IpAddr>>,
    principal: Option<Limited<Arc<str>>>,
    rules: Vec<Rule>,
    overrides: Vec<Override>,
    tenants: Vec<TenantBudget>,
    shared: Option<Shared>,
    metrics: RateLimitMetrics,
    sweep_interval: Duration,
    sweep_now: Notify,
}

impl RateLimits {
    /// Where decisions are made: `redis` or `local` (for the trace).
    pub fn backend(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "local"
        }
    }

    /// Builds the runtime form of a configuration that passed its check (building cannot
    /// fail but for Redis: the client is prepared, not connected). `metrics` are the
    /// process-wide families the decisions are counted in.
    pub fn build(
        config: &RateLimitConfig,
        clock: LimiterClock,
        metrics: RateLimitMetrics,
    ) -> Result<RateLimits, ::redis::RedisError> {
        RateLimits::build_reusing(config, clock, metrics, None)
    }

    /// [`RateLimits::build`], keeping the budgets of `previous` for every policy whose
    /// identity (name, rate, burst, key cap) did not change, and its Redis connection when
    /// `[rate_limit.redis]` did not change: a reload resets no one's budget.
    pub fn build_reusing(
        config: &RateLimitConfig,
        clock: LimiterClock,
        metrics: RateLimitMetrics,
        previous: Option<&RateLimits>,
    ) -> Result<RateLimits, ::redis::RedisError> {
        fn limited_by<K: std::hash::Hash + Eq + Clone>(
            name: &str,
            limit: &LimitConfig,
            max_keys: usize,
            clock: &LimiterClock,
            kept: Option<&Limited<K>>,
        ) -> Limited<K> {
            let policy = Policy::from_config(name, limit.rate, limit.burst);
            let local = match kept {
                Some(kept) if kept.policy == policy && kept.max_keys == max_keys => {
                    kept.local.clone()
                }
                _ => Arc::new(LocalLimiter::new(
                    policy.rate,
                    policy.burst,
                    max_keys,
                    clock.clone(),
                )),
            };
            Limited {
                local,
                policy,
                max_keys,
            }
        }
        let kept_principal = |name: &str| previous.and_then(|p| p.principal_like(name));
        let limited = |name: &str, limit: &LimitConfig| -> Limited<Arc<str>> {
            limited_by(name, limit, config.max_keys, &clock, kept_principal(name))
        };
        let client_ip = config.client_ip.as_ref().map(|l| {
            let kept = previous.and_then(|p| p.client_ip.as_ref());
            limited_by::<IpAddr>("client_ip", l, config.max_keys, &clock, kept)
        });
        let principal = config.principal.as_ref().map(|l| limited("principal", l));
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule {
                routes: rule.routes.clone(),
                limited: limited(
                    &config.rule_name(i),
                    &LimitConfig {
                        rate: rule.rate,
                        burst: rule.burst,
                    },
                ),
            })
            .collect();
        let overrides = config
            .overrides
            .iter()
            .enumerate()
            .map(|(i, over)| Override {
                principals: over.principals.clone(),
                tenants: over.tenants.clone(),
                routes: over.routes.clone(),
                limited: limited(
                    &config.override_name(i),
                    &LimitConfig {
                        rate: over.rate,
                        burst: over.burst,
                    },
                ),
            })
            .collect();
        let tenants = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, budget)| TenantBudget {
                tenants: budget
                    .tenants
                    .iter()
                    .map(|g| g.glob().compile_matcher())
                    .collect(),
                routes: budget.routes.clone(),
                limited: {
                    // A tenant budget carries over only from a tenant budget of that name.
                    let name = config.tenant_name(i);
                    let kept = previous.and_then(|p| {
                        p.tenants
                            .iter()
                            .map(|t| &t.limited)
                            .find(|l| *l.policy.name == *name)
                    });
                    let limit = LimitConfig {
                        rate: budget.rate,
                        burst: budget.burst,
                    };
                    limited_by(&name, &limit, config.max_keys, &clock, kept)
                },
            })
            .collect();
        let shared = match &config.redis {
            Some(redis) => Some(Shared {
                store: match previous.and_then(|p| p.shared.as_ref()) {
                    Some(kept) if kept.config == *redis => kept.store.clone(),
                    _ => redis::RedisStore::connect(redis)?,
                },
                config: redis.clone(),
                on_error: redis.on_error,
                prefix: redis.key_prefix.clone(),
                last_warning: AtomicU64::new(0),
                started: Instant::now(),
            }),
            None => None,
        };
        let limits = RateLimits {
            resolver: ClientIpResolver::new(config.trusted_proxies.iter().map(|p| p.0).collect()),
            client_ip,
            principal,
            rules,
            overrides,
            tenants,
            shared,
            metrics,
            sweep_interval: config.sweep_interval,
            sweep_now: Notify::new(),
        };
        // Every series this configuration can count exists from the start, at 0, so that
        // `rate()` and alerts see it before the first decision.
        let _ = limits.decision_totals();
        if let Some(shared) = &limits.shared {
            let _ = limits.metrics.fallbacks.get_or_create(&FallbackLabels {
                on_error: shared.on_error.as_str(),
            });
        }
        Ok(limits)
    }

    /// The client-IP budget of a request from `peer`, when `client_ip` is configured.
    /// Returns the client's IP (resolved through trusted proxies) with the target.
    pub fn client_ip_target(
        &self,
        peer: std::net::SocketAddr,
        headers: &http::HeaderMap,
    ) -> (IpAddr, Option<Target>) {
        let ip = self.resolver.client_ip(peer, headers);
        let target = self.client_ip.as_ref().map(|_| Target {
            policy: PolicyRef::ClientIp,
            key: BudgetKey::Ip(key::ip_key(ip)),
        });
        (ip, target)
    }

    /// The policy and budget of an authenticated request; `None`: not limited.
    pub fn principal_target(
        &self,
        principal: &Principal,
        endpoint: Option<&Endpoint>,
        client: Option<(std::net::SocketAddr, &http::HeaderMap)>,
    ) -> Option<Target> {
        let verified = !matches!(principal.credential, Credential::Anonymous);
        let overriding = self.overrides.iter().position(|o| {
            verified
                && (o.principals.iter().any(|p| **p == *principal.id)
                    || principal
                        .tenant
                        .as_deref()
                        .is_some_and(|t| o.tenants.iter().any(|o| o == t)))
                && (o.routes.is_empty() || route_matches(&o.routes, endpoint))
        });
        let policy = match overriding {
            Some(i) => PolicyRef::Override(i),
            None => match self
                .rules
                .iter()
                .position(|r| route_matches(&r.routes, endpoint))
            {
                Some(i) => PolicyRef::Rule(i),
                None => {
                    self.principal.as_ref()?;
                    PolicyRef::Principal
                }
            },
        };
        let client_ip = if verified {
            None
        } else {
            client.map(|(peer, headers)| self.resolver.client_ip(peer, headers))
        };
        Some(Target {
            policy,
            key: BudgetKey::Principal(key::principal_key(principal, client_ip).into()),
        })
    }

    /// The shared budget of an authenticated request's verified tenant; `None`: the
    /// principal has no verified tenant, or no `[[rate_limit.tenants]]` entry names it (and
    /// the endpoint, if the entry lists routes).
    pub fn tenant_target(
        &self,
        principal: &Principal,
        endpoint: Option<&Endpoint>,
    ) -> Option<Target> {
        if matches!(principal.credential, Credential::Anonymous) {
            return None;
        }
        let tenant = principal.tenant.as_ref()?;
        let index = self.tenants.iter().position(|budget| {
            budget.tenants.iter().any(|m| m.is_match(&**tenant))
                && (budget.routes.is_empty() || route_matches(&budget.routes, endpoint))
        })?;
        Some(Target {
            policy: PolicyRef::Tenant(index),
            key: BudgetKey::Tenant(tenant.clone()),
        })
    }

    /// The principal-keyed policy named `name` (principal, a rule or an override).
    fn principal_like(&self, name: &str) -> Option<&Limited<Arc<str>>> {
        self.principal
            .iter()
            .chain(self.rules.iter().map(|r| &r.limited))
            .chain(self.overrides.iter().map(|o| &o.limited))
            .find(|l| &*l.policy.name == name)
    }

    fn policy(&self, which: PolicyRef) -> Option<&Policy> {
        match which {
            PolicyRef::ClientIp => self.client_ip.as_ref().map(|l| &l.policy),
            PolicyRef::Principal => self.principal.as_ref().map(|l| &l.policy),
            PolicyRef::Rule(i) => self.rules.get(i).map(|r| &r.limited.policy),
            PolicyRef::Override(i) => self.overrides.get(i).map(|o| &o.limited.policy),
            PolicyRef::Tenant(i) => self.tenants.get(i).map(|t| &t.limited.policy),
        }
    }

    /// Decides with this instance's memory only.
    pub fn decide_local(&self, target: &Target) -> Option<Decision> {
        let decision = match (&target.key, target.policy) {
            (BudgetKey::Ip(ip), PolicyRef::ClientIp) => {
                let limited = self.client_ip.as_ref()?;
                self.note_full(&limited.local);
                limited.local.decide(ip)
            }
            (BudgetKey::Principal(id), which) => {
                let limited = match which {
                    PolicyRef::Principal => self.principal.as_ref()?,
                    PolicyRef::Rule(i) => &self.rules.get(i)?.limited,
                    PolicyRef::Override(i) => &self.overrides.get(i)?.limited,
                    PolicyRef::ClientIp | PolicyRef::Tenant(_) => return None,
                };
                self.note_full(&limited.local);
                limited.local.decide(id)
            }
            (BudgetKey::Tenant(tenant), PolicyRef::Tenant(i)) => {
                let limited = &self.tenants.get(i)?.limited;
                self.note_full(&limited.local);
                limited.local.decide(tenant)
            }
            (BudgetKey::Ip(_) | BudgetKey::Tenant(_), _) => return None,
        };
        Some(decision)
    }

    fn note_full<K: std::hash::Hash + Eq + Clone>(&self, local: &LocalLimiter<K>) {
        if local.is_full() {
            self.sweep_now.notify_one();
        }
    }

    /// Whether every decision is made in this process's memory (no `[rate_limit.redis]`):
    /// then [`RateLimits::decide_now`] decides without waiting.
    pub fn is_local(&self) -> bool {
        self.shared.is_none()
    }

    /// [`RateLimits::decide`] for a local limiter, at once; `None` also when the decision
    /// would need Redis.
    pub fn decide_now(&self, target: &Target) -> Option<Verdict> {
        if self.shared.is_some() {
            return None;
        }
        let policy = self.policy(target.policy)?.clone();
        let outcome = Verdict::Decided {
            decision: self.decide_local(target)?,
            policy,
        };
        self.count(&outcome, target);
        Some(outcome)
    }

    /// Decides one request: in Redis when configured (applying `on_error` when it fails),
    /// in memory otherwise. `None`: the target names no policy (not limited).
    pub async fn decide(&self, target: &Target) -> Option<Verdict> {
        let policy = self.policy(target.policy)?.clone();
        let outcome = match &self.shared {
            None => Verdict::Decided {
                decision: self.decide_local(target)?,
                policy,
            },
            Some(shared) => {
                let redis_key = format!("{}{}:{}", shared.prefix, policy.name, target.key);
                let started = Instant::now();
                let decided = shared
                    .store
                    .decide(&redis_key, policy.rate.interval(), policy.burst)
                    .await;
                self.metrics
                    .redis_durations
                    .observe(started.elapsed().as_secs_f64());
                match decided {
                    Ok(decision) => Verdict::Decided { policy, decision },
                    Err(error) => self.fall_back(shared, target, policy, error)?,
                }
            }
        };
        self.count(&outcome, target);
        Some(outcome)
    }

    /// Counts a decision in `pipeline_gateway_rate_limit_decisions_total`.
    fn count(&self, outcome: &Verdict, target: &Target) {
        let decision = match outcome {
            Verdict::Decided { decision, .. } if decision.allowed => "allow",
            Verdict::Decided { .. } => "deny",
            Verdict::AllowedBlind { .. } => "allow",
            Verdict::Unavailable { .. } => "deny",
        };
        let policy_name = match outcome {
            Verdict::Decided { policy, .. }
            | Verdict::AllowedBlind { policy }
            | Verdict::Unavailable { policy, .. } => &policy.name,
        };
        let labels = || DecisionLabels {
            policy: Name::from(policy_name),
            decision,
        };
        match outcome {
            Verdict::Decided { policy, decision } if decision.allowed => policy
                .allowed
                .get(|| self.metrics.decisions.get_or_create(&labels()).clone())
                .inc(),
            _ => self.metrics.decisions.get_or_create(&labels()).inc(),
        };
        if decision == "deny" {
            self.metrics.board.limited(policy_name, &target.key);
        }
    }

    fn fall_back(
        &self,
        shared: &Shared,
        target: &Target,
        policy: Policy,
        error: redis::StoreError,
    ) -> Option<Verdict> {
        self.metrics
            .fallbacks
            .get_or_create(&FallbackLabels {
                on_error: shared.on_error.as_str(),
            })
            .inc();
        let now_ms = u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = shared.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now_ms.saturating_sub(last) >= 10_000)
            && shared
                .last_warning
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %error,
                on_error = shared.on_error.as_str(),
                "rate-limit store failed; applying on_error (logged at most every 10 s)"
            );
        }
        Some(match shared.on_error {
            OnError::Local => Verdict::Decided {
                decision: self.decide_local(target)?,
                policy,
            },
            OnError::Allow => Verdict::AllowedBlind { policy },
            OnError::Deny => Verdict::Unavailable {
                policy,
                reason: error.to_string(),
            },
        })
    }

    /// Every policy's decisions so far: `(policy, allowed, denied)` (the status page).
    pub fn decision_totals(&self) -> Vec<(String, u64, u64)> {
        let policies = self
            .client_ip
            .iter()
            .map(|l| &l.policy)
            .chain(self.principal.iter().map(|l| &l.policy))
            .chain(self.rules.iter().map(|r| &r.limited.policy))
            .chain(self.overrides.iter().map(|o| &o.limited.policy))
            .chain(self.tenants.iter().map(|t| &t.limited.policy));
        policies
            .map(|policy| {
                let count = |decision| {
                    self.metrics
                        .decisions
                        .get_or_create(&DecisionLabels {
                            policy: Name::from(&policy.name),
                            decision,
                        })
                        .get()
                };
                (policy.name.to_string(), count("allow"), count("deny"))
            })
            .collect()
    }

    /// Sweeps every local budget; returns the keys left in all policies.
    pub fn sweep(&self) -> usize {
        let mut left = 0;
        let mut record = |policy: &Policy, keys: usize, overflowed: u64| {
            let labels = PolicyLabels {
                policy: Name::from(&policy.name),
            };
            self.metrics.keys.get_or_create(&labels).set(keys as i64);
            if overflowed > 0 {
                self.metrics
                    .overflowed
                    .get_or_create(&labels)
                    .inc_by(overflowed);
            }
            left += keys;
        };
        if let Some(l) = &self.client_ip {
            let keys = l.local.sweep();
            record(&l.policy, keys, l.local.take_overflowed());
        }
        let principal_like = self
            .principal
            .iter()
            .chain(self.rules.iter().map(|r| &r.limited))
            .chain(self.overrides.iter().map(|o| &o.limited))
            .chain(self.tenants.iter().map(|t| &t.limited));
        for l in principal_like {
            let keys = l.local.sweep();
            record(&l.policy, keys, l.local.take_overflowed());
        }
        left
    }

    /// Sweeps every `sweep_interval` (and when a policy fills up) until `shutdown` completes.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.sweep_interval) => {}
                () = self.sweep_now.notified() => {}
                () = &mut shutdown => return,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.sweep()).await;
        }
    }
}
