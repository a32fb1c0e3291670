//! The request context: every fact the gateway learns about one request, in one value.
//!
//! The server makes a [`RequestContext`] for each request (with the connection's
//! [`Connection`] facts) and inserts it as the request's only gateway extension; each layer
//! fills in what it learns, once: the request id (the log layer), the classification
//! (classify), the body's progress (the body limit), the principal (auth), the chosen
//! upstream (routing). Layers below read them from here. Because the access-log layer keeps a
//! handle to the same context, what inner layers learned is there when the response leaves,
//! whatever answered it.
//!
//! A fact is set at most once (a second `set` is ignored and reported as `false`). A fact
//! that a layer needs but an earlier layer did not set is a bug in the stack's order: the
//! accessors return a [`GatewayError::internal`] (a JSON 500 naming the missing fact in the
//! log), never a silent default.
//!
//! Cost: one allocation per request (the shared inner value) and one extension insert.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use http::HeaderValue;

use crate::body::{BodyProgress, Request};
use crate::catalog::Classified;
use crate::errors::GatewayError;
use crate::principal::Principal;

/// What the gateway knows about a client connection, made once per connection.
#[derive(Debug)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer's IP as a header value (for `X-Forwarded-For`), made once.
    pub peer_ip_header: HeaderValue,
    /// `https` or `http`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The TLS client certificate's identity, when one was presented and verified.
    pub client_certificate: Option<ClientCertificate>,
}

/// The identity a verified client certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject distinguished name, RFC 4514 style (`CN=etl-loader,O=Acme`).
    pub subject: String,
    /// DNS names of the subject alternative name extension.
    pub san_dns: Vec<String>,
    /// URIs of the subject alternative name extension (`spiffe://…`).
    pub san_uri: Vec<String>,
}

impl Connection {
    /// A plain-text connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Connection {
        Connection::new(peer, "http", None)
    }

    pub fn new(
        peer: SocketAddr,
        scheme: &'static str,
        client_certificate: Option<ClientCertificate>,
    ) -> Connection {
        let peer_ip_header = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Connection {
            peer,
            peer_ip_header,
            scheme,
            client_certificate,
        }
    }
}

/// The upstream routing chose: its index in the runtime's list, and its name; and the
/// route that chose it (`routes[N]`, or `console`), for the log and the trace.
#[derive(Debug, Clone)]
pub struct Route {
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    pub label: Arc<str>,
}

/// Where forwarding sent the request: the endpoint of its last try, and how many tries it
/// took. Written by forwarding as it goes, read by the log and the trace when it is done.
#[derive(Debug, Default)]
struct Forwarding {
    endpoint: Option<http::uri::Authority>,
    tries: u32,
}

#[derive(Debug)]
struct Inner {
    connection: Arc<Connection>,
    id: OnceLock<HeaderValue>,
    classified: OnceLock<Classified>,
    progress: OnceLock<BodyProgress>,
    principal: OnceLock<Principal>,
    route: OnceLock<Route>,
    client_ip: OnceLock<IpAddr>,
    forwarding: Mutex<Forwarding>,
}

/// The facts of one request (see the module docs). Cloning shares them.
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<Inner>);

fn missing(fact: &str) -> GatewayError {
    GatewayError::internal(format!(
        "the request context has no {fact}: a layer runs before the one that sets it"
    ))
}

impl RequestContext {
    pub fn new(connection: Arc<Connection>) -> RequestContext {
        RequestContext(Arc::new(Inner {
            connection,
            id: OnceLock::new(),
            classified: OnceLock::new(),
            progress: OnceLock::new(),
            principal: OnceLock::new(),
            route: OnceLock::new(),
            client_ip: OnceLock::new(),
            forwarding: Mutex::new(Forwarding::default()),
        }))
    }

    /// Makes the context of a request on `connection` and attaches it to `request`.
    pub fn attach(request: &mut Request, connection: Arc<Connection>) -> RequestContext {
        let context = RequestContext::new(connection);
        request.extensions_mut().insert(context.clone());
        context
    }

