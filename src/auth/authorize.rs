//! Who may call what: the [`Requirement`] of a request, and the checks of a principal's role
//! and tenant against it.
//!
//! - A path listed in `[auth] public_paths` (exact match) needs no credential. The default list
//!   is the manager's own: `/healthz`, `/config/authentication`, `/robots.txt`. A catalogued
//!   public path removed from the list needs the `read` role.
//! - A catalogued endpoint needs the manager's minimum role (UPSTREAM.md's table, carried by
//!   the route catalog's `Access::Role`): 403 `InsufficientPermissions` below it.
//! - A `/v0` path missing from the catalog needs the role of the first `[[auth.routes]]` entry
//!   whose glob (`*` within a segment, `**` across) and methods match; with none, it is denied
//!   (403) whatever the role — the gateway does not forward what it cannot classify. The
//!   check comes after authentication, so an anonymous client learns nothing from it.
//! - Tenants: the client may ask for a tenant (`Feldera-Tenant`, or `feldera-tenant.<b64>` in a
//!   WebSocket subprotocol); it must be one the principal belongs to (the API key's tenant or
//!   the token's `tenant_claim`), else 403 `NotATenantMember`. Without a request, the
//!   principal's first tenant is used, or none.
//! - A token that names a tenant outside its issuer's `[[auth.jwt]] tenants` is refused
//!   whatever it asks for (403 `NotATenantMember`): an issuer that claims another issuer's
//!   tenant is not believed about any. `details.tenant` is given only when the client asked
//!   for that very tenant (nothing read from the token is echoed).

use std::sync::Arc;

use globset::GlobMatcher;
use http::Method;

use crate::catalog::Access;
use crate::config::auth::AuthConfig;

use super::{AuthError, Identity, Principal, Role};

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: no credential is read.
    Public,
    /// A principal with at least this role.
    Role(Role),
    /// A principal, and even then 403: a `/v0` path nobody configured.
    Denied,
}

#[derive(Debug)]
struct RouteRule {
    path: GlobMatcher,
    methods: Vec<Method>,
    role: Role,
}

/// The requirements of every request, from `[auth]`.
#[derive(Debug)]
pub struct RoutePolicy {
    public_paths: Vec<String>,
    rules: Vec<RouteRule>,
}

impl RoutePolicy {
    /// Builds the policy from a checked configuration.
    pub fn new(config: &AuthConfig) -> RoutePolicy {
        let rules = config
            .routes
            .iter()
            .map(|route| RouteRule {
                path: route.path.glob().compile_matcher(),
                methods: route.methods.iter().map(|m| m.0.clone()).collect(),
                role: route.role,
            })
            .collect();
        RoutePolicy {
            public_paths: config.public_paths.clone(),
            rules,
        }
    }

    /// What a request for `method path`, classified as `access`, needs.
    pub fn requirement(&self, method: &Method, path: &str, access: Access) -> Requirement {
        if access == Access::Open || self.public_paths.iter().any(|p| p == path) {
            return Requirement::Public;
        }
        match access {
            Access::Open => Requirement::Public,
            Access::Public => Requirement::Role(Role::Read),
            Access::Role(role) => Requirement::Role(role),
            Access::Unclassified => self
                .rules
                .iter()
                .find(|rule| {
                    rule.path.is_match(path)
                        && (rule.methods.is_empty() || rule.methods.contains(method))
                })
                .map_or(Requirement::Denied, |rule| Requirement::Role(rule.role)),
        }
    }
}

/// Checks `principal` against `requirement`.
pub fn authorize(principal: &Principal, requirement: Requirement) -> Result<(), AuthError> {
    match requirement {
        Requirement::Public => Ok(()),
        Requirement::Role(required) if principal.role >= required => Ok(()),
        Requirement::Role(required) => Err(AuthError::InsufficientRole {
            required,
            actual: principal.role,
        }),
        Requirement::Denied => Err(AuthError::UnclassifiedEndpoint {
            actual: principal.role,
        }),
    }
}

