//! Routing: what a request is ([`catalog`]) and which upstream serves it ([`RouteTable`]).
//!
//! Two steps, at two places in the stack. [`Classify`] runs early: it names the endpoint
//! (needed by auth for the minimum role and by rate limiting for rules) and answers unknown
//! paths (404) and wrong methods (405) without an upstream trip. [`RouteTable::select`] runs
//! after authentication, because a route may be chosen by the *verified* tenant.
//!
//! Matching: `[[routes]]` are tried in order; a route matches when every criterion it gives
//! matches (`pipelines` globs on the pipeline name, `tenants`, `paths` globs on the path). A
//! route with `pipelines` never matches a request that names no pipeline; such requests go to
//! the first `default = true` route. A request no route matches is 404 `UnknownEndpoint`.

pub mod catalog;

use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::auth::Principal;
use crate::body::Request;
use crate::check::RequestCheck;
use crate::config::{Config, Problems};
use crate::errors::GatewayError;
use crate::proxy::{SelectedUpstream, UpstreamPool};
use crate::telemetry::RequestLog;

pub use catalog::{classify, Access, Classified, Endpoint, EndpointClass};

/// Classifies the request and stores the [`Classified`] result in its extensions.
#[derive(Clone, Copy)]
pub struct Classify;

impl RequestCheck for Classify {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let classified = classify(request.method(), request.uri().path())?;
        if let Some(log) = request.extensions().get::<RequestLog>() {
            log.set_endpoint(classified.endpoint.name);
        }
        request.extensions_mut().insert(classified);
        Ok(())
    }
}

/// A set of globs; `*` alone matches everything without running a matcher.
#[derive(Debug, Clone)]
enum Patterns {
    Any,
    Set(GlobSet),
}

impl Patterns {
    fn build(globs: &[String], path_like: bool) -> Result<Patterns, (usize, globset::Error)> {
        if globs.iter().any(|g| g == "*" && !path_like) {
            return Ok(Patterns::Any);
        }
        let mut builder = GlobSetBuilder::new();
        for (i, glob) in globs.iter().enumerate() {
            let glob = if path_like {
                GlobBuilder::new(glob).literal_separator(true).build()
            } else {
                Glob::new(glob)
            }
            .map_err(|e| (i, e))?;
            builder.add(glob);
        }
        builder.build().map(Patterns::Set).map_err(|e| (0, e))
    }

    fn is_match(&self, value: &str) -> bool {
        match self {
            Patterns::Any => true,
            Patterns::Set(set) => set.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    pipelines: Option<Patterns>,
    tenants: Vec<String>,
    paths: Option<Patterns>,
    upstream: usize,
}

/// The compiled `[[routes]]`, and the index of the upstream each one names.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    default: Option<usize>,
}

/// What a request is matched on.
#[derive(Debug, Clone, Copy)]
pub struct RouteKey<'a> {
    pub path: &'a str,
    pub pipeline: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

impl RouteTable {
    /// Builds the table; `Err` carries every problem (see [`RouteTable::check`]).
    pub fn build(config: &Config) -> Result<RouteTable, Problems> {
        let mut problems = Problems::default();
        let table = Self::compile(config, &mut problems);
        if problems.is_empty() {
            Ok(table)
        } else {
            Err(problems)
        }
    }

    /// Adds the routing problems of `config` to `problems`.
    pub fn check(config: &Config, problems: &mut Problems) {
        Self::compile(config, problems);
    }

    fn compile(config: &Config, problems: &mut Problems) -> RouteTable {
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut default = None;
        if config.routes.is_empty() {
            problems.push("routes", "at least one route is required");
        }
        for (i, route) in config.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let upstream = config
                .upstreams
                .iter()
                .position(|u| u.name == route.upstream);
            if upstream.is_none() {
                problems.push(
                    format!("{at}.upstream"),
                    format!("unknown upstream \"{}\"", route.upstream),
                );
            }
            let mut patterns = |key: &str, globs: &[String], path_like: bool| {
                if globs.is_empty() {
                    return None;
                }
                match Patterns::build(globs, path_like) {
                    Ok(p) => Some(p),
                    Err((j, e)) => {
                        problems.push(format!("{at}.{key}[{j}]"), format!("invalid glob: {e}"));
                        None
                    }
                }
            };
            let pipelines = patterns("pipelines", &route.pipelines, false);
            let paths = patterns("paths", &route.paths, true);
            if route.default {
                if default.is_some() {
                    problems.push(format!("{at}.default"), "only one route can be the default");
                } else {
                    default = Some(i);
                }
            } else if route.pipelines.is_empty()
                && route.paths.is_empty()
                && route.tenants.is_empty()
            {
                problems.push(
                    at.clone(),
                    "a route needs pipelines, paths or tenants, or default = true",
                );
            }
            routes.push(Route {
                pipelines,
                tenants: route.tenants.clone(),
                paths,
                upstream: upstream.unwrap_or(0),
            });
        }
        RouteTable { routes, default }
    }

