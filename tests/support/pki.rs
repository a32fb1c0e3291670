//! A test PKI made at test time with `rcgen`: certificate authorities, server and client
//! certificates (ECDSA P-256) with chosen serials, names and validity, written to files a
//! gateway configuration can name; and TLS clients (rustls) that trust a test CA, offer chosen
//! ALPN protocols and optionally present a client certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Reply;

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// When a certificate is valid, in days from now (negative: in the past).
#[derive(Clone, Copy)]
pub struct Validity {
    pub from_days: i64,
    pub to_days: i64,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            from_days: -1,
            to_days: 365,
        }
    }
}

fn apply(params: &mut CertificateParams, validity: Validity) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(validity.from_days);
    params.not_after = now + time::Duration::days(validity.to_days);
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        apply(&mut params, Validity::default());
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) with this serial.
    pub fn server(&self, names: &[&str], serial: u64) -> Pair {
        self.server_valid(names, serial, Validity::default())
    }

    pub fn server_valid(&self, names: &[&str], serial: u64, validity: Validity) -> Pair {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.serial_number = Some(SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        apply(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate: subject `CN=cn,O=org`, and these SAN DNS names and URIs.
    pub fn client(&self, cn: &str, org: &str, san_dns: &[&str], san_uri: &[&str]) -> Pair {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        // Encoded O first, then CN: `CN=cn,O=org` in RFC 4514 order (most specific first).
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.distinguished_name.push(DnType::CommonName, cn);
        for dns in san_dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into().expect("dns")));
        }
        for uri in san_uri {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().expect("uri")));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        apply(&mut params, Validity::default());
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `content` to `dir/name`; its path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    // Write then rename: a watcher never reads half a file.
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, content).expect("write");
    std::fs::rename(&partial, &path).expect("rename");
    path
}

/// A rustls client configuration trusting `ca_pem`, offering `alpn`, presenting `client`.
pub fn client_config(
    ca_pem: &str,
    alpn: &[&str],
    client: Option<&Pair>,
) -> Arc<rustls::ClientConfig> {
    client_config_versions(ca_pem, alpn, client, rustls::DEFAULT_VERSIONS)
}

pub fn client_config_versions(
    ca_pem: &str,
    alpn: &[&str],
    client: Option<&Pair>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client chain");
            let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr` over TLS asking for `server_name`.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(stream)
}

/// The protocol ALPN chose.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<String> {
    stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// The serial number of the certificate the server presented (its leaf).
pub fn peer_serial(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server chain");
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).expect("x509");
    cert.raw_serial().to_vec()
}

/// Sends one request on a TLS stream, HTTP/2 or HTTP/1.1 as ALPN chose, and reads the reply.
pub async fn send_tls(
    stream: TlsStream<TcpStream>,
    mut request: http::Request<Full<Bytes>>,
) -> Result<Reply, hyper::Error> {
    let h2 = alpn(&stream).as_deref() == Some("h2");
    if !h2 {
        // HTTP/1.1: origin form and a Host header.
        let host = request.uri().authority().map(|a| a.to_string());
        if let Some(path) = request.uri().path_and_query().cloned() {
            *request.uri_mut() = path.into();
        }
        if let Some(host) = host.and_then(|h| http::HeaderValue::try_from(h).ok()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
    }
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        sender.send_request(request).await?
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
