//! Verification keys: what a key set or a shared secret becomes before any token is checked.
//!
//! A [`KeySet`] keeps only keys usable for signatures (`use` absent or `sig`, `key_ops` absent
//! or containing `verify`), each with the key type, curve and optional `alg` that
//! [`VerifyKey::fits`] matches against a token's `alg` (RFC 8725 §3.1: no HS256 with an RSA
//! public key; HMAC secrets shorter than the hash are refused). A published document never
//! provides a symmetric key: `kty: oct` entries are dropped and counted
//! ([`ParsedKeySet::symmetric_refused`]) — a secret anyone can read is a key anyone can sign
//! with; shared secrets come only from configuration ([`VerifyKey::hmac`]). A document with
//! two keys of one `kid`, or without any usable key, is refused whole ([`KeySetError`]).
//!
//! Owns parsing only: where documents come from and how often is `super::jwks`.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The family (and curve) of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An HMAC secret of this many bytes.
    Oct(usize),
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One key usable for verifying signatures.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Option<Algorithm>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The JWS algorithm spelled `alg`, exactly (case matters; `none` is not one).
pub fn algorithm(alg: &str) -> Option<Algorithm> {
    crate::config::values::JwsAlgorithm::parse(alg)
        .ok()
        .map(|a| a.0)
}

impl VerifyKey {
    /// Whether this key may verify a token whose header says `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        use Algorithm as A;
        match (self.kind, alg) {
            (KeyKind::Oct(len), A::HS256) => len >= 32,
            (KeyKind::Oct(len), A::HS384) => len >= 48,
            (KeyKind::Oct(len), A::HS512) => len >= 64,
            (KeyKind::Rsa, A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512) => true,
            (KeyKind::EcP256, A::ES256) | (KeyKind::EcP384, A::ES384) => true,
            (KeyKind::Ed25519, A::EdDSA) => true,
            _ => false,
        }
    }

    fn parse(value: &Value) -> Result<Option<VerifyKey>, String> {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        if value.get("use").is_some() && text("use") != Some("sig") {
            return Ok(None);
        }
        if let Some(ops) = value.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Ok(None);
            }
        }
        let alg = match value.get("alg") {
            None => None,
            Some(alg) => match alg.as_str().and_then(algorithm) {
                Some(alg) => Some(alg),
                // An encryption key or an algorithm we do not verify: not ours.
                None => return Ok(None),
            },
        };
        let kid = match value.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err("a key's kid is not a string".into()),
        };
        let kind = match (text("kty"), text("crv")) {
            // A secret in a published key set is a secret anyone can read: never used.
            (Some("oct"), _) => return Ok(None),
            (Some("RSA"), _) => KeyKind::Rsa,
            (Some("EC"), Some("P-256")) => KeyKind::EcP256,
            (Some("EC"), Some("P-384")) => KeyKind::EcP384,
            (Some("OKP"), Some("Ed25519")) => KeyKind::Ed25519,
            _ => return Ok(None),
        };
        let jwk: Jwk = serde_json::from_value(value.clone())
            .map_err(|e| format!("a key does not parse: {e}"))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("a key is unusable: {e}"))?;
        Ok(Some(VerifyKey {
            kid,
            alg,
            kind,
            key,
        }))
    }

    /// A shared secret from configuration (never from a key set), for HS256/384/512.
    pub fn hmac(kid: Option<String>, secret: &[u8]) -> Result<VerifyKey, String> {
        Ok(VerifyKey {
            kid,
            alg: None,
            kind: KeyKind::Oct(secret.len()),
            key: DecodingKey::from_secret(secret)
                .map_err(|e| format!("a shared secret is unusable: {e}"))?,
        })
    }
}

/// A provider's keys usable for signatures.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// Why a JWKS document was refused (the previous set, if any, stays in use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// Not JSON, no `keys` array, or a key that does not parse.
    #[error("{0}")]
    Malformed(String),
    /// Two keys share a `kid`: which one a token means is ambiguous, so neither is trusted.
    #[error("two keys have the kid \"{0}\"")]
    DuplicateKid(String),
    /// Nothing left to verify with (symmetric keys are never taken from a key set).
    #[error("the key set has no key usable for signatures")]
    NoUsableKey,
}

impl KeySetError {
    /// The `reason` label of the refusal metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeySetError::Malformed(_) => "malformed",
            KeySetError::DuplicateKid(_) => "duplicate_kid",
            KeySetError::NoUsableKey => "no_usable_key",
        }
    }
}

