//! The bans the nodes hold, as the coordinator learns them: from a node's refusal (the
//! `x-shardsign-banned-peer` header on its status) and from `GetIdentity` (cluster status and
//! start-up). A pair in which either node has banned the other is never scheduled again; a key
//! ceremony is refused while any ban stands. The coordinator cannot lift a ban: the node holds it.
//! Every ban learned for the first time is written to the audit log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shardsign_proto::node::BANNED_PEER_HEADER;
use tonic::Status;

use crate::audit::{AuditEntry, Decision};
use crate::metrics::CoordinatorMetrics;
use crate::registry::{Registry, now_ms};

/// `reporter` refuses every session with `banned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub reporter: u8,
    pub banned: u8,
    pub reason: String,
    pub at_ms: i64,
}

pub struct Bans {
    by_pair: Mutex<BTreeMap<(u8, u8), Ban>>,
    registry: Arc<Registry>,
    metrics: Arc<CoordinatorMetrics>,
}

/// The banned peer a node's refusal names, if it is a ban refusal.
pub fn banned_peer(status: &Status) -> Option<u8> {
    status
        .metadata()
        .get(BANNED_PEER_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .filter(|peer| (1..=3).contains(peer))
}

impl Bans {
    pub fn new(registry: Arc<Registry>, metrics: Arc<CoordinatorMetrics>) -> Self {
        Bans {
            by_pair: Mutex::new(BTreeMap::new()),
            registry,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u8, u8), Ban>> {
        self.by_pair
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `ban`; the first time it is learned it is logged and audited.
    pub fn learn(&self, ban: Ban) {
        {
            let mut bans = self.lock();
            let key = (ban.reporter, ban.banned);
            if bans.contains_key(&key) {
                return;
            }
            bans.insert(key, ban.clone());
            self.metrics.set_banned_pairs(bans.len());
        }
        let detail = format!(
            "node {} has banned node {}: {}",
            ban.reporter, ban.banned, ban.reason
        );
        tracing::error!(target: "security", reporter = ban.reporter, banned = ban.banned, reason = ban.reason, "a node banned a peer; their pair is no longer scheduled");
        let entry = AuditEntry {
            at_ms: now_ms(),
            api_key_id: "coordinator".into(),
            operation: "node_banned".into(),
            decision: Decision::Refused.as_str().into(),
            detail,
            peer: format!("node {}", ban.reporter),
            ..Default::default()
        };
        if let Err(error) = self.registry.append_audit(entry) {
            tracing::error!(%error, "could not audit a node's ban");
        }
    }

    /// Learns the ban a refusal from `reporter` names; returns the banned node.
    pub fn learn_from_refusal(&self, reporter: u8, status: &Status) -> Option<u8> {
        let banned = banned_peer(status)?;
        self.learn(Ban {
            reporter,
            banned,
            reason: status.message().to_string(),
            at_ms: now_ms(),
        });
        Some(banned)
    }

    /// Whether either node of `pair` has banned the other.
    pub fn pair_banned(&self, pair: [u8; 2]) -> bool {
        let bans = self.lock();
        bans.contains_key(&(pair[0], pair[1])) || bans.contains_key(&(pair[1], pair[0]))
    }

    /// The bans known, for messages: `node 1 has banned node 2, node 3 has banned node 2`.
    pub fn describe(&self) -> String {
        self.lock()
            .values()
            .map(|ban| format!("node {} has banned node {}", ban.reporter, ban.banned))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Forgets every ban by or of `node` once it was replaced: the nodes' bans name the old
    /// identity (so they no longer match) and the new node holds none. Returns how many.
    pub fn forget_node(&self, node: u8) -> usize {
        let mut bans = self.lock();
        let before = bans.len();
        bans.retain(|(reporter, banned), _| *reporter != node && *banned != node);
        self.metrics.set_banned_pairs(bans.len());
        before - bans.len()
    }

    /// Every ban known, by reporter then banned node.
    pub fn all(&self) -> Vec<Ban> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_ban_header_names_a_peer() {
        let mut status = Status::failed_precondition("node 1 has banned node 2");
        assert_eq!(banned_peer(&status), None);
        status
            .metadata_mut()
            .insert(BANNED_PEER_HEADER, "2".parse().unwrap());
        assert_eq!(banned_peer(&status), Some(2));
        status
            .metadata_mut()
            .insert(BANNED_PEER_HEADER, "9".parse().unwrap());
        assert_eq!(banned_peer(&status), None);
    }

    #[test]
    fn a_ban_removes_its_pair_in_both_orders_and_is_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::open(&dir.path().join("r.db")).unwrap());
        let bans = Bans::new(registry.clone(), Arc::new(CoordinatorMetrics::new()));
        let ban = Ban {
            reporter: 1,
            banned: 2,
            reason: "multiplication check failed".into(),
            at_ms: 5,
        };
        bans.learn(ban.clone());
        bans.learn(ban.clone());
        assert!(bans.pair_banned([1, 2]) && bans.pair_banned([2, 1]));
        assert!(!bans.pair_banned([1, 3]) && !bans.pair_banned([2, 3]));
        assert_eq!(bans.all(), vec![ban]);
        let records = registry.list_audit(0, 10).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].entry.operation, "node_banned");
        assert!(records[0].entry.detail.contains("node 1 has banned node 2"));
    }
}
