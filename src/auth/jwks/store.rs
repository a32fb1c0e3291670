//! The key-set store: an issuer's last good key set and its generation, read on every
//! verification without a lock.
//!
//! The set lives in an [`ArcSwapOption`]: a reader gets the current `Arc` in a few atomic
//! operations and keeps it for as long as it verifies, while a load swaps in the next one.
//! `None` until a set was ever loaded. The generation counts successful loads; it is bumped
//! *after* the new set is in place, so whoever saw generation `g` and then misses a key knows
//! that any later generation has a newer set (the refetch path compares generations to share
//! one fetch among many callers). A refused document never reaches the store, so the last
//! good set stays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::auth::keys::KeySet;

/// An issuer's current key set and how many times one was installed.
#[derive(Debug, Default)]
pub struct KeySetStore {
    current: ArcSwapOption<KeySet>,
    generation: AtomicU64,
}

impl KeySetStore {
    pub fn new() -> KeySetStore {
        KeySetStore::default()
    }

    /// The last good key set, if one was ever loaded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Changes with every successful load (0: never loaded).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Makes `keys` the current set; returns the new generation.
    pub fn install(&self, keys: KeySet) -> u64 {
        self.current.store(Some(Arc::new(keys)));
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::VerifyKey;

    #[test]
    fn a_store_is_empty_until_a_set_is_installed_and_counts_installs() {
        let store = KeySetStore::new();
        assert!(store.current().is_none());
        assert_eq!(store.generation(), 0);
        let key = VerifyKey::hmac(Some("k".into()), &[1; 32]).unwrap();
        assert_eq!(store.install(KeySet::from_keys(vec![key.clone()])), 1);
        let first = store.current().unwrap();
        assert_eq!(store.install(KeySet::from_keys(vec![key.clone(), key])), 2);
        // A reader keeps the set it loaded while the store moves on.
        assert_eq!(first.len(), 1);
        assert_eq!(store.current().unwrap().len(), 2);
        assert!(store.is_loaded());
    }
}
