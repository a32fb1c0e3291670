//! The auth module's one error type, [`AuthError`], and its conversion to the gateway's error
//! schema — the only place auth failures become status codes, bodies and headers.
//!
//! - 401 `AuthenticationFailed`, `details {"reason": …}` with a [`Reason`] from a fixed set,
//!   and `WWW-Authenticate: Bearer realm="pipeline-gateway"`; when a credential was sent, the
//!   header also carries `error="invalid_token"` and a fixed description (RFC 6750 §3.1).
//!   An expired API key answers exactly like an unknown one (`invalid_api_key`): the client
//!   learns nothing about which keys exist. The error's internal detail (the access log) and
//!   the `auth_failures{reason}` metric (`expired_api_key`) tell them apart.
//! - 503 `AuthenticationUnavailable` with `Retry-After: 5` when the token's issuer has never
//!   had a key set loaded: the gateway cannot tell, so it is not the client's fault.
//! - 403 `InsufficientPermissions` with the manager's message and `details
//!   {"required","actual"}`; for a `/v0` path missing from the role table, `required` is
//!   `null` and `reason` is `unclassified_endpoint`.
//! - 403 `InsufficientPermissions` with `details.reason = "client_certificate_not_mapped"`
//!   for a verified TLS client certificate that no `[[auth.client_certs]]` entry maps.
//! - 403 `NotATenantMember` when the client asks for a tenant its principal does not belong to,
//!   or the token names a tenant outside its issuer's `tenants`.
//!
//! Messages and descriptions are fixed strings: nothing from the token (claims, `kid`, `iss`)
//! is ever echoed, to the client or to the log (an API key's configured name may be logged).

use std::fmt;
use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use crate::errors::GatewayError;

use crate::catalog::Role;

/// Why a credential was refused (the `details.reason` of a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingCredentials,
    MalformedCredentials,
    CredentialsTooLarge,
    UnsupportedAlgorithm,
    UnsupportedHeader,
    UnknownKey,
    InvalidSignature,
    TokenExpired,
    TokenNotYetValid,
    InvalidIssuer,
    InvalidAudience,
    MissingClaim,
    WrongTokenType,
    NotAnAccessToken,
    InvalidApiKey,
    /// Counted and logged as itself, answered as [`Reason::InvalidApiKey`].
    ExpiredApiKey,
}

impl Reason {
    /// Every reason, for metrics (`auth_failures{reason}`).
    pub const ALL: [Reason; 16] = [
        Reason::MissingCredentials,
        Reason::MalformedCredentials,
        Reason::CredentialsTooLarge,
        Reason::UnsupportedAlgorithm,
        Reason::UnsupportedHeader,
        Reason::UnknownKey,
        Reason::InvalidSignature,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::InvalidIssuer,
        Reason::InvalidAudience,
        Reason::MissingClaim,
        Reason::WrongTokenType,
        Reason::NotAnAccessToken,
        Reason::InvalidApiKey,
        Reason::ExpiredApiKey,
    ];

    /// The reason a client is told: every reason but `expired_api_key`, which is answered as
    /// `invalid_api_key`.
    pub fn public(self) -> Reason {
        match self {
            Reason::ExpiredApiKey => Reason::InvalidApiKey,
            other => other,
        }
    }

