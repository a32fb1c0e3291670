//! `[server.tls]` (and `[admin.tls]`), `[[server.redirect]]` and `[[auth.client_certs]]`: the
//! serde types of TLS termination and their checks between values.
//!
//! Plain data: nothing here reads a file. The files (certificate chains, keys, the client CA)
//! are read and checked when the runtime is built (`tls::TlsTerminator::build`), which reports
//! their problems under these key paths; `check-config` runs both.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;
use crate::catalog::Role;

/// `[server.tls]`: the listener speaks TLS (1.2 and 1.3) and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain, leaf first; every certificate of it is served.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// The lowest protocol version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in order of preference (`h2`, `http/1.1`).
    #[serde(default = "defaults::alpn")]
    pub alpn: Vec<String>,
    /// A handshake (including a client that sends nothing) that takes longer is closed.
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How often the certificate, key and CA files are checked for changes (content hash).
    #[serde(default = "defaults::watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// Further certificates chosen by the name the client asks for (SNI).
    #[serde(default)]
    pub sni: Vec<SniConfig>,
    /// Client certificates (mTLS).
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

/// `[[server.tls.sni]]`: a certificate for some names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniConfig {
    /// Exact DNS names (compared without case); a client asking for any other name, or none,
    /// gets the default certificate.
    pub names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[server.tls.client_auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM file of the CA certificates client certificates must chain to.
    pub ca: PathBuf,
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is needed to finish the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client may present one; a presented one must verify.
    #[default]
    Optional,
    /// The handshake fails without a verified client certificate.
    Required,
}

/// `min_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[[server.redirect]]`: a plain-HTTP listener that answers every request with a 308 to the
/// same host, path and query over https.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    pub listen: std::net::SocketAddr,
    /// The port of the https URL; default: the port of `server.listen`.
    #[serde(default)]
    pub https_port: Option<u16>,
}

/// `[[auth.client_certs]]`: a verified client certificate that speaks for a principal.
/// Exactly one of `subject`, `san_dns`, `san_uri`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// The subject DN, RFC 4514 style, most specific first: `CN=etl-loader,O=Acme`
    /// (attribute names without case, spaces around `,` and `=` ignored).
    #[serde(default)]
    pub subject: Option<String>,
    /// A DNS name of the subject alternative names (without case).
    #[serde(default)]
    pub san_dns: Option<String>,
    /// A URI of the subject alternative names (exact), e.g. `spiffe://acme/etl`.
    #[serde(default)]
    pub san_uri: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub tenant: Option<String>,
}

