//! Header rewriting toward the upstream and back.
//!
//! Toward the upstream: hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`)
//! are removed, except `Connection: upgrade` and `Upgrade` on a WebSocket upgrade;
//! `X-Forwarded-For/-Proto/-Host` are set from what the gateway saw, overwriting what the
//! client sent (the manager reads none of them, but its neighbours may); `Host` is dropped so
//! the client sets the endpoint's; `Authorization` follows the upstream's `credentials` mode
//! (with `strip` and `replace`, a WebSocket's `feldera-bearer.*` subprotocol entry — the same
//! credential in another header — is removed too);
//! `Feldera-Tenant` is the principal's tenant, never the client's unchecked copy: without a
//! principal (public paths) or a principal without a tenant, it is removed. (A principal's
//! tenant comes from a verified credential, or — only with `[auth] mode = "off"` and
//! `trust_tenant_header = true` — from the client, by the operator's explicit choice.)
//! `traceparent`/`tracestate`: with tracing on, replaced by the upstream span's context (the
//! manager's parent is the gateway's span; a client's malformed header never reaches it);
//! with tracing off, the client's pass unchanged (see `spans`).
//! Back toward the client: hop-by-hop headers of the upstream's response are removed (except
//! on a 101).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::CredentialsMode;
use crate::principal::Principal;
use crate::spans::{TRACEPARENT, TRACESTATE};

use super::Upstream;

pub use crate::wire::{
    connection_tokens, is_upgrade, is_websocket_upgrade, FELDERA_TENANT, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO,
};

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    // The h2c upgrade's settings: meaningless once the upgrade is refused.
    HeaderName::from_static("http2-settings"),
];

/// Whether any hop-by-hop header (or `Upgrade`) is present: one pass over the names, so the
/// common case (none) costs no hash lookups.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name))
}

/// Removes hop-by-hop headers; keeps `Connection: upgrade` and `Upgrade` when `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !upgrade && !has_hop_by_hop(headers) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        if !connection.as_bytes().eq_ignore_ascii_case(b"keep-alive")
            && !connection.as_bytes().eq_ignore_ascii_case(b"close")
            && !connection.as_bytes().eq_ignore_ascii_case(b"upgrade")
        {
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(connection_tokens)
                .filter_map(|t| HeaderName::try_from(t).ok())
                .filter(|name| !(upgrade && *name == header::UPGRADE))
                .filter(|name| !crate::wire::NOT_HOP_BY_HOP.contains(&name.as_str()))
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites `Location` and `Content-Location` that point at the upstream's own address to
/// the gateway's public one (`public`: scheme and host the client used), or to a relative
/// reference when the public host is unknown: a client must never be sent around the edge.
pub fn rewrite_location(
    headers: &mut HeaderMap,
    upstream: &http::uri::Authority,
    public: Option<(&str, &str)>,
) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = value.parse::<http::Uri>() else {
            continue;
        };
        let Some(authority) = uri.authority() else {
            continue;
        };
        if !authority.as_str().eq_ignore_ascii_case(upstream.as_str()) {
            continue;
        }
        let rest = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let rewritten = match public {
            Some((scheme, host)) => format!("{scheme}://{host}{rest}"),
            None => rest.to_owned(),
        };
        match HeaderValue::try_from(rewritten) {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(_) => {
                headers.remove(name);
            }
        }
    }
}

/// Whether a response's framing is one the gateway refuses to pass on: both
/// `Transfer-Encoding` and `Content-Length`, a transfer coding other than `chunked`, or a
/// status outside 100–599 (RFC 9112 §6.1, RFC 9110 §15).
pub fn malformed_response(status: http::StatusCode, headers: &HeaderMap) -> bool {
    let codings: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    status.as_u16() > 599
        || (!codings.is_empty() && headers.contains_key(header::CONTENT_LENGTH))
        || codings.iter().any(|c| c != "chunked")
}