/// The principal acting in the tenant the client asked for (each of `requested` must be one
/// the identity belongs to), or in its first tenant.
pub fn select_tenant(identity: &Identity, requested: &[&str]) -> Result<Principal, AuthError> {
    if let Some(outside) = &identity.tenant_outside_issuer {
        // Echo only what the client itself asked for, never a name read from the token.
        return Err(AuthError::NotATenantMember {
            tenant: requested
                .iter()
                .find(|t| **t == &**outside)
                .map(|t| t.to_string()),
            outside_issuer: true,
        });
    }
    let mut principal = identity.principal.clone();
    for tenant in requested {
        if !identity.tenants.iter().any(|t| &**t == *tenant) {
            return Err(AuthError::NotATenantMember {
                tenant: Some(tenant.to_string()),
                outside_issuer: false,
            });
        }
    }
    principal.tenant = match requested.first() {
        Some(tenant) => Some(Arc::from(*tenant)),
        None => identity.tenants.first().cloned(),
    };
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> RoutePolicy {
        let config: AuthConfig = toml::from_str(extra).unwrap();
        RoutePolicy::new(&config)
    }

    #[test]
    fn public_paths_are_configurable_on_top_of_the_catalog() {
        let p = policy("");
        assert_eq!(
            p.requirement(&Method::GET, "/healthz", Access::Public),
            Requirement::Public
        );
        let p = policy("public_paths = [\"/healthz\"]");
        assert_eq!(
            p.requirement(&Method::GET, "/robots.txt", Access::Public),
            Requirement::Role(Role::Read)
        );
    }

    #[test]
    fn unclassified_paths_are_denied_unless_configured() {
        let p = policy(
            r#"
            [[routes]]
            path = "/v0/foo/*"
            methods = ["GET"]
            role = "write"
            "#,
        );
        let u = Access::Unclassified;
        assert_eq!(
            p.requirement(&Method::GET, "/v0/foo/x", u),
            Requirement::Role(Role::Write)
        );
        assert_eq!(
            p.requirement(&Method::POST, "/v0/foo/x", u),
            Requirement::Denied
        );
        assert_eq!(
            p.requirement(&Method::GET, "/v0/foo/x/y", u),
            Requirement::Denied
        );
        assert_eq!(
            p.requirement(&Method::GET, "/v0/bar", u),
            Requirement::Denied
        );
    }

    #[test]
    fn roles_are_ordered_and_tenants_must_be_the_principals() {
        let reader = Principal::api_key("r", Role::Read, None);
        assert!(authorize(&reader, Requirement::Role(Role::Read)).is_ok());
        assert!(matches!(
            authorize(&reader, Requirement::Role(Role::Write)),
            Err(AuthError::InsufficientRole {
                required: Role::Write,
                actual: Role::Read
            })
        ));
        let identity = Identity {
            principal: reader,
            tenants: vec!["acme".into(), "beta".into()],
            claim_headers: Vec::new(),
            tenant_outside_issuer: None,
        };
        assert_eq!(
            select_tenant(&identity, &[]).unwrap().tenant.as_deref(),
            Some("acme")
        );
        assert_eq!(
            select_tenant(&identity, &["beta"])
                .unwrap()
                .tenant
                .as_deref(),
            Some("beta")
        );
        assert!(matches!(
            select_tenant(&identity, &["evil"]),
            Err(AuthError::NotATenantMember { tenant: Some(t), outside_issuer: false }) if t == "evil"
        ));
        let bound = Identity {
            tenant_outside_issuer: Some("beta".into()),
            ..identity
        };
        assert!(matches!(
            select_tenant(&bound, &["beta"]),
            Err(AuthError::NotATenantMember { tenant: Some(t), outside_issuer: true }) if t == "beta"
        ));
        assert!(matches!(
            select_tenant(&bound, &["acme"]),
            Err(AuthError::NotATenantMember {
                tenant: None,
                outside_issuer: true
            })
        ));
        assert!(matches!(
            select_tenant(&bound, &[]),
            Err(AuthError::NotATenantMember { tenant: None, .. })
        ));
    }
}
