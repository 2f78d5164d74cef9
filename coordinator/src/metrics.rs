//! Counters the coordinator keeps about access decisions (exposed by the metrics endpoint).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct AccessMetrics {
    pub auth_failures: AtomicU64,
    policy_refusals: Mutex<BTreeMap<&'static str, u64>>,
}

impl AccessMetrics {
    pub fn auth_failed(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, rule: &'static str) {
        *self
            .policy_refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(rule)
            .or_default() += 1;
    }

    pub fn policy_refusals(&self) -> BTreeMap<&'static str, u64> {
        self.policy_refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
