//! Slows down guessing: after a few failed authentications from one peer address, each further
//! attempt from it waits before it is answered, doubling up to a cap. A success clears the peer.
//! The table is bounded; peers idle for ten minutes are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures answered at once.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
const FIRST_DELAY: Duration = Duration::from_millis(100);
const FORGET_AFTER: Duration = Duration::from_secs(600);
const MAX_PEERS: usize = 10_000;

#[derive(Default)]
pub struct FailureGuard {
    peers: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The wait before answering a peer with `failures` recent failures.
pub fn delay_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

impl FailureGuard {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `peer` must wait before its attempt is checked.
    pub fn delay_for(&self, peer: Option<IpAddr>, now: Instant) -> Duration {
        let Some(peer) = peer else {
            return Duration::ZERO;
        };
        match self.peers().get(&peer) {
            Some((failures, last)) if now.duration_since(*last) < FORGET_AFTER => {
                delay_after(*failures)
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a failure; returns the peer's count.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) -> u32 {
        let Some(peer) = peer else {
            return 0;
        };
        let mut peers = self.peers();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if peers.len() >= MAX_PEERS {
                // Still full: forget the stalest to stay bounded.
                if let Some(stalest) = peers
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(ip, _)| *ip)
                {
                    peers.remove(&stalest);
                }
            }
        }
        let entry = peers.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }

    pub fn succeeded(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            self.peers().remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_slow_a_peer_down_and_success_clears_it() {
        let guard = FailureGuard::default();
        let peer = Some("10.0.0.1".parse().unwrap());
        let other = Some("10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(guard.delay_for(peer, now), Duration::ZERO);
            guard.failed(peer, now);
        }
        assert_eq!(guard.delay_for(peer, now), Duration::from_millis(100));
        guard.failed(peer, now);
        assert_eq!(guard.delay_for(peer, now), Duration::from_millis(200));
        for _ in 0..20 {
            guard.failed(peer, now);
        }
        assert_eq!(guard.delay_for(peer, now), MAX_DELAY);
        assert_eq!(guard.delay_for(other, now), Duration::ZERO);
        assert_eq!(guard.delay_for(peer, now + FORGET_AFTER), Duration::ZERO);
        guard.succeeded(peer);
        assert_eq!(guard.delay_for(peer, now), Duration::ZERO);
    }

    #[test]
    fn the_table_stays_bounded() {
        let guard = FailureGuard::default();
        let now = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 50) {
            guard.failed(Some(IpAddr::from(i.to_be_bytes())), now);
        }
        assert!(guard.peers().len() <= MAX_PEERS);
    }
}
