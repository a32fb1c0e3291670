//! `[rate_limit]`: how many requests a client may make, and where the counters live.
//!
//! Owns the file format of the section and its check (pure: no I/O); values are typed when the
//! file is read (rates, endpoint references, proxies). The runtime form (limiters, policies) is
//! built by `crate::ratelimit` from a configuration that passed [`RateLimitConfig::check`].
//!
//! Shape (every key, with its default, is listed in `docs/ratelimit.md`):
//!
//! ```toml
//! [rate_limit]
//! principal = { rate = "50/s", burst = 100 }   # per verified principal, after auth
//! client_ip = { rate = "20/s", burst = 40 }    # per client IP, before auth (alias: anonymous)
//! trusted_proxies = ["10.0.0.0/8"]
//!
//! [[rate_limit.rules]]                         # per endpoint name or class:<class>
//! routes = ["activate", "start", "stop"]
//! rate = "5/s"
//! burst = 10
//!
//! [[rate_limit.overrides]]                     # per principal id or verified tenant
//! principals = ["key:ci-bot"]
//! rate = "500/s"
//! burst = 1000
//!
//! [[rate_limit.tenants]]                       # ONE budget shared by a whole tenant
//! tenants = ["acme", "beta-*"]                 # names or globs; each tenant its own budget
//! rate = "100/s"
//! burst = 200
//!
//! [rate_limit.redis]                           # share every limit between instances
//! url = "redis://127.0.0.1:6379"               # one server; or, instead of url:
//! # cluster = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]   # Redis Cluster seeds
//! # sentinel = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"] # Sentinels, and
//! # master_name = "mymaster"                                        # the master they name
//! timeout = "20ms"
//! on_error = "local"
//! ```
//!
//! Edge cases: a rate is exactly `N/s`, `N/m` or `N/h` with `N >= 1`; `burst` defaults to
//! `N` and must be at least 1. Policy names (given or derived: `principal`, `client_ip`,
//! `rule-<i>`, `override-<i>`, `tenant-<i>`) must be unique, because they name the budgets in Redis and in
//! the `RateLimit-Policy` header. Override principals must be verified ids (`key:<name>` or
//! `jwt:<iss>#<sub>`), never `anonymous`. `[rate_limit.redis]` names exactly one of `url`,
//! `cluster` or `sentinel` (`master_name` only, and always, with `sentinel`); every address is
//! parsed here as the client will parse it, none is connected to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{EndpointRef, NameGlob, TrustedProxy};
use super::Problems;

pub use super::values::Rate;

/// `[rate_limit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limit of each verified principal (after authentication). `None`: only rules and
    /// overrides limit principals.
    #[serde(default)]
    pub principal: Option<LimitConfig>,
    /// The limit of each client IP (IPv6 by /64), applied to every request before
    /// authentication. `None`: no limit by IP. (`anonymous` is its former name.)
    #[serde(default, alias = "anonymous")]
    pub client_ip: Option<LimitConfig>,
    /// Peers whose `X-Forwarded-For` is believed (networks or single addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Limits per endpoint name or class; the first rule naming the request's endpoint wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Limits per principal id or verified tenant; checked before rules.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
    /// Budgets shared by every principal of a verified tenant, on top of the principal's own.
    #[serde(default)]
    pub tenants: Vec<TenantLimitConfig>,
    /// Most keys one policy keeps in memory; past it, new keys share one overflow budget
    /// until the sweep frees room.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
    /// How often idle keys (whose budget is full again) are dropped from memory.
    #[serde(default = "defaults::sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Keep every budget in Redis, shared by all gateway instances.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// `{ rate = "N/s", burst = B }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub rate: Rate,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[[rate_limit.rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Policy name (default `rule-<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Endpoint names (`activate`, `pipelines.list`, …) or `class:<class>`.
    pub routes: Vec<EndpointRef>,
    pub rate: Rate,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[[rate_limit.overrides]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// Policy name (default `override-<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Verified principal ids (`key:<name>`, `jwt:<iss>#<sub>`).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Verified tenants.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Restricts the override to these endpoints (same spelling as rules); empty: all.
    #[serde(default)]
    pub routes: Vec<EndpointRef>,
    pub rate: Rate,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[[rate_limit.tenants]]`: one budget per matching tenant, shared by all its principals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitConfig {
    /// Policy name (default `tenant-<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Verified tenants, by name or glob (`"beta-*"`); each matching tenant has a budget of
    /// its own.
    pub tenants: Vec<NameGlob>,
    /// Restricts the budget to these endpoints (same spelling as rules); empty: all.
    #[serde(default)]
    pub routes: Vec<EndpointRef>,
    pub rate: Rate,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[rate_limit.redis]`: where the shared budgets live — exactly one of `url` (one server),
/// `cluster` (seed nodes of a Redis Cluster) or `sentinel` (with `master_name`: the master
/// a set of Sentinels names). The kinds differ only in how a key reaches its server; the
/// script, `timeout` and `on_error` are the same for all ([`RedisConfig::target`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One server: `redis://host:port[/db]` (or `redis://user:password@…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, any reachable subset of the
    /// nodes: the rest is discovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// Redis Sentinels (`redis://host:26379`) that name the master `master_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Vec<String>>,
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    /// Longest wait for one decision before `on_error` applies.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub on_error: OnError,
    /// Prefix of every key the gateway writes.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
}

