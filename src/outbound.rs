//! Connections the gateway opens itself: toward managers and identity providers. One place
//! for their TCP options and TLS (rustls with aws-lc, the webpki roots), so the upstream
//! client and the key-set fetcher cannot drift apart.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// The connector every outgoing client uses (upstreams, JWKS fetches): plain HTTP or HTTPS
/// (rustls with aws-lc, webpki roots), TCP_NODELAY, the given connect deadline.
pub fn https_connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
