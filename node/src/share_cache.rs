//! A short-lived cache of decrypted key shares.
//!
//! Decrypting and decoding a ~105 KB share costs about 0.2 ms per signing request on each node,
//! every time. Keeping recently used shares decoded removes that from the signing path.
//!
//! Why this is safe: the node holds its data key (which decrypts every share) in memory for as
//! long as it runs, so a reader of the node's memory gains nothing from the cache that it did not
//! have; and an active share is never changed or deleted in place (keys go pending -> active, or
//! pending -> gone; a refresh replaces it through [`ShareCache::invalidate`], which also refuses
//! the insertion of anything read before it), so a cached share cannot go stale. Bounded anyway: an entry not used for
//! [`IDLE_TTL`] is dropped, and at most [`CAPACITY`] shares are held (the least recently used
//! goes first), so a node holding thousands of keys keeps its memory per key. A dropped share
//! wipes itself (`KeyShare` zeroizes on drop, once no session still uses it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardsign_tss::KeyShare;

/// How long an unused share stays decoded.
pub const IDLE_TTL: Duration = Duration::from_secs(60);
/// Most shares held decoded at once (~150 KiB each in memory).
pub const CAPACITY: usize = 64;

/// An active key's share as signing needs it.
#[derive(Clone)]
pub struct LoadedKey {
    pub share: Arc<KeyShare>,
    pub allowed_chain_ids: Vec<u64>,
    /// The share's epoch (0 after the ceremony, one more per refresh).
    pub epoch: u64,
}

struct Entry {
    key: LoadedKey,
    last_used: Instant,
}

#[derive(Default)]
pub struct ShareCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Bumped by every invalidation: a share read from the store before one is not cached.
    generation: AtomicU64,
}

impl ShareCache {
    /// Forgets `key_id`'s share (it was deleted or replaced), and refuses to cache any share read
    /// before this call (it may be the one just replaced).
    pub fn invalidate(&self, key_id: &str) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(key_id);
    }

    /// Read before reading a share from the store; hand it to [`Self::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached share of `key_id`, if it was used within the idle TTL.
    pub fn get(&self, key_id: &str, now: Instant) -> Option<LoadedKey> {
        let mut entries = self.entries();
        entries.retain(|_, entry| now.duration_since(entry.last_used) < IDLE_TTL);
        let entry = entries.get_mut(key_id)?;
        entry.last_used = now;
        Some(entry.key.clone())
    }

    /// Keeps a decoded share read at `generation`, evicting the least recently used one when
    /// full; nothing if an invalidation happened since.
    pub fn insert(&self, key_id: &str, key: LoadedKey, generation: u64, now: Instant) {
        let mut entries = self.entries();
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= CAPACITY
            && !entries.contains_key(key_id)
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            key_id.to_string(),
            Entry {
                key,
                last_used: now,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LoadedKey {
        LoadedKey {
            share: share(),
            allowed_chain_ids: vec![1],
            epoch: 0,
        }
    }

    fn share() -> Arc<KeyShare> {
        static SHARE: std::sync::OnceLock<Arc<KeyShare>> = std::sync::OnceLock::new();
        SHARE
            .get_or_init(|| {
                let outputs =
                    shardsign_tss::local::run_dkg(shardsign_tss::SessionId([7; 32])).expect("dkg");
                Arc::new(outputs.into_iter().next().expect("a share").share)
            })
            .clone()
    }

    #[test]
    fn a_share_unused_for_the_ttl_is_dropped() {
        let cache = ShareCache::default();
        let start = Instant::now();
        cache.insert("k", key(), cache.generation(), start);
        assert!(cache.get("k", start + IDLE_TTL / 2).is_some());
        // Each use renews the entry.
        assert!(cache.get("k", start + IDLE_TTL).is_some());
        assert!(
            cache
                .get("k", start + IDLE_TTL * 2 + Duration::from_secs(1))
                .is_none()
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_least_recently_used_share_goes_first_when_full() {
        let cache = ShareCache::default();
        let start = Instant::now();
        let one = key();
        for i in 0..CAPACITY {
            let at = start + Duration::from_millis(i as u64);
            cache.insert(&format!("k{i}"), one.clone(), cache.generation(), at);
        }
        let later = start + Duration::from_secs(1);
        assert!(cache.get("k0", later).is_some());
        cache.insert("new", one, cache.generation(), later);
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.get("k0", later).is_some(), "recently used stays");
        assert!(cache.get("new", later).is_some());
        assert!(cache.get("k1", later).is_none(), "least recently used went");
    }

    #[test]
    fn a_share_read_before_an_invalidation_is_not_cached() {
        let cache = ShareCache::default();
        let now = Instant::now();
        cache.insert("k", key(), cache.generation(), now);
        let read_before = cache.generation();
        // A refresh replaces the share while a reader still holds the old one.
        cache.invalidate("k");
        assert!(cache.get("k", now).is_none());
        cache.insert("k", key(), read_before, now);
        assert!(
            cache.get("k", now).is_none(),
            "the old share must not come back"
        );
        cache.insert("k", key(), cache.generation(), now);
        assert!(cache.get("k", now).is_some());
    }
}
