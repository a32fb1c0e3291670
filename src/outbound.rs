//! Connections the gateway opens itself: toward managers and identity providers. One place
//! for their TCP options and TLS (rustls with aws-lc), so the upstream client and the
//! key-set fetcher cannot drift apart.
//!
//! Toward managers ([`ManagerConnector`]) the TLS handshake is part of connecting: the pool
//! gets a connection only once TCP *and* TLS are up, both within the upstream's
//! `connect_timeout`, so a certificate the gateway does not trust is a connect failure like a
//! refused port — 502 `UpstreamUnavailable` with a reason that starts with `TLS handshake
//! failed:`, counted towards the endpoint's ejection and retried on another endpoint
//! ([`OutboundError::Tls`], [`tls_failure`]). What `[upstreams.tls]` (see
//! `config::UpstreamTlsConfig`) changes:
//!
//! - trust: the public webpki roots, plus or instead of (`webpki_roots = false`) the CA
//!   certificates in `ca`;
//! - the gateway's own certificate (`client_cert` + `client_key`) for managers that ask for
//!   one (mTLS); a key that does not match the certificate is refused when the files are read;
//! - the name sent as SNI and verified (`server_name`; otherwise the endpoint's host). The
//!   name is always verified: there is no switch to skip it.
//!
//! Only `http/1.1` is offered by ALPN: the pool speaks HTTP/1.1 to managers (one request per
//! connection at a time, see `proxy::pool`), so HTTP/2 toward an upstream is never used even
//! when it offers it. TLS 1.2 and 1.3 with rustls' default (safe) cipher suites; sessions are
//! resumed (rustls' in-memory cache, per upstream).
//!
//! A manager that requires a client certificate and gets none rejects the connection under
//! TLS 1.3 only *after* the client's side of the handshake finished, with an alert that
//! arrives when the first request is sent; [`tls_failure`] recognises that alert in the send
//! error so the client sees the same TLS reason.
//!
//! Files: read (and hashed) when the runtime is built — at start, by `check-config` and on
//! every reload, where an upstream whose files changed is built anew even when its
//! configuration did not. With `server.watch_config`, [`ManagerConnector::refresh`] also
//! polls them (modification time and size every second; the content hash decides) and swaps
//! the TLS settings in place when they changed: new connections use them, open ones are left
//! alone. A file that is unreadable or broken keeps the old settings, with a warning.
//!
//! Not here: TLS on the gateway's own listeners (the server side), and HTTP/2 toward managers.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

use crate::config::{Problems, UpstreamTlsConfig};

/// The connector every outgoing client uses (upstreams, JWKS fetches): plain HTTP or HTTPS
/// (rustls with aws-lc, webpki roots), TCP_NODELAY, the given connect deadline.
pub fn https_connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp_connector(connect_timeout))
}

fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    http
}

