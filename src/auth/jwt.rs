//! JWT verification for several issuers at once, as strict as RFC 8725 asks: the verifier
//! that ties the token parser (`super::token`), the issuer's claims checks (`super::claims`)
//! and its keys together.
//!
//! Order of checks (the first failure is the reason reported):
//! 1-3. The token parser: size (`credentials_too_large`), shape and strict JSON
//!    (`malformed_credentials`), header (`unsupported_header`, `unsupported_algorithm`).
//! 4. Issuer: `iss` chooses the provider by exact comparison (a trailing slash matters);
//!    missing → `missing_claim`, unknown → `invalid_issuer`. The provider's `algorithms`
//!    allowlist then applies (`unsupported_algorithm`), then its `token_types`: the `typ`
//!    header, compared case-insensitively without `application/`, must be listed
//!    (`wrong_token_type`; a token without `typ` fails a list).
//! 5. Claims, before the signature (cheap checks first; nothing they reveal is secret): the
//!    issuer's [`ClaimRules`](super::claims::ClaimRules) (`not_an_access_token`,
//!    `token_expired`, `token_not_yet_valid`, `invalid_audience`, `missing_claim`).
//! 6. Key: by `kid` among the provider's configured shared secrets (`hmac_keys`, the only
//!    source of HS* keys) and its key set (asymmetric keys only). A token without `kid` is
//!    accepted only while the provider has exactly one key (`unknown_key` otherwise). No such
//!    key → one rate-limited refetch of the key set ([`Outcome::NeedKeys`]), then
//!    `unknown_key`; no key set ever loaded → 503 `AuthenticationUnavailable`. A key whose type,
//!    curve or own `alg` does not fit the token's `alg` (HS256 with an RSA key) →
//!    `unsupported_algorithm`.
//! 7. Signature (counted in `verifications`): `invalid_signature`.
//!
//! The principal is `jwt:<iss>#<sub>`, with the role and tenants its claims give. A tenant
//! outside the issuer's `tenants` is noted in the identity and refused (403) by the tenant
//! check that follows authentication: a forged token still gets its 401 first.

use http::HeaderName;
use prometheus_client::metrics::counter::Counter;

use super::claims;
use super::jwks::IssuerKeySet;
use super::policy::IssuerPolicy;
use super::state::IssuerKeys;
use super::token::Token;
use super::{AuthError, Identity, Principal, Reason};

pub use super::token::MAX_TOKEN_BYTES;

/// Most keys tried for one token without a `kid`.
const MAX_KEYS_TRIED: usize = 8;

/// What verifying a token led to.
#[derive(Debug)]
pub enum Outcome {
    /// Every check passed; the token expires at `exp` (Unix seconds).
    Verified { identity: Identity, exp: f64 },
    /// The key set of issuer `issuer` (an index) lacks the token's key (or was never loaded):
    /// refetch with [`IssuerKeySet::refetch`]`(generation)` and verify again without
    /// refetching.
    NeedKeys { issuer: usize, generation: u64 },
}

/// Verifies tokens against the issuers' rules (policy) and keys (state), which it borrows.
pub struct Verifier<'a> {
    /// `[[auth.jwt]]` rules, in order.
    pub issuers: &'a [IssuerPolicy],
    /// Their keys, in the same order.
    pub keys: &'a [IssuerKeys],
    /// `[auth] claim_headers`: claim name → header name.
    pub claim_headers: &'a [(String, HeaderName)],
    /// Counts signature verifications actually performed.
    pub verifications: &'a Counter,
}