    /// The context of `request`; a request without one did not come through the server.
    pub fn of(request: &Request) -> Result<&RequestContext, GatewayError> {
        request
            .extensions()
            .get::<RequestContext>()
            .ok_or_else(|| missing("context at all"))
    }

    pub fn connection(&self) -> &Connection {
        &self.0.connection
    }

    pub fn set_id(&self, id: HeaderValue) -> bool {
        self.0.id.set(id).is_ok()
    }

    pub fn id(&self) -> Option<&HeaderValue> {
        self.0.id.get()
    }

    pub fn set_classified(&self, classified: Classified) -> bool {
        self.0.classified.set(classified).is_ok()
    }

    /// The classification, when classify ran (the log reads it whatever happened).
    pub fn classified_opt(&self) -> Option<&Classified> {
        self.0.classified.get()
    }

    pub fn classified(&self) -> Result<&Classified, GatewayError> {
        self.classified_opt()
            .ok_or_else(|| missing("classification"))
    }

    pub fn set_progress(&self, progress: BodyProgress) -> bool {
        self.0.progress.set(progress).is_ok()
    }

    /// The body's progress; `None` for a request without a body.
    pub fn progress(&self) -> Option<&BodyProgress> {
        self.0.progress.get()
    }

    pub fn set_principal(&self, principal: Principal) -> bool {
        self.0.principal.set(principal).is_ok()
    }

    /// The verified principal; `None` on public paths.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.principal.get()
    }

    pub fn set_route(&self, route: Route) -> bool {
        self.0.route.set(route).is_ok()
    }

    pub fn route_opt(&self) -> Option<&Route> {
        self.0.route.get()
    }

    pub fn route(&self) -> Result<&Route, GatewayError> {
        self.route_opt().ok_or_else(|| missing("route"))
    }

    /// Sets the client's address as resolved through trusted proxies.
    pub fn set_client_ip(&self, ip: IpAddr) -> bool {
        self.0.client_ip.set(ip).is_ok()
    }

    /// Forwarding starts a try on `endpoint`.
    pub fn record_try(&self, endpoint: &http::uri::Authority) {
        if let Ok(mut forwarding) = self.0.forwarding.lock() {
            forwarding.endpoint = Some(endpoint.clone());
            forwarding.tries += 1;
        }
    }

    /// The endpoint of the last try and the number of tries beyond the first; `None` when the
    /// request was never sent.
    pub fn tries(&self) -> Option<(http::uri::Authority, u32)> {
        let forwarding = self.0.forwarding.lock().ok()?;
        let endpoint = forwarding.endpoint.clone()?;
        Some((endpoint, forwarding.tries.saturating_sub(1)))
    }

    /// The client's address: as resolved through trusted proxies, else the TCP peer's.
    pub fn client_ip(&self) -> IpAddr {
        self.0
            .client_ip
            .get()
            .copied()
            .unwrap_or(self.0.connection.peer.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_set_once_and_missing_ones_are_internal_errors() {
        let context = RequestContext::new(Arc::new(Connection::plain(
            "10.0.0.1:5000".parse().unwrap(),
        )));
        let error = context.route().unwrap_err();
        assert_eq!(error.code(), "InternalError");
        assert_eq!(error.status(), 500);
        let route = Route {
            upstream: 1,
            upstream_name: "eu".into(),
            label: "routes[0]".into(),
        };
        assert!(context.set_route(route.clone()));
        assert!(!context.set_route(Route {
            upstream: 0,
            ..route
        }));
        assert_eq!(context.route().unwrap().upstream, 1);
        assert_eq!(context.client_ip().to_string(), "10.0.0.1");
        // A clone is the same context: what one layer sets, the log's handle sees.
        let log_handle = context.clone();
        assert!(context.set_id(HeaderValue::from_static("abc")));
        assert_eq!(log_handle.id().unwrap(), "abc");
        let request = Request::new(crate::body::empty());
        assert_eq!(
            RequestContext::of(&request).unwrap_err().code(),
            "InternalError"
        );
    }
}
