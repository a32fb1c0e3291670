//! Edge authentication and authorization.
//!
//! Owns: credentials (JWTs from several issuers with rotating key sets, Feldera API keys,
//! verified TLS client certificates mapped by [`client_cert`]), the
//! [`Principal`] a request speaks for, its tenant, and the minimum-role check per endpoint.
//! The layer ([`AuthLayer`]) sits after route classification (it needs the endpoint's minimum
//! role) and before rate limiting by principal. It deliberately does not touch the request
//! toward the upstream beyond the principal extension and the configured claim headers:
//! `proxy::headers` applies `credentials = pass|strip|replace` and sets `Feldera-Tenant` from
//! the principal.
//!
//! Split by concern: [`credential`] reads what was presented; [`apikey`] and [`jwt`] verify it
//! ([`jwt`] ties the token parser [`token`], the claims checks [`claims`], the keys [`keys`]
//! and the issuers' key sets [`jwks`]; [`cache`] remembers verified tokens); [`authorize`]
//! decides what it may do; [`error`] is the one error type and its one conversion to the
//! gateway's error schema; [`layer`] ties them into the stack; [`cli`] backs
//! `pipeline-gateway apikey …`. The [`Principal`] it makes lives on the ground floor
//! (`crate::principal`), where every later layer reads it.
//!
//! Policy and state are apart: [`policy`] is what one configuration says (built from it
//! alone), [`state`] what authentication keeps and learns while running (key sets and their
//! schedules, shared secrets, the token cache, the API-key store, the HTTP client). The
//! [`Authenticator`] is one policy over one state; `Authenticator::new_reusing` builds the
//! next configuration's authenticator carrying the state that is still valid for it (the
//! rules are in [`state`]).

pub mod apikey;
pub mod authorize;
pub mod cache;
pub mod claims;
pub mod cli;
pub mod client_cert;
pub mod credential;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod policy;
pub mod state;
pub mod token;

use http::{HeaderName, HeaderValue};

#[cfg(test)]
#[path = "../../tests/support/keys.rs"]
pub(crate) mod test_keys;

pub use crate::principal::{Credential, Principal, Role};
pub use error::{AuthError, Reason};
pub use layer::{AuthLayer, AuthMetrics, Authenticator};

/// A verified credential, before the request's tenant is chosen: what the token cache keeps.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The principal, with `tenant: None`.
    pub principal: Principal,
    /// The tenants it belongs to (an API key's one tenant, or the token's `tenant_claim`).
    pub tenants: Vec<std::sync::Arc<str>>,
    /// A tenant the token names that its issuer may not speak for (`[[auth.jwt]] tenants`):
    /// every request with this identity is refused (403 `NotATenantMember`).
    pub tenant_outside_issuer: Option<std::sync::Arc<str>>,
    /// `[auth] claim_headers` rendered from the verified claims.
    pub claim_headers: Vec<(HeaderName, HeaderValue)>,
}
