//! Who a request speaks for, once authenticated: the [`Principal`], its [`Role`] and tenant.
//! Ground floor: auth makes principals, everything after it (rate limits, routing by tenant,
//! the tenant header toward the upstream, logs) reads them from the request context, never
//! from anything the client sent unverified.

use std::sync::Arc;

pub use crate::catalog::Role;

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A Feldera API key, known by its configured name.
    ApiKey { name: Arc<str> },
    /// A verified JWT.
    Jwt { issuer: Arc<str>, subject: Arc<str> },
    /// A verified TLS client certificate, known by the `[[auth.client_certs]]` value it
    /// matched (`subject`, `san_dns` or `san_uri`).
    ClientCert { matched: Arc<str> },
    /// Authentication is off (`[auth] mode = "off"`): everyone is this principal.
    Anonymous,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Stable identity for rate limiting and logs: `key:<name>`, `jwt:<iss>#<sub>` or
    /// `cert:<matched value>`.
    /// Different tokens of the same subject share it.
    pub id: Arc<str>,
    pub credential: Credential,
    pub role: Role,
    /// The tenant the request acts in, when known.
    pub tenant: Option<Arc<str>>,
}

impl Principal {
    pub fn api_key(name: &str, role: Role, tenant: Option<Arc<str>>) -> Principal {
        Principal {
            id: format!("key:{name}").into(),
            credential: Credential::ApiKey { name: name.into() },
            role,
            tenant,
        }
    }

    pub fn jwt(issuer: &str, subject: &str, role: Role, tenant: Option<Arc<str>>) -> Principal {
        Principal {
            id: format!("jwt:{issuer}#{subject}").into(),
            credential: Credential::Jwt {
                issuer: issuer.into(),
                subject: subject.into(),
            },
            role,
            tenant,
        }
    }

    /// The principal of a verified client certificate that matched `matched`.
    pub fn client_cert(matched: &str, role: Role, tenant: Option<Arc<str>>) -> Principal {
        Principal {
            id: format!("cert:{matched}").into(),
            credential: Credential::ClientCert {
                matched: matched.into(),
            },
            role,
            tenant,
        }
    }
}
