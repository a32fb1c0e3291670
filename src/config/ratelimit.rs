//! `[rate_limit]`: how many requests a client may make, and where the counters live.
//!
//! Owns the file format of the section and its check; the runtime form (limiters, policies)
//! is built by `crate::ratelimit` from a configuration that passed [`RateLimitConfig::check`].
//!
//! Shape (every key, with its default, is listed in `docs/ratelimit.md`):
//!
//! ```toml
//! [rate_limit]
//! principal = { rate = "50/s", burst = 100 }   # per verified principal, after auth
//! anonymous = { rate = "20/s", burst = 40 }    # per client IP, before auth
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
//! [rate_limit.redis]                           # share every limit between instances
//! url = "redis://127.0.0.1:6379"
//! timeout = "20ms"
//! on_error = "local"
//! ```
//!
//! Edge cases: a rate is exactly `N/s`, `N/m` or `N/h` with `N >= 1`; `burst` defaults to
//! `N` and must be at least 1. Policy names (given or derived: `principal`, `anonymous`,
//! `rule-<i>`, `override-<i>`) must be unique, because they name the budgets in Redis and in
//! the `RateLimit-Policy` header. Override principals must be verified ids (`key:<name>` or
//! `jwt:<iss>#<sub>`), never `anonymous`.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::Problems;
use crate::routing::catalog::{EndpointClass, ENDPOINT_NAMES};

