//! The JWT parser: a compact JWS taken apart and its header judged, before anything is
//! trusted. It knows nothing of issuers, keys or claims' meaning.
//!
//! In order (the first failure is the reason):
//! 1. Size: over [`MAX_TOKEN_BYTES`] → `credentials_too_large`, before any decoding.
//! 2. Shape: exactly three segments of base64url without padding, only the signature may be
//!    empty; header and claims decode to JSON objects without duplicate keys at any depth (a
//!    verifier that keeps the first and one that keeps the last must never disagree) →
//!    `malformed_credentials`.
//! 3. Header: `crit`, `jku`, `x5u`, `jwk` or `x5c` present → `unsupported_header` (keys come
//!    only from configuration); `alg` must be a string (`malformed_credentials`) naming a
//!    supported algorithm, spelled exactly — `none` in any casing, and any unknown or
//!    differently-cased name, is `unsupported_algorithm`; then an empty signature is
//!    `malformed_credentials` (so `alg: none` is reported as what it is); `kid` and `typ`,
//!    when present, must be strings (`malformed_credentials`).
//!
//! Nothing here is echoed anywhere: a parsed token only feeds the checks.

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::keys::algorithm;
use super::Reason;

/// Largest token accepted (RFC 8725 §3.x: bound the work before decoding).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Header parameters that would let the token choose its own key.
const FORBIDDEN_HEADERS: [&str; 5] = ["crit", "jku", "x5u", "jwk", "x5c"];

/// A token split, decoded and its header checked; signature not verified.
#[derive(Debug)]
pub struct Token<'a> {
    /// `header.claims`, as signed.
    pub signing_input: &'a str,
    /// The signature segment (base64url, not empty).
    pub signature: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The JOSE `typ` header, as sent.
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
}

impl<'a> Token<'a> {
    /// Parses `token` (see the module doc for the order of checks).
    pub fn parse(token: &'a str) -> Result<Token<'a>, Reason> {
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
        let header = json_object(header)?;
        let claims = json_object(claims)?;
        if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
            return Err(Reason::UnsupportedHeader);
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => algorithm(alg).ok_or(Reason::UnsupportedAlgorithm)?,
            _ => return Err(Reason::MalformedCredentials),
        };
        if signature.is_empty() {
            return Err(Reason::MalformedCredentials);
        }
        Ok(Token {
            signing_input,
            signature,
            alg,
            kid: optional_string(&header, "kid")?,
            typ: optional_string(&header, "typ")?,
            claims,
        })
    }
}

fn optional_string(header: &Map<String, Value>, name: &str) -> Result<Option<String>, Reason> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(Reason::MalformedCredentials),
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
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    fn token(header: &str, claims: &str, signature: &str) -> String {
        format!("{}.{}.{signature}", b64(header), b64(claims))
    }

    const CLAIMS: &str = r#"{"sub":"alice"}"#;

    #[test]
    fn a_well_formed_token_yields_alg_kid_typ_and_claims() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#,
            CLAIMS,
            "c2ln",
        );
        let parsed = Token::parse(&t).unwrap();
        assert_eq!(parsed.alg, Algorithm::RS256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.typ.as_deref(), Some("at+jwt"));
        assert_eq!(parsed.claims["sub"], json!("alice"));
        assert_eq!(parsed.signature, "c2ln");
        assert!(t.starts_with(parsed.signing_input));
    }

    #[test]
    fn shape_header_and_size_are_refused_with_their_reasons() {
        let good_header = r#"{"alg":"RS256","kid":"k1"}"#;
        for (name, text, reason) in [
            (
                "two segments",
                format!("{}.{}", b64(good_header), b64(CLAIMS)),
                Reason::MalformedCredentials,
            ),
            (
                "padding",
                format!("{}=", token(good_header, CLAIMS, "c2ln")),
                Reason::MalformedCredentials,
            ),
            (
                "bad character",
                token(good_header, CLAIMS, "c2ln").replacen('.', ".+", 1),
                Reason::MalformedCredentials,
            ),
            (
                "not an object",
                token("[]", CLAIMS, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "duplicate key",
                token(r#"{"alg":"RS256","alg":"none"}"#, CLAIMS, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "nested duplicate",
                token(good_header, r#"{"x":{"a":1,"a":2}}"#, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "no alg",
                token(r#"{"kid":"k1"}"#, CLAIMS, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "alg none",
                token(r#"{"alg":"none"}"#, CLAIMS, ""),
                Reason::UnsupportedAlgorithm,
            ),
            (
                "alg lowercase",
                token(r#"{"alg":"rs256"}"#, CLAIMS, "c2ln"),
                Reason::UnsupportedAlgorithm,
            ),
            (
                "jku",
                token(r#"{"alg":"RS256","jku":"https://x"}"#, CLAIMS, "c2ln"),
                Reason::UnsupportedHeader,
            ),
            (
                "empty signature",
                token(good_header, CLAIMS, ""),
                Reason::MalformedCredentials,
            ),
            (
                "kid not a string",
                token(r#"{"alg":"RS256","kid":1}"#, CLAIMS, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "typ not a string",
                token(r#"{"alg":"RS256","typ":[]}"#, CLAIMS, "c2ln"),
                Reason::MalformedCredentials,
            ),
            (
                "too large",
                "a".repeat(MAX_TOKEN_BYTES + 1),
                Reason::CredentialsTooLarge,
            ),
        ] {
            assert_eq!(Token::parse(&text).unwrap_err(), reason, "{name}");
        }
    }
}
