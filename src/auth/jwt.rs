//! JWT validation, as strict as RFC 8725 asks, for several issuers at once.
//!
//! Order of checks (the first failure is the reason reported):
//! 1. Size: over 8 KiB → `credentials_too_large`, before any decoding.
//! 2. Shape: exactly three base64url segments, only the signature may be empty (no padding, no other characters);
//!    header and claims must be JSON objects without duplicate keys at any depth (a verifier
//!    that keeps the first and one that keeps the last must never disagree) →
//!    `malformed_credentials`.
//! 3. Header: `crit`, `jku`, `x5u`, `jwk` or `x5c` present → `unsupported_header` (keys come
//!    only from configuration); `alg` must be a string naming a supported algorithm — `none`
//!    in any casing, and any unknown or differently-cased name, is `unsupported_algorithm`;
//!    then an empty signature is `malformed_credentials`.
//! 4. Issuer: `iss` chooses the provider by exact comparison (a trailing slash matters);
//!    missing → `missing_claim`, unknown → `invalid_issuer`. The provider's `algorithms`
//!    allowlist then applies (`unsupported_algorithm`).
//! 5. Claims (before the signature: cheap checks first; nothing they reveal is secret):
//!    `exp` required (`missing_claim`) and `now < exp + leeway` (`token_expired`); `nbf` and
//!    `iat`, when present, `<= now + leeway` (`token_not_yet_valid`); `aud` required, a string or an
//!    array of strings containing a configured audience (`invalid_audience`); `sub` and every
//!    `required_claims` present and not null (`missing_claim`). Numeric claims of another
//!    type are `malformed_credentials`.
//! 6. Key: by `kid` among the provider's configured shared secrets (`hmac_keys`, the only
//!    source of HS* keys) and its key set (asymmetric keys only). A token without `kid` is
//!    accepted only while the provider has exactly one key (`unknown_key` otherwise). No such
//!    key → one rate-limited refetch of the key set ([`Outcome::NeedKeys`]), then
//!    `unknown_key`; no key set ever loaded → 503 `AuthenticationUnavailable`. A key whose type,
//!    curve or own `alg` does not fit the token's `alg` (HS256 with an RSA key) →
//!    `unsupported_algorithm`.
//! 7. Signature (counted in `verifications`): `invalid_signature`.
//!
//! The principal is `jwt:<iss>#<sub>` with the role from `role_claim` (a string, or the highest
//! known role in an array; `default_role` otherwise) and the tenants from `tenant_claim` (a
//! string or an array). Claim names may be dotted paths into nested objects
//! (`realm_access.roles`) when no claim has the literal name.

use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use prometheus_client::metrics::counter::Counter;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::config::auth::{AuthConfig, JwtProviderConfig};
use crate::config::Problems;

use super::jwks::fetch::http_client;
use super::jwks::{IssuerKeySet, KeySetMetrics, KeySetSettings};
use super::keys::{algorithm, KeySet, VerifyKey};
use super::{AuthError, Identity, Principal, Reason, Role};
use crate::clock::Clock;

/// Largest token accepted (RFC 8725 §3.x: bound the work before decoding).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest header value built from a claim.
const MAX_CLAIM_HEADER_BYTES: usize = 4 * 1024;
/// Most keys tried for one token without a `kid`.
const MAX_KEYS_TRIED: usize = 8;
/// Header parameters that would let the token choose its own key.
const FORBIDDEN_HEADERS: [&str; 5] = ["crit", "jku", "x5u", "jwk", "x5c"];

/// One `[[auth.jwt]]` provider at run time.
#[derive(Debug)]
pub struct JwtProvider {
    issuer: Arc<str>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: f64,
    role_claim: Option<String>,
    default_role: Role,
    tenant_claim: Option<String>,
    required_claims: Vec<String>,
    /// The issuer's published key set (asymmetric keys only), when it has one.
    pub jwks: Option<IssuerKeySet>,
    /// Shared secrets from configuration (HS256/384/512): never from a key set.
    hmac: KeySet,
}

