//! Request framing and the headers that are the gateway's to set.
//!
//! [`RequestHygiene`] runs before anything reads a header:
//! - **Host**: more than one `Host`, none on HTTP/1.1, or one that is not a valid authority →
//!   400 `InvalidRequest`. On HTTP/2 `:authority` wins, and a `host` header that names
//!   another one is refused the same way (two names for one request is how routing and
//!   logging get told different stories).
//! - **Transfer-Encoding**: any coding besides `chunked` → 501 `UnsupportedTransferCoding`
//!   (RFC 9112 §6.1), never silently dropped.
//! - **Headers that name the client or rewrite the request** are removed from client
//!   requests, whatever their spelling (`_` for `-`, any case): `Forwarded`, `X-Real-IP`,
//!   `X-Original-URL`, `X-Rewrite-URL`, `X-HTTP-Method-Override` (and `X-Method-Override`,
//!   `X-HTTP-Method`), `X-Forwarded-*` written with underscores. The gateway sets
//!   `Forwarded` and `X-Forwarded-*` itself (`proxy::headers`).
//! - **`Connection: <name>`** removes the named headers (they are hop-by-hop by the client's
//!   say-so), except the ones a client cannot make hop-by-hop: `Authorization`, `Host`,
//!   `Content-Length`, `Content-Type`, and the gateway's own; `Proxy-Authorization` is
//!   always removed.
//!
//! [`UnverifiedCredentials`] runs after classification, on API routes (not the web
//! console's files): credentials the gateway did not verify do not travel on to the manager —
//! `Cookie` (unless `[auth] forward_cookies = true`), `X-Api-Key`, and an `api_key` query
//! parameter.

use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery};
use http::Version;

use crate::body::Request;
use crate::check::RequestCheck;
use crate::context::RequestContext;
use crate::errors::GatewayError;
use crate::wire::{connection_tokens, NOT_HOP_BY_HOP};

/// Headers a client may not send on: they describe the client or rewrite the request.
const CLIENT_OWNED: [&str; 8] = [
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
    "x-client-ip",
];

/// Whether `name` is one of the client-owned headers, in any spelling.
fn is_client_owned(name: &HeaderName) -> bool {
    let name = name.as_str();
    if !name.contains('_') {
        return CLIENT_OWNED.contains(&name);
    }
    let dashed = name.replace('_', "-");
    CLIENT_OWNED.contains(&dashed.as_str()) || dashed.starts_with("x-forwarded-")
}

/// Checks framing and removes what only the gateway may set (see the module docs).
#[derive(Clone, Copy)]
pub struct RequestHygiene;

impl RequestCheck for RequestHygiene {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        check_host(request)?;
        check_transfer_coding(request.headers())?;
        strip(request.headers_mut());
        Ok(())
    }
}

fn check_host(request: &Request) -> Result<(), GatewayError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::invalid_request("more than one Host header"));
    }
    let host = match host {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<Authority>().ok())
                .filter(|authority| !authority.host().is_empty())
                .ok_or_else(|| {
                    GatewayError::invalid_request("the Host header is not a valid authority")
                })?,
        ),
        None => None,
    };
    match request.version() {
        Version::HTTP_2 | Version::HTTP_3 => {
            if let (Some(authority), Some(host)) = (request.uri().authority(), &host) {
                if !authority.as_str().eq_ignore_ascii_case(host.as_str()) {
                    return Err(GatewayError::invalid_request(
                        "the host header and :authority name different hosts",
                    ));
                }
            }
        }
        // An absolute-form target (`GET http://a/… HTTP/1.1`) names the host itself; RFC 9112
        // §3.2.2 says to ignore `Host` then, which is exactly how two parts of a chain end up
        // disagreeing about the host. A conflicting `Host` is refused (found by the property
        // tests, tests/properties.rs).
        Version::HTTP_11 | Version::HTTP_10 => {
            if let (Some(authority), Some(host)) = (request.uri().authority(), &host) {
                if !authority.as_str().eq_ignore_ascii_case(host.as_str()) {
                    return Err(GatewayError::invalid_request(
                        "the Host header and the request target name different hosts",
                    ));
                }
            }
            if request.version() == Version::HTTP_11
                && host.is_none()
                && request.uri().authority().is_none()
            {
                return Err(GatewayError::invalid_request(
                    "an HTTP/1.1 request needs a Host header",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_transfer_coding(headers: &HeaderMap) -> Result<(), GatewayError> {
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(GatewayError::unsupported_transfer_coding(coding));
            }
        }
    }
    Ok(())
}

fn strip(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(connection_tokens)
        .filter_map(|token| HeaderName::try_from(token).ok())
        .filter(|name| {
            !NOT_HOP_BY_HOP.contains(&name.as_str())
                && *name != header::UPGRADE
                && *name != header::CONNECTION
        })
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHORIZATION);
    let owned: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_client_owned(name))
        .cloned()
        .collect();
    for name in owned {
        headers.remove(name);
    }
}

