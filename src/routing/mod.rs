//! Routing: what a request is (classification, from the ground-floor [`crate::catalog`]) and
//! which upstream serves it ([`RouteTable`]).
//!
//! Two steps, at two places in the stack. [`Classify`] runs early: it names the endpoint
//! (needed by auth for the minimum role and by rate limiting for rules) and answers unknown
//! paths (404) and wrong methods (405) without an upstream trip. [`SelectUpstream`] runs after
//! authentication, because a route may be chosen by the *verified* tenant.
//!
//! Matching: `[[routes]]` are tried in order; a route matches when every criterion it gives
//! matches (`pipelines` globs on the pipeline name, `tenants`, `paths` globs on the path). A
//! route with `pipelines` never matches a request that names no pipeline; such requests go to
//! the first `default = true` route. The web console's files (paths outside `/v0`) always go
//! to the console's upstream (`[console] upstream`, or the default route's). A request no
//! route matches is 404 `UnknownEndpoint`.
//!
//! A route's `issuers` are not a criterion but a guard: once a route takes a request, a
//! principal verified by another issuer (`"apikey"` names the API keys) is refused with 403
//! `InsufficientPermissions`, `details.reason = "issuer_not_accepted"` — never passed on to a
//! later route, where it could reach a manager its issuer was not meant for. Requests without
//! a principal (public paths) pass.

use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};

use crate::body::Request;
use crate::catalog::{classify, classify_preflight};
use crate::check::RequestCheck;
use crate::config::{Config, Problems, API_KEYS_ISSUER};
use crate::context::{RequestContext, Route as ChosenRoute};
use crate::errors::GatewayError;
use crate::principal::Credential;

/// Classifies the request and records the result in its context.
#[derive(Clone, Copy)]
pub struct Classify;

impl RequestCheck for Classify {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let classified = if is_preflight(request) {
            classify_preflight(request.uri().path())
        } else {
            classify(request.method(), request.uri().path())?
        };
        RequestContext::of(request)?.set_classified(classified);
        Ok(())
    }
}

/// Whether `request` is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method` (any other `OPTIONS` is classified, and refused, as usual).
pub fn is_preflight(request: &Request) -> bool {
    request.method() == http::Method::OPTIONS
        && request.headers().contains_key(http::header::ORIGIN)
        && request
            .headers()
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A set of globs; `*` alone matches everything without running a matcher.
#[derive(Debug, Clone)]
enum Patterns {
    Any,
    Set(GlobSet),
}

impl Patterns {
    fn is_match(&self, value: &str) -> bool {
        match self {
            Patterns::Any => true,
            Patterns::Set(set) => set.is_match(value),
        }
    }
}

fn patterns<'a>(
    globs: impl ExactSizeIterator<Item = &'a globset::Glob>,
    any: bool,
) -> Result<Option<Patterns>, globset::Error> {
    if globs.len() == 0 {
        return Ok(None);
    }
    if any {
        return Ok(Some(Patterns::Any));
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(glob.clone());
    }
    builder.build().map(|set| Some(Patterns::Set(set)))
}

#[derive(Debug, Clone)]
struct Route {
    pipelines: Option<Patterns>,
    tenants: Vec<String>,
    paths: Option<Patterns>,
    /// The credentials it serves (empty: any).
    issuers: Vec<String>,
    upstream: usize,
    /// `routes[N]`: how the log and the trace name it.
    label: Arc<str>,
}

impl Route {
    /// Whether the route serves a request made with `credential` (`None`: no principal).
    fn accepts(&self, credential: Option<&Credential>) -> bool {
        if self.issuers.is_empty() {
            return true;
        }
        let name = match credential {
            None => return true,
            Some(Credential::Jwt { issuer, .. }) => &**issuer,
            Some(Credential::ApiKey { .. }) => API_KEYS_ISSUER,
            Some(Credential::ClientCert { .. }) => crate::config::CLIENT_CERTS_ISSUER,
            Some(Credential::Anonymous) => return false,
        };
        self.issuers.iter().any(|issuer| issuer == name)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// To this upstream (an index into `config.upstreams`).
    Upstream(usize),
    /// No route takes it (404).
    NoRoute,
    /// The route that takes it does not serve the principal's issuer (403).
    IssuerNotAccepted,
}

/// The compiled `[[routes]]`, and the index of the upstream each one names.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// The index (into `routes`) of the first `default = true` route.
    default: Option<usize>,
    /// The upstream serving the web console's files.
    console: Option<usize>,
}