impl Verifier<'_> {
    /// Verifies `token` at `now` (Unix seconds). With `may_refetch`, a missing key gives
    /// [`Outcome::NeedKeys`] instead of an error.
    pub fn verify(&self, token: &str, now: f64, may_refetch: bool) -> Result<Outcome, AuthError> {
        let token = Token::parse(token)?;
        let claims = &token.claims;
        let issuer = claims::issuer(claims)?;
        let (index, rules) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, p)| *p.issuer == *issuer)
            .ok_or(Reason::InvalidIssuer)?;
        let keys = self.keys.get(index).ok_or(Reason::InvalidIssuer)?;
        let alg = token.alg;
        if !rules.algorithms.contains(&alg) {
            return Err(Reason::UnsupportedAlgorithm.into());
        }
        if !rules.accepts_type(token.typ.as_deref()) {
            return Err(Reason::WrongTokenType.into());
        }
        let checked = rules.claims.check(claims, now)?;

        // The issuer's keys: its configured secrets and its published set. A set that was
        // never loaded lacks every key (refetch, or 503 when that was done already).
        let jwks = keys.published.as_deref();
        let generation = jwks.map_or(0, IssuerKeySet::generation);
        let published = jwks.and_then(IssuerKeySet::keys);
        let need_keys = || {
            if may_refetch {
                Ok(Outcome::NeedKeys {
                    issuer: index,
                    generation,
                })
            } else if published.is_none() {
                Err(AuthError::Unavailable {
                    issuer: rules.issuer.clone(),
                })
            } else {
                Err(Reason::UnknownKey.into())
            }
        };
        let kid = token.kid.as_deref();
        let key_count = keys.hmac.len() + published.as_ref().map_or(0, |k| k.len());
        if kid.is_none() && key_count > 1 {
            // Which key is meant is ambiguous: the manager itself requires `kid`.
            return Err(Reason::UnknownKey.into());
        }
        let mut candidates = keys
            .hmac
            .candidates(kid)
            .chain(published.iter().flat_map(|keys| keys.candidates(kid)))
            .peekable();
        if candidates.peek().is_none() {
            return match jwks {
                Some(_) => need_keys(),
                None => Err(Reason::UnknownKey.into()),
            };
        }
        let mut fitting = candidates.filter(|key| key.fits(alg)).peekable();
        if fitting.peek().is_none() {
            return Err(Reason::UnsupportedAlgorithm.into());
        }
        let verified = fitting.take(MAX_KEYS_TRIED).any(|key| {
            self.verifications.inc();
            jsonwebtoken::crypto::verify(
                token.signature,
                token.signing_input.as_bytes(),
                &key.key,
                alg,
            )
            .unwrap_or(false)
        });
        if !verified {
            return Err(Reason::InvalidSignature.into());
        }

        let role = rules.claims.role(claims);
        let tenants = rules.claims.tenants(claims);
        Ok(Outcome::Verified {
            identity: Identity {
                principal: Principal::jwt(issuer, checked.subject, role, None),
                tenant_outside_issuer: rules.claims.tenant_outside_issuer(&tenants),
                tenants,
                claim_headers: claims::claim_headers(claims, self.claim_headers),
            },
            exp: checked.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Value};

    use super::*;
    use crate::auth::jwks::KeySetMetrics;
    use crate::auth::policy::AuthPolicy;
    use crate::auth::state::AuthState;
    use crate::auth::Role;
    use crate::clock::{Clock, FakeClock};
    use crate::config::auth::AuthConfig;

    use crate::auth::test_keys::{b64, hmac_sha256, jwks, key_sources, TestKey};

    const ISS: &str = "https://idp.example.com/";
    const NOW: f64 = 1_700_000_000.0;

    struct Fixture {
        policy: AuthPolicy,
        state: AuthState,
        verifications: Counter,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(config: &AuthConfig, dir: tempfile::TempDir, metrics: &KeySetMetrics) -> Fixture {
            let clock: std::sync::Arc<dyn Clock> =
                FakeClock::at(UNIX_EPOCH + Duration::from_secs(NOW as u64));
            let policy = AuthPolicy::new(config);
            let state = AuthState::build(config, "auth", &policy, &clock, metrics, None).unwrap();
            Fixture {
                policy,
                state,
                verifications: Counter::default(),
                _dir: dir,
            }
        }

        fn verifier(&self) -> Verifier<'_> {
            Verifier {
                issuers: &self.policy.issuers,
                keys: &self.state.issuers,
                claim_headers: &self.policy.claim_headers,
                verifications: &self.verifications,
            }
        }
    }

    fn fixture(keys: &[&TestKey], algorithms: &[&str], extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sources = key_sources(keys, dir.path());
        let text = format!(
            r#"
            [[jwt]]
            issuer = "{ISS}"
            audiences = ["feldera-api"]
            algorithms = {algorithms:?}
            {sources}
            role_claim = "feldera_role"
            tenant_claim = "tenant"
            {extra}
            "#
        );
        let config: AuthConfig = toml::from_str(&text).unwrap();
        Fixture::new(&config, dir, &KeySetMetrics::default())
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "sub": "alice", "aud": "feldera-api",
            "exp": NOW + 600.0, "iat": NOW, "feldera_role": "write", "tenant": "acme",
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn reason(f: &Fixture, token: &str) -> Reason {
        match f.verifier().verify(token, NOW, false) {
            Err(AuthError::Failed(reason)) => reason,
            other => panic!("expected a 401 reason, got {other:?}"),
        }
    }

    #[test]
    fn a_token_issued_in_the_future_beyond_leeway_is_not_yet_valid() {
        let key = TestKey::rs256("k1");
        let f = fixture(&[&key], &["RS256"], "leeway = \"30s\"");
        let soon = key.token(&with(claims(), "iat", json!(NOW + 29.0)));
        assert!(f.verifier().verify(&soon, NOW, false).is_ok());
        let future = key.token(&with(claims(), "iat", json!(NOW + 31.0)));
        assert_eq!(reason(&f, &future), Reason::TokenNotYetValid);
        let text = key.token(&with(claims(), "iat", json!("yesterday")));
        assert_eq!(reason(&f, &text), Reason::MalformedCredentials);
    }

    #[test]
    fn a_token_without_kid_needs_an_issuer_with_exactly_one_key() {
        let (a, b) = (TestKey::rs256("a"), TestKey::eddsa("b"));
        let header = json!({ "alg": "RS256" }).to_string();
        let token = a.token_raw(&header, &claims().to_string());
        let one = fixture(&[&a], &["RS256", "EdDSA"], "");
        assert!(one.verifier().verify(&token, NOW, false).is_ok());
        let two = fixture(&[&a, &b], &["RS256", "EdDSA"], "");
        assert_eq!(reason(&two, &token), Reason::UnknownKey);
        // Configured secrets count as keys of the issuer too.
        let hs = TestKey::hs256("h");
        let mixed = fixture(&[&a, &hs], &["RS256", "HS256"], "");
        assert_eq!(reason(&mixed, &token), Reason::UnknownKey);
    }

    #[test]
    fn a_secret_published_in_the_key_set_never_verifies() {
        // Even when the (unchecked) configuration allows HS256: the key set's `oct` key is
        // dropped when the set is read, so a token signed with it finds no key.
        let dir = tempfile::tempdir().unwrap();
        let rsa = TestKey::rs256("rsa");
        let published = TestKey::hs256("shared");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&rsa, &published]).to_string()).unwrap();
        let config: AuthConfig = toml::from_str(&format!(
            "[[jwt]]\nissuer = \"{ISS}\"\naudiences = [\"feldera-api\"]\n\
             algorithms = [\"RS256\", \"HS256\"]\njwks_file = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        let metrics = KeySetMetrics::default();
        let f = Fixture::new(&config, dir, &metrics);
        assert_eq!(reason(&f, &published.token(&claims())), Reason::UnknownKey);
        assert_eq!(metrics.count("symmetric_key"), 1);
        assert!(f
            .verifier()
            .verify(&rsa.token(&claims()), NOW, false)
            .is_ok());
    }

    #[test]
    fn a_good_token_gives_principal_role_and_tenants() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "");
        let Ok(Outcome::Verified { identity, exp }) =
            f.verifier().verify(&key.token(&claims()), NOW, false)
        else {
            panic!("not verified")
        };
        assert_eq!(
            &*identity.principal.id,
            "jwt:https://idp.example.com/#alice"
        );
        assert_eq!(identity.principal.role, Role::Write);
        assert_eq!(identity.tenants, vec![Arc::<str>::from("acme")]);
        assert_eq!(exp, NOW + 600.0);
        assert_eq!(f.verifications.get(), 1);
    }

    #[test]
    fn alg_none_in_every_casing_is_refused() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "");
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = json!({ "alg": alg, "kid": "k1" }).to_string();
            let unsigned = format!("{}.{}.", b64(&header), b64(claims().to_string()));
            assert_eq!(reason(&f, &unsigned), Reason::UnsupportedAlgorithm, "{alg}");
            let signed = key.token_raw(&header, &claims().to_string());
            assert_eq!(reason(&f, &signed), Reason::UnsupportedAlgorithm, "{alg}");
        }
        assert_eq!(f.verifications.get(), 0);
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let rsa = TestKey::rs256("rsa");
        for allowed in [&["RS256"][..], &["RS256", "HS256"][..]] {
            let f = fixture(&[&rsa], allowed, "");
            let header = json!({ "alg": "HS256", "kid": "rsa" }).to_string();
            let input = format!("{}.{}", b64(&header), b64(claims().to_string()));
            let forged = format!(
                "{input}.{}",
                b64(hmac_sha256(&rsa.public_bytes(), input.as_bytes()))
            );
            assert_eq!(reason(&f, &forged), Reason::UnsupportedAlgorithm);
            assert_eq!(f.verifications.get(), 0);
        }
    }

    #[test]
    fn header_parameters_that_choose_keys_are_refused() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "");
        for extra in ["crit", "jku", "x5u", "jwk", "x5c"] {
            let header = json!({ "alg": "HS256", "kid": "k1", extra: ["x"] }).to_string();
            let token = key.token_raw(&header, &claims().to_string());
            assert_eq!(reason(&f, &token), Reason::UnsupportedHeader, "{extra}");
        }
    }

    #[test]
    fn time_claims_respect_leeway() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "leeway = \"30s\"");
        let token = |c: Value| key.token(&c);
        assert_eq!(
            reason(&f, &token(with(claims(), "exp", json!(NOW - 31.0)))),
            Reason::TokenExpired
        );
        assert!(f
            .verifier()
            .verify(&token(with(claims(), "exp", json!(NOW - 29.0))), NOW, false)
            .is_ok());
        assert_eq!(
            reason(&f, &token(with(claims(), "nbf", json!(NOW + 31.0)))),
            Reason::TokenNotYetValid
        );
        assert!(f
            .verifier()
            .verify(&token(with(claims(), "nbf", json!(NOW + 29.0))), NOW, false)
            .is_ok());
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(reason(&f, &token(no_exp)), Reason::MissingClaim);
        assert_eq!(
            reason(&f, &token(with(claims(), "exp", json!("soon")))),
            Reason::MalformedCredentials
        );
    }

    #[test]
    fn issuer_audience_and_required_claims_are_exact() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "required_claims = [\"email\"]");
        let t = |c: Value| key.token(&c);
        let good = with(claims(), "email", json!("a@example.com"));
        assert!(f.verifier().verify(&t(good.clone()), NOW, false).is_ok());
        assert_eq!(reason(&f, &t(claims())), Reason::MissingClaim);
        assert_eq!(
            reason(
                &f,
                &t(with(good.clone(), "iss", json!("https://idp.example.com")))
            ),
            Reason::InvalidIssuer
        );
        assert_eq!(
            reason(
                &f,
                &t(with(good.clone(), "aud", json!(["other", "another"])))
            ),
            Reason::InvalidAudience
        );
        assert!(f
            .verifier()
            .verify(
                &t(with(good.clone(), "aud", json!(["other", "feldera-api"]))),
                NOW,
                false
            )
            .is_ok());
        let mut no_sub = good;
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(reason(&f, &t(no_sub)), Reason::MissingClaim);
    }

    #[test]
    fn tampered_unknown_key_and_malformed_tokens_are_refused() {
        let key = TestKey::es256("k1");
        let f = fixture(&[&key], &["ES256"], "");
        let token = key.token(&claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let (header, _) = input.split_once('.').unwrap();
        let tampered = format!(
            "{header}.{}.{signature}",
            b64(with(claims(), "feldera_role", json!("owner")).to_string())
        );
        assert_eq!(reason(&f, &tampered), Reason::InvalidSignature);
        let other = TestKey::es256("k2");
        assert_eq!(reason(&f, &other.token(&claims())), Reason::UnknownKey);
        assert!(matches!(
            f.verifier().verify(&other.token(&claims()), NOW, true),
            Ok(Outcome::NeedKeys { issuer: 0, .. })
        ));
        assert_eq!(
            reason(&f, &format!("{token}=")),
            Reason::MalformedCredentials
        );
        assert_eq!(
            reason(&f, &token.replacen('.', ".+", 1)),
            Reason::MalformedCredentials
        );
        assert_eq!(reason(&f, "a.b"), Reason::MalformedCredentials);
        assert_eq!(
            reason(&f, &"a".repeat(1024 * 1024)),
            Reason::CredentialsTooLarge
        );
    }

    #[test]
    fn duplicate_json_keys_are_malformed_at_any_depth() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "");
        let header = r#"{"alg":"HS256","kid":"k1"}"#;
        let base = claims().to_string();
        let dup_top = base.replacen('{', r#"{"sub":"mallory","#, 1);
        let dup_nested = base.replacen('{', r#"{"x":{"a":1,"a":2},"#, 1);
        let dup_header = r#"{"alg":"HS256","alg":"none","kid":"k1"}"#;
        assert_eq!(
            reason(&f, &key.token_raw(header, &dup_top)),
            Reason::MalformedCredentials
        );
        assert_eq!(
            reason(&f, &key.token_raw(header, &dup_nested)),
            Reason::MalformedCredentials
        );
        assert_eq!(
            reason(&f, &key.token_raw(dup_header, &base)),
            Reason::MalformedCredentials
        );
    }

    #[test]
    fn roles_tenants_and_claim_headers_come_from_claims() {
        let key = TestKey::eddsa("k1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&key]).to_string()).unwrap();
        let config: AuthConfig = toml::from_str(&format!(
            r#"
            claim_headers = {{ sub = "x-user", groups = "x-groups" }}
            [[jwt]]
            issuer = "{ISS}"
            audiences = ["feldera-api"]
            algorithms = ["EdDSA"]
            jwks_file = "{}"
            role_claim = "realm.roles"
            tenant_claim = "tenants"
            "#,
            path.display()
        ))
        .unwrap();
        let f = Fixture::new(&config, dir, &KeySetMetrics::default());
        let verifier = f.verifier();
        let c = json!({
            "iss": ISS, "sub": "bob", "aud": ["feldera-api"], "exp": NOW + 60.0,
            "realm": { "roles": ["viewer", "read", "admin"] },
            "tenants": ["t1", "t2"], "groups": ["a", "b"],
        });
        let Ok(Outcome::Verified { identity, .. }) = verifier.verify(&key.token(&c), NOW, false)
        else {
            panic!("not verified")
        };
        assert_eq!(identity.principal.role, Role::Admin);
        assert_eq!(identity.tenants.len(), 2);
        let headers: Vec<(String, String)> = identity
            .claim_headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert!(
            headers.contains(&("x-user".into(), "bob".into())),
            "{headers:?}"
        );
        assert!(
            headers.contains(&("x-groups".into(), "a, b".into())),
            "{headers:?}"
        );
        // No role claim: the default role.
        let mut plain = c.clone();
        plain.as_object_mut().unwrap().remove("realm");
        let Ok(Outcome::Verified { identity, .. }) =
            verifier.verify(&key.token(&plain), NOW, false)
        else {
            panic!("not verified")
        };
        assert_eq!(identity.principal.role, Role::Read);
    }
}
