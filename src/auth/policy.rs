//! The auth policy: everything `[auth]` decides, built from the configuration alone — no
//! file, no network, no state. Two policies built from equal configurations are equal, and
//! a policy can be compared with the one it replaces ([`AuthPolicy::verifies_like`]) to tell
//! what state may be carried over a reload (see `super::state`).
//!
//! Holds: the mode, whether the client's tenant is believed with auth off, the requirement
//! of each request ([`RoutePolicy`]: public paths, `[[auth.routes]]`), the claim headers,
//! `api_keys_reload`, and per issuer its verification rules ([`IssuerPolicy`]). Deliberately
//! not here: keys, key sets, API keys, the token cache (`super::state`).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;

use crate::config::auth::{normalize_media_type, AuthConfig, AuthMode, JwtProviderConfig};

use super::authorize::RoutePolicy;
use super::claims::ClaimRules;

/// How one issuer's tokens are verified, apart from its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerPolicy {
    /// Compared exactly with the token's `iss`.
    pub issuer: Arc<str>,
    /// The `alg` values accepted.
    pub algorithms: Vec<Algorithm>,
    /// `token_types`, normalized (lowercase, no `application/`); `None`: any `typ`.
    pub token_types: Option<Vec<String>>,
    pub claims: ClaimRules,
}

impl IssuerPolicy {
    pub fn new(config: &JwtProviderConfig) -> IssuerPolicy {
        IssuerPolicy {
            issuer: config.issuer.as_str().into(),
            algorithms: config.algorithms.iter().map(|a| a.0).collect(),
            token_types: config
                .token_types
                .as_ref()
                .map(|types| types.iter().map(|t| t.normalized().to_owned()).collect()),
            claims: ClaimRules::new(config),
        }
    }

    /// Whether a token whose header says `typ` is of an accepted type.
    pub fn accepts_type(&self, typ: Option<&str>) -> bool {
        match (&self.token_types, typ) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(types), Some(typ)) => types.contains(&normalize_media_type(typ)),
        }
    }
}

/// Everything `[auth]` decides.
#[derive(Debug)]
pub struct AuthPolicy {
    pub mode: AuthMode,
    /// With auth off: believe the client's `Feldera-Tenant`.
    pub trust_tenant_header: bool,
    pub routes: RoutePolicy,
    /// `[auth] claim_headers`: claim name → header name.
    pub claim_headers: Vec<(String, HeaderName)>,
    /// `[[auth.jwt]]`, in order (the state's key sets are in the same order).
    pub issuers: Vec<IssuerPolicy>,
    /// How often `api_keys_file` is checked for changes.
    pub api_keys_reload: Duration,
}

impl AuthPolicy {
    /// The policy of a checked configuration.
    pub fn new(config: &AuthConfig) -> AuthPolicy {
        AuthPolicy {
            mode: config.mode,
            trust_tenant_header: config.trust_tenant_header,
            routes: RoutePolicy::new(config),
            claim_headers: config
                .claim_headers
                .iter()
                .map(|(claim, header)| (claim.clone(), header.0.clone()))
                .collect(),
            issuers: config.jwt.iter().map(IssuerPolicy::new).collect(),
            api_keys_reload: config.api_keys_reload,
        }
    }

    /// The issuer whose `issuer` is exactly `iss`, with its index.
    pub fn issuer(&self, iss: &str) -> Option<(usize, &IssuerPolicy)> {
        self.issuers
            .iter()
            .enumerate()
            .find(|(_, issuer)| *issuer.issuer == *iss)
    }

    /// Whether an identity verified under `previous` is what this policy would make of the
    /// same token (given the same keys): every issuer of `previous` is here with equal rules,
    /// and the claim headers are the same. Issuers added since do not matter — no identity
    /// was made under them.
    pub fn verifies_like(&self, previous: &AuthPolicy) -> bool {
        self.claim_headers == previous.claim_headers
            && previous
                .issuers
                .iter()
                .all(|old| self.issuer(&old.issuer).is_some_and(|(_, new)| new == old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> AuthPolicy {
        AuthPolicy::new(&toml::from_str::<AuthConfig>(text).unwrap())
    }

    const A: &str = "[[jwt]]\nissuer = \"https://a/\"\naudiences = [\"x\"]\nalgorithms = [\"RS256\"]\njwks_url = \"https://a/jwks\"\n";
    const B: &str = "[[jwt]]\nissuer = \"https://b/\"\naudiences = [\"x\"]\nalgorithms = [\"ES256\"]\njwks_url = \"https://b/jwks\"\n";

    #[test]
    fn token_types_match_without_case_or_prefix_and_a_missing_typ_fails_a_list() {
        let any = policy(A);
        assert!(any.issuers[0].accepts_type(None));
        let listed = policy(&format!(
            "{A}token_types = [\"at+jwt\", \"application/JWT\"]\n"
        ));
        let issuer = &listed.issuers[0];
        for (typ, accepted) in [
            (Some("at+jwt"), true),
            (Some("application/at+JWT"), true),
            (Some("jwt"), true),
            (Some("JWT"), true),
            (Some("id_token+jwt"), false),
            (None, false),
        ] {
            assert_eq!(issuer.accepts_type(typ), accepted, "{typ:?}");
        }
    }

    #[test]
    fn equal_configurations_verify_alike_and_added_issuers_do_not_matter() {
        assert!(policy(A).verifies_like(&policy(A)));
        assert!(policy(&format!("{A}{B}")).verifies_like(&policy(A)));
        assert!(
            !policy(A).verifies_like(&policy(&format!("{A}{B}"))),
            "b removed"
        );
        assert!(policy(&format!("{B}{A}")).verifies_like(&policy(&format!("{A}{B}"))));
    }

    #[test]
    fn any_rule_or_claim_header_change_verifies_differently() {
        let base = policy(A);
        for changed in [
            A.replace("[\"x\"]", "[\"y\"]"),
            A.replace("RS256", "PS256"),
            format!("{A}leeway = \"1s\"\n"),
            format!("{A}role_claim = \"r\"\n"),
            format!("{A}default_role = \"write\"\n"),
            format!("{A}tenant_claim = \"t\"\n"),
            format!("{A}required_claims = [\"email\"]\n"),
            format!("{A}token_types = [\"at+jwt\"]\n"),
            format!("{A}reject_id_tokens = true\n"),
            format!("claim_headers = {{ sub = \"x-user\" }}\n{A}"),
        ] {
            assert!(!policy(&changed).verifies_like(&base), "{changed}");
        }
        let bound = |t: &str| policy(&format!("{A}tenant_claim = \"t\"\ntenants = [\"{t}\"]\n"));
        assert!(bound("acme").verifies_like(&bound("acme")));
        assert!(!bound("acme").verifies_like(&bound("beta-*")));
        // Key sources are not rules: the state decides about keys.
        let moved = A.replace("https://a/jwks", "https://a/keys");
        assert!(policy(&moved).verifies_like(&base));
    }
}