impl JwtProvider {
    /// Builds the provider at key path `at`: reads its shared secrets and its `jwks_file`.
    fn new(
        config: &JwtProviderConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        metrics: &KeySetMetrics,
    ) -> Result<JwtProvider, Problems> {
        let mut problems = Problems::default();
        let mut hmac = Vec::with_capacity(config.hmac_keys.len());
        for (j, key) in config.hmac_keys.iter().enumerate() {
            match key
                .load_secret()
                .and_then(|secret| VerifyKey::hmac(key.kid.clone(), &secret))
            {
                Ok(key) => hmac.push(key),
                Err(reason) => problems.push(format!("{at}.hmac_keys[{j}]"), reason),
            }
        }
        let jwks = if let Some(settings) = KeySetSettings::of(config) {
            let client = settings.source.is_remote().then(http_client);
            match IssuerKeySet::new(settings, client, clock, metrics.clone()) {
                Ok(jwks) => Some(jwks),
                Err(reason) => {
                    problems.push(format!("{at}.jwks_file"), reason);
                    None
                }
            }
        } else {
            None
        };
        problems.into_result(JwtProvider {
            issuer: config.issuer.as_str().into(),
            audiences: config.audiences.clone(),
            algorithms: config.algorithms.iter().map(|a| a.0).collect(),
            leeway: config.leeway.as_secs_f64(),
            role_claim: config.role_claim.clone(),
            default_role: config.default_role,
            tenant_claim: config.tenant_claim.clone(),
            required_claims: config.required_claims.clone(),
            jwks,
            hmac: KeySet::from_keys(hmac),
        })
    }
}

/// What verifying a token led to.
#[derive(Debug)]
pub enum Outcome {
    /// Every check passed; the token expires at `exp` (Unix seconds).
    Verified { identity: Identity, exp: f64 },
    /// The key set of `providers()[provider]` lacks the token's key (or was never loaded):
    /// refetch with [`IssuerKeySet::refetch`]`(generation)` and verify again without refetching.
    NeedKeys { provider: usize, generation: u64 },
}

/// All JWT providers.
#[derive(Debug)]
pub struct JwtVerifier {
    providers: Vec<JwtProvider>,
    claim_headers: Vec<(String, HeaderName)>,
    verifications: Counter,
}

impl JwtVerifier {
    /// Builds every provider of `config` (at key path `at`, for problems).
    pub fn new(
        config: &AuthConfig,
        at: &str,
        clock: Arc<dyn Clock>,
        verifications: Counter,
        key_sets: &KeySetMetrics,
    ) -> Result<JwtVerifier, Problems> {
        let mut problems = Problems::default();
        let mut providers = Vec::with_capacity(config.jwt.len());
        for (i, provider) in config.jwt.iter().enumerate() {
            match JwtProvider::new(provider, &format!("{at}.jwt[{i}]"), clock.clone(), key_sets) {
                Ok(provider) => providers.push(provider),
                Err(more) => problems.extend(more),
            }
        }
        problems.into_result(JwtVerifier {
            providers,
            claim_headers: config
                .claim_headers
                .iter()
                .map(|(claim, header)| (claim.clone(), header.0.clone()))
                .collect(),
            verifications,
        })
    }

    pub fn providers(&self) -> &[JwtProvider] {
        &self.providers
    }

