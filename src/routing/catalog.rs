//! The catalog of the manager's endpoints: what each path is, who may call it, how it behaves.
//!
//! [`classify`] maps a canonical path and a method to an [`Endpoint`]: a stable name (used by
//! rate-limit rules and the access log), an [`EndpointClass`] (which decides timeouts, body
//! limits and streaming) and its [`Access`] (public, a minimum role from the manager's RBAC
//! table in UPSTREAM.md, or unclassified). It also extracts the pipeline name of
//! `/v0/pipelines/{name}/…` paths without validating it (validation is its own layer).
//!
//! Edge cases: a known path with a method it does not serve is a 405 with `Allow`, answered
//! here so it never costs an upstream trip (the manager answers such requests with a 403).
//! Unknown paths under `/v0` are `Access::Unclassified`: forwarded when authentication is off,
//! denied by the auth layer otherwise. Paths outside `/v0` and the three public paths are 404.

use std::time::Duration;

use http::Method;

use crate::auth::Role;
use crate::errors::GatewayError;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (`/healthz`, `/config/authentication`, `/robots.txt`).
    Public,
    /// At least this role.
    Role(Role),
    /// Not in the manager's table: denied when authentication is on, unless configured.
    Unclassified,
}

/// How an endpoint behaves on the wire; decides timeouts and body limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointClass {
    /// Health and configuration probes.
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

    /// Time allowed for the upstream's response headers; `None` for streams.
    pub fn timeout(self, default: Duration) -> Option<Duration> {
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
    /// The manager serves this endpoint as a WebSocket too: the only place a client may ask
    /// for a protocol upgrade (and only to `websocket`).
    pub websocket: bool,
}

/// Every endpoint name the catalog can produce, for configuration checks.
pub const ENDPOINT_NAMES: &[&str] = &[
    "healthz",
    "config.authentication",
    "robots.txt",
    "pipelines.list",
    "pipelines.create",
    "pipeline.get",
    "pipeline.update",
    "pipeline.delete",
    "stats",
    "metrics",
    "time_series",
    "time_series_stream",
    "logs",
    "events",
    "event",
    "circuit_profile",
    "circuit_json_profile",
    "dataflow_graph",
    "heap_profile",
    "support_bundle",
    "completion_status",
    "checkpoint_status",
    "checkpoint/sync_status",
    "checkpoints",
    "checkpoints/remote",
    "samply_profile",
    "start",
    "stop",
    "pause",
    "resume",
    "activate",
    "approve",
    "clear",
    "dismiss_error",
    "update_runtime",
    "diff",
    "checkpoint",
    "checkpoint/sync",
    "rebalance",
    "start_compaction",
    "start_transaction",
    "commit_transaction",
    "clock/advance",
    "query",
    "ingress",
    "egress",
    "connector.stats",
    "connector.completion_token",
    "connector.action",
    "validate_program",
    "api_keys",
    "config",
    "config.demos",
    "config.session",
    "config.owners",
    "cluster_healthz",
    "cluster.events",
    "metrics.cluster",
    "oidc_trust",
    "tenant.users",
    "tenants",
    "unclassified",
];

/// The result of classifying a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub endpoint: Endpoint,
    /// The raw `{pipeline_name}` path segment, when the path has one.
    pub pipeline: Option<String>,
}

const GET: &str = "GET";
const POST: &str = "POST";
const GET_POST: &str = "GET, POST";
const GET_DELETE: &str = "GET, DELETE";
const PIPELINE: &str = "GET, PUT, PATCH, DELETE";
const PUT_DELETE: &str = "PUT, DELETE";
const TENANT: &str = "GET, PATCH, DELETE";

const fn ep(name: &'static str, class: EndpointClass, access: Access) -> Endpoint {
    Endpoint {
        name,
        class,
        access,
        websocket: false,
    }
}

/// The same endpoint, also served as a WebSocket.
const fn websocket(endpoint: Endpoint) -> Endpoint {
    Endpoint {
        websocket: true,
        ..endpoint
    }
}

