//! Credential extraction from arbitrary header values: `Authorization`,
//! `Sec-WebSocket-Protocol` on an upgrade, `Feldera-Tenant`. Never a panic; a bearer token
//! taken out is a substring of what was sent or decoded from it, without spaces.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pipeline_gateway::auth::credential;

fuzz_target!(|data: &[u8]| {
    // Three header values separated by 0xff (never valid in a header value).
    let mut parts = data.split(|b| *b == 0xff);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    for name in ["authorization", "sec-websocket-protocol", "feldera-tenant"] {
        if let Some(Ok(value)) = parts.next().map(HeaderValue::from_bytes) {
            headers.append(name, value);
        }
    }
    if let Ok(Some(token)) = credential::bearer(&headers) {
        assert!(!token.is_empty() && !token.contains(' '));
    }
    let _ = credential::requested_tenants(&headers);
});
