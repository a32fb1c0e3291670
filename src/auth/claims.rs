//! The claims checks of one issuer ([`ClaimRules`]), and what a verified token's claims say
//! about its subject: role, tenants, claim headers.
//!
//! Checks ([`ClaimRules::check`]), in order, the first failure being the reason:
//! with `reject_id_tokens`, an OpenID ID token — a `nonce` claim (not null), or a `token_use`
//! other than `"access"` (Cognito's marker) — is `not_an_access_token` (first, because an ID
//! token would otherwise fail on its audience, the client id, which would mislead); `exp`
//! required (`missing_claim`) and `now < exp + leeway` (`token_expired`); `nbf` and
//! `iat`, when present, `<= now + leeway` (`token_not_yet_valid`: a token issued in the
//! future was minted by a wrong clock or a forger); `aud` required, a string or an array of
//! strings containing a configured audience (`invalid_audience`); `sub` a non-empty string and
//! every `required_claims` present and not null (`missing_claim`). Numeric claims of another
//! type, and `aud` entries that are not strings, are `malformed_credentials`.
//!
//! Claim names may be dotted paths into nested objects (`realm_access.roles`) when no claim
//! has the literal name. The role is the `role_claim` (a string, or the highest known role in
//! an array; `default_role` otherwise); the tenants are the non-empty strings of
//! `tenant_claim` (a string or an array). With `tenants` (a [`TenantBinding`]), a tenant the
//! token names outside that list is reported ([`ClaimRules::tenant_outside_issuer`]) — it is
//! refused with 403 once the token is verified, never with a 401 before. A claim becomes a header value as it is (a string),
//! joined with `", "` (an array) or as compact JSON; a value over 4 KiB or not valid in a
//! header is dropped.

use std::sync::Arc;
use std::time::Duration;

use globset::GlobMatcher;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::auth::JwtProviderConfig;
use crate::config::values::NameGlob;

use super::{Reason, Role};

/// Largest header value built from a claim.
const MAX_CLAIM_HEADER_BYTES: usize = 4 * 1024;

/// What one issuer requires of a token's claims, and how it reads role and tenants.
/// Compared whole when deciding whether identities verified under it may be reused.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRules {
    pub leeway: Duration,
    pub audiences: Vec<String>,
    pub required_claims: Vec<String>,
    pub role_claim: Option<String>,
    pub default_role: Role,
    pub tenant_claim: Option<String>,
    /// The tenants the issuer may name (`tenants`); `None`: any.
    pub tenant_binding: Option<TenantBinding>,
    /// Refuse ID tokens (`nonce`, or `token_use` other than `access`).
    pub reject_id_tokens: bool,
}

/// What the checks leave for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked<'a> {
    /// Unix seconds.
    pub exp: f64,
    pub subject: &'a str,
}

impl ClaimRules {
    pub fn new(config: &JwtProviderConfig) -> ClaimRules {
        ClaimRules {
            leeway: config.leeway,
            audiences: config.audiences.clone(),
            required_claims: config.required_claims.clone(),
            role_claim: config.role_claim.clone(),
            default_role: config.default_role,
            tenant_claim: config.tenant_claim.clone(),
            tenant_binding: config.tenants.as_deref().map(TenantBinding::new),
            reject_id_tokens: config.rejects_id_tokens(),
        }
    }

    /// Checks time, audience and presence claims at `now` (Unix seconds).
    pub fn check<'a>(
        &self,
        claims: &'a Map<String, Value>,
        now: f64,
    ) -> Result<Checked<'a>, Reason> {
        if self.reject_id_tokens {
            let nonce = !matches!(claims.get("nonce"), None | Some(Value::Null));
            let not_access = claims
                .get("token_use")
                .is_some_and(|token_use| token_use.as_str() != Some("access"));
            if nonce || not_access {
                return Err(Reason::NotAnAccessToken);
            }
        }
        let leeway = self.leeway.as_secs_f64();
        let number = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or(Reason::MalformedCredentials),
        };
        let exp = number("exp")?.ok_or(Reason::MissingClaim)?;
        if now >= exp + leeway {
            return Err(Reason::TokenExpired);
        }
        if let Some(nbf) = number("nbf")? {
            if nbf > now + leeway {
                return Err(Reason::TokenNotYetValid);
            }
        }
        if let Some(iat) = number("iat")? {
            if iat > now + leeway {
                return Err(Reason::TokenNotYetValid);
            }
        }
        let ours = |aud: &str| self.audiences.iter().any(|a| a == aud);
        let audience_ok = match claims.get("aud") {
            None | Some(Value::Null) => return Err(Reason::MissingClaim),
            Some(Value::String(aud)) => ours(aud),
            Some(Value::Array(list)) => {
                let mut found = false;
                for aud in list {
                    found |= ours(aud.as_str().ok_or(Reason::MalformedCredentials)?);
                }
                found
            }
            Some(_) => return Err(Reason::MalformedCredentials),
        };
        if !audience_ok {
            return Err(Reason::InvalidAudience);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.as_str(),
            _ => return Err(Reason::MissingClaim),
        };
        for name in &self.required_claims {
            if matches!(claim(claims, name), None | Some(Value::Null)) {
                return Err(Reason::MissingClaim);
            }
        }
        Ok(Checked { exp, subject })
    }

    /// The subject's role.
    pub fn role(&self, claims: &Map<String, Value>) -> Role {
        self.role_claim
            .as_deref()
            .and_then(|name| claim(claims, name))
            .and_then(highest_role)
            .unwrap_or(self.default_role)
    }

    /// The tenants the token says its subject belongs to.
    pub fn tenants(&self, claims: &Map<String, Value>) -> Vec<Arc<str>> {
        self.tenant_claim
            .as_deref()
            .and_then(|name| claim(claims, name))
            .map(strings)
            .unwrap_or_default()
    }
}

