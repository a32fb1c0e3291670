//! A manager served over TLS: test CAs and certificates made at test time ([`TestCa`], with
//! `rcgen`, ECDSA P-256), and the stand-in behind a TLS listener ([`TlsStandin`]) that
//! terminates with tokio-rustls and copies the bytes to a plain stand-in. Its certificate and
//! client-certificate policy can be changed while it runs; changing them closes the
//! connections it has open, so the gateway's next request makes a new handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use feldera_standin::Standin;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::standin::standin;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        }
    }

    /// A server certificate for these names (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, "manager")
    }

    /// A client certificate with this common name.
    pub fn client(&self, common_name: &str) -> Leaf {
        self.leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, common_name)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, common_name: &str) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

/// The stand-in behind a TLS listener on 127.0.0.1:0.
pub struct TlsStandin {
    pub standin: Standin,
    addr: SocketAddr,
    settings: watch::Sender<Arc<ServerConfig>>,
    /// The protocol ALPN chose on each connection whose handshake succeeded.
    negotiated: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TlsStandin {
    /// Serves `leaf`; with `client_ca`, a client certificate signed by it is required. ALPN
    /// offers h2 and http/1.1.
    pub async fn start(leaf: &Leaf, client_ca: Option<&TestCa>) -> TlsStandin {
        TlsStandin::start_offering(leaf, client_ca, &["h2", "http/1.1"]).await
    }

    /// [`TlsStandin::start`] offering these ALPN protocols.
    pub async fn start_offering(
        leaf: &Leaf,
        client_ca: Option<&TestCa>,
        alpn: &[&str],
    ) -> TlsStandin {
        let standin = standin("tls").await;
        let plain = standin.local_addr();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let (settings, watching) = watch::channel(server_config(leaf, client_ca, alpn));
        let negotiated = Arc::default();
        let task = tokio::spawn(accept(listener, plain, watching, Arc::clone(&negotiated)));
        TlsStandin {
            standin,
            addr,
            settings,
            negotiated,
            task,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The ALPN protocol of every connection that completed its handshake, in order.
    pub fn negotiated(&self) -> Vec<Option<String>> {
        self.negotiated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `leaf` from now on (and `client_ca`'s policy), closing open connections.
    pub fn set(&self, leaf: &Leaf, client_ca: Option<&TestCa>) {
        let alpn = self.settings.borrow().alpn_protocols.clone();
        self.settings
            .send_replace(server_config(leaf, client_ca, alpn));
    }
}

impl Drop for TlsStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_config(leaf: &Leaf, client_ca: Option<&TestCa>, alpn: Vec<Vec<u8>>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
                roots.add(cert.expect("CA PEM")).expect("CA certificate");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("leaf PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key PEM");
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = alpn;
    Arc::new(config)
}

async fn accept(
    listener: TcpListener,
    plain: SocketAddr,
    mut settings: watch::Receiver<Arc<ServerConfig>>,
    negotiated: Arc<Mutex<Vec<Option<String>>>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let config = settings.borrow().clone();
                connections.spawn(relay(stream, config, plain, Arc::clone(&negotiated)));
            }
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
                // New settings: every open connection is closed.
                connections.abort_all();
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    plain: SocketAddr,
    negotiated: Arc<Mutex<Vec<Option<String>>>>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let Ok(mut tls) = acceptor.accept(stream).await else {
        return;
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    let alpn = alpn.map(|p| String::from_utf8_lossy(p).into_owned());
    negotiated
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(alpn);
    let Ok(mut upstream) = TcpStream::connect(plain).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
}