const fn read(name: &'static str) -> Endpoint {
    ep(name, EndpointClass::Read, Access::Role(Role::Read))
}

const fn write(name: &'static str, class: EndpointClass) -> Endpoint {
    ep(name, class, Access::Role(Role::Write))
}

const UNCLASSIFIED: Endpoint = ep(
    "unclassified",
    EndpointClass::Unclassified,
    Access::Unclassified,
);

/// Most path segments any catalogued path has (`/v0/pipelines/p/tables/t/connectors/c/stats`).
const MAX_SEGMENTS: usize = 8;

/// Classifies a canonical `path` (as checked by `validate::path`) for `method`.
pub fn classify(method: &Method, path: &str) -> Result<Classified, GatewayError> {
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    for segment in path.trim_start_matches('/').split('/') {
        if count == MAX_SEGMENTS {
            return too_deep(path);
        }
        segments[count] = segment;
        count += 1;
    }
    let segments = &segments[..count];
    let m = method.as_str();
    use EndpointClass as C;
    let outcome = |endpoint: Option<Endpoint>, allow: &'static str| match endpoint {
        Some(endpoint) => Ok(endpoint),
        None => Err(GatewayError::method_not_allowed(method, path, allow)),
    };
    let only = |wanted: &str, endpoint: Endpoint, allow: &'static str| {
        outcome((m == wanted).then_some(endpoint), allow)
    };

    let mut pipeline = None;
    let endpoint = match segments {
        ["healthz"] => only(GET, ep("healthz", C::Public, Access::Public), GET),
        ["config", "authentication"] => only(
            GET,
            ep("config.authentication", C::Public, Access::Public),
            GET,
        ),
        ["robots.txt"] => only(GET, ep("robots.txt", C::Public, Access::Public), GET),
        ["v0", "pipelines"] => outcome(
            match m {
                "GET" => Some(read("pipelines.list")),
                "POST" => Some(write("pipelines.create", C::Write)),
                _ => None,
            },
            GET_POST,
        ),
        ["v0", "pipelines", name, rest @ ..] => {
            pipeline = Some((*name).to_owned());
            pipeline_endpoint(m, rest).map_or_else(
                || Ok(UNCLASSIFIED),
                |(endpoint, allow)| outcome(endpoint, allow),
            )
        }
        ["v0", "validate_program"] => only(POST, write("validate_program", C::Compiler), POST),
        ["v0", "api_keys"] => outcome(
            matches!(m, "GET" | "POST").then_some(write("api_keys", C::Write)),
            GET_POST,
        ),
        ["v0", "api_keys", _] => outcome(
            matches!(m, "GET" | "DELETE").then_some(write("api_keys", C::Write)),
            GET_DELETE,
        ),
        ["v0", "config"] => only(GET, read("config"), GET),
        ["v0", "config", "demos"] => only(GET, read("config.demos"), GET),
        ["v0", "config", "session"] => only(GET, read("config.session"), GET),
        ["v0", "config", "owners"] => only(
            GET,
            ep("config.owners", C::Admin, Access::Role(Role::Owner)),
            GET,
        ),
        ["v0", "cluster_healthz"] => only(GET, read("cluster_healthz"), GET),
        ["v0", "cluster", "events"] | ["v0", "cluster", "events", _] => {
            only(GET, read("cluster.events"), GET)
        }
        ["v0", "metrics"] => only(GET, read("metrics.cluster"), GET),
        ["v0", "oidc_trust"] => outcome(
            matches!(m, "GET" | "POST").then_some(ep(
                "oidc_trust",
                C::Admin,
                Access::Role(Role::Admin),
            )),
            GET_POST,
        ),
        ["v0", "oidc_trust", _] => outcome(
            matches!(m, "GET" | "DELETE").then_some(ep(
                "oidc_trust",
                C::Admin,
                Access::Role(Role::Admin),
            )),
            GET_DELETE,
        ),
        ["v0", "tenant", "users"] => outcome(
            matches!(m, "GET" | "POST").then_some(ep(
                "tenant.users",
                C::Admin,
                Access::Role(Role::Admin),
            )),
            GET_POST,
        ),
        ["v0", "tenant", "users", _] => outcome(
            matches!(m, "PUT" | "DELETE").then_some(ep(
                "tenant.users",
                C::Admin,
                Access::Role(Role::Admin),
            )),
            PUT_DELETE,
        ),
        ["v0", "tenants"] => outcome(
            matches!(m, "GET" | "POST").then_some(ep(
                "tenants",
                C::Admin,
                Access::Role(Role::Owner),
            )),
            GET_POST,
        ),
        ["v0", "tenants", _] => outcome(
            matches!(m, "GET" | "PATCH" | "DELETE").then_some(ep(
                "tenants",
                C::Admin,
                Access::Role(Role::Owner),
            )),
            TENANT,
        ),
        ["v0", ..] => Ok(UNCLASSIFIED),
        _ => Err(GatewayError::unknown_endpoint(path)),
    }?;
    Ok(Classified { endpoint, pipeline })
}