/// The tenants one issuer may speak for: exact names and globs, compared by their text.
#[derive(Debug, Clone)]
pub struct TenantBinding {
    globs: Vec<NameGlob>,
    matchers: Vec<GlobMatcher>,
}

impl PartialEq for TenantBinding {
    fn eq(&self, other: &TenantBinding) -> bool {
        self.globs == other.globs
    }
}

impl TenantBinding {
    pub fn new(globs: &[NameGlob]) -> TenantBinding {
        TenantBinding {
            globs: globs.to_vec(),
            matchers: globs.iter().map(|g| g.glob().compile_matcher()).collect(),
        }
    }

    /// Whether the issuer may name `tenant`.
    pub fn allows(&self, tenant: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(tenant))
    }
}

impl ClaimRules {
    /// The first of `tenants` (as the token names them) the issuer may not speak for.
    pub fn tenant_outside_issuer(&self, tenants: &[Arc<str>]) -> Option<Arc<str>> {
        let binding = self.tenant_binding.as_ref()?;
        tenants.iter().find(|t| !binding.allows(t)).cloned()
    }
}

/// The token's issuer: `iss` must be a string (`missing_claim` without it).
pub fn issuer(claims: &Map<String, Value>) -> Result<&str, Reason> {
    match claims.get("iss") {
        None => Err(Reason::MissingClaim),
        Some(Value::String(iss)) => Ok(iss.as_str()),
        Some(_) => Err(Reason::MalformedCredentials),
    }
}

/// `[auth] claim_headers` rendered from verified claims (claim name → header name).
pub fn claim_headers(
    claims: &Map<String, Value>,
    wanted: &[(String, HeaderName)],
) -> Vec<(HeaderName, HeaderValue)> {
    wanted
        .iter()
        .filter_map(|(name, header)| Some((header.clone(), render(claim(claims, name)?)?)))
        .collect()
}

/// A claim by name, or by dotted path into nested objects when no claim has that name.
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let mut value = claims.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    })
}

/// The highest known role named by a string or an array of strings.
fn highest_role(value: &Value) -> Option<Role> {
    match value {
        Value::String(s) => Role::parse(s),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(Role::parse)
            .max(),
        _ => None,
    }
}