/// Which kind of Redis `[rate_limit.redis]` names, for a configuration that passed its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTarget<'a> {
    /// One server.
    Single(&'a str),
    /// A Redis Cluster, by its seed nodes.
    Cluster(&'a [String]),
    /// The master `master_name` of these Sentinels.
    Sentinel {
        sentinels: &'a [String],
        master_name: &'a str,
    },
}

impl RedisConfig {
    /// The server(s) to use. `None` when not exactly one kind is given (a problem
    /// [`RateLimitConfig::check`] reports).
    pub fn target(&self) -> Option<RedisTarget<'_>> {
        match (&self.url, &self.cluster, &self.sentinel) {
            (Some(url), None, None) => Some(RedisTarget::Single(url)),
            (None, Some(seeds), None) => Some(RedisTarget::Cluster(seeds)),
            (None, None, Some(sentinels)) => Some(RedisTarget::Sentinel {
                sentinels,
                master_name: self.master_name.as_deref()?,
            }),
            _ => None,
        }
    }

    /// A configuration for one server at `url`, with the defaults.
    pub fn single(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: Some(url.into()),
            cluster: None,
            sentinel: None,
            master_name: None,
            timeout: defaults::redis_timeout(),
            on_error: OnError::default(),
            key_prefix: defaults::key_prefix(),
        }
    }

    /// Adds every problem of `[rate_limit.redis]` to `problems`, each with its key path
    /// under `at`. Parses every address (as the client will), connects to none.
    fn check(&self, at: &str, problems: &mut Problems) {
        let given: Vec<&str> = [
            ("url", self.url.is_some()),
            ("cluster", self.cluster.is_some()),
            ("sentinel", self.sentinel.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect();
        match given.len() {
            0 => problems.push(
                at,
                "one of url (one server), cluster (seed nodes) or sentinel (with master_name) \
                 is required",
            ),
            1 => {}
            _ => problems.push(
                at,
                format!(
                    "{} exclude each other: give exactly one of url, cluster or sentinel",
                    given.join(" and ")
                ),
            ),
        }
        if let Some(url) = &self.url {
            if let Err(error) = redis::Client::open(url.as_str()) {
                problems.push(
                    format!("{at}.url"),
                    format!("\"{url}\" is not a Redis URL: {error}"),
                );
            }
        }
        if let Some(seeds) = &self.cluster {
            let parsed = check_addresses(&format!("{at}.cluster"), seeds, problems);
            if seeds.is_empty() {
                problems.push(
                    format!("{at}.cluster"),
                    "at least one seed node is required",
                );
            } else if parsed {
                // What the cluster client refuses before connecting: UNIX sockets (a cluster
                // announces TCP addresses), seeds with different credentials or databases.
                if let Err(error) = redis::cluster::ClusterClient::new(seeds.clone()) {
                    problems.push(format!("{at}.cluster"), error.to_string());
                }
            }
        }
        if let Some(sentinels) = &self.sentinel {
            let here = format!("{at}.sentinel");
            if check_addresses(&here, sentinels, problems) {
                for (i, sentinel) in sentinels.iter().enumerate() {
                    let db = redis::IntoConnectionInfo::into_connection_info(sentinel.as_str())
                        .map(|info| info.redis_settings().db())
                        .unwrap_or(0);
                    if db != 0 {
                        problems.push(
                            format!("{here}[{i}]"),
                            format!("\"{sentinel}\": a Sentinel has no databases (drop /{db})"),
                        );
                    }
                }
            }
            if sentinels.is_empty() {
                problems.push(here, "at least one Sentinel is required");
            }
            match &self.master_name {
                None => problems.push(
                    format!("{at}.master_name"),
                    "is required with sentinel (the name the Sentinels monitor the master under)",
                ),
                Some(name) if name.is_empty() => {
                    problems.push(format!("{at}.master_name"), "must not be empty")
                }
                Some(_) => {}
            }
        } else if self.master_name.is_some() {
            problems.push(
                format!("{at}.master_name"),
                "only means something with sentinel",
            );
        }
        if self.timeout.is_zero() {
            problems.push(format!("{at}.timeout"), "must be more than zero");
        }
    }
}

/// Checks that every entry of `addresses` is a Redis URL; whether all were.
fn check_addresses(at: &str, addresses: &[String], problems: &mut Problems) -> bool {
    let mut all = true;
    for (i, address) in addresses.iter().enumerate() {
        if let Err(error) = redis::IntoConnectionInfo::into_connection_info(address.as_str()) {
            problems.push(
                format!("{at}[{i}]"),
                format!("\"{address}\" is not a Redis URL: {error}"),
            );
            all = false;
        }
    }
    all
}

/// What a decision does when Redis is slow or down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Decide with this instance's own in-memory limiter (same policy, local budget).
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// Refuse the request with 503 `ServiceUnavailable`.
    Deny,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Local => "local",
            OnError::Allow => "allow",
            OnError::Deny => "deny",
        }
    }
}

