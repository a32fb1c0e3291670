//! Edge authentication and authorization.
//!
//! Owns: credentials (JWTs from several issuers with rotating key sets, Feldera API keys), the
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
//! `pipeline-gateway apikey …`. The [`Principal`] it makes lives
//! on the ground floor (`crate::principal`), where every later layer reads it.

pub mod apikey;
pub mod authorize;
pub mod cache;
pub mod claims;
pub mod cli;
pub mod credential;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod token;

use http::{HeaderName, HeaderValue};

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
    /// `[auth] claim_headers` rendered from the verified claims.
    pub claim_headers: Vec<(HeaderName, HeaderValue)>,
}