    /// The reason's name: `details.reason` (of its [`Reason::public`] form) and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "missing_credentials",
            Reason::MalformedCredentials => "malformed_credentials",
            Reason::CredentialsTooLarge => "credentials_too_large",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::UnsupportedHeader => "unsupported_header",
            Reason::UnknownKey => "unknown_key",
            Reason::InvalidSignature => "invalid_signature",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::InvalidIssuer => "invalid_issuer",
            Reason::InvalidAudience => "invalid_audience",
            Reason::MissingClaim => "missing_claim",
            Reason::WrongTokenType => "wrong_token_type",
            Reason::NotAnAccessToken => "not_an_access_token",
            Reason::InvalidApiKey => "invalid_api_key",
            Reason::ExpiredApiKey => "expired_api_key",
        }
    }

    /// The fixed, token-free description used in the message and `WWW-Authenticate`.
    pub fn description(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "No credentials were provided",
            Reason::MalformedCredentials => "The credentials are malformed",
            Reason::CredentialsTooLarge => "The credentials are larger than 8 KiB",
            Reason::UnsupportedAlgorithm => "The token's signing algorithm is not accepted",
            Reason::UnsupportedHeader => "The token's header uses a parameter that is not accepted",
            Reason::UnknownKey => "The token was signed with an unknown key",
            Reason::InvalidSignature => "The token's signature is invalid",
            Reason::TokenExpired => "The token has expired",
            Reason::TokenNotYetValid => "The token is not valid yet",
            Reason::InvalidIssuer => "The token's issuer is not trusted",
            Reason::InvalidAudience => "The token is not meant for this service",
            Reason::MissingClaim => "The token lacks a required claim",
            Reason::WrongTokenType => "The token's type is not accepted",
            Reason::NotAnAccessToken => "The token is an ID token, not an access token",
            Reason::InvalidApiKey => "Unauthorized API key",
            Reason::ExpiredApiKey => "The API key has expired",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the auth layer can refuse a request for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed: {0}")]
    Failed(Reason),
    /// A configured API key past its `expires` (answered as `invalid_api_key`).
    #[error("API key {name} has expired")]
    ExpiredApiKey { name: Arc<str> },
    #[error("no key set has been loaded for issuer {issuer}")]
    Unavailable { issuer: Arc<str> },
    #[error("role {actual} is below the required {required}")]
    InsufficientRole { required: Role, actual: Role },
    #[error("endpoint is not in the role table")]
    UnclassifiedEndpoint { actual: Role },
    /// The requested tenant is not the principal's, or the token names a tenant outside its
    /// issuer's `tenants`; `tenant` is echoed only when the client asked for it.
    #[error("not a member of the requested tenant")]
    NotATenantMember {
        tenant: Option<String>,
        outside_issuer: bool,
    },
    /// A verified client certificate that no `[[auth.client_certs]]` entry maps.
    #[error("the client certificate matches no [[auth.client_certs]] entry")]
    UnmappedClientCertificate { subject: String },
    /// Not the client's doing: the stack is out of order (a 500).
    #[error("{0}")]
    Internal(GatewayError),
}

impl From<Reason> for AuthError {
    fn from(reason: Reason) -> Self {
        AuthError::Failed(reason)
    }
}

impl AuthError {
    /// The 401 reason, if this is one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            AuthError::Failed(reason) => Some(*reason),
            AuthError::ExpiredApiKey { .. } => Some(Reason::ExpiredApiKey),
            _ => None,
        }
    }
}

/// Seconds a client should wait when no key set is loaded yet.
const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

/// Longest requested tenant name echoed back in `details`.
const MAX_ECHOED_TENANT: usize = 128;

impl From<AuthError> for GatewayError {
    fn from(error: AuthError) -> GatewayError {
        match error {
            AuthError::Internal(error) => error,
            AuthError::Failed(reason) => {
                let internal = match reason {
                    Reason::InvalidApiKey => Some("no configured API key has this hash".into()),
                    Reason::ExpiredApiKey => Some("an API key past its expires".into()),
                    _ => None,
                };
                unauthorized(reason, internal)
            }
            AuthError::ExpiredApiKey { name } => unauthorized(
                Reason::ExpiredApiKey,
                Some(format!("API key \"{name}\" is past its expires")),
            ),
            AuthError::Unavailable { issuer } => GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AuthenticationUnavailable",
                "Credentials cannot be verified now: the identity provider's keys are not loaded",
            )
            .with_details(json!({ "reason": "keys_not_loaded" }))
            .with_retry_after(UNAVAILABLE_RETRY_AFTER_S)
            .with_internal(format!("no key set loaded for issuer {issuer}")),
            AuthError::InsufficientRole { required, actual } => GatewayError::new(
                StatusCode::FORBIDDEN,
                "InsufficientPermissions",
                format!(
                    "Insufficient permissions: this action requires the '{required}' role, \
                     but the caller has '{actual}'"
                ),
            )
            .with_details(json!({ "required": required.as_str(), "actual": actual.as_str() })),
            AuthError::UnmappedClientCertificate { subject } => GatewayError::new(
                StatusCode::FORBIDDEN,
                "InsufficientPermissions",
                "Insufficient permissions: the client certificate is not mapped to any role",
            )
            .with_details(json!({
                "required": null,
                "actual": null,
                "reason": "client_certificate_not_mapped",
            }))
            .with_internal(format!("unmapped client certificate subject {subject}")),
            AuthError::UnclassifiedEndpoint { actual } => GatewayError::new(
                StatusCode::FORBIDDEN,
                "InsufficientPermissions",
                "Insufficient permissions: this endpoint is not in the gateway's role table",
            )
            .with_details(json!({
                "required": null,
                "actual": actual.as_str(),
                "reason": "unclassified_endpoint",
            })),
            AuthError::NotATenantMember {
                tenant,
                outside_issuer,
            } => {
                let details = match tenant {
                    Some(tenant) if tenant.len() <= MAX_ECHOED_TENANT => {
                        json!({ "tenant": tenant })
                    }
                    _ => json!({}),
                };
                let error = GatewayError::new(
                    StatusCode::FORBIDDEN,
                    "NotATenantMember",
                    if outside_issuer {
                        "The token names a tenant its issuer may not speak for"
                    } else {
                        "The caller is not a member of the requested tenant"
                    },
                )
                .with_details(details);
                if outside_issuer {
                    error.with_internal("a tenant in the token is outside [[auth.jwt]] tenants")
                } else {
                    error
                }
            }
        }
    }
}