mod defaults {
    use std::time::Duration;
    pub fn max_keys() -> usize {
        100_000
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn redis_timeout() -> Duration {
        Duration::from_millis(20)
    }
    pub fn key_prefix() -> String {
        "pipeline-gateway:rl:".to_owned()
    }
}

/// Largest `burst` accepted.
pub const MAX_BURST: u32 = 1_000_000;

/// A policy name usable in headers and Redis keys: 1 to 64 of `[A-Za-z0-9._-]`.
fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RateLimitConfig {
    /// The policy name of `rules[index]` (given, or `rule-<index>`).
    pub fn rule_name(&self, index: usize) -> String {
        self.rules[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("rule-{index}"))
    }

    /// The policy name of `overrides[index]` (given, or `override-<index>`).
    pub fn override_name(&self, index: usize) -> String {
        self.overrides[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("override-{index}"))
    }

    /// The policy name of `tenants[index]` (given, or `tenant-<index>`).
    pub fn tenant_name(&self, index: usize) -> String {
        self.tenants[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("tenant-{index}"))
    }

    /// Adds every problem of the section to `problems`, each with its key path under `at`.
    pub fn check(&self, at: &str, problems: &mut Problems) {
        let mut names: Vec<(String, String)> = Vec::new();
        for (key, limit) in [
            ("principal", &self.principal),
            ("client_ip", &self.client_ip),
        ] {
            if let Some(limit) = limit {
                check_burst(&format!("{at}.{key}"), limit.burst, problems);
                names.push((key.to_owned(), format!("{at}.{key}")));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let here = format!("{at}.rules[{i}]");
            check_burst(&here, rule.burst, problems);
            if rule.routes.is_empty() {
                problems.push(format!("{here}.routes"), "at least one route is required");
            }
            names.push((self.rule_name(i), format!("{here}.name")));
        }
        for (i, over) in self.overrides.iter().enumerate() {
            let here = format!("{at}.overrides[{i}]");
            check_burst(&here, over.burst, problems);
            if over.principals.is_empty() && over.tenants.is_empty() {
                problems.push(
                    here.clone(),
                    "an override needs principals or tenants (or both)",
                );
            }
            for (j, id) in over.principals.iter().enumerate() {
                let verified = id.strip_prefix("key:").is_some_and(|name| !name.is_empty())
                    || id
                        .strip_prefix("jwt:")
                        .and_then(|rest| rest.split_once('#'))
                        .is_some_and(|(iss, sub)| !iss.is_empty() && !sub.is_empty());
                if !verified {
                    problems.push(
                        format!("{here}.principals[{j}]"),
                        format!("\"{id}\" is not a principal id (key:<name> or jwt:<iss>#<sub>)"),
                    );
                }
            }
            for (j, tenant) in over.tenants.iter().enumerate() {
                if tenant.is_empty() {
                    problems.push(format!("{here}.tenants[{j}]"), "must not be empty");
                }
            }
            names.push((self.override_name(i), format!("{here}.name")));
        }
        for (i, budget) in self.tenants.iter().enumerate() {
            let here = format!("{at}.tenants[{i}]");
            check_burst(&here, budget.burst, problems);
            if budget.tenants.is_empty() {
                problems.push(format!("{here}.tenants"), "at least one tenant is required");
            }
            names.push((self.tenant_name(i), format!("{here}.name")));
        }
        for (i, (name, path)) in names.iter().enumerate() {
            if !valid_policy_name(name) {
                problems.push(
                    path.clone(),
                    format!("\"{name}\" is not 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'"),
                );
            } else if names[..i].iter().any(|(other, _)| other == name) {
                problems.push(path.clone(), format!("duplicate policy name \"{name}\""));
            }
        }
        if self.max_keys == 0 {
            problems.push(format!("{at}.max_keys"), "must be at least 1");
        }
        if self.sweep_interval.is_zero() {
            problems.push(format!("{at}.sweep_interval"), "must be more than zero");
        }
        if let Some(redis) = &self.redis {
            redis.check(&format!("{at}.redis"), problems);
        }
    }
}

fn check_burst(at: &str, burst: Option<u32>, problems: &mut Problems) {
    if let Some(burst) = burst {
        if !(1..=MAX_BURST).contains(&burst) {
            problems.push(
                format!("{at}.burst"),
                format!("{burst} is outside 1..={MAX_BURST}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    const BASE: &str = r#"
        [[upstreams]]
        name = "m"
        endpoints = ["http://127.0.0.1:1"]
        [[routes]]
        default = true
        upstream = "m"
    "#;

    fn problems(section: &str) -> Vec<String> {
        match Config::from_toml(&format!("{BASE}\n{section}")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn rates_parse_in_three_units_only() {
        let five = Rate {
            count: 5,
            per: Duration::from_secs(1),
        };
        assert_eq!(Rate::parse("5/s"), Ok(five));
        assert_eq!(
            Rate::parse("30/m").map(|r| r.interval()),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(Rate::parse("1/h").map(|r| r.to_string()), Ok("1/h".into()));
        for bad in [
            "5/x",
            "0/s",
            "-1/s",
            "/s",
            "5",
            "5/S",
            " 5/s",
            "5/sec",
            "99999999999/s",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_issue_example_is_valid() {
        let lines = problems(
            r#"
            [rate_limit]
            principal = { rate = "50/s", burst = 100 }
            anonymous = { rate = "20/s", burst = 40 }
            trusted_proxies = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
            [[rate_limit.rules]]
            routes = ["activate", "start", "stop", "class:compiler"]
            rate = "5/s"
            burst = 10
            [[rate_limit.overrides]]
            principals = ["key:ci", "jwt:https://idp#alice"]
            tenants = ["acme"]
            rate = "1000/m"
            [rate_limit.redis]
            url = "redis://127.0.0.1:6379"
            on_error = "deny"
            timeout = "15ms"
        "#,
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn a_value_that_does_not_parse_names_its_key_path_and_line() {
        for (section, expected) in [
            (
                "[rate_limit]\nprincipal = { rate = \"50/x\" }",
                "rate_limit.principal.rate: \"50/x\" is not a rate",
            ),
            (
                "[rate_limit]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]",
                "rate_limit.trusted_proxies[1]: \"proxy.local\" is not an IP address or network",
            ),
            (
                "[[rate_limit.rules]]\nroutes = [\"activate\", \"strat\"]\nrate = \"5/s\"",
                "rate_limit.rules[0].routes[1]: unknown endpoint \"strat\"",
            ),
            (
                "[[rate_limit.rules]]\nroutes = [\"class:nope\"]\nrate = \"5/s\"",
                "rate_limit.rules[0].routes[0]: unknown class \"nope\"",
            ),
        ] {
            let lines = problems(section);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].starts_with(expected), "{lines:?}");
            assert!(lines[0].contains("(line "), "{lines:?}");
        }
    }

    #[test]
    fn every_rate_limit_problem_is_listed_with_its_key_path() {
        let lines = problems(
            r#"
            [rate_limit]
            principal = { rate = "50/s", burst = 0 }
            max_keys = 0
            [[rate_limit.rules]]
            routes = ["activate"]
            rate = "5/s"
            [[rate_limit.rules]]
            name = "principal"
            routes = ["start", "class:lifecycle"]
            rate = "5/s"
            [[rate_limit.rules]]
            routes = []
            rate = "1/h"
            [[rate_limit.overrides]]
            principals = ["anonymous", "jwt:iss-without-sub"]
            rate = "1/s"
            [[rate_limit.overrides]]
            name = "bad name"
            rate = "1/s"
            [rate_limit.redis]
            url = "http://not-redis"
            timeout = "0s"
        "#,
        );
        let expected = [
            "rate_limit.principal.burst: 0 is outside 1..=1000000",
            "rate_limit.max_keys: must be at least 1",
            "rate_limit.rules[1].name: duplicate policy name \"principal\"",
            "rate_limit.rules[2].routes: at least one route is required",
            "rate_limit.overrides[0].principals[0]: \"anonymous\" is not a principal id (key:<name> or jwt:<iss>#<sub>)",
            "rate_limit.overrides[0].principals[1]: \"jwt:iss-without-sub\" is not a principal id (key:<name> or jwt:<iss>#<sub>)",
            "rate_limit.overrides[1]: an override needs principals or tenants (or both)",
            "rate_limit.overrides[1].name: \"bad name\" is not 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'",
            "rate_limit.redis.timeout: must be more than zero",
        ];
        for line in expected {
            assert!(
                lines.iter().any(|l| l == line),
                "missing {line}\nin {lines:#?}"
            );
        }
        assert!(
            lines.iter().any(|l| l.starts_with("rate_limit.redis.url:")),
            "{lines:#?}"
        );
    }

    #[test]
    fn tenant_budgets_need_tenants_and_unique_names() {
        let lines = problems(
            r#"
            [rate_limit]
            principal = { rate = "50/s" }
            [[rate_limit.tenants]]
            tenants = ["acme", "beta-*"]
            rate = "100/s"
            [[rate_limit.tenants]]
            name = "principal"
            tenants = []
            rate = "1/s"
            burst = 0
        "#,
        );
        for line in [
            "rate_limit.tenants[1].tenants: at least one tenant is required",
            "rate_limit.tenants[1].burst: 0 is outside 1..=1000000",
            "rate_limit.tenants[1].name: duplicate policy name \"principal\"",
        ] {
            assert!(
                lines.iter().any(|l| l == line),
                "missing {line} in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), 3, "{lines:#?}");
    }

    #[test]
    fn anonymous_is_still_read_as_client_ip() {
        let config = Config::from_toml(&format!(
            "{BASE}\n[rate_limit]\nanonymous = {{ rate = \"5/s\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            config
                .rate_limit
                .unwrap()
                .client_ip
                .unwrap()
                .rate
                .to_string(),
            "5/s"
        );
    }

    #[test]
    fn defaults_are_applied() {
        let config = Config::from_toml(&format!(
            "{BASE}\n[rate_limit]\n[rate_limit.redis]\nurl = \"redis://127.0.0.1:1\"\n"
        ))
        .unwrap();
        let rl = config.rate_limit.unwrap();
        assert_eq!(rl.max_keys, 100_000);
        assert_eq!(rl.sweep_interval, Duration::from_secs(10));
        let redis = rl.redis.unwrap();
        assert_eq!(redis.timeout, Duration::from_millis(20));
        assert_eq!(redis.on_error, OnError::Local);
        assert_eq!(redis.key_prefix, "pipeline-gateway:rl:");
        assert_eq!(
            redis.target(),
            Some(RedisTarget::Single("redis://127.0.0.1:1"))
        );
    }

    fn redis_section(keys: &str) -> Result<RedisConfig, Vec<String>> {
        let text = format!("{BASE}\n[rate_limit]\n[rate_limit.redis]\n{keys}\n");
        match Config::from_toml(&text) {
            Ok(config) => Ok(config.rate_limit.unwrap().redis.unwrap()),
            Err(ConfigError::Invalid(problems)) => {
                Err(problems.iter().map(|p| p.to_string()).collect())
            }
            Err(other) => Err(vec![other.to_string()]),
        }
    }

    #[test]
    fn redis_is_one_server_a_cluster_or_a_sentinel_master() {
        let seeds = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"].map(String::from);
        let sentinels = ["redis://127.0.0.1:26379", "redis://s2:26379"].map(String::from);
        let cluster =
            redis_section(r#"cluster = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]"#)
                .unwrap();
        assert_eq!(cluster.target(), Some(RedisTarget::Cluster(&seeds)));
        let sentinel = redis_section(
            r#"sentinel = ["redis://127.0.0.1:26379", "redis://s2:26379"]
               master_name = "mymaster"
               on_error = "deny""#,
        )
        .unwrap();
        assert_eq!(
            sentinel.target(),
            Some(RedisTarget::Sentinel {
                sentinels: &sentinels,
                master_name: "mymaster"
            })
        );
        assert_eq!(sentinel.on_error, OnError::Deny);
        // The kinds not given are not written back (GET /config, the config hash).
        let json = serde_json::to_string(&sentinel).unwrap();
        assert!(
            !json.contains("\"url\"") && !json.contains("\"cluster\""),
            "{json}"
        );
    }

    #[test]
    fn redis_kinds_exclude_each_other_and_each_is_checked() {
        for (keys, expected) in [
            (
                "timeout = \"5ms\"",
                vec![
                    "rate_limit.redis: one of url (one server), cluster (seed nodes) or \
                      sentinel (with master_name) is required",
                ],
            ),
            (
                "url = \"redis://a:1\"\ncluster = [\"redis://b:1\"]",
                vec![
                    "rate_limit.redis: url and cluster exclude each other: give exactly one \
                      of url, cluster or sentinel",
                ],
            ),
            (
                "url = \"redis://a:1\"\ncluster = [\"redis://b:1\"]\nsentinel = \
                 [\"redis://c:1\"]\nmaster_name = \"m\"",
                vec![
                    "rate_limit.redis: url and cluster and sentinel exclude each other: give \
                      exactly one of url, cluster or sentinel",
                ],
            ),
            (
                "cluster = []",
                vec!["rate_limit.redis.cluster: at least one seed node is required"],
            ),
            (
                "cluster = [\"redis://a:1\", \"http://b:1\"]",
                vec!["rate_limit.redis.cluster[1]: \"http://b:1\" is not a Redis URL"],
            ),
            (
                "cluster = [\"redis://a:1\", \"redis+unix:///tmp/r.sock\"]",
                vec!["rate_limit.redis.cluster: This library cannot use unix socket"],
            ),
            (
                "sentinel = [\"redis://a:26379\"]",
                vec!["rate_limit.redis.master_name: is required with sentinel"],
            ),
            (
                "sentinel = [\"redis://a:26379/2\"]\nmaster_name = \"\"",
                vec![
                    "rate_limit.redis.sentinel[0]: \"redis://a:26379/2\": a Sentinel has no \
                     databases (drop /2)",
                    "rate_limit.redis.master_name: must not be empty",
                ],
            ),
            (
                "sentinel = []\nmaster_name = \"m\"",
                vec!["rate_limit.redis.sentinel: at least one Sentinel is required"],
            ),
            (
                "url = \"redis://a:1\"\nmaster_name = \"m\"",
                vec!["rate_limit.redis.master_name: only means something with sentinel"],
            ),
        ] {
            let lines = redis_section(keys).expect_err(keys);
            assert_eq!(lines.len(), expected.len(), "{keys}: {lines:#?}");
            for (line, expected) in lines.iter().zip(&expected) {
                assert!(
                    line.starts_with(expected),
                    "{keys}: {line}\nexpected {expected}"
                );
            }
        }
    }
}
