//! TLS termination, built from `[server.tls]`: the rustls server configuration a listener
//! hands every new connection, its certificates, and their reload.
//!
//! What it owns: reading and checking the files (certificate chains, keys, the client CA),
//! choosing a certificate by SNI, verifying client certificates, the facts of a verified client
//! certificate ([`client_certificate`]), reloading when the files change, and the TLS metrics.
//! What it does not: the accept path (peeking for plain HTTP, the handshake under its timeout:
//! `server::tls`) and what a client certificate may do (`auth::client_cert`).
//!
//! Protocol: TLS 1.2 and 1.3 only (`min_version` may raise it to 1.3), rustls' default (safe)
//! cipher suites of the aws-lc-rs provider; rustls has no renegotiation and no compression.
//! Session resumption is on: a shared session cache (TLS 1.2 ids and 1.3 stateful resumption)
//! and a rotating ticket key, both kept across certificate reloads, so a reload does not cost
//! every client a full handshake.
//!
//! Certificates: the client's SNI name picks a `[[server.tls.sni]]` entry (exact, without
//! case); any other name, or none (an IP address), gets the default `cert`. A client asking
//! for a name the default certificate does not carry fails its own verification.
//!
//! Reload ([`TlsTerminator::reload_if_changed`]): every file is read, and when the bytes of any
//! differ from the ones serving (SHA-256), the whole server configuration is built again from
//! them and swapped atomically; new handshakes get it, established connections keep the one
//! they were made with. A set that does not load (unreadable, not PEM, a key that does not
//! match its certificate, an expired leaf, a CA file without a certificate) is refused with a
//! log line and the serving one stays. The runtime's background work checks every
//! `watch_interval`; a configuration reload (`SIGHUP`, `POST /reload`) that keeps `[server.tls]`
//! equal carries the terminator and checks the files at once.
//!
//! Metrics: `tls_handshakes_total{result}` (`ok`, `failed`, `timeout`, `plain_http`) and
//! `tls_cert_expiry_seconds{name}` — the serving certificate's `notAfter` as Unix time, per
//! name (`default`, or the first name of an SNI entry).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::tls::{ClientAuthMode, TlsConfig, TlsVersion};
use crate::config::Problems;
use crate::context::ClientCertificate;

/// Less than this left before a leaf certificate expires: a warning (log, `check-config`).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// TLS session ids (and TLS 1.3 stateful tickets) remembered for resumption.
const SESSION_CACHE_SIZE: usize = 4096;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

/// How a handshake ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    /// A TLS error (a bad or missing client certificate, no common version, an alert, a
    /// client that closed).
    Failed,
    /// Not finished within `handshake_timeout`.
    Timeout,
    /// A plain HTTP request on the TLS port (answered with a 400).
    PlainHttp,
}

impl HandshakeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Failed => "failed",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::PlainHttp => "plain_http",
        }
    }
}

/// TLS metrics, made once per process and shared by every runtime.
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    handshakes: Family<ResultLabels, Counter>,
    expiry: Family<NameLabels, Gauge<f64, AtomicU64>>,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the client listener, by result (ok, failed, timeout, plain_http)",
            self.handshakes.clone(),
        );
        registry.register(
            "tls_cert_expiry_seconds",
            "When the serving certificate expires (its notAfter, Unix time), by name",
            self.expiry.clone(),
        );
    }

    pub fn handshake(&self, result: HandshakeResult) {
        self.handshakes
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// Handshakes counted with `result` so far.
    pub fn handshakes(&self, result: HandshakeResult) -> u64 {
        self.handshakes
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .get()
    }

    fn expires(&self, name: &str, at: SystemTime) {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.expiry
            .get_or_create(&NameLabels { name: name.into() })
            .set(seconds);
    }
}