    /// Verifies `token` at `now` (Unix seconds). With `may_refetch`, a missing key gives
    /// [`Outcome::NeedKeys`] instead of an error.
    pub fn verify(&self, token: &str, now: f64, may_refetch: bool) -> Result<Outcome, AuthError> {
        let token = Token::parse(token)?;
        let header = &token.header;
        if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
            return Err(Reason::UnsupportedHeader.into());
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => algorithm(alg).ok_or(Reason::UnsupportedAlgorithm)?,
            _ => return Err(Reason::MalformedCredentials.into()),
        };
        if token.signature.is_empty() {
            return Err(Reason::MalformedCredentials.into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(Reason::MalformedCredentials.into()),
        };
        let claims = &token.claims;
        let issuer = match claims.get("iss") {
            None => return Err(Reason::MissingClaim.into()),
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(Reason::MalformedCredentials.into()),
        };
        let (index, provider) = self
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| *p.issuer == *issuer)
            .ok_or(Reason::InvalidIssuer)?;
        if !provider.algorithms.contains(&alg) {
            return Err(Reason::UnsupportedAlgorithm.into());
        }
        let exp = check_claims(provider, claims, now)?;
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.as_str(),
            _ => return Err(Reason::MissingClaim.into()),
        };

        // The issuer's keys: its configured secrets and its published set. A set that was
        // never loaded lacks every key (refetch, or 503 when that was done already).
        let jwks = provider.jwks.as_ref();
        let generation = jwks.map_or(0, IssuerKeySet::generation);
        let published = jwks.and_then(IssuerKeySet::keys);
        let need_keys = || {
            if may_refetch {
                Ok(Outcome::NeedKeys {
                    provider: index,
                    generation,
                })
            } else if published.is_none() {
                Err(AuthError::Unavailable {
                    issuer: provider.issuer.clone(),
                })
            } else {
                Err(Reason::UnknownKey.into())
            }
        };
        let key_count = provider.hmac.len() + published.as_ref().map_or(0, |k| k.len());
        if kid.is_none() && key_count > 1 {
            // Which key is meant is ambiguous: the manager itself requires `kid`.
            return Err(Reason::UnknownKey.into());
        }
        let mut candidates = provider
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

        let role = provider
            .role_claim
            .as_deref()
            .and_then(|name| claim(claims, name))
            .and_then(highest_role)
            .unwrap_or(provider.default_role);
        let tenants = provider
            .tenant_claim
            .as_deref()
            .and_then(|name| claim(claims, name))
            .map(strings)
            .unwrap_or_default();
        let claim_headers = self
            .claim_headers
            .iter()
            .filter_map(|(name, header)| {
                let value = render(claim(claims, name)?)?;
                Some((header.clone(), value))
            })
            .collect();
        Ok(Outcome::Verified {
            identity: Identity {
                principal: Principal::jwt(issuer, subject, role, None),
                tenants,
                claim_headers,
            },
            exp,
        })
    }
}

/// Checks the time, audience and presence claims; returns `exp`.
fn check_claims(
    provider: &JwtProvider,
    claims: &Map<String, Value>,
    now: f64,
) -> Result<f64, Reason> {
    let number = |name: &str| match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(Reason::MalformedCredentials),
    };
    let exp = number("exp")?.ok_or(Reason::MissingClaim)?;
    if now >= exp + provider.leeway {
        return Err(Reason::TokenExpired);
    }
    if let Some(nbf) = number("nbf")? {
        if nbf > now + provider.leeway {
            return Err(Reason::TokenNotYetValid);
        }
    }
    // A token issued in the future was minted by a clock (or a forger) that is wrong.
    if let Some(iat) = number("iat")? {
        if iat > now + provider.leeway {
            return Err(Reason::TokenNotYetValid);
        }
    }
    let ours = |aud: &str| provider.audiences.iter().any(|a| a == aud);
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
    for name in &provider.required_claims {
        if matches!(claim(claims, name), None | Some(Value::Null)) {
            return Err(Reason::MissingClaim);
        }
    }
    Ok(exp)
}

/// A claim by name, or by dotted path into nested objects when no claim has that name.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
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

/// A token split and decoded, not yet verified.
struct Token<'a> {
    signing_input: &'a str,
    signature: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl<'a> Token<'a> {
    fn parse(token: &'a str) -> Result<Token<'a>, Reason> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Reason::CredentialsTooLarge);
        }
        let base64url = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let (signing_input, signature) =
            token.rsplit_once('.').ok_or(Reason::MalformedCredentials)?;
        let (header, claims) = signing_input
            .split_once('.')
            .ok_or(Reason::MalformedCredentials)?;
        // An empty signature is refused after the header is read, so that `alg: none` is
        // reported as the unsupported algorithm it is.
        let signature_ok = signature.is_empty() || base64url(signature);
        if !(base64url(header) && base64url(claims) && signature_ok) {
            return Err(Reason::MalformedCredentials);
        }
        Ok(Token {
            signing_input,
            signature,
            header: json_object(header)?,
            claims: json_object(claims)?,
        })
    }
}

