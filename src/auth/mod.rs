//! Edge authentication and authorization.
//!
//! Owns: credentials (JWTs, Feldera API keys), the [`Principal`] a request speaks for, and the
//! minimum-role check per endpoint. The layer sits after route classification (it needs the
//! endpoint's minimum role) and before rate limiting by principal.

pub mod layer;
pub mod principal;

pub use layer::{AuthLayer, Authenticator};
pub use principal::{Credential, Principal, Role};