/// What a request is matched on.
#[derive(Debug, Clone, Copy)]
pub struct RouteKey<'a> {
    pub path: &'a str,
    pub pipeline: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// A file of the web console (a path outside `/v0`).
    pub console: bool,
    /// How the principal proved who it is; `None` without one (public paths).
    pub credential: Option<&'a Credential>,
}

impl RouteTable {
    /// Compiles the routes of a checked configuration.
    pub fn build(config: &Config) -> Result<RouteTable, Problems> {
        let mut problems = Problems::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut default = None;
        for (i, route) in config.routes.iter().enumerate() {
            let upstream = config
                .upstreams
                .iter()
                .position(|u| u.name == route.upstream)
                .unwrap_or(0);
            let pipelines = patterns(
                route.pipelines.iter().map(|g| g.glob()),
                route.pipelines.iter().any(|g| g.is_any()),
            );
            let paths = patterns(route.paths.iter().map(|g| g.glob()), false);
            let (pipelines, paths) = match (pipelines, paths) {
                (Ok(pipelines), Ok(paths)) => (pipelines, paths),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("routes[{i}]"), format!("globs do not compile: {e}"));
                    continue;
                }
            };
            if route.default && default.is_none() {
                default = Some(routes.len());
            }
            routes.push(Route {
                pipelines,
                tenants: route.tenants.clone(),
                paths,
                issuers: route.issuers.clone(),
                upstream,
                label: Arc::from(format!("routes[{i}]")),
            });
        }
        let console = config
            .console_upstream()
            .or(default.map(|i| routes[i].upstream));
        problems.into_result(RouteTable {
            routes,
            default,
            console,
        })
    }

    /// The index (into `config.upstreams`) of the upstream serving `key`, if one does.
    pub fn select(&self, key: RouteKey<'_>) -> Option<usize> {
        match self.route(key) {
            Selected::Upstream(index) => Some(index),
            Selected::NoRoute | Selected::IssuerNotAccepted => None,
        }
    }

    /// Where `key` goes: the first route that matches (or the default route for a request
    /// that names no pipeline), if it serves the principal's issuer.
    pub fn route(&self, key: RouteKey<'_>) -> Selected {
        self.route_labelled(key).0
    }

    /// [`RouteTable::route`], with the label of the route that decided (`routes[N]`, or
    /// `console` for the console's files).
    pub fn route_labelled(&self, key: RouteKey<'_>) -> (Selected, Option<Arc<str>>) {
        if key.console {
            let selected = self.console.map_or(Selected::NoRoute, Selected::Upstream);
            return (selected, Some(Arc::from("console")));
        }
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
        let route = match matched {
            Some(route) => route,
            None if key.pipeline.is_none() => match self.default {
                Some(default) => &self.routes[default],
                None => return (Selected::NoRoute, None),
            },
            None => return (Selected::NoRoute, None),
        };
        let selected = if route.accepts(key.credential) {
            Selected::Upstream(route.upstream)
        } else {
            Selected::IssuerNotAccepted
        };
        (selected, Some(route.label.clone()))
    }
}

/// Chooses the upstream for the request and records it in the context.
#[derive(Clone)]
pub struct SelectUpstream {
    table: Arc<RouteTable>,
    /// Upstream names, in the order of `config.upstreams` (the table's indexes).
    names: Arc<[Arc<str>]>,
}

impl SelectUpstream {
    pub fn new(table: Arc<RouteTable>, names: Arc<[Arc<str>]>) -> Self {
        SelectUpstream { table, names }
    }
}