pub mod defaults {
    use std::time::Duration;
    pub fn alpn() -> Vec<String> {
        vec!["h2".into(), "http/1.1".into()]
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn watch_interval() -> Duration {
        Duration::from_secs(5)
    }
}

/// ALPN protocols the gateway can serve.
pub const ALPN_KNOWN: [&str; 2] = ["h2", "http/1.1"];

impl TlsConfig {
    /// Problems between values, under `at` (`server.tls`).
    pub fn check(&self, at: &str, problems: &mut Problems) {
        if self.alpn.is_empty() {
            problems.push(format!("{at}.alpn"), "must name at least one protocol");
        }
        for (i, protocol) in self.alpn.iter().enumerate() {
            if !ALPN_KNOWN.contains(&protocol.as_str()) {
                problems.push(
                    format!("{at}.alpn[{i}]"),
                    format!("\"{protocol}\" is not one of \"h2\", \"http/1.1\""),
                );
            } else if self.alpn[..i].contains(protocol) {
                problems.push(format!("{at}.alpn[{i}]"), format!("\"{protocol}\" twice"));
            }
        }
        if self.handshake_timeout.is_zero() {
            problems.push(format!("{at}.handshake_timeout"), "must be more than zero");
        }
        if self.watch_interval < Duration::from_millis(100) {
            problems.push(format!("{at}.watch_interval"), "must be at least 100ms");
        }
        for (i, sni) in self.sni.iter().enumerate() {
            if sni.names.is_empty() {
                problems.push(
                    format!("{at}.sni[{i}].names"),
                    "must name at least one name",
                );
            }
            for (j, name) in sni.names.iter().enumerate() {
                let lower = name.to_ascii_lowercase();
                let earlier = self.sni[..i]
                    .iter()
                    .flat_map(|s| &s.names)
                    .chain(&sni.names[..j])
                    .any(|n| n.eq_ignore_ascii_case(&lower));
                if earlier {
                    problems.push(
                        format!("{at}.sni[{i}].names[{j}]"),
                        format!("\"{name}\" is named twice"),
                    );
                } else if rustls_pki_types::DnsName::try_from(lower.as_str()).is_err() {
                    problems.push(
                        format!("{at}.sni[{i}].names[{j}]"),
                        format!("\"{name}\" is not a DNS name"),
                    );
                }
            }
        }
    }
}

impl ClientCertConfig {
    /// Problems of one entry, under `at` (`auth.client_certs[i]`).
    pub fn check(&self, at: &str, problems: &mut Problems) {
        let given = [&self.subject, &self.san_dns, &self.san_uri]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            problems.push(
                at.to_owned(),
                "give exactly one of subject, san_dns, san_uri",
            );
        }
        for (key, value) in [
            ("subject", &self.subject),
            ("san_dns", &self.san_dns),
            ("san_uri", &self.san_uri),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problems.push(format!("{at}.{key}"), "must not be empty");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn problems(text: &str) -> Vec<String> {
        let base = "[[upstreams]]\nname = \"m\"\nendpoints = [\"http://127.0.0.1:1\"]\n\
                    [[routes]]\nupstream = \"m\"\ndefault = true\n";
        match Config::from_toml(&format!("{base}{text}")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn tls_values_are_checked_with_their_key_paths() {
        let tls = "[server.tls]\ncert = \"c\"\nkey = \"k\"\n";
        assert_eq!(problems(tls), Vec::<String>::new());
        let cases = [
            (
                "alpn = [\"h2\", \"spdy/3\", \"h2\"]\n",
                vec![
                    "server.tls.alpn[1]: \"spdy/3\" is not one of \"h2\", \"http/1.1\"",
                    "server.tls.alpn[2]: \"h2\" twice",
                ],
            ),
            (
                "handshake_timeout = \"0s\"\nwatch_interval = \"10ms\"\n",
                vec![
                    "server.tls.handshake_timeout: must be more than zero",
                    "server.tls.watch_interval: must be at least 100ms",
                ],
            ),
            (
                "[[server.tls.sni]]\nnames = [\"a.example\", \"A.example\", \"not a name\"]\n\
                 cert = \"c\"\nkey = \"k\"\n[[server.tls.sni]]\nnames = []\ncert = \"c\"\nkey = \"k\"\n",
                vec![
                    "server.tls.sni[0].names[1]: \"A.example\" is named twice",
                    "server.tls.sni[0].names[2]: \"not a name\" is not a DNS name",
                    "server.tls.sni[1].names: must name at least one name",
                ],
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(problems(&format!("{tls}{extra}")), expected, "{extra}");
        }
        let min = problems(&format!("{tls}min_version = \"1.1\"\n"));
        assert!(min[0].contains("server.tls.min_version"), "{min:?}");
    }

    #[test]
    fn client_certs_need_client_auth_and_exactly_one_match() {
        let entry = "[[auth.client_certs]]\nsubject = \"CN=a\"\nrole = \"read\"\n";
        assert_eq!(
            problems(entry),
            [
                "auth.client_certs: client certificates need [server.tls.client_auth] \
              (nothing would verify them)"
            ]
        );
        let tls =
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\n[server.tls.client_auth]\nca = \"ca\"\n";
        assert_eq!(problems(&format!("{tls}{entry}")), Vec::<String>::new());
        let two = "[[auth.client_certs]]\nsubject = \"CN=a\"\nsan_dns = \"a\"\nrole = \"read\"\n\
                   [[auth.client_certs]]\nsan_uri = \" \"\nrole = \"read\"\n";
        assert_eq!(
            problems(&format!("{tls}{two}")),
            [
                "auth.client_certs[0]: give exactly one of subject, san_dns, san_uri",
                "auth.client_certs[1].san_uri: must not be empty",
            ]
        );
    }

    #[test]
    fn a_redirect_needs_tls() {
        assert_eq!(
            problems("[[server.redirect]]\nlisten = \"127.0.0.1:8081\"\n"),
            ["server.redirect[0]: redirects to https need [server.tls]"]
        );
    }
}
