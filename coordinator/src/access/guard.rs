//! Slows down guessing: after a few failed authentications from one peer address, each further
//! attempt from it waits before it is answered, doubling up to a cap. A success clears the peer.
//! The table is bounded and every operation is constant work (amortized): when it is full, the
//! peer whose last failure is oldest is forgotten, found through a queue in failure order rather
//! than by scanning the table (an attacker with many addresses must not make each failure cost
//! a walk over ten thousand entries).

use std::collections::{HashMap, VecDeque};
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
/// The failure-order queue is compacted (stale entries dropped) when it grows past this.
const MAX_QUEUE: usize = 4 * MAX_PEERS;

struct Peer {
    failures: u32,
    last: Instant,
    /// Which queue entry is this peer's current one.
    stamp: u64,
}

#[derive(Default)]
struct Table {
    peers: HashMap<IpAddr, Peer>,
    /// (peer, stamp) per failure, oldest first; an entry whose stamp is no longer the peer's
    /// (it failed again, or succeeded) is stale and skipped.
    order: VecDeque<(IpAddr, u64)>,
    next_stamp: u64,
}

impl Table {
    fn is_current(&self, ip: &IpAddr, stamp: u64) -> bool {
        self.peers.get(ip).is_some_and(|p| p.stamp == stamp)
    }

    /// Forgets the peer whose last failure is oldest.
    fn evict_oldest(&mut self) {
        while let Some((ip, stamp)) = self.order.pop_front() {
            if self.is_current(&ip, stamp) {
                self.peers.remove(&ip);
                return;
            }
        }
    }

    fn compact(&mut self) {
        let order = std::mem::take(&mut self.order);
        self.order = order
            .into_iter()
            .filter(|(ip, stamp)| self.is_current(ip, *stamp))
            .collect();
    }
}

#[derive(Default)]
pub struct FailureGuard {
    table: Mutex<Table>,
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
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `peer` must wait before its attempt is checked.
    pub fn delay_for(&self, peer: Option<IpAddr>, now: Instant) -> Duration {
        let Some(peer) = peer else {
            return Duration::ZERO;
        };
        match self.table().peers.get(&peer) {
            Some(p) if now.duration_since(p.last) < FORGET_AFTER => delay_after(p.failures),
            _ => Duration::ZERO,
        }
    }

    /// Records a failure; returns the peer's count.
    pub fn failed(&self, peer: Option<IpAddr>, now: Instant) -> u32 {
        let Some(peer) = peer else {
            return 0;
        };
        let mut table = self.table();
        if table.peers.len() >= MAX_PEERS && !table.peers.contains_key(&peer) {
            table.evict_oldest();
        }
        let stamp = table.next_stamp;
        table.next_stamp += 1;
        let entry = table.peers.entry(peer).or_insert(Peer {
            failures: 0,
            last: now,
            stamp,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        entry.stamp = stamp;
        let failures = entry.failures;
        table.order.push_back((peer, stamp));
        if table.order.len() > MAX_QUEUE {
            table.compact();
        }
        failures
    }

    pub fn succeeded(&self, peer: Option<IpAddr>) {
        if let Some(peer) = peer {
            self.table().peers.remove(&peer);
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
    fn the_table_stays_bounded_and_forgets_the_stalest_peer_first() {
        let guard = FailureGuard::default();
        let now = Instant::now();
        let ip = |i: u32| Some(IpAddr::from(i.to_be_bytes()));
        // Peer 0 keeps failing; everyone else fails once.
        for i in 0..(MAX_PEERS as u32 + 50) {
            guard.failed(ip(i), now);
            guard.failed(ip(0), now);
        }
        let table = guard.table();
        assert!(table.peers.len() <= MAX_PEERS);
        assert!(table.order.len() <= MAX_QUEUE + 1, "the queue is compacted");
        assert!(
            table.peers.contains_key(&ip(0).unwrap()),
            "the busiest peer is kept"
        );
        assert!(
            !table.peers.contains_key(&ip(1).unwrap()),
            "the stalest peers went first"
        );
        assert!(
            table
                .peers
                .contains_key(&ip(MAX_PEERS as u32 + 49).unwrap())
        );
    }
}