fn json_object(segment: &str) -> Result<Map<String, Value>, Reason> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Reason::MalformedCredentials)?;
    match serde_json::from_slice::<StrictValue>(&bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        _ => Err(Reason::MalformedCredentials),
    }
}

/// A JSON value whose objects have no duplicate keys, at any depth.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without duplicate object keys")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom("duplicate key"));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
#[path = "../../tests/support/keys.rs"]
mod test_keys;

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::clock::FakeClock;

    use super::test_keys::{b64, hmac_sha256, jwks, key_sources, TestKey};

    const ISS: &str = "https://idp.example.com/";
    const NOW: f64 = 1_700_000_000.0;

    struct Fixture {
        verifier: JwtVerifier,
        _dir: tempfile::TempDir,
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
        let clock = FakeClock::at(UNIX_EPOCH + Duration::from_secs(NOW as u64));
        Fixture {
            verifier: JwtVerifier::new(
                &config,
                "auth",
                clock,
                Counter::default(),
                &Default::default(),
            )
            .unwrap(),
            _dir: dir,
        }
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
        match f.verifier.verify(token, NOW, false) {
            Err(AuthError::Failed(reason)) => reason,
            other => panic!("expected a 401 reason, got {other:?}"),
        }
    }

    #[test]
    fn a_token_issued_in_the_future_beyond_leeway_is_not_yet_valid() {
        let key = TestKey::rs256("k1");
        let f = fixture(&[&key], &["RS256"], "leeway = \"30s\"");
        let soon = key.token(&with(claims(), "iat", json!(NOW + 29.0)));
        assert!(f.verifier.verify(&soon, NOW, false).is_ok());
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
        assert!(one.verifier.verify(&token, NOW, false).is_ok());
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
        let clock = FakeClock::at(UNIX_EPOCH + Duration::from_secs(NOW as u64));
        let metrics = KeySetMetrics::default();
        let verifier =
            JwtVerifier::new(&config, "auth", clock, Counter::default(), &metrics).unwrap();
        let f = Fixture {
            verifier,
            _dir: dir,
        };
        assert_eq!(reason(&f, &published.token(&claims())), Reason::UnknownKey);
        assert_eq!(metrics.count("symmetric_key"), 1);
        assert!(f.verifier.verify(&rsa.token(&claims()), NOW, false).is_ok());
    }

    #[test]
    fn a_good_token_gives_principal_role_and_tenants() {
        let key = TestKey::hs256("k1");
        let f = fixture(&[&key], &["HS256"], "");
        let Ok(Outcome::Verified { identity, exp }) =
            f.verifier.verify(&key.token(&claims()), NOW, false)
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
        assert_eq!(f.verifier.verifications.get(), 1);
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
        assert_eq!(f.verifier.verifications.get(), 0);
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
            assert_eq!(f.verifier.verifications.get(), 0);
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
            .verifier
            .verify(&token(with(claims(), "exp", json!(NOW - 29.0))), NOW, false)
            .is_ok());
        assert_eq!(
            reason(&f, &token(with(claims(), "nbf", json!(NOW + 31.0)))),
            Reason::TokenNotYetValid
        );
        assert!(f
            .verifier
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
        assert!(f.verifier.verify(&t(good.clone()), NOW, false).is_ok());
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
            .verifier
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
            f.verifier.verify(&other.token(&claims()), NOW, true),
            Ok(Outcome::NeedKeys { provider: 0, .. })
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
        let clock = FakeClock::at(UNIX_EPOCH + Duration::from_secs(NOW as u64));
        let verifier = JwtVerifier::new(
            &config,
            "auth",
            clock,
            Counter::default(),
            &Default::default(),
        )
        .unwrap();
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