/// A connection to a manager: plain TCP for `http://`, TLS for `https://`.
pub type ManagerStream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Why a connection to a manager could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("TCP connect failed")]
    Tcp(#[source] crate::body::BoxError),
    /// The TLS handshake failed; `reason` is one of the fixed strings of [`tls_reason`].
    #[error("{reason}")]
    Tls {
        reason: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Opens connections to one upstream's endpoints, with that upstream's TLS settings.
pub struct ManagerConnector {
    tcp: HttpConnector,
    tls: ArcSwap<ManagerTls>,
    /// `[upstreams.tls]` as configured (to read the files again), and its key path.
    config: Option<UpstreamTlsConfig>,
    at: String,
    /// The files' modification times and sizes at the last poll (a broken file is not read
    /// again until it changes).
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ManagerConnector {
    /// Reads the files `config` names (`at`: its key path, for problems).
    pub fn new(
        connect_timeout: Duration,
        config: Option<&UpstreamTlsConfig>,
        at: &str,
    ) -> Result<ManagerConnector, Problems> {
        let tls = ManagerTls::load(config, at)?;
        let seen = tls.files.iter().map(|f| stamp(&f.path)).collect();
        Ok(ManagerConnector {
            tcp: tcp_connector(connect_timeout),
            tls: ArcSwap::from_pointee(tls),
            config: config.cloned(),
            at: at.to_owned(),
            seen: Mutex::new(seen),
        })
    }

    /// TCP to `authority`, then TLS when `scheme` is https. The caller bounds the whole by
    /// the connect timeout.
    pub async fn connect(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<ManagerStream, OutboundError> {
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| OutboundError::Tcp(e.into()))?;
        let tcp = self
            .tcp
            .clone()
            .oneshot(uri)
            .await
            .map_err(|e| OutboundError::Tcp(e.into()))?;
        if *scheme != Scheme::HTTPS {
            return Ok(MaybeHttpsStream::Http(tcp));
        }
        let tls = self.tls.load_full();
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                ServerName::try_from(host.to_owned()).map_err(|e| OutboundError::Tls {
                    reason: "TLS handshake failed: the endpoint's host is not a TLS name",
                    source: io::Error::new(io::ErrorKind::InvalidInput, e),
                })?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
        match connector.connect(name, TokioIo::new(tcp)).await {
            Ok(stream) => Ok(MaybeHttpsStream::Https(TokioIo::new(stream))),
            Err(source) => Err(OutboundError::Tls {
                reason: tls_reason(&source),
                source,
            }),
        }
    }

    /// Whether a file differs from what the current settings were built from (read and
    /// hashed now): a reload then builds the upstream anew.
    pub fn files_changed(&self) -> bool {
        self.tls
            .load()
            .files
            .iter()
            .any(|file| std::fs::read(&file.path).map_or(true, |bytes| hash(&bytes) != file.hash))
    }

    /// Polls the files (see the module docs): when one's modification time or size moved and
    /// the content differs, the settings are built again and swapped in. `Some` when that was
    /// tried: whether it worked, with the problems.
    pub fn refresh(&self) -> Option<Result<(), Problems>> {
        let current = self.tls.load_full();
        let now: Vec<_> = current.files.iter().map(|f| stamp(&f.path)).collect();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        if !self.files_changed() {
            return None;
        }
        Some(ManagerTls::load(self.config.as_ref(), &self.at).map(|tls| {
            self.tls.store(Arc::new(tls));
        }))
    }
}

/// The TLS settings toward one upstream, and the files they were read from.
struct ManagerTls {
    client: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    files: Vec<ReadFile>,
}

/// A file as read: its path and content hash.
struct ReadFile {
    path: PathBuf,
    hash: [u8; 32],
}

impl ManagerTls {
    /// Builds the settings from `[upstreams.tls]` (the public roots only without it).
    fn load(config: Option<&UpstreamTlsConfig>, at: &str) -> Result<ManagerTls, Problems> {
        let mut problems = Problems::default();
        let mut files = Vec::new();
        let mut read = |key: &str, path: &Path, problems: &mut Problems| match std::fs::read(path) {
            Ok(bytes) => {
                files.push(ReadFile {
                    path: path.to_owned(),
                    hash: hash(&bytes),
                });
                Some(bytes)
            }
            Err(error) => {
                problems.push(
                    format!("{at}.{key}"),
                    format!("cannot read {}: {error}", path.display()),
                );
                None
            }
        };
        let mut roots = RootCertStore::empty();
        if config.is_none_or(|c| c.webpki_roots) {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(path) = config.and_then(|c| c.ca.as_deref()) {
            let certificates = read("ca", path, &mut problems)
                .and_then(|bytes| certificates(&bytes, &format!("{at}.ca"), &mut problems));
            for certificate in certificates.into_iter().flatten() {
                if let Err(error) = roots.add(certificate) {
                    problems.push(
                        format!("{at}.ca"),
                        format!("{}: not a usable CA certificate: {error}", path.display()),
                    );
                }
            }
        }
        let client_pair =
            config.and_then(|c| Some((c.client_cert.as_deref()?, c.client_key.as_deref()?)));
        let client_auth = client_pair.and_then(|(cert, key)| {
            let chain = read("client_cert", cert, &mut problems).and_then(|bytes| {
                certificates(&bytes, &format!("{at}.client_cert"), &mut problems)
            });
            let key = read("client_key", key, &mut problems).and_then(|bytes| {
                match PrivateKeyDer::from_pem_slice(&bytes) {
                    Ok(key) => Some(key),
                    Err(error) => {
                        problems.push(
                            format!("{at}.client_key"),
                            format!("{}: no PEM private key: {error}", key.display()),
                        );
                        None
                    }
                }
            });
            Some((chain?, key?))
        });
        let server_name = match config.and_then(|c| c.server_name.as_deref()) {
            Some(name) => match ServerName::try_from(name.to_owned()) {
                Ok(name) => Some(name),
                Err(_) => {
                    problems.push(
                        format!("{at}.server_name"),
                        format!("\"{name}\" is not a DNS name or an IP address"),
                    );
                    None
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = match ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots),
            Err(error) => {
                problems.push(at.to_owned(), format!("TLS settings: {error}"));
                return Err(problems);
            }
        };
        let mut client = match client_auth {
            Some((chain, key)) => match builder.with_client_auth_cert(chain, key) {
                Ok(client) => client,
                Err(rustls::Error::InconsistentKeys(_)) => {
                    problems.push(
                        format!("{at}.client_key"),
                        "does not match client_cert (the key of another certificate)",
                    );
                    return Err(problems);
                }
                Err(error) => {
                    problems.push(format!("{at}.client_key"), format!("unusable: {error}"));
                    return Err(problems);
                }
            },
            None => builder.with_no_client_auth(),
        };
        // The pool speaks HTTP/1.1 only (see the module docs).
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ManagerTls {
            client: Arc::new(client),
            server_name,
            files,
        })
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    bytes: &[u8],
    at: &str,
    problems: &mut Problems,
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>() {
        Ok(certificates) if certificates.is_empty() => {
            problems.push(
                at,
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
            );
            None
        }
        Ok(certificates) => Some(certificates),
        Err(error) => {
            problems.push(at, format!("not PEM: {error}"));
            None
        }
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The TLS reason for a failed send on a new connection, when TLS is what failed (a manager
/// rejecting the handshake after the client's side finished, see the module docs).
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    find_tls_error(error).map(classify)
}

/// The fixed reason a client sees for a failed handshake: what rustls said, in the
/// manager's words.
pub fn tls_reason(error: &io::Error) -> &'static str {
    match find_tls_error(error) {
        Some(tls) => classify(tls),
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            "TLS handshake failed: the endpoint closed the connection"
        }
        None => "TLS handshake failed",
    }
}

fn classify(error: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "TLS handshake failed: the manager's certificate is not valid for its name",
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS handshake failed: the manager's certificate is not signed by a trusted CA"
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "TLS handshake failed: the manager's certificate has expired",
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "TLS handshake failed: the manager's certificate is not valid yet",
        E::InvalidCertificate(_) => "TLS handshake failed: the manager's certificate is invalid",
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "TLS handshake failed: the manager requires a client certificate"
        }
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied,
        ) => "TLS handshake failed: the manager refused the gateway's client certificate",
        E::NoApplicationProtocol | E::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            "TLS handshake failed: the manager does not offer http/1.1 (ALPN)"
        }
        E::AlertReceived(AlertDescription::ProtocolVersion) | E::PeerIncompatible(_) => {
            "TLS handshake failed: no TLS version or cipher suite in common"
        }
        E::InvalidMessage(_) => "TLS handshake failed: the endpoint does not speak TLS",
        E::AlertReceived(_) => "TLS handshake failed: the manager refused the handshake",
        _ => "TLS handshake failed",
    }
}

/// The rustls error in `error`'s chain. `io::Error` hides the error it wraps from `source()`
/// (it returns that error's source), so it is unwrapped with `get_ref`.
fn find_tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(error: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn handshake_failures_have_fixed_reasons() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                "TLS handshake failed: the manager's certificate is not valid for its name",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "TLS handshake failed: the manager's certificate is not signed by a trusted CA",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                "TLS handshake failed: the manager requires a client certificate",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                "TLS handshake failed: the manager refused the gateway's client certificate",
            ),
            (
                rustls::Error::NoApplicationProtocol,
                "TLS handshake failed: the manager does not offer http/1.1 (ALPN)",
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(tls_reason(&wrapped(error)), reason);
        }
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(
            tls_reason(&eof),
            "TLS handshake failed: the endpoint closed the connection"
        );
    }

    #[test]
    fn a_tls_error_is_found_behind_other_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let outer = Outer(wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        )));
        assert_eq!(
            tls_failure(&outer),
            Some("TLS handshake failed: the manager requires a client certificate")
        );
        let plain = Outer(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(tls_failure(&plain), None);
    }
}