/// The 401 of `reason` (rendered as its public form), with operator-only `internal` detail.
fn unauthorized(reason: Reason, internal: Option<String>) -> GatewayError {
    let public = reason.public();
    let challenge = if public == Reason::MissingCredentials {
        HeaderValue::from_static("Bearer realm=\"pipeline-gateway\"")
    } else {
        // Descriptions are fixed ASCII without quotes, so this cannot fail.
        HeaderValue::try_from(format!(
            "Bearer realm=\"pipeline-gateway\", error=\"invalid_token\", \
             error_description=\"{}\"",
            public.description()
        ))
        .unwrap_or(HeaderValue::from_static(
            "Bearer realm=\"pipeline-gateway\"",
        ))
    };
    let error = GatewayError::new(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFailed",
        format!("Authentication failed: {}", public.description()),
    )
    .with_details(json!({ "reason": public.as_str() }))
    .with_header(header::WWW_AUTHENTICATE, challenge);
    match internal {
        Some(internal) => error.with_internal(internal),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_challenge_has_no_error_attribute() {
        let response =
            GatewayError::from(AuthError::Failed(Reason::MissingCredentials)).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"pipeline-gateway\""
        );
    }

    #[test]
    fn every_other_reason_says_invalid_token_with_a_description() {
        for reason in Reason::ALL.into_iter().skip(1) {
            let error = GatewayError::from(AuthError::Failed(reason));
            assert_eq!(error.details()["reason"], reason.public().as_str());
            let response = error.into_response();
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            assert!(
                challenge.contains(reason.public().description()),
                "{challenge}"
            );
        }
    }

    #[test]
    fn an_expired_api_key_answers_like_an_unknown_one_and_only_the_log_tells() {
        let unknown = GatewayError::from(AuthError::Failed(Reason::InvalidApiKey)).into_response();
        let expired = GatewayError::from(AuthError::ExpiredApiKey { name: "ci".into() });
        assert_eq!(expired.details()["reason"], "invalid_api_key");
        assert_eq!(
            expired.message(),
            "Authentication failed: Unauthorized API key"
        );
        let expired = expired.into_response();
        assert_eq!(expired.status(), unknown.status());
        assert_eq!(
            expired.headers()[header::WWW_AUTHENTICATE],
            unknown.headers()[header::WWW_AUTHENTICATE]
        );
        let internal = |response: &crate::body::Response| {
            response
                .extensions()
                .get::<crate::errors::ErrorInfo>()
                .and_then(|info| info.internal.clone())
                .unwrap_or_default()
        };
        assert_eq!(internal(&expired), "API key \"ci\" is past its expires");
        assert_eq!(internal(&unknown), "no configured API key has this hash");
        assert_eq!(
            AuthError::ExpiredApiKey { name: "ci".into() }.reason(),
            Some(Reason::ExpiredApiKey),
            "the metric keeps its own label"
        );
    }

    #[test]
    fn insufficient_role_uses_the_managers_message() {
        let error = GatewayError::from(AuthError::InsufficientRole {
            required: Role::Write,
            actual: Role::Read,
        });
        assert_eq!(
            error.message(),
            "Insufficient permissions: this action requires the 'write' role, but the caller has 'read'"
        );
        assert_eq!(error.code(), "InsufficientPermissions");
        assert_eq!(
            error.details(),
            &json!({ "required": "write", "actual": "read" })
        );
    }

    #[test]
    fn unavailable_is_503_with_retry_after() {
        let response = GatewayError::from(AuthError::Unavailable {
            issuer: "https://idp/".into(),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
