//! The verified-token cache: what makes RS256/ES256 cheap on hot paths.
//!
//! Bounded (`token_cache_size` entries, `quick_cache`'s S3-FIFO eviction), keyed by SHA-256
//! of the whole token, so only a byte-identical token hits. Only tokens that passed every
//! check are inserted, with `valid_until = min(exp, now + token_cache_ttl)`; every hit
//! re-checks that time against the clock and drops a stale entry, so an expired token is
//! never served from the cache (within `leeway` it is simply verified again). The TTL bounds
//! how long a token whose key was removed from the key set stays accepted.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};

use super::Identity;

#[derive(Debug)]
struct Entry {
    identity: Arc<Identity>,
    /// Unix seconds.
    valid_until: f64,
}

/// Verified tokens, by hash.
#[derive(Debug)]
pub struct TokenCache {
    entries: Option<Cache<[u8; 32], Arc<Entry>>>,
    capacity: usize,
    ttl: Duration,
}

/// The cache key of a token.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0: no cache).
    pub fn new(capacity: usize, ttl: Duration) -> TokenCache {
        TokenCache {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
            capacity,
            ttl,
        }
    }

    /// `(token_cache_size, token_cache_ttl)` it was made with.
    pub fn settings(&self) -> (usize, Duration) {
        (self.capacity, self.ttl)
    }

    /// The identity of a token verified earlier and still valid at `now` (Unix seconds).
    pub fn get(&self, key: &[u8; 32], now: f64) -> Option<Arc<Identity>> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(key)?;
        if now < entry.valid_until {
            Some(entry.identity.clone())
        } else {
            entries.remove(key);
            None
        }
    }

    /// Remembers a verified token that expires at `exp` (Unix seconds).
    pub fn insert(&self, key: [u8; 32], identity: Arc<Identity>, exp: f64, now: f64) {
        if let Some(entries) = &self.entries {
            let valid_until = exp.min(now + self.ttl.as_secs_f64());
            if now < valid_until {
                entries.insert(
                    key,
                    Arc::new(Entry {
                        identity,
                        valid_until,
                    }),
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Role};

    fn identity() -> Arc<Identity> {
        Arc::new(Identity {
            principal: Principal::jwt("https://idp/", "alice", Role::Read, None),
            tenants: Vec::new(),
            claim_headers: Vec::new(),
            tenant_outside_issuer: None,
        })
    }

    #[test]
    fn entries_live_until_the_earlier_of_exp_and_ttl() {
        let cache = TokenCache::new(10, Duration::from_secs(60));
        let (a, b) = (token_key("a"), token_key("b"));
        cache.insert(a, identity(), 1_010.0, 1_000.0);
        cache.insert(b, identity(), 5_000.0, 1_000.0);
        assert!(cache.get(&a, 1_009.9).is_some());
        assert!(cache.get(&a, 1_010.0).is_none(), "a hit re-checks exp");
        assert!(cache.get(&b, 1_059.0).is_some());
        assert!(cache.get(&b, 1_060.0).is_none(), "the TTL bounds the entry");
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_capacity_disables_the_cache_and_it_stays_bounded() {
        let off = TokenCache::new(0, Duration::from_secs(60));
        off.insert(token_key("a"), identity(), 2_000.0, 1_000.0);
        assert!(off.get(&token_key("a"), 1_000.0).is_none());
        let small = TokenCache::new(8, Duration::from_secs(60));
        for i in 0..100 {
            small.insert(token_key(&i.to_string()), identity(), 2_000.0, 1_000.0);
        }
        assert!(small.len() <= 8, "{}", small.len());
    }
}
