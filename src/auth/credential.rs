//! Reading the credential and the requested tenant off a request, without judging them.
//!
//! - `Authorization: Bearer <token>`: the scheme exactly `Bearer` and one space, as the
//!   manager requires; anything else, or the header given twice, is `malformed_credentials`.
//!   A value longer than the 8 KiB token bound is `credentials_too_large` before it is read.
//! - On a WebSocket upgrade without `Authorization`: `Sec-WebSocket-Protocol` entries
//!   `feldera-bearer.<base64url(token)>` (the credential; twice is malformed) and
//!   `feldera-tenant.<base64url(tenant)>`, as Feldera's console sends them. Padding is
//!   tolerated; bad base64 or non-UTF-8 is `malformed_credentials`.
//! - The requested tenant: `Feldera-Tenant` (once, visible ASCII), and the WebSocket entry.
//!   The caller checks them against the principal's tenants.

use base64::Engine as _;
use http::header::{self, HeaderMap};

use crate::wire::{is_upgrade, FELDERA_TENANT};

use super::jwt::MAX_TOKEN_BYTES;
use super::Reason;

const BEARER: &str = "Bearer ";
const WS_BEARER: &str = "feldera-bearer.";
const WS_TENANT: &str = "feldera-tenant.";

/// The WebSocket subprotocol entries of an upgrade request.
fn websocket_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let upgrade = is_upgrade(headers);
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter(move |_| upgrade)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn decode_b64url(text: &str) -> Result<String, Reason> {
    // base64 grows by 4/3; anything longer cannot hold a token within the bound.
    if text.len() > MAX_TOKEN_BYTES / 3 * 4 + 4 {
        return Err(Reason::CredentialsTooLarge);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| Reason::MalformedCredentials)?;
    String::from_utf8(bytes).map_err(|_| Reason::MalformedCredentials)
}

/// The bearer credential (a JWT or `apikey:…`), if one was sent.
pub fn bearer(headers: &HeaderMap) -> Result<Option<String>, Reason> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Err(Reason::MalformedCredentials);
        }
        if value.len() > BEARER.len() + MAX_TOKEN_BYTES {
            return Err(Reason::CredentialsTooLarge);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix(BEARER))
            .filter(|t| !t.is_empty() && !t.contains(' '))
            .ok_or(Reason::MalformedCredentials)?;
        return Ok(Some(token.to_owned()));
    }
    let mut found = None;
    for entry in websocket_protocols(headers) {
        if let Some(encoded) = entry.strip_prefix(WS_BEARER) {
            if found.is_some() {
                return Err(Reason::MalformedCredentials);
            }
            let token = decode_b64url(encoded)?;
            if token.is_empty() || token.contains(' ') {
                return Err(Reason::MalformedCredentials);
            }
            found = Some(token);
        }
    }
    Ok(found)
}

/// The tenants the client asks to act in (`Feldera-Tenant`, then the WebSocket entry).
pub fn requested_tenants(headers: &HeaderMap) -> Result<Vec<String>, Reason> {
    let mut tenants = Vec::new();
    let mut values = headers.get_all(FELDERA_TENANT).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Err(Reason::MalformedCredentials);
        }
        let tenant = value.to_str().map_err(|_| Reason::MalformedCredentials)?;
        if !tenant.is_empty() {
            tenants.push(tenant.to_owned());
        }
    }
    for entry in websocket_protocols(headers) {
        if let Some(encoded) = entry.strip_prefix(WS_TENANT) {
            let tenant = decode_b64url(encoded)?;
            if !tenant.is_empty() {
                tenants.push(tenant);
            }
        }
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn bearer_scheme_must_be_exact() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Ok(Some("abc".to_string()))
        );
        for bad in [
            "bearer abc",
            "Bearer  abc",
            "Basic abc",
            "Bearer ",
            "Bearer a b",
        ] {
            assert_eq!(
                bearer(&headers(&[("authorization", bad)])),
                Err(Reason::MalformedCredentials),
                "{bad}"
            );
        }
        assert_eq!(
            bearer(&headers(&[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b")
            ])),
            Err(Reason::MalformedCredentials)
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            bearer(&headers(&[("authorization", &huge)])),
            Err(Reason::CredentialsTooLarge)
        );
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn websocket_subprotocols_carry_token_and_tenant_on_upgrades_only() {
        let protocol = format!(
            "feldera-ws-v1, feldera-bearer.{}, feldera-tenant.{}",
            b64("tok.en"),
            b64("acme")
        );
        let upgrade = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", &protocol),
        ]);
        assert_eq!(bearer(&upgrade), Ok(Some("tok.en".to_string())));
        assert_eq!(
            requested_tenants(&upgrade).unwrap(),
            vec!["acme".to_string()]
        );
        let plain = headers(&[("sec-websocket-protocol", &protocol)]);
        assert_eq!(bearer(&plain), Ok(None));
        let bad = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "feldera-bearer.!!!"),
        ]);
        assert_eq!(bearer(&bad), Err(Reason::MalformedCredentials));
    }
}