    /// The index (into `config.upstreams`) of the upstream serving `key`.
    pub fn select(&self, key: RouteKey<'_>) -> Option<usize> {
        let matched = self.routes.iter().find(|route| {
            let pipeline_ok = match (&route.pipelines, key.pipeline) {
                (None, _) => true,
                (Some(p), Some(name)) => p.is_match(name),
                (Some(_), None) => false,
            };
            pipeline_ok
                && (route.tenants.is_empty()
                    || key
                        .tenant
                        .is_some_and(|t| route.tenants.iter().any(|r| r == t)))
                && route.paths.as_ref().is_none_or(|p| p.is_match(key.path))
        });
        match matched {
            Some(route) => Some(route.upstream),
            None if key.pipeline.is_none() => self.default.map(|i| self.routes[i].upstream),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[[upstreams]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[upstreams]]\nname = \"b\"\nendpoints = [\"http://127.0.0.1:2\"]\n{routes}"
        );
        let config: Config = toml::from_str(&text).unwrap();
        RouteTable::build(&config).unwrap()
    }

    fn key<'a>(path: &'a str, pipeline: Option<&'a str>, tenant: Option<&'a str>) -> RouteKey<'a> {
        RouteKey {
            path,
            pipeline,
            tenant,
        }
    }

    #[test]
    fn globs_are_tried_in_order_and_default_takes_pipelineless_paths() {
        let t = table(
            "[[routes]]\npipelines = [\"prod-*\", \"billing\"]\nupstream = \"b\"\n\
             [[routes]]\npipelines = [\"*\"]\nupstream = \"a\"\ndefault = true\n",
        );
        assert_eq!(t.select(key("/x", Some("prod-1"), None)), Some(1));
        assert_eq!(t.select(key("/x", Some("billing"), None)), Some(1));
        assert_eq!(t.select(key("/x", Some("billing2"), None)), Some(0));
        assert_eq!(t.select(key("/v0/pipelines", None, None)), Some(0));
    }

    #[test]
    fn tenant_and_path_criteria_must_all_match() {
        let t = table(
            "[[routes]]\ntenants = [\"acme\"]\nupstream = \"b\"\n\
             [[routes]]\npaths = [\"/v0/config/*\"]\nupstream = \"b\"\n",
        );
        assert_eq!(t.select(key("/v0/pipelines", None, Some("acme"))), Some(1));
        assert_eq!(t.select(key("/v0/pipelines", None, Some("other"))), None);
        assert_eq!(t.select(key("/v0/config/demos", None, None)), Some(1));
        assert_eq!(t.select(key("/v0/config/a/b", None, None)), None);
    }

    #[test]
    fn problems_name_their_key_paths() {
        let text = "[[upstreams]]\nname = \"a\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                    [[routes]]\npipelines = [\"[\"]\nupstream = \"eu\"\ndefault = true\n\
                    [[routes]]\nupstream = \"a\"\ndefault = true\n";
        let config: Config = toml::from_str(text).unwrap();
        let problems: Vec<String> = RouteTable::build(&config)
            .unwrap_err()
            .into_vec()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(
            problems.contains(&"routes[0].upstream: unknown upstream \"eu\"".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("routes[0].pipelines[0]: invalid glob")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"routes[1].default: only one route can be the default".to_owned()),
            "{problems:?}"
        );
    }
}

/// Chooses the upstream for the request and stores it as [`SelectedUpstream`].
#[derive(Clone)]
pub struct SelectUpstream {
    table: Arc<RouteTable>,
    upstreams: Arc<[Arc<UpstreamPool>]>,
}

impl SelectUpstream {
    /// `upstreams` are in the order of `config.upstreams`, which the table's indexes follow.
    pub fn new(table: RouteTable, upstreams: Vec<Arc<UpstreamPool>>) -> Self {
        SelectUpstream {
            table: Arc::new(table),
            upstreams: upstreams.into(),
        }
    }
}

impl RequestCheck for SelectUpstream {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let extensions = request.extensions();
        let key = RouteKey {
            path: request.uri().path(),
            pipeline: extensions
                .get::<Classified>()
                .and_then(|c| c.pipeline.as_deref()),
            tenant: extensions
                .get::<Principal>()
                .and_then(|p| p.tenant.as_deref()),
        };
        let Some(index) = self.table.select(key) else {
            return Err(GatewayError::unknown_endpoint(key.path).with_details(
                serde_json::json!({ "path": key.path, "reason": "no route matches" }),
            ));
        };
        let upstream = self.upstreams[index].clone();
        request.extensions_mut().insert(SelectedUpstream(upstream));
        Ok(())
    }
}
