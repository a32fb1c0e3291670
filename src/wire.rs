//! Header vocabulary the gateway reads and writes, on the ground floor: the names it owns
//! (`Feldera-Tenant`, `X-Forwarded-*`) and the reading of `Connection`/`Upgrade`, which the
//! credential reader, the rate limiter and the proxy all need alike.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FELDERA_TENANT: HeaderName = HeaderName::from_static("feldera-tenant");

/// Whether the headers ask for a protocol upgrade (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// Whether the headers ask for exactly a WebSocket upgrade: `Connection: upgrade` and one
/// `Upgrade` line naming only `websocket` (RFC 6455 §4.1).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let only_websocket = match (upgrades.next(), upgrades.next()) {
        (Some(value), None) => value.as_bytes().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    only_websocket && is_upgrade(headers)
}

pub fn connection_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Headers a `Connection` header cannot make hop-by-hop: the credential, the host, the
/// body's framing, and what the gateway itself sets.
pub const NOT_HOP_BY_HOP: [&str; 9] = [
    "authorization",
    "host",
    "content-length",
    "content-type",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];