/// `[rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limit of each verified principal (after authentication). `None`: only rules and
    /// overrides limit principals.
    #[serde(default)]
    pub principal: Option<LimitConfig>,
    /// The limit of each client IP (IPv6 by /64), applied to every request before
    /// authentication. `None`: no limit by IP.
    #[serde(default)]
    pub anonymous: Option<LimitConfig>,
    /// Peers whose `X-Forwarded-For` is believed (networks or single addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Limits per endpoint name or class; the first rule naming the request's endpoint wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Limits per principal id or verified tenant; checked before rules.
    #[serde(default)]
    pub overrides: Vec<OverrideConfig>,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub rate: String,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[[rate_limit.rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Policy name (default `rule-<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Endpoint names (`activate`, `pipelines.list`, …) or `class:<class>`.
    pub routes: Vec<String>,
    pub rate: String,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[[rate_limit.overrides]]`.
#[derive(Debug, Clone, Deserialize)]
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
    pub routes: Vec<String>,
    pub rate: String,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `[rate_limit.redis]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `rediss://…`.
    pub url: String,
    /// Longest wait for one decision before `on_error` applies.
    #[serde(default = "defaults::redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub on_error: OnError,
    /// Prefix of every key the gateway writes.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
}

/// What a decision does when Redis is slow or down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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

/// A parsed rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h` (`N >= 1`).
    pub fn parse(text: &str) -> Option<Rate> {
        let (count, unit) = text.split_once('/')?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count: u32 = count.parse().ok().filter(|n| *n >= 1)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { count, per })
    }

    /// Time to earn one request back (GCRA's emission interval). Never zero.
    pub fn interval(self) -> Duration {
        (self.per / self.count).max(Duration::from_nanos(1))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Largest `burst` accepted.
pub const MAX_BURST: u32 = 1_000_000;

/// Parses an entry of `trusted_proxies`: a network, or one address.
pub fn parse_trusted_proxy(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `route` names an endpoint or a class (`class:<class>`).
pub fn is_known_route(route: &str) -> bool {
    match route.strip_prefix("class:") {
        Some(class) => EndpointClass::ALL.iter().any(|c| c.as_str() == class),
        None => ENDPOINT_NAMES.contains(&route),
    }
}

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

    /// Adds every problem of the section to `problems`, each with its key path under `at`.
    pub fn check(&self, at: &str, problems: &mut Problems) {
        let mut names: Vec<(String, String)> = Vec::new();
        for (key, limit) in [
            ("principal", &self.principal),
            ("anonymous", &self.anonymous),
        ] {
            if let Some(limit) = limit {
                check_limit(&format!("{at}.{key}"), &limit.rate, limit.burst, problems);
                names.push((key.to_owned(), format!("{at}.{key}")));
            }
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if parse_trusted_proxy(proxy).is_none() {
                problems.push(
                    format!("{at}.trusted_proxies[{i}]"),
                    format!("\"{proxy}\" is not an IP address or network (a.b.c.d/n, x::/n)"),
                );
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let here = format!("{at}.rules[{i}]");
            check_limit(&here, &rule.rate, rule.burst, problems);
            if rule.routes.is_empty() {
                problems.push(format!("{here}.routes"), "at least one route is required");
            }
            check_routes(&here, &rule.routes, problems);
            names.push((self.rule_name(i), format!("{here}.name")));
        }
        for (i, over) in self.overrides.iter().enumerate() {
            let here = format!("{at}.overrides[{i}]");
            check_limit(&here, &over.rate, over.burst, problems);
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
            check_routes(&here, &over.routes, problems);
            names.push((self.override_name(i), format!("{here}.name")));
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
            if let Err(error) = redis::Client::open(redis.url.as_str()) {
                problems.push(
                    format!("{at}.redis.url"),
                    format!("\"{}\" is not a Redis URL: {error}", redis.url),
                );
            }
            if redis.timeout.is_zero() {
                problems.push(format!("{at}.redis.timeout"), "must be more than zero");
            }
        }
    }
}

fn check_limit(at: &str, rate: &str, burst: Option<u32>, problems: &mut Problems) {
    if Rate::parse(rate).is_none() {
        problems.push(
            format!("{at}.rate"),
            format!("\"{rate}\" is not N/s, N/m or N/h"),
        );
    }
    if let Some(burst) = burst {
        if !(1..=MAX_BURST).contains(&burst) {
            problems.push(
                format!("{at}.burst"),
                format!("{burst} is outside 1..={MAX_BURST}"),
            );
        }
    }
}

fn check_routes(at: &str, routes: &[String], problems: &mut Problems) {
    for (j, route) in routes.iter().enumerate() {
        if !is_known_route(route) {
            problems.push(
                format!("{at}.routes[{j}]"),
                format!(
                    "unknown route \"{route}\" (an endpoint name such as \"activate\", or \
                     \"class:<class>\" such as \"class:lifecycle\")"
                ),
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
        assert_eq!(
            Rate::parse("5/s"),
            Some(Rate {
                count: 5,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            Rate::parse("30/m").map(|r| r.interval()),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            Rate::parse("1/h").map(|r| r.to_string()),
            Some("1/h".into())
        );
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
            assert_eq!(Rate::parse(bad), None, "{bad}");
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
    fn every_rate_limit_problem_is_listed_with_its_key_path() {
        let lines = problems(
            r#"
            [rate_limit]
            principal = { rate = "50/x", burst = 0 }
            trusted_proxies = ["10.0.0.0/33", "proxy.local"]
            max_keys = 0
            [[rate_limit.rules]]
            routes = ["activate"]
            rate = "5/s"
            [[rate_limit.rules]]
            name = "principal"
            routes = ["strat", "class:nope"]
            rate = "5/x"
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
            "rate_limit.principal.rate: \"50/x\" is not N/s, N/m or N/h",
            "rate_limit.principal.burst: 0 is outside 1..=1000000",
            "rate_limit.trusted_proxies[0]: \"10.0.0.0/33\" is not an IP address or network (a.b.c.d/n, x::/n)",
            "rate_limit.trusted_proxies[1]: \"proxy.local\" is not an IP address or network (a.b.c.d/n, x::/n)",
            "rate_limit.max_keys: must be at least 1",
            "rate_limit.rules[1].rate: \"5/x\" is not N/s, N/m or N/h",
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
            lines
                .iter()
                .any(|l| l.starts_with("rate_limit.rules[1].routes[0]: unknown route \"strat\"")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l
                    .starts_with("rate_limit.rules[1].routes[1]: unknown route \"class:nope\"")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("rate_limit.redis.url:")),
            "{lines:#?}"
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
    }
}