/// The non-empty strings of a string or an array.
fn strings(value: &Value) -> Vec<Arc<str>> {
    match value {
        Value::String(s) if !s.is_empty() => vec![s.as_str().into()],
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(Arc::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim as a header value: strings as they are, arrays joined with `", "`, anything else as
/// compact JSON. `None` when it would not be a valid or reasonably small header value.
fn render(value: &Value) -> Option<HeaderValue> {
    let one = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = match value {
        Value::Array(items) => items.iter().map(one).collect::<Vec<_>>().join(", "),
        other => one(other),
    };
    if text.len() > MAX_CLAIM_HEADER_BYTES {
        return None;
    }
    HeaderValue::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(extra: &str) -> ClaimRules {
        let config: JwtProviderConfig = toml::from_str(&format!(
            "issuer = \"i\"\naudiences = [\"feldera-api\"]\nalgorithms = [\"RS256\"]\n\
             jwks_file = \"/x\"\nleeway = \"30s\"\n{extra}"
        ))
        .unwrap();
        ClaimRules::new(&config)
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    const NOW: f64 = 1_000_000.0;

    #[test]
    fn time_audience_and_presence_are_checked_in_order() {
        let r = rules("required_claims = [\"email\"]");
        let good =
            json!({ "sub": "a", "aud": ["x", "feldera-api"], "exp": NOW + 10.0, "email": "e" });
        assert_eq!(r.check(&object(good.clone()), NOW).unwrap().subject, "a");
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            object(c)
        };
        for (name, claims, reason) in [
            (
                "expired beyond leeway",
                with("exp", json!(NOW - 31.0)),
                Reason::TokenExpired,
            ),
            (
                "exp a string",
                with("exp", json!("soon")),
                Reason::MalformedCredentials,
            ),
            (
                "nbf ahead",
                with("nbf", json!(NOW + 31.0)),
                Reason::TokenNotYetValid,
            ),
            (
                "iat ahead",
                with("iat", json!(NOW + 31.0)),
                Reason::TokenNotYetValid,
            ),
            (
                "foreign audience",
                with("aud", json!("other")),
                Reason::InvalidAudience,
            ),
            (
                "audience not strings",
                with("aud", json!([1])),
                Reason::MalformedCredentials,
            ),
            (
                "empty subject",
                with("sub", json!("")),
                Reason::MissingClaim,
            ),
            (
                "null required",
                with("email", Value::Null),
                Reason::MissingClaim,
            ),
        ] {
            assert_eq!(r.check(&claims, NOW).unwrap_err(), reason, "{name}");
        }
        assert!(
            r.check(&with("exp", json!(NOW - 29.0)), NOW).is_ok(),
            "within leeway"
        );
    }

    #[test]
    fn id_tokens_are_refused_first_when_asked() {
        let strict = rules("reject_id_tokens = true");
        let lax = rules("");
        let base = json!({ "sub": "a", "aud": "client-id", "exp": NOW + 10.0 });
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            object(c)
        };
        for (claims, refused) in [
            (with("nonce", json!("n-0S6_WzA2Mj")), true),
            (with("token_use", json!("id")), true),
            (with("token_use", json!(1)), true),
            (with("nonce", Value::Null), false),
            (with("token_use", json!("access")), false),
        ] {
            let reason = strict.check(&claims, NOW).unwrap_err();
            if refused {
                assert_eq!(reason, Reason::NotAnAccessToken, "{claims:?}");
            } else {
                assert_eq!(reason, Reason::InvalidAudience, "{claims:?}");
            }
            assert_eq!(
                lax.check(&claims, NOW).unwrap_err(),
                Reason::InvalidAudience
            );
        }
    }

    #[test]
    fn a_binding_reports_the_first_tenant_outside_it() {
        let bound = rules("tenant_claim = \"t\"\ntenants = [\"acme\", \"beta-*\"]");
        let names = |list: &[&str]| list.iter().map(|t| Arc::from(*t)).collect::<Vec<_>>();
        assert_eq!(
            bound.tenant_outside_issuer(&names(&["acme", "beta-1"])),
            None
        );
        assert_eq!(
            bound.tenant_outside_issuer(&names(&["beta-1", "acmex", "gamma"])),
            Some(Arc::from("acmex"))
        );
        assert_eq!(bound.tenant_outside_issuer(&[]), None);
        let any = rules("tenant_claim = \"t\"");
        assert_eq!(any.tenant_outside_issuer(&names(&["anything"])), None);
    }

    #[test]
    fn role_tenants_and_headers_are_read_from_claims_and_dotted_paths() {
        let r = rules("role_claim = \"realm.roles\"\ntenant_claim = \"tenants\"");
        let claims = object(json!({
            "realm": { "roles": ["viewer", "read", "admin"] },
            "tenants": ["t1", "", "t2"], "groups": ["a", "b"], "n": 5,
        }));
        assert_eq!(r.role(&claims), Role::Admin);
        assert_eq!(
            r.tenants(&claims),
            vec![Arc::<str>::from("t1"), "t2".into()]
        );
        assert_eq!(r.role(&Map::new()), Role::Read, "the default role");
        let wanted = vec![
            ("groups".to_string(), HeaderName::from_static("x-groups")),
            ("n".to_string(), HeaderName::from_static("x-n")),
            ("absent".to_string(), HeaderName::from_static("x-absent")),
        ];
        let headers = claim_headers(&claims, &wanted);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].1, "a, b");
        assert_eq!(headers[1].1, "5");
        assert_eq!(
            issuer(&object(json!({ "iss": 1 }))),
            Err(Reason::MalformedCredentials)
        );
        assert_eq!(issuer(&Map::new()), Err(Reason::MissingClaim));
    }
}