fn too_deep(path: &str) -> Result<Classified, GatewayError> {
    if path.starts_with("/v0/") {
        let pipeline = path
            .strip_prefix("/v0/pipelines/")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
        Ok(Classified {
            endpoint: UNCLASSIFIED,
            pipeline,
        })
    } else {
        Err(GatewayError::unknown_endpoint(path))
    }
}

/// The endpoint under `/v0/pipelines/{name}/` for `rest`, with the methods it allows;
/// `None` when the path is not catalogued.
fn pipeline_endpoint(m: &str, rest: &[&str]) -> Option<(Option<Endpoint>, &'static str)> {
    use EndpointClass as C;
    let get = |endpoint: Endpoint| Some(((m == GET).then_some(endpoint), GET));
    let post = |endpoint: Endpoint| Some(((m == POST).then_some(endpoint), POST));
    let lifecycle = |name: &'static str| post(write(name, C::Lifecycle));
    match rest {
        [] => Some((
            match m {
                "GET" => Some(read("pipeline.get")),
                "PUT" | "PATCH" => Some(write("pipeline.update", C::Write)),
                "DELETE" => Some(write("pipeline.delete", C::Write)),
                _ => None,
            },
            PIPELINE,
        )),
        ["stats"] => get(read("stats")),
        ["metrics"] => get(read("metrics")),
        ["time_series"] => get(read("time_series")),
        ["time_series_stream"] => get(ep(
            "time_series_stream",
            C::Stream,
            Access::Role(Role::Read),
        )),
        ["logs"] => get(ep("logs", C::Stream, Access::Role(Role::Read))),
        ["events"] => get(read("events")),
        ["events", _] => get(read("event")),
        ["circuit_profile"] => get(ep("circuit_profile", C::Slow, Access::Role(Role::Read))),
        ["circuit_json_profile"] => get(ep(
            "circuit_json_profile",
            C::Slow,
            Access::Role(Role::Read),
        )),
        ["dataflow_graph"] => get(read("dataflow_graph")),
        ["heap_profile"] => get(ep("heap_profile", C::Slow, Access::Role(Role::Read))),
        ["support_bundle"] => get(ep("support_bundle", C::Slow, Access::Role(Role::Read))),
        ["completion_status"] => get(read("completion_status")),
        ["checkpoint_status"] => get(read("checkpoint_status")),
        ["checkpoint", "sync_status"] => get(read("checkpoint/sync_status")),
        ["checkpoints"] => get(read("checkpoints")),
        ["checkpoints", "remote"] => get(read("checkpoints/remote")),
        ["samply_profile"] => Some((
            matches!(m, "GET" | "POST").then_some(ep(
                "samply_profile",
                C::Stream,
                Access::Role(Role::Read),
            )),
            GET_POST,
        )),
        ["start"] => lifecycle("start"),
        ["stop"] => lifecycle("stop"),
        ["pause"] => lifecycle("pause"),
        ["resume"] => lifecycle("resume"),
        ["activate"] => lifecycle("activate"),
        ["approve"] => lifecycle("approve"),
        ["clear"] => lifecycle("clear"),
        ["dismiss_error"] => lifecycle("dismiss_error"),
        ["update_runtime"] => lifecycle("update_runtime"),
        ["diff"] => post(write("diff", C::Compiler)),
        ["checkpoint"] => post(write("checkpoint", C::Slow)),
        ["checkpoint", "sync"] => post(write("checkpoint/sync", C::Slow)),
        ["rebalance"] => post(write("rebalance", C::Slow)),
        ["start_compaction"] => post(write("start_compaction", C::Slow)),
        ["start_transaction"] => post(write("start_transaction", C::Write)),
        ["commit_transaction"] => post(write("commit_transaction", C::Write)),
        ["clock", "advance"] => post(write("clock/advance", C::Write)),
        ["query"] => get(websocket(write("query", C::Stream))),
        ["ingress", _] => post(write("ingress", C::Ingress)),
        ["egress", _] => post(write("egress", C::Stream)),
        ["tables" | "views", _, "connectors", _, "stats"] => get(read("connector.stats")),
        ["tables", _, "connectors", _, "completion_token"] => {
            get(write("connector.completion_token", C::Read))
        }
        ["tables", _, "connectors", _, _] => post(write("connector.action", C::Lifecycle)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(method: Method, path: &str) -> &'static str {
        classify(&method, path).unwrap().endpoint.name
    }

    #[test]
    fn activate_is_a_write_lifecycle_action_with_its_pipeline() {
        let c = classify(&Method::POST, "/v0/pipelines/orders/activate").unwrap();
        assert_eq!(c.endpoint.name, "activate");
        assert_eq!(c.endpoint.class, EndpointClass::Lifecycle);
        assert_eq!(c.endpoint.access, Access::Role(Role::Write));
        assert_eq!(c.pipeline.as_deref(), Some("orders"));
    }

    #[test]
    fn wrong_method_on_known_path_is_405_with_allow() {
        let e = classify(&Method::GET, "/v0/pipelines/orders/activate").unwrap_err();
        assert_eq!(e.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.code(), "MethodNotAllowed");
        let response = e.into_response();
        assert_eq!(response.headers()[http::header::ALLOW], "POST");
    }

    #[test]
    fn only_the_query_endpoint_is_a_websocket() {
        let query = classify(&Method::GET, "/v0/pipelines/p/query").unwrap();
        assert!(query.endpoint.websocket);
        for (m, p) in [
            (Method::GET, "/v0/pipelines"),
            (Method::DELETE, "/v0/pipelines/p"),
            (Method::GET, "/v0/pipelines/p/logs"),
            (Method::POST, "/v0/pipelines/p/egress/v"),
            (Method::GET, "/v0/pipelines/p/a/b/c/d/e/f/g"),
        ] {
            assert!(!classify(&m, p).unwrap().endpoint.websocket, "{m} {p}");
        }
    }

    #[test]
    fn streams_and_ingress_have_no_timeout() {
        let d = Duration::from_secs(30);
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
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn every_catalogued_path_has_a_listed_name() {
        for (m, p) in [
            (Method::GET, "/v0/pipelines"),
            (Method::GET, "/v0/pipelines/p/tables/t/connectors/c/stats"),
            (Method::POST, "/v0/pipelines/p/tables/t/connectors/c/start"),
            (Method::GET, "/v0/pipelines/p/checkpoint/sync_status"),
            (Method::GET, "/v0/cluster/events/1"),
            (Method::DELETE, "/v0/tenants/x"),
            (Method::GET, "/v0/whatever"),
        ] {
            assert!(ENDPOINT_NAMES.contains(&name(m, p)), "{p}");
        }
    }

    #[test]
    fn paths_outside_v0_are_unknown_and_unknown_v0_paths_unclassified() {
        let e = classify(&Method::GET, "/admin").unwrap_err();
        assert_eq!(e.code(), "UnknownEndpoint");
        let c = classify(&Method::GET, "/v0/pipelines/p/a/b/c/d/e/f/g").unwrap();
        assert_eq!(c.endpoint.access, Access::Unclassified);
        assert_eq!(c.pipeline.as_deref(), Some("p"));
    }
}
