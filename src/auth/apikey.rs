//! Feldera API keys: `Bearer apikey:<128 ASCII alphanumerics>`.
//!
//! Keys are stored the manager's way — base64 (standard, padded) of SHA-256 of the full key
//! string, `apikey:` included — so a key can be carried over from Feldera, and the gateway
//! never holds a key itself. A presented key is hashed, looked up by its hash, and the stored
//! hash compared again in constant time (`subtle`). Keys come from `[[auth.api_keys]]` and
//! from `api_keys_file`, which [`ApiKeyStore::reload_if_changed`] re-reads when its modification
//! time or size changes; a file that no longer parses or checks is ignored (the previous keys
//! stay) and the problem is logged.
//!
//! Edge cases: a bearer token that starts with `apikey:` but is not 135 characters of the
//! right alphabet is `malformed_credentials` (it is never looked up); an unknown key is
//! `invalid_api_key`, and so is a key past its `expires` to the client (which must not learn
//! which keys exist), while the log names the expired key and the metric counts
//! `expired_api_key`. A key in both the inline
//! list and the file is taken from the inline list. Nothing here logs a key or its hash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::SystemTime;

use base64::Engine as _;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::auth::{read_api_keys_file, ApiKeyConfig, AuthConfig};
use crate::config::Problems;

use super::{AuthError, Identity, Principal, Reason, Role};

/// What every Feldera API key starts with.
pub const PREFIX: &str = "apikey:";
/// Alphanumerics after the prefix.
pub const KEY_CHARS: usize = 128;

/// SHA-256 of the full key string.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The stored form of a key: base64 (standard, padded) of its SHA-256.
pub fn hash(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest(key))
}

/// A fresh key from the operating system's CSPRNG.
pub fn generate() -> String {
    let mut key = String::with_capacity(PREFIX.len() + KEY_CHARS);
    key.push_str(PREFIX);
    Alphanumeric.append_string(&mut rand::rng(), &mut key, KEY_CHARS);
    key
}

