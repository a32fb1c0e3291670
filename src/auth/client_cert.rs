//! Client certificates as a credential: `[[auth.client_certs]]` maps the identity of a verified
//! TLS client certificate (the connection's facts, `context::ClientCertificate`) to a
//! principal.
//!
//! - rustls verified the certificate in the handshake against `[server.tls.client_auth] ca`;
//!   only a verified certificate's facts are on the connection. This module never sees a raw
//!   certificate, and nothing of it is forwarded: the manager gets the usual principal
//!   headers.
//! - Entries are tried in order; the first whose `subject` (DN, compared in canonical form:
//!   attribute names without case, spaces around separators ignored), `san_dns` (without case)
//!   or `san_uri` (exact) matches gives the principal `cert:<that value>` with its role and
//!   tenant.
//! - A verified certificate that matches no entry is refused with 403
//!   `InsufficientPermissions` (`details.reason = "client_certificate_not_mapped"`): the client
//!   proved who it is, it just may do nothing here.
//! - Only used when the request carries no `Authorization` (and no WebSocket credential): a
//!   bearer credential always decides (see the auth layer).

use std::sync::Arc;

use crate::catalog::Role;
use crate::config::tls::ClientCertConfig;
use crate::context::ClientCertificate;
use crate::principal::Principal;
use crate::tls::normalize_dn;

use super::Identity;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// In canonical form.
    Subject(String),
    /// Lower case.
    SanDns(String),
    SanUri(String),
}

#[derive(Debug)]
struct Entry {
    matcher: Matcher,
    /// The configured value, as the principal's id names it.
    label: String,
    role: Role,
    tenant: Option<Arc<str>>,
}

/// The `[[auth.client_certs]]` table.
#[derive(Debug, Default)]
pub struct ClientCertMap {
    entries: Vec<Entry>,
}

impl ClientCertMap {
    pub fn new(config: &[ClientCertConfig]) -> ClientCertMap {
        let entries = config
            .iter()
            .filter_map(|entry| {
                let (matcher, label) = match (&entry.subject, &entry.san_dns, &entry.san_uri) {
                    (Some(subject), _, _) => {
                        let canonical = normalize_dn(subject);
                        (Matcher::Subject(canonical.clone()), canonical)
                    }
                    (_, Some(dns), _) => {
                        let dns = dns.trim().to_ascii_lowercase();
                        (Matcher::SanDns(dns.clone()), dns)
                    }
                    (_, _, Some(uri)) => (Matcher::SanUri(uri.trim().into()), uri.trim().into()),
                    // The configuration check refuses an entry without any.
                    _ => return None,
                };
                Some(Entry {
                    matcher,
                    label,
                    role: entry.role,
                    tenant: entry.tenant.as_deref().map(Arc::from),
                })
            })
            .collect();
        ClientCertMap { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity of the first entry `certificate` matches.
    pub fn identify(&self, certificate: &ClientCertificate) -> Option<Identity> {
        let subject = normalize_dn(&certificate.subject);
        let entry = self.entries.iter().find(|entry| match &entry.matcher {
            Matcher::Subject(dn) => *dn == subject,
            Matcher::SanDns(dns) => certificate
                .san_dns
                .iter()
                .any(|name| name.eq_ignore_ascii_case(dns)),
            Matcher::SanUri(uri) => certificate.san_uri.iter().any(|u| u == uri),
        })?;
        Some(Identity {
            principal: Principal::client_cert(&entry.label, entry.role, None),
            tenants: entry.tenant.iter().cloned().collect(),
            tenant_outside_issuer: None,
            claim_headers: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, value: &str) -> ClientCertConfig {
        ClientCertConfig {
            subject: (kind == "subject").then(|| value.into()),
            san_dns: (kind == "san_dns").then(|| value.into()),
            san_uri: (kind == "san_uri").then(|| value.into()),
            role: Role::Write,
            tenant: Some("acme".into()),
        }
    }

    #[test]
    fn the_first_matching_entry_names_the_principal() {
        let map = ClientCertMap::new(&[
            entry("subject", "cn=etl-loader, O=Acme"),
            entry("san_dns", "Loader.acme.internal"),
            entry("san_uri", "spiffe://acme/etl"),
        ]);
        let cert = |subject: &str, dns: &[&str], uri: &[&str]| ClientCertificate {
            subject: subject.into(),
            san_dns: dns.iter().map(|s| s.to_string()).collect(),
            san_uri: uri.iter().map(|s| s.to_string()).collect(),
        };
        let id = |c: &ClientCertificate| map.identify(c).map(|i| i.principal.id.to_string());
        assert_eq!(
            id(&cert("CN=etl-loader,O=Acme", &[], &[])).as_deref(),
            Some("cert:CN=etl-loader,O=Acme")
        );
        assert_eq!(
            id(&cert("CN=x", &["loader.acme.internal"], &[])).as_deref(),
            Some("cert:loader.acme.internal")
        );
        assert_eq!(
            id(&cert("CN=x", &[], &["spiffe://acme/etl"])).as_deref(),
            Some("cert:spiffe://acme/etl")
        );
        assert_eq!(
            id(&cert("CN=etl-loader,O=Other", &[], &["spiffe://acme/etl2"])),
            None
        );
        let identity = map
            .identify(&cert("CN=etl-loader,O=Acme", &[], &[]))
            .unwrap();
        assert_eq!(identity.principal.role, Role::Write);
        assert_eq!(identity.tenants, vec![Arc::from("acme")]);
    }
}
