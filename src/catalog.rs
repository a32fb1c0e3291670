//! The catalog of the manager's endpoints: what each path is, who may call it, how it behaves.
//! Ground floor: plain data and one pure function, imported by configuration and runtime alike.
//!
//! Everything comes from one static table, [`ROWS`] (method, path pattern, endpoint):
//! [`classify`] is a walk of a trie built from it once, the `Allow` list of a path is the
//! methods its rows give, [`endpoint_names`] is the set of its names, and behaviour is decided by
//! the flags of [`Endpoint`] (never by comparing names). Adding an endpoint is adding a row.
//!
//! Each [`Endpoint`] has a stable name (used by rate-limit rules, logs and metrics), an
//! [`EndpointClass`] (timeouts, body limits, streaming), its [`Access`] (public, or a minimum
//! [`Role`] from the manager's RBAC table in UPSTREAM.md) and flags. A path `/v0/pipelines/{p}/…`
//! carries the pipeline name, unvalidated (validation is its own layer).
//!
//! Edge cases: a known path with a method it does not serve is a 405 with `Allow`, answered
//! here so it never costs an upstream trip (the manager answers those with a 403). Unknown
//! paths under `/v0` are [`UNCLASSIFIED`]: forwarded when authentication is off, denied by the
//! auth layer otherwise. Every other path outside `/v0` is the manager's web console
//! ([`CONSOLE`], public, `GET`/`HEAD` only — the manager serves its single-page app on any such
//! path); other methods there are 405. A literal segment wins over a parameter, without
//! backtracking (`POST …/connectors/c/stats` is a 405, not a connector action).

use std::fmt;
use std::sync::LazyLock;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::errors::GatewayError;

/// The manager's roles, ordered: `read < write < admin < owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Read, Role::Write, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Parses the lowercase spelling (`read`, `write`, `admin`, `owner`).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Always without a credential, whatever `[auth] public_paths` says: the web console's
    /// files and CORS preflights (browsers send neither with credentials).
    Open,
    /// No credential needed by default (`/healthz`, `/config/authentication`,
    /// `/robots.txt`); `[auth] public_paths` may change that.
    Public,
    /// At least this role.
    Role(Role),
    /// Not in the manager's table: denied when authentication is on, unless configured.
    Unclassified,
}

/// How an endpoint behaves on the wire; decides timeouts and body limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointClass {
    /// Health and configuration probes, and the web console's files.
    Public,
    /// Reads with a short answer.
    Read,
    /// Changes that are not lifecycle actions (create, update, delete, api keys, …).
    Write,
    /// Lifecycle actions: start, stop, pause, resume, activate, approve, clear, …
    Lifecycle,
    /// `POST …/ingress/{table}`: streamed request body of any size.
    Ingress,
    /// Endless or long responses: egress, query, logs, time_series_stream, samply_profile.
    Stream,
    /// Compiler calls: `diff`, `/v0/validate_program` (up to 300 s).
    Compiler,
    /// Slow operations: checkpoint, rebalance, compaction, profiles (up to 120 s).
    Slow,
    /// Tenant, user and trust administration.
    Admin,
    /// A `/v0` path missing from the catalog.
    Unclassified,
}

impl EndpointClass {
    /// Every class, for configuration checks.
    pub const ALL: [EndpointClass; 10] = [
        EndpointClass::Public,
        EndpointClass::Read,
        EndpointClass::Write,
        EndpointClass::Lifecycle,
        EndpointClass::Ingress,
        EndpointClass::Stream,
        EndpointClass::Compiler,
        EndpointClass::Slow,
        EndpointClass::Admin,
        EndpointClass::Unclassified,
    ];