/// A parsed JWKS document: the usable keys, and how many symmetric (`oct`) keys it published
/// that will never be used.
#[derive(Debug)]
pub struct ParsedKeySet {
    pub keys: KeySet,
    pub symmetric_refused: usize,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping only asymmetric signature keys.
    /// Refused: two keys with the same `kid` (among all listed keys, used or not), or a
    /// document with no usable key.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, KeySetError> {
        Self::parse_document(bytes).map(|parsed| parsed.keys)
    }

    /// [`KeySet::parse`], also counting the symmetric keys that were refused.
    pub fn parse_document(bytes: &[u8]) -> Result<ParsedKeySet, KeySetError> {
        let document: Value = serde_json::from_slice(bytes)
            .map_err(|e| KeySetError::Malformed(format!("not a JWKS document: {e}")))?;
        let listed = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                KeySetError::Malformed("not a JWKS document: no \"keys\" array".into())
            })?;
        let mut kids: Vec<&str> = Vec::new();
        for value in listed {
            if let Some(kid) = value.get("kid").and_then(Value::as_str) {
                if kids.contains(&kid) {
                    return Err(KeySetError::DuplicateKid(kid.to_owned()));
                }
                kids.push(kid);
            }
        }
        let mut keys = Vec::new();
        let mut symmetric_refused = 0;
        for value in listed {
            if value.get("kty").and_then(Value::as_str) == Some("oct") {
                symmetric_refused += 1;
                continue;
            }
            if let Some(key) = VerifyKey::parse(value).map_err(KeySetError::Malformed)? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(ParsedKeySet {
            keys: KeySet { keys },
            symmetric_refused,
        })
    }

    /// A set made of the given keys (shared secrets from configuration).
    /// Every key's `kid` (`None` for a key without one), in the document's order.
    pub fn kids(&self) -> impl Iterator<Item = Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref())
    }

    pub fn from_keys(keys: Vec<VerifyKey>) -> KeySet {
        KeySet { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys with this `kid` (every key when the token names none; the verifier allows that
    /// only while the issuer has exactly one key).
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> {
        self.keys
            .iter()
            .filter(move |key| kid.is_none() || key.kid.as_deref() == kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oct(kid: &str, bytes: usize) -> Value {
        use base64::Engine as _;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![7u8; bytes]);
        json!({ "kty": "oct", "kid": kid, "k": k })
    }

    fn ed(kid: &str) -> Value {
        use base64::Engine as _;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x })
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_is_an_error() {
        let doc = json!({ "keys": [
            { "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" },
            ed("e"),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        let empty = json!({ "keys": [{ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" }] });
        assert_eq!(
            KeySet::parse(empty.to_string().as_bytes()).unwrap_err(),
            KeySetError::NoUsableKey
        );
        assert!(matches!(
            KeySet::parse(b"[]").unwrap_err(),
            KeySetError::Malformed(_)
        ));
    }

    #[test]
    fn symmetric_keys_in_a_key_set_are_never_used() {
        let doc = json!({ "keys": [oct("h", 64), ed("e")] });
        let parsed = KeySet::parse_document(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.symmetric_refused, 1);
        assert_eq!(parsed.keys.len(), 1);
        assert!(parsed.keys.candidates(Some("h")).next().is_none());
        // A set of nothing but secrets is no key set at all.
        let only = json!({ "keys": [oct("h", 64)] });
        assert_eq!(
            KeySet::parse(only.to_string().as_bytes()).unwrap_err(),
            KeySetError::NoUsableKey
        );
    }

    #[test]
    fn two_keys_with_one_kid_refuse_the_set() {
        // Even when one of the two would be ignored anyway.
        for doc in [
            json!({ "keys": [ed("k"), ed("k")] }),
            json!({ "keys": [ed("k"), oct("k", 64)] }),
        ] {
            assert_eq!(
                KeySet::parse(doc.to_string().as_bytes()).unwrap_err(),
                KeySetError::DuplicateKid("k".into())
            );
        }
    }

    #[test]
    fn key_type_and_alg_must_fit_the_tokens_alg() {
        let short = VerifyKey::hmac(Some("short".into()), &[7; 16]).unwrap();
        let long = VerifyKey::hmac(Some("long".into()), &[7; 64]).unwrap();
        assert!(!short.fits(Algorithm::HS256));
        assert!(long.fits(Algorithm::HS512));
        assert!(!long.fits(Algorithm::RS256));
        let pinned =
            json!({ "keys": [{ "kty": "RSA", "alg": "RS384", "n": "AQAB", "e": "AQAB" }] });
        let set = KeySet::parse(pinned.to_string().as_bytes()).unwrap();
        let key = set.candidates(None).next().unwrap();
        assert!(key.fits(Algorithm::RS384));
        assert!(!key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::HS384));
    }

    #[test]
    fn algorithm_names_are_case_sensitive_and_none_is_not_one() {
        assert_eq!(algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(algorithm("rs256"), None);
        assert_eq!(algorithm("none"), None);
        assert_eq!(algorithm("EdDSA"), Some(Algorithm::EdDSA));
    }
}