/// Chooses the certificate by SNI.
#[derive(Debug)]
struct Certificates {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

/// One certificate chain and key as read: its leaf's validity, for metrics and warnings.
struct LoadedPair {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

/// What one load of the files made.
struct Loaded {
    server: Arc<rustls::ServerConfig>,
    /// (metric name, notAfter) per certificate.
    expiries: Vec<(String, SystemTime)>,
}

/// The TLS side of a listener: the serving rustls configuration and how it reloads.
pub struct TlsTerminator {
    config: TlsConfig,
    at: String,
    provider: Arc<CryptoProvider>,
    serving: ArcSwap<rustls::ServerConfig>,
    /// SHA-256 over every file's bytes, of the serving set.
    fingerprint: Mutex<[u8; 32]>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    metrics: TlsMetrics,
    /// The serving certificates' names and expiry, for the admin status page.
    expiries: Mutex<Vec<(String, SystemTime)>>,
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every file `config` names, in a fixed order, with its key path.
fn files(config: &TlsConfig, at: &str) -> Vec<(String, std::path::PathBuf)> {
    let mut files = vec![
        (format!("{at}.cert"), config.cert.clone()),
        (format!("{at}.key"), config.key.clone()),
    ];
    for (i, sni) in config.sni.iter().enumerate() {
        files.push((format!("{at}.sni[{i}].cert"), sni.cert.clone()));
        files.push((format!("{at}.sni[{i}].key"), sni.key.clone()));
    }
    if let Some(client_auth) = &config.client_auth {
        files.push((format!("{at}.client_auth.ca"), client_auth.ca.clone()));
    }
    files
}

/// The files' bytes by key path.
type FileBytes = HashMap<String, Vec<u8>>;

/// Reads every file: their bytes by key path (the readable ones), the fingerprint of all of
/// them, and a problem per file that cannot be read.
fn read_all(config: &TlsConfig, at: &str) -> (FileBytes, [u8; 32], Problems) {
    let mut problems = Problems::default();
    let mut bytes = HashMap::new();
    let mut hash = Sha256::new();
    for (key, path) in files(config, at) {
        match std::fs::read(&path) {
            Ok(content) => {
                hash.update((content.len() as u64).to_be_bytes());
                hash.update(&content);
                bytes.insert(key, content);
            }
            Err(error) => problems.push(key, format!("cannot read {}: {error}", path.display())),
        }
    }
    (bytes, hash.finalize().into(), problems)
}

/// Reads and loads every file; every problem of every file.
fn read_and_load(
    config: &TlsConfig,
    at: &str,
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
) -> Result<(Loaded, [u8; 32]), Problems> {
    let (bytes, fingerprint, mut problems) = read_all(config, at);
    match load(config, at, &bytes, provider, sessions, ticketer) {
        Ok(loaded) if problems.is_empty() => Ok((loaded, fingerprint)),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Seconds since the epoch as a `SystemTime` (negative: the epoch).
fn system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)
}

/// `2026-12-31T23:59:59Z`.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Parses a chain and key (PEM) into a pair whose key matches its leaf.
fn load_pair(
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<LoadedPair, (bool, String)> {
    // `(true, _)`: the problem is the key's; `(false, _)`: the certificate's.
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| (false, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err((false, "no PEM certificate in the file".into()));
    };
    let (not_before, not_after) = validity(leaf).map_err(|e| (false, e))?;
    if now > not_after {
        return Err((
            false,
            format!("the certificate expired on {}", rfc3339(not_after)),
        ));
    }
    if now < not_before {
        return Err((
            false,
            format!(
                "the certificate is not valid before {}",
                rfc3339(not_before)
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        (
            true,
            format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| (true, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err((
                true,
                "the key does not match the certificate (the chain's first certificate)".into(),
            ))
        }
    }
    Ok(LoadedPair {
        key: Arc::new(certified),
        not_after,
    })
}

/// A certificate's notBefore and notAfter.
fn validity(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    Ok((
        system_time(validity.not_before.timestamp()),
        system_time(validity.not_after.timestamp()),
    ))
}

/// Warnings about a configuration's certificates that do not stop it: a leaf with less than
/// [`EXPIRY_WARNING`] left. Files that do not load are the build's problems, not warnings.
pub fn warnings(config: &TlsConfig, at: &str, now: SystemTime) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut pairs = vec![(format!("{at}.cert"), &config.cert)];
    for (i, sni) in config.sni.iter().enumerate() {
        pairs.push((format!("{at}.sni[{i}].cert"), &sni.cert));
    }
    for (key, path) in pairs {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&bytes).next() else {
            continue;
        };
        if let Ok((_, not_after)) = validity(&leaf) {
            if let Ok(left) = not_after.duration_since(now) {
                if left < EXPIRY_WARNING {
                    warnings.push(format!(
                        "{key}: the certificate expires on {} (in {} days)",
                        rfc3339(not_after),
                        left.as_secs() / 86_400
                    ));
                }
            }
        }
    }
    warnings
}

impl TlsTerminator {
    /// Reads every file `config` names and builds the server configuration; every problem is
    /// listed under `at` (`server.tls`).
    pub fn build(
        config: &TlsConfig,
        at: &str,
        metrics: &TlsMetrics,
    ) -> Result<TlsTerminator, Problems> {
        let provider = provider();
        let sessions: Arc<dyn rustls::server::StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        let mut problems = Problems::default();
        let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
            Ok(ticketer) => Some(ticketer),
            Err(error) => {
                problems.push(at, format!("cannot make a session ticket key: {error}"));
                None
            }
        };
        let Some(ticketer) = ticketer else {
            return Err(problems);
        };
        let (loaded, fingerprint) = read_and_load(config, at, &provider, &sessions, &ticketer)?;
        let terminator = TlsTerminator {
            config: config.clone(),
            at: at.to_owned(),
            provider,
            serving: ArcSwap::new(loaded.server.clone()),
            fingerprint: Mutex::new(fingerprint),
            sessions,
            ticketer,
            metrics: metrics.clone(),
            expiries: Mutex::new(Vec::new()),
        };
        terminator.publish(&loaded);
        Ok(terminator)
    }

    /// Whether this terminator serves exactly `config` (a reload may then carry it).
    pub fn serves(&self, config: &TlsConfig) -> bool {
        self.config == *config
    }

    /// The configuration for a new connection's handshake.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.serving.load_full()
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    fn publish(&self, loaded: &Loaded) {
        for (name, not_after) in &loaded.expiries {
            self.metrics.expires(name, *not_after);
        }
        if let Ok(mut expiries) = self.expiries.lock() {
            expiries.clone_from(&loaded.expiries);
        }
        for warning in warnings(&self.config, &self.at, SystemTime::now()) {
            tracing::warn!("{warning}");
        }
    }

    /// The serving certificates: each name with its `notAfter`.
    pub fn expiries(&self) -> Vec<(String, SystemTime)> {
        self.expiries
            .lock()
            .map(|expiries| expiries.clone())
            .unwrap_or_default()
    }

    /// Reads the files again and, when any changed, swaps in a server configuration built from
    /// them. `Ok(true)`: swapped; `Ok(false)`: unchanged; `Err`: the new files do not load
    /// and the serving configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, Problems> {
        let (_, fingerprint, _) = read_all(&self.config, &self.at);
        let Ok(mut serving) = self.fingerprint.lock() else {
            return Ok(false);
        };
        if *serving == fingerprint {
            return Ok(false);
        }
        let (loaded, fingerprint) = read_and_load(
            &self.config,
            &self.at,
            &self.provider,
            &self.sessions,
            &self.ticketer,
        )?;
        self.serving.store(loaded.server.clone());
        *serving = fingerprint;
        drop(serving);
        self.publish(&loaded);
        Ok(true)
    }

    /// Checks the files every `watch_interval` until `shutdown`, reloading on a change.
    pub async fn run_watch(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.watch_interval) => {}
            }
            self.reload_and_log();
        }
    }