    /// The class's name in configuration (`class:lifecycle`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Public => "public",
            EndpointClass::Read => "read",
            EndpointClass::Write => "write",
            EndpointClass::Lifecycle => "lifecycle",
            EndpointClass::Ingress => "ingress",
            EndpointClass::Stream => "stream",
            EndpointClass::Compiler => "compiler",
            EndpointClass::Slow => "slow",
            EndpointClass::Admin => "admin",
            EndpointClass::Unclassified => "unclassified",
        }
    }

    /// The class spelled `name` in configuration.
    pub fn parse(name: &str) -> Option<EndpointClass> {
        EndpointClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Time allowed for the upstream's response headers; `None` for streams.
    pub fn timeout(self, default: std::time::Duration) -> Option<std::time::Duration> {
        use std::time::Duration;
        match self {
            EndpointClass::Stream | EndpointClass::Ingress => None,
            EndpointClass::Compiler => Some(Duration::from_secs(300)),
            EndpointClass::Slow => Some(Duration::from_secs(120)),
            _ => Some(default),
        }
    }

    /// Whether `server.max_body_bytes` applies to the request body.
    pub fn limits_body(self) -> bool {
        !matches!(self, EndpointClass::Ingress)
    }
}

/// One endpoint of the manager's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Stable name: the action for pipeline sub-resources (`activate`, `egress`,
    /// `checkpoint/sync`), otherwise a dotted resource name (`pipelines.list`, `api_keys`).
    pub name: &'static str,
    pub class: EndpointClass,
    pub access: Access,
    /// The manager also serves it as a WebSocket: the only place a client may ask for a
    /// protocol upgrade (and only to `websocket`).
    pub websocket: bool,
    /// The query string is `activate`'s, rebuilt by validation (`initial`).
    pub activate_query: bool,
    /// Its 503 answer is a health report clients parse (`HealthStatus`), not an error to
    /// normalize.
    pub health_report: bool,
    /// The manager's web console (a static single-page app).
    pub console: bool,
    /// The console's question which identity provider to log into
    /// (`GET /config/authentication`): answered by the gateway with `[console.authentication]`.
    pub identity_provider: bool,
}

const fn ep(name: &'static str, class: EndpointClass, access: Access) -> Endpoint {
    Endpoint {
        name,
        class,
        access,
        websocket: false,
        activate_query: false,
        health_report: false,
        console: false,
        identity_provider: false,
    }
}

const fn public(name: &'static str) -> Endpoint {
    ep(name, EndpointClass::Public, Access::Public)
}

const fn read(name: &'static str) -> Endpoint {
    ep(name, EndpointClass::Read, Access::Role(Role::Read))
}

const fn read_as(name: &'static str, class: EndpointClass) -> Endpoint {
    ep(name, class, Access::Role(Role::Read))
}

const fn write(name: &'static str, class: EndpointClass) -> Endpoint {
    ep(name, class, Access::Role(Role::Write))
}

const fn role(name: &'static str, role: Role) -> Endpoint {
    ep(name, EndpointClass::Admin, Access::Role(role))
}

/// A `/v0` path missing from the catalog.
pub const UNCLASSIFIED: Endpoint = ep(
    "unclassified",
    EndpointClass::Unclassified,
    Access::Unclassified,
);

/// Any path outside `/v0` and the public paths: the manager's web console.
pub const CONSOLE: Endpoint = Endpoint {
    console: true,
    ..ep("console", EndpointClass::Public, Access::Open)
};

/// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), on any
/// path: answered by the gateway with `[cors]`, by the manager without.
pub const PREFLIGHT: Endpoint = ep("preflight", EndpointClass::Public, Access::Open);

use EndpointClass as C;

const QUERY: Endpoint = Endpoint {
    websocket: true,
    ..write("query", C::Stream)
};
const ACTIVATE: Endpoint = Endpoint {
    activate_query: true,
    ..write("activate", C::Lifecycle)
};
const CLUSTER_HEALTHZ: Endpoint = Endpoint {
    health_report: true,
    ..read("cluster_healthz")
};
const CONNECTOR_STATS: Endpoint = read("connector.stats");
const API_KEYS: Endpoint = write("api_keys", C::Write);
const OIDC_TRUST: Endpoint = role("oidc_trust", Role::Admin);
const TENANT_USERS: Endpoint = role("tenant.users", Role::Admin);
const TENANTS: Endpoint = role("tenants", Role::Owner);
const CLUSTER_EVENTS: Endpoint = read("cluster.events");
const SAMPLY: Endpoint = read_as("samply_profile", C::Stream);
const PIPELINE_UPDATE: Endpoint = write("pipeline.update", C::Write);

