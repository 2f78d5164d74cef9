//! Coordinators sharing a registry each keep copies in memory (API keys, key policies) so that
//! the signing path reads no table for them. A change made through another coordinator moves
//! the registry's change counter; every request here first compares the counter with the one
//! last seen (one indexed read) and reloads the copies when it moved, so a revocation,
//! rotation, policy change or disabled key made on coordinator A is honoured by coordinator B
//! on its next request. With SQLite (one coordinator) there is nothing to follow.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::CoordError;
use crate::registry::Registry;

/// An in-memory copy of registry data that can be reloaded whole.
pub trait Reload: Send + Sync {
    fn reload(&self, registry: &Registry) -> Result<(), CoordError>;
}

pub struct Freshness {
    registry: Arc<Registry>,
    seen: AtomicI64,
    /// One reload at a time (requests arriving meanwhile wait for it, then see it done).
    reloading: Mutex<()>,
    followers: Vec<Arc<dyn Reload>>,
}

impl Freshness {
    /// Follows `registry` for `followers`, whose copies are current now.
    pub fn new(
        registry: Arc<Registry>,
        followers: Vec<Arc<dyn Reload>>,
    ) -> Result<Self, CoordError> {
        Ok(Freshness {
            seen: AtomicI64::new(registry.generation()?),
            registry,
            reloading: Mutex::new(()),
            followers,
        })
    }

    /// Reloads `also` and the followers if the registry changed since the last look.
    pub fn check(
        &self,
        also: impl FnOnce(&Registry) -> Result<(), CoordError>,
    ) -> Result<(), CoordError> {
        let current = self.registry.generation()?;
        if current == self.seen.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current == self.seen.load(Ordering::Acquire) {
            return Ok(());
        }
        // Reloaded after reading `current`: what changed since is seen by the next look.
        also(&self.registry)?;
        for follower in &self.followers {
            follower.reload(&self.registry)?;
        }
        self.seen.store(current, Ordering::Release);
        tracing::debug!(
            generation = current,
            "reloaded what another coordinator changed"
        );
        Ok(())
    }
}