    /// [`TlsTerminator::reload_if_changed`], with its outcome logged.
    pub fn reload_and_log(&self) {
        match self.reload_if_changed() {
            Ok(true) => tracing::info!(at = %self.at, "TLS certificates reloaded"),
            Ok(false) => {}
            Err(problems) => tracing::warn!(
                at = %self.at,
                %problems,
                "TLS certificates not reloaded; the serving ones stay"
            ),
        }
    }
}

/// Builds the rustls configuration from the files' bytes (by key path).
fn load(
    config: &TlsConfig,
    at: &str,
    bytes: &FileBytes,
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
) -> Result<Loaded, Problems> {
    let now = SystemTime::now();
    let mut problems = Problems::default();
    let mut expiries = Vec::new();
    // A file that could not be read is the reader's problem: nothing more is said about it.
    let mut pair = |prefix: &str, name: String, problems: &mut Problems| {
        let cert = format!("{prefix}.cert");
        let key = format!("{prefix}.key");
        let (Some(cert_bytes), Some(key_bytes)) = (bytes.get(&cert), bytes.get(&key)) else {
            return None;
        };
        match load_pair(cert_bytes, key_bytes, provider, now) {
            Ok(loaded) => {
                expiries.push((name, loaded.not_after));
                Some(loaded.key)
            }
            Err((is_key, message)) => {
                problems.push(if is_key { key } else { cert }, message);
                None
            }
        }
    };
    let default = pair(at, "default".into(), &mut problems);
    let mut by_name = HashMap::new();
    for (i, sni) in config.sni.iter().enumerate() {
        let name = sni.names.first().cloned().unwrap_or_default();
        if let Some(key) = pair(&format!("{at}.sni[{i}]"), name, &mut problems) {
            for name in &sni.names {
                by_name.insert(name.to_ascii_lowercase(), key.clone());
            }
        }
    }
    let verifier = match &config.client_auth {
        None => Some(WebPkiClientVerifier::no_client_auth()),
        Some(client_auth) => {
            let key = format!("{at}.client_auth.ca");
            match bytes
                .get(&key)
                .map(|ca| client_verifier(ca, client_auth.mode, provider))
            {
                Some(Ok(verifier)) => Some(verifier),
                Some(Err(message)) => {
                    problems.push(key, message);
                    None
                }
                None => None,
            }
        }
    };
    let (Some(default), Some(verifier), true) = (default, verifier, problems.is_empty()) else {
        return Err(problems);
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            let mut problems = Problems::default();
            problems.push(format!("{at}.min_version"), e.to_string());
            problems
        })?;
    let mut server = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Certificates { default, by_name }));
    // rustls picks the first of ours the client offers (our order decides), and refuses a
    // client that offers ALPN without any of ours (`no_application_protocol`).
    server.alpn_protocols = config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    server.session_storage = sessions.clone();
    server.ticketer = ticketer.clone();
    Ok(Loaded {
        server: Arc::new(server),
        expiries,
    })
}