impl RequestCheck for SelectUpstream {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let context = RequestContext::of(request)?;
        let classified = context.classified()?;
        let path = request.uri().path();
        let principal = context.principal();
        let key = RouteKey {
            path,
            pipeline: classified.pipeline(path),
            tenant: principal.and_then(|p| p.tenant.as_deref()),
            console: classified.endpoint.console,
            credential: principal.map(|p| &p.credential),
        };
        let (selected, label) = self.table.route_labelled(key);
        let index =
            match selected {
                Selected::Upstream(index) => index,
                Selected::NoRoute => {
                    return Err(GatewayError::unknown_endpoint(path).with_details(
                        serde_json::json!({ "path": path, "reason": "no route matches" }),
                    ))
                }
                Selected::IssuerNotAccepted => return Err(GatewayError::new(
                    http::StatusCode::FORBIDDEN,
                    "InsufficientPermissions",
                    "Insufficient permissions: this route does not accept credentials from the \
                     caller's issuer",
                )
                .with_details(serde_json::json!({ "reason": "issuer_not_accepted" }))),
            };
        let name = self
            .names
            .get(index)
            .cloned()
            .ok_or_else(|| GatewayError::internal(format!("route to upstream #{index}")))?;
        context.set_route(ChosenRoute {
            upstream: index,
            upstream_name: name,
            label: label.unwrap_or_else(|| Arc::from("-")),
        });
        Ok(())
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
        let config = Config::from_toml(&text).unwrap();
        RouteTable::build(&config).unwrap()
    }

    fn key<'a>(path: &'a str, pipeline: Option<&'a str>, tenant: Option<&'a str>) -> RouteKey<'a> {
        RouteKey {
            path,
            pipeline,
            tenant,
            console: false,
            credential: None,
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
    fn a_route_refuses_other_issuers_instead_of_passing_them_on() {
        let t = table(
            "[[routes]]\npipelines = [\"acme-*\"]\nupstream = \"b\"\n\
             issuers = [\"https://idp-a/\"]\n\
             [[routes]]\npipelines = [\"*\"]\nupstream = \"a\"\ndefault = true\n\
             issuers = [\"https://idp-b/\", \"apikey\"]\n\
             [[auth.jwt]]\nissuer = \"https://idp-a/\"\naudiences = [\"x\"]\n\
             algorithms = [\"RS256\"]\njwks_url = \"https://idp-a/jwks\"\n\
             [[auth.jwt]]\nissuer = \"https://idp-b/\"\naudiences = [\"x\"]\n\
             algorithms = [\"RS256\"]\njwks_url = \"https://idp-b/jwks\"\n",
        );
        let jwt = |issuer: &str| Credential::Jwt {
            issuer: issuer.into(),
            subject: "s".into(),
        };
        let (a, b) = (jwt("https://idp-a/"), jwt("https://idp-b/"));
        let api_key = Credential::ApiKey { name: "ci".into() };
        let with = |path, pipeline, credential| RouteKey {
            credential,
            ..key(path, pipeline, None)
        };
        let acme = Some("acme-1");
        assert_eq!(t.route(with("/x", acme, Some(&a))), Selected::Upstream(1));
        assert_eq!(
            t.route(with("/x", acme, Some(&b))),
            Selected::IssuerNotAccepted
        );
        assert_eq!(
            t.route(with("/x", acme, Some(&api_key))),
            Selected::IssuerNotAccepted
        );
        assert_eq!(
            t.route(with("/x", Some("other"), Some(&b))),
            Selected::Upstream(0)
        );
        assert_eq!(
            t.route(with("/v0/pipelines", None, Some(&a))),
            Selected::IssuerNotAccepted
        );
        assert_eq!(
            t.route(with("/v0/pipelines", None, Some(&api_key))),
            Selected::Upstream(0)
        );
        assert_eq!(t.route(with("/healthz", None, None)), Selected::Upstream(0));
        assert_eq!(
            t.route(with("/x", acme, Some(&Credential::Anonymous))),
            Selected::IssuerNotAccepted
        );
    }

    #[test]
    fn the_console_goes_to_the_default_routes_upstream() {
        let t = table(
            "[[routes]]\npipelines = [\"prod-*\"]\nupstream = \"a\"\n\
             [[routes]]\nupstream = \"b\"\ndefault = true\n",
        );
        let console = RouteKey {
            console: true,
            ..key("/_app/x.js", None, None)
        };
        assert_eq!(t.select(console), Some(1));
    }
}