/// Whether `key` has Feldera's shape: `apikey:` and 128 ASCII alphanumerics.
pub fn is_well_formed(key: &str) -> bool {
    key.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == KEY_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// One configured key.
#[derive(Debug, Clone, PartialEq)]
struct ApiKey {
    name: Arc<str>,
    hash: [u8; 32],
    role: Role,
    tenant: Option<Arc<str>>,
    expires: Option<SystemTime>,
}

impl ApiKey {
    fn from_config(config: &ApiKeyConfig) -> ApiKey {
        ApiKey {
            name: config.name.as_str().into(),
            hash: config.sha256.0,
            role: config.role,
            tenant: config.tenant.as_deref().map(Arc::from),
            expires: config.expires,
        }
    }
}

type Table = HashMap<[u8; 32], ApiKey>;

/// The keys the gateway accepts.
#[derive(Debug)]
pub struct ApiKeyStore {
    inline: Vec<ApiKey>,
    file: Option<PathBuf>,
    /// Modification time and size of the file as last read.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    table: ArcSwap<Table>,
}

impl ApiKeyStore {
    /// Builds the store from a checked configuration; reads `api_keys_file`, whose problems
    /// are reported under `at.api_keys_file`.
    pub fn new(config: &AuthConfig, at: &str) -> Result<ApiKeyStore, Problems> {
        let inline: Vec<ApiKey> = config.api_keys.iter().map(ApiKey::from_config).collect();
        let store = ApiKeyStore {
            table: ArcSwap::from_pointee(Self::table(&inline, &[])),
            inline,
            file: config.api_keys_file.clone(),
            stamp: Mutex::new(None),
        };
        store.reload(&format!("{at}.api_keys_file"))?;
        Ok(store)
    }

    fn table(inline: &[ApiKey], from_file: &[ApiKey]) -> Table {
        let mut table = Table::new();
        for key in from_file.iter().chain(inline) {
            table.insert(key.hash, key.clone());
        }
        table
    }

    /// Number of keys accepted now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Whether this store holds the keys `config` names: the same inline keys and the same
    /// `api_keys_file` (whose contents it re-reads by itself).
    pub fn has_keys_of(&self, config: &AuthConfig) -> bool {
        self.file == config.api_keys_file
            && self.inline.len() == config.api_keys.len()
            && self
                .inline
                .iter()
                .zip(&config.api_keys)
                .all(|(key, config)| *key == ApiKey::from_config(config))
    }

    /// Re-reads `api_keys_file` if it changed; `Ok(true)` when the keys were replaced.
    /// On error the previous keys stay.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        self.reload("api_keys_file")
            .map_err(|problems| problems.to_string())
    }

    /// Re-reads `api_keys_file` if it changed (problems under `at`); `Ok(true)` when the keys
    /// were replaced. On error the previous keys stay.
    pub fn reload(&self, at: &str) -> Result<bool, Problems> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let metadata = std::fs::metadata(path).map_err(|e| {
            let mut problems = Problems::default();
            problems.push(at, format!("cannot read {}: {e}", path.display()));
            problems
        })?;
        let stamp = (
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            metadata.len(),
        );
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(stamp) {
            return Ok(false);
        }
        let file = read_api_keys_file(path, at)?;
        let from_file: Vec<ApiKey> = file.api_keys.iter().map(ApiKey::from_config).collect();
        self.table
            .store(Arc::new(Self::table(&self.inline, &from_file)));
        *last = Some(stamp);
        Ok(true)
    }

    /// Checks a presented `apikey:…` string.
    pub fn verify(&self, key: &str, now: SystemTime) -> Result<Identity, AuthError> {
        if !is_well_formed(key) {
            return Err(Reason::MalformedCredentials.into());
        }
        let presented = digest(key);
        let table = self.current();
        let entry = table
            .get(&presented)
            .filter(|entry| bool::from(entry.hash.ct_eq(&presented)))
            .ok_or(AuthError::Failed(Reason::InvalidApiKey))?;
        if entry.expires.is_some_and(|expires| now >= expires) {
            return Err(AuthError::ExpiredApiKey {
                name: entry.name.clone(),
            });
        }
        Ok(Identity {
            principal: Principal::api_key(&entry.name, entry.role, None),
            tenants: entry.tenant.iter().cloned().collect(),
            claim_headers: Vec::new(),
            tenant_outside_issuer: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(keys: &[(&str, &str, &str, Option<SystemTime>)]) -> AuthConfig {
        AuthConfig {
            api_keys: keys
                .iter()
                .map(|(name, key, role, expires)| ApiKeyConfig {
                    name: name.to_string(),
                    sha256: crate::config::values::KeyHash(digest(key)),
                    role: Role::parse(role).unwrap(),
                    tenant: Some("acme".into()),
                    expires: *expires,
                })
                .collect(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, b) = (generate(), generate());
        assert!(is_well_formed(&a), "{a}");
        assert_eq!(a.len(), 135);
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_base64_of_sha256_of_the_full_key() {
        // echo -n "apikey:abc" | openssl dgst -sha256 -binary | base64
        assert_eq!(
            hash("apikey:abc"),
            "OMZnUCrAOrZreOienfTb+Wj8NQ8XlLfdJ1A6rhtbJhA="
        );
    }

    #[test]
    fn right_key_gives_its_principal_and_tenant() {
        let key = generate();
        let store = ApiKeyStore::new(&config(&[("ci", &key, "write", None)]), "auth").unwrap();
        let identity = store.verify(&key, SystemTime::now()).unwrap();
        assert_eq!(&*identity.principal.id, "key:ci");
        assert_eq!(identity.principal.role, Role::Write);
        assert_eq!(identity.tenants, vec![Arc::<str>::from("acme")]);
    }

    #[test]
    fn wrong_malformed_and_expired_keys_are_refused_with_their_reasons() {
        let key = generate();
        let old = generate();
        let past = SystemTime::now() - Duration::from_secs(1);
        let store = ApiKeyStore::new(
            &config(&[
                ("ci", &key, "read", None),
                ("old", &old, "read", Some(past)),
            ]),
            "auth",
        )
        .unwrap();
        let now = SystemTime::now();
        let reason = |k: &str| store.verify(k, now).unwrap_err().reason();
        assert_eq!(reason(&generate()), Some(Reason::InvalidApiKey));
        assert_eq!(reason("apikey:short"), Some(Reason::MalformedCredentials));
        assert_eq!(
            reason(&format!("{}!", &key[..134])),
            Some(Reason::MalformedCredentials)
        );
        assert_eq!(reason(&old), Some(Reason::ExpiredApiKey));
        assert_eq!(
            reason(&old).map(Reason::public),
            Some(Reason::InvalidApiKey)
        );
    }

    #[test]
    fn keys_file_is_reread_when_it_changes_and_a_bad_file_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let first = generate();
        let second = generate();
        let write = |key: &str, name: &str| {
            std::fs::write(
                &path,
                format!(
                    "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"read\"\n",
                    hash(key)
                ),
            )
            .unwrap();
        };
        write(&first, "first");
        let store = ApiKeyStore::new(
            &AuthConfig {
                api_keys_file: Some(path.clone()),
                ..AuthConfig::default()
            },
            "auth",
        )
        .unwrap();
        let now = SystemTime::now();
        assert!(store.verify(&first, now).is_ok());
        assert!(!store.reload_if_changed().unwrap());
        // A different name changes the size, so the change is seen even within one mtime tick.
        write(&second, "second-key");
        assert!(store.reload_if_changed().unwrap());
        assert!(store.verify(&second, now).is_ok());
        assert!(store.verify(&first, now).is_err());
        std::fs::write(&path, "[[api_keys]]\nname = 1\n").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert!(store.verify(&second, now).is_ok());
    }
}