/// One row of the catalog: `method` on `path` is `endpoint`. In a path, `{pipeline}` is the
/// pipeline name and `{}` any other parameter (one segment each).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn row(method: &'static str, path: &'static str, endpoint: Endpoint) -> Row {
    Row {
        method,
        path,
        endpoint,
    }
}

/// The whole catalog.
pub const ROWS: &[Row] = &[
    row("GET", "/healthz", public("healthz")),
    row(
        "GET",
        "/config/authentication",
        Endpoint {
            identity_provider: true,
            ..public("config.authentication")
        },
    ),
    row("GET", "/robots.txt", public("robots.txt")),
    row("GET", "/v0/pipelines", read("pipelines.list")),
    row("POST", "/v0/pipelines", write("pipelines.create", C::Write)),
    row("GET", "/v0/pipelines/{pipeline}", read("pipeline.get")),
    row("PUT", "/v0/pipelines/{pipeline}", PIPELINE_UPDATE),
    row("PATCH", "/v0/pipelines/{pipeline}", PIPELINE_UPDATE),
    row(
        "DELETE",
        "/v0/pipelines/{pipeline}",
        write("pipeline.delete", C::Write),
    ),
    row("GET", "/v0/pipelines/{pipeline}/stats", read("stats")),
    row("GET", "/v0/pipelines/{pipeline}/metrics", read("metrics")),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/time_series",
        read("time_series"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/time_series_stream",
        read_as("time_series_stream", C::Stream),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/logs",
        read_as("logs", C::Stream),
    ),
    row("GET", "/v0/pipelines/{pipeline}/events", read("events")),
    row("GET", "/v0/pipelines/{pipeline}/events/{}", read("event")),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/circuit_profile",
        read_as("circuit_profile", C::Slow),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/circuit_json_profile",
        read_as("circuit_json_profile", C::Slow),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/dataflow_graph",
        read("dataflow_graph"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/heap_profile",
        read_as("heap_profile", C::Slow),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/support_bundle",
        read_as("support_bundle", C::Slow),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/completion_status",
        read("completion_status"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/checkpoint_status",
        read("checkpoint_status"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/checkpoint/sync_status",
        read("checkpoint/sync_status"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/checkpoints",
        read("checkpoints"),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/checkpoints/remote",
        read("checkpoints/remote"),
    ),
    row("GET", "/v0/pipelines/{pipeline}/samply_profile", SAMPLY),
    row("POST", "/v0/pipelines/{pipeline}/samply_profile", SAMPLY),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/start",
        write("start", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/stop",
        write("stop", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/pause",
        write("pause", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/resume",
        write("resume", C::Lifecycle),
    ),
    row("POST", "/v0/pipelines/{pipeline}/activate", ACTIVATE),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/approve",
        write("approve", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/clear",
        write("clear", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/dismiss_error",
        write("dismiss_error", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/update_runtime",
        write("update_runtime", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/diff",
        write("diff", C::Compiler),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/checkpoint",
        write("checkpoint", C::Slow),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/checkpoint/sync",
        write("checkpoint/sync", C::Slow),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/rebalance",
        write("rebalance", C::Slow),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/start_compaction",
        write("start_compaction", C::Slow),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/start_transaction",
        write("start_transaction", C::Write),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/commit_transaction",
        write("commit_transaction", C::Write),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/clock/advance",
        write("clock/advance", C::Write),
    ),
    row("GET", "/v0/pipelines/{pipeline}/query", QUERY),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/ingress/{}",
        write("ingress", C::Ingress),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/egress/{}",
        write("egress", C::Stream),
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/tables/{}/connectors/{}/stats",
        CONNECTOR_STATS,
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/views/{}/connectors/{}/stats",
        CONNECTOR_STATS,
    ),
    row(
        "GET",
        "/v0/pipelines/{pipeline}/tables/{}/connectors/{}/completion_token",
        write("connector.completion_token", C::Read),
    ),
    row(
        "POST",
        "/v0/pipelines/{pipeline}/tables/{}/connectors/{}/{}",
        write("connector.action", C::Lifecycle),
    ),
    row(
        "POST",
        "/v0/validate_program",
        write("validate_program", C::Compiler),
    ),
    row("GET", "/v0/api_keys", API_KEYS),
    row("POST", "/v0/api_keys", API_KEYS),
    row("GET", "/v0/api_keys/{}", API_KEYS),
    row("DELETE", "/v0/api_keys/{}", API_KEYS),
    row("GET", "/v0/config", read("config")),
    row("GET", "/v0/config/demos", read("config.demos")),
    row("GET", "/v0/config/session", read("config.session")),
    row(
        "GET",
        "/v0/config/owners",
        role("config.owners", Role::Owner),
    ),
    row("GET", "/v0/cluster_healthz", CLUSTER_HEALTHZ),
    row("GET", "/v0/cluster/events", CLUSTER_EVENTS),
    row("GET", "/v0/cluster/events/{}", CLUSTER_EVENTS),
    row("GET", "/v0/metrics", read("metrics.cluster")),
    row("GET", "/v0/oidc_trust", OIDC_TRUST),
    row("POST", "/v0/oidc_trust", OIDC_TRUST),
    row("GET", "/v0/oidc_trust/{}", OIDC_TRUST),
    row("DELETE", "/v0/oidc_trust/{}", OIDC_TRUST),
    row("GET", "/v0/tenant/users", TENANT_USERS),
    row("POST", "/v0/tenant/users", TENANT_USERS),
    row("PUT", "/v0/tenant/users/{}", TENANT_USERS),
    row("DELETE", "/v0/tenant/users/{}", TENANT_USERS),
    row("GET", "/v0/tenants", TENANTS),
    row("POST", "/v0/tenants", TENANTS),
    row("GET", "/v0/tenants/{}", TENANTS),
    row("PATCH", "/v0/tenants/{}", TENANTS),
    row("DELETE", "/v0/tenants/{}", TENANTS),
];

/// Every endpoint name the catalog can produce (the rows', the console and
/// `unclassified`), for configuration checks.
pub fn endpoint_names() -> impl Iterator<Item = &'static str> {
    static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        let mut names: Vec<&'static str> = Vec::new();
        for name in ROWS.iter().map(|r| r.endpoint.name).chain([
            CONSOLE.name,
            PREFLIGHT.name,
            UNCLASSIFIED.name,
        ]) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    });
    NAMES.iter().copied()
}

/// Whether `name` is an endpoint name of the catalog.
pub fn is_endpoint_name(name: &str) -> bool {
    endpoint_names().any(|n| n == name)
}

/// The result of classifying a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub endpoint: &'static Endpoint,
    /// Where the raw `{pipeline}` segment is in the path, when the path has one.
    pipeline: Option<(u16, u16)>,
}

impl Classified {
    /// The raw `{pipeline}` segment of `path` (the path that was classified).
    pub fn pipeline<'a>(&self, path: &'a str) -> Option<&'a str> {
        let (start, end) = self.pipeline?;
        path.get(usize::from(start)..usize::from(end))
    }
}

/// Most path segments any catalogued path has
/// (`/v0/pipelines/p/tables/t/connectors/c/stats`).
const MAX_SEGMENTS: usize = 8;

/// A node of the trie built from [`ROWS`].
#[derive(Default)]
struct Node {
    literals: Vec<(&'static str, Node)>,
    /// `{}` or `{pipeline}`; the flag says which.
    param: Option<(bool, Box<Node>)>,
    /// The rows ending here, by method, and the `Allow` value they make.
    methods: Vec<(Method, &'static Endpoint)>,
    allow: &'static str,
}

static TRIE: LazyLock<Node> = LazyLock::new(|| {
    let mut root = Node::default();
    for row in ROWS {
        let mut node = &mut root;
        for segment in row.path.trim_start_matches('/').split('/') {
            node = match segment {
                "{}" | "{pipeline}" => {
                    let is_pipeline = segment == "{pipeline}";
                    &mut node
                        .param
                        .get_or_insert_with(|| (is_pipeline, Box::default()))
                        .1
                }
                literal => {
                    let at = match node.literals.iter().position(|(l, _)| *l == literal) {
                        Some(at) => at,
                        None => {
                            node.literals.push((literal, Node::default()));
                            node.literals.len() - 1
                        }
                    };
                    &mut node.literals[at].1
                }
            };
        }
        // Rows are 'static, so the endpoint can be referenced from the row itself.
        let method = Method::from_bytes(row.method.as_bytes()).unwrap_or(Method::GET);
        node.methods.push((method, &row.endpoint));
    }
    finish(&mut root);
    root
});

/// Makes every node's `Allow` value once (leaked: the trie lives as long as the process).
fn finish(node: &mut Node) {
    if !node.methods.is_empty() {
        let allow: Vec<&str> = node.methods.iter().map(|(m, _)| m.as_str()).collect();
        node.allow = Box::leak(allow.join(", ").into_boxed_str());
    }
    for (_, child) in &mut node.literals {
        finish(child);
    }
    if let Some((_, child)) = &mut node.param {
        finish(child);
    }
}

/// Classifies a canonical `path` (as checked by `validate::path`) for `method`.
pub fn classify(method: &Method, path: &str) -> Result<Classified, GatewayError> {
    let mut node: &Node = &TRIE;
    let mut pipeline = None;
    let mut offset = 1;
    let mut depth = 0;
    let mut matched = true;
    for segment in path.trim_start_matches('/').split('/') {
        depth += 1;
        let start = offset;
        offset += segment.len() + 1;
        if depth > MAX_SEGMENTS {
            matched = false;
            break;
        }
        if let Some((_, child)) = node.literals.iter().find(|(l, _)| *l == segment) {
            node = child;
        } else if let Some((is_pipeline, child)) = &node.param {
            if *is_pipeline {
                pipeline = Some((start, start + segment.len()));
            }
            node = child;
        } else {
            matched = false;
            break;
        }
    }
    let pipeline = pipeline
        .and_then(|(start, end)| Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?)));
    if matched && !node.methods.is_empty() {
        return match node.methods.iter().find(|(m, _)| m == method) {
            Some((_, endpoint)) => Ok(Classified { endpoint, pipeline }),
            None => Err(GatewayError::method_not_allowed(method, path, node.allow)),
        };
    }
    if path == "/v0" || path.starts_with("/v0/") {
        // Unknown under /v0 (including deeper than anything catalogued): unclassified,
        // with the pipeline name when the path names one.
        let pipeline = pipeline.or_else(|| pipeline_segment(path));
        return Ok(Classified {
            endpoint: &UNCLASSIFIED,
            pipeline,
        });
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(Classified {
            endpoint: &CONSOLE,
            pipeline: None,
        });
    }
    Err(GatewayError::method_not_allowed(method, path, "GET, HEAD"))
}

/// Classifies a CORS preflight for `path`: [`PREFLIGHT`], with the pipeline the path names
/// (so it is routed like the request it announces).
pub fn classify_preflight(path: &str) -> Classified {
    Classified {
        endpoint: &PREFLIGHT,
        pipeline: pipeline_segment(path),
    }
}

/// Where `{name}` of `/v0/pipelines/{name}/…` is, for paths the trie did not walk through.
fn pipeline_segment(path: &str) -> Option<(u16, u16)> {
    const PREFIX: &str = "/v0/pipelines/";
    let rest = path.strip_prefix(PREFIX)?;
    let len = rest.find('/').unwrap_or(rest.len());
    let start = u16::try_from(PREFIX.len()).ok()?;
    let end = u16::try_from(PREFIX.len() + len).ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(method: Method, path: &str) -> &'static str {
        classify(&method, path).unwrap().endpoint.name
    }

    #[test]
    fn activate_is_a_write_lifecycle_action_with_its_pipeline() {
        let path = "/v0/pipelines/orders/activate";
        let c = classify(&Method::POST, path).unwrap();
        assert_eq!(c.endpoint.name, "activate");
        assert_eq!(c.endpoint.class, EndpointClass::Lifecycle);
        assert_eq!(c.endpoint.access, Access::Role(Role::Write));
        assert!(c.endpoint.activate_query);
        assert_eq!(c.pipeline(path), Some("orders"));
    }

    #[test]
    fn wrong_method_on_known_path_is_405_with_allow_from_the_rows() {
        let e = classify(&Method::GET, "/v0/pipelines/orders/activate").unwrap_err();
        assert_eq!(e.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.code(), "MethodNotAllowed");
        assert_eq!(e.into_response().headers()[http::header::ALLOW], "POST");
        let e = classify(&Method::POST, "/v0/pipelines/p").unwrap_err();
        assert_eq!(
            e.into_response().headers()[http::header::ALLOW],
            "GET, PUT, PATCH, DELETE"
        );
        let e = classify(&Method::POST, "/v0/pipelines/p/tables/t/connectors/c/stats").unwrap_err();
        assert_eq!(e.into_response().headers()[http::header::ALLOW], "GET");
    }

    #[test]
    fn streams_and_ingress_have_no_timeout() {
        let d = std::time::Duration::from_secs(30);
        for (m, p) in [
            (Method::POST, "/v0/pipelines/p/egress/v"),
            (Method::POST, "/v0/pipelines/p/ingress/t"),
            (Method::GET, "/v0/pipelines/p/query"),
            (Method::GET, "/v0/pipelines/p/logs"),
        ] {
            let c = classify(&m, p).unwrap();
            assert_eq!(c.endpoint.class.timeout(d), None, "{p}");
        }
        let diff = classify(&Method::POST, "/v0/pipelines/p/diff").unwrap();
        assert_eq!(
            diff.endpoint.class.timeout(d),
            Some(std::time::Duration::from_secs(300))
        );
    }

    #[test]
    fn every_row_classifies_to_its_own_endpoint() {
        // The table is the only source: each row, with its parameters filled in, gives back
        // exactly its endpoint, and its name is in the name list.
        for row in ROWS {
            let path = row.path.replace("{pipeline}", "p1").replace("{}", "x");
            let method = Method::from_bytes(row.method.as_bytes()).unwrap();
            let c = classify(&method, &path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(*c.endpoint, row.endpoint, "{} {path}", row.method);
            assert!(is_endpoint_name(c.endpoint.name));
            let expected = row.path.contains("{pipeline}").then_some("p1");
            assert_eq!(c.pipeline(&path), expected, "{path}");
        }
        assert!(is_endpoint_name("unclassified") && is_endpoint_name("console"));
        assert!(!is_endpoint_name("activat"));
    }

    #[test]
    fn only_the_query_endpoint_is_a_websocket_and_flags_are_where_they_belong() {
        for row in ROWS {
            assert_eq!(row.endpoint.websocket, row.endpoint.name == "query");
            assert_eq!(row.endpoint.activate_query, row.endpoint.name == "activate");
            assert_eq!(
                row.endpoint.health_report,
                row.endpoint.name == "cluster_healthz"
            );
        }
    }

    #[test]
    fn unknown_v0_paths_are_unclassified_and_other_paths_the_console() {
        assert_eq!(name(Method::GET, "/v0/whatever"), "unclassified");
        assert_eq!(
            name(Method::POST, "/v0/pipelines/p/no_such_action"),
            "unclassified"
        );
        let deep = "/v0/pipelines/p/a/b/c/d/e/f/g";
        let c = classify(&Method::GET, deep).unwrap();
        assert_eq!(c.endpoint.access, Access::Unclassified);
        assert_eq!(c.pipeline(deep), Some("p"));
        for path in ["/", "/pipelines/p/", "/_app/immutable/x.js", "/admin"] {
            assert!(
                classify(&Method::GET, path).unwrap().endpoint.console,
                "{path}"
            );
            assert!(
                classify(&Method::HEAD, path).unwrap().endpoint.console,
                "{path}"
            );
            let e = classify(&Method::POST, path).unwrap_err();
            assert_eq!(e.code(), "MethodNotAllowed", "{path}");
        }
        // The public paths are themselves, not the console.
        assert_eq!(name(Method::GET, "/healthz"), "healthz");
        assert_eq!(
            classify(&Method::POST, "/healthz").unwrap_err().code(),
            "MethodNotAllowed"
        );
    }

    #[test]
    fn roles_parse_their_lowercase_names_only() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Write"), None);
        assert!(Role::Read < Role::Write && Role::Admin < Role::Owner);
    }
}