fn client_verifier(
    ca: &[u8],
    mode: ClientAuthMode,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match mode {
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
        ClientAuthMode::Required => builder,
    };
    builder.build().map_err(|e| e.to_string())
}

/// The identity facts of a (verified) client certificate: the subject DN in RFC 4514 order
/// (most specific first, `CN=etl-loader,O=Acme`), and the DNS names and URIs of its subject
/// alternative names. `None` when the certificate does not parse.
pub fn client_certificate(der: &CertificateDer<'_>) -> Option<ClientCertificate> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let mut parts = Vec::new();
        for attribute in rdn.iter() {
            let oid = attribute.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, registry)
                .map(str::to_owned)
                .unwrap_or_else(|_| oid.to_id_string());
            let value = attribute.as_str().ok()?;
            parts.push(format!("{name}={}", escape_dn_value(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    let mut facts = ClientCertificate {
        subject: rdns.join(","),
        ..ClientCertificate::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => facts.san_dns.push(dns.to_ascii_lowercase()),
                GeneralName::URI(uri) => facts.san_uri.push((*uri).to_owned()),
                _ => {}
            }
        }
    }
    Some(facts)
}

/// RFC 4514 escaping of an attribute value.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i + 1 == value.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The canonical form of a DN string for comparison: attribute names upper-cased, spaces
/// around the separators removed (escaped separators kept).
pub fn normalize_dn(dn: &str) -> String {
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' || c == ';' {
            rdns.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    rdns.push(current);
    rdns.iter()
        .map(|rdn| match rdn.split_once('=') {
            Some((name, value)) => {
                format!("{}={}", name.trim().to_ascii_uppercase(), value.trim())
            }
            None => rdn.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_compare_without_case_of_names_or_spaces() {
        assert_eq!(
            normalize_dn("cn = etl-loader, o=Acme"),
            "CN=etl-loader,O=Acme"
        );
        assert_eq!(normalize_dn("CN=a\\,b,O=x"), "CN=a\\,b,O=x");
        assert_eq!(escape_dn_value("a,b"), "a\\,b");
        assert_eq!(escape_dn_value(" x"), "\\ x");
    }
}