/// Everything the request headers need before they go to `pool`.
pub struct Forwarded<'a> {
    /// The client's address as an `X-Forwarded-For` value: the TCP peer's (made once per
    /// connection), or the client behind trusted proxies.
    pub client_ip: HeaderValue,
    /// The same client, for `Forwarded`.
    pub client: std::net::IpAddr,
    /// `http` or `https`: how the client reached the gateway.
    pub scheme: &'static str,
    /// The request URI's authority (HTTP/2 sends the host there, not in `Host`).
    pub authority: Option<http::uri::Authority>,
    pub principal: Option<&'a Principal>,
    pub upgrade: bool,
    /// The trace context to send (`spans::propagation`); `None` while tracing is off.
    pub trace: Option<HeaderMap>,
}

/// Rewrites request headers for the upstream (see the module docs).
pub fn rewrite_request(headers: &mut HeaderMap, pool: &Upstream, forwarded: Forwarded<'_>) {
    strip_hop_by_hop(headers, forwarded.upgrade);
    let host = headers.remove(header::HOST).or_else(|| {
        forwarded
            .authority
            .and_then(|a| HeaderValue::try_from(a.as_str()).ok())
    });
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(forwarded.scheme),
    );
    // RFC 7239: the same facts as X-Forwarded-*, in one header the gateway alone writes.
    // Built by hand from the X-Forwarded-For value (the client's address as text, made
    // once per connection), not with `format!`: this runs for every request.
    let ip = forwarded.client_ip.to_str().unwrap_or("unknown");
    let host_text = host.as_ref().and_then(|h| h.to_str().ok());
    let mut forwarded_value = String::with_capacity(32 + ip.len() + host_text.map_or(0, str::len));
    forwarded_value.push_str("for=");
    if forwarded.client.is_ipv6() {
        forwarded_value.push_str("\"[");
        forwarded_value.push_str(ip);
        forwarded_value.push_str("]\"");
    } else {
        forwarded_value.push_str(ip);
    }
    forwarded_value.push_str(";proto=");
    forwarded_value.push_str(forwarded.scheme);
    if let Some(host) = host_text {
        forwarded_value.push_str(";host=\"");
        forwarded_value.push_str(host);
        forwarded_value.push('"');
    }
    if let Ok(value) = HeaderValue::try_from(forwarded_value) {
        headers.insert(header::FORWARDED, value);
    }
    headers.insert(X_FORWARDED_FOR, forwarded.client_ip);
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
    match pool.credentials {
        CredentialsMode::Pass => {}
        CredentialsMode::Strip => {
            headers.remove(header::AUTHORIZATION);
            strip_websocket_bearer(headers);
        }
        CredentialsMode::Replace => {
            match &pool.replacement_authorization {
                Some(value) => {
                    headers.insert(header::AUTHORIZATION, value.clone());
                }
                None => {
                    headers.remove(header::AUTHORIZATION);
                }
            }
            strip_websocket_bearer(headers);
        }
    }
    match forwarded
        .principal
        .and_then(|p| p.tenant.as_deref())
        .and_then(|t| HeaderValue::try_from(t).ok())
    {
        Some(tenant) => headers.insert(FELDERA_TENANT, tenant),
        None => headers.remove(FELDERA_TENANT),
    };
    if let Some(trace) = forwarded.trace {
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        for (name, value) in &trace {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Removes `feldera-bearer.*` entries from `Sec-WebSocket-Protocol` (the header goes when
/// nothing else is left in it).
fn strip_websocket_bearer(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with("feldera-bearer."))
        .map(str::to_owned)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Ok(value) = HeaderValue::try_from(kept.join(", ")) {
        if !kept.is_empty() {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TE).is_none());
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn websocket_bearer_entries_are_removed_and_the_rest_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("feldera-ws-v1, feldera-bearer.dG9r, feldera-tenant.YQ"),
        );
        strip_websocket_bearer(&mut h);
        assert_eq!(
            h[header::SEC_WEBSOCKET_PROTOCOL],
            "feldera-ws-v1, feldera-tenant.YQ"
        );
        let mut only = HeaderMap::new();
        only.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("feldera-bearer.dG9r"),
        );
        strip_websocket_bearer(&mut only);
        assert!(only.get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    #[test]
    fn upgrade_headers_survive_on_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }
}