/// Removes credentials the gateway did not verify from API requests (see the module docs).
#[derive(Clone, Copy)]
pub struct UnverifiedCredentials {
    pub forward_cookies: bool,
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

impl RequestCheck for UnverifiedCredentials {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        if RequestContext::of(request)?.classified()?.endpoint.console {
            return Ok(());
        }
        let headers = request.headers_mut();
        if !self.forward_cookies {
            headers.remove(header::COOKIE);
        }
        headers.remove(X_API_KEY);
        let Some(query) = request.uri().query() else {
            return Ok(());
        };
        if !query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("api_key"))
        {
            return Ok(());
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split('=').next() != Some("api_key"))
            .collect();
        let path = request.uri().path();
        let path_and_query = if kept.is_empty() {
            PathAndQuery::try_from(path)
        } else {
            PathAndQuery::try_from(format!("{path}?{}", kept.join("&")))
        }
        .map_err(|e| GatewayError::internal(format!("removing api_key: {e}")))?;
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(path_and_query);
        *request.uri_mut() = http::Uri::from_parts(parts)
            .map_err(|e| GatewayError::internal(format!("removing api_key: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = http::Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(crate::body::empty()).unwrap()
    }

    fn reason(mut request: Request) -> Option<String> {
        RequestHygiene.check(&mut request).err().map(|e| {
            e.details()["reason"]
                .as_str()
                .unwrap_or(e.code())
                .to_owned()
        })
    }

    #[test]
    fn host_must_be_one_valid_authority_and_agree_with_h2s() {
        let v11 = Version::HTTP_11;
        assert_eq!(reason(request(v11, "/", &[("host", "gw")])), None);
        assert_eq!(
            reason(request(v11, "/", &[])).as_deref(),
            Some("an HTTP/1.1 request needs a Host header")
        );
        assert_eq!(
            reason(request(v11, "/", &[("host", "a"), ("host", "b")])).as_deref(),
            Some("more than one Host header")
        );
        for bad in ["a b", "", "x@y/z", "[::1"] {
            assert_eq!(
                reason(request(v11, "/", &[("host", bad)])).as_deref(),
                Some("the Host header is not a valid authority"),
                "{bad:?}"
            );
        }
        assert_eq!(reason(request(Version::HTTP_10, "/", &[])), None);
        let h2 = Version::HTTP_2;
        assert_eq!(reason(request(h2, "http://gw:1/", &[])), None);
        assert_eq!(
            reason(request(h2, "http://gw:1/", &[("host", "GW:1")])),
            None
        );
        assert_eq!(
            reason(request(h2, "http://gw:1/", &[("host", "evil")])).as_deref(),
            Some("the host header and :authority name different hosts")
        );
        // Absolute-form on HTTP/1.1: the target's authority and Host must agree.
        assert_eq!(
            reason(request(v11, "http://gw:1/", &[("host", "gw:1")])),
            None
        );
        assert_eq!(
            reason(request(v11, "http://b/v0/pipelines", &[("host", "a")])).as_deref(),
            Some("the Host header and the request target name different hosts")
        );
    }

    #[test]
    fn only_chunked_is_a_transfer_coding_we_take() {
        let ok = request(
            Version::HTTP_11,
            "/",
            &[("host", "g"), ("transfer-encoding", "chunked")],
        );
        assert_eq!(reason(ok), None);
        let gzip = request(
            Version::HTTP_11,
            "/",
            &[("host", "g"), ("transfer-encoding", "gzip, chunked")],
        );
        assert_eq!(reason(gzip).as_deref(), Some("UnsupportedTransferCoding"));
    }

    #[test]
    fn client_owned_headers_go_in_every_spelling_and_connection_cannot_take_authorization() {
        let mut r = request(
            Version::HTTP_11,
            "/",
            &[
                ("host", "g"),
                ("forwarded", "for=1.2.3.4"),
                ("x_forwarded_for", "1.2.3.4"),
                ("X-Real-IP", "1.2.3.4"),
                ("x-http-method-override", "DELETE"),
                ("x_original_url", "/admin"),
                ("connection", "authorization, host, x-secret, keep-alive"),
                ("authorization", "Bearer t"),
                ("x-secret", "1"),
                ("proxy-authorization", "Basic x"),
            ],
        );
        RequestHygiene.check(&mut r).unwrap();
        let h = r.headers();
        for gone in [
            "forwarded",
            "x_forwarded_for",
            "x-real-ip",
            "x-http-method-override",
            "x_original_url",
            "x-secret",
            "proxy-authorization",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["host"], "g");
    }
}
