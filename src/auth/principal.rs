//! Who a request speaks for, once authenticated: the [`Principal`] and its [`Role`].
//!
//! The auth layer inserts a `Principal` into the request extensions; later layers (rate
//! limiting, routing by tenant, the tenant header toward the upstream) read it from there and
//! never from anything the client sent unverified.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The manager's roles, ordered: `read < write < admin < owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Parses the lowercase spelling (`read`, `write`, `admin`, `owner`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A Feldera API key, known by its configured name.
    ApiKey { name: Arc<str> },
    /// A verified JWT.
    Jwt { issuer: Arc<str>, subject: Arc<str> },
    /// Authentication is off (`[auth] mode = "off"`): everyone is this principal.
    Anonymous,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Stable identity for rate limiting and logs: `key:<name>` or `jwt:<iss>#<sub>`.
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
}
