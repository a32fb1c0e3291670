//! Signing keys for tests and benchmarks: HS256, RS256, ES256 and EdDSA keys made with
//! aws-lc-rs, their public JWKs, and tokens built from raw header and claims JSON (so tests
//! can sign exactly the malformed or hostile tokens they need).
//!
//! Shared by `tests/auth.rs`, `benches/auth.rs` and the unit tests of `src/auth/` (through
//! `#[path]`); not part of the gateway.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use serde_json::{json, Value};

/// base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

enum Material {
    Hmac(Vec<u8>),
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key with its `kid`.
pub struct TestKey {
    pub kid: String,
    material: Material,
}

impl TestKey {
    pub fn hs256(kid: &str) -> TestKey {
        let mut secret = vec![0u8; 32];
        SystemRandom::new().fill(&mut secret).expect("random bytes");
        TestKey {
            kid: kid.into(),
            material: Material::Hmac(secret),
        }
    }

    pub fn rs256(kid: &str) -> TestKey {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        TestKey {
            kid: kid.into(),
            material: Material::Rsa(pair),
        }
    }

    pub fn es256(kid: &str) -> TestKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
        TestKey {
            kid: kid.into(),
            material: Material::Ec(pair),
        }
    }

    pub fn eddsa(kid: &str) -> TestKey {
        let pair = Ed25519KeyPair::generate().expect("Ed25519 key");
        TestKey {
            kid: kid.into(),
            material: Material::Ed(pair),
        }
    }

    /// The `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.material {
            Material::Hmac(_) => "HS256",
            Material::Rsa(_) => "RS256",
            Material::Ec(_) => "ES256",
            Material::Ed(_) => "EdDSA",
        }
    }

    /// The key as a JWK (the public half; for HMAC, the secret).
    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Hmac(secret) => json!({ "kty": "oct", "kid": self.kid, "k": b64(secret) }),
            Material::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA", "kid": self.kid, "use": "sig",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Material::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC", "kid": self.kid, "crv": "P-256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                })
            }
            Material::Ed(pair) => json!({
                "kty": "OKP", "kid": self.kid, "crv": "Ed25519",
                "x": b64(pair.public_key().as_ref()),
            }),
        }
    }

    /// The raw public key bytes (an RSA modulus, an EC point, an Ed25519 key).
    pub fn public_bytes(&self) -> Vec<u8> {
        match &self.material {
            Material::Hmac(secret) => secret.clone(),
            Material::Rsa(pair) => pair.public_key().as_ref().to_vec(),
            Material::Ec(pair) => pair.public_key().as_ref().to_vec(),
            Material::Ed(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `input` the way this key's `alg` does.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        match &self.material {
            Material::Hmac(secret) => hmac_sha256(secret, input),
            Material::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input,
                    &mut signature,
                )
                .expect("RSA signature");
                signature
            }
            Material::Ec(pair) => pair
                .sign(&SystemRandom::new(), input)
                .expect("EC signature")
                .as_ref()
                .to_vec(),
            Material::Ed(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }

    /// A token with header `{"alg", "typ": "JWT", "kid"}` and these claims.
    pub fn token(&self, claims: &Value) -> String {
        let header = json!({ "alg": self.alg(), "typ": "JWT", "kid": self.kid });
        self.token_raw(&header.to_string(), &claims.to_string())
    }

    /// A token with exactly these header and claims texts, signed by this key.
    pub fn token_raw(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = self.sign(input.as_bytes());
        format!("{input}.{}", b64(signature))
    }
}

/// HMAC-SHA256 (for tokens signed with arbitrary bytes as the secret).
pub fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec()
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// The key lines of a `[[jwt]]` table serving `keys` from files written into `dir`: the
/// public keys as a `jwks_file`, the HMAC secrets as `hmac_keys` (a key set's symmetric keys
/// are never used, so a shared secret must come from its own file).
pub fn key_sources(keys: &[&TestKey], dir: &std::path::Path) -> String {
    let (hmac, public): (Vec<&TestKey>, Vec<&TestKey>) =
        keys.iter().partition(|k| k.alg() == "HS256");
    let mut lines = Vec::new();
    if !public.is_empty() {
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks(&public).to_string()).expect("write jwks");
        lines.push(format!("jwks_file = \"{}\"", path.display()));
    }
    if !hmac.is_empty() {
        let entries: Vec<String> = hmac
            .iter()
            .map(|key| {
                let path = dir.join(format!("hmac-{}.key", key.kid));
                std::fs::write(&path, b64(key.public_bytes())).expect("write secret");
                format!(
                    "{{ kid = \"{}\", secret_file = \"{}\", encoding = \"base64url\" }}",
                    key.kid,
                    path.display()
                )
            })
            .collect();
        lines.push(format!("hmac_keys = [{}]", entries.join(", ")));
    }
    lines.join("\n")
}
